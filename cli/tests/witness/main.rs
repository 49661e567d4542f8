//! The witness term and the guards (issue #18), in the lab world with real PostgreSQL, real
//! services, real `drdctl guard` processes and the WAN relays: the primary region cut off from
//! the operator, from DR and from Azure while a client still writes to it; Azure unreachable
//! from both regions; a guard stopped with SIGSTOP. A monitor tries a write on both databases
//! every 100 ms (not `pg_is_in_recovery()`): both succeeding at once is a split brain.
//!
//! Its own test binary, one world at a time: the guards' timing is the lab's (a 1 s poll, a
//! 5 s lease), and these tests measure it, so they do not share the machine with the other
//! lab tests.

#[path = "../cli/support.rs"]
#[allow(dead_code)] // the shared harness; these tests use a part of it
mod support;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lab::wan::{CutMode, Party, WanSettings};
use lab::world::{World, WorldConfig};
use serde_json::Value;
use sqlx::Connection;

use crate::support::{assert_ok, repo_root, text, DRDCTL};

/// One world at a time (see the module docs).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PASSWORD: &str = "lab-Witness-7Hq2";
/// The lab timing's lease (`drdctl::guard::core::Timing::lab`).
const LEASE: Duration = Duration::from_secs(5);

struct Lab {
    world: World,
    _dir: tempfile::TempDir,
}

/// A failing test keeps the world's logs (the guards', the pods').
struct KeepLogs(PathBuf);

impl Drop for KeepLogs {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let keep = std::env::temp_dir().join(format!("drdctl-witness-{}", std::process::id()));
            let _ = std::process::Command::new("cp")
                .arg("-r")
                .arg(&self.0)
                .arg(&keep)
                .status();
            eprintln!("the lab's files (logs/, guard/): {}", keep.display());
        }
    }
}

impl Lab {
    async fn start() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let bin = PathBuf::from(DRDCTL);
        let world = World::start_with(
            WorldConfig {
                dir: dir.path().join("lab"),
                bin_dir: bin.parent().unwrap().to_path_buf(),
                repo_root: repo_root(),
                password: PASSWORD.into(),
                ingress_port: 0,
                guard_bin: Some(bin),
            },
            WanSettings::default(),
        )
        .await
        .expect("start the lab world");
        let lab = Lab { world, _dir: dir };
        assert_ok(
            &lab.drdctl(&["deploy", "--region", "all", "--rollout-timeout", "240"])
                .await,
        );
        let schema = repo_root().join("init-db.sql");
        assert_ok(
            &lab.drdctl(&["init-db", "--file", schema.to_str().unwrap()])
                .await,
        );
        lab.app_sql(
            0,
            "CREATE TABLE witness_probe (id bigserial PRIMARY KEY, who text NOT NULL)",
        )
        .await
        .expect("create the probe table");
        // Both guards up, the primary's confirmed by the witness.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let p = lab.guard_state(0).await;
            let d = lab.guard_state(1).await;
            if p["local"] == "writable"
                && p["lease_left_s"].as_f64().unwrap_or(0.0) > 1.0
                && d["local"] == "streaming_standby"
            {
                break;
            }
            assert!(Instant::now() < deadline, "guards not ready: {p:#} {d:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        lab
    }

    async fn drdctl(&self, args: &[&str]) -> std::process::Output {
        let env = std::fs::read_to_string(self.world.env_file()).unwrap();
        let mut cmd = tokio::process::Command::new(DRDCTL);
        cmd.arg("--config")
            .arg(self.world.config())
            .args(args)
            // The journal beside the lab, not in the test's working directory.
            .env("DRDCTL_STATE_DIR", self.world.cfg.dir.join("state"))
            .env_remove("KUBECONFIG");
        for line in env.lines() {
            if let Some((k, v)) = line.split_once('=') {
                cmd.env(k, v);
            }
        }
        cmd.output().await.unwrap()
    }

