//! ARM's answers: JSON with the request-id and rate-limit headers, a record set with its
//! `ETag`, and the `CloudError` body of a failure ([`ArmError`]).

use poem::http::{HeaderValue, StatusCode};
use poem::Response;
use serde_json::{json, Value};

use super::super::faults::Fault;
use super::super::store::{RecordSet, ZoneId};

pub(crate) fn json_response(status: u16, body: &Value, request_id: &str) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .content_type("application/json; charset=utf-8")
        .header("x-ms-request-id", request_id)
        .header("x-ms-correlation-request-id", request_id)
        .header("x-ms-ratelimit-remaining-subscription-reads", "11999")
        .header("x-ms-ratelimit-remaining-subscription-writes", "1199")
        .body(serde_json::to_vec(body).unwrap_or_default())
}

/// A record set's ARM JSON, with its ETag in the `ETag` header too.
pub(crate) fn etagged(status: u16, rs: &RecordSet, zone: &ZoneId, request_id: &str) -> Response {
    let mut resp = json_response(status, &rs.to_arm_json(zone), request_id);
    if let Ok(v) = HeaderValue::from_str(&rs.etag) {
        resp.headers_mut().insert("etag", v);
    }
    resp
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
pub(crate) struct ArmError {
    status: u16,
    code: String,
    message: String,
    retry_after: Option<u64>,
}

impl ArmError {
    pub(crate) fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        ArmError {
            status,
            code: code.to_string(),
            message: message.into(),
            retry_after: None,
        }
    }

    pub(crate) fn for_status(status: u16) -> Self {
        let message = match status {
            500 => "An internal server error occurred (injected by the lab).".to_string(),
            502 => "The gateway did not receive a response (injected by the lab).".to_string(),
            503 => "The service is temporarily unavailable (injected by the lab).".to_string(),
            504 => "The gateway timed out (injected by the lab).".to_string(),
            s => format!("Injected failure with status {s}."),
        };
        ArmError::new(status, default_code(status), message)
    }

    /// The answer to an injected fault.
    pub(crate) fn for_fault(fault: Fault) -> Self {
        match fault {
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
        }
    }

    pub(crate) fn into_response(self, request_id: &str) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        let mut resp = json_response(self.status, &body, request_id);
        resp.headers_mut()
            .insert("x-ms-failure-cause", HeaderValue::from_static("gateway"));
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert("retry-after", v);
            }
        }
        resp
    }
}
