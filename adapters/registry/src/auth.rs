//! Registry credentials: where they come from, and never showing them.
//!
//! For the registry images are pushed to, in this order:
//! 1. the environment: `DRDCTL_REGISTRY_USERNAME` + `DRDCTL_REGISTRY_PASSWORD`, or
//!    `DRDCTL_REGISTRY_TOKEN` (an Azure Container Registry token, e.g. from
//!    `az acr login --name R --expose-token`, sent as the password of the null-GUID user);
//! 2. docker's `config.json` (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`):
//!    `auths.<host>` with `auth` (base64 `user:password`), `username`/`password`, or
//!    `identitytoken` (an ACR refresh token). Credential helpers (`credHelpers`, `credsStore`)
//!    are not run: when one is configured for the host and nothing else is found, resolving
//!    fails with a message saying what to set instead;
//! 3. for `*.azurecr.io` when asked (`acr_cli_login`): `az acr login --expose-token`;
//! 4. anonymous.
//!
//! Other registries (a base image's) use only docker's `config.json` or go anonymous.
//!
//! Secrets live in [`SecretString`]s; `Debug` prints `<redacted>`, and no message of this crate
//! includes one.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The username ACR expects with a token as the password.
pub const ACR_TOKEN_USER: &str = "00000000-0000-0000-0000-000000000000";
/// Environment variables read for the target registry.
pub const ENV_USERNAME: &str = "DRDCTL_REGISTRY_USERNAME";
pub const ENV_PASSWORD: &str = "DRDCTL_REGISTRY_PASSWORD";
pub const ENV_TOKEN: &str = "DRDCTL_REGISTRY_TOKEN";

/// How to authenticate to one registry.
#[derive(Clone)]
pub enum Credential {
    Anonymous,
    Basic {
        username: String,
        password: SecretString,
    },
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Anonymous => f.write_str("Anonymous"),
            Credential::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
        }
    }
}

impl Credential {
    pub(crate) fn to_oci(&self) -> oci_client::secrets::RegistryAuth {
        match self {
            Credential::Anonymous => oci_client::secrets::RegistryAuth::Anonymous,
            Credential::Basic { username, password } => oci_client::secrets::RegistryAuth::Basic(
                username.clone(),
                password.expose_secret().to_string(),
            ),
        }
    }
}

/// A credential and where it was found (the place is safe to print).
#[derive(Clone, Debug)]
pub struct ResolvedCredential {
    pub credential: Credential,
    /// e.g. `DRDCTL_REGISTRY_USERNAME/DRDCTL_REGISTRY_PASSWORD`, `/root/.docker/config.json`,
    /// `az acr login`, `no credentials (anonymous)`.
    pub source: String,
    /// Something the operator should know (e.g. a credential helper that was not run).
    pub note: Option<String>,
}

impl ResolvedCredential {
    fn anonymous(note: Option<String>) -> Self {
        ResolvedCredential {
            credential: Credential::Anonymous,
            source: "no credentials (anonymous)".into(),
            note,
        }
    }

    pub fn is_anonymous(&self) -> bool {
        matches!(self.credential, Credential::Anonymous)
    }
}

/// Why credentials could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("{set} is set but {missing} is not: set both, or neither")]
    HalfSet {
        set: &'static str,
        missing: &'static str,
    },
    #[error(
        "{path} names a credential helper for {host} (`{helper}` in {field}), and drdctl does not run \
         credential helpers: set {ENV_USERNAME} and {ENV_PASSWORD} (or {ENV_TOKEN} for an Azure \
         Container Registry token), or store the login in `auths` of that file"
    )]
    HelperUnsupported {
        path: String,
        host: String,
        helper: String,
        field: &'static str,
    },
    #[error(
        "cannot read docker config {path}: {reason}; fix or move the file, or set DOCKER_CONFIG"
    )]
    DockerConfig { path: String, reason: String },
    #[error(
        "`az acr login --name {registry} --expose-token` failed: {reason}; log in with `az login` \
         first, or set {ENV_TOKEN}"
    )]
    AzCli { registry: String, reason: String },
}

type Lookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Where credentials are looked up. Configuration is passed in, not read from the process
/// environment behind the caller's back: [`CredentialSources::from_process_env`] is the one
/// place that does.
#[derive(Clone)]
pub struct CredentialSources {
    lookup: Lookup,
    /// docker's config file; `None` = `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
    pub docker_config: Option<PathBuf>,
    /// For `*.azurecr.io`, run `az acr login --expose-token` when nothing else gave credentials.
    pub acr_cli_login: bool,
    /// The Azure CLI program.
    pub az_program: PathBuf,
}

impl fmt::Debug for CredentialSources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialSources")
            .field("docker_config", &self.docker_config_path())
            .field("acr_cli_login", &self.acr_cli_login)
            .finish_non_exhaustive()
    }
}

impl Default for CredentialSources {
    fn default() -> Self {
        Self::from_process_env()
    }
}

impl CredentialSources {
    /// Reads variables from this process's environment.
    pub fn from_process_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads variables through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Self {
        CredentialSources {
            lookup: Arc::new(lookup),
            docker_config: None,
            acr_cli_login: false,
            az_program: PathBuf::from("az"),
        }
    }

    fn var(&self, k: &str) -> Option<String> {
        (self.lookup)(k).filter(|v| !v.is_empty())
    }

    /// The docker config file that is read (it may not exist).
    pub fn docker_config_path(&self) -> Option<PathBuf> {
        if let Some(p) = &self.docker_config {
            return Some(p.clone());
        }
        if let Some(d) = self.var("DOCKER_CONFIG") {
            return Some(Path::new(&d).join("config.json"));
        }
        self.var("HOME")
            .map(|h| Path::new(&h).join(".docker").join("config.json"))
    }

    /// Credentials for `host`. `target` = the registry images are pushed to (the environment
    /// and `az` are only for it; a credential helper for it is an error, for others a note).
    pub fn resolve(&self, host: &str, target: bool) -> Result<ResolvedCredential, CredentialError> {
        if target {
            if let Some(token) = self.var(ENV_TOKEN) {
                return Ok(ResolvedCredential {
                    credential: Credential::Basic {
                        username: ACR_TOKEN_USER.into(),
                        password: token.into(),
                    },
                    source: ENV_TOKEN.into(),
                    note: None,
                });
            }
            match (self.var(ENV_USERNAME), self.var(ENV_PASSWORD)) {
                (Some(username), Some(password)) => {
                    return Ok(ResolvedCredential {
                        credential: Credential::Basic {
                            username,
                            password: password.into(),
                        },
                        source: format!("{ENV_USERNAME}/{ENV_PASSWORD}"),
                        note: None,
                    })
                }
                (Some(_), None) => {
                    return Err(CredentialError::HalfSet {
                        set: ENV_USERNAME,
                        missing: ENV_PASSWORD,
                    })
                }
                (None, Some(_)) => {
                    return Err(CredentialError::HalfSet {
                        set: ENV_PASSWORD,
                        missing: ENV_USERNAME,
                    })
                }
                (None, None) => {}
            }
        }
        let mut note = None;
        if let Some(path) = self.docker_config_path() {
            match read_docker_config(&path)? {
                None => {}
                Some(cfg) => match cfg.lookup(host) {
                    Lookup2::Found(credential) => {
                        return Ok(ResolvedCredential {
                            credential,
                            source: path.display().to_string(),
                            note: None,
                        })
                    }
                    Lookup2::Helper { helper, field } => {
                        if target {
                            return Err(CredentialError::HelperUnsupported {
                                path: path.display().to_string(),
                                host: host.into(),
                                helper,
                                field,
                            });
                        }
                        note = Some(format!(
                            "{} names credential helper `{helper}` for {host}; drdctl does not run \
                             credential helpers, so {host} is accessed anonymously",
                            path.display()
                        ));
                    }
                    Lookup2::None => {}
                },
            }
        }
        if target && self.acr_cli_login && host.ends_with(".azurecr.io") {
            let token = self.az_acr_token(host)?;
            return Ok(ResolvedCredential {
                credential: Credential::Basic {
                    username: ACR_TOKEN_USER.into(),
                    password: token,
                },
                source: "az acr login --expose-token".into(),
                note,
            });
        }
        Ok(ResolvedCredential::anonymous(note))
    }

