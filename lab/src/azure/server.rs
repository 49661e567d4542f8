//! The HTTP face of the Azure double: one Poem endpoint serving the ARM DNS record-set and zone
//! paths (`/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Network/dnsZones/{zone}
//! [/{type}/{name}]?api-version=2018-05-01`) with ARM's JSON, ETags, status codes and
//! `CloudError` bodies, and the Entra token endpoint (`/{tenant}/oauth2/v2.0/token`). Order of
//! checks follows ARM: latency, authentication, injected faults (throttling happens after
//! authentication), api-version, then the resource.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use poem::http::{HeaderMap, Method, StatusCode};
use poem::{Endpoint, Request, Response};
use serde_json::{json, Value};

use super::faults::{ArmFaults, Endpoint as Which, Fault, RecordedRequest, RequestLog};
use super::store::{AzureStore, Patch, Preconditions, RecordSet, Records, WriteError, ZoneId};
use super::token::TokenIssuer;

/// The one api-version the double (and drdctl) speaks: the current GA version of Azure DNS.
pub const API_VERSION: &str = "2018-05-01";

/// What every request handler can reach.
pub(crate) struct Ctx {
    pub store: Arc<AzureStore>,
    pub faults: Arc<ArmFaults>,
    pub requests: Arc<RequestLog>,
    pub tokens: Arc<TokenIssuer>,
    pub blobs: Arc<super::blob::BlobStore>,
}

/// The Poem endpoint serving ARM and the token endpoint.
pub(crate) struct AzureEndpoint(pub Arc<Ctx>);

impl Endpoint for AzureEndpoint {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        Ok(handle(&self.0, req).await)
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.to_string())
}

fn json_response(status: u16, body: &Value, request_id: &str) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .content_type("application/json; charset=utf-8")
        .header("x-ms-request-id", request_id)
        .header("x-ms-correlation-request-id", request_id)
        .header("x-ms-ratelimit-remaining-subscription-reads", "11999")
        .header("x-ms-ratelimit-remaining-subscription-writes", "1199")
        .body(serde_json::to_vec(body).unwrap_or_default())
}

fn default_code(status: u16) -> &'static str {
    match status {
        400 => "BadRequest",
        401 => "AuthenticationFailed",
        403 => "AuthorizationFailed",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        412 => "PreconditionFailed",
        429 => "TooManyRequests",
        500 => "InternalServerError",
        502 => "BadGateway",
        503 => "ServiceUnavailable",
        504 => "GatewayTimeout",
        _ => "Error",
    }
}

/// An ARM `CloudError`.
struct ArmError {
    status: u16,
    code: String,
    message: String,
    retry_after: Option<u64>,
}

impl ArmError {
    fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        ArmError {
            status,
            code: code.to_string(),
            message: message.into(),
            retry_after: None,
        }
    }

    fn for_status(status: u16) -> Self {
        let message = match status {
            500 => "An internal server error occurred (injected by the lab).".to_string(),
            502 => "The gateway did not receive a response (injected by the lab).".to_string(),
            503 => "The service is temporarily unavailable (injected by the lab).".to_string(),
            504 => "The gateway timed out (injected by the lab).".to_string(),
            s => format!("Injected failure with status {s}."),
        };
        ArmError::new(status, default_code(status), message)
    }

    fn into_response(self, request_id: &str) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        let mut resp = json_response(self.status, &body, request_id);
        resp.headers_mut().insert(
            "x-ms-failure-cause",
            poem::http::HeaderValue::from_static("gateway"),
        );
        if let Some(secs) = self.retry_after {
            if let Ok(v) = poem::http::HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert("retry-after", v);
            }
        }
        resp
    }
}

