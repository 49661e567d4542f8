//! Where drdctl's Azure token comes from. azure_identity 1.x has no `DefaultAzureCredential`,
//! so this is drdctl's own explicit chain over the 1.x credentials: AKS workload identity, a
//! service principal from the environment, managed identity, the Azure CLI. In `auto` mode a
//! credential joins the chain only when its environment is there (so a laptop never waits on
//! the IMDS address), and when nothing works the error lists every credential, in order, with
//! why it was skipped or how it failed. The environment is read through a lookup function, so
//! tests pass their own and nothing calls `set_var`.
//!
//! Secrets stay in azure_core's `Secret` (its `Debug` prints `Secret`); messages from the SDK
//! are scrubbed of the client secret and of anything after `Bearer` before drdctl keeps them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::error::ErrorKind;
use azure_core::http::ClientOptions;
use azure_identity::{
    AzureCliCredential, AzureCliCredentialOptions, ClientAssertionCredentialOptions,
    ClientSecretCredential, ClientSecretCredentialOptions, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId, WorkloadIdentityCredential,
    WorkloadIdentityCredentialOptions,
};

use crate::config::AuthMethod;
use crate::error::DnsError;

/// Looks up an environment variable (`std::env::var` in production, a map in tests).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// One kind of credential in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// AKS workload identity (federated token file).
    WorkloadIdentity,
    /// Service principal with a client secret.
    ClientSecret,
    /// Managed identity (App Service / IMDS).
    ManagedIdentity,
    /// Azure CLI login.
    AzureCli,
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CredentialKind::WorkloadIdentity => "workload identity",
            CredentialKind::ClientSecret => "service principal (client secret)",
            CredentialKind::ManagedIdentity => "managed identity",
            CredentialKind::AzureCli => "Azure CLI",
        })
    }
}

const ORDER: [CredentialKind; 4] = [
    CredentialKind::WorkloadIdentity,
    CredentialKind::ClientSecret,
    CredentialKind::ManagedIdentity,
    CredentialKind::AzureCli,
];

/// Removes secrets from a message: every known secret value, and whatever follows `Bearer`.
pub(crate) fn scrub(message: &str, secrets: &[Secret]) -> String {
    let mut out = message.to_string();
    for s in secrets {
        let s = s.secret();
        if s.len() >= 4 {
            out = out.replace(s, "<redacted>");
        }
    }
    let mut cleaned = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.to_ascii_lowercase().find("bearer ") {
        cleaned.push_str(&rest[..i + 7]);
        cleaned.push_str("<redacted>");
        let after = &rest[i + 7..];
        let end = after
            .find(|c: char| c.is_whitespace() || c == '"' || c == ',')
            .unwrap_or(after.len());
        rest = &after[end..];
    }
    cleaned.push_str(rest);
    cleaned
}

