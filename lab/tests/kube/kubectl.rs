//! Real kubectl (1.32) against the double: the commands the seed runbook and drdctl's operators
//! use, with their exact output. kubectl is the independent client that keeps the double honest
//! about wire formats (discovery, Status, watch framing, Scale, patches, apply).

use serde_json::{json, Value};
use std::time::Duration;

use crate::support::{
    config_map, deployment, double, eventually, pod_names, rolled_out, seed, service, Kubectl,
};

#[tokio::test]
async fn get_deploy_json() {
    let d = double().await;
    seed(&d, deployment("frontend-api", 2));
    rolled_out(&d, "frontend-api").await;
    let k = Kubectl::new(&d);
    let out: Value = serde_json::from_str(&k.ok(&["get", "deploy", "-o", "json"]).await).unwrap();
    assert_eq!(out["kind"], "List");
    let item = &out["items"][0];
    assert_eq!(item["metadata"]["name"], "frontend-api");
    assert_eq!(item["status"]["readyReplicas"], 2);
    assert_eq!(
        item["status"]["conditions"][1]["reason"],
        "NewReplicaSetAvailable"
    );
}

#[tokio::test]
async fn create_configmap_and_secret() {
    let d = double().await;
    let k = Kubectl::new(&d);
    let out = k
        .ok(&[
            "create",
            "configmap",
            "app-config",
            "--from-literal=region=primary",
            "--from-literal=role=active",
        ])
        .await;
    assert_eq!(out.trim(), "configmap/app-config created");
    let cm = d.get("configmaps", "default", "app-config").unwrap();
    assert_eq!(cm["data"], json!({"region": "primary", "role": "active"}));
    let out = k
        .ok(&[
            "create",
            "secret",
            "generic",
            "postgresql-secret",
            "--from-literal=password=s3cret",
        ])
        .await;
    assert_eq!(out.trim(), "secret/postgresql-secret created");
    let s = d.get("secrets", "default", "postgresql-secret").unwrap();
    assert_eq!(s["data"]["password"], "czNjcmV0");
    assert_eq!(s["type"], "Opaque");
    let out = k.run(&["create", "configmap", "app-config"]).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: failed to create configmap: configmaps \"app-config\" already exists"
    );
}

#[tokio::test]
async fn scale_then_rollout_status() {
    let d = double().await;
    seed(&d, deployment("frontend-api", 1));
    rolled_out(&d, "frontend-api").await;
    let k = Kubectl::new(&d);
    let out = k
        .ok(&["scale", "deploy/frontend-api", "--replicas=3"])
        .await;
    assert_eq!(out.trim(), "deployment.apps/frontend-api scaled");
    let out = k
        .ok(&["rollout", "status", "deploy/frontend-api", "--timeout=20s"])
        .await;
    assert!(
        out.trim_end()
            .ends_with("deployment \"frontend-api\" successfully rolled out"),
        "{out}"
    );
    let o = d.get("deployments", "default", "frontend-api").unwrap();
    assert_eq!(o["status"]["availableReplicas"], 3);
    assert_eq!(d.list("pods", Some("default")).len(), 3);
}

