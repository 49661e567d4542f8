//! `drdctl failover --to dr`: the planned switchover against real PostgreSQL (start.sh as the
//! pods), two Kubernetes doubles and the Azure DNS double.

use serde_json::Value;

use crate::support::{assert_ok, text, Lab, WritableMonitor, DR_INGRESS};

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
    // stdout is the JSON document alone; progress went to stderr.
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {t}"));
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

/// Every step boundary of a failover (killed right after each step is journaled as done) and
/// of a failback (killed right after each step is journaled as started): each re-run resumes,
/// the last one converges, each database is promoted exactly once, and at no moment do both
/// databases take writes.
#[tokio::test]
async fn killed_at_every_step_boundary_each_rerun_resumes_and_promotes_exactly_once() {
    use std::os::unix::process::ExitStatusExt;

    let lab = Lab::ready(true).await;
    let pg = lab.pg.as_ref().unwrap();
    let monitor = WritableMonitor::start(pg);
    let state = lab.dir.path().join("state");
    let state_arg = state.to_str().unwrap();
    let journal = || -> Value {
        serde_json::from_slice(&std::fs::read(state.join("journal.json")).unwrap()).unwrap()
    };
    let step_state = |name: &str| -> String {
        journal()["steps"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .find(|s| s["name"] == name)
            .map(|s| s["state"].as_str().unwrap().to_string())
            .unwrap_or_default()
    };

    let failover = [
        "preflight",
        "warm-target-app",
        "fence-source",
        "wait-replay",
        "promote-target",
        "activate-target-app",
        "switch-dns",
        "demote-source-app",
        "stop-source-db",
    ];
    for step in failover {
        let out = lab
            .drdctl_env(
                &["failover", "--to", "dr", "--yes", "--state-dir", state_arg],
                &[("DRDCTL_KILL_AT", &format!("{step}:end"))],
            )
            .await;
        assert_eq!(out.status.signal(), Some(9), "{step}: {}", text(&out));
        assert_eq!(step_state(step), "done", "{step}: {:#}", journal());
        assert_eq!(journal()["completed"], false);
    }
    let out = lab
        .drdctl(&["failover", "--to", "dr", "--yes", "--state-dir", state_arg])
        .await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("resuming"), "{t}");
    assert_eq!(journal()["completed"], true);
    assert_eq!(lab.dns_values(), [DR_INGRESS]);
    // Promoted once: DR is on timeline 2 with one history file.
    assert_eq!(history_files(&pg.dr).await, ["00000002.history"]);
    assert_eq!(
        pg.dr
            .psql("postgres", "SELECT pg_is_in_recovery()")
            .await
            .unwrap(),
        "f"
    );

    let failback = [
        "rejoin-old-primary",
        "preflight",
        "warm-target-app",
        "fence-source",
        "wait-replay",
        "promote-target",
        "activate-target-app",
        "switch-dns",
        "demote-source-app",
        "rejoin-source",
        "restore-source-app",
    ];
    for step in failback {
        let out = lab
            .drdctl_env(
                &["failback", "--yes", "--state-dir", state_arg],
                &[("DRDCTL_KILL_AT", &format!("{step}:begin"))],
            )
            .await;
        assert_eq!(out.status.signal(), Some(9), "{step}: {}", text(&out));
        assert_eq!(step_state(step), "running", "{step}: {:#}", journal());
    }
    let out = lab
        .drdctl(&["failback", "--yes", "--state-dir", state_arg])
        .await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert_eq!(journal()["completed"], true);
    assert_eq!(lab.dns_values(), ["127.0.0.2"]);
    // The primary region's database was promoted once (timeline 2 came from DR by rewind).
    assert_eq!(
        history_files(&pg.primary).await,
        ["00000002.history", "00000003.history"]
    );
    assert_eq!(
        pg.dr
            .psql("postgres", "SELECT pg_is_in_recovery()")
            .await
            .unwrap(),
        "t"
    );

    let seen = monitor.stop().await;
    assert!(seen.samples > 20, "{seen:?}");
    assert!(
        seen.both_writable.is_empty(),
        "two writable databases: {seen:?}"
    );
}

/// The timeline history files in `node`'s pg_wal, sorted.
async fn history_files(node: &lab::pg::SharedNode) -> Vec<String> {
    let out = node
        .psql(
            "postgres",
            "SELECT string_agg(name, ',' ORDER BY name) FROM pg_ls_waldir() WHERE name LIKE '%.history'",
        )
        .await
        .unwrap();
    out.split(',')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}
