//! `drdctl failover --to dr`: the planned switchover against real PostgreSQL (start.sh as the
//! pods), two Kubernetes doubles and the Azure DNS double.

use serde_json::Value;

use crate::support::{assert_ok, in_recovery, text, Lab, WritableMonitor, DR_INGRESS};

#[tokio::test]
async fn planned_switchover_moves_database_app_and_dns_and_a_rerun_is_a_no_op() {
    let lab = Lab::ready(true).await;
    let pg = lab.pg.as_ref().unwrap();
    let monitor = WritableMonitor::start(pg);
    pg.primary
        .psql(
            "appdb",
            "INSERT INTO users (username, email) VALUES ('acked', 'acked@example.com')",
        )
        .await
        .unwrap();
    let state = lab.dir.path().join("state");
    let state_arg = state.to_str().unwrap();

    // A failover to the region that is already active changes nothing: no pod restarted, the
    // other region's standby left running.
    let noop_state = lab.dir.path().join("noop-state");
    let out = lab
        .drdctl(&[
            "failover",
            "--to",
            "primary",
            "--yes",
            "--state-dir",
            noop_state.to_str().unwrap(),
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(role_marks(&lab.primary), ["(none)"; 3], "{}", text(&out));
    assert_eq!(
        lab.dr.get("statefulsets", "default", "postgresql").unwrap()["spec"]["replicas"],
        1
    );
    assert_eq!(in_recovery(&pg.dr).await, "t");
    assert_eq!(lab.dns_values(), ["127.0.0.2"]);

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
    assert_eq!(in_recovery(&pg.primary).await, "f");

    // As if an earlier run had been killed between the role and the restarts: the role is
    // already active, the pods were not rolled for it. The run must still roll them.
    assert_ok(
        &lab.kubectl(&[
            "--context",
            "dr",
            "patch",
            "configmap",
            "app-config",
            "--type",
            "merge",
            "-p",
            r#"{"data":{"role":"active"}}"#,
        ])
        .await,
    );
    assert_eq!(role_marks(&lab.dr), ["(none)"; 3]);

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
    assert_eq!(in_recovery(&pg.dr).await, "f");
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
    // Every DR deployment was rolled for the active role (the pods read it at start).
    assert_eq!(role_marks(&lab.dr), ["active"; 3]);
    assert_eq!(
        lab.primary
            .get("statefulsets", "default", "postgresql")
            .unwrap()["spec"]["replicas"],
        0
    );
    test_support::eventually(
        "the old primary's server to stop",
        std::time::Duration::from_secs(30),
        || async { (!pg.primary.is_running()).then_some(()) },
    )
    .await;
    // The expected state after a failover passes verify: the retired region warns.
    let out = lab.drdctl(&["verify"]).await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("retired by a failover"), "{t}");

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
    assert_never_two_writable(monitor).await;
}

#[tokio::test]
async fn failback_after_failover_returns_to_the_initial_state() {
    let lab = Lab::ready(true).await;
    let pg = lab.pg.as_ref().unwrap();
    let monitor = WritableMonitor::start(pg);
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
    assert_eq!(in_recovery(&pg.primary).await, "f");
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
    assert_eq!(in_recovery(&pg.dr).await, "t");
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
    assert_eq!(role_marks(&lab.primary), ["active"; 3]);
    // DR's pods were rolled back to the standby role (its template says so for the next time).
    assert_eq!(role_marks(&lab.dr), ["standby"; 3]);

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
    assert_never_two_writable(monitor).await;
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
        t.contains("EMERGENCY")
            && t.contains("--allow-data-loss")
            && t.contains("standby on timeline 1"),
        "{t}"
    );
    assert_eq!(in_recovery(&pg.dr).await, "t", "nothing changed");

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
    assert_eq!(in_recovery(&pg.dr).await, "f");
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
        // Done by this run, or found done (warm-target-app and fence-source run together, so
        // the kill after one can come after the other finished too, unrecorded).
        assert!(
            ["done", "already_done"].contains(&step_state(step).as_str()),
            "{step}: {:#}",
            journal()
        );
        assert_eq!(journal()["completed"], false);
    }
    let out = lab
        .drdctl(&["failover", "--to", "dr", "--yes", "--state-dir", state_arg])
        .await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    // Everything was done by the killed runs: the re-run finds nothing to do and closes the
    // journal.
    assert!(t.contains("resuming") || t.contains("nothing to do"), "{t}");
    assert_eq!(journal()["completed"], true);
    assert_eq!(lab.dns_values(), [DR_INGRESS]);
    assert_eq!(role_marks(&lab.dr), ["active"; 3]);
    // Promoted once: DR is on timeline 2 with one history file.
    assert_eq!(history_files(&pg.dr).await, ["00000002.history"]);
    assert_eq!(in_recovery(&pg.dr).await, "f");

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
    assert_eq!(in_recovery(&pg.dr).await, "t");

    assert_never_two_writable(monitor).await;
}

/// Stops `monitor`; it must have looked often and never seen two writable databases.
async fn assert_never_two_writable(monitor: WritableMonitor) {
    let seen = monitor.stop().await;
    assert!(seen.samples > 5, "{seen:?}");
    assert!(
        seen.both_writable.is_empty(),
        "two writable databases: {seen:?}"
    );
}

