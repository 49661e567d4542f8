//! A practice namespace's PostgreSQL pod (`drdctl practice`): a node of its own, made by the
//! pod's own script (drdctl's `copy.sh`: a base backup of the region's database, started as a
//! standby of nothing), reached by port-forward at its own address; the region's node runs on
//! untouched; deleting the namespace stops the copy and removes it.

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use lab::kube_api::{resource, WriteOpts};
use lab::pg::PgPair;
use serde_json::json;
use sqlx::{Connection, PgConnection};
use std::time::Duration;

use crate::pod::bridge;
use crate::support::{client, config, eventually, primary_region, PASSWORD};

const COPY_SCRIPT: &str = include_str!("../../../cli/src/commands/practice/copy.sh");

/// Command lines of this machine's processes that name `needle`.
fn processes_naming(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(needle))
        .collect()
}

#[tokio::test]
async fn a_practice_namespace_gets_a_node_of_its_own_cloned_from_the_regions() {
    // Of this process: no other test's copy has the name.
    let ns = format!("drdctl-practice-lab-{}", std::process::id());
    let ns = ns.as_str();
    let pair = PgPair::new(config()).unwrap();
    let d = primary_region(&pair).await;
    pair.primary
        .psql("appdb", "CREATE TABLE t (x int); INSERT INTO t VALUES (7);")
        .await
        .unwrap();

    d.create(json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": ns, "labels": {"drdctl.io/practice": "lab-test"}}}))
        .unwrap();
    d.create(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "postgresql-secret", "namespace": ns},
        "stringData": {"password": PASSWORD}}))
        .unwrap();
    d.create(json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "postgresql", "namespace": ns},
        "spec": {"serviceName": "postgresql-headless", "replicas": 1,
            "selector": {"matchLabels": {"app": "postgresql"}},
            "template": {"metadata": {"labels": {"app": "postgresql"}},
                "spec": {"containers": [{"name": "postgresql", "image": "postgres:15",
                    "command": ["bash", "-c", COPY_SCRIPT],
                    "env": [
                        {"name": "SOURCE_HOST", "value": "postgresql.default.svc.cluster.local"},
                        {"name": "SOURCE_PORT", "value": "5432"},
                        {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"},
                    ],
                    "ports": [{"containerPort": 5432}]}]}}}}))
        .unwrap();
    let ip = eventually(
        "the practice copy Ready",
        Duration::from_secs(180),
        || async {
            let pod = d.get("pods", ns, "postgresql-0")?;
            let ready = pod["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            ready.then(|| pod["status"]["podIP"].as_str().map(str::to_string))?
        },
    )
    .await;
    assert_ne!(
        ip,
        pair.primary.addr().ip().to_string(),
        "an address of its own"
    );

    // Through port-forward: the copy, at its own address, a standby following no one, with
    // the region's data.
    let port = bridge(Api::<Pod>::namespaced(client(&d), ns), "postgresql-0", 5432).await;
    let opts = crate::support::superuser_at(port);
    let mut c = PgConnection::connect_with(&opts).await.unwrap();
    let row: (bool, i32, String, bool) = sqlx::query_as(
        "SELECT pg_is_in_recovery(), (SELECT x FROM t), \
                current_setting('listen_addresses'), \
                EXISTS (SELECT 1 FROM pg_stat_wal_receiver)",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(row, (true, 7, ip.clone(), false));
    let conninfo: String = sqlx::query_scalar("SELECT current_setting('primary_conninfo')")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(conninfo, "", "the copy follows no one");
    c.close().await.unwrap();
    assert_eq!(
        pair.primary
            .psql("postgres", "SELECT pg_is_in_recovery()")
            .await
            .unwrap(),
        "f",
        "the region's node runs on"
    );
    let needle = format!("drd-lab-pg-practice-{ns}");
    assert!(!processes_naming(&needle).is_empty());

    // Deleting the namespace stops the copy and removes its files; the region's node is
    // untouched (no slot or backup left on it).
    d.store()
        .delete(
            resource("namespaces").unwrap(),
            "",
            ns,
            WriteOpts::default(),
        )
        .unwrap();
    eventually(
        "the copy's processes gone",
        Duration::from_secs(60),
        || async { processes_naming(&needle).is_empty().then_some(()) },
    )
    .await;
    assert_eq!(
        pair.primary
            .psql(
                "postgres",
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'pg_basebackup%'",
            )
            .await
            .unwrap(),
        "0"
    );
    assert_eq!(
        pair.primary.psql("appdb", "SELECT x FROM t").await.unwrap(),
        "7"
    );
}
