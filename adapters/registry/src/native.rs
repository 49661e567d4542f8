//! The native builder, the ko/jib way: `cargo build --release`, one reproducible layer with the
//! binary on top of the base image's layers, a config and a manifest, pushed through the
//! distribution API. No Docker.
//!
//! Blobs: each is looked up first (HEAD) and only uploaded when missing; a blob already in
//! another repository of the target registry (the base's, or a service pushed just before) is
//! mounted rather than uploaded. So a base layer crosses the network once per registry, and a
//! rebuild of unchanged binaries uploads nothing.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use bytes::Bytes;
use tokio::io::AsyncBufReadExt;

use crate::error::Error;
use crate::image::{
    self, Descriptor, ImageMetadata, Platform, CONFIG_MEDIA_TYPE, MANIFEST_MEDIA_TYPE,
};
use crate::layer::{binary_layer, LAYER_MEDIA_TYPE};
use crate::options::BaseImage;
use crate::reference::{ImageRef, Repository};
use crate::registry::{Registry, RegistryError, RemoteImage};
use crate::report::{BlobKind, BlobStats, Progress, ProgressFn, PushedImage, SkipReason};
use crate::service::Service;

/// The resolved base: where it is and what it holds (`None` for scratch).
pub(crate) struct Base {
    pub reference: ImageRef,
    pub image: RemoteImage,
}

/// Pulls the base's manifest and config for `platform`, with errors that name the base.
pub(crate) async fn resolve_base(
    registry: &dyn Registry,
    base: &BaseImage,
    platform: &Platform,
) -> Result<Option<Base>, Error> {
    let BaseImage::Image(reference) = base else {
        return Ok(None);
    };
    let image = registry
        .pull_image(reference, platform)
        .await
        .map_err(|e| match e {
            RegistryError::NotFound { detail, .. } => Error::BaseImageNotFound {
                base: reference.to_string(),
                detail,
            },
            other => Error::BaseImage {
                base: reference.to_string(),
                cause: other.to_string(),
            },
        })?;
    image::check_base_layers(&image.config, image.layers.len()).map_err(|cause| {
        Error::BaseImage {
            base: reference.to_string(),
            cause,
        }
    })?;
    Ok(Some(Base {
        reference: reference.clone(),
        image,
    }))
}

/// `cargo build --release --locked -p <service>...` in `repo_root`; returns each service's
/// executable as cargo reports it. cargo's own output goes to this process's stderr.
pub async fn cargo_build(
    cargo: &Path,
    repo_root: &Path,
    services: &[Service],
) -> Result<BTreeMap<Service, PathBuf>, Error> {
    cargo_build_profile(cargo, repo_root, services, "release").await
}

/// [`cargo_build`] with another cargo profile (`dev` in tests, where the debug build is already
/// compiled).
pub async fn cargo_build_profile(
    cargo: &Path,
    repo_root: &Path,
    services: &[Service],
    profile: &str,
) -> Result<BTreeMap<Service, PathBuf>, Error> {
    let mut cmd = tokio::process::Command::new(cargo);
    let profile_arg = format!("--profile={profile}");
    cmd.current_dir(repo_root).args([
        "build",
        profile_arg.as_str(),
        "--locked",
        "--message-format=json-render-diagnostics",
    ]);
    for s in services {
        cmd.args(["-p", s.name()]);
    }
    // drdctl's image is the guard: the lab (the doubles) stays out of it. (No service has
    // features, so the flag changes nothing else.)
    if services.contains(&Service::Drdctl) {
        cmd.arg("--no-default-features");
    }
    let profile_words = if profile == "release" {
        "--release".to_string()
    } else {
        profile_arg.clone()
    };
    let command = format!(
        "cargo build {profile_words} --locked {}",
        services
            .iter()
            .map(|s| format!("-p {s}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let fail = |reason: String| Error::Cargo {
        command: command.clone(),
        reason,
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| fail(format!("cannot run {}: {e}", cargo.display())))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut found = BTreeMap::new();
    while let Some(line) = lines
        .next_line()
        .await
        .map_err(|e| fail(format!("reading cargo's output: {e}")))?
    {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let (Some(name), Some(exe)) = (msg["target"]["name"].as_str(), msg["executable"].as_str())
        else {
            continue;
        };
        if let Some(s) = services.iter().find(|s| s.name() == name) {
            found.insert(*s, PathBuf::from(exe));
        }
    }
    let status = child
        .wait()
        .await
        .map_err(|e| fail(format!("waiting for cargo: {e}")))?;
    if !status.success() {
        return Err(fail(format!("{status}; cargo's errors are above")));
    }
    if let Some(missing) = services.iter().find(|s| !found.contains_key(s)) {
        return Err(fail(format!("cargo reported no executable for {missing}")));
    }
    Ok(found)
}

/// True when `elf` asks for a dynamic loader (a `PT_INTERP` program header); `None` when it is
/// not a 64-bit little-endian ELF file.
pub fn is_dynamically_linked(elf: &[u8]) -> Option<bool> {
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return None;
    }
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[32..40].try_into().ok()?) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    for i in 0..phnum {
        let o = phoff.checked_add(i.checked_mul(phentsize)?)?;
        let p_type = u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?);
        if p_type == 3 {
            return Some(true);
        }
    }
    Some(false)
}

