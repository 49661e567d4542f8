//! Helpers for the registry adapter's integration tests: the services' binaries (stripped
//! copies, made once per test binary), a stand-in for the distroless base image (there is no internet), build
//! options that read nothing from this machine's environment, and skopeo as an independent
//! reader of what was pushed.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use drd_registry::auth::{Credential, ResolvedCredential};
use drd_registry::image::{Descriptor, CONFIG_MEDIA_TYPE, INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE};
use drd_registry::layer::{build_layer, Layer, LayerEntry, LAYER_MEDIA_TYPE, NONROOT};
use drd_registry::{
    Binaries, BuildPushOptions, CredentialSources, OciRegistry, Progress, Registry,
    RegistrySettings, Repository, Service,
};
use serde_json::{json, Value};
use test_support::registry::{require_tool, TestRegistry, TEST_PASSWORD, TEST_USER};

/// The repository root (the cargo workspace).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The three services' executables, copied aside and stripped: another cargo run in the same
/// target dir must not change them under a test that compares digests, and stripped they are
/// as small as the release binaries `build-push` ships. They are the debug builds that
/// `cargo test --workspace` has already linked next to this test binary (a release build here
/// would compile every dependency a second time: minutes, and gigabytes of disk); when they are
/// missing (`cargo test -p drd-registry`), they are built through the crate's own
/// [`drd_registry::native::cargo_build_profile`]. The copies are in
/// `target/tmp/registry-bins-<pid>`; those of processes that are gone are removed.
pub fn service_binaries() -> &'static BTreeMap<Service, PathBuf> {
    static BINS: OnceLock<BTreeMap<Service, PathBuf>> = OnceLock::new();
    BINS.get_or_init(|| {
        let built = debug_binaries_beside_this_test().unwrap_or_else(|| {
            std::thread::spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(drd_registry::native::cargo_build_profile(
                        Path::new(env!("CARGO")),
                        &repo_root(),
                        &Service::ALL,
                        "dev",
                    ))
                    .expect("cargo build of the services")
            })
            .join()
            .unwrap()
        });
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        for e in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("registry-bins-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = tmp.join(format!("registry-bins-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        built
            .into_iter()
            .map(|(s, p)| {
                let to = dir.join(s.name());
                std::fs::copy(&p, &to).unwrap();
                // Best effort: an unstripped binary is only bigger.
                let _ = Command::new("strip").arg(&to).status();
                (s, to)
            })
            .collect()
    })
}

/// `target/debug/<service>` for all three, when this test binary (`target/debug/deps/…`) has
/// them beside it.
fn debug_binaries_beside_this_test() -> Option<BTreeMap<Service, PathBuf>> {
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?.parent()?;
    Service::ALL
        .iter()
        .map(|s| {
            let p = profile_dir.join(s.name());
            p.is_file().then_some((*s, p))
        })
        .collect()
}

/// Credential sources that see only `vars` (and an empty docker config), never this machine's.
pub fn sources(vars: &[(&str, &str)]) -> CredentialSources {
    let mut map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // A docker config directory that does not exist: no file, no credentials from it.
    map.insert(
        "DOCKER_CONFIG".into(),
        "/nonexistent/drd-test-docker-config".into(),
    );
    CredentialSources::from_lookup(move |k| map.get(k).cloned())
}

/// Options for pushing to `registry_host/drd`, recording digests in `images_file`.
pub fn options(registry_host: &str, base: &str, images_file: &Path) -> BuildPushOptions {
    let mut o = BuildPushOptions::new(repo_root(), &format!("{registry_host}/drd"), "1.0.0");
    o.base_image = base.parse().unwrap();
    o.images_file = Some(images_file.to_path_buf());
    o.credentials = sources(&[]);
    o.cargo = PathBuf::from(env!("CARGO"));
    o.binaries = Binaries::Prebuilt(service_binaries().clone());
    o
}

/// The push credentials of [`TestRegistry::start_with_auth`] as environment variables.
pub fn test_credentials_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("DRDCTL_REGISTRY_USERNAME", TEST_USER),
        ("DRDCTL_REGISTRY_PASSWORD", TEST_PASSWORD),
    ]
}

