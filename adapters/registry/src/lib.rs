//! drd-registry: the services' container images, built without a Docker daemon and pushed to
//! an OCI registry by digest (issue #8, `drdctl build-push`).
//!
//! [`build_push`] is the whole command: it builds the selected services, makes one image each,
//! pushes them, and records their digests (see [`images_file`]) where `drdctl deploy` reads
//! them ([`read_images_file`]), so both regions run the same bytes.
//!
//! - Native builder (default; [`native`]): `cargo build --release --locked`, a reproducible
//!   layer holding `/usr/local/bin/<service>` ([`layer`]), on a base image (distroless `cc`
//!   pinned by digest by default, or `scratch`) pulled from its registry, with an image config
//!   ([`image`]) that runs the binary as user 65532 on the service's port, and OCI labels whose
//!   `created` is the commit time: the same commit gives the same digests. Blobs the registry
//!   has are not uploaded again. Tags: the version and the git revision.
//! - Docker builder ([`docker`]): `docker buildx build --push` with the services' Dockerfiles,
//!   when a daemon answers.
//! - Registry access goes through the [`Registry`] trait; [`OciRegistry`] is the real one.
//!   Credentials ([`auth`]) come from the environment, docker's config.json or an ACR token,
//!   and are never printed.
//!
//! Layout: `options` (what to do), `report` (progress events and the result), `error` (one
//! error type with actionable messages), `git` (revision and commit time), `reference` (image
//! names), `service` (the three services), `digest` (sha256 helpers).

pub mod auth;
pub mod digest;
pub mod docker;
mod error;
pub mod git;
pub mod image;
pub mod images_file;
pub mod layer;
pub mod native;
mod options;
pub mod reference;
pub mod registry;
mod report;
mod service;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

pub use auth::{Credential, CredentialSources, ResolvedCredential};
pub use error::Error;
pub use image::Platform;
pub use images_file::{read_images_file, ImageRecord, ImagesFile, ImagesFileError};
pub use options::{BaseImage, Binaries, BuildPushOptions, Builder, DEFAULT_BASE_IMAGE};
pub use reference::{ImageRef, Repository};
pub use registry::{OciRegistry, Registry, RegistryError, RegistrySettings};
pub use report::{BlobKind, BlobStats, Progress, ProgressFn, PushedImage, Report, SkipReason};
pub use service::{Service, UnknownService};

use native::{BlobPusher, ImageJob};

/// Builds the selected services' images, pushes them, and records their digests.
///
/// Native builder: the registry client is made from `opts` (credentials resolved from
/// `opts.credentials`; notes about them end up in [`Report::warnings`]). Fails early, before
/// compiling, when the registry is unreachable, refuses the credentials, or lacks the base.
pub async fn build_push(
    opts: &BuildPushOptions,
    progress: ProgressFn<'_>,
) -> Result<Report, Error> {
    if opts.builder == Builder::Docker {
        return docker_build_push(opts, progress).await;
    }
    let (host, _) = reference::split_registry(&opts.registry).map_err(options_error)?;
    let mut credentials = BTreeMap::new();
    let mut notes = Vec::new();
    let target = opts.credentials.resolve(&host, true)?;
    notes.extend(target.note.clone());
    credentials.insert(host.clone(), target);
    if let BaseImage::Image(base) = &opts.base_image {
        let base_host = &base.repository.registry;
        if !credentials.contains_key(base_host) {
            let c = opts.credentials.resolve(base_host, false)?;
            notes.extend(c.note.clone());
            credentials.insert(base_host.clone(), c);
        }
    }
    let mut ca_certificates_pem = Vec::new();
    for p in &opts.ca_certificates {
        ca_certificates_pem.push(std::fs::read(p).map_err(|e| {
            Error::Options(format!("cannot read CA certificate {}: {e}", p.display()))
        })?);
    }
    let registry = OciRegistry::new(RegistrySettings {
        insecure: opts.insecure_registries.clone(),
        ca_certificates_pem,
        credentials,
    })
    .map_err(|cause| Error::Registry {
        action: "setting up the registry client".into(),
        cause,
    })?;
    let mut report = build_push_with(opts, &registry, progress).await?;
    report.warnings.splice(0..0, notes);
    Ok(report)
}

fn options_error(e: impl std::fmt::Display) -> Error {
    Error::Options(e.to_string())
}

/// What both builders need: the commit, the tags, the repositories.
struct Plan {
    source: git::SourceInfo,
    source_url: Option<String>,
    tags: Vec<String>,
    repos: Vec<(Service, Repository)>,
}

fn plan(opts: &BuildPushOptions) -> Result<Plan, Error> {
    let (host, namespace) = reference::split_registry(&opts.registry).map_err(options_error)?;
    if !options::is_valid_tag(&opts.version) {
        return Err(Error::Options(format!(
            "version `{}` cannot be an image tag: use letters, digits, `_`, `.` and `-` (at \
             most 128, not starting with `.` or `-`)",
            opts.version
        )));
    }
    let source = git::source_info(&opts.repo_root)?;
    let source_url = opts
        .source_url
        .clone()
        .or_else(|| source.source_url.clone())
        .or_else(|| workspace_repository(&opts.repo_root));
    let mut tags = vec![opts.version.clone()];
    if source.revision != opts.version {
        tags.push(source.revision.clone());
    }
    let repos = opts
        .selected_services()
        .into_iter()
        .map(|s| {
            let path = if namespace.is_empty() {
                s.name().to_string()
            } else {
                format!("{namespace}/{s}")
            };
            (s, Repository::new(host.clone(), path))
        })
        .collect();
    Ok(Plan {
        source,
        source_url,
        tags,
        repos,
    })
}

