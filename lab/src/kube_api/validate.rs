//! Defaulting and validation, the two admission steps every write goes through on a real API
//! server. Defaults matter because clients read them back (a Deployment has `replicas: 1`, a
//! Service gets a clusterIP); validation matters because drdctl must report a 422 clearly.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult, Cause};
use super::resources::ResourceDef;
use super::selector::LabelSelector;

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Whether `s` is a DNS-1123 subdomain (the rule for most object names).
pub fn is_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label)
}

fn name_cause(res: &ResourceDef, name: &str) -> Option<Cause> {
    let v = json!(name);
    let (ok, msg, max) = match res.plural {
        "namespaces" => (is_label(name), LABEL_MSG, 63),
        "services" => (
            is_label(name) && name.as_bytes()[0].is_ascii_lowercase(),
            DNS1035_MSG,
            63,
        ),
        _ => (is_subdomain(name), SUBDOMAIN_MSG, 253),
    };
    if name.len() > max {
        return Some(Cause::invalid(
            "metadata.name",
            &v,
            format!("must be no more than {max} characters"),
        ));
    }
    (!ok).then(|| Cause::invalid("metadata.name", &v, msg))
}

fn set_default(obj: &mut Value, key: &str, value: Value) {
    if let Some(m) = obj.as_object_mut() {
        m.entry(key.to_string()).or_insert(value);
    }
}

fn ensure_object<'a>(obj: &'a mut Value, key: &str) -> &'a mut Value {
    if !obj[key].is_object() {
        obj[key] = json!({});
    }
    &mut obj[key]
}

fn default_pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs {
                let image = c["image"].as_str().unwrap_or_default().to_string();
                let tag_latest = {
                    let last = image.rsplit('/').next().unwrap_or_default();
                    !last.contains(':') || last.ends_with(":latest")
                };
                let policy = if tag_latest && !image.contains('@') {
                    "Always"
                } else {
                    "IfNotPresent"
                };
                set_default(c, "imagePullPolicy", json!(policy));
                set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
                set_default(c, "terminationMessagePolicy", json!("File"));
                set_default(c, "resources", json!({}));
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports {
                        set_default(p, "protocol", json!("TCP"));
                    }
                }
            }
        }
    }
}

fn default_template(spec: &mut Value) {
    if let Some(t) = spec.get_mut("template") {
        if let Some(ps) = t.get_mut("spec") {
            default_pod_spec(ps);
        }
    }
}

/// A stable cluster IP for a Service, from its namespace and name.
fn cluster_ip(ns: &str, name: &str) -> String {
    let mut h: u32 = 2_166_136_261;
    for b in ns.bytes().chain([b'/']).chain(name.bytes()) {
        h = (h ^ u32::from(b)).wrapping_mul(16_777_619);
    }
    format!("10.96.{}.{}", (h >> 8) % 255, (h % 253) + 1)
}

