//! `drdctl init-db` and `drdctl status`: thin over drd-db (and drd-kube for deployments).

use std::time::Duration;

use drd_db::{Database, InitDbOptions, PasswordSource, PgDatabase, RegionConfig, WaitProgress};
use drd_kube::{Cluster, KubeCluster, RolloutKind};
use serde::Serialize;

use crate::cli::Output;
use crate::config::Config;
use crate::dbhost::KubeHost;
use crate::ui::Progress;

/// The region's database as the config describes it: port-forward through the region's kube
/// context (default), or a direct URL with the password from DRDCTL_DB_PASSWORD / the Secret.
pub fn database(config: &Config, region: &str, cluster: &KubeCluster) -> PgDatabase {
    let r = config.region(region);
    let kube = KubeHost::new(cluster, config.pod_names(region, &r.namespace));
    let cfg = match (&r.database.access[..], &r.database.url) {
        ("url", Some(url)) => {
            let password = if std::env::var_os("DRDCTL_DB_PASSWORD").is_some() {
                PasswordSource::Env("DRDCTL_DB_PASSWORD".into())
            } else {
                PasswordSource::KubeSecret
            };
            let mut c = RegionConfig::url(region, url, password);
            c.kube = Some(kube);
            c
        }
        _ => RegionConfig::port_forward(region, kube),
    };
    PgDatabase::new(cfg)
}

pub struct InitDbArgs {
    pub region: String,
    pub file: std::path::PathBuf,
    pub wait: Duration,
    pub dry_run: bool,
}

pub async fn init_db(config: &Config, args: InitDbArgs) -> anyhow::Result<()> {
    init_db_output(config, args, Output::Human).await
}

/// `init-db`, with `-o json` printing the outcome as JSON.
pub async fn init_db_output(
    config: &Config,
    args: InitDbArgs,
    output: Output,
) -> anyhow::Result<()> {
    let cluster = KubeCluster::connect(config.kube_target(&args.region)).await?;
    let db = database(config, &args.region, &cluster);
    let mut opts = InitDbOptions::new(&args.file);
    opts.wait = args.wait;
    opts.dry_run = args.dry_run;
    if args.region == "primary" {
        opts.create_slot = Some("dr_slot".into());
    }
    let progress = Progress::new();
    let line = progress.line(format!("{} database", args.region));
    let on_progress = |p: &WaitProgress| match p {
        WaitProgress::Waiting {
            attempt, reason, ..
        } => line.set_message(format!(
            "waiting for connections (attempt {attempt}): {reason}"
        )),
        WaitProgress::Ready { elapsed } => line.set_message(format!(
            "accepting connections after {:.1}s",
            elapsed.as_secs_f64()
        )),
    };
    let started = chrono::Utc::now();
    let outcome = db.init_db(&opts, &on_progress).await;
    line.finish_and_clear();
    if !args.dry_run {
        let mut record = crate::audit::Record::new("init-db", started);
        record.result = match &outcome {
            Ok(o) => o.to_string(),
            Err(e) => format!("failed: {e}"),
        };
        record.exit_code = if outcome.is_ok() { 0 } else { 1 };
        crate::audit::write_or_warn(config, record).await;
    }
    let outcome = outcome?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&outcome)?),
        Output::Human => print!("{outcome}"),
    }
    Ok(())
}

#[derive(Serialize)]
struct Workloads {
    region: String,
    deployments: Vec<(String, String)>,
    error: Option<String>,
}

