//! The upstream client's failures other than a refused connection: a backend that accepts and
//! never answers is 504 `upstream_timeout` (after `UPSTREAM_TIMEOUT_MS`), one that answers
//! something that is not HTTP is 502 `bad_gateway`.

use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::json;
use test_support::TestDb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::error_of;
use crate::support::config;

/// A backend on loopback that reads each request and then either says nothing (the
/// connection stays open until the test ends) or writes `answer` and closes.
async fn backend(answer: Option<&'static [u8]>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf).await;
            match answer {
                Some(bytes) => {
                    let _ = sock.write_all(bytes).await;
                    let _ = sock.shutdown().await;
                }
                None => held.push(sock),
            }
        }
    });
    url
}

#[tokio::test]
async fn a_silent_backend_is_504_and_a_nonsense_one_502() {
    let db = TestDb::new();
    let silent = backend(None).await;
    let nonsense = backend(Some(b"this is not HTTP\r\n\r\n")).await;
    let fe = frontend_api::start(config(
        8080,
        1 << 20,
        &db.url,
        &[
            ("BUSINESS_LOGIC_URL", &nonsense),
            ("DATA_INGEST_URL", &silent),
            ("UPSTREAM_TIMEOUT_MS", "300"),
        ],
    ))
    .await
    .unwrap();
    let http = Client::new();

    let started = Instant::now();
    let r = http
        .post(format!("{}/api/v1/data/ingest", fe.url()))
        .json(&json!({"type": "x"}))
        .send()
        .await
        .unwrap();
    let waited = started.elapsed();
    let (code, msg) = error_of(r, 504).await;
    assert_eq!(code, "upstream_timeout");
    assert!(msg.contains("data-ingest"), "{msg}");
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
        "answered after {waited:?}"
    );

    let r = http
        .post(format!("{}/api/v1/users", fe.url()))
        .json(&json!({"username": "abc", "email": "a@b.co"}))
        .send()
        .await
        .unwrap();
    let (code, msg) = error_of(r, 502).await;
    assert_eq!(code, "bad_gateway");
    assert!(msg.contains("business-logic"), "{msg}");
    assert!(!msg.contains("127.0.0.1"), "an internal address in {msg}");
    assert_eq!(db.psql("SELECT count(*) FROM users"), "0");
}
