//! Everything around a service's own endpoints: shared routes, middleware, start and shutdown.
//!
//! Routes every service has:
//! - `/health/live` (the process answers), `/health/ready` (the database answers and the service
//!   is not shutting down; reports the database role), `/metrics` (Prometheus text),
//! - `/openapi.json` and Swagger UI at `/docs`,
//! - the service's own API under `/api/v1`.
//!
//! One middleware ([`handle`]) wraps every request, in this order: request id (`x-request-id`
//! taken from the client or made, put on the response and on every log line); 414 / 431 for an
//! over-long target or head; the in-flight request limit (503 + `Retry-After`; health and
//! metrics are exempt); the body, read here with its size limit (413), the limit on body bytes
//! held by all requests (503 + `Retry-After`) and the request timeout (408); the handler under
//! the same timeout (503 `timeout`); error shaping so every failure answers with the JSON error
//! shape; then `X-Content-Type-Options: nosniff`, `Allow` on 405, `Connection: close` while
//! draining; and after the response is written (the turn that writes it), the access log and
//! metrics labelled by route template only. Between the body and the handler, a service's
//! [`FastRoute`]s (exact method and path) may answer without poem's router; what they decline
//! goes to the router. A connection may also serve a fast route's request in its express lane
//! ([`crate::conn`], [`Express`]) when every check above would pass it unchanged: the same
//! answer, headers, metrics and log line, without hyper's server and poem.
//!
//! The database's health is known without waiting: a background probe asks every second (every
//! 250 ms while it is down). Readiness answers from it at once, and while the database is known
//! down, handlers that need it fail at once with 503 (see [`AppState::db`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use poem::http::{HeaderValue, Method, StatusCode};
use poem::{get, Body, Endpoint, EndpointExt, IntoResponse, Request, Response, Route};
use poem_openapi::{Object, OpenApi, OpenApiService};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::config::ServiceConfig;
use crate::db::{self, DbRole};
use crate::error::{json_error, shape_error, ApiError};
use crate::metrics::Metrics;

/// Name and version of a service, for `/info`, logs, metrics and the OpenAPI document.
#[derive(Clone, Copy, Debug)]
pub struct ServiceSpec {
    pub name: &'static str,
    pub title: &'static str,
    pub version: &'static str,
    /// Keywords added to the OpenAPI document where poem-openapi cannot state them (or would
    /// enforce them wrongly, like `multipleOf` on floats): (schema, property, JSON object).
    pub schema_keywords: &'static [(&'static str, &'static str, &'static str)],
    /// The runtime's worker threads when `WORKER_THREADS` is unset; `None`: one per core
    /// (tokio's default, which also reads `TOKIO_WORKER_THREADS`).
    pub worker_threads: Option<usize>,
}

/// Shared by every handler of one running service.
#[derive(Clone)]
pub struct AppState {
    pub spec: ServiceSpec,
    pub config: Arc<ServiceConfig>,
    db: PgPool,
    pub metrics: Metrics,
    shutting_down: Arc<AtomicBool>,
    db_health: Arc<DbHealth>,
    requests: Arc<Semaphore>,
    body_bytes: Arc<Semaphore>,
    /// Successful answers seen, for the access log's one-in-N sampling.
    access_seen: Arc<AtomicU64>,
    /// Requests answered in the express lane ([`crate::conn`]).
    express_served: Arc<AtomicU64>,
}

/// The last answer of the database probe; `None` until the first probe has answered.
#[derive(Default)]
struct DbHealth(RwLock<Option<Result<DbRole, String>>>);

impl DbHealth {
    fn get(&self) -> Option<Result<DbRole, String>> {
        self.0.read().ok().and_then(|g| g.clone())
    }
    fn set(&self, v: Result<DbRole, String>) {
        if let Ok(mut g) = self.0.write() {
            *g = Some(v);
        }
    }
}

/// How long the probe (and a readiness check before the first probe) waits for the database.
const DB_PROBE_TIMEOUT: Duration = Duration::from_millis(800);

impl AppState {
    pub fn new(spec: ServiceSpec, config: ServiceConfig) -> anyhow::Result<Self> {
        let db = db::pool(&config.database)?;
        Ok(AppState {
            spec,
            metrics: Metrics::new(spec.name),
            requests: Arc::new(Semaphore::new(config.limits.max_requests_in_flight)),
            body_bytes: Arc::new(Semaphore::new(config.limits.max_body_bytes_in_flight)),
            config: Arc::new(config),
            db,
            shutting_down: Arc::new(AtomicBool::new(false)),
            db_health: Arc::default(),
            access_seen: Arc::default(),
            express_served: Arc::default(),
        })
    }

    /// The pool, or 503 `database_unavailable` at once while the probe knows the database is
    /// down (instead of every request waiting for the acquire timeout).
    pub fn db(&self) -> Result<&PgPool, ApiError> {
        match self.db_health.get() {
            Some(Err(_)) => Err(ApiError::unavailable(
                "database_unavailable",
                "the database is unavailable; retry later",
            )),
            _ => Ok(&self.db),
        }
    }

