//! The operations `drdctl dns …` and the failover engine call: `show`, `switch` (with a plan
//! mode), `prepare_ttl` / `restore_ttl`, and the authoritative wait. Each returns a report
//! with a human `Display` and a serde `Serialize` (for `--output json` and the journal).
//!
//! Every write is read → decide → conditional PUT (`If-Match` on the ETag just read). On 412
//! the record is read again and the decision is made again from what is there now: a record
//! that already holds the goal is success (our own earlier PUT whose answer was lost, or a
//! colleague doing the same switch); a record that still holds the value first read (only
//! TTL or metadata changed) is written again, keeping that change; any other value stops the
//! operation with [`DnsError::ConcurrentChange`]. Nothing is ever overwritten blind.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_core::time::{to_rfc3339, OffsetDateTime};
use serde::Serialize;

use crate::authoritative::ServerAnswer;
use crate::config::{DnsConfig, RecordType};
use crate::error::{human, DnsError};
use crate::model::{normalise, RecordSet};
use crate::{Dns, UpdateOutcome};

/// The metadata key where `prepare_ttl` records the TTL to restore.
pub const ORIGINAL_TTL_KEY: &str = "drdctl_original_ttl";

/// How many 412s one operation resolves before giving up.
const MAX_CONFLICTS: u32 = 5;
const MAX_TTL: u64 = 2_147_483_647;

fn timestamp_in(secs: u64) -> String {
    let at = OffsetDateTime::now_utc() + azure_core::time::Duration::seconds(secs as i64);
    // Whole seconds: these are for people and journals.
    let at = at - azure_core::time::Duration::nanoseconds(i64::from(at.nanosecond()));
    to_rfc3339(&at)
}

fn check_ttl(ttl: u32) -> Result<(), DnsError> {
    if ttl == 0 || u64::from(ttl) > MAX_TTL {
        return Err(DnsError::InvalidTtl(u64::from(ttl)));
    }
    Ok(())
}

/// Options of [`DnsOps::switch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchOptions {
    /// Only say what would change (reads, never writes).
    pub plan: bool,
    /// Set this TTL with the switch (default: keep the record's TTL).
    pub ttl: Option<u32>,
    /// Wait until the authoritative name servers serve the new value (default true).
    pub confirm: bool,
}

impl Default for SwitchOptions {
    fn default() -> Self {
        SwitchOptions {
            plan: false,
            ttl: None,
            confirm: true,
        }
    }
}

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

struct Written {
    first: RecordSet,
    last: RecordSet,
    wrote: bool,
    conflicts: u32,
    at: Option<Instant>,
}

/// The DNS operations, over any [`Dns`] (the failover engine's tests can bring their own).
#[derive(Debug, Clone)]
pub struct DnsOps {
    dns: Arc<dyn Dns>,
}

impl DnsOps {
    /// Operations over `dns`.
    pub fn new(dns: Arc<dyn Dns>) -> Self {
        DnsOps { dns }
    }

    /// Operations over Azure DNS, credentials from the process environment.
    pub fn from_env(cfg: &DnsConfig) -> Result<Self, DnsError> {
        Ok(DnsOps::new(Arc::new(crate::AzureDns::from_env(cfg)?)))
    }

    /// The configuration.
    pub fn config(&self) -> &DnsConfig {
        self.dns.config()
    }

    /// The adapter.
    pub fn dns(&self) -> &Arc<dyn Dns> {
        &self.dns
    }

    fn fqdn(&self) -> String {
        self.config().fqdn()
    }

    /// Read → decide → conditional write, re-deciding after each 412. `decide(first, now)`
    /// returns the record set to write, or `None` when nothing needs writing.
    async fn update_with(
        &self,
        decide: impl Fn(&RecordSet, &RecordSet) -> Result<Option<RecordSet>, DnsError>,
    ) -> Result<Written, DnsError> {
        let mut first: Option<RecordSet> = None;
        let mut conflicts = 0;
        loop {
            let now = self.dns.read().await?;
            let f = first.get_or_insert_with(|| now.clone()).clone();
            let Some(new) = decide(&f, &now)? else {
                return Ok(Written {
                    first: f,
                    last: now,
                    wrote: false,
                    conflicts,
                    at: None,
                });
            };
            match self.dns.update(&new, &now.etag).await? {
                UpdateOutcome::Updated(rs) => {
                    return Ok(Written {
                        first: f,
                        last: rs,
                        wrote: true,
                        conflicts,
                        at: Some(Instant::now()),
                    })
                }
                UpdateOutcome::PreconditionFailed => {
                    conflicts += 1;
                    tracing::warn!(
                        record = %self.fqdn(),
                        etag = %now.etag,
                        conflicts,
                        "the record changed since it was read (412); reading it again"
                    );
                    if conflicts >= MAX_CONFLICTS {
                        return Err(DnsError::TooManyConflicts {
                            fqdn: self.fqdn(),
                            conflicts,
                        });
                    }
                }
            }
        }
    }

