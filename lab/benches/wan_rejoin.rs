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

use std::time::Instant;

use lab::pg::fork::{bench_pair_config, cloned_bytes, fork, load, rejoin_both_ways, rewound_bytes};
use lab::pg::PgPair;
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

#[tokio::main]
async fn main() {
    let rows: u64 = env_f64("BENCH_ROWS", 4_000_000.0) as u64;
    let settings = WanSettings {
        rtt_ms: env_f64("WAN_RTT_MS", 40.0),
        mbit: env_f64("WAN_MBIT", 200.0),
    };
    let pair = PgPair::start(bench_pair_config("bench-pw"))
        .await
        .expect("start the pair");
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
    let size = load(old, new, rows).await;
    println!(
        "dataset: {rows} rows, appdb {} (loaded and replicated in {:.0?})",
        mb(size),
        t0.elapsed()
    );

    fork(old, new).await;

    wan.set(settings);
    println!(
        "WAN between the nodes: {} ms RTT, {} Mbit/s",
        settings.rtt_ms, settings.mbit
    );
    let (rewind, clone) = rejoin_both_ways(old, relay.addr).await.expect("rejoin");
    let (rb, cb) = (
        rewound_bytes(&rewind.log).unwrap_or(0),
        cloned_bytes(&clone.log).unwrap_or(0),
    );
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
