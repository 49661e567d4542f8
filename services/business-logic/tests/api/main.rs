//! business-logic against a real PostgreSQL: validation, orders, analytics, bad input.

use common::{Running, ServiceConfig};
use reqwest::Response;
use serde_json::{json, Value};
use test_support::{json_error, service_env};

type TestApp = test_support::TestApp<Running>;

async fn spawn() -> TestApp {
    TestApp::spawn(|db_url| async move {
        let config = ServiceConfig::from_lookup(
            business_logic::DEFAULT_PORT,
            business_logic::DEFAULT_BODY_LIMIT,
            service_env(&db_url, &[]),
        )
        .unwrap();
        let running = business_logic::start(config).await.unwrap();
        let url = running.url();
        (running, url)
    })
    .await
}

/// A user row; its id.
fn user(app: &TestApp, name: &str) -> i64 {
    app.db
        .psql(&format!(
            "INSERT INTO users (username, email) VALUES ('{name}', '{name}@example.com') RETURNING id"
        ))
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

async fn error_of(resp: Response, status: u16) -> (String, String) {
    json_error(resp, status).await
}

#[tokio::test]
async fn validate_user() {
    let app = spawn().await;
    let r = app
        .post_json(
            "/api/v1/validate/user",
            &json!({"username":"testuser123","email":"test@example.com"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"valid": true}));

    let r = app
        .post_json(
            "/api/v1/validate/user",
            &json!({"username":"x","email":"nope"}),
        )
        .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["valid"], false);
    assert_eq!(body["error"]["code"], "validation_failed");
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["username", "email"]);

    // Whatever is wrong, the 400 is the documented shape: valid false and every problem.
    for (bad, field) in [
        (r#"{"username":"abc"}"#, "email"),
        (r#"{"username":5,"email":"a@b.co"}"#, "username"),
        ("{", "body"),
        ("[]", "body"),
        ("", "body"),
        (
            r#"{"username":"abc","email":"a@b.co","is_admin":true}"#,
            "body",
        ),
    ] {
        let r = app
            .post_raw("/api/v1/validate/user", "application/json", bad)
            .await;
        assert_eq!(r.status(), 400, "{bad}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["valid"], false, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "validation_failed", "{bad}: {body}");
        assert_eq!(body["errors"][0]["field"], field, "{bad}: {body}");
    }
}

#[tokio::test]
async fn process_order_seed_example_and_errors() {
    let app = spawn().await;
    let uid = user(&app, "buyer");
    let r = app
        .post_json(
            "/api/v1/process/order",
            &json!({"user_id": uid, "amount": 99.99}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let order: Value = r.json().await.unwrap();
    assert_eq!(order["amount"], 99.99);
    assert_eq!(order["status"], "processed");
    assert_eq!(order["user_id"], uid);
    assert_eq!(
        app.db.psql(&format!(
            "SELECT amount FROM orders WHERE id = {}",
            order["id"]
        )),
        "99.99"
    );

    let (code, msg) = error_of(
        app.post_json(
            "/api/v1/process/order",
            &json!({"user_id": 987654, "amount": 5}),
        )
        .await,
        404,
    )
    .await;
    assert_eq!(code, "user_not_found");
    assert!(msg.contains("987654"));

    // Out of the documented range: refused by the schema; more than 2 decimals: by the rule.
    for (amount, expected) in [
        (json!(0), "invalid_request"),
        (json!(-5), "invalid_request"),
        (json!(1e12), "invalid_request"),
        (json!(10.555), "invalid_amount"),
    ] {
        let (code, msg) = error_of(
            app.post_json(
                "/api/v1/process/order",
                &json!({"user_id": uid, "amount": amount}),
            )
            .await,
            400,
        )
        .await;
        assert_eq!(code, expected, "{amount}");
        assert!(msg.contains("amount"), "{msg}");
        assert!(!msg.contains("OrderInput"), "a Rust type name in {msg}");
    }
    for bad in [
        r#"{"user_id":1,"amount":"99.99"}"#,
        r#"{"user_id":"1","amount":5}"#,
        r#"{"amount":5}"#,
        r#"{"user_id":1,"amount":1e400}"#,
        r#"{"user_id":1.5,"amount":5}"#,
    ] {
        error_of(
            app.post_raw("/api/v1/process/order", "application/json", bad)
                .await,
            400,
        )
        .await;
    }
    let (code, msg) = error_of(
        app.post_json("/api/v1/process/order", &json!({"user_id": 0, "amount": 5}))
            .await,
        400,
    )
    .await;
    assert_eq!(code, "invalid_request");
    assert!(msg.contains("user_id"), "{msg}");
    // Unknown keys are refused, not dropped.
    let (_, msg) = error_of(
        app.post_json(
            "/api/v1/process/order",
            &json!({"user_id": uid, "amount": 5, "is_admin": true}),
        )
        .await,
        400,
    )
    .await;
    assert!(msg.contains("is_admin"), "{msg}");
    assert_eq!(app.db.psql("SELECT count(*) FROM orders"), "1");
}

#[tokio::test]
async fn analytics_summary_counts_what_is_there() {
    let app = spawn().await;
    let empty: Value = app
        .get("/api/v1/analytics/summary")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(empty["total_orders"], 0);
    assert_eq!(empty["average_order_value"], 0.0);
    let a = user(&app, "alice");
    let b = user(&app, "bob");
    for (u, amount) in [(a, 10.0), (a, 20.5), (b, 5.25)] {
        let r = app
            .post_json(
                "/api/v1/process/order",
                &json!({"user_id": u, "amount": amount}),
            )
            .await;
        assert_eq!(r.status(), 201);
    }
    let s: Value = app
        .get("/api/v1/analytics/summary")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(s["total_users"], 2);
    assert_eq!(s["total_orders"], 3);
    assert_eq!(s["total_revenue"], 35.75);
    assert_eq!(s["average_order_value"], 11.92);
    assert_eq!(s["orders_by_status"]["processed"]["count"], 3);
    assert_eq!(s["region"], "test");
}

#[tokio::test]
async fn info_and_health() {
    let app = spawn().await;
    let info: Value = app.get("/api/v1/info").await.json().await.unwrap();
    assert_eq!(info["service"], "business-logic");
    assert_eq!(info["database"]["reachable"], true);
    assert_eq!(app.get("/health/live").await.status(), 200);
    let ready: Value = app.get("/health/ready").await.json().await.unwrap();
    assert_eq!(ready["database"]["role"], "primary");
}

#[tokio::test]
async fn writes_on_a_read_only_database_answer_503_read_only() {
    let app = spawn().await;
    let uid = user(&app, "readonly");
    app.db.make_read_only();
    let config = ServiceConfig::from_lookup(8081, 65536, service_env(&app.db.url, &[])).unwrap();
    let ro = business_logic::start(config).await.unwrap();
    let r = app
        .http
        .post(format!("{}/api/v1/process/order", ro.url()))
        .json(&json!({"user_id": uid, "amount": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r, 503).await.0, "read_only");
    let r = app
        .http
        .get(format!("{}/api/v1/analytics/summary", ro.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
