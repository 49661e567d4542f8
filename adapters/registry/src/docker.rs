//! The docker builder: `docker buildx build --push` with each service's Dockerfile, for
//! machines with a Docker daemon. It checks first that a daemon answers and that buildx is
//! there, and says what to do when not. The digest comes from buildx's `--metadata-file`
//! (`containerimage.digest`). Docker uses its own login (`docker login`).

use std::path::Path;
use std::process::Stdio;

use tokio::process::Command;

use crate::git::SourceInfo;
use crate::image::{oci_labels, ImageMetadata};
use crate::options::BuildPushOptions;
use crate::reference::Repository;
use crate::report::{BlobStats, Progress, ProgressFn, PushedImage};
use crate::service::Service;

/// Why the docker builder cannot run or failed.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(
        "the docker builder needs the docker CLI, and `{program}` cannot be run ({reason}); use \
         the native builder (the default), which needs no Docker"
    )]
    NotInstalled { program: String, reason: String },
    #[error(
        "the docker builder needs a Docker daemon, and none answers ({detail}); start one (or \
         set DOCKER_HOST), or use the native builder (the default), which builds and pushes \
         without Docker"
    )]
    NoDaemon { detail: String },
    #[error(
        "the docker builder needs the buildx plugin, and `docker buildx` fails ({detail}); \
         install it (Debian: docker-buildx), or use the native builder (the default)"
    )]
    NoBuildx { detail: String },
    #[error("docker buildx build for {service} failed ({status}); its output is above")]
    BuildFailed { service: Service, status: String },
    #[error("docker buildx build for {service} left no image digest in {path}: {reason}")]
    NoDigest {
        service: Service,
        path: String,
        reason: String,
    },
}

async fn probe(docker: &Path, args: &[&str]) -> Result<Result<String, String>, DockerError> {
    let out = Command::new(docker)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| DockerError::NotInstalled {
            program: docker.display().to_string(),
            reason: e.to_string(),
        })?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
    if out.status.success() {
        Ok(Ok(text(&out.stdout)))
    } else {
        let err = text(&out.stderr);
        Ok(Err(if err.is_empty() {
            out.status.to_string()
        } else {
            err.lines().last().unwrap_or_default().to_string()
        }))
    }
}

/// Checks that a daemon answers and buildx is installed.
pub async fn check_docker(docker: &Path) -> Result<(), DockerError> {
    if let Err(detail) = probe(docker, &["version", "--format", "{{.Server.Version}}"]).await? {
        return Err(DockerError::NoDaemon { detail });
    }
    if let Err(detail) = probe(docker, &["buildx", "version"]).await? {
        return Err(DockerError::NoBuildx { detail });
    }
    Ok(())
}

/// Builds and pushes each service with `docker buildx build --push`.
pub(crate) async fn build_push(
    opts: &BuildPushOptions,
    source: &SourceInfo,
    source_url: Option<&str>,
    repos: &[(Service, Repository)],
    tags: &[String],
    progress: ProgressFn<'_>,
) -> Result<Vec<PushedImage>, DockerError> {
    check_docker(&opts.docker).await?;
    let mut images = Vec::new();
    for (service, repo) in repos {
        let service = *service;
        progress(&Progress::DockerBuild { service });
        let meta_dir = tempfile::tempdir().map_err(|e| DockerError::NoDigest {
            service,
            path: "(temp dir)".into(),
            reason: e.to_string(),
        })?;
        let meta_file = meta_dir.path().join("metadata.json");
        let labels = oci_labels(&ImageMetadata {
            service,
            version: opts.version.clone(),
            revision: source.revision.clone(),
            created: source.created(),
            source: source_url.map(str::to_string),
        });
        let mut cmd = Command::new(&opts.docker);
        cmd.args(["buildx", "build", "--push", "--provenance=false"])
            .arg("--platform")
            .arg(opts.platform.to_string())
            .arg("--file")
            .arg(
                opts.repo_root
                    .join("services")
                    .join(service.name())
                    .join("Dockerfile"),
            )
            .arg("--metadata-file")
            .arg(&meta_file);
        for t in tags {
            cmd.arg("--tag").arg(format!("{repo}:{t}"));
        }
        for (k, v) in &labels {
            cmd.arg("--label").arg(format!("{k}={v}"));
        }
        // BuildKit honours SOURCE_DATE_EPOCH for reproducible timestamps.
        cmd.env("SOURCE_DATE_EPOCH", source.commit_time.to_string())
            .arg(&opts.repo_root)
            .stdin(Stdio::null());
        let status = cmd.status().await.map_err(|e| DockerError::NotInstalled {
            program: opts.docker.display().to_string(),
            reason: e.to_string(),
        })?;
        if !status.success() {
            return Err(DockerError::BuildFailed {
                service,
                status: status.to_string(),
            });
        }
        let no_digest = |reason: String| DockerError::NoDigest {
            service,
            path: meta_file.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(&meta_file).map_err(|e| no_digest(e.to_string()))?;
        let meta: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| no_digest(e.to_string()))?;
        let digest = meta["containerimage.digest"]
            .as_str()
            .filter(|d| crate::digest::is_sha256_digest(d))
            .ok_or_else(|| no_digest("no `containerimage.digest`".into()))?;
        let image = PushedImage {
            service,
            repository: repo.to_string(),
            tags: tags.to_vec(),
            digest: digest.to_string(),
            size: None,
            blobs: BlobStats::default(),
        };
        progress(&Progress::ImagePushed(image.clone()));
        images.push(image);
    }
    Ok(images)
}
