//! The engine as data: what both regions look like ([`Snapshot`]), the closed set of steps
//! ([`Step`]), and for each step a pure decision over a snapshot ([`decide`]): already so,
//! the exact changes it would make, skipped, deferred, or refused (and why).
//!
//! A plan ([`plan`]) is built by deciding each step in order over the observed snapshot and
//! applying the expected effect of its changes to a copy ([`project`]), so `--plan` shows every
//! step of the run, not only the first. A run executes exactly the changes of its plan: a step
//! shown "already so" changes nothing.

use serde::Serialize;

use crate::cli::Region;

/// Primary or standby, as PostgreSQL reports it.
pub use drd_db::DbRole;

/// One region's database, as observed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DbView {
    /// Answering.
    Up {
        role: DbRole,
        /// New sessions are read-only (drdctl's fence).
        fenced: bool,
        timeline: u32,
        /// Primary: its current WAL position; standby: what it replayed.
        lsn: u64,
        /// Standby: what it received (`None` on a primary).
        received: Option<u64>,
        /// Standby: the WAL receiver streams.
        streaming: bool,
    },
    /// StatefulSet `postgresql` scaled to 0 (stopped on purpose).
    Stopped,
    /// Not answering (region cut off, pod down, ...).
    Unreachable { reason: String },
}

impl DbView {
    pub fn writable(&self) -> bool {
        matches!(
            self,
            DbView::Up {
                role: DbRole::Primary,
                fenced: false,
                ..
            }
        )
    }
    pub fn is_primary(&self) -> bool {
        matches!(
            self,
            DbView::Up {
                role: DbRole::Primary,
                ..
            }
        )
    }
    pub fn streaming_standby(&self) -> bool {
        matches!(
            self,
            DbView::Up {
                role: DbRole::Standby,
                streaming: true,
                ..
            }
        )
    }
    pub fn lsn(&self) -> Option<u64> {
        match self {
            DbView::Up { lsn, .. } => Some(*lsn),
            _ => None,
        }
    }
    pub fn describe(&self) -> String {
        match self {
            DbView::Up {
                role,
                fenced,
                timeline,
                lsn,
                streaming,
                ..
            } => {
                let extra = match (role, fenced, streaming) {
                    (DbRole::Primary, true, _) => ", fenced read-only",
                    (DbRole::Primary, false, _) => ", writable",
                    (DbRole::Standby, _, true) => ", streaming",
                    (DbRole::Standby, _, false) => ", not streaming",
                };
                format!(
                    "{role} on timeline {timeline} at {}{extra}",
                    drd_db::Lsn(*lsn)
                )
            }
            DbView::Stopped => "stopped (statefulset/postgresql at 0)".into(),
            DbView::Unreachable { reason } => format!("unreachable ({reason})"),
        }
    }
}

/// One deployment of the application.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeploymentView {
    pub name: String,
    pub desired: i32,
    /// Its rollout is complete (every replica updated, ready and available).
    pub rolled_out: bool,
    /// The role its pods were last restarted for ([`ROLE_MARK`]); `None`: never by drdctl.
    pub mark: Option<String>,
}

/// One region, as observed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegionView {
    pub region: Region,
    /// Why the region's Kubernetes API did not answer, if it did not.
    pub api_error: Option<String>,
    pub db: DbView,
    /// `postgresql-role` ConfigMap: the role its database pod starts as (`role`, else the
    /// overlay's `initial_role`).
    pub db_desired: Option<String>,
    /// `app-config` ConfigMap `role`: active or standby.
    pub app_role: Option<String>,
    pub deployments: Vec<DeploymentView>,
    /// Standby: seconds since the last transaction it replayed was committed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay_age: Option<f64>,
}

impl RegionView {
    pub fn reachable(&self) -> bool {
        self.api_error.is_none() && !matches!(self.db, DbView::Unreachable { .. })
    }
}

/// The DNS record, as observed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DnsView {
    /// The region it points at (`None`: no configured region's value, or unreadable).
    pub points_to: Option<Region>,
    pub ttl: Option<u32>,
    pub error: Option<String>,
}

/// The witness term, as observed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TermView {
    /// The region it names (`None`: never written, or unreadable).
    pub holder: Option<Region>,
    /// Its number (0: never written).
    pub n: u64,
    pub error: Option<String>,
}

/// Both regions, the DNS record and the witness term at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub primary: RegionView,
    pub dr: RegionView,
    /// `None`: DNS is not configured.
    pub dns: Option<DnsView>,
    /// `None`: no witness is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub term: Option<TermView>,
}

