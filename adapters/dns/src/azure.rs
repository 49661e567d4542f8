//! [`AzureDns`], the one real [`Dns`]: the configured record set in Azure DNS (through the ARM
//! client) and the zone's authoritative name servers (queried directly). It wires the pieces
//! from the `[dns]` config: endpoints (real https, or the lab's loopback doubles through the
//! loopback transport), the credential chain, the ARM scope.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, Transport, Url};
use tokio::sync::OnceCell;
use tokio::task::JoinSet;

use crate::arm::{ArmClient, PutResult};
use crate::authoritative::{self, NameServer, ServerAnswer};
use crate::config::{DnsConfig, RecordType};
use crate::credential::{CredentialKind, Credentials, EnvLookup};
use crate::error::DnsError;
use crate::model::{ParseError, RecordSet};
use crate::transport::{Endpoint, LoopbackTransport, LAB_ARM_HOST, LAB_LOGIN_HOST};
use crate::{Dns, UpdateOutcome};

const PUBLIC_ARM: &str = "https://management.azure.com";
const PUBLIC_ARM_SCOPE: &str = "https://management.azure.com/.default";

/// The Azure DNS record set named by a [`DnsConfig`], and its authoritative name servers.
pub struct AzureDns {
    cfg: DnsConfig,
    arm: ArmClient,
    credentials: Vec<CredentialKind>,
    name_servers: OnceCell<Vec<NameServer>>,
}

impl std::fmt::Debug for AzureDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureDns")
            .field("record", &self.cfg.fqdn())
            .field("record_type", &self.cfg.record_type)
            .field("credentials", &self.credentials)
            .field("arm", &self.arm)
            .finish_non_exhaustive()
    }
}

/// Transport and cloud settings shared by the token requests and the ARM pipeline.
struct Wiring {
    client_options: ClientOptions,
    arm_base: Url,
    scope: String,
}

fn wiring(cfg: &DnsConfig) -> Result<Wiring, DnsError> {
    cfg.validate()?;
    let parse = |key: &str, v: &Option<String>| -> Result<Option<Endpoint>, DnsError> {
        v.as_deref()
            .map(|s| {
                Endpoint::parse(s).map_err(|m| {
                    DnsError::Config(crate::config::ConfigError {
                        key: key.into(),
                        message: m,
                    })
                })
            })
            .transpose()
    };
    let arm = parse("dns.arm_endpoint", &cfg.arm_endpoint)?;
    let login = parse("dns.authority_host", &cfg.authority_host)?;
    let mut routes: Vec<(String, SocketAddr)> = Vec::new();
    let fixed_url = |s: &str| Url::parse(s).expect("a constant URL");
    let (arm_base, default_scope) = match &arm {
        None => (fixed_url(PUBLIC_ARM), PUBLIC_ARM_SCOPE.to_string()),
        Some(Endpoint::Https(u)) => {
            let scope = format!("{}/.default", u.as_str().trim_end_matches('/'));
            (u.clone(), scope)
        }
        Some(Endpoint::Loopback(addr)) => {
            routes.push((LAB_ARM_HOST.into(), *addr));
            (
                fixed_url(&format!("https://{LAB_ARM_HOST}")),
                PUBLIC_ARM_SCOPE.to_string(),
            )
        }
    };
    let authority = match &login {
        None => None,
        Some(Endpoint::Https(u)) => Some(u.as_str().trim_end_matches('/').to_string()),
        Some(Endpoint::Loopback(addr)) => {
            routes.push((LAB_LOGIN_HOST.into(), *addr));
            Some(format!("https://{LAB_LOGIN_HOST}"))
        }
    };
    let mut client_options = ClientOptions::default();
    if !routes.is_empty() {
        let inner = azure_core::http::new_http_client(None);
        client_options.transport = Some(Transport::new(Arc::new(LoopbackTransport::new(
            inner, routes,
        ))));
    }
    if let Some(host) = authority {
        let mut custom = CustomConfiguration::default();
        custom.authority_host = host;
        client_options.cloud = Some(Arc::new(CloudConfiguration::Custom(custom)));
    }
    Ok(Wiring {
        client_options,
        arm_base,
        scope: cfg.arm_scope.clone().unwrap_or(default_scope),
    })
}

impl AzureDns {
    /// Builds the adapter from the process environment (credentials per `dns.auth`).
    pub fn from_env(cfg: &DnsConfig) -> Result<Self, DnsError> {
        Self::with_env(cfg, &|k| std::env::var(k).ok())
    }

    /// Builds the adapter with an explicit environment lookup (tests, `drdctl lab`).
    pub fn with_env(cfg: &DnsConfig, env: EnvLookup<'_>) -> Result<Self, DnsError> {
        let w = wiring(cfg)?;
        let chain = Credentials::from_env(
            cfg.auth,
            env,
            &w.client_options,
            cfg.managed_identity_client_id.as_deref(),
        )?;
        let kinds = chain.kinds();
        let arm = ArmClient::new(cfg, w.arm_base, w.scope, Arc::new(chain), w.client_options);
        Ok(AzureDns {
            cfg: cfg.clone(),
            arm,
            credentials: kinds,
            name_servers: OnceCell::new(),
        })
    }

