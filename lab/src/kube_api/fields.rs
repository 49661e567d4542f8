//! Server-side apply and `metadata.managedFields`, simplified: each manager owns a set of leaf
//! paths (keyed list elements addressed by their merge key, other lists atomic). That is enough
//! for what drdctl meets on a real cluster: 409 `FieldManagerConflict` when an apply changes a
//! field another manager (for example `kubectl scale`) set, `force` taking ownership over, and
//! fields dropped from a manifest being removed from the live object.

use std::collections::BTreeSet;

use chrono::Utc;
use serde_json::{json, Map, Value};

use super::error::{ApiError, ApiResult};
use super::patch::{merge_key, strategic_merge};

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pe {
    /// A map field.
    F(String),
    /// A keyed list element, as the JSON object of its key (`{"name":"web"}`).
    K(String),
}

/// A path to an owned field.
pub type FieldPath = Vec<Pe>;
/// A set of owned fields.
pub type FieldSet = BTreeSet<FieldPath>;

/// Metadata fields nobody owns.
const UNOWNED_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "managedFields",
    "selfLink",
];

/// The fields set in `obj` (top-level `status`, `apiVersion`, `kind` and identity metadata excluded).
pub fn collect(obj: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    if let Some(m) = obj.as_object() {
        for (k, v) in m {
            match k.as_str() {
                "apiVersion" | "kind" | "status" => {}
                "metadata" => {
                    if let Some(meta) = v.as_object() {
                        for (mk, mv) in meta {
                            if !UNOWNED_META.contains(&mk.as_str()) {
                                let keys = vec!["metadata".to_string(), mk.clone()];
                                let fp = vec![Pe::F("metadata".into()), Pe::F(mk.clone())];
                                walk(mv, &keys, fp, &mut out);
                            }
                        }
                    }
                }
                _ => walk(v, std::slice::from_ref(k), vec![Pe::F(k.clone())], &mut out),
            }
        }
    }
    out
}

fn walk(v: &Value, keys: &[String], fp: FieldPath, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => walk_fields(m, keys, &fp, out),
        Value::Array(items) => match merge_key(keys) {
            Some(key) if items.iter().all(|i| i.get(key).is_some()) => {
                for item in items {
                    let mut p = fp.clone();
                    p.push(Pe::K(json!({ key: item[key] }).to_string()));
                    out.insert(p.clone());
                    walk_element(item, keys, p, out);
                }
            }
            _ => {
                out.insert(fp);
            }
        },
        _ => {
            out.insert(fp);
        }
    }
}

fn walk_element(item: &Value, keys: &[String], fp: FieldPath, out: &mut FieldSet) {
    if let Some(m) = item.as_object() {
        walk_fields(m, keys, &fp, out);
    }
}

/// Walks each field of an object, one level below `fp`.
fn walk_fields(m: &Map<String, Value>, keys: &[String], fp: &FieldPath, out: &mut FieldSet) {
    for (k, child) in m {
        let mut keys = keys.to_vec();
        keys.push(k.clone());
        let mut p = fp.clone();
        p.push(Pe::F(k.clone()));
        walk(child, &keys, p, out);
    }
}

fn element_matches(elem: &Value, key_json: &str) -> bool {
    let Ok(Value::Object(k)) = serde_json::from_str::<Value>(key_json) else {
        return false;
    };
    k.iter().all(|(f, v)| elem.get(f) == Some(v))
}

/// The value at `fp` in `obj`.
pub fn get_at<'a>(obj: &'a Value, fp: &[Pe]) -> Option<&'a Value> {
    let mut cur = obj;
    for pe in fp {
        cur = match pe {
            Pe::F(k) => cur.get(k)?,
            Pe::K(k) => cur.as_array()?.iter().find(|e| element_matches(e, k))?,
        };
    }
    Some(cur)
}

