//! The Azure Blob Storage slice drdctl's witness uses: `GET` and `PUT` of one block blob
//! (`/{container}/{blob}`) with the service's conditional-request rules, ETags, error codes
//! (`x-ms-error-code` and an XML `<Error>` body) and bearer-token authentication (Entra ID
//! tokens from the same token double; `x-ms-version` required with them, as the service does).
//!
//! Rules kept from the real service (learn.microsoft.com/rest/api/storageservices/put-blob,
//! .../specifying-conditional-headers-for-blob-service-operations):
//! - every write gives the blob a new ETag (quoted, `"0x8D…"`);
//! - `If-Match: <etag>` on a blob whose ETag differs, or that does not exist: 412
//!   `ConditionNotMet`;
//! - `If-None-Match: *` on a blob that exists: 409 `BlobAlreadyExists`;
//! - a read of a missing blob: 404 `BlobNotFound`; of a missing container: 404
//!   `ContainerNotFound`;
//! - `Put Blob` without `x-ms-blob-type: BlockBlob`: 400 `MissingRequiredHeader`.
//!
//! Reads are strongly consistent (one lock), like the primary endpoint's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use poem::http::{HeaderMap, Method, StatusCode};
use poem::Response;

/// The Blob service version the double answers with (`x-ms-version`).
pub const STORAGE_VERSION: &str = "2021-08-06";

/// One stored blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub data: Vec<u8>,
    /// Quoted, as sent in the `ETag` header.
    pub etag: String,
    pub content_type: String,
    pub last_modified: chrono::DateTime<chrono::Utc>,
}

#[derive(Default)]
struct State {
    containers: BTreeSet<String>,
    blobs: BTreeMap<(String, String), Blob>,
    version: u64,
}

