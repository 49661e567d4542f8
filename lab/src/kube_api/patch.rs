//! The three patch flavours the API server accepts besides apply: JSON merge patch (RFC 7386),
//! strategic merge patch (lists merged by their Kubernetes merge keys, with the `$patch`,
//! `$setElementOrder`, `$retainKeys` and `$deleteFromPrimitiveList` directives kubectl emits), and
//! JSON patch (RFC 6902).

use serde_json::{Map, Value};

use super::error::{ApiError, ApiResult};

/// The merge key of a list field, given the path of map keys leading to it (list indices are not
/// part of `path`). `None` means the list is atomic (replaced whole).
pub fn merge_key(path: &[String]) -> Option<&'static str> {
    let last = path.last()?.as_str();
    let parent = path.len().checked_sub(2).map(|i| path[i].as_str());
    match last {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "hostAliases" => Some("ip"),
        "ownerReferences" => Some("uid"),
        "conditions" => Some("type"),
        "topologySpreadConstraints" => Some("topologyKey"),
        "ports" => match parent {
            Some("containers" | "initContainers" | "ephemeralContainers") => Some("containerPort"),
            // Service ports: path is exactly spec.ports.
            Some("spec") if path.len() == 2 => Some("port"),
            _ => None,
        },
        _ => None,
    }
}

/// Applies an RFC 7386 JSON merge patch to `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("just made an object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Applies a strategic merge patch to `target`.
pub fn strategic_merge(target: &mut Value, patch: &Value) -> ApiResult<()> {
    strategic_at(target, patch, &mut Vec::new())
}

fn strategic_at(target: &mut Value, patch: &Value, path: &mut Vec<String>) -> ApiResult<()> {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return Ok(());
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut clean = p.clone();
            clean.remove("$patch");
            *target = Value::Object(clean);
            return Ok(());
        }
        Some("delete") => {
            *target = Value::Null;
            return Ok(());
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown patch type: {other:?} in map"
            )))
        }
        None => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let retain: Option<Vec<String>> = p.get("$retainKeys").and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect()
    });
    for (k, v) in p {
        if k == "$retainKeys" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let t = target.as_object_mut().expect("object");
            if let (Some(Value::Array(list)), Some(del)) = (t.get_mut(field), v.as_array()) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            return Err(ApiError::bad_request(format!(
                "unsupported strategic merge patch directive {k:?}"
            )));
        }
        let t = target.as_object_mut().expect("object");
        if v.is_null() {
            t.remove(k);
            continue;
        }
        path.push(k.clone());
        let slot = t.entry(k.clone()).or_insert(Value::Null);
        match (v, merge_key(path)) {
            (Value::Array(items), Some(key)) => {
                merge_keyed_list(slot, items, key, path)?;
            }
            (Value::Array(_), None) => *slot = v.clone(),
            _ => {
                strategic_at(slot, v, path)?;
                if slot.is_null() {
                    t.remove(k);
                }
            }
        }
        path.pop();
    }
    if let Some(keep) = retain {
        if let Some(t) = target.as_object_mut() {
            t.retain(|k, _| keep.contains(k));
        }
    }
    Ok(())
}

fn merge_keyed_list(
    slot: &mut Value,
    items: &[Value],
    key: &str,
    path: &mut Vec<String>,
) -> ApiResult<()> {
    if !slot.is_array() {
        *slot = Value::Array(Vec::new());
    }
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        let kept = items
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .cloned()
            .collect();
        *slot = Value::Array(kept);
        return Ok(());
    }
    let list = slot.as_array_mut().expect("array");
    for item in items {
        let Some(kv) = item.get(key) else {
            return Err(ApiError::bad_request(format!(
                "map: {item} does not contain declared merge key: {key}"
            )));
        };
        let pos = list.iter().position(|e| e.get(key) == Some(kv));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                list.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_at(&mut list[i], item, path)?,
            (None, false) => {
                let mut fresh = Value::Object(Map::new());
                strategic_at(&mut fresh, item, path)?;
                list.push(fresh);
            }
        }
    }
    Ok(())
}