async fn handle(ctx: &Ctx, req: Request) -> Response {
    let method = req.method().clone();
    let raw_path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let headers = req.headers().clone();
    let body = req.into_body().into_vec().await.unwrap_or_default();
    let segs: Vec<String> = raw_path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let mut rec = RecordedRequest {
        at: Instant::now(),
        endpoint: Which::Unknown,
        method: method.to_string(),
        path: format!("/{}", segs.join("/")),
        query: query.clone(),
        if_match: header(&headers, "if-match"),
        if_none_match: header(&headers, "if-none-match"),
        authorized: false,
        client_id: None,
        grant_type: None,
        body: None,
        status: 0,
    };
    let request_id = uuid::Uuid::new_v4().to_string();
    let response =
        if segs.len() == 4 && segs[1] == "oauth2" && segs[2] == "v2.0" && segs[3] == "token" {
            rec.endpoint = Which::Token;
            token(ctx, &method, &segs[0], &body, &mut rec)
        } else if segs
            .first()
            .is_some_and(|s| s.eq_ignore_ascii_case("subscriptions"))
        {
            rec.endpoint = Which::Arm;
            arm(
                ctx,
                &method,
                &segs,
                &query,
                &headers,
                &body,
                &mut rec,
                &request_id,
            )
            .await
        } else if segs.len() >= 2 {
            // Blob storage: /{container}/{blob} (the witness term).
            rec.endpoint = Which::Blob;
            let latency = ctx.faults.latency();
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            let authorized = bearer(&headers).map(|t| ctx.tokens.is_valid(&t));
            rec.authorized = authorized == Some(true);
            super::blob::handle(
                &ctx.blobs,
                &method,
                &segs,
                &headers,
                body,
                authorized,
                &request_id,
            )
        } else {
            ArmError::new(
                404,
                "NotFound",
                format!("No HTTP resource was found that matches the request URI '{raw_path}'."),
            )
            .into_response(&request_id)
        };
    rec.status = response.status().as_u16();
    tracing::debug!(method = %rec.method, path = %rec.path, status = rec.status, "azure double");
    ctx.requests.push(rec);
    response
}

fn token(
    ctx: &Ctx,
    method: &Method,
    tenant: &str,
    body: &[u8],
    rec: &mut RecordedRequest,
) -> Response {
    let form: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
    rec.client_id = form.get("client_id").cloned();
    rec.grant_type = form.get("grant_type").cloned();
    let (status, body) = if *method != Method::POST {
        (
            405,
            json!({"error": "invalid_request", "error_description": "AADSTS900561: The endpoint only accepts POST requests."}),
        )
    } else {
        ctx.tokens.token(tenant, &form)
    };
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST))
        .content_type("application/json; charset=utf-8")
        .header("cache-control", "no-store, no-cache")
        .body(serde_json::to_vec(&body).unwrap_or_default())
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = header(headers, "authorization")?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