impl Snapshot {
    pub fn region(&self, r: Region) -> &RegionView {
        match r {
            Region::Primary => &self.primary,
            Region::Dr => &self.dr,
        }
    }
    pub fn region_mut(&mut self, r: Region) -> &mut RegionView {
        match r {
            Region::Primary => &mut self.primary,
            Region::Dr => &mut self.dr,
        }
    }
    pub fn split_brain(&self) -> bool {
        self.primary.db.writable() && self.dr.db.writable()
    }
    /// The region every observer agrees is active, or why there is none.
    pub fn active(&self) -> Active {
        if self.split_brain() {
            return Active::SplitBrain;
        }
        let db = [Region::Primary, Region::Dr]
            .into_iter()
            .find(|r| self.region(*r).db.writable());
        let apps: Vec<Region> = [Region::Primary, Region::Dr]
            .into_iter()
            .filter(|r| self.region(*r).app_role.as_deref() == Some("active"))
            .collect();
        // An unreadable record (no Azure login) is no vote either way.
        let dns = self
            .dns
            .as_ref()
            .filter(|d| d.error.is_none())
            .map(|d| d.points_to);
        match db {
            Some(r) if apps == [r] && dns.is_none_or(|d| d == Some(r)) => Active::Agreed(r),
            Some(r) => Active::Disagree {
                database: Some(r),
                apps,
                dns: dns.flatten(),
            },
            None => Active::Unknown,
        }
    }
}

/// Who is active, as [`Snapshot::active`] sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Active {
    /// Database, application roles and DNS all name this region.
    Agreed(Region),
    /// One writable database, but the app roles or DNS name something else (a run stopped
    /// midway, or a hand edit).
    Disagree {
        database: Option<Region>,
        apps: Vec<Region>,
        dns: Option<Region>,
    },
    /// Two writable databases.
    SplitBrain,
    /// No writable database (or none reachable).
    Unknown,
}

/// What the operator asked for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Intent {
    pub kind: RunKind,
    /// The region to make active.
    pub to: Region,
    /// Rejoin the old primary as a standby instead of stopping it (always for failback).
    pub rejoin: bool,
    /// Go ahead although the source is unreachable (emergency: may lose writes).
    pub allow_data_loss: bool,
    /// With two writable databases: the region whose writes since the fork are discarded.
    pub discard_writes_of: Option<Region>,
    /// Refuse a planned switchover while the standby is further behind than this.
    pub lag_bound_bytes: u64,
    pub active_replicas: i32,
    pub standby_replicas: i32,
    pub deployments: Vec<String>,
    /// Emergency: refuse when the target's last replayed commit is older than this
    /// (`None`: no bound; `--allow-stale-standby`).
    pub max_replay_age_secs: Option<u64>,
    /// Emergency with a witness: how long to wait after moving the term before promoting
    /// (`W` of the lease math, docs/witness.md).
    pub lease_wait_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    Failover,
    Failback,
}

impl RunKind {
    pub fn name(self) -> &'static str {
        match self {
            RunKind::Failover => "failover",
            RunKind::Failback => "failback",
        }
    }
}

impl Intent {
    pub fn from(&self) -> Region {
        self.to.other()
    }
}

/// The closed set of steps, in run order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    Preflight,
    RejoinOldPrimary,
    WarmTargetApp,
    FenceSource,
    WaitReplay,
    MoveTerm,
    PromoteTarget,
    ActivateTargetApp,
    SwitchDns,
    DemoteSourceApp,
    StopSourceDb,
    RejoinSource,
    RestoreSourceApp,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Preflight => "preflight",
            Step::RejoinOldPrimary => "rejoin-old-primary",
            Step::WarmTargetApp => "warm-target-app",
            Step::FenceSource => "fence-source",
            Step::WaitReplay => "wait-replay",
            Step::MoveTerm => "move-term",
            Step::PromoteTarget => "promote-target",
            Step::ActivateTargetApp => "activate-target-app",
            Step::SwitchDns => "switch-dns",
            Step::DemoteSourceApp => "demote-source-app",
            Step::StopSourceDb => "stop-source-db",
            Step::RejoinSource => "rejoin-source",
            Step::RestoreSourceApp => "restore-source-app",
        }
    }

    /// The steps of a run, in order (warm and fence run together).
    pub fn sequence(intent: &Intent, dns: bool, witness: bool) -> Vec<Step> {
        let mut v = vec![Step::Preflight];
        if intent.kind == RunKind::Failback {
            v.push(Step::RejoinOldPrimary);
        }
        v.extend([Step::WarmTargetApp, Step::FenceSource, Step::WaitReplay]);
        if witness {
            v.push(Step::MoveTerm);
        }
        v.extend([Step::PromoteTarget, Step::ActivateTargetApp]);
        if dns {
            v.push(Step::SwitchDns);
        }
        v.push(Step::DemoteSourceApp);
        if intent.rejoin {
            v.extend([Step::RejoinSource, Step::RestoreSourceApp]);
        } else {
            v.push(Step::StopSourceDb);
        }
        v
    }
}