/// Removes the value at `fp` from `obj` (no-op when absent).
pub fn remove_at(obj: &mut Value, fp: &[Pe]) {
    let Some((last, parent)) = fp.split_last() else {
        return;
    };
    let mut cur = obj;
    for pe in parent {
        let next = match pe {
            Pe::F(k) => cur.get_mut(k),
            Pe::K(k) => cur
                .as_array_mut()
                .and_then(|a| a.iter_mut().find(|e| element_matches(e, k))),
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    match last {
        Pe::F(k) => {
            if let Some(m) = cur.as_object_mut() {
                m.remove(k);
            }
        }
        Pe::K(k) => {
            if let Some(a) = cur.as_array_mut() {
                a.retain(|e| !element_matches(e, k));
            }
        }
    }
}

/// Renders a path the way the API server names fields in conflicts: `.spec.containers[name="web"].image`.
pub fn render_path(fp: &[Pe]) -> String {
    let mut s = String::new();
    for pe in fp {
        match pe {
            Pe::F(k) => {
                s.push('.');
                s.push_str(k);
            }
            Pe::K(k) => {
                if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(k) {
                    let parts: Vec<String> = m.iter().map(|(f, v)| format!("{f}={v}")).collect();
                    s.push_str(&format!("[{}]", parts.join(",")));
                }
            }
        }
    }
    s
}

/// A field set as `fieldsV1` JSON.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Value::Object(Map::new());
    for fp in set {
        let mut cur = &mut root;
        for pe in fp {
            let key = match pe {
                Pe::F(k) => format!("f:{k}"),
                Pe::K(k) => format!("k:{k}"),
            };
            cur = cur
                .as_object_mut()
                .expect("fieldsV1 nodes are objects")
                .entry(key)
                .or_insert_with(|| Value::Object(Map::new()));
        }
        if matches!(fp.last(), Some(Pe::K(_))) {
            cur.as_object_mut()
                .expect("fieldsV1 nodes are objects")
                .insert(".".into(), json!({}));
        }
    }
    root
}

/// Parses `fieldsV1` JSON back into a field set.
pub fn from_fields_v1(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    parse_node(v, &mut Vec::new(), &mut out);
    out
}

fn parse_node(v: &Value, fp: &mut FieldPath, out: &mut FieldSet) {
    let Some(m) = v.as_object() else { return };
    for (k, child) in m {
        if k == "." {
            out.insert(fp.clone());
            continue;
        }
        let pe = if let Some(f) = k.strip_prefix("f:") {
            Pe::F(f.to_string())
        } else if let Some(key) = k.strip_prefix("k:") {
            Pe::K(key.to_string())
        } else {
            continue;
        };
        fp.push(pe);
        if child.as_object().is_none_or(Map::is_empty) {
            out.insert(fp.clone());
        } else {
            parse_node(child, fp, out);
        }
        fp.pop();
    }
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The field manager.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// The apiVersion the manager used.
    pub api_version: String,
    /// When the entry last changed.
    pub time: String,
    /// The subresource written through (`scale`, `status`), if any.
    pub subresource: Option<String>,
    /// The owned fields.
    pub set: FieldSet,
}

impl Entry {
    fn same_owner(&self, manager: &str, operation: &str, sub: Option<&str>) -> bool {
        self.manager == manager && self.operation == operation && self.subresource.as_deref() == sub
    }

    fn describe(&self) -> String {
        match &self.subresource {
            Some(s) => format!(
                "\"{}\" with subresource \"{s}\" using {}",
                self.manager, self.api_version
            ),
            None => format!("\"{}\" using {}", self.manager, self.api_version),
        }
    }
}

/// Reads the entries of `obj.metadata.managedFields`.
pub fn entries(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| Entry {
                    manager: e["manager"].as_str().unwrap_or_default().into(),
                    operation: e["operation"].as_str().unwrap_or("Update").into(),
                    api_version: e["apiVersion"].as_str().unwrap_or_default().into(),
                    time: e["time"].as_str().unwrap_or_default().into(),
                    subresource: e["subresource"].as_str().map(String::from),
                    set: from_fields_v1(&e["fieldsV1"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Writes `entries` into `obj.metadata.managedFields` (removed when empty).
pub fn store_entries(obj: &mut Value, entries: &[Entry]) {
    let rendered: Vec<Value> = entries
        .iter()
        .filter(|e| !e.set.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.set),
            });
            if let Some(s) = &e.subresource {
                v["subresource"] = json!(s);
            }
            v
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if rendered.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(rendered));
        }
    }
}