#[allow(clippy::too_many_arguments)]
async fn arm(
    ctx: &Ctx,
    method: &Method,
    segs: &[String],
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
    rec: &mut RecordedRequest,
    request_id: &str,
) -> Response {
    let latency = ctx.faults.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match bearer(headers) {
        None => {
            return ArmError::new(
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
            )
            .into_response(request_id)
        }
        Some(t) if !ctx.tokens.is_valid(&t) => {
            return ArmError::new(
                401,
                "InvalidAuthenticationToken",
                "The access token is invalid.",
            )
            .into_response(request_id)
        }
        Some(_) => rec.authorized = true,
    }
    if let Some(fault) = ctx.faults.take_next() {
        let err = match fault {
            Fault::Status(s) => ArmError::for_status(s),
            Fault::Throttle { retry_after_secs } => {
                let mut e = ArmError::new(
                    429,
                    "TooManyRequests",
                    format!(
                        "The request is being throttled as the limit has been reached for \
                         operation type - Write_ObservationWindow_00:05:00. Retry after \
                         {retry_after_secs} seconds."
                    ),
                );
                e.retry_after = Some(retry_after_secs);
                e
            }
        };
        return err.into_response(request_id);
    }
    let api_version = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "api-version")
        .map(|(_, v)| v.into_owned());
    match api_version.as_deref() {
        None => {
            return ArmError::new(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
            .into_response(request_id)
        }
        Some(API_VERSION) => {}
        Some(v) => {
            return ArmError::new(
                400,
                "NoRegisteredProviderFound",
                format!(
                    "No registered resource provider found for location 'global' and API \
                     version '{v}' for type 'dnszones'. The supported api-versions are \
                     '{API_VERSION}' (lab double)."
                ),
            )
            .into_response(request_id)
        }
    }
    let literal = |i: usize, want: &str| segs.get(i).is_some_and(|s| s.eq_ignore_ascii_case(want));
    let shape_ok = (segs.len() == 8 || segs.len() == 10)
        && literal(2, "resourceGroups")
        && literal(4, "providers")
        && literal(5, "Microsoft.Network")
        && literal(6, "dnsZones");
    if !shape_ok {
        return ArmError::new(
            400,
            "InvalidResourceType",
            format!(
                "The resource type could not be found for path '/{}' (the lab double serves \
                 Microsoft.Network/dnsZones and their record sets).",
                segs.join("/")
            ),
        )
        .into_response(request_id);
    }
    let zone_id = ZoneId::new(&segs[1], &segs[3], &segs[7]);
    let Some(zone) = ctx.store.zone(&zone_id) else {
        let err = if ctx
            .store
            .resource_group_exists(&zone_id.subscription, &zone_id.resource_group)
        {
            ArmError::new(
                404,
                "ResourceNotFound",
                format!(
                    "The Resource 'Microsoft.Network/dnszones/{}' under resource group '{}' was \
                     not found. For more details please go to \
                     https://aka.ms/ARMResourceNotFoundFix",
                    zone_id.zone, zone_id.resource_group
                ),
            )
        } else {
            ArmError::new(
                404,
                "ResourceGroupNotFound",
                format!(
                    "Resource group '{}' could not be found.",
                    zone_id.resource_group
                ),
            )
        };
        return err.into_response(request_id);
    };
    if segs.len() == 8 {
        if *method != Method::GET {
            return ArmError::new(405, "MethodNotAllowed", "The lab double only reads zones.")
                .into_response(request_id);
        }
        return json_response(200, &zone.to_arm_json(), request_id);
    }
    let rtype = segs[8].to_ascii_uppercase();
    let name = segs[9].clone();
    if rtype != "A" && rtype != "CNAME" {
        return ArmError::new(
            400,
            "BadRequest",
            format!(
                "Record type '{}' is not served by the lab double (it serves A and CNAME).",
                segs[8]
            ),
        )
        .into_response(request_id);
    }
    let not_found = || {
        ArmError::new(
            404,
            "NotFound",
            format!(
                "The resource record '{name}' does not exist in resource group '{}' of \
                 subscription '{}'.",
                zone_id.resource_group, zone_id.subscription
            ),
        )
        .into_response(request_id)
    };
    let pre = Preconditions {
        if_match: rec.if_match.clone(),
        if_none_match: rec.if_none_match.clone(),
    };
    match *method {
        Method::GET => match zone.record_set(&rtype, &name) {
            Some(rs) => etagged(200, rs, &zone_id, request_id),
            None => not_found(),
        },
        Method::PUT | Method::PATCH => {
            let parsed: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => {
                    return ArmError::new(
                        400,
                        "InvalidRequestContent",
                        format!(
                            "The request content was invalid and could not be deserialized: {e}."
                        ),
                    )
                    .into_response(request_id)
                }
            };
            rec.body = Some(parsed.clone());
            let is_put = *method == Method::PUT;
            let patch = match parse_body(&parsed, &rtype, is_put) {
                Ok(p) => p,
                Err(msg) => return ArmError::new(400, "BadRequest", msg).into_response(request_id),
            };
            if let Some(hook) = ctx.faults.take_before_write() {
                hook();
            }
            let result = if is_put {
                let rs = RecordSet {
                    name: name.clone(),
                    ttl: patch.ttl.unwrap_or(3600),
                    metadata: patch.metadata.unwrap_or_default(),
                    records: patch.records.unwrap_or(Records::A(Vec::new())),
                    etag: String::new(),
                };
                ctx.store
                    .put(&zone_id, rs, &pre)
                    .map(|(rs, created)| (rs, if created { 201 } else { 200 }))
            } else {
                ctx.store
                    .patch(&zone_id, &rtype, &name, patch, &pre)
                    .map(|rs| (rs, 200))
            };
            match result {
                Ok((rs, status)) => {
                    if let Some(lost) = ctx.faults.take_lost_write() {
                        return ArmError::for_status(lost).into_response(request_id);
                    }
                    etagged(status, &rs, &zone_id, request_id)
                }
                Err(WriteError::RecordNotFound) => not_found(),
                Err(WriteError::ZoneNotFound) => not_found(),
                Err(WriteError::PreconditionFailed(m)) => {
                    ArmError::new(412, "PreconditionFailed", m).into_response(request_id)
                }
                Err(WriteError::Conflict(m)) => {
                    ArmError::new(409, "Conflict", m).into_response(request_id)
                }
            }
        }
        Method::DELETE => {
            if let Some(rs) = zone.record_set(&rtype, &name) {
                if let Some(m) = &pre.if_match {
                    if m.trim_matches('"') != rs.etag && m != "*" {
                        return ArmError::new(
                            412,
                            "PreconditionFailed",
                            format!(
                                "The condition '{m}' in the If-Match header was not satisfied."
                            ),
                        )
                        .into_response(request_id);
                    }
                }
                ctx.store.delete_record_set(&zone_id, &rtype, &name);
                json_response(200, &Value::Null, request_id)
            } else {
                // ARM answers 204 for deleting what is not there.
                Response::builder()
                    .status(StatusCode::NO_CONTENT)
                    .header("x-ms-request-id", request_id)
                    .finish()
            }
        }
        _ => ArmError::new(
            405,
            "MethodNotAllowed",
            format!("The method '{method}' is not allowed on record sets."),
        )
        .into_response(request_id),
    }
}

