//! Calls to business-logic and data-ingest, and what their failures mean to our client.
//!
//! A backend that cannot be reached answers 503 `upstream_unavailable`, one that is too slow
//! 504 `upstream_timeout`, one that answers nonsense 502 `bad_gateway`: never a 500. The
//! message names the backend; its URL and the error go to the log only (internal addresses are
//! not for clients).
//!
//! One hyper client for the process (built at start, not per request) with a keep-alive pool
//! of HTTP/1.1 connections (`TCP_NODELAY`): the body goes up as the bytes the client sent (no
//! copy, no JSON re-serialisation), with only `content-type`, `x-request-id` and
//! `authorization` added; the answer's bytes come back as they are. (hyper-util's pooled
//! client is what reqwest wraps; without reqwest's layers, no URL parsing, redirect policy or
//! per-request header map of its own.)

use std::time::Duration;

use bytes::Bytes;
use common::ApiError;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use poem::http::{header, HeaderValue, Method, Request, StatusCode, Uri};

#[derive(Clone)]
pub struct Upstreams {
    http: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
    pub business_logic: String,
    pub data_ingest: String,
    /// business-logic's `POST /api/v1/validate/user`, parsed once at start.
    pub validate_user: Target,
    /// data-ingest's `POST /api/v1/ingest`, parsed once at start.
    pub ingest: Target,
}

/// An upstream endpoint: the backend's name, its URL and the URL parsed (or why it is not
/// one: every call then answers 503, as a backend that cannot be reached).
#[derive(Clone)]
pub struct Target {
    name: &'static str,
    url: String,
    uri: Result<Uri, String>,
}

impl Target {
    fn new(name: &'static str, base: &str, path: &str) -> Target {
        let url = format!("{base}{path}");
        let uri = url.parse::<Uri>().map_err(|e| e.to_string());
        if let Err(error) = &uri {
            tracing::warn!(upstream = name, %url, %error, "upstream URL is not valid: its calls will answer 503");
        }
        Target { name, url, uri }
    }
}

/// Why an upstream call failed.
enum Failure {
    Timeout,
    Connect,
    Other,
}

impl Upstreams {
    pub fn new(config: &common::ServiceConfig) -> anyhow::Result<Self> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(Upstreams {
            http,
            timeout: config.upstream_timeout,
            validate_user: Target::new(
                "business-logic",
                &config.business_logic_url,
                "/api/v1/validate/user",
            ),
            ingest: Target::new("data-ingest", &config.data_ingest_url, "/api/v1/ingest"),
            business_logic: config.business_logic_url.clone(),
            data_ingest: config.data_ingest_url.clone(),
        })
    }

    /// POSTs JSON bytes as they are (numbers keep every digit) and returns the answer's bytes.
    /// `authorization` is the client's header, passed on (the region's services share tokens).
    pub async fn post_bytes(
        &self,
        target: &Target,
        body: Bytes,
        request_id: &str,
        authorization: Option<&str>,
    ) -> Result<(StatusCode, Bytes), ApiError> {
        let (name, url) = (target.name, &target.url);
        let uri = target.uri.clone().map_err(|error| {
            tracing::warn!(upstream = name, %url, %error, "upstream URL is not valid");
            failure(name, Failure::Connect)
        })?;
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        // The id was checked (or made) by our middleware: always a valid header value.
        if let Ok(v) = HeaderValue::from_str(request_id) {
            headers.insert("x-request-id", v);
        }
        if let Some(a) = authorization.and_then(|a| HeaderValue::from_str(a).ok()) {
            headers.insert(header::AUTHORIZATION, a);
        }
        let call = async {
            let resp = self.http.request(request).await.map_err(|e| {
                let kind = if timed_out(&e) {
                    Failure::Timeout
                } else if e.is_connect() {
                    Failure::Connect
                } else {
                    Failure::Other
                };
                (kind, common::error::ErrorChain(&e).to_string())
            })?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| (Failure::Other, common::error::ErrorChain(&e).to_string()))?
                .to_bytes();
            Ok::<_, (Failure, String)>((status, bytes))
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err((kind, error))) => {
                tracing::warn!(upstream = name, %url, %error, "upstream call failed");
                Err(failure(name, kind))
            }
            Err(_) => {
                tracing::warn!(upstream = name, %url, timeout = ?self.timeout, "upstream call timed out");
                Err(failure(name, Failure::Timeout))
            }
        }
    }
}

/// Whether an error (the 2 s connect timeout among them) comes from a timeout, as reqwest's
/// `is_timeout` said: a backend that does not accept in time is slow (504), not gone (503).
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = err.source();
    }
    false
}

fn failure(name: &str, kind: Failure) -> ApiError {
    match kind {
        Failure::Timeout => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            format!("{name} did not answer in time; retry later"),
        ),
        Failure::Connect => ApiError::unavailable(
            "upstream_unavailable",
            format!("{name} is unavailable; retry later"),
        ),
        Failure::Other => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            format!("{name} failed to answer; retry later"),
        ),
    }
}
