//! `drdctl deploy`: render the region's overlay, apply it server-side as `drdctl`, create the
//! database Secret when missing, wait for every rollout.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use drd_kube::{Cluster, KubeCluster, RolloutKind};
use secrecy::SecretString;
use serde_json::Value;

use crate::config::Config;
use crate::kustomize;
use crate::ui::{self, Progress};

pub struct Args {
    pub regions: Vec<String>,
    pub registry: Option<String>,
    pub version: Option<String>,
    pub dry_run: bool,
    pub no_wait: bool,
    pub force_conflicts: bool,
    pub timeout: Duration,
    /// The database password for a missing Secret (else DRDCTL_POSTGRES_PASSWORD or a prompt).
    pub password: Option<SecretString>,
}

/// What deploy did to one object, for `-o json`.
#[derive(serde::Serialize)]
struct Applied {
    region: String,
    object: String,
    outcome: String,
}

/// A line for the operator: stdout in text mode, stderr with `-o json` (stdout is the JSON).
fn say(json: bool, line: String) {
    if json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

/// ConfigMap keys that record which region is active. After a failover drdctl owns them, so
/// a re-deploy keeps their live values instead of putting the overlay's back.
const ROLE_KEYS: &[(&str, &[&str])] = &[
    ("app-config", &["region", "role"]),
    ("postgresql-role", &["role", "primary_host", "peer_host"]),
];

/// `deployment.apps/frontend-api`, as kubectl names objects.
fn display_name(o: &Value) -> String {
    let kind = o["kind"].as_str().unwrap_or("?").to_lowercase();
    let group = o["apiVersion"]
        .as_str()
        .and_then(|v| v.split_once('/'))
        .map(|(g, _)| g)
        .unwrap_or("");
    let name = o["metadata"]["name"].as_str().unwrap_or("?");
    if group.is_empty() {
        format!("{kind}/{name}")
    } else {
        format!("{kind}.{group}/{name}")
    }
}

pub async fn run(config: &Config, args: Args) -> anyhow::Result<()> {
    run_with_output(config, args, crate::cli::Output::Human).await
}

/// With `-o json` the lines go to stderr and one document to stdout at the end.
pub async fn run_with_output(
    config: &Config,
    args: Args,
    output: crate::cli::Output,
) -> anyhow::Result<()> {
    let mut applied = Vec::new();
    let started = chrono::Utc::now();
    let mut result = Ok(());
    for region in &args.regions {
        result = deploy_region(config, region, &args, output, &mut applied)
            .await
            .with_context(|| format!("deploying region {region}"));
        if result.is_err() {
            break;
        }
    }
    if !args.dry_run {
        let mut record = crate::audit::Record::new("deploy", started);
        record.plan = applied
            .iter()
            .filter(|a| a.outcome != "unchanged")
            .map(|a| format!("{} {} {}", a.region, a.object, a.outcome))
            .collect();
        record.result = match &result {
            Ok(()) => format!("done: {} object(s) changed", record.plan.len()),
            Err(e) => format!("failed: {}", crate::chain(e)),
        };
        record.exit_code = if result.is_ok() { 0 } else { 1 };
        crate::audit::write_or_warn(config, record).await;
    }
    result?;
    if output == crate::cli::Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "dry_run": args.dry_run,
                "regions": args.regions,
                "objects": applied,
            }))?
        );
    }
    Ok(())
}

async fn deploy_region(
    config: &Config,
    region: &str,
    args: &Args,
    output: crate::cli::Output,
    applied: &mut Vec<Applied>,
) -> anyhow::Result<()> {
    let json = output == crate::cli::Output::Json;
    let overlay = config.overlay(region);
    let mut objects = kustomize::render(&overlay)
        .with_context(|| format!("rendering {} (regions.{region}.overlay)", overlay.display()))?;
    let registry = args
        .registry
        .clone()
        .or_else(|| config.images.registry.clone());
    let version = args
        .version
        .clone()
        .or_else(|| config.images.version.clone());
    match (&registry, &version) {
        (Some(r), Some(v)) => {
            // (drdctl: the witness guard's sidecar, when the overlay runs one.)
            for service in config.app.deployments.iter().map(String::as_str).chain(["drdctl"]) {
                kustomize::override_image(&mut objects, service, &format!("{r}/{service}:{v}"));
            }
        }
        (None, None) => {
            // Pin to what build-push pushed, by digest, so both regions run the same bytes.
            let file = config.images_file();
            if file.exists() {
                let images = drd_registry::read_images_file(&file)?;
                let mut pinned = Vec::new();
                for service in config.app.deployments.iter().map(String::as_str).chain(["drdctl"]) {
                    if let Some(record) = images.get(service) {
                        kustomize::override_image(&mut objects, service, &record.reference);
                        pinned.push(record.reference.clone());
                    }
                }
                say(
                    json,
                    format!(
                        "images pinned by digest from {}: {}",
                        file.display(),
                        pinned.join(", ")
                    ),
                );
            }
        }
        _ => bail!(
            "--registry and --image-version go together (or images.registry and images.version in {})",
            config.path.display()
        ),
    }

    let cluster = KubeCluster::connect(config.kube_target(region)).await?;
    let suffix = if args.dry_run {
        " (server dry run)"
    } else {
        ""
    };
    say(
        json,
        format!(
            "region {region}: context {}, namespace {}, {} objects from {}{suffix}",
            cluster.target().context,
            cluster.target().namespace,
            objects.len(),
            overlay.display()
        ),
    );

    keep_live_role_keys(&cluster, &mut objects, json).await?;
    ensure_db_secret(
        &cluster,
        config,
        region,
        args.dry_run,
        args.password.clone(),
        json,
    )
    .await?;

    for o in &objects {
        let outcome = cluster.apply(o, args.dry_run, args.force_conflicts).await?;
        say(json, format!("{} {outcome}{suffix}", display_name(o)));
        applied.push(Applied {
            region: region.to_string(),
            object: display_name(o),
            outcome: outcome.to_string(),
        });
    }

    if args.dry_run || args.no_wait {
        return Ok(());
    }
    wait_rollouts(&cluster, region, &objects, args.timeout).await
}