    /// Asks the database every second (every 250 ms while it is down) and records the answer.
    async fn probe_db(self) {
        loop {
            let answer = db::role(&self.db, DB_PROBE_TIMEOUT).await;
            let up = answer.is_ok();
            if let (Some(Ok(_)) | None, Err(reason)) = (self.db_health.get(), &answer) {
                tracing::warn!(%reason, "database unreachable: requests that need it answer 503 until it is back");
            } else if let (Some(Err(_)), true) = (self.db_health.get(), up) {
                tracing::info!("database reachable again");
            }
            self.db_health.set(answer);
            let pause = if up { 1000 } else { 250 };
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }

    /// Whether the access log records this answer: failures always, successes as
    /// `ACCESS_LOG` says (every one, one in N, or none). Health and metrics log at debug level.
    fn access_logged(&self, status: StatusCode, exempt: bool) -> bool {
        if exempt {
            return tracing::enabled!(tracing::Level::DEBUG);
        }
        match self.config.access_log_every {
            _ if status.as_u16() >= 400 => true,
            1 => true,
            0 => false,
            n => self
                .access_seen
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(n),
        }
    }

    /// Requests answered in the express lane so far (tests and benchmarks tell the two paths
    /// apart by it; the answers are the same).
    pub fn express_served(&self) -> u64 {
        self.express_served.load(Ordering::Relaxed)
    }

    /// Requests being served now (this one among them), health checks and scrapes aside.
    pub fn requests_in_flight(&self) -> usize {
        self.config
            .limits
            .max_requests_in_flight
            .saturating_sub(self.requests.available_permits())
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// The database role as the probe last saw it (asked now, within 800 ms, before the first
    /// probe has answered): health checks answer at once.
    pub async fn db_role(&self) -> Result<DbRole, String> {
        match self.db_health.get() {
            Some(answer) => answer,
            None => db::role(&self.db, DB_PROBE_TIMEOUT).await,
        }
    }

    /// The `/api/v1/info` document: where this instance runs and what it talks to (no secrets).
    pub async fn info(&self) -> ServiceInfo {
        let (host, port, name, user) = self.config.database.describe();
        let role = self.db_role().await;
        ServiceInfo {
            service: self.spec.name.to_string(),
            version: self.spec.version.to_string(),
            region: self.config.region.clone(),
            app_role: self.config.app_role.clone(),
            database: DatabaseInfo {
                host,
                port,
                name,
                user,
                reachable: role.is_ok(),
                role: role.ok().map(|r| r.as_str().to_string()),
            },
        }
    }
}

/// Where a service runs and which database it uses.
#[derive(Object, Debug)]
pub struct ServiceInfo {
    /// Service name, e.g. `frontend-api`.
    pub service: String,
    pub version: String,
    /// The `REGION` this instance was started with.
    pub region: String,
    /// The region's application role from its ConfigMap (`APP_ROLE`), when set.
    pub app_role: Option<String>,
    pub database: DatabaseInfo,
}

/// The database a service uses; never includes the password.
#[derive(Object, Debug)]
pub struct DatabaseInfo {
    pub host: String,
    pub port: u16,
    pub name: String,
    pub user: String,
    pub reachable: bool,
    /// `primary`, `standby` or `read_only`; absent when unreachable.
    pub role: Option<String>,
}

/// The request id of the current request (from `x-request-id`, or generated).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

fn request_id_of(req: &Request) -> String {
    request_id_from(req.header("x-request-id"))
}

/// The client's `x-request-id` when it is a usable id, else a new one.
fn request_id_from(given: Option<&str>) -> String {
    given
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(new_request_id)
}

/// A new request id: a version-4 UUID from a per-thread generator (SplitMix64) seeded once from
/// the operating system, instead of one `getrandom` system call per request. Request ids must
/// be unique, not secret.
pub(crate) fn new_request_id() -> String {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(u64::from_le_bytes(
            uuid::Uuid::new_v4().as_bytes()[..8].try_into().unwrap_or_default(),
        ));
    }
    fn next(s: &Cell<u64>) -> u64 {
        let x = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        s.set(x);
        let z = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    let (a, b) = STATE.with(|s| (next(s), next(s)));
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_le_bytes());
    bytes[8..].copy_from_slice(&b.to_le_bytes());
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .encode_lower(&mut text)
        .to_string()
}

fn live(state: &AppState) -> Response {
    let body = json!({"status": "alive", "service": state.spec.name});
    poem::web::Json(body).into_response()
}

async fn ready(state: &AppState) -> Response {
    let base = |status: &str| json!({"status": status, "service": state.spec.name, "region": state.config.region});
    if state.is_shutting_down() {
        let mut body = base("shutting_down");
        body["error"] = json!({"code": "shutting_down", "message": "the service is shutting down"});
        return (StatusCode::SERVICE_UNAVAILABLE, poem::web::Json(body)).into_response();
    }
    match state.db_role().await {
        Ok(role) => {
            let mut body = base("ready");
            body["database"] = json!({"reachable": true, "role": role.as_str()});
            poem::web::Json(body).into_response()
        }
        Err(reason) => {
            tracing::warn!(%reason, "readiness: database unreachable");
            let mut body = base("not_ready");
            body["database"] = json!({"reachable": false});
            body["error"] =
                json!({"code": "database_unavailable", "message": "the database does not answer"});
            (StatusCode::SERVICE_UNAVAILABLE, poem::web::Json(body)).into_response()
        }
    }
}

fn metrics(state: &AppState) -> Response {
    Response::builder()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render(&state.db))
}

