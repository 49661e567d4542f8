//! How to reach one region's PostgreSQL and with which credentials.

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use crate::host::PodHost;

/// How SQL connections reach the server.
#[derive(Clone, Debug)]
pub enum Access {
    /// Through the kube API's port-forward to the PostgreSQL pod (needs nothing but kube
    /// access; arrives on the pod's loopback, where the superuser may log in).
    PortForward,
    /// A libpq URL (`postgres://host:port`); user, database and password are taken from the
    /// config unless the URL has them.
    Url(String),
}

/// Where the password comes from.
#[derive(Clone, Debug)]
pub enum PasswordSource {
    /// The region's secret through the kube API: `superuser-password` for the superuser,
    /// falling back to `password`, as start.sh does.
    KubeSecret,
    /// An environment variable.
    Env(String),
    /// A value given directly.
    Value(SecretString),
}

/// One region's database.
#[derive(Clone, Debug)]
pub struct RegionConfig {
    /// The region's name (`primary`, `dr`).
    pub region: String,
    /// How to connect.
    pub access: Access,
    /// The region's cluster (required for port-forward, the secret, and rejoin).
    pub kube: Option<Arc<dyn PodHost>>,
    /// The user drdctl logs in as: the superuser (`postgres`), needed for promote, fence and
    /// slots.
    pub user: String,
    /// The application database (`appdb`), where init-db applies the schema.
    pub database: String,
    /// Where the password comes from.
    pub password: PasswordSource,
    /// The application's user (`appuser`): init-db creates objects as this role so the
    /// services own their tables.
    pub app_user: String,
    /// The physical slot for the other region (`dr_slot`).
    pub slot: String,
    /// The other region's name, for messages (`init-db` on a standby names it).
    pub peer_region: String,
    /// Limit of one connection attempt.
    pub connect_timeout: Duration,
}

impl RegionConfig {
    /// Port-forward through `kube`, password from the region's secret: the default access.
    pub fn port_forward(region: &str, kube: Arc<dyn PodHost>) -> Self {
        RegionConfig {
            region: region.to_string(),
            access: Access::PortForward,
            kube: Some(kube),
            ..Self::base(region)
        }
    }

    /// A direct URL, password from `password`.
    pub fn url(region: &str, url: &str, password: PasswordSource) -> Self {
        RegionConfig {
            access: Access::Url(url.to_string()),
            password,
            ..Self::base(region)
        }
    }

    fn base(region: &str) -> Self {
        RegionConfig {
            region: region.to_string(),
            access: Access::PortForward,
            kube: None,
            user: "postgres".into(),
            database: "appdb".into(),
            password: PasswordSource::KubeSecret,
            app_user: "appuser".into(),
            slot: "dr_slot".into(),
            peer_region: if region == "primary" { "dr" } else { "primary" }.into(),
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// How this region is reached, for messages.
    pub fn via(&self) -> String {
        match (&self.access, &self.kube) {
            (Access::PortForward, Some(k)) => {
                let k = k.names();
                format!(
                    "port-forward to pod {}/{}:{} (kube context {})",
                    k.namespace, k.pod, k.port, k.context
                )
            }
            (Access::PortForward, None) => "port-forward (no kube context configured)".into(),
            (Access::Url(u), _) => redact_url(u),
        }
    }
}

/// The URL without its password.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or_default();
            format!("{}{user}@{}", &url[..s + 3], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_lose_their_password() {
        assert_eq!(
            super::redact_url("postgres://postgres:s3cret@db:5432/appdb"),
            "postgres://postgres@db:5432/appdb"
        );
        assert_eq!(
            super::redact_url("postgres://db:5432"),
            "postgres://db:5432"
        );
    }
}
