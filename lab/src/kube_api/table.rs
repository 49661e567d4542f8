//! Server-side printing (`meta.k8s.io/v1` Table), so that plain `kubectl get pods` or
//! `kubectl get deploy` against the lab shows the familiar READY / STATUS / AGE columns instead
//! of only NAME and AGE.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::resources::ResourceDef;

/// Whether the Accept header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept.split(',').any(|media| {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        params.contains(&"as=Table") && params.contains(&"g=meta.k8s.io")
    })
}

/// Kubernetes' short "age" rendering (`45s`, `5m3s`, `17m`, `3h5m`, `12h`, `4d`).
pub fn human_age(created: &str) -> String {
    let Ok(t) = DateTime::parse_from_rfc3339(created) else {
        return "<unknown>".into();
    };
    let secs = (Utc::now() - t.with_timezone(&Utc)).num_seconds().max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86_400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        let s = secs % 60;
        if s == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{s}s")
        }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        let mm = m % 60;
        if mm == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{mm}m")
        }
    } else if h < 48 {
        format!("{h}h")
    } else {
        format!("{d}d")
    }
}

fn col(name: &str, ty: &str, priority: u8) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": ty, "format": format, "description": "", "priority": priority})
}

fn int(v: Option<&Value>) -> i64 {
    v.and_then(Value::as_i64).unwrap_or(0)
}

fn columns(res: &ResourceDef) -> Vec<Value> {
    let names: &[(&str, &str, u8)] = match res.plural {
        "pods" => &[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
        ],
        "deployments" => &[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Age", "string", 0),
        ],
        "statefulsets" => &[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Age", "string", 0),
        ],
        "services" => &[
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            ("Age", "string", 0),
            ("Selector", "string", 1),
        ],
        "events" => &[
            ("Last Seen", "string", 0),
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Subobject", "string", 1),
            ("Source", "string", 1),
            ("Message", "string", 0),
            ("First Seen", "string", 1),
            ("Count", "string", 1),
            ("Name", "string", 1),
        ],
        "configmaps" => &[
            ("Name", "string", 0),
            ("Data", "integer", 0),
            ("Age", "string", 0),
        ],
        "secrets" => &[
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Data", "integer", 0),
            ("Age", "string", 0),
        ],
        "namespaces" => &[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Age", "string", 0),
        ],
        _ => &[("Name", "string", 0), ("Age", "string", 0)],
    };
    names.iter().map(|(n, t, p)| col(n, t, *p)).collect()
}

