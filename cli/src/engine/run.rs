//! The thin async shell around the pure plan: [`observe`] both regions into a
//! [`Snapshot`], and [`execute`] a plan's changes through the [`Ports`], journaling every step
//! boundary and stopping between steps when interrupted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use anyhow::{bail, Context};
use drd_db::{DbRole, DesiredRole};
use drd_kube::RolloutKind;
use serde::Serialize;

use super::journal::{Journal, StepState};
use super::plan::{
    Change, DbView, Decision, DeploymentView, DesiredDb, DnsView, Plan, RegionView, Snapshot, Step,
    TermView, ROLE_MARK,
};
use super::ports::{Boundary, Ports, RegionPorts};
use crate::cli::Region;

/// Observes one region: its API, database, role ConfigMaps and deployments, concurrently.
pub async fn observe_region(ports: &Ports, r: &RegionPorts) -> RegionView {
    let app = &ports.app;
    let c = &r.cluster;
    // "Unreachable" decides an emergency: one error is not enough. Every read is tried three
    // times, 200 ms apart (the simulation found split brain from a single transient error).
    let (api, status) = tokio::join!(retry(ports, || c.version()), retry(ports, || r.db.status()));
    let mut view = RegionView {
        region: r.region,
        api_error: api.err().map(|e| e.to_string()),
        db: DbView::Unreachable {
            reason: String::new(),
        },
        db_desired: None,
        app_role: None,
        deployments: Vec::new(),
        replay_age: None,
    };
    view.db = match status {
        Ok(n) => {
            view.replay_age = n.replay_age_secs;
            DbView::Up {
                role: n.role,
                fenced: n.fenced,
                timeline: n.timeline,
                lsn: match n.role {
                    DbRole::Primary => n.current_lsn,
                    DbRole::Standby => n.replay_lsn.or(n.receive_lsn),
                }
                .map_or(0, |l| l.0),
                received: n.receive_lsn.map(|l| l.0),
                streaming: streams(&n),
            }
        }
        Err(e) => DbView::Unreachable {
            reason: e.to_string(),
        },
    };
    if view.api_error.is_some() {
        return view;
    }
    let deployments = futures_util::future::join_all(app.deployments.iter().map(|d| async move {
        let (rollout, mark) = tokio::join!(
            retry(ports, || c.rollout(RolloutKind::Deployment, d)),
            retry(ports, || c.template_annotation(
                RolloutKind::Deployment,
                d,
                ROLE_MARK
            ))
        );
        Ok::<_, drd_kube::KubeError>(DeploymentView {
            name: d.clone(),
            desired: rollout.as_ref().map_or(0, |r| r.desired),
            rolled_out: rollout?.is_complete(),
            mark: mark?,
        })
    }));
    let (sts, role_cm, app_cm, deployments) = tokio::join!(
        retry(ports, || c.rollout(RolloutKind::StatefulSet, "postgresql")),
        retry(ports, || c.configmap("postgresql-role")),
        retry(ports, || c.configmap(&app.configmap)),
        deployments
    );
    match deployments.into_iter().collect::<Result<Vec<_>, _>>() {
        Ok(d) => view.deployments = d,
        Err(e) => view.api_error = Some(e.to_string()),
    }
    if let (DbView::Unreachable { .. }, Ok(s)) = (&view.db, &sts) {
        if s.desired == 0 {
            view.db = DbView::Stopped;
        }
    }
    match role_cm {
        Ok(cm) => {
            view.db_desired = cm.and_then(|d| {
                d.get("role")
                    .filter(|r| !r.is_empty())
                    .or(d.get("initial_role"))
                    .cloned()
            })
        }
        Err(e) => view.api_error = Some(e.to_string()),
    }
    match app_cm {
        Ok(cm) => view.app_role = cm.and_then(|d| d.get("role").cloned()),
        Err(e) => view.api_error = Some(e.to_string()),
    }
    view
}

