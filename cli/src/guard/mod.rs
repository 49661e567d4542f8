//! `drdctl guard`: the small process beside each region's PostgreSQL that fences its own
//! database when the witness term names the other region, or when it could not confirm its
//! term for longer than the lease ([`core`] decides; this module reads the clock, the witness,
//! the peer and the database, and acts). See docs/witness.md.
//!
//! - Every `poll` it reads the term (bounded by `timeout`). When that fails it asks the other
//!   region's guard (`GET /v1/confirm`), which vouches only while its own database streams
//!   from this one.
//! - It serves `GET /v1/confirm?region=R&n=N` (the peer's question), `GET /v1/state` (JSON)
//!   and `GET /healthz`.
//! - It writes the term it last read to `--term-file` (start.sh starts a primary only on a
//!   fresh term naming its region) and the lease deadline to `<term-file>.lease`, which a
//!   watchdog child process (`drdctl guard --watchdog`) enforces on its own: a guard stopped
//!   (SIGSTOP, a stall) cannot keep its database writable.
//! - Time is `CLOCK_BOOTTIME` (it keeps counting through a suspend; `Instant` does not).

pub mod core;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use drd_db::{Database, DbRole, PasswordSource, PgDatabase, RegionConfig};
use drd_dns::{BlobWitness, Witness, WitnessConfig};
use serde::Serialize;

use self::core::{FenceReason, Guard, Local, Timing};

/// `drdctl guard`'s flags (environment variables for a container).
#[derive(Debug, Clone, Args)]
pub struct GuardArgs {
    /// This guard's region (`primary` or `dr`).
    #[arg(long, env = "DRDCTL_GUARD_REGION")]
    pub region: String,
    /// The local database, as its superuser (`postgres://postgres@127.0.0.1:5432/postgres`);
    /// the password comes from DRDCTL_POSTGRES_PASSWORD.
    #[arg(long, env = "DRDCTL_GUARD_DB_URL")]
    pub db_url: String,
    /// The term blob: https://<account>.blob.core.windows.net/<container>/<blob>.
    #[arg(long, env = "DRDCTL_WITNESS_URL")]
    pub witness_url: String,
    /// The Entra authority host (default: the public cloud's).
    #[arg(long, env = "DRDCTL_WITNESS_AUTHORITY_HOST")]
    pub authority_host: Option<String>,
    /// Which Azure credential: auto, client-secret, workload-identity, managed-identity.
    #[arg(long, env = "DRDCTL_WITNESS_AUTH", default_value = "auto")]
    pub auth: String,
    /// The other region's guard (`http://host:8091`), asked when the witness is unreachable.
    #[arg(long, env = "DRDCTL_GUARD_PEER")]
    pub peer: Option<String>,
    /// Where to serve the peer's questions and the state.
    #[arg(long, env = "DRDCTL_GUARD_LISTEN", default_value = "0.0.0.0:8091")]
    pub listen: String,
    /// The term as last read, for start.sh (`<file>.lease` holds the lease for the watchdog).
    #[arg(
        long,
        env = "DRDCTL_GUARD_TERM_FILE",
        default_value = "/run/drdctl/term.json"
    )]
    pub term_file: PathBuf,
    /// Run when the fence fails (the database does not answer): stops PostgreSQL.
    #[arg(long, env = "DRDCTL_GUARD_STOP_COMMAND")]
    pub stop_command: Option<String>,
    /// `production` (poll 2 s, lease 10 s, wait 15 s) or `lab` (0.5 s, 3 s, 5 s).
    #[arg(long, env = "DRDCTL_WITNESS_TIMING", default_value = "production")]
    pub timing: String,
    /// Run as the watchdog of `--term-file`'s lease (started by the guard itself).
    #[arg(long, hide = true)]
    pub watchdog: bool,
}

/// The timing named `production` or `lab`.
pub fn timing(name: &str) -> Result<Timing> {
    match name {
        "production" => Ok(Timing::production()),
        "lab" => Ok(Timing::lab()),
        other => anyhow::bail!("--timing {other:?}: use production or lab"),
    }
}

/// `CLOCK_BOOTTIME` as a duration since boot.
pub fn boottime() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(Duration::from)
        .unwrap_or_default()
}

fn lease_file(term_file: &Path) -> PathBuf {
    let mut p = term_file.as_os_str().to_owned();
    p.push(".lease");
    PathBuf::from(p)
}

/// The lease deadline (`CLOCK_BOOTTIME` nanoseconds) the watchdog enforces.
fn write_lease(path: &Path, until: Duration) -> std::io::Result<()> {
    write_atomic(path, until.as_nanos().to_string().as_bytes())
}

/// [`write_lease`]'s deadline, if the file holds one.
fn read_lease(path: &Path) -> Option<Duration> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_nanos)
}

