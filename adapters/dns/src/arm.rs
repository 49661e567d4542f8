//! The thin typed client for the Azure DNS record-set calls drdctl needs (GET and PUT of one
//! record set, GET of the zone), on the azure_core 1.x pipeline with a bearer-token policy.
//! There is no maintained Azure DNS management crate for azure_core 1.x (azure_mgmt_dns is the
//! frozen legacy line; see docs/dns.md), and this slice of the API is small.
//!
//! The pipeline's own retries are off: this client owns them, because a DR tool must bound
//! every call by a deadline. It retries 408, 429, 500, 502, 503, 504, timeouts and connection
//! errors with jittered exponential backoff, waits what `Retry-After` asks on 429/503, and
//! fails at once, naming the deadline, when the wait would not fit. A PUT is always
//! conditional (`If-Match`), so retrying it is safe: a retried PUT whose first attempt did land
//! gets 412, which the caller resolves by re-reading.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::headers::{HeaderName, Headers, IF_MATCH, RETRY_AFTER};
use azure_core::http::policies::auth::BearerTokenAuthorizationPolicy;
use azure_core::http::{
    ClientOptions, Context, Method, Pipeline, PipelineSendOptions, Request, RetryOptions, Url,
};
use serde_json::Value;

use crate::config::{DnsConfig, RecordType};
use crate::error::{human, DnsError};
use crate::model::{ArmErrorBody, ZoneInfo};

/// The Azure DNS api-version drdctl speaks (the current GA version).
pub const API_VERSION: &str = "2018-05-01";

const BASE_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);

const X_MS_REQUEST_ID: HeaderName = HeaderName::from_static("x-ms-request-id");
const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
const X_MS_RETRY_AFTER_MS: HeaderName = HeaderName::from_static("x-ms-retry-after-ms");

/// An ARM answer the caller interprets (success, 404, 412, ...).
#[derive(Debug)]
pub(crate) struct ArmResponse {
    pub status: u16,
    pub body: Vec<u8>,
    pub request_id: String,
}

impl ArmResponse {
    fn json(&self, operation: &'static str) -> Result<Value, DnsError> {
        serde_json::from_slice(&self.body).map_err(|e| DnsError::InvalidResponse {
            operation,
            message: format!("the body is not JSON ({e})"),
        })
    }

    fn error(&self, operation: &'static str) -> DnsError {
        let e = ArmErrorBody::parse(&self.body);
        match self.status {
            401 => DnsError::Unauthorized {
                operation,
                status: 401,
                code: e.code,
                message: e.message,
                hint: "; the token was rejected: check that the tenant is the one of the \
                       subscription (AZURE_TENANT_ID)",
            },
            403 => DnsError::Unauthorized {
                operation,
                status: 403,
                code: e.code,
                message: e.message,
                hint: "; grant the identity the \"DNS Zone Contributor\" role on the zone (or \
                       on its resource group)",
            },
            status => DnsError::Arm {
                operation,
                status,
                code: e.code,
                message: e.message,
                request_id: self.request_id.clone(),
            },
        }
    }
}

/// What a conditional PUT did.
#[derive(Debug)]
pub(crate) enum PutResult {
    /// Written; the new record set body.
    Written(Value),
    /// `If-Match` no longer held (412).
    PreconditionFailed,
    /// The record set is gone (404).
    NotFound,
}

/// The ARM DNS client for one zone.
pub(crate) struct ArmClient {
    pipeline: Pipeline,
    base: Url,
    subscription: String,
    resource_group: String,
    zone: String,
    call_deadline: Duration,
    attempt_timeout: Duration,
    max_retries: u32,
}

impl std::fmt::Debug for ArmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArmClient")
            .field("base", &self.base.as_str())
            .field("zone", &self.zone)
            .field("call_deadline", &self.call_deadline)
            .finish_non_exhaustive()
    }
}

fn jitter() -> f64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0);
    0.5 + (h.finish() % 1000) as f64 / 2000.0
}

fn backoff(attempt: u32) -> Duration {
    let exp = BASE_BACKOFF.saturating_mul(1u32 << attempt.min(10).saturating_sub(1));
    exp.min(MAX_BACKOFF).mul_f64(jitter())
}

