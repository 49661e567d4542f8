//! Group commit (on by default; `GROUP_COMMIT_US`, issue #15): concurrent single-record
//! ingests share one insert and one commit, each answered with its own id only once its row is
//! durable; one client alone commits each row on its own, without waiting; a row the database
//! refuses fails only its own request; a SIGKILL of PostgreSQL in a burst loses no row that was
//! answered 201.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use test_support::{eventually, PgCluster, PgOptions};

use crate::helpers::{count, spawn_with, start_on, TestApp};

async fn post(http: &reqwest::Client, url: &str, source: &str) -> Result<(u16, Value), String> {
    let r = http
        .post(url)
        .json(&json!({"type": "reading", "source": source, "data": {"v": source}}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

/// One single-record `POST /ingest` per source, all at once: each source with its answer.
async fn post_all(app: &TestApp, sources: Vec<String>) -> Vec<(String, (u16, Value))> {
    let url = app.url("/api/v1/ingest");
    futures_util::future::join_all(sources.into_iter().map(|source| {
        let (http, url) = (app.http.clone(), url.clone());
        async move {
            let answer = post(&http, &url, &source).await.unwrap();
            (source, answer)
        }
    }))
    .await
}

/// [`post_all`] with the table locked until every request is in the service: they are then
/// in flight together whatever the load (on two busy cores they could otherwise arrive and
/// finish one by one, with nothing to gather), and commit once the lock goes.
async fn post_all_together(app: &TestApp, sources: Vec<String>) -> Vec<(String, (u16, Value))> {
    use sqlx::Connection;
    let n = sources.len();
    let mut lock = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut lock).await.unwrap();
    sqlx::query("LOCK TABLE ingested_data IN SHARE MODE")
        .execute(&mut lock)
        .await
        .unwrap();
    let release = async {
        eventually(
            "every request in flight",
            Duration::from_secs(20),
            || async { (app.running.state.requests_in_flight() >= n).then_some(()) },
        )
        .await;
        sqlx::query("COMMIT").execute(&mut lock).await.unwrap();
    };
    let (answers, ()) = tokio::join!(post_all(app, sources), release);
    answers
}

fn sources(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

#[tokio::test]
async fn each_request_gets_its_own_id_and_its_own_row() {
    let app = spawn_with(&[("GROUP_COMMIT_US", "20000")]).await;
    let answers = post_all_together(&app, sources("s", 64)).await;
    let mut ids = BTreeSet::new();
    for (sent, (status, body)) in &answers {
        assert_eq!(*status, 201, "{body}");
        let id = body["id"].as_i64().unwrap();
        assert!(ids.insert(id), "id {id} given twice");
        // The id is this request's row.
        let source = app
            .db
            .psql(&format!("SELECT source FROM ingested_data WHERE id = {id}"));
        assert_eq!(&source, sent);
    }
    assert_eq!(count(&app), 64);
    // They were grouped: rows of one statement share its transaction (xmin).
    let (_, commits) = rows_and_commits(&app);
    eprintln!("group commit: 64 concurrent requests in {commits} commits");
    assert!(commits < 64, "no two requests shared a commit");
}

/// Rows and the transactions that wrote them.
fn rows_and_commits(app: &TestApp) -> (i64, i64) {
    let out = app
        .db
        .psql("SELECT count(*) || ' ' || count(DISTINCT xmin::text) FROM ingested_data");
    let mut v = out.split_whitespace().map(|n| n.parse().unwrap());
    (v.next().unwrap(), v.next().unwrap())
}

#[tokio::test]
async fn by_default_concurrent_requests_share_commits_and_one_client_does_not_wait() {
    let app = spawn_with(&[]).await;
    let url = app.url("/api/v1/ingest");
    // One client, one request after the other: nothing to gather, each row its own commit.
    for i in 0..20 {
        let (status, body) = post(&app.http, &url, &format!("alone{i}")).await.unwrap();
        assert_eq!(status, 201, "{body}");
    }
    assert_eq!(rows_and_commits(&app), (20, 20));
    // Many at once: gathered.
    let answers = post_all_together(&app, sources("many", 64)).await;
    assert!(answers.iter().all(|(_, (s, _))| *s == 201), "{answers:?}");
    let (rows, commits) = rows_and_commits(&app);
    eprintln!(
        "group commit by default: 64 concurrent requests in {} commits",
        commits - 20
    );
    assert_eq!(rows, 84);
    assert!(commits - 20 < 64, "no two requests shared a commit");
}

#[tokio::test]
async fn off_commits_every_request_alone() {
    let app = spawn_with(&[("GROUP_COMMIT_US", "off")]).await;
    let answers = post_all(&app, sources("s", 32)).await;
    assert!(answers.iter().all(|(_, (s, _))| *s == 201), "{answers:?}");
    assert_eq!(rows_and_commits(&app), (32, 32));
}

#[tokio::test]
async fn a_row_the_database_refuses_fails_alone() {
    let app = spawn_with(&[("GROUP_COMMIT_US", "20000")]).await;
    app.db
        .psql("ALTER TABLE ingested_data ADD CONSTRAINT no_poison CHECK (source <> 'poison')");
    let sent = (0..40)
        .map(|i| {
            if i % 10 == 3 {
                "poison".to_string()
            } else {
                format!("ok{i}")
            }
        })
        .collect();
    let answers = post_all(&app, sent).await;
    for (source, (status, body)) in &answers {
        if source == "poison" {
            assert_ne!(*status, 201, "{body}");
            assert!(
                body["error"].is_object() || body["code"].is_string(),
                "{body}"
            );
        } else {
            assert_eq!(*status, 201, "{source}: {body}");
        }
    }
    assert_eq!(count(&app), 36);
}

/// The postmaster and its children, SIGKILLed at once (a crash, not a shutdown).
fn kill_postgres(cluster: &PgCluster) {
    let pid_file = cluster.dir().join("data").join("postmaster.pid");
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut pids = vec![pid];
    pids.extend(test_support::child_pids(pid));
    for p in pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[tokio::test]
async fn a_sigkill_of_postgresql_in_a_burst_loses_no_row_answered_201() {
    // Durable settings, as in production (fsync, synchronous_commit on). With the test
    // clusters' usual synchronous_commit = off this test fails: rows answered 201 are lost
    // (16 of 384 when it was tried), which is what it is there to catch.
    let cluster = PgCluster::start(PgOptions {
        durable: true,
        ..PgOptions::default()
    })
    .expect("cluster");
    cluster.psql("postgres", "CREATE DATABASE appdb").unwrap();
    cluster
        .apply_file("appdb", &test_support::init_db_sql())
        .unwrap();
    let app = start_on(
        &cluster.url("appdb"),
        &[("GROUP_COMMIT_US", "500"), ("DB_ACQUIRE_TIMEOUT_MS", "500")],
    )
    .await;
    let url = format!("{}/api/v1/ingest", app.url());
    let acked: Arc<Mutex<Vec<i64>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let (url, acked, stop) = (url.clone(), acked.clone(), stop.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    n += 1;
                    if let Ok((201, body)) = post(&http, &url, &format!("w{w}-{n}")).await {
                        acked.lock().unwrap().push(body["id"].as_i64().unwrap());
                    }
                }
            })
        })
        .collect();
    eventually(
        "a burst of acknowledged writes",
        Duration::from_secs(30),
        || {
            let n = acked.lock().unwrap().len();
            async move { (n >= 300).then_some(()) }
        },
    )
    .await;
    kill_postgres(&cluster);
    // The writers keep trying against the dead server for a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    eventually(
        "PostgreSQL to start after the crash",
        Duration::from_secs(60),
        || async { cluster.restart().ok() },
    )
    .await;
    let acked = acked.lock().unwrap().clone();
    let stored: BTreeSet<i64> = cluster
        .psql("appdb", "SELECT id FROM ingested_data")
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let missing: Vec<&i64> = acked.iter().filter(|id| !stored.contains(id)).collect();
    eprintln!(
        "group commit: {} rows answered 201 before the SIGKILL, {} stored after recovery, {} missing",
        acked.len(),
        stored.len(),
        missing.len()
    );
    assert!(missing.is_empty(), "answered 201 but lost: {missing:?}");
    app.shutdown().await.unwrap();
}
