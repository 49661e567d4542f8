//! The image digests `build-push` records and `deploy` reads, so deployments are pinned by
//! digest and both regions run the same bytes.
//!
//! Default path: `.drdctl/images.json` in the repository. Format (version 1):
//!
//! ```json
//! {
//!   "version": 1,
//!   "images": {
//!     "frontend-api": {
//!       "repository": "myreg.azurecr.io/drd/frontend-api",
//!       "tag": "1.4.0",
//!       "digest": "sha256:…",
//!       "reference": "myreg.azurecr.io/drd/frontend-api:1.4.0@sha256:…",
//!       "tags": ["1.4.0", "<git revision>"],
//!       "revision": "<git revision>",
//!       "created": "2024-05-06T07:08:09Z",
//!       "builder": "native"
//!     }
//!   }
//! }
//! ```
//!
//! `reference` is what a Deployment's `image:` gets. A build of some services keeps the other
//! services' entries. The file is replaced atomically (write + rename).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The path relative to the repository root.
pub const DEFAULT_IMAGES_FILE: &str = ".drdctl/images.json";

const FORMAT_VERSION: u32 = 1;

/// One service's image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `registry/path`, without tag or digest.
    pub repository: String,
    /// The version tag.
    pub tag: String,
    /// `sha256:…` of the manifest.
    pub digest: String,
    /// `repository:tag@digest`: pinned by digest, readable by tag.
    pub reference: String,
    /// Every tag pushed.
    pub tags: Vec<String>,
    pub revision: String,
    pub created: String,
    pub builder: String,
}

impl ImageRecord {
    /// `repository@digest`: the digest alone, for tools that refuse tag+digest.
    pub fn by_digest(&self) -> String {
        format!("{}@{}", self.repository, self.digest)
    }
}

/// The whole file: service name → image.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagesFile {
    pub version: u32,
    pub images: BTreeMap<String, ImageRecord>,
}

/// Why the file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ImagesFileError {
    #[error(
        "no image digests at {path}: run `drdctl build-push` first (or point to the file it wrote)"
    )]
    Missing { path: String },
    #[error("cannot read image digests {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path} has format version {found}, this drdctl reads version {FORMAT_VERSION}: rebuild with `drdctl build-push`")]
    Version { path: String, found: u32 },
    #[error("cannot write image digests {path}: {reason}")]
    Write { path: String, reason: String },
}

impl ImagesFile {
    /// The image of `service` (`frontend-api`, ...), if recorded.
    pub fn get(&self, service: &str) -> Option<&ImageRecord> {
        self.images.get(service)
    }
}

/// `<repo_root>/.drdctl/images.json`.
pub fn default_images_file(repo_root: &Path) -> PathBuf {
    repo_root.join(DEFAULT_IMAGES_FILE)
}

/// Reads the file `build-push` wrote.
pub fn read_images_file(path: &Path) -> Result<ImagesFile, ImagesFileError> {
    let p = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ImagesFileError::Missing { path: p })
        }
        Err(e) => {
            return Err(ImagesFileError::Read {
                path: p,
                reason: e.to_string(),
            })
        }
    };
    let file: ImagesFile = serde_json::from_str(&text).map_err(|e| ImagesFileError::Read {
        path: p.clone(),
        reason: format!("not a build-push images file ({e})"),
    })?;
    if file.version != FORMAT_VERSION {
        return Err(ImagesFileError::Version {
            path: p,
            found: file.version,
        });
    }
    Ok(file)
}

/// Adds or replaces `records` in the file at `path` (created with its directory if absent).
pub fn record_images(
    path: &Path,
    records: impl IntoIterator<Item = (String, ImageRecord)>,
) -> Result<ImagesFile, ImagesFileError> {
    let mut file = match read_images_file(path) {
        Ok(f) => f,
        Err(ImagesFileError::Missing { .. }) => ImagesFile {
            version: FORMAT_VERSION,
            images: BTreeMap::new(),
        },
        Err(e) => return Err(e),
    };
    file.images.extend(records);
    let werr = |reason: String| ImagesFileError::Write {
        path: path.display().to_string(),
        reason,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| werr(e.to_string()))?;
    let mut text = serde_json::to_string_pretty(&file).expect("serializable");
    text.push('\n');
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| werr(e.to_string()))?;
    std::fs::write(tmp.path(), text).map_err(|e| werr(e.to_string()))?;
    tmp.persist(path).map_err(|e| werr(e.error.to_string()))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(svc: &str, digest: &str) -> (String, ImageRecord) {
        let repo = format!("127.0.0.1:5000/drd/{svc}");
        (
            svc.to_string(),
            ImageRecord {
                reference: format!("{repo}:1.0.0@{digest}"),
                repository: repo,
                tag: "1.0.0".into(),
                digest: digest.into(),
                tags: vec!["1.0.0".into(), "abc".into()],
                revision: "abc".into(),
                created: "2024-01-01T00:00:00Z".into(),
                builder: "native".into(),
            },
        )
    }

    #[test]
    fn records_merge_and_read_back() {
        let d = tempfile::tempdir().unwrap();
        let path = default_images_file(d.path());
        let e = read_images_file(&path).unwrap_err().to_string();
        assert!(e.contains("run `drdctl build-push` first"), "{e}");

        record_images(
            &path,
            [
                rec("frontend-api", "sha256:1"),
                rec("data-ingest", "sha256:2"),
            ],
        )
        .unwrap();
        record_images(&path, [rec("frontend-api", "sha256:3")]).unwrap();
        let f = read_images_file(&path).unwrap();
        assert_eq!(f.version, 1);
        assert_eq!(f.get("frontend-api").unwrap().digest, "sha256:3");
        assert_eq!(f.get("data-ingest").unwrap().digest, "sha256:2");
        assert_eq!(
            f.get("data-ingest").unwrap().by_digest(),
            "127.0.0.1:5000/drd/data-ingest@sha256:2"
        );
        assert!(f.get("business-logic").is_none());
    }

    #[test]
    fn other_versions_and_garbage_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("images.json");
        std::fs::write(&path, r#"{"version": 2, "images": {}}"#).unwrap();
        assert!(matches!(
            read_images_file(&path),
            Err(ImagesFileError::Version { found: 2, .. })
        ));
        std::fs::write(&path, "nope").unwrap();
        assert!(read_images_file(&path)
            .unwrap_err()
            .to_string()
            .contains("not a build-push images file"));
    }
}
