//! The native builder against a real registry (Debian's docker-registry on loopback, one per
//! test): the three services' images are pushed, skopeo reads them, their layers unpacked hold
//! binaries that start and answer `/health/live`, a rebuild gives the same digests and uploads
//! nothing, a base in another registry is copied once, and a registry with htpasswd works with
//! the right credentials.
//!
//! The services' binaries are the debug builds `cargo test --workspace` already made, stripped
//! (see `common::service_binaries`). `cargo build --release` itself, the step `build-push` runs
//! first, is checked on a workspace of three one-line services, built in seconds.

use std::collections::BTreeSet;
use std::time::Instant;

use crate::common::*;
use drd_registry::{build_push, read_images_file, Progress, Service, SkipReason};
use serde_json::Value;
use test_support::registry::{require_tool, TestRegistry, TEST_PASSWORD, TEST_USER};

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_three_images_are_pushed_read_by_skopeo_and_run() {
    let Some(reg) = TestRegistry::start() else {
        return;
    };
    let Some(skopeo_bin) = require_tool("skopeo", "skopeo") else {
        return;
    };
    let bins = service_binaries();
    let base = push_stand_in_base(&reg, false, &bins[&Service::FrontendApi]).await;
    let dir = tempfile::tempdir().unwrap();
    let opts = options(&reg.host(), &base, &dir.path().join("images.json"));
    let rec = Recorder::default();
    let cb = rec.callback();
    let report = build_push(&opts, &cb).await.unwrap();

    assert_eq!(report.images.len(), 3);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let printed = report.to_string();
    let images_file = read_images_file(&dir.path().join("images.json")).unwrap();
    for (image, service) in report.images.iter().zip(Service::ALL) {
        let reference = image.reference();
        let repo = format!("{}/drd/{service}", reg.host());
        assert_eq!(reference, format!("{repo}:1.0.0@{}", image.digest));
        assert!(drd_registry::digest::is_sha256_digest(&image.digest));
        assert!(printed.lines().any(|l| l == reference), "{printed}");
        assert_eq!(image.tags, ["1.0.0".to_string(), report.revision.clone()]);
        let rec_ = images_file.get(service.name()).unwrap();
        assert_eq!(rec_.reference, reference);
        assert_eq!(rec_.digest, image.digest);
        assert_eq!(rec_.builder, "native");

        // skopeo: manifest, digest, config.
        let tagged = format!("{repo}:1.0.0");
        let raw = skopeo(
            &skopeo_bin,
            &["inspect", "--raw", &format!("docker://{tagged}")],
            None,
        );
        assert_eq!(drd_registry::digest::sha256_digest(&raw), image.digest);
        let manifest = json(&raw);
        assert_eq!(
            manifest["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(
            manifest["layers"].as_array().unwrap().len(),
            3,
            "2 base + 1 app"
        );
        assert_eq!(
            manifest["annotations"]["org.opencontainers.image.base.name"],
            format!("{}/base/cc:nonroot", reg.host())
        );
        let inspect = json(&skopeo(
            &skopeo_bin,
            &["inspect", &format!("docker://{tagged}")],
            None,
        ));
        assert_eq!(inspect["Digest"], image.digest.as_str());
        assert_eq!(inspect["Architecture"], "amd64");
        let labels = &inspect["Labels"];
        assert_eq!(labels["org.opencontainers.image.version"], "1.0.0");
        assert_eq!(
            labels["org.opencontainers.image.revision"],
            report.revision.as_str()
        );
        assert_eq!(labels["org.opencontainers.image.title"], service.name());
        assert!(labels["org.opencontainers.image.source"].as_str().is_some());
        let config = json(&skopeo(
            &skopeo_bin,
            &["inspect", "--config", &format!("docker://{tagged}")],
            None,
        ));
        assert_eq!(
            labels["org.opencontainers.image.created"],
            config["created"]
        );
        let c = &config["config"];
        assert_eq!(c["User"], "65532:65532");
        assert_eq!(c["Entrypoint"], serde_json::json!([service.binary_path()]));
        assert!(c["ExposedPorts"][format!("{}/tcp", service.port())].is_object());
        let env: Vec<&str> = c["Env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            env.contains(&format!("LISTEN_ADDR=0.0.0.0:{}", service.port()).as_str()),
            "{env:?}"
        );
        let tags = json(&skopeo(
            &skopeo_bin,
            &["list-tags", &format!("docker://{repo}")],
            None,
        ));
        let tags: BTreeSet<&str> = tags["Tags"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(tags, BTreeSet::from(["1.0.0", report.revision.as_str()]));

        // Unpacked by skopeo + GNU tar: the binary is there, the same bytes, and it runs.
        let unpack_dir = tempfile::tempdir().unwrap();
        let rootfs = unpack_with_skopeo(
            &skopeo_bin,
            &format!("{repo}@{}", image.digest),
            None,
            unpack_dir.path(),
        );
        let in_image = rootfs.join(service.binary_path().trim_start_matches('/'));
        let meta = std::fs::metadata(&in_image).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o755
        );
        assert_eq!(
            std::fs::read(&in_image).unwrap(),
            std::fs::read(&bins[&service]).unwrap()
        );
        let how = start_and_check_live(&rootfs, service).await;
        let app_layer = manifest["layers"][2]["size"].as_u64().unwrap();
        eprintln!(
            "FIGURES {reference}: image {:.2} MB compressed (app layer {:.2} MB), binary {:.2} MB; ran {how}",
            image.size.unwrap() as f64 / 1e6,
            app_layer as f64 / 1e6,
            meta.len() as f64 / 1e6
        );
        assert!(
            image.size.unwrap() < 40_000_000,
            "{service} image is {} bytes",
            image.size.unwrap()
        );
    }
    eprintln!(
        "FIGURES push (fresh registry, base mounted): {:?}; build step: {:?}",
        report.push_time, report.build_time
    );
    let events = rec.events();
    assert!(
        matches!(events[0], Progress::BaseImage { .. }),
        "{:?}",
        events[0]
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, Progress::Compiled { .. })));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Progress::ImagePushed(_)))
            .count(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilds_give_the_same_digests_and_upload_nothing_twice() {
    let Some(reg) = TestRegistry::start() else {
        return;
    };
    let bins = service_binaries();
    let base = push_stand_in_base(&reg, false, &bins[&Service::FrontendApi]).await;
    let before = reg.uploads();
    let dir = tempfile::tempdir().unwrap();
    let opts = options(&reg.host(), &base, &dir.path().join("images.json"));

    let rec = Recorder::default();
    let cb = rec.callback();
    let t = Instant::now();
    let first = build_push(&opts, &cb).await.unwrap();
    let first_time = t.elapsed();
    let uploads: Vec<String> = reg.uploads().split_off(before.len());
    // Base layers are mounted from base/cc; each image uploads its layer and config, once.
    assert_eq!(uploads.len(), 6, "{uploads:?}");
    assert_eq!(
        uploads.iter().collect::<BTreeSet<_>>().len(),
        6,
        "a blob uploaded twice: {uploads:?}"
    );
    for i in &first.images {
        assert_eq!(
            (i.blobs.uploaded, i.blobs.mounted, i.blobs.already_present),
            (2, 2, 0),
            "{i:?}"
        );
    }
    let events = rec.events();
    let started: Vec<&Progress> = events
        .iter()
        .filter(|e| matches!(e, Progress::UploadStarted { .. }))
        .collect();
    assert_eq!(started.len(), 6);
    for s in started {
        let Progress::UploadStarted { digest, bytes, .. } = s else {
            unreachable!()
        };
        let last_sent = events.iter().rev().find_map(|e| match e {
            Progress::UploadProgress {
                digest: d, sent, ..
            } if d == digest => Some(*sent),
            _ => None,
        });
        assert_eq!(last_sent, Some(*bytes), "progress of {digest}");
        assert!(events
            .iter()
            .any(|e| matches!(e, Progress::UploadFinished { digest: d, .. } if d == digest)));
    }
    assert!(events.iter().any(|e| matches!(
        e,
        Progress::BlobSkipped {
            reason: SkipReason::Mounted { .. },
            ..
        }
    )));

    let t = Instant::now();
    let second = build_push(&opts, &|_: &Progress| {}).await.unwrap();
    let second_time = t.elapsed();
    let digests = |r: &drd_registry::Report| {
        r.images
            .iter()
            .map(|i| i.digest.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        digests(&first),
        digests(&second),
        "same commit, same digests"
    );
    for i in &second.images {
        assert_eq!((i.blobs.uploaded, i.blobs.already_present), (0, 4), "{i:?}");
    }
    assert_eq!(
        reg.uploads().len(),
        before.len() + 6,
        "the second push uploaded something"
    );
    eprintln!(
        "FIGURES push of 3 images: first {first_time:?}, again (nothing to upload) {second_time:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_in_another_registry_is_copied_once_then_mounted() {
    let Some(base_reg) = TestRegistry::start() else {
        return;
    };
    let Some(target) = TestRegistry::start() else {
        return;
    };
    let bins = service_binaries();
    let base = push_stand_in_base(&base_reg, false, &bins[&Service::FrontendApi]).await;
    let dir = tempfile::tempdir().unwrap();
    let opts = options(&target.host(), &base, &dir.path().join("images.json"));
    let report = build_push(&opts, &|_: &Progress| {}).await.unwrap();
    let uploads = target.uploads();
    assert_eq!(
        uploads.len(),
        2 + 6,
        "2 base layers once, then layer + config per image: {uploads:?}"
    );
    assert_eq!(uploads.iter().collect::<BTreeSet<_>>().len(), uploads.len());
    let stats: Vec<_> = report
        .images
        .iter()
        .map(|i| (i.blobs.uploaded, i.blobs.mounted))
        .collect();
    assert_eq!(stats, [(4, 0), (2, 2), (2, 2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_with_htpasswd_takes_the_credentials_from_the_environment() {
    let Some(reg) = TestRegistry::start_with_auth() else {
        return;
    };
    let Some(skopeo_bin) = require_tool("skopeo", "skopeo") else {
        return;
    };
    let bins = service_binaries();
    let base = push_stand_in_base(&reg, true, &bins[&Service::FrontendApi]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(&reg.host(), &base, &dir.path().join("images.json"));
    opts.services = vec![Service::FrontendApi];
    opts.credentials = sources(&test_credentials_env());
    let report = build_push(&opts, &|_: &Progress| {}).await.unwrap();
    assert_eq!(report.images.len(), 1);
    let creds = format!("{TEST_USER}:{TEST_PASSWORD}");
    let inspect = json(&skopeo(
        &skopeo_bin,
        &[
            "inspect",
            &format!("docker://{}/drd/frontend-api:1.0.0", reg.host()),
        ],
        Some(&creds),
    ));
    assert_eq!(inspect["Digest"], report.images[0].digest.as_str());
    // Only the images file is touched: the recorded entry is the one pushed.
    let f = read_images_file(&dir.path().join("images.json")).unwrap();
    assert_eq!(f.images.len(), 1);
}

/// A workspace whose three packages carry the services' names, in a temporary directory.
fn tiny_workspace(frontend_main: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(
        root.join("Cargo.toml"),
        "[workspace]\nmembers = [\"frontend-api\", \"business-logic\", \"data-ingest\"]\nresolver = \"2\"\n",
    )
    .unwrap();
    let mut lock = String::from("version = 4\n");
    for s in Service::ALL {
        let name = s.name();
        std::fs::create_dir_all(root.join(name).join("src")).unwrap();
        std::fs::write(
            root.join(name).join("Cargo.toml"),
            format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n"),
        )
        .unwrap();
        let main = if s == Service::FrontendApi {
            frontend_main
        } else {
            "fn main() {}"
        };
        std::fs::write(root.join(name).join("src/main.rs"), main).unwrap();
        lock.push_str(&format!(
            "\n[[package]]\nname = \"{name}\"\nversion = \"0.1.0\"\n"
        ));
    }
    std::fs::write(root.join("Cargo.lock"), lock).unwrap();
    dir
}

#[tokio::test]
async fn cargo_build_release_reports_each_services_executable() {
    let ws = tiny_workspace("fn main() { println!(\"frontend\"); }");
    let bins = drd_registry::native::cargo_build(
        std::path::Path::new(env!("CARGO")),
        ws.path(),
        &Service::ALL,
    )
    .await
    .unwrap();
    assert_eq!(bins.len(), 3);
    for (s, path) in &bins {
        assert!(
            path.to_string_lossy().contains("/release/"),
            "{s}: {}",
            path.display()
        );
        assert!(path.is_file(), "{s}: {}", path.display());
    }
    let out = std::process::Command::new(&bins[&Service::FrontendApi])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "frontend\n");
}

#[tokio::test]
async fn a_service_that_does_not_compile_fails_the_build_with_the_command_named() {
    let ws = tiny_workspace("fn main() { this does not compile }");
    let err = drd_registry::native::cargo_build(
        std::path::Path::new(env!("CARGO")),
        ws.path(),
        &Service::ALL,
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("cargo build --release --locked -p frontend-api"),
        "{text}"
    );
    assert!(text.contains("cargo's errors are above"), "{text}");
}
