//! One module per subcommand; each is thin: load config, call adapters/engine, render.

pub mod build_push;
pub mod db;
pub mod deploy;
pub mod dns;
pub mod docs;
#[cfg(feature = "lab")]
pub mod drill;
pub mod failover;
#[cfg(feature = "lab")]
pub mod lab;
#[cfg(feature = "lab")]
pub mod lab_home;
pub mod practice;
pub mod verify;
