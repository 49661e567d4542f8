//! The one error type of `build_push`: each variant says what failed and what to do. Causes are
//! written into the message (not chained), so a one-line print is complete.

use crate::auth::CredentialError;
use crate::docker::DockerError;
use crate::git::GitError;
use crate::images_file::ImagesFileError;
use crate::registry::RegistryError;
use crate::service::Service;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Options(String),
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(
        "base image {base} not found ({detail}). Use a base that exists, pinned by digest, or \
         mirror it into your registry (e.g. `az acr import --source \
         gcr.io/distroless/cc-debian12:nonroot --image base/cc-debian12:nonroot -n <registry>`), \
         or use `scratch` with a statically linked binary"
    )]
    BaseImageNotFound { base: String, detail: String },
    #[error("cannot use base image {base}: {cause}")]
    BaseImage { base: String, cause: String },
    #[error("{action}: {cause}")]
    Registry {
        action: String,
        cause: RegistryError,
    },
    #[error("{command} failed: {reason}")]
    Cargo { command: String, reason: String },
    #[error("the {service} binary {path}: {reason}")]
    Binary {
        service: Service,
        path: String,
        reason: String,
    },
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    ImagesFile(#[from] ImagesFileError),
}

impl Error {
    /// The registry failure underneath, if that is what this is.
    pub fn registry_error(&self) -> Option<&RegistryError> {
        match self {
            Error::Registry { cause, .. } => Some(cause),
            _ => None,
        }
    }
}