/// The timeline history files in `node`'s pg_wal, sorted.
/// The app role each deployment's pods were rolled for (drdctl's pod template mark).
fn role_marks(kube: &lab::KubeDouble) -> Vec<String> {
    ["frontend-api", "business-logic", "data-ingest"]
        .iter()
        .map(|d| {
            kube.get("deployments", "default", d).unwrap()["spec"]["template"]["metadata"]
                ["annotations"]["drdctl.io/app-role"]
                .as_str()
                .unwrap_or("(none)")
                .to_string()
        })
        .collect()
}

/// `t` while the node is a standby, `f` once it is a primary (psql's answer).
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

/// Slow Kubernetes APIs are waited for; Azure DNS failing mid-run stops the run cleanly
/// (exit 3, the journal says where, nothing half-switched) and the re-run resumes; throttling
/// (429 + Retry-After) and a change made behind drdctl's back (412 on the If-Match write) are
/// handled within the step.
#[tokio::test]
async fn kube_latency_and_dns_errors_mid_run_are_handled_or_stop_cleanly_and_resume() {
    use std::os::unix::process::ExitStatusExt;

    let lab = Lab::ready(true).await;
    let dns = lab.dns.as_ref().unwrap();
    let monitor = WritableMonitor::start(lab.pg.as_ref().unwrap());
    let state = lab.dir.path().join("state");
    let state_arg = state.to_str().unwrap();
    let args = ["failover", "--to", "dr", "--yes", "--state-dir", state_arg];

    // Another operator's run holds the switchover lock (a Lease in DR): refused before
    // anything changes, naming the holder and how to break the lock.
    let now = chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    lab.dr
        .create(serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "drdctl-switchover", "namespace": "default"},
            "spec": {
                "holderIdentity": "alice@laptop",
                "leaseDurationSeconds": 900,
                "acquireTime": now,
                "renewTime": now,
            },
        }))
        .unwrap();
    let out = lab.drdctl(&args).await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("alice@laptop") && t.contains("delete lease drdctl-switchover"),
        "{t}"
    );
    assert_eq!(lab.dns_values(), ["127.0.0.2"]);
    assert!(!state.join("journal.json").exists(), "nothing was started");
    // Alice's run died an hour ago: her lease expired, so it is taken over (with a note).
    lab.dr
        .update("leases", "default", "drdctl-switchover", |v| {
            let mut v = v.clone();
            v["spec"]["renewTime"] = "2020-01-01T00:00:00.000000Z".into();
            Ok(v)
        })
        .unwrap();
    let lease_holder = || {
        lab.dr
            .get("leases", "default", "drdctl-switchover")
            .unwrap()["spec"]["holderIdentity"]
            .clone()
    };

    // Every Kubernetes call in both regions 150 ms slower: the steps up to the app
    // activation still complete (the run is then stopped there, to put DNS trouble next).
    for k in [&lab.primary, &lab.dr] {
        k.faults()
            .set_latency(std::time::Duration::from_millis(150));
    }
    let out = lab
        .drdctl_env(&args, &[("DRDCTL_KILL_AT", "activate-target-app:end")])
        .await;
    let t = text(&out);
    assert_eq!(out.status.signal(), Some(9), "{t}");
    assert!(
        t.contains("took over the switchover lock") && t.contains("alice@laptop"),
        "{t}"
    );
    for k in [&lab.primary, &lab.dr] {
        k.faults().set_latency(std::time::Duration::ZERO);
    }

    // ARM answers 500 to everything: switch-dns gives up after its retries; the run stops
    // midway, says how to resume, and the record is untouched.
    dns.azure.faults().fail_next(1000, 500);
    let out = lab.drdctl(&args).await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(3), "{t}");
    assert!(
        t.contains("switch-dns") && t.contains("resume:") && t.contains("drdctl abandon"),
        "{t}"
    );
    assert_eq!(lab.dns_values(), ["127.0.0.2"]);
    // A run that stopped releases the lock (the resume re-observes; it needs no lock kept).
    assert!(lease_holder().is_null(), "{}", lease_holder());
    let listed = assert_ok(&lab.kubectl(&["--context", "dr", "get", "lease"]).await);
    assert!(listed.contains("drdctl-switchover"), "{listed}");
    dns.azure.faults().clear();

    // Throttled once, then a colleague changes the TTL between drdctl's read and its write.
    dns.azure.faults().throttle_next(1, 1);
    let (store, zone) = (dns.azure.store().clone(), dns.zone.clone());
    dns.azure.faults().before_next_write(move || {
        store
            .modify(&zone, "A", "app", |rs| rs.ttl = 120)
            .expect("the record exists");
    });
    let out = lab.drdctl(&args).await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("resuming"), "{t}");
    assert_eq!(lab.dns_values(), [DR_INGRESS]);
    let rs = dns.azure.record(&dns.zone, "A", "app").unwrap();
    assert_eq!(rs.ttl, 120, "the colleague's TTL is kept");
    let statuses = dns.azure.requests().arm_statuses();
    for s in [500, 429, 412] {
        assert!(statuses.contains(&s), "no {s} in {statuses:?}");
    }
    // Released at the end.
    assert!(lease_holder().is_null(), "{}", lease_holder());
    // Promoted once, whatever the retries.
    assert_eq!(
        history_files(&lab.pg.as_ref().unwrap().dr).await,
        ["00000002.history"]
    );
    assert_never_two_writable(monitor).await;
}
