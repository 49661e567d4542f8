//! The `[dns]` section of drdctl.toml: which Azure DNS record drdctl switches, what each region
//! points it at, which name servers prove a switch, how credentials are chosen, and the
//! deadlines. Validated once at load, with errors that name the key (`dns.zone`), because an
//! operator in the middle of a failover needs to know which line to fix.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

pub use crate::types::RecordType;
use crate::types::{is_host_name, normalise};

/// How drdctl gets an Azure token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    /// Try, in order: workload identity (`AZURE_FEDERATED_TOKEN_FILE`), a service principal
    /// (`AZURE_CLIENT_SECRET`), managed identity (when `IDENTITY_ENDPOINT` says there is one),
    /// the Azure CLI (`az` on PATH). Each is tried only when its environment is present.
    #[default]
    Auto,
    /// Service principal: `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`.
    ClientSecret,
    /// AKS workload identity: `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_FEDERATED_TOKEN_FILE`.
    WorkloadIdentity,
    /// Managed identity (App Service / IMDS); `dns.managed_identity_client_id` picks a
    /// user-assigned one.
    ManagedIdentity,
    /// The identity logged in to the Azure CLI (`az login`).
    AzureCli,
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthMethod::Auto => "auto",
            AuthMethod::ClientSecret => "client-secret",
            AuthMethod::WorkloadIdentity => "workload-identity",
            AuthMethod::ManagedIdentity => "managed-identity",
            AuthMethod::AzureCli => "azure-cli",
        })
    }
}

impl std::str::FromStr for AuthMethod {
    type Err = String;

    /// The names `dns.auth` takes (`auto`, `client-secret`, ...).
    fn from_str(s: &str) -> Result<Self, String> {
        [
            AuthMethod::Auto,
            AuthMethod::ClientSecret,
            AuthMethod::WorkloadIdentity,
            AuthMethod::ManagedIdentity,
            AuthMethod::AzureCli,
        ]
        .into_iter()
        .find(|m| m.to_string() == s)
        .ok_or_else(|| {
            format!(
                "{s:?}: use auto, client-secret, workload-identity, managed-identity or azure-cli"
            )
        })
    }
}

/// A region's value for the record: one or more IPv4 addresses (A) or one host name (CNAME).
/// In TOML either a string or a list of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Target(pub Vec<String>);

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(s) => Target(vec![s]),
            OneOrMany::Many(v) => Target(v),
        })
    }
}

impl From<Vec<String>> for Target {
    fn from(v: Vec<String>) -> Self {
        Target(v)
    }
}

impl From<&str> for Target {
    fn from(s: &str) -> Self {
        Target(vec![s.to_string()])
    }
}

fn default_call_deadline() -> u64 {
    60
}
fn default_attempt_timeout() -> u64 {
    20
}
fn default_max_retries() -> u32 {
    6
}
fn default_authoritative_deadline() -> u64 {
    120
}
fn default_authoritative_poll() -> u64 {
    1000
}
fn default_query_timeout() -> u64 {
    2000
}

