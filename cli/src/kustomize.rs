//! A kustomize renderer for exactly the features `manifests/` uses; anything else is refused
//! with a message naming the feature and the file, so a new feature cannot be silently ignored.
//!
//! Supported: `resources` (files and directories), `namespace`, `labels` (with
//! `includeSelectors: false`), `images`, `replicas`, `configMapGenerator` (`files`,
//! `literals`, with `options.disableNameSuffixHash: true`), and `patches` holding JSON 6902
//! operations (`add`, `replace`, `remove`) with a `target` by kind and name. A test checks the
//! output equals `kubectl kustomize` for both overlays.
//!
//! Pure: reads files, returns objects; no cluster access.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{path}: kustomize feature `{feature}` is not supported by drdctl's renderer (supported: resources, namespace, labels, images, replicas, configMapGenerator with disableNameSuffixHash, JSON 6902 patches); render with kubectl kustomize or remove it")]
    Unsupported { path: PathBuf, feature: String },
}

fn file_err(path: &Path, message: impl Into<String>) -> RenderError {
    RenderError::File {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn unsupported(path: &Path, feature: impl Into<String>) -> RenderError {
    RenderError::Unsupported {
        path: path.to_path_buf(),
        feature: feature.into(),
    }
}

/// Renders the kustomization in `dir` (an overlay or a base) into objects, in apply order.
pub fn render(dir: &Path) -> Result<Vec<Value>, RenderError> {
    let mut objects = render_dir(dir)?;
    objects.sort_by(|a, b| {
        (kind_rank(a), kind_of(a), name_of(a)).cmp(&(kind_rank(b), kind_of(b), name_of(b)))
    });
    Ok(objects)
}

fn kind_of(o: &Value) -> &str {
    o["kind"].as_str().unwrap_or("")
}

fn name_of(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or("")
}

/// Kustomize's legacy order: what others depend on comes first.
fn kind_rank(o: &Value) -> usize {
    const ORDER: &[&str] = &[
        "Namespace",
        "ResourceQuota",
        "StorageClass",
        "CustomResourceDefinition",
        "ServiceAccount",
        "PodSecurityPolicy",
        "Role",
        "ClusterRole",
        "RoleBinding",
        "ClusterRoleBinding",
        "ConfigMap",
        "Secret",
        "Endpoints",
        "Service",
        "LimitRange",
        "PriorityClass",
        "PersistentVolume",
        "PersistentVolumeClaim",
        "Deployment",
        "StatefulSet",
        "CronJob",
        "PodDisruptionBudget",
    ];
    ORDER
        .iter()
        .position(|k| *k == kind_of(o))
        .unwrap_or(ORDER.len())
}

fn kustomization_file(dir: &Path) -> Result<PathBuf, RenderError> {
    for name in ["kustomization.yaml", "kustomization.yml", "Kustomization"] {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(file_err(dir, "no kustomization.yaml in this directory"))
}

fn read_yaml_docs(path: &Path) -> Result<Vec<Value>, RenderError> {
    let text = std::fs::read_to_string(path).map_err(|e| file_err(path, e.to_string()))?;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v = <serde_yaml::Value as serde::Deserialize>::deserialize(doc)
            .map_err(|e| file_err(path, e.to_string()))?;
        let v: Value = serde_json::to_value(v).map_err(|e| file_err(path, e.to_string()))?;
        match v {
            Value::Null => {}
            Value::Object(_) => out.push(v),
            _ => return Err(file_err(path, "a YAML document is not an object")),
        }
    }
    Ok(out)
}

fn render_dir(dir: &Path) -> Result<Vec<Value>, RenderError> {
    let kfile = kustomization_file(dir)?;
    let mut docs = read_yaml_docs(&kfile)?;
    if docs.len() != 1 {
        return Err(file_err(&kfile, "expected exactly one YAML document"));
    }
    let Value::Object(k) = docs.remove(0) else {
        unreachable!("read_yaml_docs returns objects")
    };
    for key in k.keys() {
        if !matches!(
            key.as_str(),
            "apiVersion"
                | "kind"
                | "resources"
                | "namespace"
                | "labels"
                | "images"
                | "replicas"
                | "configMapGenerator"
                | "patches"
        ) {
            return Err(unsupported(&kfile, key.clone()));
        }
    }

    let mut objects = Vec::new();
    for r in strings(&k, "resources", &kfile)? {
        let p = dir.join(&r);
        if p.is_dir() {
            objects.extend(render_dir(&p)?);
        } else if p.is_file() {
            objects.extend(read_yaml_docs(&p)?);
        } else {
            return Err(file_err(&kfile, format!("resource {r:?} not found")));
        }
    }
    if let Some(gens) = k.get("configMapGenerator") {
        for g in list(gens, "configMapGenerator", &kfile)? {
            objects.push(config_map(dir, &kfile, g)?);
        }
    }
    if let Some(ns) = k.get("namespace") {
        let ns = ns
            .as_str()
            .ok_or_else(|| file_err(&kfile, "namespace must be a string"))?;
        for o in &mut objects {
            if !is_cluster_scoped(kind_of(o)) {
                o["metadata"]["namespace"] = json!(ns);
            }
        }
    }
    if let Some(labels) = k.get("labels") {
        for l in list(labels, "labels", &kfile)? {
            apply_labels(&kfile, l, &mut objects)?;
        }
    }
    if let Some(images) = k.get("images") {
        for i in list(images, "images", &kfile)? {
            let name = str_field(i, "name", &kfile)?;
            for key in i.as_object().into_iter().flat_map(|m| m.keys()) {
                if !matches!(key.as_str(), "name" | "newName" | "newTag" | "digest") {
                    return Err(unsupported(&kfile, format!("images.{key}")));
                }
            }
            for o in &mut objects {
                set_images(
                    o,
                    name,
                    i["newName"].as_str(),
                    i["newTag"].as_str(),
                    i["digest"].as_str(),
                );
            }
        }
    }
    if let Some(replicas) = k.get("replicas") {
        for r in list(replicas, "replicas", &kfile)? {
            let name = str_field(r, "name", &kfile)?;
            let count = r["count"].as_i64().ok_or_else(|| {
                file_err(&kfile, format!("replicas[{name}].count must be a number"))
            })?;
            for o in &mut objects {
                if matches!(kind_of(o), "Deployment" | "StatefulSet" | "ReplicaSet")
                    && name_of(o) == name
                {
                    o["spec"]["replicas"] = json!(count);
                }
            }
        }
    }
    if let Some(patches) = k.get("patches") {
        for p in list(patches, "patches", &kfile)? {
            apply_patch(dir, &kfile, p, &mut objects)?;
        }
    }
    Ok(objects)
}

fn is_cluster_scoped(kind: &str) -> bool {
    matches!(
        kind,
        "Namespace"
            | "ClusterRole"
            | "ClusterRoleBinding"
            | "CustomResourceDefinition"
            | "StorageClass"
            | "PersistentVolume"
            | "PriorityClass"
    )
}

fn list<'a>(v: &'a Value, what: &str, file: &Path) -> Result<&'a Vec<Value>, RenderError> {
    v.as_array()
        .ok_or_else(|| file_err(file, format!("{what} must be a list")))
}

