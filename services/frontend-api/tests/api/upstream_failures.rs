//! The upstream client's failures other than a refused connection: a backend that accepts and
//! never answers is 504 `upstream_timeout` (after `UPSTREAM_TIMEOUT_MS`), one that answers
//! something that is not HTTP is 502 `bad_gateway`; and the pool of upstream connections.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Running;
use serde_json::json;
use test_support::TestApp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::error_of;
use crate::support::frontend;

/// How a backend double answers each request it reads (a head and a JSON body: the tests'
/// bodies end with `}`).
enum Answer {
    /// Nothing: the connection stays open until the client closes it.
    Never,
    /// These bytes, then it closes the connection without saying so (no `Connection: close`),
    /// as a backend closing an idle keep-alive connection does.
    ThenClose(Vec<u8>),
    /// These bytes, keeping the connection for the next request.
    KeepAlive(Vec<u8>),
    /// As `KeepAlive`, until told: then it closes the connection (counting it), as a backend
    /// does with a keep-alive connection idle past its timeout.
    KeepAliveUntil(Vec<u8>, Arc<Notify>, Arc<AtomicUsize>),
}

/// A backend double on loopback: its URL and how many connections it has accepted.
async fn backend(answer: Answer) -> (String, Arc<AtomicUsize>) {
    let answer = Arc::new(answer);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let read = match &*answer {
                        Answer::KeepAliveUntil(_, close, closed) => tokio::select! {
                            read = sock.read(&mut buf) => read,
                            _ = close.notified() => {
                                let _ = sock.shutdown().await;
                                closed.fetch_add(1, Ordering::SeqCst);
                                break;
                            }
                        },
                        _ => sock.read(&mut buf).await,
                    };
                    let Ok(n @ 1..) = read else { break };
                    seen.extend_from_slice(&buf[..n]);
                    if !seen.ends_with(b"}") {
                        continue;
                    }
                    seen.clear();
                    match &*answer {
                        Answer::Never => {}
                        Answer::ThenClose(bytes) => {
                            let _ = sock.write_all(bytes).await;
                            let _ = sock.shutdown().await;
                            break;
                        }
                        Answer::KeepAlive(bytes) | Answer::KeepAliveUntil(bytes, ..) => {
                            if sock.write_all(bytes).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    (url, accepted)
}

#[tokio::test]
async fn a_silent_backend_is_504_and_a_nonsense_one_502() {
    let (silent, _) = backend(Answer::Never).await;
    let (nonsense, _) = backend(Answer::ThenClose(b"this is not HTTP\r\n\r\n".to_vec())).await;
    let fe = front(&[
        ("BUSINESS_LOGIC_URL", &nonsense),
        ("DATA_INGEST_URL", &silent),
        ("UPSTREAM_TIMEOUT_MS", "300"),
    ])
    .await;

    let started = Instant::now();
    let r = ingest(&fe).await;
    let waited = started.elapsed();
    let (code, msg) = error_of(r, 504).await;
    assert_eq!(code, "upstream_timeout");
    assert!(msg.contains("data-ingest"), "{msg}");
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
        "answered after {waited:?}"
    );

    let r = fe
        .post_json(
            "/api/v1/users",
            &json!({"username": "abc", "email": "a@b.co"}),
        )
        .await;
    let (code, msg) = error_of(r, 502).await;
    assert_eq!(code, "bad_gateway");
    assert!(msg.contains("business-logic"), "{msg}");
    assert!(!msg.contains("127.0.0.1"), "an internal address in {msg}");
    assert_eq!(fe.db.psql("SELECT count(*) FROM users"), "0");
}

/// frontend-api alone on a fresh test database, with `extra` variables (its backends).
type Front = TestApp<Running>;

async fn front(extra: &[(&str, &str)]) -> Front {
    Front::spawn(|db_url| async move {
        let fe = frontend(&db_url, extra).await;
        let url = fe.url();
        (fe, url)
    })
    .await
}

/// `POST /api/v1/data/ingest` of one record through frontend-api.
async fn ingest(fe: &Front) -> reqwest::Response {
    fe.post_json("/api/v1/data/ingest", &json!({"type": "x"}))
        .await
}

/// data-ingest's answer to one stored record.
fn ingested() -> Vec<u8> {
    const BODY: &str = r#"{"status":"ingested","ingested":1,"id":7,"ids":[7]}"#;
    format!(
        "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn upstream_connections_are_reused_and_one_the_backend_closed_is_replaced() {
    let (kept, kept_accepted) = backend(Answer::KeepAlive(ingested())).await;
    let (closing, closing_accepted) = backend(Answer::ThenClose(ingested())).await;
    let fe = front(&[("DATA_INGEST_URL", &kept), ("BUSINESS_LOGIC_URL", &closing)]).await;
    for _ in 0..5 {
        let r = ingest(&fe).await;
        assert_eq!(r.status(), 201);
        assert_eq!(r.json::<serde_json::Value>().await.unwrap()["id"], 7);
    }
    assert_eq!(
        kept_accepted.load(Ordering::SeqCst),
        1,
        "one connection for all five"
    );

    // business-logic's double answers 201 to the validation: not the 200 frontend-api wants,
    // so each is a 502, but each must reach the backend, on a new connection each time.
    for i in 1..=3 {
        let r = fe
            .post_json(
                "/api/v1/users",
                &json!({"username": "abc", "email": "a@b.co"}),
            )
            .await;
        let (code, msg) = error_of(r, 502).await;
        assert_eq!(code, "bad_gateway");
        assert!(msg.contains("answered 201"), "{msg}");
        assert_eq!(closing_accepted.load(Ordering::SeqCst), i);
    }
}

/// A pooled connection the backend closed while it was idle (its keep-alive timeout) is not
/// given the next request: that request goes out on a new connection and succeeds.
#[tokio::test]
async fn an_idle_connection_the_backend_closed_is_not_used_again() {
    let (close, closed) = (Arc::new(Notify::new()), Arc::new(AtomicUsize::new(0)));
    let (url, accepted) = backend(Answer::KeepAliveUntil(
        ingested(),
        close.clone(),
        closed.clone(),
    ))
    .await;
    let fe = front(&[("DATA_INGEST_URL", &url)]).await;
    assert_eq!(ingest(&fe).await.status(), 201);
    assert_eq!(ingest(&fe).await.status(), 201);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one kept-alive connection"
    );

    // The backend closes it while it is idle in frontend-api's pool.
    close.notify_one();
    let deadline = Instant::now() + Duration::from_secs(10);
    while closed.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the double never closed its connection"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for _ in 0..3 {
        assert_eq!(ingest(&fe).await.status(), 201);
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "one new connection, kept for the next requests"
    );
}