/// The node's WAL receiver streams (a standby following its primary).
fn streams(n: &drd_db::NodeStatus) -> bool {
    n.wal_receiver
        .as_ref()
        .is_some_and(|w| w.status == "streaming")
}

/// A read, tried three times 200 ms apart.
async fn retry<T, E, F, Fut>(ports: &Ports, mut f: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut r = f().await;
    for _ in 0..2 {
        if r.is_ok() {
            break;
        }
        ports.clock.sleep(Duration::from_millis(200)).await;
        r = f().await;
    }
    r
}

/// Both regions and the DNS record, concurrently.
pub async fn observe(ports: &Ports) -> Snapshot {
    let dns = async {
        match &ports.dns {
            None => None,
            // (No retry here: the DNS adapter retries within its own deadline.)
            Some(d) => Some(match d.active().await {
                Ok((points_to, ttl)) => DnsView {
                    points_to,
                    ttl: Some(ttl),
                    error: None,
                },
                Err(e) => DnsView {
                    points_to: None,
                    ttl: None,
                    error: Some(format!("{e:#}")),
                },
            }),
        }
    };
    let term = async {
        match &ports.term {
            None => None,
            Some(t) => Some(match retry(ports, || t.read()).await {
                Ok(v) => TermView {
                    holder: v.map(|(r, _)| r),
                    n: v.map_or(0, |(_, n)| n),
                    error: None,
                },
                Err(e) => TermView {
                    holder: None,
                    n: 0,
                    error: Some(format!("{e:#}")),
                },
            }),
        }
    };
    let (primary, dr, dns, term) = tokio::join!(
        observe_region(ports, &ports.primary),
        observe_region(ports, &ports.dr),
        dns,
        term
    );
    Snapshot {
        primary,
        dr,
        dns,
        term,
    }
}

/// What the run did, for the report.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Evidence {
    /// The source's last WAL position once fenced.
    pub source_final_lsn: Option<String>,
    /// What the target had replayed when it was promoted.
    pub target_replayed_lsn: Option<String>,
    /// Bytes the target had not replayed when promoted: 0 in a planned switchover; `None`
    /// when the run promoted nothing or the source was unreachable.
    pub lost_bytes: Option<u64>,
    /// Whether this run promoted a database.
    pub promoted: bool,
    /// From fencing the source to the DNS record pointing at the target.
    pub write_unavailability_secs: Option<f64>,
    /// The record's TTL: how long clients may still use the old address.
    pub dns_old_ttl_secs: Option<u32>,
    /// The witness term this run moved to (its number), and when the move was acknowledged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub term_moved: Option<TermMoved>,
}

/// The term move and, in an emergency, the data-loss window it bounds.
#[derive(Debug, Clone, Serialize)]
pub struct TermMoved {
    pub n: u64,
    /// When the compare-and-swap was acknowledged: the old primary's guard cannot have
    /// confirmed its term after this instant.
    pub at: String,
    /// Emergency: the old primary is fenced by this instant at the latest (the move plus
    /// `W`); its writes after what the target received fall inside [received, fenced_by].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_fenced_by: Option<String>,
}

/// How a run ended short of its plan.
#[derive(Debug)]
pub enum Stopped {
    /// A step failed.
    Failed { step: Step, error: anyhow::Error },
    /// Interrupted (Ctrl-C) between steps; `next` was not started.
    Interrupted { next: Step },
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stopped::Failed { step, error } => write!(f, "step {} failed: {error:#}", step.name()),
            Stopped::Interrupted { next } => {
                write!(f, "interrupted before step {}", next.name())
            }
        }
    }
}

/// How often a run renews its lease between steps (the lease lasts
/// [`super::lock::LEASE_DURATION`], 15 minutes).
const RENEW_EVERY: chrono::TimeDelta = chrono::TimeDelta::seconds(10);