/// The database role a region's pod starts as (`postgresql-role` ConfigMap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DesiredDb {
    Primary,
    /// A standby of the other region.
    Standby,
    /// Never starts writable again (start.sh refuses) until a failback rejoins it.
    Fenced,
}

impl DesiredDb {
    pub fn name(self) -> &'static str {
        match self {
            DesiredDb::Primary => "primary",
            DesiredDb::Standby => "standby",
            DesiredDb::Fenced => "fenced",
        }
    }
}

/// One primitive change: the vocabulary of every plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    SetAppRole {
        region: Region,
        role: String,
    },
    RestartApp {
        region: Region,
        deployment: String,
        role: String,
    },
    ScaleApp {
        region: Region,
        deployment: String,
        from: i32,
        to: i32,
    },
    SetHpaFloor {
        region: Region,
        min: i32,
    },
    FenceDb {
        region: Region,
    },
    /// Lifts drdctl's fence from a primary (a run abandoned after the fence, then turned back).
    UnfenceDb {
        region: Region,
    },
    WaitReplay {
        region: Region,
        of: Region,
    },
    Promote {
        region: Region,
    },
    SetDesiredDb {
        region: Region,
        role: DesiredDb,
    },
    WaitAppReady {
        region: Region,
    },
    SwitchDns {
        to: Region,
    },
    StopDb {
        region: Region,
    },
    RejoinDb {
        region: Region,
        follow: Region,
    },
    /// Emergency: the target's WAL receiver stops, so its guard stops vouching for the source.
    SealStandby {
        region: Region,
    },
    /// Compare-and-swap of the witness term to `(to, n)`.
    MoveTerm {
        to: Region,
        n: u64,
    },
    /// Emergency: wait until the source's guard has fenced it (or it could not have confirmed
    /// its term for longer than its lease), `ms` after the term moved.
    WaitLease {
        region: Region,
        ms: u64,
    },
}

impl Change {
    /// Whether it writes anything (waits only observe).
    pub fn mutates(&self) -> bool {
        !matches!(
            self,
            Change::WaitReplay { .. } | Change::WaitAppReady { .. } | Change::WaitLease { .. }
        )
    }
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::SetAppRole { region, role } => write!(f, "{region} app-config role -> {role}"),
            Change::RestartApp {
                region,
                deployment,
                role,
            } => write!(f, "{region} restart {deployment} for role {role}"),
            Change::ScaleApp {
                region,
                deployment,
                from,
                to,
            } => write!(f, "{region} scale {deployment} {from}->{to}"),
            Change::SetHpaFloor { region, min } => write!(f, "{region} HPA floors -> {min}"),
            Change::FenceDb { region } => write!(f, "{region} database read-only"),
            Change::UnfenceDb { region } => write!(f, "{region} database writable again"),
            Change::WaitReplay { region, of } => {
                write!(f, "wait until {region} replayed {of}'s final WAL")
            }
            Change::Promote { region } => write!(f, "promote {region}'s database"),
            Change::SetDesiredDb { region, role } => {
                write!(f, "{region} postgresql-role -> {}", role.name())
            }
            Change::WaitAppReady { region } => write!(f, "wait for {region}'s app to be ready"),
            Change::SwitchDns { to } => write!(f, "DNS record -> {to}"),
            Change::StopDb { region } => write!(f, "{region} statefulset/postgresql -> 0"),
            Change::RejoinDb { region, follow } => {
                write!(f, "{region} database rejoins as a standby of {follow}")
            }
            Change::SealStandby { region } => {
                write!(
                    f,
                    "{region} database stops following (sealed for promotion)"
                )
            }
            Change::MoveTerm { to, n } => write!(f, "witness term -> {to} (n={n})"),
            Change::WaitLease { region, ms } => write!(
                f,
                "wait {:.1} s: {region}'s guard fences it by then",
                *ms as f64 / 1000.0
            ),
        }
    }
}

