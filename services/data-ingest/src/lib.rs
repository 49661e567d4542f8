//! data-ingest (:8082): takes records in (one, many, or batches of up to 10,000 in one
//! all-or-nothing round trip) and reports on what it holds.

pub mod api;
pub mod group;
pub mod records;

use common::{Running, ServiceConfig, ServiceSpec};

pub const SPEC: ServiceSpec = ServiceSpec {
    name: "data-ingest",
    title: "data-ingest",
    version: env!("CARGO_PKG_VERSION"),
    schema_keywords: &[],
    // Its requests wait on the database: one worker thread spares the cross-thread wake-ups
    // and leaves the second core to PostgreSQL (docs/performance.md, "Fourth pass").
    worker_threads: Some(1),
};
pub const DEFAULT_PORT: u16 = 8082;
/// A full batch of 10,000 records with small payloads fits with room to spare.
pub const DEFAULT_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Starts the service on `config.listen` (port 0 picks a free port).
pub async fn start(config: ServiceConfig) -> anyhow::Result<Running> {
    common::server::start(SPEC, config, api::Api::new).await
}
