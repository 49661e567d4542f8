//! The region's Kubernetes side, as the database adapter needs it, as a trait: the password
//! secret, a port-forward to the PostgreSQL pod, the `postgresql-role` ConfigMap start.sh reads,
//! and a pod restart. drd-db has no Kubernetes client of its own: drdctl implements
//! [`PodHost`] with its one Kubernetes adapter, drd-kube (cli/src/dbhost.rs), which owns the
//! ConfigMap.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::SecretString;

/// The names of the region's PostgreSQL objects, and the kube context (for messages).
#[derive(Clone, Debug)]
pub struct PodNames {
    /// The kube context's name.
    pub context: String,
    /// Namespace of the PostgreSQL objects (`default`).
    pub namespace: String,
    /// The PostgreSQL pod (`postgresql-0`).
    pub pod: String,
    /// Its container port (5432).
    pub port: u16,
    /// The password secret (`postgresql-secret`).
    pub secret: String,
    /// The desired-role ConfigMap start.sh reads (`postgresql-role`).
    pub role_config_map: String,
}

impl PodNames {
    /// The manifests' names: pod `postgresql-0` port 5432, `postgresql-secret`,
    /// `postgresql-role`, in `namespace`.
    pub fn new(context: &str, namespace: &str) -> Self {
        PodNames {
            context: context.to_string(),
            namespace: namespace.to_string(),
            pod: "postgresql-0".into(),
            port: 5432,
            secret: "postgresql-secret".into(),
            role_config_map: "postgresql-role".into(),
        }
    }
}

/// What the cluster answered instead.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The password secret, or every key looked for in it, is missing.
    #[error("{0}")]
    MissingSecret(String),
    /// The restarted pod did not become Ready.
    #[error("{reason}")]
    NotReady {
        /// What was seen.
        reason: String,
        /// The tail of the pod's log.
        log: String,
    },
    /// The API refused, or could not be reached (the message says which, and what to do).
    #[error(transparent)]
    Api(Box<dyn std::error::Error + Send + Sync>),
}

/// A local address that reaches the pod's port, one forward stream per connection.
#[async_trait]
pub trait Forward: Send + Sync {
    /// Where to connect.
    fn addr(&self) -> SocketAddr;
    /// The latest forward failure, waiting up to `wait` for one to be reported.
    async fn take_error(&self, wait: Duration) -> Option<String>;
}

/// The region's cluster, for its database.
#[async_trait]
pub trait PodHost: Send + Sync + std::fmt::Debug {
    /// The names of the objects.
    fn names(&self) -> &PodNames;
    /// The first of `keys` present in the password secret.
    async fn secret_value(&self, keys: &[&str]) -> Result<SecretString, HostError>;
    /// A local listener forwarding to the pod's port.
    async fn forward(&self) -> std::io::Result<Box<dyn Forward>>;
    /// The role ConfigMap's data.
    async fn role_config(&self) -> Result<BTreeMap<String, String>, HostError>;
    /// Merges `data` into the role ConfigMap.
    async fn patch_role_config(&self, data: &BTreeMap<String, String>) -> Result<(), HostError>;
    /// Deletes the pod and waits up to `timeout` for its replacement to be Ready; its log.
    async fn restart_pod(&self, timeout: Duration) -> Result<String, HostError>;
}
