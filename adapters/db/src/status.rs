//! What the adapter observes: one node ([`NodeStatus`]) and both regions together
//! ([`ClusterStatus`], with the cross-region lag and the warnings an operator must see: two
//! primaries, no primary, a standby not streaming). Serialisable for `--output json`, and a
//! human [`std::fmt::Display`] for the terminal.

use std::fmt;

use serde::Serialize;

use crate::lsn::Lsn;

/// Primary or standby, as PostgreSQL reports it (`pg_is_in_recovery()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DbRole {
    /// Accepts writes.
    Primary,
    /// In recovery (streaming or not).
    Standby,
}

impl fmt::Display for DbRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DbRole::Primary => "primary",
            DbRole::Standby => "standby",
        })
    }
}

/// Replication lag.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Lag {
    /// WAL bytes not yet replayed.
    pub bytes: u64,
    /// Age of the last replayed transaction when behind, 0 when caught up (time-based lag is
    /// meaningless on an idle system; bytes are the measure).
    pub seconds: f64,
}

/// The standby's WAL receiver (`pg_stat_wal_receiver`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WalReceiver {
    /// `streaming`, `catchup`, `waiting`, ...
    pub status: String,
    /// The primary it streams from (`host:port`).
    pub sender: Option<String>,
}

/// One connected standby (`pg_stat_replication`, primary side).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplicationConnection {
    /// `application_name` (start.sh sets it to the slot name).
    pub application_name: String,
    /// The standby's address.
    pub client_addr: Option<String>,
    /// `streaming`, `catchup`, ...
    pub state: String,
    /// Sent, flushed and replayed positions.
    pub sent_lsn: Option<Lsn>,
    /// Flushed on the standby.
    pub flush_lsn: Option<Lsn>,
    /// Replayed on the standby.
    pub replay_lsn: Option<Lsn>,
    /// `async` / `sync` / ...
    pub sync_state: String,
    /// Current LSN minus replayed LSN.
    pub lag_bytes: Option<u64>,
    /// `replay_lag` in seconds (NULL on an idle system).
    pub replay_lag_seconds: Option<f64>,
}

/// A replication slot (primary side).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Slot {
    /// Name (`dr_slot`).
    pub name: String,
    /// `physical` or `logical`.
    pub slot_type: String,
    /// In use by a walsender.
    pub active: bool,
    /// Oldest WAL kept for it.
    pub restart_lsn: Option<Lsn>,
    /// `reserved`, `extended`, `unreserved`, `lost`.
    pub wal_status: Option<String>,
    /// WAL held back for it, in bytes.
    pub retained_bytes: Option<u64>,
}

/// One region's PostgreSQL, observed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeStatus {
    /// The region.
    pub region: String,
    /// Primary or standby.
    pub role: DbRole,
    /// Current timeline (primary: of its WAL; standby: of what it receives, else of its last
    /// restartpoint).
    pub timeline: u32,
    /// `pg_control_system().system_identifier`: equal in both regions of one cluster.
    pub system_identifier: String,
    /// `server_version`.
    pub server_version: String,
    /// Primary: `pg_current_wal_lsn()`.
    pub current_lsn: Option<Lsn>,
    /// Standby: `pg_last_wal_receive_lsn()`.
    pub receive_lsn: Option<Lsn>,
    /// Standby: `pg_last_wal_replay_lsn()`.
    pub replay_lsn: Option<Lsn>,
    /// Standby: replay paused (`pg_wal_replay_pause()`).
    pub replay_paused: Option<bool>,
    /// Standby: received but not yet replayed.
    pub local_lag: Option<Lag>,
    /// Standby: the WAL receiver, if running.
    pub wal_receiver: Option<WalReceiver>,
    /// Standby: seconds since the last transaction it replayed was committed (on an idle
    /// application this grows without anything missing). The emergency RPO guard reads it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay_age_secs: Option<f64>,
    /// New sessions default to read-only (drdctl's fence, or a configuration file).
    pub fenced: bool,
    /// Primary: connected standbys.
    pub replication: Vec<ReplicationConnection>,
    /// Primary (and standby): replication slots.
    pub slots: Vec<Slot>,
}

impl NodeStatus {
    /// The position this node has: current (primary) or replayed (standby).
    pub fn position(&self) -> Option<Lsn> {
        match self.role {
            DbRole::Primary => self.current_lsn,
            DbRole::Standby => self.replay_lsn,
        }
    }
}

/// One region in a [`ClusterStatus`]: observed, or why not.
#[derive(Debug, Clone, Serialize)]
pub struct RegionStatus {
    /// The region.
    pub region: String,
    /// How it was reached.
    pub via: String,
    /// What was observed.
    pub database: Option<NodeStatus>,
    /// Why it could not be observed.
    pub error: Option<String>,
}

/// Both regions on one screen.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    /// Each region.
    pub regions: Vec<RegionStatus>,
    /// The standby's lag behind the primary (primary current LSN minus standby replayed LSN),
    /// when there is exactly one primary and a standby.
    pub lag: Option<Lag>,
    /// Things an operator must act on.
    pub warnings: Vec<String>,
}

