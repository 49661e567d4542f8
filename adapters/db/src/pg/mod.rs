//! [`PgDatabase`], the one real [`Database`]: sqlx against the region's PostgreSQL, reached
//! through kube port-forward or a URL. Each operation opens its own connection (no pool: an
//! operator tool makes few calls, and a fresh session sees reloaded settings such as the fence).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow};
use sqlx::{Connection, Row};

use crate::config::{Access, PasswordSource, RegionConfig};
use crate::error::{DbError, DbResult};
use crate::kube::{self as k, Bridge};
use crate::lsn::{self, Lsn};
use crate::rejoin::{parse_log, RejoinMethod, RejoinOutcome};
use crate::status::{DbRole, Lag, NodeStatus, ReplicationConnection, Slot, WalReceiver};
use crate::{
    Database, DesiredRole, FenceOutcome, InitDbOptions, InitDbOutcome, Progress, PromoteOutcome,
    RejoinOptions, SlotOutcome, WaitProgress,
};

/// A region's PostgreSQL through sqlx.
pub struct PgDatabase {
    cfg: RegionConfig,
    bridge: tokio::sync::OnceCell<Bridge>,
    password: tokio::sync::OnceCell<Option<SecretString>>,
}

impl std::fmt::Debug for PgDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgDatabase")
            .field("region", &self.cfg.region)
            .field("via", &self.cfg.via())
            .finish()
    }
}

