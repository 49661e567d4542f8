//! The lab's service pods are real processes: the Kubernetes double's deployments start and
//! stop them, Services forward to the Ready ones, and a rollout restart replaces them.
//!
//! Needs the service binaries in the target dir (`cargo test --workspace` builds them;
//! alone: `cargo build -p frontend-api -p business-logic -p data-ingest`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use lab::kube_api::{PodRuntime, PodStarted};
use lab::pods::{http_status, Endpoints, ProcessRuntime, ProcessRuntimeConfig, ServiceProxy};
use lab::{KubeDouble, KubeDoubleConfig};
use serde_json::{json, Value};
use test_support::{eventually, TestDb};

#[path = "../common/bins.rs"]
mod bins;
use bins::bin_dir;

fn deployment(name: &str, port: u16, env: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": name, "image": format!("registry.example.com/drd/{name}:0.1.0"),
                    "ports": [{"containerPort": port, "name": "http"}],
                    "env": env
                }]}
            }
        }
    })
}

struct Region {
    double: KubeDouble,
    runtime: ProcessRuntime,
    ingress: ServiceProxy,
    _proxies: Vec<ServiceProxy>,
    _logs: tempfile::TempDir,
}

async fn region(db: &TestDb, pod_net: u8) -> Region {
    let endpoints = Endpoints::default();
    let any = || -> SocketAddr { "127.0.0.1:0".parse().unwrap() };
    let bl = ServiceProxy::start(any(), "business-logic", endpoints.clone())
        .await
        .unwrap();
    let di = ServiceProxy::start(any(), "data-ingest", endpoints.clone())
        .await
        .unwrap();
    let ingress = ServiceProxy::start(any(), "frontend-api", endpoints.clone())
        .await
        .unwrap();
    let logs = tempfile::tempdir().unwrap();
    let runtime = ProcessRuntime::new(
        ProcessRuntimeConfig {
            region: "primary".into(),
            bin_dir: bin_dir(),
            pod_net,
            services: HashMap::from([
                ("business-logic".to_string(), bl.addr),
                ("data-ingest".to_string(), di.addr),
                ("frontend-api".to_string(), ingress.addr),
            ]),
            log_dir: logs.path().to_path_buf(),
            ready_timeout: Duration::from_secs(30),
            extra_env: vec![],
        },
        endpoints,
    )
    .unwrap();
    let double = KubeDouble::start_with(
        KubeDoubleConfig::new("primary", "127.0.0.1:0".parse().unwrap())
            .runtime(std::sync::Arc::new(runtime.clone())),
    )
    .await
    .unwrap();
    runtime.attach(double.store().clone());
    double
        .create(json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"app-config","namespace":"default"},"data":{"region":"primary","role":"active"}}))
        .unwrap();
    double
        .create(json!({"apiVersion":"v1","kind":"Secret","metadata":{"name":"db","namespace":"default"},"data":{"url": b64(&db.url)}}))
        .unwrap();
    let env = |extra: Value| {
        let mut e = vec![
            json!({"name":"DATABASE_URL","valueFrom":{"secretKeyRef":{"name":"db","key":"url"}}}),
            json!({"name":"REGION","valueFrom":{"configMapKeyRef":{"name":"app-config","key":"region"}}}),
        ];
        e.extend(extra.as_array().unwrap().iter().cloned());
        Value::Array(e)
    };
    for (name, port, extra) in [
        ("business-logic", 8081, json!([])),
        ("data-ingest", 8082, json!([])),
        (
            "frontend-api",
            8080,
            json!([{"name":"BUSINESS_LOGIC_URL","value":"http://business-logic:8081"},
                   {"name":"DATA_INGEST_URL","value":"http://data-ingest:8082"}]),
        ),
    ] {
        double.create(deployment(name, port, env(extra))).unwrap();
    }
    Region {
        double,
        runtime,
        ingress,
        _proxies: vec![bl, di],
        _logs: logs,
    }
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn ready_replicas(d: &KubeDouble, name: &str) -> i64 {
    d.get("deployments", "default", name).unwrap()["status"]["readyReplicas"]
        .as_i64()
        .unwrap_or(0)
}

#[tokio::test]
async fn deployments_run_real_processes_behind_services() {
    let db = TestDb::new();
    let r = region(&db, 31).await;
    eventually(
        "all three deployments ready",
        Duration::from_secs(60),
        || async {
            ["frontend-api", "business-logic", "data-ingest"]
                .iter()
                .all(|n| ready_replicas(&r.double, n) == 1)
                .then_some(())
        },
    )
    .await;
    assert_eq!(r.runtime.running().len(), 3);

    // Through the ingress, the gateway calls business-logic through its Service.
    let url = format!("http://{}/api/v1/users", r.ingress.addr);
    let resp = reqwest::Client::new()
        .post(&url)
        .json(&json!({"username":"labuser","email":"lab@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let info: Value = reqwest::get(format!("http://{}/api/v1/info", r.ingress.addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["region"], "primary", "REGION came from the ConfigMap");
    assert_eq!(db.psql("SELECT username FROM users"), "labuser");

    // A rollout restart replaces the process with a new pod; the old one is stopped.
    let before = r.runtime.running();
    r.double
        .update("deployments", "default", "frontend-api", |d| {
            let mut d = d.clone();
            d["spec"]["template"]["metadata"]["annotations"] =
                json!({"kubectl.kubernetes.io/restartedAt": "now"});
            Ok(d)
        })
        .unwrap();
    eventually(
        "a new frontend-api pod to replace the old one",
        Duration::from_secs(60),
        || async {
            let now = r.runtime.running();
            let old_front = before
                .iter()
                .find(|p| p.starts_with("frontend-api"))
                .unwrap();
            (now.len() == 3 && !now.contains(old_front)).then_some(())
        },
    )
    .await;
    assert_eq!(http_status(r.ingress.addr, "/health/live").await, Some(200));

    // Scaled to zero: no process, and the Service refuses.
    r.double
        .update("deployments", "default", "frontend-api", |d| {
            let mut d = d.clone();
            d["spec"]["replicas"] = json!(0);
            Ok(d)
        })
        .unwrap();
    eventually(
        "frontend-api processes to stop",
        Duration::from_secs(30),
        || async {
            (!r.runtime
                .running()
                .iter()
                .any(|p| p.starts_with("frontend-api")))
            .then_some(())
        },
    )
    .await;
    assert_eq!(http_status(r.ingress.addr, "/health/live").await, None);
    r.runtime.stop_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_pod_whose_binary_cannot_start_is_not_ready() {
    let logs = tempfile::tempdir().unwrap();
    let runtime = ProcessRuntime::new(
        ProcessRuntimeConfig {
            region: "dr".into(),
            bin_dir: logs.path().to_path_buf(),
            pod_net: 32,
            services: HashMap::new(),
            log_dir: logs.path().join("logs"),
            ready_timeout: Duration::from_secs(5),
            extra_env: vec![],
        },
        Endpoints::default(),
    )
    .unwrap();
    let pod: Result<PodStarted, String> = runtime
        .start(lab::kube_api::PodInfo {
            region: "dr".into(),
            namespace: "default".into(),
            name: "frontend-api-x".into(),
            uid: "u".into(),
            labels: [("app".to_string(), "frontend-api".to_string())].into(),
            owner: None,
            object: json!({"spec":{"containers":[{"name":"c"}]}}),
        })
        .await;
    let err = pod.unwrap_err();
    assert!(
        err.contains("no binary for frontend-api") && err.contains("cargo build -p frontend-api"),
        "{err}"
    );
}
