//! Real service processes as the lab's pods, and the Services in front of them.
//!
//! [`ProcessRuntime`] is a [`PodRuntime`]: when the Kubernetes double's controller creates a
//! pod of frontend-api, business-logic or data-ingest, it starts the real service binary with
//! the environment the manifests give the pod (values, ConfigMap and Secret references
//! resolved from the double's store), listening on a loopback address of its own (the pod IP),
//! and reports the pod Ready once `/health/ready` answers 200. Deleting the pod sends SIGTERM
//! (the service drains and exits) and kills it if it lingers.
//!
//! [`ServiceProxy`] stands in for kube-proxy: one TCP listener per Service and region that
//! forwards each connection to a Ready pod of the Service (round robin). The region's ingress
//! is the frontend-api proxy on the region's ingress address. Service host names in the pods'
//! environment (`DATABASE_HOST=postgresql`, `BUSINESS_LOGIC_URL=http://business-logic:8081`)
//! are rewritten to the proxies' addresses, since the lab has no cluster DNS.
//!
//! Every child is registered with a [`Watchdog`], which kills them all if this process dies
//! without cleaning up (panic, SIGKILL).
//!
//! A practice namespace (labelled `drdctl.io/practice`, see [`crate::pg::PRACTICE_LABEL`]) is
//! a network of its own: its pods get Service proxies of their own (made at its first pod,
//! dropped with its last), and `postgresql` there is the namespace's own PostgreSQL pod (its
//! pod IP and the Service's port), never the region's. The lab does not enforce
//! NetworkPolicies; this separation is what keeps a practice namespace's services off the
//! region's.

mod proxy;
mod watchdog;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::future::BoxFuture;
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::kube_api::{resource, ExecEnv, PodInfo, PodIo, PodRuntime, PodStarted, Store};
pub use proxy::{Endpoints, ServiceProxy};
pub use watchdog::Watchdog;

/// How one region's service pods run.
#[derive(Clone, Debug)]
pub struct ProcessRuntimeConfig {
    pub region: String,
    /// Where the service binaries are (`frontend-api`, `business-logic`, `data-ingest`).
    pub bin_dir: PathBuf,
    /// Pod IPs are `127.<pod_net>.x.y`.
    pub pod_net: u8,
    /// Service name -> address its clients use (the proxies, and PostgreSQL).
    pub services: HashMap<String, SocketAddr>,
    /// Where each pod's stdout/stderr go (`<pod>.log`).
    pub log_dir: PathBuf,
    /// How long a pod may take to answer `/health/ready` before it counts as failed.
    pub ready_timeout: Duration,
    /// Extra environment for every pod (e.g. `RUST_LOG`).
    pub extra_env: Vec<(String, String)>,
}

/// Starts and stops the service processes of one region (a cheap handle). See the module docs.
#[derive(Clone)]
pub struct ProcessRuntime {
    inner: Arc<Inner>,
}

/// A practice namespace's own Services: proxies and the addresses its pods use.
struct NsNet {
    endpoints: Endpoints,
    services: HashMap<String, SocketAddr>,
    _proxies: Vec<ServiceProxy>,
}

struct Inner {
    cfg: ProcessRuntimeConfig,
    store: OnceLock<Arc<Store>>,
    children: Mutex<HashMap<String, Child>>,
    /// Practice namespaces' networks, by namespace.
    nets: tokio::sync::Mutex<HashMap<String, NsNet>>,
    /// The namespace of each running pod (by pod name) that lives in a practice namespace.
    practice_pods: Mutex<HashMap<String, String>>,
    /// Each running pod's environment (what `kubectl exec` runs commands in).
    envs: Mutex<HashMap<String, Vec<(String, String)>>>,
    endpoints: Endpoints,
    watchdog: Watchdog,
}

impl ProcessRuntime {
    pub fn new(cfg: ProcessRuntimeConfig, endpoints: Endpoints) -> std::io::Result<Self> {
        std::fs::create_dir_all(&cfg.log_dir)?;
        Ok(ProcessRuntime {
            inner: Arc::new(Inner {
                watchdog: Watchdog::start()?,
                cfg,
                store: OnceLock::new(),
                children: Mutex::new(HashMap::new()),
                nets: tokio::sync::Mutex::new(HashMap::new()),
                practice_pods: Mutex::new(HashMap::new()),
                envs: Mutex::new(HashMap::new()),
                endpoints,
            }),
        })
    }

