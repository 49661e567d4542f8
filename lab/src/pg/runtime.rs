//! The PostgreSQL pod runtime: makes the Kubernetes double's `postgresql` StatefulSet pod run
//! a lab node. At each pod start it does what the kubelet does with the pod spec: mounts the
//! `postgresql-role` ConfigMap (writes the node's role files), passes `postgresql-secret` and
//! the container's tuning variables (`WAL_KEEP_SIZE`, `MAX_SLOT_WAL_KEEP_SIZE`, `SLOT_NAME`, ...)
//! as the environment, and runs start.sh until the readiness probe passes. Deleting the pod is a
//! fast shutdown (the preStop hook). So drdctl changes the role and restarts the pod, and the
//! script promotes or rewinds, declaratively, as on AKS.
//!
//! Other pods go to a fallback runtime ([`DelayRuntime`] unless given). Port-forward to
//! `postgresql-0:5432` reaches the node's real address, and the pod log is the current start's
//! output (start.sh's decisions, then the server's log).
//!
//! A `postgresql` StatefulSet pod in a practice namespace (one labelled
//! [`PRACTICE_LABEL`], made by `drdctl practice`) is not the region's node: it gets a node of
//! its own, on a loopback address of its own (its pod IP, port 5432), that runs the pod's own
//! `bash -c` script (the practice StatefulSet's: a base backup of the region's database,
//! started standalone). Its `SOURCE_HOST`/`SOURCE_PORT` naming the application's `postgresql`
//! Service are pointed at the region's node (the lab has no cluster DNS). The node's data
//! lives as long as the namespace, as a PersistentVolumeClaim would: a pod restart keeps it,
//! deleting the namespace stops the server and removes its files.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::future::BoxFuture;

use super::node::{Passwords, Role, RoleFiles, SharedNode};
use crate::kube_api::{
    resource, DelayRuntime, ExecEnv, PodInfo, PodIo, PodIpIo, PodRuntime, PodStarted, Store,
};
use crate::KubeDouble;

/// The container port of the PostgreSQL pod.
pub const POSTGRESQL_POD_PORT: u16 = 5432;

/// The label that marks a practice namespace (`drdctl practice`): its pods are isolated from
/// the region's own (their own PostgreSQL node, their own Services).
pub const PRACTICE_LABEL: &str = "drdctl.io/practice";

/// Whether `ns` is a practice namespace (its Namespace object carries [`PRACTICE_LABEL`]).
pub fn is_practice_namespace(store: &Store, ns: &str) -> bool {
    store
        .get(resource("namespaces").expect("served"), "", ns)
        .is_some_and(|n| n["metadata"]["labels"][PRACTICE_LABEL].is_string())
}

/// start.sh's tuning variables taken from the pod spec (literal `value`s only); the paths,
/// addresses and secrets are the lab's own.
const SPEC_ENV: &[&str] = &[
    "WAL_KEEP_SIZE",
    "MAX_SLOT_WAL_KEEP_SIZE",
    "SLOT_NAME",
    "APPLICATION_NAME",
    "PG_CTL_TIMEOUT",
    "INITDB_ARGS",
    "SUPERUSER_NETWORK_ACCESS",
    "ALLOW_SECOND_PRIMARY",
];

/// The tuning variables the pod's first container sets.
fn spec_env(pod: &PodInfo) -> Vec<(String, String)> {
    pod.object
        .pointer("/spec/containers/0/env")
        .and_then(serde_json::Value::as_array)
        .map(|env| {
            env.iter()
                .filter_map(|e| {
                    let name = e["name"].as_str()?;
                    let value = e["value"].as_str()?;
                    SPEC_ENV
                        .contains(&name)
                        .then(|| (name.to_string(), value.to_string()))
                })
                .collect()
        })
        .unwrap_or_default()
}

struct Inner {
    node: SharedNode,
    statefulset: String,
    role_config_map: String,
    secret: String,
    store: OnceLock<Arc<Store>>,
    fallback: Arc<dyn PodRuntime>,
    fallback_io: Arc<dyn PodIo>,
    /// The uid of the pod whose container is the running node.
    owner: Mutex<Option<String>>,
    /// Practice namespaces' nodes, by namespace: (uid of the pod running it, the node).
    practice: Mutex<std::collections::HashMap<String, (String, SharedNode)>>,
}

