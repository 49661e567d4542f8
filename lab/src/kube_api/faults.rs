//! Fault injection and the request log: the knobs tests turn to make the API slow or failing,
//! and the record of what clients actually sent. (Taking the whole API down is on `KubeDouble`,
//! because it closes the listener.)

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use super::error::ApiError;

/// Faults applied to every request before it is served.
#[derive(Debug, Default)]
pub struct Faults {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    latency: Duration,
    fail_next: VecDeque<ApiError>,
}

impl Faults {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `latency` before every response (zero turns it off).
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// The current added latency.
    pub fn latency(&self) -> Duration {
        self.lock().latency
    }

    /// Makes the next `n` requests fail with HTTP `code` and a matching `Status` body.
    /// Mind that kube-rs retries 429, 503 and 504 by itself (up to 15 times, with backoff).
    pub fn fail_next(&self, n: usize, code: u16) {
        let mut s = self.lock();
        for _ in 0..n {
            s.fail_next.push_back(ApiError::for_code(code));
        }
    }

    /// Makes the next request fail with exactly this error.
    pub fn fail_next_with(&self, error: ApiError) {
        self.lock().fail_next.push_back(error);
    }

    /// How many injected failures are still pending.
    pub fn pending_failures(&self) -> usize {
        self.lock().fail_next.len()
    }

    /// Removes every fault.
    pub fn clear(&self) {
        let mut s = self.lock();
        s.latency = Duration::ZERO;
        s.fail_next.clear();
    }

    /// The latency to add and the failure to answer with, for one request.
    pub(crate) fn take(&self) -> (Duration, Option<ApiError>) {
        let mut s = self.lock();
        (s.latency, s.fail_next.pop_front())
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

const LOG_CAPACITY: usize = 10_000;

/// The most recent requests (bounded).
#[derive(Debug, Default)]
pub struct RequestLog {
    entries: Mutex<VecDeque<RecordedRequest>>,
}

impl RequestLog {
    pub(crate) fn push(&self, r: RecordedRequest) {
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if e.len() >= LOG_CAPACITY {
            e.pop_front();
        }
        e.push_back(r);
    }

    /// A copy of the recorded requests, oldest first.
    pub fn snapshot(&self) -> Vec<RecordedRequest> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Forgets every recorded request.
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}
