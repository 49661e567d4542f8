//! `drdctl.toml`: the two regions, the app, and the parts each command needs. Loaded once and
//! validated; every error names the key (`regions.dr.context`) and the file.
//!
//! A commented example is in docs/config.md; `drdctl lab up` writes one for the lab.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {message} (pass --config FILE or set DRDCTL_CONFIG)")]
    Read { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub kube: KubeSection,
    /// Exactly `primary` and `dr`.
    pub regions: BTreeMap<String, RegionConfig>,
    #[serde(default)]
    pub app: AppConfig,
    #[serde(default)]
    pub images: ImagesConfig,
    /// Parsed by the DNS adapter.
    pub dns: Option<toml::Value>,
    /// The witness term (docs/witness.md); without it failover moves no term.
    pub witness: Option<WitnessSection>,
    /// Where the config file is; relative paths in it are relative to its directory.
    #[serde(skip)]
    pub base_dir: PathBuf,
    #[serde(skip)]
    pub path: PathBuf,
    /// `--timeout`: the bound on every network call.
    #[serde(skip)]
    pub timeout: Option<std::time::Duration>,
}

/// The config the seed's failover script implied: contexts named by PRIMARY_CLUSTER and
/// DR_CLUSTER, and (with DNS_ZONE and APP_HOSTNAME) the Azure DNS record.
fn seed_defaults(primary: &str, dr: &str, zone: Option<String>, host: Option<String>) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let mut t = format!(
        "[regions.primary]\ncontext = {}\n\n[regions.dr]\ncontext = {}\n",
        q(primary),
        q(dr)
    );
    if let (Some(zone), Some(host)) = (zone, host) {
        let record = host
            .strip_suffix(&format!(".{zone}"))
            .unwrap_or(&host)
            .to_string();
        t.push_str(&format!(
            "\n[dns]\nzone = {}\nrecord = {}\nsubscription = \"\"\nresource_group = \"\"\n",
            q(&zone),
            q(&record)
        ));
    }
    t
}

/// Sets `parts` (a key path) in `doc` to `value`: a TOML value when it parses as one
/// (numbers, booleans, arrays), else a string.
fn set_key(doc: &mut toml::Table, parts: &[String], value: &str) -> Result<(), String> {
    let (last, path) = parts.split_last().ok_or("empty key")?;
    let mut t = doc;
    for p in path {
        t = t
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("{p} is not a section"))?;
    }
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    t.insert(last.clone(), parsed);
    Ok(())
}

/// `[witness]`: where the term is and the lease timing the guards run with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessSection {
    /// `https://<account>.blob.core.windows.net/<container>/<blob>`.
    pub url: String,
    /// `production` (lease 10 s, wait 15 s) or `lab` (3 s, 5 s): must be the guards' own.
    #[serde(default = "default_timing")]
    pub timing: String,
    /// The Azure credential (default: `dns.auth`, else auto).
    pub auth: Option<String>,
    /// The Entra authority host (default: `dns.authority_host`).
    pub authority_host: Option<String>,
}