/// An endpoint of the shared routes, given the state (not through request data: putting the
/// state into every request's extensions cost every API request a clone and an insert).
fn with_state<F, Fut>(state: &AppState, f: F) -> impl Endpoint<Output = Response>
where
    F: Fn(AppState) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response> + Send + 'static,
{
    let state = state.clone();
    poem::endpoint::make(move |_| f(state.clone()))
}

/// The route templates a service answers, and their methods: metric labels come only from
/// here (a client's path never becomes a label), and 405 answers carry `Allow`.
struct Routes(HashMap<String, Vec<Method>>);

/// Paths every service has besides its API.
const SHARED_ROUTES: [&str; 4] = ["/health/live", "/health/ready", "/metrics", "/openapi.json"];

impl Routes {
    fn from_spec(spec: &Value) -> Routes {
        let mut map: HashMap<String, Vec<Method>> = SHARED_ROUTES
            .iter()
            .map(|p| (p.to_string(), vec![Method::GET]))
            .collect();
        if let Some(paths) = spec["paths"].as_object() {
            for (path, ops) in paths {
                let methods = ops
                    .as_object()
                    .map(|o| {
                        o.keys()
                            .filter_map(|m| m.to_ascii_uppercase().parse().ok())
                            .collect()
                    })
                    .unwrap_or_default();
                map.insert(format!("/api/v1{path}"), methods);
            }
        }
        Routes(map)
    }

    /// The template a path matched (`/docs` for the Swagger UI's files), or `unmatched`.
    fn label<'a>(&'a self, path: &str) -> &'a str {
        if path == "/docs" || path.starts_with("/docs/") {
            return "/docs";
        }
        self.0
            .get_key_value(path)
            .map_or("unmatched", |(k, _)| k.as_str())
    }

    fn allow(&self, path: &str) -> Option<String> {
        let methods = self.0.get(path)?;
        Some(
            methods
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        )
    }
}

/// Methods outside the standard set share one label.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Routes exempt from the in-flight limit: probes and scrapes must answer under load.
fn exempt(path: &str) -> bool {
    path.starts_with("/health/") || path == "/metrics"
}

/// The answer to a request its handler did not answer within the request timeout.
fn request_timed_out(timeout: Duration) -> Response {
    retry_later(
        ApiError::unavailable(
            "timeout",
            format!(
                "the request took longer than {} ms; retry later",
                timeout.as_millis()
            ),
        )
        .to_response(),
    )
}

fn retry_later(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert("retry-after", HeaderValue::from_static("1"));
    resp
}

/// Writes (any method but GET, HEAD and OPTIONS under `/api/`) need `Authorization: Bearer`
/// with one of the configured tokens, when tokens are configured.
#[allow(clippy::result_large_err)]
fn authorize(req: &Request, state: &AppState) -> Result<(), Response> {
    authorize_parts(
        req.method().as_str(),
        req.uri().path(),
        req.header("authorization"),
        state,
    )
}

/// [`authorize`] on the parts it reads (the express lane has no poem `Request`).
#[allow(clippy::result_large_err)]
fn authorize_parts(
    method: &str,
    path: &str,
    authorization: Option<&str>,
    state: &AppState,
) -> Result<(), Response> {
    let tokens = &state.config.auth_tokens;
    let read = matches!(method, "GET" | "HEAD" | "OPTIONS");
    if tokens.is_empty() || read || !path.starts_with("/api/") {
        return Ok(());
    }
    let given = authorization
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim);
    let known = given.is_some_and(|g| {
        tokens
            .iter()
            .any(|t| same_secret(g.as_bytes(), t.expose_secret().as_bytes()))
    });
    if known {
        return Ok(());
    }
    let mut resp = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        if given.is_some() {
            "the bearer token is not valid"
        } else {
            "writes need an Authorization: Bearer token"
        },
    )
    .to_response();
    resp.headers_mut()
        .insert("www-authenticate", HeaderValue::from_static("Bearer"));
    Err(resp)
}

/// Compares without stopping at the first difference.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads what is left of a body that is refused for load and drops it (up to `limit` bytes,
/// until `deadline`), so a client that writes its whole body before reading gets the 503
/// instead of a broken pipe. Nothing is kept.
async fn discard_body(req: &mut Request, limit: usize, deadline: tokio::time::Instant) {
    discard(&mut req.take_body().into(), limit, deadline).await
}

type RawBody = http_body_util::combinators::BoxBody<bytes::Bytes, std::io::Error>;

async fn discard(body: &mut RawBody, limit: usize, deadline: tokio::time::Instant) {
    let mut seen = 0usize;
    while seen <= limit {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => seen += frame.data_ref().map_or(0, |d| d.len()),
            _ => break,
        }
    }
}

/// A body read whole, and the permits that hold its share of the shared byte budget until the
/// request is answered.
struct ReadBody {
    bytes: bytes::Bytes,
    _held: Option<OwnedSemaphorePermit>,
}

