//! The adapter's errors. Each names the region and how it was reached (the pod through which
//! kube context, or the URL's host), and says what to check.

use std::path::PathBuf;
use std::time::Duration;

/// What can go wrong talking to a region's PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The server could not be reached (pod missing or not running, PostgreSQL down, port
    /// closed, kube API unreachable).
    #[error("region {region}: cannot reach PostgreSQL through {via}: {reason}")]
    Unreachable {
        /// The region.
        region: String,
        /// How it was reached (`port-forward to pod default/postgresql-0:5432 (kube context dr)`).
        via: String,
        /// The underlying reason.
        reason: String,
    },
    /// PostgreSQL refused the credentials.
    #[error(
        "region {region}: PostgreSQL refused user {user} through {via}: {reason}. Check {hint}"
    )]
    Auth {
        /// The region.
        region: String,
        /// The database user.
        user: String,
        /// How it was reached.
        via: String,
        /// The server's message.
        reason: String,
        /// Where the password came from.
        hint: String,
    },
    /// The password secret is missing, or has none of the keys looked for.
    #[error("region {region}: secret {namespace}/{name} in kube context {context} is missing or has none of the keys {keys:?}: it holds the database passwords (key `password`, optional `superuser-password`). Create it (`kubectl create secret generic {name} --from-literal=password=... -n {namespace}`) or pass the password through the environment")]
    MissingSecret {
        /// The region.
        region: String,
        /// The kube context.
        context: String,
        /// The namespace.
        namespace: String,
        /// The secret's name.
        name: String,
        /// The keys tried, in order.
        keys: Vec<String>,
    },
    /// The environment variable meant to hold the password is unset.
    #[error("region {region}: the password variable {var} is not set")]
    MissingEnv {
        /// The region.
        region: String,
        /// The variable.
        var: String,
    },
    /// A Kubernetes API call failed.
    #[error("region {region}: {what} (kube context {context}): {source}")]
    Kube {
        /// The region.
        region: String,
        /// The kube context.
        context: String,
        /// What was being done.
        what: String,
        /// The Kubernetes adapter's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The operation needs kube access (declarative rejoin, role ConfigMap) but the region was
    /// configured with a URL only.
    #[error("region {region}: {what} needs access to the region's Kubernetes API (configure its kube context)")]
    NeedsKube {
        /// The region.
        region: String,
        /// The operation.
        what: String,
    },
    /// A SQL statement failed.
    #[error("region {region}: {what} failed: {source}")]
    Sql {
        /// The region.
        region: String,
        /// What was being done.
        what: String,
        /// sqlx's error.
        #[source]
        source: sqlx::Error,
    },
    /// init-db was pointed at a standby.
    #[error("region {region} is a standby (in recovery, read-only): run init-db on the primary (`drdctl init-db --region {primary_hint}`); the standby receives the schema by replication")]
    IsStandby {
        /// The region.
        region: String,
        /// The region to suggest.
        primary_hint: String,
    },
    /// The schema file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The schema file failed to apply (the transaction was rolled back: nothing changed).
    #[error("region {region}: applying {} failed, nothing was changed (rolled back): {source}", path.display())]
    Apply {
        /// The region.
        region: String,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: sqlx::Error,
    },
    /// Something did not happen in time.
    #[error("region {region}: timed out after {waited:?} waiting for {what}{}", last.as_ref().map(|l| format!(" (last: {l})")).unwrap_or_default())]
    Timeout {
        /// The region.
        region: String,
        /// What was awaited.
        what: String,
        /// How long.
        waited: Duration,
        /// The last observation or error.
        last: Option<String>,
    },
    /// Promotion did not produce a primary on a new timeline.
    #[error("region {region}: promotion failed: {reason}")]
    Promote {
        /// The region.
        region: String,
        /// Why.
        reason: String,
    },
    /// The pod did not come back as a standby.
    #[error("region {region}: rejoin failed: {reason}{}", if log.is_empty() { String::new() } else { format!("\npod log ends:\n{log}") })]
    Rejoin {
        /// The region.
        region: String,
        /// Why.
        reason: String,
        /// The last lines of the pod's log.
        log: String,
    },
}

/// Result of adapter operations.
pub type DbResult<T> = Result<T, DbError>;
