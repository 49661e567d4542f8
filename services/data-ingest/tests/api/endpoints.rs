//! Every endpoint, the seed's curl examples, and bad input.

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{assert_error, count, spawn, spawn_with};

#[tokio::test]
async fn seed_examples_work() {
    let app = spawn().await;
    // The seed README's examples, unchanged.
    let r = app
        .post_json(
            "/api/v1/ingest",
            &json!({"type":"sensor","data":{"temperature":25.5,"humidity":60},"source":"api"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["ingested"], 1);
    let id = body["id"].as_i64().expect("an id");

    let stats: Value = app.get("/api/v1/ingest/stats").await.json().await.unwrap();
    assert_eq!(stats["total_records"], 1);
    assert_eq!(stats["by_type"]["sensor"], 1);
    assert_eq!(stats["by_source"]["api"], 1);
    assert_eq!(stats["records_last_hour"], 1);

    let r = app.get("/api/v1/ingest/recent?limit=10").await;
    assert_eq!(r.status(), 200);
    let recent: Value = r.json().await.unwrap();
    assert_eq!(recent["count"], 1);
    assert_eq!(recent["records"][0]["id"], id);
    assert_eq!(recent["records"][0]["type"], "sensor");
    assert_eq!(
        recent["records"][0]["data"],
        json!({"temperature":25.5,"humidity":60})
    );

    let info: Value = app.get("/api/v1/info").await.json().await.unwrap();
    assert_eq!(info["service"], "data-ingest");
    assert_eq!(info["region"], "test");
    assert_eq!(info["database"]["role"], "primary");
}

#[tokio::test]
async fn ingest_many_records_in_one_request() {
    let app = spawn().await;
    let r = app
        .post_json(
            "/api/v1/ingest",
            &json!([{"type":"a"},{"type":"b","source":"s","data":[1,2]}]),
        )
        .await;
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["ingested"], 2);
    assert_eq!(body["ids"].as_array().unwrap().len(), 2);
    assert!(body.get("id").is_none() || body["id"].is_null());

    let r = app
        .post_json("/api/v1/ingest", &json!({"records":[{"type":"c"}]}))
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(count(&app), 3);
    assert_eq!(
        app.db
            .psql("SELECT source || ':' || payload::text FROM ingested_data WHERE data_type = 'b'"),
        "s:[1, 2]"
    );
}

fn batch(n: usize) -> Value {
    let records: Vec<Value> = (0..n)
        .map(|i| json!({"type":"metric","source":"batch","data":{"i":i}}))
        .collect();
    json!({ "records": records })
}

#[tokio::test]
async fn batch_of_ten_thousand_is_all_or_nothing() {
    let app = spawn().await;
    let r = app.post_json("/api/v1/ingest/batch", &batch(10_000)).await;
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["ingested"], 10_000);
    assert_eq!(count(&app), 10_000);
    assert_eq!(
        app.db
            .psql("SELECT count(DISTINCT payload->>'i') FROM ingested_data WHERE source = 'batch'"),
        "10000"
    );

    // One record over the limit: refused, nothing stored.
    let (code, message) = assert_error(
        app.post_json("/api/v1/ingest/batch", &batch(10_001)).await,
        413,
    )
    .await;
    assert_eq!(code, "batch_too_large");
    assert!(message.contains("10001"), "{message}");

    // One bad record in the middle: refused, named, nothing stored.
    let mut b = batch(6_000);
    b["records"][5_000] = json!({"type": 42});
    let (code, message) = assert_error(app.post_json("/api/v1/ingest/batch", &b).await, 400).await;
    assert_eq!(code, "invalid_record");
    assert!(message.starts_with("records[5000].type"), "{message}");
    assert_eq!(count(&app), 10_000);
}

