//! The HTTP face of the double: one Poem endpoint that parses Kubernetes API paths (core and
//! group, namespaced and cluster-wide, subresources), applies injected faults, and serves the
//! verbs with the status codes, content types and bodies real clients expect. Unknown API paths
//! answer `404 page not found` in plain text, like a real server.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use poem::http::{Method, StatusCode};
use poem::{Endpoint, Request, Response};
use serde_json::{json, Value};

use super::ctx::Ctx;
use super::discovery;
use super::error::{ApiError, ApiResult};
use super::faults::RecordedRequest;
use super::fields;
use super::patch;
use super::pod::PodInfo;
use super::protobuf;
use super::resources::{self, ResourceDef, Subresource};
use super::selector::{FieldSelector, LabelSelector};
use super::store::WriteOpts;
use super::table;
use super::watch::{self as watching, WatchRequest};

/// The Poem endpoint serving the whole API.
pub(crate) struct ApiEndpoint(pub Arc<Ctx>);

impl Endpoint for ApiEndpoint {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        Ok(handle(&self.0, req).await)
    }
}

fn json_response(code: u16, v: &Value) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .content_type("application/json")
        .body(serde_json::to_vec(v).unwrap_or_default())
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.to_status())
}

fn page_not_found() -> Response {
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .content_type("text/plain; charset=utf-8")
        .body("404 page not found\n")
}

/// One API request, parsed.
struct Call<'a> {
    ctx: &'a Ctx,
    res: &'static ResourceDef,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<Subresource>,
    method: Method,
    query: HashMap<String, String>,
    body: Vec<u8>,
    content_type: String,
    accept: String,
    user_agent: String,
}