/// Writes through a temporary file and a rename, so a reader never sees half a file.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn database(args: &GuardArgs) -> PgDatabase {
    PgDatabase::new(RegionConfig::url(
        &args.region,
        &args.db_url,
        PasswordSource::Env("DRDCTL_POSTGRES_PASSWORD".into()),
    ))
}

async fn local_state(db: &PgDatabase, within: Duration) -> Local {
    match tokio::time::timeout(within, db.status()).await {
        Ok(Ok(s)) => match s.role {
            DbRole::Primary if s.fenced => Local::Fenced,
            DbRole::Primary => Local::Writable,
            DbRole::Standby
                if s.wal_receiver
                    .as_ref()
                    .is_some_and(|w| w.status == "streaming") =>
            {
                Local::StreamingStandby
            }
            DbRole::Standby => Local::Standby,
        },
        _ => Local::Down,
    }
}

/// The fence, bounded by the fence budget; the stop command when it fails.
async fn fence(db: &PgDatabase, budget: Duration, stop: Option<&str>, why: &FenceReason) {
    tracing::warn!(reason = %why, "fencing the local database");
    match tokio::time::timeout(budget.max(Duration::from_secs(1)) * 5, db.fence()).await {
        Ok(Ok(o)) => {
            tracing::warn!(sessions = o.sessions_terminated, reason = %why, "fenced");
            return;
        }
        Ok(Err(e)) => tracing::error!(error = %e, "the fence failed"),
        Err(_) => tracing::error!("the fence did not finish in time"),
    }
    if let Some(cmd) = stop {
        tracing::error!(command = cmd, "stopping PostgreSQL instead");
        let _ = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .status()
            .await;
    }
}

#[derive(Debug, Serialize)]
struct StateView {
    guard: Guard,
    /// The database as the guard last saw it.
    local: Local,
    /// Seconds of lease left (negative: expired).
    lease_left_s: f64,
    last_error: Option<String>,
    fenced_for: Option<FenceReason>,
}

