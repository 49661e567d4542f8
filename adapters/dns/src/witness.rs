//! The witness term: which region may hold the writable database, and a number that only grows,
//! kept outside both regions in one Azure Storage block blob and changed only by
//! compare-and-swap (`If-Match` on its ETag; `If-None-Match: *` to create it).
//!
//! Why a blob and not a TXT record beside the application's record (docs/witness.md): Blob
//! reads on the primary endpoint are strongly consistent and are not counted against Azure
//! Resource Manager's throttling, while a guard that polls every two seconds would exhaust the
//! DNS read quota (500 per 5 minutes) and a 429 with a long `Retry-After` would fence a healthy
//! primary. drdctl writes the term; the guards only read it (a read-only identity).
//!
//! [`Witness`] is the port; [`BlobWitness`] its one real implementation: a thin client for
//! `Get Blob` and `Put Blob` on the azure_core HTTP client, a bearer token for
//! `https://storage.azure.com/.default` from the same credential chain as the DNS adapter,
//! each request bounded by a timeout (a guard counts a late answer as no answer).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, HttpClient, Method, Request, Transport, Url};
use serde::{Deserialize, Serialize};

use crate::config::AuthMethod;
use crate::credential::{Credentials, EnvLookup};
use crate::transport::{Endpoint, LoopbackTransport, LAB_LOGIN_HOST};

/// The Blob service version drdctl speaks.
pub const STORAGE_VERSION: &str = "2021-08-06";
const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";
const LAB_BLOB_HOST: &str = "blob.lab.invalid";

/// The term: the region whose database may take writes, and its number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Term {
    /// `primary` or `dr`.
    pub region: String,
    /// Grows by one at every move.
    pub n: u64,
    /// When it was written (RFC 3339, the writer's clock: for people, never for leases).
    pub at: String,
    /// Who wrote it (`user@host`).
    pub by: String,
}

/// A term as read, with the ETag a compare-and-swap names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub term: Term,
    pub etag: String,
}

/// The condition of a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Only if the blob still has this ETag.
    IfMatch(String),
    /// Only if there is no term yet.
    IfAbsent,
}

/// What a conditional write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Written; the new ETag.
    Written { etag: String },
    /// Someone else wrote first (412 / 409): re-read and decide.
    Conflict,
}

/// Why the witness could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    /// `[witness]` is wrong.
    #[error("witness.{key}: {message}")]
    Config { key: &'static str, message: String },
    /// No token.
    #[error("the witness ({url}) could not be reached with a token: {message}")]
    Credential { url: String, message: String },
    /// No answer in time, or no connection.
    #[error("the witness ({url}) did not answer {operation} within {timeout:?}{cause}")]
    Unreachable {
        url: String,
        operation: &'static str,
        timeout: Duration,
        cause: String,
    },
    /// An error answer.
    #[error("the witness ({url}) answered {operation} with {status} {code}{hint}")]
    Status {
        url: String,
        operation: &'static str,
        status: u16,
        code: String,
        hint: &'static str,
    },
    /// The blob holds something that is not a term.
    #[error("the witness blob {url} does not hold a term ({message}); fix or delete it by hand")]
    Invalid { url: String, message: String },
}

impl WitnessError {
    /// A timeout or connection failure (as opposed to an answer).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, WitnessError::Unreachable { .. })
    }
}

/// The witness as the engine and the guard see it.
#[async_trait]
pub trait Witness: Send + Sync + std::fmt::Debug {
    /// The term, or `None` when none was ever written.
    async fn read(&self) -> Result<Option<Versioned>, WitnessError>;
    /// Writes `term` under `cond`.
    async fn write(&self, term: &Term, cond: Condition) -> Result<WriteOutcome, WitnessError>;
    /// Where it is (for messages).
    fn url(&self) -> String;
}

/// How to reach the blob.
#[derive(Debug, Clone)]
pub struct WitnessConfig {
    /// `https://<account>.blob.core.windows.net/<container>/<blob>`, or in the lab
    /// `http://127.0.0.1:<port>/<container>/<blob>`.
    pub url: String,
    pub auth: AuthMethod,
    /// The Entra authority (the lab's token double), else the public cloud's.
    pub authority_host: Option<String>,
    pub managed_identity_client_id: Option<String>,
    /// Per request.
    pub timeout: Duration,
}

