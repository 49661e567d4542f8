//! What a node is: role, timeline, positions, replication, slots, the fence.

use sqlx::postgres::{PgConnection, PgRow};
use sqlx::Row;

use super::PgDatabase;
use crate::error::DbResult;
use crate::lsn::{self};
use crate::status::{DbRole, Lag, NodeStatus, ReplicationConnection, Slot, WalReceiver};

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
    pub(super) async fn status_on(&self, c: &mut PgConnection) -> DbResult<NodeStatus> {
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
            replay_age_secs: replay_age,
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

    pub(super) async fn versions(&self, c: &mut PgConnection) -> Result<Vec<i32>, sqlx::Error> {
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