/// Runs the plan's changes, step by step. Steps the plan shows as already so, skipped or
/// deferred change nothing (they are journaled as such). In an emergency `warm-target-app`
/// and `fence-source` run together. Before a step the lock is renewed when
/// [`RENEW_EVERY`] has passed since the last renewal; between steps an interrupt stops the
/// run.
pub async fn execute(
    ports: &Ports,
    plan: &Plan,
    journal: &mut Journal,
    interrupted: &AtomicBool,
    ui: &dyn super::Operator,
) -> Result<Evidence, Stopped> {
    let mut ev = Evidence::default();
    let mut fence_started: Option<Instant> = None;
    let mut renewed: Option<chrono::DateTime<chrono::Utc>> = None;
    let mut i = 0;
    let steps = &plan.steps;
    while i < steps.len() {
        let step = steps[i].step;
        if interrupted.load(Ordering::SeqCst) {
            return Err(Stopped::Interrupted { next: step });
        }
        // The lease lasts 15 minutes: renewed before a step once RENEW_EVERY has passed since
        // the last renewal, not before every step (each renewal is two API calls inside the
        // write outage).
        let now = ports.clock.now();
        if renewed.is_none_or(|at| now - at >= RENEW_EVERY) {
            if let Err(error) = ports
                .lock
                .acquire(&journal.run.holder, &|_| false)
                .await
                .and_then(|t| match t {
                    super::ports::Taken::Held { holder, .. } => {
                        bail!("the switchover lock was taken by {holder} while this run held it")
                    }
                    _ => Ok(()),
                })
            {
                return Err(Stopped::Failed { step, error });
            }
            renewed = Some(now);
        }
        // warm-target-app and fence-source together in an emergency (planned, the app is
        // warmed and ready before the fence: see plan.rs).
        let together = plan.emergency
            && step == Step::WarmTargetApp
            && steps.get(i + 1).map(|s| s.step) == Some(Step::FenceSource);
        if together {
            fence_started = Some(Instant::now());
            let (a, b) = (&steps[i], &steps[i + 1]);
            begin(ports, journal, a.step, &a.decision, ui)?;
            begin(ports, journal, b.step, &b.decision, ui)?;
            let (mut ea, mut eb) = (Evidence::default(), Evidence::default());
            let (ra, rb) = tokio::join!(
                run_step(ports, a.step, &a.decision, &mut ea, ui, &journal.run.holder),
                run_step(ports, b.step, &b.decision, &mut eb, ui, &journal.run.holder)
            );
            let ra = end(ports, journal, a.step, &a.decision, ra, ui);
            let rb = end(ports, journal, b.step, &b.decision, rb, ui);
            ra?;
            rb?;
            i += 2;
            continue;
        }
        if step == Step::FenceSource {
            fence_started = Some(Instant::now());
        }
        begin(ports, journal, step, &steps[i].decision, ui)?;
        let holder = journal.run.holder.clone();
        let r = run_step(ports, step, &steps[i].decision, &mut ev, ui, &holder).await;
        end(ports, journal, step, &steps[i].decision, r, ui)?;
        if step == Step::SwitchDns || (step == Step::ActivateTargetApp && ports.dns.is_none()) {
            if let Some(t) = fence_started {
                ev.write_unavailability_secs = Some(t.elapsed().as_secs_f64());
            }
        }
        i += 1;
    }
    Ok(ev)
}

fn begin(
    ports: &Ports,
    journal: &mut Journal,
    step: Step,
    decision: &Decision,
    ui: &dyn super::Operator,
) -> Result<(), Stopped> {
    if let Decision::Act { changes, why } = decision {
        let what = if changes.is_empty() {
            why.clone()
        } else {
            changes
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        };
        ui.step_started(step, &what);
    }
    journal
        .begin(step.name(), ports.clock.now())
        .map_err(|error| Stopped::Failed { step, error })?;
    ports.hooks.at(step, Boundary::Begin);
    Ok(())
}