fn pointer_parts(ptr: &str) -> ApiResult<Vec<String>> {
    if ptr.is_empty() {
        return Ok(Vec::new());
    }
    let rest = ptr
        .strip_prefix('/')
        .ok_or_else(|| ApiError::bad_request(format!("invalid JSON pointer {ptr:?}")))?;
    Ok(rest
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn json_patch_op(doc: &mut Value, op: &Value) -> ApiResult<()> {
    let bad = |m: &str| {
        ApiError::bad_request(format!(
            "the server rejected our request due to an error in our request: {m}"
        ))
    };
    let kind = op["op"].as_str().ok_or_else(|| bad("missing op"))?;
    let path = op["path"].as_str().ok_or_else(|| bad("missing path"))?;
    let value = || op.get("value").cloned().ok_or_else(|| bad("missing value"));
    match kind {
        "add" => add_at(doc, path, value()?),
        "replace" => {
            let slot = doc.pointer_mut(path).ok_or_else(|| {
                bad(&format!(
                    "replace operation does not apply: doc is missing key: {path}"
                ))
            })?;
            *slot = value()?;
            Ok(())
        }
        "remove" => remove_at(doc, path).map(|_| ()),
        "test" => {
            if doc.pointer(path) == Some(&value()?) {
                Ok(())
            } else {
                Err(ApiError::new(
                    422,
                    "Invalid",
                    format!("testing value {path} failed"),
                ))
            }
        }
        "move" | "copy" => {
            let from = op["from"].as_str().ok_or_else(|| bad("missing from"))?;
            let v = if kind == "move" {
                remove_at(doc, from)?
            } else {
                doc.pointer(from).cloned().ok_or_else(|| {
                    bad(&format!(
                        "{kind} operation does not apply: doc is missing from path: {from}"
                    ))
                })?
            };
            add_at(doc, path, v)
        }
        other => Err(bad(&format!("unexpected kind: {other}"))),
    }
}

fn split_parent(path: &str) -> ApiResult<(String, String)> {
    let parts = pointer_parts(path)?;
    let (last, parent) = parts
        .split_last()
        .ok_or_else(|| ApiError::bad_request("cannot patch the document root"))?;
    let parent_ptr: String = parent
        .iter()
        .map(|p| format!("/{}", p.replace('~', "~0").replace('/', "~1")))
        .collect();
    Ok((parent_ptr, last.clone()))
}

fn add_at(doc: &mut Value, path: &str, v: Value) -> ApiResult<()> {
    let (parent, last) = split_parent(path)?;
    let missing = || {
        ApiError::bad_request(format!(
            "add operation does not apply: doc is missing path: {path}"
        ))
    };
    match doc.pointer_mut(&parent).ok_or_else(missing)? {
        Value::Object(m) => {
            m.insert(last, v);
            Ok(())
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(v);
                return Ok(());
            }
            let i: usize = last.parse().map_err(|_| missing())?;
            if i > a.len() {
                return Err(missing());
            }
            a.insert(i, v);
            Ok(())
        }
        _ => Err(missing()),
    }
}

fn remove_at(doc: &mut Value, path: &str) -> ApiResult<Value> {
    let (parent, last) = split_parent(path)?;
    let missing = || {
        ApiError::bad_request(format!(
            "remove operation does not apply: doc is missing path: {path}"
        ))
    };
    match doc.pointer_mut(&parent).ok_or_else(missing)? {
        Value::Object(m) => m.remove(&last).ok_or_else(missing),
        Value::Array(a) => {
            let i: usize = last.parse().map_err(|_| missing())?;
            if i >= a.len() {
                return Err(missing());
            }
            Ok(a.remove(i))
        }
        _ => Err(missing()),
    }
}

/// Applies an RFC 6902 JSON patch (a list of operations) to `target`.
pub fn json_patch(target: &mut Value, patch: &Value) -> ApiResult<()> {
    let ops = patch
        .as_array()
        .ok_or_else(|| ApiError::bad_request("json patch must be a list of operations"))?;
    for op in ops {
        json_patch_op(target, op)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy() -> Value {
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "web:1", "env": [{"name": "A", "value": "1"}]}
        ]}}}})
    }

    #[test]
    fn merge_patch_replaces_lists_and_deletes_nulls() {
        let mut d = deploy();
        merge_patch(
            &mut d,
            &json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar"}]}}}, "x": null}),
        );
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"],
            json!([{"name": "sidecar"}])
        );
        let mut cm = json!({"data": {"a": "1", "b": "2"}});
        merge_patch(&mut cm, &json!({"data": {"a": null, "c": "3"}}));
        assert_eq!(cm, json!({"data": {"b": "2", "c": "3"}}));
    }

    #[test]
    fn strategic_merges_containers_by_name() {
        let mut d = deploy();
        strategic_merge(
            &mut d,
            &json!({"spec": {"template": {"spec": {"containers": [
                {"name": "sidecar", "image": "s:1"},
                {"name": "web", "env": [{"name": "B", "value": "2"}]}
            ]}}}}),
        )
        .unwrap();
        let c = &d["spec"]["template"]["spec"]["containers"];
        assert_eq!(c[0]["name"], "web");
        assert_eq!(c[0]["image"], "web:1");
        assert_eq!(
            c[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
        );
        assert_eq!(c[1], json!({"name": "sidecar", "image": "s:1"}));
    }

    #[test]
    fn strategic_directives() {
        let mut d = deploy();
        strategic_merge(
            &mut d,
            &json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}],
                "containers": [{"name": "web", "env": [{"name": "A", "$patch": "delete"}]}]
            }}}}),
        )
        .unwrap();
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["env"],
            json!([])
        );
        assert!(strategic_merge(&mut d, &json!({"$bogus": 1})).is_err());
    }

    #[test]
    fn json_patch_ops() {
        let mut d = json!({"a": [1, 2], "b": {"c": 1}});
        json_patch(
            &mut d,
            &json!([
                {"op": "add", "path": "/a/-", "value": 3},
                {"op": "replace", "path": "/b/c", "value": 2},
                {"op": "remove", "path": "/a/0"},
                {"op": "copy", "from": "/b", "path": "/d"}
            ]),
        )
        .unwrap();
        assert_eq!(d, json!({"a": [2, 3], "b": {"c": 2}, "d": {"c": 2}}));
        assert!(json_patch(&mut d, &json!([{"op": "remove", "path": "/nope"}])).is_err());
    }
}
