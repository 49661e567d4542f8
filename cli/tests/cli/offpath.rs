//! The paths around the happy one (issue #13), each against real PostgreSQL in the lab: a
//! no-op failback, a resume that asks again, the lock between two terminals of one user,
//! split brain refused and then resolved by naming the discarded region, `status` exit codes,
//! a failover towards a stopped region, and the manifests re-applied by hand after a failover.

use std::time::Duration;

use serde_json::Value;

use crate::support::{assert_ok, in_recovery, repo_root, text, Lab, DR_INGRESS};

fn role_cm(kube: &lab::KubeDouble) -> Value {
    kube.get("configmaps", "default", "postgresql-role")
        .unwrap()["data"]
        .clone()
}

#[tokio::test]
async fn a_no_op_failback_changes_nothing_and_a_resume_asks_again() {
    let lab = Lab::ready(true).await;
    let pg = lab.pg.as_ref().unwrap();
    let state = lab.dir.path().join("state");
    let state_arg = state.to_str().unwrap();
    let role_before = role_cm(&lab.primary);

    // 1. failback while the primary is active: nothing to do, exit 0, nothing touched (the
    // bug: it set the primary's role to standby and crash-looped its database).
    let plan = assert_ok(&lab.drdctl(&["failback", "--plan"]).await);
    assert!(plan.contains("nothing to do"), "{plan}");
    let out = lab
        .drdctl(&["failback", "--yes", "--state-dir", state_arg])
        .await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("nothing to do"), "{t}");
    assert_eq!(role_cm(&lab.primary), role_before, "{t}");
    assert_eq!(in_recovery(&pg.primary).await, "f");
    assert!(
        !state.join("journal.json").exists(),
        "a no-op leaves no journal"
    );

    // --plan --output json is the plan as JSON, every step with its decision.
    let out = lab
        .drdctl(&["failover", "--to", "dr", "--plan", "--output", "json"])
        .await;
    let doc: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let steps = doc["plan"]["steps"].as_array().unwrap();
    assert_eq!(steps[0]["step"], "preflight");
    assert!(
        steps
            .iter()
            .any(|s| s["step"] == "promote-target" && s["decision"] == "act"),
        "{doc:#}"
    );

    // 2. A run killed after warm-target-app; the re-run without --yes (no terminal) does not
    // go ahead: it shows what was done and what remains, and asks again.
    let out = lab
        .drdctl_env(
            &["failover", "--to", "dr", "--yes", "--state-dir", state_arg],
            &[("DRDCTL_KILL_AT", "warm-target-app:end")],
        )
        .await;
    assert!(out.status.code().is_none(), "killed: {}", text(&out));
    let out = lab
        .drdctl(&["failover", "--to", "dr", "--state-dir", state_arg])
        .await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("resuming") && t.contains("--yes"), "{t}");
    // A different command is refused with both ways on, not "move the journal aside".
    let out = lab
        .drdctl(&["failback", "--yes", "--state-dir", state_arg])
        .await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("drdctl failover --to dr") && t.contains("drdctl abandon"),
        "{t}"
    );
    // status names the unfinished run and cannot name an agreed active region (exit 5).
    let out = lab.drdctl(&["status", "--state-dir", state_arg]).await;
    let t = text(&out);
    assert!(t.contains("UNFINISHED RUN"), "{t}");
    // Abandoned: closed, nothing changed in the clusters; then the other direction runs.
    let t = assert_ok(
        &lab.drdctl(&["abandon", "--yes", "--state-dir", state_arg])
            .await,
    );
    assert!(t.contains("abandoned"), "{t}");
    let t = assert_ok(
        &lab.drdctl(&[
            "failover",
            "--to",
            "primary",
            "--yes",
            "--state-dir",
            state_arg,
        ])
        .await,
    );
    assert!(
        t.contains("primary is active") || t.contains("nothing to do"),
        "{t}"
    );
    assert_eq!(in_recovery(&pg.primary).await, "f");
    assert_eq!(lab.dns_values(), ["127.0.0.2"]);
}

#[tokio::test]
async fn two_terminals_of_one_user_contend_for_the_lock() {
    let lab = Lab::ready(true).await;
    let pg = lab.pg.as_ref().unwrap();
    // Another terminal of this very user on this machine, alive (this test process), holds
    // the Lease for its own run.
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let holder = format!(
        "{user}@{host} pid={} run=failover-other-terminal",
        std::process::id()
    );
    let now = chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    lab.dr
        .create(serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "drdctl-switchover", "namespace": "default"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 900,
                     "acquireTime": now, "renewTime": now},
        }))
        .unwrap();
    let other_dir = lab.dir.path().join("elsewhere");
    let out = lab
        .drdctl(&[
            "failover",
            "--to",
            "dr",
            "--yes",
            "--state-dir",
            other_dir.to_str().unwrap(),
        ])
        .await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("failover-other-terminal"), "{t}");
    assert_eq!(in_recovery(&pg.dr).await, "t", "nothing changed");
    assert!(!other_dir.join("journal.json").exists(), "{t}");
    // status shows the held lock; with both regions unreachable it cannot name an active
    // region: exit 5, not 0.
    let out = lab.drdctl(&["status"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("failover-other-terminal"),
        "{}",
        text(&out)
    );
    lab.primary.down().await;
    lab.dr.down().await;
    let out = lab.drdctl(&["status"]).await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(5), "{t}");
    assert!(t.contains("UNKNOWN"), "{t}");
}

