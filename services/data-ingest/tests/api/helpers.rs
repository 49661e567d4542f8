//! Spawning data-ingest in-process on a free port, against its own test database.

use common::{Running, ServiceConfig};
use reqwest::{Client, Response};
use serde_json::Value;
use test_support::{service_env, TestDb};

pub struct TestApp {
    pub running: Running,
    pub db: TestDb,
    pub http: Client,
}

pub async fn spawn() -> TestApp {
    spawn_with(&[]).await
}

pub async fn spawn_with(extra: &[(&str, &str)]) -> TestApp {
    let db = TestDb::new();
    let running = start_on(&db.url, extra).await;
    TestApp {
        running,
        db,
        http: Client::new(),
    }
}

pub async fn start_on(db_url: &str, extra: &[(&str, &str)]) -> Running {
    let config = ServiceConfig::from_lookup(
        data_ingest::DEFAULT_PORT,
        data_ingest::DEFAULT_BODY_LIMIT,
        service_env(db_url, extra),
    )
    .expect("test config is valid");
    data_ingest::start(config)
        .await
        .expect("data-ingest starts")
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.url())
    }
    pub async fn get(&self, path: &str) -> Response {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }
    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        self.http
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request sent")
    }
    pub fn count(&self) -> i64 {
        self.db
            .psql("SELECT count(*) FROM ingested_data")
            .parse()
            .expect("a count")
    }
}

/// Asserts the status and the JSON error shape; returns the error code.
pub async fn assert_error(resp: Response, status: u16) -> (String, String) {
    assert_eq!(resp.status().as_u16(), status, "unexpected status");
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(ct.starts_with("application/json"), "content-type {ct}");
    let body: Value = resp.json().await.expect("a JSON body");
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.code in {body}"));
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.message in {body}"));
    assert!(!message.is_empty());
    (code.to_string(), message.to_string())
}
