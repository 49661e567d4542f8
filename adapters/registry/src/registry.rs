//! The `Registry` port (what building and pushing an image needs from a registry) and its one
//! real implementation, [`OciRegistry`], over the OCI distribution API (`oci-client`).
//!
//! `oci-client` pitfalls handled here (see the research notes): its low-level calls take no
//! credentials, so each host's are stored in the client before the first call; its errors are
//! raw HTTP messages, so every failure is sorted into [`RegistryError`] with what to do.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::{Client, RegistryOperation};
use serde_json::Value;

use crate::auth::ResolvedCredential;
use crate::digest::sha256_digest;
use crate::image::{
    Descriptor, Platform, DOCKER_LIST_MEDIA_TYPE, DOCKER_MANIFEST_MEDIA_TYPE, INDEX_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
};
use crate::reference::{is_loopback_host, ImageRef, Repository};

/// The digest of the empty blob: what the access check asks about.
const EMPTY_BLOB: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Upload granularity for progress reports.
const PROGRESS_CHUNK: usize = 256 * 1024;

/// A failure talking to a registry, sorted by what the operator can do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "cannot reach registry {registry}: {detail}. Check the address and port and that the \
         registry is up; a registry without TLS must be listed as insecure (loopback addresses \
         always are)"
    )]
    Unreachable { registry: String, detail: String },
    #[error("registry {registry} refused {credentials}: {detail}. {hint}")]
    Unauthorized {
        registry: String,
        /// Where the credentials came from (never the credentials).
        credentials: String,
        detail: String,
        hint: String,
    },
    #[error("{reference} not found: {detail}")]
    NotFound { reference: String, detail: String },
    #[error("{reference} has no image for {platform} (it has: {available})")]
    NoMatchingPlatform {
        reference: String,
        platform: String,
        available: String,
    },
    #[error("registry {registry} answered unexpectedly: {detail}")]
    Protocol { registry: String, detail: String },
}

/// An image read from a registry: the platform's manifest, its config, and their digests.
#[derive(Clone, Debug)]
pub struct RemoteImage {
    /// Digest of the manifest (of the platform's manifest when the reference is an index).
    pub manifest_digest: String,
    /// Digest of the index the manifest was picked from, if any.
    pub index_digest: Option<String>,
    pub config_descriptor: Descriptor,
    pub layers: Vec<Descriptor>,
    /// The config as JSON (fields unknown to this crate kept).
    pub config: Value,
}

/// Upload progress: bytes sent so far.
pub type UploadProgress<'a> = &'a (dyn Fn(u64) + Send + Sync);

/// What building and pushing images needs from a registry.
#[async_trait]
pub trait Registry: Send + Sync {
    /// Fails early and clearly when `repo`'s registry is unreachable or refuses the credentials.
    async fn check_access(&self, repo: &Repository) -> Result<(), RegistryError>;
    /// The image for `platform` (an index is resolved), with its config.
    async fn pull_image(
        &self,
        image: &ImageRef,
        platform: &Platform,
    ) -> Result<RemoteImage, RegistryError>;
    /// HEAD on a blob.
    async fn blob_exists(&self, repo: &Repository, digest: &str) -> Result<bool, RegistryError>;
    /// Asks the registry to link a blob of `from` into `repo` (same registry). `false` when
    /// the registry declined (the blob must then be uploaded).
    async fn mount_blob(
        &self,
        repo: &Repository,
        from: &Repository,
        digest: &str,
    ) -> Result<bool, RegistryError>;
    /// Downloads a blob (its digest is verified).
    async fn pull_blob(&self, repo: &Repository, blob: &Descriptor)
        -> Result<Bytes, RegistryError>;
    /// Uploads a blob, reporting bytes sent.
    async fn push_blob(
        &self,
        repo: &Repository,
        data: Bytes,
        digest: &str,
        progress: UploadProgress<'_>,
    ) -> Result<(), RegistryError>;
    /// Puts a manifest under `tag_or_digest`; returns its digest.
    async fn push_manifest(
        &self,
        repo: &Repository,
        tag_or_digest: &str,
        body: Bytes,
        media_type: &str,
    ) -> Result<String, RegistryError>;
}

/// Connection settings for [`OciRegistry`].
#[derive(Clone, Debug, Default)]
pub struct RegistrySettings {
    /// Hosts (`host:port`) spoken to over plain HTTP. Loopback hosts always are.
    pub insecure: Vec<String>,
    /// Extra CA certificates (PEM) to trust, e.g. a private registry's.
    pub ca_certificates_pem: Vec<Vec<u8>>,
    /// Per-host credentials; hosts not listed are accessed anonymously. List every host the
    /// client will talk to (anonymous ones too): loopback hosts among them use plain HTTP.
    pub credentials: BTreeMap<String, ResolvedCredential>,
}