    /// The record as Azure holds it, and what the authoritative name servers answer.
    pub async fn show(&self) -> Result<ShowReport, DnsError> {
        let rs = self.dns.read().await?;
        let (authoritative, authoritative_error) = match self.dns.query_authoritative().await {
            Ok(a) => (a, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        let in_sync = authoritative_error.is_none()
            && !authoritative.is_empty()
            && authoritative
                .iter()
                .all(|a| a.serves(rs.record_type, &rs.values));
        Ok(ShowReport {
            fqdn: self.fqdn(),
            record_type: rs.record_type,
            ttl: rs.ttl,
            active_region: self.config().region_of(&rs.values),
            values: rs.values,
            etag: rs.etag,
            metadata: rs.metadata,
            authoritative,
            authoritative_error,
            in_sync,
        })
    }

    /// The region the record points at now (`None`: no configured region's value).
    pub async fn active_region(&self) -> Result<Option<String>, DnsError> {
        let rs = self.dns.read().await?;
        Ok(self.config().region_of(&rs.values))
    }

    /// Points the record at `to_region`'s target, keeping its TTL (unless `opts.ttl`) and
    /// metadata; then (unless `opts.confirm` is false) waits for the authoritative name
    /// servers to serve it. Running it again converges: an already-switched record is not
    /// written, only confirmed.
    pub async fn switch(
        &self,
        to_region: &str,
        opts: &SwitchOptions,
    ) -> Result<SwitchReport, DnsError> {
        let cfg = self.config();
        let desired = cfg
            .target_values(to_region)
            .ok_or_else(|| DnsError::UnknownRegion {
                region: to_region.to_string(),
                known: cfg.targets.keys().cloned().collect::<Vec<_>>().join(", "),
            })?;
        if let Some(t) = opts.ttl {
            check_ttl(t)?;
        }
        let fqdn = self.fqdn();
        let ttl_ok = |rs: &RecordSet| opts.ttl.is_none_or(|t| rs.ttl == t);
        let decide = |first: &RecordSet, now: &RecordSet| {
            if now.holds(&desired) && ttl_ok(now) {
                return Ok(None);
            }
            if !now.holds(&first.values) && !now.holds(&desired) {
                return Err(DnsError::ConcurrentChange {
                    fqdn: fqdn.clone(),
                    expected: first.value_text(),
                    found: now.value_text(),
                    etag: now.etag.clone(),
                });
            }
            let mut next = now.clone();
            next.values = normalise(now.record_type, &desired);
            if let Some(t) = opts.ttl {
                next.ttl = t;
            }
            Ok(Some(next))
        };
        if opts.plan {
            let now = self.dns.read().await?;
            let write = decide(&now, &now)?;
            let after = write.as_ref().unwrap_or(&now);
            return Ok(SwitchReport {
                fqdn,
                record_type: now.record_type,
                to_region: to_region.to_string(),
                from_region: cfg.region_of(&now.values),
                before: now.values.clone(),
                after: after.values.clone(),
                ttl_before: now.ttl,
                ttl_after: after.ttl,
                etag_before: now.etag.clone(),
                etag_after: None,
                outcome: if write.is_some() {
                    SwitchOutcome::Planned
                } else {
                    SwitchOutcome::AlreadyActive
                },
                conflicts: 0,
                switched_at: None,
                authoritative: None,
                old_value_cached_for_secs: 0,
                old_value_cached_until: None,
            });
        }
        let w = self.update_with(decide).await?;
        let changed = !w.first.holds(&desired);
        let switched_at = w.at.map(|_| timestamp_in(0));
        let mut report = SwitchReport {
            fqdn: fqdn.clone(),
            record_type: w.first.record_type,
            to_region: to_region.to_string(),
            from_region: cfg.region_of(&w.first.values),
            before: w.first.values.clone(),
            after: w.last.values.clone(),
            ttl_before: w.first.ttl,
            ttl_after: w.last.ttl,
            etag_before: w.first.etag.clone(),
            etag_after: w.wrote.then(|| w.last.etag.clone()),
            outcome: if changed || w.wrote {
                SwitchOutcome::Switched
            } else {
                SwitchOutcome::AlreadyActive
            },
            conflicts: w.conflicts,
            switched_at,
            authoritative: None,
            old_value_cached_for_secs: if changed { w.first.ttl } else { 0 },
            old_value_cached_until: None,
        };
        if opts.confirm {
            match self.wait_authoritative(&desired).await {
                Ok(a) => report.authoritative = Some(a),
                Err(DnsError::NotServed {
                    fqdn,
                    record_type,
                    expected,
                    deadline,
                    answers,
                    ..
                }) => {
                    return Err(DnsError::NotServed {
                        fqdn,
                        record_type,
                        expected,
                        deadline,
                        answers,
                        updated: format!(
                            " although Azure DNS already holds it (ETag {}; run the same \
                             command again to re-check, it will not write again)",
                            w.last.etag
                        ),
                    })
                }
                Err(e) => {
                    return Err(DnsError::Unconfirmed {
                        fqdn,
                        value: w.last.value_text(),
                        etag: w.last.etag.clone(),
                        reason: e.to_string(),
                    })
                }
            }
        }
        if changed {
            report.old_value_cached_until = Some(timestamp_in(u64::from(w.first.ttl)));
        }
        Ok(report)
    }

    /// Polls the authoritative name servers until every one serves `expected`, within
    /// `dns.authoritative_deadline_secs`.
    pub async fn wait_authoritative(
        &self,
        expected: &[String],
    ) -> Result<AuthoritativeReport, DnsError> {
        let cfg = self.config();
        let start = Instant::now();
        let deadline = start + cfg.authoritative_deadline();
        let mut rounds = 0;
        loop {
            rounds += 1;
            let answers = self.dns.query_authoritative().await?;
            if !answers.is_empty() && answers.iter().all(|a| a.serves(cfg.record_type, expected)) {
                return Ok(AuthoritativeReport {
                    expected: expected.to_vec(),
                    converged_after_ms: start.elapsed().as_millis() as u64,
                    converged_at: timestamp_in(0),
                    rounds,
                    answers,
                });
            }
            let now = Instant::now();
            if now >= deadline {
                let answers = answers
                    .iter()
                    .map(ServerAnswer::summary)
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(DnsError::NotServed {
                    fqdn: self.fqdn(),
                    record_type: cfg.record_type,
                    expected: expected.join(", "),
                    deadline: cfg.authoritative_deadline(),
                    answers: if answers.is_empty() {
                        "no name server answered".into()
                    } else {
                        answers
                    },
                    updated: String::new(),
                });
            }
            tokio::time::sleep(cfg.authoritative_poll().min(deadline - now)).await;
        }
    }

    /// Lowers the record's TTL to `ttl` ahead of a planned failover, recording the original
    /// in the metadata key [`ORIGINAL_TTL_KEY`] (kept from the first prepare). The report says
    /// how long to wait: the old TTL.
    pub async fn prepare_ttl(&self, ttl: u32, plan: bool) -> Result<TtlReport, DnsError> {
        check_ttl(ttl)?;
        let decide = |_: &RecordSet, now: &RecordSet| {
            if now.ttl <= ttl {
                return Ok(None);
            }
            let mut next = now.clone();
            next.metadata
                .entry(ORIGINAL_TTL_KEY.to_string())
                .or_insert_with(|| now.ttl.to_string());
            next.ttl = ttl;
            Ok(Some(next))
        };
        self.ttl_op(TtlAction::Prepare, plan, decide).await
    }

    /// Puts the TTL back: to `ttl`, or to the one `prepare_ttl` recorded; removes the record.
    pub async fn restore_ttl(&self, ttl: Option<u32>, plan: bool) -> Result<TtlReport, DnsError> {
        if let Some(t) = ttl {
            check_ttl(t)?;
        }
        let fqdn = self.fqdn();
        let decide = |_: &RecordSet, now: &RecordSet| {
            let recorded = now
                .metadata
                .get(ORIGINAL_TTL_KEY)
                .and_then(|v| v.trim().parse::<u32>().ok())
                .filter(|t| check_ttl(*t).is_ok());
            let target = ttl.or(recorded).ok_or_else(|| DnsError::NoOriginalTtl {
                fqdn: fqdn.clone(),
                key: ORIGINAL_TTL_KEY,
            })?;
            if now.ttl == target && !now.metadata.contains_key(ORIGINAL_TTL_KEY) {
                return Ok(None);
            }
            let mut next = now.clone();
            next.metadata.remove(ORIGINAL_TTL_KEY);
            next.ttl = target;
            Ok(Some(next))
        };
        self.ttl_op(TtlAction::Restore, plan, decide).await
    }

    async fn ttl_op(
        &self,
        action: TtlAction,
        plan: bool,
        decide: impl Fn(&RecordSet, &RecordSet) -> Result<Option<RecordSet>, DnsError>,
    ) -> Result<TtlReport, DnsError> {
        let (first, last, wrote, conflicts) = if plan {
            let now = self.dns.read().await?;
            let next = decide(&now, &now)?;
            let wrote = next.is_some();
            (now.clone(), next.unwrap_or(now), wrote, 0)
        } else {
            let w = self.update_with(decide).await?;
            (w.first, w.last, w.wrote, w.conflicts)
        };
        let changed = wrote && first.ttl != last.ttl;
        let wait_secs = if action == TtlAction::Prepare && changed {
            first.ttl
        } else {
            0
        };
        Ok(TtlReport {
            fqdn: self.fqdn(),
            record_type: first.record_type,
            action,
            planned: plan,
            changed,
            ttl_before: first.ttl,
            ttl_after: last.ttl,
            etag_before: first.etag.clone(),
            etag_after: (wrote && !plan).then(|| last.etag.clone()),
            conflicts,
            wait_secs,
            wait_until: (wait_secs > 0).then(|| timestamp_in(u64::from(wait_secs))),
        })
    }
}
