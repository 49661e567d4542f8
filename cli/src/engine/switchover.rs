//! The planned switchover (primary reachable): the order of DESIGN.md's "Failover, done right".
//!
//! Each step observes the live state first and acts only when needed, so a re-run after a
//! kill (or after success) converges, and promotion happens at most once. Steps:
//! preflight → warm the target's app (scaled up, role active, rolled) while the source is
//! fenced (database read-only, then app to 0) → wait until the target replayed the source's final
//! LSN → promote the target → target app active and ready → DNS to the target (ETag-guarded,
//! confirmed on the name servers) → stop the source database (so it can never take writes) →
//! report.
//!
//! The target's app is switched to the active role and rolled while the source is fenced, not
//! after the promotion: the role is only a label the pods read at start (their database
//! decides whether a write is possible), so its rolling restart needs nothing from the
//! promotion and overlaps the fence, the replay and the promotion. `activate-target-app` then
//! waits for whatever is left of it (nothing in the lab; a real cluster whose pods take longer
//! to start than those steps waits for the rest of one start, the new pods starting together).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use drd_db::{Database, DbRole, DesiredRole, Lsn, PgDatabase};
use drd_kube::{Cluster, KubeCluster, RolloutKind};
use serde::Serialize;

use super::journal::{Journal, StepState};
use crate::config::Config;

/// One region's handles.
pub struct Side {
    pub name: String,
    pub kube: KubeCluster,
    pub db: PgDatabase,
}

/// What the run did, for the report.
#[derive(Debug, Default, Serialize)]
pub struct Evidence {
    /// The source's last WAL position once fenced.
    pub source_final_lsn: Option<String>,
    /// What the target had replayed when it was promoted.
    pub target_replayed_lsn: Option<String>,
    /// Bytes the target had not replayed when promoted: 0 in a planned switchover.
    pub lost_bytes: Option<u64>,
    /// From fencing the source to the DNS record pointing at the target.
    pub write_unavailability_secs: Option<f64>,
    /// The record's TTL: how long clients may still use the old address.
    pub dns_old_ttl_secs: Option<u32>,
}

pub struct Plan<'a> {
    pub config: &'a Config,
    pub source: Side,
    pub target: Side,
    pub dns: Option<drd_dns::DnsOps>,
    pub lag_bound_bytes: u64,
    /// Instead of stopping the source database, make it a standby of the target (pg_rewind),
    /// and bring its application back to the standby replica count: a failback, or
    /// `failover --rejoin`.
    pub rejoin_source: bool,
    /// The source is unreachable: skip what needs it, defer its fencing to the next run.
    pub emergency: bool,
}

/// A step's line: the output of `--plan` (stdout), progress in a real run (stderr: stdout is
/// the final report, a JSON document alone with `--output json`).
macro_rules! say {
    ($dry_run:expr, $($arg:tt)*) => {
        if $dry_run { println!($($arg)*) } else { eprintln!($($arg)*) }
    };
}

/// A step's outcome: acted, or found done already, or not applicable, or deferred.
enum Did {
    Acted(String),
    Already(String),
    Skipped(String),
    Deferred(String),
}

/// The crash tests' hook (docs/testing.md): with `DRDCTL_KILL_AT=<step>:begin` (or `:end`)
/// this process sends itself SIGKILL right after the journal recorded that point, as a crash
/// or an operator's `kill -9` would stop it there. Unset, it costs one environment lookup.
fn kill_point(step: &str, at: &str) {
    let Some(want) = std::env::var_os("DRDCTL_KILL_AT") else {
        return;
    };
    if want.to_str() == Some(&format!("{step}:{at}")) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &std::process::id().to_string()])
            .status();
        std::process::abort();
    }
}

