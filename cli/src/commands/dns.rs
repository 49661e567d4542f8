//! `drdctl dns show|switch|prepare|restore`: thin over drd-dns, the code the failover engine
//! uses for its DNS step.

use anyhow::{bail, Context};
use drd_dns::{DnsConfig, DnsOps, SwitchOptions};
use serde::Serialize;

use crate::cli::{DnsAction, Output};
use crate::config::Config;
use crate::ui;

/// The `[dns]` section, validated (errors name the key).
pub fn dns_config(config: &Config) -> anyhow::Result<DnsConfig> {
    let Some(v) = &config.dns else {
        bail!(
            "{}: no [dns] section; add one (see docs/dns.md) to use the DNS commands",
            config.path.display()
        );
    };
    let cfg: DnsConfig = v
        .clone()
        .try_into()
        .map_err(|e| anyhow::anyhow!("{}: [dns]: {e}", config.path.display()))?;
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("{}: {e}", config.path.display()))?;
    Ok(cfg)
}

fn print<T: Serialize + std::fmt::Display>(report: &T, output: Output) {
    match output {
        Output::Human => print!("{report}"),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(report).expect("serialisable")
        ),
    }
}

pub async fn run(config: &Config, action: DnsAction, output: Output) -> anyhow::Result<()> {
    let cfg = dns_config(config)?;
    let ops = DnsOps::from_env(&cfg).context("setting up the Azure DNS client")?;
    match action {
        DnsAction::Show {} => print(&ops.show().await?, output),
        DnsAction::Switch { to, plan, yes, ttl } => {
            let region = to.name();
            let planned = ops
                .switch(
                    region,
                    &SwitchOptions {
                        plan: true,
                        ttl,
                        confirm: false,
                    },
                )
                .await?;
            if plan {
                print(&planned, output);
                return Ok(());
            }
            ui::confirm_typed(region, yes, &format!("{planned}"))?;
            let started = chrono::Utc::now();
            let report = ops
                .switch(
                    region,
                    &SwitchOptions {
                        plan: false,
                        ttl,
                        confirm: true,
                    },
                )
                .await;
            let mut record = crate::audit::Record::new("dns-switch", started);
            record.result = match &report {
                Ok(r) => r.summary(),
                Err(e) => format!("failed: {e}"),
            };
            record.exit_code = if report.is_ok() { 0 } else { 1 };
            crate::audit::write_or_warn(config, record).await;
            print(&report?, output);
        }
        DnsAction::Prepare { ttl, plan } => {
            let started = chrono::Utc::now();
            let report = ops.prepare_ttl(ttl, plan).await;
            if !plan {
                audit_ttl(config, "dns-prepare", started, &report).await;
            }
            print(&report?, output)
        }
        DnsAction::Restore { ttl, plan } => {
            let started = chrono::Utc::now();
            let report = ops.restore_ttl(ttl, plan).await;
            if !plan {
                audit_ttl(config, "dns-restore", started, &report).await;
            }
            print(&report?, output)
        }
    }
    Ok(())
}

async fn audit_ttl(
    config: &Config,
    kind: &str,
    started: chrono::DateTime<chrono::Utc>,
    report: &Result<drd_dns::TtlReport, drd_dns::DnsError>,
) {
    let mut record = crate::audit::Record::new(kind, started);
    record.result = match report {
        Ok(r) => r.headline(),
        Err(e) => format!("failed: {e}"),
    };
    record.exit_code = if report.is_ok() { 0 } else { 1 };
    crate::audit::write_or_warn(config, record).await;
}