/// What a step will do, decided from a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Nothing to change.
    Already { why: String },
    /// These changes, in order.
    Act { changes: Vec<Change>, why: String },
    /// Not applicable to this run.
    Skip { why: String },
    /// Cannot be done now (its region is unreachable); a later run of the same command does it.
    Defer { why: String },
    /// The run must not start.
    Refuse { why: String },
}

impl Decision {
    pub fn acts(&self) -> bool {
        matches!(self, Decision::Act { .. })
    }
}

/// Step and decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedStep {
    pub step: Step,
    #[serde(flatten)]
    pub decision: Decision,
}

/// A whole plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub intent: Intent,
    pub emergency: bool,
    pub steps: Vec<PlannedStep>,
}

impl Plan {
    pub fn refusal(&self) -> Option<&str> {
        self.steps.iter().find_map(|s| match &s.decision {
            Decision::Refuse { why } => Some(why.as_str()),
            _ => None,
        })
    }
    /// Nothing to change and nothing deferred: the command is a no-op.
    pub fn nothing_to_do(&self) -> bool {
        self.refusal().is_none()
            && self
                .steps
                .iter()
                .all(|s| matches!(s.decision, Decision::Already { .. } | Decision::Skip { .. }))
    }
    pub fn decision(&self, step: Step) -> Option<&Decision> {
        self.steps
            .iter()
            .find(|s| s.step == step)
            .map(|s| &s.decision)
    }
    /// The steps that change something, for summaries.
    pub fn acting(&self) -> Vec<Step> {
        self.steps
            .iter()
            .filter(|s| s.decision.acts())
            .map(|s| s.step)
            .collect()
    }
}

/// The plan the snapshot calls for.
pub fn plan(snapshot: &Snapshot, intent: &Intent) -> Plan {
    let mut s = snapshot.clone();
    let emergency = is_emergency(snapshot, intent);
    let mut steps = Vec::new();
    for step in Step::sequence(intent, snapshot.dns.is_some(), snapshot.term.is_some()) {
        let decision = decide(step, &s, intent, emergency);
        if let Decision::Act { changes, .. } = &decision {
            for c in changes {
                project(c, &mut s);
            }
        }
        let refused = matches!(decision, Decision::Refuse { .. });
        steps.push(PlannedStep { step, decision });
        if refused {
            break;
        }
    }
    Plan {
        intent: intent.clone(),
        emergency,
        steps,
    }
}

/// The source's database does not answer and the target is not yet the primary: an
/// emergency failover. (Its Kubernetes API alone failing is not an emergency: the database
/// decides who can take writes.)
pub fn is_emergency(s: &Snapshot, intent: &Intent) -> bool {
    let (src, tgt) = (s.region(intent.from()), s.region(intent.to));
    matches!(src.db, DbView::Unreachable { .. })
        && !tgt.db.is_primary()
        && intent.kind == RunKind::Failover
}

fn lsn(l: u64) -> String {
    drd_db::Lsn(l).to_string()
}

