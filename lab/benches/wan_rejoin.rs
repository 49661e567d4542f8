//! Rejoin across the WAN: how long a former primary takes to become a streaming standby again,
//! by pg_rewind versus a fresh pg_basebackup, when the regions are a WAN apart (every byte
//! between the nodes through the lab's relay: `WAN_RTT_MS`, default 40, `WAN_MBIT`, default
//! 200). The same procedure as `cargo bench -p drd-db --bench rejoin` (about 1 GB, a small
//! divergent change on both sides after the fork, start.sh's own `rejoin` and `clone-standby`
//! paths, timed from launch until the node accepts connections); the load replicates before the
//! WAN is switched on, so only the rejoin pays the distance.
//!
//! `cargo bench -p lab --bench wan_rejoin` (`BENCH_ROWS`, default 4,000,000, about 1 GB).
//! A benchmark: it prints figures and asserts only that each path took the way it names.

use std::time::{Duration, Instant};

use lab::pg::{PgNode, PgPair, PgPairConfig, RoleFiles};
use lab::wan::{Link, Party, Relay, Wan, WanSettings};

fn env_f64(k: &str, default: f64) -> f64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn mb(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / 1e6)
}

async fn wait_replayed(standby: &PgNode, lsn: &str) {
    let sql = format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn");
    let deadline = Instant::now() + Duration::from_secs(900);
    while standby.psql("postgres", &sql).await.unwrap() != "t" {
        assert!(Instant::now() < deadline, "the standby never caught up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A number in the start.sh log line containing `marker`, after `after`.
fn logged_number(log: &str, marker: &str, after: &str) -> Option<u64> {
    let line = log.lines().find(|l| l.contains(marker))?;
    let rest = line.rsplit_once(after)?.1;
    rest.split_whitespace().next()?.parse().ok()
}

#[tokio::main]
async fn main() {
    let rows: u64 = env_f64("BENCH_ROWS", 4_000_000.0) as u64;
    let settings = WanSettings {
        rtt_ms: env_f64("WAN_RTT_MS", 40.0),
        mbit: env_f64("WAN_MBIT", 200.0),
    };
    let mut cfg = PgPairConfig::new("bench-pw");
    cfg.primary.tuning.clear();
    cfg.primary
        .env
        .push(("WAL_KEEP_SIZE".into(), "64MB".into()));
    let pair = PgPair::start(cfg).await.expect("start the pair");
    let (old, new) = (&pair.primary, &pair.dr);
    // The old primary's way to the new one, across the WAN (no distance while loading).
    let wan = Wan::new(WanSettings::default());
    let relay = Relay::start(
        &wan,
        Link(Party::Region("primary".into()), Party::Region("dr".into())),
        std::net::SocketAddr::new(old.addr().ip(), 0),
        new.addr(),
    )
    .await
    .expect("relay");

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
    old.psql("appdb", "VACUUM (FREEZE, ANALYZE) big")
        .await
        .unwrap();
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
    let size: u64 = old
        .psql("postgres", "SELECT pg_database_size('appdb')")
        .await
        .unwrap()
        .parse()
        .unwrap_or_default();
    println!(
        "dataset: {rows} rows, appdb {} (loaded and replicated in {:.0?})",
        mb(size),
        t0.elapsed()
    );

    // The split brain of an emergency failover: both sides write a little after the fork.
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

    wan.set(settings);
    println!(
        "WAN between the nodes: {} ms RTT, {} Mbit/s",
        settings.rtt_ms, settings.mbit
    );
    old.stop().await.unwrap();
    old.write_role(&RoleFiles::standby_of(relay.addr)).unwrap();
    let rewind = old.start().await.expect("rejoin by rewind");
    assert_eq!(rewind.decision, "rejoin");
    let rewound = logged_number(&rewind.log, "rejoin: pg_rewind from", "; ").map(|kb| kb * 1024);
    assert!(
        rewound.is_some() && !rewind.log.contains("fresh base backup"),
        "not a rewind:\n{}",
        rewind.log
    );

    old.stop().await.unwrap();
    std::fs::remove_dir_all(old.pgdata()).expect("remove PGDATA");
    let clone = old.start().await.expect("rejoin by clone");
    assert_eq!(clone.decision, "clone-standby");
    let cloned = logged_number(&clone.log, "base backup done: ", "base backup done: ");

    let (rb, cb) = (rewound.unwrap_or(0), cloned.unwrap_or(0));
    println!(
        "rejoin by pg_rewind:      {:>7.2} s to ready, {} copied",
        rewind.elapsed.as_secs_f64(),
        mb(rb)
    );
    println!(
        "rejoin by pg_basebackup:  {:>7.2} s to ready, {} copied",
        clone.elapsed.as_secs_f64(),
        mb(cb)
    );
    println!(
        "pg_rewind: {:.1}x faster to ready, {:.1}x fewer bytes",
        clone.elapsed.as_secs_f64() / rewind.elapsed.as_secs_f64(),
        cb as f64 / rb.max(1) as f64
    );
}
