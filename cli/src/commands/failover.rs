//! `drdctl failover --to REGION`: the planned switchover, journaled and locked.

use std::path::PathBuf;

use drd_db::Database;

use crate::config::Config;
use crate::engine::journal::{Journal, StepState};
use crate::engine::lock::{ClusterLock, LocalLock, LEASE_NAME};
use crate::engine::switchover::{sides, Plan};
use crate::{exit, ui};

pub struct Args {
    pub to: String,
    pub plan: bool,
    pub yes: bool,
    pub json: bool,
    pub state_dir: PathBuf,
    pub lag_bound_bytes: u64,
    /// `failover`, or `failback` (rejoin the old primary first, then switch back with the
    /// DR region rejoined as a standby).
    pub kind: &'static str,
    /// Rejoin the old primary as a standby instead of stopping it.
    pub rejoin: bool,
    /// Accept losing what the unreachable primary acknowledged but DR never received.
    pub allow_data_loss: bool,
}

pub async fn run(config: &Config, args: Args) -> anyhow::Result<u8> {
    let (source, target) = sides(config, &args.to).await?;
    let dns = match &config.dns {
        Some(_) => Some(drd_dns::DnsOps::from_env(&super::dns::dns_config(config)?)?),
        None => None,
    };
    let target_is_primary = target
        .db
        .status()
        .await
        .is_ok_and(|n| n.role == drd_db::DbRole::Primary);
    // An unreachable source means an emergency failover, unless the switchover already
    // happened (then this run only finishes what was deferred).
    let emergency = !target_is_primary && source.db.status().await.is_err();
    if emergency {
        if args.kind == "failback" {
            anyhow::bail!("failback needs the DR database reachable; nothing changed");
        }
        let t = target.db.status().await?;
        eprintln!(
            "EMERGENCY: the {} database cannot be reached. Failing over now loses every write it \
             acknowledged after what {} received: received up to {}, replayed up to {}, replay {:.0}s behind \
             its last received transaction.",
            source.name,
            target.name,
            t.receive_lsn.map_or("-".into(), |l| l.to_string()),
            t.replay_lsn.map_or("-".into(), |l| l.to_string()),
            t.local_lag.as_ref().map_or(0.0, |l| l.seconds),
        );
        if !args.allow_data_loss {
            if args.plan || !ui::interactive() {
                eprintln!("refusing without --allow-data-loss (or a typed confirmation on a terminal); nothing changed");
                return Ok(exit::FAILED);
            }
            ui::confirm_typed("accept data loss", false, "type it to fail over anyway")?;
        }
    }
    let plan = Plan {
        config,
        source,
        target,
        dns,
        lag_bound_bytes: args.lag_bound_bytes,
        rejoin_source: args.rejoin || args.kind == "failback",
        emergency,
    };

    if args.plan
        && args.kind == "failback"
        && !target_is_primary
        && plan.target.db.status().await.is_err()
    {
        println!("plan: failback to {} (nothing will be changed)", args.to);
        println!("  rejoin-old-primary     would restart {}'s database as a standby of {} (start.sh rewinds it)", plan.target.name, plan.source.name);
        println!(
            "  then the planned switchover back, rejoining {} as a standby",
            plan.source.name
        );
        return Ok(exit::OK);
    }
    if args.plan {
        let scratch = tempfile::tempdir()?;
        let mut journal = Journal::open(scratch.path(), "failover", &args.to, None)?;
        println!(
            "plan: {} to {} (nothing will be changed)",
            args.kind, args.to
        );
        plan.run(&mut journal, true).await?;
        return Ok(exit::OK);
    }

    let (_lock, taken_over) =
        LocalLock::acquire(&args.state_dir, &format!("failover --to {}", args.to))?;
    if let Some(dead) = taken_over {
        eprintln!("note: took over a stale lock left by {dead}");
    }
    // The cluster-wide lock, in the DR region (reachable in every failover and failback).
    let (cluster_lock, taken) = ClusterLock::acquire(config, "dr").await?;
    if let drd_kube::LeaseTaken::TookOverExpired { previous } = &taken {
        eprintln!(
            "note: took over the expired switchover lock (Lease {LEASE_NAME} in dr) of {previous}"
        );
    }
    let resume = Journal::unfinished(&args.state_dir)?;
    if let Some(r) = &resume {
        if r.to != args.to || r.kind != args.kind {
            anyhow::bail!(
                "an unfinished {} to {} is recorded in {}: finish it first (or move the journal aside)",
                r.kind,
                r.to,
                Journal::path_in(&args.state_dir).display()
            );
        }
        eprintln!("resuming {} (started {})", r.id, r.started);
    } else {
        ui::confirm_typed(
            &args.to,
            args.yes,
            &format!(
                "failover: make {} the active region (database, application, DNS)",
                args.to
            ),
        )?;
    }
    let mut journal = Journal::open(&args.state_dir, args.kind, &args.to, resume)?;
    // On stderr: with --output json, stdout holds the JSON document only.
    eprintln!("{} to {} ({})", args.kind, args.to, journal.run.id);
    let result = async {
        if args.kind == "failback" {
            crate::engine::switchover::rejoin_as_standby(&mut journal, config, &plan.target)
                .await?;
        }
        plan.run(&mut journal, false).await
    }
    .await;
    let acted = journal.run.steps.iter().any(|s| s.state == StepState::Done);
    if result.is_ok() || !acted {
        if let Err(e) = cluster_lock.release().await {
            eprintln!("warning: could not release the switchover lock (Lease {LEASE_NAME} in dr): {e:#}; it lapses by itself");
        }
    } else {
        eprintln!("the switchover lock (Lease {LEASE_NAME} in dr) stays yours until you resume");
    }
    match result {
        Ok(evidence) => {
            journal.finish(true)?;
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"run": journal.run, "evidence": evidence})
                    )?
                );
            } else {
                let deferred: Vec<&str> = journal
                    .run
                    .steps
                    .iter()
                    .filter(|s| s.state == StepState::Deferred)
                    .map(|s| s.name.as_str())
                    .collect();
                if !deferred.is_empty() {
                    println!(
                        "DEFERRED until {} is reachable: {} (verify fails while it could take writes; re-run this command then)",
                        plan.source.name,
                        deferred.join(", ")
                    );
                }
                println!(
                    "done: {} is active; acknowledged writes lost: {}; writes unavailable for {:.1}s{}",
                    args.to,
                    evidence.lost_bytes.map_or("unknown (the old primary was unreachable)".into(), |b| format!("{b} bytes of WAL")),
                    evidence.write_unavailability_secs.unwrap_or_default(),
                    evidence
                        .dns_old_ttl_secs
                        .map(|t| format!("; clients may use the old address for up to {t}s (DNS TTL)"))
                        .unwrap_or_default()
                );
            }
            Ok(exit::OK)
        }
        Err(e) => {
            eprintln!("drdctl {}: {e:#}", args.kind);
            if acted {
                eprintln!(
                    "stopped midway; the journal is {}: fix the cause and re-run the same command to resume",
                    Journal::path_in(&args.state_dir).display()
                );
                Ok(exit::STOPPED_MIDWAY)
            } else {
                eprintln!("nothing was changed");
                Ok(exit::FAILED)
            }
        }
    }
}
