//! [`PgDatabase`], the one real [`Database`]: sqlx against the region's PostgreSQL, reached
//! through kube port-forward or a URL. Each operation opens its own connection (no pool: an
//! operator tool makes few calls, and a fresh session sees reloaded settings such as the fence).
//!
//! Here: connecting (password, port-forward bridge, session options) and the [`Database`]
//! impl, which hands the longer operations to its modules: [`status`] (what a node is),
//! [`fence`] (the fence and its lifting), [`switch`] (promotion, desired role, rejoin) and
//! [`init`] (init-db).

use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::Connection;

use crate::config::{Access, PasswordSource, RegionConfig};
use crate::error::{DbError, DbResult};
use crate::host::{Forward, HostError, PodHost};

mod fence;
mod init;
mod status;
mod switch;
use crate::lsn::Lsn;
use crate::rejoin::RejoinOutcome;
use crate::status::NodeStatus;
use crate::{
    Database, DesiredRole, FenceOutcome, InitDbOptions, InitDbOutcome, Progress, PromoteOutcome,
    RejoinOptions, WaitProgress,
};

/// A region's PostgreSQL through sqlx.
pub struct PgDatabase {
    cfg: RegionConfig,
    bridge: tokio::sync::OnceCell<Box<dyn Forward>>,
    password: tokio::sync::OnceCell<Option<SecretString>>,
    /// A session opened ahead ([`Database::prepare`]) or left by a wait on live values, with
    /// when it was parked. Only operations that read live values (positions, recovery) take
    /// it: never one that asks what a new session sees, and a session that ran `SET` is never
    /// parked.
    spare: std::sync::Mutex<Option<(Instant, PgConnection)>>,
}

/// A parked session older than this is closed instead of used.
const SPARE_MAX_AGE: Duration = Duration::from_secs(5);

impl std::fmt::Debug for PgDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgDatabase")
            .field("region", &self.cfg.region)
            .field("via", &self.cfg.via())
            .finish()
    }
}

