//! drdctl's planned switchover against the seed's sequence, in the same lab (issue #7).
//!
//! `cargo build --release --locked -p frontend-api -p business-logic -p data-ingest &&
//!  cargo bench -p drdctl --bench switchover`
//!
//! Each round starts a fresh lab (`drdctl lab up`: real PostgreSQL pair, real service
//! processes, Kubernetes and Azure doubles), puts traffic on the application's DNS name (two
//! writers, one reader, the name re-resolved every 100 ms so the DNS TTL is out of the figure),
//! a monitor asking both databases every 100 ms whether they take writes, and then moves the
//! application to DR one of two ways:
//!
//! - **drdctl**: `drdctl failover --to dr --yes`;
//! - **seed**: the seed README's manual steps, one after another, each waited for: scale the DR
//!   deployments to 3, `sleep 5`, `SELECT pg_promote()` on the DR database, `kubectl patch
//!   configmap app-config` (role active), `kubectl rollout restart` + `rollout status` of each
//!   deployment, the DNS record to DR (and its name servers serving it), scale the primary
//!   deployments to 0. Real kubectl against the lab's API doubles.
//!
//! **Write-unavailability** is measured the same way for both, by the client: the longest
//! time without an acknowledged write that is still in the new primary afterwards. A write the
//! old primary acknowledged after DR was promoted is lost (it is not in DR's database): from the
//! application's point of view it never happened, so it does not end the gap. The bench also
//! prints those lost writes, the time both databases took writes, and drdctl's own figure (from
//! fencing to DR accepting writes through the DNS name, as its report gives it).
//!
//! drdctl's rounds run with the regions' witness guards, as `drdctl lab up` ships; the seed's
//! without (`DRDCTL_LAB_GUARDS=off`): its system had none, and DR's guard fences a database
//! promoted without the witness term.
//!
//! Knobs: `BENCH_ROUNDS` (default 3 per contender), `BENCH_ONLY=drdctl|seed` (one side).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use drd_db::Database;
use drdctl::commands::drill::{self, WritableWatcher};
use drdctl::config::Config;
use lab::traffic::{Kind, Traffic, TrafficConfig};

const DEPLOYMENTS: [&str; 3] = ["frontend-api", "business-logic", "data-ingest"];

#[derive(Clone, Copy, PartialEq)]
enum Contender {
    Drdctl,
    Seed,
}

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::Drdctl => "drdctl failover",
            Contender::Seed => "seed sequence",
        }
    }
}

/// One round's figures.
#[derive(Default, Clone)]
struct Outcome {
    /// Longest time without a kept acknowledged write (client side), seconds.
    unavailable_secs: f64,
    /// drdctl's own figure (fence to DR writable through the DNS name), seconds.
    reported_secs: Option<f64>,
    /// Acknowledged writes not in DR's database afterwards.
    lost: usize,
    acked: usize,
    /// Monitor samples (every 100 ms) in which both databases took writes.
    both_writable_samples: usize,
    samples: u64,
    /// From the first command to the last, seconds.
    wall_secs: f64,
    /// The steps and their durations, seconds.
    steps: Vec<(String, f64)>,
}

struct Env {
    drdctl: PathBuf,
    root: PathBuf,
    dir: PathBuf,
}

impl Env {
    fn drdctl(&self) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.drdctl);
        c.current_dir(&self.root);
        c
    }

    /// drdctl against the running lab: its config and credentials.
    fn drdctl_in_lab(&self, vars: &BTreeMap<String, String>) -> tokio::process::Command {
        let mut c = self.drdctl();
        c.envs(vars)
            .env("DRDCTL_CONFIG", self.dir.join("drdctl.toml"))
            .stdin(Stdio::null());
        c
    }
}

#[tokio::main]
async fn main() {
    let drdctl = PathBuf::from(env!("CARGO_BIN_EXE_drdctl"));
    let bin_dir = drdctl.parent().unwrap().to_path_buf();
    for svc in DEPLOYMENTS {
        assert!(
            bin_dir.join(svc).exists(),
            "{} is missing: build the services in the same profile first:\n  cargo build --release --locked -p frontend-api -p business-logic -p data-ingest",
            bin_dir.join(svc).display()
        );
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let env = Env {
        drdctl,
        dir: root.join("target/bench-switchover/lab"),
        root,
    };
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);

    // BENCH_ONLY=drdctl or seed: one side only (while working on it).
    let only = match std::env::var("BENCH_ONLY").as_deref() {
        Ok("drdctl") => Some(Contender::Drdctl),
        Ok("seed") => Some(Contender::Seed),
        _ => None,
    };
    let mut results: Vec<(Contender, Outcome)> = Vec::new();
    for round in 1..=rounds {
        // Alternate, so that neither side always runs on a warmer machine.
        let order = if round % 2 == 1 {
            [Contender::Drdctl, Contender::Seed]
        } else {
            [Contender::Seed, Contender::Drdctl]
        };
        for c in order {
            if only.is_some_and(|o| o != c) {
                continue;
            }
            eprintln!("\n== round {round}/{rounds}: {}", c.name());
            let out = one_round(&env, c).await;
            print_round(c, &out);
            results.push((c, out));
        }
    }
    summary(&results);
}

