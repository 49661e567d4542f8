//! The whole lab world (`lab::world::World`: both regions, the real PostgreSQL pair, the real
//! service processes, the Azure and DNS doubles) driven by real kubectl, as an operator would.
//!
//! Needs the service binaries in the target dir (`cargo test --workspace` builds them; alone:
//! `cargo build -p frontend-api -p business-logic -p data-ingest`).

#[path = "../common/bins.rs"]
mod bins;
mod seed;
mod support;
mod wan;
