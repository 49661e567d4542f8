//! The kubelet of a double: pods as processes. Each new (Pending) pod is started through the
//! [`PodRuntime`]; once it is Ready, or failed to start, its status and events are written. A
//! deleted pod is stopped, whoever deleted it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

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
            let start = self.runtime.start(info.clone());
            let handle = tokio::spawn(report_start(self.store.clone(), info, start));
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

/// Waits for the runtime to start the pod, then records its events and writes its status.
async fn report_start(
    store: Arc<Store>,
    pod: PodInfo,
    start: BoxFuture<'static, Result<PodStarted, String>>,
) {
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
                &store,
                &now,
                Kind::Normal,
                "Started",
                format!("Started container {c}"),
            ),
            Err(e) => {
                events::pod_event(&store, &now, Kind::Warning, "Failed", e.clone());
                let message =
                    format!("Back-off restarting failed container {c} in pod {name}_{ns}({uid})");
                events::pod_event(&store, &now, Kind::Warning, "BackOff", message);
            }
        }
    }
    let status = pod_status(&containers, &outcome);
    if let Err(e) = put_status(&store, res("pods"), (ns, name, uid), status) {
        tracing::debug!(pod = %name, error = %e, "pod gone before it started");
    }
}

fn pod_status(containers: &Value, outcome: &Result<PodStarted, String>) -> Value {
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
                        "started": ready, "restartCount": 0, "state": state,
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