fn strings(k: &Map<String, Value>, key: &str, file: &Path) -> Result<Vec<String>, RenderError> {
    match k.get(key) {
        None => Ok(Vec::new()),
        Some(v) => list(v, key, file)?
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| file_err(file, format!("{key} entries must be strings")))
            })
            .collect(),
    }
}

fn str_field<'a>(v: &'a Value, key: &str, file: &Path) -> Result<&'a str, RenderError> {
    v[key]
        .as_str()
        .ok_or_else(|| file_err(file, format!("missing string field `{key}` in {v}")))
}

fn config_map(dir: &Path, kfile: &Path, g: &Value) -> Result<Value, RenderError> {
    for key in g.as_object().into_iter().flat_map(|m| m.keys()) {
        if !matches!(key.as_str(), "name" | "files" | "literals" | "options") {
            return Err(unsupported(kfile, format!("configMapGenerator.{key}")));
        }
    }
    let name = str_field(g, "name", kfile)?;
    let options = g["options"].as_object().cloned().unwrap_or_default();
    for key in options.keys() {
        if key != "disableNameSuffixHash" {
            return Err(unsupported(
                kfile,
                format!("configMapGenerator.options.{key}"),
            ));
        }
    }
    if options.get("disableNameSuffixHash") != Some(&json!(true)) {
        return Err(unsupported(
            kfile,
            "configMapGenerator without options.disableNameSuffixHash: true (name hashes)",
        ));
    }
    let mut data = Map::new();
    for f in g["files"].as_array().into_iter().flatten() {
        let spec = f
            .as_str()
            .ok_or_else(|| file_err(kfile, "configMapGenerator files must be strings"))?;
        let (key, rel) = match spec.split_once('=') {
            Some((k, p)) => (k.to_string(), p),
            None => (
                Path::new(spec)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                spec,
            ),
        };
        let path = dir.join(rel);
        let text = std::fs::read_to_string(&path).map_err(|e| file_err(&path, e.to_string()))?;
        data.insert(key, Value::String(text));
    }
    for l in g["literals"].as_array().into_iter().flatten() {
        let spec = l
            .as_str()
            .ok_or_else(|| file_err(kfile, "configMapGenerator literals must be strings"))?;
        let (k, v) = spec
            .split_once('=')
            .ok_or_else(|| file_err(kfile, format!("literal {spec:?} is not key=value")))?;
        data.insert(k.to_string(), Value::String(v.to_string()));
    }
    Ok(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}))
}

