//! The one error shape every endpoint answers with: `{"error":{"code":"...","message":"..."}}`.
//!
//! Handlers return [`ApiResult`]; anything else that fails (a body that is not JSON, a missing
//! field, an unknown route, a body over the limit) is reshaped by [`shape_error`] so a client never
//! sees plain text or a 500 for bad input. Unexpected failures are logged in full and answered
//! with an opaque message: sqlx errors can quote SQL and values, which clients must not see.

use poem::error::ResponseError;
use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use serde::Serialize;

/// A failure with an HTTP status, a stable machine-readable code and a message for people.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

pub type ApiResult<T> = Result<T, poem::Error>;

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }
    /// The region's database refuses writes (a streaming standby, or a fenced primary).
    pub fn read_only() -> Self {
        Self::unavailable(
            "read_only",
            "this region's database is a read-only standby; writes are served by the active region",
        )
    }
    /// Logs `err` with its whole chain and answers an opaque 500.
    pub fn internal(context: &str, err: &dyn std::error::Error) -> Self {
        tracing::error!(error = %ErrorChain(err), "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("internal error while {context}; the service log has the details"),
        )
    }

    /// Maps a database error to what the client can act on; `context` says what was being done.
    pub fn from_db(context: &str, err: sqlx::Error) -> Self {
        if crate::sqlstate::is_read_only(&err) {
            return Self::read_only();
        }
        let code = err.as_database_error().and_then(|db| db.code());
        // Why the database is unavailable to this service, for the log; `None`: a failure of
        // the service itself (500).
        let down = match (&err, code.as_deref()) {
            (
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_),
                _,
            ) => Some("database unavailable"),
            (_, Some("57014")) => {
                return Self::unavailable(
                    "database_timeout",
                    format!("the database took too long while {context}; retry later"),
                )
            }
            // Class 28: the login refused. A fence revokes the application's login while a
            // failover moves the primary (new sessions get 28000); a wrong password is 28P01.
            // Either way the database is not available to this service: 503, not a 500.
            (_, Some(c)) if c.starts_with("28") => Some(
                "the database refused the login (fenced for a failover, or the credentials are wrong)",
            ),
            (_, Some(c)) if c.starts_with("08") || c.starts_with("57P") || c == "53300" => {
                Some("database unavailable")
            }
            _ => None,
        };
        match down {
            Some(why) => {
                tracing::warn!(error = %ErrorChain(&err), "{context}: {why}");
                Self::unavailable(
                    "database_unavailable",
                    format!("the database is unavailable while {context}; retry later"),
                )
            }
            None => Self::internal(context, &err),
        }
    }

    pub fn to_response(&self) -> Response {
        json_error(self.status, self.code, &self.message)
    }
}

impl ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        self.status
    }
    fn as_response(&self) -> Response {
        self.to_response()
    }
}

/// Builds the JSON error response.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::to_vec(&Body {
        error: Inner { code, message },
    })
    .unwrap_or_default();
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(body)
}

/// Turns any error that reached the top of the route into the JSON error shape.
pub fn shape_error(err: poem::Error) -> Response {
    if let Some(api) = err.downcast_ref::<ApiError>() {
        return api.to_response();
    }
    let status = err.status();
    let code = match status {
        StatusCode::BAD_REQUEST => "invalid_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::LENGTH_REQUIRED => "length_required",
        s if s.is_client_error() => "invalid_request",
        _ => "internal",
    };
    let message = if status.is_server_error() {
        tracing::error!(error = %err, "unhandled error");
        "internal error; the service log has the details".to_string()
    } else {
        match status {
            StatusCode::NOT_FOUND => "no such endpoint; see /docs for the API".to_string(),
            StatusCode::METHOD_NOT_ALLOWED => {
                "method not allowed on this endpoint; see /docs for the API".to_string()
            }
            StatusCode::PAYLOAD_TOO_LARGE => {
                "request body is larger than this endpoint accepts".to_string()
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                "expected a JSON body with Content-Type: application/json".to_string()
            }
            _ => client_message(&err.to_string()),
        }
    };
    json_error(status, code, &message).into_response()
}

/// poem-openapi's parse errors name Rust types (`failed to parse "NewUser": ...`,
/// `"optional_integer_int64"`): keep what the client can act on, drop the type names.
pub fn client_message(raw: &str) -> String {
    let mut out = raw.to_string();
    while let Some(at) = out.find("failed to parse \"") {
        let rest = &out[at + "failed to parse \"".len()..];
        let Some(close) = rest.find('"') else { break };
        let mut end = at + "failed to parse \"".len() + close + 1;
        if out[end..].starts_with(": ") {
            end += 2;
        }
        out.replace_range(at..end, "");
    }
    let out = out
        .replace("parse request payload error: ", "invalid JSON body: ")
        .replace("failed to parse parameter", "invalid parameter");
    let out = out.trim().trim_end_matches(':').trim().to_string();
    if out.is_empty() {
        "invalid request".to_string()
    } else {
        out
    }
}

/// Displays an error with its sources, `outer: inner: innermost`.
pub struct ErrorChain<'a>(pub &'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// The error shape, for OpenAPI documentation of error responses.
#[derive(poem_openapi::Object, Debug, Clone)]
pub struct ErrorDetail {
    /// Stable, machine-readable code, e.g. `invalid_request`, `conflict`, `read_only`.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
}

/// `{"error":{"code":"...","message":"..."}}`
#[derive(poem_openapi::Object, Debug, Clone)]
pub struct ErrorEnvelope {
    pub error: ErrorDetail,
}

#[cfg(test)]
mod tests {
    use super::client_message;

    #[test]
    fn type_names_are_left_out_of_client_messages() {
        assert_eq!(
            client_message(
                r#"parse request payload error: failed to parse "NewUser": field `username` verification failed. maxLength(50)"#
            ),
            "invalid JSON body: field `username` verification failed. maxLength(50)"
        );
        assert_eq!(
            client_message(
                r#"failed to parse parameter `limit`: failed to parse "optional_integer_int64": invalid digit found in string"#
            ),
            "invalid parameter `limit`: invalid digit found in string"
        );
    }
}
