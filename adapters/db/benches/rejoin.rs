//! Rejoin benchmark: how long a former primary takes to become a streaming standby again, by
//! pg_rewind versus a fresh pg_basebackup (the seed's way: delete the volume, re-clone), for a
//! database of about 1 GB with a small divergent change. Both paths are start.sh's own
//! (`rejoin` and `clone-standby`), timed from launch until the node accepts connections.
//!
//! `cargo bench -p drd-db --bench rejoin` (`BENCH_ROWS` changes the size; 4,000,000 rows is
//! about 1 GB). A benchmark, not a test: it prints figures and asserts nothing.
//!
//! pg_rewind on PostgreSQL 15 copies every WAL file in the source's pg_wal plus the changed
//! files, so the WAL is trimmed (CHECKPOINT on both) before the fork, as a quiet system's
//! would be.

use std::time::{Duration, Instant};

use drd_db::human_bytes;
use lab::pg::{PgNode, PgPair, PgPairConfig, RoleFiles};

const PASSWORD: &str = "bench-pw";

fn value(s: &str) -> u64 {
    s.trim().parse().unwrap_or_default()
}

async fn wait_replayed(standby: &PgNode, lsn: &str) {
    let sql = format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn");
    let deadline = Instant::now() + Duration::from_secs(600);
    while standby.psql("postgres", &sql).await.unwrap() != "t" {
        assert!(Instant::now() < deadline, "the standby never caught up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn kb_copied(log: &str) -> Option<u64> {
    let line = log.lines().find(|l| l.contains("rejoin: pg_rewind from"))?;
    let kb = line.rsplit_once("; ")?.1.split_whitespace().next()?;
    kb.parse::<u64>().ok().map(|k| k * 1024)
}

fn backup_bytes(log: &str) -> Option<u64> {
    let line = log.lines().find(|l| l.contains("base backup done: "))?;
    let rest = line.split("base backup done: ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

#[tokio::main]
async fn main() {
    let rows: u64 = std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(4_000_000);
    let mut cfg = PgPairConfig::new(PASSWORD);
    // Durable, as in production: with fsync off, pg_rewind's and pg_basebackup's final sync
    // would flush data the server never flushed, and measure that instead.
    cfg.primary.tuning.clear();
    // The old primary keeps its pre-fork WAL for pg_rewind; the source keeps none extra.
    cfg.primary
        .env
        .push(("WAL_KEEP_SIZE".into(), "64MB".into()));
    let pair = PgPair::start(cfg).await.expect("start the pair");
    let (old, new) = (&pair.primary, &pair.dr);

    let t0 = Instant::now();
    old.psql(
        "appdb",
        &format!(
            "CREATE TABLE big (id bigint PRIMARY KEY, payload text);
             INSERT INTO big SELECT g, repeat(md5(g::text), 6) FROM generate_series(1, {rows}) g;"
        ),
    )
    .await
    .expect("load");
    // A quiet system: autovacuum's first pass over the new table (hint bits, visibility map,
    // logged as full-page images with wal_log_hints) would otherwise run on the old primary
    // after the fork and make pg_rewind copy every page it touched.
    old.psql("appdb", "VACUUM (FREEZE, ANALYZE) big")
        .await
        .unwrap();
    // Keep the WAL small before the fork: few recycled segments, and a checkpoint on both.
    for n in [old, new] {
        n.psql(
            "postgres",
            "ALTER SYSTEM SET min_wal_size = '32MB'; ALTER SYSTEM SET max_wal_size = '64MB';
             SELECT pg_reload_conf();",
        )
        .await
        .unwrap();
    }
    old.psql("postgres", "CHECKPOINT").await.unwrap();
    let lsn = old
        .psql("postgres", "SELECT pg_current_wal_lsn()")
        .await
        .unwrap();
    wait_replayed(new, &lsn).await;
    new.psql("postgres", "CHECKPOINT").await.unwrap();
    let size = value(
        &old.psql("postgres", "SELECT pg_database_size('appdb')")
            .await
            .unwrap(),
    );
    println!(
        "dataset: {rows} rows, appdb {} (loaded and replicated in {:.0?})",
        human_bytes(size),
        t0.elapsed()
    );

    // Emergency failover with a split brain: both sides write a little after the fork.
    // As drdctl's promote does: the slot for the former primary at once, so the new primary
    // keeps the WAL from the fork on.
    new.psql("postgres", "SELECT pg_promote(true, 60)")
        .await
        .unwrap();
    new.psql(
        "postgres",
        "SELECT pg_create_physical_replication_slot('dr_slot', true)",
    )
    .await
    .unwrap();
    new.psql(
        "appdb",
        "INSERT INTO big SELECT g, 'new' FROM generate_series(-1000, -1) g",
    )
    .await
    .unwrap();
    new.psql("postgres", "CHECKPOINT").await.unwrap();
    old.psql(
        "appdb",
        "UPDATE big SET payload = 'diverged' WHERE id <= 1000",
    )
    .await
    .unwrap();
    let wal = |n: &PgNode| {
        let dir = n.pgdata().join("pg_wal");
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum::<u64>()
            })
            .unwrap_or_default()
    };
    println!(
        "pg_wal: old primary {}, new primary {}",
        human_bytes(wal(old)),
        human_bytes(wal(new))
    );

    // 1. Rejoin by pg_rewind (start.sh `rejoin`).
    old.stop().await.unwrap();
    old.write_role(&RoleFiles::standby_of(new.addr())).unwrap();
    let rewind = old.start().await.expect("rejoin by rewind");
    assert_eq!(rewind.decision, "rejoin");
    let rewind_bytes = kb_copied(&rewind.log);
    assert!(
        rewind_bytes.is_some() && !rewind.log.contains("fresh base backup"),
        "not a rewind:\n{}",
        rewind.log
    );
    if std::env::var_os("BENCH_LOG").is_some() {
        println!("--- start.sh rejoin log ---\n{}", rewind.log);
    }

    // 2. The baseline: delete the data, clone afresh (start.sh `clone-standby`).
    old.stop().await.unwrap();
    std::fs::remove_dir_all(old.pgdata()).expect("remove PGDATA");
    let clone = old.start().await.expect("rejoin by clone");
    assert_eq!(clone.decision, "clone-standby");

    let speedup = clone.elapsed.as_secs_f64() / rewind.elapsed.as_secs_f64();
    let step = |log: &str, marker: &str| -> String {
        log.lines()
            .find(|l| l.contains(marker))
            .and_then(|l| {
                l.rsplit_once(" in ")
                    .map(|(_, t)| t.split([':', ' ']).next().unwrap_or("?").to_string())
            })
            .unwrap_or_else(|| "?".into())
    };
    let (rb, cb) = (
        rewind_bytes.unwrap_or(0),
        backup_bytes(&clone.log).unwrap_or(0),
    );
    println!(
        "rejoin by pg_rewind:      {:>7.2} s to ready, {} copied (the pg_rewind step: {})",
        rewind.elapsed.as_secs_f64(),
        human_bytes(rb),
        step(&rewind.log, "rejoin: pg_rewind from"),
    );
    println!(
        "rejoin by pg_basebackup:  {:>7.2} s to ready, {} copied (the pg_basebackup step: {})",
        clone.elapsed.as_secs_f64(),
        human_bytes(cb),
        step(&clone.log, "base backup done"),
    );
    println!(
        "pg_rewind: {speedup:.1}x faster to ready, {:.1}x fewer bytes",
        cb as f64 / rb.max(1) as f64
    );
}
