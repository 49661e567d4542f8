//! Image names: a [`Repository`] (`registry/path`) and an [`ImageRef`] (repository plus tag
//! and/or digest), parsed the way docker does (`docker.io/library/` is implied for short names).

use std::fmt;
use std::str::FromStr;

use oci_client::Reference;

/// A repository in a registry, e.g. `myregistry.azurecr.io/drd/frontend-api`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Repository {
    /// Host and optional port, e.g. `127.0.0.1:5000` or `myregistry.azurecr.io`.
    pub registry: String,
    /// The path inside the registry, e.g. `drd/frontend-api`.
    pub path: String,
}

impl Repository {
    pub fn new(registry: impl Into<String>, path: impl Into<String>) -> Self {
        Repository {
            registry: registry.into(),
            path: path.into(),
        }
    }

    /// This repository at `tag`.
    pub fn tag(&self, tag: &str) -> ImageRef {
        ImageRef {
            repository: self.clone(),
            tag: Some(tag.to_string()),
            digest: None,
        }
    }

    /// This repository at `digest`.
    pub fn digest(&self, digest: &str) -> ImageRef {
        ImageRef {
            repository: self.clone(),
            tag: None,
            digest: Some(digest.to_string()),
        }
    }

    /// A client reference for blob calls (which ignore the tag).
    pub(crate) fn to_oci(&self) -> Reference {
        Reference::with_tag(self.registry.clone(), self.path.clone(), "latest".into())
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.path)
    }
}

/// An image: repository plus tag and/or digest (`repo:tag`, `repo@sha256:...`,
/// `repo:tag@sha256:...`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageRef {
    pub repository: Repository,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    /// The same image pinned at `digest` (the tag is kept for readers).
    pub fn with_digest(&self, digest: &str) -> ImageRef {
        ImageRef {
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }

    /// What a manifest request addresses: the digest when there is one, else the tag.
    pub(crate) fn to_oci(&self) -> Reference {
        let r = &self.repository;
        match (&self.tag, &self.digest) {
            (_, Some(d)) => Reference::with_digest(r.registry.clone(), r.path.clone(), d.clone()),
            (Some(t), None) => Reference::with_tag(r.registry.clone(), r.path.clone(), t.clone()),
            (None, None) => {
                Reference::with_tag(r.registry.clone(), r.path.clone(), "latest".into())
            }
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// An image name that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{input}` is not an image reference ({reason}); expected REGISTRY/NAME[:TAG][@sha256:DIGEST]"
)]
pub struct BadReference {
    pub input: String,
    pub reason: String,
}

impl FromStr for ImageRef {
    type Err = BadReference;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let r = Reference::from_str(s).map_err(|e| BadReference {
            input: s.to_string(),
            reason: e.to_string(),
        })?;
        // Without a tag or digest the parser says `latest`; keep that explicit.
        Ok(ImageRef {
            repository: Repository::new(r.registry(), r.repository()),
            tag: r.tag().map(str::to_string),
            digest: r.digest().map(str::to_string),
        })
    }
}

/// Splits a `--registry` value (`host[:port][/namespace...]`) into host and namespace.
pub fn split_registry(registry: &str) -> Result<(String, String), BadReference> {
    let trimmed = registry
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let bad = |reason: &str| BadReference {
        input: registry.to_string(),
        reason: reason.to_string(),
    };
    if trimmed.is_empty() {
        return Err(bad("empty registry"));
    }
    let (host, ns) = match trimmed.split_once('/') {
        Some((h, n)) => (h, n),
        None => (trimmed, ""),
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad("no registry host"));
    }
    if ns
        .split('/')
        .any(|c| !ns.is_empty() && (c.is_empty() || c.chars().any(|ch| ch.is_ascii_uppercase())))
    {
        return Err(bad("namespace components must be non-empty and lower case"));
    }
    Ok((host.to_string(), ns.to_string()))
}

/// True for hosts spoken to over plain HTTP without being listed (docker does the same for
/// loopback addresses).
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost"
        || name == "::1"
        || name
            .parse::<std::net::Ipv4Addr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_references() {
        let r: ImageRef = "127.0.0.1:5000/base/cc:latest".parse().unwrap();
        assert_eq!(r.repository.registry, "127.0.0.1:5000");
        assert_eq!(r.repository.path, "base/cc");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(r.to_string(), "127.0.0.1:5000/base/cc:latest");

        let d = format!("sha256:{}", "a".repeat(64));
        let r: ImageRef = format!("gcr.io/distroless/cc-debian12:nonroot@{d}")
            .parse()
            .unwrap();
        assert_eq!(r.repository.registry, "gcr.io");
        assert_eq!(r.tag.as_deref(), Some("nonroot"));
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert_eq!(
            r.to_string(),
            format!("gcr.io/distroless/cc-debian12:nonroot@{d}")
        );

        let r: ImageRef = "alpine".parse().unwrap();
        assert_eq!(r.to_string(), "docker.io/library/alpine:latest");

        assert!("Not A Ref!".parse::<ImageRef>().is_err());
    }

    #[test]
    fn splits_registry_and_namespace() {
        assert_eq!(
            split_registry("myreg.azurecr.io").unwrap(),
            ("myreg.azurecr.io".into(), "".into())
        );
        assert_eq!(
            split_registry("https://127.0.0.1:5000/drd/").unwrap(),
            ("127.0.0.1:5000".into(), "drd".into())
        );
        assert!(split_registry("").is_err());
        assert!(split_registry("reg//x").is_err());
        assert!(split_registry("reg/Upper").is_err());
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for h in [
            "127.0.0.1:5000",
            "localhost:5000",
            "localhost",
            "[::1]:5000",
            "127.3.2.1",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["myreg.azurecr.io", "10.0.0.1:5000", "gcr.io"] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