async fn handle(ctx: &Ctx, mut req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or_default().to_string();
    let header = |n: &str| req.header(n).map(String::from);
    let content_type = header("content-type");
    let user_agent = header("user-agent");
    let accept = header("accept").unwrap_or_default();
    ctx.requests.push(RecordedRequest {
        method: method.to_string(),
        path: path.clone(),
        query: raw_query.clone(),
        content_type: content_type.clone(),
        user_agent: user_agent.clone(),
    });
    tracing::debug!(%method, %path, query = %raw_query, "kube double request");

    let (latency, failure) = ctx.faults.take();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(e) = failure {
        return error_response(&e);
    }
    if let Some(r) = super::portforward::intercept(ctx, &req).await {
        return r;
    }
    let body = match req.take_body().into_vec().await {
        Ok(b) => b,
        Err(e) => return error_response(&ApiError::bad_request(format!("reading the body: {e}"))),
    };
    let query: HashMap<String, String> = form_urlencoded::parse(raw_query.as_bytes())
        .into_owned()
        .filter(|(k, _)| !k.is_empty())
        .collect();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let aggregated = discovery::wants_aggregated(&accept);
    let discovery_answer = |legacy: Value, agg: fn() -> Value| {
        if aggregated {
            Response::builder()
                .content_type(discovery::AGGREGATED_CONTENT_TYPE)
                .body(serde_json::to_vec(&agg()).unwrap_or_default())
        } else {
            json_response(200, &legacy)
        }
    };
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return json_response(200, &discovery::version()),
        ["healthz"] | ["livez"] | ["readyz"] => {
            return Response::builder().content_type("text/plain").body("ok")
        }
        ["api"] => {
            return discovery_answer(
                discovery::core_versions(&ctx.server_address),
                discovery::aggregated_core,
            )
        }
        ["apis"] => return discovery_answer(discovery::group_list(), discovery::aggregated_groups),
        ["apis", g] => {
            return match discovery::group(g) {
                Some(v) => json_response(200, &v),
                None => page_not_found(),
            }
        }
        ["openapi", "v2"] => {
            let (media, body) =
                discovery::openapi_v2(accept.contains(discovery::OPENAPI_V2_PROTOBUF));
            return Response::builder().content_type(media).body(body);
        }
        ["openapi", "v3"] => return json_response(200, &discovery::openapi_v3_root()),
        ["openapi", "v3", rest @ ..] => {
            return match discovery::openapi_v3_doc(&rest.join("/")) {
                Some(doc) => json_response(200, &doc),
                None => page_not_found(),
            }
        }
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", g, v, rest @ ..] if resources::group_version_served(g, v) => (*g, *v, rest),
        _ => return page_not_found(),
    };
    if rest.is_empty() {
        return match discovery::resource_list(group, version) {
            Some(v) => json_response(200, &v),
            None => page_not_found(),
        };
    }
    let Some((res, ns, name, sub)) = parse_target(group, version, rest) else {
        return page_not_found();
    };
    if res.group == "metrics.k8s.io" {
        return metrics(ctx, &method, ns.as_deref(), name.as_deref(), &query);
    }
    let call = Call {
        ctx,
        res,
        ns,
        name,
        sub,
        method,
        query,
        body,
        content_type: content_type.unwrap_or_default(),
        accept,
        user_agent: user_agent.unwrap_or_default(),
    };
    match serve(call) {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

/// `metrics.k8s.io`: computed, read-only.
fn metrics(
    ctx: &Ctx,
    method: &Method,
    ns: Option<&str>,
    name: Option<&str>,
    query: &HashMap<String, String>,
) -> Response {
    if method != Method::GET {
        return error_response(&ApiError::method_not_allowed(method.as_str()));
    }
    let pods = resources::lookup("pods").expect("pods are served");
    let info = |p: &Value| PodInfo::from_pod(&ctx.region, p);
    if let Some(name) = name {
        return match ctx.store.get(pods, ns.unwrap_or_default(), name) {
            Some(p) => json_response(200, &super::metrics::pod_metrics(ctx, &info(&p))),
            None => error_response(&ApiError::new(
                404,
                "NotFound",
                format!("podmetrics.metrics.k8s.io \"{name}\" not found"),
            )),
        };
    }
    let labels = match LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str)) {
        Ok(l) => l,
        Err(e) => return error_response(&e),
    };
    let items: Vec<Value> = ctx
        .store
        .list(pods, ns)
        .0
        .iter()
        .filter(|p| labels.matches(p) && p.pointer("/status/phase") == Some(&json!("Running")))
        .map(|p| super::metrics::pod_metrics(ctx, &info(p)))
        .collect();
    json_response(
        200,
        &json!({"kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": items}),
    )
}

type Target = (
    &'static ResourceDef,
    Option<String>,
    Option<String>,
    Option<Subresource>,
);

fn parse_target(group: &str, version: &str, rest: &[&str]) -> Option<Target> {
    let sub_of = |res: &ResourceDef, s: &str| -> Option<Subresource> {
        let sub = match s {
            "status" => Subresource::Status,
            "scale" => Subresource::Scale,
            _ => return None,
        };
        res.has(sub).then_some(sub)
    };
    if rest.len() >= 3 && rest[0] == "namespaces" {
        if let Some(res) = resources::find(group, version, rest[2]).filter(|r| r.namespaced) {
            let ns = Some(rest[1].to_string());
            return match &rest[3..] {
                [] => Some((res, ns, None, None)),
                [name] => Some((res, ns, Some(name.to_string()), None)),
                [name, s] => Some((res, ns, Some(name.to_string()), Some(sub_of(res, s)?))),
                _ => None,
            };
        }
    }
    let res = resources::find(group, version, rest[0])?;
    match &rest[1..] {
        [] => Some((res, None, None, None)),
        [name] if !res.namespaced => Some((res, None, Some(name.to_string()), None)),
        [name, s] if !res.namespaced => {
            Some((res, None, Some(name.to_string()), Some(sub_of(res, s)?)))
        }
        _ => None,
    }
}

