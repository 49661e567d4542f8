//! pgbench of the `INSERT ... RETURNING id` that `POST /api/v1/ingest` makes for the seed
//! record, shared by the ingest benches.

use test_support::PgCluster;

/// Transactions per second of pgbench with `connections` clients for `seconds` on `appdb`.
pub fn pgbench(cluster: &PgCluster, connections: u64, seconds: u64) -> f64 {
    let script = cluster.dir().join("insert.sql");
    std::fs::write(
        &script,
        "INSERT INTO ingested_data (data_type, source, payload) \
         VALUES ('sensor', 'api', '{\"temperature\":25.5,\"humidity\":60}') RETURNING id;\n",
    )
    .unwrap();
    // The cluster's directory belongs to its user; make the script readable to it.
    let _ = std::process::Command::new("chmod")
        .arg("644")
        .arg(&script)
        .status();
    let c = connections.to_string();
    let t = seconds.to_string();
    let out = cluster
        .tool(
            "pgbench",
            &[
                "-n",
                "-c",
                &c,
                "-j",
                "2",
                "-T",
                &t,
                "-f",
                script.to_str().unwrap(),
                "appdb",
            ],
        )
        .output()
        .expect("running pgbench");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pgbench failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no tps in pgbench output: {text}"))
}

/// A whole-number knob from the environment.
pub fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A PostgreSQL 15 cluster with production durability and `appdb` made by init-db.sql.
pub fn durable_appdb() -> PgCluster {
    let cluster = PgCluster::start(test_support::PgOptions {
        durable: true,
        ..test_support::PgOptions::default()
    })
    .expect("starting a durable PostgreSQL cluster");
    cluster.psql("postgres", "CREATE DATABASE appdb").unwrap();
    cluster
        .apply_file("appdb", &test_support::init_db_sql())
        .unwrap();
    cluster
}
