//! One region's Kubernetes API double whose `postgresql-0` pod is a real PostgreSQL node run
//! through start.sh ([`PgPodRuntime`]): the one way the lab, drdctl's tests, the database
//! adapter's tests and the lab's own tests build such a region.
//!
//! ```ignore
//! let kube = RegionBuilder::new("primary", pair.primary.clone())
//!     .deployed(&repo_root, PASSWORD, &role, &[])   // what `drdctl deploy` creates for the database
//!     .start()
//!     .await?;
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::kube_api::{PodIo, PodRuntime};
use crate::pg::{PgPodRuntime, RoleFiles, SharedNode};
use crate::{KubeDouble, KubeDoubleConfig};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The database's objects, as `drdctl deploy` would create them.
struct Deployed {
    repo_root: PathBuf,
    password: String,
    role: RoleFiles,
    env: Vec<(String, String)>,
}

/// Builds a region (see the module's documentation).
pub struct RegionBuilder {
    name: String,
    node: SharedNode,
    addr: SocketAddr,
    fallback: Option<(Arc<dyn PodRuntime>, Arc<dyn PodIo>)>,
    sync_delay: Option<Duration>,
    deployed: Option<Deployed>,
    ready_timeout: Duration,
}

impl RegionBuilder {
    /// Region `name` whose PostgreSQL pod runs on `node`; the API on 127.0.0.1, a free port.
    pub fn new(name: &str, node: SharedNode) -> Self {
        RegionBuilder {
            name: name.to_string(),
            node,
            addr: "127.0.0.1:0".parse().expect("literal"),
            fallback: None,
            sync_delay: None,
            deployed: None,
            ready_timeout: Duration::from_secs(240),
        }
    }

    /// Where the API listens.
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Runs every other pod on `runtime` / `io` (the services as processes) instead of
    /// simulated pods (Ready 50 ms after they start).
    pub fn fallback(mut self, runtime: Arc<dyn PodRuntime>, io: Arc<dyn PodIo>) -> Self {
        self.fallback = Some((runtime, io));
        self
    }

    /// The controllers' reaction delay (see [`KubeDoubleConfig::sync_delay`]).
    pub fn sync_delay(mut self, delay: Duration) -> Self {
        self.sync_delay = Some(delay);
        self
    }

    /// Creates the database's objects as `drdctl deploy` would (the password secret, the role
    /// ConfigMap from `role`, the manifests' StatefulSet of `repo_root` with `env` added to
    /// its container) and makes [`RegionBuilder::start`] wait until `postgresql-0` is Ready.
    pub fn deployed(
        mut self,
        repo_root: &Path,
        password: &str,
        role: &RoleFiles,
        env: &[(&str, &str)],
    ) -> Self {
        self.deployed = Some(Deployed {
            repo_root: repo_root.to_path_buf(),
            password: password.to_string(),
            role: role.clone(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        });
        self
    }

    /// Starts the double (and, with [`RegionBuilder::deployed`], the database pod).
    pub async fn start(self) -> Result<KubeDouble, BoxError> {
        let rt = match self.fallback {
            Some((runtime, io)) => PgPodRuntime::with_fallback(self.node, runtime, io),
            None => PgPodRuntime::new(self.node),
        };
        let mut cfg = KubeDoubleConfig::new(&self.name, self.addr)
            .runtime(Arc::new(rt.clone()))
            .pod_io(Arc::new(rt.clone()));
        if let Some(d) = self.sync_delay {
            cfg = cfg.sync_delay(d);
        }
        let kube = KubeDouble::start_with(cfg).await?;
        rt.bind(&kube);
        if let Some(d) = self.deployed {
            kube.create(secret(&d.password))?;
            kube.create(role_config_map(&d.role))?;
            kube.create(statefulset(&d.repo_root, &d.env)?)?;
            pod_ready(&kube, &self.name, self.ready_timeout).await?;
        }
        Ok(kube)
    }
}

fn secret(password: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": "postgresql-secret", "namespace": "default"},
           "type": "Opaque", "stringData": {"password": password}})
}

fn role_config_map(role: &RoleFiles) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": "postgresql-role", "namespace": "default"},
           "data": role.to_config_map_data()})
}

/// The manifests' StatefulSet in `default`, with `env` added to the container's environment.
fn statefulset(repo_root: &Path, env: &[(String, String)]) -> Result<Value, BoxError> {
    let path = repo_root.join("manifests/base/postgresql/statefulset.yaml");
    let yaml =
        std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let mut v: Value = serde_yaml::from_str(&yaml)?;
    v["metadata"]["namespace"] = json!("default");
    let vars = v
        .pointer_mut("/spec/template/spec/containers/0/env")
        .and_then(Value::as_array_mut)
        .ok_or("the StatefulSet's container has no env")?;
    for (name, value) in env {
        vars.push(json!({"name": name, "value": value}));
    }
    Ok(v)
}

/// Waits until `postgresql-0` is Ready; a pod that fails to start (waiting with a message) is
/// an error at once.
async fn pod_ready(kube: &KubeDouble, region: &str, timeout: Duration) -> Result<(), BoxError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(pod) = kube.get("pods", "default", "postgresql-0") {
            if let Some(msg) = pod
                .pointer("/status/containerStatuses/0/state/waiting/message")
                .and_then(Value::as_str)
            {
                return Err(format!("postgresql-0 in {region} failed to start: {msg}").into());
            }
            let ready = pod["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
            if ready {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("postgresql-0 in {region} not Ready after {timeout:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
