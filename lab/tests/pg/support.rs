//! Helpers: deadline polling (tests never sleep to synchronise), a started pair, a region's
//! double running the PostgreSQL pod, and a kube-rs client.

use std::time::Duration;

use lab::pg::{PgPair, PgPairConfig};
use lab::KubeDouble;

/// The secret's `password`: `:` and `\` test the passfile escaping.
pub const PASSWORD: &str = "lab:pw\\1";

pub use test_support::eventually;

/// A pair's config; `WAL_KEEP_SIZE` keeps the old primary's pre-fork WAL for pg_rewind.
pub fn config() -> PgPairConfig {
    test_support::test_log();
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
    lab::world::RegionBuilder::new("primary", pair.primary.clone())
        .sync_delay(Duration::from_millis(10))
        .deployed(
            &test_support::workspace_root(),
            PASSWORD,
            &pair.initial_roles().0,
            &[],
        )
        .start()
        .await
        .expect("start the primary region")
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
