//! Discovery documents (`/version`, `/api`, `/api/v1`, `/apis`, `/apis/<g>/<v>`), in the legacy
//! form and in the aggregated `apidiscovery.k8s.io/v2` form kubectl 1.32 and kube's
//! `run_aggregated` ask for first. Both are generated from the one resource table.

use serde_json::{json, Value};

use super::resources::{groups, ResourceDef, Subresource, RESOURCES, SUBRESOURCE_VERBS};

/// The Content-Type of an aggregated discovery answer.
pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether the Accept header asks for aggregated discovery (`apidiscovery.k8s.io/v2`).
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|media| {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        params.contains(&"as=APIGroupDiscoveryList")
            && params.contains(&"v=v2")
            && params.contains(&"g=apidiscovery.k8s.io")
    })
}

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.0-drdctl-lab",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.23.0",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

/// `/api` (legacy form).
pub fn core_versions(server_addr: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_addr}]
    })
}

fn group_version(g: &str, v: &str) -> Value {
    json!({"groupVersion": format!("{g}/{v}"), "version": v})
}

/// `/apis` (legacy form).
pub fn group_list() -> Value {
    let groups: Vec<Value> = groups()
        .into_iter()
        .map(|(g, v)| json!({"name": g, "versions": [group_version(g, v)], "preferredVersion": group_version(g, v)}))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>` (legacy form), if the group is served.
pub fn group(name: &str) -> Option<Value> {
    groups().into_iter().find(|(g, _)| *g == name).map(|(g, v)| {
        json!({"kind": "APIGroup", "apiVersion": "v1", "name": g, "versions": [group_version(g, v)], "preferredVersion": group_version(g, v)})
    })
}

fn scale_kind() -> Value {
    json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
}

/// `/api/v1` or `/apis/<g>/<v>` (legacy form), if served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let served: Vec<&ResourceDef> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if served.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for r in served {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs(),
        });
        add_names(&mut entry, r);
        resources.push(entry);
        for sub in r.subresources {
            let mut s = json!({
                "name": format!("{}/{}", r.plural, sub.name()),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": SUBRESOURCE_VERBS,
            });
            if *sub == Subresource::Scale {
                s["group"] = json!("autoscaling");
                s["version"] = json!("v1");
                s["kind"] = json!("Scale");
            }
            resources.push(s);
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

/// The short names and categories of `r`, when it has any, on its discovery entry.
fn add_names(entry: &mut Value, r: &ResourceDef) {
    if !r.short_names.is_empty() {
        entry["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        entry["categories"] = json!(r.categories);
    }
}

fn aggregated_resources(group: &str, version: &str) -> Vec<Value> {
    RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .map(|r| {
            let mut entry = json!({
                "resource": r.plural,
                "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": r.singular,
                "verbs": r.verbs(),
            });
            add_names(&mut entry, r);
            if !r.subresources.is_empty() {
                let subs: Vec<Value> = r
                    .subresources
                    .iter()
                    .map(|s| {
                        let kind = if *s == Subresource::Scale {
                            scale_kind()
                        } else {
                            json!({"group": r.group, "version": r.version, "kind": r.kind})
                        };
                        json!({"subresource": s.name(), "responseKind": kind, "verbs": SUBRESOURCE_VERBS})
                    })
                    .collect();
                entry["subresources"] = json!(subs);
            }
            entry
        })
        .collect()
}

fn aggregated_group(name: &str, version: &str) -> Value {
    json!({
        "metadata": {"name": name, "creationTimestamp": null},
        "versions": [{"version": version, "resources": aggregated_resources(name, version), "freshness": "Current"}]
    })
}

/// `/api` in the aggregated form.
pub fn aggregated_core() -> Value {
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": [aggregated_group("", "v1")]
    })
}

/// `/apis` in the aggregated form.
pub fn aggregated_groups() -> Value {
    let items: Vec<Value> = groups()
        .into_iter()
        .map(|(g, v)| aggregated_group(g, v))
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items
    })
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: the index of per-group-version documents.
pub fn openapi_v3_root() -> Value {
    let mut paths = serde_json::Map::new();
    let mut gvs = vec![("", "v1")];
    gvs.extend(groups());
    for (g, v) in gvs {
        let p = gv_path(g, v);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=lab0")}),
        );
    }
    json!({ "paths": paths })
}

/// `/openapi/v3/<api|apis/g>/<v>`: a minimal OpenAPI document. It declares, per kind, the PATCH
/// operation with its `fieldValidation` parameter (so kubectl hands validation to the server,
/// which accepts `fieldValidation`) and a permissive object schema tagged with the kind.
pub fn openapi_v3_doc(path: &str) -> Option<Value> {
    let mut gvs = vec![("", "v1")];
    gvs.extend(groups());
    let (group, version) = gvs.into_iter().find(|(g, v)| gv_path(g, v) == path)?;
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let object_path = if r.namespaced {
            format!(
                "/{}/namespaces/{{namespace}}/{}/{{name}}",
                gv_path(group, version),
                r.plural
            )
        } else {
            format!("/{}/{}/{{name}}", gv_path(group, version), r.plural)
        };
        let params = json!([
            {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
            {"name": "force", "in": "query", "schema": {"type": "boolean"}}
        ]);
        paths.insert(
            object_path,
            json!({"patch": {
                "operationId": format!("patch{}", r.kind),
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": gvk,
                "parameters": params,
                "responses": {"200": {"description": "OK"}}
            }}),
        );
        let schema_name = if group.is_empty() {
            format!("io.k8s.api.core.{version}.{}", r.kind)
        } else {
            format!(
                "io.k8s.api.{}.{version}.{}",
                group.split('.').next().unwrap_or(group),
                r.kind
            )
        };
        schemas.insert(
            schema_name,
            json!({
                "type": "object",
                "x-kubernetes-group-version-kind": [gvk],
                "x-kubernetes-preserve-unknown-fields": true
            }),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas}
    }))
}

/// The media type kubectl up to 1.26 asks `/openapi/v2` for (a gnostic `openapi_v2.Document`).
pub const OPENAPI_V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

fn pb_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    // Wire type 2 (length-delimited); field numbers and lengths as varints.
    let varint = |mut v: u64, out: &mut Vec<u8>| loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    };
    varint(u64::from(field << 3 | 2), out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// `/openapi/v2` as kubectl 1.20 reads it: a Swagger 2.0 document with no definitions
/// (validation then has no schema to check against, as for a CRD without one; `apply
/// --server-side` and `diff` leave the checking to the server), and per resource the PATCH
/// operation with its group-version-kind and `dryRun` parameter (what `diff` checks).
/// `protobuf`: the gnostic `openapi_v2.Document` encoding; JSON otherwise (paths omitted).
pub fn openapi_v2(protobuf: bool) -> (String, Vec<u8>) {
    if !protobuf {
        let doc = json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.32.0"},
            "paths": {}, "definitions": {}});
        return (
            "application/json".into(),
            serde_json::to_vec(&doc).unwrap_or_default(),
        );
    }
    let mut info = Vec::new();
    pb_field(&mut info, 1, b"Kubernetes");
    pb_field(&mut info, 2, b"v1.32.0");
    // Paths: each resource's PATCH operation with its group-version-kind and a `dryRun` query
    // parameter, which kubectl 1.20's `diff` looks for before a server-side dry run.
    let mut paths = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.group != "metrics.k8s.io") {
        let path = format!("{}/{{name}}", r.collection_path(Some("{namespace}")));
        let mut query = Vec::new();
        pb_field(&mut query, 2, b"query"); // in
        pb_field(&mut query, 4, b"dryRun"); // name
        let mut non_body = Vec::new();
        pb_field(&mut non_body, 3, &query); // query_parameter_sub_schema
        let mut parameter = Vec::new();
        pb_field(&mut parameter, 2, &non_body); // non_body_parameter
        let mut item = Vec::new();
        pb_field(&mut item, 1, &parameter); // ParametersItem.parameter
        let yaml = format!(
            "group: \"{}\"\nversion: {}\nkind: {}\n",
            r.group, r.version, r.kind
        );
        let mut any = Vec::new();
        pb_field(&mut any, 2, yaml.as_bytes()); // Any.yaml
        let mut ext = Vec::new();
        pb_field(&mut ext, 1, b"x-kubernetes-group-version-kind");
        pb_field(&mut ext, 2, &any);
        let mut op = Vec::new();
        pb_field(&mut op, 8, &item); // parameters
        pb_field(&mut op, 13, &ext); // vendor_extension
        let mut path_item = Vec::new();
        pb_field(&mut path_item, 8, &op); // patch
        let mut named = Vec::new();
        pb_field(&mut named, 1, path.as_bytes());
        pb_field(&mut named, 2, &path_item);
        pb_field(&mut paths, 2, &named); // Paths.path
    }
    let mut doc = Vec::new();
    pb_field(&mut doc, 1, b"2.0");
    pb_field(&mut doc, 2, &info);
    pb_field(&mut doc, 8, &paths);
    // kube-openapi answers the protobuf form as an octet stream (Go's mime parser rejects the
    // `@` of the requested media type).
    ("application/octet-stream".into(), doc)
}
