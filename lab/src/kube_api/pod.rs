//! What the double knows of a pod and how pods are run: [`PodInfo`] (what a runtime and the
//! pod I/O are told), the [`PodRuntime`] that starts and stops pods, and the default
//! [`DelayRuntime`], in which nothing runs.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::Value;

use super::error::ApiError;

/// What a [`PodRuntime`] is told about a pod.
#[derive(Debug, Clone)]
pub struct PodInfo {
    /// Region of the double running the pod.
    pub region: String,
    /// Namespace of the pod.
    pub namespace: String,
    /// Name of the pod.
    pub name: String,
    /// UID of the pod.
    pub uid: String,
    /// Labels of the pod.
    pub labels: BTreeMap<String, String>,
    /// Kind and name of the controller owning the pod (`Deployment`, `StatefulSet`), if any.
    pub owner: Option<(String, String)>,
    /// The whole pod object, as stored.
    pub object: Value,
}

impl PodInfo {
    /// The pod as the runtime and pod I/O see it.
    pub(crate) fn from_pod(region: &str, pod: &Value) -> Self {
        let meta = &pod["metadata"];
        let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let labels = meta["labels"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), s(v))).collect())
            .unwrap_or_default();
        let owner = meta["ownerReferences"]
            .as_array()
            .and_then(|a| a.first())
            .map(|o| (s(&o["kind"]), s(&o["name"])));
        PodInfo {
            region: region.to_string(),
            namespace: s(&meta["namespace"]),
            name: s(&meta["name"]),
            uid: s(&meta["uid"]),
            labels,
            owner,
            object: pod.clone(),
        }
    }
}

/// What a started pod reports.
#[derive(Debug, Clone, Default)]
pub struct PodStarted {
    /// The pod's IP (`status.podIP`), e.g. the loopback address a real process listens on.
    pub pod_ip: Option<String>,
}

/// Runs pods. `start` resolves when the pod is Ready (or failed to start); `stop` is called
/// once the pod object is deleted, whoever deleted it.
pub trait PodRuntime: Send + Sync + 'static {
    /// Starts the pod; resolves when it is Ready, or with the reason it could not start.
    fn start(&self, pod: PodInfo) -> BoxFuture<'static, Result<PodStarted, String>>;
    /// Stops the pod (its object is already gone).
    fn stop(&self, pod: PodInfo) -> BoxFuture<'static, ()>;
}

/// The default runtime: nothing runs; each pod becomes Ready after `delay`.
#[derive(Debug, Clone)]
pub struct DelayRuntime {
    /// Time from pod creation to Ready.
    pub delay: Duration,
}

impl Default for DelayRuntime {
    fn default() -> Self {
        DelayRuntime {
            delay: Duration::from_millis(200),
        }
    }
}

impl PodRuntime for DelayRuntime {
    fn start(&self, _pod: PodInfo) -> BoxFuture<'static, Result<PodStarted, String>> {
        let delay = self.delay;
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            Ok(PodStarted::default())
        })
    }

    fn stop(&self, _pod: PodInfo) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

/// Streams (exec, port-forward) need a running pod.
pub(crate) fn require_running(pod: &PodInfo) -> Result<(), ApiError> {
    let phase = pod
        .object
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending");
    if phase != "Running" {
        return Err(ApiError::bad_request(format!(
            "unable to upgrade connection: pod {} is not running (phase {phase})",
            pod.name
        )));
    }
    Ok(())
}