/// The pure decision of one step over a snapshot (see the module docs).
pub fn decide(step: Step, s: &Snapshot, intent: &Intent, emergency: bool) -> Decision {
    let (from, to) = (intent.from(), intent.to);
    let (src, tgt) = (s.region(from), s.region(to));
    let already = |why: String| Decision::Already { why };
    let act = |changes: Vec<Change>, why: String| {
        if changes.is_empty() {
            Decision::Already { why }
        } else {
            Decision::Act { changes, why }
        }
    };
    let target_settled = tgt.db.writable();
    match step {
        Step::Preflight => preflight(s, intent, emergency),
        Step::RejoinOldPrimary => {
            // Failback: `to` (the primary region) comes back as a standby of `from` (DR).
            // A writable target keeps its writes: it is active already, or (split brain, past
            // preflight) the operator named the other region's writes to discard.
            if tgt.db.writable() {
                return already(format!("{to} is a writable primary: its writes are kept"));
            }
            if tgt.db.streaming_standby() {
                return already(format!("{to} is a streaming standby of {from}"));
            }
            act(
                vec![Change::RejoinDb {
                    region: to,
                    follow: from,
                }],
                format!(
                    "{to}'s database is {}: it comes back as a standby of {from} first (pg_rewind, or a fresh clone when rewind is impossible)",
                    tgt.db.describe()
                ),
            )
        }
        Step::WarmTargetApp => {
            let mut changes = role_changes(tgt, intent, "active", target_settled);
            for d in &tgt.deployments {
                if d.desired < intent.active_replicas {
                    changes.push(Change::ScaleApp {
                        region: to,
                        deployment: d.name.clone(),
                        from: d.desired,
                        to: intent.active_replicas,
                    });
                }
            }
            if !changes.is_empty() {
                changes.insert(
                    0,
                    Change::SetHpaFloor {
                        region: to,
                        min: intent.active_replicas,
                    },
                );
                // Planned: the new pods start before the source is fenced, so no pod start is
                // inside the write outage (the app role is a label; the pods serve against a
                // standby as well). In an emergency the outage has begun: the app starts
                // together with the fence instead (execute runs the two steps at once).
                if !emergency {
                    changes.push(Change::WaitAppReady { region: to });
                }
            }
            act(
                changes,
                format!("{to}'s app active at {} replicas", intent.active_replicas),
            )
        }
        Step::FenceSource => {
            // (With two writable databases the source is fenced even though the target is
            // settled: preflight let the run through only with --discard-writes-of it.)
            if target_settled && !src.db.writable() {
                return already(format!("{to} is the primary; {from} takes no writes"));
            }
            if emergency {
                return Decision::Defer {
                    why: format!("{from} is unreachable: it is fenced when it returns (see `drdctl status`; if it comes back writable, run this command with --discard-writes-of {from})"),
                };
            }
            let mut changes = Vec::new();
            if src.db.writable() {
                changes.push(Change::FenceDb { region: from });
            }
            for d in &src.deployments {
                if d.desired > 0 {
                    changes.push(Change::ScaleApp {
                        region: from,
                        deployment: d.name.clone(),
                        from: d.desired,
                        to: 0,
                    });
                }
            }
            act(
                changes,
                format!("{from} fenced: database read-only, app at 0"),
            )
        }
        Step::WaitReplay => {
            if tgt.db.is_primary() {
                return already(format!("{to} is the primary"));
            }
            if emergency {
                return Decision::Skip {
                    why: format!(
                        "{from} unreachable: its final position is unknown; {to} promotes with what it replayed ({})",
                        tgt.db.lsn().map_or("-".into(), lsn)
                    ),
                };
            }
            act(
                vec![Change::WaitReplay {
                    region: to,
                    of: from,
                }],
                String::new(),
            )
        }
        Step::MoveTerm => move_term(s, intent, emergency),
        Step::PromoteTarget => {
            let mut changes = Vec::new();
            if !tgt.db.is_primary() {
                changes.push(Change::Promote { region: to });
            } else if !tgt.db.writable() && !src.db.writable() {
                changes.push(Change::UnfenceDb { region: to });
            }
            if tgt.db_desired.as_deref() != Some("primary") {
                changes.push(Change::SetDesiredDb {
                    region: to,
                    role: DesiredDb::Primary,
                });
            }
            act(changes, format!("{to} is the primary"))
        }
        Step::ActivateTargetApp => {
            let ready = tgt.deployments.iter().all(|d| d.rolled_out);
            if ready {
                already(format!("{to}'s app is ready"))
            } else {
                act(vec![Change::WaitAppReady { region: to }], String::new())
            }
        }
        Step::SwitchDns => match &s.dns {
            Some(d) if d.points_to == Some(to) => already(format!("the record points at {to}")),
            _ => act(vec![Change::SwitchDns { to }], String::new()),
        },
        Step::DemoteSourceApp => {
            if src.api_error.is_some() {
                return Decision::Defer {
                    why: format!("{from}'s Kubernetes API is unreachable: re-run the same command when it is back"),
                };
            }
            act(
                role_changes(src, intent, "standby", target_settled),
                format!("{from}'s app role is standby"),
            )
        }
        Step::StopSourceDb => {
            if src.api_error.is_some() {
                return Decision::Defer {
                    why: format!("{from} unreachable: its database is stopped when it returns (re-run the same command)"),
                };
            }
            match &src.db {
                DbView::Up {
                    role: DbRole::Standby,
                    ..
                } => already(format!(
                    "{from}'s database is a standby: it cannot take writes"
                )),
                DbView::Stopped => act(
                    desired_fenced(src, from),
                    format!("{from}'s database is stopped"),
                ),
                _ => {
                    let mut changes = desired_fenced(src, from);
                    changes.push(Change::StopDb { region: from });
                    act(changes, String::new())
                }
            }
        }
        Step::RejoinSource => {
            if src.db.streaming_standby() {
                return already(format!("{from} is a streaming standby"));
            }
            if !src.reachable() && !matches!(src.db, DbView::Stopped) {
                return Decision::Defer {
                    why: format!(
                        "{from} unreachable: it rejoins when it returns (re-run the same command)"
                    ),
                };
            }
            act(
                vec![Change::RejoinDb {
                    region: from,
                    follow: to,
                }],
                String::new(),
            )
        }
        Step::RestoreSourceApp => {
            if src.api_error.is_some() {
                return Decision::Defer {
                    why: format!("{from}'s Kubernetes API is unreachable"),
                };
            }
            let mut changes = Vec::new();
            for d in &src.deployments {
                if d.desired != intent.standby_replicas {
                    changes.push(Change::ScaleApp {
                        region: from,
                        deployment: d.name.clone(),
                        from: d.desired,
                        to: intent.standby_replicas,
                    });
                }
            }
            if !changes.is_empty() || src.deployments.iter().any(|d| !d.rolled_out) {
                changes.insert(
                    0,
                    Change::SetHpaFloor {
                        region: from,
                        min: intent.standby_replicas.max(1),
                    },
                );
                changes.push(Change::WaitAppReady { region: from });
            }
            act(
                changes,
                format!("{from}'s app at {} replicas", intent.standby_replicas),
            )
        }
    }
}

