//! What goes wrong says so, before anything is compiled: an unreachable registry, credentials
//! refused (wrong, or missing), a base image that is not there, a dynamically linked binary on
//! `scratch`. Plus the `scratch` path itself with a static binary, which runs from its image.
//!
//! No release build here: these fail before binaries are read, or use small stand-ins.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use drd_registry::{
    build_push, Binaries, BuildPushOptions, Error, Progress, RegistryError, Service,
};
use test_support::registry::{require_tool, TestRegistry};

/// Options that must fail before any binary is needed (the binaries do not exist).
fn early_options(host: &str, base: &str) -> (BuildPushOptions, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut o = BuildPushOptions::new(repo_root(), &format!("{host}/drd"), "1.0.0");
    o.base_image = base.parse().unwrap();
    o.images_file = Some(dir.path().join("images.json"));
    o.credentials = sources(&[]);
    o.binaries = Binaries::Prebuilt(
        Service::ALL
            .into_iter()
            .map(|s| (s, PathBuf::from("/nonexistent/never-read")))
            .collect(),
    );
    (o, dir)
}

fn nothing(_: &Progress) {}

#[tokio::test]
async fn an_unreachable_registry_is_named() {
    // A port that was just free: nothing listens there.
    let port = test_support::free_port("127.0.0.1").unwrap();
    let host = format!("127.0.0.1:{port}");
    let (opts, dir) = early_options(&host, "scratch");
    let e = build_push(&opts, &nothing).await.unwrap_err();
    let msg = e.to_string();
    eprintln!("unreachable: {msg}");
    assert!(
        matches!(e.registry_error(), Some(RegistryError::Unreachable { .. })),
        "{e:?}"
    );
    assert!(
        msg.contains(&format!("cannot reach registry {host}")),
        "{msg}"
    );
    assert!(
        msg.contains("Connection refused") || msg.contains("connect"),
        "{msg}"
    );
    assert!(!dir.path().join("images.json").exists());
}