/// The wait a response asks for: `retry-after-ms`, `x-ms-retry-after-ms`, `Retry-After`
/// (seconds or an HTTP date).
fn retry_after(headers: &Headers) -> Option<Duration> {
    for h in [RETRY_AFTER_MS, X_MS_RETRY_AFTER_MS] {
        if let Some(ms) = headers
            .get_optional_str(&h)
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            return Some(Duration::from_millis(ms));
        }
    }
    let v = headers.get_optional_str(&RETRY_AFTER)?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = azure_core::time::parse_rfc7231(v).ok()?;
    let now = azure_core::time::OffsetDateTime::now_utc();
    Some(Duration::try_from(at - now).unwrap_or(Duration::ZERO))
}

fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

impl ArmClient {
    pub(crate) fn new(
        cfg: &DnsConfig,
        base: Url,
        scope: String,
        credential: Arc<dyn TokenCredential>,
        mut client_options: ClientOptions,
    ) -> Self {
        client_options.retry = RetryOptions::none();
        let auth = BearerTokenAuthorizationPolicy::new(credential, [scope]);
        let pipeline = Pipeline::new(
            Some("drdctl"),
            Some(env!("CARGO_PKG_VERSION")),
            client_options,
            Vec::new(),
            vec![Arc::new(auth)],
            None,
        );
        ArmClient {
            pipeline,
            base,
            subscription: cfg.subscription.clone(),
            resource_group: cfg.resource_group.clone(),
            zone: cfg.zone.clone(),
            call_deadline: cfg.call_deadline(),
            attempt_timeout: cfg.attempt_timeout(),
            max_retries: cfg.max_retries,
        }
    }

