//! The audit trail of every mutating run (deploy, init-db, failover, failback, abandon, dns
//! switch/prepare/restore, practice and practice cleanup): who (the local user and host, the kube identity), when, the
//! command, what it planned, each step's outcome, the result.
//!
//! Stored as an append-only history in the DR cluster (one ConfigMap per run, labelled
//! `drdctl.io/history=true`, created and never updated), and as an Event on the `app-config`
//! ConfigMap of each region the run touched (`kubectl get events` shows who did what). Nothing
//! secret is in it: the command line is drdctl's own arguments (passwords come from the
//! environment or a prompt, never arguments), and step details are drdctl's own messages.
//! `drdctl history` lists it, newest first.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use drd_kube::KubeCluster;
use serde::{Deserialize, Serialize};

use crate::config::Config;

/// One step of a run, as recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    pub state: String,
    pub detail: String,
}

/// One run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    /// `failover`, `deploy`, ...
    pub kind: String,
    /// drdctl's arguments (no environment).
    pub command: String,
    /// The local user and host.
    pub local_user: String,
    pub host: String,
    /// The kubeconfig user of each region's context.
    pub kube_user: BTreeMap<String, String>,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    /// `done`, `stopped midway`, `failed`, `nothing to do`.
    pub result: String,
    pub exit_code: u8,
    /// What the run planned to change (one line per step or object).
    pub plan: Vec<String>,
    pub steps: Vec<Step>,
}

impl Record {
    /// A record of this process's command, started at `started`.
    pub fn new(kind: &str, started: DateTime<Utc>) -> Record {
        let me = crate::engine::lock::Holder::me("");
        let command = std::env::args()
            .skip(1)
            .map(|a| if a.contains(' ') { format!("{a:?}") } else { a })
            .collect::<Vec<_>>()
            .join(" ");
        Record {
            id: format!("{kind}-{}", started.format("%Y%m%dT%H%M%S%.3fZ")),
            kind: kind.to_string(),
            command: format!("drdctl {command}"),
            local_user: me.user,
            host: me.host,
            kube_user: BTreeMap::new(),
            started,
            finished: Utc::now(),
            result: String::new(),
            exit_code: 0,
            plan: Vec::new(),
            steps: Vec::new(),
        }
    }
}

/// Writes `record`: the history entry in DR, an Event in each region. Failures are returned
/// as one message (the caller warns: the run itself is not undone by a failed audit write).
pub async fn write(config: &Config, mut record: Record) -> Result<(), String> {
    let mut problems = Vec::new();
    let mut clusters = Vec::new();
    for region in ["primary", "dr"] {
        match KubeCluster::connect(config.kube_target(region)).await {
            Ok(c) => {
                if let Some(u) = c.user() {
                    record.kube_user.insert(region.to_string(), u.to_string());
                }
                clusters.push((region, c));
            }
            Err(e) => problems.push(format!("{region}: {e}")),
        }
    }
    let json = serde_json::to_string(&record).map_err(|e| e.to_string())?;
    let message = format!(
        "{} by {}@{} ({}): {}",
        record.command, record.local_user, record.host, record.id, record.result
    );
    let reason = format!(
        "Drdctl{}",
        record
            .kind
            .split('-')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                    .unwrap_or_default()
            })
            .collect::<String>()
    );
    for (region, c) in &clusters {
        if *region == "dr" {
            let name = format!(
                "drdctl-history-{}",
                record.id.to_lowercase().replace(['.', '_'], "-")
            );
            if let Err(e) = c
                .append_record(
                    &name,
                    BTreeMap::from([("record.json".to_string(), json.clone())]),
                )
                .await
            {
                problems.push(format!("history in dr: {e}"));
            }
        }
        if let Err(e) = c
            .event(
                ("v1", "ConfigMap", &config.app.configmap),
                &reason,
                &message,
                record.exit_code != 0,
            )
            .await
        {
            problems.push(format!("event in {region}: {e}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Writes `record` and warns on stderr when it could not.
pub async fn write_or_warn(config: &Config, record: Record) {
    if let Err(e) = write(config, record).await {
        eprintln!("warning: the audit record was not fully written: {e}");
    }
}

/// The history in DR, newest first.
pub async fn list(config: &Config) -> anyhow::Result<Vec<Record>> {
    let c = KubeCluster::connect(config.kube_target("dr")).await?;
    let mut records: Vec<Record> = c
        .records()
        .await?
        .into_iter()
        .filter_map(|d| serde_json::from_str(d.get("record.json")?).ok())
        .collect();
    records.sort_by_key(|r| std::cmp::Reverse(r.started));
    Ok(records)
}

/// `drdctl history`: one line per run, then its steps (text), or the records (JSON).
pub async fn history(config: &Config, json: bool, limit: usize) -> anyhow::Result<()> {
    let records: Vec<Record> = list(config).await?.into_iter().take(limit).collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(());
    }
    if records.is_empty() {
        println!("no run recorded yet (the history lives in the DR cluster)");
    }
    for r in &records {
        println!(
            "{}  {:<14} {:<16} {}@{} (kube {})  {}",
            r.started.format("%Y-%m-%d %H:%M:%SZ"),
            r.result,
            r.kind,
            r.local_user,
            r.host,
            r.kube_user.values().cloned().collect::<Vec<_>>().join(", "),
            r.command
        );
        for s in &r.steps {
            println!("    {:<20} {:<12} {}", s.name, s.state, s.detail);
        }
    }
    Ok(())
}
