//! Acting: promote (and its no-op), fence and unfence, rejoin by rewind after a split brain.

use std::time::Duration;

use drd_db::{
    cluster_status, Database, DbRole, DesiredRole, Lsn, PgDatabase, RejoinMethod, RejoinOptions,
};

use crate::support::{eventually, lab, lab_with_env, make_table, Lab};

#[tokio::test]
async fn promote_moves_the_timeline_and_promoting_a_primary_is_a_no_op() {
    let lab = lab().await;
    let (p, d) = (lab.primary.db(), lab.dr.db());

    let noop = p
        .promote(Duration::from_secs(60))
        .await
        .expect("promote a primary");
    assert!(noop.already_primary);
    assert_eq!(noop.timeline_before, noop.timeline_after);

    // Fenced first, as a planned switchover does, so there is one writer at a time.
    p.fence().await.expect("fence");
    let out = d
        .promote(Duration::from_secs(60))
        .await
        .expect("promote dr");
    assert!(!out.already_primary);
    assert_eq!(out.timeline_before, 1);
    assert_eq!(out.timeline_after, 2);
    assert_eq!(d.status().await.unwrap().role, DbRole::Primary);
    assert!(out.slot.is_some());
    let again = d
        .promote(Duration::from_secs(60))
        .await
        .expect("promote again");
    assert!(again.already_primary);
    assert_eq!(again.timeline_after, 2);
    // The new primary takes writes.
    make_table(&lab.dr).await;
    lab.dr.exec("INSERT INTO t VALUES (1, 'after')").await;
}

#[tokio::test]
async fn fencing_blocks_writes_and_unfencing_restores_them() {
    let lab = lab().await;
    let p = lab.primary.db();
    make_table(&lab.primary).await;
    // An application session open before the fence is terminated by it.
    let mut app = lab.primary.sql().await;
    sqlx::query("INSERT INTO t VALUES (1, 'before')")
        .execute(&mut app)
        .await
        .unwrap();

    let fenced = p.fence().await.expect("fence");
    assert!(!fenced.already_fenced);
    assert!(fenced.sessions_terminated >= 1, "{fenced:?}");
    assert!(
        sqlx::query("SELECT 1").execute(&mut app).await.is_err(),
        "old session survives"
    );
    // The fence holds against a session that lifts its own read-only default: the
    // application's role cannot log in at all, and no one, not even a superuser, opens a
    // session on the application's database.
    let err = app_session(&lab.primary)
        .await
        .expect_err("the app role logs in while fenced");
    assert!(
        format!("{err}").contains("not permitted to log in"),
        "{err}"
    );
    let err = superuser_session(&lab.primary)
        .await
        .expect_err("a superuser opens appdb while fenced");
    assert!(
        format!("{err}").contains("not currently accepting connections"),
        "{err}"
    );
    assert!(p.status().await.unwrap().fenced);
    assert!(p.fence().await.unwrap().already_fenced);

    p.unfence().await.expect("unfence");
    lab.primary
        .exec("INSERT INTO t VALUES (3, 'unfenced')")
        .await;
    assert!(!p.status().await.unwrap().fenced);
    let mut app = app_session(&lab.primary)
        .await
        .expect("the app role logs in again");
    sqlx::query("SET transaction_read_only = off")
        .execute(&mut app)
        .await
        .unwrap();
    sqlx::query("SELECT 1").execute(&mut app).await.unwrap();
}

/// A session as the application's role (`appuser`), as the services open them.
async fn app_session(node: &crate::support::Region) -> Result<sqlx::PgConnection, sqlx::Error> {
    use sqlx::Connection;
    let addr = node.node.addr();
    let opts = sqlx::postgres::PgConnectOptions::new()
        .host(&addr.ip().to_string())
        .port(addr.port())
        .username("appuser")
        .password(crate::support::PASSWORD)
        .database("appdb");
    sqlx::PgConnection::connect_with(&opts).await
}

/// A superuser session on appdb that turns its own read-only default off.
async fn superuser_session(
    node: &crate::support::Region,
) -> Result<sqlx::PgConnection, sqlx::Error> {
    use sqlx::Connection;
    let addr = node.node.addr();
    let opts = sqlx::postgres::PgConnectOptions::new()
        .host(&addr.ip().to_string())
        .port(addr.port())
        .username("postgres")
        .password(crate::support::PASSWORD)
        .database("appdb")
        .options([("default_transaction_read_only", "off")]);
    sqlx::PgConnection::connect_with(&opts).await
}

