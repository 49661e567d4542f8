//! The HTTP face of the Azure double: one Poem endpoint that routes each request by its path to
//! ARM's DNS zones and record sets (`/subscriptions/...`, [`super::arm`]), the Entra token
//! endpoint (`/{tenant}/oauth2/v2.0/token`) or Blob storage (`/{container}/{blob}`,
//! [`super::blob`]), and logs it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use poem::http::{HeaderMap, Method, StatusCode};
use poem::{Endpoint, Request, Response};
use serde_json::json;

use super::arm::{self, ArmCall, ArmError};
use super::ctx::Ctx;
use super::faults::{Endpoint as Which, RecordedRequest};

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
            let call = ArmCall {
                ctx,
                method: &method,
                segs: &segs,
                query: &query,
                body: &body,
                bearer: bearer(&headers),
                request_id: &request_id,
            };
            arm::serve(&call, &mut rec).await
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
}
