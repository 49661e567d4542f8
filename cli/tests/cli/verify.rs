//! `drdctl verify` against the lab: healthy passes; each fault fails exactly its check, with
//! the object and region named, while the other checks still report.

use serde_json::Value;

use crate::support::{assert_ok, text, Lab};

async fn deployed_lab() -> Lab {
    let lab = Lab::start().await;
    assert_ok(
        &lab.drdctl(&["deploy", "--region", "all", "--rollout-timeout", "60"])
            .await,
    );
    lab
}

async fn verify_json(lab: &Lab, extra: &[&str]) -> (Option<i32>, Vec<Value>, Value) {
    // These labs have no PostgreSQL (see db.rs for the database checks).
    let mut args = vec!["verify", "--output", "json", "--no-db"];
    args.extend_from_slice(extra);
    let out = lab.drdctl(&args).await;
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("verify printed no JSON ({e}):\n{}", text(&out)));
    let results = doc["results"].as_array().unwrap().clone();
    (out.status.code(), results, doc["summary"].clone())
}

fn status_of<'a>(results: &'a [Value], check: &str, region: Option<&str>) -> (&'a str, &'a str) {
    let r = results
        .iter()
        .find(|r| r["check"] == check && r["region"].as_str() == region)
        .unwrap_or_else(|| panic!("no result for {check} {region:?} in {results:?}"));
    (r["status"].as_str().unwrap(), r["detail"].as_str().unwrap())
}

#[tokio::test]
async fn a_healthy_lab_passes_and_writes_valid_junit() {
    let lab = deployed_lab().await;
    let junit = lab.dir.path().join("verify.xml");
    let out = lab
        .drdctl(&["verify", "--no-db", "--junit", junit.to_str().unwrap()])
        .await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("CHECK") && t.contains("app.deployments") && t.contains("0 failed"),
        "{t}"
    );

    let xml = std::fs::read_to_string(&junit).unwrap();
    let doc = roxmltree::Document::parse(&xml).expect("JUnit XML parses");
    let suites = doc.root_element();
    assert_eq!(suites.tag_name().name(), "testsuites");
    let cases: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    assert!(cases.len() >= 9, "{xml}");
    assert!(cases
        .iter()
        .all(|c| c.attribute("name").is_some() && c.attribute("classname").is_some()));
    assert_eq!(suites.attribute("failures"), Some("0"));

    let (code, _, summary) = verify_json(&lab, &[]).await;
    assert_eq!(code, Some(0));
    assert_eq!(summary["failed"], 0);
}

#[tokio::test]
async fn a_deployment_scaled_to_zero_fails_app_deployments_in_that_region_only() {
    let lab = deployed_lab().await;
    assert_ok(
        &lab.kubectl(&[
            "--context",
            "dr",
            "scale",
            "deploy/data-ingest",
            "--replicas=0",
        ])
        .await,
    );
    let (code, results, _) = verify_json(&lab, &[]).await;
    assert_eq!(code, Some(1));
    let (status, detail) = status_of(&results, "app.deployments", Some("dr"));
    assert_eq!(status, "fail");
    assert!(
        detail.contains("deployment/data-ingest is scaled to 0"),
        "{detail}"
    );
    assert_eq!(
        status_of(&results, "app.deployments", Some("primary")).0,
        "pass"
    );
    assert_eq!(status_of(&results, "kube.api", Some("dr")).0, "pass");
}

#[tokio::test]
async fn a_region_api_down_fails_its_checks_and_the_other_region_still_reports() {
    let lab = deployed_lab().await;
    lab.dr.down().await;
    let (code, results, _) = verify_json(&lab, &["--check-timeout", "3000"]).await;
    assert_eq!(code, Some(1));
    let (status, detail) = status_of(&results, "kube.api", Some("dr"));
    assert_eq!(status, "fail");
    assert!(
        detail.contains("context dr") && detail.contains("unreachable"),
        "{detail}"
    );
    assert_eq!(status_of(&results, "kube.api", Some("primary")).0, "pass");
    assert_eq!(
        status_of(&results, "app.deployments", Some("primary")).0,
        "pass"
    );
}

#[tokio::test]
async fn different_images_fail_images_same() {
    let lab = deployed_lab().await;
    assert_ok(
        &lab.kubectl(&[
            "--context",
            "dr",
            "set",
            "image",
            "deploy/frontend-api",
            "frontend-api=registry.example.com/drd/frontend-api:0.2.0",
        ])
        .await,
    );
    let (code, results, _) = verify_json(&lab, &["--check", "images"]).await;
    assert_eq!(code, Some(1));
    let (status, detail) = status_of(&results, "images.same", None);
    assert_eq!(status, "fail");
    assert!(
        detail.contains("deployment/frontend-api") && detail.contains("0.2.0"),
        "{detail}"
    );
    assert_eq!(results.len(), 1, "--check images selects only images.*");
}

#[tokio::test]
async fn filters_and_usage_errors() {
    let lab = deployed_lab().await;
    let (code, results, _) = verify_json(&lab, &["--region", "primary", "--check", "kube"]).await;
    assert_eq!(code, Some(0));
    assert!(results
        .iter()
        .all(|r| r["region"] == "primary" && r["check"].as_str().unwrap().starts_with("kube.")));
    let out = lab
        .drdctl(&["verify", "--no-db", "--check", "nonsense"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no check matches"));
}
