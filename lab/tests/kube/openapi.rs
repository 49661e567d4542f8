//! `/openapi/v2` for older kubectl (Debian 12's 1.20 reads it, with Accept protobuf, for
//! `apply --server-side` and `diff`; 1.32 reads /openapi/v3).

use crate::support::{deployment, double, rolled_out, seed, Kubectl};

#[tokio::test]
async fn openapi_v2_json_and_protobuf() {
    let d = double().await;
    let k = Kubectl::new(&d);
    let doc: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "--raw", "/openapi/v2"]).await).unwrap();
    assert_eq!(doc["swagger"], "2.0");
    let resp = reqwest::Client::new()
        .get(format!("{}/openapi/v2", d.url()))
        .header(
            "accept",
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    let body = resp.bytes().await.unwrap();
    // swagger = "2.0" first; the deployments PATCH with its kind and dryRun parameter inside.
    assert_eq!(&body[..5], b"\x0a\x032.0");
    let text = String::from_utf8_lossy(&body);
    for want in [
        "/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
        "x-kubernetes-group-version-kind",
        "kind: Deployment",
        "dryRun",
    ] {
        assert!(text.contains(want), "no {want:?} in the document");
    }
}

/// With an old kubectl: `KUBECTL_OLD=/path/to/kubectl-1.20 cargo test -p lab --test kube --
/// --ignored old_kubectl` (Debian 12: `apt-get download kubernetes-client; dpkg -x ...`).
#[tokio::test]
#[ignore = "needs an old kubectl in KUBECTL_OLD"]
async fn old_kubectl_applies_server_side_and_diffs() {
    let old = std::env::var("KUBECTL_OLD").expect("KUBECTL_OLD: an old kubectl binary");
    let d = double().await;
    seed(&d, deployment("web", 1));
    rolled_out(&d, "web").await;
    let k = Kubectl::new(&d);
    let dir = k.path("kz");
    std::fs::create_dir_all(&dir).unwrap();
    let mut dep = deployment("web", 2);
    dep["metadata"]["namespace"] = "default".into();
    std::fs::write(dir.join("dep.json"), dep.to_string()).unwrap();
    std::fs::write(dir.join("kustomization.yaml"), "resources:\n- dep.json\n").unwrap();
    // tokio's process: the double serves on this test's runtime meanwhile.
    let run = |args: &[&str]| {
        tokio::process::Command::new(&old)
            .arg("--kubeconfig")
            .arg(k.path("kubeconfig"))
            .args(args)
            .arg(&dir)
            .output()
    };
    let out = run(&["diff", "-k"]).await.unwrap();
    let diff = String::from_utf8_lossy(&out.stdout);
    assert!(
        diff.contains("-  replicas: 1") && diff.contains("+  replicas: 2"),
        "{diff}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["apply", "--server-side", "-k"]).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        d.get("deployments", "default", "web").unwrap()["spec"]["replicas"],
        2
    );
}
