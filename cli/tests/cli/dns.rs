//! `drdctl dns ...` and verify's DNS checks against the ARM double, its token endpoint (the
//! real azure_identity client-secret flow) and the authoritative name server.

use serde_json::Value;

use crate::support::{assert_ok, text, Lab, CLIENT_SECRET, DR_INGRESS, PRIMARY_INGRESS};

#[tokio::test]
async fn show_plan_refuse_switch() {
    let lab = Lab::start().await.with_dns().await;
    let out = assert_ok(&lab.drdctl(&["dns", "show"]).await);
    assert!(
        out.contains("app.example.com") && out.contains(PRIMARY_INGRESS),
        "{out}"
    );
    let json: Value = serde_json::from_slice(
        &lab.drdctl(&["dns", "show", "--output", "json"])
            .await
            .stdout,
    )
    .unwrap();
    assert_eq!(json["active_region"], "primary");
    assert_eq!(json["in_sync"], true);

    let plan = assert_ok(&lab.drdctl(&["dns", "switch", "--to", "dr", "--plan"]).await);
    assert!(plan.contains(DR_INGRESS), "{plan}");
    assert_eq!(
        lab.dns_values(),
        [PRIMARY_INGRESS],
        "--plan changes nothing"
    );

    // No terminal and no --yes: refused, nothing changed.
    let out = lab.drdctl(&["dns", "switch", "--to", "dr"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("--yes"), "{}", text(&out));
    assert_eq!(lab.dns_values(), [PRIMARY_INGRESS]);

    let out = assert_ok(&lab.drdctl(&["dns", "switch", "--to", "dr", "--yes"]).await);
    assert_eq!(lab.dns_values(), [DR_INGRESS]);
    assert!(out.contains(DR_INGRESS), "{out}");
    // A second switch is a no-op.
    let again = assert_ok(
        &lab.drdctl(&["dns", "switch", "--to", "dr", "--yes", "--output", "json"])
            .await,
    );
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["outcome"], "already_active", "{again}");

    let ttl = assert_ok(&lab.drdctl(&["dns", "prepare", "--ttl", "60"]).await);
    assert!(
        ttl.contains("300"),
        "says how long to wait (the old TTL): {ttl}"
    );
    assert_ok(&lab.drdctl(&["dns", "restore"]).await);

    for args in [
        vec!["dns", "show"],
        vec!["dns", "switch", "--to", "primary", "--yes"],
    ] {
        let o = lab.drdctl(&args).await;
        assert!(
            !text(&o).contains(CLIENT_SECRET),
            "the client secret was printed"
        );
    }
}

#[tokio::test]
async fn missing_or_bad_dns_config_is_a_usage_error_naming_the_key() {
    let lab = Lab::start().await;
    let out = lab.drdctl(&["dns", "show"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("[dns]"), "{}", text(&out));
    let lab = lab.with_dns().await;
    let cfg = std::fs::read_to_string(lab.config())
        .unwrap()
        .replace("dr = \"127.0.0.3\"", "");
    std::fs::write(lab.config(), cfg).unwrap();
    let out = lab.drdctl(&["dns", "show"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("dns.targets"), "{}", text(&out));
}

#[tokio::test]
async fn verify_checks_the_record_the_name_servers_and_the_ttl() {
    let lab = Lab::start().await.with_dns().await;
    assert_ok(
        &lab.drdctl(&["deploy", "--region", "all", "--rollout-timeout", "60"])
            .await,
    );
    let run = |extra: Vec<&'static str>| {
        let lab = &lab;
        async move {
            let mut args = vec!["verify", "--output", "json", "--check", "dns"];
            args.extend(extra);
            let out = lab.drdctl(&args).await;
            let doc: Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
            (
                out.status.code(),
                doc["results"].as_array().unwrap().clone(),
            )
        }
    };
    let find = |results: &[Value], check: &str| -> (String, String) {
        let r = results.iter().find(|r| r["check"] == check).unwrap();
        (
            r["status"].as_str().unwrap().into(),
            r["detail"].as_str().unwrap().into(),
        )
    };
    let (code, results) = run(vec![]).await;
    assert_eq!(code, Some(0), "{results:?}");
    assert_eq!(find(&results, "dns.record").0, "pass");
    assert_eq!(find(&results, "dns.authoritative").0, "pass");
    assert_eq!(find(&results, "dns.ttl").0, "pass");

    // TTL above the budget: a warning, not a failure.
    let (code, results) = run(vec!["--rto-budget", "60"]).await;
    assert_eq!(code, Some(0));
    let (status, detail) = find(&results, "dns.ttl");
    assert_eq!(status, "warn");
    assert!(detail.contains("drdctl dns prepare"), "{detail}");

    // The name server stops following: the switch is written but not served, and says so.
    lab.dns.as_ref().unwrap().server.freeze();
    let out = lab.drdctl(&["dns", "switch", "--to", "dr", "--yes"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("5"),
        "the deadline is named: {}",
        text(&out)
    );
    assert_eq!(lab.dns_values(), [DR_INGRESS]);

    // Now the record points at dr while primary is the active region, and the name server
    // still serves the old value: both checks fail, each saying what is wrong.
    let (code, results) = run(vec![]).await;
    assert_eq!(code, Some(1));
    let (status, detail) = find(&results, "dns.record");
    assert_eq!(status, "fail");
    assert!(
        detail.contains("points at region dr") && detail.contains("active region is primary"),
        "{detail}"
    );
    let (status, detail) = find(&results, "dns.authoritative");
    assert_eq!(status, "fail");
    assert!(detail.contains("do not all serve"), "{detail}");
}