async fn step<F>(journal: &mut Journal, name: &str, dry_run: bool, f: F) -> anyhow::Result<()>
where
    F: std::future::Future<Output = anyhow::Result<Did>>,
{
    let started = Instant::now();
    if journal.is_done(name) {
        say!(dry_run, "  {name:<22} done in an earlier run");
        return Ok(());
    }
    if !dry_run {
        journal.begin(name)?;
        kill_point(name, "begin");
    }
    let outcome = f.await;
    record(journal, name, dry_run, started, outcome)
}

/// Two independent steps at once (warming the target while the source is fenced): both are
/// journaled as running, run concurrently, and each is recorded as it ended. When one fails
/// the other still finishes (and is recorded); the first failure is returned.
async fn steps_together<F, G>(
    journal: &mut Journal,
    dry_run: bool,
    (a, fa): (&str, F),
    (b, fb): (&str, G),
) -> anyhow::Result<()>
where
    F: std::future::Future<Output = anyhow::Result<Did>>,
    G: std::future::Future<Output = anyhow::Result<Did>>,
{
    let started = Instant::now();
    let mut todo = [true, true];
    for (k, name) in [a, b].into_iter().enumerate() {
        if journal.is_done(name) {
            say!(dry_run, "  {name:<22} done in an earlier run");
            todo[k] = false;
        } else if !dry_run {
            journal.begin(name)?;
            kill_point(name, "begin");
        }
    }
    let (ra, rb) = tokio::join!(
        async {
            if todo[0] {
                Some(fa.await)
            } else {
                None
            }
        },
        async {
            if todo[1] {
                Some(fb.await)
            } else {
                None
            }
        }
    );
    let ra = ra.map(|o| record(journal, a, dry_run, started, o));
    let rb = rb.map(|o| record(journal, b, dry_run, started, o));
    ra.transpose()?;
    rb.transpose()?;
    Ok(())
}

/// Prints and journals how step `name` ended.
fn record(
    journal: &mut Journal,
    name: &str,
    dry_run: bool,
    started: Instant,
    outcome: anyhow::Result<Did>,
) -> anyhow::Result<()> {
    let (state, detail, line) = match outcome {
        Ok(Did::Acted(detail)) => (
            StepState::Done,
            detail.clone(),
            format!("{detail} ({:.1}s)", started.elapsed().as_secs_f64()),
        ),
        Ok(Did::Already(detail)) => (
            StepState::AlreadyDone,
            detail.clone(),
            format!("already so: {detail}"),
        ),
        Ok(Did::Skipped(detail)) => (
            StepState::Skipped,
            detail.clone(),
            format!("skipped: {detail}"),
        ),
        Ok(Did::Deferred(detail)) => (
            StepState::Deferred,
            detail.clone(),
            format!("DEFERRED: {detail}"),
        ),
        Err(e) => {
            say!(dry_run, "  {name:<22} FAILED: {e:#}");
            if !dry_run {
                journal.end(name, StepState::Failed, format!("{e:#}"))?;
            }
            return Err(e.context(format!("step {name}")));
        }
    };
    say!(dry_run, "  {name:<22} {line}");
    if !dry_run {
        journal.end(name, state, detail)?;
        if matches!(state, StepState::Done | StepState::AlreadyDone) {
            kill_point(name, "end");
        }
    }
    Ok(())
}

/// The pod template annotation that records the app role the pods were rolled for.
pub const ROLE_MARK: &str = "drdctl.io/app-role";