impl PgDatabase {
    /// An adapter for one region; nothing is contacted until the first call.
    pub fn new(cfg: RegionConfig) -> Self {
        PgDatabase {
            cfg,
            bridge: tokio::sync::OnceCell::new(),
            password: tokio::sync::OnceCell::new(),
            spare: std::sync::Mutex::new(None),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RegionConfig {
        &self.cfg
    }

    fn region_name(&self) -> String {
        self.cfg.region.clone()
    }

    fn sql_err(&self, what: &str) -> impl FnOnce(sqlx::Error) -> DbError {
        let (region, what) = (self.region_name(), what.to_string());
        move |source| DbError::Sql {
            region,
            what,
            source,
        }
    }

    fn kube(&self, what: &str) -> DbResult<&dyn PodHost> {
        self.cfg.kube.as_deref().ok_or_else(|| DbError::NeedsKube {
            region: self.region_name(),
            what: what.to_string(),
        })
    }

    /// The cluster's answer as the adapter's error, naming the region, the context and the
    /// objects.
    fn host_error(&self, what: &str, e: HostError) -> DbError {
        let region = self.region_name();
        let names = self.cfg.kube.as_ref().map(|k| k.names());
        let context = names.map(|n| n.context.clone()).unwrap_or_default();
        match e {
            HostError::MissingSecret(_) => DbError::MissingSecret {
                region,
                context,
                namespace: names.map(|n| n.namespace.clone()).unwrap_or_default(),
                name: names.map(|n| n.secret.clone()).unwrap_or_default(),
                keys: self.secret_keys().iter().map(|k| k.to_string()).collect(),
            },
            HostError::NotReady { reason, log } => DbError::Rejoin {
                region,
                reason,
                log,
            },
            HostError::Api(source) => DbError::Kube {
                region,
                context,
                what: what.to_string(),
                source,
            },
        }
    }

    fn password_hint(&self) -> String {
        match (
            &self.cfg.password,
            self.cfg.kube.as_ref().map(|k| k.names()),
        ) {
            (PasswordSource::KubeSecret, Some(k)) => format!(
                "secret {}/{} keys {} (kube context {})",
                k.namespace,
                k.secret,
                self.secret_keys().join(", then "),
                k.context
            ),
            (PasswordSource::KubeSecret, None) => "the region's secret (no kube context)".into(),
            (PasswordSource::Env(v), _) => format!("the variable {v}"),
            (PasswordSource::Value(_), _) => "the configured password".into(),
        }
    }

    fn secret_keys(&self) -> Vec<&'static str> {
        if self.cfg.user == self.cfg.app_user {
            vec!["password"]
        } else {
            vec!["superuser-password", "password"]
        }
    }

    async fn password(&self) -> DbResult<Option<SecretString>> {
        self.password
            .get_or_try_init(|| async {
                match &self.cfg.password {
                    PasswordSource::Value(v) => Ok(Some(v.clone())),
                    PasswordSource::Env(var) => std::env::var(var)
                        .map(|v| Some(SecretString::from(v)))
                        .map_err(|_| DbError::MissingEnv {
                            region: self.region_name(),
                            var: var.clone(),
                        }),
                    PasswordSource::KubeSecret => {
                        let kube = self.kube("reading the password secret")?;
                        let v = kube
                            .secret_value(&self.secret_keys())
                            .await
                            .map_err(|e| self.host_error("reading the password secret", e))?;
                        Ok(Some(v))
                    }
                }
            })
            .await
            .cloned()
    }

    async fn connect_options(&self, db: &str) -> DbResult<PgConnectOptions> {
        let opts = match &self.cfg.access {
            Access::Url(url) => {
                let mut o = PgConnectOptions::from_str(url).map_err(|e| DbError::Unreachable {
                    region: self.region_name(),
                    via: self.cfg.via(),
                    reason: format!("invalid URL: {e}"),
                })?;
                if !url.contains('@') {
                    o = o.username(&self.cfg.user);
                }
                o
            }
            Access::PortForward => {
                let kube = self.kube("port-forward")?;
                let bridge = self
                    .bridge
                    .get_or_try_init(|| kube.forward())
                    .await
                    .map_err(|e| DbError::Unreachable {
                        region: self.region_name(),
                        via: self.cfg.via(),
                        reason: format!("cannot open a local port for the port-forward: {e}"),
                    })?;
                PgConnectOptions::new()
                    .host("127.0.0.1")
                    .port(bridge.addr().port())
                    .username(&self.cfg.user)
            }
        };
        let mut opts = opts.database(db).application_name("drdctl");
        if let Some(pw) = self.password().await? {
            opts = opts.password(pw.expose_secret());
        }
        Ok(opts)
    }

    async fn connect(&self, db: &str) -> DbResult<PgConnection> {
        let t0 = Instant::now();
        let opts = self.connect_options(db).await?;
        let attempt =
            tokio::time::timeout(self.cfg.connect_timeout, PgConnection::connect_with(&opts)).await;
        let err = match attempt {
            Ok(Ok(c)) => {
                tracing::debug!(
                    region = %self.cfg.region,
                    db,
                    ms = ms(t0),
                    "session opened"
                );
                return Ok(c);
            }
            Ok(Err(e)) => e,
            Err(_) => {
                return Err(DbError::Unreachable {
                    region: self.region_name(),
                    via: self.cfg.via(),
                    reason: format!("no answer within {:?}", self.cfg.connect_timeout),
                })
            }
        };
        if let sqlx::Error::Database(d) = &err {
            if matches!(d.code().as_deref(), Some("28P01" | "28000")) {
                return Err(DbError::Auth {
                    region: self.region_name(),
                    user: self.cfg.user.clone(),
                    via: self.cfg.via(),
                    reason: d.message().to_string(),
                    hint: self.password_hint(),
                });
            }
            return Err(self.sql_err(&format!("connecting to database {db}"))(err));
        }
        let forward_error = match self.bridge.get() {
            Some(b) => b.take_error(Duration::from_secs(1)).await,
            None => None,
        };
        Err(DbError::Unreachable {
            region: self.region_name(),
            via: self.cfg.via(),
            reason: forward_error.unwrap_or_else(|| err.to_string()),
        })
    }

    /// The parked session if it is recent enough, else a new one: for live reads only (see
    /// [`PgDatabase::spare`]).
    async fn live_session(&self) -> DbResult<PgConnection> {
        let parked = self.spare.lock().ok().and_then(|mut g| g.take());
        match parked {
            Some((at, c)) if at.elapsed() < SPARE_MAX_AGE => Ok(c),
            _ => self.connect("postgres").await,
        }
    }

    /// Keeps `c` for the next live read (replacing an older one).
    fn park(&self, c: PgConnection) {
        if let Ok(mut g) = self.spare.lock() {
            *g = Some((Instant::now(), c));
        }
    }

    /// Polls `check` until it returns Some, or times out naming `what`: every `how.every`, on a
    /// new session each time ([`Look::fresh`]: what a new session sees, such as a reloaded
    /// setting) or on one session kept for the whole wait ([`Look::same`]: live values such as
    /// positions and the recovery state, which need no session of their own; a session that
    /// fails is replaced at the next look).
    async fn poll<T, F>(
        &self,
        what: &str,
        timeout: Duration,
        how: Look,
        mut check: F,
    ) -> DbResult<T>
    where
        F: FnMut(NodeStatus) -> Option<T> + Send,
        T: Send,
    {
        let t0 = Instant::now();
        let deadline = t0 + timeout;
        let mut kept: Option<PgConnection> = None;
        let mut last;
        let mut looks = 0u32;
        loop {
            looks += 1;
            let seen = if how.fresh {
                self.status().await
            } else {
                let c = match kept.take() {
                    Some(c) => Ok(c),
                    None => self.live_session().await,
                };
                match c {
                    Ok(mut c) => {
                        let s = self.status_on(&mut c).await;
                        if s.is_ok() {
                            kept = Some(c);
                        }
                        s
                    }
                    Err(e) => Err(e),
                }
            };
            match seen {
                Ok(s) => {
                    let now = format!("{} on timeline {}", s.role, s.timeline);
                    if let Some(v) = check(s) {
                        tracing::debug!(
                            region = %self.cfg.region,
                            what,
                            looks,
                            ms = ms(t0),
                            "waited"
                        );
                        // Left for the next live read (a promotion after the replay).
                        if let Some(c) = kept {
                            self.park(c);
                        }
                        return Ok(v);
                    }
                    last = Some(now);
                }
                Err(e) => last = Some(e.to_string()),
            }
            if Instant::now() > deadline {
                return Err(DbError::Timeout {
                    region: self.region_name(),
                    what: what.to_string(),
                    waited: timeout,
                    last,
                });
            }
            // Polling interval; the state is read again each time.
            tokio::time::sleep(how.every).await;
        }
    }
}

/// How [`PgDatabase::poll`] looks.
#[derive(Clone, Copy, Debug)]
struct Look {
    fresh: bool,
    every: Duration,
}

impl Look {
    /// A new session per look: for what only a new session shows (a reloaded setting).
    fn fresh(every: Duration) -> Look {
        Look { fresh: true, every }
    }
    /// One session for every look: for live values (positions, recovery).
    fn same(every: Duration) -> Look {
        Look {
            fresh: false,
            every,
        }
    }
}

/// Milliseconds since `t0`, for the debug logs' timings.
fn ms(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64() * 1e3
}

/// The comment on a role whose LOGIN drdctl's fence took away.
const FENCE_MARK: &str =
    "drdctl: fenced (LOGIN taken by the fence; unfence or promotion gives it back)";

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `s` as an SQL string literal.
fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[async_trait]
impl Database for PgDatabase {
    fn region(&self) -> &str {
        &self.cfg.region
    }

