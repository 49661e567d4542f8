//! drd-db: drdctl's view of each region's PostgreSQL.
//!
//! [`Database`] is what the engine and the commands use; [`PgDatabase`] is its one real
//! implementation (sqlx). A region is reached through a port-forward to its `postgresql-0`
//! pod (the default) or a direct URL; the password comes from the region's
//! `postgresql-secret`, the environment, or a value. The Kubernetes side (secret,
//! port-forward, role ConfigMap, pod restart) is the [`PodHost`] trait: drd-db has no
//! Kubernetes client; drdctl implements it with drd-kube.
//!
//! - Read: [`Database::status`]: role, timeline, current/received/replayed LSN, replay paused,
//!   lag in bytes and seconds, replication connections and slots. [`cluster_status`] puts both
//!   regions on one screen (serde for `--output json`, `Display` for people).
//! - Act: [`Database::promote`] (`pg_promote(true, N)`, confirmed by leaving recovery on a new
//!   timeline; a no-op on a primary), [`Database::fence`] / [`Database::unfence`]
//!   (`default_transaction_read_only` + reload + terminating client sessions),
//!   [`Database::rejoin`] (declarative: role ConfigMap to standby, pod restart, start.sh
//!   rewinds or clones; the report says which and how much moved), [`Database::init_db`].
//!
//! Every error ([`DbError`]) names the region and the way it was reached.

mod config;
mod error;
mod host;
mod lsn;
mod pg;
mod rejoin;
mod status;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

pub use config::{Access, PasswordSource, RegionConfig};
pub use error::{DbError, DbResult};
pub use host::{Forward, HostError, PodHost, PodNames};
pub use lsn::{BadLsn, Lsn};
pub use pg::{CopyProbe, PgDatabase};
pub use rejoin::{RejoinMethod, RejoinOutcome};
pub use status::{
    human_bytes, ClusterStatus, DbRole, Lag, NodeStatus, RegionStatus, ReplicationConnection, Slot,
    WalReceiver,
};

/// Progress of waiting for a database to accept connections.
#[derive(Debug, Clone)]
pub enum WaitProgress {
    /// Not yet: attempt `attempt` failed for `reason`.
    Waiting {
        /// 1, 2, ...
        attempt: u32,
        /// Since the wait began.
        elapsed: Duration,
        /// Why the last attempt failed.
        reason: String,
    },
    /// Accepting connections.
    Ready {
        /// How long it took.
        elapsed: Duration,
    },
}

/// A progress callback (`&|p: &WaitProgress| ...`).
pub type Progress<'a> = dyn Fn(&WaitProgress) + Send + Sync + 'a;

/// A progress callback that ignores progress.
pub fn no_progress(_: &WaitProgress) {}

/// What `init-db` does.
#[derive(Debug, Clone)]
pub struct InitDbOptions {
    /// The schema file (`init-db.sql`), applied in one transaction.
    pub file: PathBuf,
    /// How long to wait for the database to accept connections.
    pub wait: Duration,
    /// Apply in a transaction and roll back: reports what would happen, changes nothing.
    pub dry_run: bool,
    /// Create this physical replication slot for the other region if missing (`dr_slot`).
    pub create_slot: Option<String>,
    /// Create the objects as this role (the application's user, `appuser`), so the services
    /// own their tables; skipped when the role does not exist.
    pub owner: Option<String>,
}

impl InitDbOptions {
    /// Apply `file`, waiting up to 60 s, objects owned by `appuser`, no slot.
    pub fn new(file: impl Into<PathBuf>) -> Self {
        InitDbOptions {
            file: file.into(),
            wait: Duration::from_secs(60),
            dry_run: false,
            create_slot: None,
            owner: Some("appuser".into()),
        }
    }
}

/// The replication slot part of init-db and promote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotOutcome {
    /// Created now.
    Created(String),
    /// Was there already.
    Exists(String),
    /// Dry run: would be created.
    WouldCreate(String),
}

