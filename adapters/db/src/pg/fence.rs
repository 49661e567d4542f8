//! The fence (read-only default, application logins taken, the application's databases closed
//! to every new session, superusers included; sessions ended) and its lifting.

use std::time::{Duration, Instant};

use sqlx::postgres::PgConnection;
use sqlx::Connection;

use super::{ms, sql_literal, Look, PgDatabase, FENCE_MARK};
use crate::error::DbResult;
use crate::FenceOutcome;

impl PgDatabase {
    pub(super) async fn set_read_only(&self, on: bool) -> DbResult<()> {
        let mut c = self.connect("postgres").await?;
        let done = self.set_read_only_on(&mut c, on).await;
        let _ = c.close().await;
        done
    }

    /// The half of the fence that holds against a session's own `SET transaction_read_only =
    /// off` (which `default_transaction_read_only` does not): every login role that is neither
    /// a superuser nor a replication role loses LOGIN, and no one, not even a superuser, opens a
    /// session on the application's databases (`datallowconn`; drdctl's own sessions use
    /// `postgres`, replication none). Each is marked so that only drdctl's unfence or promotion
    /// gives it back. One `DO` block: one round trip and one commit for all of them.
    pub(super) async fn deny_logins(&self, c: &mut PgConnection) -> DbResult<()> {
        self.writable_session(c).await?;
        let mark = sql_literal(FENCE_MARK);
        let sql = format!(
            "DO $fence$ DECLARE n text; BEGIN
               FOR n IN SELECT rolname FROM pg_roles
                        WHERE rolcanlogin AND NOT rolsuper AND NOT rolreplication
                          AND rolname !~ '^pg_' LOOP
                 EXECUTE format('ALTER ROLE %I NOLOGIN', n);
                 EXECUTE format('COMMENT ON ROLE %I IS %L', n, {mark});
               END LOOP;
               FOR n IN SELECT datname FROM pg_database
                        WHERE datallowconn AND NOT datistemplate AND datname <> 'postgres' LOOP
                 EXECUTE format('ALTER DATABASE %I ALLOW_CONNECTIONS false', n);
                 EXECUTE format('COMMENT ON DATABASE %I IS %L', n, {mark});
               END LOOP;
             END $fence$"
        );
        sqlx::query(&sql)
            .execute(&mut *c)
            .await
            .map_err(self.sql_err(
                "taking LOGIN from the application roles and closing the application's databases",
            ))?;
        Ok(())
    }

    /// Gives LOGIN back to the roles [`Self::deny_logins`] fenced and opens the databases it
    /// closed. Role and database changes replicate, so a promoted standby inherits them from
    /// its fenced primary: promotion calls this too. One `DO` block, as the fence.
    pub(super) async fn restore_logins(&self, c: &mut PgConnection) -> DbResult<()> {
        self.writable_session(c).await?;
        let mark = sql_literal(FENCE_MARK);
        let sql = format!(
            "DO $fence$ DECLARE n text; BEGIN
               FOR n IN SELECT r.rolname FROM pg_roles r
                        JOIN pg_shdescription d
                          ON d.objoid = r.oid AND d.classoid = 'pg_authid'::regclass
                        WHERE d.description = {mark} LOOP
                 EXECUTE format('ALTER ROLE %I LOGIN', n);
                 EXECUTE format('COMMENT ON ROLE %I IS NULL', n);
               END LOOP;
               FOR n IN SELECT db.datname FROM pg_database db
                        JOIN pg_shdescription d
                          ON d.objoid = db.oid AND d.classoid = 'pg_database'::regclass
                        WHERE d.description = {mark} LOOP
                 EXECUTE format('ALTER DATABASE %I ALLOW_CONNECTIONS true', n);
                 EXECUTE format('COMMENT ON DATABASE %I IS NULL', n);
               END LOOP;
             END $fence$"
        );
        sqlx::query(&sql).execute(&mut *c).await.map_err(
            self.sql_err("giving LOGIN back to the fenced roles and opening the fenced databases"),
        )?;
        Ok(())
    }

