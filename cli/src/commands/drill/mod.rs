//! `drdctl lab drill`: the whole disaster-recovery drill on one machine.
//!
//! `lab up`, then traffic through the application's DNS name ([`lab::traffic`]) while this
//! binary runs `failover --to dr --rejoin`, `verify`, `failback`, `verify` as an operator would
//! (child processes, their progress on this terminal), and a monitor asks both databases every
//! 100 ms whether they take writes: two at once is a split brain and fails the drill. Then every
//! acknowledged write is looked up in the active database, and the report (text, JSON) and the
//! timeline picture (SVG) are written. The lab is torn down unless `--keep`.

mod chart;
mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use drd_db::{Database, DbRole};
use drd_kube::KubeCluster;
use lab::traffic::{Traffic, TrafficConfig};

use crate::config::Config;
use crate::exit;

pub use report::{Phase, Report, StepMark};

pub struct Args {
    /// The lab's directory.
    pub dir: PathBuf,
    /// Where the report and the picture go.
    pub out: PathBuf,
    /// Leave the lab running afterwards.
    pub keep: bool,
}

/// What the split-brain monitor saw.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct WritableWatch {
    /// Rounds in which both databases were asked.
    pub samples: u64,
    /// Times (ms on the traffic clock) when both regions accepted writes.
    pub both_writable_at_ms: Vec<u64>,
}

pub async fn run(args: Args, repo_root: &Path) -> anyhow::Result<u8> {
    let t0 = Instant::now();
    super::lab::up(&args.dir, repo_root).await?;
    let up_secs = t0.elapsed().as_secs_f64();
    let outcome = drill(&args, repo_root, up_secs).await;
    if args.keep {
        println!(
            "\nthe lab is still up (--keep): drdctl lab down --dir {} stops it",
            args.dir.display()
        );
    } else {
        super::lab::down(&args.dir).await?;
    }
    outcome
}

async fn drill(args: &Args, repo_root: &Path, up_secs: f64) -> anyhow::Result<u8> {
    let config = Config::load(&args.dir.join("drdctl.toml"))?;
    let dns = super::dns::dns_config(&config)?;
    let name_server: std::net::SocketAddr = dns
        .name_servers
        .first()
        .context("[dns] name_servers is empty")?
        .parse()
        .context("[dns] name_servers[0] is not an address")?;
    let fqdn = dns.fqdn();
    let port = config
        .region("primary")
        .ingress
        .as_deref()
        .and_then(|i| i.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(8080);
    let env = read_env_file(&args.dir.join("env"))?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let state_dir = args.out.join("state");
    let _ = std::fs::remove_dir_all(&state_dir);

    let traffic = Traffic::start(TrafficConfig::new(name_server, &fqdn, port));
    let started_utc = Utc::now();
    // The application answers through its name before anything moves.
    if !traffic.wait_for_acked(1, Duration::from_secs(30)).await {
        let log = traffic.stop().await;
        let last = log.requests.last().and_then(|r| r.error.clone());
        anyhow::bail!(
            "no write through http://{fqdn}:{port} succeeded within 30s (last error: {})",
            last.unwrap_or_else(|| "none".into())
        );
    }
    println!("drill: traffic flows through {fqdn} (name server {name_server})");

    let watcher = WritableWatcher::start(&config, traffic.started()).await?;

    let me = std::env::current_exe()?;
    let mut phases = Vec::new();
    let plan: [(&str, &[&str]); 4] = [
        (
            "failover",
            &[
                "failover", "--to", "dr", "--rejoin", "--yes", "--output", "json",
            ],
        ),
        ("verify", &["verify"]),
        ("failback", &["failback", "--yes", "--output", "json"]),
        ("verify", &["verify"]),
    ];
    for (name, cmd_args) in plan {
        println!("\n== drill: drdctl {}", cmd_args.join(" "));
        let start_ms = traffic.now_ms();
        let json = cmd_args.contains(&"json");
        let mut cmd = tokio::process::Command::new(&me);
        cmd.args(cmd_args)
            .current_dir(repo_root)
            .envs(&env)
            .env("DRDCTL_CONFIG", args.dir.join("drdctl.toml"))
            .env("DRDCTL_STATE_DIR", &state_dir)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit());
        cmd.stdout(if json {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::inherit()
        });
        let out = cmd
            .output()
            .await
            .with_context(|| format!("running drdctl {name}"))?;
        let end_ms = traffic.now_ms();
        let mut phase = Phase {
            name: name.to_string(),
            command: format!("drdctl {}", cmd_args.join(" ")),
            start_ms,
            end_ms,
            exit_code: out.status.code(),
            steps: Vec::new(),
            write_unavailability_secs: None,
            lost_bytes: None,
            why: None,
        };
        if json {
            let text = String::from_utf8_lossy(&out.stdout);
            match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(v) => {
                    phase.steps = steps_of(&v, started_utc);
                    phase.write_unavailability_secs =
                        v["evidence"]["write_unavailability_secs"].as_f64();
                    phase.lost_bytes = v["evidence"]["lost_bytes"].as_u64();
                    phase.why = v["why"].as_str().map(str::to_string);
                }
                Err(_) => print!("{text}"),
            }
        }
        let failed = phase.exit_code != Some(0);
        println!(
            "== drill: {name} {} in {:.1}s",
            if failed { "FAILED" } else { "passed" },
            (end_ms - start_ms) as f64 / 1000.0
        );
        // The command's own account (every outcome that fails says why): with --output json
        // it is only in the JSON. The report below shows it again beside the failed step.
        if let (true, Some(why)) = (failed, &phase.why) {
            println!("== drill: {name} said: {why}");
        }
        phases.push(phase);
        if failed {
            break;
        }
    }

    // A little traffic after the last step, then the books are closed.
    let settle = traffic.now_ms() + 1000;
    while traffic.now_ms() < settle {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = traffic.stop().await;
    let watch = watcher.stop().await;

    let active = active_database(&config).await;
    let (active_region, missing) = match &active {
        Ok((region, db)) => (
            region.clone(),
            Some(
                db.missing_usernames(&log.acked_users())
                    .await
                    .context("checking the acknowledged writes")?,
            ),
        ),
        Err(e) => {
            eprintln!("drill: cannot check the acknowledged writes: {e:#}");
            ("?".into(), None)
        }
    };
    let report = Report::new(report::Inputs {
        up_secs,
        fqdn,
        phases,
        log: &log,
        missing,
        active_region,
        watch,
    });
    let text = report.render();
    print!("\n{text}");
    std::fs::write(args.out.join("report.txt"), &text)?;
    std::fs::write(
        args.out.join("report.json"),
        serde_json::to_string_pretty(&report.json(&log))?,
    )?;
    let svg = chart::timeline(&report, &log)?;
    std::fs::write(args.out.join("timeline.svg"), svg)?;
    println!(
        "\nreport: {}\n        {}\npicture: {}",
        args.out.join("report.txt").display(),
        args.out.join("report.json").display(),
        args.out.join("timeline.svg").display()
    );
    Ok(if report.passed() {
        println!("the drill PASSED");
        exit::OK
    } else {
        println!("the drill FAILED: {}", report.failures().join("; "));
        exit::FAILED
    })
}