    /// Gives the runtime the double's store (to resolve ConfigMap and Secret references).
    pub fn attach(&self, store: Arc<Store>) {
        let _ = self.inner.store.set(store);
    }

    /// The pods running now, by pod name.
    pub fn running(&self) -> Vec<String> {
        let mut pods: Vec<String> = self
            .inner
            .children
            .lock()
            .expect("not poisoned")
            .keys()
            .cloned()
            .collect();
        pods.sort();
        pods
    }

    /// SIGKILLs every process at once (a region lost), waiting until each is gone.
    pub async fn kill_all(&self) {
        for mut child in self.take_children() {
            let _ = child.kill().await;
        }
    }

    /// Stops every process (SIGTERM, then SIGKILL after `grace`).
    pub async fn stop_all(&self, grace: Duration) {
        for child in self.take_children() {
            terminate(child, grace).await;
        }
    }

    fn take_children(&self) -> Vec<Child> {
        let mut children = self.inner.children.lock().expect("not poisoned");
        children.drain().map(|(_, c)| c).collect()
    }
}

impl Inner {
    fn pod_ip(&self) -> Ipv4Addr {
        // One counter for every runtime of this process (two worlds in one test binary must
        // not hand out the same pod IP), started at a place of its own per process.
        static NEXT_IP: OnceLock<AtomicU32> = OnceLock::new();
        let next = NEXT_IP.get_or_init(|| AtomicU32::new((std::process::id() % 250) * 256 + 1));
        let n = next.fetch_add(1, Ordering::SeqCst) % 65_000 + 1;
        Ipv4Addr::new(127, self.cfg.pod_net, (n >> 8) as u8, (n & 0xff) as u8)
    }

