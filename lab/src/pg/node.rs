//! One PostgreSQL "pod" of the lab: a data volume (a directory), the `postgresql-role` ConfigMap
//! as files, and `manifests/base/postgresql/start.sh` run the way the StatefulSet runs it: as
//! the `postgres` user (never root), in its own process group, its stdout and stderr captured as
//! the pod log. Every start runs the script again, so the script decides (init, clone, promote,
//! rewind, start) exactly as it does on AKS.
//!
//! Stopping is a fast shutdown (SIGINT to the postmaster, what the preStop hook does); killing is
//! SIGKILL to the whole process group (a crashed node). A watchdog process removes everything
//! (processes and files) when the owning process ends, however it ends.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::watch;

use super::{PgError, PgResult};
use test_support::Watchdog;

/// The role a node should take on its next start (the ConfigMap's `role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Primary (init, start, or promote).
    Primary,
    /// Streaming standby of `primary_host` (clone, start, or rejoin).
    Standby,
}

impl Role {
    /// The ConfigMap value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Standby => "standby",
        }
    }
}

/// The `postgresql-role` ConfigMap's keys, as start.sh reads them from its mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleFiles {
    /// `role`: primary or standby.
    pub role: Role,
    /// `primary_host` (standby only).
    pub primary_host: String,
    /// `primary_port`.
    pub primary_port: u16,
    /// `peer_host`: the other region, asked by the split-brain guard.
    pub peer_host: String,
    /// `peer_port`.
    pub peer_port: u16,
}

impl RoleFiles {
    /// Primary, with `peer` as the other region.
    pub fn primary(peer: SocketAddr) -> Self {
        RoleFiles {
            role: Role::Primary,
            primary_host: String::new(),
            primary_port: 5432,
            peer_host: peer.ip().to_string(),
            peer_port: peer.port(),
        }
    }

    /// Standby of `primary` (which is also the peer).
    pub fn standby_of(primary: SocketAddr) -> Self {
        RoleFiles {
            role: Role::Standby,
            primary_host: primary.ip().to_string(),
            primary_port: primary.port(),
            peer_host: primary.ip().to_string(),
            peer_port: primary.port(),
        }
    }

    /// The ConfigMap `data` for these values.
    pub fn to_config_map_data(&self) -> serde_json::Value {
        serde_json::json!({
            "role": self.role.as_str(),
            "primary_host": self.primary_host,
            "primary_port": self.primary_port.to_string(),
            "peer_host": self.peer_host,
            "peer_port": self.peer_port.to_string(),
        })
    }
}

/// The passwords the pod gets from `postgresql-secret` (start.sh's fallbacks apply: a missing
/// one falls back to the others).
#[derive(Clone, Default)]
pub struct Passwords {
    /// `password`: appuser (and the fallback of the other two).
    pub app: String,
    /// `superuser-password`.
    pub superuser: Option<String>,
    /// `replication-password`.
    pub replication: Option<String>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passwords(<redacted>)")
    }
}

/// How to make a node.
#[derive(Debug, Clone)]
pub struct PgNodeConfig {
    /// The node's name (the region), used in messages and the temp dir's name.
    pub name: String,
    /// Loopback address to listen on (`LISTEN_ADDRESS`).
    pub listen: IpAddr,
    /// Port; 0 picks one that is free on `listen`.
    pub port: u16,
    /// The secret's values.
    pub passwords: Passwords,
    /// The start script (copied into the node, as the ConfigMap mount would hold it).
    pub script: PathBuf,
    /// PostgreSQL 15 server binaries.
    pub pg_bin: PathBuf,
    /// `ALTER SYSTEM` settings applied once, after the first `init-primary` (they travel to
    /// clones with `postgresql.auto.conf`). The lab's default turns `fsync` off for speed.
    pub tuning: Vec<(String, String)>,
    /// How long a start may take before it counts as failed.
    pub start_timeout: Duration,
    /// More environment for start.sh (its tuning variables, e.g. `WAL_KEEP_SIZE`).
    pub env: Vec<(String, String)>,
}

/// The workspace's `manifests/base/postgresql/start.sh`.
pub fn default_start_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("manifests/base/postgresql/start.sh")
}