/// The real registry client.
pub struct OciRegistry {
    client: Client,
    credentials: BTreeMap<String, ResolvedCredential>,
}

impl OciRegistry {
    pub fn new(settings: RegistrySettings) -> Result<Self, RegistryError> {
        let mut http: Vec<String> = settings.insecure.clone();
        http.extend(
            settings
                .credentials
                .keys()
                .filter(|h| is_loopback_host(h))
                .cloned(),
        );
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(http),
            extra_root_certificates: settings
                .ca_certificates_pem
                .iter()
                .map(|pem| oci_client::client::Certificate {
                    encoding: oci_client::client::CertificateEncoding::Pem,
                    data: pem.clone(),
                })
                .collect(),
            // One PUT per blob, its body streamed: progress follows what is really sent.
            use_monolithic_push: true,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(120)),
            ..Default::default()
        };
        let client = Client::try_from(config).map_err(|e| RegistryError::Protocol {
            registry: "(client set-up)".into(),
            detail: format!("cannot create the HTTP client: {e}"),
        })?;
        Ok(OciRegistry {
            client,
            credentials: settings.credentials,
        })
    }

    /// Stores `host`'s credentials in the client before its first call (the client's
    /// low-level calls take none).
    async fn authed(&self, host: &str) {
        let auth = self
            .credentials
            .get(host)
            .map(|c| c.credential.to_oci())
            .unwrap_or(oci_client::secrets::RegistryAuth::Anonymous);
        self.client.store_auth_if_needed(host, &auth).await;
    }

    fn classify(&self, host: &str, what: &str, e: OciDistributionError) -> RegistryError {
        let creds = self.credentials.get(host);
        let unauthorized = |detail: String| {
            let anonymous = creds.is_none_or(|c| c.is_anonymous());
            RegistryError::Unauthorized {
                registry: host.to_string(),
                credentials: match creds {
                    Some(c) if !c.is_anonymous() => format!("the credentials from {}", c.source),
                    _ => "anonymous access".into(),
                },
                detail,
                hint: if anonymous {
                    format!(
                        "It needs credentials: set {} and {} (or {} for an Azure Container \
                         Registry token), or log in with docker so config.json has them",
                        crate::auth::ENV_USERNAME,
                        crate::auth::ENV_PASSWORD,
                        crate::auth::ENV_TOKEN
                    )
                } else {
                    "Check the username and password (or the token, which may have expired), and \
                     that they may push to this repository"
                        .into()
                },
            }
        };
        let not_found = |detail: String| RegistryError::NotFound {
            reference: what.to_string(),
            detail,
        };
        let protocol = |detail: String| RegistryError::Protocol {
            registry: host.to_string(),
            detail: format!("{what}: {detail}"),
        };
        use OciDistributionError as E;
        match e {
            E::RequestError(re) => {
                let detail = error_chain(&re);
                match re.status().map(|s| s.as_u16()) {
                    _ if re.is_connect() || re.is_timeout() => RegistryError::Unreachable {
                        registry: host.to_string(),
                        detail,
                    },
                    Some(401) | Some(403) => unauthorized(format!("HTTP {}", re.status().unwrap())),
                    Some(404) => not_found("HTTP 404".into()),
                    _ if re.is_request() || re.is_body() || re.is_decode() => {
                        RegistryError::Unreachable {
                            registry: host.to_string(),
                            detail,
                        }
                    }
                    _ => protocol(detail),
                }
            }
            E::UnauthorizedError { .. } => unauthorized("HTTP 401".into()),
            E::AuthenticationFailure(reason) => unauthorized(format!(
                "the token service said: {}",
                envelope_text(&reason)
            )),
            E::ServerError { code, message, .. } => match code {
                401 | 403 => unauthorized(format!("HTTP {code}")),
                404 => not_found(format!("HTTP 404 {}", message.trim())),
                _ => protocol(format!("HTTP {code} {}", message.trim())),
            },
            E::RegistryError { envelope, .. } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                let text = envelope
                    .errors
                    .iter()
                    .map(|e| format!("{:?}: {}", e.code, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
                {
                    unauthorized(text)
                } else if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::NotFound
                            | OciErrorCode::BlobUnknown
                    )
                }) {
                    not_found(text)
                } else {
                    protocol(text)
                }
            }
            E::ImageManifestNotFoundError(m) => not_found(m),
            other => protocol(other.to_string()),
        }
    }

    async fn manifest_raw(
        &self,
        image: &ImageRef,
    ) -> Result<(Bytes, String, Value), RegistryError> {
        let host = &image.repository.registry;
        let auth = self
            .credentials
            .get(host)
            .map(|c| c.credential.to_oci())
            .unwrap_or(oci_client::secrets::RegistryAuth::Anonymous);
        let (body, digest) = self
            .client
            .pull_manifest_raw(
                &image.to_oci(),
                &auth,
                &[
                    MANIFEST_MEDIA_TYPE,
                    INDEX_MEDIA_TYPE,
                    DOCKER_MANIFEST_MEDIA_TYPE,
                    DOCKER_LIST_MEDIA_TYPE,
                ],
            )
            .await
            .map_err(|e| self.classify(host, &image.to_string(), e))?;
        let json: Value = serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
            registry: host.clone(),
            detail: format!("the manifest of {image} is not JSON: {e}"),
        })?;
        Ok((body, digest, json))
    }
}

