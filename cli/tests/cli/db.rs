//! drdctl with real PostgreSQL in both regions (the manifests' start.sh as the `postgresql-0`
//! pods, reached through port-forward): init-db, status, and verify's database checks, each
//! fault failing its check.

use serde_json::Value;

use crate::support::{assert_ok, text, Lab};

async fn lab_with_schema() -> Lab {
    Lab::ready(false).await
}

async fn verify(lab: &Lab, extra: &[&str]) -> (Option<i32>, Vec<Value>) {
    let mut args = vec![
        "verify",
        "--output",
        "json",
        "--check",
        "db",
        "--check-timeout",
        "20000",
    ];
    args.extend_from_slice(extra);
    let out = lab.drdctl(&args).await;
    let doc: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    (
        out.status.code(),
        doc["results"].as_array().unwrap().clone(),
    )
}

fn find<'a>(results: &'a [Value], check: &str, region: Option<&str>) -> (&'a str, &'a str) {
    let r = results
        .iter()
        .find(|r| r["check"] == check && r["region"].as_str() == region)
        .unwrap_or_else(|| panic!("no {check} {region:?} in {results:?}"));
    (r["status"].as_str().unwrap(), r["detail"].as_str().unwrap())
}

#[tokio::test]
async fn init_db_status_and_database_checks() {
    let lab = lab_with_schema().await;
    let schema = crate::support::repo_root().join("init-db.sql");
    let schema = schema.to_str().unwrap();

    // A second init-db changes nothing; on the standby it is refused, naming the primary.
    let again = assert_ok(&lab.drdctl(&["init-db", "--file", schema]).await);
    assert!(again.contains("already applied"), "{again}");
    let out = lab
        .drdctl(&["init-db", "--region", "dr", "--file", schema])
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("standby") && text(&out).contains("primary"),
        "{}",
        text(&out)
    );

    let status = assert_ok(&lab.drdctl(&["status"]).await);
    assert!(
        status.contains("primary") && status.contains("standby"),
        "{status}"
    );
    let json: Value = serde_json::from_str(&assert_ok(
        &lab.drdctl(&["status", "--output", "json"]).await,
    ))
    .unwrap();
    assert_eq!(json["database"]["regions"].as_array().unwrap().len(), 2);

    // -v: each database session and its time on stderr, stdout unchanged; no secret at any
    // level; without -v, no log lines.
    let quiet = lab.drdctl(&["status"]).await;
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("session opened"));
    let verbose = lab.drdctl(&["-v", "status"]).await;
    let log = String::from_utf8_lossy(&verbose.stderr);
    assert!(verbose.status.success(), "{}", text(&verbose));
    assert!(
        log.contains("session opened") && log.contains("region") && log.contains("ms="),
        "{log}"
    );
    let shown = String::from_utf8_lossy(&verbose.stdout);
    assert!(
        shown.contains("primary") && !shown.contains("session opened"),
        "{shown}"
    );
    let trace = lab.drdctl(&["-vv", "status"]).await;
    for out in [&verbose, &trace] {
        let all = text(out);
        assert!(!all.contains(crate::support::PASSWORD), "{all}");
        assert!(!all.contains(crate::support::CLIENT_SECRET), "{all}");
    }

    // Healthy: every database check passes.
    let (code, results) = verify(&lab, &[]).await;
    assert_eq!(code, Some(0), "{results:#?}");
    for check in ["db.primary", "db.lag", "db.slot", "db.schema"] {
        assert_eq!(
            find(&results, check, None).0,
            "pass",
            "{check}: {results:#?}"
        );
    }
    assert_eq!(find(&results, "db.standby", Some("dr")).0, "pass");
    assert_eq!(find(&results, "db.role", Some("dr")).0, "pass");

    // Lag above the bound: replay paused on the standby, a write on the primary.
    let pg = lab.pg.as_ref().unwrap();
    pg.dr
        .psql("postgres", "SELECT pg_wal_replay_pause()")
        .await
        .unwrap();
    pg.primary
        .psql(
            "appdb",
            "INSERT INTO ingested_data (data_type) SELECT 'lag' FROM generate_series(1, 2000)",
        )
        .await
        .unwrap();
    let (code, results) = verify(&lab, &["--max-lag-bytes", "1024"]).await;
    assert_eq!(code, Some(1));
    let (status, detail) = find(&results, "db.lag", None);
    assert_eq!(status, "fail");
    assert!(
        detail.contains("standby dr") && detail.contains("behind primary"),
        "{detail}"
    );
    assert_eq!(
        find(&results, "db.primary", None).0,
        "pass",
        "other checks still report"
    );
    pg.dr
        .psql("postgres", "SELECT pg_wal_replay_resume()")
        .await
        .unwrap();

    // Two primaries: the standby promoted behind drdctl's back.
    pg.dr
        .psql("postgres", "SELECT pg_promote(true, 60)")
        .await
        .unwrap();
    let (code, results) = verify(&lab, &[]).await;
    assert_eq!(code, Some(1));
    let (status, detail) = find(&results, "db.primary", None);
    assert_eq!(status, "fail");
    assert!(
        detail.contains("split brain") && detail.contains("dr") && detail.contains("primary"),
        "{detail}"
    );
    let (status, detail) = find(&results, "db.role", Some("dr"));
    assert_eq!(status, "fail");
    assert!(
        detail.contains("configmap/app-config says standby"),
        "{detail}"
    );
}

#[tokio::test]
async fn a_stopped_standby_fails_its_check_and_the_rest_still_report() {
    let lab = lab_with_schema().await;
    lab.pg.as_ref().unwrap().dr.stop().await.unwrap();
    let (code, results) = verify(&lab, &[]).await;
    assert_eq!(code, Some(1));
    let (status, detail) = find(&results, "db.standby", Some("dr"));
    assert_eq!(status, "fail");
    assert!(detail.contains("dr"), "{detail}");
    let (status, _) = find(&results, "db.primary", None);
    assert_eq!(status, "warn", "the primary is still seen: {results:#?}");
    assert_eq!(find(&results, "db.role", Some("primary")).0, "pass");
}
