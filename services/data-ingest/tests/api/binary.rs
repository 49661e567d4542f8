//! The real binary: configuration errors exit 64 naming the variable; SIGTERM exits cleanly.

use std::process::{Command, Stdio};
use std::time::Duration;

use test_support::{eventually, free_port, TestDb};

const BIN: &str = env!("CARGO_BIN_EXE_data-ingest");

#[test]
fn a_bad_variable_is_named_and_exits_64() {
    let out = Command::new(BIN)
        .env("DATABASE_PORT", "not-a-port")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("DATABASE_PORT"), "{err}");
}

#[tokio::test]
async fn sigterm_stops_the_binary_cleanly() {
    let db = TestDb::new();
    let port = free_port("127.0.0.1").unwrap();
    let child = tokio::process::Command::new(BIN)
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", &db.url)
        .env("DATABASE_PASSWORD", "top-secret-value")
        .env("AUTH_TOKENS", "top-secret-token-0123456789")
        .env("RUST_LOG", "debug")
        .env("SHUTDOWN_DRAIN_MS", "100")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let ready = format!("http://127.0.0.1:{port}/health/ready");
    eventually(
        "the binary to become ready",
        Duration::from_secs(20),
        || async {
            let r = http.get(&ready).send().await.ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;
    // A write with the token and one with a wrong token: neither shows up in the logs.
    for token in ["top-secret-token-0123456789", "top-secret-wrong-token-000"] {
        http.post(format!("http://127.0.0.1:{port}/api/v1/ingest"))
            .header("authorization", format!("Bearer {token}"))
            .json(&serde_json::json!({"type":"logged?"}))
            .send()
            .await
            .unwrap();
    }
    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(logs.contains("listening"), "{logs}");
    assert!(logs.contains("stopped"), "{logs}");
    // The access log is buffered: its lines were written at the latest when the binary stopped.
    assert_eq!(
        logs.matches(r#""path":"/api/v1/ingest""#).count(),
        2,
        "{logs}"
    );
    assert!(
        !logs.contains("top-secret-value"),
        "the password reached the logs"
    );
    assert!(!logs.contains("top-secret-"), "a token reached the logs");
    assert!(logs.contains("writes need a bearer token"), "{logs}");
}