/// The messages of an OCI error envelope (`{"errors":[{"code","message"}]}`), else the text
/// itself, shortened.
fn envelope_text(body: &str) -> String {
    let messages: Vec<String> = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("errors")?.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e.get("message")?.as_str().map(str::to_string))
        .collect();
    if !messages.is_empty() {
        return messages.join("; ");
    }
    let t = body.trim();
    match t.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_string(),
    }
}

/// "a: b: c" from an error and its sources, without repeats.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}

fn descriptor(v: &Value, what: &str) -> Result<Descriptor, String> {
    serde_json::from_value(v.clone()).map_err(|e| format!("{what} is not a descriptor: {e}"))
}

#[async_trait]
impl Registry for OciRegistry {
    async fn check_access(&self, repo: &Repository) -> Result<(), RegistryError> {
        let host = &repo.registry;
        self.authed(host).await;
        let auth = self
            .credentials
            .get(host)
            .map(|c| c.credential.to_oci())
            .unwrap_or(oci_client::secrets::RegistryAuth::Anonymous);
        let r = repo.to_oci();
        // Token registries (ACR) check the credentials here; Basic ones on the next call.
        self.client
            .auth(&r, &auth, RegistryOperation::Push)
            .await
            .map_err(|e| self.classify(host, &repo.to_string(), e))?;
        self.client
            .blob_exists(&r, EMPTY_BLOB)
            .await
            .map_err(|e| self.classify(host, &repo.to_string(), e))?;
        Ok(())
    }

