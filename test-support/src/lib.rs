//! The test harness every crate's integration tests share: a throwaway PostgreSQL 15 cluster.
//!
//! - [`PgCluster::start`] runs `initdb` in a temp dir and starts a server on a free loopback
//!   port. When the tests run as root (CI), PostgreSQL refuses to run, so the cluster belongs to
//!   the `postgres` system user (created when absent) and every server binary runs as that user.
//! - [`shared`] is one cluster per test process, with the schema from `init-db.sql` applied to a
//!   template database; [`TestDb::new`] copies the template so each test gets its own database
//!   and tests run in parallel.
//! - Clean-up cannot be left to `Drop` (statics are never dropped, and a killed test process
//!   runs no code), so every cluster has a watchdog process that holds the read end of a pipe
//!   whose write end only this process has: when this process ends for any reason (success,
//!   panic, SIGKILL) the pipe closes and the watchdog stops the server and removes its files.
//!
//! The binaries come from `PG_BIN` or `/usr/lib/postgresql/15/bin`.

mod app;
pub mod raw;
pub mod registry;
mod watchdog;

pub use app::{json_error, TestApp};
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
pub use watchdog::Watchdog;

use anyhow::{bail, Context, Result};

/// Where the PostgreSQL 15 server binaries are.
pub fn pg_bin_dir() -> PathBuf {
    std::env::var_os("PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// The root of the workspace (where `init-db.sql` is).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support lives one level below the workspace root")
        .to_path_buf()
}

/// The path of the schema file the services use.
pub fn init_db_sql() -> PathBuf {
    workspace_root().join("init-db.sql")
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Makes sure the unprivileged `postgres` user exists (root only; the lab's nodes use it too).
pub fn ensure_postgres_user() -> Result<()> {
    let exists = Command::new("id")
        .args(["-u", "postgres"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?
        .success();
    if !exists {
        let st = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/bin/sh",
                "postgres",
            ])
            .status()
            .context("running useradd to create the postgres user")?;
        if !st.success() {
            bail!("could not create the `postgres` user (useradd failed); create it and retry");
        }
    }
    Ok(())
}

/// Settings for a cluster.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// fsync and synchronous_commit on (benchmarks); off makes tests fast.
    pub durable: bool,
    /// Listen address (loopback by default).
    pub host: String,
    /// Extra `postgresql.conf` lines.
    pub extra_conf: Vec<String>,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            durable: false,
            host: "127.0.0.1".into(),
            extra_conf: Vec::new(),
        }
    }
}

/// A running throwaway PostgreSQL cluster.
pub struct PgCluster {
    pub host: String,
    pub port: u16,
    dir: PathBuf,
    as_postgres: bool,
    // Stops the server and removes its files when this process ends, however it ends.
    _watchdog: Watchdog,
}