fn end(
    ports: &Ports,
    journal: &mut Journal,
    step: Step,
    decision: &Decision,
    outcome: anyhow::Result<String>,
    ui: &dyn super::Operator,
) -> Result<(), Stopped> {
    let now = ports.clock.now();
    let (state, detail) = match (decision, outcome) {
        (_, Err(error)) => {
            ui.step_ended(step, &format!("  {:<20} FAILED: {error:#}", step.name()));
            let _ = journal.end(step.name(), StepState::Failed, format!("{error:#}"), now);
            return Err(Stopped::Failed { step, error });
        }
        (Decision::Act { .. }, Ok(d)) => (StepState::Done, d),
        (Decision::Already { why }, _) => (StepState::AlreadyDone, why.clone()),
        (Decision::Skip { why }, _) => (StepState::Skipped, why.clone()),
        (Decision::Defer { why }, _) => (StepState::Deferred, why.clone()),
        (Decision::Refuse { why }, _) => (StepState::Failed, why.clone()),
    };
    let label = match state {
        StepState::Done => "done:",
        StepState::AlreadyDone => "already so:",
        StepState::Skipped => "skipped:",
        StepState::Deferred => "DEFERRED:",
        _ => "",
    };
    ui.step_ended(step, &format!("  {:<20} {label} {detail}", step.name()));
    journal
        .end(step.name(), state, detail, now)
        .map_err(|error| Stopped::Failed { step, error })?;
    if matches!(state, StepState::Done | StepState::AlreadyDone) {
        ports.hooks.at(step, Boundary::End);
    }
    Ok(())
}

/// One step's changes, in order; consecutive restarts or scales run at once.
async fn run_step(
    ports: &Ports,
    step: Step,
    decision: &Decision,
    ev: &mut Evidence,
    ui: &dyn super::Operator,
    by: &str,
) -> anyhow::Result<String> {
    let Decision::Act { changes, why } = decision else {
        return Ok(String::new());
    };
    if changes.is_empty() {
        return Ok(why.clone());
    }
    let t0 = Instant::now();
    let mut did = Vec::new();
    let mut k = 0;
    while k < changes.len() {
        let batchable =
            |c: &Change| matches!(c, Change::RestartApp { .. } | Change::ScaleApp { .. });
        let mut j = k + 1;
        if batchable(&changes[k]) {
            while j < changes.len()
                && std::mem::discriminant(&changes[j]) == std::mem::discriminant(&changes[k])
            {
                j += 1;
            }
        }
        let work =
            futures_util::future::try_join_all(changes[k..j].iter().map(|c| apply(ports, c, by)));
        let outs = watch(ports, step, &changes[k], ui, work).await?;
        for (c, out) in changes[k..j].iter().zip(outs) {
            if let Some(e) = out.evidence {
                merge(ev, e);
            }
            did.push(out.detail.unwrap_or_else(|| c.to_string()));
        }
        k = j;
    }
    Ok(format!(
        "{} ({:.1}s)",
        did.join("; "),
        t0.elapsed().as_secs_f64()
    ))
}

/// Runs `work`; meanwhile, for the long changes (replay, rejoin, rollouts), reports what the
/// regions say every 500 ms (replay position against the target, rollout state).
async fn watch<T>(
    ports: &Ports,
    step: Step,
    change: &Change,
    ui: &dyn super::Operator,
    work: impl std::future::Future<Output = T>,
) -> T {
    let mut ticks = 0u32;
    let probe = async {
        loop {
            ports.clock.sleep(Duration::from_millis(500)).await;
            let detail = match change {
                Change::WaitReplay { region, of } | Change::RejoinDb { region, follow: of } => {
                    let (a, b) = tokio::join!(
                        ports.region(*region).db.status(),
                        ports.region(*of).db.status()
                    );
                    match (a, b) {
                        (Ok(a), Ok(b)) => format!(
                            "{region} {} at {}; {of} at {}",
                            a.role,
                            a.position().map_or("-".into(), |l| l.to_string()),
                            b.position().map_or("-".into(), |l| l.to_string())
                        ),
                        (Err(_), _) => format!("{region}'s database is not answering yet"),
                        (_, Err(e)) => format!("{of}: {e}"),
                    }
                }
                Change::WaitLease { region, ms } => {
                    ticks += 1;
                    let left = (*ms as f64 / 1000.0 - ticks as f64 * 0.5).max(0.0);
                    format!("{left:.1} s until {region}'s guard must have fenced it")
                }
                Change::WaitAppReady { region } => {
                    let rp = ports.region(*region);
                    let mut parts = Vec::new();
                    for d in &ports.app.deployments {
                        if let Ok(r) = rp.cluster.rollout(RolloutKind::Deployment, d).await {
                            parts.push(format!("{d} {}/{}", r.ready, r.desired));
                        }
                    }
                    parts.join(", ")
                }
                _ => continue,
            };
            ui.step_progress(step, &detail);
        }
    };
    tokio::select! {
        out = work => out,
        () = probe => unreachable!("the probe never ends"),
    }
}