impl Call<'_> {
    fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }

    fn ns(&self) -> &str {
        self.ns.as_deref().unwrap_or_default()
    }

    fn opts(&self) -> WriteOpts {
        WriteOpts {
            dry_run: self.q("dryRun") == Some("All"),
            subresource: self.sub,
        }
    }

    /// The field manager: `fieldManager`, else the User-Agent's program name, as the real
    /// server derives it.
    fn manager(&self) -> String {
        if let Some(m) = self.q("fieldManager") {
            return m.to_string();
        }
        let ua = self.user_agent.split('/').next().unwrap_or_default().trim();
        if ua.is_empty() {
            "unknown".into()
        } else {
            ua.to_string()
        }
    }

    fn body_value(&self) -> ApiResult<Value> {
        let media = self.patch_kind();
        if media == protobuf::MEDIA_TYPE {
            return protobuf::decode(&self.body);
        }
        if !media.is_empty()
            && !media.ends_with("json")
            && !media.ends_with("yaml")
            && media != "*/*"
        {
            // Protobuf and CBOR are not spoken here; client-go falls back to JSON on a 415.
            return Err(ApiError::unsupported_media_type(media));
        }
        if self.body.is_empty() {
            return Err(ApiError::bad_request("the body of the request was empty"));
        }
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(v) => Ok(v),
            Err(json_err) => serde_yaml::from_slice::<Value>(&self.body).map_err(|_| {
                ApiError::bad_request(format!(
                    "couldn't get version/kind; json parse error: {json_err}"
                ))
            }),
        }
    }

    /// The body as an object of this resource's kind (type meta checked when present).
    fn body_object(&self, require_type_meta: bool) -> ApiResult<Value> {
        let v = self.body_value()?;
        if !v.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        let api_version = v.get("apiVersion").and_then(Value::as_str);
        let kind = v.get("kind").and_then(Value::as_str);
        if require_type_meta && (api_version.is_none() || kind.is_none()) {
            return Err(ApiError::bad_request(format!(
                "Object 'apiVersion' and 'Kind' are required in '{}'",
                String::from_utf8_lossy(&self.body)
            )));
        }
        if let Some(av) = api_version {
            if av != self.res.api_version() {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({av}) does not match the expected API version ({})",
                    self.res.api_version()
                )));
            }
        }
        if let Some(k) = kind {
            if k != self.res.kind {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    self.res.kind
                )));
            }
        }
        if let Some(ns) = &self.ns {
            if let Some(body_ns) = v.pointer("/metadata/namespace").and_then(Value::as_str) {
                if !body_ns.is_empty() && body_ns != ns {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
            }
        }
        if let Some(name) = &self.name {
            let body_name = v
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !body_name.is_empty() && body_name != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({name})"
                )));
            }
        }
        Ok(v)
    }

    fn patch_kind(&self) -> &str {
        self.content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
    }
}

fn serve(c: Call<'_>) -> ApiResult<Response> {
    match (&c.name, c.sub) {
        (None, _) => match c.method {
            Method::GET if matches!(c.q("watch"), Some("true" | "1")) => Ok(watch(&c)?),
            Method::GET => list(&c),
            Method::POST => create(&c),
            Method::DELETE => delete_collection(&c),
            ref m => Err(ApiError::method_not_allowed(m.as_str())),
        },
        (Some(_), None) => match c.method {
            Method::GET => get(&c),
            Method::PUT => replace(&c),
            Method::PATCH => patch_object(&c),
            Method::DELETE => delete(&c),
            ref m => Err(ApiError::method_not_allowed(m.as_str())),
        },
        (Some(_), Some(Subresource::Status)) => match c.method {
            Method::GET => get(&c),
            Method::PUT => replace(&c),
            Method::PATCH => patch_object(&c),
            ref m => Err(ApiError::method_not_allowed(m.as_str())),
        },
        (Some(_), Some(Subresource::Scale)) => match c.method {
            Method::GET => get_scale(&c),
            Method::PUT | Method::PATCH => write_scale(&c),
            ref m => Err(ApiError::method_not_allowed(m.as_str())),
        },
    }
}

