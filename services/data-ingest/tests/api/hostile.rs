//! Hostile input and load, on loopback (issue #14): memory and bytes in flight, slow and idle
//! connections, the connection cap, bounded responses, metric cardinality, low-level
//! rejections, and a drain that resets nothing.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use test_support::{eventually, free_port, TestDb};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::helpers::{assert_error, closed_within, count, post_request, read_answer, spawn_with};

const BIN: &str = env!("CARGO_BIN_EXE_data-ingest");

/// The attack body of the issue: one record whose data is millions of zeros, `size` bytes.
fn zeros_body(size: usize) -> Vec<u8> {
    let head = br#"{"type":"a","data":[0"#;
    let mut b = Vec::with_capacity(size);
    b.extend_from_slice(head);
    while b.len() + 4 < size {
        b.extend_from_slice(b",0");
    }
    b.extend_from_slice(b"]}");
    b
}

/// Peak resident memory of a process (VmHWM), in MB.
fn peak_rss_mb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap()
        / 1024
}

#[tokio::test]
async fn four_16_mb_attack_bodies_keep_memory_bounded_and_liveness_answering() {
    let db = TestDb::new();
    let port = free_port("127.0.0.1").unwrap();
    let mut child = tokio::process::Command::new(BIN)
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    eventually("the binary to answer", Duration::from_secs(20), || async {
        let r = http.get(format!("{base}/health/ready")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    let pid = child.id().unwrap();
    let before = peak_rss_mb(pid);

    let body = zeros_body(16_000_000);
    let attacks: Vec<_> = (0..4)
        .map(|_| {
            let (http, url, body) = (http.clone(), format!("{base}/api/v1/ingest"), body.clone());
            tokio::spawn(async move {
                let r = http
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let retry = r.headers().get("retry-after").is_some();
                (r.status().as_u16(), retry)
            })
        })
        .collect();
    // Liveness while the attack runs.
    let mut slowest = Duration::ZERO;
    while attacks.iter().any(|a| !a.is_finished()) {
        let t = Instant::now();
        let r = http
            .get(format!("{base}/health/live"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        slowest = slowest.max(t.elapsed());
    }
    let mut stored = 0;
    for a in attacks {
        match a.await.unwrap() {
            (201, _) => stored += 1,
            (503, true) => {}
            other => panic!("an attack body got {other:?}"),
        }
    }
    let peak = peak_rss_mb(pid);
    assert!(stored >= 1, "no attack body was stored");
    assert_eq!(
        db.psql("SELECT count(*) FROM ingested_data WHERE jsonb_array_length(payload) > 7000000"),
        stored.to_string(),
        "the zeros were stored whole"
    );
    // Before: 550 MB a body, 2.25 GB for four. Debug build, so the bound is loose.
    assert!(peak < before + 300, "peak RSS {peak} MB (from {before} MB)");
    assert!(
        slowest < Duration::from_secs(2),
        "liveness stalled {slowest:?}"
    );
    child.kill().await.unwrap();
}

#[tokio::test]
async fn bytes_and_requests_in_flight_are_limited_with_503_and_retry_after() {
    let app = spawn_with(&[
        ("MAX_BODY_BYTES", "1048576"),
        ("MAX_BODY_BYTES_IN_FLIGHT", "1572864"),
    ])
    .await;
    let body = zeros_body(1_000_000);
    // A holds 1 MB of the 1.5 MB budget: its body is announced, and only partly sent.
    let mut a = TcpStream::connect(app.running.addr).await.unwrap();
    let req = post_request("/api/v1/ingest", &body);
    let split = req.len() - body.len() + 10;
    a.write_all(&req[..split]).await.unwrap();
    let url = app.url("/api/v1/ingest");
    let b = eventually(
        "B to be refused for the budget",
        Duration::from_secs(10),
        || async {
            // The refused body is read and dropped: an answer, not a broken pipe.
            let r = app
                .http
                .post(&url)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .expect("an answer to a refused body");
            (r.status() == 503).then_some(r)
        },
    )
    .await;
    assert_eq!(b.headers()["retry-after"], "1");
    assert_eq!(assert_error(b, 503).await.0, "overloaded");
    // A finishes: stored. Then B's retry fits.
    a.write_all(&req[split..]).await.unwrap();
    assert_eq!(read_answer(&mut a).await.unwrap().status, 201);
    let r = app
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // One request at a time: a second is refused at once, probes still answer.
    let one = spawn_with(&[("MAX_REQUESTS_IN_FLIGHT", "1")]).await;
    let mut slow = TcpStream::connect(one.running.addr).await.unwrap();
    let req = post_request("/api/v1/ingest", br#"{"type":"slow"}"#);
    slow.write_all(&req[..req.len() - 3]).await.unwrap();
    let r = eventually(
        "a second request to be refused",
        Duration::from_secs(10),
        || async {
            let r = one.get("/api/v1/ingest/stats").await;
            (r.status() == 503).then_some(r)
        },
    )
    .await;
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(assert_error(r, 503).await.0, "overloaded");
    assert_eq!(one.get("/health/live").await.status(), 200);
    assert_eq!(one.get("/health/ready").await.status(), 200);
    slow.write_all(&req[req.len() - 3..]).await.unwrap();
    assert_eq!(read_answer(&mut slow).await.unwrap().status, 201);
    assert_eq!(one.get("/api/v1/ingest/stats").await.status(), 200);
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed() {
    let app = spawn_with(&[
        ("HEADER_READ_TIMEOUT_MS", "300"),
        ("IDLE_TIMEOUT_MS", "2000"),
        ("REQUEST_TIMEOUT_MS", "500"),
    ])
    .await;
    let addr = app.running.addr;
    // Half a request head, then nothing: closed by the head's timeout, not the idle one.
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut half, Duration::from_millis(1500)).await);
    // A keep-alive connection left idle after one request: kept for the idle timeout (so a
    // proxy's pooled connection is not closed under it), then closed.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_answer(&mut idle).await.unwrap().status, 200);
    assert!(!closed_within(&mut idle, Duration::from_millis(800)).await);
    idle.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_answer(&mut idle).await.unwrap().status, 200);
    assert!(closed_within(&mut idle, Duration::from_secs(5)).await);
    // A body that stops arriving: 408 with the error shape, then closed.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    let req = post_request("/api/v1/ingest", br#"{"type":"slow body"}"#);
    slow.write_all(&req[..req.len() - 5]).await.unwrap();
    let answer = read_answer(&mut slow).await.unwrap();
    assert_eq!(answer.status, 408, "{answer:?}");
    assert!(
        answer.body.contains(r#""code":"request_timeout""#),
        "{answer:?}"
    );
    assert_eq!(answer.header("connection"), Some("close"));
    assert_eq!(count(&app), 0);
}

#[tokio::test]
async fn half_open_connections_past_the_cap_do_not_lock_others_out() {
    let app = spawn_with(&[("MAX_CONNECTIONS", "8")]).await;
    let mut attackers = Vec::new();
    for _ in 0..30 {
        let mut c = TcpStream::connect(app.running.addr).await.unwrap();
        c.write_all(b"GET /health/live HTTP/1.1\r\n").await.unwrap();
        attackers.push(c);
    }
    // Every new client evicts the oldest idle connection instead of waiting behind it.
    for _ in 0..5 {
        let t = Instant::now();
        let r = reqwest::Client::new()
            .get(app.url("/api/v1/ingest/stats"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }
    let mut closed = 0;
    for c in attackers.iter_mut() {
        if closed_within(c, Duration::from_millis(200)).await {
            closed += 1;
        }
    }
    assert!(
        closed >= 22,
        "only {closed} of 30 half-open connections closed"
    );
}

#[tokio::test]
async fn recent_answers_are_bounded_in_bytes() {
    let app = spawn_with(&[("MAX_RESPONSE_BYTES", "10000")]).await;
    for i in 0..3 {
        let record = json!({"type":"big","data":{"i": i, "blob": "x".repeat(4000)}});
        assert_eq!(app.post_json("/api/v1/ingest", &record).await.status(), 201);
    }
    let r = app.get("/api/v1/ingest/recent?limit=100").await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.len() <= 10000, "{} bytes", text.len());
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["count"], 2);
    assert_eq!(body["truncated"], true);
    assert_eq!(body["records"][0]["data"]["i"], 2, "newest first");
    // A record larger than the bound alone: left out, and said so.
    let huge = json!({"type":"huge","data":"y".repeat(20000)});
    assert_eq!(app.post_json("/api/v1/ingest", &huge).await.status(), 201);
    let body: Value = app
        .get("/api/v1/ingest/recent?limit=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (body["count"].clone(), body["truncated"].clone()),
        (json!(0), json!(true))
    );
    let body: Value = app
        .get("/api/v1/ingest/recent?limit=1&x=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["limit"], 1);
}

#[tokio::test]
async fn metric_labels_come_from_route_templates_only() {
    let app = spawn_with(&[]).await;
    let size_before = app.get("/metrics").await.text().await.unwrap().len();
    for i in 0..300 {
        let method = reqwest::Method::from_bytes(format!("FOO{i}").as_bytes()).unwrap();
        let paths = [
            format!("/junk/{i}"),
            format!("/api/v1/ingest/{i}"),
            format!("/api/v1/ingest?x={i}"),
        ];
        for p in &paths {
            app.http.get(app.url(p)).send().await.unwrap();
        }
        app.http
            .request(method, app.url("/api/v1/ingest"))
            .send()
            .await
            .unwrap();
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(!metrics.contains("junk"), "a client path became a label");
    assert!(!metrics.contains("FOO"), "a client method became a label");
    assert!(metrics.contains(r#"route="unmatched""#));
    assert!(metrics.contains(r#"method="other""#));
    assert!(
        metrics.len() < size_before + 12_000,
        "/metrics grew from {size_before} to {} bytes",
        metrics.len()
    );
}

#[tokio::test]
async fn low_level_rejections_are_json_with_a_request_id() {
    let app = spawn_with(&[]).await;
    let long = format!("/api/v1/ingest/recent?limit=1&pad={}", "a".repeat(9000));
    let r = app.get(&long).await;
    assert!(r.headers().contains_key("x-request-id"));
    assert_eq!(assert_error(r, 414).await.0, "uri_too_long");
    let r = app
        .http
        .get(app.url("/health/live"))
        .header("x-big", "b".repeat(20_000))
        .send()
        .await
        .unwrap();
    assert!(r.headers().contains_key("x-request-id"));
    assert_eq!(assert_error(r, 431).await.0, "headers_too_large");
    // What hyper refuses itself (a malformed request line, a head past 64 KiB) gets the JSON
    // shape and a request id too.
    let mut garbage = TcpStream::connect(app.running.addr).await.unwrap();
    garbage.write_all(b"GARBAGE\r\n\r\n").await.unwrap();
    let answer = read_answer(&mut garbage).await.unwrap();
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(answer.header("x-request-id").is_some(), "{answer:?}");
    assert!(
        answer.body.contains(r#""code":"invalid_request""#),
        "{answer:?}"
    );
    // A head past 64 KiB, and one over hyper's 100 headers, each small.
    let many: String = (0..120).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    for headers in [format!("X-Big: {}\r\n", "b".repeat(70_000)), many] {
        let mut sock = TcpStream::connect(app.running.addr).await.unwrap();
        let head = format!("GET /health/live HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
        sock.write_all(head.as_bytes()).await.unwrap();
        let answer = read_answer(&mut sock).await.unwrap();
        assert_eq!(answer.status, 431, "{answer:?}");
        assert!(
            answer.body.contains(r#""code":"headers_too_large""#),
            "{answer:?}"
        );
    }
    // 405 says what is allowed; every answer forbids content sniffing.
    let r = app.get("/api/v1/ingest").await;
    assert_eq!(r.headers()["allow"], "POST");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_error(r, 405).await;
    let r = app.get("/health/live").await;
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn the_drain_closes_keep_alive_connections_without_resets() {
    let db = TestDb::new();
    let running = crate::helpers::start_on(&db.url, &[("SHUTDOWN_DRAIN_MS", "1500")]).await;
    let addr = running.addr;
    // An idle keep-alive connection that sends nothing during the drain.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_answer(&mut idle).await.unwrap().status, 200);
    // Writers on keep-alive connections, posting until they are told the connection closes.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            tokio::spawn(async move {
                let mut conn = TcpStream::connect(addr).await.unwrap();
                let mut acknowledged = 0;
                loop {
                    let req =
                        post_request("/api/v1/ingest", format!(r#"{{"type":"w{w}"}}"#).as_bytes());
                    conn.write_all(&req).await.expect("writing a request");
                    let answer = read_answer(&mut conn)
                        .await
                        .unwrap_or_else(|e| panic!("writer {w}, after {acknowledged}: {e}"));
                    assert_eq!(answer.status, 201, "{answer:?}");
                    acknowledged += 1;
                    if answer.header("connection") == Some("close") {
                        assert!(closed_within(&mut conn, Duration::from_secs(5)).await);
                        return acknowledged;
                    }
                }
            })
        })
        .collect();
    // Let every writer store something before the drain starts.
    eventually(
        "each writer to store a record",
        Duration::from_secs(10),
        || async {
            (db.psql("SELECT count(DISTINCT data_type) FROM ingested_data") == "4").then_some(())
        },
    )
    .await;
    let shutdown = tokio::spawn(running.shutdown());
    let mut acknowledged = 0;
    for w in writers {
        acknowledged += w.await.expect("a writer saw a reset or a lost answer");
    }
    // The idle connection is closed with FIN at the end of the drain, not reset.
    let mut b = [0u8; 1];
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(&mut idle, &mut b),
    )
    .await
    .expect("the idle connection is closed after the drain");
    assert_eq!(read.expect("closed without a reset"), 0);
    shutdown.await.unwrap().unwrap();
    assert_eq!(
        db.psql("SELECT count(*) FROM ingested_data"),
        acknowledged.to_string(),
        "every acknowledged write is stored, and nothing else"
    );
}

#[tokio::test]
async fn writes_need_a_bearer_token_when_tokens_are_configured() {
    let app = spawn_with(&[(
        "AUTH_TOKENS",
        "first-token-0123456789,second-token-0123456789",
    )])
    .await;
    let post = |token: Option<&'static str>| {
        let mut r = app
            .http
            .post(app.url("/api/v1/ingest"))
            .json(&json!({"type":"auth"}));
        if let Some(t) = token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        r.send()
    };
    let r = post(None).await.unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(assert_error(r, 401).await.0, "unauthorized");
    let r = post(Some("first-token-012345678X")).await.unwrap();
    assert_eq!(assert_error(r, 401).await.0, "unauthorized");
    assert_eq!(
        post(Some("second-token-0123456789"))
            .await
            .unwrap()
            .status(),
        201
    );
    // Reads stay open; the document says which operations need the token.
    assert_eq!(app.get("/api/v1/ingest/stats").await.status(), 200);
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert_eq!(
        spec["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(spec["paths"]["/ingest"]["post"]["responses"]
        .get("401")
        .is_some());
    assert!(spec["paths"]["/ingest/stats"]["get"]
        .get("security")
        .is_none());
    assert_eq!(count(&app), 1);
}

#[tokio::test]
async fn metrics_can_be_served_on_a_port_of_their_own() {
    let port = free_port("127.0.0.1").unwrap();
    let at = format!("127.0.0.1:{port}");
    let app = spawn_with(&[("METRICS_ADDR", &at)]).await;
    assert_eq!(app.get("/api/v1/ingest/stats").await.status(), 200);
    assert_error(app.get("/metrics").await, 404).await;
    let text = app
        .http
        .get(format!("http://{at}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains(r#"route="/api/v1/ingest/stats""#), "{text}");
}
