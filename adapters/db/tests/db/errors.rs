//! Errors an operator can act on: wrong password, unreachable pod, missing secret. Each names
//! the region, the pod and the kube context.

use std::time::Duration;

use drd_db::{no_progress, Database, DbError, PgDatabase};
use lab::KubeDouble;
use serde_json::json;

use crate::support::{port_forward_config, primary_only};

fn db_for(kube: &KubeDouble, region: &str) -> PgDatabase {
    let mut cfg = port_forward_config(kube, region);
    cfg.connect_timeout = Duration::from_secs(5);
    PgDatabase::new(cfg)
}

#[tokio::test]
async fn a_missing_secret_and_a_missing_pod_are_named() {
    let kube = KubeDouble::start("dr", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let err = db_for(&kube, "dr").status().await.expect_err("no secret");
    assert!(matches!(err, DbError::MissingSecret { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("region dr")
            && msg.contains("default/postgresql-secret")
            && msg.contains("kube context dr"),
        "{msg}"
    );

    kube.create(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "postgresql-secret", "namespace": "default"},
        "stringData": {"password": "x"}}))
        .unwrap();
    let err = db_for(&kube, "dr").status().await.expect_err("no pod");
    assert!(matches!(err, DbError::Unreachable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("region dr")
            && msg.contains("pod default/postgresql-0")
            && msg.contains("not found"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_wrong_password_and_a_stopped_server_are_named() {
    let (primary, _pair) = primary_only().await;
    primary
        .kube
        .update("secrets", "default", "postgresql-secret", |old| {
            let mut s = old.clone();
            s["data"]["password"] = json!("d3Jvbmc="); // "wrong"
            Ok(s)
        })
        .unwrap();
    let db = primary.db();
    let err = db.status().await.expect_err("wrong password");
    assert!(matches!(err, DbError::Auth { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("region primary")
            && msg.contains("password authentication failed")
            && msg.contains("postgresql-secret"),
        "{msg}"
    );
    // Waiting does not fix a wrong password: init-db fails at once, not after its wait.
    let t0 = std::time::Instant::now();
    let mut opts = drd_db::InitDbOptions::new(test_support::init_db_sql());
    opts.wait = Duration::from_secs(60);
    assert!(matches!(
        db.init_db(&opts, &no_progress).await,
        Err(DbError::Auth { .. })
    ));
    assert!(t0.elapsed() < Duration::from_secs(30));

    // The pod is there, PostgreSQL is not: the forward's dial error is quoted.
    primary.node.stop().await.unwrap();
    let err = primary.db().status().await.expect_err("server stopped");
    assert!(matches!(err, DbError::Unreachable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("pod default/postgresql-0:5432") && msg.contains("refused"),
        "{msg}"
    );
    let err = primary
        .db()
        .wait_until_accepting(Duration::from_secs(1), &no_progress)
        .await
        .expect_err("never accepting");
    assert!(matches!(err, DbError::Timeout { .. }), "{err}");
}
