//! The release binary under the hostile tests of issue #14; prints the figures of
//! docs/performance.md ("Hostile input").
//!
//! `cargo build --release -p data-ingest && cargo bench -p data-ingest --bench hostile`
//!
//! 1. four concurrent 16 MB `{"type":"a","data":[0,0,...]}` bodies: peak RSS, `/health/live`
//!    p99 while they run, and what each got;
//! 2. 300 half-open connections with the process under `ulimit -n 256`: are other clients
//!    served, and how fast;
//! 3. `/metrics` size before and after 5,000 junk requests (random paths and methods);
//! 4. a database outage: readiness and write latency while it is known down;
//! 5. SIGTERM under 8 keep-alive writers that reconnect as soon as they are told
//!    `Connection: close`: requests reset or left unanswered (on keep-alive connections, and
//!    on a new connection's first request), writes acknowledged vs stored.
//!
//! `DATA_INGEST_BIN` overrides the binary (default target/release/data-ingest).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use test_support::{free_port, init_db_sql, workspace_root, PgCluster, PgOptions};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

// The raw HTTP reader and request builder of the tests.
#[allow(dead_code)]
#[path = "../tests/api/helpers.rs"]
mod helpers;

fn zeros_body(size: usize) -> Vec<u8> {
    let mut b = br#"{"type":"a","data":[0"#.to_vec();
    while b.len() + 4 < size {
        b.extend_from_slice(b",0");
    }
    b.extend_from_slice(b"]}");
    b
}

fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get((v.len() * 99 / 100).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Starts the binary (under `ulimit -n` when given) and waits until it is ready.
async fn start(db_url: &str, nofile: Option<u32>) -> (tokio::process::Child, SocketAddr) {
    let bin = std::env::var("DATA_INGEST_BIN").unwrap_or_else(|_| {
        workspace_root()
            .join("target/release/data-ingest")
            .display()
            .to_string()
    });
    let port = free_port("127.0.0.1").unwrap();
    let script = match nofile {
        Some(n) => format!("ulimit -n {n} && exec \"$0\""),
        None => "exec \"$0\"".to_string(),
    };
    let child = tokio::process::Command::new("sh")
        .args(["-c", &script, &bin])
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", db_url)
        .env("RUST_LOG", "error")
        .env("SHUTDOWN_DRAIN_MS", "1000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("http://{addr}/health/ready")).send().await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "{bin} did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, addr)
}

async fn attack_bodies(db_url: &str) {
    let (mut child, addr) = start(db_url, None).await;
    let pid = child.id().unwrap();
    let rss_before = status_kb(pid, "VmRSS:") / 1024;
    let http = reqwest::Client::new();
    let body = zeros_body(16_000_000);
    let attacks: Vec<_> = (0..4)
        .map(|_| {
            let (http, body) = (http.clone(), body.clone());
            tokio::spawn(async move {
                let t = Instant::now();
                let status = match http
                    .post(format!("http://{addr}/api/v1/ingest"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                {
                    Ok(r) => r.status().to_string(),
                    Err(e) => format!("error {e}"),
                };
                (status, t.elapsed())
            })
        })
        .collect();
    let mut live = Vec::new();
    while attacks.iter().any(|a| !a.is_finished()) {
        let t = Instant::now();
        let r = http
            .get(format!("http://{addr}/health/live"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        live.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut answers = Vec::new();
    for a in attacks {
        let (status, took) = a.await.unwrap();
        answers.push(format!("{status} in {:.1} s", took.as_secs_f64()));
    }
    let peak = status_kb(pid, "VmHWM:") / 1024;
    println!(
        "| four concurrent 16 MB bodies: peak RSS (VmHWM) | {peak} MB (idle {rss_before} MB) |"
    );
    println!(
        "| /health/live during them: p99 / max ({} probes) | {} / {} |",
        live.len(),
        ms(p99(live.clone())),
        ms(live.iter().max().copied().unwrap_or_default())
    );
    println!("| the four answers | {} |", answers.join(", "));
    child.kill().await.unwrap();
}

async fn half_open(db_url: &str) {
    let (mut child, addr) = start(db_url, Some(256)).await;
    let mut held = Vec::new();
    for _ in 0..300 {
        if let Ok(mut c) = TcpStream::connect(addr).await {
            let _ = c
                .write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
                .await;
            held.push(c);
        }
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let (mut served, mut lat) = (0, Vec::new());
    for _ in 0..50 {
        let t = Instant::now();
        if let Ok(r) = http
            .get(format!("http://{addr}/api/v1/ingest/stats"))
            .send()
            .await
        {
            if r.status() == 200 {
                served += 1;
                lat.push(t.elapsed());
            }
        }
    }
    println!(
        "| 300 half-open connections, ulimit -n 256: other clients served | {served} of 50, p99 {} |",
        ms(p99(lat))
    );
    drop(held);
    child.kill().await.unwrap();
}

async fn metrics_size(db_url: &str) {
    let (mut child, addr) = start(db_url, None).await;
    let http = reqwest::Client::new();
    let metrics = || async {
        http.get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .len()
    };
    let before = metrics().await;
    for i in 0..5000u32 {
        let method =
            reqwest::Method::from_bytes(format!("X{}", i.wrapping_mul(2654435761)).as_bytes())
                .unwrap();
        let path = match i % 3 {
            0 => format!("/{i}/{}", i.wrapping_mul(7919)),
            1 => format!("/api/v1/ingest/{i}"),
            _ => format!("/api/v1/ingest?junk={i}"),
        };
        let m = if i % 2 == 0 {
            method
        } else {
            reqwest::Method::GET
        };
        let _ = http.request(m, format!("http://{addr}{path}")).send().await;
    }
    let after = metrics().await;
    println!("| /metrics before and after 5,000 junk requests | {before} B, {after} B |");
    child.kill().await.unwrap();
}

async fn outage(cluster: &PgCluster, db_url: &str) {
    let (mut child, addr) = start(db_url, None).await;
    let http = reqwest::Client::new();
    cluster.stop().unwrap();
    let stopped = Instant::now();
    loop {
        let r = http
            .get(format!("http://{addr}/health/ready"))
            .send()
            .await
            .unwrap();
        if r.status() == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let noticed = stopped.elapsed();
    let (mut ready, mut write) = (Vec::new(), Vec::new());
    for _ in 0..100 {
        let t = Instant::now();
        let r = http
            .get(format!("http://{addr}/health/ready"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        ready.push(t.elapsed());
        let t = Instant::now();
        let r = http
            .post(format!("http://{addr}/api/v1/ingest"))
            .json(&serde_json::json!({"type":"during outage"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        write.push(t.elapsed());
    }
    println!(
        "| database stopped: readiness 503 after | {} |",
        ms(noticed)
    );
    println!(
        "| while known down: readiness p99 / write 503 p99 (100 each) | {} / {} |",
        ms(p99(ready)),
        ms(p99(write))
    );
    cluster.restart().unwrap();
    child.kill().await.unwrap();
}

async fn drain(cluster: &PgCluster, db_url: &str) {
    let (mut child, addr) = start(db_url, None).await;
    let before: i64 = cluster
        .psql("appdb", "SELECT count(*) FROM ingested_data")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            tokio::spawn(async move {
                // Failures on a connection that had already been answered (keep-alive), and
                // on a new connection's first request.
                let (mut acked, mut kept_alive, mut fresh) = (0u64, 0u64, 0u64);
                let req = helpers::post_request(
                    "/api/v1/ingest",
                    format!(r#"{{"type":"drain{w}"}}"#).as_bytes(),
                );
                'conn: loop {
                    let Ok(mut c) = TcpStream::connect(addr).await else {
                        // Refused: the listener is closed; nothing was written.
                        return (acked, kept_alive, fresh);
                    };
                    let mut answered_here = 0;
                    loop {
                        let ok = c.write_all(&req).await.is_ok();
                        let answer = match ok {
                            true => helpers::read_answer(&mut c).await.ok(),
                            false => None,
                        };
                        let Some(answer) = answer else {
                            match answered_here {
                                0 => fresh += 1,
                                _ => kept_alive += 1,
                            }
                            continue 'conn;
                        };
                        answered_here += 1;
                        if answer.status == 201 {
                            acked += 1;
                        }
                        if answer.header("connection") == Some("close") {
                            continue 'conn;
                        }
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let (mut acked, mut kept_alive, mut fresh) = (0, 0, 0);
    for w in writers {
        let (a, k, f) = w.await.unwrap();
        acked += a;
        kept_alive += k;
        fresh += f;
    }
    let exit = child.wait().await.unwrap();
    let after: i64 = cluster
        .psql("appdb", "SELECT count(*) FROM ingested_data")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    println!(
        "| SIGTERM under 8 keep-alive writers that reconnect at once: requests reset or unanswered on keep-alive connections / on a new connection's first request / acknowledged / stored | {kept_alive} / {fresh} / {acked} / {} ({exit}) |",
        after - before
    );
}

#[tokio::main]
async fn main() {
    let cluster = PgCluster::start(PgOptions::default()).expect("a PostgreSQL cluster");
    cluster.psql("postgres", "CREATE DATABASE appdb").unwrap();
    cluster.apply_file("appdb", &init_db_sql()).unwrap();
    let db_url = cluster.url("appdb");
    println!("| measure | value |");
    println!("|---|---|");
    attack_bodies(&db_url).await;
    half_open(&db_url).await;
    metrics_size(&db_url).await;
    drain(&cluster, &db_url).await;
    outage(&cluster, &db_url).await;
}