impl PgCluster {
    /// `initdb` + start on a free port. Blocks until the server accepts connections.
    pub fn start(opts: PgOptions) -> Result<PgCluster> {
        test_log();
        let bin = pg_bin_dir();
        if !bin.join("initdb").exists() {
            bail!(
                "PostgreSQL 15 server binaries not found in {} (set PG_BIN, or install them: \
                 apt-get install -y postgresql-15)",
                bin.display()
            );
        }
        if running_as_root() {
            ensure_postgres_user()?;
        }
        let mut cluster = PgCluster::in_new_dir("drd-pg-", &opts.host)?;
        let dir = cluster.dir.clone();
        let data = dir.join("data");
        cluster.run_checked(
            bin.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-instructions",
                "-N",
            ],
        )?;
        let mut conf = vec![
            format!("listen_addresses = '{}'", opts.host),
            format!("unix_socket_directories = '{}'", dir.display()),
            "max_connections = 400".into(),
            "shared_buffers = 128MB".into(),
            "log_min_messages = warning".into(),
            "logging_collector = off".into(),
        ];
        if opts.durable {
            conf.push("fsync = on".into());
            conf.push("synchronous_commit = on".into());
            conf.push("full_page_writes = on".into());
        } else {
            conf.push("fsync = off".into());
            conf.push("synchronous_commit = off".into());
            conf.push("full_page_writes = off".into());
        }
        conf.extend(opts.extra_conf.iter().cloned());
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))?;
        writeln!(f, "\n# drd test harness\n{}", conf.join("\n"))?;

        // A free port can be taken between our check and the server's bind: retry a few times.
        let mut last = None;
        for _ in 0..5 {
            cluster.port = free_port(&opts.host)?;
            match cluster.pg_ctl_start() {
                Ok(()) => return Ok(cluster),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap())
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    fn command(&self, program: impl AsRef<Path>, args: &[&str]) -> Command {
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"])
                .arg(program.as_ref())
                .args(args);
            c
        } else {
            let mut c = Command::new(program.as_ref());
            c.args(args);
            c
        }
    }

    fn run_checked(&self, program: impl AsRef<Path>, args: &[&str]) -> Result<Output> {
        let name = program.as_ref().display().to_string();
        let out = self
            .command(&program, args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {name}"))?;
        if !out.status.success() {
            bail!(
                "{name} {} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out)
    }

    fn pg_ctl_start(&self) -> Result<()> {
        let port = format!("-p {}", self.port);
        let data = self.data_dir();
        let log = self.log_file();
        let res = self.run_checked(
            pg_bin_dir().join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &port,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        if let Err(e) = res {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(15).collect();
            bail!(
                "{e}\nserver log (last lines):\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }

    /// Stops the server (fast mode); [`PgCluster::restart`] brings it back on the same port.
    pub fn stop(&self) -> Result<()> {
        let data = self.data_dir();
        self.run_checked(
            pg_bin_dir().join("pg_ctl"),
            &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"],
        )?;
        Ok(())
    }

    /// Starts a stopped server again on the same port.
    pub fn restart(&self) -> Result<()> {
        self.pg_ctl_start()
    }

    /// A URL for database `db` as the superuser.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@{}:{}/{db}", self.host, self.port)
    }

    /// Runs SQL through `psql` against `db`, stopping at the first error; returns stdout.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let port = self.port.to_string();
        let out = self.run_checked(
            pg_bin_dir().join("psql"),
            &[
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                &self.host,
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ],
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Applies a SQL file in one transaction, as `drdctl init-db` does.
    pub fn apply_file(&self, db: &str, file: &Path) -> Result<()> {
        let sql =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let port = self.port.to_string();
        let mut child = self
            .command(
                pg_bin_dir().join("psql"),
                &[
                    "-X",
                    "-q",
                    "-1",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-h",
                    &self.host,
                    "-p",
                    &port,
                    "-U",
                    "postgres",
                    "-d",
                    db,
                    "-f",
                    "-",
                ],
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child.stdin.take().unwrap().write_all(sql.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "applying {} failed: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Runs a PostgreSQL client tool (e.g. `pgbench`) from the server's bin dir, as the
    /// cluster's owner, with the connection given by `PGHOST`/`PGPORT`/`PGUSER`.
    pub fn tool(&self, name: &str, args: &[&str]) -> Command {
        let mut c = self.command(pg_bin_dir().join(name), args);
        c.env("PGHOST", &self.host)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres");
        c
    }

    /// The directory holding the cluster (data dir, log, socket); owned by the cluster's user.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // The watchdog does the work once the pipe closes; do it now for a prompt clean-up.
        let data = self.data_dir();
        let _ = self
            .command(
                pg_bin_dir().join("pg_ctl"),
                &[
                    "-D",
                    data.to_str().unwrap(),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn chown_postgres(dir: &Path) -> Result<()> {
    let st = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir)
        .status()?;
    if !st.success() {
        bail!("chown postgres {} failed", dir.display());
    }
    Ok(())
}

fn cluster_watchdog(dir: &Path, as_postgres: bool) -> Result<Watchdog> {
    let pg_ctl = pg_bin_dir().join("pg_ctl");
    let data = dir.join("data");
    let stop = format!(
        "{} -D '{}' -m immediate -w stop",
        pg_ctl.display(),
        data.display()
    );
    let stop = if as_postgres {
        format!("runuser -u postgres -- {stop}")
    } else {
        stop
    };
    let script = format!(
        "if [ -f '{data}/postmaster.pid' ]; then {stop} >/dev/null 2>&1; fi; rm -rf '{dir}'",
        data = data.display(),
        dir = dir.display()
    );
    Ok(Watchdog::spawn(
        &format!("cluster {}", dir.display()),
        &script,
    )?)
}

/// The one logging switch of every test: with `TEST_LOG` set, the in-process tracing output
/// (the doubles, the adapters, the services under test) goes to the test's output, which libtest
/// shows for failing tests (all with `--nocapture`). `TEST_LOG=1` means `debug`; any other value
/// is a filter (`TEST_LOG=lab=trace,drd_db=debug`). The harness's entry points call it
/// ([`PgCluster::start`], [`TestApp::spawn`], the lab tests' and drdctl tests' set-ups), so a
/// test need not.
pub fn test_log() {
    let Some(v) = std::env::var("TEST_LOG").ok().filter(|v| !v.is_empty()) else {
        return;
    };
    let filter = if v == "1" { "debug".to_string() } else { v };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
}

/// A port that was free a moment ago on `host`.
pub fn free_port(host: &str) -> Result<u16> {
    let l = TcpListener::bind((host, 0)).with_context(|| format!("binding {host}:0"))?;
    Ok(l.local_addr()?.port())
}

const TEMPLATE: &str = "drd_template";

/// The cluster shared by every test of this process, with `init-db.sql` in a template database.
pub fn shared() -> &'static PgCluster {
    static SHARED: OnceLock<PgCluster> = OnceLock::new();
    SHARED.get_or_init(|| {
        let c =
            PgCluster::start(PgOptions::default()).expect("starting the test PostgreSQL cluster");
        c.psql("postgres", &format!("CREATE DATABASE {TEMPLATE}"))
            .expect("creating the template database");
        c.apply_file(TEMPLATE, &init_db_sql())
            .expect("applying init-db.sql to the template database");
        c
    })
}

/// A fresh database with the application schema, for one test.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub host: String,
    pub port: u16,
}

impl TestDb {
    /// Copies the template on the shared cluster.
    pub fn new() -> TestDb {
        let c = shared();
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        // CREATE DATABASE from a template fails if someone is connected to the template; nobody
        // is, but a concurrent copy can hold it for a moment: retry briefly.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match c.psql(
                "postgres",
                &format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE}"),
            ) {
                Ok(_) => break,
                Err(e) if Instant::now() < deadline && e.to_string().contains("being accessed") => {
                    std::thread::yield_now();
                }
                Err(e) => panic!("creating test database {name}: {e:#}"),
            }
        }
        TestDb {
            url: c.url(&name),
            host: c.host.clone(),
            port: c.port,
            name,
        }
    }

    /// Runs SQL against this database through psql (rows `|`-separated, one per line).
    pub fn psql(&self, sql: &str) -> String {
        shared()
            .psql(&self.name, sql)
            .unwrap_or_else(|e| panic!("psql on {}: {e:#}", self.name))
    }

    /// Makes the database refuse writes for new sessions, the way a standby does.
    pub fn make_read_only(&self) {
        shared()
            .psql(
                "postgres",
                &format!(
                    "ALTER DATABASE {} SET default_transaction_read_only = on",
                    self.name
                ),
            )
            .expect("setting the database read-only");
    }
}

impl Default for TestDb {
    fn default() -> Self {
        Self::new()
    }
}

/// Polls `f` until it returns `Some`, or panics naming `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        // Polling interval, not synchronisation: the condition is re-checked each time.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl PgCluster {
    /// A cluster not yet created, in a new temp dir (owned by `postgres` when running as root)
    /// whose watchdog is started first, so even a failed start leaves nothing behind.
    fn in_new_dir(prefix: &str, host: &str) -> Result<PgCluster> {
        let as_postgres = running_as_root();
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .context("creating a temp dir for the cluster")?
            .keep();
        if as_postgres {
            chown_postgres(&dir)?;
        }
        let watchdog = cluster_watchdog(&dir, as_postgres)?;
        Ok(PgCluster {
            host: host.to_string(),
            port: 0,
            dir,
            as_postgres,
            _watchdog: watchdog,
        })
    }

    /// A streaming standby of `primary` (pg_basebackup -R), started on its own port.
    pub fn standby_of(primary: &PgCluster) -> Result<PgCluster> {
        let mut standby = PgCluster::in_new_dir("drd-pg-standby-", &primary.host)?;
        let dir = standby.dir.clone();
        let data = dir.join("data");
        let port = primary.port.to_string();
        standby.run_checked(
            pg_bin_dir().join("pg_basebackup"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-h",
                &primary.host,
                "-p",
                &port,
                "-U",
                "postgres",
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ],
        )?;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))?;
        writeln!(f, "\nunix_socket_directories = '{}'", dir.display())?;
        let mut last = None;
        for _ in 0..5 {
            standby.port = free_port(&standby.host)?;
            match standby.pg_ctl_start() {
                Ok(()) => return Ok(standby),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap())
    }
}

/// Environment for a service under test: its database, a free port on loopback, no drain.
/// `extra` pairs override or add variables. Use with `ServiceConfig::from_lookup`.
pub fn service_env(db_url: &str, extra: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let mut map: std::collections::HashMap<String, String> = [
        ("LISTEN_ADDR", "127.0.0.1:0"),
        ("DATABASE_URL", db_url),
        ("REGION", "test"),
        ("SHUTDOWN_DRAIN_MS", "0"),
        ("DB_ACQUIRE_TIMEOUT_MS", "2000"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        map.insert(k.to_string(), v.to_string());
    }
    move |k| map.get(k).cloned()
}

/// The processes whose parent is `pid`, from `/proc` (a postmaster's backends, nginx's
/// workers).
pub fn child_pids(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: the command name may hold spaces, so after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}