    async fn pull_image(
        &self,
        image: &ImageRef,
        platform: &Platform,
    ) -> Result<RemoteImage, RegistryError> {
        let host = image.repository.registry.clone();
        let bad = |detail: String| RegistryError::Protocol {
            registry: host.clone(),
            detail: format!("{image}: {detail}"),
        };
        self.authed(&host).await;
        let (_, digest, json) = self.manifest_raw(image).await?;
        let (manifest_digest, index_digest, manifest) = if json.get("manifests").is_some() {
            let entries = json["manifests"].as_array().cloned().unwrap_or_default();
            let pick = entries.iter().find(|m| {
                m.pointer("/platform/os").and_then(Value::as_str) == Some(platform.os.as_str())
                    && m.pointer("/platform/architecture").and_then(Value::as_str)
                        == Some(platform.architecture.as_str())
            });
            let Some(entry) = pick else {
                let available = entries
                    .iter()
                    .filter_map(|m| {
                        Some(format!(
                            "{}/{}",
                            m.pointer("/platform/os")?.as_str()?,
                            m.pointer("/platform/architecture")?.as_str()?
                        ))
                    })
                    .collect::<Vec<_>>();
                return Err(RegistryError::NoMatchingPlatform {
                    reference: image.to_string(),
                    platform: platform.to_string(),
                    available: if available.is_empty() {
                        "none".into()
                    } else {
                        available.join(", ")
                    },
                });
            };
            let d = entry["digest"]
                .as_str()
                .ok_or_else(|| bad("an index entry has no digest".into()))?;
            let (_, mdigest, mjson) = self.manifest_raw(&image.with_digest(d)).await?;
            (mdigest, Some(digest), mjson)
        } else {
            (digest, None, json)
        };
        if manifest.get("layers").is_none() {
            return Err(bad(
                "the manifest is not an image manifest (no layers)".into()
            ));
        }
        let config_descriptor = descriptor(&manifest["config"], "config").map_err(bad)?;
        let layers = manifest["layers"]
            .as_array()
            .ok_or_else(|| bad("`layers` is not a list".into()))?
            .iter()
            .enumerate()
            .map(|(i, l)| descriptor(l, &format!("layers[{i}]")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)?;
        let config_bytes = self
            .pull_blob(&image.repository, &config_descriptor)
            .await?;
        let config: Value = serde_json::from_slice(&config_bytes)
            .map_err(|e| bad(format!("the image config is not JSON: {e}")))?;
        Ok(RemoteImage {
            manifest_digest,
            index_digest,
            config_descriptor,
            layers,
            config,
        })
    }

    async fn blob_exists(&self, repo: &Repository, digest: &str) -> Result<bool, RegistryError> {
        self.authed(&repo.registry).await;
        self.client
            .blob_exists(&repo.to_oci(), digest)
            .await
            .map_err(|e| self.classify(&repo.registry, &format!("{repo}@{digest}"), e))
    }

    async fn mount_blob(
        &self,
        repo: &Repository,
        from: &Repository,
        digest: &str,
    ) -> Result<bool, RegistryError> {
        self.authed(&repo.registry).await;
        match self
            .client
            .mount_blob(&repo.to_oci(), &from.to_oci(), digest)
            .await
        {
            Ok(()) => Ok(true),
            // 202: the registry started an upload instead of mounting (allowed by the spec).
            Err(OciDistributionError::ServerError { code: 202, .. }) => Ok(false),
            Err(e) => Err(self.classify(&repo.registry, &format!("{repo}@{digest}"), e)),
        }
    }

    async fn pull_blob(
        &self,
        repo: &Repository,
        blob: &Descriptor,
    ) -> Result<Bytes, RegistryError> {
        self.authed(&repo.registry).await;
        let d = OciDescriptor {
            media_type: blob.media_type.clone(),
            digest: blob.digest.clone(),
            size: blob.size as i64,
            ..Default::default()
        };
        let mut out = Vec::with_capacity(blob.size as usize);
        self.client
            .pull_blob(&repo.to_oci(), &d, &mut out)
            .await
            .map_err(|e| self.classify(&repo.registry, &format!("{repo}@{}", blob.digest), e))?;
        Ok(Bytes::from(out))
    }

    async fn push_blob(
        &self,
        repo: &Repository,
        data: Bytes,
        digest: &str,
        progress: UploadProgress<'_>,
    ) -> Result<(), RegistryError> {
        self.authed(&repo.registry).await;
        let size = data.len() as u64;
        // The body stream must be 'static: it reports through a channel, drained here while
        // the upload runs.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
        let chunks: Vec<Bytes> = (0..data.len())
            .step_by(PROGRESS_CHUNK)
            .map(|i| data.slice(i..(i + PROGRESS_CHUNK).min(data.len())))
            .collect();
        let mut sent = 0u64;
        let stream = futures_util::stream::iter(chunks).map(move |c| {
            sent += c.len() as u64;
            let _ = tx.send(sent);
            Ok::<_, OciDistributionError>(c)
        });
        let target = repo.to_oci();
        let upload = self
            .client
            .push_blob_stream(&target, stream, digest, Some(size));
        let report = async {
            while let Some(n) = rx.recv().await {
                progress(n);
            }
        };
        let (res, ()) = futures_util::future::join(upload, report).await;
        res.map_err(|e| self.classify(&repo.registry, &format!("{repo}@{digest}"), e))?;
        Ok(())
    }

    async fn push_manifest(
        &self,
        repo: &Repository,
        tag_or_digest: &str,
        body: Bytes,
        media_type: &str,
    ) -> Result<String, RegistryError> {
        self.authed(&repo.registry).await;
        let digest = sha256_digest(&body);
        let target = if tag_or_digest.contains(':') {
            repo.digest(tag_or_digest)
        } else {
            repo.tag(tag_or_digest)
        };
        let content_type = media_type.parse().map_err(|_| RegistryError::Protocol {
            registry: repo.registry.clone(),
            detail: format!("bad media type {media_type}"),
        })?;
        self.client
            .push_manifest_raw(&target.to_oci(), body, content_type)
            .await
            .map_err(|e| self.classify(&repo.registry, &target.to_string(), e))?;
        Ok(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_are_read_and_other_text_shortened() {
        assert_eq!(
            envelope_text(r#"{"errors":[{"code":"UNAUTHORIZED","message":"invalid token"}]}"#),
            "invalid token"
        );
        assert_eq!(envelope_text("  plain  "), "plain");
        assert_eq!(envelope_text(&"x".repeat(300)).chars().count(), 201);
    }
}