fn merge(ev: &mut Evidence, e: Evidence) {
    ev.source_final_lsn = e.source_final_lsn.or(ev.source_final_lsn.take());
    ev.target_replayed_lsn = e.target_replayed_lsn.or(ev.target_replayed_lsn.take());
    ev.lost_bytes = e.lost_bytes.or(ev.lost_bytes);
    ev.promoted |= e.promoted;
    ev.dns_old_ttl_secs = e.dns_old_ttl_secs.or(ev.dns_old_ttl_secs);
    if let Some(t) = e.term_moved {
        ev.term_moved = Some(match ev.term_moved.take() {
            // The wait's evidence adds the fence deadline to the move's.
            Some(mut old) if t.n == 0 => {
                old.source_fenced_by = t.source_fenced_by;
                old
            }
            _ => t,
        });
    }
}

#[derive(Default)]
struct Applied {
    detail: Option<String>,
    evidence: Option<Evidence>,
}

fn wait_budget(c: &Change) -> Duration {
    match c {
        Change::WaitReplay { .. } => Duration::from_secs(120),
        Change::Promote { .. } => Duration::from_secs(60),
        Change::RejoinDb { .. } => Duration::from_secs(600),
        _ => Duration::from_secs(300),
    }
}

/// Applies one change through the ports.
async fn apply(ports: &Ports, c: &Change, by: &str) -> anyhow::Result<Applied> {
    let app = &ports.app;
    let region = |r: Region| ports.region(r);
    let mut out = Applied::default();
    match c {
        Change::SetAppRole { region: r, role } => {
            region(*r)
                .cluster
                .patch_configmap(
                    &app.configmap,
                    &BTreeMap::from([("role".to_string(), role.clone())]),
                )
                .await?;
        }
        Change::RestartApp {
            region: r,
            deployment,
            role,
        } => {
            region(*r)
                .cluster
                .restart(RolloutKind::Deployment, deployment, (ROLE_MARK, role))
                .await?;
        }
        Change::ScaleApp {
            region: r,
            deployment,
            to,
            ..
        } => {
            region(*r)
                .cluster
                .scale(RolloutKind::Deployment, deployment, *to)
                .await?;
        }
        Change::SetHpaFloor { region: r, min } => {
            for d in &app.deployments {
                region(*r).cluster.set_hpa_min(d, *min).await?;
            }
        }
        Change::FenceDb { region: r } => {
            let f = region(*r).db.fence().await?;
            out.detail = Some(format!(
                "{r} database read-only ({} sessions ended)",
                f.sessions_terminated
            ));
        }
        Change::UnfenceDb { region: r } => {
            region(*r).db.unfence().await?;
        }
        Change::WaitReplay { region: r, of } => {
            // The target's session opens while the source's final position is read.
            let (source, _) = tokio::join!(region(*of).db.status(), region(*r).db.prepare());
            let final_lsn = source?
                .current_lsn
                .with_context(|| format!("{of}'s database reports no WAL position"))?;
            let replayed = region(*r)
                .db
                .wait_replayed(final_lsn, wait_budget(c))
                .await?;
            out.detail = Some(format!(
                "{r} replayed {replayed} ({of}'s final {final_lsn})"
            ));
            out.evidence = Some(Evidence {
                source_final_lsn: Some(final_lsn.to_string()),
                target_replayed_lsn: Some(replayed.to_string()),
                lost_bytes: Some(final_lsn.bytes_since(replayed)),
                ..Evidence::default()
            });
        }
        Change::Promote { region: r } => {
            // Never next to a writable primary: in an emergency the source was unreachable
            // when the plan was made; if it answers now, writable, the run stops instead.
            // (The target's session opens meanwhile, if the replay wait left none.)
            let (other, _) = tokio::join!(
                retry(ports, || region(r.other()).db.status()),
                region(*r).db.prepare()
            );
            if let Ok(st) = other {
                if st.role == DbRole::Primary && !st.fenced {
                    bail!(
                        "{} answers again and is a writable primary: not promoting {r} next to it. Run the command again: it plans a planned switchover now",
                        r.other()
                    );
                }
            }
            let p = region(*r).db.promote(wait_budget(c)).await?;
            out.detail = Some(if p.already_primary {
                format!(
                    "{r} was the primary already (timeline {})",
                    p.timeline_after
                )
            } else {
                format!(
                    "promoted {r}: timeline {} -> {}",
                    p.timeline_before, p.timeline_after
                )
            });
            out.evidence = Some(Evidence {
                promoted: !p.already_primary,
                ..Evidence::default()
            });
        }
        Change::SetDesiredDb { region: r, role } => {
            let desired = match role {
                DesiredDb::Primary => DesiredRole::Primary,
                DesiredDb::Fenced => DesiredRole::Fenced,
                DesiredDb::Standby => standby_of(ports, *r).await?,
            };
            region(*r).db.set_desired_role(&desired).await?;
        }
        Change::WaitAppReady { region: r } => {
            wait_rolled_out(ports, region(*r), wait_budget(c)).await?;
        }
        Change::SwitchDns { to } => {
            let dns = ports.dns.as_ref().context("DNS is not configured")?;
            let (summary, ttl) = dns.switch(*to).await?;
            out.detail = Some(summary);
            out.evidence = Some(Evidence {
                dns_old_ttl_secs: Some(ttl),
                ..Evidence::default()
            });
        }
        Change::StopDb { region: r } => {
            region(*r)
                .cluster
                .scale(RolloutKind::StatefulSet, "postgresql", 0)
                .await?;
        }
        Change::RejoinDb { region: r, follow } => {
            out.detail = Some(rejoin(ports, *r, *follow, wait_budget(c)).await?);
        }
        Change::SealStandby { region: r } => {
            region(*r).db.seal().await?;
        }
        Change::MoveTerm { to, n } => {
            let term = ports
                .term
                .as_ref()
                .context("no witness is configured, but the plan moves the term")?;
            term.move_to(*to, *n, by).await?;
            let at = ports.clock.now();
            out.evidence = Some(Evidence {
                term_moved: Some(TermMoved {
                    n: *n,
                    at: at.to_rfc3339(),
                    source_fenced_by: None,
                }),
                ..Evidence::default()
            });
        }
        Change::WaitLease { ms, .. } => {
            let until = ports.clock.now() + chrono::Duration::milliseconds(*ms as i64);
            ports.clock.sleep(Duration::from_millis(*ms)).await;
            out.evidence = Some(Evidence {
                term_moved: Some(TermMoved {
                    n: 0,
                    at: String::new(),
                    source_fenced_by: Some(until.to_rfc3339()),
                }),
                ..Evidence::default()
            });
        }
    }
    Ok(out)
}