fn find_on_path(program: &str, env: EnvLookup<'_>) -> Option<PathBuf> {
    let path = env("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn var(env: EnvLookup<'_>, key: &str) -> Option<String> {
    env(key).filter(|v| !v.trim().is_empty())
}

/// Builds one credential; `Err` says why it is not available (or why it cannot be built).
fn build_one(
    kind: CredentialKind,
    explicit: bool,
    env: EnvLookup<'_>,
    client_options: &ClientOptions,
    managed_identity_client_id: Option<&str>,
    secrets: &mut Vec<Secret>,
) -> Result<Arc<dyn TokenCredential>, String> {
    let sdk = |e: azure_core::Error| format!("cannot be set up: {e}");
    let need = |names: &[&str]| -> Result<Vec<String>, String> {
        let missing: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| var(env, n).is_none())
            .collect();
        if missing.is_empty() {
            Ok(names.iter().filter_map(|n| var(env, n)).collect())
        } else {
            Err(format!("{} not set", missing.join(", ")))
        }
    };
    match kind {
        CredentialKind::WorkloadIdentity => {
            let v = need(&[
                "AZURE_FEDERATED_TOKEN_FILE",
                "AZURE_TENANT_ID",
                "AZURE_CLIENT_ID",
            ])?;
            let cred = WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions {
                    client_options: client_options.clone(),
                },
                token_file_path: Some(PathBuf::from(&v[0])),
                tenant_id: Some(v[1].clone()),
                client_id: Some(v[2].clone()),
            }))
            .map_err(sdk)?;
            Ok(cred)
        }
        CredentialKind::ClientSecret => {
            let v = need(&["AZURE_CLIENT_SECRET", "AZURE_TENANT_ID", "AZURE_CLIENT_ID"])?;
            let secret = Secret::new(v[0].clone());
            secrets.push(secret.clone());
            let cred = ClientSecretCredential::new(
                &v[1],
                v[2].clone(),
                secret,
                Some(ClientSecretCredentialOptions {
                    client_options: client_options.clone(),
                }),
            )
            .map_err(sdk)?;
            Ok(cred)
        }
        CredentialKind::ManagedIdentity => {
            if !explicit && var(env, "IDENTITY_ENDPOINT").is_none() {
                return Err("IDENTITY_ENDPOINT not set (on a VM or VM scale set, which \
                            use the IMDS endpoint, set dns.auth = \"managed-identity\")"
                    .into());
            }
            let cred = ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                user_assigned_id: managed_identity_client_id
                    .map(|id| UserAssignedId::ClientId(id.to_string())),
                client_options: client_options.clone(),
            }))
            .map_err(sdk)?;
            Ok(cred)
        }
        CredentialKind::AzureCli => {
            if find_on_path("az", env).is_none() {
                return Err("`az` not found on PATH".into());
            }
            let cred = AzureCliCredential::new(Some(AzureCliCredentialOptions {
                tenant_id: var(env, "AZURE_TENANT_ID"),
                ..Default::default()
            }))
            .map_err(sdk)?;
            Ok(cred)
        }
    }
}

/// The credential chain drdctl uses: the available credentials in order, the first that
/// gets a token is used from then on.
pub struct Credentials {
    candidates: Vec<(CredentialKind, Arc<dyn TokenCredential>)>,
    skipped: Vec<(CredentialKind, String)>,
    preferred: AtomicUsize,
    secrets: Vec<Secret>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field(
                "candidates",
                &self.candidates.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("skipped", &self.skipped)
            .finish_non_exhaustive()
    }
}

const HOW_TO: &str = "Set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET for a service \
                      principal, run `az login`, or choose a credential with dns.auth \
                      (client-secret, workload-identity, managed-identity, azure-cli)";

impl Credentials {
    /// Builds the chain for `auth` from the environment `env`. `client_options` carry the
    /// transport and the authority host (cloud) for the token requests.
    pub fn from_env(
        auth: AuthMethod,
        env: EnvLookup<'_>,
        client_options: &ClientOptions,
        managed_identity_client_id: Option<&str>,
    ) -> Result<Self, DnsError> {
        let kinds: Vec<CredentialKind> = match auth {
            AuthMethod::Auto => ORDER.to_vec(),
            AuthMethod::ClientSecret => vec![CredentialKind::ClientSecret],
            AuthMethod::WorkloadIdentity => vec![CredentialKind::WorkloadIdentity],
            AuthMethod::ManagedIdentity => vec![CredentialKind::ManagedIdentity],
            AuthMethod::AzureCli => vec![CredentialKind::AzureCli],
        };
        let explicit = auth != AuthMethod::Auto;
        let mut chain = Credentials {
            candidates: Vec::new(),
            skipped: Vec::new(),
            preferred: AtomicUsize::new(0),
            secrets: Vec::new(),
        };
        for kind in kinds {
            match build_one(
                kind,
                explicit,
                env,
                client_options,
                managed_identity_client_id,
                &mut chain.secrets,
            ) {
                Ok(c) => chain.candidates.push((kind, c)),
                Err(why) => {
                    let why = scrub(&why, &chain.secrets);
                    chain.skipped.push((kind, why));
                }
            }
        }
        if chain.candidates.is_empty() {
            let mut msg = if explicit {
                format!("dns.auth is {auth}, but that credential is not available:")
            } else {
                "no Azure credential is available; checked, in order:".to_string()
            };
            for (kind, why) in &chain.skipped {
                msg.push_str(&format!("\n  - {kind}: skipped, {why}"));
            }
            msg.push('\n');
            msg.push_str(HOW_TO);
            return Err(DnsError::Credential(msg));
        }
        Ok(chain)
    }

