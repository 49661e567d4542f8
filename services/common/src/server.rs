//! Everything around a service's own endpoints: shared routes, middleware, start and shutdown.
//!
//! Routes every service has:
//! - `/health/live` (the process answers), `/health/ready` (the database answers and the service
//!   is not shutting down; reports the database role), `/metrics` (Prometheus text),
//! - `/openapi.json` and Swagger UI at `/docs`,
//! - the service's own API under `/api/v1`.
//!
//! Middleware, outermost first: request id (`x-request-id` taken from the client or made, put
//! on the response and on every log line), access log and metrics, body size limit, and error
//! shaping so every failure answers with the JSON error shape.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use poem::http::{HeaderValue, StatusCode};
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::Data;
use poem::{get, handler, Body, Endpoint, EndpointExt, IntoResponse, Request, Response, Route};
use poem_openapi::{Object, OpenApi, OpenApiService};
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::oneshot;
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
}

/// Shared by every handler of one running service.
#[derive(Clone)]
pub struct AppState {
    pub spec: ServiceSpec,
    pub config: Arc<ServiceConfig>,
    pub db: PgPool,
    pub metrics: Metrics,
    shutting_down: Arc<AtomicBool>,
}

impl AppState {
    pub fn new(spec: ServiceSpec, config: ServiceConfig) -> anyhow::Result<Self> {
        let db = db::pool(&config.database)?;
        Ok(AppState {
            spec,
            metrics: Metrics::new(spec.name),
            config: Arc::new(config),
            db,
            shutting_down: Arc::new(AtomicBool::new(false)),
        })
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// The database role, with a short timeout (health checks must answer quickly).
    pub async fn db_role(&self) -> Result<DbRole, String> {
        db::role(&self.db, Duration::from_secs(2)).await
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
    req.header("x-request-id")
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

#[handler]
fn live(Data(state): Data<&AppState>) -> Response {
    let body = json!({"status": "alive", "service": state.spec.name});
    poem::web::Json(body).into_response()
}

#[handler]
async fn ready(Data(state): Data<&AppState>) -> Response {
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

#[handler]
fn metrics(Data(state): Data<&AppState>) -> Response {
    Response::builder()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render(&state.db))
}

/// Paths outside the API and their own label; unknown paths share one label, so a scanner
/// cannot blow up the metric cardinality.
fn route_label(path: &str, status: StatusCode) -> String {
    if status == StatusCode::NOT_FOUND && !path.starts_with("/api/") {
        return "unmatched".into();
    }
    if path.len() > 64
        || status == StatusCode::NOT_FOUND
        || status == StatusCode::METHOD_NOT_ALLOWED
    {
        return "unmatched".into();
    }
    if path.starts_with("/docs") {
        return "/docs".into();
    }
    path.to_string()
}

/// Rejects bodies over the limit with 413: by `Content-Length` when given, by reading at most
/// `limit` bytes when the body is chunked.
async fn enforce_body_limit(mut req: Request, limit: usize) -> Result<Request, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than {limit} bytes"),
        )
    };
    match req.header("content-length") {
        Some(len) => {
            let len: usize = len
                .parse()
                .map_err(|_| ApiError::bad_request("invalid_request", "invalid Content-Length"))?;
            if len > limit {
                return Err(too_large());
            }
        }
        None if req.header("transfer-encoding").is_some() => {
            let body = req.take_body();
            let bytes = body
                .into_bytes_limit(limit)
                .await
                .map_err(|_| too_large())?;
            req.set_body(Body::from(bytes));
        }
        None => {}
    }
    Ok(req)
}

