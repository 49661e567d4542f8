//! A service under test: started in-process on a free port against a fresh test database, with
//! an HTTP client. The one `TestApp` of the three services' tests; it knows nothing of them (the
//! test says how to start its service).

use std::future::Future;

use reqwest::{Client, Response};
use serde_json::Value;

use crate::TestDb;

/// `running` is the service's handle (dropping it stops the service), `db` its database.
pub struct TestApp<R> {
    pub running: R,
    pub db: TestDb,
    pub http: Client,
    base: String,
}

impl<R> TestApp<R> {
    /// A fresh [`TestDb`], and the service `start` starts on its URL; `start` returns the
    /// handle and the service's base URL (`http://127.0.0.1:port`).
    pub async fn spawn<F, Fut>(start: F) -> Self
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = (R, String)>,
    {
        crate::test_log();
        let db = TestDb::new();
        let (running, base) = start(db.url.clone()).await;
        TestApp {
            running,
            db,
            http: Client::new(),
            base,
        }
    }

    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
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

    /// A POST of `body` as is, with `content_type`.
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
}

/// Asserts the status and the services' JSON error shape (`{"error": {"code", "message"}}`,
/// `application/json`, a message that is not empty); returns the code and the message.
pub async fn json_error(resp: Response, status: u16) -> (String, String) {
    assert_eq!(resp.status().as_u16(), status, "unexpected status");
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or_default().to_string())
        .unwrap_or_default();
    assert!(ct.starts_with("application/json"), "content-type {ct}");
    let body: Value = resp.json().await.expect("a JSON body");
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.code in {body}"));
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.message in {body}"));
    assert!(!message.is_empty(), "an empty error.message");
    (code.to_string(), message.to_string())
}
