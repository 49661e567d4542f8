//! drdctl, the operator CLI: deploy, verify, fail over and fail back a two-region application.
//!
//! This is the command surface. The engine and adapters (kube, PostgreSQL, Azure DNS,
//! registry) arrive with their issues; until then a command that is not built yet says so and
//! exits with [`exit::NOT_AVAILABLE`] rather than pretending to work.

pub mod cli;
pub mod exit;

use std::process::ExitCode;

use clap::Parser;

pub fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let (name, issue) = cli.command.pending();
    eprintln!(
        "drdctl {name}: not available in this build yet (tracked as issue #{issue}); \
         see README.md for what works today"
    );
    ExitCode::from(exit::NOT_AVAILABLE)
}