/// The witness term moves to the target before it is promoted. In an emergency the target is
/// sealed first (its guard stops vouching for the source), and after the move the run waits
/// `W`: by then the source's guard has fenced it, whether it saw the new term or could not
/// confirm the old one (docs/witness.md). A resumed emergency run that finds the term moved
/// but the target not promoted waits the whole `W` again: when the first wait began is not
/// known for sure.
fn move_term(s: &Snapshot, intent: &Intent, emergency: bool) -> Decision {
    let (from, to) = (intent.from(), intent.to);
    let tgt = s.region(to);
    let Some(term) = &s.term else {
        return Decision::Skip {
            why: "no witness configured".into(),
        };
    };
    if let Some(e) = &term.error {
        return Decision::Refuse {
            why: format!("the witness term cannot be read ({e}): a promotion without moving it would leave {from}'s guard serving"),
        };
    }
    let wait = Change::WaitLease {
        region: from,
        ms: intent.lease_wait_ms,
    };
    if term.holder == Some(to) {
        return if emergency && !tgt.db.is_primary() {
            Decision::Act {
                changes: vec![wait],
                why: format!(
                    "the term names {to} (n={}); {to} is not promoted yet",
                    term.n
                ),
            }
        } else {
            Decision::Already {
                why: format!("the term names {to} (n={})", term.n),
            }
        };
    }
    let mut changes = Vec::new();
    if emergency && tgt.db.streaming_standby() {
        changes.push(Change::SealStandby { region: to });
    }
    changes.push(Change::MoveTerm { to, n: term.n + 1 });
    if emergency {
        changes.push(wait);
    }
    Decision::Act {
        changes,
        why: if emergency {
            format!(
                "{from} is unreachable: the term moves to {to}, then {to} waits until {from}'s guard must have fenced it"
            )
        } else {
            format!("{from} is fenced: the term moves to {to}")
        },
    }
}

fn desired_fenced(src: &RegionView, from: Region) -> Vec<Change> {
    if src.db_desired.as_deref() == Some("fenced") {
        Vec::new()
    } else {
        vec![Change::SetDesiredDb {
            region: from,
            role: DesiredDb::Fenced,
        }]
    }
}

/// The role change of a region's app and the restarts it needs: every deployment whose pods
/// were not started for `role` ([`ROLE_MARK`]). A deployment drdctl never restarted (no mark)
/// in a region that already is what the run makes it (`settled`, and the role already set) is
/// left alone: a failover to the region that is active restarts nothing.
fn role_changes(r: &RegionView, _intent: &Intent, role: &str, settled: bool) -> Vec<Change> {
    let had_role = r.app_role.as_deref() == Some(role);
    let mut changes = Vec::new();
    if !had_role {
        changes.push(Change::SetAppRole {
            region: r.region,
            role: role.into(),
        });
    }
    for d in &r.deployments {
        let needed = match d.mark.as_deref() {
            Some(m) => m != role,
            None => !(settled && had_role),
        };
        if needed {
            changes.push(Change::RestartApp {
                region: r.region,
                deployment: d.name.clone(),
                role: role.into(),
            });
        }
    }
    changes
}

