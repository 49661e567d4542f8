//! `drdctl failover --to REGION`, `drdctl failback` and `drdctl abandon`: thin over
//! [`crate::engine::drive`]; this file builds the real ports, asks the operator, and renders.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use drd_kube::KubeCluster;

use crate::cli::Region;
use crate::config::Config;
use crate::engine::journal::{FileStore, Run};
use crate::engine::plan::{Decision, Intent, Plan, RunKind, Snapshot, Step};
use crate::engine::ports::{
    AppShape, AzureDnsPort, KillPoints, LeaseLock, Ports, RegionPorts, SystemClock,
};
use crate::engine::{self, lock::LocalLock, Operator, Outcome};
use crate::{exit, ui};

pub struct Args {
    pub kind: RunKind,
    pub to: Region,
    pub plan: bool,
    pub yes: bool,
    pub json: bool,
    pub state_dir: PathBuf,
    pub lag_bound_bytes: u64,
    /// Rejoin the old primary as a standby instead of stopping it (always for failback).
    pub rejoin: bool,
    /// Accept losing what the unreachable primary acknowledged but DR never received.
    pub allow_data_loss: bool,
    /// With two writable databases: whose writes are discarded.
    pub discard_writes_of: Option<Region>,
    /// Emergency: refuse when DR's last replayed commit is older (`None`: no bound).
    pub max_replay_age_secs: Option<u64>,
}

/// The lease timing `[witness]` names (`None`: no witness).
fn witness_timing(config: &Config) -> anyhow::Result<Option<crate::guard::core::Timing>> {
    config
        .witness
        .as_ref()
        .map(|w| {
            crate::guard::timing(&w.timing)
                .map_err(|e| anyhow::anyhow!("{}: witness.timing: {e}", config.path.display()))
        })
        .transpose()
}

