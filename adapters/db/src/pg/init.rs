//! init-db: the schema file applied in one transaction, the schema version recorded, the
//! replication slot for the other region created.

use std::path::PathBuf;

use sqlx::Connection;

use super::{quote_ident, PgDatabase};
use crate::error::{DbError, DbResult};
use crate::{Database, InitDbOptions, InitDbOutcome, Progress};

impl PgDatabase {
    pub(super) async fn init_db_impl(
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