/// The `[dns]` section of drdctl.toml.
///
/// ```toml
/// [dns]
/// subscription = "00000000-0000-0000-0000-000000000000"
/// resource_group = "rg-dns"
/// zone = "example.com"
/// record = "app"
/// record_type = "A"
/// name_servers = ["ns1-01.azure-dns.com", "ns2-01.azure-dns.net"]
///
/// [dns.targets]
/// primary = "203.0.113.10"
/// dr = "198.51.100.20"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// Azure subscription id that holds the zone.
    pub subscription: String,
    /// Resource group of the zone.
    pub resource_group: String,
    /// The zone (`example.com`, no trailing dot).
    pub zone: String,
    /// The record set name relative to the zone (`app`; `@` for the apex).
    pub record: String,
    /// `A` (default) or `CNAME`; must match the record set in Azure.
    #[serde(default)]
    pub record_type: RecordType,
    /// What the record holds when each region is active (`primary`, `dr`): ingress IPs for A,
    /// a host name for CNAME.
    pub targets: BTreeMap<String, Target>,
    /// Authoritative name servers to check after a switch: `host`, `host:port`, `ip:port`,
    /// `[v6]:port` (port 53 by default). Empty: the zone's name servers as ARM reports them.
    #[serde(default)]
    pub name_servers: Vec<String>,
    /// How to get a token (default `auto`).
    #[serde(default)]
    pub auth: AuthMethod,
    /// Client id of a user-assigned managed identity (managed identity only).
    #[serde(default)]
    pub managed_identity_client_id: Option<String>,
    /// Overall deadline of one ARM call, retries and waits included (seconds).
    #[serde(default = "default_call_deadline")]
    pub call_deadline_secs: u64,
    /// Timeout of one HTTP attempt (seconds).
    #[serde(default = "default_attempt_timeout")]
    pub attempt_timeout_secs: u64,
    /// Retries of one ARM call on 429, 5xx, timeouts and connection errors.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// How long to wait for the authoritative name servers to serve a new value (seconds).
    #[serde(default = "default_authoritative_deadline")]
    pub authoritative_deadline_secs: u64,
    /// Pause between two rounds of authoritative queries (milliseconds).
    #[serde(default = "default_authoritative_poll")]
    pub authoritative_poll_ms: u64,
    /// Timeout of one DNS query (milliseconds).
    #[serde(default = "default_query_timeout")]
    pub query_timeout_ms: u64,
    /// ARM base URL. Default `https://management.azure.com`. The lab sets
    /// `http://127.0.0.1:PORT` (plain http is accepted for loopback addresses only).
    #[serde(default)]
    pub arm_endpoint: Option<String>,
    /// Token scope for ARM. Default `https://management.azure.com/.default` (and for a custom
    /// https `arm_endpoint`, `<arm_endpoint>/.default`).
    #[serde(default)]
    pub arm_scope: Option<String>,
    /// Entra ID authority host. Default: `AZURE_AUTHORITY_HOST`, else the public cloud. The lab
    /// sets `http://127.0.0.1:PORT` (loopback only).
    #[serde(default)]
    pub authority_host: Option<String>,
}

/// A `[dns]` value that cannot work, with the key to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// The key, prefixed with `dns.` (`dns.targets.dr`).
    pub key: String,
    /// What is wrong and what is expected.
    pub message: String,
}

fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

impl DnsConfig {
    /// A config with the required keys and every default (the lab and tests start here).
    pub fn new(
        subscription: &str,
        resource_group: &str,
        zone: &str,
        record: &str,
        record_type: RecordType,
    ) -> Self {
        DnsConfig {
            subscription: subscription.to_string(),
            resource_group: resource_group.to_string(),
            zone: zone.to_string(),
            record: record.to_string(),
            record_type,
            targets: BTreeMap::new(),
            name_servers: Vec::new(),
            auth: AuthMethod::Auto,
            managed_identity_client_id: None,
            call_deadline_secs: default_call_deadline(),
            attempt_timeout_secs: default_attempt_timeout(),
            max_retries: default_max_retries(),
            authoritative_deadline_secs: default_authoritative_deadline(),
            authoritative_poll_ms: default_authoritative_poll(),
            query_timeout_ms: default_query_timeout(),
            arm_endpoint: None,
            arm_scope: None,
            authority_host: None,
        }
    }

    /// Sets a region's target (builder style).
    pub fn target(mut self, region: &str, value: impl Into<Target>) -> Self {
        self.targets.insert(region.to_string(), value.into());
        self
    }

