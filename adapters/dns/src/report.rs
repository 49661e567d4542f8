//! What the DNS operations report: typed results with a human `Display` and a serde
//! `Serialize` (for `--output json`, the journal and the audit trail). Callers use the fields
//! (or `SwitchReport::summary`), never the text.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::authoritative::ServerAnswer;
use crate::config::RecordType;
use crate::error::human;
use crate::types::ORIGINAL_TTL_KEY;

/// What `show` found.
#[derive(Debug, Clone, Serialize)]
pub struct ShowReport {
    /// The record.
    pub fqdn: String,
    /// `A` or `CNAME`.
    pub record_type: RecordType,
    /// TTL in Azure, seconds.
    pub ttl: u32,
    /// Value in Azure.
    pub values: Vec<String>,
    /// The region whose target the value is, if any.
    pub active_region: Option<String>,
    /// Current ETag.
    pub etag: String,
    /// ARM metadata.
    pub metadata: std::collections::BTreeMap<String, String>,
    /// What each authoritative name server answers now.
    pub authoritative: Vec<ServerAnswer>,
    /// Why the name servers could not be asked, if they could not.
    pub authoritative_error: Option<String>,
    /// Whether every name server serves what Azure holds.
    pub in_sync: bool,
}

impl fmt::Display for ShowReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} {}, TTL {} s", self.fqdn, self.record_type, self.ttl)?;
        let region = match &self.active_region {
            Some(r) => format!(" (region {r})"),
            None => " (no configured region has this value)".into(),
        };
        writeln!(f, "  value     {}{region}", self.values.join(", "))?;
        writeln!(f, "  etag      {}", self.etag)?;
        if !self.metadata.is_empty() {
            let md: Vec<String> = self
                .metadata
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            writeln!(f, "  metadata  {}", md.join(", "))?;
        }
        match &self.authoritative_error {
            Some(e) => write!(f, "  authoritative name servers: not asked: {e}"),
            None => {
                write!(
                    f,
                    "  authoritative name servers ({}):",
                    if self.in_sync {
                        "all serve what Azure holds"
                    } else {
                        "NOT all serve what Azure holds yet"
                    }
                )?;
                for a in &self.authoritative {
                    let mark = if a.serves(self.record_type, &self.values) {
                        "ok "
                    } else {
                        "OLD"
                    };
                    write!(f, "\n    [{mark}] {}", a.summary())?;
                }
                Ok(())
            }
        }
    }
}

/// How the authoritative name servers came to serve a value.
#[derive(Debug, Clone, Serialize)]
pub struct AuthoritativeReport {
    /// The value waited for.
    pub expected: Vec<String>,
    /// Time from the start of the wait until every server served it.
    pub converged_after_ms: u64,
    /// When that was (RFC 3339).
    pub converged_at: String,
    /// Rounds of queries.
    pub rounds: u32,
    /// The last answers.
    pub answers: Vec<ServerAnswer>,
}

impl fmt::Display for AuthoritativeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "all {} authoritative name server(s) serve {} (after {})",
            self.answers.len(),
            self.expected.join(", "),
            human(Duration::from_millis(self.converged_after_ms))
        )
    }
}

/// What a switch did (or, in plan mode, would do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SwitchOutcome {
    /// Plan mode: nothing was written.
    Planned,
    /// The record already pointed at the region: nothing to write.
    AlreadyActive,
    /// The record now points at the region.
    Switched,
}

/// The report of [`DnsOps::switch`].
#[derive(Debug, Clone, Serialize)]
pub struct SwitchReport {
    /// The record.
    pub fqdn: String,
    /// `A` or `CNAME`.
    pub record_type: RecordType,
    /// The region switched to.
    pub to_region: String,
    /// The region the record pointed at before, if a configured one.
    pub from_region: Option<String>,
    /// What the record held before.
    pub before: Vec<String>,
    /// What it holds now (plan: what it would hold).
    pub after: Vec<String>,
    /// TTL before.
    pub ttl_before: u32,
    /// TTL after.
    pub ttl_after: u32,
    /// The ETag read first (the write was conditional on it, or on a re-read one).
    pub etag_before: String,
    /// The ETag after the write.
    pub etag_after: Option<String>,
    /// What happened.
    pub outcome: SwitchOutcome,
    /// 412 Precondition Failed answers resolved by re-reading.
    pub conflicts: u32,
    /// When Azure accepted the write (RFC 3339).
    pub switched_at: Option<String>,
    /// The authoritative confirmation, when asked for.
    pub authoritative: Option<AuthoritativeReport>,
    /// For how long clients may still use the old value: the old TTL (0 if nothing changed).
    pub old_value_cached_for_secs: u32,
    /// Until when (RFC 3339), counted from the authoritative confirmation (or the write).
    pub old_value_cached_until: Option<String>,
}

