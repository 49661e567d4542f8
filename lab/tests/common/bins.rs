//! Where the service binaries the pods run are: the debug target dir, which `cargo test
//! --workspace` fills (alone: `cargo build -p frontend-api -p business-logic -p data-ingest`).

use std::path::PathBuf;

pub fn bin_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("debug");
    for b in ["frontend-api", "business-logic", "data-ingest"] {
        assert!(
            dir.join(b).exists(),
            "{} missing: run `cargo build -p frontend-api -p business-logic -p data-ingest` (./dev test does)",
            dir.join(b).display()
        );
    }
    dir
}
