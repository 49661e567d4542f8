//! frontend-api (:8080): the gateway clients talk to. Stores users (after business-logic has
//! validated them) and passes ingestion through to data-ingest, with the request id.

pub mod api;
mod http1;
pub mod upstream;

use common::{Running, ServiceConfig, ServiceSpec};

pub const SPEC: ServiceSpec = ServiceSpec {
    name: "frontend-api",
    title: "frontend-api",
    version: env!("CARGO_PKG_VERSION"),
    schema_keywords: &[],
    // A gateway waits on sockets: one worker thread spares the wake-ups between two
    // (docs/performance.md, "The gateway").
    worker_threads: Some(1),
};
pub const DEFAULT_PORT: u16 = 8080;
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// Starts the service on `config.listen` (port 0 picks a free port).
pub async fn start(config: ServiceConfig) -> anyhow::Result<Running> {
    let client = upstream::Upstreams::new(&config)?;
    common::server::start(SPEC, config, move |state| api::Api::new(state, client)).await
}
