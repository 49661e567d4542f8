//! drdctl's exit codes, in one place (the table is in docs/cli.md).
//!
//! Every command ends in one of these; [`Failure`] is the one error type at the binary's edge,
//! and [`of_outcome`] maps the engine's outcomes.

use crate::engine::Outcome;

/// Success (for `status`: one active region, and everything agrees).
pub const OK: u8 = 0;
/// A check failed, or an operation was refused or failed before it changed anything.
pub const FAILED: u8 = 1;
/// Usage or configuration error (clap also uses 2 for usage errors).
pub const USAGE: u8 = 2;
/// An operation stopped midway; the message says how to resume or abandon it.
pub const STOPPED_MIDWAY: u8 = 3;
/// `status`: two writable databases (split brain).
pub const SPLIT_BRAIN: u8 = 4;
/// `status`: no region can be named active (unreachable, or the observers disagree).
pub const UNKNOWN: u8 = 5;
/// Interrupted (Ctrl-C) before anything changed, or killed by a second Ctrl-C.
pub const INTERRUPTED: u8 = 130;
/// stdout was closed early (`drdctl status | head -1`): ended quietly, as SIGPIPE would.
pub const BROKEN_PIPE: u8 = 141;

/// Why a command failed, as the binary's edge sees it.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The configuration could not be loaded or is invalid.
    #[error("{0:#}")]
    Config(anyhow::Error),
    /// The command line was wrong in a way clap could not tell.
    #[error("{0:#}")]
    Usage(anyhow::Error),
    /// The command failed before changing anything.
    #[error("{0:#}")]
    Failed(#[from] anyhow::Error),
}

impl Failure {
    pub fn error(&self) -> &anyhow::Error {
        match self {
            Failure::Config(e) | Failure::Usage(e) | Failure::Failed(e) => e,
        }
    }

    pub fn code(&self) -> u8 {
        match self {
            Failure::Config(_) | Failure::Usage(_) => USAGE,
            Failure::Failed(_) => FAILED,
        }
    }
}

/// The exit code of a failover or failback.
pub fn of_outcome(o: &Outcome) -> u8 {
    match o {
        Outcome::Planned { plan } => {
            if plan.refusal().is_some() {
                FAILED
            } else {
                OK
            }
        }
        Outcome::NothingToDo { .. } | Outcome::Done { .. } => OK,
        Outcome::Refused { .. } | Outcome::NotConfirmed => FAILED,
        Outcome::FailedUnchanged { interrupted, .. } => {
            if *interrupted {
                INTERRUPTED
            } else {
                FAILED
            }
        }
        Outcome::Stopped { .. } => STOPPED_MIDWAY,
    }
}