    fn via(&self) -> String {
        self.cfg.via()
    }

    async fn wait_until_accepting(
        &self,
        timeout: Duration,
        progress: &Progress<'_>,
    ) -> DbResult<Duration> {
        let t0 = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.connect("postgres").await {
                Ok(c) => {
                    let _ = c.close().await;
                    progress(&WaitProgress::Ready {
                        elapsed: t0.elapsed(),
                    });
                    return Ok(t0.elapsed());
                }
                Err(e @ DbError::Unreachable { .. }) => {
                    let reason = e.to_string();
                    if t0.elapsed() >= timeout {
                        return Err(DbError::Timeout {
                            region: self.region_name(),
                            what: "the database to accept connections".into(),
                            waited: timeout,
                            last: Some(reason),
                        });
                    }
                    progress(&WaitProgress::Waiting {
                        attempt,
                        elapsed: t0.elapsed(),
                        reason,
                    });
                }
                Err(DbError::Sql { source, .. })
                    if source
                        .as_database_error()
                        .and_then(|d| d.code())
                        .is_some_and(|c| c == "57P03") =>
                {
                    // "the database system is starting up": keep waiting.
                    progress(&WaitProgress::Waiting {
                        attempt,
                        elapsed: t0.elapsed(),
                        reason: "the database system is starting up".into(),
                    });
                    if t0.elapsed() >= timeout {
                        return Err(DbError::Timeout {
                            region: self.region_name(),
                            what: "the database to accept connections".into(),
                            waited: timeout,
                            last: Some("the database system is starting up".into()),
                        });
                    }
                }
                // Wrong password, missing secret: waiting will not fix them.
                Err(e) => return Err(e),
            }
            // Retry interval; each attempt is a real connection.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn status(&self) -> DbResult<NodeStatus> {
        let mut c = self.connect("postgres").await?;
        let s = self.status_on(&mut c).await;
        let _ = c.close().await;
        s
    }

