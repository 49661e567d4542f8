//! `drdctl failover --to dr`: the planned switchover against real PostgreSQL (start.sh as the
//! pods), two Kubernetes doubles and the Azure DNS double.

use serde_json::Value;

use crate::support::{assert_ok, text, Lab, DR_INGRESS};

#[tokio::test]
async fn planned_switchover_moves_database_app_and_dns_and_a_rerun_is_a_no_op() {
    let lab = Lab::ready(true).await;
    let pg = lab.pg.as_ref().unwrap();
    pg.primary
        .psql(
            "appdb",
            "INSERT INTO users (username, email) VALUES ('acked', 'acked@example.com')",
        )
        .await
        .unwrap();
    let state = lab.dir.path().join("state");
    let state_arg = state.to_str().unwrap();

    // --plan changes nothing.
    let plan = assert_ok(&lab.drdctl(&["failover", "--to", "dr", "--plan"]).await);
    assert!(plan.contains("would"), "{plan}");
    assert_eq!(lab.dns_values(), ["127.0.0.2"]);
    // Without a terminal and without --yes: refused, nothing changed.
    let out = lab
        .drdctl(&["failover", "--to", "dr", "--state-dir", state_arg])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("--yes"), "{}", text(&out));
    assert_eq!(
        pg.primary
            .psql("postgres", "SELECT pg_is_in_recovery()")
            .await
            .unwrap(),
        "f"
    );

    let out = lab
        .drdctl(&[
            "failover",
            "--to",
            "dr",
            "--yes",
            "--state-dir",
            state_arg,
            "--output",
            "json",
        ])
        .await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    let json_start = String::from_utf8_lossy(&out.stdout)
        .find("{\n")
        .expect("a JSON report");
    let report: Value =
        serde_json::from_str(&String::from_utf8_lossy(&out.stdout)[json_start..]).unwrap();
    assert_eq!(report["evidence"]["lost_bytes"], 0, "{report:#}");
    assert_eq!(report["run"]["completed"], true);

    // The database moved, with the acknowledged write.
    assert_eq!(
        pg.dr
            .psql("postgres", "SELECT pg_is_in_recovery()")
            .await
            .unwrap(),
        "f"
    );
    assert_eq!(
        pg.dr
            .psql("appdb", "SELECT username FROM users")
            .await
            .unwrap(),
        "acked"
    );
    let timeline = pg
        .dr
        .psql(
            "postgres",
            "SELECT timeline_id FROM pg_control_checkpoint()",
        )
        .await
        .unwrap();
    // The app and DNS moved; the old primary can no longer take writes.
    assert_eq!(lab.dns_values(), [DR_INGRESS]);
    assert_eq!(
        lab.dr.get("configmaps", "default", "app-config").unwrap()["data"]["role"],
        "active"
    );
    assert_eq!(
        lab.primary
            .get("configmaps", "default", "app-config")
            .unwrap()["data"]["role"],
        "standby"
    );
    assert_eq!(
        lab.dr
            .get("deployments", "default", "frontend-api")
            .unwrap()["spec"]["replicas"],
        3
    );
    assert_eq!(
        lab.primary
            .get("statefulsets", "default", "postgresql")
            .unwrap()["spec"]["replicas"],
        0
    );
    assert!(
        !pg.primary.is_running(),
        "the old primary's server is stopped"
    );

    // A re-run converges without acting: no second promotion.
    let again = assert_ok(
        &lab.drdctl(&["failover", "--to", "dr", "--yes", "--state-dir", state_arg])
            .await,
    );
    assert!(again.contains("already"), "{again}");
    assert_eq!(
        pg.dr
            .psql(
                "postgres",
                "SELECT timeline_id FROM pg_control_checkpoint()"
            )
            .await
            .unwrap(),
        timeline
    );
}

