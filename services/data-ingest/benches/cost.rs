//! Cost per request (issue #15): the release services against pgbench, `\copy` and nginx, with
//! wrk as the load generator, everything in one run on one PostgreSQL 15 cluster (fsync,
//! synchronous_commit and full_page_writes on).
//!
//! ```sh
//! ./dev bench        # installs wrk and nginx when missing, builds, runs this
//! # or, with wrk and nginx present:
//! cargo build --release -p data-ingest -p frontend-api
//! cargo bench -p data-ingest --bench cost
//! ```
//!
//! Installs nothing: when wrk, nginx, pgbench or a release binary is missing it says what to
//! run and exits with status 2. It prints, each ratio's two sides measured alternately
//! (`BENCH_ROUNDS` rounds, default 2; the figures are per round, so the spread shows):
//! - pgbench of `INSERT ... RETURNING id` vs wrk `POST /api/v1/ingest` on the release
//!   data-ingest (`BENCH_CONNECTIONS`, default 8, for `BENCH_SECONDS`, default 10), and
//!   data-ingest's own CPU per request (utime + stime from /proc during the wrk run);
//! - `\copy` of 10,000 rows vs `POST /api/v1/ingest/batch` of the same 10,000 records;
//! - p50 latency with 1 connection: data-ingest directly, through frontend-api
//!   (`POST /api/v1/data/ingest`) and through nginx `proxy_pass` with a keep-alive upstream:
//!   the latency each adds over direct, and the CPU frontend-api and nginx (its master and
//!   worker) spend per request proxied there.
//!
//! `DATA_INGEST_BIN` / `FRONTEND_API_BIN` override the binaries (default target/release/...);
//! `INGEST_ENV` adds `KEY=VALUE,...` to data-ingest's environment (e.g. `ACCESS_LOG=errors`),
//! `FRONTEND_ENV` to frontend-api's. `TRACE_SYSCALLS=1` adds one latency run of each proxy
//! under perf's system-call tracepoints and prints how long each spends on a request's path
//! (`support/syscalls.rs`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use test_support::{free_port, pg_bin_dir, workspace_root, PgCluster};

// The raw HTTP reader and request builder of the tests.
#[allow(dead_code)]
#[path = "../tests/api/helpers.rs"]
mod helpers;
#[path = "support/pgbench.rs"]
mod support;
#[path = "support/syscalls.rs"]
mod syscalls;
use support::{durable_appdb, knob, pgbench};

const RECORD: &str =
    r#"{"type":"sensor","data":{"temperature":25.5,"humidity":60},"source":"api"}"#;

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

fn binary(var: &str, name: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/release").join(name))
}

/// What is missing, with the command that provides it.
fn missing() -> Vec<String> {
    let mut out = Vec::new();
    if which("wrk").is_none() {
        out.push("wrk (apt-get install -y wrk, or ./dev bench)".to_string());
    }
    if which("nginx").is_none() {
        out.push("nginx (apt-get install -y nginx-light, or ./dev bench)".to_string());
    }
    if !pg_bin_dir().join("pgbench").exists() {
        out.push("pgbench (apt-get install -y postgresql-15)".to_string());
    }
    for (var, name) in [
        ("DATA_INGEST_BIN", "data-ingest"),
        ("FRONTEND_API_BIN", "frontend-api"),
    ] {
        let b = binary(var, name);
        if !b.is_file() {
            out.push(format!(
                "{} (cargo build --release -p data-ingest -p frontend-api)",
                b.display()
            ));
        }
    }
    out
}