fn preflight(s: &Snapshot, intent: &Intent, emergency: bool) -> Decision {
    let (from, to) = (intent.from(), intent.to);
    let (src, tgt) = (s.region(from), s.region(to));
    let refuse = |why: String| Decision::Refuse { why };
    if let Some(e) = &tgt.api_error {
        return refuse(format!(
            "{to}'s Kubernetes API is unreachable ({e}): a run needs the region it makes active"
        ));
    }
    // Before the promotion, an unreadable DNS record stops the run from starting: it would
    // stop at switch-dns with the target promoted. Past it (a resume), the run goes on and
    // stops there, naming the step.
    if let Some(e) = s.dns.as_ref().and_then(|d| d.error.as_ref()) {
        if !tgt.db.is_primary() {
            return refuse(format!(
                "the DNS record cannot be read ({e}): fix that first (drdctl dns show), or the run would stop at switch-dns after the promotion"
            ));
        }
    }
    if let Some(e) = s.term.as_ref().and_then(|t| t.error.as_ref()) {
        if !tgt.db.is_primary() {
            return refuse(format!(
                "the witness term cannot be read ({e}): fix that first (drdctl status), or the run would stop at move-term"
            ));
        }
    }
    if s.split_brain() {
        let both = format!(
            "two writable databases: {from} is {}, {to} is {}",
            src.db.describe(),
            tgt.db.describe()
        );
        return match intent.discard_writes_of {
            Some(r) if r == from => Decision::Act {
                changes: Vec::new(),
                why: format!("{both}; {from}'s writes since the fork are discarded as you asked"),
            },
            Some(r) => refuse(format!(
                "{both}; --discard-writes-of {r} names the region this run makes active: name the other one ({from}), or run the command towards {from}"
            )),
            None => refuse(format!(
                "{both}. Every write one of them took after the fork is lost when it rejoins. \
                 Decide which region's writes to discard, then re-run with --discard-writes-of {from} \
                 (or fail over to {from} with --discard-writes-of {to})"
            )),
        };
    }
    // --discard-writes-of without two writable databases discards nothing (a resumed run
    // that already fenced one of them passes it again): it is ignored.
    if tgt.db.writable() {
        return Decision::Already {
            why: format!("{to} is the primary ({})", tgt.db.describe()),
        };
    }
    if emergency {
        if !intent.allow_data_loss {
            return refuse(format!(
                "EMERGENCY: {from} is unreachable ({}). Failing over loses every write it acknowledged after what {to} received ({}). Re-run with --allow-data-loss to go ahead",
                src.db.describe(),
                tgt.db.describe()
            ));
        }
        if let (Some(bound), Some(age)) = (intent.max_replay_age_secs, tgt.replay_age) {
            if age > bound as f64 {
                return refuse(format!(
                    "RPO guard: {to}'s last replayed transaction is {age:.0} s old (bound {bound} s): everything {from} committed since may be lost. \
                     If the application was idle, or you accept it, re-run with --allow-stale-standby"
                ));
            }
        }
        return match &tgt.db {
            DbView::Up { .. } => Decision::Act {
                changes: Vec::new(),
                why: format!(
                    "emergency: {from} unreachable; {to} is {}",
                    tgt.db.describe()
                ),
            },
            other => refuse(format!(
                "neither region's database is usable: {from} unreachable, {to} {}",
                other.describe()
            )),
        };
    }
    if intent.kind == RunKind::Failover && matches!(tgt.db, DbView::Stopped) {
        return refuse(format!(
            "{to}'s database is stopped (after a failover away from it): bring it back with `drdctl failback`, which rejoins it as a standby of {from} first"
        ));
    }
    if intent.kind == RunKind::Failover
        && tgt.db_desired.as_deref() == Some("fenced")
        && !tgt.db.is_primary()
    {
        return refuse(format!(
            "{to}'s database is fenced since a failover away from it: use `drdctl failback` (it rejoins it first)"
        ));
    }
    if !src.reachable() && intent.kind == RunKind::Failback {
        return refuse(format!(
            "failback needs {from} reachable; it is {}",
            src.db.describe()
        ));
    }
    if intent.kind == RunKind::Failback {
        // The old primary rejoins first; replication is checked by that step.
        return if src.db.is_primary() {
            Decision::Act {
                changes: Vec::new(),
                why: format!("{from} is the primary; {to} comes back as its standby"),
            }
        } else {
            refuse(format!(
                "nothing to fail back from: {from} is {} and {to} is {}",
                src.db.describe(),
                tgt.db.describe()
            ))
        };
    }
    if tgt.db.is_primary() {
        // A fenced primary (a run stopped after the fence and abandoned, now turned back).
        return if src.db.writable() {
            refuse(format!(
                "two primaries: {from} is {} and {to} is {}: fail over to {from} instead, or name the writes to discard with --discard-writes-of",
                src.db.describe(),
                tgt.db.describe()
            ))
        } else {
            Decision::Act {
                changes: Vec::new(),
                why: format!("{to} is a fenced primary: it is made writable again"),
            }
        };
    }
    if !src.db.is_primary() {
        return refuse(format!(
            "neither region is a writable primary ({from}: {}, {to}: {}): nothing to switch over",
            src.db.describe(),
            tgt.db.describe()
        ));
    }
    if !tgt.db.streaming_standby() {
        return refuse(format!(
            "{to}'s database is {}, not a streaming standby: fix replication first (drdctl status)",
            tgt.db.describe()
        ));
    }
    let lag = src
        .db
        .lsn()
        .zip(tgt.db.lsn())
        .map_or(0, |(c, r)| c.saturating_sub(r));
    if lag > intent.lag_bound_bytes {
        return refuse(format!(
            "{to} is {lag} bytes behind (bound {}): wait for it to catch up",
            intent.lag_bound_bytes
        ));
    }
    Decision::Act {
        changes: Vec::new(),
        why: format!("both regions reachable; {to} streaming, {lag} bytes behind"),
    }
}