/// Builds the whole endpoint of a service around its API.
pub fn endpoint<A: OpenApi + 'static>(state: AppState, api: A) -> impl Endpoint<Output = Response> {
    let api_service = OpenApiService::new(api, state.spec.title, state.spec.version)
        .server("/api/v1")
        .description("One of the three drdctl application services. Errors answer {\"error\":{\"code\",\"message\"}}.");
    let spec_json = api_service.spec_endpoint();
    let ui = api_service.swagger_ui();
    let limit = state.config.max_body_bytes;
    let metrics_state = state.clone();
    Route::new()
        .nest("/api/v1", api_service)
        .at("/health/live", get(live))
        .at("/health/ready", get(ready))
        .at("/metrics", get(metrics))
        .at("/openapi.json", spec_json)
        .nest("/docs", ui)
        .data(state)
        .around(move |ep, req| async move {
            match enforce_body_limit(req, limit).await {
                Ok(req) => ep.call(req).await.map(IntoResponse::into_response),
                Err(e) => Ok(e.to_response()),
            }
        })
        .catch_all_error(|err| async move { shape_error(err) })
        .around(move |ep, mut req| {
            let state = metrics_state.clone();
            async move {
                let started = Instant::now();
                let id = request_id_of(&req);
                req.extensions_mut().insert(RequestId(id.clone()));
                let method = req.method().to_string();
                let path = req.uri().path().to_string();
                let span = tracing::info_span!("request", request_id = %id, %method, %path);
                let mut resp = match ep.call(req).instrument(span.clone()).await {
                    Ok(resp) => resp,
                    Err(e) => shape_error(e),
                };
                if let Ok(v) = HeaderValue::from_str(&id) {
                    resp.headers_mut().insert("x-request-id", v);
                }
                let status = resp.status();
                let elapsed = started.elapsed();
                state.metrics.observe(
                    &route_label(&path, status),
                    &method,
                    status.as_u16(),
                    elapsed.as_secs_f64(),
                );
                span.in_scope(|| {
                    let ms = elapsed.as_secs_f64() * 1000.0;
                    if path.starts_with("/health") || path == "/metrics" {
                        tracing::debug!(status = status.as_u16(), ms, "request");
                    } else if status.is_server_error() {
                        tracing::warn!(status = status.as_u16(), ms, "request");
                    } else {
                        tracing::info!(status = status.as_u16(), ms, "request");
                    }
                });
                Ok::<_, poem::Error>(resp)
            }
        })
}

/// A service that is serving; dropping it does not stop it, [`Running::shutdown`] does.
pub struct Running {
    pub addr: SocketAddr,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Binds `config.listen` (port 0 picks a free port) and serves `api` with the shared routes.
pub async fn start<A, F>(
    spec: ServiceSpec,
    config: ServiceConfig,
    make_api: F,
) -> anyhow::Result<Running>
where
    A: OpenApi + 'static,
    F: FnOnce(AppState) -> A,
{
    let listen = config.listen;
    let state = AppState::new(spec, config)?;
    let ep = endpoint(state.clone(), make_api(state.clone()));
    let acceptor = TcpListener::bind(listen.to_string())
        .into_acceptor()
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen} (LISTEN_ADDR/PORT): {e}"))?;
    let addr = acceptor
        .local_addr()
        .into_iter()
        .find_map(|a| a.as_socket_addr().copied())
        .unwrap_or(listen);
    let (stop, stopped) = oneshot::channel::<()>();
    let timeout = state.config.shutdown_timeout;
    let task = tokio::spawn(async move {
        poem::Server::new_with_acceptor(acceptor)
            .run_with_graceful_shutdown(
                ep,
                async move {
                    let _ = stopped.await;
                },
                Some(timeout),
            )
            .await
    });
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
        stop: Some(stop),
        task,
    })
}

impl Running {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Graceful shutdown: readiness turns 503 first, then after the drain period the listener
    /// closes and in-flight requests get up to the shutdown timeout to finish.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.state.shutting_down.store(true, Ordering::SeqCst);
        tracing::info!(drain = ?self.state.config.shutdown_drain, "shutting down: readiness now 503");
        tokio::time::sleep(self.state.config.shutdown_drain).await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await??;
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
pub async fn main<A, F>(
    spec: ServiceSpec,
    default_port: u16,
    default_body_limit: usize,
    make_api: F,
) where
    A: OpenApi + 'static,
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
    let result = async {
        let running = start(spec, config, make_api).await?;
        running.until_signalled().await
    }
    .await;
    if let Err(e) = result {
        tracing::error!(error = %format!("{e:#}"), "{} failed", spec.name);
        eprintln!("{}: {e:#}", spec.name);
        std::process::exit(1);
    }
}