#[tokio::test]
async fn wrong_or_missing_credentials_are_refused_with_what_to_do() {
    let Some(reg) = TestRegistry::start_with_auth() else {
        return;
    };
    let (mut opts, _dir) = early_options(&reg.host(), "scratch");

    opts.credentials = sources(&[
        ("DRDCTL_REGISTRY_USERNAME", "drd"),
        ("DRDCTL_REGISTRY_PASSWORD", "not-the-password"),
    ]);
    let e = build_push(&opts, &nothing).await.unwrap_err();
    let msg = e.to_string();
    eprintln!("wrong credentials: {msg}");
    assert!(
        matches!(e.registry_error(), Some(RegistryError::Unauthorized { .. })),
        "{e:?}"
    );
    assert!(
        msg.contains(&format!(
            "registry {} refused the credentials from DRDCTL_REGISTRY_USERNAME/DRDCTL_REGISTRY_PASSWORD",
            reg.host()
        )),
        "{msg}"
    );
    assert!(msg.contains("Check the username and password"), "{msg}");
    assert!(!msg.contains("not-the-password"), "{msg}");
    assert!(!format!("{e:?}").contains("not-the-password"));

    opts.credentials = sources(&[]);
    let msg = build_push(&opts, &nothing).await.unwrap_err().to_string();
    eprintln!("no credentials: {msg}");
    assert!(msg.contains("refused anonymous access"), "{msg}");
    assert!(
        msg.contains("It needs credentials: set DRDCTL_REGISTRY_USERNAME"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_missing_base_image_is_named() {
    let Some(reg) = TestRegistry::start() else {
        return;
    };
    for base in [
        format!("{}/base/cc:nonroot", reg.host()),
        format!("{}/base/cc@sha256:{}", reg.host(), "0".repeat(64)),
    ] {
        let (opts, _dir) = early_options(&reg.host(), &base);
        let e = build_push(&opts, &nothing).await.unwrap_err();
        assert!(matches!(e, Error::BaseImageNotFound { .. }), "{e:?}");
        let msg = e.to_string();
        eprintln!("missing base: {msg}");
        assert!(
            msg.contains(&format!("base image {base} not found")),
            "{msg}"
        );
        assert!(msg.contains("az acr import"), "{msg}");
    }
}

#[tokio::test]
async fn an_unreachable_base_registry_is_named_as_the_bases() {
    let Some(reg) = TestRegistry::start() else {
        return;
    };
    let port = test_support::free_port("127.0.0.1").unwrap();
    let base = format!("127.0.0.1:{port}/base/cc:nonroot");
    let (opts, _dir) = early_options(&reg.host(), &base);
    let msg = build_push(&opts, &nothing).await.unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!(
            "cannot use base image {base}: cannot reach registry"
        )),
        "{msg}"
    );
}

#[tokio::test]
async fn a_dynamic_binary_is_refused_on_scratch() {
    let Some(reg) = TestRegistry::start() else {
        return;
    };
    let (mut opts, _dir) = early_options(&reg.host(), "scratch");
    opts.services = vec![Service::DataIngest];
    // This test binary is linked against glibc, like the services.
    let me = std::fs::read_link("/proc/self/exe").unwrap();
    opts.binaries = Binaries::Prebuilt(BTreeMap::from([(Service::DataIngest, me)]));
    let msg = build_push(&opts, &nothing).await.unwrap_err().to_string();
    assert!(
        msg.contains("is dynamically linked and cannot run on `scratch`"),
        "{msg}"
    );
    assert!(msg.contains("crt-static"), "{msg}");
}

/// A static binary (rustc with `+crt-static`) that prints a line and exits.
fn static_hello(dir: &Path) -> PathBuf {
    let src = dir.join("hello.rs");
    std::fs::write(&src, "fn main() { println!(\"hello from scratch\"); }\n").unwrap();
    let out = dir.join("hello");
    let rustc = Path::new(env!("CARGO")).with_file_name("rustc");
    let st = Command::new(if rustc.exists() {
        rustc
    } else {
        PathBuf::from("rustc")
    })
    .args([
        "--edition",
        "2021",
        "-O",
        "-C",
        "target-feature=+crt-static",
        "-o",
    ])
    .arg(&out)
    .arg(&src)
    .status()
    .unwrap();
    assert!(st.success(), "rustc could not build a static binary");
    out
}

#[tokio::test]
async fn scratch_with_a_static_binary_gives_a_one_layer_image_that_runs() {
    let Some(reg) = TestRegistry::start() else {
        return;
    };
    let Some(skopeo_bin) = require_tool("skopeo", "skopeo") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let hello = static_hello(work.path());
    let (mut opts, _dir) = early_options(&reg.host(), "scratch");
    opts.services = vec![Service::BusinessLogic];
    opts.binaries = Binaries::Prebuilt(BTreeMap::from([(Service::BusinessLogic, hello)]));
    let report = build_push(&opts, &nothing).await.unwrap();
    let image = format!(
        "{}/drd/business-logic@{}",
        reg.host(),
        report.images[0].digest
    );
    let config: serde_json::Value = serde_json::from_slice(&skopeo(
        &skopeo_bin,
        &["inspect", "--config", &format!("docker://{image}")],
        None,
    ))
    .unwrap();
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
    assert_eq!(config["config"]["User"], "65532:65532");
    let rootfs = unpack_with_skopeo(&skopeo_bin, &image, None, work.path());
    let is_root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    let out = if is_root {
        Command::new("chroot")
            .arg("--userspec=65532:65532")
            .arg(&rootfs)
            .arg("/usr/local/bin/business-logic")
            .output()
            .unwrap()
    } else {
        Command::new(rootfs.join("usr/local/bin/business-logic"))
            .output()
            .unwrap()
    };
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from scratch\n");
}

#[tokio::test]
async fn bad_options_are_refused_before_anything_else() {
    let (mut opts, _dir) = early_options("127.0.0.1:1", "scratch");
    opts.version = "1.0.0+build".into();
    let msg = build_push(&opts, &nothing).await.unwrap_err().to_string();
    assert!(
        msg.contains("version `1.0.0+build` cannot be an image tag"),
        "{msg}"
    );

    let (mut opts, _dir) = early_options("127.0.0.1:1", "scratch");
    opts.platform = "linux/s390x".parse().unwrap();
    let msg = build_push(&opts, &nothing).await.unwrap_err().to_string();
    assert!(
        msg.contains("the native builder builds for this machine"),
        "{msg}"
    );

    let (mut opts, _dir) = early_options("127.0.0.1:1", "scratch");
    opts.registry = "".into();
    let msg = build_push(&opts, &nothing).await.unwrap_err().to_string();
    assert!(msg.contains("empty registry"), "{msg}");
}
