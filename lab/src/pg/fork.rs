//! The rejoin benchmarks' procedure (`cargo bench -p drd-db --bench rejoin` on loopback,
//! `cargo bench -p lab --bench wan_rejoin` across the WAN), in one place: a pair loaded with
//! `rows` rows (about 1 GB at 4,000,000) and trimmed to a quiet system's WAL, then forked as an
//! emergency failover with a split brain leaves it; then the old primary rejoined by start.sh's
//! own `rejoin` (pg_rewind) and, as the baseline, its `clone-standby` (a fresh base backup).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{PgNode, PgResult, RoleFiles, StartReport};

/// A pair durable as in production, whose old primary keeps its pre-fork WAL for pg_rewind.
pub fn bench_pair_config(password: &str) -> super::PgPairConfig {
    let mut cfg = super::PgPairConfig::new(password);
    // Durable: with fsync off, pg_rewind's and pg_basebackup's final sync would flush data the
    // server never flushed, and measure that instead.
    cfg.primary.tuning.clear();
    cfg.primary
        .env
        .push(("WAL_KEEP_SIZE".into(), "64MB".into()));
    cfg
}

async fn sql(node: &PgNode, db: &str, sql: &str) -> String {
    node.psql(db, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn wait_replayed(standby: &PgNode, lsn: &str) {
    let q = format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn");
    let deadline = Instant::now() + Duration::from_secs(900);
    while sql(standby, "postgres", &q).await != "t" {
        assert!(Instant::now() < deadline, "the standby never caught up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Loads `rows` rows on `old`, replicated to `new`, with the WAL trimmed (pg_rewind on
/// PostgreSQL 15 copies every WAL file in the source's pg_wal); returns appdb's size.
pub async fn load(old: &PgNode, new: &PgNode, rows: u64) -> u64 {
    sql(
        old,
        "appdb",
        &format!(
            "CREATE TABLE big (id bigint PRIMARY KEY, payload text);
             INSERT INTO big SELECT g, repeat(md5(g::text), 6) FROM generate_series(1, {rows}) g;"
        ),
    )
    .await;
    // A quiet system: autovacuum's first pass over the new table (hint bits, visibility map,
    // logged as full-page images with wal_log_hints) would otherwise run on the old primary
    // after the fork and make pg_rewind copy every page it touched.
    sql(old, "appdb", "VACUUM (FREEZE, ANALYZE) big").await;
    // Keep the WAL small before the fork: few recycled segments, and a checkpoint on both.
    for n in [old, new] {
        sql(
            n,
            "postgres",
            "ALTER SYSTEM SET min_wal_size = '32MB'; ALTER SYSTEM SET max_wal_size = '64MB';
             SELECT pg_reload_conf();",
        )
        .await;
    }
    sql(old, "postgres", "CHECKPOINT").await;
    let lsn = sql(old, "postgres", "SELECT pg_current_wal_lsn()").await;
    wait_replayed(new, &lsn).await;
    sql(new, "postgres", "CHECKPOINT").await;
    sql(old, "postgres", "SELECT pg_database_size('appdb')")
        .await
        .trim()
        .parse()
        .unwrap_or_default()
}

/// The split brain of an emergency failover: `new` promoted (with the slot for the former
/// primary at once, as drdctl's promote does, so it keeps the WAL from the fork on), then both
/// sides write a little.
pub async fn fork(old: &PgNode, new: &PgNode) {
    sql(new, "postgres", "SELECT pg_promote(true, 60)").await;
    sql(
        new,
        "postgres",
        "SELECT pg_create_physical_replication_slot('dr_slot', true)",
    )
    .await;
    sql(
        new,
        "appdb",
        "INSERT INTO big SELECT g, 'new' FROM generate_series(-1000, -1) g",
    )
    .await;
    sql(new, "postgres", "CHECKPOINT").await;
    sql(
        old,
        "appdb",
        "UPDATE big SET payload = 'diverged' WHERE id <= 1000",
    )
    .await;
}

/// The two ways back: `old` restarted as a standby of `primary` (start.sh's `rejoin`, which
/// must rewind), then its data deleted and restarted again (`clone-standby`).
pub async fn rejoin_both_ways(
    old: &PgNode,
    primary: SocketAddr,
) -> PgResult<(StartReport, StartReport)> {
    old.stop().await?;
    old.write_role(&RoleFiles::standby_of(primary))?;
    let rewind = old.start().await?;
    assert_eq!(rewind.decision, "rejoin");
    assert!(
        rewound_bytes(&rewind.log).is_some() && !rewind.log.contains("fresh base backup"),
        "not a rewind:\n{}",
        rewind.log
    );
    old.stop().await?;
    std::fs::remove_dir_all(old.pgdata()).expect("remove PGDATA");
    let clone = old.start().await?;
    assert_eq!(clone.decision, "clone-standby");
    Ok((rewind, clone))
}

/// The bytes pg_rewind copied, from start.sh's log.
pub fn rewound_bytes(log: &str) -> Option<u64> {
    let line = log.lines().find(|l| l.contains("rejoin: pg_rewind from"))?;
    let kb = line.rsplit_once("; ")?.1.split_whitespace().next()?;
    kb.parse::<u64>().ok().map(|k| k * 1024)
}

/// The bytes the base backup copied, from start.sh's log.
pub fn cloned_bytes(log: &str) -> Option<u64> {
    let line = log.lines().find(|l| l.contains("base backup done: "))?;
    let rest = line.split("base backup done: ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}
