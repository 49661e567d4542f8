//! Everything that can go wrong with the DNS record, each with a message that says what to do
//! (the key to fix, the variable to set, the deadline to raise). Errors hold only text drdctl
//! built or sanitised: never a token, a secret, or an SDK error whose `Debug` might print a
//! response's headers.

use std::time::Duration;

use crate::config::{ConfigError, RecordType};

/// Formats a duration for people: `60 s`, `1.5 s`, `250 ms`.
pub(crate) fn human(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{} ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// A DNS adapter failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// The `[dns]` section is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// No credential could get a token (the message lists what was tried and why it failed).
    #[error("{0}")]
    Credential(String),

    /// ARM refused the token (401) or the identity lacks permission (403).
    #[error(
        "Azure Resource Manager refused drdctl's identity to {operation} ({status} {code}): \
         {message}{hint}"
    )]
    Unauthorized {
        /// What drdctl was doing.
        operation: &'static str,
        /// 401 or 403.
        status: u16,
        /// ARM error code.
        code: String,
        /// ARM error message.
        message: String,
        /// What to do.
        hint: &'static str,
    },

    /// The zone (or its resource group) does not exist.
    #[error(
        "the DNS zone {zone} was not found in resource group {resource_group} of subscription \
         {subscription} (ARM: {code}: {message}); check dns.subscription, dns.resource_group \
         and dns.zone"
    )]
    ZoneNotFound {
        /// Zone name.
        zone: String,
        /// Resource group.
        resource_group: String,
        /// Subscription.
        subscription: String,
        /// ARM error code.
        code: String,
        /// ARM error message.
        message: String,
    },

    /// The record set does not exist.
    #[error(
        "the {record_type} record set {record} does not exist in zone {zone}{hint}; drdctl \
         never creates or deletes it: create it in Azure first, or fix dns.record / \
         dns.record_type"
    )]
    RecordNotFound {
        /// Record type looked for.
        record_type: RecordType,
        /// Relative record name.
        record: String,
        /// Zone.
        zone: String,
        /// Extra help (e.g. a record of the other type exists).
        hint: String,
    },

    /// The record set is an Azure alias record.
    #[error(
        "{fqdn} is an Azure alias record set (it points at the resource {target}); drdctl \
         switches only plain A or CNAME record sets: fail the alias target over instead, or \
         make the record a plain one"
    )]
    Alias {
        /// The record.
        fqdn: String,
        /// `targetResource.id`.
        target: String,
    },

    /// Between drdctl's read and its write, someone set the record to another value.
    #[error(
        "{fqdn} changed while drdctl was updating it: it held {expected} when drdctl read it, \
         and now holds {found} (ETag {etag}). Someone else is changing this record; drdctl \
         overwrote nothing. Find out who changed it, then run the command again"
    )]
    ConcurrentChange {
        /// The record.
        fqdn: String,
        /// The value drdctl read first.
        expected: String,
        /// The value found after the conflict.
        found: String,
        /// Its ETag.
        etag: String,
    },

    /// Conflicting writes kept coming.
    #[error(
        "{fqdn}: gave up after {conflicts} conflicting concurrent updates (412 Precondition \
         Failed each time); someone else keeps changing this record"
    )]
    TooManyConflicts {
        /// The record.
        fqdn: String,
        /// How many 412s.
        conflicts: u32,
    },

    /// No target configured for that region.
    #[error("no DNS target for region {region:?}: dns.targets has {known}")]
    UnknownRegion {
        /// The region asked for.
        region: String,
        /// The configured regions.
        known: String,
    },

    /// ARM throttled and asked for a wait that does not fit in the deadline.
    #[error(
        "Azure Resource Manager throttled the request to {operation} (429 Too Many Requests) \
         and asked to retry after {}, more than the {} left of the {} deadline \
         (dns.call_deadline_secs); wait and run again, or raise dns.call_deadline_secs",
        human(*retry_after), human(*remaining), human(*deadline)
    )]
    Throttled {
        /// What drdctl was doing.
        operation: &'static str,
        /// The server's `Retry-After`.
        retry_after: Duration,
        /// Time left when it was asked.
        remaining: Duration,
        /// The whole deadline.
        deadline: Duration,
    },

    /// The call's overall deadline passed.
    #[error(
        "could not {operation} within the {} deadline (dns.call_deadline_secs) after \
         {attempts} attempt(s); last: {last}",
        human(*deadline)
    )]
    Deadline {
        /// What drdctl was doing.
        operation: &'static str,
        /// The deadline.
        deadline: Duration,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },

    /// Every retry failed.
    #[error(
        "could not {operation} after {attempts} attempts (dns.max_retries = {max_retries}); \
         last: {last}"
    )]
    RetriesExhausted {
        /// What drdctl was doing.
        operation: &'static str,
        /// Attempts made.
        attempts: u32,
        /// The configured retries.
        max_retries: u32,
        /// The last failure.
        last: String,
    },

    /// ARM answered an error drdctl does not retry.
    #[error(
        "could not {operation}: Azure Resource Manager answered {status} {code}: {message} \
         (x-ms-request-id {request_id})"
    )]
    Arm {
        /// What drdctl was doing.
        operation: &'static str,
        /// HTTP status.
        status: u16,
        /// ARM error code.
        code: String,
        /// ARM error message.
        message: String,
        /// For a support case.
        request_id: String,
    },

    /// The request could not be sent (and retrying would not help).
    #[error("could not {operation}: {message}")]
    Transport {
        /// What drdctl was doing.
        operation: &'static str,
        /// Why.
        message: String,
    },

    /// ARM answered something drdctl cannot read.
    #[error("could not {operation}: unexpected answer from Azure Resource Manager: {message}")]
    InvalidResponse {
        /// What drdctl was doing.
        operation: &'static str,
        /// What was wrong.
        message: String,
    },

    /// The authoritative name servers cannot be found or resolved.
    #[error("{0}")]
    NameServers(String),

    /// The authoritative name servers did not serve the value in time.
    #[error(
        "the authoritative name servers did not serve {fqdn} {record_type} {expected} within \
         the {} deadline (dns.authoritative_deadline_secs){updated}: {answers}",
        human(*deadline)
    )]
    NotServed {
        /// The record.
        fqdn: String,
        /// Its type.
        record_type: RecordType,
        /// The value waited for.
        expected: String,
        /// The deadline.
        deadline: Duration,
        /// What each server answered last.
        answers: String,
        /// Whether Azure already holds the new value (text for the message).
        updated: String,
    },

    /// The record was switched in Azure, but the authoritative check could not run.
    #[error(
        "{fqdn} now holds {value} in Azure DNS (ETag {etag}), but drdctl could not confirm it \
         on the authoritative name servers: {reason}"
    )]
    Unconfirmed {
        /// The record.
        fqdn: String,
        /// The value Azure holds.
        value: String,
        /// Its ETag.
        etag: String,
        /// Why the check could not run.
        reason: String,
    },

    /// `restore` with no TTL given and none recorded by `prepare`.
    #[error(
        "{fqdn}: no original TTL recorded in the record's metadata ({key}, written by \
         `drdctl dns prepare`); give the TTL to restore explicitly"
    )]
    NoOriginalTtl {
        /// The record.
        fqdn: String,
        /// The metadata key.
        key: &'static str,
    },

    /// A TTL outside Azure's range.
    #[error("TTL {0} is out of range: Azure DNS accepts 1 to 2147483647 seconds")]
    InvalidTtl(u64),
}
