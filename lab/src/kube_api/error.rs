//! API errors rendered as `Status` objects, with the exact reasons, codes, messages and details a
//! real API server sends, because kube-rs (`is_not_found()` and friends) and kubectl
//! (`Error from server (NotFound): ...`) branch on them.

use serde_json::{json, Value};

use super::resources::ResourceDef;

/// One field-level cause of a 422 Invalid (or of an apply conflict).
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    /// Machine-readable cause reason (`FieldValueInvalid`, `FieldValueRequired`, ...).
    pub reason: &'static str,
    /// Message, without the field prefix.
    pub message: String,
    /// Path of the offending field (`spec.replicas`).
    pub field: String,
}

impl Cause {
    /// `Invalid value: <value>: <detail>`.
    pub fn invalid(field: impl Into<String>, value: &Value, detail: impl AsRef<str>) -> Self {
        let shown = match value {
            Value::String(s) => format!("{s:?}"),
            other => other.to_string(),
        };
        Cause {
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {shown}: {}", detail.as_ref()),
            field: field.into(),
        }
    }

    /// `Required value` (optionally with a detail).
    pub fn required(field: impl Into<String>, detail: &str) -> Self {
        let message = if detail.is_empty() {
            "Required value".to_string()
        } else {
            format!("Required value: {detail}")
        };
        Cause {
            reason: "FieldValueRequired",
            message,
            field: field.into(),
        }
    }

    fn render(&self) -> String {
        format!("{}: {}", self.field, self.message)
    }
}

/// An error answered as a `Status` object.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason`.
    pub reason: String,
    /// `Status.message`.
    pub message: String,
    /// `Status.details`, when the real server sends some.
    pub details: Option<Value>,
}

impl ApiError {
    /// An error with no details.
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason: reason.to_string(),
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, res: &ResourceDef, name: &str) -> Self {
        let mut d = json!({ "name": name, "kind": res.plural });
        if !res.group.is_empty() {
            d["group"] = json!(res.group);
        }
        self.details = Some(d);
        self
    }

    /// 404 `deployments.apps "x" not found`.
    pub fn not_found(res: &ResourceDef, name: &str) -> Self {
        let msg = format!("{} \"{name}\" not found", res.qualified_resource());
        ApiError::new(404, "NotFound", msg).with_details(res, name)
    }

    /// 409 `deployments.apps "x" already exists`.
    pub fn already_exists(res: &ResourceDef, name: &str) -> Self {
        let msg = format!("{} \"{name}\" already exists", res.qualified_resource());
        ApiError::new(409, "AlreadyExists", msg).with_details(res, name)
    }

    /// 409 Conflict on a stale resourceVersion.
    pub fn conflict(res: &ResourceDef, name: &str) -> Self {
        let msg = format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            res.qualified_resource()
        );
        ApiError::new(409, "Conflict", msg).with_details(res, name)
    }

    /// 422 Invalid with one or more causes.
    pub fn invalid(res: &ResourceDef, name: &str, causes: Vec<Cause>) -> Self {
        let rendered: Vec<String> = causes.iter().map(Cause::render).collect();
        let joined = if rendered.len() == 1 {
            rendered[0].clone()
        } else {
            format!("[{}]", rendered.join(", "))
        };
        let msg = format!("{} \"{name}\" is invalid: {joined}", res.qualified_kind());
        let mut details = json!({ "name": name, "kind": res.kind });
        if !res.group.is_empty() {
            details["group"] = json!(res.group);
        }
        details["causes"] = causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
        ApiError {
            code: 422,
            reason: "Invalid".into(),
            message: msg,
            details: Some(details),
        }
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", message)
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(method: &str) -> Self {
        ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {content_type:?})"),
        )
    }

    /// 410 Expired, for a watch from a compacted resourceVersion.
    pub fn expired(requested: u64, oldest: u64) -> Self {
        ApiError::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(500, "InternalError", message)
    }

    /// A Status for an arbitrary code, as fault injection produces it.
    pub fn for_code(code: u16) -> Self {
        let (reason, message) = match code {
            400 => ("BadRequest", "the server rejected our request for an unknown reason"),
            401 => ("Unauthorized", "Unauthorized"),
            403 => ("Forbidden", "forbidden"),
            404 => ("NotFound", "the server could not find the requested resource"),
            409 => ("Conflict", "the server reported a conflict"),
            410 => ("Gone", "the resource is gone"),
            422 => ("Invalid", "the server rejected our request due to an error in our request"),
            429 => ("TooManyRequests", "the server has received too many requests and has asked us to try again later"),
            500 => ("InternalError", "an error on the server (\"injected fault\") has prevented the request from succeeding"),
            503 => ("ServiceUnavailable", "the server is currently unable to handle the request"),
            504 => ("Timeout", "the server was unable to return a response in the time allotted, but may still be processing the request"),
            _ => ("InternalError", "injected fault"),
        };
        ApiError::new(code, reason, message)
    }

    /// The `Status` object sent on the wire.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

/// Shorthand for results inside the double.
pub type ApiResult<T> = Result<T, ApiError>;
