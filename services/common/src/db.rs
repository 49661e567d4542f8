//! The PostgreSQL pool and what the services need to know about the database they talk to.
//!
//! The pool connects lazily: a service starts, answers `/health/live` and reports "not ready"
//! while PostgreSQL is away, and recovers on its own when it comes back (no restart needed).

use std::time::Duration;

use serde::Serialize;
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::config::{ConfigError, DbConfig};

/// Builds the pool from configuration without connecting.
pub fn pool(cfg: &DbConfig) -> Result<PgPool, ConfigError> {
    let options = cfg.connect_options()?;
    Ok(PgPoolOptions::new()
        .max_connections(cfg.pool_max)
        .min_connections(cfg.pool_min)
        .acquire_timeout(cfg.acquire_timeout)
        // No ping before each use: it would double the round trips of every request. A
        // connection that died with its server fails once (503 database_unavailable, the
        // client retries) and is then discarded by the pool.
        .test_before_acquire(false)
        .idle_timeout(Some(Duration::from_secs(300)))
        .connect_lazy_with(options))
}

/// What the database can do for this region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DbRole {
    /// Accepts writes.
    Primary,
    /// In recovery: a streaming standby (the DR region before a failover).
    Standby,
    /// Not in recovery but refusing writes (`default_transaction_read_only`): a fenced primary.
    ReadOnly,
}

impl DbRole {
    pub fn as_str(self) -> &'static str {
        match self {
            DbRole::Primary => "primary",
            DbRole::Standby => "standby",
            DbRole::ReadOnly => "read_only",
        }
    }
}

/// Asks the database for its role, within `timeout`.
pub async fn role(pool: &PgPool, timeout: Duration) -> Result<DbRole, String> {
    let query = sqlx::query_as::<_, (bool, String)>(
        "SELECT pg_is_in_recovery(), current_setting('transaction_read_only')",
    )
    .fetch_one(pool);
    match tokio::time::timeout(timeout, query).await {
        Err(_) => Err(format!("no answer from the database within {timeout:?}")),
        Ok(Err(e)) => Err(crate::error::ErrorChain(&e).to_string()),
        Ok(Ok((true, _))) => Ok(DbRole::Standby),
        Ok(Ok((false, ro))) if ro == "on" => Ok(DbRole::ReadOnly),
        Ok(Ok(_)) => Ok(DbRole::Primary),
    }
}

// What a database error was: here for the callers that know them as `db::...`.
pub use crate::sqlstate::{is_foreign_key_violation, is_read_only, unique_violation};

/// Connections for the hot write path, without sqlx's pool round trip: its pool tests every
/// connection it takes back with a `Sync` to the server (one more round trip, and work for
/// PostgreSQL, per request). Here a connection goes back to the shelf as it is after a query
/// that completed, or after an error the server reported (the connection is still in step);
/// any other error, or a request dropped mid-query (timeout, client gone), closes it. At most
/// `max` are open; a caller waits up to the acquire timeout for one (then `PoolTimedOut`).
pub struct Lanes {
    options: sqlx::postgres::PgConnectOptions,
    shelf: std::sync::Mutex<Vec<sqlx::PgConnection>>,
    slots: tokio::sync::Semaphore,
    acquire_timeout: Duration,
}

/// A connection taken from [`Lanes`]; [`Lane::done`] puts it back.
pub struct Lane<'a> {
    lanes: &'a Lanes,
    pub conn: sqlx::PgConnection,
    _slot: tokio::sync::SemaphorePermit<'a>,
}

impl Lanes {
    pub fn new(cfg: &DbConfig) -> Result<Lanes, ConfigError> {
        Ok(Lanes {
            options: cfg.connect_options()?,
            shelf: std::sync::Mutex::new(Vec::new()),
            slots: tokio::sync::Semaphore::new(cfg.pool_max as usize),
            acquire_timeout: cfg.acquire_timeout,
        })
    }

    /// An open connection: one from the shelf, or a new one.
    pub async fn take(&self) -> Result<Lane<'_>, sqlx::Error> {
        let slot = tokio::time::timeout(self.acquire_timeout, self.slots.acquire())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let idle = self.shelf.lock().ok().and_then(|mut s| s.pop());
        let conn = match idle {
            Some(c) => c,
            None => {
                use sqlx::ConnectOptions;
                tokio::time::timeout(self.acquire_timeout, self.options.connect())
                    .await
                    .map_err(|_| sqlx::Error::PoolTimedOut)??
            }
        };
        Ok(Lane {
            lanes: self,
            conn,
            _slot: slot,
        })
    }
}

impl Lane<'_> {
    /// Puts the connection back after `result`, or closes it when it may be out of step.
    pub fn done<T>(self, result: &Result<T, sqlx::Error>) {
        if matches!(result, Ok(_) | Err(sqlx::Error::Database(_))) {
            if let Ok(mut shelf) = self.lanes.shelf.lock() {
                shelf.push(self.conn);
            }
        }
    }
}
