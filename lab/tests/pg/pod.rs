//! The PostgreSQL pod in the Kubernetes double: the StatefulSet's pod runs the node, and
//! port-forward (kube-rs `Api::<Pod>::portforward`, the WebSocket channel protocol) reaches it.

use k8s_openapi::api::core::v1::Pod;
use kube::api::LogParams;
use kube::Api;
use lab::pg::PgPair;
use sqlx::{Connection, PgConnection};
use tokio::net::TcpListener;

use crate::support::{client, config, eventually, primary_region};

/// A local listener whose connections each go through one port-forward stream.
pub(crate) async fn bridge(api: Api<Pod>, pod: &str, port: u16) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap().port();
    let pod = pod.to_string();
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut pf = api.portforward(&pod, &[port]).await.unwrap();
            let mut upstream = pf.take_stream(port).unwrap();
            tokio::spawn(async move {
                let _ = tokio::io::copy_bidirectional(&mut sock, &mut upstream).await;
            });
        }
    });
    local
}

#[tokio::test]
async fn port_forward_with_kube_rs_carries_a_sqlx_session() {
    let pair = PgPair::new(config()).unwrap();
    let d = primary_region(&pair).await;
    let pods: Api<Pod> = Api::default_namespaced(client(&d));
    let port = bridge(pods.clone(), "postgresql-0", 5432).await;
    let opts = crate::support::superuser_at(port);
    let mut c = PgConnection::connect_with(&opts)
        .await
        .expect("connect through port-forward");
    let big: String = sqlx::query_scalar("SELECT repeat('x', 500000)")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(big.len(), 500_000);
    let addr: Option<String> = sqlx::query_scalar("SELECT host(inet_client_addr())")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(
        addr.as_deref(),
        Some("127.0.0.1"),
        "arrives on loopback, as in the pod"
    );
    c.close().await.unwrap();

    // The pod log is start.sh's output.
    let log = pods
        .logs("postgresql-0", &LogParams::default())
        .await
        .unwrap();
    assert!(log.contains("decision=init-primary"), "{log}");
    assert!(d
        .requests()
        .snapshot()
        .iter()
        .any(|r| r.path.ends_with("/pods/postgresql-0/portforward")));
}

#[tokio::test]
async fn port_forward_errors_are_reported_like_the_api_server_does() {
    let pair = PgPair::new(config()).unwrap();
    let d = primary_region(&pair).await;
    let pods: Api<Pod> = Api::default_namespaced(client(&d));

    // No such pod: a 404 Status before the upgrade.
    match pods.portforward("postgresql-1", &[5432]).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 404),
        other => panic!("expected a 404, got {:?}", other.map(|_| ())),
    }
    // A port the pod does not serve: the error channel says so.
    let mut pf = pods.portforward("postgresql-0", &[5433]).await.unwrap();
    let err = pf.take_error(5433).unwrap().await;
    assert!(
        err.as_deref()
            .unwrap_or_default()
            .contains("no container port 5433"),
        "{err:?}"
    );
    // PostgreSQL down, pod still there: the dial error comes back.
    pair.primary.stop().await.unwrap();
    let msg = eventually(10, "a dial error", || async {
        let mut pf = pods.portforward("postgresql-0", &[5432]).await.ok()?;
        pf.take_error(5432)?.await
    })
    .await;
    assert!(
        msg.contains("error forwarding port 5432") && msg.contains("refused"),
        "{msg}"
    );
}

/// FIXME(kubectl port-forward): kubectl 1.32 speaks SPDY/3.1 (directly or tunnelled in a
/// WebSocket), which the double does not implement; it must at least say so clearly.
#[tokio::test]
async fn kubectl_port_forward_is_refused_with_a_clear_message() {
    let d = lab::KubeDouble::start("primary", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    d.create(
        serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "web:1"}]}}}}),
    )
    .unwrap();
    let pod = eventually(20, "a running pod", || async {
        let pods = d.list("pods", Some("default"));
        let p = pods.iter().find(|p| p["status"]["phase"] == "Running")?;
        p["metadata"]["name"].as_str().map(String::from)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    lab::kube_api::write_kubeconfig(&kubeconfig, &[("primary", &d.url())]).unwrap();
    let out = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .args(["port-forward", &format!("pod/{pod}"), "0:8080"])
        .env("HOME", dir.path())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), out)
        .await
        .expect("kubectl port-forward returns")
        .expect("kubectl must be installed");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SPDY (kubectl port-forward) is not implemented"),
        "{err}"
    );
}