/// The term in an Azure Storage block blob.
pub struct BlobWitness {
    http: Arc<dyn HttpClient>,
    url: Url,
    shown: String,
    credential: Arc<dyn TokenCredential>,
    timeout: Duration,
}

impl std::fmt::Debug for BlobWitness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWitness")
            .field("url", &self.shown)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn split_url(s: &str) -> Result<(Endpoint, String), WitnessError> {
    let bad = |m: String| WitnessError::Config {
        key: "url",
        message: m,
    };
    let url = Url::parse(s.trim()).map_err(|e| bad(format!("{s:?} is not a URL ({e})")))?;
    let path = url.path().trim_start_matches('/').to_string();
    if path.split('/').filter(|p| !p.is_empty()).count() < 2 {
        return Err(bad(format!(
            "{s:?} must name a container and a blob: https://<account>.blob.core.windows.net/<container>/<blob>"
        )));
    }
    let mut base = url.clone();
    base.set_path("/");
    base.set_query(None);
    let endpoint = Endpoint::parse(base.as_str().trim_end_matches('/')).map_err(bad)?;
    Ok((endpoint, path))
}

impl BlobWitness {
    /// From the process environment (credentials per `cfg.auth`).
    pub fn from_env(cfg: &WitnessConfig) -> Result<Self, WitnessError> {
        Self::with_env(cfg, &|k| std::env::var(k).ok())
    }

    /// With an explicit environment lookup.
    pub fn with_env(cfg: &WitnessConfig, env: EnvLookup<'_>) -> Result<Self, WitnessError> {
        let (endpoint, path) = split_url(&cfg.url)?;
        let mut routes: Vec<(String, SocketAddr)> = Vec::new();
        let url = match &endpoint {
            Endpoint::Https(u) => {
                let mut u = u.clone();
                u.set_path(&path);
                u
            }
            Endpoint::Loopback(addr) => {
                routes.push((LAB_BLOB_HOST.into(), *addr));
                Url::parse(&format!("https://{LAB_BLOB_HOST}/{path}")).map_err(|e| {
                    WitnessError::Config {
                        key: "url",
                        message: e.to_string(),
                    }
                })?
            }
        };
        let authority = match cfg.authority_host.as_deref().map(Endpoint::parse) {
            None => None,
            Some(Err(m)) => {
                return Err(WitnessError::Config {
                    key: "authority_host",
                    message: m,
                })
            }
            Some(Ok(Endpoint::Https(u))) => Some(u.as_str().trim_end_matches('/').to_string()),
            Some(Ok(Endpoint::Loopback(addr))) => {
                routes.push((LAB_LOGIN_HOST.into(), addr));
                Some(format!("https://{LAB_LOGIN_HOST}"))
            }
        };
        let inner = azure_core::http::new_http_client(None);
        let http: Arc<dyn HttpClient> = if routes.is_empty() {
            inner
        } else {
            Arc::new(LoopbackTransport::new(inner, routes))
        };
        let mut client_options = ClientOptions {
            transport: Some(Transport::new(http.clone())),
            ..Default::default()
        };
        if let Some(host) = authority {
            let mut custom = CustomConfiguration::default();
            custom.authority_host = host;
            client_options.cloud = Some(Arc::new(CloudConfiguration::Custom(custom)));
        }
        let credential = Credentials::from_env(
            cfg.auth,
            env,
            &client_options,
            cfg.managed_identity_client_id.as_deref(),
        )
        .map_err(|e| WitnessError::Credential {
            url: cfg.url.clone(),
            message: e.to_string(),
        })?;
        Ok(BlobWitness {
            http,
            url,
            shown: cfg.url.clone(),
            credential: Arc::new(credential),
            timeout: cfg.timeout,
        })
    }