/// A standby of the other region: its address from the region's `postgresql-role` ConfigMap.
async fn standby_of(ports: &Ports, r: Region) -> anyhow::Result<DesiredRole> {
    let rp = ports.region(r);
    let cm = rp
        .cluster
        .configmap("postgresql-role")
        .await?
        .with_context(|| format!("configmap/postgresql-role is missing in {r}"))?;
    let host = cm.get("peer_host").cloned().unwrap_or_default();
    if host.is_empty() {
        bail!("configmap/postgresql-role in {r} has no peer_host: cannot tell whom to follow");
    }
    let port = cm
        .get("peer_port")
        .and_then(|p| p.parse().ok())
        .unwrap_or(5432);
    Ok(DesiredRole::Standby {
        primary_host: host,
        primary_port: port,
    })
}

/// The region's database back as a streaming standby of `follow`: a stopped one is started
/// with the standby role (start.sh rewinds or clones it, never a second primary); a running
/// one is rejoined by the adapter (role, restart, wait).
async fn rejoin(
    ports: &Ports,
    r: Region,
    follow: Region,
    budget: Duration,
) -> anyhow::Result<String> {
    let rp = ports.region(r);
    let sts = rp
        .cluster
        .rollout(RolloutKind::StatefulSet, "postgresql")
        .await?;
    if sts.desired > 0 {
        if let Ok(st) = rp.db.status().await {
            if st.role == DbRole::Standby && streams(&st) {
                return Ok(format!("{r} is a streaming standby of {follow}"));
            }
        }
        let out = rp.db.rejoin(&drd_db::RejoinOptions::default()).await?;
        return Ok(describe_rejoin(&out));
    }
    rp.db.set_desired_role(&standby_of(ports, r).await?).await?;
    rp.cluster
        .scale(RolloutKind::StatefulSet, "postgresql", 1)
        .await?;
    let deadline = Instant::now() + budget;
    loop {
        if let Ok(st) = rp.db.status().await {
            if st.role == DbRole::Standby && streams(&st) {
                return Ok(format!(
                    "{r} restarted as a standby of {follow} (start.sh rewound or cloned it; see its log) and streams"
                ));
            }
        }
        if Instant::now() > deadline {
            bail!(
                "{r}'s database did not come back as a streaming standby within {}s (kubectl --context {} logs postgresql-0)",
                budget.as_secs(),
                rp.cluster.target().context
            );
        }
        ports.clock.sleep(Duration::from_millis(500)).await;
    }
}