#[tokio::test]
async fn failback_after_failover_returns_to_the_initial_state() {
    let lab = Lab::ready(true).await;
    let pg = lab.pg.as_ref().unwrap();
    let state = lab.dir.path().join("state");
    let state_arg = state.to_str().unwrap();
    assert_ok(
        &lab.drdctl(&["failover", "--to", "dr", "--yes", "--state-dir", state_arg])
            .await,
    );
    // Written in DR while it is active: must be in the primary region after the failback.
    pg.dr
        .psql(
            "appdb",
            "INSERT INTO users (username, email) VALUES ('in-dr', 'dr@example.com')",
        )
        .await
        .unwrap();

    let out = lab
        .drdctl(&["failback", "--yes", "--state-dir", state_arg])
        .await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("rejoin-old-primary") && t.contains("rejoin-source"),
        "{t}"
    );

    // The initial state: primary region active with its database primary, DR a streaming
    // standby with the standby replica count, DNS at the primary.
    assert_eq!(
        pg.primary
            .psql("postgres", "SELECT pg_is_in_recovery()")
            .await
            .unwrap(),
        "f"
    );
    assert_eq!(
        pg.primary
            .psql(
                "appdb",
                "SELECT username FROM users WHERE username = 'in-dr'"
            )
            .await
            .unwrap(),
        "in-dr"
    );
    assert_eq!(
        pg.dr
            .psql("postgres", "SELECT pg_is_in_recovery()")
            .await
            .unwrap(),
        "t"
    );
    assert_eq!(lab.dns_values(), ["127.0.0.2"]);
    assert_eq!(
        lab.primary
            .get("configmaps", "default", "app-config")
            .unwrap()["data"]["role"],
        "active"
    );
    assert_eq!(
        lab.dr.get("configmaps", "default", "app-config").unwrap()["data"]["role"],
        "standby"
    );
    assert_eq!(
        lab.primary
            .get("deployments", "default", "data-ingest")
            .unwrap()["spec"]["replicas"],
        3
    );
    assert_eq!(
        lab.dr.get("deployments", "default", "data-ingest").unwrap()["spec"]["replicas"],
        1
    );

    // And verify agrees: one writable primary, DR streaming, DNS at the active region.
    let out = lab
        .drdctl(&[
            "verify",
            "--output",
            "json",
            "--check",
            "db",
            "--check",
            "dns.record",
        ])
        .await;
    let doc: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(out.status.code(), Some(0), "{doc:#}");
}

#[tokio::test]
async fn emergency_failover_needs_consent_and_fences_the_old_primary_when_it_returns() {
    let lab = Lab::ready(true).await;
    let pg = lab.pg.as_ref().unwrap();
    let state = lab.dir.path().join("state");
    let state_arg = state.to_str().unwrap();

    // The primary region goes dark: its API and its database.
    pg.primary.kill().await.unwrap();
    lab.primary.down().await;

    let out = lab
        .drdctl(&["failover", "--to", "dr", "--yes", "--state-dir", state_arg])
        .await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("EMERGENCY") && t.contains("--allow-data-loss") && t.contains("received up to"),
        "{t}"
    );
    assert_eq!(
        pg.dr
            .psql("postgres", "SELECT pg_is_in_recovery()")
            .await
            .unwrap(),
        "t",
        "nothing changed"
    );

    let out = lab
        .drdctl(&[
            "failover",
            "--to",
            "dr",
            "--yes",
            "--allow-data-loss",
            "--state-dir",
            state_arg,
        ])
        .await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("DEFERRED") && t.contains("unknown"), "{t}");
    assert_eq!(
        pg.dr
            .psql("postgres", "SELECT pg_is_in_recovery()")
            .await
            .unwrap(),
        "f"
    );
    assert_eq!(lab.dns_values(), [DR_INGRESS]);

    // The primary region's API returns: the same command fences what was deferred.
    lab.primary.up().await.unwrap();
    let out = assert_ok(
        &lab.drdctl(&["failover", "--to", "dr", "--yes", "--state-dir", state_arg])
            .await,
    );
    assert!(out.contains("stop-source-db"), "{out}");
    assert_eq!(
        lab.primary
            .get("statefulsets", "default", "postgresql")
            .unwrap()["spec"]["replicas"],
        0
    );
    assert_eq!(
        lab.primary
            .get("configmaps", "default", "app-config")
            .unwrap()["data"]["role"],
        "standby"
    );
}
