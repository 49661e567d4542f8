//! Fault injection and the request log: the knobs tests turn to make the API slow or failing,
//! and the record of what clients actually sent. (Taking the whole API down is on `KubeDouble`,
//! because it closes the listener.)

use super::error::ApiError;

/// Faults applied to every request before it is served.
pub type Faults = crate::faults::Faults<ApiError>;

impl Faults {
    /// Makes the next `n` requests fail with HTTP `code` and a matching `Status` body.
    /// Mind that kube-rs retries 429, 503 and 504 by itself (up to 15 times, with backoff).
    pub fn fail_next(&self, n: usize, code: u16) {
        self.push_next(n, || ApiError::for_code(code));
    }

    /// Makes the next request fail with exactly this error.
    pub fn fail_next_with(&self, error: ApiError) {
        self.push_next(1, || error.clone());
    }

    /// How many injected failures are still pending.
    pub fn pending_failures(&self) -> usize {
        self.pending()
    }
}

/// One request as the double received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path, without the query string.
    pub path: String,
    /// Raw query string ("" when absent).
    pub query: String,
    /// Content-Type header, if any.
    pub content_type: Option<String>,
    /// User-Agent header, if any.
    pub user_agent: Option<String>,
}

/// The most recent requests (bounded).
pub type RequestLog = crate::faults::RequestLog<RecordedRequest>;
