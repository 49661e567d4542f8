//! Promotion, the desired role and rejoining: what moves a node between primary and standby.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnection;
use sqlx::Connection;

use super::{ms, Look, PgDatabase};
use crate::error::{DbError, DbResult};
use crate::rejoin::{parse_log, RejoinMethod, RejoinOutcome};
use crate::status::DbRole;
use crate::{Database, DesiredRole, PromoteOutcome, RejoinOptions, SlotOutcome};

impl PgDatabase {
    pub(super) async fn ensure_slot(
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

    pub(super) async fn seal_impl(&self) -> DbResult<()> {
        let mut c = self.connect("postgres").await?;
        let done = async {
            let st = self.status_on(&mut c).await?;
            if st.role == DbRole::Primary || st.wal_receiver.is_none() {
                return Ok(());
            }
            sqlx::query("ALTER SYSTEM SET primary_conninfo = ''")
                .execute(&mut c)
                .await
                .map_err(self.sql_err("ALTER SYSTEM SET primary_conninfo"))?;
            sqlx::query("SELECT pg_reload_conf()")
                .execute(&mut c)
                .await
                .map_err(self.sql_err("reloading the configuration"))?;
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_wal_receiver")
                    .fetch_one(&mut c)
                    .await
                    .map_err(self.sql_err("waiting for the WAL receiver to stop"))?;
                if left == 0 {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    return Err(self.sql_err("sealing the standby")(sqlx::Error::Protocol(
                        "its WAL receiver still runs 10 s after primary_conninfo was emptied"
                            .into(),
                    )));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        .await;
        let _ = c.close().await;
        done
    }

    pub(super) async fn promote_impl(&self, wait: Duration) -> DbResult<PromoteOutcome> {
        let t0 = Instant::now();
        // One session for the whole promotion: a session opened during recovery sees the end
        // of recovery and can write afterwards, and each new session costs a round of
        // authentication (through port-forward, by default).
        // A session parked by the replay wait or opened ahead (prepare), else a new one; a
        // parked one that fails is replaced once.
        let mut c = self.live_session().await?;
        let before = match self.status_on(&mut c).await {
            Ok(b) => b,
            Err(_) => {
                c = self.connect("postgres").await?;
                self.status_on(&mut c).await?
            }
        };
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
        tracing::debug!(region = %self.cfg.region, ms = ms(t0), "promote: signalling");
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
        tracing::debug!(region = %self.cfg.region, ms = ms(t0), timeline = after.timeline, "promote: out of recovery");
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
        // Keep WAL from the fork on for the former primary, so that it can rejoin by rewind.
        // Before the logins come back: the application's pools all connect at that moment
        // (a fork and an authentication each), and a statement after it waited for them
        // (about 50 ms in the lab, on two cores).
        let slot = self.ensure_slot(&mut c, &self.cfg.slot, false).await?;
        tracing::debug!(region = %self.cfg.region, ms = ms(t0), "promote: slot kept");
        // The role half of the fence replicated from the old primary: lift it here, last.
        self.restore_logins(&mut c).await?;
        tracing::debug!(region = %self.cfg.region, ms = ms(t0), "promote: logins back");
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

    pub(super) async fn set_desired_role_impl(&self, role: &DesiredRole) -> DbResult<()> {
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
        kube.patch_role_config(&data)
            .await
            .map_err(|e| self.host_error("patching the role ConfigMap", e))
    }

    pub(super) async fn rejoin_impl(&self, opts: &RejoinOptions) -> DbResult<RejoinOutcome> {
        let t0 = Instant::now();
        let kube = self.kube("rejoin (ConfigMap and pod restart)")?;
        let cm = kube
            .role_config()
            .await
            .map_err(|e| self.host_error("reading the role ConfigMap", e))?;
        let host = opts
            .primary_host
            .clone()
            .or_else(|| cm.get("peer_host").cloned().filter(|h| !h.is_empty()))
            .ok_or_else(|| DbError::Rejoin {
                region: self.region_name(),
                reason: format!(
                    "no primary to follow: pass one, or set peer_host in configmap {}",
                    kube.names().role_config_map
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
        let log = kube
            .restart_pod(opts.timeout)
            .await
            .map_err(|e| self.host_error("restarting the database pod", e))?;
        let parsed = parse_log(&log);
        let method = parsed.method.clone().ok_or_else(|| DbError::Rejoin {
            region: self.region_name(),
            reason: "the pod restarted but its log names no rejoin path".into(),
            log: tail(&log, 30),
        })?;
        // Streaming from the new primary is the proof.
        let remaining = opts
            .timeout
            .saturating_sub(t0.elapsed())
            .max(Duration::from_secs(5));
        let every = Look::fresh(Duration::from_millis(100));
        self.poll("the rejoined standby to stream", remaining, every, |s| {
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
            log: tail(&log, 30),
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
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