/// `PG_BIN`, or Debian's PostgreSQL 15 directory.
pub fn default_pg_bin() -> PathBuf {
    std::env::var_os("PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

impl PgNodeConfig {
    /// A node named `name` on `listen` (free port), the workspace's start.sh, fsync off.
    pub fn new(name: &str, listen: IpAddr, password: &str) -> Self {
        PgNodeConfig {
            name: name.to_string(),
            listen,
            port: 0,
            passwords: Passwords {
                app: password.to_string(),
                ..Passwords::default()
            },
            script: default_start_script(),
            pg_bin: default_pg_bin(),
            tuning: vec![("fsync".into(), "off".into())],
            start_timeout: Duration::from_secs(300),
            env: Vec::new(),
        }
    }
}

/// What one start of the script printed and decided.
#[derive(Debug, Clone)]
pub struct StartReport {
    /// The script's decision (`init-primary`, `clone-standby`, `promote`, `rejoin`, ...).
    pub decision: String,
    /// Everything the pod printed during this start, up to readiness.
    pub log: String,
    /// Time from launch to ready.
    pub elapsed: Duration,
}

struct Running {
    pid: Pid,
    exited: watch::Receiver<Option<String>>,
}

/// One PostgreSQL node run by start.sh.
pub struct PgNode {
    cfg: PgNodeConfig,
    port: u16,
    dir: PathBuf,
    owner: Option<(u32, u32)>,
    passwords: Mutex<Passwords>,
    env: Mutex<Vec<(String, String)>>,
    term: Mutex<Option<(PathBuf, String)>>,
    running: Mutex<Option<Running>>,
    starts: Mutex<u32>,
    initialised: Mutex<bool>,
    /// Serialises start/stop/kill (a pod restart is a stop then a start).
    pub(crate) lifecycle: tokio::sync::Mutex<()>,
    _watchdog: Watchdog,
}

impl std::fmt::Debug for PgNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgNode")
            .field("name", &self.cfg.name)
            .field("addr", &self.addr())
            .field("dir", &self.dir)
            .finish()
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PgError {
    let what = what.into();
    move |source| PgError::Io { what, source }
}

impl PgNode {
    /// Creates the node's directory (owned by `postgres` when running as root) and its
    /// watchdog. Nothing runs until [`PgNode::start`].
    pub fn new(cfg: PgNodeConfig) -> PgResult<PgNode> {
        if !cfg.pg_bin.join("postgres").exists() {
            return Err(PgError::Setup(format!(
                "PostgreSQL 15 server binaries not found in {} (set PG_BIN, or apt-get install -y postgresql-15)",
                cfg.pg_bin.display()
            )));
        }
        let script = std::fs::read(&cfg.script).map_err(io_err(format!(
            "reading the start script {}",
            cfg.script.display()
        )))?;
        let owner = super::postgres_owner()?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("drd-lab-pg-{}-", cfg.name))
            .tempdir()
            .map_err(io_err("creating the node's temp dir"))?
            .keep();
        let watchdog = super::watchdog::spawn(&dir)?;
        for sub in ["role", "scripts", "logs"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(io_err(format!("creating {sub}/")))?;
        }
        let script_path = dir.join("scripts/start.sh");
        std::fs::write(&script_path, script).map_err(io_err("copying start.sh"))?;
        std::fs::set_permissions(&script_path, std::fs::Permissions::from_mode(0o555))
            .map_err(io_err("chmod start.sh"))?;
        if let Some((uid, gid)) = owner {
            for p in [
                dir.clone(),
                dir.join("role"),
                dir.join("scripts"),
                dir.join("logs"),
            ] {
                nix::unistd::chown(&p, Some(uid.into()), Some(gid.into()))
                    .map_err(|e| PgError::Setup(format!("chown postgres {}: {e}", p.display())))?;
            }
        }
        let port = if cfg.port == 0 {
            free_port(cfg.listen)?
        } else {
            cfg.port
        };
        Ok(PgNode {
            passwords: Mutex::new(cfg.passwords.clone()),
            env: Mutex::new(cfg.env.clone()),
            term: Mutex::new(None),
            cfg,
            port,
            dir,
            owner,
            running: Mutex::new(None),
            starts: Mutex::new(0),
            initialised: Mutex::new(false),
            lifecycle: tokio::sync::Mutex::new(()),
            _watchdog: watchdog,
        })
    }

    /// The node's name (its region).
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Where clients and the peer reach it.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.cfg.listen, self.port)
    }

    /// The volume: PGDATA's parent (socket, passfile, pg_rewind.log, `pgdata.old-*`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// PGDATA.
    pub fn pgdata(&self) -> PathBuf {
        self.dir.join("pgdata")
    }

    /// The superuser password the node's cluster was (or will be) created with.
    pub fn superuser_password(&self) -> String {
        let p = self.passwords.lock().expect("passwords lock");
        p.superuser.clone().unwrap_or_else(|| p.app.clone())
    }

    /// Replaces the secret's values for the next start.
    pub fn set_passwords(&self, passwords: Passwords) {
        *self.passwords.lock().expect("passwords lock") = passwords;
    }

    /// Replaces the extra environment of the next start (the pod spec's tuning variables).
    /// start.sh's witness term check: the guard's copy of the term and this region's name
    /// (`TERM_FILE`, `TERM_REGION`).
    pub fn set_term(&self, file: PathBuf, region: &str) {
        *self.term.lock().expect("term lock") = Some((file, region.to_string()));
    }

    pub fn set_env(&self, env: Vec<(String, String)>) {
        *self.env.lock().expect("env lock") = env;
    }

    /// Writes the role files (what mounting the ConfigMap does); read at the next start.
    pub fn write_role(&self, role: &RoleFiles) -> PgResult<()> {
        let files = [
            ("role", role.role.as_str().to_string()),
            ("primary_host", role.primary_host.clone()),
            ("primary_port", role.primary_port.to_string()),
            ("peer_host", role.peer_host.clone()),
            ("peer_port", role.peer_port.to_string()),
        ];
        for (name, value) in files {
            let path = self.dir.join("role").join(name);
            std::fs::write(&path, value).map_err(io_err(format!("writing {}", path.display())))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                .map_err(io_err("chmod role file"))?;
        }
        Ok(())
    }

    /// Whether the script (or the postgres it became) is running.
    pub fn is_running(&self) -> bool {
        self.running
            .lock()
            .expect("running lock")
            .as_ref()
            .is_some_and(|r| r.exited.borrow().is_none())
    }

    /// SIGTERM to the running script (or the postgres it became), without waiting for a start
    /// in progress to finish: what the kubelet sends a container whose pod is deleted.
    pub fn interrupt(&self) {
        if let Some(run) = self.running.lock().expect("running lock").as_ref() {
            let _ = kill(run.pid, Signal::SIGTERM);
        }
    }

    /// The node's processes: start.sh's process group and the postmaster's (with its
    /// backends), when running.
    pub fn processes(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        if let Some(run) = self.running.lock().expect("running lock").as_ref() {
            pids.extend(crate::kube_api::process_group(run.pid.as_raw() as u32));
        }
        if let Some(pm) = postmaster_pid(&self.pgdata()) {
            let pgid = nix::unistd::getpgid(Some(pm)).map_or(pm.as_raw(), |g| g.as_raw());
            for p in crate::kube_api::process_group(pgid as u32) {
                if !pids.contains(&p) {
                    pids.push(p);
                }
            }
        }
        pids
    }

    /// The log of the current (or last) start.
    pub fn current_log(&self) -> String {
        let n = *self.starts.lock().expect("starts lock");
        if n == 0 {
            return String::new();
        }
        std::fs::read_to_string(self.log_path(n)).unwrap_or_default()
    }

    /// The file of the current (or last) start's log, if the node was ever started.
    pub fn current_log_path(&self) -> Option<PathBuf> {
        let n = *self.starts.lock().expect("starts lock");
        (n > 0).then(|| self.log_path(n))
    }

    fn log_path(&self, n: u32) -> PathBuf {
        self.dir.join("logs").join(format!("start-{n}.log"))
    }

    /// Runs start.sh and waits until the node accepts TCP connections on its address (the
    /// pod's readiness probe). Fails with the log when the script exits first.
    pub async fn start(&self) -> PgResult<StartReport> {
        let _guard = self.lifecycle.lock().await;
        self.start_locked().await
    }

    async fn start_locked(&self) -> PgResult<StartReport> {
        if self.is_running() {
            return Err(PgError::Setup(format!(
                "node {} is already running",
                self.cfg.name
            )));
        }
        let n = {
            let mut starts = self.starts.lock().expect("starts lock");
            *starts += 1;
            *starts
        };
        let log_path = self.log_path(n);
        let log = std::fs::File::create(&log_path).map_err(io_err("creating the pod log"))?;
        let log2 = log.try_clone().map_err(io_err("dup the pod log"))?;
        let passwords = self.passwords.lock().expect("passwords lock").clone();
        let mut cmd = tokio::process::Command::new("bash");
        cmd.arg(self.dir.join("scripts/start.sh"))
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &self.dir)
            .env("LANG", "C")
            .env("PGDATA", self.pgdata())
            .env("PG_BIN", &self.cfg.pg_bin)
            .env("ROLE_DIR", self.dir.join("role"))
            .env("LISTEN_ADDRESS", self.cfg.listen.to_string())
            .env("PORT", self.port.to_string())
            .env("PG_CTL_TIMEOUT", "120")
            .env("APP_PASSWORD", &passwords.app)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .process_group(0)
            .kill_on_drop(false);
        for (k, v) in self.env.lock().expect("env lock").iter() {
            cmd.env(k, v);
        }
        if let Some((file, region)) = self.term.lock().expect("term lock").clone() {
            cmd.env("TERM_FILE", file).env("TERM_REGION", region);
        }
        if let Some(p) = &passwords.superuser {
            cmd.env("POSTGRES_PASSWORD", p);
        }
        if let Some(p) = &passwords.replication {
            cmd.env("REPLICATION_PASSWORD", p);
        }
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        let t0 = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(io_err(format!("starting start.sh for {}", self.cfg.name)))?;
        let pid = Pid::from_raw(child.id().map(|p| p as i32).unwrap_or_default());
        std::fs::write(self.dir.join("pgid"), pid.to_string()).map_err(io_err("writing pgid"))?;
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            let status = child.wait().await;
            let text = match status {
                Ok(s) => s.to_string(),
                Err(e) => format!("wait failed: {e}"),
            };
            let _ = tx.send(Some(text));
        });
        *self.running.lock().expect("running lock") = Some(Running {
            pid,
            exited: rx.clone(),
        });

        let deadline = t0 + self.cfg.start_timeout;
        loop {
            if let Some(status) = rx.borrow().clone() {
                return Err(PgError::StartFailed {
                    node: self.cfg.name.clone(),
                    status,
                    log: tail(&self.current_log(), 40),
                });
            }
            if self.ready().await {
                break;
            }
            if Instant::now() > deadline {
                let log = tail(&self.current_log(), 40);
                let _ = self.kill_locked().await;
                return Err(PgError::Timeout {
                    what: format!("node {} to accept connections", self.cfg.name),
                    waited: self.cfg.start_timeout,
                    log,
                });
            }
            // Polling interval of the readiness probe; the condition is re-checked each time.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = self.current_log();
        let decision = log
            .lines()
            .find_map(|l| l.split("decision=").nth(1))
            .and_then(|d| d.split_whitespace().next())
            .unwrap_or_default()
            .to_string();
        let first_init = {
            let mut init = self.initialised.lock().expect("init lock");
            let first = decision == "init-primary" && !*init;
            *init = true;
            first
        };
        if first_init && !self.cfg.tuning.is_empty() {
            self.apply_tuning().await?;
        }
        Ok(StartReport {
            decision,
            log,
            elapsed: t0.elapsed(),
        })
    }

    async fn apply_tuning(&self) -> PgResult<()> {
        let mut sql = String::new();
        for (k, v) in &self.cfg.tuning {
            sql.push_str(&format!(
                "ALTER SYSTEM SET {k} = '{}';\n",
                v.replace('\'', "''")
            ));
        }
        sql.push_str("SELECT pg_reload_conf();\n");
        self.psql("postgres", &sql).await.map(|_| ())
    }

    /// The readiness probe: `pg_isready` over TCP on the node's address.
    pub async fn ready(&self) -> bool {
        tokio::process::Command::new(self.cfg.pg_bin.join("pg_isready"))
            .args(["-q", "-h", &self.cfg.listen.to_string(), "-p"])
            .arg(self.port.to_string())
            .args(["-t", "2"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success())
    }

    /// Fast shutdown (SIGINT to the postmaster, what the pod's preStop hook does), waiting for
    /// the process to end. A no-op when the node is not running.
    pub async fn stop(&self) -> PgResult<()> {
        let _guard = self.lifecycle.lock().await;
        self.stop_locked().await
    }

    async fn stop_locked(&self) -> PgResult<()> {
        let Some(run) = self.take_running() else {
            return Ok(());
        };
        if run.exited.borrow().is_none() {
            let _ = kill(run.pid, Signal::SIGINT);
        }
        if !wait_exit(run.exited.clone(), Duration::from_secs(60)).await {
            tracing::warn!(node = %self.cfg.name, "fast shutdown took over 60 s; killing");
            let _ = killpg(run.pid, Signal::SIGKILL);
            wait_exit(run.exited, Duration::from_secs(10)).await;
        }
        wait_group_gone(run.pid).await;
        Ok(())
    }

    /// SIGKILL to every process of the node (a crash, or a node lost with its pod).
    pub async fn kill(&self) -> PgResult<()> {
        let _guard = self.lifecycle.lock().await;
        self.kill_locked().await
    }

    async fn kill_locked(&self) -> PgResult<()> {
        // Temporary servers started by pg_ctl leave the process group (setsid): kill them by pid.
        for d in ["pgdata", "pgdata.clone-tmp", "pgdata.init-tmp"] {
            if let Some(pid) = postmaster_pid(&self.dir.join(d)) {
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
        let Some(run) = self.take_running() else {
            return Ok(());
        };
        let _ = killpg(run.pid, Signal::SIGKILL);
        wait_exit(run.exited, Duration::from_secs(10)).await;
        wait_group_gone(run.pid).await;
        Ok(())
    }

    /// Stop (fast) then start again: a pod restart with the current role files.
    pub async fn restart(&self) -> PgResult<StartReport> {
        let _guard = self.lifecycle.lock().await;
        self.stop_locked().await?;
        self.start_locked().await
    }

    pub(crate) async fn start_unlocked(&self) -> PgResult<StartReport> {
        self.start_locked().await
    }

    pub(crate) async fn stop_unlocked(&self) -> PgResult<()> {
        self.stop_locked().await
    }

    fn take_running(&self) -> Option<Running> {
        self.running.lock().expect("running lock").take()
    }

    /// The environment `kubectl exec` gives a command in the node's pod: the node's OS user,
    /// the server binaries first on `PATH`, `PGHOST` its socket directory and `PGPORT` its
    /// port (so `psql -U postgres` connects as in the container), `PGDATA`.
    pub fn exec_env(&self) -> crate::kube_api::ExecEnv {
        let path = format!("{}:/usr/local/bin:/usr/bin:/bin", self.cfg.pg_bin.display());
        let dir = self.dir.to_string_lossy().into_owned();
        let mut env = vec![
            ("PATH".to_string(), path),
            ("HOME".to_string(), dir.clone()),
            ("LANG".to_string(), "C".to_string()),
            ("PGHOST".to_string(), dir),
            ("PGPORT".to_string(), self.port.to_string()),
            (
                "PGDATA".to_string(),
                self.pgdata().to_string_lossy().into_owned(),
            ),
        ];
        env.extend(self.env.lock().expect("env lock").iter().cloned());
        crate::kube_api::ExecEnv {
            env,
            user: self.owner,
        }
    }

    /// Runs SQL with psql over the node's Unix socket as the `postgres` OS user (peer auth, as
    /// `kubectl exec ... psql` would); returns stdout (unaligned, tuples only).
    pub async fn psql(&self, db: &str, sql: &str) -> PgResult<String> {
        let mut cmd = tokio::process::Command::new(self.cfg.pg_bin.join("psql"));
        cmd.args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "postgres", "-d", db, "-f", "-"])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        let mut child = cmd.spawn().map_err(io_err("running psql"))?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let sql = sql.to_string();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = stdin.write_all(sql.as_bytes()).await;
        });
        let out = child
            .wait_with_output()
            .await
            .map_err(io_err("waiting for psql"))?;
        let _ = writer.await;
        if !out.status.success() {
            return Err(PgError::Sql {
                node: self.cfg.name.clone(),
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// A libpq URL for `user` on database `db` over TCP.
    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "postgres://{user}:{}@{}:{}/{db}",
            urlencode(password),
            self.cfg.listen,
            self.port
        )
    }
}