fn default_timing() -> String {
    "production".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeSection {
    /// Default: `$KUBECONFIG`, then `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    /// The kube context of the region's cluster.
    pub context: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The kustomize overlay `drdctl deploy` applies (default `manifests/<region>`).
    pub overlay: Option<PathBuf>,
    /// The region's ingress address: what the DNS record points at when it is active.
    pub ingress: Option<String>,
    #[serde(default)]
    pub database: DatabaseAccess,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseAccess {
    /// `port-forward` (default: through the kube API to the pod) or `url`.
    #[serde(default = "default_access")]
    pub access: String,
    #[serde(default = "default_pod")]
    pub pod: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// With `access = "url"`: `postgres://user@host:port/db` (the password comes from the
    /// Secret or the environment, never from this file).
    pub url: Option<String>,
    #[serde(default = "default_secret")]
    pub secret: String,
}

impl Default for DatabaseAccess {
    fn default() -> Self {
        DatabaseAccess {
            access: default_access(),
            pod: default_pod(),
            port: default_port(),
            url: None,
            secret: default_secret(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    #[serde(default = "default_deployments")]
    pub deployments: Vec<String>,
    #[serde(default = "default_configmap")]
    pub configmap: String,
    #[serde(default = "default_active")]
    pub active_replicas: i32,
    #[serde(default = "default_standby")]
    pub standby_replicas: i32,
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            deployments: default_deployments(),
            configmap: default_configmap(),
            active_replicas: default_active(),
            standby_replicas: default_standby(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagesConfig {
    pub registry: Option<String>,
    pub version: Option<String>,
    /// Where `drdctl build-push` records digests and `drdctl deploy` reads them
    /// (default `.drdctl/images.json` next to this file).
    pub file: Option<PathBuf>,
}

fn default_namespace() -> String {
    "default".into()
}
fn default_access() -> String {
    "port-forward".into()
}
fn default_pod() -> String {
    "postgresql-0".into()
}
fn default_port() -> u16 {
    5432
}
fn default_secret() -> String {
    "postgresql-secret".into()
}
fn default_deployments() -> Vec<String> {
    ["frontend-api", "business-logic", "data-ingest"]
        .map(String::from)
        .to_vec()
}
fn default_configmap() -> String {
    "app-config".into()
}
fn default_active() -> i32 {
    3
}
fn default_standby() -> i32 {
    1
}

impl Config {
    /// The file at `path` (or, when it does not exist, the defaults the seed's variables
    /// PRIMARY_CLUSTER, DR_CLUSTER, DNS_ZONE, APP_HOSTNAME give), then every
    /// `DRDCTL_<SECTION>__<KEY>` variable of `env` on top (flag > variable > file > default;
    /// the flags are applied by the caller).
    pub fn load_with_env(path: &Path, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match (get("PRIMARY_CLUSTER"), get("DR_CLUSTER")) {
                    (Some(p), Some(d)) => seed_defaults(&p, &d, get("DNS_ZONE"), get("APP_HOSTNAME")),
                    _ => {
                        return Err(ConfigError::Read {
                            path: path.to_path_buf(),
                            message: format!(
                                "{e} (pass --config FILE or set DRDCTL_CONFIG; or set PRIMARY_CLUSTER and DR_CLUSTER, the seed's variables, to run on defaults)"
                            ),
                        })
                    }
                }
            }
            Err(e) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })
            }
        };
        let mut doc: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        for (name, value) in env {
            let Some(key) = name.strip_prefix("DRDCTL_").filter(|k| k.contains("__")) else {
                continue;
            };
            let parts: Vec<String> = key.split("__").map(|p| p.to_lowercase()).collect();
            set_key(&mut doc, &parts, value).map_err(|message| ConfigError::Invalid {
                path: path.to_path_buf(),
                key: format!("{} (from {name})", parts.join(".")),
                message,
            })?;
        }
        Self::parse(&toml::to_string(&doc).expect("a table serialises"), path)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.path = path.to_path_buf();
        config.base_dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        config.validate()?;
        Ok(config)
    }

    /// The command line's overrides: `--kubeconfig`, `--context-primary`, `--context-dr`,
    /// `--timeout`.
    pub fn override_with(
        &mut self,
        kubeconfig: Option<PathBuf>,
        contexts: [(&str, Option<String>); 2],
        timeout: Option<std::time::Duration>,
    ) {
        if let Some(k) = kubeconfig {
            self.kube.kubeconfig = Some(std::path::absolute(&k).unwrap_or(k));
        }
        for (region, ctx) in contexts {
            if let (Some(c), Some(r)) = (ctx, self.regions.get_mut(region)) {
                r.context = c;
            }
        }
        self.timeout = timeout;
    }

    fn invalid(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone(),
            key: key.into(),
            message: message.into(),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for name in ["primary", "dr"] {
            if !self.regions.contains_key(name) {
                return Err(self.invalid(
                    format!("regions.{name}"),
                    "missing: drdctl needs exactly two regions, [regions.primary] and [regions.dr]",
                ));
            }
        }
        if let Some(other) = self.regions.keys().find(|k| *k != "primary" && *k != "dr") {
            return Err(self.invalid(
                format!("regions.{other}"),
                "unknown region: the regions are `primary` and `dr`",
            ));
        }
        for (name, r) in &self.regions {
            if r.context.trim().is_empty() {
                return Err(self.invalid(format!("regions.{name}.context"), "must not be empty"));
            }
            match r.database.access.as_str() {
                "port-forward" => {}
                "url" if r.database.url.is_some() => {}
                "url" => {
                    return Err(self.invalid(
                        format!("regions.{name}.database.url"),
                        "required when access = \"url\"",
                    ))
                }
                other => {
                    return Err(self.invalid(
                        format!("regions.{name}.database.access"),
                        format!("{other:?} is not one of \"port-forward\", \"url\""),
                    ))
                }
            }
            if let Some(url) = &r.database.url {
                if url.contains('@') && url.split('@').next().unwrap_or("").contains(':') {
                    return Err(self.invalid(
                        format!("regions.{name}.database.url"),
                        "must not contain a password (it comes from the Secret or DRDCTL_DB_PASSWORD)",
                    ));
                }
            }
        }
        if self.app.deployments.is_empty() {
            return Err(self.invalid("app.deployments", "must list at least one deployment"));
        }
        if self.app.active_replicas < 1 {
            return Err(self.invalid("app.active_replicas", "must be at least 1"));
        }
        if self.app.standby_replicas < 0 {
            return Err(self.invalid("app.standby_replicas", "must not be negative"));
        }
        Ok(())
    }

    pub fn region(&self, name: &str) -> &RegionConfig {
        &self.regions[name]
    }

    /// A path from the config, relative to the config file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    pub fn images_file(&self) -> PathBuf {
        match &self.images.file {
            Some(p) => self.resolve(p),
            None => self.resolve(Path::new(".drdctl/images.json")),
        }
    }

    pub fn overlay(&self, region: &str) -> PathBuf {
        match &self.region(region).overlay {
            Some(p) => self.resolve(p),
            None => self.resolve(&Path::new("manifests").join(region)),
        }
    }

    pub fn kube_target(&self, region: &str) -> drd_kube::Target {
        let r = self.region(region);
        drd_kube::Target {
            region: region.to_string(),
            context: r.context.clone(),
            kubeconfig: self.kube.kubeconfig.as_ref().map(|p| self.resolve(p)),
            namespace: r.namespace.clone(),
            timeout: self.timeout,
        }
    }

    /// The names of `region`'s PostgreSQL objects in `namespace` (its own, or a practice
    /// run's), from `regions.<region>.database`.
    pub fn pod_names(&self, region: &str, namespace: &str) -> drd_db::PodNames {
        let r = self.region(region);
        drd_db::PodNames {
            pod: r.database.pod.clone(),
            port: r.database.port,
            secret: r.database.secret.clone(),
            ..drd_db::PodNames::new(&r.context, namespace)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/drd/drdctl.toml"))
    }

    const OK: &str = r#"
[regions.primary]
context = "primary-aks"
[regions.dr]
context = "dr-aks"
ingress = "10.0.0.1"
"#;

    #[test]
    fn minimal_config_has_sensible_defaults() {
        let c = parse(OK).unwrap();
        assert_eq!(c.region("dr").namespace, "default");
        assert_eq!(c.region("dr").database.pod, "postgresql-0");
        assert_eq!(c.overlay("dr"), PathBuf::from("/etc/drd/manifests/dr"));
        assert_eq!(c.app.deployments.len(), 3);
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("[regions.primary]\ncontext = \"a\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("regions.dr"), "{e}");
        let e = parse(&format!("{OK}\n[regions.dr.database]\naccess = \"ssh\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("regions.dr.database") || e.contains("duplicate"),
            "{e}"
        );
        let e = parse(&OK.replace("ingress", "ingres"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ingres"), "{e}");
        let e = parse(&OK.replace("\"dr-aks\"", "\"\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("regions.dr.context"), "{e}");
    }

    #[test]
    fn a_password_in_a_url_is_refused() {
        let text = format!(
            "{OK}\n[regions.primary.database]\naccess = \"url\"\nurl = \"postgres://u:pw@h/db\"\n"
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("regions.primary.database.url"), "{e}");
        assert!(!e.contains("pw@"), "{e}");
    }
}
