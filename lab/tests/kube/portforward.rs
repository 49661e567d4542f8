//! `kubectl port-forward` with real kubectl 1.32 against the double: SPDY/3.1 tunnelled in a
//! WebSocket (`SPDY/3.1+portforward.k8s.io`, kubectl's default) and, with
//! `KUBECTL_PORT_FORWARD_WEBSOCKETS=false`, the raw `Upgrade: SPDY/3.1` fallback. The pods of
//! the default runtime are at 127.0.0.1, so a port of a pod is a local echo server's.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{deployment, double, pod_names, rolled_out, seed, Kubectl};

/// An echo server: each connection gets back what it sent, then EOF after the client's EOF.
async fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = sock.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    port
}

/// A running `kubectl port-forward` and the local port it listens on.
struct Forward {
    child: tokio::process::Child,
    local: u16,
    stderr: tokio::task::JoinHandle<String>,
}

/// Starts `kubectl port-forward pod/<pod> 0:<remote>` and waits for its `Forwarding from`
/// line; `websockets=false` makes kubectl use the raw SPDY upgrade.
async fn port_forward(k: &Kubectl, pod: &str, remote: u16, websockets: bool) -> Forward {
    let mut cmd = k.command(&[
        "port-forward",
        &format!("pod/{pod}"),
        &format!("0:{remote}"),
        "--address",
        "127.0.0.1",
    ]);
    cmd.env(
        "KUBECTL_PORT_FORWARD_WEBSOCKETS",
        if websockets { "true" } else { "false" },
    );
    let mut child = cmd.spawn().expect("kubectl must be installed");
    let mut err = child.stderr.take().expect("piped stderr");
    let stderr = tokio::spawn(async move {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s).await;
        s
    });
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let want = format!(" -> {remote}");
    let line = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("Forwarding from 127.0.0.1:") && line.ends_with(&want) {
                return Some(line);
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    let Some(line) = line else {
        let _ = child.kill().await;
        panic!(
            "kubectl port-forward did not start: {}",
            stderr.await.unwrap()
        );
    };
    let local = line["Forwarding from 127.0.0.1:".len()..line.len() - want.len()]
        .parse()
        .unwrap();
    // Keep draining stdout (`Handling connection for ...` lines) so kubectl never blocks.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Forward {
        child,
        local,
        stderr,
    }
}

/// Sends `body` through the forward, half-closes, and returns what came back before EOF.
async fn round_trip(local: u16, body: Vec<u8>) -> Vec<u8> {
    let mut sock = TcpStream::connect(("127.0.0.1", local)).await.unwrap();
    let (mut r, mut w) = sock.split();
    let send = async {
        w.write_all(&body).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let mut back = Vec::new();
    let recv = r.read_to_end(&mut back);
    let (_, got) = tokio::join!(send, recv);
    got.unwrap();
    back
}

async fn forwards_concurrent_connections(websockets: bool) {
    let d = double().await;
    seed(&d, deployment("web", 1));
    rolled_out(&d, "web").await;
    let pod = pod_names(&d).remove(0);
    let echo = echo_server().await;
    let k = Kubectl::new(&d);
    let mut f = port_forward(&k, &pod, echo, websockets).await;

    // Several connections at once through the one session, one of them large.
    let bodies: Vec<Vec<u8>> = (0..6u8)
        .map(|i| {
            let n = if i == 0 { 3 << 20 } else { 1000 * (i as usize) };
            (0..n)
                .map(|j| (j as u8).wrapping_mul(31).wrapping_add(i))
                .collect()
        })
        .collect();
    let trips = bodies
        .iter()
        .map(|b| tokio::spawn(round_trip(f.local, b.clone())));
    let trips = tokio::time::timeout(
        Duration::from_secs(60),
        futures_util::future::join_all(trips),
    )
    .await
    .expect("every connection ends");
    for (trip, body) in trips.into_iter().zip(&bodies) {
        let back = trip.unwrap();
        assert_eq!(back.len(), body.len());
        assert!(back == *body, "the bytes came back changed");
    }
    // And again, one after the other, on the same session.
    for i in 0..3 {
        let body = format!("connection {i}\n").into_bytes();
        assert_eq!(round_trip(f.local, body.clone()).await, body);
    }

    let (method, protocol) = if websockets {
        ("GET", "WebSocket")
    } else {
        ("POST", "SPDY")
    };
    let path = format!("/api/v1/namespaces/default/pods/{pod}/portforward");
    let methods: Vec<String> = d
        .requests()
        .snapshot()
        .into_iter()
        .filter(|r| r.path == path)
        .map(|r| r.method)
        .collect();
    assert_eq!(methods, [method], "one {protocol} session, no fallback");

    f.child.kill().await.unwrap();
    let _ = f.child.wait().await;
    let err = f.stderr.await.unwrap();
    assert!(!err.contains("error"), "{err}");
}

#[tokio::test]
async fn kubectl_port_forward_over_websocket() {
    forwards_concurrent_connections(true).await;
}

#[tokio::test]
async fn kubectl_port_forward_over_spdy() {
    forwards_concurrent_connections(false).await;
}

/// Nothing listening on the pod's port: the kubelet's message reaches kubectl, which then
/// drops the session (kubectl 1.32: `lost connection to pod`) and exits non-zero.
#[tokio::test]
async fn kubectl_port_forward_to_a_closed_port_reports_the_dial_error() {
    let d = double().await;
    seed(&d, deployment("web", 1));
    rolled_out(&d, "web").await;
    let pod = pod_names(&d).remove(0);
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let k = Kubectl::new(&d);
    let mut f = port_forward(&k, &pod, closed, true).await;
    let back = round_trip(f.local, b"hello".to_vec()).await;
    assert!(back.is_empty());
    let status = tokio::time::timeout(Duration::from_secs(30), f.child.wait())
        .await
        .expect("kubectl exits after the error")
        .unwrap();
    assert!(!status.success());
    let err = f.stderr.await.unwrap();
    assert!(
        err.contains(&format!(
            "error forwarding port {closed} to pod {pod}, uid "
        )) && err.contains(&format!(
            "dial tcp 127.0.0.1:{closed}: connect: connection refused"
        )) && err.contains("lost connection to pod"),
        "{err}"
    );
}

/// A pod that is not running cannot be forwarded to (kubectl checks the phase first; the
/// server refuses too).
#[tokio::test]
async fn kubectl_port_forward_to_a_missing_pod_fails() {
    let d = double().await;
    let k = Kubectl::new(&d);
    let out = k.run(&["port-forward", "pod/nope", "0:80"]).await;
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "Error from server (NotFound): pods \"nope\" not found"
    );
}
