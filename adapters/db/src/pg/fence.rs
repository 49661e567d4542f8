//! The fence (read-only default, application logins taken, the application's databases closed
//! to every new session, superusers included; sessions ended) and its lifting.

use std::time::{Duration, Instant};

use sqlx::postgres::PgConnection;
use sqlx::Connection;

use super::{quote_ident, PgDatabase, FENCE_MARK};
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
    /// a superuser nor a replication role loses LOGIN, marked so that only drdctl's unfence or
    /// promotion gives it back. Returns the roles it fenced.
    pub(super) async fn deny_logins(&self, c: &mut PgConnection) -> DbResult<Vec<String>> {
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
        // And no one, not even a superuser, opens a session on the application's databases
        // (`datallowconn`): drdctl's own sessions use `postgres`, replication none.
        let dbs: Vec<String> = sqlx::query_scalar(
            "SELECT datname FROM pg_database
             WHERE datallowconn AND NOT datistemplate AND datname <> 'postgres'",
        )
        .fetch_all(&mut *c)
        .await
        .map_err(self.sql_err("listing the databases to fence"))?;
        for d in &dbs {
            let q = quote_ident(d);
            sqlx::query(&format!("ALTER DATABASE {q} ALLOW_CONNECTIONS false"))
                .execute(&mut *c)
                .await
                .map_err(self.sql_err("ALTER DATABASE ... ALLOW_CONNECTIONS false"))?;
            sqlx::query(&format!("COMMENT ON DATABASE {q} IS '{FENCE_MARK}'"))
                .execute(&mut *c)
                .await
                .map_err(self.sql_err("marking a fenced database"))?;
        }
        Ok(roles)
    }

    /// Gives LOGIN back to the roles [`Self::deny_logins`] fenced. Role changes replicate, so a
    /// promoted standby inherits them from its fenced primary: promotion calls this too.
    pub(super) async fn restore_logins(&self, c: &mut PgConnection) -> DbResult<u64> {
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
        let dbs: Vec<String> = sqlx::query_scalar(
            "SELECT db.datname FROM pg_database db
             JOIN pg_shdescription d ON d.objoid = db.oid AND d.classoid = 'pg_database'::regclass
             WHERE d.description = $1",
        )
        .bind(FENCE_MARK)
        .fetch_all(&mut *c)
        .await
        .map_err(self.sql_err("listing the fenced databases"))?;
        for d in &dbs {
            let q = quote_ident(d);
            sqlx::query(&format!("ALTER DATABASE {q} ALLOW_CONNECTIONS true"))
                .execute(&mut *c)
                .await
                .map_err(self.sql_err("ALTER DATABASE ... ALLOW_CONNECTIONS true"))?;
            sqlx::query(&format!("COMMENT ON DATABASE {q} IS NULL"))
                .execute(&mut *c)
                .await
                .map_err(self.sql_err("unmarking a fenced database"))?;
        }
        Ok(roles.len() as u64)
    }

    /// [`Self::set_read_only`] on an open session (the check still uses new sessions).
    pub(super) async fn set_read_only_on(&self, c: &mut PgConnection, on: bool) -> DbResult<()> {
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

    pub(super) async fn fence_impl(&self) -> DbResult<FenceOutcome> {
        let mut c = self.connect("postgres").await?;
        let before = self.status_on(&mut c).await?;
        if !before.fenced {
            self.set_read_only_on(&mut c, true).await?;
        }
        // Then no application role can log in (that holds even against a session's own
        // `SET transaction_read_only = off`), then every client session ends, and the fence
        // waits (up to 5 s) until they have all exited, so no transaction open at fence time
        // commits after it. All are signalled at once and waited for together:
        // `pg_terminate_backend(pid, timeout)` waits for each in turn, in 100 ms polls (1.6 s
        // for 9 sessions in the lab).
        self.deny_logins(&mut c).await?;
        // (Two statements: in one, the planner may call pg_terminate_backend before the
        // filter that spares this very session.)
        let pids: Vec<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
        )
        .fetch_all(&mut c)
        .await
        .map_err(self.sql_err("listing client sessions"))?;
        let pids: Vec<i32> = sqlx::query_scalar(
            "SELECT p FROM unnest($1::int[]) AS p WHERE pg_terminate_backend(p)",
        )
        .bind(&pids)
        .fetch_all(&mut c)
        .await
        .map_err(self.sql_err("terminating application sessions"))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left: i64 =
                sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)")
                    .bind(&pids)
                    .fetch_one(&mut c)
                    .await
                    .map_err(self.sql_err("waiting for the sessions to exit"))?;
            if left == 0 || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = c.close().await;
        Ok(FenceOutcome {
            region: self.region_name(),
            already_fenced: before.fenced,
            sessions_terminated: pids.len() as u64,
        })
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
