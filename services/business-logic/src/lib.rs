//! business-logic (:8081): the rules of the application: user validation, order processing,
//! analytics. frontend-api calls `POST /api/v1/validate/user` before it stores a user.

pub mod api;
pub mod validation;

use common::{Running, ServiceConfig, ServiceSpec};

pub const SPEC: ServiceSpec = ServiceSpec {
    name: "business-logic",
    title: "business-logic",
    version: env!("CARGO_PKG_VERSION"),
    // Cents: poem-openapi would check `multipleOf` with an exact float remainder (99.99 % 0.01
    // is not 0), so the rule is checked by `validation::check_amount` and only stated here.
    schema_keywords: &[("OrderInput", "amount", r#"{"multipleOf": 0.01}"#)],
    worker_threads: None,
};
pub const DEFAULT_PORT: u16 = 8081;
/// Requests here are small JSON documents.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// Starts the service on `config.listen` (port 0 picks a free port).
pub async fn start(config: ServiceConfig) -> anyhow::Result<Running> {
    common::server::start(SPEC, config, api::Api::new).await
}
