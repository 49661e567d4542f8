//! Standby behaviour, readiness across a database restart, graceful shutdown.

use std::time::Duration;

use serde_json::{json, Value};
use test_support::{eventually, PgCluster, PgOptions, TestDb};

use crate::helpers::{assert_error, spawn, start_on};

#[tokio::test]
async fn a_read_only_database_refuses_writes_with_503_and_serves_reads() {
    let app = spawn().await;
    assert_eq!(
        app.post_json("/api/v1/ingest", &json!({"type":"before"}))
            .await
            .status(),
        201
    );
    app.db.make_read_only();
    // New connections see the setting; the pool may still hold an old one, so restart the app.
    let app2 = start_on(&app.db.url, &[]).await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/api/v1/ingest", app2.url()))
        .json(&json!({"type":"after"}))
        .send()
        .await
        .unwrap();
    let (code, message) = assert_error(r, 503).await;
    assert_eq!(code, "read_only");
    assert!(message.contains("standby"), "{message}");
    let r = http
        .post(format!("{}/api/v1/ingest/batch", app2.url()))
        .json(&json!({"records":[{"type":"after"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(assert_error(r, 503).await.0, "read_only");
    let recent: Value = http
        .get(format!("{}/api/v1/ingest/recent", app2.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(recent["count"], 1);
    let ready: Value = http
        .get(format!("{}/health/ready", app2.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["database"]["role"], "read_only");
}

#[tokio::test]
async fn against_a_real_streaming_standby() {
    let primary = PgCluster::start(PgOptions::default()).expect("primary");
    primary.psql("postgres", "CREATE DATABASE appdb").unwrap();
    primary
        .apply_file("appdb", &test_support::init_db_sql())
        .unwrap();
    let standby = PgCluster::standby_of(&primary).expect("standby");
    let on_primary = start_on(&primary.url("appdb"), &[]).await;
    let on_standby = start_on(&standby.url("appdb"), &[]).await;
    let http = reqwest::Client::new();

    let r = http
        .post(format!("{}/api/v1/ingest", on_primary.url()))
        .json(&json!({"type":"replicated"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // The standby serves the replicated row once replay has caught up.
    let url = format!("{}/api/v1/ingest/stats", on_standby.url());
    eventually(
        "the row to reach the standby",
        Duration::from_secs(20),
        || async {
            let stats: Value = http.get(&url).send().await.ok()?.json().await.ok()?;
            (stats["total_records"] == 1).then_some(())
        },
    )
    .await;

    let r = http
        .post(format!("{}/api/v1/ingest", on_standby.url()))
        .json(&json!({"type":"refused"}))
        .send()
        .await
        .unwrap();
    assert_eq!(assert_error(r, 503).await.0, "read_only");
    let ready: Value = http
        .get(format!("{}/health/ready", on_standby.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["database"]["role"], "standby");
    let info: Value = http
        .get(format!("{}/api/v1/info", on_standby.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["database"]["role"], "standby");
}

#[tokio::test]
async fn readiness_follows_the_database_without_a_restart() {
    let cluster = PgCluster::start(PgOptions::default()).expect("cluster");
    cluster.psql("postgres", "CREATE DATABASE appdb").unwrap();
    cluster
        .apply_file("appdb", &test_support::init_db_sql())
        .unwrap();
    // A long acquire timeout: a request that waited for it would take 5 s.
    let app = start_on(&cluster.url("appdb"), &[("DB_ACQUIRE_TIMEOUT_MS", "5000")]).await;
    let http = reqwest::Client::new();
    let ready = format!("{}/health/ready", app.url());
    let status = |url: String| {
        let http = http.clone();
        async move { http.get(url).send().await.map(|r| r.status().as_u16()).ok() }
    };
    assert_eq!(status(ready.clone()).await, Some(200));

    cluster.stop().unwrap();
    eventually("readiness to turn 503", Duration::from_secs(20), || async {
        (status(ready.clone()).await == Some(503)).then_some(())
    })
    .await;
    // Liveness does not depend on the database.
    assert_eq!(
        status(format!("{}/health/live", app.url())).await,
        Some(200)
    );
    // Known down: readiness and writes answer at once (503 with the error shape, not a 500),
    // instead of each waiting for the acquire timeout.
    for _ in 0..3 {
        let t = std::time::Instant::now();
        assert_eq!(status(ready.clone()).await, Some(503));
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "readiness took {:?}",
            t.elapsed()
        );
        let t = std::time::Instant::now();
        let r = http
            .post(format!("{}/api/v1/ingest", app.url()))
            .json(&json!({"type":"x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(assert_error(r, 503).await.0, "database_unavailable");
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "a write took {:?}",
            t.elapsed()
        );
    }

    cluster.restart().unwrap();
    eventually(
        "readiness to return to 200",
        Duration::from_secs(20),
        || async { (status(ready.clone()).await == Some(200)).then_some(()) },
    )
    .await;
    let r = http
        .post(format!("{}/api/v1/ingest", app.url()))
        .json(&json!({"type":"x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn shutdown_turns_readiness_off_before_closing() {
    let db = TestDb::new();
    let app = start_on(&db.url, &[("SHUTDOWN_DRAIN_MS", "3000")]).await;
    let base = app.url();
    let http = reqwest::Client::new();
    let shutdown = tokio::spawn(app.shutdown());
    eventually(
        "readiness to report shutting down",
        Duration::from_secs(3),
        || async {
            let r = http.get(format!("{base}/health/ready")).send().await.ok()?;
            let body: Value = r.json().await.ok()?;
            (body["status"] == "shutting_down").then_some(())
        },
    )
    .await;
    // Still serving during the drain.
    let live = http
        .get(format!("{base}/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    shutdown.await.unwrap().expect("clean shutdown");
    assert!(
        http.get(format!("{base}/health/live"))
            .send()
            .await
            .is_err(),
        "the listener is closed after shutdown"
    );
}