fn name_of<'c>(c: &'c Call<'_>) -> &'c str {
    c.name.as_deref().unwrap_or_default()
}

/// The object the call names, or NotFound.
fn stored(c: &Call<'_>) -> ApiResult<Value> {
    c.ctx
        .store
        .get(c.res, c.ns(), name_of(c))
        .ok_or_else(|| ApiError::not_found(c.res, name_of(c)))
}

fn get(c: &Call<'_>) -> ApiResult<Response> {
    let obj = stored(c)?;
    if table::wants_table(&c.accept) {
        return Ok(json_response(
            200,
            &table::render(c.res, &[obj], None, c.q("includeObject") == Some("Object")),
        ));
    }
    Ok(json_response(200, &obj))
}

fn selected(c: &Call<'_>) -> ApiResult<(Vec<Value>, u64)> {
    let labels = LabelSelector::parse(c.q("labelSelector").unwrap_or_default())?;
    let fields = FieldSelector::parse_for(c.res.plural, c.q("fieldSelector").unwrap_or_default())?;
    let (items, rv) = c.ctx.store.list(c.res, c.ns.as_deref());
    let items = items
        .into_iter()
        .filter(|o| labels.matches(o) && fields.matches(o))
        .collect();
    Ok((items, rv))
}

fn list_body(c: &Call<'_>, items: Vec<Value>, rv: u64) -> Value {
    let items: Vec<Value> = items
        .into_iter()
        .map(|mut o| {
            // The real server omits apiVersion/kind on list items.
            if let Some(m) = o.as_object_mut() {
                m.remove("apiVersion");
                m.remove("kind");
            }
            o
        })
        .collect();
    json!({
        "kind": format!("{}List", c.res.kind),
        "apiVersion": c.res.api_version(),
        "metadata": {"resourceVersion": rv.to_string()},
        "items": items,
    })
}

fn list(c: &Call<'_>) -> ApiResult<Response> {
    let (items, rv) = selected(c)?;
    if table::wants_table(&c.accept) {
        return Ok(json_response(
            200,
            &table::render(
                c.res,
                &items,
                Some(rv),
                c.q("includeObject") == Some("Object"),
            ),
        ));
    }
    Ok(json_response(200, &list_body(c, items, rv)))
}

fn watch(c: &Call<'_>) -> ApiResult<Response> {
    let since = match c.q("resourceVersion") {
        None | Some("") | Some("0") => None,
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))?,
        ),
    };
    let timeout = c
        .q("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let req = WatchRequest {
        res: c.res,
        namespace: c.ns.clone(),
        labels: LabelSelector::parse(c.q("labelSelector").unwrap_or_default())?,
        fields: FieldSelector::parse_for(c.res.plural, c.q("fieldSelector").unwrap_or_default())?,
        since,
        timeout,
        bookmarks: c.q("allowWatchBookmarks") == Some("true"),
        send_initial_events: c.q("sendInitialEvents") == Some("true"),
        bookmark_interval: c.ctx.bookmark_interval,
    };
    Ok(watching::serve(
        c.ctx.store.clone(),
        req,
        c.ctx.down.clone(),
    ))
}

fn create(c: &Call<'_>) -> ApiResult<Response> {
    let mut obj = c.body_object(false)?;
    if let Some(ns) = &c.ns {
        obj["metadata"]["namespace"] = json!(ns);
    }
    fields::record_update(None, &mut obj, &c.manager(), None, &c.res.api_version());
    let created = c.ctx.store.create(c.res, obj, c.opts())?;
    Ok(json_response(201, &created))
}