#[tokio::test]
async fn split_brain_is_refused_until_a_region_is_named_and_reapplied_manifests_stay_fenced() {
    let lab = Lab::ready(true).await;
    let pg = lab.pg.as_ref().unwrap();
    let state = lab.dir.path().join("state");
    let state_arg = state.to_str().unwrap();
    assert_eq!(lab.drdctl(&["status"]).await.status.code(), Some(0));

    // A split brain: DR promoted by hand while the primary still takes writes.
    pg.dr.psql("postgres", "SELECT pg_promote()").await.unwrap();
    test_support::eventually("DR promoted by hand", Duration::from_secs(30), || async {
        (in_recovery(&pg.dr).await == "f").then_some(())
    })
    .await;
    pg.primary
        .psql(
            "appdb",
            "INSERT INTO users (username, email) VALUES ('kept', 'kept@example.com')",
        )
        .await
        .unwrap();

    let out = lab.drdctl(&["status"]).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("SPLIT BRAIN"), "{}", text(&out));
    let out = lab.drdctl(&["failover", "--to", "dr", "--plan"]).await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("REFUSED") && t.contains("two writable databases"),
        "{t}"
    );
    let out = lab
        .drdctl(&["failover", "--to", "dr", "--yes", "--state-dir", state_arg])
        .await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("timeline 1") && t.contains("timeline 2") && t.contains("--discard-writes-of"),
        "{t}"
    );
    assert_eq!(in_recovery(&pg.primary).await, "f", "nothing changed: {t}");
    assert!(!state.join("journal.json").exists());

    // The operator names the region whose writes are discarded: the primary's.
    let t = assert_ok(
        &lab.drdctl(&[
            "failover",
            "--to",
            "dr",
            "--yes",
            "--discard-writes-of",
            "primary",
            "--state-dir",
            state_arg,
        ])
        .await,
    );
    assert!(t.contains("dr is active"), "{t}");
    assert_eq!(lab.dns_values(), [DR_INGRESS]);
    assert_eq!(role_cm(&lab.primary)["role"], "fenced", "{t}");
    assert_eq!(
        lab.primary
            .get("statefulsets", "default", "postgresql")
            .unwrap()["spec"]["replicas"],
        0
    );
    assert_eq!(lab.drdctl(&["status"]).await.status.code(), Some(0));

    // A failover towards the stopped region is refused with the way that works (failback),
    // and leaves nothing that blocks it.
    let out = lab
        .drdctl(&[
            "failover",
            "--to",
            "primary",
            "--yes",
            "--state-dir",
            state_arg,
        ])
        .await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("drdctl failback"), "{t}");

    // The seed's habit: the overlay re-applied by hand, client-side and server-side. The
    // StatefulSet comes back to 1 replica, but the database never starts writable.
    let overlay = repo_root().join("manifests/primary");
    for extra in [&[][..], &["--server-side", "--force-conflicts"][..]] {
        let mut args = vec![
            "--context",
            "primary",
            "apply",
            "-k",
            overlay.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        assert_ok(&lab.kubectl(&args).await);
        assert_eq!(role_cm(&lab.primary)["role"], "fenced");
    }
    let reason = test_support::eventually(
        "the old primary's pod refusing to start",
        Duration::from_secs(30),
        || async {
            let pod = lab.primary.get("pods", "default", "postgresql-0")?;
            let msg = pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
                .as_str()?
                .to_string();
            msg.contains("fenced").then_some(msg)
        },
    )
    .await;
    assert!(reason.contains("failback"), "{reason}");
    assert!(
        pg.primary.psql("postgres", "SELECT 1").await.is_err(),
        "not running"
    );
    // The overlay did put the primary's app role back to active: status says the observers
    // disagree (exit 5) while only DR's database is writable; the same failover fixes it.
    let out = lab.drdctl(&["status"]).await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(
        text(&out).contains("writable database in dr"),
        "{}",
        text(&out)
    );
    assert_ok(
        &lab.drdctl(&["failover", "--to", "dr", "--yes", "--state-dir", state_arg])
            .await,
    );
    assert_eq!(lab.drdctl(&["status"]).await.status.code(), Some(0));
    assert_eq!(role_cm(&lab.primary)["role"], "fenced");
    // With the DNS credentials missing only the DNS checks fail; the rest still run (DR was
    // promoted by hand here, without drdctl's replication slot: db.slot fails too).
    let out = lab
        .drdctl_env(&["verify", "-o", "json"], &[("AZURE_CLIENT_SECRET", "")])
        .await;
    let doc: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let results = doc["results"].as_array().unwrap();
    let status = |name: &str| {
        results
            .iter()
            .filter(|r| r["check"] == name)
            .map(|r| r["status"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(out.status.code(), Some(1), "{doc:#}");
    assert_eq!(status("dns.record"), ["fail"], "{doc:#}");
    assert_eq!(status("db.role").len(), 2, "{doc:#}");
    assert_eq!(status("app.deployments"), ["pass", "pass"], "{doc:#}");
}

/// Ctrl-C during a run: it stops between steps, says what was done and the two ways on,
/// releases the Lease; the same command then resumes and finishes.
#[tokio::test]
async fn ctrl_c_stops_between_steps_releases_the_lock_and_the_run_resumes() {
    let lab = Lab::ready(true).await;
    let pg = lab.pg.as_ref().unwrap();
    let state = lab.dir.path().join("state");
    let state_arg = state.to_str().unwrap();
    // Slow Kubernetes calls, so that the run is still going when the operator presses Ctrl-C.
    for k in [&lab.primary, &lab.dr] {
        k.faults().set_latency(Duration::from_millis(200));
    }
    let child = lab
        .drdctl_command(&["failover", "--to", "dr", "--yes", "--state-dir", state_arg])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let journal = state.join("journal.json");
    test_support::eventually(
        "the run to finish its first changing step",
        Duration::from_secs(120),
        || async {
            let j: Value = serde_json::from_slice(&std::fs::read(&journal).ok()?).ok()?;
            j["steps"]
                .as_array()?
                .iter()
                .any(|s| s["name"] == "warm-target-app" && s["state"] != "running")
                .then_some(())
        },
    )
    .await;
    let out = crate::support::interrupt(child).await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(3), "{t}");
    assert!(
        t.contains("interrupted") && t.contains("resume:") && t.contains("drdctl abandon"),
        "{t}"
    );
    let lease = lab
        .dr
        .get("leases", "default", "drdctl-switchover")
        .unwrap();
    assert!(
        lease["spec"]["holderIdentity"].is_null(),
        "released: {lease:#}"
    );
    let j: Value = serde_json::from_slice(&std::fs::read(&journal).unwrap()).unwrap();
    assert_eq!(j["completed"], false, "{j:#}");
    assert!(j["finished"].is_null(), "{j:#}");

    for k in [&lab.primary, &lab.dr] {
        k.faults().set_latency(Duration::ZERO);
    }
    let t = assert_ok(
        &lab.drdctl(&["failover", "--to", "dr", "--yes", "--state-dir", state_arg])
            .await,
    );
    assert!(t.contains("resuming") && t.contains("dr is active"), "{t}");
    assert_eq!(in_recovery(&pg.dr).await, "f");
    assert_eq!(lab.dns_values(), [DR_INGRESS]);
}

/// Every command that reads the lab speaks JSON with `-o json` (one document on stdout), and
/// every command ends quietly when its stdout is closed before it writes (no panic).
#[tokio::test]
async fn every_command_speaks_json_and_survives_a_closed_pipe() {
    let lab = Lab::ready(true).await;
    let state = lab.dir.path().join("state");
    let state_arg = state.to_str().unwrap();
    let init = repo_root().join("init-db.sql");
    let commands: Vec<Vec<&str>> = vec![
        vec!["status", "--state-dir", state_arg],
        vec!["verify"],
        vec!["dns", "show"],
        vec!["dns", "switch", "--to", "dr", "--plan"],
        vec!["dns", "prepare", "--ttl", "60", "--plan"],
        vec!["dns", "restore", "--ttl", "300", "--plan"],
        vec!["failover", "--to", "dr", "--plan"],
        vec![
            "failover",
            "--to",
            "primary",
            "--yes",
            "--state-dir",
            state_arg,
        ],
        vec!["failback", "--plan"],
        vec!["deploy", "--dry-run", "--region", "dr"],
        vec!["init-db", "--dry-run", "--file", init.to_str().unwrap()],
        vec!["abandon", "--yes", "--state-dir", state_arg],
        vec!["practice", "cleanup"],
    ];
    for args in &commands {
        let mut with_json = vec!["-o", "json"];
        with_json.extend(args.iter().copied());
        let out = lab.drdctl(&with_json).await;
        let t = text(&out);
        let doc: Result<Value, _> = serde_json::from_slice(&out.stdout);
        assert!(
            doc.is_ok(),
            "{args:?} printed no JSON document on stdout: {t}"
        );
        assert!(out.status.code().is_some_and(|c| c <= 1), "{args:?}: {t}");

        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = lab
            .drdctl_command(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            out.status.code().is_some_and(|c| c == 141 || c <= 1),
            "{args:?}: {:?} {err}",
            out.status
        );
    }
}
