//! init-db: refused on a standby, applied once on the primary, a no-op the second time.

use std::sync::Mutex;
use std::time::Duration;

use drd_db::{no_progress, Database, DbError, InitDbOptions, SlotOutcome, WaitProgress};

use crate::support::lab;

#[tokio::test]
async fn init_db_is_refused_on_a_standby_applied_once_and_a_no_op_twice() {
    let lab = lab().await;
    let (p, d) = (lab.primary.db(), lab.dr.db());
    let file = test_support::init_db_sql();

    let err = d
        .init_db(&InitDbOptions::new(&file), &no_progress)
        .await
        .expect_err("init-db on a standby");
    assert!(matches!(err, DbError::IsStandby { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("region dr is a standby") && msg.contains("--region primary"),
        "{msg}"
    );

    let mut dry = InitDbOptions::new(&file);
    dry.dry_run = true;
    let out = p.init_db(&dry, &no_progress).await.expect("dry run");
    assert!(out.dry_run && !out.already_applied);
    assert_eq!(out.versions_after, vec![1]);
    assert_eq!(
        lab.primary.value("SELECT to_regclass('users')::text").await,
        ""
    );

    let seen = Mutex::new(Vec::new());
    let progress = |p: &WaitProgress| seen.lock().unwrap().push(format!("{p:?}"));
    let mut opts = InitDbOptions::new(&file);
    opts.create_slot = Some("dr_slot".into());
    opts.wait = Duration::from_secs(30);
    let first = p.init_db(&opts, &progress).await.expect("first init-db");
    assert!(!first.already_applied, "{first}");
    assert_eq!(first.versions_before, Vec::<i32>::new());
    assert_eq!(first.versions_after, vec![1]);
    assert_eq!(first.slot, Some(SlotOutcome::Exists("dr_slot".into())));
    assert!(seen.lock().unwrap().iter().any(|s| s.starts_with("Ready")));
    assert!(
        first.to_string().contains("schema version none -> 1"),
        "{first}"
    );
    // The services' user owns the tables, and the standby got them by replication.
    assert_eq!(
        lab.primary
            .value("SELECT tableowner::text FROM pg_tables WHERE tablename = 'users'")
            .await,
        "appuser"
    );
    lab.dr
        .wait_value("SELECT to_regclass('orders')::text", "orders")
        .await;

    let catalog = "SELECT count(*)::text || '/' || max(xmin::text) FROM pg_class WHERE relnamespace = 'public'::regnamespace";
    let before = lab.primary.value(catalog).await;
    let second = p
        .init_db(&opts, &no_progress)
        .await
        .expect("second init-db");
    assert!(second.already_applied, "{second}");
    assert!(second.to_string().contains("already applied"), "{second}");
    assert_eq!(
        lab.primary.value(catalog).await,
        before,
        "the catalog changed"
    );
    assert_eq!(
        lab.primary
            .value("SELECT count(*)::text FROM schema_version")
            .await,
        "1"
    );
}