/// Sets the app's role in its ConfigMap and rolls every deployment whose pods were not
/// started for that role (their template's [`ROLE_MARK`]): idempotent, and a run killed between
/// the ConfigMap and the restarts restarts on the re-run. Returns what it changed (empty:
/// nothing to do); `dry_run` changes nothing and says what it would.
///
/// `settled`: the region already is what this run makes it (its database already the primary
/// for "active", or the run is past the promotion), so a deployment `drdctl deploy` created
/// with this very role and that drdctl never rolled (no mark) is left alone: a failover to the
/// region that is already active restarts nothing.
async fn roll_app_to_role(
    kube: &KubeCluster,
    app: &crate::config::AppConfig,
    role: &str,
    dry_run: bool,
    settled: bool,
) -> anyhow::Result<Vec<String>> {
    let mut did = Vec::new();
    let had_role = app_role(kube, &app.configmap).await? == role;
    if !had_role {
        if !dry_run {
            kube.patch_configmap(
                &app.configmap,
                &BTreeMap::from([("role".to_string(), role.to_string())]),
            )
            .await?;
        }
        did.push(format!("role {role}"));
    }
    let rolled = futures_util::future::try_join_all(app.deployments.iter().map(|d| async move {
        let mark = kube
            .template_annotation(RolloutKind::Deployment, d, ROLE_MARK)
            .await?;
        let needed = match mark.as_deref() {
            Some(m) => m != role,
            None => !(settled && had_role),
        };
        if needed && !dry_run {
            kube.restart(RolloutKind::Deployment, d, (ROLE_MARK, role))
                .await?;
        }
        anyhow::Ok(needed.then_some(d.as_str()))
    }))
    .await?;
    let rolled: Vec<&str> = rolled.into_iter().flatten().collect();
    if !rolled.is_empty() {
        did.push(format!("restart {}", rolled.join(", ")));
    }
    Ok(did)
}

async fn app_role(kube: &KubeCluster, configmap: &str) -> anyhow::Result<String> {
    Ok(kube
        .configmap(configmap)
        .await?
        .and_then(|d| d.get("role").cloned())
        .unwrap_or_default())
}