    /// The credentials in the chain, in order.
    pub fn kinds(&self) -> Vec<CredentialKind> {
        self.candidates.iter().map(|(k, _)| *k).collect()
    }
}

#[async_trait]
impl TokenCredential for Credentials {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let n = self.candidates.len();
        let first = self.preferred.load(Ordering::Relaxed) % n.max(1);
        let mut failures = Vec::new();
        for i in (0..n).map(|i| (first + i) % n) {
            let (kind, cred) = &self.candidates[i];
            match cred.get_token(scopes, options.clone()).await {
                Ok(t) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok(t);
                }
                Err(e) => {
                    let text = scrub(&e.to_string(), &self.secrets);
                    tracing::debug!(credential = %kind, error = %text, "credential failed");
                    failures.push((*kind, text));
                }
            }
        }
        let mut msg = "Azure authentication failed; tried, in order:".to_string();
        for (kind, why) in &failures {
            msg.push_str(&format!("\n  - {kind}: {}", why.trim()));
        }
        for (kind, why) in &self.skipped {
            msg.push_str(&format!("\n  - {kind}: skipped, {why}"));
        }
        msg.push('\n');
        msg.push_str(
            "Check the credential's values (an expired or wrong client secret, a wrong tenant or \
             client id) or choose another with dns.auth",
        );
        Err(azure_core::Error::with_message(ErrorKind::Credential, msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn scrub_removes_secrets_and_bearer_tokens() {
        let s = vec![Secret::new("hunter22")];
        assert_eq!(
            scrub(
                "bad secret hunter22 and Authorization: Bearer abc.def, ok",
                &s
            ),
            "bad secret <redacted> and Authorization: Bearer <redacted>, ok"
        );
    }

    #[test]
    fn nothing_available_lists_every_credential_in_order() {
        let env = lookup(&[]);
        let e = Credentials::from_env(AuthMethod::Auto, &env, &ClientOptions::default(), None)
            .unwrap_err()
            .to_string();
        let pos = |s: &str| e.find(s).unwrap_or_else(|| panic!("{s} missing in {e}"));
        assert!(pos("workload identity") < pos("service principal"));
        assert!(pos("service principal") < pos("managed identity"));
        assert!(pos("managed identity") < pos("Azure CLI"));
        assert!(e.contains("AZURE_CLIENT_SECRET"));
        assert!(e.contains("`az` not found on PATH"));
        assert!(e.contains("az login"));
    }

    #[test]
    fn explicit_choice_names_what_is_missing() {
        let env = lookup(&[("AZURE_TENANT_ID", "t")]);
        let e = Credentials::from_env(
            AuthMethod::ClientSecret,
            &env,
            &ClientOptions::default(),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("dns.auth is client-secret"), "{e}");
        assert!(
            e.contains("AZURE_CLIENT_SECRET, AZURE_CLIENT_ID not set"),
            "{e}"
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let env = lookup(&[
            ("AZURE_TENANT_ID", "tenant"),
            ("AZURE_CLIENT_ID", "client"),
            ("AZURE_CLIENT_SECRET", "very-secret-value"),
        ]);
        let c =
            Credentials::from_env(AuthMethod::Auto, &env, &ClientOptions::default(), None).unwrap();
        assert_eq!(c.kinds(), vec![CredentialKind::ClientSecret]);
        assert!(!format!("{c:?}").contains("very-secret-value"));
    }
}