/// Fills in the defaults the real API server sets. `old` is the stored object on update.
pub fn default(res: &ResourceDef, old: Option<&Value>, obj: &mut Value) {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    match res.kind {
        "Deployment" => {
            let spec = ensure_object(obj, "spec");
            set_default(spec, "replicas", json!(1));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "progressDeadlineSeconds", json!(600));
            let strategy = ensure_object(spec, "strategy");
            set_default(strategy, "type", json!("RollingUpdate"));
            if strategy["type"] == "RollingUpdate" {
                let ru = ensure_object(strategy, "rollingUpdate");
                set_default(ru, "maxSurge", json!("25%"));
                set_default(ru, "maxUnavailable", json!("25%"));
            }
            default_template(spec);
        }
        "StatefulSet" => {
            let spec = ensure_object(obj, "spec");
            set_default(spec, "replicas", json!(1));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "podManagementPolicy", json!("OrderedReady"));
            set_default(
                spec,
                "persistentVolumeClaimRetentionPolicy",
                json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
            );
            let strategy = ensure_object(spec, "updateStrategy");
            set_default(strategy, "type", json!("RollingUpdate"));
            if strategy["type"] == "RollingUpdate" {
                let ru = ensure_object(strategy, "rollingUpdate");
                set_default(ru, "partition", json!(0));
            }
            default_template(spec);
        }
        "Pod" => {
            let spec = ensure_object(obj, "spec");
            default_pod_spec(spec);
            if old.is_none() {
                obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
            }
        }
        "Service" => {
            let spec = ensure_object(obj, "spec");
            set_default(spec, "type", json!("ClusterIP"));
            set_default(spec, "sessionAffinity", json!("None"));
            if spec.get("clusterIP").is_none() {
                let kept = old.and_then(|o| o.pointer("/spec/clusterIP")).cloned();
                spec["clusterIP"] = kept.unwrap_or_else(|| json!(cluster_ip(&ns, &name)));
            }
            let ip = spec["clusterIP"].clone();
            set_default(spec, "clusterIPs", json!([ip]));
            set_default(spec, "ipFamilies", json!(["IPv4"]));
            set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
            set_default(spec, "internalTrafficPolicy", json!("Cluster"));
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports {
                    set_default(p, "protocol", json!("TCP"));
                    let port = p["port"].clone();
                    set_default(p, "targetPort", port);
                }
            }
            if old.is_none() {
                obj["status"] = json!({"loadBalancer": {}});
            }
        }
        "Namespace" => {
            let meta = ensure_object(obj, "metadata");
            let labels = ensure_object(meta, "labels");
            labels["kubernetes.io/metadata.name"] = json!(name);
            let spec = ensure_object(obj, "spec");
            set_default(spec, "finalizers", json!(["kubernetes"]));
            if old.is_none() {
                obj["status"] = json!({"phase": "Active"});
            }
        }
        "Secret" => {
            set_default(obj, "type", json!("Opaque"));
            if let Some(Value::Object(sd)) =
                obj.as_object_mut().and_then(|m| m.remove("stringData"))
            {
                let data = ensure_object(obj, "data");
                for (k, v) in sd {
                    data[k] = json!(STANDARD.encode(v.as_str().unwrap_or_default().as_bytes()));
                }
            }
        }
        "Ingress" if old.is_none() => {
            obj["status"] = json!({"loadBalancer": {}});
        }
        _ => {}
    }
}

fn workload_causes(res: &ResourceDef, old: Option<&Value>, obj: &Value, causes: &mut Vec<Cause>) {
    let spec = &obj["spec"];
    if let Some(r) = spec.get("replicas") {
        if r.as_i64().is_none_or(|n| n < 0) {
            causes.push(Cause::invalid(
                "spec.replicas",
                r,
                "must be greater than or equal to 0",
            ));
        }
    }
    let selector = spec.get("selector");
    let labels = spec
        .pointer("/template/metadata/labels")
        .cloned()
        .unwrap_or(json!({}));
    match selector {
        None | Some(Value::Null) => causes.push(Cause::required("spec.selector", "")),
        Some(sel) => {
            let empty = sel
                .get("matchLabels")
                .and_then(Value::as_object)
                .is_none_or(|m| m.is_empty())
                && sel
                    .get("matchExpressions")
                    .and_then(Value::as_array)
                    .is_none_or(|a| a.is_empty());
            if empty {
                causes.push(Cause::invalid(
                    "spec.selector",
                    sel,
                    format!("empty selector is invalid for {}", res.singular),
                ));
            } else if !LabelSelector::from_label_selector(sel)
                .matches(&json!({"metadata": {"labels": labels}}))
            {
                let shown = go_map(&labels);
                causes.push(Cause {
                    reason: "FieldValueInvalid",
                    message: format!(
                        "Invalid value: {shown}: `selector` does not match template `labels`"
                    ),
                    field: "spec.template.metadata.labels".into(),
                });
            }
            if let Some(old_sel) = old.and_then(|o| o.pointer("/spec/selector")) {
                if old_sel != sel {
                    causes.push(Cause::invalid("spec.selector", sel, "field is immutable"));
                }
            }
        }
    }
    containers_causes(spec.pointer("/template/spec"), "spec.template.spec", causes);
}