/// Reads the whole body under the size limit, the shared byte budget and the deadline.
async fn read_body(
    req: &mut Request,
    state: &AppState,
    deadline: tokio::time::Instant,
) -> Result<ReadBody, Response> {
    let limit = state.config.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than {limit} bytes"),
        )
        .to_response()
    };
    let busy = || {
        retry_later(
            ApiError::unavailable(
                "overloaded",
                "the service holds as many request bodies as it can; retry later",
            )
            .to_response(),
        )
    };
    let declared = match req.header("content-length") {
        Some(v) => Some(v.trim().parse::<usize>().map_err(|_| {
            ApiError::bad_request("invalid_request", "invalid Content-Length").to_response()
        })?),
        None => None,
    };
    if declared == Some(0) || (declared.is_none() && req.header("transfer-encoding").is_none()) {
        return Ok(ReadBody {
            bytes: bytes::Bytes::new(),
            _held: None,
        });
    }
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut permit = match declared {
        Some(n) => match state.body_bytes.clone().try_acquire_many_owned(n as u32) {
            Ok(p) => Some(p),
            Err(_) => {
                discard_body(req, limit, deadline).await;
                return Err(busy());
            }
        },
        None => None,
    };
    let mut body: RawBody = req.take_body().into();
    let mut buf = bytes::BytesMut::with_capacity(declared.unwrap_or(8192).min(limit));
    let timed_out = || {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request body did not arrive in time",
        )
        .to_response()
    };
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(timed_out()),
            Ok(None) => break,
            Ok(Some(Err(_))) => {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    "the request body could not be read",
                )
                .to_response())
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > limit {
            return Err(too_large());
        }
        if declared.is_none() {
            let Ok(more) = state
                .body_bytes
                .clone()
                .try_acquire_many_owned(data.len() as u32)
            else {
                drop(buf);
                discard(&mut body, limit, deadline).await;
                return Err(busy());
            };
            match permit.as_mut() {
                Some(p) => p.merge(more),
                None => permit = Some(more),
            }
        }
        buf.extend_from_slice(&data);
    }
    Ok(ReadBody {
        bytes: buf.freeze(),
        _held: permit,
    })
}

/// The size of a request's header lines, as `MAX_HEADER_BYTES` counts it, from each header's
/// name and value lengths (`name: value` and its line end).
fn head_bytes(headers: impl Iterator<Item = (usize, usize)>) -> usize {
    headers.map(|(name, value)| name + value + 4).sum()
}

/// Everything between the connection and the routes; see the module documentation.
async fn handle<E: Endpoint>(
    ep: &E,
    mut req: Request,
    state: &Arc<AppState>,
    routes: &Arc<Routes>,
    fast: &[Arc<dyn FastRoute>],
) -> Response {
    let started = Instant::now();
    let id = request_id_of(&req);
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    // Only the id on the span (every log line of the request carries it); the method and path
    // are on the access line alone, which may be sampled out. JSON lines get the span from a
    // task-local instead (telemetry::with_request_id), which costs next to nothing.
    let span = if crate::telemetry::json_lines() {
        tracing::Span::none()
    } else {
        tracing::info_span!("request", request_id = %id)
    };
    let limits = &state.config.limits;
    let deadline = tokio::time::Instant::now() + limits.request_timeout;
    // Set when the body may be left unread: the connection cannot be reused.
    let mut close = false;
    let target_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    let head_len = head_bytes(
        req.headers()
            .iter()
            .map(|(k, v)| (k.as_str().len(), v.len())),
    );
    let mut resp = if target_len > limits.max_uri_bytes {
        close = true;
        ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!(
                "the request target is longer than {} bytes",
                limits.max_uri_bytes
            ),
        )
        .to_response()
    } else if head_len > limits.max_header_bytes {
        close = true;
        ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "the request headers are larger than {} bytes",
                limits.max_header_bytes
            ),
        )
        .to_response()
    } else if let Err(refusal) = authorize(&req, state) {
        refusal
    } else {
        let slot = if exempt(&path) {
            None
        } else {
            state.requests.clone().try_acquire_owned().ok()
        };
        if slot.is_none() && !exempt(&path) {
            close = true;
            if req.header("content-length").is_some() || req.header("transfer-encoding").is_some() {
                discard_body(&mut req, state.config.max_body_bytes, deadline).await;
            }
            retry_later(
                ApiError::unavailable(
                    "overloaded",
                    "the service is serving as many requests as it can; retry later",
                )
                .to_response(),
            )
        } else {
            match read_body(&mut req, state, deadline).await {
                Err(resp) => {
                    close = true;
                    resp
                }
                Ok(body) => {
                    let fast = fast
                        .iter()
                        .find(|f| f.method() == method && f.path() == path);
                    let answer = fast.and_then(|f| {
                        let view = FastRequest {
                            request_id: &id,
                            content_type: req.content_type(),
                            authorization: req.header("authorization"),
                        };
                        f.answer(&view, body.bytes.clone())
                    });
                    let call = async move {
                        if let Some(answer) = answer {
                            return Ok(answer.await);
                        }
                        req.set_body(Body::from(body.bytes));
                        ep.call(req).await.map(IntoResponse::into_response)
                    }
                    .instrument(span.clone());
                    match tokio::time::timeout_at(
                        deadline,
                        crate::telemetry::with_request_id(&id, call),
                    )
                    .await
                    {
                        Ok(Ok(resp)) => resp,
                        Ok(Err(e)) => shape_error(e),
                        Err(_) => request_timed_out(limits.request_timeout),
                    }
                }
            }
        }
    };
    let status = resp.status();
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&id) {
        headers.insert("x-request-id", v);
    }
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    if close || state.is_shutting_down() {
        headers.insert("connection", HeaderValue::from_static("close"));
    }
    if status == StatusCode::METHOD_NOT_ALLOWED {
        if let Some(allow) = routes
            .allow(&path)
            .and_then(|a| HeaderValue::from_str(&a).ok())
        {
            headers.insert("allow", allow);
        }
    }
    // Metrics and the access line after hyper's turn that writes the response (the client
    // does not wait for them); the time is taken then, so it includes writing an answer that
    // fits the socket's buffer, as nginx's includes the writing.
    resp.extensions_mut().insert(AfterResponse {
        state: state.clone(),
        routes: routes.clone(),
        id,
        method,
        path,
        status,
        started,
    });
    resp
}