/// Runs a region's `postgresql` pods on a lab node; see the module docs.
#[derive(Clone)]
pub struct PgPodRuntime {
    inner: Arc<Inner>,
}

impl PgPodRuntime {
    /// PostgreSQL pods on `node`; other pods Ready after 50 ms, reachable at their pod IP.
    pub fn new(node: SharedNode) -> Self {
        Self::with_fallback(
            node,
            Arc::new(DelayRuntime {
                delay: Duration::from_millis(50),
            }),
            Arc::new(PodIpIo),
        )
    }

    /// PostgreSQL pods on `node`, every other pod on `fallback` / `fallback_io`.
    pub fn with_fallback(
        node: SharedNode,
        fallback: Arc<dyn PodRuntime>,
        fallback_io: Arc<dyn PodIo>,
    ) -> Self {
        PgPodRuntime {
            inner: Arc::new(Inner {
                node,
                statefulset: "postgresql".into(),
                role_config_map: "postgresql-role".into(),
                secret: "postgresql-secret".into(),
                store: OnceLock::new(),
                fallback,
                fallback_io,
                owner: Mutex::new(None),
                practice: Mutex::new(std::collections::HashMap::new()),
            }),
        }
    }

    /// Connects the runtime to its double's store (where it reads the ConfigMap and Secret).
    /// Pods starting before this wait for it.
    pub fn bind(&self, double: &KubeDouble) {
        let _ = self.inner.store.set(double.store().clone());
    }

    /// The node this runtime runs.
    pub fn node(&self) -> &SharedNode {
        &self.inner.node
    }