async fn one_round(env: &Env, c: Contender) -> Outcome {
    let mut up = env.drdctl();
    // The seed's system had no witness guard; with one, DR's guard would fence the database
    // the seed promotes without moving the term (as it should), and DR would never be ready.
    if let Contender::Seed = c {
        up.env("DRDCTL_LAB_GUARDS", "off");
    }
    let status = up
        .args(["lab", "up", "--dir"])
        .arg(&env.dir)
        .stdout(Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(status.success(), "drdctl lab up failed");
    let result = measure(env, c).await;
    let _ = env
        .drdctl()
        .args(["lab", "down", "--dir"])
        .arg(&env.dir)
        .stdout(Stdio::null())
        .status()
        .await;
    result.unwrap_or_else(|e| panic!("{}: {e:#}", c.name()))
}

async fn measure(env: &Env, c: Contender) -> anyhow::Result<Outcome> {
    let config = Config::load(&env.dir.join("drdctl.toml"))?;
    let vars = drill::read_env_file(&env.dir.join("env"))?;
    let dns = drdctl::commands::dns::dns_config(&config)?;
    let name_server = dns.name_servers[0].parse()?;
    let mut tc = TrafficConfig::new(name_server, &dns.fqdn(), 8080);
    // Re-resolve every 100 ms: the DNS TTL is not part of the comparison.
    tc.resolve_every = Duration::from_millis(100);
    let traffic = Traffic::start(tc);
    anyhow::ensure!(
        traffic.wait_for_acked(20, Duration::from_secs(30)).await,
        "no traffic through the DNS name"
    );
    let watcher = WritableWatcher::start(&config, traffic.started()).await?;

    let t0 = Instant::now();
    let mut out = Outcome::default();
    match c {
        Contender::Drdctl => {
            let started = chrono::Utc::now();
            let o = env
                .drdctl_in_lab(&vars)
                .args(["failover", "--to", "dr", "--yes", "--output", "json"])
                .env("DRDCTL_STATE_DIR", env.dir.join("state"))
                .stderr(Stdio::null())
                .output()
                .await?;
            anyhow::ensure!(o.status.success(), "drdctl failover: {}", o.status);
            let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
            out.reported_secs = v["evidence"]["write_unavailability_secs"].as_f64();
            for s in drill::steps_of(&v, started) {
                if let Some(end) = s.end_ms {
                    out.steps
                        .push((s.name, end.saturating_sub(s.start_ms) as f64 / 1000.0));
                }
            }
        }
        Contender::Seed => seed_sequence(env, &config, &vars, &mut out.steps).await?,
    }
    out.wall_secs = t0.elapsed().as_secs_f64();

    // A little traffic on the new side, then close the books.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let log = traffic.stop().await;
    let w = watcher.stop().await;
    let dr = drill::region_database(&config, "dr").await?;
    let lost = dr.missing_usernames(&log.acked_users()).await?;
    out.unavailable_secs = log
        .longest_kept_write_gap_ms(&lost)
        .map_or(f64::NAN, |(g, _)| g as f64 / 1000.0);
    out.lost = lost.len();
    out.acked = log.count(Kind::Write).1;
    out.both_writable_samples = w.both_writable_at_ms.len();
    out.samples = w.samples;
    Ok(out)
}

/// The seed README's "Manual Failover Steps", each run and waited for before the next.
async fn seed_sequence(
    env: &Env,
    config: &Config,
    vars: &BTreeMap<String, String>,
    steps: &mut Vec<(String, f64)>,
) -> anyhow::Result<()> {
    let kc = env.dir.join("kubeconfig");
    let kubectl = |ctx: &str, args: &[&str]| {
        let mut c = tokio::process::Command::new("kubectl");
        c.arg("--kubeconfig")
            .arg(&kc)
            .args(["--context", ctx])
            .args(args)
            .stdout(Stdio::null());
        c
    };
    async fn ok(mut c: tokio::process::Command, what: &str) -> anyhow::Result<()> {
        let o = c.output().await?;
        anyhow::ensure!(
            o.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Ok(())
    }
    let mut timed =
        |name: &str, t: Instant| steps.push((name.to_string(), t.elapsed().as_secs_f64()));

    // 1. Scale up DR services (the seed's script then sleeps 5 s).
    let t = Instant::now();
    for d in DEPLOYMENTS {
        ok(
            kubectl("dr", &["scale", &format!("deployment/{d}"), "--replicas=3"]),
            "scale dr",
        )
        .await?;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    timed("scale-dr-up + sleep 5", t);

    // 2. Promote the DR database: SELECT pg_promote() (waits for the promotion).
    let t = Instant::now();
    let dr = drill::region_database(config, "dr").await?;
    dr.promote(Duration::from_secs(60)).await?;
    timed("pg_promote", t);

    // 3. Update the ConfigMap.
    let t = Instant::now();
    ok(
        kubectl(
            "dr",
            &[
                "patch",
                "configmap",
                "app-config",
                "--type",
                "merge",
                "-p",
                r#"{"data":{"role":"active"}}"#,
            ],
        ),
        "patch configmap",
    )
    .await?;
    timed("patch configmap", t);

    // 4. Restart the services, each waited for.
    let t = Instant::now();
    for d in DEPLOYMENTS {
        let d = format!("deployment/{d}");
        ok(
            kubectl("dr", &["rollout", "restart", &d]),
            "rollout restart",
        )
        .await?;
        ok(
            kubectl("dr", &["rollout", "status", &d, "--timeout=300s"]),
            "rollout status",
        )
        .await?;
    }
    timed("rollout restart x3", t);

    // 5. DNS to the DR ingress, and wait until the name servers serve it.
    let t = Instant::now();
    let mut dns = env.drdctl_in_lab(vars);
    dns.args(["dns", "switch", "--to", "dr", "--yes"])
        .stdout(Stdio::null());
    ok(dns, "dns switch").await?;
    timed("dns to dr", t);

    // 6. Scale down the primary.
    let t = Instant::now();
    for d in DEPLOYMENTS {
        ok(
            kubectl(
                "primary",
                &["scale", &format!("deployment/{d}"), "--replicas=0"],
            ),
            "scale primary",
        )
        .await?;
    }
    for d in DEPLOYMENTS {
        ok(
            kubectl(
                "primary",
                &[
                    "rollout",
                    "status",
                    &format!("deployment/{d}"),
                    "--timeout=300s",
                ],
            ),
            "rollout status",
        )
        .await?;
    }
    timed("scale-primary-down", t);
    Ok(())
}

fn print_round(c: Contender, o: &Outcome) {
    eprintln!(
        "   {}: write-unavailability {:.2} s (client){}, {} of {} acknowledged writes lost, {} of {} samples with two writable databases, {:.1} s in all",
        c.name(),
        o.unavailable_secs,
        o.reported_secs
            .map(|r| format!(", {r:.2} s (drdctl's report)"))
            .unwrap_or_default(),
        o.lost,
        o.acked,
        o.both_writable_samples,
        o.samples,
        o.wall_secs
    );
    for (name, secs) in &o.steps {
        eprintln!("     {secs:>6.2} s  {name}");
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn summary(results: &[(Contender, Outcome)]) {
    let of = |c: Contender| results.iter().filter(move |(x, _)| *x == c).map(|(_, o)| o);
    let med = |c: Contender, f: fn(&Outcome) -> f64| median(of(c).map(f).collect());
    let (d, s) = (Contender::Drdctl, Contender::Seed);
    let n = of(d).count();
    println!("\nplanned switchover to DR, same lab, {n} rounds each (medians; client-side figures exclude the DNS TTL)");
    println!("{:<52} {:>14} {:>14}", "", "drdctl", "seed sequence");
    let row = |label: &str, f: fn(&Outcome) -> f64, unit: &str| {
        println!(
            "{label:<52} {:>12.2}{unit:<2} {:>12.2}{unit:<2}",
            med(d, f),
            med(s, f)
        )
    };
    row(
        "write-unavailability (client, kept writes)",
        |o| o.unavailable_secs,
        " s",
    );
    println!(
        "{:<52} {:>12.2} s {:>14}",
        "drdctl's own figure (fence -> DR writable via DNS)",
        median(of(d).filter_map(|o| o.reported_secs).collect()),
        "-"
    );
    row("acknowledged writes lost", |o| o.lost as f64, "");
    row(
        "samples with two writable databases (100 ms)",
        |o| o.both_writable_samples as f64,
        "",
    );
    row("whole sequence", |o| o.wall_secs, " s");
    let ratio = med(s, |o| o.unavailable_secs) / med(d, |o| o.unavailable_secs);
    println!("ratio of write-unavailability, seed / drdctl: {ratio:.1}x (target >= 5x; drdctl target <= 3 s)");
}
