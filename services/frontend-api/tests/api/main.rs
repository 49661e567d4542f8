//! frontend-api against a real PostgreSQL with real business-logic and data-ingest behind it.

use std::sync::{Arc, Mutex};

mod express;
#[path = "../support/mod.rs"]
mod support;
mod upstream_failures;

use common::Running;
use reqwest::{Client, Response};
use serde_json::{json, Value};
use support::{config, frontend, region, region_with};
use test_support::{json_error, TestDb};

/// The three services on one test database, wired like a region; the app is frontend-api.
type Stack = test_support::TestApp<[Running; 3]>;

async fn stack() -> Stack {
    Stack::spawn(|db_url| async move {
        let services = region(&db_url).await;
        let url = services[2].url();
        (services, url)
    })
    .await
}

/// Serves a recording stand-in for a backend on loopback; its base URL.
async fn stand_in(app: poem::Route) -> String {
    let acceptor =
        poem::listener::Listener::into_acceptor(poem::listener::TcpListener::bind("127.0.0.1:0"))
            .await
            .unwrap();
    let addr = poem::listener::Acceptor::local_addr(&acceptor)[0]
        .as_socket_addr()
        .copied()
        .unwrap();
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app));
    format!("http://{addr}")
}

/// What a recording stand-in for data-ingest received: the request id, the authorization and
/// the body of each request.
type Received = Arc<Mutex<Vec<(String, String, String)>>>;

