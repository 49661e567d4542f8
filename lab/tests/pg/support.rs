//! Helpers: deadline polling (tests never sleep to synchronise), a started pair, a region's
//! double running the PostgreSQL pod, and a kube-rs client.

use std::sync::Arc;
use std::time::Duration;

use lab::pg::{PgPair, PgPairConfig, PgPodRuntime, RoleFiles};
use lab::{KubeDouble, KubeDoubleConfig};
use serde_json::{json, Value};

/// The secret's `password`: `:` and `\` test the passfile escaping.
pub const PASSWORD: &str = "lab:pw\\1";

pub use test_support::eventually;

/// A pair's config; `WAL_KEEP_SIZE` keeps the old primary's pre-fork WAL for pg_rewind.
pub fn config() -> PgPairConfig {
    let mut cfg = PgPairConfig::new(PASSWORD);
    for node in [&mut cfg.primary, &mut cfg.dr] {
        node.env.push(("WAL_KEEP_SIZE".into(), "256MB".into()));
    }
    cfg
}

/// A started pair: primary region primary, DR streaming from it.
pub async fn pair() -> PgPair {
    PgPair::start(config())
        .await
        .expect("start the PostgreSQL pair")
}

/// Waits until `sql` (one value) on `node`'s appdb returns `want`.
pub async fn wait_value(node: &lab::PgNode, sql: &str, want: &str) {
    let what = format!("{sql} = {want} on {}", node.name());
    eventually(&what, Duration::from_secs(60), || async {
        (node.psql("appdb", sql).await.ok()?.as_str() == want).then_some(())
    })
    .await;
}

/// The primary region's double, whose `postgresql` StatefulSet pod runs the pair's primary.
pub async fn primary_region(pair: &PgPair) -> KubeDouble {
    let rt = PgPodRuntime::new(pair.primary.clone());
    let cfg = KubeDoubleConfig::new("primary", "127.0.0.1:0".parse().unwrap())
        .sync_delay(Duration::from_millis(10))
        .runtime(Arc::new(rt.clone()))
        .pod_io(Arc::new(rt.clone()));
    let d = KubeDouble::start_with(cfg).await.expect("start the double");
    rt.bind(&d);
    let role: RoleFiles = pair.initial_roles().0;
    d.create(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "postgresql-secret", "namespace": "default"},
        "stringData": {"password": PASSWORD}}))
        .unwrap();
    d.create(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "postgresql-role", "namespace": "default"},
        "data": role.to_config_map_data()}))
        .unwrap();
    d.create(json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "postgresql", "namespace": "default"},
        "spec": {"serviceName": "postgresql-headless", "replicas": 1,
            "selector": {"matchLabels": {"app": "postgresql"}},
            "template": {"metadata": {"labels": {"app": "postgresql"}},
                "spec": {"containers": [{"name": "postgresql", "image": "postgres:15",
                    "ports": [{"containerPort": 5432}]}]}}}}))
        .unwrap();
    eventually("postgresql-0 Ready", Duration::from_secs(120), || async {
        let pod = d.get("pods", "default", "postgresql-0")?;
        ready(&pod).then_some(())
    })
    .await;
    d
}

fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// A kube-rs client for a double.
pub fn client(d: &KubeDouble) -> kube::Client {
    let config = kube::Config::new(d.url().parse().expect("double url"));
    kube::Client::try_from(config).expect("kube client")
}

/// The superuser on appdb at a local port (a port-forward bridge).
pub fn superuser_at(port: u16) -> sqlx::postgres::PgConnectOptions {
    sqlx::postgres::PgConnectOptions::new()
        .host("127.0.0.1")
        .port(port)
        .username("postgres")
        .password(PASSWORD)
        .database("appdb")
}
