//! The Deployment controller: the revision bookkeeping of a rollout (a new template hash is a
//! new rollout), the ScalingReplicaSet events, the pods replaced by the strategy (Recreate, or
//! RollingUpdate within maxSurge and maxUnavailable), and the status with its `Available` and
//! `Progressing` conditions.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::super::events::{self, Emit, EventType as Kind};
use super::super::store::{now_rfc3339, WriteOpts};
use super::{is_ready, owned_by, put_nonzero, res, s, Controller};

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

/// In-memory rollout bookkeeping per Deployment uid: the current template hash and revision.
#[derive(Default)]
pub(super) struct Rollouts {
    deployments: HashMap<String, (String, u64)>,
}

/// How a Deployment replaces its pods (`spec.paused`, `spec.strategy`).
struct Strategy {
    paused: bool,
    recreate: bool,
    max_surge: i64,
    max_unavailable: i64,
}

impl Strategy {
    fn of(spec: &Value, desired: i64) -> Self {
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
        Strategy {
            paused: spec["paused"] == true,
            recreate,
            max_surge,
            max_unavailable,
        }
    }
}

/// The rollout a sync works toward: the current template's hash and ReplicaSet name, the
/// desired replicas, and whether the template is new since the last sync.
struct Rollout {
    hash: String,
    rs_name: String,
    desired: i64,
    new_rollout: bool,
}

/// The pod counts a Deployment's status reports.
struct Counts {
    total: i64,
    updated: i64,
    ready: i64,
    available: i64,
}

impl Controller {
    pub(super) fn sync_deployment(&mut self, d: &Value, all_pods: &[Value]) {
        let spec = &d["spec"];
        let desired = spec["replicas"].as_i64().unwrap_or(1);
        let hash = template_hash(&spec["template"]);
        let rs_name = format!("{}-{hash}", s(&d["metadata"]["name"]));
        self.scale_event(d, desired, &rs_name);
        let (revision, new_rollout) = self.next_revision(d, &hash);
        self.sync_replicasets(d, &hash, revision, all_pods);
        let rollout = Rollout {
            hash,
            rs_name,
            desired,
            new_rollout,
        };
        let strategy = Strategy::of(spec, desired);
        if !strategy.paused {
            let pods = owned_by(all_pods, s(&d["metadata"]["uid"]));
            self.replace_pods(d, &rollout, &strategy, pods);
        }
        let status = self.deployment_status(d, &rollout, &strategy);
        if status != d.get("status").cloned().unwrap_or(json!({})) {
            self.write_status(res("deployments"), d, status);
        }
    }