    fn az_acr_token(&self, host: &str) -> Result<SecretString, CredentialError> {
        let name = host.trim_end_matches(".azurecr.io");
        let err = |reason: String| CredentialError::AzCli {
            registry: name.into(),
            reason,
        };
        let out = std::process::Command::new(&self.az_program)
            .args([
                "acr",
                "login",
                "--name",
                name,
                "--expose-token",
                "--output",
                "tsv",
                "--query",
                "accessToken",
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| err(format!("cannot run {}: {e}", self.az_program.display())))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(err(format!("{}: {}", out.status, stderr.trim())));
        }
        let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if token.is_empty() {
            return Err(err("it printed no token".into()));
        }
        Ok(token.into())
    }
}

#[derive(Deserialize, Default)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

enum Lookup2 {
    Found(Credential),
    Helper { helper: String, field: &'static str },
    None,
}

/// `https://index.docker.io/v1/` → `docker.io`; `https://host:5000/x` → `host:5000`.
fn normalize_host(key: &str) -> String {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".into(),
        h => h.to_string(),
    }
}

impl DockerConfig {
    fn lookup(&self, host: &str) -> Lookup2 {
        let want = normalize_host(host);
        if let Some((_, helper)) = self
            .cred_helpers
            .iter()
            .find(|(k, _)| normalize_host(k) == want)
        {
            return Lookup2::Helper {
                helper: helper.clone(),
                field: "credHelpers",
            };
        }
        if let Some((_, a)) = self.auths.iter().find(|(k, _)| normalize_host(k) == want) {
            if let Some(token) = &a.identitytoken {
                return Lookup2::Found(Credential::Basic {
                    username: ACR_TOKEN_USER.into(),
                    password: token.clone().into(),
                });
            }
            if let (Some(u), Some(p)) = (&a.username, &a.password) {
                return Lookup2::Found(Credential::Basic {
                    username: u.clone(),
                    password: p.clone().into(),
                });
            }
            if let Some(decoded) = a
                .auth
                .as_deref()
                .and_then(|b| {
                    base64::engine::general_purpose::STANDARD
                        .decode(b.trim())
                        .ok()
                })
                .and_then(|d| String::from_utf8(d).ok())
            {
                if let Some((u, p)) = decoded.split_once(':') {
                    return Lookup2::Found(Credential::Basic {
                        username: u.into(),
                        password: p.to_string().into(),
                    });
                }
            }
        }
        if let Some(store) = &self.creds_store {
            return Lookup2::Helper {
                helper: store.clone(),
                field: "credsStore",
            };
        }
        Lookup2::None
    }
}

