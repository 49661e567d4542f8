//! drdctl's Kubernetes adapter: everything drdctl does to a cluster goes through [`Cluster`].
//!
//! One [`KubeCluster`] per kube context (region). It applies objects server-side under the
//! field manager `drdctl`, reads and creates Secrets without ever formatting their values,
//! scales, restarts (the `kubectl rollout restart` annotation), patches ConfigMaps and reads
//! rollout state the way `kubectl rollout status` judges it (observedGeneration first: kube's
//! own `is_deployment_completed` ignores it and says "done" on stale status).
//!
//! A Lease ([`KubeCluster::acquire_lease`]) is the lock between operators.
//!
//! Every error names the context and the object, and says what to do.

mod audit;
mod error;
mod lease;
mod objects;
mod pod;
mod rollout;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use kube::{Api, Client};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

pub use error::KubeError;
pub use lease::{LeaseHolder, LeaseTaken};
pub use pod::{PodNotReady, PortForward, RestartError};
pub use rollout::{Rollout, RolloutKind};

pub type Result<T, E = KubeError> = std::result::Result<T, E>;

/// Where a region's cluster is: a context in a kubeconfig, and the namespace of the app.
#[derive(Debug, Clone)]
pub struct Target {
    /// The region's name in drdctl's config (`primary`, `dr`), for messages.
    pub region: String,
    pub context: String,
    /// `None`: `$KUBECONFIG`, then `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    pub namespace: String,
    /// Bound on connecting to the API server and on each read/write (`--timeout`); `None`:
    /// kube-rs's defaults.
    pub timeout: Option<std::time::Duration>,
}

/// What server-side apply did to one object, in kubectl's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    Created,
    Configured,
    Unchanged,
}

impl std::fmt::Display for ApplyOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ApplyOutcome::Created => "created",
            ApplyOutcome::Configured => "configured",
            ApplyOutcome::Unchanged => "unchanged",
        })
    }
}

/// What drdctl needs from a Kubernetes cluster. Object-safe (`dyn Cluster`), so the engine
/// runs unchanged against an in-memory cluster in the simulation tests.
#[async_trait::async_trait]
pub trait Cluster: Send + Sync {
    fn target(&self) -> &Target;
    /// Server-side apply as field manager `drdctl`; `dry_run` stores nothing.
    async fn apply(&self, object: &Value, dry_run: bool, force: bool) -> Result<ApplyOutcome>;
    async fn secret_exists(&self, name: &str) -> Result<bool>;
    /// Creates an Opaque Secret; values are never formatted.
    async fn create_secret(&self, name: &str, data: &BTreeMap<String, SecretString>) -> Result<()>;
    /// The value of one key of a Secret (for the database password).
    async fn secret_value(&self, name: &str, key: &str) -> Result<SecretString>;
    async fn rollout(&self, kind: RolloutKind, name: &str) -> Result<Rollout>;
    async fn scale(&self, kind: RolloutKind, name: &str, replicas: i32) -> Result<()>;
    /// `kubectl rollout restart` (a new `restartedAt` pod template annotation, so a new
    /// rollout) that also marks the template with `mark` (`key: value`), so that
    /// [`Cluster::template_annotation`] later tells whether this restart was made.
    async fn restart(&self, kind: RolloutKind, name: &str, mark: (&str, &str)) -> Result<()>;
    /// One annotation of a workload's pod template (`None`: not set, or no such workload).
    async fn template_annotation(
        &self,
        kind: RolloutKind,
        name: &str,
        key: &str,
    ) -> Result<Option<String>>;
    async fn patch_configmap(&self, name: &str, data: &BTreeMap<String, String>) -> Result<()>;
    /// Sets an HPA's `minReplicas` (a no-op when there is no such HPA); returns whether one existed.
    async fn set_hpa_min(&self, name: &str, min: i32) -> Result<bool>;
    async fn configmap(&self, name: &str) -> Result<Option<BTreeMap<String, String>>>;
    /// The API server's version (`v1.32.4`): the cheapest "is it there" call.
    async fn version(&self) -> Result<String>;
    async fn namespace_exists(&self) -> Result<bool>;
    /// Container images of a workload's pod template (`None`: no such workload).
    async fn images(&self, kind: RolloutKind, name: &str) -> Result<Option<Vec<String>>>;
    /// Pods of the namespace whose containers are waiting in CrashLoopBackOff (or similar),
    /// with the reason.
    async fn failing_pods(&self) -> Result<Vec<(String, String)>>;
}

