//! What can go wrong talking to a cluster, each naming the context and what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("no kubeconfig at {path} (set kube.kubeconfig in drdctl.toml, or KUBECONFIG)")]
    NoKubeconfig { path: PathBuf },
    #[error("cannot read kubeconfig {path}: {message}")]
    BadKubeconfig { path: PathBuf, message: String },
    #[error(
        "region {region}: context {context:?} is not in kubeconfig {path} (contexts there: {available}); \
         fix regions.{region}.context in drdctl.toml"
    )]
    UnknownContext {
        region: String,
        context: String,
        path: PathBuf,
        available: String,
    },
    #[error("context {context}: cannot build a client: {message}")]
    Config { context: String, message: String },
    #[error(
        "context {context}: the API server at {server} is unreachable while {what}: {message}"
    )]
    Unreachable {
        context: String,
        server: String,
        what: String,
        message: String,
    },
    #[error("context {context}: the server does not serve {kind} (is the API group installed?)")]
    UnknownKind { context: String, kind: String },
    #[error("context {context}: {object} is invalid: {message}")]
    Invalid {
        context: String,
        object: String,
        message: String,
    },
    #[error(
        "context {context}: conflict while {what}: {message} (another field manager owns these \
         fields; re-run with --force-conflicts to take them over)"
    )]
    Conflict {
        context: String,
        what: String,
        message: String,
    },
    #[error("context {context}: Secret {namespace}/{name} (key {key:?}) not found; create it (drdctl deploy creates it) or pass the password through the environment")]
    MissingSecret {
        context: String,
        namespace: String,
        name: String,
        key: String,
    },
    #[error("context {context}: {what}: {code} {reason}: {message}")]
    Api {
        context: String,
        what: String,
        code: u16,
        reason: String,
        message: String,
    },
    #[error("{0}")]
    LeaseHeld(Box<LeaseHeld>),
    #[error("context {context}: {what}: {message}")]
    Other {
        context: String,
        what: String,
        message: String,
    },
}

impl KubeError {
    pub fn from_kube(context: &str, server: &str, what: String, e: kube::Error) -> Self {
        let context = context.to_string();
        match e {
            kube::Error::Api(s) if s.code == 422 => KubeError::Invalid {
                context,
                object: what,
                message: s.message,
            },
            kube::Error::Api(s) if s.code == 409 && s.reason == "Conflict" => KubeError::Conflict {
                context,
                what,
                message: s.message,
            },
            kube::Error::Api(s) => KubeError::Api {
                context,
                what,
                code: s.code,
                reason: s.reason,
                message: s.message,
            },
            kube::Error::HyperError(_) | kube::Error::Service(_) => KubeError::Unreachable {
                context,
                server: server.to_string(),
                what,
                message: chain(&e),
            },
            other => KubeError::Other {
                context,
                what,
                message: chain(&other),
            },
        }
    }

    /// Whether retrying later could help (the server did not answer).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, KubeError::Unreachable { .. })
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = c.source();
    }
    s
}

/// Who holds the switchover Lease, for [`KubeError::LeaseHeld`].
#[derive(Debug, thiserror::Error)]
#[error(
    "context {context}: another drdctl run holds the switchover lock, Lease {namespace}/{name}: \
     {holder} (renewed {renewed}, expires in {expires_in_secs}s). Wait for it to finish; if that \
     run is dead, break the lock with: kubectl --context {context} -n {namespace} delete lease {name}"
)]
pub struct LeaseHeld {
    pub context: String,
    pub namespace: String,
    pub name: String,
    pub holder: String,
    pub renewed: String,
    pub expires_in_secs: i64,
}