    /// The nodes of practice namespaces now, by namespace.
    pub fn practice_nodes(&self) -> Vec<(String, SharedNode)> {
        let mut v: Vec<_> = self
            .inner
            .practice
            .lock()
            .expect("practice lock")
            .iter()
            .map(|(ns, (_, n))| (ns.clone(), n.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

impl Inner {
    fn is_postgresql(&self, pod: &PodInfo) -> bool {
        pod.owner
            .as_ref()
            .is_some_and(|(kind, name)| kind == "StatefulSet" && *name == self.statefulset)
    }

    /// The node running `pod`: its practice namespace's node, else the region's. A pod of a
    /// practice namespace never reaches the region's node, even while its own is not there.
    fn node_of(&self, pod: &PodInfo) -> Result<SharedNode, String> {
        if let Some((_, n)) = self
            .practice
            .lock()
            .expect("practice lock")
            .get(&pod.namespace)
        {
            return Ok(n.clone());
        }
        if self
            .store
            .get()
            .is_some_and(|s| is_practice_namespace(s, &pod.namespace))
        {
            return Err(format!(
                "container of pod {}/{} is not running",
                pod.namespace, pod.name
            ));
        }
        Ok(self.node.clone())
    }

    async fn store(&self) -> Result<Arc<Store>, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.store.get() {
                return Ok(s.clone());
            }
            if Instant::now() > deadline {
                return Err("the PostgreSQL pod runtime was never bound to its double".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The pod's configuration, read as the kubelet reads it when it creates the container.
    fn pod_config(&self, store: &Store, ns: &str) -> Result<(RoleFiles, Passwords), String> {
        let cm = store
            .get(
                resource("configmaps").expect("served"),
                ns,
                &self.role_config_map,
            )
            .ok_or_else(|| {
                format!(
                    "CreateContainerConfigError: configmap \"{}\" not found",
                    self.role_config_map
                )
            })?;
        let data = &cm["data"];
        let s = |k: &str| data[k].as_str().unwrap_or_default().trim().to_string();
        let port = |k: &str| s(k).parse::<u16>().unwrap_or(5432);
        // drdctl's `role` wins over the overlay's `initial_role` (as in start.sh).
        let role = Some(s("role"))
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| s("initial_role"));
        let role = match role.as_str() {
            "primary" => Role::Primary,
            "standby" => Role::Standby,
            "fenced" => {
                return Err(format!(
                    "start.sh: configmap {} says role=fenced: this old primary never starts writable again until drdctl failback rejoins it",
                    self.role_config_map
                ))
            }
            other => {
                return Err(format!(
                    "configmap {} has role {other:?} (want primary or standby)",
                    self.role_config_map
                ))
            }
        };
        let role = RoleFiles {
            role,
            primary_host: s("primary_host"),
            primary_port: port("primary_port"),
            peer_host: s("peer_host"),
            peer_port: port("peer_port"),
        };
        Ok((role, self.passwords(store, ns)?))
    }

    /// The passwords of `postgresql-secret` in `ns`, as the container's environment gets them.
    fn passwords(&self, store: &Store, ns: &str) -> Result<Passwords, String> {
        let secret = store
            .get(resource("secrets").expect("served"), ns, &self.secret)
            .ok_or_else(|| {
                format!(
                    "CreateContainerConfigError: secret \"{}\" not found",
                    self.secret
                )
            })?;
        let key = |k: &str| -> Option<String> {
            let b64 = secret["data"][k].as_str()?;
            let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
            String::from_utf8(bytes).ok()
        };
        let app = key("password").ok_or_else(|| {
            format!(
                "CreateContainerConfigError: couldn't find key password in Secret {ns}/{}",
                self.secret
            )
        })?;
        Ok(Passwords {
            app,
            superuser: key("superuser-password"),
            replication: key("replication-password"),
        })
    }

    /// A practice namespace's PostgreSQL pod: its own node (created at its first start, kept
    /// across pod restarts), running the pod's script. See the module docs.
    async fn start_practice_pod(&self, store: &Store, pod: PodInfo) -> Result<PodStarted, String> {
        let passwords = self.passwords(store, &pod.namespace)?;
        let existing = self
            .practice
            .lock()
            .expect("practice lock")
            .get(&pod.namespace)
            .map(|(_, n)| n.clone());
        let node = match existing {
            Some(n) => n,
            None => {
                let script = pod_script(&pod)?;
                let file = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
                std::fs::write(file.path(), script).map_err(|e| e.to_string())?;
                let mut cfg = super::PgNodeConfig::new(
                    &format!("practice-{}", pod.namespace),
                    practice_ip().map_err(|e| e.to_string())?,
                    &passwords.app,
                );
                cfg.port = POSTGRESQL_POD_PORT;
                cfg.script = file.path().to_path_buf();
                cfg.tuning = Vec::new();
                // Files and a watchdog process: off the async workers (they run the region's
                // proxies and relays too).
                let node = tokio::task::spawn_blocking(move || super::PgNode::new(cfg))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                drop(file);
                Arc::new(node)
            }
        };
        let home = self.node.addr();
        let env: Vec<(String, String)> = literal_env(&pod)
            .into_iter()
            .map(|(k, v)| match k.as_str() {
                "SOURCE_HOST" if names_postgresql_service(&v) => (k, home.ip().to_string()),
                "SOURCE_PORT" => (k, home.port().to_string()),
                _ => (k, v),
            })
            .collect();
        let guard = node.lifecycle.lock().await;
        node.stop_unlocked().await.map_err(|e| e.to_string())?;
        node.set_passwords(passwords);
        node.set_env(env);
        self.practice
            .lock()
            .expect("practice lock")
            .insert(pod.namespace.clone(), (pod.uid.clone(), node.clone()));
        // Deleted while the node was being made (its stop found no node): nothing starts.
        // Deleted from now on: the stop finds the node and interrupts this start.
        let still_there = store
            .get(resource("pods").expect("served"), &pod.namespace, &pod.name)
            .is_some_and(|p| p["metadata"]["uid"] == pod.uid.as_str());
        if !still_there {
            drop(guard);
            self.stop_practice_pod(pod).await;
            return Err("the pod was deleted before its container started".into());
        }
        let report = node.start_unlocked().await.map_err(|e| e.to_string())?;
        tracing::info!(node = %node.name(), pod = %pod.name, elapsed = ?report.elapsed,
            "practice PostgreSQL pod ready");
        Ok(PodStarted {
            pod_ip: Some(node.addr().ip().to_string()),
        })
    }

    async fn stop_practice_pod(&self, pod: PodInfo) {
        let entry = self
            .practice
            .lock()
            .expect("practice lock")
            .get(&pod.namespace)
            .cloned();
        let Some((uid, node)) = entry else { return };
        if uid != pod.uid {
            return;
        }
        // As the kubelet does: SIGTERM at once (a start in progress, e.g. the base backup, ends
        // now instead of running to its end), then the fast shutdown once no start runs.
        node.interrupt();
        {
            let _guard = node.lifecycle.lock().await;
            if let Err(e) = node.stop_unlocked().await {
                tracing::warn!(node = %node.name(), error = %e, "stopping PostgreSQL failed");
            }
        }
        // The namespace is gone: so is its volume (the node's files go with its last handle).
        let gone = match self.store.get() {
            Some(store) => store
                .get(resource("namespaces").expect("served"), "", &pod.namespace)
                .is_none(),
            None => true,
        };
        if gone {
            let entry = self
                .practice
                .lock()
                .expect("practice lock")
                .remove(&pod.namespace);
            drop(node);
            // The last handle: dropping the node removes its data directory, a blocking job
            // that must not hold up the async workers.
            if let Some((_, node)) = entry {
                let _ = tokio::task::spawn_blocking(move || drop(node)).await;
            }
        }
    }

    async fn start_pod(&self, pod: PodInfo) -> Result<PodStarted, String> {
        let store = self.store().await?;
        if is_practice_namespace(&store, &pod.namespace) {
            return self.start_practice_pod(&store, pod).await;
        }
        let (role, passwords) = self.pod_config(&store, &pod.namespace)?;
        let node = &self.node;
        let _guard = node.lifecycle.lock().await;
        // A restart: the old pod's container may still be shutting down (the double deletes
        // pods at once, a kubelet would wait for termination first).
        node.stop_unlocked().await.map_err(|e| e.to_string())?;
        node.write_role(&role).map_err(|e| e.to_string())?;
        node.set_passwords(passwords);
        node.set_env(spec_env(&pod));
        *self.owner.lock().expect("owner lock") = Some(pod.uid.clone());
        let report = node.start_unlocked().await.map_err(|e| e.to_string())?;
        tracing::info!(node = %node.name(), pod = %pod.name, decision = %report.decision,
            elapsed = ?report.elapsed, "PostgreSQL pod ready");
        Ok(PodStarted {
            pod_ip: Some(node.addr().ip().to_string()),
        })
    }

    async fn stop_pod(&self, pod: PodInfo) {
        if self
            .practice
            .lock()
            .expect("practice lock")
            .contains_key(&pod.namespace)
        {
            return self.stop_practice_pod(pod).await;
        }
        let node = &self.node;
        let _guard = node.lifecycle.lock().await;
        let mine = self.owner.lock().expect("owner lock").as_deref() == Some(pod.uid.as_str());
        if mine {
            if let Err(e) = node.stop_unlocked().await {
                tracing::warn!(node = %node.name(), error = %e, "stopping PostgreSQL failed");
            }
            *self.owner.lock().expect("owner lock") = None;
        }
    }
}

impl PodRuntime for PgPodRuntime {
    fn start(&self, pod: PodInfo) -> BoxFuture<'static, Result<PodStarted, String>> {
        if !self.inner.is_postgresql(&pod) {
            return self.inner.fallback.start(pod);
        }
        let inner = self.inner.clone();
        Box::pin(async move { inner.start_pod(pod).await })
    }

    fn stop(&self, pod: PodInfo) -> BoxFuture<'static, ()> {
        if !self.inner.is_postgresql(&pod) {
            return self.inner.fallback.stop(pod);
        }
        let inner = self.inner.clone();
        Box::pin(async move { inner.stop_pod(pod).await })
    }
}

impl PodIo for PgPodRuntime {
    fn forward_target(&self, pod: &PodInfo, port: u16) -> Result<std::net::SocketAddr, String> {
        if !self.inner.is_postgresql(pod) {
            return self.inner.fallback_io.forward_target(pod, port);
        }
        if port != POSTGRESQL_POD_PORT {
            return Err(format!(
                "pod {} has no container port {port} (PostgreSQL is on {POSTGRESQL_POD_PORT})",
                pod.name
            ));
        }
        Ok(self.inner.node_of(pod)?.addr())
    }

    fn logs(&self, pod: &PodInfo) -> Option<String> {
        if !self.inner.is_postgresql(pod) {
            return self.inner.fallback_io.logs(pod);
        }
        self.inner.node_of(pod).ok().map(|n| n.current_log())
    }

    fn log_path(&self, pod: &PodInfo) -> Option<std::path::PathBuf> {
        if !self.inner.is_postgresql(pod) {
            return self.inner.fallback_io.log_path(pod);
        }
        self.inner.node_of(pod).ok()?.current_log_path()
    }

    fn processes(&self, pod: &PodInfo) -> Vec<u32> {
        if !self.inner.is_postgresql(pod) {
            return self.inner.fallback_io.processes(pod);
        }
        self.inner
            .node_of(pod)
            .map(|n| n.processes())
            .unwrap_or_default()
    }

    fn exec_env(&self, pod: &PodInfo) -> Result<ExecEnv, String> {
        if !self.inner.is_postgresql(pod) {
            return self.inner.fallback_io.exec_env(pod);
        }
        Ok(self.inner.node_of(pod)?.exec_env())
    }
}

/// The pod's `bash -c` script (command and args of its first container).
fn pod_script(pod: &PodInfo) -> Result<String, String> {
    let c = &pod.object["spec"]["containers"][0];
    let words: Vec<&str> = ["command", "args"]
        .iter()
        .flat_map(|k| c[*k].as_array().into_iter().flatten())
        .filter_map(serde_json::Value::as_str)
        .collect();
    match words.iter().position(|w| *w == "-c") {
        Some(i) if i + 1 < words.len() && words[0].ends_with("bash") => Ok(words[i + 1].to_string()),
        _ => Err(format!(
            "pod {}/{}: the lab runs a practice PostgreSQL pod's `bash -c SCRIPT` command; this pod has {words:?}",
            pod.namespace, pod.name
        )),
    }
}

/// The literal `value`s of the pod's first container's environment, but the paths and
/// addresses, which are the lab node's own (as for the region's pods).
fn literal_env(pod: &PodInfo) -> Vec<(String, String)> {
    const NODE_OWN: &[&str] = &[
        "PGDATA",
        "PG_BIN",
        "ROLE_DIR",
        "SOCKET_DIR",
        "LISTEN_ADDRESS",
        "PORT",
        "PATH",
        "HOME",
    ];
    pod.object
        .pointer("/spec/containers/0/env")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let name = e["name"].as_str()?;
            let value = e["value"].as_str()?;
            (!NODE_OWN.contains(&name)).then(|| (name.to_string(), value.to_string()))
        })
        .collect()
}

/// `postgresql`, `postgresql.<ns>`, `postgresql.<ns>.svc[.cluster.local]`: the application's
/// PostgreSQL Service.
fn names_postgresql_service(host: &str) -> bool {
    host == "postgresql" || host.starts_with("postgresql.")
}

/// A loopback address of its own for a practice node (its pod IP) whose port 5432 is free:
/// `127.41.<this process>.<n>`.
fn practice_ip() -> std::io::Result<std::net::IpAddr> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let next = NEXT.get_or_init(|| AtomicU32::new(1));
    let base = (std::process::id() % 250) as u8;
    for _ in 0..254 {
        let n = next.fetch_add(1, Ordering::SeqCst) % 254 + 1;
        let ip = std::net::Ipv4Addr::new(127, 41, base, n as u8);
        if std::net::TcpListener::bind((ip, POSTGRESQL_POD_PORT)).is_ok() {
            return Ok(ip.into());
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no loopback address 127.41.x.y with port 5432 free",
    ))
}
