//! `drdctl lab up|status|down` (and the internal `serve`): the two-region world of `lab::world`
//! in a background process, with the manifests deployed and the schema applied.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::config::Config;

pub const PASSWORD: &str = "lab-password-only-for-the-local-lab";

/// Running (a zombie is not: when `lab drill` started the lab, the exited lab process stays a
/// zombie child of the drill until it is reaped).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

fn read_pid(dir: &Path) -> Option<u32> {
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
    if let Some(pid) = read_pid(dir).filter(|p| pid_alive(*p)) {
        println!("the lab is already up (pid {pid}); drdctl lab down stops it");
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
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
