//! `drdctl build-push`: thin over drd-registry; progress bars per upload on a terminal.

use std::collections::HashMap;
use std::sync::Mutex;

use anyhow::{bail, Context};
use drd_registry::{BuildPushOptions, Progress};
use indicatif::ProgressBar;

use crate::config::Config;
use crate::ui;

pub struct Args {
    pub registry: Option<String>,
    pub version: Option<String>,
    pub services: Vec<String>,
    pub builder: String,
    pub platform: String,
    pub base_image: Option<String>,
}

/// The repository the images are built from: the config file's directory.
pub async fn run(config: &Config, args: Args, output: crate::cli::Output) -> anyhow::Result<()> {
    let registry = args
        .registry
        .or_else(|| config.images.registry.clone())
        .context("no registry: pass --registry (or set images.registry in drdctl.toml)")?;
    let version = args
        .version
        .or_else(|| config.images.version.clone())
        .context("no version: pass --version (or set images.version in drdctl.toml)")?;
    let root = std::fs::canonicalize(&config.base_dir).unwrap_or_else(|_| config.base_dir.clone());
    let mut opts = BuildPushOptions::new(&root, &registry, &version);
    opts.images_file = Some(config.images_file());
    for s in &args.services {
        opts.services.push(
            s.parse()
                .map_err(|e| anyhow::anyhow!("--service {s}: {e}"))?,
        );
    }
    opts.builder = args
        .builder
        .parse()
        .map_err(|e| anyhow::anyhow!("--builder: {e}"))?;
    opts.platform = args
        .platform
        .parse()
        .map_err(|e| anyhow::anyhow!("--platform: {e}"))?;
    if let Some(b) = &args.base_image {
        opts.base_image = b
            .parse()
            .map_err(|e| anyhow::anyhow!("--base-image: {e}"))?;
    }
    if !root.join("Cargo.toml").exists() {
        bail!(
            "{} is not the drdctl repository (no Cargo.toml): run build-push with a drdctl.toml at the repository root",
            root.display()
        );
    }

    let progress = ui::Progress::new();
    let bars: Mutex<HashMap<String, ProgressBar>> = Mutex::new(HashMap::new());
    let on_progress = |p: &Progress| match p {
        Progress::Compiling { services } => progress.println(format!(
            "compiling {} (cargo build --release)",
            services
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Progress::UploadStarted {
            service,
            digest,
            bytes,
            ..
        } => {
            let bar = progress.bytes(format!("{service} {}", short(digest)), *bytes);
            bars.lock()
                .expect("not poisoned")
                .insert(digest.clone(), bar);
        }
        Progress::UploadProgress { digest, sent, .. } => {
            if let Some(b) = bars.lock().expect("not poisoned").get(digest) {
                b.set_position(*sent);
            }
        }
        Progress::UploadFinished { digest, .. } => {
            if let Some(b) = bars.lock().expect("not poisoned").remove(digest) {
                b.finish_and_clear();
            }
        }
        Progress::ImagePushed { .. } => {}
        _ => {}
    };
    let report = drd_registry::build_push(&opts, &on_progress).await?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if output == crate::cli::Output::Json {
        let images: Vec<serde_json::Value> = report
            .images
            .iter()
            .map(|i| {
                serde_json::json!({
                    "service": i.service.to_string(),
                    "repository": i.repository,
                    "tags": i.tags,
                    "digest": i.digest,
                    "reference": i.reference(),
                    "size": i.size,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "images": images,
                "images_file": report.images_file,
                "revision": report.revision,
                "build_secs": report.build_time.as_secs_f64(),
                "push_secs": report.push_time.as_secs_f64(),
                "warnings": report.warnings,
            }))?
        );
    } else {
        print!("{report}");
    }
    Ok(())
}

fn short(digest: &str) -> &str {
    let d = digest.strip_prefix("sha256:").unwrap_or(digest);
    &d[..d.len().min(12)]
}