/// The one real [`Cluster`]: kube-rs against the API server of a kube context. Cheap to
/// clone (the clones share the client and the discovery cache).
#[derive(Clone)]
pub struct KubeCluster {
    target: Target,
    client: Client,
    server: String,
    /// The kubeconfig user of the context (who drdctl acts as, for the audit trail).
    user: Option<String>,
    resources: Arc<Mutex<HashMap<String, (ApiResource, ApiCapabilities)>>>,
}

fn kubeconfig_path(explicit: &Option<PathBuf>) -> PathBuf {
    if let Some(p) = explicit {
        return p.clone();
    }
    if let Some(p) = std::env::var_os("KUBECONFIG").and_then(|v| {
        std::env::split_paths(&v)
            .next()
            .filter(|p| !p.as_os_str().is_empty())
    }) {
        return p;
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".kube").join("config")
}

impl KubeCluster {
    /// Builds a client for the target's context. Does not contact the server.
    pub async fn connect(target: Target) -> Result<Self> {
        let path = kubeconfig_path(&target.kubeconfig);
        let kubeconfig = read_kubeconfig(&path)?;
        let names: Vec<String> = kubeconfig.contexts.iter().map(|c| c.name.clone()).collect();
        let user = kubeconfig
            .contexts
            .iter()
            .find(|c| c.name == target.context)
            .and_then(|c| c.context.as_ref())
            .and_then(|c| c.user.clone());
        if !names.contains(&target.context) {
            return Err(KubeError::UnknownContext {
                region: target.region.clone(),
                context: target.context.clone(),
                path,
                available: names.join(", "),
            });
        }
        let options = KubeConfigOptions {
            context: Some(target.context.clone()),
            ..Default::default()
        };
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| KubeError::Config {
                context: target.context.clone(),
                message: e.to_string(),
            })?;
        if let Some(t) = target.timeout {
            config.connect_timeout = Some(t);
            config.read_timeout = Some(t);
            config.write_timeout = Some(t);
        }
        let server = config.cluster_url.to_string();
        let client = api_client(config).map_err(|e| KubeError::Config {
            context: target.context.clone(),
            message: e.to_string(),
        })?;
        Ok(KubeCluster {
            target,
            client,
            server,
            user,
            resources: Arc::default(),
        })
    }

    /// A cluster over a client already made (tests against a double, whose URL needs no
    /// kubeconfig). `server` is for messages.
    pub fn with_client(target: Target, client: Client, server: &str) -> Self {
        KubeCluster {
            target,
            client,
            server: server.to_string(),
            user: None,
            resources: Arc::default(),
        }
    }

    /// The same cluster (client, context) acting in `namespace`.
    pub fn in_namespace(&self, namespace: &str) -> Self {
        let mut c = self.clone();
        c.target.namespace = namespace.to_string();
        c
    }

    /// The first of `keys` present in Secret `name` (`data`, then `stringData`), never
    /// formatted anywhere. Missing secret or keys: [`KubeError::MissingSecret`].
    pub async fn secret_first(&self, name: &str, keys: &[&str]) -> Result<SecretString> {
        let missing = || KubeError::MissingSecret {
            context: self.target.context.clone(),
            namespace: self.target.namespace.clone(),
            name: name.to_string(),
            key: keys.join(" or "),
        };
        let secret = self
            .secrets()
            .get_opt(name)
            .await
            .map_err(|e| self.err(format!("reading Secret/{name}"), e))?
            .ok_or_else(missing)?;
        let found = keys.iter().find_map(|key| {
            let data = secret.data.as_ref().and_then(|d| d.get(*key));
            data.map(|b| b.0.clone()).or_else(|| {
                let strings = secret.string_data.as_ref()?;
                strings.get(*key).map(|s| s.clone().into_bytes())
            })
        });
        let bytes = found.ok_or_else(missing)?;
        Ok(SecretString::from(
            String::from_utf8_lossy(&bytes).into_owned(),
        ))
    }

    /// The kubeconfig user of the context (`None`: none named).
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The API server URL of the context.
    pub fn server(&self) -> &str {
        &self.server
    }

    fn err(&self, what: String, e: kube::Error) -> KubeError {
        KubeError::from_kube(&self.target.context, &self.server, what, e)
    }

    async fn resource(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<(ApiResource, ApiCapabilities)> {
        let key = format!("{api_version}/{kind}");
        if let Some(r) = self.resources.lock().expect("not poisoned").get(&key) {
            return Ok(r.clone());
        }
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let found = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .map_err(|e| match e {
                kube::Error::Api(ref s) if s.code == 404 => KubeError::UnknownKind {
                    context: self.target.context.clone(),
                    kind: key.clone(),
                },
                e => self.err(format!("discovering {key}"), e),
            })?;
        self.resources
            .lock()
            .expect("not poisoned")
            .insert(key, found.clone());
        Ok(found)
    }

    fn dynamic(
        &self,
        ar: &ApiResource,
        caps: &ApiCapabilities,
        namespace: Option<&str>,
    ) -> Api<DynamicObject> {
        match caps.scope {
            Scope::Cluster => Api::all_with(self.client.clone(), ar),
            Scope::Namespaced => Api::namespaced_with(
                self.client.clone(),
                namespace.unwrap_or(&self.target.namespace),
                ar,
            ),
        }
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.target.namespace)
    }
    fn statefulsets(&self) -> Api<StatefulSet> {
        Api::namespaced(self.client.clone(), &self.target.namespace)
    }
    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.target.namespace)
    }
    fn configmaps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.target.namespace)
    }

    /// A Deployment or StatefulSet: its rollout state and pod template (`None`: no such
    /// workload). The one place that tells the two kinds apart for reads.
    async fn workload(
        &self,
        kind: RolloutKind,
        name: &str,
    ) -> Result<Option<(Rollout, k8s_openapi::api::core::v1::PodTemplateSpec)>> {
        let what = || format!("reading {kind}/{name}");
        Ok(match kind {
            RolloutKind::Deployment => self
                .deployments()
                .get_opt(name)
                .await
                .map_err(|e| self.err(what(), e))?
                .map(|d| (Rollout::of_deployment(&d), d.spec.template)),
            RolloutKind::StatefulSet => self
                .statefulsets()
                .get_opt(name)
                .await
                .map_err(|e| self.err(what(), e))?
                .map(|s| (Rollout::of_statefulset(&s), s.spec.template)),
        })
    }

    /// A patch on a Deployment or StatefulSet (`scale`: on its scale subresource): the one
    /// place that tells the two kinds apart for writes.
    async fn patch_workload(
        &self,
        kind: RolloutKind,
        name: &str,
        patch: &Patch<Value>,
        scale: bool,
    ) -> std::result::Result<(), kube::Error> {
        async fn on<K>(
            api: Api<K>,
            name: &str,
            patch: &Patch<Value>,
            scale: bool,
        ) -> kube::Result<()>
        where
            K: Clone + k8s_openapi::serde::de::DeserializeOwned + std::fmt::Debug,
        {
            let params = PatchParams::default();
            if scale {
                api.patch_scale(name, &params, patch).await.map(drop)
            } else {
                api.patch(name, &params, patch).await.map(drop)
            }
        }
        match kind {
            RolloutKind::Deployment => on(self.deployments(), name, patch, scale).await,
            RolloutKind::StatefulSet => on(self.statefulsets(), name, patch, scale).await,
        }
    }
}