const STATUS_SQL: &str = "SELECT
    pg_is_in_recovery() AS in_recovery,
    (SELECT system_identifier::text FROM pg_control_system()) AS system_id,
    current_setting('server_version') AS server_version,
    current_setting('default_transaction_read_only') AS read_only,
    CASE WHEN NOT pg_is_in_recovery() THEN pg_current_wal_lsn()::text END AS current_lsn,
    CASE WHEN NOT pg_is_in_recovery()
         THEN ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END AS wal_tli,
    CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn()::text END AS receive_lsn,
    CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()::text END AS replay_lsn,
    CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() END AS replay_paused,
    CASE WHEN pg_is_in_recovery()
         THEN EXTRACT(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 END AS replay_age,
    (SELECT timeline_id FROM pg_control_checkpoint()) AS checkpoint_tli,
    (SELECT received_tli FROM pg_stat_wal_receiver) AS receiver_tli,
    (SELECT status FROM pg_stat_wal_receiver) AS receiver_status,
    (SELECT sender_host || ':' || sender_port FROM pg_stat_wal_receiver) AS receiver_sender";

const REPLICATION_SQL: &str = "SELECT application_name, client_addr::text AS client_addr, state,
    sent_lsn::text AS sent_lsn, flush_lsn::text AS flush_lsn, replay_lsn::text AS replay_lsn,
    sync_state, EXTRACT(epoch FROM replay_lag)::float8 AS replay_lag
    FROM pg_stat_replication ORDER BY application_name";

const SLOTS_SQL: &str = "SELECT slot_name::text AS slot_name, slot_type, active,
    restart_lsn::text AS restart_lsn, wal_status FROM pg_replication_slots ORDER BY slot_name";

impl PgDatabase {
    /// An adapter for one region; nothing is contacted until the first call.
    pub fn new(cfg: RegionConfig) -> Self {
        PgDatabase {
            cfg,
            bridge: tokio::sync::OnceCell::new(),
            password: tokio::sync::OnceCell::new(),
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

    fn kube(&self, what: &str) -> DbResult<&crate::config::KubeTarget> {
        self.cfg.kube.as_ref().ok_or_else(|| DbError::NeedsKube {
            region: self.region_name(),
            what: what.to_string(),
        })
    }

    fn password_hint(&self) -> String {
        match (&self.cfg.password, &self.cfg.kube) {
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
                        let v =
                            k::secret_value(&self.cfg.region, kube, &self.secret_keys()).await?;
                        Ok(Some(SecretString::from(v)))
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
                    .get_or_try_init(|| Bridge::start(kube))
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
        let opts = self.connect_options(db).await?;
        let attempt =
            tokio::time::timeout(self.cfg.connect_timeout, PgConnection::connect_with(&opts)).await;
        let err = match attempt {
            Ok(Ok(c)) => return Ok(c),
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

    async fn status_on(&self, c: &mut PgConnection) -> DbResult<NodeStatus> {
        let row: PgRow = sqlx::query(STATUS_SQL)
            .fetch_one(&mut *c)
            .await
            .map_err(self.sql_err("reading the server's state"))?;
        let get_s = |n: &str| row.try_get::<Option<String>, _>(n).ok().flatten();
        let in_recovery: bool = row.try_get("in_recovery").unwrap_or(false);
        let role = if in_recovery {
            DbRole::Standby
        } else {
            DbRole::Primary
        };
        let tli = |n: &str| row.try_get::<Option<i32>, _>(n).ok().flatten();
        let timeline = match role {
            DbRole::Primary => tli("wal_tli"),
            DbRole::Standby => tli("receiver_tli"),
        }
        .or_else(|| tli("checkpoint_tli"))
        .unwrap_or_default() as u32;
        let receive_lsn = lsn::opt(get_s("receive_lsn"));
        let replay_lsn = lsn::opt(get_s("replay_lsn"));
        let replay_age = row.try_get::<Option<f64>, _>("replay_age").ok().flatten();
        let local_lag = match (receive_lsn, replay_lsn) {
            (Some(rcv), Some(rep)) => {
                let bytes = rcv.bytes_since(rep);
                Some(Lag {
                    bytes,
                    seconds: if bytes == 0 {
                        0.0
                    } else {
                        replay_age.unwrap_or(0.0).max(0.0)
                    },
                })
            }
            _ => None,
        };
        let wal_receiver = get_s("receiver_status").map(|status| WalReceiver {
            status,
            sender: get_s("receiver_sender"),
        });
        let current_lsn = lsn::opt(get_s("current_lsn"));
        let mut status = NodeStatus {
            region: self.region_name(),
            role,
            timeline,
            system_identifier: get_s("system_id").unwrap_or_default(),
            server_version: get_s("server_version").unwrap_or_default(),
            current_lsn,
            receive_lsn,
            replay_lsn,
            replay_paused: row
                .try_get::<Option<bool>, _>("replay_paused")
                .ok()
                .flatten(),
            local_lag,
            wal_receiver,
            fenced: get_s("read_only").as_deref() == Some("on"),
            replication: Vec::new(),
            slots: Vec::new(),
        };
        if role == DbRole::Primary {
            let rows = sqlx::query(REPLICATION_SQL)
                .fetch_all(&mut *c)
                .await
                .map_err(self.sql_err("reading pg_stat_replication"))?;
            status.replication = rows
                .iter()
                .map(|r| {
                    let s = |n: &str| r.try_get::<Option<String>, _>(n).ok().flatten();
                    let replay = lsn::opt(s("replay_lsn"));
                    ReplicationConnection {
                        application_name: s("application_name").unwrap_or_default(),
                        client_addr: s("client_addr"),
                        state: s("state").unwrap_or_default(),
                        sent_lsn: lsn::opt(s("sent_lsn")),
                        flush_lsn: lsn::opt(s("flush_lsn")),
                        replay_lsn: replay,
                        sync_state: s("sync_state").unwrap_or_default(),
                        lag_bytes: current_lsn.zip(replay).map(|(c, r)| c.bytes_since(r)),
                        replay_lag_seconds: r
                            .try_get::<Option<f64>, _>("replay_lag")
                            .ok()
                            .flatten(),
                    }
                })
                .collect();
        }
        let rows = sqlx::query(SLOTS_SQL)
            .fetch_all(&mut *c)
            .await
            .map_err(self.sql_err("reading pg_replication_slots"))?;
        let position = current_lsn.or(replay_lsn);
        status.slots = rows
            .iter()
            .map(|r| {
                let s = |n: &str| r.try_get::<Option<String>, _>(n).ok().flatten();
                let restart = lsn::opt(s("restart_lsn"));
                Slot {
                    name: s("slot_name").unwrap_or_default(),
                    slot_type: s("slot_type").unwrap_or_default(),
                    active: r.try_get("active").unwrap_or(false),
                    restart_lsn: restart,
                    wal_status: s("wal_status"),
                    retained_bytes: position.zip(restart).map(|(p, r)| p.bytes_since(r)),
                }
            })
            .collect();
        Ok(status)
    }

    /// Polls `check` on fresh sessions until it returns Some, or times out naming `what`.
    async fn poll<T, F>(&self, what: &str, timeout: Duration, mut check: F) -> DbResult<T>
    where
        F: FnMut(NodeStatus) -> Option<T> + Send,
        T: Send,
    {
        let deadline = Instant::now() + timeout;
        let mut last;
        loop {
            match self.status().await {
                Ok(s) => {
                    let seen = format!("{} on timeline {}", s.role, s.timeline);
                    if let Some(v) = check(s) {
                        return Ok(v);
                    }
                    last = Some(seen);
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
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn ensure_slot(
        &self,
        c: &mut PgConnection,
        name: &str,
        dry_run: bool,
    ) -> DbResult<SlotOutcome> {
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
        )
        .bind(name)
        .fetch_one(&mut *c)
        .await
        .map_err(self.sql_err("reading pg_replication_slots"))?;
        if exists {
            return Ok(SlotOutcome::Exists(name.to_string()));
        }
        if dry_run {
            return Ok(SlotOutcome::WouldCreate(name.to_string()));
        }
        sqlx::query("SELECT pg_create_physical_replication_slot($1, true)")
            .bind(name)
            .execute(&mut *c)
            .await
            .map_err(self.sql_err(&format!("creating replication slot {name}")))?;
        Ok(SlotOutcome::Created(name.to_string()))
    }

    async fn set_read_only(&self, on: bool) -> DbResult<()> {
        let mut c = self.connect("postgres").await?;
        let done = self.set_read_only_on(&mut c, on).await;
        let _ = c.close().await;
        done
    }

    /// The half of the fence that holds against a session's own `SET transaction_read_only =
    /// off` (which `default_transaction_read_only` does not): every login role that is neither
    /// a superuser nor a replication role loses LOGIN, marked so that only drdctl's unfence or
    /// promotion gives it back. Returns the roles it fenced.
    async fn deny_logins(&self, c: &mut PgConnection) -> DbResult<Vec<String>> {
        // This session may already default to read-only (the fence's other half, reloaded):
        // the operator's own session lifts that for itself.
        sqlx::query("SET default_transaction_read_only = off")
            .execute(&mut *c)
            .await
            .map_err(self.sql_err("SET default_transaction_read_only"))?;
        let roles: Vec<String> = sqlx::query_scalar(
            "SELECT rolname FROM pg_roles
             WHERE rolcanlogin AND NOT rolsuper AND NOT rolreplication AND rolname !~ '^pg_'",
        )
        .fetch_all(&mut *c)
        .await
        .map_err(self.sql_err("listing the login roles to fence"))?;
        for r in &roles {
            let q = quote_ident(r);
            sqlx::query(&format!("ALTER ROLE {q} NOLOGIN"))
                .execute(&mut *c)
                .await
                .map_err(self.sql_err("ALTER ROLE ... NOLOGIN"))?;
            sqlx::query(&format!("COMMENT ON ROLE {q} IS '{FENCE_MARK}'"))
                .execute(&mut *c)
                .await
                .map_err(self.sql_err("marking a fenced role"))?;
        }
        Ok(roles)
    }

    /// Gives LOGIN back to the roles [`Self::deny_logins`] fenced. Role changes replicate, so a
    /// promoted standby inherits them from its fenced primary: promotion calls this too.
    async fn restore_logins(&self, c: &mut PgConnection) -> DbResult<u64> {
        // This session may already default to read-only (the fence's other half, reloaded):
        // the operator's own session lifts that for itself.
        sqlx::query("SET default_transaction_read_only = off")
            .execute(&mut *c)
            .await
            .map_err(self.sql_err("SET default_transaction_read_only"))?;
        let roles: Vec<String> = sqlx::query_scalar(
            "SELECT r.rolname FROM pg_roles r
             JOIN pg_shdescription d ON d.objoid = r.oid AND d.classoid = 'pg_authid'::regclass
             WHERE d.description = $1",
        )
        .bind(FENCE_MARK)
        .fetch_all(&mut *c)
        .await
        .map_err(self.sql_err("listing the fenced roles"))?;
        for r in &roles {
            let q = quote_ident(r);
            sqlx::query(&format!("ALTER ROLE {q} LOGIN"))
                .execute(&mut *c)
                .await
                .map_err(self.sql_err("ALTER ROLE ... LOGIN"))?;
            sqlx::query(&format!("COMMENT ON ROLE {q} IS NULL"))
                .execute(&mut *c)
                .await
                .map_err(self.sql_err("unmarking a fenced role"))?;
        }
        Ok(roles.len() as u64)
    }

    /// [`Self::set_read_only`] on an open session (the check still uses new sessions).
    async fn set_read_only_on(&self, c: &mut PgConnection, on: bool) -> DbResult<()> {
        let sql = if on {
            "ALTER SYSTEM SET default_transaction_read_only = on"
        } else {
            "ALTER SYSTEM RESET default_transaction_read_only"
        };
        sqlx::query(sql)
            .execute(&mut *c)
            .await
            .map_err(self.sql_err("changing default_transaction_read_only"))?;
        sqlx::query("SELECT pg_reload_conf()")
            .execute(&mut *c)
            .await
            .map_err(self.sql_err("reloading the configuration"))?;
        let what = if on {
            "the fence to apply to new sessions"
        } else {
            "the fence to lift"
        };
        // The reload is asynchronous: wait until a new session sees the setting.
        self.poll(what, Duration::from_secs(30), |s| {
            (s.fenced == on).then_some(())
        })
        .await
    }

    async fn versions(&self, c: &mut PgConnection) -> Result<Vec<i32>, sqlx::Error> {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('schema_version') IS NOT NULL")
            .fetch_one(&mut *c)
            .await?;
        if !exists {
            return Ok(Vec::new());
        }
        sqlx::query_scalar(
            "SELECT coalesce(array_agg(version ORDER BY version), '{}') FROM schema_version",
        )
        .fetch_one(&mut *c)
        .await
    }
}

impl PgDatabase {
    async fn init_db_impl(
        &self,
        opts: &InitDbOptions,
        progress: &Progress<'_>,
    ) -> DbResult<InitDbOutcome> {
        let sql = std::fs::read_to_string(&opts.file).map_err(|source| DbError::File {
            path: opts.file.clone(),
            source,
        })?;
        let waited = self.wait_until_accepting(opts.wait, progress).await?;
        let mut c = self.connect(&self.cfg.database).await?;
        let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
            .fetch_one(&mut c)
            .await
            .map_err(self.sql_err("checking the role"))?;
        if in_recovery {
            return Err(DbError::IsStandby {
                region: self.region_name(),
                primary_hint: self.cfg.peer_region.clone(),
            });
        }
        let apply_err = || apply_error(self.region_name(), opts.file.clone());
        let owner = match &opts.owner {
            Some(o) => {
                let exists: bool =
                    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
                        .bind(o)
                        .fetch_one(&mut c)
                        .await
                        .map_err(self.sql_err("looking up the owner role"))?;
                exists.then(|| o.clone())
            }
            None => None,
        };
        let mut tx = c.begin().await.map_err(apply_err())?;
        let versions_before = self.versions(&mut tx).await.map_err(apply_err())?;
        if let Some(o) = &owner {
            sqlx::query(&format!("SET LOCAL ROLE {}", quote_ident(o)))
                .execute(&mut *tx)
                .await
                .map_err(apply_err())?;
        }
        // A plain string is sent with the simple query protocol: many statements, one round trip.
        sqlx::Executor::execute(&mut *tx, sql.as_str())
            .await
            .map_err(apply_err())?;
        sqlx::query("RESET ROLE")
            .execute(&mut *tx)
            .await
            .map_err(apply_err())?;
        let versions_after = self.versions(&mut tx).await.map_err(apply_err())?;
        let already_applied = !versions_before.is_empty() && versions_after == versions_before;
        if opts.dry_run || already_applied {
            tx.rollback().await.map_err(apply_err())?;
        } else {
            tx.commit().await.map_err(apply_err())?;
        }
        let slot = match &opts.create_slot {
            Some(name) => Some(self.ensure_slot(&mut c, name, opts.dry_run).await?),
            None => None,
        };
        let _ = c.close().await;
        Ok(InitDbOutcome {
            region: self.region_name(),
            database: self.cfg.database.clone(),
            file: opts.file.clone(),
            dry_run: opts.dry_run,
            already_applied,
            versions_before,
            versions_after,
            owner,
            slot,
            waited,
        })
    }
}

fn apply_error(region: String, path: PathBuf) -> impl FnOnce(sqlx::Error) -> DbError {
    move |source| DbError::Apply {
        region,
        path,
        source,
    }
}

/// The comment on a role whose LOGIN drdctl's fence took away.
const FENCE_MARK: &str =
    "drdctl: fenced (LOGIN taken by the fence; unfence or promotion gives it back)";

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
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

    async fn promote(&self, wait: Duration) -> DbResult<PromoteOutcome> {
        let t0 = Instant::now();
        // One session for the whole promotion: a session opened during recovery sees the end
        // of recovery and can write afterwards, and each new session costs a round of
        // authentication (through port-forward, by default).
        let mut c = self.connect("postgres").await?;
        let before = self.status_on(&mut c).await?;
        if before.role == DbRole::Primary {
            // A primary that is not fenced is the promoted one: logins it inherited fenced
            // (a run killed right after pg_promote) come back. A fenced one stays fenced.
            if !before.fenced {
                self.restore_logins(&mut c).await?;
            }
            let _ = c.close().await;
            return Ok(PromoteOutcome {
                region: self.region_name(),
                already_primary: true,
                timeline_before: before.timeline,
                timeline_after: before.timeline,
                lsn: before.current_lsn,
                slot: None,
                unfenced: false,
                elapsed: t0.elapsed(),
            });
        }
        // Signal only (wait => false): pg_promote's own wait looks ten times a second; this
        // looks every 10 ms, and it is the write outage that waits.
        let signalled: bool = sqlx::query_scalar("SELECT pg_promote(false)")
            .fetch_one(&mut c)
            .await
            .map_err(self.sql_err("pg_promote"))?;
        if !signalled {
            tracing::warn!(region = %self.cfg.region, "pg_promote could not signal; checking the state");
        }
        let deadline = Instant::now() + wait;
        let mut last_seen: String;
        let after = loop {
            match self.status_on(&mut c).await {
                Ok(s) if s.role == DbRole::Primary => break s,
                Ok(s) => last_seen = format!("still {}", s.role),
                // Promotion was asked for: a failed look is not a failed promotion. Look again,
                // on a new session (the old one may be gone), until the deadline.
                Err(e) => {
                    last_seen = e.to_string();
                    if let Ok(fresh) = self.connect("postgres").await {
                        c = fresh;
                    }
                }
            }
            if Instant::now() > deadline {
                let _ = c.close().await;
                return Err(DbError::Promote {
                    region: self.region_name(),
                    reason: format!(
                        "pg_promote {}, but the server was not seen as a primary within {}s (last: {}); it may still be promoting: look with `drdctl status` and re-run the same command, which promotes only if it is still a standby",
                        if signalled { "was signalled" } else { "could not signal" },
                        wait.as_secs(),
                        last_seen
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        if after.timeline <= before.timeline {
            return Err(DbError::Promote {
                region: self.region_name(),
                reason: format!(
                    "the server left recovery but stayed on timeline {} (was {}): it was not promoted by pg_promote",
                    after.timeline, before.timeline
                ),
            });
        }
        // A fence copied from a former primary (postgresql.auto.conf travels with base
        // backups) must not make the new primary read-only.
        let unfenced = after.fenced;
        if unfenced {
            self.set_read_only(false).await?;
        }
        // The role half of the fence replicated from the old primary: lift it here.
        self.restore_logins(&mut c).await?;
        // Keep WAL from the fork on for the former primary, so that it can rejoin by rewind.
        let slot = self.ensure_slot(&mut c, &self.cfg.slot, false).await?;
        let _ = c.close().await;
        Ok(PromoteOutcome {
            region: self.region_name(),
            already_primary: false,
            timeline_before: before.timeline,
            timeline_after: after.timeline,
            lsn: after.current_lsn,
            slot: Some(slot),
            unfenced,
            elapsed: t0.elapsed(),
        })
    }

    async fn fence(&self) -> DbResult<FenceOutcome> {
        let mut c = self.connect("postgres").await?;
        let before = self.status_on(&mut c).await?;
        if !before.fenced {
            self.set_read_only_on(&mut c, true).await?;
        }
        // Then no application role can log in (that holds even against a session's own
        // `SET transaction_read_only = off`), then every client session ends (waiting up to
        // 5 s for each to exit, so an open transaction cannot commit afterwards).
        self.deny_logins(&mut c).await?;
        let terminated: i64 = sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) FROM pg_stat_activity
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut c)
        .await
        .map_err(self.sql_err("terminating application sessions"))?;
        let _ = c.close().await;
        Ok(FenceOutcome {
            region: self.region_name(),
            already_fenced: before.fenced,
            sessions_terminated: terminated.max(0) as u64,
        })
    }

    async fn unfence(&self) -> DbResult<()> {
        let mut c = self.connect("postgres").await?;
        let done = async {
            self.restore_logins(&mut c).await?;
            self.set_read_only_on(&mut c, false).await
        }
        .await;
        let _ = c.close().await;
        done
    }

    async fn wait_replayed(&self, target: Lsn, timeout: Duration) -> DbResult<Lsn> {
        self.poll(&format!("replay to reach {target}"), timeout, |s| {
            s.position().filter(|p| *p >= target)
        })
        .await
    }

    async fn set_desired_role(&self, role: &DesiredRole) -> DbResult<()> {
        let kube = self.kube("setting the desired role")?;
        let mut data = BTreeMap::new();
        match role {
            DesiredRole::Primary => {
                data.insert("role".to_string(), "primary".to_string());
                data.insert("primary_host".to_string(), String::new());
            }
            DesiredRole::Fenced => {
                data.insert("role".to_string(), "fenced".to_string());
            }
            DesiredRole::Standby {
                primary_host,
                primary_port,
            } => {
                data.insert("role".to_string(), "standby".to_string());
                data.insert("primary_host".to_string(), primary_host.clone());
                data.insert("primary_port".to_string(), primary_port.to_string());
            }
        }
        k::patch_role_config(&self.cfg.region, kube, &data).await
    }

    async fn rejoin(&self, opts: &RejoinOptions) -> DbResult<RejoinOutcome> {
        let t0 = Instant::now();
        let kube = self.kube("rejoin (ConfigMap and pod restart)")?.clone();
        let cm = k::role_config(&self.cfg.region, &kube).await?;
        let host = opts
            .primary_host
            .clone()
            .or_else(|| cm.get("peer_host").cloned().filter(|h| !h.is_empty()))
            .ok_or_else(|| DbError::Rejoin {
                region: self.region_name(),
                reason: format!(
                    "no primary to follow: pass one, or set peer_host in configmap {}",
                    kube.role_config_map
                ),
                log: String::new(),
            })?;
        let port = opts
            .primary_port
            .or_else(|| cm.get("peer_port").and_then(|p| p.parse().ok()))
            .unwrap_or(5432);
        let primary = format!("{host}:{port}");
        // Observe first: already a standby of that primary, configured so, means nothing to do.
        let mut old_end = opts.last_known_lsn;
        match self.status().await {
            Ok(s)
                if s.role == DbRole::Standby
                    && cm.get("role").map(String::as_str) == Some("standby")
                    && cm.get("primary_host") == Some(&host) =>
            {
                return Ok(RejoinOutcome {
                    region: self.region_name(),
                    primary,
                    method: RejoinMethod::AlreadyStandby,
                    diverged_at: None,
                    bytes_copied: Some(0),
                    old_end_lsn: None,
                    discarded_bytes: None,
                    script_seconds: None,
                    elapsed: t0.elapsed(),
                    log: Vec::new(),
                });
            }
            Ok(s) if s.role == DbRole::Primary => {
                old_end = old_end.max(s.current_lsn);
            }
            _ => {}
        }
        self.set_desired_role(&DesiredRole::Standby {
            primary_host: host.clone(),
            primary_port: port,
        })
        .await?;
        let log = k::restart_pod(&self.cfg.region, &kube, opts.timeout).await?;
        let parsed = parse_log(&log);
        let method = parsed.method.clone().ok_or_else(|| DbError::Rejoin {
            region: self.region_name(),
            reason: "the pod restarted but its log names no rejoin path".into(),
            log: k::tail(&log, 30),
        })?;
        // Streaming from the new primary is the proof.
        let remaining = opts
            .timeout
            .saturating_sub(t0.elapsed())
            .max(Duration::from_secs(5));
        self.poll("the rejoined standby to stream", remaining, |s| {
            (s.role == DbRole::Standby
                && s.wal_receiver
                    .as_ref()
                    .is_some_and(|w| w.status == "streaming"))
            .then_some(())
        })
        .await
        .map_err(|e| DbError::Rejoin {
            region: self.region_name(),
            reason: e.to_string(),
            log: k::tail(&log, 30),
        })?;
        let discarded = match (&method, old_end, parsed.diverged_at) {
            (RejoinMethod::Rewind | RejoinMethod::BaseBackup { .. }, Some(end), Some(fork)) => {
                Some(end.bytes_since(fork))
            }
            _ => None,
        };
        Ok(RejoinOutcome {
            region: self.region_name(),
            primary,
            method,
            diverged_at: parsed.diverged_at,
            bytes_copied: parsed.bytes_copied,
            old_end_lsn: old_end,
            discarded_bytes: discarded,
            script_seconds: parsed.seconds,
            elapsed: t0.elapsed(),
            log: parsed.lines,
        })
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

/// `file` as given, for reports.
pub(crate) fn display_path(p: &std::path::Path) -> String {
    PathBuf::from(p).display().to_string()
}