/// Pushes blobs to the target registry, remembering where each already is so later images
/// mount rather than upload.
pub(crate) struct BlobPusher<'a> {
    pub registry: &'a dyn Registry,
    pub progress: ProgressFn<'a>,
    /// Blobs known to be in the target registry, and one repository holding each.
    pub known: HashMap<String, Repository>,
    /// Base blobs downloaded from another registry, kept for the next repository.
    pub downloaded: HashMap<String, Bytes>,
}

/// Where a blob's bytes are when it has to be uploaded.
pub(crate) enum BlobSource<'b> {
    Bytes(Bytes),
    /// A base layer, in the base's repository.
    Base(&'b Repository),
}

impl BlobPusher<'_> {
    pub async fn ensure(
        &mut self,
        service: Service,
        repo: &Repository,
        kind: BlobKind,
        desc: &Descriptor,
        source: BlobSource<'_>,
        stats: &mut BlobStats,
    ) -> Result<(), Error> {
        let reg_err =
            |action: String| move |cause: RegistryError| Error::Registry { action, cause };
        let digest = &desc.digest;
        let skipped = |reason| Progress::BlobSkipped {
            service,
            kind,
            digest: digest.clone(),
            reason,
        };
        if self
            .registry
            .blob_exists(repo, digest)
            .await
            .map_err(reg_err(format!("checking {kind} {digest} in {repo}")))?
        {
            stats.already_present += 1;
            self.known.insert(digest.clone(), repo.clone());
            (self.progress)(&skipped(SkipReason::AlreadyPresent));
            return Ok(());
        }
        // Same registry: link instead of upload.
        let mount_from = match (&source, self.known.get(digest)) {
            (_, Some(r)) if r != repo => Some(r.clone()),
            (BlobSource::Base(b), _) if b.registry == repo.registry => Some((*b).clone()),
            _ => None,
        };
        if let Some(from) = mount_from {
            if self
                .registry
                .mount_blob(repo, &from, digest)
                .await
                .map_err(reg_err(format!(
                    "mounting {kind} {digest} from {from} into {repo}"
                )))?
            {
                stats.mounted += 1;
                self.known.insert(digest.clone(), repo.clone());
                (self.progress)(&skipped(SkipReason::Mounted {
                    from: from.to_string(),
                }));
                return Ok(());
            }
        }
        let data = match source {
            BlobSource::Bytes(b) => b,
            BlobSource::Base(b) => match self.downloaded.get(digest) {
                Some(d) => d.clone(),
                None => {
                    let d = self
                        .registry
                        .pull_blob(b, desc)
                        .await
                        .map_err(reg_err(format!("downloading base layer {digest} from {b}")))?;
                    self.downloaded.insert(digest.clone(), d.clone());
                    d
                }
            },
        };
        let bytes = data.len() as u64;
        (self.progress)(&Progress::UploadStarted {
            service,
            kind,
            digest: digest.clone(),
            bytes,
        });
        let progress = self.progress;
        let report = |sent: u64| {
            progress(&Progress::UploadProgress {
                service,
                digest: digest.clone(),
                sent,
                bytes,
            })
        };
        self.registry
            .push_blob(repo, data, digest, &report)
            .await
            .map_err(reg_err(format!("uploading {kind} {digest} to {repo}")))?;
        stats.uploaded += 1;
        stats.uploaded_bytes += bytes;
        self.known.insert(digest.clone(), repo.clone());
        (self.progress)(&Progress::UploadFinished {
            service,
            kind,
            digest: digest.clone(),
            bytes,
        });
        Ok(())
    }
}

/// Everything one image needs.
pub(crate) struct ImageJob<'a> {
    pub service: Service,
    pub binary: &'a Path,
    pub repo: &'a Repository,
    pub tags: &'a [String],
    pub platform: &'a Platform,
    pub meta: ImageMetadata,
    pub base: Option<&'a Base>,
}

