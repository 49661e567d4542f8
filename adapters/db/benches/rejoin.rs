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

use std::time::Instant;

use drd_db::human_bytes;
use lab::pg::fork::{bench_pair_config, cloned_bytes, fork, load, rejoin_both_ways, rewound_bytes};
use lab::pg::{PgNode, PgPair};

const PASSWORD: &str = "bench-pw";

#[tokio::main]
async fn main() {
    let rows: u64 = std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(4_000_000);
    let pair = PgPair::start(bench_pair_config(PASSWORD))
        .await
        .expect("start the pair");
    let (old, new) = (&pair.primary, &pair.dr);

    let t0 = Instant::now();
    let size = load(old, new, rows).await;
    println!(
        "dataset: {rows} rows, appdb {} (loaded and replicated in {:.0?})",
        human_bytes(size),
        t0.elapsed()
    );
    fork(old, new).await;
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

    let (rewind, clone) = rejoin_both_ways(old, new.addr()).await.expect("rejoin");
    if std::env::var_os("BENCH_LOG").is_some() {
        println!("--- start.sh rejoin log ---\n{}", rewind.log);
    }

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
        rewound_bytes(&rewind.log).unwrap_or(0),
        cloned_bytes(&clone.log).unwrap_or(0),
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
