//! The local two-region lab: the doubles that stand in for what cannot run on our machines.
//! The Kubernetes API double ([`kube_api::KubeDouble`]), real processes for the services'
//! pods ([`pods`]), the Azure DNS + token double ([`azure::AzureDouble`]) and the
//! authoritative name server ([`dns_server::DnsServer`]); the PostgreSQL pair joins them.
//! [`world`] puts them together as two regions; [`traffic`] is the drill's load generator.

pub mod azure;
pub mod control;
pub mod dns_server;
pub mod faults;
pub mod guards;
pub mod kube_api;
pub mod nodelay;
pub mod pg;
pub mod pods;
pub mod traffic;
pub mod wan;
pub mod world;

pub use azure::AzureDouble;
pub use dns_server::DnsServer;
pub use kube_api::{KubeDouble, KubeDoubleConfig};
pub use pg::{PgNode, PgPair, PgPairConfig, PgPodRuntime};
