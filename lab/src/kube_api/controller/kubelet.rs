//! The kubelet of a double: pods as processes. Each new (Pending) pod is started through the
//! [`PodRuntime`]; once it is Ready, or failed to start, its status and events are written; a
//! failed start is tried again after a back-off, as a kubelet restarts a crashing container. A
//! deleted pod is stopped, whoever deleted it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use tokio::task::AbortHandle;

use super::super::events::{self, EventType as Kind};
use super::super::pod::{PodInfo, PodRuntime, PodStarted};
use super::super::store::{now_rfc3339, Store};
use super::{put_status, res, s, ControllerConfig};

/// The pods the kubelet runs.
pub(super) struct Kubelet {
    store: Arc<Store>,
    region: String,
    runtime: Arc<dyn PodRuntime>,
    /// Pods whose start is under way, by uid.
    starting: HashMap<String, AbortHandle>,
    /// Pods started (or being started), by uid.
    started: HashSet<String>,
}

impl Kubelet {
    pub(super) fn new(store: Arc<Store>, cfg: &ControllerConfig) -> Self {
        Kubelet {
            store,
            region: cfg.region.clone(),
            runtime: cfg.runtime.clone(),
            starting: HashMap::new(),
            started: HashSet::new(),
        }
    }

    /// Starts every pod not started yet, through the runtime.
    pub(super) fn sync(&mut self, pods: &[Value]) {
        for pod in pods {
            let uid = s(&pod["metadata"]["uid"]).to_string();
            if self.started.contains(&uid)
                || pod.pointer("/status/phase") != Some(&json!("Pending"))
            {
                continue;
            }
            self.started.insert(uid.clone());
            let info = PodInfo::from_pod(&self.region, pod);
            let handle = tokio::spawn(run_pod(self.store.clone(), self.runtime.clone(), info));
            self.starting.insert(uid, handle.abort_handle());
        }
        self.starting.retain(|_, h| !h.is_finished());
    }

    /// Stops a deleted pod: its start is cancelled, a started one gets its `Killing` event, and
    /// the runtime stops it.
    pub(super) fn stop(&mut self, pod: &Value) {
        let uid = s(&pod["metadata"]["uid"]).to_string();
        if let Some(h) = self.starting.remove(&uid) {
            h.abort();
        }
        if self.started.remove(&uid) {
            let c = s(&pod["spec"]["containers"][0]["name"]).to_string();
            events::pod_event(
                &self.store,
                pod,
                Kind::Normal,
                "Killing",
                format!("Stopping container {c}"),
            );
        }
        let info = PodInfo::from_pod(&self.region, pod);
        tokio::spawn(self.runtime.stop(info));
    }
}

/// The kubelet's restart back-off after the first failed start (a real kubelet's starts at
/// 10 s and doubles up to 5 min; the lab's pods are processes that start in milliseconds).
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(20);

/// Starts the pod through the runtime and reports it; a start that fails is tried again
/// after a back-off that doubles, as a kubelet restarts a container under `restartPolicy:
/// Always` (CrashLoopBackOff meanwhile, `restartCount` + 1 each time), until the pod starts or
/// is deleted (deletion aborts this task).
async fn run_pod(store: Arc<Store>, runtime: Arc<dyn PodRuntime>, pod: PodInfo) {
    let mut backoff = FIRST_BACKOFF;
    let mut restarts = 0;
    loop {
        if report_start(&store, &pod, runtime.start(pod.clone()), restarts).await {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        restarts += 1;
        let same = store
            .get(res("pods"), &pod.namespace, &pod.name)
            .is_some_and(|p| s(&p["metadata"]["uid"]) == pod.uid);
        if !same {
            return;
        }
    }
}

/// Waits for the runtime to start the pod, then records its events and writes its status;
/// whether it started.
async fn report_start(
    store: &Store,
    pod: &PodInfo,
    start: BoxFuture<'static, Result<PodStarted, String>>,
    restarts: i64,
) -> bool {
    let (ns, name, uid) = (&pod.namespace, &pod.name, &pod.uid);
    let containers = pod
        .object
        .pointer("/spec/containers")
        .cloned()
        .unwrap_or(json!([]));
    let outcome = start.await;
    if let Some(now) = store.get(res("pods"), ns, name) {
        let c = s(&containers[0]["name"]).to_string();
        match &outcome {
            Ok(_) => events::pod_event(
                store,
                &now,
                Kind::Normal,
                "Started",
                format!("Started container {c}"),
            ),
            Err(e) => {
                events::pod_event(store, &now, Kind::Warning, "Failed", e.clone());
                let message =
                    format!("Back-off restarting failed container {c} in pod {name}_{ns}({uid})");
                events::pod_event(store, &now, Kind::Warning, "BackOff", message);
            }
        }
    }
    let status = pod_status(&containers, &outcome, restarts);
    if let Err(e) = put_status(store, res("pods"), (ns, name, uid), status) {
        tracing::debug!(pod = %name, error = %e, "pod gone before it started");
    }
    outcome.is_ok()
}

fn pod_status(containers: &Value, outcome: &Result<PodStarted, String>, restarts: i64) -> Value {
    let now = now_rfc3339();
    let ready = outcome.is_ok();
    let flag = if ready { "True" } else { "False" };
    let ip = outcome
        .as_ref()
        .ok()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_else(|| "127.0.0.1".to_string());
    let statuses: Vec<Value> = containers
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    let state = match outcome {
                        Ok(_) => json!({"running": {"startedAt": now}}),
                        Err(msg) => {
                            json!({"waiting": {"reason": "CrashLoopBackOff", "message": msg}})
                        }
                    };
                    json!({
                        "name": c["name"], "image": c["image"], "imageID": "", "ready": ready,
                        "started": ready, "restartCount": restarts, "state": state,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let cond = |t: &str, st: &str| json!({"type": t, "status": st, "lastProbeTime": null, "lastTransitionTime": now});
    json!({
        "phase": "Running",
        "conditions": [cond("Initialized", "True"), cond("Ready", flag), cond("ContainersReady", flag), cond("PodScheduled", "True")],
        "hostIP": "127.0.0.1",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": now,
        "containerStatuses": statuses,
        "qosClass": "BestEffort",
    })
}