fn apply_labels(kfile: &Path, l: &Value, objects: &mut [Value]) -> Result<(), RenderError> {
    for key in l.as_object().into_iter().flat_map(|m| m.keys()) {
        if !matches!(key.as_str(), "pairs" | "includeSelectors") {
            return Err(unsupported(kfile, format!("labels.{key}")));
        }
    }
    if l["includeSelectors"].as_bool().unwrap_or(false) {
        return Err(unsupported(kfile, "labels.includeSelectors: true"));
    }
    let pairs = l["pairs"]
        .as_object()
        .ok_or_else(|| file_err(kfile, "labels.pairs must be a map"))?;
    for o in objects.iter_mut() {
        if !o["metadata"].is_object() {
            return Err(file_err(
                kfile,
                format!("an object of kind {} has no metadata", kind_of(o)),
            ));
        }
        if !o["metadata"]["labels"].is_object() {
            o["metadata"]["labels"] = json!({});
        }
        for (k, v) in pairs {
            o["metadata"]["labels"][k] = v.clone();
        }
    }
    Ok(())
}

/// Splits `registry:5000/repo/name:tag@sha256:...` into (name, rest).
fn image_name(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last_slash = without_digest.rfind('/').map_or(0, |i| i + 1);
    match without_digest[last_slash..].find(':') {
        Some(i) => &without_digest[..last_slash + i],
        None => without_digest,
    }
}

fn set_images(
    o: &mut Value,
    name: &str,
    new_name: Option<&str>,
    new_tag: Option<&str>,
    digest: Option<&str>,
) {
    // Never index mutably into a path that may be absent: serde_json would insert nulls.
    let pointer = match kind_of(o) {
        "Pod" => "/spec",
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => "/spec/template/spec",
        "CronJob" => "/spec/jobTemplate/spec/template/spec",
        _ => return,
    };
    let Some(spec) = o.pointer_mut(pointer) else {
        return;
    };
    for list in ["containers", "initContainers"] {
        let containers = spec.get_mut(list).and_then(Value::as_array_mut);
        for c in containers.into_iter().flatten() {
            let Some(image) = c["image"].as_str() else {
                continue;
            };
            if image_name(image) != name {
                continue;
            }
            let old_tag = image.strip_prefix(name).unwrap_or("").to_string();
            let mut new = new_name.unwrap_or(name).to_string();
            match (digest, new_tag) {
                (Some(d), _) => new.push_str(&format!("@{d}")),
                (None, Some(t)) => new.push_str(&format!(":{t}")),
                (None, None) => new.push_str(&old_tag),
            }
            c["image"] = json!(new);
        }
    }
}