    /// Builds the adapter with a credential of the caller's choosing.
    pub fn with_credential(
        cfg: &DnsConfig,
        credential: Arc<dyn TokenCredential>,
    ) -> Result<Self, DnsError> {
        let w = wiring(cfg)?;
        let arm = ArmClient::new(cfg, w.arm_base, w.scope, credential, w.client_options);
        Ok(AzureDns {
            cfg: cfg.clone(),
            arm,
            credentials: Vec::new(),
            name_servers: OnceCell::new(),
        })
    }

    /// The configuration this adapter was built from.
    pub fn config(&self) -> &DnsConfig {
        &self.cfg
    }

    /// The credentials in the chain, in the order they are tried.
    pub fn credentials(&self) -> &[CredentialKind] {
        &self.credentials
    }

    async fn name_servers(&self) -> Result<&Vec<NameServer>, DnsError> {
        self.name_servers
            .get_or_try_init(|| async {
                let list = if self.cfg.name_servers.is_empty() {
                    let zone = self.arm.get_zone().await?;
                    if zone.name_servers.is_empty() {
                        return Err(DnsError::NameServers(format!(
                            "the zone {} lists no name servers in Azure; set dns.name_servers",
                            self.cfg.zone
                        )));
                    }
                    zone.name_servers
                } else {
                    self.cfg.name_servers.clone()
                };
                authoritative::resolve(&list)
                    .await
                    .map_err(|m| DnsError::NameServers(format!("{m}; check dns.name_servers")))
            })
            .await
    }

    fn parse(&self, body: &serde_json::Value) -> Result<RecordSet, DnsError> {
        RecordSet::from_arm(body, self.cfg.record_type).map_err(|e| match e {
            ParseError::Alias(target) => DnsError::Alias {
                fqdn: self.cfg.fqdn(),
                target,
            },
            ParseError::Invalid(message) => DnsError::InvalidResponse {
                operation: "read the DNS record set",
                message,
            },
        })
    }

    async fn not_found(&self) -> DnsError {
        let other = match self.cfg.record_type {
            RecordType::A => RecordType::CNAME,
            RecordType::CNAME => RecordType::A,
        };
        let hint = match self.arm.get_record_set(other, &self.cfg.record).await {
            Ok(Some(_)) => format!(
                " (but there is {} {other} record set of that name: set dns.record_type = \
                 \"{other}\"; drdctl never turns one type into the other)",
                if other == RecordType::A { "an" } else { "a" }
            ),
            _ => String::new(),
        };
        DnsError::RecordNotFound {
            record_type: self.cfg.record_type,
            record: self.cfg.record.clone(),
            zone: self.cfg.zone.clone(),
            hint,
        }
    }
}

#[async_trait]
impl Dns for AzureDns {
    fn config(&self) -> &DnsConfig {
        &self.cfg
    }

    async fn read(&self) -> Result<RecordSet, DnsError> {
        match self
            .arm
            .get_record_set(self.cfg.record_type, &self.cfg.record)
            .await?
        {
            Some(body) => self.parse(&body),
            None => Err(self.not_found().await),
        }
    }

    async fn update(&self, record: &RecordSet, if_match: &str) -> Result<UpdateOutcome, DnsError> {
        if record.record_type != self.cfg.record_type {
            return Err(DnsError::InvalidResponse {
                operation: "update the DNS record set",
                message: format!(
                    "refusing to write a {} record set where dns.record_type is {}",
                    record.record_type, self.cfg.record_type
                ),
            });
        }
        match self
            .arm
            .put_record_set(
                self.cfg.record_type,
                &self.cfg.record,
                &record.to_arm_put(),
                if_match,
            )
            .await?
        {
            PutResult::Written(body) => Ok(UpdateOutcome::Updated(self.parse(&body)?)),
            PutResult::PreconditionFailed => Ok(UpdateOutcome::PreconditionFailed),
            PutResult::NotFound => Err(self.not_found().await),
        }
    }

    async fn query_authoritative(&self) -> Result<Vec<ServerAnswer>, DnsError> {
        let servers = self.name_servers().await?.clone();
        let fqdn = self.cfg.fqdn();
        let (rtype, timeout) = (self.cfg.record_type, self.cfg.query_timeout());
        let mut set = JoinSet::new();
        for (i, ns) in servers.into_iter().enumerate() {
            let fqdn = fqdn.clone();
            set.spawn(async move { (i, authoritative::query(&ns, &fqdn, rtype, timeout).await) });
        }
        let mut answers = Vec::new();
        while let Some(joined) = set.join_next().await {
            if let Ok(a) = joined {
                answers.push(a);
            }
        }
        answers.sort_by_key(|(i, _)| *i);
        Ok(answers.into_iter().map(|(_, a)| a).collect())
    }
}