/// The active region as the databases, the app roles and DNS see it, an unfinished run, the
/// lock: the top of `drdctl status`, and its exit code.
async fn who_is_active(
    config: &Config,
    state_dir: &std::path::Path,
) -> anyhow::Result<(serde_json::Value, String, u8)> {
    use crate::engine::plan::Active;
    let ports = super::failover::ports(config, state_dir).await?;
    let (snapshot, holder) = tokio::join!(crate::engine::run::observe(&ports), ports.lock.holder());
    let unfinished = super::failover::unfinished(state_dir)?;
    let active = snapshot.active();
    let code = match &active {
        Active::Agreed(_) => crate::exit::OK,
        Active::SplitBrain => crate::exit::SPLIT_BRAIN,
        _ => crate::exit::UNKNOWN,
    };
    let mut text = match &active {
        Active::Agreed(r) => format!(
            "active region: {r} (databases, app roles{} agree)\n",
            if snapshot.dns.as_ref().is_some_and(|d| d.error.is_none()) { " and DNS" } else { "" }
        ),
        Active::SplitBrain => format!(
            "SPLIT BRAIN: two writable databases: primary is {}, dr is {}. Decide whose writes to discard: drdctl failover --to REGION --discard-writes-of OTHER\n",
            snapshot.primary.db.describe(),
            snapshot.dr.db.describe()
        ),
        Active::Disagree { database, apps, dns } => format!(
            "active region: UNCLEAR: writable database in {}, app role active in [{}], DNS at {} (a run stopped midway? see below)\n",
            database.map_or("none".into(), |r| r.to_string()),
            apps.iter().map(|r| r.name()).collect::<Vec<_>>().join(", "),
            dns.map_or("-".into(), |r| r.to_string())
        ),
        Active::Unknown => "active region: UNKNOWN: no writable database can be reached\n".to_string(),
    };
    if let Some(e) = snapshot.dns.as_ref().and_then(|d| d.error.as_ref()) {
        text.push_str(&format!("  DNS record unreadable (not counted): {e}\n"));
    }
    if let Some(t) = &snapshot.term {
        match (&t.error, t.holder) {
            (Some(e), _) => text.push_str(&format!("  witness term unreadable: {e}\n")),
            (None, None) => {
                text.push_str("  witness term: never written (create it: docs/witness.md)\n")
            }
            (None, Some(h)) => {
                let writable = [&snapshot.primary, &snapshot.dr]
                    .into_iter()
                    .find(|r| r.db.writable())
                    .map(|r| r.region);
                let note = match writable {
                    Some(w) if w != h => format!(
                        "; it DISAGREES with the writable database in {w}: {w}'s guard fences it"
                    ),
                    _ => String::new(),
                };
                text.push_str(&format!("  witness term names {h} (n={}){note}\n", t.n));
            }
        }
    }
    for r in [&snapshot.primary, &snapshot.dr] {
        text.push_str(&format!(
            "  {:<8} database {}; pod starts as {}; app role {}{}\n",
            r.region.name(),
            r.db.describe(),
            r.db_desired.as_deref().unwrap_or("-"),
            r.app_role.as_deref().unwrap_or("-"),
            r.api_error
                .as_ref()
                .map(|e| format!("; Kubernetes API unreachable: {e}"))
                .unwrap_or_default()
        ));
    }
    if let Some(run) = &unfinished {
        text.push_str(&format!(
            "UNFINISHED RUN: {}; done: {}: resume with `{}` or `drdctl abandon`\n",
            run.describe(),
            run.done().join(", "),
            run.command()
        ));
    }
    let lock = match &holder {
        Ok(Some((h, secs))) => {
            text.push_str(&format!(
                "switchover lock held by {h} (lapses in {secs}s)\n"
            ));
            serde_json::json!({"holder": h, "expires_in_secs": secs})
        }
        Ok(None) => serde_json::Value::Null,
        Err(e) => {
            text.push_str(&format!("switchover lock: cannot read it: {e:#}\n"));
            serde_json::json!({"error": format!("{e:#}")})
        }
    };
    let doc = serde_json::json!({
        "active": active,
        "regions": [&snapshot.primary, &snapshot.dr],
        "unfinished_run": unfinished,
        "lock": lock,
        "term": snapshot.term,
    });
    Ok((doc, text, code))
}

pub async fn status(
    config: &Config,
    output: Output,
    state_dir: &std::path::Path,
) -> anyhow::Result<u8> {
    let (summary, summary_text, code) = who_is_active(config, state_dir).await?;
    let mut clusters = Vec::new();
    for region in ["primary", "dr"] {
        clusters.push((
            region,
            KubeCluster::connect(config.kube_target(region)).await?,
        ));
    }
    let dbs: Vec<PgDatabase> = clusters
        .iter()
        .map(|(r, c)| database(config, r, c))
        .collect();
    let refs: Vec<&dyn Database> = dbs.iter().map(|d| d as &dyn Database).collect();
    let (db_status, workloads) = tokio::join!(drd_db::cluster_status(&refs), async {
        let mut out = Vec::new();
        for (region, c) in &clusters {
            let mut w = Workloads {
                region: region.to_string(),
                deployments: Vec::new(),
                error: None,
            };
            for d in &config.app.deployments {
                match c.rollout(RolloutKind::Deployment, d).await {
                    Ok(r) => w
                        .deployments
                        .push((d.clone(), format!("{}/{}", r.ready, r.desired))),
                    Err(e) => {
                        w.error = Some(e.to_string());
                        break;
                    }
                }
            }
            out.push(w);
        }
        out
    });
    let dns = match &config.dns {
        Some(_) => {
            let cfg = super::dns::dns_config(config)?;
            match drd_dns::DnsOps::from_env(&cfg) {
                Ok(ops) => Some(ops.show().await.map_err(|e| e.to_string())),
                Err(e) => Some(Err(e.to_string())),
            }
        }
        None => None,
    };
    match output {
        Output::Json => {
            let doc = serde_json::json!({
                "summary": summary,
                "database": db_status,
                "deployments": workloads,
                "dns": dns.as_ref().map(|d| match d {
                    Ok(r) => serde_json::to_value(r).unwrap_or_default(),
                    Err(e) => serde_json::json!({"error": e}),
                }),
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        Output::Human => {
            println!("{summary_text}");
            print!("{db_status}");
            println!();
            for w in &workloads {
                match &w.error {
                    Some(e) => println!("{:<8} deployments: {e}", w.region),
                    None => println!(
                        "{:<8} deployments: {}",
                        w.region,
                        w.deployments
                            .iter()
                            .map(|(n, r)| format!("{n} {r}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }
            }
            match &dns {
                Some(Ok(r)) => {
                    println!();
                    print!("{r}");
                }
                Some(Err(e)) => println!("dns: {e}"),
                None => {}
            }
        }
    }
    Ok(code)
}