impl Drop for PgNode {
    fn drop(&mut self) {
        // The watchdog does the same when the process ends; do it now for a prompt clean-up.
        for d in ["pgdata", "pgdata.clone-tmp", "pgdata.init-tmp"] {
            if let Some(pid) = postmaster_pid(&self.dir.join(d)) {
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
        if let Some(run) = self.take_running() {
            let _ = killpg(run.pid, Signal::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn postmaster_pid(pgdata: &Path) -> Option<Pid> {
    let text = std::fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    let pid = Pid::from_raw(pid);
    kill(pid, None).ok().map(|_| pid)
}

async fn wait_exit(mut rx: watch::Receiver<Option<String>>, timeout: Duration) -> bool {
    tokio::time::timeout(timeout, rx.wait_for(Option::is_some))
        .await
        .is_ok()
}

/// Waits until no process of the group is left (backends exit after their postmaster), so
/// that the next start finds no shared memory still attached.
async fn wait_group_gone(pgid: Pid) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while killpg(pgid, None).is_ok() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A port that was free a moment ago on `ip`.
pub fn free_port(ip: IpAddr) -> PgResult<u16> {
    let l = TcpListener::bind((ip, 0)).map_err(io_err(format!("binding {ip}:0")))?;
    Ok(l.local_addr().map_err(io_err("local_addr"))?.port())
}

/// Shared handle, as the pair and the pod runtime hold it.
pub type SharedNode = Arc<PgNode>;
