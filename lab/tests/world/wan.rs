//! The regions at a distance, through the lab's control API (as `drdctl lab partition|heal|
//! kill-region` use it): the operator's kubectl pays the round trip; a region blackholed from
//! the operator hangs its kubectl while the other answers; blackholed from the other region,
//! replication stops and catches up after the heal; a killed region refuses.

use std::time::{Duration, Instant};

use lab::control::call;
use lab::wan::WanSettings;
use serde_json::json;
use test_support::eventually;

use crate::support::Lab;

#[tokio::test]
async fn partitions_heal_and_kill_region_through_the_control_api() {
    let lab = Lab::start_with(WanSettings {
        rtt_ms: 40.0,
        mbit: 200.0,
    })
    .await;
    let dir = lab.world.cfg.dir.clone();
    let op = lab.operator();
    op.deploy_both(&lab).await;
    op.ok("kubectl config use-context primary-aks-cluster")
        .await;
    op.ok(
        r#"kubectl exec postgresql-0 -- psql -U postgres -d appdb -c "CREATE TABLE marks (n int)""#,
    )
    .await;
    let dr_count = || async { op.sql("dr-aks-cluster", "SELECT count(*) FROM marks").await };
    eventually("the table on DR", Duration::from_secs(30), || async {
        (dr_count().await? == "0").then_some(())
    })
    .await;

    // Every operator request to a region crosses the WAN: at least one round trip.
    let state = call(&dir, "GET", "/wan", None).await.unwrap();
    assert_eq!(state["settings"], json!({"rtt_ms": 40.0, "mbit": 200.0}));
    let t = Instant::now();
    op.ok("kubectl get --raw /version").await;
    assert!(
        t.elapsed() >= Duration::from_millis(40),
        "{:?}",
        t.elapsed()
    );

    // Primary blackholed from the operator and from DR.
    let cut = call(
        &dir,
        "POST",
        "/partition",
        Some(json!({"region": "primary", "parties": ["operator", "dr"], "mode": "blackhole"})),
    )
    .await
    .unwrap();
    assert_eq!(
        cut["cut"],
        json!(["primary <-> dr", "operator <-> primary"]),
        "{cut}"
    );
    let out = op
        .line("kubectl --request-timeout=2s --context primary-aks-cluster get pods")
        .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Client.Timeout")
            || err.contains("context deadline exceeded")
            || err.contains("timeout"),
        "{err}"
    );
    // DR still answers the operator; writes on the primary (made where the operator cannot
    // see) do not reach DR while cut.
    op.ok("kubectl --context dr-aks-cluster get pods").await;
    lab.world
        .pg
        .primary
        .psql("appdb", "INSERT INTO marks VALUES (1)")
        .await
        .unwrap();
    let held = tokio::time::timeout(Duration::from_secs(1), async {
        eventually("the write on DR", Duration::from_secs(1), || async {
            (dr_count().await? == "1").then_some(())
        })
        .await
    })
    .await;
    assert!(held.is_err(), "a write crossed a blackholed link");
    assert_eq!(dr_count().await.as_deref(), Some("0"));

    // Healed: the operator reaches the primary, replication catches up.
    let healed = call(&dir, "POST", "/heal", Some(json!({"region": "primary"})))
        .await
        .unwrap();
    assert_eq!(healed["healed"].as_array().unwrap().len(), 2, "{healed}");
    op.ok("kubectl --context primary-aks-cluster get pods")
        .await;
    eventually(
        "the write on DR after the heal",
        Duration::from_secs(60),
        || async { (dr_count().await? == "1").then_some(()) },
    )
    .await;

    // Bad requests are refused with a reason.
    let err = call(
        &dir,
        "POST",
        "/partition",
        Some(json!({"region": "mars", "parties": ["dr"], "mode": "refuse"})),
    )
    .await
    .unwrap_err();
    assert!(err.contains("no region \"mars\""), "{err}");

    // The primary region lost: its processes gone, its API refused; DR untouched.
    assert!(!lab.world.primary.runtime.running().is_empty());
    call(
        &dir,
        "POST",
        "/kill-region",
        Some(json!({"region": "primary"})),
    )
    .await
    .unwrap();
    assert!(lab.world.primary.runtime.running().is_empty());
    assert!(!lab.world.pg.primary.is_running());
    let out = op
        .line("kubectl --request-timeout=5s --context primary-aks-cluster get pods")
        .await;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("was refused"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    op.ok("kubectl --context dr-aks-cluster get pods").await;
    assert_eq!(dr_count().await.as_deref(), Some("1"));
    lab.world.stop().await;
}