    fn url(&self, record: Option<(RecordType, &str)>) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.clear().extend([
                "subscriptions",
                &self.subscription,
                "resourceGroups",
                &self.resource_group,
                "providers",
                "Microsoft.Network",
                "dnsZones",
                &self.zone,
            ]);
            if let Some((t, name)) = record {
                segs.extend([t.as_str(), name]);
            }
        }
        url.query_pairs_mut()
            .clear()
            .append_pair("api-version", API_VERSION);
        url
    }

    /// Sends one call with retries under the call deadline. Returns any final HTTP answer
    /// (2xx, or a status that is not retried) for the caller to interpret.
    async fn call(
        &self,
        operation: &'static str,
        method: Method,
        url: Url,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<ArmResponse, DnsError> {
        let start = Instant::now();
        let deadline = start + self.call_deadline;
        let body = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let mut req = Request::new(url.clone(), method);
            req.insert_header("accept", "application/json");
            if let Some(b) = &body {
                req.insert_header("content-type", "application/json");
                req.set_body(b.clone());
            }
            if let Some(etag) = if_match {
                req.insert_header(IF_MATCH, etag.to_string());
            }
            let ctx = Context::new();
            let sent = tokio::time::timeout(
                self.attempt_timeout.min(remaining),
                self.pipeline.send(
                    &ctx,
                    &mut req,
                    Some(PipelineSendOptions {
                        skip_checks: true,
                        ..Default::default()
                    }),
                ),
            )
            .await;
            // What failed this attempt, and how long the server asked us to wait.
            let (last, asked): (String, Option<Duration>) = match sent {
                Err(_) => (
                    format!(
                        "no answer within {} (dns.attempt_timeout_secs)",
                        human(self.attempt_timeout.min(remaining))
                    ),
                    None,
                ),
                Ok(Err(e)) => match e.kind() {
                    ErrorKind::Credential => return Err(DnsError::Credential(e.to_string())),
                    ErrorKind::Connection | ErrorKind::Io => (format!("{e}"), None),
                    _ => {
                        return Err(DnsError::Transport {
                            operation,
                            message: e.to_string(),
                        })
                    }
                },
                Ok(Ok(resp)) => {
                    let status = u16::from(resp.status());
                    let headers = resp.headers().clone();
                    let request_id = headers
                        .get_optional_str(&X_MS_REQUEST_ID)
                        .unwrap_or("none")
                        .to_string();
                    let body = resp.into_body().to_vec();
                    if !retryable_status(status) {
                        tracing::debug!(operation, status, %request_id, attempt, "ARM answered");
                        return Ok(ArmResponse {
                            status,
                            body,
                            request_id,
                        });
                    }
                    let e = ArmErrorBody::parse(&body);
                    (
                        format!(
                            "{status} {}: {} (x-ms-request-id {request_id})",
                            e.code, e.message
                        ),
                        retry_after(&headers).filter(|_| status == 429 || status == 503),
                    )
                }
            };
            let now = Instant::now();
            let remaining = deadline.saturating_duration_since(now);
            if remaining.is_zero() {
                return Err(DnsError::Deadline {
                    operation,
                    deadline: self.call_deadline,
                    attempts: attempt,
                    last,
                });
            }
            if attempt > self.max_retries {
                return Err(DnsError::RetriesExhausted {
                    operation,
                    attempts: attempt,
                    max_retries: self.max_retries,
                    last,
                });
            }
            let wait = asked.unwrap_or_else(|| backoff(attempt));
            if wait >= remaining {
                return Err(match asked {
                    Some(retry_after) => DnsError::Throttled {
                        operation,
                        retry_after,
                        remaining,
                        deadline: self.call_deadline,
                    },
                    None => DnsError::Deadline {
                        operation,
                        deadline: self.call_deadline,
                        attempts: attempt,
                        last,
                    },
                });
            }
            tracing::warn!(
                operation,
                attempt,
                wait_ms = wait.as_millis() as u64,
                error = %last,
                "ARM call failed; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    fn zone_not_found(&self, resp: &ArmResponse) -> Option<DnsError> {
        let e = ArmErrorBody::parse(&resp.body);
        // A missing record set answers code NotFound; a missing zone or resource group
        // answers ResourceNotFound / ResourceGroupNotFound / ParentResourceNotFound.
        (resp.status == 404 && e.code != "NotFound" && !e.code.is_empty()).then(|| {
            DnsError::ZoneNotFound {
                zone: self.zone.clone(),
                resource_group: self.resource_group.clone(),
                subscription: self.subscription.clone(),
                code: e.code,
                message: e.message,
            }
        })
    }

    /// GET the record set; `None` when it does not exist (the zone does).
    pub(crate) async fn get_record_set(
        &self,
        record_type: RecordType,
        name: &str,
    ) -> Result<Option<Value>, DnsError> {
        const OP: &str = "read the DNS record set";
        let resp = self
            .call(
                OP,
                Method::Get,
                self.url(Some((record_type, name))),
                None,
                None,
            )
            .await?;
        match resp.status {
            200 => resp.json(OP).map(Some),
            404 => match self.zone_not_found(&resp) {
                Some(e) => Err(e),
                None => Ok(None),
            },
            _ => Err(resp.error(OP)),
        }
    }

    /// PUT the record set with `If-Match: etag`.
    pub(crate) async fn put_record_set(
        &self,
        record_type: RecordType,
        name: &str,
        body: &Value,
        etag: &str,
    ) -> Result<PutResult, DnsError> {
        const OP: &str = "update the DNS record set";
        let resp = self
            .call(
                OP,
                Method::Put,
                self.url(Some((record_type, name))),
                Some(body),
                Some(etag),
            )
            .await?;
        match resp.status {
            200 | 201 => resp.json(OP).map(PutResult::Written),
            412 => Ok(PutResult::PreconditionFailed),
            404 => match self.zone_not_found(&resp) {
                Some(e) => Err(e),
                None => Ok(PutResult::NotFound),
            },
            _ => Err(resp.error(OP)),
        }
    }

    /// GET the zone (for its name servers).
    pub(crate) async fn get_zone(&self) -> Result<ZoneInfo, DnsError> {
        const OP: &str = "read the DNS zone";
        let resp = self
            .call(OP, Method::Get, self.url(None), None, None)
            .await?;
        match resp.status {
            200 => Ok(ZoneInfo::from_arm(&resp.json(OP)?)),
            404 => Err(self.zone_not_found(&resp).unwrap_or_else(|| resp.error(OP))),
            _ => Err(resp.error(OP)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_every_header_form() {
        let mut h = Headers::new();
        h.insert(RETRY_AFTER, "3");
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(X_MS_RETRY_AFTER_MS, "1500");
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
        let mut h = Headers::new();
        h.insert(RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT");
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        assert_eq!(retry_after(&Headers::new()), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= BASE_BACKOFF);
        assert!(backoff(1) >= BASE_BACKOFF / 2);
        assert!(backoff(30) <= MAX_BACKOFF);
        assert!(backoff(4) >= BASE_BACKOFF * 4);
    }
}