fn now() -> String {
    Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn strip_managed(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    o
}

fn prune(entries: &mut Vec<Entry>, obj: &Value) {
    for e in entries.iter_mut() {
        e.set.retain(|p| get_at(obj, p).is_some());
    }
    entries.retain(|e| !e.set.is_empty());
}

/// Server-side apply of `applied` by `manager` onto `live` (None: the object does not exist yet).
/// Returns the new object with `managedFields` updated; conflicts are a 409 unless `force`.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    api_version: &str,
) -> ApiResult<Value> {
    let live_obj = live.cloned().unwrap_or_else(|| json!({}));
    let mut list = entries(&live_obj);
    let new_set = collect(applied);

    let mut conflicts: Vec<(String, FieldPath)> = Vec::new();
    for e in list.iter_mut() {
        if e.same_owner(manager, "Apply", None) {
            continue;
        }
        let clashing: Vec<FieldPath> = e
            .set
            .iter()
            .filter(|p| new_set.contains(*p) && !matches!(p.last(), Some(Pe::K(_))))
            .filter(|p| get_at(&live_obj, p) != get_at(applied, p))
            .cloned()
            .collect();
        for p in clashing {
            if force {
                e.set.remove(&p);
            } else {
                conflicts.push((e.describe(), p));
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(conflict_error(&conflicts));
    }

    let old_set = list
        .iter()
        .find(|e| e.same_owner(manager, "Apply", None))
        .map(|e| e.set.clone())
        .unwrap_or_default();
    let mut result = strip_managed(&live_obj);
    let mut dropped: Vec<&FieldPath> = old_set.difference(&new_set).collect();
    dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in dropped {
        let owned_elsewhere = list.iter().any(|e| {
            !e.same_owner(manager, "Apply", None)
                && e.set.iter().any(|q| q.starts_with(p) || p.starts_with(q))
        });
        if !owned_elsewhere {
            remove_at(&mut result, p);
        }
    }
    let mut body = applied.clone();
    if let Some(m) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    strategic_merge(&mut result, &body)?;

    let unchanged = live.is_some_and(|l| strip_managed(l) == result) && old_set == new_set;
    if unchanged {
        // A no-op apply writes nothing, so the resourceVersion does not move either.
        return Ok(live_obj);
    }
    match list
        .iter_mut()
        .find(|e| e.same_owner(manager, "Apply", None))
    {
        Some(e) => {
            e.set = new_set;
            e.time = now();
            e.api_version = api_version.into();
        }
        None => list.push(Entry {
            manager: manager.into(),
            operation: "Apply".into(),
            api_version: api_version.into(),
            time: now(),
            subresource: None,
            set: new_set,
        }),
    }
    prune(&mut list, &result);
    store_entries(&mut result, &list);
    Ok(result)
}

/// Records a non-apply write (PUT, merge or strategic patch, `/scale`) by `manager`: it takes
/// ownership of the fields it changed, other managers lose them. `new` is the object as the
/// client asked for it, before defaulting.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: Option<&str>,
    api_version: &str,
) {
    let null = Value::Null;
    let old = old.unwrap_or(&null);
    let mut list = entries(old);
    let changed: FieldSet = collect(new)
        .into_iter()
        .filter(|p| get_at(old, p) != get_at(new, p))
        .collect();
    if !changed.is_empty() {
        for e in list.iter_mut() {
            if !e.same_owner(manager, "Update", subresource) {
                e.set.retain(|p| !changed.contains(p));
            }
        }
        match list
            .iter_mut()
            .find(|e| e.same_owner(manager, "Update", subresource))
        {
            Some(e) => {
                e.set.extend(changed);
                e.time = now();
            }
            None => list.push(Entry {
                manager: manager.into(),
                operation: "Update".into(),
                api_version: api_version.into(),
                time: now(),
                subresource: subresource.map(String::from),
                set: changed,
            }),
        }
    }
    prune(&mut list, new);
    store_entries(new, &list);
}

fn conflict_error(conflicts: &[(String, FieldPath)]) -> ApiError {
    let n = conflicts.len();
    let mut message = format!(
        "Apply failed with {n} conflict{}: ",
        if n == 1 { "" } else { "s" }
    );
    if n == 1 {
        message.push_str(&format!(
            "conflict with {}: {}",
            conflicts[0].0,
            render_path(&conflicts[0].1)
        ));
    } else {
        let mut owners: Vec<&String> = conflicts.iter().map(|c| &c.0).collect();
        owners.dedup();
        let parts: Vec<String> = owners
            .iter()
            .map(|o| {
                let fields: Vec<String> = conflicts
                    .iter()
                    .filter(|c| &&c.0 == o)
                    .map(|c| format!("- {}", render_path(&c.1)))
                    .collect();
                format!("conflicts with {o}:\n{}", fields.join("\n"))
            })
            .collect();
        message.push_str(&parts.join("\n"));
    }
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(owner, p)| {
            json!({"reason": "FieldManagerConflict", "message": format!("conflict with {owner}"), "field": render_path(p)})
        })
        .collect();
    ApiError {
        code: 409,
        reason: "Conflict".into(),
        message,
        details: Some(json!({ "causes": causes })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
               "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "web", "image": image}]}}}})
    }

    #[test]
    fn fields_v1_round_trip() {
        let set = collect(&deploy(1, "a"));
        let v1 = to_fields_v1(&set);
        assert_eq!(
            v1["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"]["."],
            json!({})
        );
        assert_eq!(from_fields_v1(&v1), set);
    }

    #[test]
    fn apply_conflicts_with_scale_unless_forced() {
        let live = apply(None, &deploy(2, "a"), "drdctl", false, "apps/v1").unwrap();
        let mut scaled = live.clone();
        scaled["spec"]["replicas"] = json!(5);
        record_update(
            Some(&live),
            &mut scaled,
            "kubectl",
            Some("scale"),
            "apps/v1",
        );
        let err = apply(Some(&scaled), &deploy(2, "a"), "drdctl", false, "apps/v1").unwrap_err();
        assert_eq!(err.code, 409);
        assert_eq!(
            err.message,
            "Apply failed with 1 conflict: conflict with \"kubectl\" with subresource \"scale\" using apps/v1: .spec.replicas"
        );
        let forced = apply(Some(&scaled), &deploy(2, "a"), "drdctl", true, "apps/v1").unwrap();
        assert_eq!(forced["spec"]["replicas"], 2);
        // Same value as the other owner: shared, no conflict.
        assert!(apply(Some(&scaled), &deploy(5, "a"), "drdctl", false, "apps/v1").is_ok());
    }

    #[test]
    fn dropped_fields_are_removed_and_noop_is_identical() {
        let live = apply(None, &deploy(2, "a"), "m", false, "apps/v1").unwrap();
        let again = apply(Some(&live), &deploy(2, "a"), "m", false, "apps/v1").unwrap();
        assert_eq!(again, live);
        let mut smaller = deploy(2, "a");
        smaller["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("labels");
        let after = apply(Some(&live), &smaller, "m", false, "apps/v1").unwrap();
        assert!(after.pointer("/metadata/labels/app").is_none());
    }
}
