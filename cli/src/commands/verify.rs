//! `drdctl verify`: run the checks, render them, pick the exit code.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use drd_kube::KubeCluster;

use crate::cli::Output;
use crate::config::Config;
use crate::exit;
use crate::verify::{self, checks, render, Status};

pub struct Args {
    pub regions: Vec<String>,
    pub checks: Vec<String>,
    pub output: Output,
    pub junit: Option<PathBuf>,
    pub timeout: Duration,
    pub rto_budget_secs: u32,
    pub max_lag_bytes: u64,
    pub max_lag_seconds: f64,
    /// No database checks (clusters without PostgreSQL, e.g. before init).
    pub skip_databases: bool,
}

/// Runs verify; returns the exit code (0 pass, 1 a check failed, 2 could not run).
pub async fn run(config: &Config, args: Args) -> anyhow::Result<u8> {
    let started = Instant::now();
    let mut clusters = BTreeMap::new();
    for region in &args.regions {
        // Only configuration problems stop verify here (connect does not call the server).
        let c = KubeCluster::connect(config.kube_target(region)).await?;
        clusters.insert(region.clone(), c);
    }
    // A DNS configuration error stops verify (exit 2); a missing Azure login only fails the
    // DNS checks, and everything else still runs.
    let (dns, dns_error) = match &config.dns {
        None => (None, None),
        Some(_) => {
            let cfg = super::dns::dns_config(config)?;
            match drd_dns::DnsOps::from_env(&cfg) {
                Ok(ops) => (Some(ops), None),
                Err(e) => (None, Some(format!("setting up the Azure DNS client: {e}"))),
            }
        }
    };
    let databases = if args.skip_databases {
        BTreeMap::new()
    } else {
        clusters
            .iter()
            .map(|(r, c)| (r.clone(), super::db::database(config, r, c)))
            .collect()
    };
    let targets = checks::Targets {
        clusters,
        dns,
        dns_error,
        rto_budget_secs: args.rto_budget_secs,
        databases,
        max_lag_bytes: args.max_lag_bytes,
        max_lag_seconds: args.max_lag_seconds,
        observed: Default::default(),
    };
    let list = checks::build(config, &targets, &args.regions, &args.checks);
    if list.is_empty() {
        anyhow::bail!("no check matches --check {} (checks are named like kube.api, app.deployments, images.same)", args.checks.join(","));
    }
    let results = verify::run_all(list, args.timeout).await;
    let wall_ms = started.elapsed().as_millis() as u64;
    match args.output {
        Output::Human => print!("{}", render::table(&results)),
        Output::Json => println!("{}", render::json(&results, wall_ms)),
    }
    if let Some(path) = &args.junit {
        // The checks ran: a report that cannot be written is a failure (1), not a usage error.
        if let Err(e) = std::fs::write(path, render::junit(&results, wall_ms)) {
            eprintln!(
                "drdctl verify: cannot write the JUnit report {}: {e}",
                path.display()
            );
            return Ok(exit::FAILED);
        }
    }
    Ok(if results.iter().any(|r| r.status == Status::Fail) {
        exit::FAILED
    } else {
        exit::OK
    })
}