/// A service's API: its poem-openapi operations, and the routes among them answered without
/// poem's router.
pub trait ServiceApi: OpenApi + 'static {
    /// Routes answered before poem's router; none unless a service has a hot path.
    fn fast_routes(&self) -> Vec<Arc<dyn FastRoute>> {
        Vec::new()
    }
}

/// An answer a [`FastRoute`] is making.
pub type FastAnswer<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send + 'a>>;

/// A hot path answered after the middleware (request id, limits, authorization, the body read
/// whole, the timeout, metrics and access log all apply) but without poem's router and
/// poem-openapi's extractors (frontend-api's pass-through: docs/performance.md, "Fifth pass").
///
/// The same method and path must also be an operation of the service's API (checked by
/// [`endpoint`]): it documents the route, and it answers whatever the fast route leaves to it
/// (a wrong content type, ...), so the error answers have one source.
///
/// A connection also serves them in its express lane ([`crate::conn`]): straight from the bytes
/// it read, without hyper's server and poem, for a request the middleware would pass as it is
/// (see [`Express`]); so a fast route sees only a [`FastRequest`], the same in both.
pub trait FastRoute: Send + Sync + 'static {
    fn method(&self) -> Method;
    /// Matched exactly against the request's path (the query is not part of it).
    fn path(&self) -> &'static str;
    /// The answer, or `None` to leave the request to poem's router. Deciding must not have
    /// effects: a request declined here is served again by the router.
    fn answer<'a>(&'a self, req: &FastRequest<'_>, body: bytes::Bytes) -> Option<FastAnswer<'a>>;
}

/// What a [`FastRoute`] sees of a request besides its body.
pub struct FastRequest<'r> {
    /// The request id (the client's `x-request-id`, or one made by the middleware).
    pub request_id: &'r str,
    /// `content-type`, when it is visible ASCII (as poem's `Request::content_type`).
    pub content_type: Option<&'r str>,
    /// `authorization`, when it is visible ASCII (as poem's `Request::header`).
    pub authorization: Option<&'r str>,
}

/// A request's metrics and access line, carried by its response (in the extensions) and
/// recorded by the connection once the response is written.
#[derive(Clone)]
pub(crate) struct AfterResponse {
    state: Arc<AppState>,
    routes: Arc<Routes>,
    id: String,
    method: Method,
    path: String,
    status: StatusCode,
    started: Instant,
}

impl AfterResponse {
    pub(crate) fn record(self) {
        let AfterResponse {
            state,
            routes,
            id,
            method,
            path,
            status,
            started,
        } = self;
        let (path, elapsed) = (path.as_str(), started.elapsed());
        state.metrics.observe(
            routes.label(path),
            method_label(&method),
            status.as_str(),
            elapsed.as_secs_f64(),
        );
        if !state.access_logged(status, exempt(path)) {
            return;
        }
        let shown_path = path
            .char_indices()
            .nth(200)
            .map_or(path, |(i, _)| &path[..i]);
        let level = if exempt(path) {
            tracing::Level::DEBUG
        } else if status.as_u16() >= 500 {
            tracing::Level::WARN
        } else {
            tracing::Level::INFO
        };
        let status = status.as_u16();
        // JSON lines are written by hand (the same shape); otherwise through tracing.
        if !crate::telemetry::access(level, &id, method.as_str(), shown_path, status, elapsed) {
            let span = tracing::info_span!("request", request_id = %id);
            span.in_scope(|| {
                let ms = elapsed.as_secs_f64() * 1000.0;
                if level == tracing::Level::DEBUG {
                    tracing::debug!(%method, path = shown_path, status, ms, "request");
                } else if level == tracing::Level::WARN {
                    tracing::warn!(%method, path = shown_path, status, ms, "request");
                } else {
                    tracing::info!(%method, path = shown_path, status, ms, "request");
                }
            });
        }
    }
}