impl ClusterStatus {
    /// Combines the regions' observations.
    pub fn from_regions(regions: Vec<RegionStatus>) -> Self {
        let nodes: Vec<&NodeStatus> = regions.iter().filter_map(|r| r.database.as_ref()).collect();
        let primaries: Vec<&&NodeStatus> =
            nodes.iter().filter(|n| n.role == DbRole::Primary).collect();
        let mut warnings = Vec::new();
        for r in regions.iter().filter(|r| r.error.is_some()) {
            warnings.push(format!("region {} is unreachable", r.region));
        }
        if primaries.len() > 1 {
            let names: Vec<&str> = primaries.iter().map(|n| n.region.as_str()).collect();
            warnings.push(format!(
                "SPLIT BRAIN: {} are all writable primaries; fence all but one now",
                names.join(" and ")
            ));
        }
        if primaries.is_empty() && !nodes.is_empty() {
            warnings.push("no region is a primary: writes are impossible".into());
        }
        let ids: std::collections::BTreeSet<&str> =
            nodes.iter().map(|n| n.system_identifier.as_str()).collect();
        if ids.len() > 1 {
            warnings.push(
                "the regions hold different database clusters (system identifiers differ)".into(),
            );
        }
        for n in nodes.iter().filter(|n| n.role == DbRole::Standby) {
            let streaming = n
                .wal_receiver
                .as_ref()
                .is_some_and(|w| w.status == "streaming");
            if !streaming {
                warnings.push(format!("the standby in {} is not streaming", n.region));
            }
            if n.replay_paused == Some(true) {
                warnings.push(format!("WAL replay is paused in {}", n.region));
            }
        }
        for n in nodes
            .iter()
            .filter(|n| n.role == DbRole::Primary && n.fenced)
        {
            warnings.push(format!("the primary in {} is fenced (read-only)", n.region));
        }
        let lag = match (
            primaries.as_slice(),
            nodes.iter().find(|n| n.role == DbRole::Standby),
        ) {
            ([p], Some(s)) => match (p.current_lsn, s.replay_lsn) {
                (Some(cur), Some(rep)) => {
                    let bytes = cur.bytes_since(rep);
                    let seconds = if bytes == 0 {
                        0.0
                    } else {
                        s.local_lag.map(|l| l.seconds).unwrap_or(0.0)
                    };
                    Some(Lag { bytes, seconds })
                }
                _ => None,
            },
            _ => None,
        };
        ClusterStatus {
            regions,
            lag,
            warnings,
        }
    }
}

fn opt<T: fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".to_string(), T::to_string)
}

/// Bytes in a human unit.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

impl fmt::Display for ClusterStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<8} {:<8} {:>3}  {:<12} {:<12} {:<12} {:<7} STREAM",
            "REGION", "ROLE", "TL", "CURRENT", "RECEIVED", "REPLAYED", "FENCED"
        )?;
        for r in &self.regions {
            match &r.database {
                Some(n) => {
                    let stream = match (&n.role, &n.wal_receiver) {
                        (DbRole::Standby, Some(w)) => {
                            format!("{} from {}", w.status, opt(&w.sender))
                        }
                        (DbRole::Standby, None) => "not streaming".into(),
                        (DbRole::Primary, _) => {
                            let names: Vec<String> = n
                                .replication
                                .iter()
                                .map(|c| format!("{} {}", c.application_name, c.state))
                                .collect();
                            if names.is_empty() {
                                "no standby connected".into()
                            } else {
                                format!("to {}", names.join(", "))
                            }
                        }
                    };
                    let paused = if n.replay_paused == Some(true) {
                        " (replay paused)"
                    } else {
                        ""
                    };
                    writeln!(
                        f,
                        "{:<8} {:<8} {:>3}  {:<12} {:<12} {:<12} {:<7} {stream}{paused}",
                        r.region,
                        n.role.to_string(),
                        n.timeline,
                        opt(&n.current_lsn),
                        opt(&n.receive_lsn),
                        opt(&n.replay_lsn),
                        if n.fenced { "yes" } else { "no" },
                    )?;
                }
                None => writeln!(
                    f,
                    "{:<8} UNREACHABLE via {}: {}",
                    r.region,
                    r.via,
                    opt(&r.error)
                )?,
            }
        }
        if let Some(l) = &self.lag {
            writeln!(
                f,
                "replication lag: {} ({:.1} s)",
                human_bytes(l.bytes),
                l.seconds
            )?;
        }
        for r in &self.regions {
            for s in r.database.iter().flat_map(|n| &n.slots) {
                writeln!(
                    f,
                    "slot {} in {}: {}{}, retains {}",
                    s.name,
                    r.region,
                    if s.active { "active" } else { "inactive" },
                    s.wal_status
                        .as_ref()
                        .map(|w| format!(" ({w})"))
                        .unwrap_or_default(),
                    s.retained_bytes.map_or("-".into(), human_bytes),
                )?;
            }
        }
        for w in &self.warnings {
            writeln!(f, "WARNING: {w}")?;
        }
        Ok(())
    }
}
