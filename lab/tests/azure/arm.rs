//! The ARM DNS double and token endpoint over HTTP: shapes, ETags, errors, faults.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::support::*;

const V: &str = "?api-version=2018-05-01";

#[tokio::test]
async fn token_endpoint_issues_tokens_and_refuses_a_bad_secret_like_entra() {
    let arm = Arm::start().await;
    let http = reqwest::Client::new();
    let (status, body) = token(&http, &arm.double.url(), TENANT, CLIENT, SECRET).await;
    assert_eq!(status, 200);
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].as_u64().unwrap() > 0);
    let (status, body) = token(&http, &arm.double.url(), TENANT, CLIENT, "wrong").await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "invalid_client");
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .starts_with("AADSTS7000215"));
    let (status, body) = token(&http, &arm.double.url(), TENANT, "nobody", SECRET).await;
    assert_eq!(
        (status, body["error_codes"][0].as_u64()),
        (400, Some(700016))
    );
    let log = arm.double.requests().token();
    assert_eq!(log.len(), 4);
    assert!(log
        .iter()
        .all(|r| r.client_id.is_some() && r.grant_type.as_deref() == Some("client_credentials")));
    assert!(
        !format!("{log:?}").contains(SECRET),
        "the log never holds the secret"
    );
}

#[tokio::test]
async fn record_sets_have_the_arm_shape_and_need_a_token_and_api_version() {
    let arm = Arm::start().await;
    let (status, headers, body) = arm
        .send(Method::GET, &arm.url(&format!("/A/app{V}")), None, &[])
        .await;
    assert_eq!(status, 200);
    assert!(headers.contains_key("x-ms-request-id"));
    assert_eq!(body["name"], "app");
    assert_eq!(body["type"], "Microsoft.Network/dnszones/A");
    assert_eq!(body["properties"]["TTL"], 300);
    assert_eq!(body["properties"]["fqdn"], "app.example.com.");
    assert_eq!(body["properties"]["metadata"]["owner"], "ops");
    assert_eq!(
        body["properties"]["ARecords"][0]["ipv4Address"],
        "203.0.113.10"
    );
    assert_eq!(
        body["etag"],
        arm.double.record(&arm.zone, "A", "app").unwrap().etag
    );

    let (status, _, body) = arm.send(Method::GET, &arm.url(V), None, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(body["properties"]["nameServers"][1], "ns2-01.azure-dns.net");

    let resp = reqwest::get(arm.url(&format!("/A/app{V}"))).await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let (status, _, body) = arm.send(Method::GET, &arm.url("/A/app"), None, &[]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("MissingApiVersionParameter"))
    );
    let (status, _, _) = arm
        .send(
            Method::GET,
            &arm.url("/A/app?api-version=2016-04-01"),
            None,
            &[],
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn put_honours_if_match_and_if_none_match_and_changes_the_etag() {
    let arm = Arm::start().await;
    let url = arm.url(&format!("/A/app{V}"));
    let etag = arm.double.record(&arm.zone, "A", "app").unwrap().etag;
    let body = json!({"properties": {"TTL": 60, "ARecords": [{"ipv4Address": "198.51.100.20"}]}});

    let (status, _, resp) = arm
        .send(
            Method::PUT,
            &url,
            Some(body.clone()),
            &[("if-match", "stale")],
        )
        .await;
    assert_eq!(status, 412);
    assert_eq!(resp["error"]["code"], "PreconditionFailed");
    let (status, _, resp) = arm
        .send(
            Method::PUT,
            &url,
            Some(body.clone()),
            &[("if-none-match", "*")],
        )
        .await;
    assert_eq!(
        (status, resp["error"]["code"].as_str()),
        (412, Some("PreconditionFailed"))
    );

    let (status, _, resp) = arm
        .send(
            Method::PUT,
            &url,
            Some(body.clone()),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(status, 200);
    assert_ne!(resp["etag"], etag);
    assert!(
        resp["properties"].get("metadata").is_none(),
        "a PUT replaces the whole record set"
    );
    // The old ETag is now stale.
    let (status, _, _) = arm
        .send(
            Method::PUT,
            &url,
            Some(body.clone()),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(status, 412);

    let new = arm.url(&format!("/A/new{V}"));
    let (status, _, _) = arm
        .send(
            Method::PUT,
            &new,
            Some(body.clone()),
            &[("if-none-match", "*")],
        )
        .await;
    assert_eq!(status, 201);
    // A CNAME cannot share a name; a PUT without TTL is refused.
    let cname = json!({"properties": {"TTL": 60, "CNAMERecord": {"cname": "x.example.net"}}});
    let (status, _, _) = arm
        .send(
            Method::PUT,
            &arm.url(&format!("/CNAME/app{V}")),
            Some(cname),
            &[],
        )
        .await;
    assert_eq!(status, 409);
    let (status, _, resp) = arm
        .send(
            Method::PUT,
            &url,
            Some(json!({"properties": {"ARecords": []}})),
            &[],
        )
        .await;
    assert_eq!(status, 400, "{resp}");

    // PATCH merges.
    let (status, _, resp) = arm
        .send(
            Method::PATCH,
            &url,
            Some(json!({"properties": {"metadata": {"k": "v"}}})),
            &[],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(resp["properties"]["TTL"], 60);
    assert_eq!(resp["properties"]["metadata"]["k"], "v");
    let log = arm.double.requests().arm();
    assert_eq!(log.iter().filter(|r| r.method == "PUT").count(), 7);
    assert!(log.iter().all(|r| r.authorized));
}

#[tokio::test]
async fn missing_zone_record_and_resource_group_answer_the_arm_404s() {
    let arm = Arm::start().await;
    let (status, _, body) = arm
        .send(Method::GET, &arm.url(&format!("/A/nope{V}")), None, &[])
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("NotFound"))
    );
    let other_zone = arm
        .url(&format!("/A/app{V}"))
        .replace("example.com", "example.org");
    let (status, _, body) = arm.send(Method::GET, &other_zone, None, &[]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("ResourceNotFound"))
    );
    let other_rg = arm.url(&format!("/A/app{V}")).replace("rg-dns", "rg-x");
    let (status, _, body) = arm.send(Method::GET, &other_rg, None, &[]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("ResourceGroupNotFound"))
    );
}

#[tokio::test]
async fn faults_throttle_fail_delay_and_interfere() {
    let arm = Arm::start().await;
    let url = arm.url(&format!("/A/app{V}"));
    arm.double.faults().throttle_next(1, 7);
    arm.double.faults().fail_next(1, 503);
    let (status, headers, body) = arm.send(Method::GET, &url, None, &[]).await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "7");
    assert_eq!(body["error"]["code"], "TooManyRequests");
    let (status, _, body) = arm.send(Method::GET, &url, None, &[]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("ServiceUnavailable"))
    );
    assert_eq!(arm.double.faults().pending(), 0);

    arm.double.faults().set_latency(Duration::from_millis(200));
    let (status, _, _) = arm.send(Method::GET, &url, None, &[]).await;
    assert_eq!(status, 200);
    let log = arm.double.requests().arm();
    assert_eq!(
        log.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![429, 503, 200]
    );
    arm.double.faults().clear();

    // A write whose answer is lost: applied, answered 500.
    let etag = arm.double.record(&arm.zone, "A", "app").unwrap().etag;
    arm.double.faults().lose_next_write_response(500);
    let body = json!({"properties": {"TTL": 30, "ARecords": [{"ipv4Address": "192.0.2.1"}]}});
    let (status, _, _) = arm
        .send(Method::PUT, &url, Some(body), &[("if-match", &etag)])
        .await;
    assert_eq!(status, 500);
    assert_eq!(arm.double.record(&arm.zone, "A", "app").unwrap().ttl, 30);

    // A change between read and write.
    let etag = arm.double.record(&arm.zone, "A", "app").unwrap().etag;
    let (store, zone) = (arm.double.store().clone(), arm.zone.clone());
    arm.double.faults().before_next_write(move || {
        store.modify(&zone, "A", "app", |rs| rs.ttl = 5);
    });
    let body = json!({"properties": {"TTL": 30, "ARecords": [{"ipv4Address": "192.0.2.2"}]}});
    let (status, _, _) = arm
        .send(Method::PUT, &url, Some(body), &[("if-match", &etag)])
        .await;
    assert_eq!(status, 412);
    assert_eq!(arm.double.record(&arm.zone, "A", "app").unwrap().ttl, 5);
}