/// Rewrites the image of every container whose image repository ends in `/service` (or is
/// `service`) to `image` (`repo:tag` or `repo@sha256:...`).
pub fn override_image(objects: &mut [Value], service: &str, image: &str) {
    let (new_name, tag, digest) = match image.split_once('@') {
        Some((n, d)) => (n.to_string(), None, Some(d.to_string())),
        None => {
            let n = image_name(image).to_string();
            let t = image[n.len()..].strip_prefix(':').map(str::to_string);
            (n, t, None)
        }
    };
    for o in objects {
        let current: Vec<String> = containers_images(o);
        for img in current {
            let name = image_name(&img);
            if name == service || name.ends_with(&format!("/{service}")) {
                let name = name.to_string();
                set_images(o, &name, Some(&new_name), tag.as_deref(), digest.as_deref());
            }
        }
    }
}

fn containers_images(o: &Value) -> Vec<String> {
    let spec = match kind_of(o) {
        "Pod" => &o["spec"],
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            &o["spec"]["template"]["spec"]
        }
        _ => return Vec::new(),
    };
    ["containers", "initContainers"]
        .iter()
        .flat_map(|l| spec[*l].as_array().into_iter().flatten())
        .filter_map(|c| c["image"].as_str().map(str::to_string))
        .collect()
}

fn apply_patch(
    dir: &Path,
    kfile: &Path,
    p: &Value,
    objects: &mut [Value],
) -> Result<(), RenderError> {
    for key in p.as_object().into_iter().flat_map(|m| m.keys()) {
        if !matches!(key.as_str(), "patch" | "path" | "target") {
            return Err(unsupported(kfile, format!("patches.{key}")));
        }
    }
    let text = match (p["patch"].as_str(), p["path"].as_str()) {
        (Some(t), None) => t.to_string(),
        (None, Some(rel)) => {
            let path = dir.join(rel);
            std::fs::read_to_string(&path).map_err(|e| file_err(&path, e.to_string()))?
        }
        _ => {
            return Err(file_err(
                kfile,
                "a patch needs exactly one of `patch` or `path`",
            ))
        }
    };
    let ops: Value = serde_yaml::from_str::<serde_yaml::Value>(&text)
        .map_err(|e| file_err(kfile, format!("patch: {e}")))
        .and_then(|v| serde_json::to_value(v).map_err(|e| file_err(kfile, e.to_string())))?;
    let Value::Array(ops) = ops else {
        return Err(unsupported(
            kfile,
            "strategic-merge patches (only JSON 6902 operation lists)",
        ));
    };
    let target = p["target"]
        .as_object()
        .ok_or_else(|| file_err(kfile, "a JSON 6902 patch needs a target"))?;
    for key in target.keys() {
        if !matches!(key.as_str(), "kind" | "name" | "group" | "version") {
            return Err(unsupported(kfile, format!("patches.target.{key}")));
        }
    }
    let mut matched = 0;
    for o in objects.iter_mut() {
        let hit = target
            .get("kind")
            .is_none_or(|k| k.as_str() == Some(kind_of(o)))
            && target
                .get("name")
                .is_none_or(|n| n.as_str() == Some(name_of(o)));
        if !hit {
            continue;
        }
        matched += 1;
        for op in &ops {
            json6902(o, op).map_err(|m| {
                file_err(
                    kfile,
                    format!("patch on {}/{}: {m}", kind_of(o), name_of(o)),
                )
            })?;
        }
    }
    if matched == 0 {
        return Err(file_err(
            kfile,
            format!(
                "patch target {} matches no object",
                Value::Object(target.clone())
            ),
        ));
    }
    Ok(())
}

fn pointer_tokens(path: &str) -> Result<Vec<String>, String> {
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| format!("path {path:?} must start with '/'"))?;
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

