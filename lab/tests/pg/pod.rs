//! The PostgreSQL pod in the Kubernetes double: the StatefulSet's pod runs the node, and
//! port-forward (kube-rs `Api::<Pod>::portforward`, the WebSocket channel protocol) reaches it.

use k8s_openapi::api::core::v1::Pod;
use kube::api::LogParams;
use kube::Api;
use lab::pg::PgPair;
use sqlx::{Connection, PgConnection};
use std::time::Duration;
use tokio::net::TcpListener;

use crate::support::{client, config, eventually, primary_region, PASSWORD};

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
    let msg = eventually("a dial error", Duration::from_secs(10), || async {
        let mut pf = pods.portforward("postgresql-0", &[5432]).await.ok()?;
        pf.take_error(5432)?.await
    })
    .await;
    assert!(
        msg.contains("error forwarding port 5432") && msg.contains("refused"),
        "{msg}"
    );
}

/// Real kubectl for the double, its kubeconfig and cache in `dir`.
fn kubectl(d: &lab::KubeDouble, dir: &std::path::Path) -> tokio::process::Command {
    let kubeconfig = dir.join("kubeconfig");
    lab::kube_api::write_kubeconfig(&kubeconfig, &[("primary", &d.url())]).unwrap();
    let mut cmd = tokio::process::Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .env("HOME", dir)
        .kill_on_drop(true);
    cmd
}

/// The PostgreSQL container restarted in place (the kubelet after a crash): start.sh runs
/// again in the same pod, and `kubectl logs --previous` is the former run's log.
#[tokio::test]
async fn a_restarted_postgresql_container_keeps_its_previous_log() {
    let pair = PgPair::new(config()).unwrap();
    let d = primary_region(&pair).await;
    let dir = tempfile::tempdir().unwrap();
    let logs = |previous: bool| {
        let mut cmd = kubectl(&d, dir.path());
        cmd.args(["logs", "postgresql-0"]);
        if previous {
            cmd.arg("--previous");
        }
        async move {
            let out = cmd.output().await.expect("kubectl must be installed");
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            (out.status.success(), text(&out.stdout), text(&out.stderr))
        }
    };
    let (ok, _, err) = logs(true).await;
    assert!(
        !ok && err.contains("previous terminated container"),
        "{err}"
    );
    let (_, first, _) = logs(false).await;
    assert!(first.contains("decision=init-primary"), "{first}");

    let pod = d
        .restart_container("default", "postgresql-0", 1)
        .await
        .unwrap();
    assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 1);
    assert_eq!(pod["status"]["containerStatuses"][0]["ready"], true);
    assert!(pair.primary.psql("appdb", "SELECT 1").await.is_ok());
    let (ok, previous, err) = logs(true).await;
    assert!(ok, "{err}");
    assert!(previous.starts_with(&first), "{previous}");
    let (_, current, _) = logs(false).await;
    assert!(
        current.contains("decision=") && !current.contains("init-primary"),
        "{current}"
    );
}

/// `kubectl port-forward pod/postgresql-0 <local>:5432`, as an operator runs it (SPDY/3.1
/// tunnelled in a WebSocket, kubectl's default), carries PostgreSQL sessions: two at once
/// through the one kubectl, a large result, then a clean end of each connection.
#[tokio::test]
async fn kubectl_port_forward_carries_postgresql_sessions() {
    use tokio::io::AsyncBufReadExt;
    let pair = PgPair::new(config()).unwrap();
    let d = primary_region(&pair).await;
    let dir = tempfile::tempdir().unwrap();
    let mut kubectl = kubectl(&d, dir.path())
        .args(["port-forward", "pod/postgresql-0", "0:5432"])
        .args(["--address", "127.0.0.1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl must be installed");
    let mut lines = tokio::io::BufReader::new(kubectl.stdout.take().unwrap()).lines();
    let port: u16 = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                return rest.strip_suffix(" -> 5432")?.parse().ok();
            }
        }
        None
    })
    .await
    .expect("kubectl port-forward starts")
    .expect("a Forwarding from line");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let opts = crate::support::superuser_at(port);
    let mut a = PgConnection::connect_with(&opts)
        .await
        .expect("connect through kubectl port-forward");
    let mut b = PgConnection::connect_with(&opts).await.unwrap();
    let big: String = sqlx::query_scalar("SELECT repeat('x', 500000)")
        .fetch_one(&mut a)
        .await
        .unwrap();
    assert_eq!(big.len(), 500_000);
    let recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(&mut b)
        .await
        .unwrap();
    assert!(!recovery, "the primary region's pod runs the primary");
    a.close().await.unwrap();
    b.close().await.unwrap();
    // A third, after the others ended, on the same session.
    let mut c = PgConnection::connect_with(&opts).await.unwrap();
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(one, 1);
    c.close().await.unwrap();
    // psql, as an operator would use it.
    let out = tokio::process::Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={port} user=postgres dbname=appdb"
        ))
        .args(["-tAc", "SELECT 'through ' || current_database()"])
        .env("PGPASSWORD", PASSWORD)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .await
        .expect("psql must be installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through appdb\n");
    assert!(
        kubectl.try_wait().unwrap().is_none(),
        "kubectl keeps forwarding"
    );
}