/// A transaction open (with a write done) when the fence comes cannot commit.
#[tokio::test]
async fn a_transaction_open_at_fence_time_does_not_commit() {
    let lab = lab().await;
    let p = lab.primary.db();
    make_table(&lab.primary).await;
    let mut open = lab.primary.sql().await;
    sqlx::query("BEGIN READ WRITE")
        .execute(&mut open)
        .await
        .unwrap();
    sqlx::query("SET transaction_read_only = off")
        .execute(&mut open)
        .await
        .unwrap();
    sqlx::query("INSERT INTO t VALUES (7, 'in flight')")
        .execute(&mut open)
        .await
        .unwrap();
    p.fence().await.expect("fence");
    assert!(
        sqlx::query("COMMIT").execute(&mut open).await.is_err(),
        "a transaction open at fence time committed"
    );
    p.unfence().await.expect("unfence");
    assert_eq!(
        lab.primary
            .value("SELECT count(*)::text FROM t WHERE id = 7")
            .await,
        "0"
    );
}

/// Writes on both sides of an emergency promotion; returns the old primary's last LSN.
async fn split_brain(lab: &Lab, p: &PgDatabase, d: &PgDatabase) -> Lsn {
    make_table(&lab.primary).await;
    lab.primary.exec("INSERT INTO t VALUES (1, 'common')").await;
    lab.dr.wait_value("SELECT count(*)::text FROM t", "1").await;
    // Emergency failover: DR promoted while the old primary still takes writes.
    d.promote(Duration::from_secs(60))
        .await
        .expect("promote dr");
    d.set_desired_role(&DesiredRole::Primary)
        .await
        .expect("dr configmap");
    lab.dr.exec("INSERT INTO t VALUES (2, 'new primary')").await;
    lab.primary
        .exec("INSERT INTO t SELECT g, 'lost' FROM generate_series(100, 2000) g")
        .await;
    let split = cluster_status(&[p, d]).await;
    assert!(
        split.warnings.iter().any(|w| w.contains("SPLIT BRAIN")),
        "{split}"
    );
    p.status().await.unwrap().current_lsn.unwrap()
}

/// The former primary follows the new one: its divergent rows are gone, new rows arrive.
async fn follows_the_new_primary(lab: &Lab, p: &PgDatabase, d: &PgDatabase) {
    assert_eq!(p.status().await.unwrap().role, DbRole::Standby);
    lab.primary
        .wait_value("SELECT string_agg(id::text, ',' ORDER BY id) FROM t", "1,2")
        .await;
    lab.dr.exec("INSERT INTO t VALUES (3, 'streams')").await;
    lab.primary
        .wait_value("SELECT count(*)::text FROM t", "3")
        .await;
    let again = p
        .rejoin(&RejoinOptions::default())
        .await
        .expect("rejoin again");
    assert_eq!(again.method, RejoinMethod::AlreadyStandby);
    eventually(
        "one primary, streaming",
        Duration::from_secs(30),
        || async {
            let st = cluster_status(&[p, d]).await;
            (st.warnings.is_empty() && st.lag.is_some()).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn rejoin_by_rewind_after_writes_on_both_sides_reports_the_discarded_divergence() {
    // pg_rewind reads the old primary's WAL back to the last checkpoint before the fork; the
    // slot (held at the fork) does not keep it, wal_keep_size does (see docs/database.md).
    let lab = lab_with_env(&[("WAL_KEEP_SIZE", "256MB")]).await;
    let (p, d) = (lab.primary.db(), lab.dr.db());
    let old_end = split_brain(&lab, &p, &d).await;

    let out = p.rejoin(&RejoinOptions::default()).await.expect("rejoin");
    assert_eq!(out.method, RejoinMethod::Rewind, "{out:?}");
    let fork = out.diverged_at.expect("fork point");
    assert!(out.bytes_copied.unwrap() > 0, "{out:?}");
    assert_eq!(out.old_end_lsn, Some(old_end));
    assert_eq!(out.discarded_bytes, Some(old_end.bytes_since(fork)));
    assert!(out.discarded_bytes.unwrap() > 50_000, "{out:?}");
    assert_eq!(out.primary, lab.dr.node.addr().to_string());
    follows_the_new_primary(&lab, &p, &d).await;
}

#[tokio::test]
async fn rejoin_falls_back_to_a_base_backup_when_rewind_is_impossible_and_says_why() {
    // Without wal_keep_size (the manifests set 1GB; start.sh's default is 0) the old primary's
    // shutdown checkpoint recycles the WAL before the fork, so pg_rewind cannot find the last
    // common checkpoint.
    let lab = lab_with_env(&[("WAL_KEEP_SIZE", "0")]).await;
    let (p, d) = (lab.primary.db(), lab.dr.db());
    split_brain(&lab, &p, &d).await;

    let out = p.rejoin(&RejoinOptions::default()).await.expect("rejoin");
    let RejoinMethod::BaseBackup {
        reason,
        old_data_kept,
    } = &out.method
    else {
        panic!("expected a base backup: {out:?}");
    };
    assert!(reason.contains("pg_rewind failed"), "{reason}");
    assert!(
        old_data_kept
            .as_deref()
            .unwrap_or_default()
            .contains("pgdata.old-"),
        "{out:?}"
    );
    assert!(out.bytes_copied.unwrap() > 1_000_000, "{out:?}");
    follows_the_new_primary(&lab, &p, &d).await;
}
