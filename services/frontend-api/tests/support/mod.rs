//! The three services on one database, wired like a region: shared by the test targets.

use common::{Running, ServiceConfig};
use test_support::service_env;

pub fn config(port: u16, limit: usize, db: &str, extra: &[(&str, &str)]) -> ServiceConfig {
    ServiceConfig::from_lookup(port, limit, service_env(db, extra)).unwrap()
}

/// frontend-api alone, with its default body limit and `extra` variables (its backends).
pub async fn frontend(db_url: &str, extra: &[(&str, &str)]) -> Running {
    frontend_api::start(config(8080, 1 << 20, db_url, extra))
        .await
        .unwrap()
}

/// business-logic, data-ingest, and frontend-api in front of them, in that order.
pub async fn region(db_url: &str) -> [Running; 3] {
    region_with(db_url, &[]).await
}

/// The same, with `extra` variables for all three.
pub async fn region_with(db_url: &str, extra: &[(&str, &str)]) -> [Running; 3] {
    let bl = business_logic::start(config(8081, 65536, db_url, extra))
        .await
        .unwrap();
    let di = data_ingest::start(config(8082, 16 << 20, db_url, extra))
        .await
        .unwrap();
    let (blu, diu) = (bl.url(), di.url());
    let mut env = vec![
        ("BUSINESS_LOGIC_URL", blu.as_str()),
        ("DATA_INGEST_URL", diu.as_str()),
    ];
    env.extend_from_slice(extra);
    [bl, di, frontend(db_url, &env).await]
}