/// The express lane's side of the middleware: the fast routes, answered for a connection
/// ([`crate::conn`]) that parsed the request itself, when the middleware would have let the
/// request through unchanged. Whatever it declines (an over-long head, a missing token, no
/// free slot, a body over the limit, a declined route, a server shutting down) the connection
/// gives to hyper and [`handle`], which answer it as always: the lane only ever serves what
/// the middleware would have passed, with the same id, headers, timeout, metrics and log line.
pub(crate) struct Express {
    state: Arc<AppState>,
    routes: Arc<Routes>,
    fast: Arc<[Arc<dyn FastRoute>]>,
}

/// A request the express lane serves: the route's answer to come, and what the middleware
/// keeps while it is made (the slots, the id, the clock).
pub(crate) struct ExpressCall<'a> {
    answer: FastAnswer<'a>,
    state: &'a Arc<AppState>,
    routes: &'a Arc<Routes>,
    id: String,
    method: Method,
    path: &'static str,
    started: Instant,
    deadline: tokio::time::Instant,
    _slot: OwnedSemaphorePermit,
    _body: Option<OwnedSemaphorePermit>,
}

/// A header's value as poem's `HeaderValue::to_str` gives it: visible ASCII, spaces and tabs.
fn visible(value: &[u8]) -> Option<&str> {
    if value.iter().all(|&b| b == b'\t' || (32..127).contains(&b)) {
        std::str::from_utf8(value).ok()
    } else {
        None
    }
}

impl Express {
    /// `None` when the service has no fast route.
    fn new(
        state: Arc<AppState>,
        routes: Arc<Routes>,
        fast: Arc<[Arc<dyn FastRoute>]>,
    ) -> Option<Arc<Express>> {
        (!fast.is_empty()).then(|| {
            Arc::new(Express {
                state,
                routes,
                fast,
            })
        })
    }

    /// The fast route for this method and target, if any (looked up before the body is read).
    pub(crate) fn route(&self, method: &str, target: &str) -> Option<&Arc<dyn FastRoute>> {
        self.fast
            .iter()
            .find(|f| f.method().as_str() == method && f.path() == target)
    }

    /// The largest body the middleware accepts.
    pub(crate) fn max_body_bytes(&self) -> usize {
        self.state.config.max_body_bytes
    }

    /// The call for a complete HTTP/1.1 request for `route` (`target` without a query, `body`
    /// as long as its `content-length`), or `None` to leave it to the middleware: the same
    /// checks, in the same order, as [`handle`], the lane taking only the requests that pass
    /// all of them.
    pub(crate) fn start<'a>(
        &'a self,
        route: &'a Arc<dyn FastRoute>,
        target: &str,
        headers: &[httparse::Header<'_>],
        body: bytes::Bytes,
    ) -> Option<ExpressCall<'a>> {
        let started = Instant::now();
        let state = &self.state;
        if state.is_shutting_down() {
            return None;
        }
        let method = route.method();
        let limits = &state.config.limits;
        let head_len = head_bytes(headers.iter().map(|h| (h.name.len(), h.value.len())));
        if target.len() > limits.max_uri_bytes || head_len > limits.max_header_bytes {
            return None;
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| visible(h.value))
        };
        // A header that is there but not visible ASCII: poem would not see it; leave it to the
        // middleware rather than reason about it here.
        let (id, content_type, authorization) = (
            header("x-request-id"),
            header("content-type"),
            header("authorization"),
        );
        if [id, content_type, authorization].contains(&Some(None)) {
            return None;
        }
        let (content_type, authorization) = (content_type.flatten(), authorization.flatten());
        authorize_parts(method.as_str(), target, authorization, state).ok()?;
        let slot = state.requests.clone().try_acquire_owned().ok()?;
        let body_slot = match body.len() {
            0 => None,
            n => Some(
                state
                    .body_bytes
                    .clone()
                    .try_acquire_many_owned(n as u32)
                    .ok()?,
            ),
        };
        let id = request_id_from(id.flatten());
        let view = FastRequest {
            request_id: &id,
            content_type,
            authorization,
        };
        let answer = route.answer(&view, body)?;
        Some(ExpressCall {
            answer,
            state,
            routes: &self.routes,
            id,
            method,
            path: route.path(),
            started,
            deadline: tokio::time::Instant::from_std(started) + limits.request_timeout,
            _slot: slot,
            _body: body_slot,
        })
    }
}

impl ExpressCall<'_> {
    /// Makes the answer and writes it, head and body, to `out` as hyper would have (with the
    /// middleware's headers); returns what is due once it is written, and whether the
    /// connection closes after it (the service is shutting down).
    pub(crate) async fn answer(self, out: &mut Vec<u8>) -> (AfterResponse, bool) {
        let ExpressCall {
            answer,
            state,
            routes,
            id,
            method,
            path,
            started,
            deadline,
            _slot: slot,
            _body: body_slot,
        } = self;
        let timeout = state.config.limits.request_timeout;
        // As in `handle`: the id from a task-local for JSON lines, a span on a terminal.
        let span = if crate::telemetry::json_lines() {
            tracing::Span::none()
        } else {
            tracing::info_span!("request", request_id = %id)
        };
        let answer = crate::telemetry::with_request_id(&id, answer.instrument(span));
        let resp = match tokio::time::timeout_at(deadline, answer).await {
            Ok(resp) => resp,
            Err(_) => request_timed_out(timeout),
        };
        drop((slot, body_slot));
        state.express_served.fetch_add(1, Ordering::Relaxed);
        let close = state.is_shutting_down();
        let status = resp.status();
        let (parts, body) = resp.into_parts();
        let body = body.into_bytes().await.unwrap_or_default();
        encode_head(out, status, &parts.headers, body.len(), &id, close);
        out.extend_from_slice(&body);
        let after = AfterResponse {
            state: state.clone(),
            routes: routes.clone(),
            id,
            method,
            path: path.to_string(),
            status,
            started,
        };
        (after, close)
    }
}

