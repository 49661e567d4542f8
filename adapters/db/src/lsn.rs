//! PostgreSQL WAL positions (`pg_lsn`): parsed from and printed as `X/Y` hex, compared and
//! subtracted in bytes.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// A WAL location. `Lsn(0)` is `0/0`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Bytes of WAL from `earlier` to `self` (0 when `earlier` is ahead).
    pub fn bytes_since(self, earlier: Lsn) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// An `X/Y` string that is not an LSN.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0:?} is not a WAL location (expected X/Y in hex, e.g. 0/3000148)")]
pub struct BadLsn(String);

impl FromStr for Lsn {
    type Err = BadLsn;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadLsn(s.to_string());
        let (hi, lo) = s.trim().split_once('/').ok_or_else(bad)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl Serialize for Lsn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Parses an optional text LSN from SQL (`NULL` stays `None`).
pub(crate) fn opt(s: Option<String>) -> Option<Lsn> {
    s.and_then(|s| s.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_subtracts() {
        let a: Lsn = "0/3000148".parse().unwrap();
        assert_eq!(a.to_string(), "0/3000148");
        let b: Lsn = "1/0".parse().unwrap();
        assert_eq!(b.0, 1 << 32);
        assert_eq!(b.bytes_since(a), (1 << 32) - 0x300_0148);
        assert_eq!(a.bytes_since(b), 0);
        assert!("3000148".parse::<Lsn>().is_err());
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"0/3000148\"");
    }
}
