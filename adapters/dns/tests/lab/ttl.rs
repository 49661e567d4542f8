//! The TTL discipline: lower the TTL ahead of a planned failover (and be told to wait the old
//! TTL), keep it through the switch, restore the original afterwards.

use drd_dns::{DnsError, SwitchOptions, TtlAction, ORIGINAL_TTL_KEY};
use hickory_proto::rr::RecordType as WireType;

use crate::support::*;

#[tokio::test]
async fn prepare_lowers_the_ttl_and_says_to_wait_the_old_one_then_restore_puts_it_back() {
    let lab = Lab::start().await;
    let ops = lab.ops();

    let plan = ops.prepare_ttl(60, true).await.unwrap();
    assert!(plan.planned && plan.changed);
    assert_eq!(
        (plan.ttl_before, plan.ttl_after, plan.wait_secs),
        (TTL, 60, TTL)
    );
    assert!(lab.puts().is_empty(), "plan mode writes nothing");

    let prepared = ops.prepare_ttl(60, false).await.unwrap();
    assert_eq!(prepared.action, TtlAction::Prepare);
    assert!(prepared.changed);
    assert_eq!((prepared.ttl_before, prepared.ttl_after), (TTL, 60));
    assert_eq!(prepared.wait_secs, TTL, "wait the old TTL");
    assert!(prepared.wait_until.is_some());
    let text = prepared.to_string();
    assert!(text.contains("TTL lowered from 300 s to 60 s"), "{text}");
    assert!(text.contains("wait 300 s"), "{text}");
    let held = lab.record();
    assert_eq!(held.ttl, 60);
    assert_eq!(held.metadata[ORIGINAL_TTL_KEY], "300");
    assert_eq!(held.metadata["owner"], "platform-team");
    let (_, ttl) = dig(lab.dns.addr(), "app.example.com", WireType::A).await;
    assert_eq!(ttl, Some(60));

    // Lowering further keeps the first original; asking for more than the current TTL
    // changes nothing.
    let again = ops.prepare_ttl(30, false).await.unwrap();
    assert!(again.changed);
    assert_eq!(lab.record().metadata[ORIGINAL_TTL_KEY], "300");
    let same = ops.prepare_ttl(60, false).await.unwrap();
    assert!(!same.changed);
    assert_eq!(same.wait_secs, 0);
    assert!(same.to_string().contains("already 30 s"), "{same}");

    // The switch keeps the lowered TTL, and reports it as the time clients may hold the old value.
    let switched = ops.switch("dr", &SwitchOptions::default()).await.unwrap();
    assert_eq!(switched.old_value_cached_for_secs, 30);
    assert_eq!(lab.record().ttl, 30);

    let restored = ops.restore_ttl(None, false).await.unwrap();
    assert_eq!(restored.action, TtlAction::Restore);
    assert_eq!((restored.ttl_before, restored.ttl_after), (30, TTL));
    assert_eq!(restored.wait_secs, 0);
    let held = lab.record();
    assert_eq!(held.ttl, TTL);
    assert!(!held.metadata.contains_key(ORIGINAL_TTL_KEY));
    assert_eq!(held.metadata["owner"], "platform-team");
    assert_eq!(
        held.records,
        lab::azure::Records::A(vec![DR.parse().unwrap()])
    );

    // Nothing recorded any more: restore needs an explicit TTL.
    let err = ops.restore_ttl(None, false).await.unwrap_err();
    assert!(matches!(err, DnsError::NoOriginalTtl { .. }), "{err:?}");
    assert!(err.to_string().contains(ORIGINAL_TTL_KEY));
    let explicit = ops.restore_ttl(Some(3600), false).await.unwrap();
    assert_eq!(explicit.ttl_after, 3600);
}

#[tokio::test]
async fn out_of_range_ttls_are_refused() {
    let lab = Lab::start().await;
    let err = lab.ops().prepare_ttl(0, false).await.unwrap_err();
    assert!(matches!(err, DnsError::InvalidTtl(0)));
    assert!(lab.puts().is_empty());
}
