//! drdctl's exit codes, in one place (documented in docs/cli.md).

/// Success.
pub const OK: u8 = 0;
/// A check failed, or an operation was refused before it changed anything.
pub const FAILED: u8 = 1;
/// Usage or configuration error (clap also uses 2 for usage errors).
pub const USAGE: u8 = 2;
/// An operation stopped midway; the message says how to resume.
pub const STOPPED_MIDWAY: u8 = 3;