/// An answer's head as hyper writes it, with the headers [`handle`] adds.
fn encode_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &poem::http::HeaderMap,
    len: usize,
    id: &str,
    close: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        let name = name.as_str();
        if matches!(
            name,
            "content-length" | "date" | "x-request-id" | "x-content-type-options" | "connection"
        ) {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"x-request-id: ");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b"\r\nx-content-type-options: nosniff\r\n");
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"content-length: ");
    crate::telemetry::digits(out, len as u64, 1);
    out.extend_from_slice(b"\r\ndate: ");
    http_date(out);
    out.extend_from_slice(b"\r\n\r\n");
}

/// The `date` header's value now (IMF-fixdate, as hyper writes it), formatted once a second
/// per thread.
fn http_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: std::cell::Cell<(i64, [u8; 29])> = const { std::cell::Cell::new((i64::MIN, [0; 29])) };
    }
    let now = chrono::Utc::now();
    let (second, mut text) = DATE.get();
    if second == now.timestamp() {
        out.extend_from_slice(&text);
        return;
    }
    let formatted = now.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    if formatted.len() == text.len() {
        text.copy_from_slice(formatted.as_bytes());
        DATE.set((now.timestamp(), text));
    }
    out.extend_from_slice(formatted.as_bytes());
}

/// Builds the whole endpoint of a service around its API, and the express lane of its fast
/// routes (`None` when it has none).
fn endpoint<A: ServiceApi>(
    state: AppState,
    api: A,
) -> (impl Endpoint<Output = Response>, Option<Arc<Express>>) {
    let fast: Arc<[Arc<dyn FastRoute>]> = api.fast_routes().into();
    let api_service = OpenApiService::new(api, state.spec.title, state.spec.version)
        .server("/api/v1")
        .description("One of the three drdctl application services. Errors answer {\"error\":{\"code\",\"message\"}}.");
    let spec: Value = serde_json::from_str(&api_service.spec()).unwrap_or(Value::Null);
    let routes = Arc::new(Routes::from_spec(&spec));
    for f in fast.iter() {
        assert!(
            routes
                .0
                .get(f.path())
                .is_some_and(|m| m.contains(&f.method())),
            "the fast route {} {} is not an operation of the API that documents it",
            f.method(),
            f.path()
        );
    }
    let spec_json = crate::openapi::complete(
        spec,
        state.spec.schema_keywords,
        !state.config.auth_tokens.is_empty(),
    );
    let ui = api_service.swagger_ui();
    let outer = Arc::new(state.clone());
    let express = Express::new(outer.clone(), routes.clone(), fast.clone());
    let mut route = Route::new();
    if state.config.metrics_listen.is_none() {
        route = route.at(
            "/metrics",
            get(with_state(&state, |s| async move { metrics(&s) })),
        );
    }
    let ep = route
        .nest("/api/v1", api_service)
        .at(
            "/health/live",
            get(with_state(&state, |s| async move { live(&s) })),
        )
        .at(
            "/health/ready",
            get(with_state(&state, |s| async move { ready(&s).await })),
        )
        .at(
            "/openapi.json",
            get(poem::endpoint::make_sync(move |_| {
                Response::builder()
                    .content_type("application/json; charset=utf-8")
                    .body(spec_json.clone())
            })),
        )
        .nest("/docs", ui)
        .around(move |ep, req| {
            let state = outer.clone();
            let (routes, fast) = (routes.clone(), fast.clone());
            async move { Ok::<_, poem::Error>(handle(&ep, req, &state, &routes, &fast).await) }
        });
    (ep, express)
}

