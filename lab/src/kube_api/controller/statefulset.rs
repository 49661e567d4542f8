//! The StatefulSet controller: pods named by ordinal (`<set>-0`, `<set>-1`, ...), created in
//! order with their predecessors Ready (or all at once under `Parallel`), removed from the
//! highest ordinal down, replaced one at a time from the highest ordinal at or above the
//! partition when the template changes (unless `OnDelete`), and the status with the current
//! and update revisions.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::deployment::template_hash;
use super::{is_ready, owned_by, put_nonzero, res, s, Controller};

/// A pod's ordinal: the number its name ends with (-1 when there is none).
fn ordinal(p: &Value) -> i64 {
    s(&p["metadata"]["name"])
        .rsplit('-')
        .next()
        .and_then(|o| o.parse().ok())
        .unwrap_or(-1)
}

/// The revision of the template a pod was made from.
fn revision_of(p: &Value) -> &str {
    s(&p["metadata"]["labels"]["controller-revision-hash"])
}

impl Controller {
    pub(super) fn sync_statefulset(&self, st: &Value, all_pods: &[Value]) {
        let meta = &st["metadata"];
        let spec = &st["spec"];
        let desired = spec["replicas"].as_i64().unwrap_or(1).max(0);
        let update_revision = format!("{}-{}", s(&meta["name"]), template_hash(&spec["template"]));
        let parallel = spec["podManagementPolicy"] == "Parallel";
        let on_delete = spec.pointer("/updateStrategy/type") == Some(&json!("OnDelete"));
        let partition = spec
            .pointer("/updateStrategy/rollingUpdate/partition")
            .and_then(Value::as_i64)
            .unwrap_or(0);

        let pods = owned_by(all_pods, s(&meta["uid"]));
        let by_ordinal: BTreeMap<i64, &Value> = pods.iter().map(|p| (ordinal(p), *p)).collect();
        let acted = self.scale_down(&by_ordinal, desired, parallel)
            || self.create_missing(st, &by_ordinal, desired, &update_revision, parallel);
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
        let status = self.statefulset_status(st, desired, &update_revision);
        if status != st.get("status").cloned().unwrap_or(json!({})) {
            self.write_status(res("statefulsets"), st, status);
        }
    }

    /// Scales down from the highest ordinal (one pod at a time unless `parallel`); whether a
    /// pod was deleted.
    fn scale_down(&self, by_ordinal: &BTreeMap<i64, &Value>, desired: i64, parallel: bool) -> bool {
        let mut acted = false;
        let extra: Vec<&&Value> = by_ordinal.range(desired..).map(|(_, p)| p).collect();
        for p in extra.into_iter().rev() {
            self.delete_pod(p);
            acted = true;
            if !parallel {
                break;
            }
        }
        acted
    }

    /// Creates missing ordinals (OrderedReady: one at a time, predecessors Ready); whether a
    /// pod was created.
    fn create_missing(
        &self,
        st: &Value,
        by_ordinal: &BTreeMap<i64, &Value>,
        desired: i64,
        update_revision: &str,
        parallel: bool,
    ) -> bool {
        let mut acted = false;
        for i in 0..desired {
            match by_ordinal.get(&i) {
                Some(p) if is_ready(p) => continue,
                Some(_) if !parallel => break,
                Some(_) => continue,
                None => {
                    self.create_pod(self.ordinal_pod(st, i, update_revision));
                    acted = true;
                    if !parallel {
                        break;
                    }
                }
            }
        }
        acted
    }

    /// The pod of ordinal `i`, with its stable host name (and subdomain under the governing
    /// Service).
    fn ordinal_pod(&self, st: &Value, i: i64, update_revision: &str) -> Value {
        let pod_name = format!("{}-{i}", s(&st["metadata"]["name"]));
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
        if let Some(svc) = st["spec"]["serviceName"].as_str().filter(|v| !v.is_empty()) {
            pod["spec"]["subdomain"] = json!(svc);
        }
        pod
    }

    /// The status from the StatefulSet's pods as they are now.
    fn statefulset_status(&self, st: &Value, desired: i64, update_revision: &str) -> Value {
        let meta = &st["metadata"];
        let (all_now, _) = self.store.list(res("pods"), Some(s(&meta["namespace"])));
        let pods_now = owned_by(&all_now, s(&meta["uid"]));
        let replicas = pods_now.len() as i64;
        let ready = pods_now.iter().filter(|p| is_ready(p)).count() as i64;
        let updated = pods_now
            .iter()
            .filter(|p| revision_of(p) == update_revision)
            .count() as i64;
        let mut current_revision = st["status"]["currentRevision"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if current_revision.is_empty()
            || (updated == desired && ready == desired && replicas == desired)
        {
            current_revision = update_revision.to_string();
        }
        let current = pods_now
            .iter()
            .filter(|p| revision_of(p) == current_revision)
            .count() as i64;
        let generation = meta["generation"].as_i64().unwrap_or(1);
        let mut status = json!({"observedGeneration": generation, "replicas": replicas, "availableReplicas": ready});
        put_nonzero(&mut status, "readyReplicas", ready);
        put_nonzero(&mut status, "currentReplicas", current);
        put_nonzero(&mut status, "updatedReplicas", updated);
        status["currentRevision"] = json!(current_revision);
        status["updateRevision"] = json!(update_revision);
        status["collisionCount"] = json!(0);
        status
    }
}