/// `[workspace.package] repository` of the workspace's Cargo.toml, if any.
fn workspace_repository(repo_root: &Path) -> Option<String> {
    let text = std::fs::read_to_string(repo_root.join("Cargo.toml")).ok()?;
    let v: toml::Value = text.parse().ok()?;
    v.get("workspace")?
        .get("package")?
        .get("repository")?
        .as_str()
        .map(str::to_string)
}

fn record(opts: &BuildPushOptions, plan: &Plan, images: &[PushedImage]) -> Result<(), Error> {
    let created = plan.source.created();
    images_file::record_images(
        &opts.images_file_path(),
        images.iter().map(|i| {
            (
                i.service.name().to_string(),
                ImageRecord {
                    repository: i.repository.clone(),
                    tag: i.tags.first().cloned().unwrap_or_default(),
                    digest: i.digest.clone(),
                    reference: i.reference(),
                    tags: i.tags.clone(),
                    revision: plan.source.revision.clone(),
                    created: created.clone(),
                    builder: opts.builder.to_string(),
                },
            )
        }),
    )?;
    Ok(())
}

/// The native builder against any [`Registry`] (the real one, or a double).
pub async fn build_push_with(
    opts: &BuildPushOptions,
    registry: &dyn Registry,
    progress: ProgressFn<'_>,
) -> Result<Report, Error> {
    let host_platform = Platform::host();
    if opts.platform != host_platform {
        return Err(Error::Options(format!(
            "the native builder builds for this machine ({host_platform}), not {}; build on a \
             {} machine, or use the docker builder",
            opts.platform, opts.platform
        )));
    }
    let plan = plan(opts)?;
    let mut warnings = Vec::new();
    let t_push = Instant::now();
    let first = &plan.repos[0].1;
    registry
        .check_access(first)
        .await
        .map_err(|cause| Error::Registry {
            action: format!("checking access to {first}"),
            cause,
        })?;
    let base = native::resolve_base(registry, &opts.base_image, &opts.platform).await?;
    if let Some(b) = &base {
        if b.reference.digest.is_none() {
            warnings.push(format!(
                "base image {} is not pinned by digest: if the tag moves, a rebuild of the same \
                 commit gives other images; pin it as {}",
                b.reference,
                b.reference.with_digest(
                    b.image
                        .index_digest
                        .as_deref()
                        .unwrap_or(&b.image.manifest_digest)
                )
            ));
        }
        progress(&Progress::BaseImage {
            reference: b.reference.to_string(),
            digest: b.image.manifest_digest.clone(),
        });
    }
    let mut push_time = t_push.elapsed();

    let services: Vec<Service> = plan.repos.iter().map(|(s, _)| *s).collect();
    let t_build = Instant::now();
    let binaries = match &opts.binaries {
        Binaries::Cargo => {
            progress(&Progress::Compiling {
                services: services.clone(),
            });
            native::cargo_build(&opts.cargo, &opts.repo_root, &services).await?
        }
        Binaries::Prebuilt(map) => {
            let mut m = BTreeMap::new();
            for s in &services {
                let p = map
                    .get(s)
                    .ok_or_else(|| Error::Options(format!("no prebuilt binary given for {s}")))?;
                m.insert(*s, p.clone());
            }
            m
        }
    };
    for (s, p) in &binaries {
        let bytes = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        progress(&Progress::Compiled {
            service: *s,
            binary: p.clone(),
            bytes,
        });
    }
    let build_time = t_build.elapsed();

    let t_push = Instant::now();
    let mut pusher = BlobPusher {
        registry,
        progress,
        known: Default::default(),
        downloaded: Default::default(),
    };
    let mut images = Vec::new();
    for (service, repo) in &plan.repos {
        let image = native::push_image(
            &mut pusher,
            ImageJob {
                service: *service,
                binary: &binaries[service],
                repo,
                tags: &plan.tags,
                platform: &opts.platform,
                meta: image::ImageMetadata {
                    service: *service,
                    version: opts.version.clone(),
                    revision: plan.source.revision.clone(),
                    created: plan.source.created(),
                    source: plan.source_url.clone(),
                },
                base: base.as_ref(),
            },
        )
        .await?;
        images.push(image);
    }
    push_time += t_push.elapsed();
    record(opts, &plan, &images)?;
    Ok(Report {
        images,
        images_file: opts.images_file_path(),
        revision: plan.source.revision,
        build_time,
        push_time,
        warnings,
    })
}

async fn docker_build_push(
    opts: &BuildPushOptions,
    progress: ProgressFn<'_>,
) -> Result<Report, Error> {
    let plan = plan(opts)?;
    let t = Instant::now();
    let images = docker::build_push(
        opts,
        &plan.source,
        plan.source_url.as_deref(),
        &plan.repos,
        &plan.tags,
        progress,
    )
    .await?;
    let build_time = t.elapsed();
    record(opts, &plan, &images)?;
    Ok(Report {
        images,
        images_file: opts.images_file_path(),
        revision: plan.source.revision,
        build_time,
        push_time: Default::default(),
        warnings: Vec::new(),
    })
}