fn describe_rejoin(out: &drd_db::RejoinOutcome) -> String {
    let how = match &out.method {
        drd_db::RejoinMethod::AlreadyStandby => "already a standby".to_string(),
        drd_db::RejoinMethod::NoRewindRequired => "pg_rewind: no rewind required".to_string(),
        drd_db::RejoinMethod::Rewind => format!(
            "pg_rewind, {} copied",
            drd_db::human_bytes(out.bytes_copied.unwrap_or(0))
        ),
        drd_db::RejoinMethod::BaseBackup { reason, .. } => {
            format!("fresh base backup because {reason}")
        }
    };
    let discarded = out
        .discarded_bytes
        .map(|b| format!("; {} of divergent WAL discarded", drd_db::human_bytes(b)))
        .unwrap_or_default();
    format!("{} follows {}: {how}{discarded}", out.region, out.primary)
}

async fn wait_rolled_out(ports: &Ports, rp: &RegionPorts, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    // Every deployment looked at together; the first looks 25 ms apart, then half as often
    // again each time up to every 500 ms: a quick rollout is seen at once, a slow one does not
    // flood the API.
    let mut pending: Vec<&String> = ports.app.deployments.iter().collect();
    let mut every = Duration::from_millis(25);
    loop {
        let looks = futures_util::future::try_join_all(
            pending
                .iter()
                .map(|d| rp.cluster.rollout(RolloutKind::Deployment, d)),
        )
        .await?;
        let mut left = Vec::new();
        for (d, r) in pending.into_iter().zip(looks) {
            if !r.is_complete() {
                left.push((d, r));
            }
        }
        let Some((d, r)) = left.first() else {
            return Ok(());
        };
        if Instant::now() > deadline {
            bail!(
                "deployment/{d} in context {} did not roll out within {}s: {r}",
                rp.cluster.target().context,
                timeout.as_secs()
            );
        }
        pending = left.into_iter().map(|(d, _)| d).collect();
        ports.clock.sleep(every).await;
        every = (every * 3 / 2).min(Duration::from_millis(500));
    }
}