    /// Checks every key; the first problem is returned, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let uuid_like = |s: &str| {
            s.len() == 36
                && s.chars().enumerate().all(|(i, c)| {
                    matches!(i, 8 | 13 | 18 | 23) == (c == '-')
                        && (c == '-' || c.is_ascii_hexdigit())
                })
        };
        let path_safe = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.()".contains(c))
        };
        if self.subscription.trim().is_empty() {
            return Err(err("dns.subscription", "must be set: the Azure subscription id that holds the zone (az account show --query id)"));
        }
        if !uuid_like(&self.subscription) && !path_safe(&self.subscription) {
            return Err(err("dns.subscription", format!("{:?} is not a subscription id (a GUID like 00000000-0000-0000-0000-000000000000)", self.subscription)));
        }
        if !path_safe(&self.resource_group) || self.resource_group.len() > 90 {
            return Err(err("dns.resource_group", format!("{:?} is not a resource group name (1-90 letters, digits, '-', '_', '.', '(', ')')", self.resource_group)));
        }
        if self.zone.ends_with('.') || !is_host_name(&self.zone) || !self.zone.contains('.') {
            return Err(err(
                "dns.zone",
                format!(
                    "{:?} is not a DNS zone name (like example.com, no trailing dot)",
                    self.zone
                ),
            ));
        }
        if self.record != "@" && !is_host_name(&self.record) {
            return Err(err(
                "dns.record",
                format!(
                    "{:?} is not a record name relative to the zone (like app; @ for the apex)",
                    self.record
                ),
            ));
        }
        if self
            .record
            .to_ascii_lowercase()
            .ends_with(&self.zone.to_ascii_lowercase())
        {
            return Err(err(
                "dns.record",
                format!(
                    "{:?} must be relative to the zone {:?} (write app, not app.{})",
                    self.record, self.zone, self.zone
                ),
            ));
        }
        if self.record == "@" && self.record_type == RecordType::CNAME {
            return Err(err("dns.record_type", "a CNAME cannot sit at the zone apex (@): use A records, or an Azure alias record managed outside drdctl"));
        }
        if self.targets.len() < 2 {
            return Err(err(
                "dns.targets",
                "needs a value for each region (at least two, e.g. primary and dr)",
            ));
        }
        let mut seen: Vec<(String, Vec<String>)> = Vec::new();
        for (region, target) in &self.targets {
            let key = format!("dns.targets.{region}");
            if target.0.is_empty() {
                return Err(err(
                    key,
                    "is empty: give the region's ingress IP (A) or host name (CNAME)",
                ));
            }
            let mut norm = match self.record_type {
                RecordType::A => {
                    if target.0.len() > 20 {
                        return Err(err(key, "an Azure record set holds at most 20 A records"));
                    }
                    let mut ips = Vec::new();
                    for v in &target.0 {
                        let ip: Ipv4Addr = v.trim().parse().map_err(|_| {
                            err(&key, format!("{v:?} is not an IPv4 address (dns.record_type is A; for a host name set dns.record_type = \"CNAME\")"))
                        })?;
                        ips.push(ip.to_string());
                    }
                    ips
                }
                RecordType::CNAME => {
                    if target.0.len() != 1 {
                        return Err(err(key, "a CNAME holds exactly one host name"));
                    }
                    let v = target.0[0].trim();
                    if !is_host_name(v) || v.trim_end_matches('.').parse::<Ipv4Addr>().is_ok() {
                        return Err(err(key, format!("{v:?} is not a host name (dns.record_type is CNAME; for IPs set dns.record_type = \"A\")")));
                    }
                    vec![v.trim_end_matches('.').to_ascii_lowercase()]
                }
            };
            norm.sort();
            norm.dedup();
            if let Some((other, _)) = seen.iter().find(|(_, v)| *v == norm) {
                return Err(err(key, format!("has the same value as dns.targets.{other}: drdctl could not tell which region is active")));
            }
            seen.push((region.clone(), norm));
        }
        for (i, ns) in self.name_servers.iter().enumerate() {
            if crate::authoritative::parse_server(ns).is_none() {
                return Err(err(
                    format!("dns.name_servers[{i}]"),
                    format!("{ns:?} is not host, host:port, ip:port or [ipv6]:port"),
                ));
            }
        }
        if let Some(id) = &self.managed_identity_client_id {
            if id.trim().is_empty() {
                return Err(err(
                    "dns.managed_identity_client_id",
                    "is empty: remove it for a system-assigned identity",
                ));
            }
        }
        let positive = [
            ("dns.call_deadline_secs", self.call_deadline_secs),
            ("dns.attempt_timeout_secs", self.attempt_timeout_secs),
            (
                "dns.authoritative_deadline_secs",
                self.authoritative_deadline_secs,
            ),
            ("dns.authoritative_poll_ms", self.authoritative_poll_ms),
            ("dns.query_timeout_ms", self.query_timeout_ms),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(err(key, "must be greater than 0"));
            }
        }
        if self.max_retries > 50 {
            return Err(err(
                "dns.max_retries",
                "at most 50 (the call deadline bounds retries anyway)",
            ));
        }
        if let Some(e) = &self.arm_endpoint {
            crate::transport::Endpoint::parse(e).map_err(|m| err("dns.arm_endpoint", m))?;
        }
        if let Some(e) = &self.authority_host {
            crate::transport::Endpoint::parse(e).map_err(|m| err("dns.authority_host", m))?;
        }
        if let Some(s) = &self.arm_scope {
            if !s.ends_with("/.default") {
                return Err(err("dns.arm_scope", format!("{s:?} must end with /.default (like https://management.azure.com/.default)")));
            }
        }
        Ok(())
    }

    /// The values configured for `region`, normalised (sorted IPs, lower-case host name).
    pub fn target_values(&self, region: &str) -> Option<Vec<String>> {
        self.targets
            .get(region)
            .map(|t| normalise(self.record_type, &t.0))
    }

    /// Which region's target equals `values` (normalised comparison).
    pub fn region_of(&self, values: &[String]) -> Option<String> {
        let v = normalise(self.record_type, values);
        self.targets
            .keys()
            .find(|r| self.target_values(r).as_deref() == Some(&v[..]))
            .cloned()
    }

    /// The record's fully qualified name, without the trailing dot.
    pub fn fqdn(&self) -> String {
        if self.record == "@" {
            self.zone.clone()
        } else {
            format!("{}.{}", self.record, self.zone)
        }
    }

    /// [`Self::call_deadline_secs`] as a duration.
    pub fn call_deadline(&self) -> Duration {
        Duration::from_secs(self.call_deadline_secs)
    }

    /// [`Self::attempt_timeout_secs`] as a duration.
    pub fn attempt_timeout(&self) -> Duration {
        Duration::from_secs(self.attempt_timeout_secs)
    }

    /// [`Self::authoritative_deadline_secs`] as a duration.
    pub fn authoritative_deadline(&self) -> Duration {
        Duration::from_secs(self.authoritative_deadline_secs)
    }

    /// [`Self::authoritative_poll_ms`] as a duration.
    pub fn authoritative_poll(&self) -> Duration {
        Duration::from_millis(self.authoritative_poll_ms)
    }

    /// [`Self::query_timeout_ms`] as a duration.
    pub fn query_timeout(&self) -> Duration {
        Duration::from_millis(self.query_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn auth_methods_parse_by_their_names() {
        for m in [
            "auto",
            "client-secret",
            "workload-identity",
            "managed-identity",
            "azure-cli",
        ] {
            assert_eq!(m.parse::<AuthMethod>().unwrap().to_string(), m);
        }
        assert!("cli"
            .parse::<AuthMethod>()
            .unwrap_err()
            .contains("azure-cli"));
    }

    use super::*;

    fn good() -> DnsConfig {
        DnsConfig::new(
            "00000000-0000-0000-0000-000000000001",
            "rg-dns",
            "example.com",
            "app",
            RecordType::A,
        )
        .target("primary", "203.0.113.10")
        .target("dr", "198.51.100.20")
    }

    fn key_of(c: DnsConfig) -> String {
        c.validate().unwrap_err().key
    }

    #[test]
    fn a_good_config_validates() {
        good().validate().unwrap();
        let mut c = good();
        c.name_servers = vec![
            "ns1-01.azure-dns.com".into(),
            "127.0.0.1:5353".into(),
            "[::1]:53".into(),
        ];
        c.validate().unwrap();
    }

    #[test]
    fn every_error_names_its_key() {
        let mut c = good();
        c.zone = "example.com.".into();
        assert_eq!(key_of(c), "dns.zone");
        let mut c = good();
        c.subscription = String::new();
        assert_eq!(key_of(c), "dns.subscription");
        let mut c = good();
        c.resource_group = "rg/x".into();
        assert_eq!(key_of(c), "dns.resource_group");
        let mut c = good();
        c.record = "app.example.com".into();
        assert_eq!(key_of(c), "dns.record");
        let c = good().target("dr", "app-dr.example.net");
        assert_eq!(key_of(c), "dns.targets.dr");
        let c = good().target("dr", "203.0.113.10");
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, "dns.targets.primary");
        assert!(
            e.to_string().contains("same value as dns.targets.dr"),
            "{e}"
        );
        let mut c = good();
        c.record_type = RecordType::CNAME;
        assert_eq!(key_of(c), "dns.targets.dr");
        let mut c = good();
        c.name_servers = vec!["ns1:notaport".into()];
        assert_eq!(key_of(c), "dns.name_servers[0]");
        let mut c = good();
        c.authoritative_deadline_secs = 0;
        assert_eq!(key_of(c), "dns.authoritative_deadline_secs");
        let mut c = good();
        c.arm_endpoint = Some("http://management.example.com".into());
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, "dns.arm_endpoint");
        assert!(e.message.contains("loopback"), "{e}");
        let mut c = good();
        c.targets.remove("dr");
        assert_eq!(key_of(c), "dns.targets");
    }

    #[test]
    fn the_documented_toml_sections_parse_and_validate() {
        #[derive(Debug, Deserialize)]
        struct File {
            dns: DnsConfig,
        }
        let prod: File = toml::from_str(
            r#"
            [dns]
            subscription = "00000000-0000-0000-0000-000000000000"
            resource_group = "rg-dns"
            zone = "example.com"
            record = "app"
            record_type = "A"
            name_servers = ["ns1-01.azure-dns.com", "ns2-01.azure-dns.net"]

            [dns.targets]
            primary = "203.0.113.10"
            dr = ["198.51.100.20", "198.51.100.21"]
            "#,
        )
        .unwrap();
        prod.dns.validate().unwrap();
        assert_eq!(prod.dns.call_deadline_secs, 60);
        assert_eq!(prod.dns.auth, AuthMethod::Auto);
        let lab: File = toml::from_str(
            r#"
            [dns]
            subscription = "00000000-0000-0000-0000-0000000000aa"
            resource_group = "rg-lab"
            zone = "example.com"
            record = "app"
            record_type = "CNAME"
            auth = "client-secret"
            name_servers = ["127.0.0.1:53530"]
            arm_endpoint = "http://127.0.0.1:44300"
            authority_host = "http://127.0.0.1:44300"
            authoritative_deadline_secs = 10
            authoritative_poll_ms = 100
            targets = { primary = "app-primary.example.net", dr = "app-dr.example.net" }
            "#,
        )
        .unwrap();
        lab.dns.validate().unwrap();
        assert_eq!(lab.dns.record_type, RecordType::CNAME);
        let typo = toml::from_str::<File>(
            "[dns]\nsubscription = \"s\"\nresource_group = \"r\"\nzone = \"example.com\"\n\
             record = \"app\"\ntargets = {}\nzones = \"x\"\n",
        );
        assert!(typo
            .unwrap_err()
            .to_string()
            .contains("unknown field `zones`"));
    }

    #[test]
    fn region_of_compares_normalised_values() {
        let c = good().target(
            "dr",
            Target(vec!["198.51.100.21".into(), "198.51.100.20".into()]),
        );
        assert_eq!(
            c.region_of(&["198.51.100.20".into(), "198.51.100.21".into()]),
            Some("dr".into())
        );
        assert_eq!(c.region_of(&["192.0.2.1".into()]), None);
    }
}
