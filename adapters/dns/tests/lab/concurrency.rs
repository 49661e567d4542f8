//! A change between drdctl's read and its write: the 412 is resolved by reading again and
//! deciding again, never by overwriting what someone else wrote.

use std::sync::Arc;

use drd_dns::{DnsError, SwitchOptions, SwitchOutcome};
use lab::azure::{AzureStore, Records, ZoneId};

use crate::support::*;

fn change_behind_the_back(
    store: &Arc<AzureStore>,
    zone: &ZoneId,
    change: impl FnOnce(&mut lab::azure::RecordSet) + Send + 'static,
) -> impl FnOnce() + Send + 'static {
    let (store, zone) = (store.clone(), zone.clone());
    move || {
        store
            .modify(&zone, "A", "app", change)
            .expect("the record exists");
    }
}

#[tokio::test]
async fn a_concurrent_switch_elsewhere_is_never_overwritten() {
    let lab = Lab::start().await;
    lab.azure.faults().before_next_write(change_behind_the_back(
        lab.azure.store(),
        &lab.zone,
        |rs| rs.records = Records::A(vec!["192.0.2.99".parse().unwrap()]),
    ));
    let err = lab
        .ops()
        .switch("dr", &SwitchOptions::default())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, DnsError::ConcurrentChange { .. }), "{err:?}");
    assert!(
        text.contains("held 203.0.113.10 when drdctl read it"),
        "{text}"
    );
    assert!(text.contains("now holds 192.0.2.99"), "{text}");
    assert!(text.contains("overwrote nothing"), "{text}");
    // The colleague's value stands; drdctl wrote once (refused with 412) and never again.
    assert_eq!(
        lab.record().records,
        Records::A(vec!["192.0.2.99".parse().unwrap()])
    );
    let puts = lab.puts();
    assert_eq!(puts.len(), 1);
    assert_eq!(puts[0].status, 412);
}

#[tokio::test]
async fn a_concurrent_ttl_or_metadata_change_is_kept_and_the_switch_goes_on() {
    let lab = Lab::start().await;
    lab.azure.faults().before_next_write(change_behind_the_back(
        lab.azure.store(),
        &lab.zone,
        |rs| {
            rs.ttl = 120;
            rs.metadata.insert("changed_by".into(), "alice".into());
        },
    ));
    let report = lab
        .ops()
        .switch("dr", &SwitchOptions::default())
        .await
        .unwrap();
    assert_eq!(report.outcome, SwitchOutcome::Switched);
    assert_eq!(report.conflicts, 1);
    assert!(
        report
            .to_string()
            .contains("1 concurrent change(s) resolved by re-reading"),
        "{report}"
    );
    let held = lab.record();
    assert_eq!(held.records, Records::A(vec![DR.parse().unwrap()]));
    assert_eq!(held.ttl, 120, "the colleague's TTL is kept");
    assert_eq!(held.metadata["changed_by"], "alice");
    assert_eq!(held.metadata["owner"], "platform-team");
    let puts = lab.puts();
    assert_eq!(
        puts.iter().map(|p| p.status).collect::<Vec<_>>(),
        vec![412, 200]
    );
    assert_ne!(
        puts[0].if_match, puts[1].if_match,
        "the second write uses the re-read ETag"
    );
}

#[tokio::test]
async fn a_concurrent_identical_switch_is_success() {
    let lab = Lab::start().await;
    lab.azure.faults().before_next_write(change_behind_the_back(
        lab.azure.store(),
        &lab.zone,
        |rs| rs.records = Records::A(vec![DR.parse().unwrap()]),
    ));
    let report = lab
        .ops()
        .switch("dr", &SwitchOptions::default())
        .await
        .unwrap();
    assert_eq!(report.outcome, SwitchOutcome::Switched);
    assert_eq!(report.conflicts, 1);
    assert_eq!(
        lab.puts().len(),
        1,
        "the re-read already showed the goal: no second write"
    );
}

#[tokio::test]
async fn a_lost_response_then_412_whose_re_read_shows_the_goal_is_success() {
    let lab = Lab::start().await;
    // The PUT lands, but its answer is lost (500); the retried PUT carries the now-stale ETag.
    lab.azure.faults().lose_next_write_response(500);
    let report = lab
        .ops()
        .switch("dr", &SwitchOptions::default())
        .await
        .unwrap();
    assert_eq!(report.outcome, SwitchOutcome::Switched);
    assert_eq!(report.conflicts, 1);
    let puts = lab.puts();
    assert_eq!(
        puts.iter().map(|p| p.status).collect::<Vec<_>>(),
        vec![500, 412]
    );
    assert_eq!(puts[0].if_match, puts[1].if_match);
    assert_eq!(lab.record().records, Records::A(vec![DR.parse().unwrap()]));
    assert_eq!(lab.record().ttl, TTL);
}
