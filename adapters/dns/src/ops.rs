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

use std::sync::Arc;
use std::time::Instant;

use azure_core::time::{to_rfc3339, OffsetDateTime};

use crate::authoritative::ServerAnswer;
use crate::config::DnsConfig;
use crate::error::DnsError;
use crate::model::RecordSet;
pub use crate::report::{
    AuthoritativeReport, ShowReport, SwitchOutcome, SwitchReport, TtlAction, TtlReport,
};
use crate::types::normalise;
use crate::{Dns, UpdateOutcome};

pub use crate::types::ORIGINAL_TTL_KEY;

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