/// Builds one image and pushes its blobs, then its manifest under each tag.
pub(crate) async fn push_image(
    pusher: &mut BlobPusher<'_>,
    job: ImageJob<'_>,
) -> Result<PushedImage, Error> {
    let service = job.service;
    let bin_err = |reason: String| Error::Binary {
        service,
        path: job.binary.display().to_string(),
        reason,
    };
    let binary = tokio::fs::read(job.binary)
        .await
        .map_err(|e| bin_err(format!("cannot read it: {e}")))?;
    match (is_dynamically_linked(&binary), job.base) {
        (None, _) => return Err(bin_err("not a 64-bit Linux executable (ELF)".into())),
        (Some(true), None) => {
            return Err(bin_err(
                "is dynamically linked and cannot run on `scratch`: use a glibc base image (the \
                 default), or build it static (RUSTFLAGS='-C target-feature=+crt-static')"
                    .into(),
            ))
        }
        _ => {}
    }
    let layer = binary_layer(Bytes::from(binary), &service.binary_path())
        .map_err(|e| bin_err(format!("cannot make its layer: {e}")))?;
    let config = image::image_config(
        job.base.map(|b| &b.image.config),
        job.platform,
        &layer.diff_id,
        &job.meta,
    )
    .map_err(|cause| Error::BaseImage {
        base: job
            .base
            .map(|b| b.reference.to_string())
            .unwrap_or_else(|| "scratch".into()),
        cause,
    })?;
    let config_bytes = Bytes::from(image::to_bytes(&config));
    let config_desc = Descriptor {
        media_type: CONFIG_MEDIA_TYPE.into(),
        digest: crate::digest::sha256_digest(&config_bytes),
        size: config_bytes.len() as u64,
    };
    let app_desc = Descriptor {
        media_type: LAYER_MEDIA_TYPE.into(),
        digest: layer.digest.clone(),
        size: layer.blob.len() as u64,
    };

    let mut stats = BlobStats::default();
    let mut layers = Vec::new();
    let mut annotations = BTreeMap::new();
    if let Some(base) = job.base {
        for l in &base.image.layers {
            pusher
                .ensure(
                    service,
                    job.repo,
                    BlobKind::BaseLayer,
                    l,
                    BlobSource::Base(&base.reference.repository),
                    &mut stats,
                )
                .await?;
            layers.push(l.to_oci());
        }
        let mut name = base.reference.clone();
        name.digest = None;
        annotations.insert(
            "org.opencontainers.image.base.name".into(),
            name.to_string(),
        );
        annotations.insert(
            "org.opencontainers.image.base.digest".into(),
            base.image.manifest_digest.clone(),
        );
    }
    pusher
        .ensure(
            service,
            job.repo,
            BlobKind::AppLayer,
            &app_desc,
            BlobSource::Bytes(layer.blob.clone()),
            &mut stats,
        )
        .await?;
    layers.push(app_desc);
    pusher
        .ensure(
            service,
            job.repo,
            BlobKind::Config,
            &config_desc,
            BlobSource::Bytes(config_bytes),
            &mut stats,
        )
        .await?;
    annotations.insert(
        "org.opencontainers.image.created".into(),
        job.meta.created.clone(),
    );
    let manifest = Bytes::from(image::manifest(&config_desc, &layers, &annotations));
    let digest = crate::digest::sha256_digest(&manifest);
    for tag in job.tags {
        let pushed = pusher
            .registry
            .push_manifest(job.repo, tag, manifest.clone(), MANIFEST_MEDIA_TYPE)
            .await
            .map_err(|cause| Error::Registry {
                action: format!("pushing the manifest of {}:{tag}", job.repo),
                cause,
            })?;
        debug_assert_eq!(pushed, digest);
    }
    let size = config_desc.size + layers.iter().map(|l| l.size).sum::<u64>();
    let image = PushedImage {
        service,
        repository: job.repo.to_string(),
        tags: job.tags.to_vec(),
        digest,
        size: Some(size),
        blobs: stats,
    };
    (pusher.progress)(&Progress::ImagePushed(image.clone()));
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_interp_detection() {
        let me = std::fs::read("/proc/self/exe").unwrap();
        // Test binaries are linked dynamically against glibc.
        assert_eq!(is_dynamically_linked(&me), Some(true));
        assert_eq!(is_dynamically_linked(b"#!/bin/sh\necho hi\n"), None);
        // A header with no program headers: static.
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        assert_eq!(is_dynamically_linked(&h), Some(false));
        // Program headers pointing past the end: not trusted, not a panic.
        h[56] = 1;
        h[54] = 56;
        h[32] = 200;
        assert_eq!(is_dynamically_linked(&h), None);
    }
}
