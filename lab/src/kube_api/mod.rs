//! A faithful double of the Kubernetes API, one per lab region, served over plain HTTP on
//! loopback so that real `kubectl` and kube-rs (and so drdctl) talk to it exactly as they talk
//! to AKS. [`KubeDouble`] is the handle tests and `drdctl lab` hold: it starts the server and
//! the controller, and exposes the store, fault injection, the request log and API down/up.

mod attach;
mod controller;
mod ctx;
mod discovery;
mod error;
mod events;
mod exec;
mod faults;
mod fields;
mod kubeconfig;
mod logs;
mod metrics;
mod patch;
mod pod;
mod pod_io;
mod portforward;
mod protobuf;
mod pty;
mod resources;
mod restart;
mod selector;
mod server;
mod spdy;
mod store;
mod table;
mod validate;
mod watch;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::nodelay::NoDelay;
use poem::Server;
use serde_json::Value;
use tokio::sync::{oneshot, watch as watch_channel, Mutex};
use tokio::task::JoinHandle;

pub use controller::template_hash;
pub use error::{ApiError, ApiResult, Cause};
pub use faults::{Faults, RecordedRequest, RequestLog};
pub use kubeconfig::{kubeconfig_yaml, write_kubeconfig};
pub use metrics::process_group;
pub use pod::{DelayRuntime, PodInfo, PodRuntime, PodStarted};
pub use pod_io::{pod_ip_target, ExecEnv, PodIo, PodIpIo};
pub use resources::{lookup as resource, ResourceDef, Subresource, RESOURCES};
pub use selector::{FieldSelector, LabelSelector};
pub use store::{Event, EventType, Store, WriteOpts};

/// How to start a [`KubeDouble`].
#[derive(Clone)]
pub struct KubeDoubleConfig {
    /// Region name (`primary`, `dr`); passed to the pod runtime.
    pub region: String,
    /// Address to listen on; port 0 picks a free port.
    pub addr: SocketAddr,
    /// How long the controller waits after a change before it acts (the status lag).
    pub sync_delay: Duration,
    /// Runs the pods; defaults to [`DelayRuntime`] with a 200 ms start delay.
    pub runtime: Arc<dyn PodRuntime>,
    /// How often open watches that allow bookmarks get one.
    pub bookmark_interval: Duration,
    /// Where pods' ports are (port-forward) and their logs; defaults to [`PodIpIo`].
    pub pod_io: Arc<dyn PodIo>,
}

impl KubeDoubleConfig {
    /// Defaults: 50 ms controller lag, pods Ready 200 ms after creation, bookmarks every 30 s.
    pub fn new(region: &str, addr: SocketAddr) -> Self {
        KubeDoubleConfig {
            region: region.to_string(),
            addr,
            sync_delay: Duration::from_millis(50),
            runtime: Arc::new(DelayRuntime::default()),
            bookmark_interval: Duration::from_secs(30),
            pod_io: Arc::new(PodIpIo),
        }
    }

    /// Uses this pod I/O (port-forward targets and logs).
    pub fn pod_io(mut self, pod_io: Arc<dyn PodIo>) -> Self {
        self.pod_io = pod_io;
        self
    }

    /// Uses the default runtime with this pod start delay.
    pub fn pod_start_delay(mut self, delay: Duration) -> Self {
        self.runtime = Arc::new(DelayRuntime { delay });
        self
    }

    /// Uses this pod runtime.
    pub fn runtime(mut self, runtime: Arc<dyn PodRuntime>) -> Self {
        self.runtime = runtime;
        self
    }

    /// Sets the controller lag.
    pub fn sync_delay(mut self, delay: Duration) -> Self {
        self.sync_delay = delay;
        self
    }

    /// Sets the bookmark interval of watches.
    pub fn bookmark_interval(mut self, interval: Duration) -> Self {
        self.bookmark_interval = interval;
        self
    }
}

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<io::Result<()>>,
}

/// One running Kubernetes API double.
pub struct KubeDouble {
    region: String,
    addr: SocketAddr,
    ctx: Arc<ctx::Ctx>,
    down_tx: watch_channel::Sender<bool>,
    server: Mutex<Option<Running>>,
    controller: JoinHandle<()>,
}

fn serve(listener: tokio::net::TcpListener, ctx: Arc<ctx::Ctx>) -> io::Result<Running> {
    let acceptor = NoDelay::from_tokio(listener)?;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = Server::new_with_acceptor(acceptor);
    let task = tokio::spawn(server.run_with_graceful_shutdown(
        server::ApiEndpoint(ctx),
        async {
            let _ = stopped.await;
        },
        // Zero grace: open connections (watches included) are cut at once, like a dead region.
        Some(Duration::ZERO),
    ));
    Ok(Running { stop, task })
}

impl KubeDouble {
    /// Starts a double for `region` on `addr` (e.g. `127.0.0.1:0`) with default settings.
    pub async fn start(region: &str, addr: SocketAddr) -> io::Result<Self> {
        Self::start_with(KubeDoubleConfig::new(region, addr)).await
    }