/// A client for `reg` (with the test user when `auth`).
pub fn client(reg: &TestRegistry, auth: bool) -> OciRegistry {
    let mut credentials = BTreeMap::new();
    if auth {
        credentials.insert(
            reg.host(),
            ResolvedCredential {
                credential: Credential::Basic {
                    username: TEST_USER.into(),
                    password: TEST_PASSWORD.to_string().into(),
                },
                source: "test".into(),
                note: None,
            },
        );
    }
    credentials
        .entry(reg.host())
        .or_insert_with(|| ResolvedCredential {
            credential: Credential::Anonymous,
            source: "test".into(),
            note: None,
        });
    OciRegistry::new(RegistrySettings {
        credentials,
        ..Default::default()
    })
    .unwrap()
}

/// The shared libraries `binary` needs, as ldd resolves them: (path wanted, file to copy).
fn needed_libraries(binary: &Path) -> Vec<(String, PathBuf)> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .expect("running ldd");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push((p.to_string(), std::fs::canonicalize(p).unwrap()));
        }
    }
    libs
}

/// A stand-in for `distroless/cc-debian12:nonroot`: one layer with `/etc/passwd` (root,
/// nobody, nonroot 65532), groups, `/home/nonroot`, `/tmp`; one layer with the glibc files
/// `libs_for` needs (copied from this machine, same Debian release). Published like distroless,
/// as an OCI index with a linux/amd64 entry. Returns `host/base/cc:nonroot@<index digest>`.
pub async fn push_stand_in_base(reg: &TestRegistry, auth: bool, libs_for: &Path) -> String {
    let files = build_layer(vec![
        LayerEntry::dir("etc"),
        LayerEntry::file(
            "etc/passwd",
            "root:x:0:0:root:/root:/sbin/nologin\n\
             nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n\
             nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
            0o644,
        ),
        LayerEntry::file(
            "etc/group",
            "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n",
            0o644,
        ),
        LayerEntry::dir("home"),
        LayerEntry::dir("home/nonroot").owned_by(NONROOT, NONROOT),
        LayerEntry::dir("tmp"),
    ])
    .unwrap();
    let mut lib_entries = Vec::new();
    let mut dirs = std::collections::BTreeSet::new();
    for (wanted, file) in needed_libraries(libs_for) {
        let rel = wanted.trim_start_matches('/').to_string();
        let mut parent = Path::new(&rel).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            dirs.insert(p.display().to_string());
            parent = p.parent();
        }
        lib_entries.push(LayerEntry::file(&rel, std::fs::read(file).unwrap(), 0o755));
    }
    assert!(
        lib_entries.iter().any(|e| e.path.contains("libc.so")),
        "ldd found no libc for {}",
        libs_for.display()
    );
    lib_entries.extend(dirs.iter().map(|d| LayerEntry::dir(d)));
    let libs = build_layer(lib_entries).unwrap();

    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {
            "User": "65532",
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],
            "WorkingDir": "/home/nonroot",
        },
        "rootfs": {"type": "layers", "diff_ids": [files.diff_id, libs.diff_id]},
        "history": [
            {"created": "2024-01-01T00:00:00Z", "created_by": "drd test: stand-in for distroless files"},
            {"created": "2024-01-01T00:00:00Z", "created_by": "drd test: glibc from the host"},
        ],
    });
    let config = Bytes::from(serde_json::to_vec(&config).unwrap());
    let repo = Repository::new(reg.host(), "base/cc");
    let client = client(reg, auth);
    let noop = |_: u64| {};
    let desc = |l: &Layer| Descriptor {
        media_type: LAYER_MEDIA_TYPE.into(),
        digest: l.digest.clone(),
        size: l.blob.len() as u64,
    };
    for l in [&files, &libs] {
        client
            .push_blob(&repo, l.blob.clone(), &l.digest, &noop)
            .await
            .unwrap();
    }
    let config_digest = drd_registry::digest::sha256_digest(&config);
    client
        .push_blob(&repo, config.clone(), &config_digest, &noop)
        .await
        .unwrap();
    let manifest = drd_registry::image::manifest(
        &Descriptor {
            media_type: CONFIG_MEDIA_TYPE.into(),
            digest: config_digest,
            size: config.len() as u64,
        },
        &[desc(&files), desc(&libs)],
        &BTreeMap::new(),
    );
    let manifest_digest = client
        .push_manifest(
            &repo,
            &drd_registry::digest::sha256_digest(&manifest),
            Bytes::from(manifest.clone()),
            MANIFEST_MEDIA_TYPE,
        )
        .await
        .unwrap();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [
            {"mediaType": MANIFEST_MEDIA_TYPE, "digest": manifest_digest, "size": manifest.len(),
             "platform": {"os": "linux", "architecture": "amd64"}},
        ],
    }))
    .unwrap();
    let index_digest = client
        .push_manifest(&repo, "nonroot", Bytes::from(index), INDEX_MEDIA_TYPE)
        .await
        .unwrap();
    format!("{}/base/cc:nonroot@{index_digest}", reg.host())
}

