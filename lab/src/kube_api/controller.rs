//! A "kube-controller-manager lite" plus a kubelet for one double: it rolls Deployments and
//! StatefulSets out the way the real controllers do (pods created and deleted as objects, status
//! counters and conditions moving step by step, a new rollout on every template change), and it
//! runs each pod through a pluggable [`PodRuntime`], so the lab can later start real processes
//! for pods. Status lags spec by the sync delay, as it does on a real cluster, which is what makes
//! stale-status bugs (such as trusting `is_deployment_completed` right after a change) visible.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::AbortHandle;

use super::events::{self, Emit, EventType as Kind};
use super::pod::{PodInfo, PodRuntime, PodStarted};
use super::resources::{self, ResourceDef};
use super::store::{now_rfc3339, EventType, Store, WriteOpts};

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

/// Kubernetes' `SafeEncodeString` alphabet, used for pod-template-hash and random suffixes.
const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The pod-template-hash of a template: FNV-1a (32 bit) of the template, safe-encoded.
pub fn template_hash(template: &Value) -> String {
    // `creationTimestamp: null` is how Go clients (kubectl rollout undo) write an unset time;
    // the API server stores it as absent, so it does not make a template new.
    let mut template = template.clone();
    if let Some(m) = template
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .filter(|m| m.get("creationTimestamp") == Some(&Value::Null))
    {
        m.remove("creationTimestamp");
    }
    let mut h: u32 = 2_166_136_261;
    for b in template.to_string().bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(16_777_619);
    }
    h.to_string()
        .bytes()
        .map(|c| SAFE[c as usize % SAFE.len()] as char)
        .collect()
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

/// Resolves an int-or-percent against `total` (`25%` of 3 rounds up for surge, down for
/// unavailable, as the real controller does).
fn int_or_percent(v: &Value, total: i64, round_up: bool) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(p) => {
            let pct: i64 = p.trim_end_matches('%').parse().unwrap_or(0);
            if round_up {
                (pct * total + 99) / 100
            } else {
                pct * total / 100
            }
        }
        _ => 0,
    }
}

fn condition(
    ty: &str,
    status: &str,
    reason: &str,
    message: &str,
    old: Option<&Value>,
    now: &str,
) -> Value {
    let unchanged = old
        .is_some_and(|o| o["status"] == status && o["reason"] == reason && o["message"] == message);
    if unchanged {
        return old.cloned().unwrap_or_default();
    }
    let transition = match old {
        Some(o) if o["status"] == status => o["lastTransitionTime"].clone(),
        _ => json!(now),
    };
    json!({
        "type": ty,
        "status": status,
        "lastUpdateTime": now,
        "lastTransitionTime": transition,
        "reason": reason,
        "message": message,
    })
}

fn old_condition<'a>(obj: &'a Value, ty: &str) -> Option<&'a Value> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == ty))
}

fn put_nonzero(status: &mut Value, key: &str, n: i64) {
    if n != 0 {
        status[key] = json!(n);
    }
}

/// In-memory rollout bookkeeping per Deployment uid: the current template hash and revision.
#[derive(Default)]
struct Rollouts {
    deployments: HashMap<String, (String, u64)>,
}

/// The controller and kubelet of one double.
pub(crate) struct Controller {
    store: Arc<Store>,
    cfg: ControllerConfig,
    rollouts: Rollouts,
    starting: HashMap<String, AbortHandle>,
    started: HashSet<String>,
    /// Each Deployment's replicas as last seen (for ScalingReplicaSet events).
    scales: HashMap<String, i64>,
}