/// A service that is serving; dropping it does not stop it, [`Running::shutdown`] does.
pub struct Running {
    pub addr: SocketAddr,
    pub state: AppState,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    probe: tokio::task::JoinHandle<()>,
    metrics_task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Binds `config.listen` (port 0 picks a free port) and serves `api` with the shared routes.
pub async fn start<A, F>(
    spec: ServiceSpec,
    config: ServiceConfig,
    make_api: F,
) -> anyhow::Result<Running>
where
    A: ServiceApi,
    F: FnOnce(AppState) -> A,
{
    let listen = config.listen;
    let state = AppState::new(spec, config)?;
    let (ep, express) = endpoint(state.clone(), make_api(state.clone()));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen} (LISTEN_ADDR/PORT): {e}"))?;
    let addr = listener.local_addr().unwrap_or(listen);
    let (stop, stopped) = watch::channel(false);
    let timeout = state.config.shutdown_timeout;
    let limits = state.config.limits.clone();
    let metrics_task = match state.config.metrics_listen {
        Some(at) => {
            let listener = tokio::net::TcpListener::bind(at)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {at} (METRICS_ADDR): {e}"))?;
            tracing::info!(addr = %listener.local_addr().unwrap_or(at), "metrics served apart from the API");
            let ep = Route::new()
                .at(
                    "/metrics",
                    get(with_state(&state, |s| async move { metrics(&s) })),
                )
                .map_to_response();
            Some(tokio::spawn(crate::conn::serve(
                listener,
                ep,
                None,
                limits.clone(),
                stopped.clone(),
                timeout,
            )))
        }
        None => None,
    };
    let task = tokio::spawn(crate::conn::serve(
        listener, ep, express, limits, stopped, timeout,
    ));
    let probe = tokio::spawn(state.clone().probe_db());
    match (&state.config.auth_tokens_missing, state.config.auth_tokens.len()) {
        (Some(path), 0) => tracing::warn!(
            file = %path,
            "AUTH_TOKENS_FILE does not exist: writes are open to anyone who can reach the service"
        ),
        (None, 0) => tracing::warn!(
            "no AUTH_TOKENS or AUTH_TOKENS_FILE: writes are open to anyone who can reach the service"
        ),
        (_, n) => tracing::info!(tokens = n, "writes need a bearer token"),
    }
    let (db_host, db_port, db_name, _) = state.config.database.describe();
    tracing::info!(
        service = spec.name,
        version = spec.version,
        %addr,
        region = %state.config.region,
        database = %format!("{db_host}:{db_port}/{db_name}"),
        "listening"
    );
    Ok(Running {
        addr,
        state,
        stop,
        task,
        probe,
        metrics_task,
    })
}

impl Running {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Graceful shutdown: readiness turns 503 and every answer carries `Connection: close`
    /// first; after the drain period the listener closes, idle connections are closed and
    /// in-flight requests get up to the shutdown timeout to finish.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.state.shutting_down.store(true, Ordering::SeqCst);
        tracing::info!(drain = ?self.state.config.shutdown_drain, "shutting down: readiness now 503");
        tokio::time::sleep(self.state.config.shutdown_drain).await;
        let _ = self.stop.send(true);
        self.task.await??;
        if let Some(m) = self.metrics_task {
            m.await??;
        }
        self.probe.abort();
        self.state.db.close().await;
        tracing::info!("stopped");
        Ok(())
    }

    /// Serves until SIGTERM or Ctrl-C, then shuts down gracefully.
    pub async fn until_signalled(self) -> anyhow::Result<()> {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        self.shutdown().await
    }
}

/// The body of a JSON error response, for handlers building responses by hand.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    json_error(status, code, message)
}

/// The shared `main` of the three services: config from the environment, logs, serve until
/// SIGTERM. Exits with code 64 (EX_USAGE) on a configuration error, naming the variable.
pub fn main<A, F>(spec: ServiceSpec, default_port: u16, default_body_limit: usize, make_api: F)
where
    A: ServiceApi,
    F: FnOnce(AppState) -> A,
{
    crate::telemetry::init();
    let config = match ServiceConfig::from_env(default_port, default_body_limit) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: configuration error: {e}", spec.name);
            std::process::exit(64);
        }
    };
    // WORKER_THREADS, else the service's own default, else one per core.
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = config.worker_threads.or(spec.worker_threads) {
        runtime.worker_threads(n);
    }
    let runtime = match runtime.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{}: cannot start the async runtime: {e}", spec.name);
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async {
        let running = start(spec, config, make_api).await?;
        running.until_signalled().await
    });
    if let Err(e) = result {
        tracing::error!(error = %format!("{e:#}"), "{} failed", spec.name);
        crate::telemetry::flush();
        eprintln!("{}: {e:#}", spec.name);
        std::process::exit(1);
    }
    // The log lines still buffered (the access log is written in batches).
    crate::telemetry::flush();
}

#[cfg(test)]
mod tests {
    use poem::http::{HeaderMap, HeaderValue, StatusCode};

    #[test]
    fn the_express_head_is_written_as_hyper_writes_one() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        // The middleware's own headers are written once, from their own values.
        headers.insert("x-request-id", HeaderValue::from_static("stale"));
        headers.insert("content-length", HeaderValue::from_static("999"));
        let mut out = Vec::new();
        super::encode_head(&mut out, StatusCode::CREATED, &headers, 1234, "id-1", true);
        let text = String::from_utf8(out).unwrap();
        let (head, date) = text.rsplit_once("date: ").unwrap();
        assert_eq!(
            head,
            "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\nx-request-id: id-1\r\n\
             x-content-type-options: nosniff\r\nconnection: close\r\ncontent-length: 1234\r\n"
        );
        let date = date.strip_suffix("\r\n\r\n").unwrap();
        let parsed = chrono::DateTime::parse_from_rfc2822(date).unwrap();
        assert!(
            (chrono::Utc::now() - parsed.to_utc()).num_seconds().abs() < 5,
            "{date}"
        );
        assert!(date.ends_with(" GMT") && date.len() == 29, "{date}");
        for n in [0, 7, 10, 12345, u64::MAX] {
            let mut out = Vec::new();
            crate::telemetry::digits(&mut out, n, 1);
            assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
        }
    }
}