/// Records every progress event.
#[derive(Clone, Default)]
pub struct Recorder(pub Arc<Mutex<Vec<Progress>>>);

impl Recorder {
    pub fn callback(&self) -> impl Fn(&Progress) + Send + Sync + '_ {
        move |p: &Progress| self.0.lock().unwrap().push(p.clone())
    }

    pub fn events(&self) -> Vec<Progress> {
        self.0.lock().unwrap().clone()
    }
}

/// `skopeo` with TLS verification off (the test registries are plain HTTP).
pub fn skopeo(skopeo: &Path, args: &[&str], creds: Option<&str>) -> Vec<u8> {
    let mut c = Command::new(skopeo);
    c.arg(args[0]).arg("--tls-verify=false");
    if let Some(cr) = creds {
        c.args(["--creds", cr]);
    }
    let out = c
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .expect("running skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Downloads the image with `skopeo copy` (an independent client) and unpacks its layers, in
/// order, with GNU tar into `<dir>/rootfs`.
pub fn unpack_with_skopeo(
    skopeo_bin: &Path,
    image: &str,
    creds: Option<&str>,
    dir: &Path,
) -> PathBuf {
    let layout = dir.join("image");
    let mut c = Command::new(skopeo_bin);
    c.args(["copy", "--src-tls-verify=false"]);
    if let Some(cr) = creds {
        c.args(["--src-creds", cr]);
    }
    let out = c
        .arg(format!("docker://{image}"))
        .arg(format!("dir:{}", layout.display()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo copy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(layout.join("manifest.json")).unwrap()).unwrap();
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    for l in manifest["layers"].as_array().unwrap() {
        let hex = l["digest"].as_str().unwrap().trim_start_matches("sha256:");
        let st = Command::new("tar")
            .arg("-xzf")
            .arg(layout.join(hex))
            .arg("-C")
            .arg(&rootfs)
            .status()
            .unwrap();
        assert!(st.success(), "tar could not unpack layer {hex}");
    }
    rootfs
}

/// A child process killed when dropped.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the service binary from an unpacked image and waits until `/health/live` answers 200:
/// under chroot as uid 65532 when root (so only the image's files are used), else directly.
pub async fn start_and_check_live(rootfs: &Path, service: Service) -> String {
    let port = test_support::free_port("127.0.0.1").unwrap();
    let listen = format!("127.0.0.1:{port}");
    let as_root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    let mut cmd = if as_root {
        // Found before the environment is cleared (the child gets no PATH).
        let chroot = require_tool("chroot", "coreutils").expect("chroot");
        let mut c = Command::new(chroot);
        c.arg("--userspec=65532:65532")
            .arg(rootfs)
            .arg(service.binary_path());
        c
    } else {
        Command::new(rootfs.join(service.binary_path().trim_start_matches('/')))
    };
    cmd.env_clear()
        .env("LISTEN_ADDR", &listen)
        .env("DATABASE_URL", "postgres://drd@127.0.0.1:1/nowhere")
        .env("REGION", "image-test")
        .env("SHUTDOWN_DRAIN_MS", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let child = Running(cmd.spawn().expect("starting the service from the image"));
    let url = format!("http://{listen}/health/live");
    let http = reqwest::Client::new();
    let child = Arc::new(Mutex::new(child));
    let status = test_support::eventually(
        &format!("{service} from the image answering {url}"),
        Duration::from_secs(30),
        || {
            let http = http.clone();
            let url = url.clone();
            let child = child.clone();
            async move {
                if let Ok(Some(st)) = child.lock().unwrap().0.try_wait() {
                    panic!("{service} from the image exited: {st}");
                }
                http.get(&url)
                    .send()
                    .await
                    .ok()
                    .map(|r| r.status().as_u16())
            }
        },
    )
    .await;
    assert_eq!(status, 200, "{url}");
    if as_root {
        "chroot as 65532".into()
    } else {
        "directly".into()
    }
}
