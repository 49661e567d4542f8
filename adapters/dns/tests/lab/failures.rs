//! What goes wrong on the way to ARM: throttling (Retry-After honoured, or refused when it does
//! not fit the deadline), 5xx retried, deadlines named, authentication failures and missing
//! zones or records explained, and the credential chain (workload identity, nothing at all).

use std::time::Duration;

use drd_dns::{AuthMethod, AzureDns, DnsError, RecordType, SwitchOptions};
use lab::azure::{RecordSet, Records};

use crate::support::*;

#[tokio::test]
async fn throttling_honours_retry_after() {
    let lab = Lab::start().await;
    lab.azure.faults().throttle_next(2, 1);
    let report = lab
        .ops()
        .switch("dr", &SwitchOptions::default())
        .await
        .unwrap();
    assert_eq!(report.after, vec![DR.to_string()]);
    let arm = lab.azure.requests().arm();
    assert_eq!(
        arm.iter().map(|r| r.status).take(3).collect::<Vec<_>>(),
        vec![429, 429, 200]
    );
    // Each retry came no sooner than the server asked.
    for pair in arm[..3].windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(
            gap >= Duration::from_secs(1),
            "retried after {gap:?}, Retry-After was 1 s"
        );
    }
}

#[tokio::test]
async fn a_retry_after_beyond_the_deadline_fails_at_once_naming_it() {
    let lab = Lab::start().await;
    lab.azure.faults().throttle_next(1, 120);
    let ops = lab.ops_with(|c| c.call_deadline_secs = 5);
    let err = ops.show().await.unwrap_err();
    assert!(matches!(err, DnsError::Throttled { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("429 Too Many Requests"), "{text}");
    assert!(text.contains("retry after 120 s"), "{text}");
    assert!(
        text.contains("5 s deadline (dns.call_deadline_secs)"),
        "{text}"
    );
    assert_eq!(lab.azure.requests().arm().len(), 1, "no pointless retry");
}

#[tokio::test]
async fn server_errors_are_retried() {
    let lab = Lab::start().await;
    lab.azure.faults().fail_next(1, 500);
    lab.azure.faults().fail_next(1, 502);
    lab.azure.faults().fail_next(1, 503);
    lab.azure.faults().fail_next(1, 504);
    let shown = lab.ops().show().await.unwrap();
    assert_eq!(shown.values, vec![PRIMARY.to_string()]);
    let statuses = lab.azure.requests().arm_statuses();
    assert_eq!(statuses, vec![500, 502, 503, 504, 200]);
}

#[tokio::test]
async fn retries_are_bounded_and_the_last_error_is_named() {
    let lab = Lab::start().await;
    lab.azure.faults().fail_next(10, 503);
    let err = lab
        .ops_with(|c| c.max_retries = 2)
        .show()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, DnsError::RetriesExhausted { attempts: 3, .. }),
        "{err:?}"
    );
    assert!(text.contains("dns.max_retries = 2"), "{text}");
    assert!(text.contains("503 ServiceUnavailable"), "{text}");
    assert!(text.contains("x-ms-request-id"), "{text}");
}

#[tokio::test]
async fn a_slow_arm_hits_the_call_deadline_which_is_named() {
    let lab = Lab::start().await;
    // Authenticate first, so the deadline is spent on ARM only.
    let ops = lab.ops_with(|c| {
        c.call_deadline_secs = 1;
        c.attempt_timeout_secs = 1;
    });
    ops.show().await.unwrap();
    lab.azure.faults().set_latency(Duration::from_secs(5));
    let err = ops.show().await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, DnsError::Deadline { .. }), "{err:?}");
    assert!(
        text.contains("within the 1 s deadline (dns.call_deadline_secs)"),
        "{text}"
    );
    assert!(text.contains("no answer within"), "{text}");
}

#[tokio::test]
async fn a_bad_client_secret_gives_a_clear_error() {
    let lab = Lab::start().await;
    let env = env_of(&[
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_CLIENT_ID", CLIENT_ID),
        ("AZURE_CLIENT_SECRET", "not-the-secret-9876"),
    ]);
    let dns = AzureDns::with_env(&lab.cfg, &env).unwrap();
    let ops = drd_dns::DnsOps::new(std::sync::Arc::new(dns));
    let err = ops.show().await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, DnsError::Credential(_)), "{err:?}");
    assert!(text.contains("Azure authentication failed"), "{text}");
    assert!(text.contains("service principal (client secret)"), "{text}");
    assert!(text.contains("AADSTS7000215"), "{text}");
    assert!(text.contains("Invalid client secret"), "{text}");
    assert!(!text.contains("not-the-secret-9876"), "{text}");
    assert!(!format!("{err:?}").contains("not-the-secret-9876"));
    // Nothing reached ARM without a token, and the token endpoint was not hammered.
    assert!(lab.azure.requests().arm().is_empty());
    assert!(lab.azure.requests().token().len() <= 2);
}