/// The controller event about a pod of `pod`'s owner: the ReplicaSet's (named by the pod's
/// `generateName`) for a Deployment, the StatefulSet's otherwise.
fn owner_event(store: &Store, pod: &Value, created: bool) {
    let Some(owner) = pod.pointer("/metadata/ownerReferences/0") else {
        return;
    };
    let ns = s(&pod["metadata"]["namespace"]);
    let name = s(&pod["metadata"]["name"]);
    let (reason, verb) = if created {
        ("SuccessfulCreate", "Created")
    } else {
        ("SuccessfulDelete", "Deleted")
    };
    if s(&owner["kind"]) == "Deployment" {
        let rs = s(&pod["metadata"]["generateName"]).trim_end_matches('-');
        let object = json!({"metadata": {"name": rs, "namespace": ns}});
        events::record(
            store,
            Emit {
                object: &object,
                kind: "ReplicaSet",
                api_version: "apps/v1",
                field_path: None,
                event_type: Kind::Normal,
                reason,
                message: format!("{verb} pod: {name}"),
                component: "replicaset-controller",
                host: None,
            },
        );
    } else {
        let object =
            json!({"metadata": {"name": owner["name"], "namespace": ns, "uid": owner["uid"]}});
        events::record(
            store,
            Emit {
                object: &object,
                kind: s(&owner["kind"]),
                api_version: s(&owner["apiVersion"]),
                field_path: None,
                event_type: Kind::Normal,
                reason,
                message: format!(
                    "{} Pod {name} in {} {} successful",
                    if created { "create" } else { "delete" },
                    s(&owner["kind"]),
                    s(&owner["name"])
                ),
                component: "statefulset-controller",
                host: None,
            },
        );
    }
}