    fn resolve_env(&self, ns: &str, container: &Value) -> Result<Vec<(String, String)>, String> {
        let store = self
            .store
            .get()
            .ok_or("the runtime is not attached to a store")?;
        let mut out = Vec::new();
        for e in container["env"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().unwrap_or_default().to_string();
            if let Some(v) = e["value"].as_str() {
                out.push((name, v.to_string()));
                continue;
            }
            let from = &e["valueFrom"];
            let (res, r, key) = if from["configMapKeyRef"].is_object() {
                ("configmaps", &from["configMapKeyRef"], "configmap")
            } else if from["secretKeyRef"].is_object() {
                ("secrets", &from["secretKeyRef"], "secret")
            } else {
                continue;
            };
            let obj_name = r["name"].as_str().unwrap_or_default();
            let k = r["key"].as_str().unwrap_or_default();
            let def = resource(res).expect("a known resource");
            let obj = store
                .get(def, ns, obj_name)
                .ok_or_else(|| format!("{key} {obj_name:?} not found (env {name})"))?;
            let value = if res == "secrets" {
                let b64 = obj["data"][k]
                    .as_str()
                    .ok_or_else(|| format!("secret {obj_name:?} has no key {k:?} (env {name})"))?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|_| format!("secret {obj_name:?} key {k:?} is not base64"))?;
                String::from_utf8_lossy(&bytes).into_owned()
            } else {
                obj["data"][k]
                    .as_str()
                    .ok_or_else(|| format!("configmap {obj_name:?} has no key {k:?} (env {name})"))?
                    .to_string()
            };
            out.push((name, value));
        }
        Ok(out)
    }

    /// A practice namespace's Services: proxies on the region's address for the three
    /// services, and `postgresql` at the namespace's own PostgreSQL pod.
    async fn practice_net(
        &self,
        store: &Store,
        ns: &str,
    ) -> Result<(Endpoints, HashMap<String, SocketAddr>), String> {
        let mut nets = self.nets.lock().await;
        if !nets.contains_key(ns) {
            let ip = self
                .cfg
                .services
                .get("frontend-api")
                .map(|a| a.ip())
                .unwrap_or(Ipv4Addr::LOCALHOST.into());
            let endpoints = Endpoints::default();
            let mut services = HashMap::new();
            let mut proxies = Vec::new();
            for app in ["frontend-api", "business-logic", "data-ingest"] {
                let p = ServiceProxy::start(SocketAddr::new(ip, 0), app, endpoints.clone())
                    .await
                    .map_err(|e| format!("starting the {ns}/{app} Service proxy: {e}"))?;
                services.insert(app.to_string(), p.addr);
                proxies.push(p);
            }
            nets.insert(
                ns.to_string(),
                NsNet {
                    endpoints,
                    services,
                    _proxies: proxies,
                },
            );
        }
        let net = nets.get(ns).expect("just made");
        let mut services = net.services.clone();
        // The namespace's own PostgreSQL: its Ready pod's IP, at the Service's port.
        let svc = store.get(resource("services").expect("served"), ns, "postgresql");
        let port = svc
            .as_ref()
            .and_then(|s| s["spec"]["ports"][0]["port"].as_u64())
            .unwrap_or(5432) as u16;
        let (pods, _) = store.list(resource("pods").expect("served"), Some(ns));
        if let Some(ip) = pods
            .iter()
            .filter(|p| p["metadata"]["labels"]["app"] == "postgresql")
            .find_map(|p| p.pointer("/status/podIP")?.as_str()?.parse().ok())
        {
            services.insert("postgresql".to_string(), SocketAddr::new(ip, port));
        } else {
            // No database pod yet: nothing answers (never the region's database).
            services.insert(
                "postgresql".to_string(),
                SocketAddr::new(Ipv4Addr::new(127, 0, 0, 1).into(), 9),
            );
        }
        Ok((net.endpoints.clone(), services))
    }

    /// Service host names mean nothing here: point them at the lab's addresses.
    fn rewrite(&self, env: &mut [(String, String)], services: &HashMap<String, SocketAddr>) {
        // DATABASE_HOST names a Service: both host and port come from that Service's address.
        let mut db: Option<SocketAddr> = None;
        for (name, value) in env.iter_mut() {
            if name == "DATABASE_HOST" {
                if let Some(a) = services.get(value.as_str()) {
                    db = Some(*a);
                    *value = a.ip().to_string();
                }
                continue;
            }
            for (svc, addr) in services {
                for scheme in ["http://", "https://"] {
                    let prefix = format!("{scheme}{svc}:");
                    if let Some(rest) = value.strip_prefix(&prefix) {
                        let path = rest.find('/').map(|i| &rest[i..]).unwrap_or("");
                        *value = format!("http://{addr}{path}");
                    }
                }
            }
        }
        if let Some(db) = db {
            for (name, value) in env.iter_mut() {
                if name == "DATABASE_PORT" {
                    *value = db.port().to_string();
                }
            }
        }
    }

    async fn start_pod(self: Arc<Self>, pod: PodInfo) -> Result<PodStarted, String> {
        let app = pod.labels.get("app").cloned().unwrap_or_default();
        let container = pod.object["spec"]["containers"][0].clone();
        let binary = self.cfg.bin_dir.join(&app);
        if !binary.exists() {
            return Err(format!(
                "no binary for {app} in {} (cargo build -p {app})",
                self.cfg.bin_dir.display()
            ));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.store.get().is_none() {
            if Instant::now() > deadline {
                return Err("the lab runtime was never attached to the double".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let port = container["ports"][0]["containerPort"]
            .as_u64()
            .unwrap_or(8080) as u16;
        let ip = self.pod_ip();
        let listen = SocketAddr::from((ip, port));
        let mut env = self.resolve_env(&pod.namespace, &container)?;
        let store = self.store.get().expect("attached above").clone();
        let (endpoints, services) = if crate::pg::is_practice_namespace(&store, &pod.namespace) {
            self.practice_pods
                .lock()
                .expect("not poisoned")
                .insert(pod.name.clone(), pod.namespace.clone());
            self.practice_net(&store, &pod.namespace).await?
        } else {
            (self.endpoints.clone(), self.cfg.services.clone())
        };
        self.rewrite(&mut env, &services);
        let log = std::fs::File::create(self.cfg.log_dir.join(format!("{}.log", pod.name)))
            .map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        env.extend([
            ("PATH".to_string(), "/usr/bin:/bin".to_string()),
            ("HOSTNAME".to_string(), pod.name.clone()),
            ("LISTEN_ADDR".to_string(), listen.to_string()),
            ("SHUTDOWN_DRAIN_MS".to_string(), "200".to_string()),
            ("POD_NAME".to_string(), pod.name.clone()),
        ]);
        env.extend(self.cfg.extra_env.iter().cloned());
        self.envs
            .lock()
            .expect("not poisoned")
            .insert(pod.name.clone(), env.clone());
        let mut cmd = Command::new(&binary);
        cmd.env_clear()
            .envs(env)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        if let Some(pid) = child.id() {
            self.watchdog.add(pid);
        }
        self.children
            .lock()
            .expect("not poisoned")
            .insert(pod.name.clone(), child);

        let deadline = Instant::now() + self.cfg.ready_timeout;
        loop {
            if http_status(listen, "/health/ready").await == Some(200) {
                break;
            }
            let exited = {
                let mut children = self.children.lock().expect("not poisoned");
                match children.get_mut(&pod.name) {
                    None => return Err("stopped while starting".into()),
                    Some(c) => c.try_wait().ok().flatten(),
                }
            };
            if let Some(status) = exited {
                self.take_child(&pod.name);
                return Err(format!("{app} exited with {status} (see {}.log)", pod.name));
            }
            if Instant::now() > deadline {
                // As a failed startup probe: the container is stopped (the kubelet starts it
                // again after its back-off).
                if let Some(child) = self.take_child(&pod.name) {
                    terminate(child, Duration::from_secs(2)).await;
                }
                return Err(format!(
                    "{app} did not answer /health/ready within {:?}",
                    self.cfg.ready_timeout
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        endpoints.add(&app, &pod.name, listen);
        tracing::info!(region = %self.cfg.region, pod = %pod.name, %listen, "pod ready");
        Ok(PodStarted {
            pod_ip: Some(ip.to_string()),
        })
    }

    /// The pod's process, no longer tracked (to stop it, or because it exited).
    fn take_child(&self, pod: &str) -> Option<Child> {
        self.children.lock().expect("not poisoned").remove(pod)
    }

    async fn stop_pod(self: Arc<Self>, pod: PodInfo) {
        let app = pod.labels.get("app").cloned().unwrap_or_default();
        self.envs.lock().expect("not poisoned").remove(&pod.name);
        let practice_ns = self
            .practice_pods
            .lock()
            .expect("not poisoned")
            .remove(&pod.name);
        match &practice_ns {
            Some(ns) => {
                if let Some(net) = self.nets.lock().await.get(ns) {
                    net.endpoints.remove(&app, &pod.name);
                }
            }
            None => self.endpoints.remove(&app, &pod.name),
        }
        if let Some(child) = self.take_child(&pod.name) {
            terminate(child, Duration::from_secs(10)).await;
        }
        // The namespace's last pod: its Services go (their listeners close).
        if let Some(ns) = practice_ns {
            let left = self
                .practice_pods
                .lock()
                .expect("not poisoned")
                .values()
                .any(|n| *n == ns);
            if !left {
                self.nets.lock().await.remove(&ns);
            }
        }
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL.
async fn terminate(mut child: Child, grace: Duration) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

/// GET over a fresh connection; the status code, or None when nothing answers.
pub async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    let head = std::str::from_utf8(&buf[..n]).ok()?;
    head.split_whitespace().nth(1)?.parse().ok()
}

/// Logs are the pods' files under the log directory; `kubectl exec` runs in the service's
/// environment (its variables, as resolved at the pod's start).
impl PodIo for ProcessRuntime {
    fn log_path(&self, pod: &PodInfo) -> Option<PathBuf> {
        Some(self.log_file(&pod.name))
    }

    fn processes(&self, pod: &PodInfo) -> Vec<u32> {
        let children = self.inner.children.lock().expect("not poisoned");
        children
            .get(&pod.name)
            .and_then(Child::id)
            .into_iter()
            .collect()
    }

    fn exec_env(&self, pod: &PodInfo) -> Result<ExecEnv, String> {
        let env = self
            .inner
            .envs
            .lock()
            .expect("not poisoned")
            .get(&pod.name)
            .cloned();
        let env = env.ok_or_else(|| format!("container of pod {} is not running", pod.name))?;
        Ok(ExecEnv { env, user: None })
    }
}

impl ProcessRuntime {
    /// Where a pod's stdout and stderr go.
    pub fn log_file(&self, pod: &str) -> PathBuf {
        self.inner.cfg.log_dir.join(format!("{pod}.log"))
    }
}

impl PodRuntime for ProcessRuntime {
    fn start(&self, pod: PodInfo) -> BoxFuture<'static, Result<PodStarted, String>> {
        Box::pin(self.inner.clone().start_pod(pod))
    }
    fn stop(&self, pod: PodInfo) -> BoxFuture<'static, ()> {
        Box::pin(self.inner.clone().stop_pod(pod))
    }
}
