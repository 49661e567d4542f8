//! Calls to business-logic and data-ingest, and what their failures mean to our client.
//!
//! A backend that cannot be reached answers 503 `upstream_unavailable`, one that is too slow
//! 504 `upstream_timeout`, one that answers nonsense 502 `bad_gateway`: never a 500. The
//! message names the backend; its URL and the error go to the log only (internal addresses are
//! not for clients).
//!
//! One pool of keep-alive HTTP/1.1 connections per backend (`TCP_NODELAY`), made at start,
//! not per request: the body goes up as the bytes the client sent (no copy, no JSON
//! re-serialisation), with only `content-type`, `x-request-id` and `authorization` added; the
//! answer's bytes come back as they are.
//!
//! The connections speak the client side of HTTP/1.1 of [`crate::http1`]: a call is one task
//! that writes the request and reads the answer, as nginx's is one event loop
//! (docs/performance.md, "Fifth pass" and "Sixth pass"); an idle connection is polled by
//! nobody. Whether a connection taken from the pool is still open is checked then, so one the
//! backend closed while it was idle is dropped, not given a request; one idle for over a
//! minute (the backends keep theirs 75 s) is never used again and is closed when the pool is
//! next used. A request that could not be written on a reused connection goes out again on a
//! new one, as hyper-util's client does; a request that was written is never sent twice.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::ApiError;
use poem::http::{StatusCode, Uri};
use tokio::net::TcpStream;

use crate::http1::{CallError, Connection};

/// How long connecting to a backend may take before the call counts as timed out.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The most idle connections kept per backend (a burst beyond it closes the extra ones after
/// use).
const MAX_IDLE: usize = 256;
/// How long a connection may stay idle in the pool: below the backends' own idle timeout
/// (`IDLE_TIMEOUT_MS`, 75 s by default), so that a request is not sent on one the backend is
/// closing. Older ones are closed when the pool is next used (not by a timer).
const MAX_IDLE_TIME: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct Upstreams {
    timeout: Duration,
    pub business_logic: String,
    pub data_ingest: String,
    /// business-logic's `POST /api/v1/validate/user`, parsed once at start.
    pub validate_user: Target,
    /// data-ingest's `POST /api/v1/ingest`, parsed once at start.
    pub ingest: Target,
}

/// An upstream endpoint: the backend's name, its URL, and where and what to send (or why the
/// URL is not one: every call then answers 503, as a backend that cannot be reached).
#[derive(Clone)]
pub struct Target {
    name: &'static str,
    url: String,
    endpoint: Result<Arc<Endpoint>, String>,
}

/// A valid upstream URL, taken apart once.
struct Endpoint {
    /// `host:port` to connect to.
    address: String,
    /// The request line and the headers every request has, up to the `content-length` value.
    head: Vec<u8>,
    /// Idle connections, the least recently used first.
    idle: Mutex<VecDeque<Idle>>,
}

struct Idle {
    conn: Connection,
    since: Instant,
}

impl Target {
    fn new(name: &'static str, base: &str, path: &str) -> Target {
        let url = format!("{base}{path}");
        let endpoint = Endpoint::parse(&url).map(Arc::new);
        if let Err(error) = &endpoint {
            tracing::warn!(upstream = name, %url, %error, "upstream URL is not valid: its calls will answer 503");
        }
        Target {
            name,
            url,
            endpoint,
        }
    }
}