fn replace(c: &Call<'_>) -> ApiResult<Response> {
    let mut obj = c.body_object(false)?;
    obj["metadata"]["name"] = json!(name_of(c));
    if let Some(ns) = &c.ns {
        obj["metadata"]["namespace"] = json!(ns);
    }
    let manager = c.manager();
    let sub = c.sub.map(Subresource::name);
    let updated = c
        .ctx
        .store
        .update(c.res, c.ns(), name_of(c), c.opts(), |old| {
            if c.sub.is_none() {
                // Managed fields are the server's: a replace keeps them.
                if let Some(mf) = old.pointer("/metadata/managedFields") {
                    obj["metadata"]["managedFields"] = mf.clone();
                }
                fields::record_update(Some(old), &mut obj, &manager, sub, &c.res.api_version());
            }
            Ok(obj)
        })?;
    Ok(json_response(200, &updated))
}

fn apply_patch(kind: &str, target: &mut Value, body: &Value) -> ApiResult<()> {
    match kind {
        "application/merge-patch+json" => {
            patch::merge_patch(target, body);
            Ok(())
        }
        "application/strategic-merge-patch+json" => patch::strategic_merge(target, body),
        "application/json-patch+json" => patch::json_patch(target, body),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

fn require_manager(c: &Call<'_>) -> ApiResult<String> {
    match c.q("fieldManager") {
        Some(m) if !m.is_empty() => Ok(m.to_string()),
        _ => Err(ApiError::new(
            422,
            "Invalid",
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        )),
    }
}

fn patch_object(c: &Call<'_>) -> ApiResult<Response> {
    let kind = c.patch_kind().to_string();
    let name = name_of(c);
    if kind == "application/apply-patch+yaml" {
        let manager = require_manager(c)?;
        let applied = c.body_object(true)?;
        if applied.pointer("/metadata/managedFields").is_some() {
            return Err(ApiError::bad_request("metadata.managedFields must be nil"));
        }
        let force = c.q("force") == Some("true");
        let api_version = c.res.api_version();
        let (obj, created) = c.ctx.store.upsert(c.res, c.ns(), name, c.opts(), |old| {
            fields::apply(old, &applied, &manager, force, &api_version)
        })?;
        return Ok(json_response(if created { 201 } else { 200 }, &obj));
    }
    let body = c.body_value()?;
    let manager = c.manager();
    let sub = c.sub.map(Subresource::name);
    let updated = c.ctx.store.update(c.res, c.ns(), name, c.opts(), |old| {
        let mut new = old.clone();
        apply_patch(&kind, &mut new, &body)?;
        if new.pointer("/metadata/name") != old.pointer("/metadata/name") {
            return Err(ApiError::bad_request(
                "metadata.name cannot be changed by a patch",
            ));
        }
        if c.sub.is_none() {
            fields::record_update(Some(old), &mut new, &manager, sub, &c.res.api_version());
        }
        Ok(new)
    })?;
    Ok(json_response(200, &updated))
}

fn delete_options(c: &Call<'_>) -> ApiResult<(WriteOpts, Value)> {
    let mut opts = c.opts();
    let body = if c.body.is_empty() {
        json!({})
    } else {
        c.body_value()?
    };
    if body["dryRun"]
        .as_array()
        .is_some_and(|a| a.iter().any(|v| v == "All"))
    {
        opts.dry_run = true;
    }
    Ok((opts, body))
}

fn delete(c: &Call<'_>) -> ApiResult<Response> {
    let name = name_of(c);
    let (opts, body) = delete_options(c)?;
    if let Some(pre) = body.get("preconditions").filter(|p| p.is_object()) {
        let current = c
            .ctx
            .store
            .get(c.res, c.ns(), name)
            .ok_or_else(|| ApiError::not_found(c.res, name))?;
        for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
            if let Some(want) = pre.get(field).and_then(Value::as_str) {
                let have = current["metadata"][field].as_str().unwrap_or_default();
                if want != have {
                    let mut e = ApiError::conflict(c.res, name);
                    e.message = format!(
                        "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: {label} in precondition: {want}, {label} in object meta: {have}",
                        c.res.qualified_resource()
                    );
                    return Err(e);
                }
            }
        }
    }
    let obj = c.ctx.store.delete(c.res, c.ns(), name, opts)?;
    if matches!(c.res.plural, "pods" | "namespaces") {
        return Ok(json_response(200, &obj));
    }
    let mut details = json!({"name": name, "kind": c.res.plural, "uid": obj["metadata"]["uid"]});
    if !c.res.group.is_empty() {
        details["group"] = json!(c.res.group);
    }
    Ok(json_response(
        200,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
    ))
}

fn delete_collection(c: &Call<'_>) -> ApiResult<Response> {
    if c.res.plural == "namespaces" {
        return Err(ApiError::method_not_allowed("DELETE"));
    }
    let (opts, _) = delete_options(c)?;
    let (items, _) = selected(c)?;
    let mut deleted = Vec::new();
    for o in items {
        let ns = o["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = o["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match c.ctx.store.delete(c.res, &ns, &name, opts) {
            Ok(d) => deleted.push(d),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let rv = c.ctx.store.resource_version();
    Ok(json_response(200, &list_body(c, deleted, rv)))
}

/// The `autoscaling/v1` Scale view of a Deployment or StatefulSet.
pub(crate) fn to_scale(obj: &Value) -> Value {
    let selector = obj
        .pointer("/spec/selector")
        .map(|s| LabelSelector::from_label_selector(s).render())
        .unwrap_or_default();
    let mut meta = json!({});
    for f in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = obj["metadata"].get(f) {
            meta[f] = v.clone();
        }
    }
    let mut spec = json!({});
    if let Some(r) = obj
        .pointer("/spec/replicas")
        .filter(|r| r.as_i64() != Some(0))
    {
        spec["replicas"] = r.clone();
    }
    let mut status =
        json!({"replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0))});
    if !selector.is_empty() {
        status["selector"] = json!(selector);
    }
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": meta, "spec": spec, "status": status})
}

fn get_scale(c: &Call<'_>) -> ApiResult<Response> {
    let obj = stored(c)?;
    Ok(json_response(200, &to_scale(&obj)))
}

fn write_scale(c: &Call<'_>) -> ApiResult<Response> {
    let name = name_of(c).to_string();
    let body = c.body_value()?;
    let kind = c.patch_kind().to_string();
    let manager = if kind == "application/apply-patch+yaml" {
        require_manager(c)?
    } else {
        c.manager()
    };
    let is_put = c.method == Method::PUT;
    let api_version = c.res.api_version();
    let opts = WriteOpts {
        subresource: None,
        ..c.opts()
    };
    let updated = c.ctx.store.update(c.res, c.ns(), &name, opts, |old| {
        let mut scale = to_scale(old);
        if is_put {
            scale = body.clone();
        } else if kind == "application/apply-patch+yaml" {
            patch::merge_patch(&mut scale, &body);
        } else {
            apply_patch(&kind, &mut scale, &body)?;
        }
        let replicas = scale.pointer("/spec/replicas").cloned().unwrap_or(json!(0));
        if replicas.as_i64().is_none_or(|r| r < 0) {
            return Err(ApiError {
                code: 422,
                reason: "Invalid".into(),
                message: format!(
                    "Scale.autoscaling \"{name}\" is invalid: spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"
                ),
                details: Some(json!({"name": name, "group": "autoscaling", "kind": "Scale",
                    "causes": [{"reason": "FieldValueInvalid", "message": format!("Invalid value: {replicas}: must be greater than or equal to 0"), "field": "spec.replicas"}]})),
            });
        }
        let mut new = old.clone();
        new["spec"]["replicas"] = replicas;
        if let Some(rv) = scale.pointer("/metadata/resourceVersion").and_then(Value::as_str) {
            if rv != old["metadata"]["resourceVersion"].as_str().unwrap_or_default() {
                return Err(ApiError::conflict(c.res, &name));
            }
        }
        fields::record_update(Some(old), &mut new, &manager, Some("scale"), &api_version);
        Ok(new)
    })?;
    Ok(json_response(200, &to_scale(&updated)))
}