impl SwitchReport {
    /// One line: what the record now holds and whether the name servers confirmed it.
    pub fn summary(&self) -> String {
        let what = match self.outcome {
            SwitchOutcome::Planned => "would switch",
            SwitchOutcome::AlreadyActive => "already at",
            SwitchOutcome::Switched => "switched to",
        };
        let confirmed = if self.authoritative.is_some() {
            "; name servers confirmed"
        } else {
            ""
        };
        format!(
            "{} {what} {} ({}); TTL {} s{confirmed}",
            self.fqdn,
            self.after.join(", "),
            self.to_region,
            self.ttl_after
        )
    }
}

impl fmt::Display for SwitchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let from = match &self.from_region {
            Some(r) => format!("{} ({r})", self.before.join(", ")),
            None => format!("{} (no configured region)", self.before.join(", ")),
        };
        let to = format!("{} ({})", self.after.join(", "), self.to_region);
        let ttl = if self.ttl_before == self.ttl_after {
            format!("TTL {} s kept", self.ttl_after)
        } else {
            format!("TTL {} s -> {} s", self.ttl_before, self.ttl_after)
        };
        match self.outcome {
            SwitchOutcome::Planned => {
                return write!(
                    f,
                    "plan: {} {} would change from {from} to {to}; {ttl}; the write is \
                     conditional on ETag {}. Nothing was changed.",
                    self.fqdn, self.record_type, self.etag_before
                )
            }
            SwitchOutcome::AlreadyActive => write!(
                f,
                "{} {} already points at {to}; nothing to change",
                self.fqdn, self.record_type
            )?,
            SwitchOutcome::Switched => {
                write!(
                    f,
                    "{} {} switched from {from} to {to}; {ttl}",
                    self.fqdn, self.record_type
                )?;
                if self.conflicts > 0 {
                    write!(
                        f,
                        " ({} concurrent change(s) resolved by re-reading)",
                        self.conflicts
                    )?;
                }
            }
        }
        if let Some(a) = &self.authoritative {
            write!(f, "\n{a}")?;
        }
        if self.old_value_cached_for_secs > 0 {
            write!(
                f,
                "\nclients may still use the old value for up to {} s (the old TTL){}",
                self.old_value_cached_for_secs,
                self.old_value_cached_until
                    .as_deref()
                    .map(|u| format!(", until {u}"))
                    .unwrap_or_default()
            )?;
        }
        Ok(())
    }
}

/// Which TTL operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TtlAction {
    /// Lower the TTL ahead of a planned failover.
    Prepare,
    /// Put the original TTL back.
    Restore,
}

/// The report of [`DnsOps::prepare_ttl`] and [`DnsOps::restore_ttl`].
#[derive(Debug, Clone, Serialize)]
pub struct TtlReport {
    /// The record.
    pub fqdn: String,
    /// `A` or `CNAME`.
    pub record_type: RecordType,
    /// Prepare or restore.
    pub action: TtlAction,
    /// Plan mode: nothing was written.
    pub planned: bool,
    /// Whether the TTL changed (or, in plan mode, would).
    pub changed: bool,
    /// TTL before.
    pub ttl_before: u32,
    /// TTL after (plan: would be).
    pub ttl_after: u32,
    /// ETag read first.
    pub etag_before: String,
    /// ETag after the write.
    pub etag_after: Option<String>,
    /// 412 answers resolved by re-reading.
    pub conflicts: u32,
    /// Prepare: how long to wait before a planned failover (the old TTL), seconds.
    pub wait_secs: u32,
    /// Prepare: until when (RFC 3339).
    pub wait_until: Option<String>,
}

impl TtlReport {
    /// One line for the audit trail: what happened to which record.
    pub fn headline(&self) -> String {
        let what = if self.changed {
            format!("TTL {} s -> {} s", self.ttl_before, self.ttl_after)
        } else {
            format!("TTL already {} s", self.ttl_after)
        };
        let plan = if self.planned { " (plan)" } else { "" };
        format!("{} {}: {what}{plan}", self.fqdn, self.record_type)
    }
}

impl fmt::Display for TtlReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = if self.planned { "plan: " } else { "" };
        let verb = match (self.action, self.planned) {
            (TtlAction::Prepare, false) => "lowered",
            (TtlAction::Prepare, true) => "would be lowered",
            (TtlAction::Restore, false) => "restored",
            (TtlAction::Restore, true) => "would be restored",
        };
        if !self.changed {
            return write!(
                f,
                "{prefix}{} {}: TTL is already {} s; nothing to change",
                self.fqdn, self.record_type, self.ttl_after
            );
        }
        write!(
            f,
            "{prefix}{} {}: TTL {verb} from {} s to {} s",
            self.fqdn, self.record_type, self.ttl_before, self.ttl_after
        )?;
        if self.action == TtlAction::Prepare {
            write!(
                f,
                " (the original is kept in the record's metadata {ORIGINAL_TTL_KEY} for \
                 restore).\nResolvers may cache the record with the old TTL: wait {} s{} \
                 before a planned failover, so that every client sees the new TTL",
                self.wait_secs,
                self.wait_until
                    .as_deref()
                    .map(|u| format!(" (until {u})"))
                    .unwrap_or_default()
            )?;
        }
        if self.planned {
            write!(f, ". Nothing was changed.")?;
        }
        Ok(())
    }
}
