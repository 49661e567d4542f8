//! Switching the record between regions against the lab: the happy path both ways, plan mode,
//! TTL and metadata surviving, CNAME records, and the authoritative check passing or failing
//! with its deadline named.

use drd_dns::{DnsError, RecordType, SwitchOptions, SwitchOutcome};
use hickory_proto::rr::RecordType as WireType;
use lab::azure::Records;

use crate::support::*;

#[tokio::test]
async fn switch_primary_to_dr_and_back() {
    let lab = Lab::start().await;
    let ops = lab.ops();

    let shown = ops.show().await.unwrap();
    assert_eq!(shown.active_region.as_deref(), Some("primary"));
    assert_eq!(shown.values, vec![PRIMARY]);
    assert!(shown.in_sync, "{shown}");
    let etag_read = lab.record().etag;
    assert_eq!(shown.etag, etag_read);

    let report = ops.switch("dr", &SwitchOptions::default()).await.unwrap();
    assert_eq!(report.outcome, SwitchOutcome::Switched);
    assert_eq!(report.from_region.as_deref(), Some("primary"));
    assert_eq!(
        (report.before.clone(), report.after.clone()),
        (vec![PRIMARY.to_string()], vec![DR.to_string()])
    );
    assert_eq!(
        report.old_value_cached_for_secs, TTL,
        "clients may hold the old address for the old TTL"
    );
    assert!(report.old_value_cached_until.is_some());
    let auth = report
        .authoritative
        .as_ref()
        .expect("confirmed on the authoritative servers");
    assert!(auth
        .answers
        .iter()
        .all(|a| a.values == vec![DR.to_string()]));
    let text = report.to_string();
    assert!(
        text.contains("switched from 203.0.113.10 (primary) to 198.51.100.20 (dr)"),
        "{text}"
    );
    assert!(text.contains("300 s (the old TTL)"), "{text}");

    // The write was conditional on the ETag read just before, and kept TTL and metadata.
    let puts = lab.puts();
    assert_eq!(puts.len(), 1);
    assert_eq!(puts[0].if_match.as_deref(), Some(etag_read.as_str()));
    let held = lab.record();
    assert_eq!(held.records, Records::A(vec![DR.parse().unwrap()]));
    assert_eq!(held.ttl, TTL);
    assert_eq!(held.metadata["owner"], "platform-team");
    assert_eq!(held.metadata["ticket"], "DR-42");
    assert_eq!(report.etag_after.as_deref(), Some(held.etag.as_str()));

    // What a resolver asking the authoritative server sees.
    let (values, ttl) = dig(lab.dns.addr(), "app.example.com", WireType::A).await;
    assert_eq!((values, ttl), (vec![DR.to_string()], Some(TTL)));

    // Again: converges without writing.
    let again = ops.switch("dr", &SwitchOptions::default()).await.unwrap();
    assert_eq!(again.outcome, SwitchOutcome::AlreadyActive);
    assert_eq!(again.old_value_cached_for_secs, 0);
    assert_eq!(
        lab.puts().len(),
        1,
        "an already-switched record is not written again"
    );

    // And back.
    let back = ops
        .switch("primary", &SwitchOptions::default())
        .await
        .unwrap();
    assert_eq!(back.outcome, SwitchOutcome::Switched);
    assert_eq!(back.from_region.as_deref(), Some("dr"));
    let (values, _) = dig(lab.dns.addr(), "app.example.com", WireType::A).await;
    assert_eq!(values, vec![PRIMARY.to_string()]);
    let held = lab.record();
    assert_eq!((held.ttl, held.metadata.len()), (TTL, 2));
    assert_eq!(
        ops.show().await.unwrap().active_region.as_deref(),
        Some("primary")
    );
}

