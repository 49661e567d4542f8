//! data-ingest against pgbench and COPY, same cluster, same run, production durability.
//!
//! `cargo bench -p data-ingest --bench ingest` prints:
//! - single-record POST /api/v1/ingest per second over C keep-alive connections, and pgbench
//!   running the equivalent INSERT over the same C connections: ratio target >= 0.6;
//! - rows per second of POST /api/v1/ingest/batch (10,000 records a request), and COPY of the
//!   same rows over one connection: ratio target >= 0.5.
//!
//! The cluster has fsync, synchronous_commit and full_page_writes on. Knobs:
//! BENCH_CONNECTIONS (default 8), BENCH_SECONDS (default 10), BENCH_BATCHES (default 20).

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::ServiceConfig;
use serde_json::{json, Value};
use sqlx::Connection;
use test_support::service_env;

#[path = "support/pgbench.rs"]
mod support;
use support::{durable_appdb, knob, pgbench};

fn record() -> Value {
    json!({"type":"sensor","data":{"temperature":25.5,"humidity":60},"source":"api"})
}

/// One keep-alive HTTP/1.1 connection sending the same POST until `deadline`; returns
/// (answered 201, anything else). Hand-written so the load generator costs about as little
/// CPU as pgbench's libpq client: both share the machine with the server under test.
async fn keep_alive_client(
    addr: std::net::SocketAddr,
    request: Arc<Vec<u8>>,
    deadline: Instant,
) -> (u64, u64) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.set_nodelay(true).unwrap();
    let (mut ok, mut bad) = (0u64, 0u64);
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    while Instant::now() < deadline {
        conn.write_all(&request).await.unwrap();
        // Read one response: headers, then Content-Length bytes of body.
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&buf[..end])
                    .unwrap()
                    .to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    if head.starts_with("http/1.1 201") {
                        ok += 1;
                    } else {
                        bad += 1;
                    }
                    buf.drain(..end + 4 + len);
                    break;
                }
            }
            let n = conn.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the server closed the connection");
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    (ok, bad)
}

async fn post_loop(addr: std::net::SocketAddr, connections: u64, run_for: Duration) -> f64 {
    let body = serde_json::to_vec(&record()).unwrap();
    let mut request = format!(
        "POST /api/v1/ingest HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let request = Arc::new(request);
    let started = Instant::now();
    let deadline = started + run_for;
    let tasks: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(keep_alive_client(addr, request.clone(), deadline)))
        .collect();
    let (mut ok, mut bad) = (0, 0);
    for t in tasks {
        let (o, b) = t.await.unwrap();
        ok += o;
        bad += b;
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(bad, 0, "requests failed during the benchmark");
    ok as f64 / elapsed
}

async fn batch_rows_per_sec(url: &str, batches: u64) -> f64 {
    let records: Vec<Value> = (0..10_000).map(|_| record()).collect();
    let body = serde_json::to_vec(&json!({ "records": records })).unwrap();
    let http = reqwest::Client::new();
    let started = Instant::now();
    for _ in 0..batches {
        let r = http
            .post(url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    (batches * 10_000) as f64 / started.elapsed().as_secs_f64()
}

async fn copy_rows_per_sec(db_url: &str, batches: u64) -> f64 {
    let mut conn = sqlx::PgConnection::connect(db_url).await.unwrap();
    let line = "sensor\tapi\t{\"temperature\":25.5,\"humidity\":60}\n";
    let data = line.repeat(10_000);
    let started = Instant::now();
    for _ in 0..batches {
        let mut copy = conn
            .copy_in_raw("COPY ingested_data (data_type, source, payload) FROM STDIN")
            .await
            .unwrap();
        copy.send(data.as_bytes()).await.unwrap();
        assert_eq!(copy.finish().await.unwrap(), 10_000);
    }
    (batches * 10_000) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let connections = knob("BENCH_CONNECTIONS", 8);
    let seconds = knob("BENCH_SECONDS", 10);
    let batches = knob("BENCH_BATCHES", 20);
    let cluster = durable_appdb();
    let db_url = cluster.url("appdb");
    let pool = connections.to_string();
    let config = ServiceConfig::from_lookup(
        data_ingest::DEFAULT_PORT,
        data_ingest::DEFAULT_BODY_LIMIT,
        service_env(
            &db_url,
            &[("DB_POOL_MAX_CONNECTIONS", &pool), ("RUST_LOG", "warn")],
        ),
    )
    .unwrap();
    let app = data_ingest::start(config).await.unwrap();
    let batch_url = format!("{}/api/v1/ingest/batch", app.url());

    eprintln!("settings: fsync=on synchronous_commit=on; {connections} connections, {seconds}s per run, {batches} batches of 10000");
    // Warm up both paths (connections, caches) before measuring.
    post_loop(app.addr, connections, Duration::from_secs(1)).await;
    pgbench(&cluster, connections, 1);

    let post_rate = post_loop(app.addr, connections, Duration::from_secs(seconds)).await;
    let pgbench_rate = pgbench(&cluster, connections, seconds);
    let batch_rate = batch_rows_per_sec(&batch_url, batches).await;
    let copy_rate = copy_rows_per_sec(&db_url, batches).await;

    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| single-record POST /api/v1/ingest ({connections} connections) | {post_rate:.0} req/s |"
    );
    println!("| pgbench equivalent INSERT ({connections} connections) | {pgbench_rate:.0} tps |");
    println!(
        "| **ratio POST / pgbench** (target >= 0.6) | **{:.2}** |",
        post_rate / pgbench_rate
    );
    println!("| POST /api/v1/ingest/batch (10,000 records a request) | {batch_rate:.0} rows/s |");
    println!("| COPY of the same rows (one connection) | {copy_rate:.0} rows/s |");
    println!(
        "| **ratio batch / COPY** (target >= 0.5) | **{:.2}** |",
        batch_rate / copy_rate
    );
    app.shutdown().await.unwrap();
}