/// A recording stand-in for data-ingest's `POST /api/v1/ingest`, answering each request 201
/// with record 9; its base URL.
async fn recording_ingest() -> (String, Received) {
    let seen: Received = Arc::default();
    let seen2 = seen.clone();
    let app = poem::Route::new().at(
        "/api/v1/ingest",
        poem::post(poem::endpoint::make(move |mut req: poem::Request| {
            let seen = seen2.clone();
            async move {
                let header = |n| req.header(n).unwrap_or("").to_string();
                let (id, auth) = (header("x-request-id"), header("authorization"));
                let body = req.take_body().into_string().await.unwrap();
                seen.lock().unwrap().push((id, auth, body));
                poem::Response::builder()
                    .status(poem::http::StatusCode::CREATED)
                    .content_type("application/json")
                    .body(r#"{"status":"ingested","ingested":1,"id":9,"ids":[9]}"#)
            }
        })),
    );
    (stand_in(app).await, seen)
}

async fn error_of(resp: Response, status: u16) -> (String, String) {
    json_error(resp, status).await
}

#[tokio::test]
async fn seed_examples_work() {
    let s = stack().await;
    let info: Value = s.get("/api/v1/info").await.json().await.unwrap();
    assert_eq!(info["service"], "frontend-api");
    assert_eq!(info["database"]["role"], "primary");
    assert!(info["business_logic_url"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:"));

    let r = s
        .post_json(
            "/api/v1/users",
            &json!({"username":"testuser123","email":"test@example.com"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let user: Value = r.json().await.unwrap();
    assert_eq!(user["username"], "testuser123");

    let users: Value = s.get("/api/v1/users").await.json().await.unwrap();
    assert_eq!(users["total"], 1);
    assert_eq!(users["users"][0]["email"], "test@example.com");

    let r = s
        .post_json(
            "/api/v1/data/ingest",
            &json!({"type":"sensor","data":{"temperature":25.5,"humidity":60},"source":"api"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["ingested"], 1);
    assert_eq!(s.db.psql("SELECT data_type FROM ingested_data"), "sensor");
}

#[tokio::test]
async fn duplicates_are_409_and_name_the_field() {
    let s = stack().await;
    let ok = s
        .post_json(
            "/api/v1/users",
            &json!({"username":"alice","email":"alice@example.com"}),
        )
        .await;
    assert_eq!(ok.status(), 201);
    let (code, msg) = error_of(
        s.post_json(
            "/api/v1/users",
            &json!({"username":"alice","email":"other@example.com"}),
        )
        .await,
        409,
    )
    .await;
    assert_eq!(code, "conflict");
    assert!(msg.contains("username"), "{msg}");
    let (_, msg) = error_of(
        s.post_json(
            "/api/v1/users",
            &json!({"username":"alice2","email":"ALICE@example.com"}),
        )
        .await,
        409,
    )
    .await;
    assert!(msg.contains("email"), "{msg}");
    assert_eq!(s.db.psql("SELECT count(*) FROM users"), "1");
}

#[tokio::test]
async fn invalid_users_are_400_with_every_problem() {
    let s = stack().await;
    let r = s
        .post_json("/api/v1/users", &json!({"username":"a","email":"bad"}))
        .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "validation_failed");
    assert_eq!(body["errors"].as_array().unwrap().len(), 2);
    let long = "u".repeat(51);
    error_of(
        s.post_json(
            "/api/v1/users",
            &json!({"username": long, "email":"a@b.co"}),
        )
        .await,
        400,
    )
    .await;
    error_of(
        s.post_json(
            "/api/v1/users",
            &json!({"username":"x'); DROP TABLE users;--","email":"a@b.co"}),
        )
        .await,
        400,
    )
    .await;
    for raw in [
        r#"{"username":"abc"}"#,
        r#"{"username":1,"email":"a@b.co"}"#,
        "{oops",
    ] {
        let r = s
            .http
            .post(s.url("/api/v1/users"))
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        error_of(r, 400).await;
    }
    // A 100 kB username: 413, a client error, not a 502 from business-logic's smaller limit.
    // At 1 MB (under frontend-api's own limit) too. Whether frontend-api is still writing the
    // body when business-logic answers depends on the sockets' buffers; the upstream test
    // `an_answer_sent_before_the_body_was_read_reaches_the_client` makes sure it is.
    for len in [100_000, 1_000_000] {
        let (code, _) = error_of(
            s.post_json(
                "/api/v1/users",
                &json!({"username": "u".repeat(len), "email":"a@b.co"}),
            )
            .await,
            413,
        )
        .await;
        assert_eq!(code, "payload_too_large", "{len}");
    }
    // Of the wrong shape: 400 with every problem, and no Rust type name.
    let r = s.post_json("/api/v1/users", &json!([null, null])).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["valid"], false);
    assert_eq!(body["errors"][0]["field"], "body");
    assert!(!body.to_string().contains("NewUser"), "{body}");
    // Over the frontend's own limit: 413.
    let (code, _) = error_of(
        s.post_json(
            "/api/v1/users",
            &json!({"username": "u".repeat(2 << 20), "email":"a@b.co"}),
        )
        .await,
        413,
    )
    .await;
    assert_eq!(code, "payload_too_large");
    // Unknown keys are refused, not dropped.
    let (_, msg) = error_of(
        s.post_json(
            "/api/v1/users",
            &json!({"username":"sneaky","email":"s@example.com","is_admin":true}),
        )
        .await,
        400,
    )
    .await;
    assert!(msg.contains("is_admin"), "{msg}");
    // Unicode names are fine, and come back as sent.
    let r = s
        .post_json(
            "/api/v1/users",
            &json!({"username":"zoë-名前","email":"zoe@example.com"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(s.db.psql("SELECT username FROM users"), "zoë-名前");
}

#[tokio::test]
async fn pagination_and_bounds() {
    let s = stack().await;
    for i in 0..5 {
        let r = s
            .post_json(
                "/api/v1/users",
                &json!({"username": format!("user{i}"), "email": format!("u{i}@example.com")}),
            )
            .await;
        assert_eq!(r.status(), 201);
    }
    let page: Value = s
        .get("/api/v1/users?limit=2&offset=3")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["count"], 2);
    assert_eq!(page["total"], 5);
    assert_eq!(page["users"][0]["username"], "user3");
    for q in ["limit=0", "limit=101", "limit=x", "offset=-1"] {
        error_of(s.get(&format!("/api/v1/users?{q}")).await, 400).await;
    }
}

#[tokio::test]
async fn the_proxy_passes_backend_errors_through() {
    let s = stack().await;
    // The body goes through as sent: numbers keep every digit.
    let r = s
        .http
        .post(s.url("/api/v1/data/ingest"))
        .header("content-type", "application/json")
        .body(r#"{"type":"n","data":[123456789012345678901234567890]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        s.db.psql("SELECT payload->>0 FROM ingested_data"),
        "123456789012345678901234567890"
    );
    let r = s
        .post_json("/api/v1/data/ingest", &json!({"type": 5}))
        .await;
    let (code, msg) = error_of(r, 400).await;
    assert_eq!(code, "invalid_record");
    assert!(msg.contains("body.type"), "{msg}");
}

#[tokio::test]
async fn a_backend_down_gives_503_with_a_clear_body() {
    let db = TestDb::new();
    let dead = format!(
        "http://127.0.0.1:{}",
        test_support::free_port("127.0.0.1").unwrap()
    );
    let fe = frontend(
        &db.url,
        &[("BUSINESS_LOGIC_URL", &dead), ("DATA_INGEST_URL", &dead)],
    )
    .await;
    let http = Client::new();
    let r = http
        .post(format!("{}/api/v1/users", fe.url()))
        .json(&json!({"username":"abc","email":"a@b.co"}))
        .send()
        .await
        .unwrap();
    let (code, msg) = error_of(r, 503).await;
    assert_eq!(code, "upstream_unavailable");
    assert!(msg.contains("business-logic"), "{msg}");
    let r = http
        .post(format!("{}/api/v1/data/ingest", fe.url()))
        .json(&json!({"type":"x"}))
        .send()
        .await
        .unwrap();
    let (code, msg) = error_of(r, 503).await;
    assert_eq!(code, "upstream_unavailable");
    assert!(msg.contains("data-ingest"), "{msg}");
    assert!(
        !msg.contains("http") && !msg.contains("127.0.0.1"),
        "an internal address in {msg}"
    );
    assert_eq!(db.psql("SELECT count(*) FROM users"), "0");
}

#[tokio::test]
async fn the_request_id_reaches_the_backends() {
    // A recording stand-in for business-logic: we want to see the header it receives.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen2 = seen.clone();
    let app = poem::Route::new().at(
        "/api/v1/validate/user",
        poem::post(poem::endpoint::make(move |req: poem::Request| {
            let seen = seen2.clone();
            async move {
                seen.lock()
                    .unwrap()
                    .push(req.header("x-request-id").unwrap_or("").to_string());
                poem::web::Json(json!({"valid": true}))
            }
        })),
    );
    let bl = stand_in(app).await;
    let db = TestDb::new();
    let fe = frontend(&db.url, &[("BUSINESS_LOGIC_URL", &bl)]).await;
    let r = Client::new()
        .post(format!("{}/api/v1/users", fe.url()))
        .header("x-request-id", "trace-me-123")
        .json(&json!({"username":"abc","email":"a@b.co"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-request-id"], "trace-me-123");
    assert_eq!(*seen.lock().unwrap(), vec!["trace-me-123".to_string()]);
}

#[tokio::test]
async fn on_a_read_only_database_writes_are_503_and_reads_work() {
    let s = stack().await;
    assert_eq!(
        s.post_json(
            "/api/v1/users",
            &json!({"username":"early","email":"e@example.com"})
        )
        .await
        .status(),
        201
    );
    s.db.make_read_only();
    let bl = business_logic::start(config(8081, 65536, &s.db.url, &[]))
        .await
        .unwrap();
    let blu = bl.url();
    let fe = frontend(&s.db.url, &[("BUSINESS_LOGIC_URL", &blu)]).await;
    let r = s
        .http
        .post(format!("{}/api/v1/users", fe.url()))
        .json(&json!({"username":"late","email":"l@example.com"}))
        .send()
        .await
        .unwrap();
    let (code, msg) = error_of(r, 503).await;
    assert_eq!(code, "read_only");
    assert!(msg.contains("standby"));
    let page: Value = s
        .http
        .get(format!("{}/api/v1/users", fe.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], 1);
}

#[tokio::test]
async fn with_tokens_the_frontend_passes_the_client_token_to_its_backends() {
    let db = TestDb::new();
    let token = "region-token-0123456789";
    let [_bl, _di, fe] = region_with(&db.url, &[("AUTH_TOKENS", token)]).await;
    let http = Client::new();
    let user = json!({"username":"tokened","email":"t@example.com"});
    let r = http
        .post(format!("{}/api/v1/users", fe.url()))
        .json(&user)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r, 401).await.0, "unauthorized");
    for (path, body) in [
        ("/api/v1/users", user),
        ("/api/v1/data/ingest", json!({"type":"tokened"})),
    ] {
        let r = http
            .post(format!("{}{path}", fe.url()))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{path}");
    }
    assert_eq!(db.psql("SELECT count(*) FROM ingested_data"), "1");
}

/// A fence revokes the application's login (`ALTER ROLE ... NOLOGIN`) and ends its sessions:
/// the new sessions the pool opens are refused with SQLSTATE 28000. That is the database
/// being unavailable (503, retry), not a failure of the service (it was a 500).
#[tokio::test]
async fn a_database_refusing_the_login_is_503_not_500() {
    let db = TestDb::new();
    let role = format!("fenced_{}", &db.name[2..14]);
    db.psql(&format!(
        "CREATE ROLE {role} LOGIN; GRANT CONNECT ON DATABASE {0} TO {role}; \
         GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}",
        db.name
    ));
    let url = format!("postgres://{role}@{}:{}/{}", db.host, db.port, db.name);
    let fe = frontend(&url, &[]).await;
    let http = Client::new();
    let users = format!("{}/api/v1/users", fe.url());
    assert_eq!(http.get(&users).send().await.unwrap().status(), 200);

    db.psql(&format!(
        "ALTER ROLE {role} NOLOGIN; \
         SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = '{role}'"
    ));
    for _ in 0..5 {
        let r = http.get(&users).send().await.unwrap();
        let (code, msg) = error_of(r, 503).await;
        assert_eq!(code, "database_unavailable", "{msg}");
    }
    fe.shutdown().await.unwrap();
    db.psql(&format!("DROP OWNED BY {role}; DROP ROLE {role}"));
}

/// `POST /api/v1/data/ingest` with a JSON body is answered by a fast route, without poem's
/// router: the middleware still applies to it (request id, token, body limit, metrics), and
/// what it leaves (a body that is not JSON) is answered by the API's operation, as before.
#[tokio::test]
async fn the_pass_through_fast_route_keeps_the_middleware_and_leaves_the_rest_to_the_operation() {
    let (di, seen) = recording_ingest().await;
    let db = TestDb::new();
    let token = "fast-route-token-0123456789";
    let fe = frontend_api::start(config(
        8080,
        1024,
        &db.url,
        &[("DATA_INGEST_URL", &di), ("AUTH_TOKENS", token)],
    ))
    .await
    .unwrap();
    let http = Client::new();
    let url = format!("{}/api/v1/data/ingest", fe.url());
    let record = r#"{"type":"fast","data":{"n":12345678901234567890}}"#;

    let r = http
        .post(&url)
        .header("x-request-id", "fast-route-1")
        .header("content-type", "application/json")
        .bearer_auth(token)
        .body(record)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-request-id"], "fast-route-1");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(
        r.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    assert_eq!(r.json::<Value>().await.unwrap()["id"], 9);
    // Served by the connection's express lane (the whole request came in one write).
    assert_eq!(fe.state.express_served(), 1);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(
            "fast-route-1".to_string(),
            format!("Bearer {token}"),
            record.to_string()
        )],
        "the body as sent, with the request id and the client's token"
    );

    // The middleware's refusals, before the fast route: no token, a body over the limit.
    let r = http
        .post(&url)
        .header("content-type", "application/json")
        .body(record)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r, 401).await.0, "unauthorized");
    let big = format!(r#"{{"type":"x","data":"{}"}}"#, "a".repeat(2000));
    let r = http
        .post(&url)
        .header("content-type", "application/json")
        .bearer_auth(token)
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r, 413).await.0, "payload_too_large");

    // Not JSON: left to the operation, which answers 415 as it always has.
    let r = http
        .post(&url)
        .header("content-type", "text/plain")
        .bearer_auth(token)
        .body(record)
        .send()
        .await
        .unwrap();
    let (code, msg) = error_of(r, 415).await;
    assert_eq!(code, "unsupported_media_type");
    assert!(msg.contains("application/json"), "{msg}");
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "only the first reached data-ingest"
    );

    // Counted under the route's template, like every other route.
    let metrics = http
        .get(format!("{}/metrics", fe.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for status in ["201", "401", "413", "415"] {
        let line = format!(
            r#"http_requests_total{{method="POST",route="/api/v1/data/ingest",status="{status}",service="frontend-api"}} 1"#
        );
        assert!(metrics.contains(&line), "no {line} in:\n{metrics}");
    }
}