#[tokio::test]
async fn a_wrong_tenant_is_named_by_entra() {
    let lab = Lab::start().await;
    let env = env_of(&[
        ("AZURE_TENANT_ID", "00000000-0000-0000-0000-00000000dead"),
        ("AZURE_CLIENT_ID", CLIENT_ID),
        ("AZURE_CLIENT_SECRET", SECRET),
    ]);
    let ops = drd_dns::DnsOps::new(std::sync::Arc::new(
        AzureDns::with_env(&lab.cfg, &env).unwrap(),
    ));
    let text = ops.show().await.unwrap_err().to_string();
    assert!(text.contains("AADSTS90002"), "{text}");
    assert!(
        text.contains("00000000-0000-0000-0000-00000000dead"),
        "{text}"
    );
}

#[tokio::test]
async fn no_credential_at_all_lists_what_was_tried() {
    let lab = Lab::start().await;
    let err = AzureDns::with_env(&lab.cfg, &env_of(&[])).unwrap_err();
    let text = err.to_string();
    for expected in [
        "no Azure credential is available; checked, in order:",
        "workload identity: skipped, AZURE_FEDERATED_TOKEN_FILE, AZURE_TENANT_ID, AZURE_CLIENT_ID not set",
        "service principal (client secret): skipped, AZURE_CLIENT_SECRET, AZURE_TENANT_ID, AZURE_CLIENT_ID not set",
        "managed identity: skipped, IDENTITY_ENDPOINT not set",
        "Azure CLI: skipped, `az` not found on PATH",
        "az login",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[tokio::test]
async fn workload_identity_runs_the_federated_flow() {
    let lab = Lab::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("azure-identity-token");
    std::fs::write(&token_file, "eyJhbGciOiJSUzI1NiJ9.lab-service-account.sig").unwrap();
    lab.azure.tokens().register_federated(
        TENANT,
        "f00dcafe-0000-4000-8000-000000000001",
        "eyJhbGciOiJSUzI1NiJ9.lab-service-account.sig",
    );
    let path = token_file.to_string_lossy().to_string();
    let env = env_of(&[
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_CLIENT_ID", "f00dcafe-0000-4000-8000-000000000001"),
        ("AZURE_FEDERATED_TOKEN_FILE", &path),
    ]);
    let mut cfg = lab.cfg.clone();
    cfg.auth = AuthMethod::WorkloadIdentity;
    let dns = AzureDns::with_env(&cfg, &env).unwrap();
    assert_eq!(
        dns.credentials(),
        &[drd_dns::CredentialKind::WorkloadIdentity]
    );
    let shown = drd_dns::DnsOps::new(std::sync::Arc::new(dns))
        .show()
        .await
        .unwrap();
    assert_eq!(shown.active_region.as_deref(), Some("primary"));
    let token = lab.azure.requests().token();
    assert_eq!(token[0].grant_type.as_deref(), Some("client_credentials"));
    assert_eq!(token[0].status, 200);
}

#[tokio::test]
async fn a_missing_zone_or_resource_group_names_the_keys() {
    let lab = Lab::start().await;
    let err = lab
        .ops_with(|c| c.zone = "missing.example".into())
        .show()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, DnsError::ZoneNotFound { .. }), "{err:?}");
    assert!(
        text.contains("the DNS zone missing.example was not found in resource group rg-dns"),
        "{text}"
    );
    assert!(text.contains("ResourceNotFound"), "{text}");
    assert!(
        text.contains("check dns.subscription, dns.resource_group and dns.zone"),
        "{text}"
    );

    let text = lab
        .ops_with(|c| c.resource_group = "rg-typo".into())
        .show()
        .await
        .unwrap_err()
        .to_string();
    assert!(text.contains("ResourceGroupNotFound"), "{text}");
}

#[tokio::test]
async fn a_missing_record_is_explained_and_never_created() {
    let lab = Lab::start().await;
    let ops = lab.ops_with(|c| c.record = "shop".into());
    let err = ops
        .switch("dr", &SwitchOptions::default())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, DnsError::RecordNotFound { .. }), "{err:?}");
    assert!(
        text.contains("the A record set shop does not exist in zone example.com"),
        "{text}"
    );
    assert!(text.contains("never creates or deletes it"), "{text}");
    assert!(lab.puts().is_empty());
    assert!(lab.azure.record(&lab.zone, "A", "shop").is_none());
}

#[tokio::test]
async fn the_wrong_record_type_is_explained_not_flipped() {
    let lab = Lab::start().await;
    // The record is A; the config says CNAME.
    let ops = lab.ops_with(|c| {
        c.record_type = RecordType::CNAME;
        c.targets.insert("primary".into(), PRIMARY_HOST.into());
        c.targets.insert("dr".into(), DR_HOST.into());
    });
    let text = ops
        .switch("dr", &SwitchOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("the CNAME record set app does not exist"),
        "{text}"
    );
    assert!(
        text.contains("there is an A record set of that name: set dns.record_type = \"A\""),
        "{text}"
    );
    assert!(lab.puts().is_empty());
    assert!(matches!(lab.record().records, Records::A(_)));
}

#[tokio::test]
async fn a_record_at_no_configured_value_is_switched_and_reported() {
    let lab = Lab::start().await;
    lab.azure.seed(
        &lab.zone,
        RecordSet::a("app", TTL, &["192.0.2.7".parse().unwrap()]),
    );
    let report = lab
        .ops()
        .switch("dr", &SwitchOptions::default())
        .await
        .unwrap();
    assert_eq!(report.from_region, None);
    assert!(
        report
            .to_string()
            .contains("192.0.2.7 (no configured region)"),
        "{report}"
    );
}
