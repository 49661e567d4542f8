//! Spawning data-ingest in-process on a free port, against its own test database.

use common::{Running, ServiceConfig};
#[allow(unused_imports)] // the benches include this file for its raw HTTP helpers only
pub use test_support::json_error as assert_error;
use test_support::service_env;

/// data-ingest under test, on its own database.
pub type TestApp = test_support::TestApp<Running>;

pub async fn spawn() -> TestApp {
    spawn_with(&[]).await
}

pub async fn spawn_with(extra: &[(&str, &str)]) -> TestApp {
    TestApp::spawn(|db_url| async move {
        let running = start_on(&db_url, extra).await;
        let url = running.url();
        (running, url)
    })
    .await
}

pub async fn start_on(db_url: &str, extra: &[(&str, &str)]) -> Running {
    let config = ServiceConfig::from_lookup(
        data_ingest::DEFAULT_PORT,
        data_ingest::DEFAULT_BODY_LIMIT,
        service_env(db_url, extra),
    )
    .expect("test config is valid");
    data_ingest::start(config)
        .await
        .expect("data-ingest starts")
}

/// Rows in `ingested_data`.
pub fn count(app: &TestApp) -> i64 {
    app.db
        .psql("SELECT count(*) FROM ingested_data")
        .parse()
        .expect("a count")
}

#[allow(unused_imports)] // each target uses some
pub use test_support::raw::{closed_within, post_request, read_answer, RawAnswer};
