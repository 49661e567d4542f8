//! schemathesis against each service's OpenAPI document, every check, on a real database.
//!
//! Ignored by a plain `cargo test`: it needs schemathesis, which `./dev test` installs (a venv
//! under target/, pinned version) and then runs this with `--ignored`, passing the `st`
//! binary in `SCHEMATHESIS`. Configuration: services/schemathesis.toml.

use std::time::Duration;

mod support;

use common::Running;
use test_support::{workspace_root, TestDb};

/// Runs schemathesis; the whole output when it found something.
async fn schemathesis(st: &str, name: &str, service: &Running) -> Option<String> {
    let root = workspace_root();
    let examples = std::env::var("SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "100".into());
    // Its cache (.schemathesis/) goes under target/, not into the source tree.
    let cwd = root.join("target");
    std::fs::create_dir_all(&cwd).unwrap();
    let out = tokio::process::Command::new(st)
        .current_dir(&cwd)
        .arg("--config-file")
        .arg(root.join("services/schemathesis.toml"))
        .args(["run", &format!("{}/openapi.json", service.url())])
        .args([
            "--checks",
            "all",
            "--max-examples",
            &examples,
            "--seed",
            "14",
        ])
        .args(["--workers", "1", "--request-timeout", "20", "--no-color"])
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {st}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The summary, for the CI log.
    let summary: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.contains("SUMMARY"))
        .collect();
    println!("schemathesis against {name}:\n{}", summary.join("\n"));
    (!out.status.success()).then(|| format!("schemathesis against {name}:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs schemathesis: ./dev test installs it and runs this with --ignored"]
async fn schemathesis_finds_no_failure_in_any_service() {
    let st = std::env::var("SCHEMATHESIS").unwrap_or_else(|_| {
        workspace_root()
            .join("target/schemathesis/bin/st")
            .display()
            .to_string()
    });
    let db = TestDb::new();
    // Orders and ingests need existing rows to reach their 201s.
    db.psql("INSERT INTO users (username, email) SELECT 'seed' || i, 'seed' || i || '@example.com' FROM generate_series(1, 50) i");
    let [bl, di, fe] = support::region(&db.url).await;
    let mut failed = Vec::new();
    for (name, service) in [
        ("business-logic", &bl),
        ("data-ingest", &di),
        ("frontend-api", &fe),
    ] {
        let found =
            tokio::time::timeout(Duration::from_secs(600), schemathesis(&st, name, service))
                .await
                .unwrap_or_else(|_| {
                    panic!("schemathesis against {name} took more than 10 minutes")
                });
        failed.extend(found);
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}
