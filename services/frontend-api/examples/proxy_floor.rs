//! The floor of a proxy on tokio: a measurement, not a service. It passes `POST` bodies to
//! `DATA_INGEST_URL`'s `/api/v1/ingest` on one keep-alive connection per client connection and
//! does nothing else (no request id, limits, token, timeout, metrics or log; `GET` answers 200
//! and closes, for the benchmarks' readiness probe). docs/performance.md ("Seventh pass")
//! compares it, frontend-api and nginx with `benches/gateway-stub.sh`:
//!
//! ```sh
//! cargo build --release -p frontend-api --example proxy_floor
//! FA=target/release/examples/proxy_floor services/frontend-api/benches/gateway-stub.sh
//! ```
//!
//! `RT=mt` runs it on a one-worker multi-thread runtime (frontend-api's) instead of a
//! current-thread one.
use std::io::IoSlice;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The `content-length` of a parsed head (0 without one).
fn content_length(headers: &[httparse::Header<'_>]) -> usize {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
        .unwrap_or(0)
}

/// A complete request head in `buf`: its length and its body's.
fn find_head(buf: &[u8]) -> Option<(usize, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => Some((n, content_length(req.headers))),
        _ => None,
    }
}

/// A complete answer head in `buf`: its length, its body's, and its status.
fn find_resp(buf: &[u8]) -> Option<(usize, usize, u16)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut headers);
    match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => {
            Some((n, content_length(r.headers), r.code.unwrap_or(502)))
        }
        _ => None,
    }
}

async fn serve(mut c: TcpStream, up_addr: String) {
    let mut up: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(8192);
    let mut ubuf = Vec::with_capacity(8192);
    loop {
        let (hl, bl) = loop {
            if let Some(x) = find_head(&buf) {
                if buf.len() >= x.0 + x.1 {
                    break x;
                }
            }
            if c.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                return;
            }
        };
        if buf.starts_with(b"GET") {
            let _ = c
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .await;
            return;
        }
        if up.is_none() {
            let s = TcpStream::connect(&up_addr).await.unwrap();
            s.set_nodelay(true).unwrap();
            up = Some(s);
        }
        let u = up.as_mut().unwrap();
        let head = format!(
            "POST /api/v1/ingest HTTP/1.1\r\nhost: {up_addr}\r\ncontent-type: application/json\r\nx-request-id: 0123456789abcdef\r\ncontent-length: {bl}\r\n\r\n"
        );
        let body = &buf[hl..hl + bl];
        let _ = u
            .write_vectored(&[IoSlice::new(head.as_bytes()), IoSlice::new(body)])
            .await;
        ubuf.clear();
        let (rh, rl, code) = loop {
            if let Some(x) = find_resp(&ubuf) {
                if ubuf.len() >= x.0 + x.1 {
                    break x;
                }
            }
            if u.read_buf(&mut ubuf).await.unwrap_or(0) == 0 {
                return;
            }
        };
        let out = format!(
            "HTTP/1.1 {code} Created\r\ncontent-type: application/json\r\nx-request-id: 0123456789abcdef\r\ncontent-length: {rl}\r\n\r\n"
        );
        let _ = c
            .write_vectored(&[
                IoSlice::new(out.as_bytes()),
                IoSlice::new(&ubuf[rh..rh + rl]),
            ])
            .await;
        buf.drain(..hl + bl);
    }
}

fn main() {
    let listen = std::env::var("LISTEN_ADDR").unwrap();
    let up = std::env::var("DATA_INGEST_URL").unwrap();
    let up = up.trim_start_matches("http://").to_string();
    let flavor = std::env::var("RT").unwrap_or_default();
    let rt = if flavor == "mt" {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }
    .unwrap();
    rt.block_on(async move {
        let l = TcpListener::bind(&listen).await.unwrap();
        loop {
            let (s, _) = l.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            tokio::spawn(serve(s, up.clone()));
        }
    });
}
