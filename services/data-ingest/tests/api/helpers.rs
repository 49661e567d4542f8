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

/// One HTTP/1.1 answer read off a raw connection.
#[derive(Debug)]
pub struct RawAnswer {
    pub status: u16,
    /// The head, lower-cased.
    pub head: String,
    pub body: String,
}

impl RawAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        let prefix = format!("{name}:");
        self.head
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(str::trim)
    }
}

/// Reads one answer (head, then Content-Length bytes) from `conn`, within 10 s.
pub async fn read_answer(conn: &mut tokio::net::TcpStream) -> std::io::Result<RawAnswer> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let read = async {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    let status = head
                        .split_whitespace()
                        .nth(1)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                    return Ok(RawAnswer { status, head, body });
                }
            }
            let n = conn.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("closed after {} bytes of answer", buf.len()),
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in 10 s"))?
}

/// A POST of `body` to `path` as raw bytes, keep-alive.
pub fn post_request(path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// Whether the server has closed `conn`: true on end of file, false if it sends data or does
/// not close within `within`. A reset counts as closed here; tests that care look at the error.
pub async fn closed_within(conn: &mut tokio::net::TcpStream, within: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(within, conn.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}
