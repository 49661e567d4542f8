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
//! The pool is hyper's own connection API with a queue of idle connections, not hyper-util's
//! pooled client: that client drives each connection in a task of its own and spawns another
//! on every request to put the connection back. Here the request that uses a connection
//! polls it too, so a call is one task, as nginx's is one event loop (docs/performance.md,
//! "Fifth pass"); an idle connection is polled by nobody. A connection is polled once when
//! taken from the pool, so one the backend closed while it was idle is dropped then; one idle
//! for over a minute (the backends keep theirs 75 s) is never used again and is closed when
//! the pool is next used. A request that could not be written on a reused connection goes out
//! again on a new one, as hyper-util's client does; a request that was written is never sent
//! twice.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::ApiError;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use poem::http::{header, HeaderValue, Method, Request, StatusCode, Uri};
use tokio::net::TcpStream;

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
    /// The request target: the URL's path and query.
    path: Uri,
    host: HeaderValue,
    /// Idle connections, the least recently used first.
    idle: Mutex<VecDeque<Idle>>,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// One HTTP/1.1 connection to a backend: the handle requests are sent on, and the connection
/// itself, polled by the request that uses it (not by a task of its own).
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    io: Pin<Box<http1::Connection<TokioIo<TcpStream>, Full<Bytes>>>>,
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
        let host = HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?;
        let path = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse::<Uri>()
            .map_err(|e| e.to_string())?;
        Ok(Endpoint {
            address,
            path,
            host,
            idle: Mutex::default(),
        })
    }

    /// The most recently used idle connection that is still open. Nobody polls an idle
    /// connection, so it is polled once here: a close the backend sent meanwhile is read now,
    /// and that connection is dropped instead of being given a request.
    async fn take_idle(&self) -> Option<Conn> {
        loop {
            let mut conn = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                prune(&mut idle);
                idle.pop_back()?.conn
            };
            let ended =
                std::future::poll_fn(|cx| Poll::Ready(conn.io.as_mut().poll(cx).is_ready())).await;
            if !ended && !conn.sender.is_closed() {
                return Some(conn);
            }
        }
    }

    fn put_idle(&self, conn: Conn) {
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
    async fn connect(&self) -> Result<Conn, (Failure, String)> {
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
        let (sender, io) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| (Failure::Connect, common::error::ErrorChain(&e).to_string()))?;
        Ok(Conn {
            sender,
            io: Box::pin(io),
        })
    }

    /// Sends `request` on an idle connection or a new one and reads the whole answer; the
    /// connection goes back to the pool when it can carry another request.
    async fn exchange(
        &self,
        mut request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), (Failure, String)> {
        let chain = |e: &hyper::Error| common::error::ErrorChain(e).to_string();
        loop {
            let (conn, reused) = match self.take_idle().await {
                Some(c) => (c, true),
                None => (self.connect().await?, false),
            };
            let Conn { mut sender, io } = conn;
            // `None` once the connection has ended: it is dropped at once, which hands back a
            // request still queued on it (not written) or fails `ready()`. Kept while it ended
            // (hyper ends it without a word on a clean close), the call would wait for ever.
            let mut io = Some(io);
            let outcome = {
                // The request and its answer, while the connection is polled beside them: it
                // writes the one and reads the other.
                let call = async {
                    if let Err(e) = sender.ready().await {
                        return Err((Some(request), e));
                    }
                    let response = sender
                        .try_send_request(request)
                        .await
                        .map_err(|mut e| (e.take_message(), e.into_error()))?;
                    let status = response.status();
                    let body = response
                        .into_body()
                        .collect()
                        .await
                        .map_err(|e| (None, e))?;
                    Ok::<_, (Option<Request<Full<Bytes>>>, hyper::Error)>((status, body.to_bytes()))
                };
                tokio::pin!(call);
                loop {
                    tokio::select! {
                        biased;
                        outcome = &mut call => break outcome,
                        _ = async {
                            match io.as_mut() {
                                Some(io) => io.as_mut().await,
                                None => std::future::pending().await,
                            }
                        }, if io.is_some() => io = None,
                    }
                }
            };
            match outcome {
                Ok(answer) => {
                    // The answer was read whole: the connection can carry the next request
                    // (unless either side asked to close it).
                    if let Some(io) = io.filter(|_| !sender.is_closed()) {
                        self.put_idle(Conn { sender, io });
                    }
                    return Ok(answer);
                }
                // Not written: a reused connection closed under it; again.
                Err((Some(unsent), _)) if reused => request = unsent,
                Err((_, e)) => {
                    let kind = if e.is_timeout() {
                        Failure::Timeout
                    } else {
                        Failure::Other
                    };
                    return Err((kind, chain(&e)));
                }
            }
        }
    }
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
        let (name, url) = (target.name, &target.url);
        let endpoint = target.endpoint.as_ref().map_err(|error| {
            tracing::warn!(upstream = name, %url, %error, "upstream URL is not valid");
            failure(name, Failure::Connect)
        })?;
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = endpoint.path.clone();
        let headers = request.headers_mut();
        headers.insert(header::HOST, endpoint.host.clone());
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
        match tokio::time::timeout(self.timeout, endpoint.exchange(request)).await {
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