    async fn send(
        &self,
        operation: &'static str,
        method: Method,
        body: Option<(Vec<u8>, Condition)>,
    ) -> Result<(u16, Option<String>, Vec<u8>, String), WitnessError> {
        let unreachable = |cause: String| WitnessError::Unreachable {
            url: self.shown.clone(),
            operation,
            timeout: self.timeout,
            cause,
        };
        let call = async {
            let token = self
                .credential
                .get_token(&[STORAGE_SCOPE], None)
                .await
                .map_err(|e| WitnessError::Credential {
                    url: self.shown.clone(),
                    message: e.to_string(),
                })?;
            let mut req = Request::new(self.url.clone(), method);
            req.insert_header("authorization", format!("Bearer {}", token.token.secret()));
            req.insert_header("x-ms-version", STORAGE_VERSION);
            req.insert_header(
                "x-ms-date",
                chrono::Utc::now()
                    .format("%a, %d %b %Y %H:%M:%S GMT")
                    .to_string(),
            );
            if let Some((bytes, cond)) = body {
                req.insert_header("x-ms-blob-type", "BlockBlob");
                req.insert_header("content-type", "application/json");
                match cond {
                    Condition::IfMatch(etag) => req.insert_header("if-match", etag),
                    Condition::IfAbsent => req.insert_header("if-none-match", "*"),
                }
                req.set_body(bytes);
            }
            let resp = self
                .http
                .execute_request(&req)
                .await
                .map_err(|e| unreachable(format!(" ({e})")))?;
            let status = u16::from(resp.status());
            let etag = resp
                .headers()
                .get_optional_str(&azure_core::http::headers::ETAG)
                .map(str::to_string);
            let code = resp
                .headers()
                .get_optional_str(&azure_core::http::headers::HeaderName::from_static(
                    "x-ms-error-code",
                ))
                .unwrap_or_default()
                .to_string();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(format!(" (reading the answer: {e})")))?;
            Ok((status, etag, bytes.to_vec(), code))
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(unreachable(String::new())),
        }
    }

    fn status_error(&self, operation: &'static str, status: u16, code: String) -> WitnessError {
        let hint = match status {
            401 => ": the token was refused; check the identity's tenant",
            403 => ": grant the identity \"Storage Blob Data Reader\" (guards) or \"Storage Blob Data Contributor\" (drdctl) on the container",
            404 => ": create the container first (docs/witness.md)",
            429 | 500 | 502 | 503 | 504 => ": the service is busy or failing; the read counts as unconfirmed",
            _ => "",
        };
        WitnessError::Status {
            url: self.shown.clone(),
            operation,
            status,
            code,
            hint,
        }
    }
}

#[async_trait]
impl Witness for BlobWitness {
    async fn read(&self) -> Result<Option<Versioned>, WitnessError> {
        let (status, etag, body, code) = self.send("reading the term", Method::Get, None).await?;
        match status {
            200 => {
                let term: Term =
                    serde_json::from_slice(&body).map_err(|e| WitnessError::Invalid {
                        url: self.shown.clone(),
                        message: e.to_string(),
                    })?;
                Ok(Some(Versioned {
                    term,
                    etag: etag.unwrap_or_default(),
                }))
            }
            404 if code == "BlobNotFound" => Ok(None),
            s => Err(self.status_error("reading the term", s, code)),
        }
    }

    async fn write(&self, term: &Term, cond: Condition) -> Result<WriteOutcome, WitnessError> {
        let body = serde_json::to_vec(term).unwrap_or_default();
        let (status, etag, _, code) = self
            .send("writing the term", Method::Put, Some((body, cond)))
            .await?;
        match status {
            200 | 201 => Ok(WriteOutcome::Written {
                etag: etag.unwrap_or_default(),
            }),
            409 | 412 => Ok(WriteOutcome::Conflict),
            s => Err(self.status_error("writing the term", s, code)),
        }
    }

    fn url(&self) -> String {
        self.shown.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(split_url("https://acct.blob.core.windows.net/drdctl/term").is_ok());
        assert!(split_url("http://127.0.0.1:9/c/b").is_ok());
        let e = split_url("https://acct.blob.core.windows.net/onlycontainer")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("witness.url") && e.contains("container and a blob"),
            "{e}"
        );
        assert!(split_url("http://10.1.1.1:80/c/b")
            .unwrap_err()
            .to_string()
            .contains("loopback"));
    }
}