/// What `init-db` did.
#[derive(Debug, Clone, Serialize)]
pub struct InitDbOutcome {
    /// The region.
    pub region: String,
    /// The database.
    pub database: String,
    /// The file applied.
    pub file: PathBuf,
    /// Nothing was committed on purpose.
    pub dry_run: bool,
    /// The file recorded no new schema version: it was already applied, and the transaction
    /// was rolled back (nothing changed).
    pub already_applied: bool,
    /// `schema_version` before.
    pub versions_before: Vec<i32>,
    /// `schema_version` after applying (committed unless dry run or already applied).
    pub versions_after: Vec<i32>,
    /// The role the objects were created as.
    pub owner: Option<String>,
    /// The replication slot, when asked for.
    pub slot: Option<SlotOutcome>,
    /// How long the database took to accept connections.
    #[serde(serialize_with = "secs")]
    pub waited: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn versions(v: &[i32]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.iter().map(i32::to_string).collect::<Vec<_>>().join(", ")
    }
}

impl fmt::Display for InitDbOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = pg::display_path(&self.file);
        let target = format!("region {} database {}", self.region, self.database);
        match (self.dry_run, self.already_applied) {
            (_, true) => write!(
                f,
                "{file} is already applied on {target} (schema version {}): nothing changed",
                versions(&self.versions_after)
            )?,
            (true, false) => write!(
                f,
                "dry run: {file} applies cleanly on {target}; schema version would go from {} to {} (rolled back, nothing changed)",
                versions(&self.versions_before),
                versions(&self.versions_after)
            )?,
            (false, false) => write!(
                f,
                "applied {file} on {target}: schema version {} -> {}",
                versions(&self.versions_before),
                versions(&self.versions_after)
            )?,
        }
        match &self.slot {
            Some(SlotOutcome::Created(s)) => write!(f, "; created replication slot {s}"),
            Some(SlotOutcome::Exists(s)) => write!(f, "; replication slot {s} exists"),
            Some(SlotOutcome::WouldCreate(s)) => write!(f, "; would create replication slot {s}"),
            None => Ok(()),
        }
    }
}

/// What `promote` did.
#[derive(Debug, Clone, Serialize)]
pub struct PromoteOutcome {
    /// The region.
    pub region: String,
    /// It was a primary already: nothing was done.
    pub already_primary: bool,
    /// Timeline before.
    pub timeline_before: u32,
    /// Timeline after (before + 1 on a promotion).
    pub timeline_after: u32,
    /// WAL position right after.
    pub lsn: Option<Lsn>,
    /// The slot kept for the former primary's rejoin.
    pub slot: Option<SlotOutcome>,
    /// A fence inherited from the former primary's configuration was lifted.
    pub unfenced: bool,
    /// Wall time.
    #[serde(serialize_with = "secs")]
    pub elapsed: Duration,
}

/// What `fence` did.
#[derive(Debug, Clone, Serialize)]
pub struct FenceOutcome {
    /// The region.
    pub region: String,
    /// The fence was already in place.
    pub already_fenced: bool,
    /// Client sessions terminated (they reconnect read-only).
    pub sessions_terminated: u64,
}

/// The role the region's `postgresql-role` ConfigMap asks for (read by start.sh at the next
/// pod start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DesiredRole {
    /// Primary (after a promotion, so that a pod restart stays primary).
    Primary,
    /// Never to start writable again (start.sh refuses to start) until it is rejoined: the
    /// role an old primary gets when a failover stops it.
    Fenced,
    /// Standby of this primary endpoint.
    Standby {
        /// The primary's replication endpoint.
        primary_host: String,
        /// Its port.
        primary_port: u16,
    },
}

/// How to rejoin.
#[derive(Debug, Clone)]
pub struct RejoinOptions {
    /// The new primary's replication endpoint; default: the ConfigMap's `peer_host`.
    pub primary_host: Option<String>,
    /// Its port; default: the ConfigMap's `peer_port`.
    pub primary_port: Option<u16>,
    /// Limit for the whole rejoin (a fallback base backup of a big database takes long).
    pub timeout: Duration,
    /// The former primary's last WAL position as last seen (e.g. before it went down), to
    /// report the discarded divergence when it cannot be read now.
    pub last_known_lsn: Option<Lsn>,
}

