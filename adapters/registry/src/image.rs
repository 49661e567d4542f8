//! The image's JSON documents, built as pure functions: the image config (the base's config
//! with the service's entrypoint, user, port, environment, labels and one more layer) and the
//! OCI manifest that ties config and layers together.
//!
//! JSON is built through `serde_json::Value` and written compactly, so the same inputs give the
//! same bytes, hence the same digests. Unknown fields of the base config are kept.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::service::Service;

/// The OCI image manifest media type (what this crate pushes).
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The OCI image index media type.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// The OCI image config media type.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Docker's schema 2 manifest and manifest list (accepted from base images).
pub const DOCKER_MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST_MEDIA_TYPE: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";

/// The PATH of an image with no base (scratch), the usual default.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// An OS/architecture pair, e.g. `linux/amd64`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
}

impl Platform {
    /// The platform binaries built on this machine run on.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture: arch.to_string(),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)
    }
}

impl FromStr for Platform {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split('/').collect::<Vec<_>>()[..] {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
            }),
            _ => Err(format!(
                "`{s}` is not a platform; expected OS/ARCH, e.g. linux/amd64"
            )),
        }
    }
}

/// A content descriptor (config or layer) as manifests list them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

impl Descriptor {
    /// The same blob described with the OCI media type when it has a Docker one (same bytes,
    /// so an OCI manifest can list a Docker base's layers).
    pub fn to_oci(&self) -> Descriptor {
        let media_type = match self.media_type.as_str() {
            "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
                "application/vnd.oci.image.layer.v1.tar+gzip"
            }
            "application/vnd.docker.image.rootfs.diff.tar" => {
                "application/vnd.oci.image.layer.v1.tar"
            }
            "application/vnd.docker.container.image.v1+json" => CONFIG_MEDIA_TYPE,
            other => other,
        };
        Descriptor {
            media_type: media_type.to_string(),
            ..self.clone()
        }
    }
}

/// What the labels and history say about the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageMetadata {
    pub service: Service,
    pub version: String,
    /// The git revision the binary was built from.
    pub revision: String,
    /// RFC 3339; from the commit time, so a rebuild gives the same bytes.
    pub created: String,
    /// Where the source is (`org.opencontainers.image.source`), when known.
    pub source: Option<String>,
}

/// The labels every image gets.
pub fn oci_labels(meta: &ImageMetadata) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    let mut put = |k: &str, v: &str| {
        l.insert(format!("org.opencontainers.image.{k}"), v.to_string());
    };
    put("title", meta.service.name());
    put("version", &meta.version);
    put("revision", &meta.revision);
    put("created", &meta.created);
    if let Some(s) = &meta.source {
        put("source", s);
    }
    l
}

/// The base config with this service's settings and one more layer (`diff_id`). `base` is
/// `None` for `scratch`. Fails when the base is for another platform or is not an image config.
pub fn image_config(
    base: Option<&Value>,
    platform: &Platform,
    diff_id: &str,
    meta: &ImageMetadata,
) -> Result<Value, String> {
    let mut cfg = match base {
        Some(b) => b.clone(),
        None => json!({
            "architecture": platform.architecture,
            "os": platform.os,
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": []},
            "history": [],
        }),
    };
    let obj = cfg
        .as_object_mut()
        .ok_or("the base image config is not a JSON object")?;
    for (field, want) in [
        ("os", &platform.os),
        ("architecture", &platform.architecture),
    ] {
        let got = obj.get(field).and_then(Value::as_str).unwrap_or("");
        if got != want {
            return Err(format!(
                "the base image is for {field} `{got}`, but the image is built for {platform}"
            ));
        }
    }
    obj.insert("created".into(), json!(meta.created));

    let service = meta.service;
    let port = service.port();
    let c = obj
        .entry("config")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or("the base image config's `config` is not an object")?;
    c.insert(
        "User".into(),
        json!(format!("{0}:{0}", crate::layer::NONROOT)),
    );
    c.insert("Entrypoint".into(), json!([service.binary_path()]));
    c.remove("Cmd");
    c.insert("WorkingDir".into(), json!("/"));
    let ports = c
        .entry("ExposedPorts")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or("the base image config's `ExposedPorts` is not an object")?;
    ports.insert(format!("{port}/tcp"), json!({}));
    let mut env: Vec<Value> = c
        .get("Env")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|v| !v.as_str().is_some_and(|s| s.starts_with("LISTEN_ADDR=")))
        .collect();
    if !env
        .iter()
        .any(|v| v.as_str().is_some_and(|s| s.starts_with("PATH=")))
    {
        env.insert(0, json!(DEFAULT_PATH));
    }
    env.push(json!(format!("LISTEN_ADDR=0.0.0.0:{port}")));
    c.insert("Env".into(), Value::Array(env));
    if !matches!(c.get("Labels"), Some(Value::Object(_))) {
        c.insert("Labels".into(), Value::Object(Map::new()));
    }
    let labels = c
        .get_mut("Labels")
        .and_then(Value::as_object_mut)
        .expect("Labels is an object");
    for (k, v) in oci_labels(meta) {
        labels.insert(k, json!(v));
    }

    let diff_ids = obj
        .entry("rootfs")
        .or_insert_with(|| json!({"type": "layers", "diff_ids": []}))
        .as_object_mut()
        .ok_or("the base image config's `rootfs` is not an object")?
        .entry("diff_ids")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .ok_or("the base image config's `rootfs.diff_ids` is not a list")?;
    diff_ids.push(json!(diff_id));

    let history = obj
        .entry("history")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .ok_or("the base image config's `history` is not a list")?;
    history.push(json!({
        "created": meta.created,
        "created_by": format!("drdctl build-push: {} at {}", service, service.binary_path()),
        "comment": format!("cargo build --release --locked -p {service}"),
    }));
    Ok(cfg)
}