impl Controller {
    pub fn new(store: Arc<Store>, cfg: ControllerConfig) -> Self {
        Controller {
            store,
            cfg,
            rollouts: Rollouts::default(),
            starting: HashMap::new(),
            started: HashSet::new(),
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
                    Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => continue,
                    Err(_) => break,
                }
            }
            self.resync();
        }
    }

    fn on_event(&mut self, ev: &super::store::Event) {
        if ev.resource.plural != "pods" {
            return;
        }
        let uid = s(&ev.object["metadata"]["uid"]).to_string();
        if ev.kind == EventType::Deleted {
            if let Some(h) = self.starting.remove(&uid) {
                h.abort();
            }
            if self.started.remove(&uid) {
                let c = s(&ev.object["spec"]["containers"][0]["name"]).to_string();
                events::pod_event(
                    &self.store,
                    &ev.object,
                    Kind::Normal,
                    "Killing",
                    format!("Stopping container {c}"),
                );
            }
            let info = PodInfo::from_pod(&self.cfg.region, &ev.object);
            let stop = self.cfg.runtime.stop(info);
            tokio::spawn(stop);
        }
    }

    fn resync(&mut self) {
        let (pods, _) = self.store.list(res("pods"), None);
        self.kubelet(&pods);
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

    /// Starts every pod not started yet, through the runtime.
    fn kubelet(&mut self, pods: &[Value]) {
        for pod in pods {
            let uid = s(&pod["metadata"]["uid"]).to_string();
            if self.started.contains(&uid)
                || pod.pointer("/status/phase") != Some(&json!("Pending"))
            {
                continue;
            }
            self.started.insert(uid.clone());
            let info = PodInfo::from_pod(&self.cfg.region, pod);
            let (ns, name) = (info.namespace.clone(), info.name.clone());
            let containers = pod
                .pointer("/spec/containers")
                .cloned()
                .unwrap_or(json!([]));
            let start = self.cfg.runtime.start(info);
            let store = self.store.clone();
            let handle = tokio::spawn(async move {
                let outcome = start.await;
                if let Some(pod) = store.get(res("pods"), &ns, &name) {
                    let c = s(&containers[0]["name"]).to_string();
                    match &outcome {
                        Ok(_) => events::pod_event(
                            &store,
                            &pod,
                            Kind::Normal,
                            "Started",
                            format!("Started container {c}"),
                        ),
                        Err(e) => {
                            events::pod_event(&store, &pod, Kind::Warning, "Failed", e.clone());
                            events::pod_event(&store, &pod, Kind::Warning, "BackOff",
                                format!("Back-off restarting failed container {c} in pod {name}_{ns}({uid})"));
                        }
                    }
                }
                let status = pod_status(&containers, &outcome);
                let write = store.update(res("pods"), &ns, &name, WriteOpts::status(), |old| {
                    if s(&old["metadata"]["uid"]) != uid {
                        return Err(super::error::ApiError::not_found(res("pods"), &name));
                    }
                    let mut new = old.clone();
                    new["status"] = status;
                    Ok(new)
                });
                if let Err(e) = write {
                    tracing::debug!(pod = %name, error = %e, "pod gone before it started");
                }
            });
            self.starting.insert(
                s(&pod["metadata"]["uid"]).to_string(),
                handle.abort_handle(),
            );
        }
        self.starting.retain(|_, h| !h.is_finished());
    }

    /// Deletes pods whose controlling Deployment or StatefulSet no longer exists.
    fn collect_garbage(&self, pods: &[Value]) {
        let mut owners: HashSet<String> = HashSet::new();
        for r in ["deployments", "statefulsets"] {
            let (items, _) = self.store.list(res(r), None);
            owners.extend(items.iter().map(|o| s(&o["metadata"]["uid"]).to_string()));
        }
        let (replicasets, _) = self.store.list(res("replicasets"), None);
        let orphaned = |o: &Value| {
            o.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| {
                    refs.iter().any(|r| {
                        matches!(s(&r["kind"]), "Deployment" | "StatefulSet")
                            && !owners.contains(s(&r["uid"]))
                    })
                })
        };
        for (r, objects) in [("replicasets", &replicasets[..]), ("pods", pods)] {
            for o in objects.iter().filter(|o| orphaned(o)) {
                let meta = &o["metadata"];
                let _ = self.store.delete(
                    res(r),
                    s(&meta["namespace"]),
                    s(&meta["name"]),
                    WriteOpts::default(),
                );
            }
        }
    }

    fn new_pod(
        &self,
        owner: &Value,
        kind: &str,
        name: Option<String>,
        generate: Option<String>,
        extra_labels: Value,
    ) -> Value {
        let template = &owner["spec"]["template"];
        let mut labels = template
            .pointer("/metadata/labels")
            .cloned()
            .unwrap_or(json!({}));
        if let (Some(l), Some(extra)) = (labels.as_object_mut(), extra_labels.as_object()) {
            for (k, v) in extra {
                l.insert(k.clone(), v.clone());
            }
        }
        let mut meta = json!({
            "namespace": owner["metadata"]["namespace"],
            "labels": labels,
            "ownerReferences": [{
                "apiVersion": owner["apiVersion"],
                "kind": kind,
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        });
        if let Some(a) = template.pointer("/metadata/annotations") {
            meta["annotations"] = a.clone();
        }
        if let Some(n) = name {
            meta["name"] = json!(n);
        }
        if let Some(g) = generate {
            meta["generateName"] = json!(g);
        }
        let mut spec = template.get("spec").cloned().unwrap_or(json!({}));
        spec["nodeName"] = json!(format!("lab-{}", self.cfg.region));
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
    }

    fn create_pod(&self, pod: Value) {
        match self.store.create(res("pods"), pod, WriteOpts::default()) {
            Ok(created) => owner_event(&self.store, &created, true),
            Err(e) => tracing::warn!(error = %e, "controller could not create a pod"),
        }
    }

    fn delete_pod(&self, pod: &Value) {
        let meta = &pod["metadata"];
        let deleted = self.store.delete(
            res("pods"),
            s(&meta["namespace"]),
            s(&meta["name"]),
            WriteOpts::default(),
        );
        if deleted.is_ok() {
            owner_event(&self.store, pod, false);
        }
    }

    fn write_status(&self, r: &'static ResourceDef, obj: &Value, status: Value) {
        let meta = &obj["metadata"];
        let uid = meta["uid"].clone();
        let result = self.store.update(
            r,
            s(&meta["namespace"]),
            s(&meta["name"]),
            WriteOpts::status(),
            |old| {
                if old["metadata"]["uid"] != uid {
                    return Err(super::error::ApiError::not_found(r, s(&meta["name"])));
                }
                let mut new = old.clone();
                new["status"] = status;
                Ok(new)
            },
        );
        if let Err(e) = result {
            tracing::debug!(error = %e, "status write skipped");
        }
    }

    /// The Deployment's ReplicaSets, one per pod template it has had (what `kubectl rollout
    /// history` and `undo` read): `<deployment>-<hash>`, controlled by the Deployment, its
    /// template the Deployment's with the `pod-template-hash` label, the revision annotations
    /// (a template used again gets the new number, its old one in `revision-history`), and
    /// the counts of the pods of that template. The pods themselves stay the Deployment's.
    fn sync_replicasets(&self, d: &Value, hash: &str, revision: u64, all_pods: &[Value]) {
        let meta = &d["metadata"];
        let (ns, name, uid) = (s(&meta["namespace"]), s(&meta["name"]), s(&meta["uid"]));
        let rs_res = res("replicasets");
        let rs_name = format!("{name}-{hash}");
        let desired = d["spec"]["replicas"].as_i64().unwrap_or(1);
        let pods_of = |h: &str| -> Vec<&Value> {
            owned_by(all_pods, uid)
                .into_iter()
                .filter(|p| s(&p["metadata"]["labels"]["pod-template-hash"]) == h)
                .collect()
        };
        // Annotations a ReplicaSet copies from its Deployment (all but these).
        const SKIP: &[&str] = &[
            "kubectl.kubernetes.io/last-applied-configuration",
            "deployment.kubernetes.io/revision",
            "deployment.kubernetes.io/revision-history",
            "deployment.kubernetes.io/desired-replicas",
            "deployment.kubernetes.io/max-replicas",
            "deprecated.deployment.rollback.to",
        ];
        let copied: serde_json::Map<String, Value> = meta["annotations"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| !SKIP.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        if self.store.get(rs_res, ns, &rs_name).is_none() {
            let mut template = d["spec"]["template"].clone();
            template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
            let mut selector = d["spec"]["selector"].clone();
            selector["matchLabels"]["pod-template-hash"] = json!(hash);
            let mut annotations = copied.clone();
            annotations.insert(
                "deployment.kubernetes.io/revision".into(),
                json!(revision.to_string()),
            );
            let rs = json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {
                    "name": rs_name, "namespace": ns,
                    "labels": template["metadata"]["labels"],
                    "annotations": annotations,
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                        "uid": uid, "controller": true, "blockOwnerDeletion": true}],
                },
                "spec": {"replicas": desired, "selector": selector, "template": template},
            });
            if let Err(e) = self.store.create(rs_res, rs, WriteOpts::default()) {
                tracing::debug!(error = %e, "replica set not created");
            }
        }
        let (all_rs, _) = self.store.list(rs_res, Some(ns));
        for rs in all_rs
            .iter()
            .filter(|r| r.pointer("/metadata/ownerReferences/0/uid") == Some(&json!(uid)))
        {
            let h = s(&rs["metadata"]["labels"]["pod-template-hash"]);
            let current = h == hash;
            let pods = pods_of(h);
            let ready = pods.iter().filter(|p| is_ready(p)).count() as i64;
            let mut want = rs.clone();
            want["spec"]["replicas"] = json!(if current { desired } else { pods.len() as i64 });
            let ann = &mut want["metadata"]["annotations"];
            if current {
                let rev = revision.to_string();
                let had = ann["deployment.kubernetes.io/revision"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if had != rev {
                    if !had.is_empty() {
                        let history =
                            match ann["deployment.kubernetes.io/revision-history"].as_str() {
                                Some(h) if !h.is_empty() => format!("{h},{had}"),
                                _ => had,
                            };
                        ann["deployment.kubernetes.io/revision-history"] = json!(history);
                    }
                    ann["deployment.kubernetes.io/revision"] = json!(rev);
                }
                for (k, v) in &copied {
                    ann[k] = v.clone();
                }
                ann["deployment.kubernetes.io/desired-replicas"] = json!(desired.to_string());
            }
            if want != *rs {
                let _ = self.store.update(
                    rs_res,
                    ns,
                    s(&rs["metadata"]["name"]),
                    WriteOpts::default(),
                    |_| Ok(want.clone()),
                );
            }
            let mut status =
                json!({"observedGeneration": rs["metadata"]["generation"], "replicas": pods.len()});
            put_nonzero(&mut status, "readyReplicas", ready);
            put_nonzero(&mut status, "availableReplicas", ready);
            put_nonzero(&mut status, "fullyLabeledReplicas", pods.len() as i64);
            let fresh = self.store.get(rs_res, ns, s(&rs["metadata"]["name"]));
            if let Some(fresh) = fresh.filter(|f| f["status"] != status) {
                self.write_status(rs_res, &fresh, status);
            }
        }
    }

    fn sync_deployment(&mut self, d: &Value, all_pods: &[Value]) {
        let meta = &d["metadata"];
        let (ns, name, uid) = (s(&meta["namespace"]), s(&meta["name"]), s(&meta["uid"]));
        let spec = &d["spec"];
        let desired = spec["replicas"].as_i64().unwrap_or(1);
        let generation = meta["generation"].as_i64().unwrap_or(1);
        let hash = template_hash(&spec["template"]);
        let rs_name = format!("{name}-{hash}");
        let before = self.scales.insert(uid.to_string(), desired);
        if before != Some(desired) && !(before.is_none() && desired == 0) {
            let dir = if desired > before.unwrap_or(0) {
                "up"
            } else {
                "down"
            };
            let tail = before.map(|f| format!(" from {f}")).unwrap_or_default();
            events::record(
                &self.store,
                Emit {
                    object: d,
                    kind: "Deployment",
                    api_version: "apps/v1",
                    field_path: None,
                    event_type: Kind::Normal,
                    reason: "ScalingReplicaSet",
                    message: format!("Scaled {dir} replica set {rs_name} to {desired}{tail}"),
                    component: "deployment-controller",
                    host: None,
                },
            );
        }

        // Revision bookkeeping: a new template hash is a new rollout.
        let annotated_rev: u64 = meta
            .pointer("/annotations/deployment.kubernetes.io~1revision")
            .and_then(Value::as_str)
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        let (prev_hash, prev_rev) = self
            .rollouts
            .deployments
            .get(uid)
            .cloned()
            .unwrap_or_else(|| (String::new(), annotated_rev));
        let new_rollout = prev_hash != hash;
        let revision = if new_rollout { prev_rev + 1 } else { prev_rev };
        self.rollouts
            .deployments
            .insert(uid.to_string(), (hash.clone(), revision));
        if annotated_rev != revision {
            let rev = revision.to_string();
            let _ = self
                .store
                .update(res("deployments"), ns, name, WriteOpts::default(), |old| {
                    let mut new = old.clone();
                    new["metadata"]["annotations"]["deployment.kubernetes.io/revision"] =
                        json!(rev);
                    Ok(new)
                });
        }

        self.sync_replicasets(d, &hash, revision, all_pods);

        let pods = owned_by(all_pods, uid);
        let (mut new_pods, mut old_pods): (Vec<&Value>, Vec<&Value>) = pods
            .into_iter()
            .partition(|p| p.pointer("/metadata/labels/pod-template-hash") == Some(&json!(hash)));
        let paused = spec["paused"] == true;
        let recreate = spec.pointer("/strategy/type") == Some(&json!("Recreate"));
        let ru = spec
            .pointer("/strategy/rollingUpdate")
            .cloned()
            .unwrap_or(json!({}));
        let max_surge = if recreate {
            0
        } else {
            int_or_percent(&ru["maxSurge"], desired, true)
        };
        let mut max_unavailable = if recreate {
            desired
        } else {
            int_or_percent(&ru["maxUnavailable"], desired, false)
        };
        if max_surge == 0 && max_unavailable == 0 {
            max_unavailable = 1;
        }

        if !paused {
            // Too many new pods (scale down): drop not-ready ones first, then the newest.
            if new_pods.len() as i64 > desired {
                new_pods.sort_by_key(|p| {
                    (
                        is_ready(p),
                        std::cmp::Reverse(s(&p["metadata"]["creationTimestamp"]).to_string()),
                    )
                });
                let extra = new_pods.len() - desired.max(0) as usize;
                for p in new_pods.drain(..extra) {
                    self.delete_pod(p);
                }
            }
            if recreate {
                if !old_pods.is_empty() {
                    for p in old_pods.drain(..) {
                        self.delete_pod(p);
                    }
                } else {
                    for _ in new_pods.len() as i64..desired {
                        self.create_pod(self.new_pod(
                            d,
                            "Deployment",
                            None,
                            Some(format!("{rs_name}-")),
                            json!({"pod-template-hash": hash}),
                        ));
                    }
                }
            } else {
                let total = (new_pods.len() + old_pods.len()) as i64;
                let can_create = (desired - new_pods.len() as i64).min(desired + max_surge - total);
                for _ in 0..can_create.max(0) {
                    self.create_pod(self.new_pod(
                        d,
                        "Deployment",
                        None,
                        Some(format!("{rs_name}-")),
                        json!({"pod-template-hash": hash}),
                    ));
                }
                let min_available = desired - max_unavailable;
                let new_not_ready = new_pods.iter().filter(|p| !is_ready(p)).count() as i64;
                let mut budget = total - min_available - new_not_ready;
                old_pods.sort_by_key(|p| is_ready(p));
                for p in old_pods.drain(..) {
                    if budget <= 0 {
                        break;
                    }
                    self.delete_pod(p);
                    budget -= 1;
                }
            }
        }

        // Status from the pods as they are now.
        let (all_now, _) = self.store.list(res("pods"), Some(ns));
        let pods_now = owned_by(&all_now, uid);
        let total = pods_now.len() as i64;
        let updated = pods_now
            .iter()
            .filter(|p| p.pointer("/metadata/labels/pod-template-hash") == Some(&json!(hash)))
            .count() as i64;
        let ready = pods_now.iter().filter(|p| is_ready(p)).count() as i64;
        let available = ready;
        let unavailable = (total.max(desired) - available).max(0);
        let now = now_rfc3339();

        let old_status = d.get("status").cloned().unwrap_or(json!({}));
        let complete = updated == desired && total == desired && available == desired;
        let old_avail = old_condition(d, "Available");
        let available_cond = if available >= desired - max_unavailable {
            condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
                old_avail,
                &now,
            )
        } else {
            condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
                old_avail,
                &now,
            )
        };
        let old_prog = old_condition(d, "Progressing");
        let progressed = [
            "replicas",
            "updatedReplicas",
            "readyReplicas",
            "availableReplicas",
        ]
        .iter()
        .zip([total, updated, ready, available])
        .any(|(k, n)| old_status[*k].as_i64().unwrap_or(0) != n);
        let progressing_cond = if paused {
            condition(
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused",
                old_prog,
                &now,
            )
        } else if complete {
            condition(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                &format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
                old_prog,
                &now,
            )
        } else if new_rollout && old_prog.is_none() {
            condition(
                "Progressing",
                "True",
                "NewReplicaSetCreated",
                &format!("Created new replica set \"{rs_name}\""),
                old_prog,
                &now,
            )
        } else if new_rollout || progressed || old_prog.is_none() {
            condition(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                &format!("ReplicaSet \"{rs_name}\" is progressing."),
                old_prog,
                &now,
            )
        } else {
            old_prog.cloned().unwrap_or_default()
        };

        let mut status = json!({"observedGeneration": generation});
        put_nonzero(&mut status, "replicas", total);
        put_nonzero(&mut status, "updatedReplicas", updated);
        put_nonzero(&mut status, "readyReplicas", ready);
        put_nonzero(&mut status, "availableReplicas", available);
        put_nonzero(&mut status, "unavailableReplicas", unavailable);
        status["conditions"] = json!([available_cond, progressing_cond]);
        if status != old_status {
            self.write_status(res("deployments"), d, status);
        }
    }

    fn sync_statefulset(&mut self, st: &Value, all_pods: &[Value]) {
        let meta = &st["metadata"];
        let (ns, name, uid) = (s(&meta["namespace"]), s(&meta["name"]), s(&meta["uid"]));
        let spec = &st["spec"];
        let desired = spec["replicas"].as_i64().unwrap_or(1).max(0);
        let generation = meta["generation"].as_i64().unwrap_or(1);
        let update_revision = format!("{name}-{}", template_hash(&spec["template"]));
        let parallel = spec["podManagementPolicy"] == "Parallel";
        let on_delete = spec.pointer("/updateStrategy/type") == Some(&json!("OnDelete"));
        let partition = spec
            .pointer("/updateStrategy/rollingUpdate/partition")
            .and_then(Value::as_i64)
            .unwrap_or(0);

        let pods = owned_by(all_pods, uid);
        let ordinal = |p: &Value| -> i64 {
            s(&p["metadata"]["name"])
                .rsplit('-')
                .next()
                .and_then(|o| o.parse().ok())
                .unwrap_or(-1)
        };
        let by_ordinal: BTreeMap<i64, &Value> = pods.iter().map(|p| (ordinal(p), *p)).collect();
        let revision_of =
            |p: &Value| s(&p["metadata"]["labels"]["controller-revision-hash"]).to_string();

        // Scale down from the highest ordinal.
        let mut acted = false;
        let extra: Vec<&&Value> = by_ordinal.range(desired..).map(|(_, p)| p).collect();
        for p in extra.into_iter().rev() {
            self.delete_pod(p);
            acted = true;
            if !parallel {
                break;
            }
        }
        // Create missing ordinals (OrderedReady: one at a time, predecessors Ready).
        if !acted {
            for i in 0..desired {
                match by_ordinal.get(&i) {
                    Some(p) if is_ready(p) => continue,
                    Some(_) if !parallel => break,
                    Some(_) => continue,
                    None => {
                        let pod_name = format!("{name}-{i}");
                        let mut pod = self.new_pod(
                            st,
                            "StatefulSet",
                            Some(pod_name.clone()),
                            None,
                            json!({
                                "controller-revision-hash": update_revision,
                                "statefulset.kubernetes.io/pod-name": pod_name,
                                "apps.kubernetes.io/pod-index": i.to_string(),
                            }),
                        );
                        pod["spec"]["hostname"] = json!(pod_name);
                        if let Some(svc) = spec["serviceName"].as_str().filter(|v| !v.is_empty()) {
                            pod["spec"]["subdomain"] = json!(svc);
                        }
                        self.create_pod(pod);
                        acted = true;
                        if !parallel {
                            break;
                        }
                    }
                }
            }
        }
        // Rolling update: replace the highest out-of-date ordinal at or above the partition,
        // once every pod is Ready.
        let all_ready = (0..desired).all(|i| by_ordinal.get(&i).is_some_and(|p| is_ready(p)));
        if !acted && !on_delete && all_ready {
            if let Some((_, p)) = by_ordinal
                .range(partition..desired)
                .rev()
                .find(|(_, p)| revision_of(p) != update_revision)
            {
                self.delete_pod(p);
            }
        }

        let (all_now, _) = self.store.list(res("pods"), Some(ns));
        let pods_now = owned_by(&all_now, uid);
        let replicas = pods_now.len() as i64;
        let ready = pods_now.iter().filter(|p| is_ready(p)).count() as i64;
        let updated = pods_now
            .iter()
            .filter(|p| revision_of(p) == update_revision)
            .count() as i64;
        let old_status = st.get("status").cloned().unwrap_or(json!({}));
        let mut current_revision = old_status["currentRevision"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if current_revision.is_empty()
            || (updated == desired && ready == desired && replicas == desired)
        {
            current_revision = update_revision.clone();
        }
        let current = pods_now
            .iter()
            .filter(|p| revision_of(p) == current_revision)
            .count() as i64;

        let mut status = json!({"observedGeneration": generation, "replicas": replicas, "availableReplicas": ready});
        put_nonzero(&mut status, "readyReplicas", ready);
        put_nonzero(&mut status, "currentReplicas", current);
        put_nonzero(&mut status, "updatedReplicas", updated);
        status["currentRevision"] = json!(current_revision);
        status["updateRevision"] = json!(update_revision);
        status["collisionCount"] = json!(0);
        if status != old_status {
            self.write_status(res("statefulsets"), st, status);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_safe() {
        let t = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web"}]}});
        let h = template_hash(&t);
        assert_eq!(h, template_hash(&t.clone()));
        assert!(h.bytes().all(|c| SAFE.contains(&c)));
        let mut t2 = t.clone();
        t2["metadata"]["annotations"] = json!({"kubectl.kubernetes.io/restartedAt": "now"});
        assert_ne!(h, template_hash(&t2));
    }

    #[test]
    fn percentages_round_like_the_controller() {
        assert_eq!(int_or_percent(&json!("25%"), 3, true), 1);
        assert_eq!(int_or_percent(&json!("25%"), 3, false), 0);
        assert_eq!(int_or_percent(&json!(2), 3, false), 2);
    }
}