fn read_kubeconfig(path: &Path) -> Result<Kubeconfig> {
    if !path.exists() {
        return Err(KubeError::NoKubeconfig {
            path: path.to_path_buf(),
        });
    }
    Kubeconfig::read_from(path).map_err(|e| KubeError::BadKubeconfig {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// `Kind/name` of an object, for messages.
pub fn object_ref(object: &Value) -> String {
    format!(
        "{}/{}",
        object["kind"].as_str().unwrap_or("?"),
        object["metadata"]["name"].as_str().unwrap_or("?")
    )
}

#[async_trait::async_trait]
impl Cluster for KubeCluster {
    async fn version(&self) -> Result<String> {
        self.client
            .apiserver_version()
            .await
            .map(|v| v.git_version)
            .map_err(|e| self.err("reading /version".into(), e))
    }

    async fn namespace_exists(&self) -> Result<bool> {
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
        api.get_opt(&self.target.namespace)
            .await
            .map(|n| n.is_some())
            .map_err(|e| self.err(format!("reading Namespace/{}", self.target.namespace), e))
    }

    async fn images(&self, kind: RolloutKind, name: &str) -> Result<Option<Vec<String>>> {
        Ok(self.workload(kind, name).await?.map(|(_, t)| {
            t.spec
                .map(|s| s.containers.into_iter().filter_map(|c| c.image).collect())
                .unwrap_or_default()
        }))
    }

    async fn failing_pods(&self) -> Result<Vec<(String, String)>> {
        let api: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(self.client.clone(), &self.target.namespace);
        let pods = api
            .list(&Default::default())
            .await
            .map_err(|e| self.err("listing pods".into(), e))?;
        let mut out = Vec::new();
        for p in pods.items {
            let name = p.metadata.name.clone().unwrap_or_default();
            for cs in p
                .status
                .and_then(|s| s.container_statuses)
                .unwrap_or_default()
            {
                let waiting = cs.state.and_then(|s| s.waiting).and_then(|w| w.reason);
                if let Some(reason) = waiting.filter(|r| {
                    matches!(
                        r.as_str(),
                        "CrashLoopBackOff"
                            | "ImagePullBackOff"
                            | "ErrImagePull"
                            | "CreateContainerConfigError"
                    )
                }) {
                    out.push((
                        name.clone(),
                        format!("{reason} (restarts: {})", cs.restart_count),
                    ));
                }
            }
        }
        Ok(out)
    }

    fn target(&self) -> &Target {
        &self.target
    }

    async fn apply(&self, object: &Value, dry_run: bool, force: bool) -> Result<ApplyOutcome> {
        let what = object_ref(object);
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        let name = object["metadata"]["name"]
            .as_str()
            .ok_or_else(|| KubeError::Invalid {
                context: self.target.context.clone(),
                object: what.clone(),
                message: "metadata.name is missing".into(),
            })?;
        let (ar, caps) = self.resource(api_version, kind).await?;
        let api = self.dynamic(&ar, &caps, object["metadata"]["namespace"].as_str());
        let before = api
            .get_opt(name)
            .await
            .map_err(|e| self.err(format!("reading {what}"), e))?;
        let mut params = PatchParams::apply("drdctl");
        params.force = force;
        params.dry_run = dry_run;
        let after = api
            .patch(name, &params, &Patch::Apply(object))
            .await
            .map_err(|e| self.err(format!("applying {what}"), e))?;
        Ok(match before {
            None => ApplyOutcome::Created,
            Some(b) if b.metadata.resource_version == after.metadata.resource_version => {
                ApplyOutcome::Unchanged
            }
            Some(_) => ApplyOutcome::Configured,
        })
    }

    async fn secret_exists(&self, name: &str) -> Result<bool> {
        self.secrets()
            .get_opt(name)
            .await
            .map(|s| s.is_some())
            .map_err(|e| self.err(format!("reading Secret/{name}"), e))
    }

    async fn create_secret(&self, name: &str, data: &BTreeMap<String, SecretString>) -> Result<()> {
        let string_data: serde_json::Map<String, Value> = data
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.expose_secret().to_string())))
            .collect();
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "drdctl"}},
            "type": "Opaque",
            "stringData": string_data,
        }))
        .expect("a well-formed Secret");
        self.secrets()
            .create(&PostParams::default(), &secret)
            .await
            .map(|_| ())
            // The error carries the server's message only, never the object we sent.
            .map_err(|e| self.err(format!("creating Secret/{name}"), e))
    }

    async fn secret_value(&self, name: &str, key: &str) -> Result<SecretString> {
        self.secret_first(name, &[key]).await
    }

    async fn rollout(&self, kind: RolloutKind, name: &str) -> Result<Rollout> {
        match self.workload(kind, name).await? {
            Some((r, _)) => Ok(r),
            // As the API server says it (and as `get` did).
            None => Err(KubeError::Api {
                context: self.target.context.clone(),
                what: format!("reading {kind}/{name}"),
                code: 404,
                reason: "NotFound".into(),
                message: format!("{kind}s.apps \"{name}\" not found"),
            }),
        }
    }

    async fn scale(&self, kind: RolloutKind, name: &str, replicas: i32) -> Result<()> {
        let patch = Patch::Merge(json!({"spec": {"replicas": replicas}}));
        self.patch_workload(kind, name, &patch, true)
            .await
            .map_err(|e| self.err(format!("scaling {kind}/{name} to {replicas}"), e))
    }

    async fn restart(&self, kind: RolloutKind, name: &str, mark: (&str, &str)) -> Result<()> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let patch = Patch::Strategic(json!({"spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": now,
            mark.0: mark.1,
        }}}}}));
        self.patch_workload(kind, name, &patch, false)
            .await
            .map_err(|e| self.err(format!("restarting {kind}/{name}"), e))
    }

    async fn template_annotation(
        &self,
        kind: RolloutKind,
        name: &str,
        key: &str,
    ) -> Result<Option<String>> {
        Ok(self
            .workload(kind, name)
            .await?
            .and_then(|(_, t)| t.metadata)
            .and_then(|m| m.annotations)
            .and_then(|mut a| a.remove(key)))
    }

    async fn set_hpa_min(&self, name: &str, min: i32) -> Result<bool> {
        let api: Api<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler> =
            Api::namespaced(self.client.clone(), &self.target.namespace);
        let what = format!("setting horizontalpodautoscaler/{name} minReplicas to {min}");
        if api
            .get_opt(name)
            .await
            .map_err(|e| self.err(what.clone(), e))?
            .is_none()
        {
            return Ok(false);
        }
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"minReplicas": min}})),
        )
        .await
        .map_err(|e| self.err(what, e))?;
        Ok(true)
    }

    async fn patch_configmap(&self, name: &str, data: &BTreeMap<String, String>) -> Result<()> {
        let params = PatchParams {
            field_manager: Some("drdctl".into()),
            ..PatchParams::default()
        };
        self.configmaps()
            .patch(name, &params, &Patch::Merge(json!({ "data": data })))
            .await
            .map(|_| ())
            .map_err(|e| self.err(format!("patching ConfigMap/{name}"), e))
    }

    async fn configmap(&self, name: &str) -> Result<Option<BTreeMap<String, String>>> {
        self.configmaps()
            .get_opt(name)
            .await
            .map(|c| c.map(|c| c.data.unwrap_or_default()))
            .map_err(|e| self.err(format!("reading ConfigMap/{name}"), e))
    }
}

/// The API client: kube-client's own stack (base URI, retries of 429/503, auth, extra
/// headers, connect/read/write timeouts, TLS), over a connector that sets TCP_NODELAY, as Go's
/// clients do. kube's builder leaves Nagle on: a small write that follows another (a
/// port-forwarded query after the previous one's frame) then waits for the server's delayed
/// ACK, about 40 ms. Through a proxy, kube's own builder (it knows the proxy protocols).
fn api_client(config: kube::Config) -> Result<Client, kube::Error> {
    use hyper_util::client::legacy::connect::HttpConnector;
    use kube::client::{retry::RetryPolicy, Body, ConfigExt};
    use tower::ServiceBuilder;

    if config.proxy_url.is_some() {
        return Client::try_from(config);
    }
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // As kube's builder: only if nobody installed one (an error means someone just did).
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = config.rustls_https_connector_with_connector(http)?;
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let http: hyper_util::client::legacy::Client<_, Body> =
        hyper_util::client::legacy::Builder::new(hyper_util::rt::TokioExecutor::new())
            .build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| tower::retry::RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(http);
    Ok(Client::new(service, config.default_namespace))
}