/// `KEY=VALUE` lines (the lab's credentials for drdctl's child processes).
pub fn read_env_file(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}

/// The journal's steps (`drdctl failover --output json`'s `run.steps`), in milliseconds since
/// `started`.
pub fn steps_of(v: &serde_json::Value, started: DateTime<Utc>) -> Vec<StepMark> {
    let ms = |t: &serde_json::Value| {
        t.as_str()
            .and_then(|s| s.parse::<DateTime<Utc>>().ok())
            .map(|t| (t - started).num_milliseconds().max(0) as u64)
    };
    v["run"]["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            Some(StepMark {
                name: s["name"].as_str()?.to_string(),
                state: s["state"].as_str().unwrap_or("?").to_string(),
                start_ms: ms(&s["started"])?,
                end_ms: ms(&s["ended"]),
                detail: (s["state"] == "failed")
                    .then(|| s["detail"].as_str().map(str::to_string))
                    .flatten(),
            })
        })
        .collect()
}

pub async fn region_database(config: &Config, region: &str) -> anyhow::Result<drd_db::PgDatabase> {
    let cluster = KubeCluster::connect(config.kube_target(region)).await?;
    Ok(super::db::database(config, region, &cluster))
}

/// The region whose database is the primary now, and that database.
pub async fn active_database(config: &Config) -> anyhow::Result<(String, drd_db::PgDatabase)> {
    for region in ["primary", "dr"] {
        let db = region_database(config, region).await?;
        if db
            .status()
            .await
            .is_ok_and(|s| s.role == DbRole::Primary && !s.fenced)
        {
            return Ok((region.to_string(), db));
        }
    }
    anyhow::bail!("neither region's database is a writable primary")
}

/// Asks both databases every 100 ms whether they take writes (primary and not fenced); an
/// unreachable database takes none. [`WritableWatcher::stop`] returns what it saw.
pub struct WritableWatcher {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<WritableWatch>,
}

impl WritableWatcher {
    /// Starts watching; times are milliseconds since `clock`.
    pub async fn start(config: &Config, clock: Instant) -> anyhow::Result<WritableWatcher> {
        let dbs = [
            region_database(config, "primary").await?,
            region_database(config, "dr").await?,
        ];
        let (stop, mut rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut seen = WritableWatch::default();
            while !*rx.borrow() {
                let (a, b) = tokio::join!(dbs[0].status(), dbs[1].status());
                let writable = |s: &drd_db::DbResult<drd_db::NodeStatus>| {
                    s.as_ref()
                        .is_ok_and(|s| s.role == DbRole::Primary && !s.fenced)
                };
                seen.samples += 1;
                if writable(&a) && writable(&b) {
                    seen.both_writable_at_ms
                        .push(clock.elapsed().as_millis() as u64);
                }
                tokio::select! {
                    _ = rx.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
            seen
        });
        Ok(WritableWatcher { stop, task })
    }

    pub async fn stop(self) -> WritableWatch {
        let _ = self.stop.send(true);
        match self.task.await {
            Ok(seen) => seen,
            // A bug in the loop: let it be seen, not read as "never two writable".
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}