/// The base layers listed by a config must match the manifest's: a broken base is refused.
pub fn check_base_layers(base_config: &Value, base_layers: usize) -> Result<(), String> {
    let n = base_config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .map(Vec::len)
        .unwrap_or(0);
    if n != base_layers {
        return Err(format!(
            "the base image's config lists {n} layers but its manifest {base_layers}"
        ));
    }
    Ok(())
}

/// The OCI manifest's bytes.
pub fn manifest(
    config: &Descriptor,
    layers: &[Descriptor],
    annotations: &BTreeMap<String, String>,
) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": config,
        "layers": layers,
    });
    if !annotations.is_empty() {
        m["annotations"] = json!(annotations);
    }
    serde_json::to_vec(&m).expect("a JSON value always serializes")
}

/// Bytes of a JSON document as pushed.
pub fn to_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("a JSON value always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> ImageMetadata {
        ImageMetadata {
            service: Service::BusinessLogic,
            version: "1.2.3".into(),
            revision: "0123456789abcdef0123456789abcdef01234567".into(),
            created: "2024-05-06T07:08:09Z".into(),
            source: Some("https://example.invalid/drdctl".into()),
        }
    }

    fn amd64() -> Platform {
        "linux/amd64".parse().unwrap()
    }

    #[test]
    fn config_on_a_base_keeps_its_fields_and_sets_ours() {
        let base = json!({
            "architecture": "amd64", "os": "linux", "created": "2000-01-01T00:00:00Z",
            "config": {
                "Env": ["PATH=/usr/bin:/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt", "LISTEN_ADDR=x"],
                "User": "0", "Cmd": ["/bin/sh"], "Labels": {"from.base": "yes"}
            },
            "rootfs": {"type": "layers", "diff_ids": ["sha256:base"]},
            "history": [{"created_by": "base"}],
            "unknown": {"kept": true}
        });
        let c = image_config(Some(&base), &amd64(), "sha256:ours", &meta()).unwrap();
        let cc = &c["config"];
        assert_eq!(cc["User"], "65532:65532");
        assert_eq!(cc["Entrypoint"], json!(["/usr/local/bin/business-logic"]));
        assert!(cc.get("Cmd").is_none());
        assert_eq!(cc["ExposedPorts"], json!({"8081/tcp": {}}));
        assert_eq!(
            cc["Env"],
            json!([
                "PATH=/usr/bin:/bin",
                "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
                "LISTEN_ADDR=0.0.0.0:8081"
            ])
        );
        assert_eq!(cc["Labels"]["from.base"], "yes");
        assert_eq!(cc["Labels"]["org.opencontainers.image.version"], "1.2.3");
        assert_eq!(
            cc["Labels"]["org.opencontainers.image.revision"],
            "0123456789abcdef0123456789abcdef01234567"
        );
        assert_eq!(
            cc["Labels"]["org.opencontainers.image.created"],
            "2024-05-06T07:08:09Z"
        );
        assert_eq!(
            cc["Labels"]["org.opencontainers.image.source"],
            "https://example.invalid/drdctl"
        );
        assert_eq!(c["created"], "2024-05-06T07:08:09Z");
        assert_eq!(
            c["rootfs"]["diff_ids"],
            json!(["sha256:base", "sha256:ours"])
        );
        assert_eq!(c["history"].as_array().unwrap().len(), 2);
        assert_eq!(c["unknown"]["kept"], true);
    }

    #[test]
    fn config_on_scratch_is_complete() {
        let c = image_config(None, &amd64(), "sha256:ours", &meta()).unwrap();
        assert_eq!(c["os"], "linux");
        assert_eq!(c["architecture"], "amd64");
        assert_eq!(
            c["rootfs"],
            json!({"type": "layers", "diff_ids": ["sha256:ours"]})
        );
        assert_eq!(c["config"]["Env"][0], DEFAULT_PATH);
    }

    #[test]
    fn a_base_for_another_platform_is_refused() {
        let base = json!({"architecture": "arm64", "os": "linux", "config": {}});
        let e = image_config(Some(&base), &amd64(), "sha256:x", &meta()).unwrap_err();
        assert!(e.contains("architecture `arm64`"), "{e}");
    }

    #[test]
    fn the_same_inputs_give_the_same_bytes() {
        let a = to_bytes(&image_config(None, &amd64(), "sha256:x", &meta()).unwrap());
        let b = to_bytes(&image_config(None, &amd64(), "sha256:x", &meta()).unwrap());
        assert_eq!(a, b);
        let d = Descriptor {
            media_type: CONFIG_MEDIA_TYPE.into(),
            digest: "sha256:c".into(),
            size: 3,
        };
        let m = manifest(&d, &[], &BTreeMap::new());
        let v: Value = serde_json::from_slice(&m).unwrap();
        assert_eq!(v["mediaType"], MANIFEST_MEDIA_TYPE);
        assert_eq!(v["config"]["mediaType"], CONFIG_MEDIA_TYPE);
        assert!(v.get("annotations").is_none());
    }

    #[test]
    fn docker_media_types_become_oci() {
        let d = Descriptor {
            media_type: "application/vnd.docker.image.rootfs.diff.tar.gzip".into(),
            digest: "sha256:l".into(),
            size: 1,
        };
        assert_eq!(d.to_oci().media_type, crate::layer::LAYER_MEDIA_TYPE);
        assert!("linux".parse::<Platform>().is_err());
        assert_eq!(amd64().to_string(), "linux/amd64");
    }
}