fn etagged(status: u16, rs: &RecordSet, zone: &ZoneId, request_id: &str) -> Response {
    let mut resp = json_response(status, &rs.to_arm_json(zone), request_id);
    if let Ok(v) = poem::http::HeaderValue::from_str(&rs.etag) {
        resp.headers_mut().insert("etag", v);
    }
    resp
}

/// Parses a PUT/PATCH body into the parts it sets. A PUT must carry `TTL` and the records of
/// its type (the double is strict so that a client dropping them is caught, not defaulted).
fn parse_body(body: &Value, rtype: &str, is_put: bool) -> Result<Patch, String> {
    let props = body
        .get("properties")
        .and_then(Value::as_object)
        .ok_or("The request body must have a 'properties' object.")?;
    if props
        .get("targetResource")
        .and_then(|t| t.get("id"))
        .is_some_and(|id| !id.is_null())
    {
        return Err(
            "Alias record sets (properties.targetResource) are not served by the lab double."
                .into(),
        );
    }
    let ttl = match props.get("TTL") {
        None | Some(Value::Null) if is_put => {
            return Err("The record set's TTL (properties.TTL) is required.".into())
        }
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().filter(|t| *t <= 2_147_483_647).ok_or_else(|| {
            format!("properties.TTL must be an integer from 0 to 2147483647, got {v}.")
        })? as u32),
    };
    let metadata = match props.get("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => {
            let mut out = BTreeMap::new();
            for (k, v) in m {
                let v = v
                    .as_str()
                    .ok_or_else(|| format!("properties.metadata.{k} must be a string."))?;
                out.insert(k.clone(), v.to_string());
            }
            Some(out)
        }
        Some(_) => return Err("properties.metadata must be an object.".into()),
    };
    let a = props.get("ARecords").filter(|v| !v.is_null());
    let cname = props.get("CNAMERecord").filter(|v| !v.is_null());
    let records = match rtype {
        "A" => {
            if cname.is_some() {
                return Err("An A record set cannot carry properties.CNAMERecord.".into());
            }
            match a {
                None if is_put => return Err("An A record set needs properties.ARecords.".into()),
                None => None,
                Some(list) => {
                    let list = list
                        .as_array()
                        .ok_or("properties.ARecords must be an array.")?;
                    if list.len() > 20 {
                        return Err("A record set holds at most 20 records.".into());
                    }
                    let mut ips = Vec::new();
                    for (i, r) in list.iter().enumerate() {
                        let ip = r
                            .get("ipv4Address")
                            .and_then(Value::as_str)
                            .and_then(|s| s.parse::<Ipv4Addr>().ok())
                            .ok_or_else(|| {
                                format!(
                                    "properties.ARecords[{i}].ipv4Address must be an IPv4 address."
                                )
                            })?;
                        ips.push(ip);
                    }
                    Some(Records::A(ips))
                }
            }
        }
        _ => {
            if a.is_some_and(|v| v.as_array().is_none_or(|l| !l.is_empty())) {
                return Err("A CNAME record set cannot carry properties.ARecords.".into());
            }
            match cname {
                None if is_put => {
                    return Err("A CNAME record set needs properties.CNAMERecord.".into())
                }
                None => None,
                Some(c) => {
                    let target = c
                        .get("cname")
                        .and_then(Value::as_str)
                        .filter(|s| !s.trim().is_empty())
                        .ok_or("properties.CNAMERecord.cname must be a host name.")?;
                    Some(Records::Cname(target.trim_end_matches('.').to_string()))
                }
            }
        }
    };
    Ok(Patch {
        ttl,
        metadata,
        records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("%40"), "@");
        assert_eq!(percent_decode("a%2Ab"), "a*b");
        assert_eq!(percent_decode("bad%4"), "bad%4");
        assert_eq!(percent_decode("plain"), "plain");
    }

    #[test]
    fn put_bodies_must_keep_ttl_and_records() {
        let ok = json!({"properties": {"TTL": 60, "ARecords": [{"ipv4Address": "192.0.2.1"}]}});
        assert_eq!(parse_body(&ok, "A", true).unwrap().ttl, Some(60));
        let no_ttl = json!({"properties": {"ARecords": [{"ipv4Address": "192.0.2.1"}]}});
        assert!(parse_body(&no_ttl, "A", true).unwrap_err().contains("TTL"));
        let flip = json!({"properties": {"TTL": 60, "CNAMERecord": {"cname": "x.example"}}});
        assert!(parse_body(&flip, "A", true).is_err());
        let patch = json!({"properties": {"TTL": 30}});
        assert_eq!(parse_body(&patch, "CNAME", false).unwrap().records, None);
    }
}
