//! The Deployment's ReplicaSets, one per pod template it has had (what `kubectl rollout
//! history` and `undo` read): `<deployment>-<hash>`, controlled by the Deployment, its template
//! the Deployment's with the `pod-template-hash` label, the revision annotations (a template
//! used again gets the new number, its old one in `revision-history`), and the counts of the
//! pods of that template. The pods themselves stay the Deployment's.

use serde_json::{json, Map, Value};

use super::super::store::WriteOpts;
use super::{is_ready, owned_by, put_nonzero, res, s, Controller};

/// Annotations a ReplicaSet copies from its Deployment (all but these).
const SKIP: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

/// The Deployment's annotations a ReplicaSet carries too.
fn copied_annotations(d: &Value) -> Map<String, Value> {
    d["metadata"]["annotations"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !SKIP.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Sets the current ReplicaSet's revision (the one it had goes to `revision-history`), the
/// copied annotations and `desired-replicas`.
fn revise(ann: &mut Value, revision: u64, copied: &Map<String, Value>, desired: i64) {
    let rev = revision.to_string();
    let had = ann["deployment.kubernetes.io/revision"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if had != rev {
        if !had.is_empty() {
            let history = match ann["deployment.kubernetes.io/revision-history"].as_str() {
                Some(h) if !h.is_empty() => format!("{h},{had}"),
                _ => had,
            };
            ann["deployment.kubernetes.io/revision-history"] = json!(history);
        }
        ann["deployment.kubernetes.io/revision"] = json!(rev);
    }
    for (k, v) in copied {
        ann[k] = v.clone();
    }
    ann["deployment.kubernetes.io/desired-replicas"] = json!(desired.to_string());
}

impl Controller {
    /// Creates the ReplicaSet of the current template if it is missing, and brings every
    /// ReplicaSet of the Deployment (spec, annotations, status) up to date.
    pub(super) fn sync_replicasets(&self, d: &Value, hash: &str, revision: u64, pods: &[Value]) {
        let meta = &d["metadata"];
        let (ns, uid) = (s(&meta["namespace"]), s(&meta["uid"]));
        let copied = copied_annotations(d);
        let rs_name = format!("{}-{hash}", s(&meta["name"]));
        if self.store.get(res("replicasets"), ns, &rs_name).is_none() {
            self.create_replicaset(d, hash, revision, &copied);
        }
        let (all_rs, _) = self.store.list(res("replicasets"), Some(ns));
        for rs in all_rs
            .iter()
            .filter(|r| r.pointer("/metadata/ownerReferences/0/uid") == Some(&json!(uid)))
        {
            let h = s(&rs["metadata"]["labels"]["pod-template-hash"]);
            let of_template: Vec<&Value> = owned_by(pods, uid)
                .into_iter()
                .filter(|p| s(&p["metadata"]["labels"]["pod-template-hash"]) == h)
                .collect();
            let current = (h == hash).then_some((revision, &copied));
            self.update_replicaset(d, rs, &of_template, current);
        }
    }

    fn create_replicaset(&self, d: &Value, hash: &str, revision: u64, copied: &Map<String, Value>) {
        let meta = &d["metadata"];
        let (ns, name, uid) = (s(&meta["namespace"]), s(&meta["name"]), s(&meta["uid"]));
        let desired = d["spec"]["replicas"].as_i64().unwrap_or(1);
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
                "name": format!("{name}-{hash}"), "namespace": ns,
                "labels": template["metadata"]["labels"],
                "annotations": annotations,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                    "uid": uid, "controller": true, "blockOwnerDeletion": true}],
            },
            "spec": {"replicas": desired, "selector": selector, "template": template},
        });
        if let Err(e) = self
            .store
            .create(res("replicasets"), rs, WriteOpts::default())
        {
            tracing::debug!(error = %e, "replica set not created");
        }
    }

    /// One ReplicaSet of `d`: its replicas (the Deployment's for the current template, else the
    /// pods it still has), the current one's annotations (`current`: the revision and the
    /// copied annotations), and its status from `pods`, the pods of its template.
    fn update_replicaset(
        &self,
        d: &Value,
        rs: &Value,
        pods: &[&Value],
        current: Option<(u64, &Map<String, Value>)>,
    ) {
        let rs_res = res("replicasets");
        let (ns, name) = (s(&rs["metadata"]["namespace"]), s(&rs["metadata"]["name"]));
        let desired = d["spec"]["replicas"].as_i64().unwrap_or(1);
        let ready = pods.iter().filter(|p| is_ready(p)).count() as i64;
        let mut want = rs.clone();
        want["spec"]["replicas"] = json!(if current.is_some() {
            desired
        } else {
            pods.len() as i64
        });
        if let Some((revision, copied)) = current {
            revise(
                &mut want["metadata"]["annotations"],
                revision,
                copied,
                desired,
            );
        }
        if want != *rs {
            let _ = self
                .store
                .update(rs_res, ns, name, WriteOpts::default(), |_| Ok(want.clone()));
        }
        let mut status =
            json!({"observedGeneration": rs["metadata"]["generation"], "replicas": pods.len()});
        put_nonzero(&mut status, "readyReplicas", ready);
        put_nonzero(&mut status, "availableReplicas", ready);
        put_nonzero(&mut status, "fullyLabeledReplicas", pods.len() as i64);
        let fresh = self.store.get(rs_res, ns, name);
        if let Some(fresh) = fresh.filter(|f| f["status"] != status) {
            self.write_status(rs_res, &fresh, status);
        }
    }
}
