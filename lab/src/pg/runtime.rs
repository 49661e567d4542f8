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
}

impl Inner {
    fn is_postgresql(&self, pod: &PodInfo) -> bool {
        pod.owner
            .as_ref()
            .is_some_and(|(kind, name)| kind == "StatefulSet" && *name == self.statefulset)
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
        let passwords = Passwords {
            app,
            superuser: key("superuser-password"),
            replication: key("replication-password"),
        };
        Ok((role, passwords))
    }

    async fn start_pod(&self, pod: PodInfo) -> Result<PodStarted, String> {
        let store = self.store().await?;
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
        Ok(self.inner.node.addr())
    }

    fn logs(&self, pod: &PodInfo) -> Option<String> {
        if !self.inner.is_postgresql(pod) {
            return self.inner.fallback_io.logs(pod);
        }
        Some(self.inner.node.current_log())
    }

    fn log_path(&self, pod: &PodInfo) -> Option<std::path::PathBuf> {
        if !self.inner.is_postgresql(pod) {
            return self.inner.fallback_io.log_path(pod);
        }
        self.inner.node.current_log_path()
    }

    fn processes(&self, pod: &PodInfo) -> Vec<u32> {
        if !self.inner.is_postgresql(pod) {
            return self.inner.fallback_io.processes(pod);
        }
        self.inner.node.processes()
    }

    fn exec_env(&self, pod: &PodInfo) -> Result<ExecEnv, String> {
        if !self.inner.is_postgresql(pod) {
            return self.inner.fallback_io.exec_env(pod);
        }
        Ok(self.inner.node.exec_env())
    }
}
