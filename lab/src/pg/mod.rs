//! The lab's PostgreSQL: a real PostgreSQL 15 primary and streaming standby, one per region,
//! each on its own loopback address, each started by the very script the StatefulSet runs
//! (`manifests/base/postgresql/start.sh`), so init, clone, promote and rewind-rejoin are the
//! production code paths.
//!
//! - [`PgNode`]: one region's "pod": a volume directory, the role ConfigMap as files, start
//!   (script until ready), stop (fast), kill (SIGKILL), restart, psql over the socket.
//! - [`PgPair`]: both regions, primary then a clone streaming from it.
//! - [`PgPodRuntime`]: plugs a node into the Kubernetes double, so the region's `postgresql`
//!   StatefulSet pod runs it: the role comes from the `postgresql-role` ConfigMap and the
//!   passwords from `postgresql-secret` at each pod start, port-forward to `postgresql-0:5432`
//!   reaches the node, and `pods/postgresql-0/log` is the script's output.
//!
//! As root (CI), everything runs as the `postgres` user (created when absent): PostgreSQL
//! refuses root. Watchdogs remove processes and files when the test process ends, however.

pub mod fork;
pub(crate) mod node;
mod pair;
mod runtime;
mod watchdog;

pub use node::{
    default_pg_bin, default_start_script, free_port, Passwords, PgNode, PgNodeConfig, Role,
    RoleFiles, SharedNode, StartReport,
};
pub use pair::{PgPair, PgPairConfig};
pub use runtime::{is_practice_namespace, PgPodRuntime, POSTGRESQL_POD_PORT, PRACTICE_LABEL};

/// What can go wrong running the lab's PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The machine lacks something (binaries, the postgres user, a writable temp dir).
    #[error("lab PostgreSQL setup: {0}")]
    Setup(String),
    /// A file or process operation failed.
    #[error("lab PostgreSQL: {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// start.sh exited before the node was ready (it refused, or the primary was unusable).
    #[error(
        "node {node}: start.sh exited ({status}) before PostgreSQL was ready; its log ends:\n{log}"
    )]
    StartFailed {
        /// The node.
        node: String,
        /// The exit status.
        status: String,
        /// The last lines of the pod log.
        log: String,
    },
    /// Something did not happen in time.
    #[error("timed out after {waited:?} waiting for {what}; log ends:\n{log}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        waited: std::time::Duration,
        /// The last lines of the pod log.
        log: String,
    },
    /// psql failed.
    #[error("node {node}: psql failed: {message}")]
    Sql {
        /// The node.
        node: String,
        /// psql's stderr.
        message: String,
    },
}

/// Result of lab PostgreSQL operations.
pub type PgResult<T> = Result<T, PgError>;

/// `Some((uid, gid))` of the `postgres` user when running as root (creating the user when
/// absent), `None` when not root (the node then runs as the current user).
pub(crate) fn postgres_owner() -> PgResult<Option<(u32, u32)>> {
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(None);
    }
    test_support::ensure_postgres_user().map_err(|e| PgError::Setup(format!("{e:#}")))?;
    let user = nix::unistd::User::from_name("postgres")
        .map_err(|e| PgError::Setup(format!("looking up the postgres user: {e}")))?
        .ok_or_else(|| PgError::Setup("the postgres user is missing".into()))?;
    Ok(Some((user.uid.as_raw(), user.gid.as_raw())))
}