fn read_docker_config(path: &Path) -> Result<Option<DockerConfig>, CredentialError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CredentialError::DockerConfig {
                path: path.display().to_string(),
                reason: e.to_string(),
            })
        }
    };
    // serde_json's message gives the position only, never the text around it: no secret leaks.
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| CredentialError::DockerConfig {
            path: path.display().to_string(),
            reason: format!("not valid JSON ({e})"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn sources(
        vars: &[(&str, &str)],
        config: Option<&str>,
    ) -> (CredentialSources, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let mut map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        map.insert("DOCKER_CONFIG".into(), dir.path().display().to_string());
        if let Some(c) = config {
            std::fs::write(dir.path().join("config.json"), c).unwrap();
        }
        (
            CredentialSources::from_lookup(move |k| map.get(k).cloned()),
            dir,
        )
    }

    fn basic(r: &ResolvedCredential) -> (String, String) {
        match &r.credential {
            Credential::Basic { username, password } => {
                (username.clone(), password.expose_secret().to_string())
            }
            Credential::Anonymous => panic!("anonymous"),
        }
    }

    #[test]
    fn environment_wins_for_the_target_only() {
        let (s, _d) = sources(
            &[(ENV_USERNAME, "ci"), (ENV_PASSWORD, "pw-from-env")],
            Some(r#"{"auths":{"reg.example":{"auth":"ZG9jazpwdy1mcm9tLWZpbGU="}}}"#),
        );
        let t = s.resolve("reg.example", true).unwrap();
        assert_eq!(basic(&t), ("ci".into(), "pw-from-env".into()));
        assert_eq!(
            t.source,
            "DRDCTL_REGISTRY_USERNAME/DRDCTL_REGISTRY_PASSWORD"
        );
        // A base image's registry does not get the push credentials.
        let b = s.resolve("reg.example", false).unwrap();
        assert_eq!(basic(&b), ("dock".into(), "pw-from-file".into()));
        assert!(s.resolve("other.example", false).unwrap().is_anonymous());
    }

    #[test]
    fn a_token_is_sent_as_the_null_guid_users_password() {
        let (s, _d) = sources(&[(ENV_TOKEN, "eyJ0b2tlbg")], None);
        let r = s.resolve("myreg.azurecr.io", true).unwrap();
        assert_eq!(basic(&r), (ACR_TOKEN_USER.into(), "eyJ0b2tlbg".into()));
        let (s, _d) = sources(
            &[],
            Some(r#"{"auths":{"https://myreg.azurecr.io":{"identitytoken":"refresh"}}}"#),
        );
        let r = s.resolve("myreg.azurecr.io", true).unwrap();
        assert_eq!(basic(&r), (ACR_TOKEN_USER.into(), "refresh".into()));
    }

    #[test]
    fn half_set_environment_is_an_error() {
        let (s, _d) = sources(&[(ENV_USERNAME, "ci")], None);
        let e = s.resolve("r", true).unwrap_err().to_string();
        assert!(e.contains("DRDCTL_REGISTRY_PASSWORD is not"), "{e}");
    }

    #[test]
    fn credential_helpers_are_refused_for_the_target_and_noted_for_bases() {
        let cfg = r#"{"auths":{"gcr.io":{}},"credHelpers":{"myreg.azurecr.io":"acr-env"},"credsStore":"desktop"}"#;
        let (s, _d) = sources(&[], Some(cfg));
        let e = s.resolve("myreg.azurecr.io", true).unwrap_err().to_string();
        assert!(e.contains("`acr-env` in credHelpers"), "{e}");
        assert!(e.contains("DRDCTL_REGISTRY_USERNAME"), "{e}");
        let e = s.resolve("ghcr.io", true).unwrap_err().to_string();
        assert!(e.contains("`desktop` in credsStore"), "{e}");
        let b = s.resolve("gcr.io", false).unwrap();
        assert!(b.is_anonymous());
        assert!(b.note.unwrap().contains("desktop"));
    }

    #[test]
    fn docker_hub_keys_and_username_password_entries() {
        let cfg = r#"{"auths":{"https://index.docker.io/v1/":{"username":"u","password":"p"}}}"#;
        let (s, _d) = sources(&[], Some(cfg));
        assert_eq!(
            basic(&s.resolve("docker.io", true).unwrap()),
            ("u".into(), "p".into())
        );
        assert!(s.resolve("quay.io", true).unwrap().is_anonymous());
    }

    #[test]
    fn a_broken_config_file_is_named_without_its_content() {
        let (s, d) = sources(&[], Some(r#"{"auths": {"r": {"auth": "c2VjcmV0"}"#));
        let e = s.resolve("r", true).unwrap_err().to_string();
        assert!(
            e.contains(&d.path().join("config.json").display().to_string()),
            "{e}"
        );
        assert!(!e.contains("c2VjcmV0"), "{e}");
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let (s, _d) = sources(&[(ENV_USERNAME, "ci"), (ENV_PASSWORD, "hunter2")], None);
        let r = s.resolve("r", true).unwrap();
        let shown = format!("{r:?} {:?} {s:?}", r.credential);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn az_is_run_for_acr_when_asked() {
        let (mut s, d) = sources(&[], None);
        let az = d.path().join("az");
        std::fs::write(
            &az,
            "#!/bin/sh\n[ \"$1 $2 $3 $4 $5\" = \"acr login --name myreg --expose-token\" ] || exit 3\necho acr-token\n",
        )
        .unwrap();
        std::fs::set_permissions(&az, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        s.az_program = az;
        assert!(s.resolve("myreg.azurecr.io", true).unwrap().is_anonymous());
        s.acr_cli_login = true;
        let r = s.resolve("myreg.azurecr.io", true).unwrap();
        assert_eq!(basic(&r), (ACR_TOKEN_USER.into(), "acr-token".into()));
        s.az_program = d.path().join("no-such-az");
        let e = s.resolve("myreg.azurecr.io", true).unwrap_err().to_string();
        assert!(e.contains("az login"), "{e}");
    }
}