#[tokio::test]
async fn bad_input_gets_a_4xx_with_the_error_shape() {
    let app = spawn().await;
    let cases: Vec<(&str, &str, &str, u16)> = vec![
        ("/api/v1/ingest", "application/json", "{not json", 400),
        ("/api/v1/ingest", "application/json", "", 400),
        (
            "/api/v1/ingest",
            "application/json",
            "\"just a string\"",
            400,
        ),
        ("/api/v1/ingest", "application/json", r#"{"data":{}}"#, 400),
        ("/api/v1/ingest", "application/json", r#"{"type":5}"#, 400),
        (
            "/api/v1/ingest",
            "application/json",
            r#"{"type":"a","source":[]}"#,
            400,
        ),
        (
            "/api/v1/ingest",
            "application/json",
            r#"{"type":"a","temperature":1}"#,
            400,
        ),
        (
            "/api/v1/ingest",
            "application/json",
            r#"{"type":"a","data":"nul\u0000"}"#,
            400,
        ),
        ("/api/v1/ingest", "text/plain", r#"{"type":"a"}"#, 415),
        (
            "/api/v1/ingest/batch",
            "application/json",
            r#"{"records":[]}"#,
            400,
        ),
        (
            "/api/v1/ingest/batch",
            "application/json",
            r#"{"records":"x"}"#,
            400,
        ),
        (
            "/api/v1/ingest/batch",
            "application/json",
            r#"{"type":"a"}"#,
            400,
        ),
    ];
    for (path, ct, body, status) in cases {
        let r = app.post_raw(path, ct, body.to_string()).await;
        assert_eq!(r.status().as_u16(), status, "{path} {body}");
        assert_error(r, status).await;
    }
    let long = json!({"type": "t".repeat(65)});
    let (_, m) = assert_error(app.post_json("/api/v1/ingest", &long).await, 400).await;
    assert!(m.contains("1 to 64"), "{m}");
    for q in ["0", "101", "-1", "abc", "99999999999999999999"] {
        let r = app.get(&format!("/api/v1/ingest/recent?limit={q}")).await;
        assert_error(r, 400).await;
    }
    assert_error(app.get("/api/v1/nope").await, 404).await;
    assert_error(app.get("/api/v1/ingest").await, 405).await;
    assert_eq!(count(&app), 0, "nothing stored by bad requests");
}

#[tokio::test]
async fn numbers_are_stored_exactly_and_unknown_keys_refused() {
    let app = spawn().await;
    let body = r#"{"type":"n","data":[123456789012345678901234567890,1e-400,0.1]}"#;
    let r = app
        .post_raw("/api/v1/ingest", "application/json", body)
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        app.db.psql(
            "SELECT payload->0 = '123456789012345678901234567890'::jsonb \
             AND payload->1 = '1e-400'::jsonb AND payload->2 = '0.1'::jsonb FROM ingested_data"
        ),
        "t"
    );
    let recent = app
        .get("/api/v1/ingest/recent?limit=1")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        recent.contains("[123456789012345678901234567890, 0.0000"),
        "{recent}"
    );
    for refused in [
        r#"{"records":[{"type":"a"}],"type":"b"}"#,
        r#"{"type":"a","is_admin":true}"#,
        r#"{"type":"a","data":1e400}"#,
    ] {
        let r = app
            .post_raw("/api/v1/ingest", "application/json", refused)
            .await;
        assert_error(r, 400).await;
    }
    assert_eq!(count(&app), 1);
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let app = spawn_with(&[("MAX_BODY_BYTES", "1024")]).await;
    let big = json!({"type":"a","data":{"blob":"x".repeat(2000)}});
    let (code, _) = assert_error(app.post_json("/api/v1/ingest", &big).await, 413).await;
    assert_eq!(code, "payload_too_large");
    // Chunked bodies (no Content-Length) are limited too: written by hand to be sure.
    let body = serde_json::to_vec(&big).unwrap();
    let mut conn = tokio::net::TcpStream::connect(app.running.addr)
        .await
        .unwrap();
    let head = "POST /api/v1/ingest HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(format!("{:x}\r\n", body.len()).as_bytes())
        .await
        .unwrap();
    conn.write_all(&body).await.unwrap();
    conn.write_all(b"\r\n0\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""code":"payload_too_large""#), "{answer}");
    assert_eq!(count(&app), 0);
}

#[tokio::test]
async fn unicode_and_sql_looking_strings_are_stored_verbatim() {
    let app = spawn().await;
    let record = json!({
        "type": "ünïcødé-名前",
        "source": "'; DROP TABLE ingested_data; --",
        "data": {"emoji": "😀", "quote": "it's \"quoted\"", "sql": "1; DELETE FROM users"}
    });
    assert_eq!(app.post_json("/api/v1/ingest", &record).await.status(), 201);
    let recent: Value = app
        .get("/api/v1/ingest/recent?limit=1")
        .await
        .json()
        .await
        .unwrap();
    let got = &recent["records"][0];
    assert_eq!(got["type"], record["type"]);
    assert_eq!(got["source"], record["source"]);
    assert_eq!(got["data"], record["data"]);
    assert_eq!(count(&app), 1);
}

#[tokio::test]
async fn batch_text_survives_copy_escaping() {
    let app = spawn().await;
    let tricky = json!({
        "type": "tab\there",
        "source": "back\\slash\nnewline\\.",
        "data": {"s": "\\N", "t": "line1\r\nline2", "u": "ünï 😀", "sql": "'; DROP TABLE x; --"}
    });
    let r = app
        .post_json(
            "/api/v1/ingest/batch",
            &json!({"records": [tricky.clone(), {"type":"plain"}]}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let recent: Value = app
        .get("/api/v1/ingest/recent?limit=2")
        .await
        .json()
        .await
        .unwrap();
    let stored = recent["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] != "plain")
        .unwrap()
        .clone();
    assert_eq!(stored["type"], tricky["type"]);
    assert_eq!(stored["source"], tricky["source"]);
    assert_eq!(stored["data"], tricky["data"]);
}

#[tokio::test]
async fn request_id_is_echoed_or_made() {
    let app = spawn().await;
    let r = app
        .http
        .get(app.url("/health/live"))
        .header("x-request-id", "drill-42.a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "drill-42.a");
    let r = app.get("/health/live").await;
    let made = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(made.len(), 36, "a uuid: {made}");
    // A hostile id (header injection, huge) is replaced, not echoed.
    let r = app
        .http
        .get(app.url("/health/live"))
        .header("x-request-id", "a b<script>")
        .send()
        .await
        .unwrap();
    assert_ne!(r.headers()["x-request-id"], "a b<script>");
}

#[tokio::test]
async fn metrics_openapi_and_docs_are_served() {
    let app = spawn().await;
    app.get("/api/v1/ingest/stats").await;
    app.get("/api/v1/ingest/recent?limit=0").await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(r#"http_requests_total{method="GET",route="/api/v1/ingest/stats",status="200",service="data-ingest"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"status="400""#));
    assert!(metrics.contains("http_request_duration_seconds_bucket"));
    assert!(metrics.contains("db_pool_max_connections"));

    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    for path in [
        "/ingest",
        "/ingest/batch",
        "/ingest/stats",
        "/ingest/recent",
        "/info",
    ] {
        assert!(
            spec["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
    // What the layers answer is documented too; optional fields answered null are nullable;
    // unknown keys are refused, and so not allowed by the schemas.
    let schemas = &spec["components"]["schemas"];
    assert_eq!(schemas["Ingested"]["properties"]["id"]["nullable"], true);
    assert_eq!(
        schemas["Stats"]["properties"]["last_ingested_at"]["nullable"],
        true
    );
    assert_eq!(schemas["Record"]["additionalProperties"], false);
    let post = &spec["paths"]["/ingest"]["post"]["responses"];
    for status in ["201", "400", "408", "413", "414", "415", "431", "503"] {
        assert!(
            post.get(status).is_some(),
            "POST /ingest does not document {status}"
        );
    }
    assert!(spec["paths"]["/ingest/recent"]["get"]["responses"]
        .get("400")
        .is_some());
    assert!(
        schemas["Record"]["example"].is_object(),
        "no example record"
    );
    let docs = app.get("/docs").await;
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("swagger"));
}

#[tokio::test]
async fn secrets_stay_out_of_info_and_errors() {
    let db = test_support::TestDb::new();
    // Trust auth accepts any password, so the service runs while we check the secret never shows.
    let url = db.url.replace("postgres@", "postgres:s3cret-pw@");
    let running = crate::helpers::start_on(&url, &[]).await;
    let http = reqwest::Client::new();
    for path in [
        "/api/v1/info",
        "/health/ready",
        "/metrics",
        "/openapi.json",
        "/nope",
    ] {
        let body = http
            .get(format!("{}{path}", running.url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!body.contains("s3cret-pw"), "{path} leaks the password");
    }
}