    fn node(&self, i: usize) -> &lab::pg::SharedNode {
        [&self.world.pg.primary, &self.world.pg.dr][i]
    }

    /// One statement as the application's role on `appdb`, on a new session (300 ms bound).
    async fn app_sql(&self, i: usize, sql: &str) -> Result<(), String> {
        app_write(self.node(i).addr(), sql).await
    }

    async fn guard_state(&self, i: usize) -> Value {
        let g = &self.world.guards[i];
        let url = format!("http://{}/v1/state", g.addr);
        match reqwest::get(&url).await {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }
}

/// A session as the application's role on `appdb`.
fn app_options(addr: std::net::SocketAddr) -> sqlx::postgres::PgConnectOptions {
    sqlx::postgres::PgConnectOptions::new()
        .host(&addr.ip().to_string())
        .port(addr.port())
        .username("appuser")
        .password(PASSWORD)
        .database("appdb")
}

async fn app_write(addr: std::net::SocketAddr, sql: &str) -> Result<(), String> {
    let opts = app_options(addr);
    let work = async {
        let mut c = sqlx::PgConnection::connect_with(&opts).await?;
        sqlx::query(sql).execute(&mut c).await?;
        let _ = c.close().await;
        Ok::<_, sqlx::Error>(())
    };
    match tokio::time::timeout(Duration::from_millis(300), work).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// Tries a write on both databases every 100 ms; records the rounds where both succeeded and
/// when each database last took one.
struct Monitor {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Seen>,
}

#[derive(Debug, Default, Clone)]
struct Seen {
    rounds: u64,
    both: Vec<Duration>,
    /// When (since start) each database last took a write.
    last_ok: [Option<Duration>; 2],
    first_ok: [Option<Duration>; 2],
}

impl Monitor {
    fn start(lab: &Lab, t0: Instant) -> Monitor {
        let addrs = [lab.node(0).addr(), lab.node(1).addr()];
        let (stop, mut rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut seen = Seen::default();
            while !*rx.borrow() {
                let (a, b) = tokio::join!(
                    app_write(
                        addrs[0],
                        "INSERT INTO witness_probe (who) VALUES ('monitor')"
                    ),
                    app_write(
                        addrs[1],
                        "INSERT INTO witness_probe (who) VALUES ('monitor')"
                    )
                );
                let at = t0.elapsed();
                seen.rounds += 1;
                for (i, ok) in [a.is_ok(), b.is_ok()].into_iter().enumerate() {
                    if ok {
                        seen.last_ok[i] = Some(at);
                        seen.first_ok[i].get_or_insert(at);
                    }
                }
                if a.is_ok() && b.is_ok() {
                    seen.both.push(at);
                }
                tokio::select! {
                    _ = rx.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
            seen
        });
        Monitor { stop, task }
    }

    async fn stop(self) -> Seen {
        let _ = self.stop.send(true);
        self.task.await.unwrap()
    }
}

/// Every write the client saw acknowledged: its id and when.
type Acked = Arc<Mutex<Vec<(i64, Duration)>>>;

/// A client that keeps writing to the primary's database (it still reaches the region after
/// the operator and DR lost it): every acknowledged id, with when it was acknowledged.
fn writer(lab: &Lab, t0: Instant) -> (Acked, tokio::task::JoinHandle<()>) {
    let addr = lab.node(0).addr();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let out = acked.clone();
    let task = tokio::spawn(async move {
        let opts = app_options(addr);
        loop {
            let Ok(Ok(mut c)) = tokio::time::timeout(
                Duration::from_millis(300),
                sqlx::PgConnection::connect_with(&opts),
            )
            .await
            else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            loop {
                let r: Result<i64, _> = sqlx::query_scalar(
                    "INSERT INTO witness_probe (who) VALUES ('client') RETURNING id",
                )
                .fetch_one(&mut c)
                .await;
                match r {
                    Ok(id) => out.lock().unwrap().push((id, t0.elapsed())),
                    Err(_) => break,
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    (acked, task)
}

/// The primary cut off from the operator, from DR and from Azure; a client still writes to it.
/// Emergency failover: never two databases taking writes; the old primary fences itself within
/// L + 2 s of losing its term; every write it acknowledged is in DR's database or inside the
/// reported loss window; after heal it rejoins by pg_rewind and verify passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emergency_failover_with_the_primary_cut_off_never_has_two_writers() {
    let _one = ONE_AT_A_TIME.lock().await;
    let lab = Lab::start().await;
    let _keep = KeepLogs(lab.world.cfg.dir.clone());
    let t0 = Instant::now();
    let monitor = Monitor::start(&lab, t0);
    let (acked, writer_task) = writer(&lab, t0);
    // Traffic flows and replicates first.
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < 20 {
        assert!(
            Instant::now() < deadline,
            "the client's writes do not go through"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cut_at = t0.elapsed();
    lab.world.wan.partition(
        "primary",
        &[Party::Operator, Party::Region("dr".into()), Party::Azure],
        CutMode::Blackhole,
    );
    let out = lab
        .drdctl(&[
            "--timeout",
            "3",
            "failover",
            "--to",
            "dr",
            "--yes",
            "--allow-data-loss",
            "--output",
            "json",
        ])
        .await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {t}"));
    let steps = doc["run"]["steps"].as_array().unwrap();
    let state = |name: &str| {
        steps
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| s["state"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(state("move-term").as_deref(), Some("done"), "{doc:#}");
    assert_eq!(state("promote-target").as_deref(), Some("done"), "{doc:#}");
    let moved = &doc["evidence"]["term_moved"];
    assert_eq!(moved["n"], 2, "{doc:#}");
    assert!(moved["source_fenced_by"].is_string(), "{doc:#}");
    // DR takes writes; let the client and the monitor run a little longer.
    let deadline = Instant::now() + Duration::from_secs(10);
    while lab
        .app_sql(1, "INSERT INTO witness_probe (who) VALUES ('after')")
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "DR does not take writes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    writer_task.abort();
    let seen = monitor.stop().await;

    assert!(seen.rounds > 20, "{seen:?}");
    assert!(
        seen.both.is_empty(),
        "both databases took writes at {:?}",
        seen.both
    );
    // The old primary fenced itself: its last accepted write (client or monitor) came within
    // L + 2 s of the cut, and before DR's first.
    let acked = acked.lock().unwrap().clone();
    let last_primary = acked
        .iter()
        .map(|(_, at)| *at)
        .chain(seen.last_ok[0])
        .max()
        .unwrap();
    let fenced_after = last_primary.saturating_sub(cut_at);
    eprintln!(
        "witness: primary cut at {cut_at:?}, last write it took {last_primary:?} ({fenced_after:?} after the cut; bound {:?}); DR's first write {:?}",
        LEASE + Duration::from_secs(2),
        seen.first_ok[1]
    );
    assert!(
        fenced_after <= LEASE + Duration::from_secs(2),
        "the old primary took writes {fenced_after:?} after it lost its term"
    );
    assert!(
        seen.first_ok[1].is_some_and(|d| d > last_primary),
        "{seen:?}"
    );
    // Its guard (or its watchdog, which has no state page) fenced it; the guard sees it so
    // (the test reaches it directly, not through the WAN).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let guard = lab.guard_state(0).await;
        if guard["local"] == "fenced" {
            break;
        }
        assert!(Instant::now() < deadline, "{guard:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every acknowledged client write is in DR's database, or was acknowledged after what DR
    // received: inside the loss window, which the run reported as ending at source_fenced_by
    // (the old primary's last write came before DR's first, checked above).
    let in_dr: Vec<i64> = {
        let s = lab
            .node(1)
            .psql(
                "appdb",
                "SELECT string_agg(id::text, ',') FROM witness_probe WHERE who = 'client'",
            )
            .await
            .unwrap();
        s.split(',').filter_map(|x| x.parse().ok()).collect()
    };
    let lost: Vec<&(i64, Duration)> = acked.iter().filter(|(id, _)| !in_dr.contains(id)).collect();
    if let Some(first_lost) = lost.first() {
        assert!(
            first_lost.1 >= cut_at.saturating_sub(Duration::from_millis(500)),
            "a write acknowledged before the cut is missing in DR: {first_lost:?}"
        );
    }
    eprintln!(
        "witness: {} client writes acknowledged by the old primary, {} of them inside the loss window (not in DR)",
        acked.len(),
        lost.len()
    );

    // Heal: the old primary (fenced by its guard) rejoins by pg_rewind; verify passes.
    lab.world.wan.heal(Some("primary"));
    let out = lab
        .drdctl(&["failover", "--to", "dr", "--rejoin", "--yes"])
        .await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("pg_rewind") || t.contains("rewound"), "{t}");
    assert_eq!(
        lab.node(0)
            .psql("postgres", "SELECT pg_is_in_recovery()")
            .await
            .unwrap(),
        "t"
    );
    let out = lab.drdctl(&["verify", "--region", "dr"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = lab.drdctl(&["status"]).await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("witness term names dr (n=2)"), "{t}");
    lab.world.stop().await;
}

/// Azure unreachable from both regions, the regions still see each other: the primary keeps
/// serving on the DR guard's word, for many leases. Then its guard is stopped (SIGSTOP): no
/// one confirms any more, and the watchdog fences the database within L + 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_azure_the_primary_serves_on_its_peer_and_a_stopped_guard_still_fences() {
    let _one = ONE_AT_A_TIME.lock().await;
    let lab = Lab::start().await;
    let _keep = KeepLogs(lab.world.cfg.dir.clone());
    let t0 = Instant::now();
    lab.world
        .wan
        .partition("primary", &[Party::Azure], CutMode::Blackhole);
    lab.world
        .wan
        .partition("dr", &[Party::Azure], CutMode::Blackhole);
    let monitor = Monitor::start(&lab, t0);
    tokio::time::sleep(LEASE * 3).await;
    // Still writable three leases later, on the peer's word alone.
    lab.app_sql(0, "INSERT INTO witness_probe (who) VALUES ('still')")
        .await
        .unwrap_or_else(|e| panic!("the primary stopped taking writes without Azure: {e}"));
    let state = lab.guard_state(0).await;
    assert!(
        state["last_error"].is_string(),
        "the witness should be unreachable: {state:#}"
    );
    assert!(state["fenced_for"].is_null(), "{state:#}");
    let served = t0.elapsed();
    // The guard stops; its watchdog does not.
    let pid = nix::unistd::Pid::from_raw(lab.world.guards[0].pid as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let stopped_at = t0.elapsed();
    let deadline = Instant::now() + LEASE + Duration::from_secs(6);
    while lab
        .app_sql(0, "INSERT INTO witness_probe (who) VALUES ('probe')")
        .await
        .is_ok()
    {
        assert!(
            Instant::now() < deadline,
            "a stopped guard's database still takes writes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let seen = monitor.stop().await;
    assert!(seen.both.is_empty(), "{seen:?}");
    // Writes went through the whole time Azure was gone, until the guard stopped.
    assert!(
        seen.last_ok[0].is_some_and(|d| d >= served.saturating_sub(Duration::from_millis(300))),
        "{seen:?}"
    );
    let fenced_after = seen.last_ok[0].unwrap().saturating_sub(stopped_at);
    eprintln!("witness: the stopped guard's database took its last write {fenced_after:?} after SIGSTOP (bound {:?})", LEASE + Duration::from_secs(2));
    assert!(fenced_after <= LEASE + Duration::from_secs(2), "{seen:?}");
    lab.world.stop().await;
}