    async fn prepare(&self) -> DbResult<()> {
        let fresh = self.spare.lock().ok().is_some_and(|g| {
            g.as_ref()
                .is_some_and(|(at, _)| at.elapsed() < SPARE_MAX_AGE)
        });
        if !fresh {
            let c = self.connect("postgres").await?;
            self.park(c);
        }
        Ok(())
    }

    async fn seal(&self) -> DbResult<()> {
        self.seal_impl().await
    }

    async fn promote(&self, wait: Duration) -> DbResult<PromoteOutcome> {
        self.promote_impl(wait).await
    }

    async fn fence(&self) -> DbResult<FenceOutcome> {
        self.fence_impl().await
    }

    async fn unfence(&self) -> DbResult<()> {
        self.unfence_impl().await
    }

    async fn wait_replayed(&self, target: Lsn, timeout: Duration) -> DbResult<Lsn> {
        // Replay positions are live on any session: one session, looked at every 5 ms.
        self.poll(
            &format!("replay to reach {target}"),
            timeout,
            Look::same(Duration::from_millis(5)),
            |s| s.position().filter(|p| *p >= target),
        )
        .await
    }

    async fn set_desired_role(&self, role: &DesiredRole) -> DbResult<()> {
        self.set_desired_role_impl(role).await
    }

    async fn rejoin(&self, opts: &RejoinOptions) -> DbResult<RejoinOutcome> {
        self.rejoin_impl(opts).await
    }

    async fn init_db(
        &self,
        opts: &InitDbOptions,
        progress: &Progress<'_>,
    ) -> DbResult<InitDbOutcome> {
        self.init_db_impl(opts, progress).await
    }

    async fn schema_versions(&self) -> DbResult<Vec<i32>> {
        let mut c = self.connect(&self.cfg.database).await?;
        self.versions(&mut c)
            .await
            .map_err(self.sql_err("reading schema_version"))
    }
}

impl PgDatabase {
    /// Of `usernames`, those with no row in the application's `users` table: the drill's
    /// check that every write the application acknowledged survived the switchover.
    pub async fn missing_usernames(&self, usernames: &[String]) -> DbResult<Vec<String>> {
        let mut c = self.connect(&self.cfg.database).await?;
        sqlx::query_scalar(
            "SELECT u FROM unnest($1::text[]) AS u \
             WHERE NOT EXISTS (SELECT 1 FROM users WHERE username = u) ORDER BY u",
        )
        .bind(usernames)
        .fetch_all(&mut c)
        .await
        .map_err(self.sql_err("looking up the acknowledged users"))
    }
}

/// What `drdctl practice` asks of its copy of the data: how fresh it is and whether it is
/// cut off from every other server.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CopyProbe {
    /// `pg_is_in_recovery()`.
    pub in_recovery: bool,
    /// `pg_last_xact_replay_timestamp()` as seconds since the epoch: the commit time of the
    /// last transaction replayed (`None`: none replayed since the server started).
    pub last_replayed_commit: Option<f64>,
    /// `primary_conninfo` is set (the server would stream from somewhere).
    pub primary_conninfo_set: bool,
    /// A WAL receiver is running.
    pub wal_receiver: bool,
    /// `now()` on the server, seconds since the epoch.
    pub now: f64,
}

impl PgDatabase {
    /// The freshness and isolation of a copy (see [`CopyProbe`]); read-only.
    pub async fn probe_copy(&self) -> DbResult<CopyProbe> {
        let mut c = self.connect("postgres").await?;
        let row: (bool, Option<f64>, bool, bool, f64) = sqlx::query_as(
            "SELECT pg_is_in_recovery(), \
                    extract(epoch FROM pg_last_xact_replay_timestamp())::float8, \
                    current_setting('primary_conninfo') <> '', \
                    EXISTS (SELECT 1 FROM pg_stat_wal_receiver), \
                    extract(epoch FROM now())::float8",
        )
        .fetch_one(&mut c)
        .await
        .map_err(self.sql_err("reading the copy's replay time"))?;
        let _ = c.close().await;
        Ok(CopyProbe {
            in_recovery: row.0,
            last_replayed_commit: row.1,
            primary_conninfo_set: row.2,
            wal_receiver: row.3,
            now: row.4,
        })
    }
}

/// `file` as given, for reports.
pub(crate) fn display_path(p: &std::path::Path) -> String {
    PathBuf::from(p).display().to_string()
}
