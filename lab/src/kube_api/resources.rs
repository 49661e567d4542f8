//! The static table of API resources the double serves.
//!
//! Discovery, routing, validation and the store all read this one table, so a kind that is not
//! listed here is absent everywhere, exactly as an unknown kind is absent from a real API server.

/// A subresource of a resource (`deployments/scale`, `deployments/status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    /// `/status`: writes touch only `.status`.
    Status,
    /// `/scale`: an `autoscaling/v1` Scale view of `.spec.replicas`.
    Scale,
}

impl Subresource {
    /// The path segment naming the subresource.
    pub fn name(self) -> &'static str {
        match self {
            Subresource::Status => "status",
            Subresource::Scale => "scale",
        }
    }
}

/// One served resource: its group/version, names and behaviour flags.
#[derive(Debug)]
pub struct ResourceDef {
    /// API group; empty for the core group.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Plural resource name, as used in URLs.
    pub plural: &'static str,
    /// Singular resource name.
    pub singular: &'static str,
    /// Kind of the objects.
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Short names kubectl accepts (`deploy`, `cm`, ...).
    pub short_names: &'static [&'static str],
    /// Discovery categories (`all`).
    pub categories: &'static [&'static str],
    /// Subresources served.
    pub subresources: &'static [Subresource],
    /// Whether `metadata.generation` is maintained (1 on create, +1 on each spec change).
    pub generation: bool,
}

/// Verbs of an ordinary resource, as discovery lists them.
pub const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
/// Verbs of namespaces (no deletecollection).
pub const NAMESPACE_VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];
/// Verbs of a subresource.
pub const SUBRESOURCE_VERBS: &[&str] = &["get", "patch", "update"];

impl ResourceDef {
    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `deployments.apps`, or `configmaps` for the core group: the form used in error messages.
    pub fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Deployment.apps`, or `ConfigMap` for the core group: the form used in 422 messages.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// The verbs discovery lists for this resource.
    pub fn verbs(&self) -> &'static [&'static str] {
        if self.plural == "namespaces" {
            NAMESPACE_VERBS
        } else {
            VERBS
        }
    }

    /// Whether this resource serves the given subresource.
    pub fn has(&self, sub: Subresource) -> bool {
        self.subresources.contains(&sub)
    }

    /// The URL path of the collection, in `namespace` when the resource is namespaced.
    pub fn collection_path(&self, namespace: Option<&str>) -> String {
        let prefix = if self.group.is_empty() {
            "/api/v1".to_string()
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match namespace {
            Some(ns) if self.namespaced => format!("{prefix}/namespaces/{ns}/{}", self.plural),
            _ => format!("{prefix}/{}", self.plural),
        }
    }
}

const STATUS: &[Subresource] = &[Subresource::Status];
const STATUS_SCALE: &[Subresource] = &[Subresource::Status, Subresource::Scale];

macro_rules! res {
    ($g:expr, $v:expr, $plural:expr, $singular:expr, $kind:expr, $ns:expr, $short:expr, $cat:expr, $sub:expr, $gen:expr) => {
        ResourceDef {
            group: $g,
            version: $v,
            plural: $plural,
            singular: $singular,
            kind: $kind,
            namespaced: $ns,
            short_names: $short,
            categories: $cat,
            subresources: $sub,
            generation: $gen,
        }
    };
}

/// Every resource the double serves: group, version, plural, singular, kind, namespaced, short
/// names, categories, subresources, generation.
#[rustfmt::skip]
pub static RESOURCES: &[ResourceDef] = &[
    res!("", "v1", "events", "event", "Event", true, &["ev"], &[], &[], false),
    res!("events.k8s.io", "v1", "events", "event", "Event", true, &["ev"], &[], &[], false),
    res!("", "v1", "namespaces", "namespace", "Namespace", false, &["ns"], &[], STATUS, false),
    res!("", "v1", "configmaps", "configmap", "ConfigMap", true, &["cm"], &[], &[], false),
    res!("", "v1", "secrets", "secret", "Secret", true, &[], &[], &[], false),
    res!("", "v1", "services", "service", "Service", true, &["svc"], &["all"], STATUS, false),
    res!("", "v1", "pods", "pod", "Pod", true, &["po"], &["all"], STATUS, false),
    res!("", "v1", "serviceaccounts", "serviceaccount", "ServiceAccount", true, &["sa"], &[], &[], false),
    res!("apps", "v1", "deployments", "deployment", "Deployment", true, &["deploy"], &["all"], STATUS_SCALE, true),
    res!("apps", "v1", "replicasets", "replicaset", "ReplicaSet", true, &["rs"], &["all"], STATUS_SCALE, true),
    res!("apps", "v1", "statefulsets", "statefulset", "StatefulSet", true, &["sts"], &["all"], STATUS_SCALE, true),
    res!("networking.k8s.io", "v1", "ingresses", "ingress", "Ingress", true, &["ing"], &[], STATUS, true),
    res!("networking.k8s.io", "v1", "networkpolicies", "networkpolicy", "NetworkPolicy", true, &["netpol"], &[], &[], true),
    res!("policy", "v1", "poddisruptionbudgets", "poddisruptionbudget", "PodDisruptionBudget", true, &["pdb"], &[], STATUS, true),
    res!("autoscaling", "v2", "horizontalpodautoscalers", "horizontalpodautoscaler", "HorizontalPodAutoscaler", true, &["hpa"], &["all"], STATUS, false),
    res!("rbac.authorization.k8s.io", "v1", "roles", "role", "Role", true, &[], &[], &[], false),
    res!("rbac.authorization.k8s.io", "v1", "rolebindings", "rolebinding", "RoleBinding", true, &[], &[], &[], false),
    res!("coordination.k8s.io", "v1", "leases", "lease", "Lease", true, &[], &[], &[], false),
    // metrics-server's PodMetrics (read-only, computed: see metrics.rs); last, so that
    // `pods` alone names the core resource.
    res!("metrics.k8s.io", "v1beta1", "pods", "", "PodMetrics", true, &[], &[], &[], false),
];

/// The served API groups, in the order discovery lists them (core group excluded).
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

/// The resource served at `group/version` under `plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource of objects with this `apiVersion` and `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|r| r.api_version() == api_version && r.kind == kind)
}

/// Resolves a name the way callers of the Rust API write it: `deployments`, `deployments.apps`,
/// `deployment`, `Deployment` or a short name such as `deploy`.
pub fn lookup(name: &str) -> Option<&'static ResourceDef> {
    let (base, group) = match name.split_once('.') {
        Some((b, g)) => (b, Some(g)),
        None => (name, None),
    };
    RESOURCES.iter().find(|r| {
        group.is_none_or(|g| g == r.group)
            && (r.plural == base
                || r.singular == base
                || r.kind.eq_ignore_ascii_case(base)
                || r.short_names.contains(&base))
    })
}

/// Whether `version` is served for `group` at all (used to tell unknown API paths apart).
pub fn group_version_served(group: &str, version: &str) -> bool {
    RESOURCES
        .iter()
        .any(|r| r.group == group && r.version == version)
}
