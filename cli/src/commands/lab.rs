//! `drdctl lab up|status|down` (and the internal `serve`): the two-region world of `lab::world`
//! in a background process, with the manifests deployed and the schema applied.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::config::Config;

pub const PASSWORD: &str = "lab-password-only-for-the-local-lab";

pub use crate::engine::pid_alive;

pub(crate) fn read_pid(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join("pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Runs the world until SIGTERM / Ctrl-C (the background process `lab up` starts).
pub async fn serve(dir: &Path, repo_root: &Path) -> anyhow::Result<()> {
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("the drdctl binary has no directory")?
        .to_path_buf();
    let world = lab::world::World::start(lab::world::WorldConfig {
        dir: dir.to_path_buf(),
        bin_dir,
        repo_root: repo_root.to_path_buf(),
        password: PASSWORD.into(),
        ingress_port: 8080,
        // DRDCTL_LAB_GUARDS=off: no witness guards (the seed's system, in the switchover
        // bench, had none; its promotion without the term would be fenced by DR's guard).
        guard_bin: match std::env::var("DRDCTL_LAB_GUARDS").as_deref() {
            Ok("off") => None,
            _ => std::env::current_exe().ok(),
        },
    })
    .await
    .map_err(|e| anyhow::anyhow!("starting the lab: {e}"))?;
    std::fs::write(dir.join("pid"), std::process::id().to_string())?;
    std::fs::write(dir.join("ready"), "")?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    world.stop().await;
    let _ = std::fs::remove_file(dir.join("ready"));
    let _ = std::fs::remove_file(dir.join("pid"));
    Ok(())
}

pub async fn up(dir: &Path, repo_root: &Path) -> anyhow::Result<()> {
    up_with_wan(dir, repo_root, lab::wan::WanSettings::default()).await
}

/// `drdctl lab up --wan-rtt 40ms --wan-mbit 200`: the lab with every path between the regions
/// (and from the operator and the clients to each) `wan` apart.
pub async fn up_with_wan(
    dir: &Path,
    repo_root: &Path,
    wan: lab::wan::WanSettings,
) -> anyhow::Result<()> {
    if let Some(pid) = read_pid(dir).filter(|p| pid_alive(*p)) {
        println!("the lab is already up (pid {pid}); drdctl lab down stops it");
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    // The lab process starts its relays with these (lab::world::World::start reads them).
    if wan != lab::wan::WanSettings::default() {
        std::fs::write(dir.join(lab::world::WAN_FILE), serde_json::to_vec(&wan)?)?;
    }
    let log = std::fs::File::create(dir.join("serve.log"))?;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.args(["lab", "serve", "--dir"])
        .arg(dir)
        .current_dir(repo_root)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // Its own process group: a Ctrl-C in this terminal does not stop the lab.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().context("starting the lab process")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dir.join("ready").exists() {
        if let Some(status) = child.try_wait()? {
            bail!(
                "the lab process exited ({status}) while starting; see {}",
                dir.join("serve.log").display()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the lab did not start within 60s; see {}",
                dir.join("serve.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Err(e) = deploy_and_init(dir, repo_root).await {
        // Leave nothing half-started behind.
        let _ = down(dir).await;
        return Err(e);
    }
    print_where(dir);
    Ok(())
}

async fn deploy_and_init(dir: &Path, repo_root: &Path) -> anyhow::Result<()> {
    let config = Config::load(&dir.join("drdctl.toml"))?;
    println!("lab: both regions up; deploying the manifests");
    super::deploy::run(
        &config,
        super::deploy::Args {
            regions: vec!["primary".into(), "dr".into()],
            registry: None,
            version: None,
            dry_run: false,
            no_wait: false,
            force_conflicts: false,
            timeout: Duration::from_secs(300),
            password: Some(secrecy::SecretString::from(PASSWORD)),
        },
    )
    .await?;
    super::db::init_db(
        &config,
        super::db::InitDbArgs {
            region: "primary".into(),
            file: repo_root.join("init-db.sql"),
            wait: Duration::from_secs(120),
            dry_run: false,
        },
    )
    .await?;
    Ok(())
}

fn print_where(dir: &Path) {
    let cfg = std::fs::read_to_string(dir.join("drdctl.toml")).unwrap_or_default();
    let ns = cfg
        .lines()
        .find_map(|l| l.strip_prefix("name_servers = [\""))
        .and_then(|l| l.split('"').next())
        .unwrap_or("?");
    let (host, port) = ns.rsplit_once(':').unwrap_or((ns, "53"));
    println!(
        "\nThe lab is up.\n  kubectl:  kubectl --kubeconfig {kc} --context dr get deploy\n  drdctl:   export DRDCTL_CONFIG={cfg}; set -a; . {env}; set +a\n  DNS:      dig @{host} -p {port} app.example.com\n  app:      curl http://127.0.0.2:8080/api/v1/info\n  stop:     drdctl lab down",
        kc = dir.join("kubeconfig").display(),
        cfg = dir.join("drdctl.toml").display(),
        env = dir.join("env").display(),
    );
}

pub async fn status(dir: &Path) -> anyhow::Result<()> {
    match read_pid(dir).filter(|p| pid_alive(*p)) {
        Some(pid) => {
            println!("the lab is up (pid {pid})");
            print_where(dir);
            Ok(())
        }
        None => {
            println!("the lab is not running (drdctl lab up starts it)");
            Ok(())
        }
    }
}

/// Stops the lab process and everything it started, then removes its files. Safe to repeat.
pub async fn down(dir: &Path) -> anyhow::Result<()> {
    if let Some(pid) = read_pid(dir).filter(|p| pid_alive(*p)) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while pid_alive(pid) {
            if Instant::now() > deadline {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!("lab stopped");
    } else {
        println!("the lab was not running");
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(())
}

/// The lab's directory: `--dir`, else `.drdctl/lab` in the current directory.
pub fn dir_of(dir: Option<PathBuf>) -> PathBuf {
    let d = dir.unwrap_or_else(|| PathBuf::from(".drdctl/lab"));
    std::fs::create_dir_all(&d).ok();
    std::fs::canonicalize(&d).unwrap_or(d)
}

/// The repository the lab deploys (its `manifests/` and `init-db.sql`): the current directory
/// or one of its parents.
pub fn repo_root() -> anyhow::Result<PathBuf> {
    let start = std::env::current_dir()?;
    start
        .ancestors()
        .find(|d| d.join("manifests").is_dir() && d.join("init-db.sql").is_file())
        .map(Path::to_path_buf)
        .with_context(|| {
            format!(
                "{} is not inside the drdctl repository (no manifests/ and init-db.sql): run drdctl lab from the repository",
                start.display()
            )
        })
}

/// `--wan-rtt 40ms` (also `0.04s`, or a bare number of milliseconds) in milliseconds.
pub fn parse_rtt(s: &str) -> anyhow::Result<f64> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .with_context(|| format!("{s:?} is not a duration (40ms, 0.04s)"))?;
    if !v.is_finite() || v < 0.0 {
        bail!("{s:?}: a round-trip time is 0 or more");
    }
    Ok(v * scale)
}

fn print_state(state: &serde_json::Value) {
    let s = &state["settings"];
    println!(
        "WAN: rtt {} ms, {} Mbit/s per link and direction",
        s["rtt_ms"],
        if s["mbit"].as_f64() == Some(0.0) {
            "unlimited".to_string()
        } else {
            s["mbit"].to_string()
        }
    );
    let cuts = state["cuts"].as_array().cloned().unwrap_or_default();
    if cuts.is_empty() {
        println!("no link cut");
    }
    for c in cuts {
        println!(
            "cut: {} ({})",
            c["link"].as_str().unwrap_or("?"),
            c["mode"].as_str().unwrap_or("?")
        );
    }
}

async fn control(
    dir: &Path,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    lab::control::call(dir, method, path, body)
        .await
        .map_err(|e| anyhow::anyhow!(e))
}

/// `drdctl lab wan [--rtt 40ms] [--mbit 200]`: changes the distance while the lab runs
/// (open connections included); without options shows it and the cuts.
pub async fn wan(dir: &Path, rtt_ms: Option<f64>, mbit: Option<f64>) -> anyhow::Result<()> {
    let mut state = control(dir, "GET", "/wan", None).await?;
    if rtt_ms.is_some() || mbit.is_some() {
        let cur = &state["settings"];
        let body = serde_json::json!({
            "rtt_ms": rtt_ms.or(cur["rtt_ms"].as_f64()).unwrap_or(0.0),
            "mbit": mbit.or(cur["mbit"].as_f64()).unwrap_or(0.0),
        });
        state = control(dir, "PUT", "/wan", Some(body)).await?;
    }
    print_state(&state);
    Ok(())
}

/// `drdctl lab partition --region primary --from operator,dr [--refuse]`: cuts the region off
/// from those parties (`operator`, `clients`, `azure`, the other region): blackholed (connections
/// hang, as in a network fault) or, with `refuse`, refused.
pub async fn partition(
    dir: &Path,
    region: &str,
    parties: &[String],
    refuse: bool,
) -> anyhow::Result<()> {
    let body = serde_json::json!({
        "region": region,
        "parties": parties,
        "mode": if refuse { "refuse" } else { "blackhole" },
    });
    let out = control(dir, "POST", "/partition", Some(body)).await?;
    for l in out["cut"].as_array().into_iter().flatten() {
        println!(
            "cut ({}): {}",
            if refuse { "refused" } else { "blackholed" },
            l.as_str().unwrap_or("?")
        );
    }
    Ok(())
}

/// `drdctl lab heal [--region primary]`: opens the region's links again (all links without).
pub async fn heal(dir: &Path, region: Option<&str>) -> anyhow::Result<()> {
    let out = control(
        dir,
        "POST",
        "/heal",
        Some(serde_json::json!({ "region": region })),
    )
    .await?;
    let healed = out["healed"].as_array().cloned().unwrap_or_default();
    if healed.is_empty() {
        println!("nothing was cut");
    }
    for l in healed {
        println!("healed: {}", l.as_str().unwrap_or("?"));
    }
    Ok(())
}

/// `drdctl lab kill-region primary`: SIGKILL to everything of the region (its service pods and
/// PostgreSQL), its API gone and every path to it refused. Not undone by `heal`: `lab down`
/// and `lab up` start a new lab.
pub async fn kill_region(dir: &Path, region: &str) -> anyhow::Result<()> {
    control(
        dir,
        "POST",
        "/kill-region",
        Some(serde_json::json!({ "region": region })),
    )
    .await?;
    println!("region {region} killed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_times() {
        assert_eq!(parse_rtt("40ms").unwrap(), 40.0);
        assert_eq!(parse_rtt("0.04s").unwrap(), 40.0);
        assert_eq!(parse_rtt("12.5").unwrap(), 12.5);
        assert!(parse_rtt("-1ms").is_err());
        assert!(parse_rtt("fast").is_err());
    }
}
