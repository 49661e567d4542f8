//! What `build_push` is asked to do: [`BuildPushOptions`] and its parts.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::auth::CredentialSources;
use crate::image::Platform;
use crate::reference::{BadReference, ImageRef};
use crate::service::Service;

/// The default base image: distroless `cc` (glibc, libgcc, CA certificates, a `nonroot` user
/// 65532, no shell) for Debian 12, whose glibc (2.36) matches the build machines'. Pinned by
/// the multi-platform index digest; refresh with
/// `skopeo inspect --format '{{.Digest}}' docker://gcr.io/distroless/cc-debian12:nonroot`.
pub const DEFAULT_BASE_IMAGE: &str = "gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f";

/// How images are built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Builder {
    /// `cargo build` + a layer on the base image, pushed through the distribution API: no
    /// Docker needed.
    #[default]
    Native,
    /// `docker buildx build --push` with `services/<name>/Dockerfile`: needs a Docker daemon.
    Docker,
}

impl fmt::Display for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Builder::Native => "native",
            Builder::Docker => "docker",
        })
    }
}

impl FromStr for Builder {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "native" => Ok(Builder::Native),
            "docker" => Ok(Builder::Docker),
            other => Err(format!(
                "unknown builder `{other}`: expected native or docker"
            )),
        }
    }
}

/// What the service layer goes on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BaseImage {
    /// Nothing: the binary must be statically linked.
    Scratch,
    /// An image pulled from its registry (pin it by digest for reproducible builds).
    Image(ImageRef),
}

impl Default for BaseImage {
    fn default() -> Self {
        BaseImage::Image(
            DEFAULT_BASE_IMAGE
                .parse()
                .expect("the default base image parses"),
        )
    }
}

impl FromStr for BaseImage {
    type Err = BadReference;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "scratch" {
            Ok(BaseImage::Scratch)
        } else {
            s.parse().map(BaseImage::Image)
        }
    }
}

impl fmt::Display for BaseImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BaseImage::Scratch => f.write_str("scratch"),
            BaseImage::Image(r) => write!(f, "{r}"),
        }
    }
}

/// Where the service binaries come from (native builder).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Binaries {
    /// `cargo build --release --locked -p <service>...` in the repository.
    #[default]
    Cargo,
    /// Already built (e.g. by an earlier step of a CI job): service → executable.
    Prebuilt(BTreeMap<Service, PathBuf>),
}

/// Everything `build_push` needs. [`BuildPushOptions::new`] fills in the defaults.
#[derive(Clone, Debug)]
pub struct BuildPushOptions {
    /// The repository root (the cargo workspace; git is read here; Dockerfiles are here).
    pub repo_root: PathBuf,
    /// `host[:port][/namespace]`: images are `<registry>/<service>`.
    pub registry: String,
    /// The version tag (`org.opencontainers.image.version`).
    pub version: String,
    /// Which services; empty = all three.
    pub services: Vec<Service>,
    pub builder: Builder,
    /// The native builder builds for this machine's platform only (`linux/amd64` here).
    pub platform: Platform,
    pub base_image: BaseImage,
    /// Registries (`host:port`) spoken to over plain HTTP (loopback ones always are).
    pub insecure_registries: Vec<String>,
    /// Extra CA certificates (PEM files) to trust.
    pub ca_certificates: Vec<PathBuf>,
    pub credentials: CredentialSources,
    /// Where digests are recorded; `None` = `<repo_root>/.drdctl/images.json`.
    pub images_file: Option<PathBuf>,
    /// `org.opencontainers.image.source`; `None` = the git remote `origin`, else the
    /// workspace's `package.repository`.
    pub source_url: Option<String>,
    pub binaries: Binaries,
    /// The cargo program.
    pub cargo: PathBuf,
    /// The docker program.
    pub docker: PathBuf,
}

impl BuildPushOptions {
    /// Defaults: all services, native builder, this machine's platform, the distroless base,
    /// credentials from this process's environment and docker config.
    pub fn new(repo_root: impl Into<PathBuf>, registry: &str, version: &str) -> Self {
        BuildPushOptions {
            repo_root: repo_root.into(),
            registry: registry.to_string(),
            version: version.to_string(),
            services: Vec::new(),
            builder: Builder::Native,
            platform: Platform::host(),
            base_image: BaseImage::default(),
            insecure_registries: Vec::new(),
            ca_certificates: Vec::new(),
            credentials: CredentialSources::from_process_env(),
            images_file: None,
            source_url: None,
            binaries: Binaries::Cargo,
            cargo: PathBuf::from("cargo"),
            docker: PathBuf::from("docker"),
        }
    }

    /// The selected services, in the fixed order, without repeats.
    pub fn selected_services(&self) -> Vec<Service> {
        Service::ALL
            .into_iter()
            .filter(|s| self.services.is_empty() || self.services.contains(s))
            .collect()
    }

    /// Where digests are recorded.
    pub fn images_file_path(&self) -> PathBuf {
        match &self.images_file {
            Some(p) if p.is_absolute() => p.clone(),
            Some(p) => self.repo_root.join(p),
            None => crate::images_file::default_images_file(&self.repo_root),
        }
    }
}

/// True for a valid tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn is_valid_tag(t: &str) -> bool {
    let mut chars = t.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_')
        && t.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_parsing() {
        let o = BuildPushOptions::new("/repo", "reg.example/drd", "1.0.0");
        assert_eq!(o.selected_services(), Service::ALL.to_vec());
        assert_eq!(
            o.images_file_path(),
            PathBuf::from("/repo/.drdctl/images.json")
        );
        assert!(matches!(o.base_image, BaseImage::Image(ref r) if r.digest.is_some()));
        assert_eq!("scratch".parse::<BaseImage>().unwrap(), BaseImage::Scratch);
        assert_eq!("docker".parse::<Builder>().unwrap(), Builder::Docker);
        assert!("podman".parse::<Builder>().is_err());

        let mut o = o;
        o.services = vec![
            Service::DataIngest,
            Service::FrontendApi,
            Service::DataIngest,
        ];
        assert_eq!(
            o.selected_services(),
            vec![Service::FrontendApi, Service::DataIngest]
        );
        o.images_file = Some("out/images.json".into());
        assert_eq!(o.images_file_path(), PathBuf::from("/repo/out/images.json"));
    }

    #[test]
    fn tags() {
        for t in [
            "1.0.0",
            "v1",
            "0123456789abcdef0123456789abcdef01234567-dirty",
            "_x",
        ] {
            assert!(is_valid_tag(t), "{t}");
        }
        for t in ["", "-x", ".x", "1.0.0+build", "a/b", &"x".repeat(129)] {
            assert!(!is_valid_tag(t), "{t}");
        }
    }
}