/// The witness term, from `[witness]`.
pub fn witness(config: &Config) -> anyhow::Result<Option<Arc<dyn engine::ports::Term>>> {
    let (Some(w), Some(timing)) = (&config.witness, witness_timing(config)?) else {
        return Ok(None);
    };
    let dns_key = |k: &str| {
        config
            .dns
            .as_ref()
            .and_then(|d| d.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let auth_name = w
        .auth
        .clone()
        .or_else(|| dns_key("auth"))
        .unwrap_or_else(|| "auto".into());
    let auth = auth_name
        .parse()
        .map_err(|e| anyhow::anyhow!("{}: witness.auth {e}", config.path.display()))?;
    let cfg = drd_dns::WitnessConfig {
        url: w.url.clone(),
        auth,
        authority_host: w
            .authority_host
            .clone()
            .or_else(|| dns_key("authority_host")),
        managed_identity_client_id: dns_key("managed_identity_client_id"),
        timeout: timing.timeout.max(std::time::Duration::from_secs(2)),
    };
    let witness = drd_dns::BlobWitness::from_env(&cfg)
        .map_err(|e| anyhow::anyhow!("{}: {e}", config.path.display()))?;
    Ok(Some(Arc::new(engine::ports::BlobTerm(Arc::new(witness)))))
}

/// The real ports, from the config.
pub async fn ports(config: &Config, state_dir: &Path) -> anyhow::Result<Ports> {
    let region = |r: Region| async move {
        let kube = KubeCluster::connect(config.kube_target(r.name())).await?;
        let db = crate::commands::db::database(config, r.name(), &kube);
        anyhow::Ok(RegionPorts {
            region: r,
            cluster: Arc::new(kube),
            db: Arc::new(db),
        })
    };
    // A DNS configuration error stops here; missing Azure credentials do not: `status` still
    // shows the rest, and a failover's preflight refuses with the reason.
    let dns: Option<Arc<dyn engine::ports::Dns>> = match &config.dns {
        Some(_) => match drd_dns::DnsOps::from_env(&super::dns::dns_config(config)?) {
            Ok(ops) => Some(Arc::new(AzureDnsPort(ops))),
            Err(e) => Some(Arc::new(engine::ports::UnavailableDns(e.to_string()))),
        },
        None => None,
    };
    let term = witness(config)?;
    Ok(Ports {
        primary: region(Region::Primary).await?,
        dr: region(Region::Dr).await?,
        dns,
        term,
        lock: Arc::new(LeaseLock {
            cluster: KubeCluster::connect(config.kube_target("dr")).await?,
        }),
        journal: Arc::new(FileStore::new(state_dir)),
        clock: Arc::new(SystemClock),
        hooks: Arc::new(KillPoints),
        app: AppShape {
            configmap: config.app.configmap.clone(),
            deployments: config.app.deployments.clone(),
            active_replicas: config.app.active_replicas,
            standby_replicas: config.app.standby_replicas,
        },
    })
}

/// `user@host pid=N` of this process.
pub fn who() -> (String, String) {
    let me = engine::lock::Holder::me("");
    (format!("{}@{} pid={}", me.user, me.host, me.pid), me.host)
}

/// The operator at a terminal: the plan, then a typed confirmation (unless `--yes`); after
/// it, Ctrl-C stops the run between steps instead of killing it.
struct Terminal {
    kind: RunKind,
    yes: bool,
    interrupted: Arc<AtomicBool>,
    /// Live progress on a TTY (stderr); `None`: plain lines.
    live: Option<Live>,
}

/// One spinner per running step, with its elapsed time and the latest news from inside it.
struct Live {
    multi: indicatif::MultiProgress,
    bars: std::sync::Mutex<std::collections::HashMap<Step, indicatif::ProgressBar>>,
}

/// Lines fit in this many columns on a terminal.
const COLUMNS: usize = 100;

fn fit(line: &str, width: usize) -> String {
    if line.chars().count() <= width {
        line.to_string()
    } else {
        let mut s: String = line.chars().take(width.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

impl Live {
    fn new() -> Option<Live> {
        use std::io::IsTerminal;
        std::io::stderr().is_terminal().then(|| Live {
            multi: indicatif::MultiProgress::with_draw_target(
                indicatif::ProgressDrawTarget::stderr(),
            ),
            bars: Default::default(),
        })
    }
}

impl Terminal {
    fn arm_ctrl_c(&self) {
        let flag = self.interrupted.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                flag.store(true, Ordering::SeqCst);
                eprintln!(
                    "\ninterrupted: stopping after the current step (the state is shown then); Ctrl-C again kills drdctl at once"
                );
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(exit::INTERRUPTED as i32);
                }
            }
        });
    }
}

impl Operator for Terminal {
    fn confirm(&self, plan: &Plan, snapshot: &Snapshot, resuming: Option<&Run>) -> bool {
        let to = plan.intent.to;
        let mut text = String::new();
        if let Some(r) = resuming {
            text.push_str(&format!(
                "resuming {}.\n  done in that run: {}\n",
                r.describe(),
                r.done().join(", ")
            ));
        }
        text.push_str(&summary(plan, snapshot));
        let what = match self.kind {
            RunKind::Failback => format!(
                "failback: make {to} active again; it first rejoins as a standby of {} (pg_rewind)",
                to.other()
            ),
            RunKind::Failover => {
                format!("failover: make {to} the active region (database, application, DNS)")
            }
        };
        text.push_str(&what);
        // Shown with --yes too: the log of an unattended run says what it was about to do.
        eprintln!("{text}");
        let ok = match ui::confirm_typed(to.name(), self.yes, "") {
            Ok(()) => true,
            Err(e) => {
                eprintln!("{e:#}");
                false
            }
        };
        if ok {
            self.arm_ctrl_c();
        }
        ok
    }

    fn say(&self, line: &str) {
        match &self.live {
            Some(l) => {
                let _ = l.multi.println(fit(line, COLUMNS));
            }
            None => eprintln!("{line}"),
        }
    }

    fn step_started(&self, step: Step, what: &str) {
        let Some(l) = &self.live else { return };
        let bar = l.multi.add(indicatif::ProgressBar::new_spinner());
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {prefix:<20} {elapsed:>4} {wide_msg}",
            )
            .expect("a valid template"),
        );
        bar.set_prefix(step.name());
        bar.set_message(fit(what, COLUMNS - 30));
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        l.bars.lock().expect("not poisoned").insert(step, bar);
    }

    fn step_progress(&self, step: Step, detail: &str) {
        if let Some(l) = &self.live {
            if let Some(b) = l.bars.lock().expect("not poisoned").get(&step) {
                b.set_message(fit(detail, COLUMNS - 30));
            }
        }
    }

    fn step_ended(&self, step: Step, line: &str) {
        if let Some(l) = &self.live {
            if let Some(b) = l.bars.lock().expect("not poisoned").remove(&step) {
                b.finish_and_clear();
            }
        }
        self.say(line);
    }
}