struct Shared {
    guard: Mutex<Guard>,
    last_error: Mutex<Option<String>>,
    fenced_for: Mutex<Option<FenceReason>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs the guard (or, with `--watchdog`, the watchdog) until killed.
pub async fn run(args: GuardArgs) -> Result<()> {
    let timing = timing(&args.timing)?;
    timing
        .validate()
        .map_err(|(k, m)| anyhow::anyhow!("witness {k}: {m}"))?;
    if args.region != "primary" && args.region != "dr" {
        anyhow::bail!("--region {:?}: use primary or dr", args.region);
    }
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    if args.watchdog {
        return watchdog(&args, timing).await;
    }
    let auth = args
        .auth
        .parse()
        .map_err(|e| anyhow::anyhow!("--auth {e}"))?;
    let witness = BlobWitness::from_env(&WitnessConfig {
        url: args.witness_url.clone(),
        auth,
        authority_host: args.authority_host.clone(),
        managed_identity_client_id: std::env::var("AZURE_CLIENT_ID").ok(),
        timeout: timing.timeout,
    })?;
    let db = Arc::new(database(&args));
    if let Some(dir) = args.term_file.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating {} (--term-file)", dir.display()))?;
    }
    let shared = Arc::new(Shared {
        guard: Mutex::new(Guard::new(&args.region, timing, boottime())),
        last_error: Mutex::new(None),
        fenced_for: Mutex::new(None),
    });
    let lease_path = lease_file(&args.term_file);
    write_lease(&lease_path, lock(&shared.guard).lease_until())?;
    // The watchdog: the same binary, its own process (a stopped guard does not stop it).
    let exe = std::env::current_exe().context("finding drdctl's own path for the watchdog")?;
    let mut wd = tokio::process::Command::new(exe);
    wd.args(["guard", "--watchdog"])
        .env("DRDCTL_GUARD_REGION", &args.region)
        .env("DRDCTL_GUARD_DB_URL", &args.db_url)
        .env("DRDCTL_WITNESS_URL", &args.witness_url)
        .env("DRDCTL_GUARD_TERM_FILE", &args.term_file)
        .env("DRDCTL_WITNESS_TIMING", &args.timing);
    if let Some(c) = &args.stop_command {
        wd.env("DRDCTL_GUARD_STOP_COMMAND", c);
    }
    let _watchdog = wd.spawn().context("starting the guard's watchdog")?;

    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("--listen {}: cannot bind", args.listen))?;
    let server = serve(listener, shared.clone(), db.clone(), timing);
    tokio::spawn(server);

    let peer = args.peer.clone();
    // The peer answers after its own status check (bounded by `timeout`): wait up to a poll.
    let http = reqwest::Client::builder()
        .timeout(timing.poll)
        .build()
        .context("building the peer client")?;
    let mut tick = tokio::time::interval(timing.poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let sent = boottime();
        let (read, local) = tokio::join!(witness.read(), local_state(&db, timing.poll));
        match read {
            Ok(term) => {
                let view = term.as_ref().map(|v| (v.term.region.as_str(), v.term.n));
                lock(&shared.guard).on_witness(sent, view);
                *lock(&shared.last_error) = None;
                if let Some(v) = &term {
                    let _ = write_atomic(
                        &args.term_file,
                        serde_json::to_string(&v.term)
                            .unwrap_or_default()
                            .as_bytes(),
                    );
                }
            }
            Err(e) => {
                *lock(&shared.last_error) = Some(e.to_string());
                let mine = lock(&shared.guard)
                    .highest
                    .clone()
                    .filter(|(r, _)| *r == args.region);
                if let (Some(peer), Some((_, n))) = (&peer, mine) {
                    let sent = boottime();
                    let url = format!(
                        "{}/v1/confirm?region={}&n={n}",
                        peer.trim_end_matches('/'),
                        args.region
                    );
                    let vouched = match http.get(&url).send().await {
                        Ok(r) => r
                            .json::<serde_json::Value>()
                            .await
                            .ok()
                            .and_then(|v| v["vouch"].as_bool())
                            .unwrap_or(false),
                        Err(_) => false,
                    };
                    if vouched {
                        lock(&shared.guard).on_peer_confirm(sent, n);
                    }
                }
            }
        }
        let (lease_until, verdict) = {
            let mut g = lock(&shared.guard);
            let now = boottime();
            g.observe(now, local);
            (g.lease_until(), g.must_fence(now, local))
        };
        let _ = write_lease(&lease_path, lease_until);
        if let Some(why) = verdict {
            fence(&db, timing.fence_budget, args.stop_command.as_deref(), &why).await;
            *lock(&shared.fenced_for) = Some(why);
        }
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    db: Arc<PgDatabase>,
    timing: Timing,
) {
    use poem::{get, handler, web::Json, web::Query, EndpointExt, Route};

    #[derive(serde::Deserialize)]
    struct Ask {
        region: String,
        n: u64,
    }

    #[handler]
    async fn confirm(
        Query(ask): Query<Ask>,
        ctx: poem::web::Data<&(Arc<Shared>, Arc<PgDatabase>, Timing)>,
    ) -> Json<serde_json::Value> {
        let (shared, db, timing) = *ctx;
        // Live: a standby sealed for promotion a moment ago must not vouch any more.
        let local = local_state(db, timing.timeout).await;
        let vouch = lock(&shared.guard).vouches(&ask.region, ask.n, local);
        Json(serde_json::json!({ "vouch": vouch, "local": local }))
    }

    #[handler]
    fn state(ctx: poem::web::Data<&(Arc<Shared>, Arc<PgDatabase>, Timing)>) -> Json<StateView> {
        let (shared, _, _) = *ctx;
        let guard = lock(&shared.guard).clone();
        let left = guard.lease_until().as_secs_f64() - boottime().as_secs_f64();
        Json(StateView {
            local: guard.last_local.unwrap_or(Local::Down),
            guard,
            lease_left_s: left,
            last_error: lock(&shared.last_error).clone(),
            fenced_for: lock(&shared.fenced_for).clone(),
        })
    }

    #[handler]
    fn healthz() -> &'static str {
        "ok"
    }

    let app = Route::new()
        .at("/v1/confirm", get(confirm))
        .at("/v1/state", get(state))
        .at("/healthz", get(healthz))
        .data((shared, db, timing));
    let acceptor = match poem::listener::TcpAcceptor::from_tokio(listener) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "the guard's listener failed");
            return;
        }
    };
    if let Err(e) = poem::Server::new_with_acceptor(acceptor).run(app).await {
        tracing::error!(error = %e, "the guard's server stopped");
    }
}

/// The watchdog: fences the database once the lease deadline in `<term-file>.lease` has
/// passed, whatever the guard is doing. It checks every `pause_bound / 2`.
async fn watchdog(args: &GuardArgs, timing: Timing) -> Result<()> {
    let db = database(args);
    let path = lease_file(&args.term_file);
    let step = timing.pause_bound / 2;
    // Its own view of promotions, from a look at the database at every check (not only past
    // the deadline): a standby promoted between two of the guard's polls, even before the
    // guard's first lease ran out, has one lease to be confirmed (the guard's next read does
    // it). See Guard::watchdog_check.
    let mut seen = Guard::new(&args.region, timing, boottime());
    loop {
        let deadline = read_lease(&path);
        let now = boottime();
        let local = local_state(&db, timing.timeout).await;
        if let Some(why) = seen.watchdog_check(now, deadline, local) {
            tracing::warn!("watchdog: the guard's lease ran out");
            fence(&db, timing.fence_budget, args.stop_command.as_deref(), &why).await;
        }
        tokio::time::sleep(step).await;
    }
}
