//! Calls to business-logic and data-ingest, and what their failures mean to our client.
//!
//! A backend that cannot be reached answers 503 `upstream_unavailable`, one that is too slow
//! 504 `upstream_timeout`, one that answers nonsense 502 `bad_gateway`: never a 500. The
//! message names the backend; its URL and the error go to the log only (internal addresses are
//! not for clients).

use common::ApiError;
use poem::http::StatusCode;

#[derive(Clone)]
pub struct Upstreams {
    http: reqwest::Client,
    pub business_logic: String,
    pub data_ingest: String,
}

impl Upstreams {
    pub fn new(config: &common::ServiceConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(2))
            .timeout(config.upstream_timeout)
            .pool_idle_timeout(std::time::Duration::from_secs(30))
            .build()?;
        Ok(Upstreams {
            http,
            business_logic: config.business_logic_url.clone(),
            data_ingest: config.data_ingest_url.clone(),
        })
    }

    /// POSTs JSON bytes as they are (numbers keep every digit) and returns the answer's bytes.
    /// `authorization` is the client's header, passed on (the region's services share tokens).
    pub async fn post_bytes(
        &self,
        name: &str,
        base: &str,
        path: &str,
        body: impl Into<reqwest::Body>,
        request_id: &str,
        authorization: Option<&str>,
    ) -> Result<(StatusCode, bytes::Bytes), ApiError> {
        let url = format!("{base}{path}");
        let mut request = self
            .http
            .post(&url)
            .header("x-request-id", request_id)
            .header("content-type", "application/json");
        if let Some(a) = authorization {
            request = request.header("authorization", a);
        }
        let resp = request
            .body(body)
            .send()
            .await
            .map_err(|e| failure(name, &url, &e))?;
        let status =
            StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let bytes = resp.bytes().await.map_err(|e| failure(name, &url, &e))?;
        Ok((status, bytes))
    }
}

fn failure(name: &str, url: &str, e: &reqwest::Error) -> ApiError {
    tracing::warn!(upstream = name, %url, error = %common::error::ErrorChain(e), "upstream call failed");
    if e.is_timeout() {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            format!("{name} did not answer in time; retry later"),
        )
    } else if e.is_connect() {
        ApiError::unavailable(
            "upstream_unavailable",
            format!("{name} is unavailable; retry later"),
        )
    } else {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            format!("{name} failed to answer; retry later"),
        )
    }
}
