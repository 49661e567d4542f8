//! The objects the controllers own: pods made from a template, created and deleted with the
//! owner's events (`SuccessfulCreate`, `SuccessfulDelete`), and the garbage collector that
//! deletes pods and ReplicaSets whose Deployment or StatefulSet is gone.

use std::collections::HashSet;

use serde_json::{json, Value};

use super::super::events::{self, Emit, EventType as Kind};
use super::super::store::{Store, WriteOpts};
use super::{res, s, Controller};

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
    let (object, kind, api_version, message, component) = if s(&owner["kind"]) == "Deployment" {
        let rs = s(&pod["metadata"]["generateName"]).trim_end_matches('-');
        (
            json!({"metadata": {"name": rs, "namespace": ns}}),
            "ReplicaSet",
            "apps/v1",
            format!("{verb} pod: {name}"),
            "replicaset-controller",
        )
    } else {
        let (kind, owner_name) = (s(&owner["kind"]), s(&owner["name"]));
        let action = if created { "create" } else { "delete" };
        (
            json!({"metadata": {"name": owner["name"], "namespace": ns, "uid": owner["uid"]}}),
            kind,
            s(&owner["apiVersion"]),
            format!("{action} Pod {name} in {kind} {owner_name} successful"),
            "statefulset-controller",
        )
    };
    let emit = Emit {
        object: &object,
        kind,
        api_version,
        field_path: None,
        event_type: Kind::Normal,
        reason,
        message,
        component,
        host: None,
    };
    events::record(store, emit);
}

impl Controller {
    /// Deletes pods whose controlling Deployment or StatefulSet no longer exists.
    pub(super) fn collect_garbage(&self, pods: &[Value]) {
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

    pub(super) fn new_pod(
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

    pub(super) fn create_pod(&self, pod: Value) {
        match self.store.create(res("pods"), pod, WriteOpts::default()) {
            Ok(created) => owner_event(&self.store, &created, true),
            Err(e) => tracing::warn!(error = %e, "controller could not create a pod"),
        }
    }

    pub(super) fn delete_pod(&self, pod: &Value) {
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
}
