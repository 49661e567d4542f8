//! Raw HTTP/1.1 on a TCP connection, for tests that need the bytes (pipelining, a head in two
//! parts, slow clients) rather than a client library's view.

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

/// Reads one answer (head, then Content-Length bytes) from `conn`, within 10 s. Bytes after
/// it are dropped: for pipelined answers, [`read_answers`].
pub async fn read_answer(conn: &mut tokio::net::TcpStream) -> std::io::Result<RawAnswer> {
    Ok(read_answers(conn, 1).await?.remove(0))
}

/// Reads `n` answers in a row (pipelined ones may share a read), within 10 s.
pub async fn read_answers(
    conn: &mut tokio::net::TcpStream,
    n: usize,
) -> std::io::Result<Vec<RawAnswer>> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut answers = Vec::new();
    let read = async {
        loop {
            while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() < end + 4 + len {
                    break;
                }
                let status = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                answers.push(RawAnswer { status, head, body });
                buf.drain(..end + 4 + len);
                if answers.len() == n {
                    return Ok(std::mem::take(&mut answers));
                }
            }
            let got = conn.read(&mut chunk).await?;
            if got == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "closed after {} answers and {} bytes of the next",
                        answers.len(),
                        buf.len()
                    ),
                ));
            }
            buf.extend_from_slice(&chunk[..got]);
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