async fn wait_rolled_out(
    kube: &KubeCluster,
    deployments: &[String],
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    for d in deployments {
        loop {
            let r = kube.rollout(RolloutKind::Deployment, d).await?;
            if r.is_complete() {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "deployment/{d} in context {} did not roll out within {}s: {r}",
                    kube.target().context,
                    timeout.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

impl Plan<'_> {
    /// Runs (or, with `dry_run`, only observes and prints) the switchover.
    pub async fn run(&self, journal: &mut Journal, dry_run: bool) -> anyhow::Result<Evidence> {
        let app = &self.config.app;
        let (s, t) = (&self.source, &self.target);
        let mut ev = Evidence::default();
        let verb = |act: &str| {
            if dry_run {
                format!("would {act}")
            } else {
                act.to_string()
            }
        };

        // 1. Preflight: both reachable, the target a streaming standby close enough (unless
        // the run is past that point already), DNS readable.
        let t_status =
            t.db.status()
                .await
                .with_context(|| format!("reading the database of {}", t.name))?;
        let s_status = s.db.status().await;
        let emergency = self.emergency;
        step(journal, "preflight", dry_run, async {
            if emergency {
                t.kube.version().await?;
                return Ok(Did::Acted(format!(
                    "emergency: {} unreachable; {} reachable, received {}, replayed {}",
                    s.name,
                    t.name,
                    t_status.receive_lsn.map_or("-".into(), |l| l.to_string()),
                    t_status.replay_lsn.map_or("-".into(), |l| l.to_string())
                )));
            }
            s.kube.version().await?;
            t.kube.version().await?;
            if t_status.role == DbRole::Primary {
                return Ok(Did::Already(format!("{} is already the primary", t.name)));
            }
            let s_status = s_status.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
            if s_status.role != DbRole::Primary {
                bail!("neither region is a primary ({}: {}, {}: {}): nothing to switch over", s.name, s_status.role, t.name, t_status.role);
            }
            let receiving = t_status.wal_receiver.as_ref().map(|w| w.status.clone()).unwrap_or_else(|| "none".into());
            if receiving != "streaming" {
                bail!("the standby in {} is not streaming (receiver: {receiving}); fix replication first (drdctl status)", t.name);
            }
            let lag = match (s_status.current_lsn, t_status.replay_lsn) {
                (Some(c), Some(r)) => c.bytes_since(r),
                _ => 0,
            };
            if lag > self.lag_bound_bytes {
                bail!("the standby in {} is {lag} bytes behind (bound {}); wait for it to catch up", t.name, self.lag_bound_bytes);
            }
            Ok(Did::Acted(format!("both regions reachable; {} streaming, {lag} bytes behind", t.name)))
        })
        .await?;

        // The target region already is the active one (a re-run, or a failover to the region
        // that is active): nothing it was deployed with needs rolling.
        let settled = t_status.role == DbRole::Primary;

        // 2 and 3, at once: warm the target's application while the source is fenced.
        let warm = async {
            // The HPA floors first: a standby floor would scale the active region back down.
            if !dry_run {
                futures_util::future::try_join_all(
                    app.deployments
                        .iter()
                        .map(|d| t.kube.set_hpa_min(d, app.active_replicas)),
                )
                .await?;
            }
            // The active role and its restart, then the scale-up: the new pods of the restart
            // and of the scale-up start together (maxSurge), instead of a scale-up followed by
            // a restart that replaces every pod again, one at a time. All of it while the
            // source is fenced, so the restart overlaps the fence, the replay and the promotion
            // (activate-target-app waits for what is left of it).
            let rolled = roll_app_to_role(&t.kube, app, "active", dry_run, settled).await?;
            let scaled =
                futures_util::future::try_join_all(app.deployments.iter().map(|d| async move {
                    let r = t.kube.rollout(RolloutKind::Deployment, d).await?;
                    if r.desired >= app.active_replicas {
                        return anyhow::Ok(None);
                    }
                    if !dry_run {
                        t.kube
                            .scale(RolloutKind::Deployment, d, app.active_replicas)
                            .await?;
                    }
                    Ok(Some(format!("{d} {}->{}", r.desired, app.active_replicas)))
                }))
                .await?;
            let scaled: Vec<String> = scaled.into_iter().flatten().collect();
            Ok(if scaled.is_empty() && rolled.is_empty() {
                Did::Already(format!(
                    "{} app active at {} replicas",
                    t.name, app.active_replicas
                ))
            } else {
                let mut did = scaled;
                did.extend(rolled);
                Did::Acted(verb(&format!("warm {}: {}", t.name, did.join(", "))))
            })
        };
        // 3. Fence the source: no new writes (database read-only, then the app to 0).
        let fence_started = Instant::now();
        let fence = async {
            if emergency {
                return Ok(Did::Skipped(format!(
                    "{} unreachable: its fencing is deferred to the end",
                    s.name
                )));
            }
            if t_status.role == DbRole::Primary {
                return Ok(Did::Already(format!("{} already promoted", t.name)));
            }
            // The database first: read-only is the fence that matters (it holds whatever the
            // app does), and the app keeps serving (acknowledged writes reach DR) until it
            // holds. If it cannot be fenced the app is left alone: nothing stops half-way.
            // Then the app to 0 (its writes already fail).
            let db_did = if dry_run {
                let fenced = s.db.status().await?.fenced;
                (!fenced).then(|| "database read-only".to_string())
            } else {
                let out = s.db.fence().await?;
                (!out.already_fenced).then(|| "database read-only".to_string())
            };
            let app_did =
                futures_util::future::try_join_all(app.deployments.iter().map(|d| async move {
                    let r = s.kube.rollout(RolloutKind::Deployment, d).await?;
                    if r.desired == 0 {
                        return anyhow::Ok(None);
                    }
                    if !dry_run {
                        s.kube.scale(RolloutKind::Deployment, d, 0).await?;
                    }
                    Ok(Some(format!("{d} to 0")))
                }))
                .await
                .with_context(|| {
                    format!(
                        "the database of {} is fenced (read-only); scaling its app to 0 failed",
                        s.name
                    )
                })?;
            let did: Vec<String> = app_did.into_iter().flatten().chain(db_did).collect();
            Ok(if did.is_empty() {
                Did::Already("source fenced".into())
            } else {
                Did::Acted(verb(&format!("fence {}: {}", s.name, did.join(", "))))
            })
        };
        steps_together(
            journal,
            dry_run,
            ("warm-target-app", warm),
            ("fence-source", fence),
        )
        .await?;
        if dry_run {
            println!("  (the remaining steps depend on the fence; nothing was changed)");
            return Ok(ev);
        }

        // 4. Wait until the target replayed everything the source wrote.
        step(journal, "wait-replay", dry_run, async {
            if emergency {
                return Ok(Did::Skipped(format!(
                    "{} unreachable: its final position is unknown; {} promotes with what it replayed",
                    s.name, t.name
                )));
            }
            let t_now = t.db.status().await?;
            if t_now.role == DbRole::Primary {
                return Ok(Did::Already(format!("{} already promoted", t.name)));
            }
            let final_lsn: Lsn =
                s.db.status()
                    .await?
                    .current_lsn
                    .context("the source reports no WAL position")?;
            let replayed =
                t.db.wait_replayed(final_lsn, Duration::from_secs(120))
                    .await?;
            Ok(Did::Acted(format!(
                "{} replayed {replayed} (source final {final_lsn})",
                t.name
            )))
        })
        .await?;
        // (Not in an emergency: the source does not answer, and asking would wait for the
        // connect timeout on the write-unavailability path.)
        let statuses = async {
            if emergency {
                return None;
            }
            match tokio::join!(s.db.status(), t.db.status()) {
                (Ok(sn), Ok(tn)) => Some((sn, tn)),
                _ => None,
            }
        };
        if let Some((sn, tn)) = statuses.await {
            if let (Some(f), Some(r)) = (sn.current_lsn, tn.position()) {
                ev.source_final_lsn = Some(f.to_string());
                ev.target_replayed_lsn = Some(r.to_string());
                ev.lost_bytes = Some(f.bytes_since(r));
            }
        }

        // 5. Promote the target (once: a primary is left alone) and make that its desired role.
        step(journal, "promote-target", dry_run, async {
            let out = t.db.promote(Duration::from_secs(60)).await?;
            t.db.set_desired_role(&DesiredRole::Primary).await?;
            Ok(if out.already_primary {
                Did::Already(format!(
                    "{} is the primary (timeline {})",
                    t.name, out.timeline_after
                ))
            } else {
                Did::Acted(format!(
                    "promoted {}: timeline {} -> {}",
                    t.name, out.timeline_before, out.timeline_after
                ))
            })
        })
        .await?;

        // 6. The target's app becomes the active one.
        // Rolled to the active role by warm-target-app (again here if that was undone since).
        step(journal, "activate-target-app", dry_run, async {
            let did = roll_app_to_role(&t.kube, app, "active", false, settled).await?;
            wait_rolled_out(&t.kube, &app.deployments, Duration::from_secs(300)).await?;
            Ok(if did.is_empty() {
                Did::Already(format!("{} app active and ready", t.name))
            } else {
                Did::Acted(format!("{} app: {}; ready", t.name, did.join(", ")))
            })
        })
        .await?;

        // 7. DNS to the target, confirmed on the authoritative name servers.
        if let Some(dns) = &self.dns {
            step(journal, "switch-dns", dry_run, async {
                let report = dns
                    .switch(
                        &t.name,
                        &drd_dns::SwitchOptions {
                            plan: false,
                            ttl: None,
                            confirm: true,
                        },
                    )
                    .await?;
                ev.dns_old_ttl_secs = Some(report.old_value_cached_for_secs);
                Ok(Did::Acted(
                    format!("{}", report)
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                ))
            })
            .await?;
        }
        ev.write_unavailability_secs = Some(fence_started.elapsed().as_secs_f64());

        // 8. The source can never take writes again: its app is standby, and its database
        // either stops or (rejoin) becomes a standby of the target.
        let deferred = |e: anyhow::Error| {
            Did::Deferred(format!(
                "{} unreachable ({e:#}); re-run the same command when it is back: it fences it then",
                s.name
            ))
        };
        step(journal, "demote-source-app", dry_run, async {
            match app_role(&s.kube, &app.configmap).await {
                Ok(_) => {}
                Err(e) if emergency => return Ok(deferred(e)),
                Err(e) => return Err(e),
            }
            // Role and pods alike (the source's app is at 0 replicas by now, so the restart
            // only marks the template; pods started later read the standby role).
            let did = roll_app_to_role(&s.kube, app, "standby", false, settled).await?;
            Ok(if did.is_empty() {
                Did::Already(format!("{} app role standby", s.name))
            } else {
                Did::Acted(format!("{} app: {}", s.name, did.join(", ")))
            })
        })
        .await?;
        if self.rejoin_source {
            step(journal, "rejoin-source", dry_run, async {
                let out = s.db.rejoin(&drd_db::RejoinOptions::default()).await?;
                Ok(Did::Acted(describe_rejoin(&out)))
            })
            .await?;
            step(journal, "restore-source-app", dry_run, async {
                let mut scaled = Vec::new();
                for d in &app.deployments {
                    s.kube.set_hpa_min(d, app.standby_replicas.max(1)).await?;
                    let r = s.kube.rollout(RolloutKind::Deployment, d).await?;
                    if r.desired != app.standby_replicas {
                        s.kube
                            .scale(RolloutKind::Deployment, d, app.standby_replicas)
                            .await?;
                        scaled.push(format!("{d} {}->{}", r.desired, app.standby_replicas));
                    }
                }
                // The standby region must be ready to take over again, not just scaled.
                wait_rolled_out(&s.kube, &app.deployments, Duration::from_secs(300)).await?;
                Ok(if scaled.is_empty() {
                    Did::Already(format!(
                        "{} app at {} replicas",
                        s.name, app.standby_replicas
                    ))
                } else {
                    Did::Acted(format!("{}: {}", s.name, scaled.join(", ")))
                })
            })
            .await?;
        } else {
            step(journal, "stop-source-db", dry_run, async {
                let r = match s.kube.rollout(RolloutKind::StatefulSet, "postgresql").await {
                    Ok(r) => r,
                    Err(e) if emergency => return Ok(deferred(e.into())),
                    Err(e) => return Err(e.into()),
                };
                if r.desired == 0 {
                    return Ok(Did::Already(format!("{} database stopped", s.name)));
                }
                // A standby cannot take writes: nothing to stop (a failover to the region that
                // is already active leaves the other region's standby running).
                if let Ok(st) = s.db.status().await {
                    if st.role != DbRole::Primary {
                        return Ok(Did::Already(format!(
                            "{} database is a {}: it cannot take writes",
                            s.name, st.role
                        )));
                    }
                }
                s.kube
                    .scale(RolloutKind::StatefulSet, "postgresql", 0)
                    .await?;
                Ok(Did::Acted(format!(
                    "{} database stopped (statefulset/postgresql to 0)",
                    s.name
                )))
            })
            .await?;
        }
        Ok(ev)
    }
}

/// Failback's first step: the former primary region's database back as a standby of `of`
/// (start.sh rewinds it, or clones when rewind is impossible), caught up.
pub async fn rejoin_as_standby(
    journal: &mut Journal,
    config: &Config,
    side: &Side,
) -> anyhow::Result<()> {
    step(journal, "rejoin-old-primary", false, async {
        if let Ok(st) = side.db.status().await {
            if st.role == DbRole::Standby
                && st.wal_receiver.as_ref().is_some_and(|w| w.status == "streaming")
            {
                return Ok(Did::Already(format!("{} is a streaming standby", side.name)));
            }
        }
        let sts = side.kube.rollout(RolloutKind::StatefulSet, "postgresql").await?;
        if sts.desired == 0 {
            // Stopped by the failover: its desired role becomes standby of the peer first, so
            // the pod starts as a standby (start.sh rewinds), never as a second primary.
            let cm = side
                .kube
                .configmap("postgresql-role")
                .await?
                .context("configmap/postgresql-role is missing")?;
            let host = cm.get("peer_host").cloned().unwrap_or_default();
            let port = cm.get("peer_port").and_then(|p| p.parse().ok()).unwrap_or(5432);
            if host.is_empty() {
                bail!("configmap/postgresql-role in {} has no peer_host: cannot tell whom to follow", side.name);
            }
            side.db
                .set_desired_role(&DesiredRole::Standby { primary_host: host, primary_port: port })
                .await?;
            side.kube.scale(RolloutKind::StatefulSet, "postgresql", 1).await?;
            let deadline = Instant::now() + Duration::from_secs(600);
            loop {
                if let Ok(st) = side.db.status().await {
                    if st.role == DbRole::Standby && st.wal_receiver.as_ref().is_some_and(|w| w.status == "streaming") {
                        break;
                    }
                }
                if Instant::now() > deadline {
                    bail!("{}'s database did not come back as a streaming standby within 600s (kubectl --context {} logs postgresql-0)", side.name, side.kube.target().context);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            return Ok(Did::Acted(format!("{} restarted as a standby (start.sh rewound or cloned it; see its log) and streams", side.name)));
        }
        let out = side.db.rejoin(&drd_db::RejoinOptions::default()).await?;
        let _ = config;
        Ok(Did::Acted(describe_rejoin(&out)))
    })
    .await
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

/// The two regions' handles, `to` being the target.
pub async fn sides(config: &Config, to: &str) -> anyhow::Result<(Side, Side)> {
    let from = if to == "dr" { "primary" } else { "dr" };
    let mk = |name: &str| {
        let name = name.to_string();
        async move {
            let kube = KubeCluster::connect(config.kube_target(&name)).await?;
            let db = crate::commands::db::database(config, &name, &kube);
            Ok::<_, anyhow::Error>(Side { name, kube, db })
        }
    };
    Ok((mk(from).await?, mk(to).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each step waits for the other to have started: only a concurrent run finishes.
    #[tokio::test]
    async fn steps_together_run_at_once_and_both_are_journaled() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path(), "failover", "dr", None).unwrap();
        let (a_started, a_seen) = tokio::sync::oneshot::channel::<()>();
        let (b_started, b_seen) = tokio::sync::oneshot::channel::<()>();
        let a = async {
            a_started.send(()).unwrap();
            b_seen.await.unwrap();
            Ok(Did::Acted("a".into()))
        };
        let b = async {
            b_started.send(()).unwrap();
            a_seen.await.unwrap();
            Ok(Did::Already("b".into()))
        };
        tokio::time::timeout(
            Duration::from_secs(10),
            steps_together(&mut journal, false, ("warm", a), ("fence", b)),
        )
        .await
        .expect("the two steps ran one after the other")
        .unwrap();
        let states: Vec<(&str, StepState)> = journal
            .run
            .steps
            .iter()
            .map(|s| (s.name.as_str(), s.state))
            .collect();
        assert_eq!(
            states,
            [("warm", StepState::Done), ("fence", StepState::AlreadyDone)]
        );
    }

    #[tokio::test]
    async fn when_one_of_two_fails_the_other_is_still_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path(), "failover", "dr", None).unwrap();
        let err = steps_together(
            &mut journal,
            false,
            ("warm", async { anyhow::bail!("no capacity") }),
            ("fence", async { Ok(Did::Acted("fenced".into())) }),
        )
        .await
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("step warm: no capacity"),
            "{err:#}"
        );
        assert_eq!(journal.run.steps[0].state, StepState::Failed);
        assert_eq!(journal.run.steps[1].state, StepState::Done);
        assert!(journal.is_done("fence") && !journal.is_done("warm"));
    }
}