fn cells(res: &ResourceDef, o: &Value) -> Vec<Value> {
    let name = json!(o["metadata"]["name"]);
    let age = json!(human_age(
        o["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap_or_default()
    ));
    let st = &o["status"];
    match res.plural {
        "events" => {
            // Core and events.k8s.io field names (printEvent).
            let pick = |a: &str, b: &str| {
                let v = &o[a];
                if v.is_null() {
                    o[b].clone()
                } else {
                    v.clone()
                }
            };
            let seen = |v: Value| json!(v.as_str().map_or("<unknown>".to_string(), human_age));
            let last = pick("lastTimestamp", "deprecatedLastTimestamp");
            let last = if last.is_null() {
                o["eventTime"].clone()
            } else {
                last
            };
            let first = pick("firstTimestamp", "deprecatedFirstTimestamp");
            let obj = pick("involvedObject", "regarding");
            let source = pick("source", "deprecatedSource");
            let count = pick("count", "deprecatedCount");
            vec![
                seen(last),
                o["type"].clone(),
                o["reason"].clone(),
                json!(format!(
                    "{}/{}",
                    obj["kind"].as_str().unwrap_or_default().to_lowercase(),
                    obj["name"].as_str().unwrap_or_default()
                )),
                json!(obj["fieldPath"].as_str().unwrap_or_default()),
                json!(source["component"].as_str().unwrap_or_default()),
                pick("message", "note"),
                seen(first),
                json!(count.as_i64().unwrap_or(1).to_string()),
                name,
            ]
        }
        "pods" => {
            let total = o
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let ready = st["containerStatuses"]
                .as_array()
                .map_or(0, |a| a.iter().filter(|c| c["ready"] == true).count());
            let phase = st["phase"].as_str().unwrap_or("Pending");
            let status = st["containerStatuses"]
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .find_map(|c| c.pointer("/state/waiting/reason").and_then(Value::as_str))
                })
                .unwrap_or(phase);
            // kubectl's printer: the restarts, and how long ago the last one was.
            let statuses = st["containerStatuses"].as_array();
            let restarts: i64 = statuses.map_or(0, |a| {
                a.iter().filter_map(|c| c["restartCount"].as_i64()).sum()
            });
            let last = statuses.and_then(|a| {
                a.iter()
                    .filter_map(|c| c.pointer("/lastState/terminated/finishedAt")?.as_str())
                    .max()
            });
            let restarts = match last {
                Some(t) if restarts > 0 => format!("{restarts} ({} ago)", human_age(t)),
                _ => restarts.to_string(),
            };
            let ip = st["podIP"].as_str().unwrap_or("<none>");
            let node = o
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or("<none>");
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(status),
                json!(restarts),
                age,
                json!(ip),
                json!(node),
            ]
        }
        "deployments" => vec![
            name,
            json!(format!(
                "{}/{}",
                int(st.get("readyReplicas")),
                int(o.pointer("/spec/replicas"))
            )),
            json!(int(st.get("updatedReplicas"))),
            json!(int(st.get("availableReplicas"))),
            age,
        ],
        "statefulsets" => vec![
            name,
            json!(format!(
                "{}/{}",
                int(st.get("readyReplicas")),
                int(o.pointer("/spec/replicas"))
            )),
            age,
        ],
        "services" => {
            let spec = &o["spec"];
            let ports: Vec<String> = spec["ports"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|p| {
                            format!(
                                "{}/{}",
                                int(p.get("port")),
                                p["protocol"].as_str().unwrap_or("TCP")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let selector: Vec<String> = spec["selector"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect()
                })
                .unwrap_or_default();
            vec![
                name,
                json!(spec["type"].as_str().unwrap_or("ClusterIP")),
                json!(spec["clusterIP"].as_str().unwrap_or("<none>")),
                json!("<none>"),
                json!(if ports.is_empty() {
                    "<none>".to_string()
                } else {
                    ports.join(",")
                }),
                age,
                json!(if selector.is_empty() {
                    "<none>".to_string()
                } else {
                    selector.join(",")
                }),
            ]
        }
        "configmaps" => {
            let n = o["data"].as_object().map_or(0, |m| m.len())
                + o["binaryData"].as_object().map_or(0, |m| m.len());
            vec![name, json!(n), age]
        }
        "secrets" => {
            let n = o["data"].as_object().map_or(0, |m| m.len());
            vec![
                name,
                json!(o["type"].as_str().unwrap_or("Opaque")),
                json!(n),
                age,
            ]
        }
        "namespaces" => vec![name, json!(st["phase"].as_str().unwrap_or("Active")), age],
        _ => vec![name, age],
    }
}

/// The Table for `items` (`list_rv` is set for lists, None for a single object).
/// With `full_objects` (`includeObject=Object`, what `kubectl get --sort-by` asks for) each
/// row carries the whole object, else its metadata only.
pub fn render(
    res: &ResourceDef,
    items: &[Value],
    list_rv: Option<u64>,
    full_objects: bool,
) -> Value {
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let object = if full_objects {
                let mut full = o.clone();
                full["apiVersion"] = json!(res.api_version());
                full["kind"] = json!(res.kind);
                full
            } else {
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]})
            };
            json!({"cells": cells(res, o), "object": object})
        })
        .collect();
    let mut meta = json!({});
    if let Some(rv) = list_rv {
        meta["resourceVersion"] = json!(rv.to_string());
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": columns(res),
        "rows": rows,
    })
}