    /// This session may already default to read-only (the fence's other half, reloaded): the
    /// operator's own session lifts that for itself.
    async fn writable_session(&self, c: &mut PgConnection) -> DbResult<()> {
        sqlx::query("SET default_transaction_read_only = off")
            .execute(&mut *c)
            .await
            .map_err(self.sql_err("SET default_transaction_read_only"))?;
        Ok(())
    }

    /// [`Self::set_read_only`] on an open session (the check still uses new sessions).
    pub(super) async fn set_read_only_on(&self, c: &mut PgConnection, on: bool) -> DbResult<()> {
        self.change_read_only(c, on).await?;
        self.read_only_seen(on).await
    }

    /// `default_transaction_read_only` on or off in postgresql.auto.conf, and reloaded.
    async fn change_read_only(&self, c: &mut PgConnection, on: bool) -> DbResult<()> {
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
        Ok(())
    }

    /// Waits until a new session sees the read-only default `on` (or off): the reload is
    /// asynchronous. A new session each look (only a new session shows what new sessions get),
    /// every 10 ms: the reload takes effect within milliseconds.
    async fn read_only_seen(&self, on: bool) -> DbResult<()> {
        let what = if on {
            "the fence to apply to new sessions"
        } else {
            "the fence to lift"
        };
        let every = Look::fresh(Duration::from_millis(10));
        self.poll(what, Duration::from_secs(30), every, |s| {
            (s.fenced == on).then_some(())
        })
        .await
    }

    pub(super) async fn fence_impl(&self) -> DbResult<FenceOutcome> {
        let t0 = Instant::now();
        let mut c = self.connect("postgres").await?;
        let before = self.status_on(&mut c).await?;
        if !before.fenced {
            self.change_read_only(&mut c, true).await?;
        }
        // While new sessions are checked for the read-only default, no application role can
        // log in any more (that holds even against a session's own `SET transaction_read_only
        // = off`), then every client session ends; the fence is done when all three are.
        let seen = async {
            if !before.fenced {
                self.read_only_seen(true).await?;
                tracing::debug!(region = %self.cfg.region, ms = ms(t0), "fence: new sessions read-only");
            }
            Ok::<_, crate::error::DbError>(())
        };
        let (seen, ended) = tokio::join!(seen, self.end_sessions(&mut c, t0));
        let _ = c.close().await;
        seen?;
        let ended = ended?;
        Ok(FenceOutcome {
            region: self.region_name(),
            already_fenced: before.fenced,
            sessions_terminated: ended,
        })
    }

    /// Logins denied, then every client session ended, waiting (up to 5 s) until they have all
    /// exited, so that no transaction open at fence time commits after it. All are signalled at
    /// once and waited for together: `pg_terminate_backend(pid, timeout)` waits for each in
    /// turn, in 100 ms polls (1.6 s for 9 sessions in the lab). Returns how many were ended.
    async fn end_sessions(&self, c: &mut PgConnection, t0: Instant) -> DbResult<u64> {
        self.deny_logins(c).await?;
        tracing::debug!(region = %self.cfg.region, ms = ms(t0), "fence: logins and databases closed");
        // (Two statements: in one, the planner may call pg_terminate_backend before the
        // filter that spares this very session.)
        let pids: Vec<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
        )
        .fetch_all(&mut *c)
        .await
        .map_err(self.sql_err("listing client sessions"))?;
        let pids: Vec<i32> = sqlx::query_scalar(
            "SELECT p FROM unnest($1::int[]) AS p WHERE pg_terminate_backend(p)",
        )
        .bind(&pids)
        .fetch_all(&mut *c)
        .await
        .map_err(self.sql_err("terminating application sessions"))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left: i64 =
                sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)")
                    .bind(&pids)
                    .fetch_one(&mut *c)
                    .await
                    .map_err(self.sql_err("waiting for the sessions to exit"))?;
            if left == 0 || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tracing::debug!(region = %self.cfg.region, ms = ms(t0), sessions = pids.len(), "fence: sessions ended");
        Ok(pids.len() as u64)
    }

    pub(super) async fn unfence_impl(&self) -> DbResult<()> {
        let mut c = self.connect("postgres").await?;
        let done = async {
            self.restore_logins(&mut c).await?;
            self.set_read_only_on(&mut c, false).await
        }
        .await;
        let _ = c.close().await;
        done
    }
}