#[tokio::test]
async fn rollout_restart_replaces_pods() {
    let d = double().await;
    seed(&d, deployment("frontend-api", 2));
    rolled_out(&d, "frontend-api").await;
    let before: Vec<String> = pod_names(&d);
    let k = Kubectl::new(&d);
    let out = k.ok(&["rollout", "restart", "deploy/frontend-api"]).await;
    assert_eq!(out.trim(), "deployment.apps/frontend-api restarted");
    let out = k
        .ok(&["rollout", "status", "deploy/frontend-api", "--timeout=20s"])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let o = rolled_out(&d, "frontend-api").await;
    assert!(
        o["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .is_string()
    );
    assert_eq!(
        o["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    let after = pod_names(&d);
    assert_eq!(after.len(), 2);
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "old pods replaced: {before:?} -> {after:?}"
    );
}

#[tokio::test]
async fn patch_configmap_merge() {
    let d = double().await;
    seed(
        &d,
        config_map("app-config", json!({"region": "dr", "role": "standby"})),
    );
    let k = Kubectl::new(&d);
    let out = k
        .ok(&[
            "patch",
            "configmap",
            "app-config",
            "--type",
            "merge",
            "-p",
            r#"{"data":{"region":"primary-failover"}}"#,
        ])
        .await;
    assert_eq!(out.trim(), "configmap/app-config patched");
    let cm = d.get("cm", "default", "app-config").unwrap();
    assert_eq!(
        cm["data"],
        json!({"region": "primary-failover", "role": "standby"})
    );
}

#[tokio::test]
async fn apply_server_side_twice() {
    let d = double().await;
    let k = Kubectl::new(&d);
    let docs = [
        deployment("frontend-api", 2),
        service("frontend-api"),
        config_map("app-config", json!({"region": "primary"})),
    ];
    let yaml: Vec<String> = docs
        .iter()
        .map(|v| serde_yaml::to_string(v).unwrap())
        .collect();
    let file = k.path("manifests.yaml");
    std::fs::write(&file, yaml.join("---\n")).unwrap();
    let f = file.to_str().unwrap();
    let out = k
        .ok(&["apply", "--server-side", "--validate=false", "-f", f])
        .await;
    assert_eq!(
        out.trim(),
        "deployment.apps/frontend-api serverside-applied\nservice/frontend-api serverside-applied\nconfigmap/app-config serverside-applied"
    );
    let rv = d.store().resource_version();
    rolled_out(&d, "frontend-api").await;
    let rv_deploy =
        d.get("deploy", "default", "frontend-api").unwrap()["metadata"]["resourceVersion"].clone();
    let out = k
        .ok(&["apply", "--server-side", "--validate=false", "-f", f])
        .await;
    assert!(
        out.contains("service/frontend-api serverside-applied"),
        "{out}"
    );
    // Nothing changed: the second apply wrote nothing.
    assert_eq!(
        d.get("deploy", "default", "frontend-api").unwrap()["metadata"]["resourceVersion"],
        rv_deploy
    );
    assert!(d.store().resource_version() >= rv);
    let svc = d.get("svc", "default", "frontend-api").unwrap();
    assert_eq!(svc["metadata"]["managedFields"][0]["manager"], "kubectl");
    assert_eq!(svc["metadata"]["managedFields"][0]["operation"], "Apply");
}

#[tokio::test]
async fn client_side_apply_created_then_unchanged_then_configured() {
    let d = double().await;
    let k = Kubectl::new(&d);
    let file = k.path("app.yaml");
    let write = |replicas: i64| {
        let docs = [
            deployment("frontend-api", replicas),
            service("frontend-api"),
        ];
        let yaml: Vec<String> = docs
            .iter()
            .map(|v| serde_yaml::to_string(v).unwrap())
            .collect();
        std::fs::write(&file, yaml.join("---\n")).unwrap();
    };
    let f = file.to_str().unwrap();
    write(2);
    let out = k.ok(&["apply", "-f", f]).await;
    assert_eq!(
        out.trim(),
        "deployment.apps/frontend-api created\nservice/frontend-api created"
    );
    let out = k.ok(&["apply", "-f", f]).await;
    assert_eq!(
        out.trim(),
        "deployment.apps/frontend-api unchanged\nservice/frontend-api unchanged"
    );
    write(3);
    let out = k.ok(&["apply", "-f", f]).await;
    assert_eq!(
        out.trim(),
        "deployment.apps/frontend-api configured\nservice/frontend-api unchanged"
    );
    let o = rolled_out(&d, "frontend-api").await;
    assert_eq!(o["spec"]["replicas"], 3);
}

#[tokio::test]
async fn get_missing_object_prints_not_found() {
    let d = double().await;
    let k = Kubectl::new(&d);
    let out = k.run(&["get", "deploy", "x"]).await;
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "Error from server (NotFound): deployments.apps \"x\" not found"
    );
}

#[tokio::test]
async fn delete_deployment_removes_its_pods() {
    let d = double().await;
    seed(&d, deployment("frontend-api", 2));
    rolled_out(&d, "frontend-api").await;
    let k = Kubectl::new(&d);
    let out = k.ok(&["delete", "deploy/frontend-api"]).await;
    assert_eq!(out.trim(), "deployment.apps \"frontend-api\" deleted");
    eventually(
        "pods garbage-collected",
        Duration::from_secs(10),
        || async { d.list("pods", Some("default")).is_empty().then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn contexts_reach_their_own_region() {
    let primary = double().await;
    let dr = double().await;
    seed(&dr, config_map("only-in-dr", json!({})));
    let k = Kubectl::with_contexts(&[("primary", &primary), ("dr", &dr)], "dr");
    let out = k.ok(&["get", "cm", "-o", "name"]).await;
    assert_eq!(out.trim(), "configmap/only-in-dr");
    let kp = Kubectl::with_contexts(&[("primary", &primary), ("dr", &dr)], "primary");
    let out = kp.run(&["get", "cm", "only-in-dr"]).await;
    assert!(!out.status.success());
}

#[tokio::test]
async fn human_tables_and_statefulset_rollout() {
    let d = double().await;
    let mut sts = deployment("postgresql", 2);
    sts["kind"] = json!("StatefulSet");
    sts["spec"]["serviceName"] = json!("postgresql");
    seed(&d, sts);
    let k = Kubectl::new(&d);
    let out = k
        .ok(&[
            "rollout",
            "status",
            "statefulset/postgresql",
            "--timeout=20s",
        ])
        .await;
    assert!(
        out.contains("partitioned roll out complete: 2 new pods have been updated..."),
        "{out}"
    );
    let out = k.ok(&["get", "pods"]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("READY") && lines[0].contains("STATUS"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("postgresql-0")
            && lines[1].contains("1/1")
            && lines[1].contains("Running"),
        "{out}"
    );
}
