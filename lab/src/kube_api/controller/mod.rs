//! A "kube-controller-manager lite" plus a kubelet for one double: it rolls Deployments and
//! StatefulSets out the way the real controllers do (pods created and deleted as objects, status
//! counters and conditions moving step by step, a new rollout on every template change), and it
//! runs each pod through a pluggable [`PodRuntime`], so the lab can later start real processes
//! for pods. Status lags spec by the sync delay, as it does on a real cluster, which is what makes
//! stale-status bugs (such as trusting `is_deployment_completed` right after a change) visible.
//!
//! This module holds the loop and what the controllers share; [`kubelet`] runs the pods,
//! [`owned`] creates, deletes and collects the objects the controllers own, [`deployment`]
//! (with [`replicaset`]) and [`statefulset`] are the two controllers.

mod deployment;
mod kubelet;
mod owned;
mod replicaset;
mod statefulset;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::error::{ApiError, ApiResult};
use super::pod::PodRuntime;
use super::resources::{self, ResourceDef};
use super::store::{Event, EventType, Store, WriteOpts};

pub use deployment::template_hash;
use deployment::Rollouts;
use kubelet::Kubelet;

/// Settings of the controller.
#[derive(Clone)]
pub(crate) struct ControllerConfig {
    pub region: String,
    pub sync_delay: Duration,
    pub runtime: Arc<dyn PodRuntime>,
}

fn res(name: &str) -> &'static ResourceDef {
    resources::lookup(name).expect("controller resources are served")
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn owned_by<'a>(pods: &'a [Value], uid: &str) -> Vec<&'a Value> {
    pods.iter()
        .filter(|p| {
            p.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|o| o.iter().any(|r| r["uid"] == uid))
        })
        .collect()
}

fn put_nonzero(status: &mut Value, key: &str, n: i64) {
    if n != 0 {
        status[key] = json!(n);
    }
}

/// Writes `status` on the object `ns/name` of `r`, unless it is gone or is another object now
/// (a different uid).
fn put_status(
    store: &Store,
    r: &'static ResourceDef,
    (ns, name, uid): (&str, &str, &str),
    status: Value,
) -> ApiResult<Value> {
    store.update(r, ns, name, WriteOpts::status(), |old| {
        if s(&old["metadata"]["uid"]) != uid {
            return Err(ApiError::not_found(r, name));
        }
        let mut new = old.clone();
        new["status"] = status;
        Ok(new)
    })
}

/// The controller and kubelet of one double.
pub(crate) struct Controller {
    store: Arc<Store>,
    cfg: ControllerConfig,
    kubelet: Kubelet,
    rollouts: Rollouts,
    /// Each Deployment's replicas as last seen (for ScalingReplicaSet events).
    scales: HashMap<String, i64>,
}

impl Controller {
    pub fn new(store: Arc<Store>, cfg: ControllerConfig) -> Self {
        Controller {
            kubelet: Kubelet::new(store.clone(), &cfg),
            store,
            cfg,
            rollouts: Rollouts::default(),
            scales: HashMap::new(),
        }
    }

    /// Runs until the store's event channel closes (or the task is aborted).
    pub async fn run(mut self) {
        let mut rx = self.store.subscribe();
        self.resync();
        loop {
            match rx.recv().await {
                Ok(ev) => self.on_event(&ev),
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
            tokio::time::sleep(self.cfg.sync_delay).await;
            loop {
                match rx.try_recv() {
                    Ok(ev) => self.on_event(&ev),
                    Err(TryRecvError::Lagged(_)) => continue,
                    Err(_) => break,
                }
            }
            self.resync();
        }
    }

    fn on_event(&mut self, ev: &Event) {
        if ev.resource.plural == "pods" && ev.kind == EventType::Deleted {
            self.kubelet.stop(&ev.object);
        }
    }

    fn resync(&mut self) {
        let (pods, _) = self.store.list(res("pods"), None);
        self.kubelet.sync(&pods);
        self.collect_garbage(&pods);
        let (deployments, _) = self.store.list(res("deployments"), None);
        for d in &deployments {
            self.sync_deployment(d, &pods);
        }
        let (statefulsets, _) = self.store.list(res("statefulsets"), None);
        for st in &statefulsets {
            self.sync_statefulset(st, &pods);
        }
    }

    fn write_status(&self, r: &'static ResourceDef, obj: &Value, status: Value) {
        let meta = &obj["metadata"];
        let key = (s(&meta["namespace"]), s(&meta["name"]), s(&meta["uid"]));
        if let Err(e) = put_status(&self.store, r, key, status) {
            tracing::debug!(error = %e, "status write skipped");
        }
    }
}