/// The blobs the double holds.
#[derive(Default)]
pub struct BlobStore {
    state: Mutex<State>,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("BlobStore")
            .field("containers", &s.containers)
            .field("blobs", &s.blobs.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Why a write was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobWriteError {
    ContainerNotFound,
    /// `If-Match` did not hold (412).
    ConditionNotMet,
    /// `If-None-Match: *` and the blob exists (409).
    AlreadyExists,
}

impl BlobStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates a container (no-op if it exists).
    pub fn create_container(&self, name: &str) {
        self.lock().containers.insert(name.to_string());
    }

    /// The blob, if any.
    pub fn get(&self, container: &str, blob: &str) -> Option<Blob> {
        self.lock()
            .blobs
            .get(&(container.to_string(), blob.to_string()))
            .cloned()
    }

    /// Writes under the service's conditions; returns the stored blob (new ETag).
    pub fn put(
        &self,
        container: &str,
        blob: &str,
        data: Vec<u8>,
        content_type: &str,
        if_match: Option<&str>,
        if_none_match: Option<&str>,
    ) -> Result<Blob, BlobWriteError> {
        let mut s = self.lock();
        if !s.containers.contains(container) {
            return Err(BlobWriteError::ContainerNotFound);
        }
        let key = (container.to_string(), blob.to_string());
        let current = s.blobs.get(&key);
        if let Some(want) = if_match {
            let holds = match current {
                Some(b) => want.trim() == "*" || want.trim() == b.etag,
                None => false,
            };
            if !holds {
                return Err(BlobWriteError::ConditionNotMet);
            }
        }
        if let Some(v) = if_none_match {
            if v.trim() == "*" && current.is_some() {
                return Err(BlobWriteError::AlreadyExists);
            }
            if let Some(b) = current {
                if v.trim() == b.etag {
                    return Err(BlobWriteError::ConditionNotMet);
                }
            }
        }
        s.version += 1;
        let stored = Blob {
            data,
            etag: format!("\"0x8DD{:013X}\"", s.version),
            content_type: content_type.to_string(),
            last_modified: chrono::Utc::now(),
        };
        s.blobs.insert(key, stored.clone());
        Ok(stored)
    }
}

fn error(status: u16, code: &str, message: &str, request_id: &str) -> Response {
    let body = format!(
        "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>{message}\nRequestId:{request_id}\nTime:{}</Message></Error>",
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.7fZ")
    );
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST))
        .content_type("application/xml")
        .header("x-ms-error-code", code)
        .header("x-ms-request-id", request_id)
        .header("x-ms-version", STORAGE_VERSION)
        .body(body)
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn http_date(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// Serves one blob request (`segs` = container, blob). `authorized`: a valid bearer token came.
pub(crate) fn handle(
    store: &BlobStore,
    method: &Method,
    segs: &[String],
    headers: &HeaderMap,
    body: Vec<u8>,
    authorized: Option<bool>,
    request_id: &str,
) -> Response {
    match authorized {
        None => {
            return error(
                401,
                "NoAuthenticationInformation",
                "Server failed to authenticate the request. Please refer to the information in the www-authenticate header.",
                request_id,
            )
        }
        Some(false) => {
            return error(
                401,
                "InvalidAuthenticationInfo",
                "Server failed to authenticate the request. The token is not valid.",
                request_id,
            )
        }
        Some(true) => {}
    }
    if header(headers, "x-ms-version").is_none() {
        return error(
            400,
            "MissingRequiredHeader",
            "An HTTP header that's mandatory for this request is not specified (x-ms-version: required with OAuth).",
            request_id,
        );
    }
    let (container, blob) = (&segs[0], segs[1..].join("/"));
    let ok = |status: StatusCode, b: &Blob| {
        Response::builder()
            .status(status)
            .header("etag", b.etag.as_str())
            .header("last-modified", http_date(b.last_modified))
            .header("x-ms-request-id", request_id)
            .header("x-ms-version", STORAGE_VERSION)
    };
    match *method {
        Method::GET | Method::HEAD => match store.get(container, &blob) {
            Some(b) => {
                if header(headers, "if-none-match").is_some_and(|v| v.trim() == b.etag) {
                    return ok(StatusCode::NOT_MODIFIED, &b).finish();
                }
                let resp = ok(StatusCode::OK, &b)
                    .content_type(b.content_type.as_str())
                    .header("x-ms-blob-type", "BlockBlob");
                if *method == Method::HEAD {
                    resp.finish()
                } else {
                    resp.body(b.data)
                }
            }
            None if !store.lock().containers.contains(container.as_str()) => error(
                404,
                "ContainerNotFound",
                "The specified container does not exist.",
                request_id,
            ),
            None => error(
                404,
                "BlobNotFound",
                "The specified blob does not exist.",
                request_id,
            ),
        },
        Method::PUT => {
            if header(headers, "x-ms-blob-type") != Some("BlockBlob") {
                return error(
                    400,
                    "MissingRequiredHeader",
                    "An HTTP header that's mandatory for this request is not specified (x-ms-blob-type).",
                    request_id,
                );
            }
            let content_type = header(headers, "x-ms-blob-content-type")
                .or_else(|| header(headers, "content-type"))
                .unwrap_or("application/octet-stream");
            match store.put(
                container,
                &blob,
                body,
                content_type,
                header(headers, "if-match"),
                header(headers, "if-none-match"),
            ) {
                Ok(b) => ok(StatusCode::CREATED, &b)
                    .header("x-ms-request-server-encrypted", "true")
                    .finish(),
                Err(BlobWriteError::ContainerNotFound) => error(
                    404,
                    "ContainerNotFound",
                    "The specified container does not exist.",
                    request_id,
                ),
                Err(BlobWriteError::ConditionNotMet) => error(
                    412,
                    "ConditionNotMet",
                    "The condition specified using HTTP conditional header(s) is not met.",
                    request_id,
                ),
                Err(BlobWriteError::AlreadyExists) => error(
                    409,
                    "BlobAlreadyExists",
                    "The specified blob already exists.",
                    request_id,
                ),
            }
        }
        _ => error(
            405,
            "UnsupportedHttpVerb",
            "The resource doesn't support specified Http Verb.",
            request_id,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_and_swap_rules() {
        let s = BlobStore::default();
        assert_eq!(
            s.put("c", "b", b"x".to_vec(), "t", None, Some("*")),
            Err(BlobWriteError::ContainerNotFound)
        );
        s.create_container("c");
        assert_eq!(
            s.put("c", "b", b"x".to_vec(), "t", Some("\"nope\""), None),
            Err(BlobWriteError::ConditionNotMet),
            "If-Match on a missing blob"
        );
        let first = s
            .put("c", "b", b"1".to_vec(), "t", None, Some("*"))
            .unwrap();
        assert_eq!(
            s.put("c", "b", b"2".to_vec(), "t", None, Some("*")),
            Err(BlobWriteError::AlreadyExists)
        );
        let second = s
            .put("c", "b", b"2".to_vec(), "t", Some(&first.etag), None)
            .unwrap();
        assert_ne!(first.etag, second.etag);
        assert_eq!(
            s.put("c", "b", b"3".to_vec(), "t", Some(&first.etag), None),
            Err(BlobWriteError::ConditionNotMet),
            "a stale ETag loses"
        );
        assert_eq!(s.get("c", "b").unwrap().data, b"2");
    }
}