/// The expected effect of a change on a snapshot: how the plan looks past a step.
pub fn project(c: &Change, s: &mut Snapshot) {
    match c {
        Change::SetAppRole { region, role } => s.region_mut(*region).app_role = Some(role.clone()),
        Change::RestartApp {
            region,
            deployment,
            role,
        } => {
            if let Some(d) = s
                .region_mut(*region)
                .deployments
                .iter_mut()
                .find(|d| &d.name == deployment)
            {
                d.mark = Some(role.clone());
                d.rolled_out = false;
            }
        }
        Change::ScaleApp {
            region,
            deployment,
            to,
            ..
        } => {
            if let Some(d) = s
                .region_mut(*region)
                .deployments
                .iter_mut()
                .find(|d| &d.name == deployment)
            {
                d.desired = *to;
                d.rolled_out = false;
            }
        }
        Change::SetHpaFloor { .. } => {}
        Change::FenceDb { region } => {
            if let DbView::Up { fenced, .. } = &mut s.region_mut(*region).db {
                *fenced = true;
            }
        }
        Change::UnfenceDb { region } => {
            if let DbView::Up { fenced, .. } = &mut s.region_mut(*region).db {
                *fenced = false;
            }
        }
        Change::WaitReplay { region, of } => {
            let final_lsn = s.region(*of).db.lsn();
            if let (DbView::Up { lsn, .. }, Some(f)) = (&mut s.region_mut(*region).db, final_lsn) {
                *lsn = (*lsn).max(f);
            }
        }
        Change::Promote { region } => {
            if let DbView::Up {
                role,
                fenced,
                timeline,
                received,
                streaming,
                ..
            } = &mut s.region_mut(*region).db
            {
                *role = DbRole::Primary;
                *fenced = false;
                *timeline += 1;
                *received = None;
                *streaming = false;
            }
        }
        Change::SetDesiredDb { region, role } => {
            s.region_mut(*region).db_desired = Some(role.name().into())
        }
        Change::WaitAppReady { region } => {
            for d in &mut s.region_mut(*region).deployments {
                d.rolled_out = true;
            }
        }
        Change::SwitchDns { to } => {
            if let Some(d) = &mut s.dns {
                d.points_to = Some(*to);
                d.error = None;
            }
        }
        Change::StopDb { region } => s.region_mut(*region).db = DbView::Stopped,
        Change::SealStandby { region } => {
            if let DbView::Up { streaming, .. } = &mut s.region_mut(*region).db {
                *streaming = false;
            }
        }
        Change::MoveTerm { to, n } => {
            if let Some(t) = &mut s.term {
                t.holder = Some(*to);
                t.n = *n;
            }
        }
        Change::WaitLease { .. } => {}
        Change::RejoinDb { region, follow } => {
            let (tl, at) = match &s.region(*follow).db {
                DbView::Up { timeline, lsn, .. } => (*timeline, *lsn),
                _ => (0, 0),
            };
            let r = s.region_mut(*region);
            r.db = DbView::Up {
                role: DbRole::Standby,
                fenced: false,
                timeline: tl,
                lsn: at,
                received: Some(at),
                streaming: true,
            };
            r.db_desired = Some("standby".into());
        }
    }
}

/// The pod template annotation that records the app role the pods were rolled for.
pub const ROLE_MARK: &str = "drdctl.io/app-role";
