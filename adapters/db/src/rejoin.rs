//! What a declarative rejoin did, read from the lines start.sh prints (see
//! manifests/README.md): pg_rewind and how much it copied, no rewind required, or a fresh base
//! backup and why.

use std::time::Duration;

use serde::Serialize;

use crate::lsn::Lsn;

/// How the former primary became a standby.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "method")]
pub enum RejoinMethod {
    /// It was already a standby following the primary: nothing was done.
    AlreadyStandby,
    /// pg_rewind found nothing to undo (its WAL is part of the new primary's history, e.g.
    /// after a clean planned switchover).
    NoRewindRequired,
    /// pg_rewind copied what diverged.
    Rewind,
    /// A fresh base backup (rewind impossible or failed); the old data directory is kept.
    BaseBackup {
        /// Why start.sh fell back.
        reason: String,
        /// Where the old data directory was moved.
        old_data_kept: Option<String>,
    },
}

/// The report of a rejoin.
#[derive(Debug, Clone, Serialize)]
pub struct RejoinOutcome {
    /// The region that rejoined.
    pub region: String,
    /// The primary it now follows (`host:port`).
    pub primary: String,
    /// What start.sh did.
    #[serde(flatten)]
    pub method: RejoinMethod,
    /// Where the timelines forked (pg_rewind).
    pub diverged_at: Option<Lsn>,
    /// Bytes pg_rewind or the base backup copied.
    pub bytes_copied: Option<u64>,
    /// The former primary's last WAL position, when it was seen before the restart.
    pub old_end_lsn: Option<Lsn>,
    /// WAL the former primary wrote after the fork and that was discarded (its writes on the
    /// old timeline that the new primary never received).
    pub discarded_bytes: Option<u64>,
    /// How long the script said the rewind or backup took.
    pub script_seconds: Option<u64>,
    /// Wall time of the whole rejoin (ConfigMap, restart, ready, streaming).
    #[serde(serialize_with = "secs")]
    pub elapsed: Duration,
    /// start.sh's lines about the rejoin.
    pub log: Vec<String>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// What the log says, before the caller adds what it observed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub method: Option<RejoinMethod>,
    pub diverged_at: Option<Lsn>,
    pub bytes_copied: Option<u64>,
    pub seconds: Option<u64>,
    pub lines: Vec<String>,
}

fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|i| &line[i + marker.len()..])
}

fn leading_number(s: &str) -> Option<u64> {
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Reads start.sh's output of one start.
pub(crate) fn parse_log(log: &str) -> Parsed {
    let mut p = Parsed::default();
    let mut fallback_reason = None;
    let mut kept = None;
    for line in log.lines().filter(|l| l.contains("start.sh: ")) {
        let msg = after(line, "start.sh: ").unwrap_or(line);
        if let Some(decision) = after(msg, "decision=") {
            let decision = decision.split_whitespace().next().unwrap_or_default();
            p.lines.push(msg.to_string());
            match decision {
                "start-standby" => p.method = Some(RejoinMethod::AlreadyStandby),
                "clone-standby" => {
                    fallback_reason = Some("the data directory was empty".to_string())
                }
                _ => {}
            }
            continue;
        }
        if !(msg.starts_with("rejoin:") || msg.starts_with("clone:")) {
            continue;
        }
        p.lines.push(msg.to_string());
        if msg.contains("no rewind required") {
            p.method = Some(RejoinMethod::NoRewindRequired);
            p.bytes_copied = Some(0);
        } else if let Some(rest) = after(msg, "rejoin: pg_rewind from ") {
            p.method = Some(RejoinMethod::Rewind);
            p.seconds = after(rest, " in ").and_then(leading_number);
            p.diverged_at = after(rest, "diverged at ")
                .and_then(|s| s.split_whitespace().next())
                .and_then(|s| s.trim_end_matches(';').parse().ok());
            p.bytes_copied = rest
                .rsplit_once("; ")
                .and_then(|(_, kb)| leading_number(kb))
                .map(|kb| kb * 1024);
        } else if let Some(rest) = after(msg, "fresh base backup because ") {
            let (reason, old) = match rest.split_once("; old data directory kept as ") {
                Some((r, o)) => (r.to_string(), Some(o.trim().to_string())),
                None => (rest.to_string(), None),
            };
            fallback_reason = Some(reason);
            kept = old;
        } else if let Some(rest) = after(msg, "base backup done: ") {
            p.bytes_copied = leading_number(rest);
            p.seconds = after(rest, "copied in ").and_then(leading_number);
            p.method = Some(RejoinMethod::BaseBackup {
                reason: fallback_reason.clone().unwrap_or_default(),
                old_data_kept: kept.clone(),
            });
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_rewind() {
        let log = "2026-11-24T10:00:00Z start.sh: role=standby pgdata=primary decision=rejoin (PGDATA=/d)\n\
                   2026-11-24T10:00:01Z start.sh: rejoin: pg_rewind from 127.0.0.3:5432 in 2s: servers diverged at 0/1A002100 on timeline 1; 54128 kB copied\n\
                   2026-11-24T10:00:02Z start.sh: rejoin: verified: the rewound standby is consistent and streaming\n";
        let p = parse_log(log);
        assert_eq!(p.method, Some(RejoinMethod::Rewind));
        assert_eq!(p.diverged_at, Some("0/1A002100".parse().unwrap()));
        assert_eq!(p.bytes_copied, Some(54128 * 1024));
        assert_eq!(p.seconds, Some(2));
        assert_eq!(p.lines.len(), 3);
    }

    #[test]
    fn reads_a_fallback_clone() {
        let log = "T start.sh: rejoin: fresh base backup because pg_rewind failed (exit 1: error: x); old data directory kept as /v/pgdata.old-20261124T100000Z\n\
                   T start.sh: rejoin: base backup done: 320674357 bytes copied in 9s\n";
        let p = parse_log(log);
        assert_eq!(
            p.method,
            Some(RejoinMethod::BaseBackup {
                reason: "pg_rewind failed (exit 1: error: x)".into(),
                old_data_kept: Some("/v/pgdata.old-20261124T100000Z".into()),
            })
        );
        assert_eq!(p.bytes_copied, Some(320_674_357));
        assert_eq!(p.seconds, Some(9));
    }

    #[test]
    fn reads_no_rewind_and_already_standby() {
        let p = parse_log("T start.sh: rejoin: pg_rewind: no rewind required (this node's WAL is already part of the primary's history), 0 bytes copied\n");
        assert_eq!(p.method, Some(RejoinMethod::NoRewindRequired));
        assert_eq!(p.bytes_copied, Some(0));
        let p = parse_log(
            "T start.sh: role=standby pgdata=standby decision=start-standby (PGDATA=/d)\n",
        );
        assert_eq!(p.method, Some(RejoinMethod::AlreadyStandby));
    }
}
