//! The DNS vocabulary every other module of this crate uses, depending on none of them: the
//! record types, how a value is compared, what a host name is. (It was spread over config.rs
//! and model.rs, which made authoritative, config and model import each other in a circle.)

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// The record types drdctl switches. A switch never turns one into the other (that would need
/// a delete, and clients would cache the NXDOMAIN).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RecordType {
    /// IPv4 address records (each region's value: one or more ingress IPs).
    #[default]
    A,
    /// A canonical name (each region's value: one host name).
    CNAME,
}

impl RecordType {
    /// The ARM path segment and DNS type name.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::A => "A",
            RecordType::CNAME => "CNAME",
        }
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Normalises a value for comparison: sorted, de-duplicated IPv4 addresses for A; the lower
/// case name without the trailing dot for CNAME. Unparseable entries are kept as given.
pub fn normalise(record_type: RecordType, values: &[String]) -> Vec<String> {
    let mut out: Vec<String> = match record_type {
        RecordType::A => values
            .iter()
            .map(|v| {
                v.trim()
                    .parse::<Ipv4Addr>()
                    .map(|ip| ip.to_string())
                    .unwrap_or_else(|_| v.trim().to_string())
            })
            .collect(),
        RecordType::CNAME => values
            .iter()
            .map(|v| v.trim().trim_end_matches('.').to_ascii_lowercase())
            .collect(),
    };
    if record_type == RecordType::A {
        out.sort_by_key(|v| v.parse::<Ipv4Addr>().map(u32::from).unwrap_or(u32::MAX));
    }
    out.dedup();
    out
}

/// Whether `s` is a DNS host name (labels of letters, digits, `-`, `_`; at most 253 chars).
pub(crate) fn is_host_name(s: &str) -> bool {
    let s = s.trim_end_matches('.');
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// The metadata key where `prepare_ttl` records the TTL to restore.
pub const ORIGINAL_TTL_KEY: &str = "drdctl_original_ttl";