/// Answers framed in the other ways HTTP/1.1 allows reach the client as they were sent: a
/// chunked one, after an interim `100 Continue` and with a trailer, on one kept connection.
#[tokio::test]
async fn chunked_and_interim_answers_pass_through_on_one_connection() {
    const BODY: &str = r#"{"status":"ingested","ingested":1,"id":7,"ids":[7]}"#;
    let (a, b) = BODY.split_at(20);
    let answer = format!(
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x};ext=1\r\n{b}\r\n0\r\nx-trailer: 1\r\n\r\n",
        a.len(),
        b.len()
    );
    let (url, accepted) = backend(Answer::KeepAlive(answer.into_bytes())).await;
    let fe = front(&[("DATA_INGEST_URL", &url)]).await;
    for _ in 0..3 {
        let r = ingest(&fe).await;
        assert_eq!(r.status(), 201);
        assert_eq!(r.text().await.unwrap(), BODY);
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one connection for all three"
    );
}

/// Bytes after an answer are nothing a request asked for: the answer is used, the connection
/// is not (the next request goes out on a new one).
#[tokio::test]
async fn a_connection_with_bytes_after_the_answer_is_not_reused() {
    let mut answer = ingested();
    answer.extend_from_slice(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n");
    let (url, accepted) = backend(Answer::KeepAlive(answer)).await;
    let fe = front(&[("DATA_INGEST_URL", &url)]).await;
    for i in 1..=2 {
        let r = ingest(&fe).await;
        assert_eq!(r.status(), 201);
        assert_eq!(r.json::<serde_json::Value>().await.unwrap()["id"], 7);
        assert_eq!(accepted.load(Ordering::SeqCst), i);
    }
}

/// A listener whose connections have a 4 KiB receive buffer, and its URL: with a body of more
/// than a loopback socket's send buffer can grow to (4 MiB), frontend-api's write blocks before
/// the body is out.
fn small_window() -> (TcpListener, String) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(8).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

/// frontend-api with a 16 MiB body limit and a 5 s upstream timeout, `var` pointing at `url`.
async fn big_bodies(var: &str, url: &str) -> Front {
    front(&[
        (var, url),
        ("UPSTREAM_TIMEOUT_MS", "5000"),
        ("MAX_BODY_BYTES", "16777216"),
    ])
    .await
}

/// A backend that answers from the head alone, before it has read the body (a 413), and then
/// either stops reading or closes (a reset, with the body unread): its answer reaches the
/// client, not a 504 after the write stalled or a 502 after it failed.
#[tokio::test]
async fn an_answer_sent_before_the_body_was_read_reaches_the_client() {
    const BODY: &str =
        r#"{"error":{"code":"payload_too_large","message":"the body is larger than 64 KiB"}}"#;
    for close in [false, true] {
        let (listener, url) = small_window();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = sock.read(&mut buf).await.unwrap();
                assert!(n > 0, "the head never came");
                seen.extend_from_slice(&buf[..n]);
            }
            let answer = format!(
                "HTTP/1.1 413 Payload Too Large\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\n\r\n{BODY}",
                BODY.len()
            );
            sock.write_all(answer.as_bytes()).await.unwrap();
            if close {
                drop(sock);
            } else {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        });
        let fe = big_bodies("BUSINESS_LOGIC_URL", &url).await;
        let r = fe
            .post_json(
                "/api/v1/users",
                &json!({"username": "u".repeat(12 << 20), "email": "a@b.co"}),
            )
            .await;
        let (code, _) = error_of(r, 413).await;
        assert_eq!(code, "payload_too_large", "close: {close}");
    }
}

/// A backend that sends an interim `100 Continue` while frontend-api's write of a large body
/// is blocked, and answers once it has read the body: the body goes on, the answer arrives.
#[tokio::test]
async fn an_interim_answer_during_a_blocked_write_does_not_stop_the_body() {
    let (listener, url) = small_window();
    let body = format!(r#"{{"type":"x","data":"{}"}}"#, "u".repeat(12 << 20));
    let expected = body.len();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let head_end = loop {
            if let Some(at) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let n = sock.read(&mut buf).await.unwrap();
            assert!(n > 0, "the head never came");
            seen.extend_from_slice(&buf[..n]);
        };
        sock.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .unwrap();
        let mut got = seen.len() - head_end;
        while got < expected {
            let n = sock.read(&mut buf).await.unwrap();
            assert!(n > 0, "the body stopped at {got} of {expected} bytes");
            got += n;
        }
        sock.write_all(&ingested()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let fe = big_bodies("DATA_INGEST_URL", &url).await;
    let r = fe
        .post_raw("/api/v1/data/ingest", "application/json", body)
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["id"], 7);
}
