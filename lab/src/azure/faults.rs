//! Fault injection and the request log of the Azure double: the knobs tests turn to make ARM
//! slow, throttled, failing, or changed by "a colleague" between drdctl's read and write, and
//! the record of what clients sent (never a secret or a token: only whether a request carried
//! a valid one).

use std::time::Instant;

use serde_json::Value;

/// One injected failure, answered instead of serving an ARM request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this HTTP status and a matching ARM error body.
    Status(u16),
    /// Answer 429 `TooManyRequests` with `Retry-After: <secs>`.
    Throttle {
        /// The `Retry-After` value, in seconds.
        retry_after_secs: u64,
    },
}

type WriteHook = Box<dyn FnOnce() + Send>;

/// What ARM does to the next write besides failing it.
#[derive(Default)]
pub struct WriteFaults {
    lost_write: Option<u16>,
    before_write: Option<WriteHook>,
}

impl std::fmt::Debug for WriteFaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteFaults")
            .field("lost_write", &self.lost_write)
            .field("before_write", &self.before_write.is_some())
            .finish()
    }
}

/// Faults applied to ARM requests (the token endpoint is not affected).
pub type ArmFaults = crate::faults::Faults<Fault, WriteFaults>;

impl ArmFaults {
    /// Makes the next `n` ARM requests fail with HTTP `status` (e.g. 500, 503) and the ARM
    /// error body a real server sends for it.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.push_next(n, || Fault::Status(status));
    }

    /// Makes the next `n` ARM requests answer 429 with `Retry-After: retry_after_secs`.
    pub fn throttle_next(&self, n: usize, retry_after_secs: u64) {
        self.push_next(n, || Fault::Throttle { retry_after_secs });
    }

    /// The next PUT or PATCH is applied, and then answered with `status` instead of the new
    /// record set: a response lost on the way back. A client that retries with the old
    /// `If-Match` then gets 412.
    pub fn lose_next_write_response(&self, status: u16) {
        self.extra(|w| w.lost_write = Some(status));
    }

    /// Runs `hook` when the next PUT or PATCH arrives, before its `If-Match` is checked: a
    /// concurrent change between the client's read and its write.
    pub fn before_next_write(&self, hook: impl FnOnce() + Send + 'static) {
        self.extra(|w| w.before_write = Some(Box::new(hook)));
    }

    pub(crate) fn take_before_write(&self) -> Option<WriteHook> {
        self.extra(|w| w.before_write.take())
    }

    pub(crate) fn take_lost_write(&self) -> Option<u16> {
        self.extra(|w| w.lost_write.take())
    }
}

/// Which endpoint a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// The ARM DNS API.
    Arm,
    /// The Entra ID (AAD) token endpoint.
    Token,
    /// Blob storage (the witness term).
    Blob,
    /// None of them (answered 404).
    Unknown,
}

/// One request as the double saw it. Secrets are never recorded: for ARM only whether a valid
/// bearer token came with it, for the token endpoint only the grant type and client id.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// When it arrived.
    pub at: Instant,
    /// Which endpoint.
    pub endpoint: Endpoint,
    /// HTTP method.
    pub method: String,
    /// Path, percent-decoded, without the query string.
    pub path: String,
    /// Raw query string ("" when absent).
    pub query: String,
    /// `If-Match`, if any.
    pub if_match: Option<String>,
    /// `If-None-Match`, if any.
    pub if_none_match: Option<String>,
    /// ARM: whether the request carried a bearer token this double issued.
    pub authorized: bool,
    /// Token endpoint: the `client_id` form field.
    pub client_id: Option<String>,
    /// Token endpoint: the `grant_type` form field.
    pub grant_type: Option<String>,
    /// ARM: the JSON body of a PUT or PATCH.
    pub body: Option<Value>,
    /// The status answered.
    pub status: u16,
}

/// The most recent requests (bounded), oldest first.
pub type RequestLog = crate::faults::RequestLog<RecordedRequest>;

impl RequestLog {
    /// The ARM requests only.
    pub fn arm(&self) -> Vec<RecordedRequest> {
        self.snapshot()
            .into_iter()
            .filter(|r| r.endpoint == Endpoint::Arm)
            .collect()
    }

    /// The HTTP statuses ARM answered, in order (faults injected included).
    pub fn arm_statuses(&self) -> Vec<u16> {
        self.arm().iter().map(|r| r.status).collect()
    }

    /// The token requests only.
    pub fn token(&self) -> Vec<RecordedRequest> {
        self.snapshot()
            .into_iter()
            .filter(|r| r.endpoint == Endpoint::Token)
            .collect()
    }
}
