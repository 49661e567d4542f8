//! The glue between the two adapters: drd-db's [`PodHost`] (what the database adapter needs of
//! its region's cluster) implemented with drd-kube, drdctl's one Kubernetes client. drd-kube
//! owns the `postgresql-role` ConfigMap; drd-db only asks for it through here.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use drd_db::{Forward, HostError, PodHost, PodNames};
use drd_kube::{Cluster, KubeCluster, KubeError, PortForward, RestartError};
use secrecy::SecretString;

/// A region's database pod, reached through `cluster` (whose namespace is the pod's).
pub struct KubeHost {
    cluster: KubeCluster,
    names: PodNames,
}

impl std::fmt::Debug for KubeHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeHost")
            .field("names", &self.names)
            .finish()
    }
}

impl KubeHost {
    /// The pod named by `names`, through `cluster` acting in the names' namespace.
    pub fn new(cluster: &KubeCluster, names: PodNames) -> Arc<Self> {
        let cluster = cluster.in_namespace(&names.namespace);
        Arc::new(KubeHost { cluster, names })
    }
}

fn api(e: KubeError) -> HostError {
    match e {
        KubeError::MissingSecret { .. } => HostError::MissingSecret(e.to_string()),
        e => HostError::Api(Box::new(e)),
    }
}

struct Forwarded(PortForward);

#[async_trait]
impl Forward for Forwarded {
    fn addr(&self) -> SocketAddr {
        self.0.addr()
    }
    async fn take_error(&self, wait: Duration) -> Option<String> {
        self.0.take_error(wait).await
    }
}

#[async_trait]
impl PodHost for KubeHost {
    fn names(&self) -> &PodNames {
        &self.names
    }

    async fn secret_value(&self, keys: &[&str]) -> Result<SecretString, HostError> {
        self.cluster
            .secret_first(&self.names.secret, keys)
            .await
            .map_err(api)
    }

    async fn forward(&self) -> std::io::Result<Box<dyn Forward>> {
        let pf = self
            .cluster
            .port_forward(&self.names.pod, self.names.port)
            .await?;
        Ok(Box::new(Forwarded(pf)))
    }

    async fn role_config(&self) -> Result<BTreeMap<String, String>, HostError> {
        let name = &self.names.role_config_map;
        match self.cluster.configmap(name).await.map_err(api)? {
            Some(data) => Ok(data),
            None => Err(HostError::Api(
                format!(
                    "ConfigMap {}/{name} not found (kube context {}): drdctl deploy creates it",
                    self.names.namespace, self.names.context
                )
                .into(),
            )),
        }
    }

    async fn patch_role_config(&self, data: &BTreeMap<String, String>) -> Result<(), HostError> {
        self.cluster
            .patch_configmap(&self.names.role_config_map, data)
            .await
            .map_err(api)
    }

    async fn restart_pod(&self, timeout: Duration) -> Result<String, HostError> {
        match self.cluster.restart_pod(&self.names.pod, timeout).await {
            Ok(log) => Ok(log),
            Err(RestartError::Kube(e)) => Err(api(e)),
            Err(RestartError::NotReady(n)) => Err(HostError::NotReady {
                reason: n.reason,
                log: n.log,
            }),
        }
    }
}