/// One JSON 6902 operation: add, replace or remove.
pub fn json6902(doc: &mut Value, op: &Value) -> Result<(), String> {
    let kind = op["op"].as_str().ok_or("operation without `op`")?;
    let path = op["path"].as_str().ok_or("operation without `path`")?;
    let mut tokens = pointer_tokens(path)?;
    let last = tokens.pop().ok_or("empty path")?;
    let mut parent = &mut *doc;
    for t in &tokens {
        parent = match parent {
            Value::Object(m) => m.get_mut(t).ok_or_else(|| format!("{path}: no {t:?}"))?,
            Value::Array(a) => {
                let i: usize = t
                    .parse()
                    .map_err(|_| format!("{path}: {t:?} is not an index"))?;
                a.get_mut(i)
                    .ok_or_else(|| format!("{path}: index {i} out of range"))?
            }
            _ => return Err(format!("{path}: {t:?} is inside a scalar")),
        };
    }
    match kind {
        "add" | "replace" => {
            let value = op
                .get("value")
                .cloned()
                .ok_or("operation without `value`")?;
            match parent {
                Value::Object(m) => {
                    if kind == "replace" && !m.contains_key(&last) {
                        return Err(format!("{path}: nothing to replace"));
                    }
                    m.insert(last, value);
                }
                Value::Array(a) => {
                    if last == "-" && kind == "add" {
                        a.push(value);
                    } else {
                        let i: usize = last.parse().map_err(|_| format!("{path}: bad index"))?;
                        if kind == "add" && i <= a.len() {
                            a.insert(i, value);
                        } else if kind == "replace" && i < a.len() {
                            a[i] = value;
                        } else {
                            return Err(format!("{path}: index {i} out of range"));
                        }
                    }
                }
                _ => return Err(format!("{path}: parent is a scalar")),
            }
        }
        "remove" => match parent {
            Value::Object(m) => {
                m.remove(&last)
                    .ok_or_else(|| format!("{path}: nothing to remove"))?;
            }
            Value::Array(a) => {
                let i: usize = last.parse().map_err(|_| format!("{path}: bad index"))?;
                if i >= a.len() {
                    return Err(format!("{path}: index {i} out of range"));
                }
                a.remove(i);
            }
            _ => return Err(format!("{path}: parent is a scalar")),
        },
        other => {
            return Err(format!(
                "JSON 6902 operation {other:?} is not supported (add, replace, remove)"
            ))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names() {
        assert_eq!(image_name("frontend-api"), "frontend-api");
        assert_eq!(image_name("frontend-api:1.0"), "frontend-api");
        assert_eq!(
            image_name("reg:5000/a/frontend-api:1.0"),
            "reg:5000/a/frontend-api"
        );
        assert_eq!(image_name("reg/x@sha256:abc"), "reg/x");
    }

    #[test]
    fn json_patch_ops() {
        let mut d = json!({"a": {"b": [1, 2]}, "c": 1});
        json6902(&mut d, &json!({"op":"replace","path":"/a/b/1","value":5})).unwrap();
        json6902(&mut d, &json!({"op":"add","path":"/a/b/-","value":6})).unwrap();
        json6902(&mut d, &json!({"op":"remove","path":"/c"})).unwrap();
        assert_eq!(d, json!({"a": {"b": [1, 5, 6]}}));
        assert!(json6902(&mut d, &json!({"op":"replace","path":"/zz","value":1})).is_err());
        assert!(json6902(&mut d, &json!({"op":"move","path":"/a","from":"/b"})).is_err());
    }

    #[test]
    fn unknown_features_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("kustomization.yaml"),
            "resources: []\nnamePrefix: x-\n",
        )
        .unwrap();
        let e = render(dir.path()).unwrap_err().to_string();
        assert!(e.contains("`namePrefix`"), "{e}");
    }

    #[test]
    fn override_keeps_other_images() {
        let mut objs = vec![
            json!({"kind":"Deployment","spec":{"template":{"spec":{"containers":[
            {"image":"registry.example.com/drd/frontend-api:0.1.0"},{"image":"postgres:15"}]}}}}),
        ];
        override_image(
            &mut objs,
            "frontend-api",
            "reg.local/frontend-api@sha256:ab",
        );
        let c = &objs[0]["spec"]["template"]["spec"]["containers"];
        assert_eq!(c[0]["image"], "reg.local/frontend-api@sha256:ab");
        assert_eq!(c[1]["image"], "postgres:15");
    }
}
