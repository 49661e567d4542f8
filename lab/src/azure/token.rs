//! The Entra ID (AAD) token endpoint double: `POST /{tenant}/oauth2/v2.0/token` with the
//! client-credentials grant, by client secret (a service principal) or by client assertion
//! (workload identity), answered with the JSON and the `AADSTS` errors the real endpoint sends,
//! so the real `azure_identity` credentials run against it. Tokens it issues are opaque random
//! strings that the ARM double accepts as bearer tokens.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use serde_json::{json, Value};

#[derive(Debug, Clone)]
enum Proof {
    Secret(String),
    Assertion(String),
}

#[derive(Default)]
struct State {
    apps: HashMap<(String, String), Proof>,
    issued: HashSet<String>,
    issued_count: usize,
}

/// Registered applications and the tokens issued to them.
#[derive(Default)]
pub struct TokenIssuer {
    state: Mutex<State>,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("TokenIssuer")
            .field("apps", &s.apps.keys().collect::<Vec<_>>())
            .field("issued", &s.issued_count)
            .finish_non_exhaustive()
    }
}

/// A token endpoint answer: status and JSON body.
pub(crate) type TokenAnswer = (u16, Value);

fn aad_error(status: u16, error: &str, code: u32, description: String) -> TokenAnswer {
    (
        status,
        json!({
            "error": error,
            "error_description": format!(
                "AADSTS{code}: {description} Trace ID: {} Correlation ID: {} Timestamp: lab",
                uuid::Uuid::new_v4(),
                uuid::Uuid::new_v4()
            ),
            "error_codes": [code],
            "timestamp": "lab",
            "trace_id": uuid::Uuid::new_v4().to_string(),
            "correlation_id": uuid::Uuid::new_v4().to_string(),
            "error_uri": "https://login.microsoftonline.com/error?code=".to_string() + &code.to_string(),
        }),
    )
}

impl TokenIssuer {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a service principal that authenticates with a client secret.
    pub fn register_client_secret(&self, tenant: &str, client_id: &str, secret: &str) {
        self.lock().apps.insert(
            (tenant.to_ascii_lowercase(), client_id.to_ascii_lowercase()),
            Proof::Secret(secret.to_string()),
        );
    }

    /// Registers a workload identity: the client authenticates with this federated token
    /// (the content of `AZURE_FEDERATED_TOKEN_FILE`) as its client assertion.
    pub fn register_federated(&self, tenant: &str, client_id: &str, assertion: &str) {
        self.lock().apps.insert(
            (tenant.to_ascii_lowercase(), client_id.to_ascii_lowercase()),
            Proof::Assertion(assertion.to_string()),
        );
    }

    /// Forgets every issued token: the next ARM request with an old token gets 401.
    pub fn revoke_all(&self) {
        self.lock().issued.clear();
    }

    /// How many tokens were issued so far.
    pub fn issued_count(&self) -> usize {
        self.lock().issued_count
    }

    /// Whether `token` is one this double issued (and did not revoke).
    pub fn is_valid(&self, token: &str) -> bool {
        self.lock().issued.contains(token)
    }

    /// Whether this exact string was handed out as a token, for tests that look for leaks.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.lock().issued.iter().cloned().collect()
    }

    /// Serves one token request (form fields already parsed).
    pub(crate) fn token(&self, tenant: &str, form: &HashMap<String, String>) -> TokenAnswer {
        let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
        if field("grant_type") != "client_credentials" {
            return aad_error(
                400,
                "unsupported_grant_type",
                70003,
                format!(
                    "The app requested an unsupported grant type '{}'.",
                    field("grant_type")
                ),
            );
        }
        let scope = field("scope");
        if scope.is_empty() || !scope.split(' ').all(|s| s.ends_with("/.default")) {
            return aad_error(
                400,
                "invalid_scope",
                1002012,
                format!(
                    "The provided value for scope {scope} is not valid. Client credential \
                     flows must have a scope value with /.default suffixed to the resource \
                     identifier (application ID URI)."
                ),
            );
        }
        let client_id = field("client_id");
        let mut st = self.lock();
        let tenant_known = st
            .apps
            .keys()
            .any(|(t, _)| *t == tenant.to_ascii_lowercase());
        if !tenant_known {
            return aad_error(
                400,
                "invalid_request",
                90002,
                format!(
                    "Tenant '{tenant}' not found. Check to make sure you have the correct \
                     tenant ID and are signing into the correct cloud."
                ),
            );
        }
        let key = (tenant.to_ascii_lowercase(), client_id.to_ascii_lowercase());
        let proof_ok = match st.apps.get(&key) {
            None => {
                return aad_error(
                    400,
                    "unauthorized_client",
                    700016,
                    format!(
                        "Application with identifier '{client_id}' was not found in the \
                         directory '{tenant}'."
                    ),
                )
            }
            Some(Proof::Secret(s)) => {
                if form.contains_key("client_assertion") {
                    false
                } else if field("client_secret") != s {
                    return aad_error(
                        401,
                        "invalid_client",
                        7000215,
                        format!(
                            "Invalid client secret provided. Ensure the secret being sent in \
                             the request is the client secret value, not the client secret \
                             ID, for a secret added to app '{client_id}'."
                        ),
                    );
                } else {
                    true
                }
            }
            Some(Proof::Assertion(a)) => {
                field("client_assertion_type")
                    == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
                    && field("client_assertion") == a
            }
        };
        if !proof_ok {
            return aad_error(
                401,
                "invalid_client",
                700213,
                format!(
                    "No matching federated identity record found for the presented assertion \
                     of app '{client_id}'."
                ),
            );
        }
        let token = format!("lab-token-{}", uuid::Uuid::new_v4().simple());
        st.issued.insert(token.clone());
        st.issued_count += 1;
        (
            200,
            json!({
                "token_type": "Bearer",
                "expires_in": 3599,
                "ext_expires_in": 3599,
                "access_token": token,
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn client_secret_flow_issues_a_token_only_for_the_right_secret() {
        let t = TokenIssuer::default();
        t.register_client_secret("tenant", "app", "s3cret");
        let mut f = form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "app"),
            ("client_secret", "s3cret"),
            ("scope", "https://management.azure.com/.default"),
        ]);
        let (status, body) = t.token("tenant", &f);
        assert_eq!(status, 200);
        assert!(t.is_valid(body["access_token"].as_str().unwrap()));
        f.insert("client_secret".into(), "wrong".into());
        let (status, body) = t.token("tenant", &f);
        assert_eq!(status, 401);
        assert_eq!(body["error_codes"][0], 7000215);
        assert!(!body.to_string().contains("wrong"));
        assert_eq!(t.token("other", &f).0, 400);
    }
}
