//! What the three services share, so each service crate holds only its own endpoints.
//!
//! - [`config`]: typed configuration from the environment (the seed's variables).
//! - [`db`]: the PostgreSQL pool and the database role (primary, standby, read-only).
//! - [`error`]: the one JSON error shape, `{"error":{"code":"...","message":"..."}}`.
//! - `sqlstate`: what a database error was (read-only, unique or foreign-key violation), for
//!   both of them (re-exported by [`db`]).
//! - [`server`]: routes every service has (health, metrics, OpenAPI, Swagger UI), middleware
//!   (request id, access log, metrics, body limit, error shaping) and graceful shutdown.
//! - [`payload`]: `RawJson`, a JSON body kept as bytes (no `Value` tree), documented as a type.
//! - [`openapi`]: completes the derived OpenAPI document (nullable, statuses of the layers).
//! - [`telemetry`]: tracing setup (JSON logs when not on a TTY).

pub mod config;
mod conn;
pub mod db;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod payload;
pub mod server;
mod sqlstate;
pub mod telemetry;

pub use config::{Limits, ServiceConfig};
pub use error::{ApiError, ApiResult};
pub use payload::RawJson;
pub use server::{AppState, FastRequest, FastRoute, RequestId, Running, ServiceApi, ServiceSpec};