/// A child process stopped when dropped: SIGTERM (nginx's master then stops its workers;
/// SIGKILL would leave them running), and SIGKILL if it has not exited after 5 s.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // Already gone (perf stopped by perf_stop): nothing to signal.
        if let Ok(Some(_)) = self.0.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_ready(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            use std::io::{Read, Write};
            let _ =
                s.write_all(b"GET /health/ready HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n");
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            if answer.starts_with("HTTP/1.1 200") {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{what} did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spawn_service(bin: &Path, env: &[(String, String)], what: &str) -> (Proc, SocketAddr) {
    let port = free_port("127.0.0.1").unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut cmd = Command::new(bin);
    cmd.env("LISTEN_ADDR", addr.to_string())
        .env("SHUTDOWN_DRAIN_MS", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    let p = Proc(child);
    wait_ready(addr, what);
    (p, addr)
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let (user, system) = cpu_split(pid);
    user + system
}

/// A process's user and system CPU seconds so far (`utime`, `stime`).
fn cpu_split(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // USER_HZ is 100 on Linux.
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 100.0;
    (ticks(11), ticks(12))
}

struct WrkResult {
    rate: f64,
    requests: f64,
    p50_ms: f64,
}

fn parse_ms(v: &str) -> Option<f64> {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

fn wrk(url: &str, script: &Path, connections: u64, seconds: u64) -> WrkResult {
    let c = connections.to_string();
    let threads = connections.min(2).to_string();
    let out = Command::new("wrk")
        .args(["-t", &threads, "-c", &c, "-d", &format!("{seconds}s")])
        .args(["--latency", "-s"])
        .arg(script)
        .arg(url)
        .output()
        .expect("running wrk");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "wrk saw errors against {url}:\n{text}"
    );
    let rate = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk output: {text}"));
    let requests = text
        .lines()
        .find_map(|l| {
            l.split_once(" requests in ")
                .map(|(n, _)| n.trim().to_string())
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let p50_ms = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("50%"))
        .and_then(|v| parse_ms(v.trim()))
        .unwrap_or(f64::NAN);
    WrkResult {
        rate,
        requests,
        p50_ms,
    }
}

/// `\copy` of 10,000 rows through psql, `times` times; rows per second.
fn copy_rows_per_sec(cluster: &PgCluster, times: u64) -> f64 {
    let file = cluster.dir().join("rows.tsv");
    std::fs::write(
        &file,
        "sensor\tapi\t{\"temperature\":25.5,\"humidity\":60}\n".repeat(10_000),
    )
    .unwrap();
    let _ = Command::new("chmod").arg("644").arg(&file).status();
    let started = Instant::now();
    for _ in 0..times {
        let sql = format!(
            "\\copy ingested_data (data_type, source, payload) FROM '{}'",
            file.display()
        );
        let out = cluster
            .tool(
                "psql",
                &[
                    "-X",
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-d",
                    "appdb",
                    "-c",
                    &sql,
                ],
            )
            .output()
            .expect("running psql");
        assert!(
            out.status.success(),
            "\\copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (times * 10_000) as f64 / started.elapsed().as_secs_f64()
}

/// `POST /api/v1/ingest/batch` of 10,000 records over one keep-alive connection.
fn batch_rows_per_sec(addr: SocketAddr, times: u64) -> f64 {
    use tokio::io::AsyncWriteExt;
    let records = vec![RECORD; 10_000].join(",");
    let request = helpers::post_request(
        "/api/v1/ingest/batch",
        format!("{{\"records\":[{records}]}}").as_bytes(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.set_nodelay(true).unwrap();
        let started = Instant::now();
        for _ in 0..times {
            conn.write_all(&request).await.unwrap();
            let answer = helpers::read_answer(&mut conn).await.unwrap();
            assert_eq!(answer.status, 201, "batch answered {}", answer.body);
        }
        (times * 10_000) as f64 / started.elapsed().as_secs_f64()
    })
}

fn start_nginx(dir: &Path, upstream: SocketAddr) -> (Proc, SocketAddr) {
    let port = free_port("127.0.0.1").unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    // Ignored (with a notice) when not run as root; as root, workers may use the temp dirs.
    let conf = format!(
        "user root;
worker_processes 1;
error_log {dir}/logs/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  upstream ingest {{ server {upstream}; keepalive 16; }}
  server {{
    listen {addr};
    location / {{
      proxy_pass http://ingest;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }}
  }}
}}
",
        dir = dir.display()
    );
    let file = dir.join("nginx.conf");
    std::fs::write(&file, conf).unwrap();
    let child = Command::new(which("nginx").unwrap())
        .args(["-p"])
        .arg(dir)
        .arg("-c")
        .arg(&file)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting nginx");
    let p = Proc(child);
    wait_ready(addr, "nginx");
    (p, addr)
}

/// `perf record` (cpu-clock, call graphs) of process `pid` into `out`, until [`perf_stop`].
fn perf_record(pid: u32, out: &std::ffi::OsStr) -> Proc {
    Proc(
        Command::new("perf")
            .args(["record", "-e", "cpu-clock", "-F", "2000"])
            // PERF_CALL_GRAPH=dwarf for stacks through code built without frame pointers.
            .arg(format!(
                "--call-graph={}",
                std::env::var("PERF_CALL_GRAPH").unwrap_or_else(|_| "fp".into())
            ))
            .arg("-o")
            .arg(out)
            .args(["-p", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting perf record"),
    )
}

/// Stops a [`perf_record`]: perf writes its file on SIGINT.
fn perf_stop(perf: Option<Proc>) {
    if let Some(mut perf) = perf {
        let _ = Command::new("kill")
            .args(["-INT", &perf.0.id().to_string()])
            .status();
        let _ = perf.0.wait();
    }
}

/// Rows in `ingested_data` and the transactions that wrote them (distinct `xmin`).
fn commits(cluster: &PgCluster) -> (f64, f64) {
    let out = cluster
        .psql(
            "appdb",
            "SELECT count(*) || ' ' || count(DISTINCT xmin::text) FROM ingested_data",
        )
        .unwrap_or_default();
    let mut v = out.split_whitespace().filter_map(|n| n.parse::<f64>().ok());
    (v.next().unwrap_or(0.0), v.next().unwrap_or(0.0))
}

/// Rows per commit since `before` (group commit puts many rows in one transaction).
fn commits_after(cluster: &PgCluster, before: (f64, f64)) -> f64 {
    let after = commits(cluster);
    (after.0 - before.0) / (after.1 - before.1).max(1.0)
}

/// `KEY=VALUE,...` from the environment variable `var` (none when unset).
fn env_list(var: &str) -> Vec<(String, String)> {
    std::env::var(var)
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The median of `v` (NaN when empty).
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn range(v: &[f64], digits: usize) -> String {
    let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if v.len() < 2 || (hi - lo).abs() < f64::EPSILON {
        format!("{lo:.digits$}")
    } else {
        format!("{lo:.digits$}–{hi:.digits$}")
    }
}

fn main() {
    let missing = missing();
    if !missing.is_empty() {
        eprintln!("cost bench: missing, install or build first:");
        for m in &missing {
            eprintln!("  - {m}");
        }
        std::process::exit(2);
    }
    let connections = knob("BENCH_CONNECTIONS", 8);
    let seconds = knob("BENCH_SECONDS", 10);
    let rounds = knob("BENCH_ROUNDS", 2).max(1);
    let batches = knob("BENCH_BATCHES", 10);
    let latency_seconds = knob("BENCH_LATENCY_SECONDS", 5);

    let cluster = durable_appdb();
    let db_url = cluster.url("appdb");

    let mut ingest_env: Vec<(String, String)> = vec![
        ("DATABASE_URL".into(), db_url.clone()),
        ("DB_POOL_MAX_CONNECTIONS".into(), connections.to_string()),
    ];
    ingest_env.extend(env_list("INGEST_ENV"));
    let (ingest, ingest_addr) = spawn_service(
        &binary("DATA_INGEST_BIN", "data-ingest"),
        &ingest_env,
        "data-ingest",
    );
    let ingest_pid = ingest.0.id();
    let mut frontend_env: Vec<(String, String)> = vec![
        ("DATABASE_URL".into(), db_url.clone()),
        ("DATA_INGEST_URL".into(), format!("http://{ingest_addr}")),
        ("BUSINESS_LOGIC_URL".into(), "http://127.0.0.1:9".into()),
    ];
    frontend_env.extend(env_list("FRONTEND_ENV"));
    let (frontend, frontend_addr) = spawn_service(
        &binary("FRONTEND_API_BIN", "frontend-api"),
        &frontend_env,
        "frontend-api",
    );
    let frontend_pid = frontend.0.id();
    let work = tempfile::Builder::new()
        .prefix("drd-cost-")
        .tempdir()
        .unwrap();
    let (nginx, nginx_addr) = start_nginx(&work.path().join("nginx"), ingest_addr);
    // The master and its worker: their CPU during nginx's latency run.
    let nginx_pids: Vec<u32> = std::iter::once(nginx.0.id())
        .chain(test_support::child_pids(nginx.0.id()))
        .collect();
    let nginx_cpu = || {
        nginx_pids
            .iter()
            .map(|&p| cpu_split(p))
            .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    let script = work.path().join("post.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = '{RECORD}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"
        ),
    )
    .unwrap();

    eprintln!(
        "settings: fsync=on synchronous_commit=on; {connections} connections, {seconds}s per run, \
         {rounds} rounds alternating; data-ingest {}",
        binary("DATA_INGEST_BIN", "data-ingest").display()
    );
    let direct = format!("http://{ingest_addr}/api/v1/ingest");
    let via_frontend = format!("http://{frontend_addr}/api/v1/data/ingest");
    let via_nginx = format!("http://{nginx_addr}/api/v1/ingest");
    // Warm up every path (connections, caches).
    wrk(&direct, &script, connections, 1);
    wrk(&via_frontend, &script, 1, 1);
    wrk(&via_nginx, &script, 1, 1);
    pgbench(&cluster, connections, 1);

    let (mut posts, mut pgb, mut cpu_us, mut ratios) = (vec![], vec![], vec![], vec![]);
    let (mut batch, mut copy, mut copy_ratios) = (vec![], vec![], vec![]);
    let (mut p_direct, mut p_front, mut p_nginx) = (vec![], vec![], vec![]);
    let (mut add_front, mut add_nginx, mut front_cpu_us) = (vec![], vec![], vec![]);
    let mut rows_per_commit = vec![];
    let mut nginx_cpu_us = vec![];
    // The user-space part of each, per request.
    let (mut front_user_us, mut nginx_user_us) = (vec![], vec![]);
    for round in 0..rounds {
        // Alternate which side goes first.
        // PERF_DATA=<file>: a perf profile (cpu-clock) of data-ingest during the first wrk run.
        let perf = match std::env::var_os("PERF_DATA") {
            Some(out) if round == 0 => Some(perf_record(ingest_pid, &out)),
            _ => None,
        };
        let run_wrk = || {
            let commits = commits(&cluster);
            let before = cpu_seconds(ingest_pid);
            let w = wrk(&direct, &script, connections, seconds);
            let used = cpu_seconds(ingest_pid) - before;
            let after = commits_after(&cluster, commits);
            (w, used, after)
        };
        let (w, p) = if round % 2 == 0 {
            let w = run_wrk();
            (w, pgbench(&cluster, connections, seconds))
        } else {
            let p = pgbench(&cluster, connections, seconds);
            (run_wrk(), p)
        };
        rows_per_commit.push(w.2);
        perf_stop(perf);
        posts.push(w.0.rate);
        cpu_us.push(w.1 * 1e6 / w.0.requests.max(1.0));
        pgb.push(p);
        ratios.push(w.0.rate / p);

        let (b, c) = if round % 2 == 0 {
            (
                batch_rows_per_sec(ingest_addr, batches),
                copy_rows_per_sec(&cluster, batches),
            )
        } else {
            let c = copy_rows_per_sec(&cluster, batches);
            (batch_rows_per_sec(ingest_addr, batches), c)
        };
        batch.push(b);
        copy.push(c);
        copy_ratios.push(b / c);

        let mut order = vec![&direct, &via_frontend, &via_nginx];
        order.rotate_left(round as usize % 3);
        let mut got = std::collections::HashMap::new();
        for url in order {
            // PERF_FRONTEND=<file>: a perf profile of frontend-api during its first latency run.
            let perf = match std::env::var_os("PERF_FRONTEND") {
                Some(out) if round == 0 && url == &via_frontend => {
                    Some(perf_record(frontend_pid, &out))
                }
                _ => None,
            };
            let (front_before, nginx_before) = (cpu_split(frontend_pid), nginx_cpu());
            let w = wrk(url, &script, 1, latency_seconds);
            // (all, user space) µs per request between two readings.
            let per_request = |before: (f64, f64), after: (f64, f64)| {
                let per = |s: f64| s * 1e6 / w.requests.max(1.0);
                (
                    per(after.0 + after.1 - before.0 - before.1),
                    per(after.0 - before.0),
                )
            };
            if url == &via_frontend {
                let (all, user) = per_request(front_before, cpu_split(frontend_pid));
                front_cpu_us.push(all);
                front_user_us.push(user);
            }
            if url == &via_nginx {
                let (all, user) = per_request(nginx_before, nginx_cpu());
                nginx_cpu_us.push(all);
                nginx_user_us.push(user);
            }
            got.insert(url.clone(), w.p50_ms);
            perf_stop(perf);
        }
        let (d, f, n) = (got[&direct], got[&via_frontend], got[&via_nginx]);
        p_direct.push(d);
        p_front.push(f);
        p_nginx.push(n);
        add_front.push(f - d);
        add_nginx.push(n - d);
        eprintln!(
            "round {}: POST {:.0} req/s, pgbench {p:.0} tps, ratio {:.2}, {:.0} µs CPU/request; \
             batch {b:.0} rows/s, \\copy {c:.0} rows/s; p50 direct {d:.3} ms, frontend {f:.3} ms, nginx {n:.3} ms; \
             frontend-api {:.0} µs CPU/request ({:.0} user), nginx {:.0} µs CPU/request ({:.0} user); \
             {:.2} rows per commit",
            round + 1,
            w.0.rate,
            w.0.rate / p,
            w.1 * 1e6 / w.0.requests.max(1.0),
            front_cpu_us.last().copied().unwrap_or(f64::NAN),
            front_user_us.last().copied().unwrap_or(f64::NAN),
            nginx_cpu_us.last().copied().unwrap_or(f64::NAN),
            nginx_user_us.last().copied().unwrap_or(f64::NAN),
            w.2,
        );
    }

    println!("| measure ({rounds} rounds; ranges over rounds) | value |");
    println!("|---|---|");
    println!(
        "| wrk `POST /api/v1/ingest` (seed record, {connections} connections, {seconds} s) | {} req/s |",
        range(&posts, 0)
    );
    println!(
        "| pgbench, the same `INSERT ... RETURNING id` ({connections} connections) | {} tps |",
        range(&pgb, 0)
    );
    println!(
        "| **ratio POST / pgbench** (target >= 0.8) | **{}** |",
        range(&ratios, 2)
    );
    println!(
        "| data-ingest CPU per request (utime+stime / requests, target <= 40 µs) | {} µs |",
        range(&cpu_us, 0)
    );
    println!(
        "| rows per commit during the wrk run (1 without group commit) | {} |",
        range(&rows_per_commit, 2)
    );
    println!(
        "| frontend-api added p50 latency (1 connection; direct p50 {} ms) | +{} ms |",
        range(&p_direct, 3),
        range(&add_front, 3)
    );
    println!(
        "| nginx `proxy_pass` keep-alive added p50 latency, same run | +{} ms |",
        range(&add_nginx, 3)
    );
    // The gateway target, round by round: each round's two runs are next to each other.
    let gaps: Vec<f64> = add_front
        .iter()
        .zip(&add_nginx)
        .map(|(f, n)| f - n)
        .collect();
    let median = median(&gaps);
    println!(
        "| **frontend-api added p50 - nginx added p50**, per round: median (target <= 0); rounds with frontend-api <= nginx | **{median:+.3} ms**; {} of {} |",
        gaps.iter().filter(|g| **g <= 0.0).count(),
        gaps.len()
    );
    println!(
        "| p50 through frontend-api / through nginx | {} ms / {} ms |",
        range(&p_front, 3),
        range(&p_nginx, 3)
    );
    println!(
        "| frontend-api CPU per request (1 connection; of it in user space) | {} µs ({} µs) |",
        range(&front_cpu_us, 0),
        range(&front_user_us, 0)
    );
    println!(
        "| nginx CPU per request, same proxying (1 connection; master + worker; of it in user space) | {} µs ({} µs) |",
        range(&nginx_cpu_us, 0),
        range(&nginx_user_us, 0)
    );
    println!(
        "| batch of 10,000 records / `\\copy` of the same rows | {} / {} rows/s = **{}** |",
        range(&batch, 0),
        range(&copy, 0),
        range(&copy_ratios, 2)
    );

    // TRACE_SYSCALLS=1: one more latency run of each proxy under perf's system-call
    // tracepoints (after the rounds: the tracer's cost stays out of their figures).
    if std::env::var_os("TRACE_SYSCALLS").is_some() {
        let mut cells = vec![];
        for (name, url, pids) in [
            ("frontend-api", &via_frontend, vec![frontend_pid]),
            ("nginx", &via_nginx, nginx_pids.clone()),
        ] {
            let file = work.path().join(format!("{name}.syscalls"));
            let perf = syscalls::record(&pids, &file);
            wrk(url, &script, 1, latency_seconds);
            perf_stop(Some(Proc(perf)));
            cells.push(match syscalls::on_path(&file) {
                Some(p) => format!(
                    "{name} {:.1} / {:.1} / {:.1} µs ({} requests)",
                    p.request, p.answer, p.after_answer, p.requests
                ),
                None => format!("{name}: too few requests traced (is perf allowed to trace?)"),
            });
        }
        println!(
            "| inside the proxy, from its system calls (TRACE_SYSCALLS; medians): client request in -> upstream write / upstream answer in -> client write / client write -> next wake-up | {} |",
            cells.join("; ")
        );
    }
}
