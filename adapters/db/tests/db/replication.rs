//! Reading: a row written on the primary reaches the standby, the status reports roles, LSNs,
//! slots and the lag in bytes.

use drd_db::{cluster_status, Database, DbRole};
use std::time::Duration;

use crate::support::{lab, make_table};

#[tokio::test]
async fn a_row_on_the_primary_reaches_the_standby_and_lag_is_measured_in_bytes() {
    let lab = lab().await;
    let (p, d) = (lab.primary.db(), lab.dr.db());
    make_table(&lab.primary).await;
    lab.primary.exec("INSERT INTO t VALUES (1, 'hello')").await;
    lab.dr
        .wait_value("SELECT note FROM t WHERE id = 1", "hello")
        .await;

    let ps = p.status().await.expect("primary status");
    assert_eq!(ps.role, DbRole::Primary);
    assert_eq!(ps.timeline, 1);
    assert!(!ps.fenced);
    assert!(ps.current_lsn.is_some());
    let ds = d.status().await.expect("dr status");
    assert_eq!(ds.role, DbRole::Standby);
    assert_eq!(ds.system_identifier, ps.system_identifier);
    assert!(
        ps.slots.iter().any(|s| s.name == "dr_slot" && s.active),
        "{:?}",
        ps.slots
    );
    crate::support::eventually("the standby to stream", Duration::from_secs(30), || async {
        let s = d.status().await.ok()?;
        (s.wal_receiver?.status == "streaming").then_some(())
    })
    .await;
    crate::support::eventually(
        "dr_slot to show on pg_stat_replication",
        Duration::from_secs(30),
        || async {
            let s = p.status().await.ok()?;
            s.replication
                .iter()
                .any(|c| c.application_name == "dr_slot" && c.state == "streaming")
                .then_some(())
        },
    )
    .await;

    // Replay paused: the primary moves on, the standby's replayed LSN does not.
    lab.dr.exec("SELECT pg_wal_replay_pause()").await;
    crate::support::eventually("replay to pause", Duration::from_secs(30), || async {
        d.status()
            .await
            .ok()?
            .replay_paused
            .filter(|p| *p)
            .map(|_| ())
    })
    .await;
    lab.primary
        .exec("INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(2, 1000) g")
        .await;
    let status = crate::support::eventually("lag to show", Duration::from_secs(30), || async {
        let st = cluster_status(&[&p, &d]).await;
        st.lag.filter(|l| l.bytes > 100_000).map(|_| st)
    })
    .await;
    assert!(
        status
            .warnings
            .iter()
            .any(|w| w.contains("replay is paused")),
        "{:?}",
        status.warnings
    );
    let human = status.to_string();
    assert!(human.contains("replication lag:"), "{human}");
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["regions"][1]["database"]["role"], "standby");
    assert!(json["lag"]["bytes"].as_u64().unwrap() > 100_000);

    lab.dr.exec("SELECT pg_wal_replay_resume()").await;
    crate::support::eventually("the lag to close", Duration::from_secs(30), || async {
        let st = cluster_status(&[&p, &d]).await;
        st.lag.filter(|l| l.bytes == 0).map(|_| ())
    })
    .await;
    assert_eq!(lab.dr.value("SELECT count(*)::text FROM t").await, "1000");
}