    /// The ScalingReplicaSet event when the desired replicas changed since the last sync.
    fn scale_event(&mut self, d: &Value, desired: i64, rs_name: &str) {
        let uid = s(&d["metadata"]["uid"]);
        let before = self.scales.insert(uid.to_string(), desired);
        if before == Some(desired) || (before.is_none() && desired == 0) {
            return;
        }
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

    /// Revision bookkeeping: a new template hash is a new rollout with the next revision,
    /// written to the Deployment's `deployment.kubernetes.io/revision` annotation. Returns the
    /// revision and whether the rollout is new.
    fn next_revision(&mut self, d: &Value, hash: &str) -> (u64, bool) {
        let meta = &d["metadata"];
        let (ns, name, uid) = (s(&meta["namespace"]), s(&meta["name"]), s(&meta["uid"]));
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
            .insert(uid.to_string(), (hash.to_string(), revision));
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
        (revision, new_rollout)
    }

    /// Creates and deletes the Deployment's pods toward `desired` pods of the new template, as
    /// the strategy allows.
    fn replace_pods(&self, d: &Value, r: &Rollout, strategy: &Strategy, pods: Vec<&Value>) {
        let (mut new_pods, mut old_pods): (Vec<&Value>, Vec<&Value>) = pods
            .into_iter()
            .partition(|p| p.pointer("/metadata/labels/pod-template-hash") == Some(&json!(r.hash)));
        let desired = r.desired;
        let create = || {
            self.create_pod(self.new_pod(
                d,
                "Deployment",
                None,
                Some(format!("{}-", r.rs_name)),
                json!({"pod-template-hash": r.hash}),
            ))
        };
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
        if strategy.recreate {
            if !old_pods.is_empty() {
                for p in old_pods.drain(..) {
                    self.delete_pod(p);
                }
            } else {
                for _ in new_pods.len() as i64..desired {
                    create();
                }
            }
            return;
        }
        let total = (new_pods.len() + old_pods.len()) as i64;
        let can_create =
            (desired - new_pods.len() as i64).min(desired + strategy.max_surge - total);
        for _ in 0..can_create.max(0) {
            create();
        }
        let min_available = desired - strategy.max_unavailable;
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

    /// The status from the Deployment's pods as they are now.
    fn deployment_status(&self, d: &Value, r: &Rollout, strategy: &Strategy) -> Value {
        let meta = &d["metadata"];
        let (all_now, _) = self.store.list(res("pods"), Some(s(&meta["namespace"])));
        let pods_now = owned_by(&all_now, s(&meta["uid"]));
        let ready = pods_now.iter().filter(|p| is_ready(p)).count() as i64;
        let n = Counts {
            total: pods_now.len() as i64,
            updated: pods_now
                .iter()
                .filter(|p| p.pointer("/metadata/labels/pod-template-hash") == Some(&json!(r.hash)))
                .count() as i64,
            ready,
            available: ready,
        };
        let unavailable = (n.total.max(r.desired) - n.available).max(0);
        let now = now_rfc3339();
        let old_avail = old_condition(d, "Available");
        let available_cond = if n.available >= r.desired - strategy.max_unavailable {
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
        let progressing_cond = progressing(d, r, &n, strategy.paused, &now);
        let generation = meta["generation"].as_i64().unwrap_or(1);
        let mut status = json!({"observedGeneration": generation});
        put_nonzero(&mut status, "replicas", n.total);
        put_nonzero(&mut status, "updatedReplicas", n.updated);
        put_nonzero(&mut status, "readyReplicas", n.ready);
        put_nonzero(&mut status, "availableReplicas", n.available);
        put_nonzero(&mut status, "unavailableReplicas", unavailable);
        status["conditions"] = json!([available_cond, progressing_cond]);
        status
    }
}

/// The `Progressing` condition: paused, complete, a new rollout, progress since the last
/// status, or unchanged.
fn progressing(d: &Value, r: &Rollout, n: &Counts, paused: bool, now: &str) -> Value {
    let old_status = d.get("status").cloned().unwrap_or(json!({}));
    let old_prog = old_condition(d, "Progressing");
    let desired = r.desired;
    let complete = n.updated == desired && n.total == desired && n.available == desired;
    let progressed = [
        "replicas",
        "updatedReplicas",
        "readyReplicas",
        "availableReplicas",
    ]
    .iter()
    .zip([n.total, n.updated, n.ready, n.available])
    .any(|(k, v)| old_status[*k].as_i64().unwrap_or(0) != v);
    let rs_name = &r.rs_name;
    let cond = |status: &str, reason: &str, message: &str| {
        condition("Progressing", status, reason, message, old_prog, now)
    };
    if paused {
        cond("Unknown", "DeploymentPaused", "Deployment is paused")
    } else if complete {
        cond(
            "True",
            "NewReplicaSetAvailable",
            &format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
        )
    } else if r.new_rollout && old_prog.is_none() {
        cond(
            "True",
            "NewReplicaSetCreated",
            &format!("Created new replica set \"{rs_name}\""),
        )
    } else if r.new_rollout || progressed || old_prog.is_none() {
        cond(
            "True",
            "ReplicaSetUpdated",
            &format!("ReplicaSet \"{rs_name}\" is progressing."),
        )
    } else {
        old_prog.cloned().unwrap_or_default()
    }
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
