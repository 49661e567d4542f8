//! The failover / failback engine: observe → decide → act.
//!
//! - [`plan`]: pure. A [`plan::Snapshot`] of both regions, the closed set of
//!   [`plan::Step`]s, and each step's [`plan::Decision`] over the snapshot: already so, the
//!   exact [`plan::Change`]s, skipped, deferred, or refused. `--plan` prints this; a run does
//!   exactly this.
//! - [`run`]: the async shell: [`run::observe`] through the ports, [`run::execute`] a plan's
//!   changes with every step boundary journaled.
//! - [`ports`]: the object-safe traits it talks to (clusters, databases, DNS, the lock, the
//!   journal's storage, the clock, crash hooks), one real implementation each; the simulation
//!   tests (`cli/tests/sim`) put an in-memory world behind them.
//! - [`journal`], [`lock`]: the record of a run, and the local lock file.
//!
//! [`drive`] is the whole command: unfinished run? → observe → plan → refuse / nothing to do /
//! confirm → lock → observe again (the state may have moved while the operator read the plan) →
//! execute → release. Planned switchover, emergency failover, failback and resumption are the
//! same code: the decisions come from the live state, so a re-run converges.

pub mod journal;
pub mod lock;
pub mod plan;
pub mod ports;
pub mod run;

use std::sync::atomic::AtomicBool;

use serde::Serialize;

use journal::{Journal, Run, StepState};
use plan::{Intent, Plan, Snapshot};
use ports::{Ports, Taken};

/// How a command ended, mapped to an exit code by [`crate::exit`].
#[derive(Debug, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// `--plan`: shown, nothing changed.
    Planned { plan: Plan },
    /// Every step already so: nothing changed.
    NothingToDo { plan: Plan },
    /// Refused before changing anything.
    Refused { why: String },
    /// The operator did not confirm: nothing changed.
    NotConfirmed,
    /// Done (possibly with deferred steps).
    Done {
        run: Run,
        evidence: run::Evidence,
        deferred: Vec<String>,
    },
    /// Stopped midway (a step failed, or interrupted): resume with the same command, or
    /// `drdctl abandon`.
    Stopped {
        run: Run,
        why: String,
        interrupted: bool,
    },
    /// Stopped before anything changed (a failing first action, or interrupted before it).
    FailedUnchanged { why: String, interrupted: bool },
}

/// What the engine asks of the operator's terminal (or of a test).
pub trait Operator: Send + Sync {
    /// Show the plan (and, when resuming, what the earlier run did) and ask for confirmation.
    fn confirm(&self, plan: &Plan, snapshot: &Snapshot, resuming: Option<&Run>) -> bool;
    /// A progress line.
    fn say(&self, line: &str);
    /// A step starts (`what`: the plan's one-line summary of it).
    fn step_started(&self, _step: plan::Step, _what: &str) {}
    /// News from inside a long step (replay position, rollout state).
    fn step_progress(&self, _step: plan::Step, _detail: &str) {}
    /// A step ended; `line` is its one-line outcome.
    fn step_ended(&self, _step: plan::Step, line: &str) {
        self.say(line)
    }
}

/// The options of one command.
pub struct Options {
    /// Only print the plan.
    pub plan_only: bool,
    /// `user@host pid=N`, without the run id (added here).
    pub who: String,
    /// This host's name, to tell a dead local holder of the lock.
    pub host: String,
}

/// The lock holder string: `user@host pid=N run=ID`.
pub fn holder(who: &str, run_id: &str) -> String {
    format!("{who} run={run_id}")
}

fn run_id_of(holder: &str) -> Option<&str> {
    holder.split(" run=").nth(1)
}

fn pid_of(holder: &str) -> Option<(String, u32)> {
    let (user_host, rest) = holder.split_once(" pid=")?;
    let host = user_host.split_once('@')?.1.to_string();
    let pid = rest.split_whitespace().next()?.parse().ok()?;
    Some((host, pid))
}

