//! business-logic (:8081): the rules of the application: user validation, order processing,
//! analytics. frontend-api calls `POST /api/v1/validate/user` before it stores a user.

pub mod api;
pub mod validation;

use common::{Running, ServiceConfig, ServiceSpec};

pub const SPEC: ServiceSpec = ServiceSpec {
    name: "business-logic",
    title: "business-logic",
    version: env!("CARGO_PKG_VERSION"),
};
pub const DEFAULT_PORT: u16 = 8081;
/// Requests here are small JSON documents.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// Starts the service on `config.listen` (port 0 picks a free port).
pub async fn start(config: ServiceConfig) -> anyhow::Result<Running> {
    common::server::start(SPEC, config, api::Api::new).await
}