/// The plan's changing steps, the lag, the data-loss window and the DNS TTL: what the
/// operator confirms.
fn summary(plan: &Plan, s: &Snapshot) -> String {
    let (from, to) = (plan.intent.from(), plan.intent.to);
    let mut out = String::new();
    let acting: Vec<&str> = plan.acting().iter().map(|s| s.name()).collect();
    out.push_str(&format!("plan: {}\n", acting.join(" -> ")));
    let (src, tgt) = (s.region(from), s.region(to));
    out.push_str(&format!(
        "  {from}: {}\n  {to}: {}\n",
        src.db.describe(),
        tgt.db.describe()
    ));
    if let (Some(a), Some(b)) = (src.db.lsn(), tgt.db.lsn()) {
        if src.db.is_primary() && !tgt.db.is_primary() {
            out.push_str(&format!("  lag: {} bytes of WAL\n", a.saturating_sub(b)));
        }
    }
    if plan.emergency {
        out.push_str(&format!(
            "  DATA-LOSS WINDOW: whatever {from} acknowledged after {to} received {}\n",
            tgt.db
                .lsn()
                .map_or("-".into(), |l| drd_db::Lsn(l).to_string())
        ));
    }
    if let Some(ttl) = s.dns.as_ref().and_then(|d| d.ttl) {
        out.push_str(&format!(
            "  DNS TTL: {ttl} s (clients may use the old address that long after the switch)\n"
        ));
    }
    out
}

