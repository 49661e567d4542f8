//! Logging: human-readable on a terminal, one JSON object per line otherwise (containers, CI).
//!
//! The level comes from `RUST_LOG` (default `info`). Call once, at the top of `main`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    // A second init (tests) is harmless: keep the first subscriber.
    if std::io::stdout().is_terminal() {
        let _ = builder.try_init();
    } else {
        let _ = builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init();
    }
}