async fn keep_live_role_keys(
    cluster: &KubeCluster,
    objects: &mut [Value],
    json: bool,
) -> anyhow::Result<()> {
    for (name, keys) in ROLE_KEYS {
        let Some(o) = objects
            .iter_mut()
            .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == *name)
        else {
            continue;
        };
        let Some(live) = cluster.configmap(name).await? else {
            continue;
        };
        for key in *keys {
            if let Some(v) = live.get(*key) {
                if o["data"][*key] != Value::String(v.clone()) {
                    say(
                        json,
                        format!(
                            "configmap/{name}: keeping live {key}={v:?} (set by failover; the overlay says {})",
                            o["data"][*key]
                        ),
                    );
                    o["data"][*key] = Value::String(v.clone());
                }
            }
        }
    }
    Ok(())
}

async fn ensure_db_secret(
    cluster: &KubeCluster,
    config: &Config,
    region: &str,
    dry_run: bool,
    given: Option<SecretString>,
    json: bool,
) -> anyhow::Result<()> {
    let name = &config.region(region).database.secret;
    if cluster.secret_exists(name).await? {
        return Ok(());
    }
    if dry_run {
        say(json, format!("secret/{name} would be created (missing)"));
        return Ok(());
    }
    let password = match given {
        Some(p) => p,
        None => match std::env::var("DRDCTL_POSTGRES_PASSWORD") {
            Ok(p) if !p.is_empty() => SecretString::from(p),
            _ if ui::interactive() => ui::password(&format!(
                "PostgreSQL password for secret/{name} in region {region} (same in both regions)"
            ))?,
            _ => bail!(
                "secret/{name} is missing in context {} and there is no terminal to ask for the \
                 password: set DRDCTL_POSTGRES_PASSWORD (the same value for both regions)",
                cluster.target().context
            ),
        },
    };
    let data = BTreeMap::from([("password".to_string(), password)]);
    cluster.create_secret(name, &data).await?;
    say(json, format!("secret/{name} created"));
    Ok(())
}

async fn wait_rollouts(
    cluster: &KubeCluster,
    region: &str,
    objects: &[Value],
    timeout: Duration,
) -> anyhow::Result<()> {
    let workloads: Vec<(RolloutKind, String)> = objects
        .iter()
        .filter_map(|o| {
            let kind = match o["kind"].as_str()? {
                "Deployment" => RolloutKind::Deployment,
                "StatefulSet" => RolloutKind::StatefulSet,
                _ => return None,
            };
            Some((kind, o["metadata"]["name"].as_str()?.to_string()))
        })
        .collect();
    let progress = Progress::new();
    let started = Instant::now();
    let waits = workloads.iter().map(|(kind, name)| {
        let bar = progress.line(format!("{region} {kind}/{name}"));
        let progress = &progress;
        async move {
            loop {
                let r = cluster.rollout(*kind, name).await?;
                bar.set_message(r.to_string());
                if r.is_complete() {
                    bar.finish_and_clear();
                    progress.println(format!(
                        "{kind}/{name} rolled out ({}/{} ready) in {:.1}s",
                        r.ready,
                        r.desired,
                        started.elapsed().as_secs_f64()
                    ));
                    return Ok::<_, anyhow::Error>(());
                }
                if started.elapsed() > timeout {
                    bar.abandon();
                    bail!(
                        "{kind}/{name} in context {} did not roll out within {}s: {r} \
                         (kubectl --context {} describe {kind} {name})",
                        cluster.target().context,
                        timeout.as_secs(),
                        cluster.target().context
                    );
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    });
    let results = futures_util::future::join_all(waits).await;
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    Ok(())
}
