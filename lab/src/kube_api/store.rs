//! The object store of one double: JSON objects keyed by resource, namespace and name, one
//! monotonic resourceVersion counter for the whole server, and a bounded event log that watches
//! replay from. Every write (from HTTP, from the controller, from a test) goes through `commit`,
//! which stamps metadata, defaults, validates, bumps generation and emits the watch event, so all
//! writers see the same semantics as on a real API server.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::Utc;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::error::{ApiError, ApiResult};
use super::resources::{self, ResourceDef, Subresource};
use super::validate;

/// How many events the log keeps for watches to replay; older resourceVersions get 410 Expired.
const LOG_CAPACITY: usize = 10_000;
const CHANNEL_CAPACITY: usize = 16_384;

/// The type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// The object was created.
    Added,
    /// The object changed.
    Modified,
    /// The object was deleted (the event carries its last state).
    Deleted,
}

impl EventType {
    /// The wire name (`ADDED`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change to one object.
#[derive(Debug, Clone)]
pub struct Event {
    /// The resourceVersion of the change.
    pub rv: u64,
    /// What happened.
    pub kind: EventType,
    /// The resource of the object.
    pub resource: &'static ResourceDef,
    /// The object (after the change; last state for deletions).
    pub object: Value,
}

impl Event {
    /// The object's namespace ("" for cluster-scoped objects).
    pub fn namespace(&self) -> &str {
        self.object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        self.object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

/// Options of a write.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOpts {
    /// `dryRun=All`: validate and return the result, store nothing, emit nothing.
    pub dry_run: bool,
    /// The subresource written through: `Status` writes only `.status`; otherwise a write to a
    /// resource with a status subresource keeps the stored `.status`.
    pub subresource: Option<Subresource>,
}

impl WriteOpts {
    /// A write to `/status`.
    pub fn status() -> Self {
        WriteOpts {
            dry_run: false,
            subresource: Some(Subresource::Status),
        }
    }
}

type Key = (&'static str, &'static str, String, String);

/// Where a watch starts: the events to replay, the receiver of what follows, and the store's
/// resourceVersion at that instant.
pub type WatchStart = (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>, u64);

struct Inner {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    log: VecDeque<Arc<Event>>,
    /// Every event with an rv above this is in `log`.
    log_floor: u64,
}

/// The object store of one Kubernetes API double.
pub struct Store {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Event>>,
}

/// RFC 3339 to the second, as Kubernetes timestamps are.
pub fn now_rfc3339() -> String {
    Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A random lower-case suffix in the alphabet Kubernetes uses for generated names.
pub fn random_suffix(len: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    (0..len)
        .map(|i| ALPHABET[bytes[i % 16] as usize % ALPHABET.len()] as char)
        .collect()
}

fn key(res: &'static ResourceDef, ns: &str, name: &str) -> Key {
    let ns = if res.namespaced { ns } else { "" };
    (res.group, res.plural, ns.to_string(), name.to_string())
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn without_rv(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    o
}

impl Store {
    /// A store holding what a fresh cluster holds: namespaces `default`, `kube-system`,
    /// `kube-public`, `kube-node-lease`, each with its `default` ServiceAccount.
    pub fn new() -> Arc<Self> {
        let (tx, _) = broadcast::channel(CHANNEL_CAPACITY);
        let store = Arc::new(Store {
            inner: Mutex::new(Inner {
                rv: 0,
                objects: BTreeMap::new(),
                log: VecDeque::new(),
                log_floor: 0,
            }),
            tx,
        });
        let ns = resources::lookup("namespaces").expect("namespaces are served");
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            store
                .create(
                    ns,
                    json!({"metadata": {"name": name}}),
                    WriteOpts::default(),
                )
                .expect("seeding a fresh store cannot fail");
        }
        store
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (writes are single inserts).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current resourceVersion of the whole store.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Subscribes to every future event.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// One object.
    pub fn get(&self, res: &'static ResourceDef, ns: &str, name: &str) -> Option<Value> {
        self.lock().objects.get(&key(res, ns, name)).cloned()
    }

    /// All objects of `res` (in `ns` when given and the resource is namespaced), sorted by
    /// namespace and name, and the store's resourceVersion at that instant.
    pub fn list(&self, res: &'static ResourceDef, ns: Option<&str>) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let items = inner
            .objects
            .iter()
            .filter(|((g, p, o_ns, _), _)| {
                *g == res.group
                    && *p == res.plural
                    && (ns.is_none() || !res.namespaced || ns == Some(o_ns.as_str()))
            })
            .map(|(_, v)| v.clone())
            .collect();
        (items, inner.rv)
    }

    /// Events after `since` for `res`, plus a receiver for what follows and the store's
    /// resourceVersion at that instant, taken atomically.
    /// `since = None` replays the current objects as ADDED. A `since` older than the event log
    /// is 410 Expired.
    pub fn watch_from(
        &self,
        res: &'static ResourceDef,
        since: Option<u64>,
    ) -> ApiResult<WatchStart> {
        let inner = self.lock();
        let rx = self.tx.subscribe();
        let replay = match since {
            None => inner
                .objects
                .iter()
                .filter(|((g, p, _, _), _)| *g == res.group && *p == res.plural)
                .map(|(_, v)| {
                    Arc::new(Event {
                        rv: meta_str(v, "resourceVersion").parse().unwrap_or(0),
                        kind: EventType::Added,
                        resource: res,
                        object: v.clone(),
                    })
                })
                .collect(),
            Some(n) if n < inner.log_floor => {
                return Err(ApiError::expired(n, inner.log_floor + 1));
            }
            Some(n) => inner
                .log
                .iter()
                .filter(|e| e.rv > n && std::ptr::eq(e.resource, res))
                .cloned()
                .collect(),
        };
        Ok((replay, rx, inner.rv))
    }

    /// Forgets the event log, so watches from any resourceVersion before now get 410 Expired
    /// (as after an etcd compaction).
    pub fn compact(&self) {
        let mut inner = self.lock();
        inner.log.clear();
        inner.log_floor = inner.rv;
    }

    fn emit(&self, inner: &mut Inner, kind: EventType, res: &'static ResourceDef, object: Value) {
        let ev = Arc::new(Event {
            rv: inner.rv,
            kind,
            resource: res,
            object,
        });
        if inner.log.len() >= LOG_CAPACITY {
            if let Some(old) = inner.log.pop_front() {
                inner.log_floor = old.rv;
            }
        }
        inner.log.push_back(ev.clone());
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(ev);
    }

    /// Creates `obj` (namespace and name from its metadata; `generateName` honoured).
    pub fn create(
        &self,
        res: &'static ResourceDef,
        mut obj: Value,
        opts: WriteOpts,
    ) -> ApiResult<Value> {
        if meta_str(&obj, "name").is_empty() {
            let prefix = meta_str(&obj, "generateName").to_string();
            if !prefix.is_empty() {
                obj["metadata"]["name"] = json!(format!("{prefix}{}", random_suffix(5)));
            }
        }
        let ns = meta_str(&obj, "namespace").to_string();
        let name = meta_str(&obj, "name").to_string();
        let mut inner = self.lock();
        if inner.objects.contains_key(&key(res, &ns, &name)) {
            return Err(ApiError::already_exists(res, &name));
        }
        self.commit(&mut inner, res, None, obj, opts)
    }

    /// Read-modify-write of an existing object: 404 when it does not exist.
    pub fn update(
        &self,
        res: &'static ResourceDef,
        ns: &str,
        name: &str,
        opts: WriteOpts,
        f: impl FnOnce(&Value) -> ApiResult<Value>,
    ) -> ApiResult<Value> {
        let mut inner = self.lock();
        let old = inner
            .objects
            .get(&key(res, ns, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(res, name))?;
        let new = f(&old)?;
        self.commit(&mut inner, res, Some(&old), new, opts)
    }

    /// Read-modify-write that may create: `f` gets the current object if any. Returns the
    /// result and whether it was created.
    pub fn upsert(
        &self,
        res: &'static ResourceDef,
        ns: &str,
        name: &str,
        opts: WriteOpts,
        f: impl FnOnce(Option<&Value>) -> ApiResult<Value>,
    ) -> ApiResult<(Value, bool)> {
        let mut inner = self.lock();
        let old = inner.objects.get(&key(res, ns, name)).cloned();
        let mut new = f(old.as_ref())?;
        if old.is_none() {
            new["metadata"]["namespace"] = json!(ns);
            new["metadata"]["name"] = json!(name);
        }
        let created = old.is_none();
        self.commit(&mut inner, res, old.as_ref(), new, opts)
            .map(|v| (v, created))
    }

    fn commit(
        &self,
        inner: &mut Inner,
        res: &'static ResourceDef,
        old: Option<&Value>,
        mut new: Value,
        opts: WriteOpts,
    ) -> ApiResult<Value> {
        if !new.is_object() {
            return Err(ApiError::bad_request("the object is not a JSON object"));
        }
        new["apiVersion"] = json!(res.api_version());
        new["kind"] = json!(res.kind);
        if !new["metadata"].is_object() {
            new["metadata"] = json!({});
        }
        let meta = new["metadata"]
            .as_object_mut()
            .expect("just made an object");
        if !res.namespaced {
            meta.remove("namespace");
        }
        let ns = meta
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let status_sub = res.has(Subresource::Status);

        match old {
            Some(old) => {
                let sent_rv = meta_str(&new, "resourceVersion");
                if !sent_rv.is_empty() && sent_rv != meta_str(old, "resourceVersion") {
                    return Err(ApiError::conflict(res, &name));
                }
                if opts.subresource == Some(Subresource::Status) {
                    let status = new.get("status").cloned();
                    new = old.clone();
                    match status {
                        Some(s) => new["status"] = s,
                        None => {
                            new.as_object_mut().expect("object").remove("status");
                        }
                    }
                } else if status_sub {
                    match old.get("status") {
                        Some(s) => new["status"] = s.clone(),
                        None => {
                            new.as_object_mut().expect("object").remove("status");
                        }
                    }
                }
                for field in [
                    "uid",
                    "creationTimestamp",
                    "generation",
                    "resourceVersion",
                    "deletionTimestamp",
                ] {
                    match old["metadata"].get(field) {
                        Some(v) => new["metadata"][field] = v.clone(),
                        None => {
                            new["metadata"]
                                .as_object_mut()
                                .expect("object")
                                .remove(field);
                        }
                    }
                }
            }
            None => {
                if res.namespaced {
                    if ns.is_empty() {
                        return Err(ApiError::bad_request(
                            "the namespace of the object is required",
                        ));
                    }
                    let ns_res = resources::lookup("namespaces").expect("namespaces are served");
                    if !inner.objects.contains_key(&key(ns_res, "", &ns)) {
                        return Err(ApiError::not_found(ns_res, &ns));
                    }
                }
                if status_sub {
                    new.as_object_mut().expect("object").remove("status");
                }
                let meta = new["metadata"].as_object_mut().expect("object");
                meta.remove("resourceVersion");
                meta.remove("deletionTimestamp");
                meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
                meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
                if res.generation {
                    meta.insert("generation".into(), json!(1));
                } else {
                    meta.remove("generation");
                }
            }
        }

        validate::default(res, old, &mut new);
        validate::validate(res, old, &new)?;

        if let Some(old) = old {
            if res.generation && old.get("spec") != new.get("spec") {
                let g = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
                new["metadata"]["generation"] = json!(g);
            }
            if without_rv(old) == without_rv(&new) {
                // A no-op write stores nothing and keeps the resourceVersion.
                return Ok(old.clone());
            }
        }
        if opts.dry_run {
            return Ok(new);
        }
        inner.rv += 1;
        new["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        inner.objects.insert(key(res, &ns, &name), new.clone());
        let kind = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.emit(inner, kind, res, new.clone());

        if old.is_none() && res.plural == "namespaces" {
            // The service-account controller gives every namespace its `default` ServiceAccount.
            let sa = resources::lookup("serviceaccounts").expect("serviceaccounts are served");
            let obj = json!({"metadata": {"name": "default", "namespace": name}});
            self.commit(inner, sa, None, obj, WriteOpts::default())?;
        }
        Ok(new)
    }

    /// Deletes one object and returns its last state (stamped with the deletion's
    /// resourceVersion). Deleting a namespace deletes everything in it.
    pub fn delete(
        &self,
        res: &'static ResourceDef,
        ns: &str,
        name: &str,
        opts: WriteOpts,
    ) -> ApiResult<Value> {
        let mut inner = self.lock();
        let k = key(res, ns, name);
        let mut obj = inner
            .objects
            .get(&k)
            .cloned()
            .ok_or_else(|| ApiError::not_found(res, name))?;
        if res.plural == "namespaces" {
            obj["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            obj["status"] = json!({"phase": "Terminating"});
        }
        if opts.dry_run {
            return Ok(obj);
        }
        if res.plural == "namespaces" {
            let inside: Vec<Key> = inner
                .objects
                .keys()
                .filter(|(_, _, o_ns, _)| o_ns == name)
                .cloned()
                .collect();
            for ik in inside {
                if let Some(mut child) = inner.objects.remove(&ik) {
                    let child_res = resources::RESOURCES
                        .iter()
                        .find(|r| r.group == ik.0 && r.plural == ik.1)
                        .expect("stored objects have a served resource");
                    inner.rv += 1;
                    child["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
                    self.emit(&mut inner, EventType::Deleted, child_res, child);
                }
            }
        }
        inner.objects.remove(&k);
        inner.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        self.emit(&mut inner, EventType::Deleted, res, obj.clone());
        Ok(obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm(name: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "default"}, "data": {"a": "1"}})
    }

    #[test]
    fn create_stamps_and_conflicts() {
        let s = Store::new();
        let res = resources::lookup("cm").unwrap();
        let rv0 = s.resource_version();
        let c = s.create(res, cm("x"), WriteOpts::default()).unwrap();
        assert_eq!(
            c["metadata"]["resourceVersion"],
            json!((rv0 + 1).to_string())
        );
        assert_eq!(c["kind"], "ConfigMap");
        assert!(c["metadata"]["uid"].is_string());
        assert_eq!(
            s.create(res, cm("x"), WriteOpts::default())
                .unwrap_err()
                .reason,
            "AlreadyExists"
        );
        let mut stale = c.clone();
        stale["metadata"]["resourceVersion"] = json!("1");
        stale["data"]["a"] = json!("2");
        let e = s
            .update(res, "default", "x", WriteOpts::default(), |_| Ok(stale))
            .unwrap_err();
        assert_eq!(e.reason, "Conflict");
        let same = s
            .update(res, "default", "x", WriteOpts::default(), |o| Ok(o.clone()))
            .unwrap();
        assert_eq!(
            same["metadata"]["resourceVersion"],
            c["metadata"]["resourceVersion"]
        );
    }

    #[test]
    fn missing_namespace_is_404_and_namespace_delete_cascades() {
        let s = Store::new();
        let res = resources::lookup("cm").unwrap();
        let mut o = cm("x");
        o["metadata"]["namespace"] = json!("nope");
        let e = s.create(res, o, WriteOpts::default()).unwrap_err();
        assert_eq!(e.message, "namespaces \"nope\" not found");
        let ns = resources::lookup("ns").unwrap();
        s.create(
            ns,
            json!({"metadata": {"name": "app"}}),
            WriteOpts::default(),
        )
        .unwrap();
        let mut o = cm("x");
        o["metadata"]["namespace"] = json!("app");
        s.create(res, o, WriteOpts::default()).unwrap();
        s.delete(ns, "", "app", WriteOpts::default()).unwrap();
        assert!(s.get(res, "app", "x").is_none());
    }

    #[test]
    fn watch_replay_and_expiry() {
        let s = Store::new();
        let res = resources::lookup("cm").unwrap();
        let rv = s.resource_version();
        s.create(res, cm("a"), WriteOpts::default()).unwrap();
        let (replay, _, _) = s.watch_from(res, Some(rv)).unwrap();
        assert_eq!(replay.len(), 1);
        assert_eq!(replay[0].kind, EventType::Added);
        s.compact();
        assert_eq!(s.watch_from(res, Some(rv)).unwrap_err().code, 410);
    }
}