/// The whole command (see the module docs).
pub async fn drive(
    ports: &Ports,
    intent: &Intent,
    opts: &Options,
    operator: &dyn Operator,
    interrupted: &AtomicBool,
) -> anyhow::Result<Outcome> {
    // 1. An unfinished run: the same command resumes it; a different one is refused. A run
    // that changed nothing is not worth resuming: it is forgotten.
    let mut resume = ports.journal.load()?.filter(|r| r.unfinished());
    if let Some(r) = &resume {
        if !r.changed_anything() {
            resume = None;
        } else if r.kind != intent.kind || r.to != intent.to {
            return Ok(Outcome::Refused {
                why: format!(
                    "an unfinished {} to {} ({}, started {}, done: {}) is recorded in {}: resume it with `{}`, or see the state and abandon it with `drdctl abandon`",
                    r.kind.name(),
                    r.to,
                    r.id,
                    r.started.format("%Y-%m-%d %H:%M:%SZ"),
                    r.done().join(", "),
                    ports.journal.describe(),
                    r.command()
                ),
            });
        }
    }

    // 2. Observe and decide.
    let snapshot = run::observe(ports).await;
    let planned = plan::plan(&snapshot, intent);
    if opts.plan_only {
        return Ok(Outcome::Planned { plan: planned });
    }
    if let Some(why) = planned.refusal() {
        return Ok(Outcome::Refused {
            why: why.to_string(),
        });
    }
    if planned.nothing_to_do() {
        if let Some(r) = resume {
            let mut j = Journal::new(ports.journal.clone(), r)?;
            j.finish(true, ports.clock.now())?;
        }
        return Ok(Outcome::NothingToDo { plan: planned });
    }

    // 3. The operator confirms what they see (a resume too), before anything is held.
    if !operator.confirm(&planned, &snapshot, resume.as_ref()) {
        return Ok(Outcome::NotConfirmed);
    }

    // 4. The lock: one run at a time, whoever runs it. A holder that is a dead process of
    // this machine, or the very run being resumed, is taken over.
    let run_id = resume.as_ref().map(|r| r.id.clone()).unwrap_or_else(|| {
        format!(
            "{}-{}",
            intent.kind.name(),
            ports.clock.now().format("%Y%m%dT%H%M%S%.3fZ")
        )
    });
    let me = holder(&opts.who, &run_id);
    let host = opts.host.clone();
    let resumed_id = resume.as_ref().map(|r| r.id.clone());
    let stale = move |h: &str| {
        if resumed_id.is_some() && run_id_of(h) == resumed_id.as_deref() {
            return true;
        }
        matches!(pid_of(h), Some((hh, pid)) if hh == host && !pid_alive(pid))
    };
    match ports.lock.acquire(&me, &stale).await? {
        Taken::Held {
            holder,
            expires_in_secs,
        } => {
            return Ok(Outcome::Refused {
                why: format!(
                    "another run holds the switchover lock: {holder} (it lapses in {expires_in_secs}s unless renewed); wait for it to finish, then run `drdctl status`. If that run is gone for good and its machine with it: kubectl --context <dr context> delete lease drdctl-switchover"
                ),
            })
        }
        Taken::TookOver { previous } => {
            operator.say(&format!(
                "note: took over the switchover lock from {previous} (gone or lapsed)"
            ))
        }
        Taken::Free | Taken::Renewed => {}
    }

    // 5. Observe again: the state may have moved while the operator read the plan.
    let snapshot2 = run::observe(ports).await;
    let planned2 = plan::plan(&snapshot2, intent);
    if planned2.refusal().is_some() || planned2.acting() != planned.acting() {
        let _ = ports.lock.release(&me).await;
        return Ok(Outcome::Refused {
            why: match planned2.refusal() {
                Some(r) => format!("the state changed since the plan was shown: {r}"),
                None => "the state changed since the plan was shown (another operator?): run the command again to see the new plan".into(),
            },
        });
    }

    // 6. Run it.
    let run = match resume {
        Some(r) => r,
        None => Run::new(
            run_id,
            intent.kind,
            intent.to,
            me.clone(),
            ports.clock.now(),
        ),
    };
    let mut journal = Journal::new(
        ports.journal.clone(),
        Run {
            holder: me.clone(),
            ..run
        },
    )?;
    let fresh = !journal.run.changed_anything();
    let result = run::execute(ports, &planned2, &mut journal, interrupted, operator).await;
    let released = ports.lock.release(&me).await;
    if let Err(e) = released {
        operator.say(&format!(
            "warning: could not release the switchover lock ({e:#}); it lapses by itself"
        ));
    }
    match result {
        Ok(evidence) => {
            journal.finish(true, ports.clock.now())?;
            let deferred = journal
                .run
                .steps
                .iter()
                .filter(|s| s.state == StepState::Deferred)
                .map(|s| s.name.clone())
                .collect();
            Ok(Outcome::Done {
                run: journal.run,
                evidence,
                deferred,
            })
        }
        Err(stopped) => {
            let interrupted = matches!(stopped, run::Stopped::Interrupted { .. });
            let why = stopped.to_string();
            if fresh && !journal.run.changed_anything() {
                // Nothing changed: no journal to resume.
                journal.run.abandoned = true;
                journal.finish(false, ports.clock.now())?;
                return Ok(Outcome::FailedUnchanged { why, interrupted });
            }
            Ok(Outcome::Stopped {
                run: journal.run,
                why,
                interrupted,
            })
        }
    }
}

/// Whether a process of this machine runs (a zombie does not: when `lab drill` started the
/// lab, the exited lab process stays a zombie child of the drill until it is reaped).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// `drdctl abandon`: the unfinished run is closed as abandoned (the state is left as it is:
/// the next failover or failback decides from it).
pub fn abandon(ports: &Ports) -> anyhow::Result<Option<Run>> {
    let Some(run) = ports.journal.load()?.filter(|r| r.unfinished()) else {
        return Ok(None);
    };
    let mut j = Journal::new(ports.journal.clone(), run)?;
    j.run.abandoned = true;
    j.finish(false, ports.clock.now())?;
    Ok(Some(j.run))
}