    /// Starts a double with explicit settings.
    pub async fn start_with(cfg: KubeDoubleConfig) -> io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(cfg.addr).await?;
        let addr = listener.local_addr()?;
        let store = Store::new();
        let (down_tx, down_rx) = watch_channel::channel(false);
        let ctx = Arc::new(ctx::Ctx {
            store: store.clone(),
            faults: Arc::new(Faults::default()),
            requests: Arc::new(RequestLog::default()),
            down: down_rx,
            bookmark_interval: cfg.bookmark_interval,
            server_address: addr.to_string(),
            region: cfg.region.clone(),
            pod_io: cfg.pod_io.clone(),
            containers: Default::default(),
            cpu_samples: Default::default(),
            runtime: cfg.runtime.clone(),
            previous_logs: Default::default(),
        });
        let controller = controller::Controller::new(
            store,
            controller::ControllerConfig {
                region: cfg.region.clone(),
                sync_delay: cfg.sync_delay,
                runtime: cfg.runtime.clone(),
            },
        );
        let controller = tokio::spawn(controller.run());
        let running = serve(listener, ctx.clone())?;
        tracing::info!(region = %cfg.region, %addr, "kube API double started");
        Ok(KubeDouble {
            region: cfg.region,
            addr,
            ctx,
            down_tx,
            server: Mutex::new(Some(running)),
            controller,
        })
    }

    /// The server URL for a kubeconfig (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address the double listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The region name.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The object store (seed, inspect, or change objects directly).
    pub fn store(&self) -> &Arc<Store> {
        &self.ctx.store
    }

    /// Fault injection: latency and failing requests.
    pub fn faults(&self) -> &Faults {
        &self.ctx.faults
    }

    /// What clients sent.
    pub fn requests(&self) -> &RequestLog {
        &self.ctx.requests
    }

    /// Takes the API down: the listener is closed (connections are refused) and every open
    /// connection, watches included, is cut. The store and controller keep running.
    pub async fn down(&self) {
        let _ = self.down_tx.send(true);
        let running = self.server.lock().await.take();
        if let Some(r) = running {
            let _ = r.stop.send(());
            let _ = r.task.await;
            tracing::info!(region = %self.region, "kube API double down");
        }
    }

    /// Brings the API back on the same address.
    pub async fn up(&self) -> io::Result<()> {
        let mut server = self.server.lock().await;
        if server.is_none() {
            let listener = tokio::net::TcpListener::bind(self.addr).await?;
            *server = Some(serve(listener, self.ctx.clone())?);
            let _ = self.down_tx.send(false);
            tracing::info!(region = %self.region, "kube API double up");
        }
        Ok(())
    }

    /// Whether the API is serving.
    pub async fn is_up(&self) -> bool {
        self.server.lock().await.is_some()
    }

    /// Stops the server and the controller.
    pub async fn shutdown(self) {
        self.down().await;
        self.controller.abort();
    }

    /// One object, by resource name (`deployments`, `deploy`, `deployments.apps`, ...).
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        resources::lookup(resource).and_then(|r| self.ctx.store.get(r, namespace, name))
    }

    /// The objects of a resource, in `namespace` (or everywhere with None).
    pub fn list(&self, resource: &str, namespace: Option<&str>) -> Vec<Value> {
        resources::lookup(resource)
            .map(|r| self.ctx.store.list(r, namespace).0)
            .unwrap_or_default()
    }

    /// Read-modify-write of one object through the normal write path (resourceVersion,
    /// generation, validation and a MODIFIED watch event), as a client's PUT would.
    pub fn update(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        f: impl FnOnce(&Value) -> ApiResult<Value>,
    ) -> ApiResult<Value> {
        let res = resources::lookup(resource).ok_or_else(|| {
            ApiError::new(
                404,
                "NotFound",
                format!("the server doesn't have a resource type {resource:?}"),
            )
        })?;
        self.ctx
            .store
            .update(res, namespace, name, WriteOpts::default(), f)
    }

    /// Marks a pod Ready or not Ready (as a failing or recovering readiness probe would); the
    /// owning controller's status follows.
    pub fn set_pod_ready(&self, namespace: &str, name: &str, ready: bool) -> ApiResult<Value> {
        let res = resources::lookup("pods").expect("pods are served");
        if !ready {
            if let Some(pod) = self.ctx.store.get(res, namespace, name) {
                events::pod_event(
                    &self.ctx.store,
                    &pod,
                    events::EventType::Warning,
                    "Unhealthy",
                    "Readiness probe failed: HTTP probe failed with statuscode: 503".into(),
                );
            }
        }
        self.ctx
            .store
            .update(res, namespace, name, WriteOpts::status(), |old| {
                let mut new = old.clone();
                restart::set_ready_conditions(&mut new, ready);
                if let Some(cs) = new
                    .pointer_mut("/status/containerStatuses")
                    .and_then(Value::as_array_mut)
                {
                    for c in cs {
                        c["ready"] = serde_json::json!(ready);
                    }
                }
                Ok(new)
            })
    }

    /// Restarts the pod's (first) container in place, as the kubelet does after the container
    /// exited with `exit_code` (a crash, a failed liveness probe): `restartCount` + 1,
    /// `lastState.terminated`, the former log kept for `kubectl logs --previous`, the process
    /// stopped and started again by the runtime. Resolves once it runs again (or is backing
    /// off after a failed start).
    pub async fn restart_container(
        &self,
        namespace: &str,
        name: &str,
        exit_code: i32,
    ) -> ApiResult<Value> {
        restart::restart_container(&self.ctx, namespace, name, exit_code).await
    }

    /// Creates an object (its `apiVersion` and `kind` pick the resource), as a client would.
    pub fn create(&self, object: Value) -> ApiResult<Value> {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        let res = resources::by_kind(api_version, kind).ok_or_else(|| {
            ApiError::new(
                404,
                "NotFound",
                format!("no kind {kind:?} is registered for version {api_version:?}"),
            )
        })?;
        self.ctx.store.create(res, object, WriteOpts::default())
    }
}

impl Drop for KubeDouble {
    fn drop(&mut self) {
        self.controller.abort();
        if let Ok(mut server) = self.server.try_lock() {
            if let Some(r) = server.take() {
                let _ = r.stop.send(());
            }
        }
    }
}