#[tokio::test]
async fn plan_mode_says_what_would_change_and_writes_nothing() {
    let lab = Lab::start().await;
    let before = lab.record();
    let plan = lab
        .ops()
        .switch(
            "dr",
            &SwitchOptions {
                plan: true,
                ..SwitchOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(plan.outcome, SwitchOutcome::Planned);
    assert_eq!(plan.etag_before, before.etag);
    assert_eq!(plan.after, vec![DR.to_string()]);
    assert!(plan.to_string().contains("Nothing was changed"), "{plan}");
    assert!(plan.to_string().contains(&before.etag), "{plan}");
    assert!(lab.puts().is_empty());
    assert_eq!(lab.record(), before);
    let json = serde_json::to_value(&plan).unwrap();
    assert_eq!(json["outcome"], "planned");
    assert_eq!(json["to_region"], "dr");
}

#[tokio::test]
async fn a_ttl_given_with_the_switch_is_set_and_the_old_one_reported() {
    let lab = Lab::start().await;
    let report = lab
        .ops()
        .switch(
            "dr",
            &SwitchOptions {
                ttl: Some(60),
                ..SwitchOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((report.ttl_before, report.ttl_after), (TTL, 60));
    assert_eq!(report.old_value_cached_for_secs, TTL);
    assert_eq!(lab.record().ttl, 60);
    assert_eq!(lab.record().metadata["owner"], "platform-team");
}

#[tokio::test]
async fn cname_records_switch_and_never_flip_type() {
    let lab = Lab::start_with(RecordType::CNAME).await;
    let ops = lab.ops();
    let report = ops.switch("dr", &SwitchOptions::default()).await.unwrap();
    assert_eq!(report.outcome, SwitchOutcome::Switched);
    assert_eq!(lab.record().records, Records::Cname(DR_HOST.to_string()));
    assert_eq!(lab.record().ttl, TTL);
    let body = lab.puts()[0].body.clone().unwrap();
    assert_eq!(body["properties"]["CNAMERecord"]["cname"], DR_HOST);
    assert!(body["properties"].get("ARecords").is_none(), "{body}");
    let (values, _) = dig(lab.dns.addr(), "app.example.com", WireType::CNAME).await;
    assert_eq!(values, vec![DR_HOST.to_string()]);
}

#[tokio::test]
async fn authoritative_check_fails_naming_the_deadline_when_the_server_keeps_the_old_value() {
    let lab = Lab::start().await;
    lab.dns.freeze();
    let ops = lab.ops_with(|c| c.authoritative_deadline_secs = 1);
    let err = ops
        .switch("dr", &SwitchOptions::default())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, DnsError::NotServed { .. }), "{err:?}");
    assert!(
        text.contains("within the 1 s deadline (dns.authoritative_deadline_secs)"),
        "{text}"
    );
    assert!(
        text.contains(PRIMARY),
        "the answer still served is shown: {text}"
    );
    assert!(text.contains("Azure DNS already holds it"), "{text}");
    // Azure holds the new value; the frozen server still serves the old one.
    assert_eq!(lab.record().records, Records::A(vec![DR.parse().unwrap()]));
    let (values, _) = dig(lab.dns.addr(), "app.example.com", WireType::A).await;
    assert_eq!(values, vec![PRIMARY.to_string()]);
    let shown = ops.show().await.unwrap();
    assert!(!shown.in_sync);
    assert!(
        shown
            .to_string()
            .contains("NOT all serve what Azure holds yet"),
        "{shown}"
    );

    // Once the server catches up, running the switch again confirms without writing.
    lab.dns.thaw();
    let again = ops.switch("dr", &SwitchOptions::default()).await.unwrap();
    assert_eq!(again.outcome, SwitchOutcome::AlreadyActive);
    assert!(again.authoritative.is_some());
    assert_eq!(lab.puts().len(), 1);
}

#[tokio::test]
async fn name_servers_default_to_the_zones_and_an_unreachable_one_is_reported() {
    let lab = Lab::start().await;
    // A server that never answers (a bound UDP socket nobody reads).
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let ops = lab.ops_with(|c| {
        c.name_servers = vec![
            lab.dns.addr().to_string(),
            silent.local_addr().unwrap().to_string(),
        ];
        c.query_timeout_ms = 100;
        c.authoritative_deadline_secs = 1;
    });
    let err = ops
        .switch("dr", &SwitchOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no answer (timeout)"), "{err}");

    // With no name servers configured, the zone's (from ARM) are used.
    lab.azure
        .store()
        .set_name_servers(&lab.zone, &[lab.dns.addr().to_string()]);
    let ops = lab.ops_with(|c| c.name_servers.clear());
    let shown = ops.show().await.unwrap();
    assert_eq!(shown.authoritative.len(), 1);
    assert!(shown.in_sync, "{shown}");
}

#[tokio::test]
async fn unknown_region_is_refused_before_any_call() {
    let lab = Lab::start().await;
    let err = lab
        .ops()
        .switch("westus", &SwitchOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no DNS target for region \"westus\": dns.targets has dr, primary"
    );
    assert!(lab.azure.requests().arm().is_empty());
}
