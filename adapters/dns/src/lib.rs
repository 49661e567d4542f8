//! drd-dns: the DNS step of a failover. One Azure DNS record sends clients to the active
//! region; this crate switches it safely and proves the switch.
//!
//! - [`Dns`] is the adapter trait (read the record set, update it with `If-Match`, ask the
//!   authoritative name servers); [`AzureDns`] is its one real implementation: a thin typed
//!   client for the ARM record-set calls on the azure_core 1.x pipeline, credentials from
//!   azure_identity 1.x ([`Credentials`]), and direct DNS queries (hickory-proto).
//! - [`DnsOps`] holds the operations `drdctl dns show | switch | prepare | restore` and the
//!   failover engine call, each returning a report ([`ShowReport`], [`SwitchReport`],
//!   [`TtlReport`]) with a human `Display` and serde `Serialize`.
//! - [`DnsConfig`] is the `[dns]` section of drdctl.toml, validated with errors naming the key.
//!
//! - [`Witness`] / [`BlobWitness`]: the witness term in an Azure Storage blob (the other
//!   Azure thing drdctl talks to; docs/witness.md).
//!
//! See docs/dns.md for the why (crate decision, TTL discipline) and how to test.

mod arm;
mod authoritative;
mod azure;
mod config;
mod credential;
mod error;
mod model;
mod ops;
mod report;
mod transport;
mod types;
mod witness;

use async_trait::async_trait;

pub use arm::API_VERSION;
pub use authoritative::ServerAnswer;
pub use azure::AzureDns;
pub use config::{AuthMethod, ConfigError, DnsConfig, RecordType, Target};
pub use credential::{CredentialKind, Credentials, EnvLookup};
pub use error::DnsError;
pub use model::{RecordSet, ZoneInfo};
pub use ops::{
    AuthoritativeReport, DnsOps, ShowReport, SwitchOptions, SwitchOutcome, SwitchReport, TtlAction,
    TtlReport, ORIGINAL_TTL_KEY,
};
pub use types::normalise;
pub use witness::{
    BlobWitness, Condition, Term, Versioned, Witness, WitnessConfig, WitnessError, WriteOutcome,
};

/// What a conditional update did.
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateOutcome {
    /// Written; the record set as stored (new ETag).
    Updated(RecordSet),
    /// The ETag no longer matched (412): someone changed the record since it was read.
    PreconditionFailed,
}

/// The application's DNS record: one record set of the configured type and name.
#[async_trait]
pub trait Dns: Send + Sync + std::fmt::Debug {
    /// The configuration the adapter serves.
    fn config(&self) -> &DnsConfig;

    /// Reads the record set (with its ETag).
    async fn read(&self) -> Result<RecordSet, DnsError>;

    /// Replaces the record set if its ETag is still `if_match`.
    async fn update(&self, record: &RecordSet, if_match: &str) -> Result<UpdateOutcome, DnsError>;

    /// Asks each authoritative name server, once, what it serves for the record.
    async fn query_authoritative(&self) -> Result<Vec<ServerAnswer>, DnsError>;
}
