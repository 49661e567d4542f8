//! What `build_push` tells its caller: progress events while it works (the CLI turns uploads
//! into progress bars) and a [`Report`] at the end (one `registry/name:tag@sha256:…` line per
//! image, plus figures).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::service::Service;

/// Which blob of an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobKind {
    /// A layer of the base image.
    BaseLayer,
    /// The layer holding the service binary.
    AppLayer,
    /// The image config.
    Config,
}

impl fmt::Display for BlobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BlobKind::BaseLayer => "base layer",
            BlobKind::AppLayer => "app layer",
            BlobKind::Config => "config",
        })
    }
}

/// Why a blob was not uploaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// The registry already has it in the target repository.
    AlreadyPresent,
    /// Linked from another repository of the same registry (cross-repository mount).
    Mounted { from: String },
}

/// A step of `build_push`, in order. Every blob ends in `UploadFinished` or `BlobSkipped`;
/// `UploadProgress` follows `UploadStarted` as bytes are sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// `cargo build --release` started for these services.
    Compiling { services: Vec<Service> },
    /// A service binary is ready.
    Compiled {
        service: Service,
        binary: PathBuf,
        bytes: u64,
    },
    /// The base image was resolved (`digest` of the platform's manifest).
    BaseImage { reference: String, digest: String },
    UploadStarted {
        service: Service,
        kind: BlobKind,
        digest: String,
        bytes: u64,
    },
    UploadProgress {
        service: Service,
        digest: String,
        sent: u64,
        bytes: u64,
    },
    UploadFinished {
        service: Service,
        kind: BlobKind,
        digest: String,
        bytes: u64,
    },
    BlobSkipped {
        service: Service,
        kind: BlobKind,
        digest: String,
        reason: SkipReason,
    },
    /// The docker builder started `docker buildx build` for a service.
    DockerBuild { service: Service },
    /// An image's manifest is pushed under all its tags.
    ImagePushed(PushedImage),
}

/// The progress callback: called from the task running `build_push`, in order.
pub type ProgressFn<'a> = &'a (dyn Fn(&Progress) + Send + Sync);

/// What happened to an image's blobs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlobStats {
    pub uploaded: u32,
    pub uploaded_bytes: u64,
    pub already_present: u32,
    pub mounted: u32,
}

/// One image in the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushedImage {
    pub service: Service,
    /// `registry/path`.
    pub repository: String,
    /// Tags pushed, the version first.
    pub tags: Vec<String>,
    /// `sha256:…` of the manifest.
    pub digest: String,
    /// Compressed size: config plus layers (what a node downloads), when known.
    pub size: Option<u64>,
    /// Blob uploads (native builder only).
    pub blobs: BlobStats,
}

impl PushedImage {
    /// `registry/name:version@sha256:…`.
    pub fn reference(&self) -> String {
        match self.tags.first() {
            Some(t) => format!("{}:{t}@{}", self.repository, self.digest),
            None => format!("{}@{}", self.repository, self.digest),
        }
    }
}

/// The result of `build_push`.
#[derive(Clone, Debug)]
pub struct Report {
    pub images: Vec<PushedImage>,
    /// Where the digests were recorded for `drdctl deploy`.
    pub images_file: PathBuf,
    /// The git revision the images were built from (`-dirty` if the tree was).
    pub revision: String,
    /// Time in `cargo build` (native) or `docker buildx build` (docker).
    pub build_time: Duration,
    /// Time resolving the base image and pushing blobs and manifests.
    pub push_time: Duration,
    /// Things the operator should know (e.g. an unpinned base image).
    pub warnings: Vec<String>,
}

impl fmt::Display for Report {
    /// One line per image: `registry/name:tag@sha256:…`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for i in &self.images {
            writeln!(f, "{}", i.reference())?;
        }
        Ok(())
    }
}