fn go_map(labels: &Value) -> String {
    let parts: Vec<String> = labels
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k:?}:{v}")).collect())
        .unwrap_or_default();
    format!("map[string]string{{{}}}", parts.join(", "))
}

fn containers_causes(pod_spec: Option<&Value>, prefix: &str, causes: &mut Vec<Cause>) {
    let containers = pod_spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array);
    match containers {
        None => causes.push(Cause::required(format!("{prefix}.containers"), "")),
        Some(cs) if cs.is_empty() => {
            causes.push(Cause::required(format!("{prefix}.containers"), ""))
        }
        Some(cs) => {
            for (i, c) in cs.iter().enumerate() {
                let f = format!("{prefix}.containers[{i}]");
                match c.get("name").and_then(Value::as_str) {
                    None | Some("") => causes.push(Cause::required(format!("{f}.name"), "")),
                    Some(n) if !is_label(n) => {
                        causes.push(Cause::invalid(format!("{f}.name"), &json!(n), LABEL_MSG))
                    }
                    _ => {}
                }
                if c.get("image")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    causes.push(Cause::required(format!("{f}.image"), ""));
                }
            }
        }
    }
}

/// Validates `obj` (after defaulting); `old` is the stored object on update.
pub fn validate(res: &ResourceDef, old: Option<&Value>, obj: &Value) -> ApiResult<()> {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut causes = Vec::new();
    if name.is_empty() {
        causes.push(Cause::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else if let Some(c) = name_cause(res, name) {
        causes.push(c);
    }
    match res.kind {
        "Deployment" | "StatefulSet" => workload_causes(res, old, obj, &mut causes),
        "Pod" if old.is_none() => containers_causes(obj.get("spec"), "spec", &mut causes),
        "Service" => {
            let spec = &obj["spec"];
            let headless = spec["clusterIP"] == "None";
            let ports = spec.get("ports").and_then(Value::as_array);
            if ports.is_none_or(|p| p.is_empty()) && !headless && spec["type"] != "ExternalName" {
                causes.push(Cause::required("spec.ports", ""));
            }
            for (i, p) in ports.into_iter().flatten().enumerate() {
                let port = p["port"].as_i64().unwrap_or(0);
                if !(1..=65535).contains(&port) {
                    causes.push(Cause::invalid(
                        format!("spec.ports[{i}].port"),
                        &p["port"],
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
            if let Some(old_ip) = old.and_then(|o| o.pointer("/spec/clusterIP")) {
                if old_ip != &spec["clusterIP"] {
                    causes.push(Cause::invalid(
                        "spec.clusterIP",
                        &spec["clusterIP"],
                        "field is immutable",
                    ));
                }
            }
        }
        _ => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(res, name, causes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube_api::resources::lookup;

    #[test]
    fn names() {
        assert!(is_subdomain("frontend-api.v1"));
        assert!(!is_subdomain("Frontend"));
        assert!(!is_subdomain("a_b"));
        assert!(!is_subdomain("-a"));
    }

    #[test]
    fn deployment_defaults_and_errors() {
        let res = lookup("deployments").unwrap();
        let mut d = json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "web:1"}]}}}});
        default(res, None, &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        validate(res, None, &d).unwrap();
        d["spec"]["replicas"] = json!(-1);
        let e = validate(res, None, &d).unwrap_err();
        assert_eq!(
            e.message,
            "Deployment.apps \"web\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0"
        );
        d["spec"]["replicas"] = json!(1);
        d["spec"]["template"]["metadata"]["labels"]["app"] = json!("other");
        let e = validate(res, None, &d).unwrap_err();
        assert!(
            e.message
                .contains("`selector` does not match template `labels`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn secret_string_data() {
        let res = lookup("secrets").unwrap();
        let mut s = json!({"metadata": {"name": "s"}, "stringData": {"password": "hunter2"}});
        default(res, None, &mut s);
        assert_eq!(s["data"]["password"], "aHVudGVyMg==");
        assert_eq!(s["type"], "Opaque");
    }
}
