//! Events, as the double's controllers and "kubelet" emit them (client-go `tools/record`):
//! one core/v1 Event per (object, reason, message), named `<object>.<hex unix nanos>`, its
//! `count` and `lastTimestamp` bumped on a repeat; the same event in the events.k8s.io/v1
//! form (`regarding`, `note`, `deprecatedCount`, ...) alongside, so `kubectl get events`
//! (core) and `kubectl get events.events.k8s.io` both list it. The two are written together
//! by the recorder; a client's own write to one is not mirrored in the other.

use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};

use super::resources::lookup;
use super::store::{Store, WriteOpts};

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// What happened to which object, said by whom.
pub struct Emit<'a> {
    /// The object (`kind`, `apiVersion` and metadata are read from it).
    pub object: &'a Value,
    pub kind: &'a str,
    pub api_version: &'a str,
    /// `spec.containers{web}` for a container's events.
    pub field_path: Option<String>,
    pub event_type: EventType,
    pub reason: &'a str,
    pub message: String,
    /// `deployment-controller`, `kubelet`, ...
    pub component: &'a str,
    /// The node (`lab-primary`) for the kubelet's events.
    pub host: Option<String>,
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// Records `e` in `store` (both API groups).
pub fn record(store: &Store, e: Emit<'_>) {
    let core = lookup("events").expect("events are served");
    let new_api = lookup("events.events.k8s.io").expect("events.k8s.io is served");
    let meta = &e.object["metadata"];
    let ns = s(&meta["namespace"]).to_string();
    let ns = if ns.is_empty() { "default".into() } else { ns };
    let now = Utc::now();
    let ts = now.to_rfc3339_opts(SecondsFormat::Secs, true);
    let micro = now.to_rfc3339_opts(SecondsFormat::Micros, true);
    let mut involved = json!({
        "apiVersion": e.api_version, "kind": e.kind, "namespace": ns,
        "name": meta["name"], "uid": meta["uid"], "resourceVersion": meta["resourceVersion"],
    });
    if let Some(fp) = &e.field_path {
        involved["fieldPath"] = json!(fp);
    }
    let mut source = json!({"component": e.component});
    if let Some(h) = &e.host {
        source["host"] = json!(h);
    }
    // A repeat of the same event: count + 1, lastTimestamp now.
    let (existing, _) = store.list(core, Some(&ns));
    let same = existing.iter().find(|ev| {
        ev["involvedObject"]["uid"] == meta["uid"]
            && ev["reason"] == e.reason
            && ev["message"] == e.message.as_str()
            && ev["involvedObject"].get("fieldPath") == involved.get("fieldPath")
    });
    if let Some(old) = same {
        let name = s(&old["metadata"]["name"]).to_string();
        let count = old["count"].as_i64().unwrap_or(1) + 1;
        let _ = store.update(core, &ns, &name, WriteOpts::default(), |o| {
            let mut n = o.clone();
            n["count"] = json!(count);
            n["lastTimestamp"] = json!(ts);
            Ok(n)
        });
        let _ = store.update(new_api, &ns, &name, WriteOpts::default(), |o| {
            let mut n = o.clone();
            n["deprecatedCount"] = json!(count);
            n["deprecatedLastTimestamp"] = json!(ts);
            Ok(n)
        });
        return;
    }
    let name = format!(
        "{}.{:x}",
        s(&meta["name"]),
        now.timestamp_nanos_opt().unwrap_or_default()
    );
    let instance = e.host.clone().unwrap_or_else(|| e.component.to_string());
    let legacy = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": involved,
        "reason": e.reason, "message": e.message, "type": e.event_type.as_str(),
        "source": source, "firstTimestamp": ts, "lastTimestamp": ts, "count": 1,
        "eventTime": null, "reportingComponent": e.component, "reportingInstance": instance,
    });
    let modern = json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": name, "namespace": ns},
        "regarding": involved, "reason": e.reason, "note": e.message,
        "type": e.event_type.as_str(), "eventTime": micro, "action": e.reason,
        "reportingController": e.component, "reportingInstance": instance,
        "deprecatedSource": source, "deprecatedFirstTimestamp": ts,
        "deprecatedLastTimestamp": ts, "deprecatedCount": 1,
    });
    if let Err(err) = store.create(core, legacy, WriteOpts::default()) {
        tracing::debug!(error = %err, "event not recorded");
    }
    let _ = store.create(new_api, modern, WriteOpts::default());
}

/// A container event of `pod` from the kubelet.
pub fn pod_event(store: &Store, pod: &Value, event_type: EventType, reason: &str, message: String) {
    let container = pod
        .pointer("/spec/containers/0/name")
        .and_then(Value::as_str)
        .unwrap_or("main");
    record(
        store,
        Emit {
            object: pod,
            kind: "Pod",
            api_version: "v1",
            field_path: Some(format!("spec.containers{{{container}}}")),
            event_type,
            reason,
            message,
            component: "kubelet",
            host: pod
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .map(String::from),
        },
    );
}