impl Default for RejoinOptions {
    fn default() -> Self {
        RejoinOptions {
            primary_host: None,
            primary_port: None,
            timeout: Duration::from_secs(600),
            last_known_lsn: None,
        }
    }
}

/// One region's PostgreSQL, as drdctl sees and drives it.
#[async_trait]
pub trait Database: Send + Sync {
    /// The region's name.
    fn region(&self) -> &str;

    /// How it is reached (for messages).
    fn via(&self) -> String;

    /// Waits until the server accepts connections, reporting each attempt; fails at once on
    /// errors waiting cannot fix (wrong password, missing secret).
    async fn wait_until_accepting(
        &self,
        timeout: Duration,
        progress: &Progress<'_>,
    ) -> DbResult<Duration>;

    /// Role, timeline, LSNs, lag, replication and slots.
    async fn status(&self) -> DbResult<NodeStatus>;

    /// Opens a session ahead of the next [`Database::wait_replayed`] or [`Database::promote`],
    /// while something else is being waited for (each session through a port-forward costs a
    /// round of connection and authentication). Best effort: those open their own when there is
    /// none. The default does nothing.
    async fn prepare(&self) -> DbResult<()> {
        Ok(())
    }

    /// Promotes a standby (`pg_promote(true, wait)`), confirms it left recovery on a new
    /// timeline, lifts an inherited fence, and creates the slot for the former primary. A
    /// no-op on a primary. Set the ConfigMap too ([`Database::set_desired_role`]).
    async fn promote(&self, wait: Duration) -> DbResult<PromoteOutcome>;

    /// Refuses writes: `default_transaction_read_only = on` for new sessions (ALTER SYSTEM +
    /// reload), then terminates client sessions. Not a hard fence (a session can override
    /// it): stop the pod for that.
    async fn fence(&self) -> DbResult<FenceOutcome>;

    /// Lifts the fence.
    async fn unfence(&self) -> DbResult<()>;

    /// Seals a standby for promotion: its WAL receiver stops (`primary_conninfo` emptied, set
    /// back by start.sh at its next start), so it stops following the old primary, and its
    /// guard stops vouching for the old primary's term. Waits until the receiver is gone.
    /// A no-op on a primary.
    async fn seal(&self) -> DbResult<()>;

    /// Waits until this node's position (replayed on a standby, current on a primary) reaches
    /// `target`; returns the position seen.
    async fn wait_replayed(&self, target: Lsn, timeout: Duration) -> DbResult<Lsn>;

    /// Writes the role ConfigMap (takes effect at the next pod start).
    async fn set_desired_role(&self, role: &DesiredRole) -> DbResult<()>;

    /// Makes this region (a former primary) a standby of the new primary, declaratively: the
    /// role ConfigMap says standby, the pod restarts, start.sh rewinds (or clones when rewind
    /// is impossible); confirmed by streaming. Reports the method, the bytes moved and the
    /// discarded divergence.
    async fn rejoin(&self, opts: &RejoinOptions) -> DbResult<RejoinOutcome>;

    /// The schema versions recorded in the application database's `schema_version` table
    /// (empty before init-db).
    async fn schema_versions(&self) -> DbResult<Vec<i32>>;

    /// Applies the schema file on the primary in one transaction (refused on a standby); a
    /// second run finds it applied and changes nothing.
    async fn init_db(
        &self,
        opts: &InitDbOptions,
        progress: &Progress<'_>,
    ) -> DbResult<InitDbOutcome>;
}

/// Observes every region concurrently; unreachable regions are reported, not fatal.
pub async fn cluster_status(dbs: &[&dyn Database]) -> ClusterStatus {
    let observed = futures_util::future::join_all(dbs.iter().map(|db| async move {
        let status = db.status().await;
        RegionStatus {
            region: db.region().to_string(),
            via: db.via(),
            error: status.as_ref().err().map(ToString::to_string),
            database: status.ok(),
        }
    }))
    .await;
    ClusterStatus::from_regions(observed)
}