impl Endpoint {
    fn parse(url: &str) -> Result<Endpoint, String> {
        let uri = url.parse::<Uri>().map_err(|e| e.to_string())?;
        if uri.scheme_str() != Some("http") {
            return Err("only http:// URLs are supported".into());
        }
        let authority = uri.authority().ok_or("the URL has no host")?;
        let address = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        );
        // The Host header: the URL's host and port (never its user information).
        let host = match authority.port() {
            Some(port) => format!("{}:{port}", authority.host()),
            None => authority.host().to_string(),
        };
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: "
        )
        .into_bytes();
        Ok(Endpoint {
            address,
            head,
            idle: Mutex::default(),
        })
    }

    /// The most recently used idle connection that is still open: one the backend closed
    /// meanwhile is dropped instead of being given a request.
    fn take_idle(&self) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        prune(&mut idle);
        while let Some(Idle { mut conn, .. }) = idle.pop_back() {
            if conn.is_open() {
                return Some(conn);
            }
        }
        None
    }

    fn put_idle(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        prune(&mut idle);
        if idle.len() < MAX_IDLE {
            idle.push_back(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    /// A new connection.
    async fn connect(&self) -> Result<Connection, (Failure, String)> {
        let stream =
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.address)).await {
                Err(_) => {
                    return Err((
                        Failure::Timeout,
                        format!("connect timed out after {CONNECT_TIMEOUT:?}"),
                    ))
                }
                Ok(Err(e)) => return Err((Failure::Connect, format!("connect: {e}"))),
                Ok(Ok(s)) => s,
            };
        let _ = stream.set_nodelay(true);
        Ok(Connection::new(stream))
    }

    /// Sends the request (`head`, then `body`) on an idle connection or a new one and reads
    /// the whole answer; the connection goes back to the pool when it can carry another
    /// request.
    async fn exchange(
        &self,
        head: &[u8],
        body: &[u8],
    ) -> Result<(StatusCode, Bytes), (Failure, String)> {
        loop {
            let (mut conn, reused) = match self.take_idle() {
                Some(c) => (c, true),
                None => (self.connect().await?, false),
            };
            match conn.call(head, body).await {
                Ok(answer) => {
                    if answer.reusable {
                        self.put_idle(conn);
                    }
                    return Ok((answer.status, answer.body));
                }
                // Not written: a reused connection closed under it; again, on another.
                Err(CallError::Unsent(_)) if reused => {}
                Err(CallError::Unsent(e) | CallError::Sent(e)) => return Err((Failure::Other, e)),
            }
        }
    }
}

/// Whether `v` may be sent as a header value as it is: visible ASCII, spaces and tabs (what
/// `HeaderValue::from_str` accepts, without building one).
fn is_header_value(v: &str) -> bool {
    v.bytes().all(|b| (b >= 0x20 && b != 0x7f) || b == b'\t')
}

/// Closes the connections idle for longer than [`MAX_IDLE_TIME`] (the oldest are first).
fn prune(idle: &mut VecDeque<Idle>) {
    while idle
        .front()
        .is_some_and(|i| i.since.elapsed() > MAX_IDLE_TIME)
    {
        idle.pop_front();
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
        Ok(Upstreams {
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
        let head = target.head(body.len(), request_id, authorization);
        self.post(target, head, body).await
    }

    /// [`Upstreams::post_bytes`] with the request's head already made by [`Target::head`].
    pub async fn post(
        &self,
        target: &Target,
        head: Vec<u8>,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), ApiError> {
        let (name, url) = (target.name, &target.url);
        let endpoint = target.endpoint.as_ref().map_err(|error| {
            tracing::warn!(upstream = name, %url, %error, "upstream URL is not valid");
            failure(name, Failure::Connect)
        })?;
        match tokio::time::timeout(self.timeout, endpoint.exchange(&head, &body)).await {
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

impl Target {
    /// The head of a POST of `len` JSON bytes, with the request id and the client's
    /// authorization (empty when the URL is not valid: the call then fails as unreachable).
    pub fn head(&self, len: usize, request_id: &str, authorization: Option<&str>) -> Vec<u8> {
        let Ok(endpoint) = &self.endpoint else {
            return Vec::new();
        };
        let mut head = Vec::with_capacity(endpoint.head.len() + 128);
        head.extend_from_slice(&endpoint.head);
        let _ = write!(head, "{len}");
        // The id was checked (or made) by our middleware: always a valid header value; the
        // client's authorization is passed on when it is one.
        for (name, value) in [
            ("x-request-id", Some(request_id)),
            ("authorization", authorization),
        ] {
            if let Some(v) = value.filter(|v| is_header_value(v)) {
                head.extend_from_slice(b"\r\n");
                head.extend_from_slice(name.as_bytes());
                head.extend_from_slice(b": ");
                head.extend_from_slice(v.as_bytes());
            }
        }
        head.extend_from_slice(b"\r\n\r\n");
        head
    }
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