/// `--plan`: every step with what it would change.
pub fn render_plan(plan: &Plan) -> String {
    let mut out = format!(
        "plan: {} to {}{} (nothing will be changed)\n",
        plan.intent.kind.name(),
        plan.intent.to,
        if plan.emergency { ", EMERGENCY" } else { "" }
    );
    for s in &plan.steps {
        let line = match &s.decision {
            Decision::Already { why } => format!("already so: {why}"),
            Decision::Act { changes, why } if changes.is_empty() => format!("ok: {why}"),
            Decision::Act { changes, .. } => format!(
                "would: {}",
                changes
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            Decision::Skip { why } => format!("skipped: {why}"),
            Decision::Defer { why } => format!("DEFERRED: {why}"),
            Decision::Refuse { why } => format!("REFUSED: {why}"),
        };
        out.push_str(&format!("  {:<20} {line}\n", s.step.name()));
    }
    if plan.nothing_to_do() {
        out.push_str(&format!(
            "nothing to do: {} is already the active region\n",
            plan.intent.to
        ));
    }
    out
}

pub async fn run(config: &Config, args: Args) -> anyhow::Result<u8> {
    let ports = ports(config, &args.state_dir).await?;
    let intent = Intent {
        kind: args.kind,
        to: args.to,
        rejoin: args.rejoin || args.kind == RunKind::Failback,
        allow_data_loss: args.allow_data_loss,
        discard_writes_of: args.discard_writes_of,
        lag_bound_bytes: args.lag_bound_bytes,
        active_replicas: config.app.active_replicas,
        standby_replicas: config.app.standby_replicas,
        deployments: config.app.deployments.clone(),
        max_replay_age_secs: args.max_replay_age_secs,
        lease_wait_ms: witness_timing(config)?.map_or(0, |t| t.wait.as_millis() as u64),
    };
    let (who, host) = who();
    let opts = engine::Options {
        plan_only: args.plan,
        who,
        host,
    };
    // One run per state directory on this machine (the Lease covers the rest).
    let _local = if args.plan {
        None
    } else {
        let (lock, taken_over) = LocalLock::acquire(
            &args.state_dir,
            &format!("{} --to {}", args.kind.name(), args.to),
        )?;
        if let Some(dead) = taken_over {
            eprintln!("note: took over a stale lock left by {dead}");
        }
        Some(lock)
    };
    let interrupted = Arc::new(AtomicBool::new(false));
    let operator = Terminal {
        kind: args.kind,
        yes: args.yes,
        interrupted: interrupted.clone(),
        live: if args.plan { None } else { Live::new() },
    };
    let started = std::time::Instant::now();
    if !args.plan {
        eprintln!("{} to {}", args.kind.name(), args.to);
    }
    let run_started = chrono::Utc::now();
    let outcome = engine::drive(&ports, &intent, &opts, &operator, &interrupted).await?;
    let code = exit::of_outcome(&outcome);
    audit_run(config, args.kind, run_started, &outcome, code).await;
    if matches!(outcome, Outcome::Done { .. } | Outcome::Stopped { .. }) {
        eprintln!("total {:.1}s", started.elapsed().as_secs_f64());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
        return Ok(code);
    }
    match &outcome {
        Outcome::Planned { plan } => print!("{}", render_plan(plan)),
        Outcome::NothingToDo { plan } => {
            eprint!("{}", render_plan(plan));
            println!(
                "nothing to do: {} is already the active region; nothing was changed",
                args.to
            );
        }
        Outcome::Refused { why } => eprintln!(
            "drdctl {}: refused: {why}\nnothing was changed",
            args.kind.name()
        ),
        Outcome::NotConfirmed => eprintln!("not confirmed; nothing was changed"),
        Outcome::FailedUnchanged { why, interrupted } => eprintln!(
            "drdctl {}: {}{why}\nnothing was changed",
            args.kind.name(),
            if *interrupted { "interrupted: " } else { "" }
        ),
        Outcome::Stopped {
            run,
            why,
            interrupted,
        } => {
            eprintln!(
                "drdctl {}: stopped midway{}: {why}",
                args.kind.name(),
                if *interrupted { " (interrupted)" } else { "" }
            );
            let now = engine::run::observe(&ports).await;
            eprintln!(
                "state now:\n  primary: {}\n  dr: {}",
                now.primary.db.describe(),
                now.dr.db.describe()
            );
            eprintln!(
                "done so far: {}\ntwo ways on:\n  resume:  {} (it continues from the live state and asks again)\n  abandon: drdctl abandon (shows the state, then closes the run; the next failover or failback decides from the live state)",
                run.done().join(", "),
                run.command()
            );
        }
        Outcome::Done {
            run,
            evidence,
            deferred,
        } => {
            if !deferred.is_empty() {
                let from = args.to.other();
                println!(
                    "DEFERRED until {from} is reachable: {} (verify fails while it could take writes).\n  When it is back, `drdctl status` says how: fenced or stopped, re-run this command; writable again (split brain: clients may have written to it), re-run it with --discard-writes-of {from} (those writes are lost).",
                    deferred.join(", ")
                );
            }
            let lost = match (evidence.promoted, evidence.lost_bytes) {
                (_, Some(b)) => format!("{b} bytes of WAL"),
                (true, None) => format!(
                    "unknown ({} was unreachable: whatever it acknowledged after the last replayed position)",
                    args.to.other()
                ),
                (false, None) => "none (no promotion in this run)".into(),
            };
            println!("done: {} is active ({})", args.to, run.id);
            println!("  acknowledged writes lost: {lost}");
            println!(
                "  writes unavailable for {:.1}s{}",
                evidence.write_unavailability_secs.unwrap_or_default(),
                evidence
                    .dns_old_ttl_secs
                    .map(|t| format!("; clients may use the old address for up to {t}s (DNS TTL)"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(code)
}

/// `drdctl abandon`: shows the unfinished run and the live state, asks, closes the run.
pub async fn abandon(
    config: &Config,
    state_dir: &Path,
    yes: bool,
    json: bool,
) -> anyhow::Result<u8> {
    let ports = ports(config, state_dir).await?;
    let Some(run) = ports.journal.load()?.filter(|r| r.unfinished()) else {
        if json {
            println!("{}", serde_json::json!({"abandoned": null}));
        } else {
            println!(
                "no unfinished run in {}: nothing to abandon",
                state_dir.display()
            );
        }
        return Ok(exit::OK);
    };
    let now = engine::run::observe(&ports).await;
    let steps: Vec<String> = run
        .steps
        .iter()
        .map(|s| format!("{} {:?}", s.name, s.state))
        .collect();
    eprintln!(
        "unfinished: {}\n  steps: {}\nstate now:\n  primary: {}\n  dr: {}\n  active: {:?}",
        run.describe(),
        steps.join(", "),
        now.primary.db.describe(),
        now.dr.db.describe(),
        now.active()
    );
    if let Err(e) = ui::confirm_typed(
        "abandon",
        yes,
        "abandon closes the run; nothing in the clusters is changed",
    ) {
        eprintln!("{e:#}");
        return Ok(exit::FAILED);
    }
    let started = chrono::Utc::now();
    let closed = engine::abandon(&ports)?;
    let mut record = crate::audit::Record::new("abandon", started);
    record.result = format!("abandoned {}", run.id);
    crate::audit::write_or_warn(config, record).await;
    let _ = ports.lock.release(&run.holder).await;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"abandoned": closed}))?
        );
        return Ok(exit::OK);
    }
    println!(
        "abandoned {}; run `drdctl status`, then `drdctl failover --to REGION` or `drdctl failback` to converge from the live state",
        run.id
    );
    Ok(exit::OK)
}

/// For `status`: the unfinished run in `state_dir`, if any.
pub fn unfinished(state_dir: &Path) -> anyhow::Result<Option<Run>> {
    use crate::engine::ports::JournalStore;
    Ok(FileStore::new(state_dir).load()?.filter(|r| r.unfinished()))
}

/// The audit record of a failover or failback that ran (done, stopped, or failed at its first
/// change); refusals and no-ops change nothing and are not recorded.
async fn audit_run(
    config: &Config,
    kind: RunKind,
    started: chrono::DateTime<chrono::Utc>,
    outcome: &Outcome,
    code: u8,
) {
    let (run, result) = match outcome {
        Outcome::Done { run, .. } => (Some(run), "done".to_string()),
        Outcome::Stopped { run, why, .. } => (Some(run), format!("stopped midway: {why}")),
        Outcome::FailedUnchanged { why, .. } => (None, format!("failed, nothing changed: {why}")),
        _ => return,
    };
    let mut record = crate::audit::Record::new(kind.name(), started);
    if let Some(run) = run {
        record.id = run.id.clone();
        record.steps = run
            .steps
            .iter()
            .map(|s| crate::audit::Step {
                name: s.name.clone(),
                state: format!("{:?}", s.state).to_lowercase(),
                detail: s.detail.clone(),
            })
            .collect();
        record.plan = run
            .steps
            .iter()
            .filter(|s| s.state == crate::engine::journal::StepState::Done)
            .map(|s| s.name.clone())
            .collect();
    }
    record.result = result;
    record.exit_code = code;
    record.finished = chrono::Utc::now();
    crate::audit::write_or_warn(config, record).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::plan::{plan, DbView, DeploymentView, DnsView, RegionView};
    use drd_db::DbRole;

    fn region(r: Region, primary: bool) -> RegionView {
        RegionView {
            region: r,
            api_error: None,
            db: DbView::Up {
                role: if primary {
                    DbRole::Primary
                } else {
                    DbRole::Standby
                },
                fenced: false,
                timeline: 1,
                lsn: 0x3051DB8,
                received: (!primary).then_some(0x3051DB8),
                streaming: !primary,
            },
            db_desired: Some(if primary { "primary" } else { "standby" }.into()),
            app_role: Some(if primary { "active" } else { "standby" }.into()),
            deployments: ["frontend-api", "business-logic", "data-ingest"]
                .iter()
                .map(|d| DeploymentView {
                    name: d.to_string(),
                    desired: if primary { 3 } else { 1 },
                    rolled_out: true,
                    mark: None,
                })
                .collect(),
            replay_age: (!primary).then_some(2.0),
        }
    }

    fn initial() -> Snapshot {
        Snapshot {
            primary: region(Region::Primary, true),
            dr: region(Region::Dr, false),
            dns: Some(DnsView {
                points_to: Some(Region::Primary),
                ttl: Some(60),
                error: None,
            }),
            term: None,
        }
    }

    fn intent(kind: RunKind, to: Region) -> Intent {
        Intent {
            kind,
            to,
            rejoin: kind == RunKind::Failback,
            allow_data_loss: false,
            discard_writes_of: None,
            lag_bound_bytes: 16 << 20,
            active_replicas: 3,
            standby_replicas: 1,
            deployments: vec![
                "frontend-api".into(),
                "business-logic".into(),
                "data-ingest".into(),
            ],
            max_replay_age_secs: Some(300),
            lease_wait_ms: 15_000,
        }
    }

    #[test]
    fn the_plan_of_a_planned_failover_as_the_operator_reads_it() {
        let p = plan(&initial(), &intent(RunKind::Failover, Region::Dr));
        insta::assert_snapshot!(render_plan(&p));
        insta::assert_snapshot!("confirmation", summary(&p, &initial()));
    }

    #[test]
    fn a_no_op_failback_says_nothing_to_do() {
        let p = plan(&initial(), &intent(RunKind::Failback, Region::Primary));
        assert!(p.nothing_to_do());
        insta::assert_snapshot!(render_plan(&p));
    }

    #[test]
    fn split_brain_is_refused_naming_both_databases() {
        let mut s = initial();
        s.dr.db = DbView::Up {
            role: DbRole::Primary,
            fenced: false,
            timeline: 2,
            lsn: 0x3052000,
            received: None,
            streaming: false,
        };
        let p = plan(&s, &intent(RunKind::Failover, Region::Dr));
        assert!(p.refusal().is_some());
        insta::assert_snapshot!(render_plan(&p));
    }

    /// With a witness, an emergency failover seals DR, moves the term, waits W, then promotes.
    #[test]
    fn an_emergency_with_a_witness_moves_the_term_and_waits_before_promoting() {
        let mut s = initial();
        s.primary.db = DbView::Unreachable {
            reason: "connection timed out".into(),
        };
        s.term = Some(crate::engine::plan::TermView {
            holder: Some(Region::Primary),
            n: 7,
            error: None,
        });
        let mut i = intent(RunKind::Failover, Region::Dr);
        i.allow_data_loss = true;
        let p = plan(&s, &i);
        assert!(p.emergency && p.refusal().is_none(), "{p:?}");
        insta::assert_snapshot!(render_plan(&p));
        // The RPO guard: a standby whose last replay is older than the bound is refused.
        s.dr.replay_age = Some(900.0);
        let p = plan(&s, &i);
        let why = p.refusal().expect("refused");
        assert!(
            why.contains("RPO guard") && why.contains("--allow-stale-standby"),
            "{why}"
        );
        // An unreadable term refuses before anything changes.
        s.dr.replay_age = Some(1.0);
        s.term = Some(crate::engine::plan::TermView {
            holder: None,
            n: 0,
            error: Some("timed out".into()),
        });
        let why = plan(&s, &i).refusal().expect("refused").to_string();
        assert!(why.contains("witness term cannot be read"), "{why}");
    }
}
