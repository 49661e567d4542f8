//! The client side of HTTP/1.1, as much of it as frontend-api's calls to its own backends need:
//! one `POST` written with one `writev`, one answer read and parsed in the task that sent it.
//!
//! hyper's client connection (used here before, docs/performance.md "Sixth pass") splits a
//! call between a request handle and a connection future that talk through channels, and hands
//! the body over as a stream of frames; a gateway answering one small JSON body at a time paid
//! for that machinery on every request. Here a call is a write, reads until the answer is
//! complete, and the body's bytes: no channel, no second future, no body stream.
//!
//! What an answer may be is still HTTP/1.1 as RFC 9112 has it, not what our backends happen
//! to send: `content-length` or `chunked` framing or a body to the end of the connection,
//! interim (1xx) answers skipped, `connection: close` and HTTP/1.0 honoured. Anything else (a
//! malformed head, two lengths, an answer larger than [`MAX_ANSWER`], bytes after the answer)
//! is an error or a connection not used again, never a guess.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::Poll;

use bytes::{Buf, Bytes, BytesMut};
use poem::http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;

/// The largest head of an answer read (status line and headers).
const MAX_HEAD: usize = 64 * 1024;
/// The most headers an answer may have (as hyper's client).
const MAX_HEADERS: usize = 100;
/// The largest body of an answer read: far above any answer of our backends (a batch's ids).
pub const MAX_ANSWER: usize = 16 * 1024 * 1024;
/// How much the read buffer grows by before a read.
const READ_CHUNK: usize = 8 * 1024;

/// One keep-alive connection to a backend.
pub struct Connection {
    stream: TcpStream,
    /// Bytes read and not yet taken: empty between calls.
    buf: BytesMut,
}

/// Why a call failed, and whether the request may go out again on another connection.
#[derive(Debug)]
pub enum CallError {
    /// Nothing of the request was written: the connection was found closed first.
    Unsent(String),
    /// The request was written, or partly: it must not be sent again.
    Sent(String),
}

/// An answer read whole.
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
    /// The connection can carry another request.
    pub reusable: bool,
}

impl Connection {
    pub fn new(stream: TcpStream) -> Connection {
        Connection {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
        }
    }

    /// Whether the connection is still open as far as is known without waiting: a close (or
    /// anything else) the backend sent while it was idle is seen here. No system call unless
    /// the runtime has seen the socket become readable.
    pub fn is_open(&mut self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Writes `head` and `body` and reads the answer. A backend may answer before it has read
    /// the whole request (a 413 from the head alone, then a close): an answer that arrives
    /// while the request cannot be written further, or before a failed write, is read and
    /// returned (the connection is not used again), as RFC 9112 section 9.5 asks of a client.
    pub async fn call(&mut self, head: &[u8], body: &[u8]) -> Result<Answer, CallError> {
        match self.write(head, body).await {
            Ok(Written::All) => self.read_answer().await,
            Ok(Written::Interrupted) => self.read_answer().await.map(Answer::last),
            Err((written, error)) => {
                let message = format!("writing the request: {error}");
                if !written {
                    return Err(CallError::Unsent(message));
                }
                // Whatever answer came before the failure (queued data is read before the
                // error), else the write's failure.
                return self
                    .read_answer()
                    .await
                    .map(Answer::last)
                    .map_err(|_| CallError::Sent(message));
            }
        }
        .map_err(|e| CallError::Sent(e.to_string()))
    }

    /// Writes the request, as far as the backend lets it: stops early when the socket will
    /// take no more for now and an answer is arriving. The error says whether any byte went.
    async fn write(&mut self, head: &[u8], body: &[u8]) -> Result<Written, (bool, io::Error)> {
        let (mut head, mut body) = (head, body);
        let mut written = false;
        while !head.is_empty() || !body.is_empty() {
            let stream = &mut self.stream;
            let step = std::future::poll_fn(|cx| {
                let slices = [IoSlice::new(head), IoSlice::new(body)];
                if let Poll::Ready(r) = Pin::new(&mut *stream).poll_write_vectored(cx, &slices) {
                    return Poll::Ready(Some(r));
                }
                // Blocked: an answer arriving meanwhile ends the writing.
                match stream.poll_read_ready(cx) {
                    Poll::Ready(_) => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await;
            let n = match step {
                None => {
                    // Something arrives while the write is blocked. An interim answer (a
                    // `100 Continue` nobody asked for) is read past and the writing goes on;
                    // a final answer, the end of the stream or an error ends it.
                    self.buf.reserve(READ_CHUNK);
                    match self.stream.try_read_buf(&mut self.buf) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Ok(1..) => {}
                        Ok(0) | Err(_) => return Ok(Written::Interrupted),
                    }
                    match parse_head(&self.buf) {
                        Ok(None) => continue,
                        Ok(Some(h)) if h.is_interim() => {
                            self.buf.advance(h.len);
                            continue;
                        }
                        _ => return Ok(Written::Interrupted),
                    }
                }
                Some(Ok(0)) => return Err((written, io::ErrorKind::WriteZero.into())),
                Some(Ok(n)) => n,
                Some(Err(e)) => return Err((written, e)),
            };
            written = true;
            let from_head = n.min(head.len());
            head = &head[from_head..];
            body = &body[n - from_head..];
        }
        Ok(Written::All)
    }

    /// Reads one final answer (skipping interim ones) and leaves the buffer empty.
    async fn read_answer(&mut self) -> Result<Answer, WireError> {
        loop {
            let head = loop {
                if let Some(head) = parse_head(&self.buf)? {
                    break head;
                }
                if self.fill().await? == 0 {
                    return Err(WireError::new(if self.buf.is_empty() {
                        "the connection closed before an answer"
                    } else {
                        "the connection closed in the answer's head"
                    }));
                }
            };
            self.buf.advance(head.len);
            if head.status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(WireError::new("an upgrade nobody asked for (101)"));
            }
            if head.is_interim() {
                continue;
            }
            let body = match head.framing {
                Framing::Empty => Bytes::new(),
                Framing::Length(n) => {
                    if n > MAX_ANSWER as u64 {
                        return Err(WireError::too_large());
                    }
                    let n = n as usize;
                    self.buf.reserve(n.saturating_sub(self.buf.len()));
                    while self.buf.len() < n {
                        if self.fill().await? == 0 {
                            return Err(WireError::closed_in_body());
                        }
                    }
                    let body = Bytes::copy_from_slice(&self.buf[..n]);
                    self.buf.advance(n);
                    body
                }
                Framing::Chunked => {
                    let mut chunks = Dechunk::default();
                    loop {
                        if let Some(used) = chunks.resume(&self.buf)? {
                            self.buf.advance(used);
                            break chunks.body.freeze();
                        }
                        if self.fill().await? == 0 {
                            return Err(WireError::closed_in_body());
                        }
                    }
                }
                Framing::ToClose => {
                    while self.fill().await? != 0 {}
                    if self.buf.len() > MAX_ANSWER {
                        return Err(WireError::too_large());
                    }
                    let body = Bytes::copy_from_slice(&self.buf);
                    self.buf = BytesMut::new();
                    return Ok(Answer {
                        status: head.status,
                        body,
                        reusable: false,
                    });
                }
            };
            // Bytes after the answer are nothing a request asked for: not used again.
            let reusable = head.keep_alive && self.buf.is_empty();
            self.buf.clear();
            // A large answer's buffer is not kept by an idle connection.
            if self.buf.capacity() > 4 * READ_CHUNK {
                self.buf = BytesMut::with_capacity(READ_CHUNK);
            }
            return Ok(Answer {
                status: head.status,
                body,
                reusable,
            });
        }
    }

    /// Reads what is there into the buffer: how many bytes (0 at the end of the stream). The
    /// buffer never holds more than a whole answer may be.
    async fn fill(&mut self) -> Result<usize, WireError> {
        if self.buf.len() > MAX_ANSWER + MAX_HEAD {
            return Err(WireError::too_large());
        }
        self.buf.reserve(READ_CHUNK);
        self.stream
            .read_buf(&mut self.buf)
            .await
            .map_err(|e| WireError(format!("reading the answer: {e}")))
    }
}

/// How far a request was written.
enum Written {
    All,
    /// Not all: the backend answered first.
    Interrupted,
}

impl Answer {
    /// This answer, on a connection not to be used again (its request was not all written).
    fn last(self) -> Answer {
        Answer {
            reusable: false,
            ..self
        }
    }
}

#[derive(Debug)]
struct WireError(String);

impl WireError {
    fn new(what: &str) -> WireError {
        WireError(what.to_string())
    }
    fn closed_in_body() -> WireError {
        WireError::new("the connection closed in the answer's body")
    }
    fn too_large() -> WireError {
        WireError(format!("the answer is over {} MiB", MAX_ANSWER >> 20))
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How an answer's body is delimited (RFC 9112, section 6.3).
#[derive(Debug, PartialEq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    ToClose,
}

#[derive(Debug)]
struct Head {
    /// Its length in bytes.
    len: usize,
    status: StatusCode,
    framing: Framing,
    keep_alive: bool,
}

impl Head {
    /// An interim answer (1xx other than 101): read past, a final one follows.
    fn is_interim(&self) -> bool {
        self.status.is_informational() && self.status != StatusCode::SWITCHING_PROTOCOLS
    }
}

/// An answer's head, if `buf` holds all of it.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, WireError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut answer = httparse::Response::new(&mut headers);
    let len = match answer.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Ok(None),
        Ok(_) => return Err(WireError::new("the answer's head is over 64 KiB")),
        Err(e) => return Err(WireError(format!("not an HTTP answer: {e}"))),
    };
    let status = answer
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| WireError::new("not an HTTP answer: no status"))?;
    let mut keep_alive = answer.version == Some(1);
    let (mut length, mut chunked, mut encoded) = (None::<u64>, false, false);
    for header in answer.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            // 1*DIGIT: no sign, no space inside (`u64::from_str` would take a `+`).
            let value = header.value.trim_ascii();
            let n = (!value.is_empty() && value.iter().all(u8::is_ascii_digit))
                .then(|| std::str::from_utf8(value).ok()?.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| WireError::new("a content-length that is not a number"))?;
            if length.is_some_and(|l| l != n) {
                return Err(WireError::new("two different content-lengths"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked must be the last coding applied, and applied once (RFC 9112 6.1), over
            // every transfer-encoding field.
            for token in tokens(header.value) {
                if chunked {
                    return Err(WireError::new("a coding after chunked"));
                }
                chunked = token.eq_ignore_ascii_case(b"chunked");
            }
            encoded = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in tokens(header.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && answer.version == Some(0) {
                    keep_alive = true;
                }
            }
        }
    }
    let framing = if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Empty
    } else if encoded {
        // A transfer-encoding overrides a content-length (RFC 9112 6.3 rule 3), and the
        // connection must not be reused after an answer that had both, or an HTTP/1.0 answer
        // with one (6.1).
        if length.is_some() || answer.version == Some(0) {
            keep_alive = false;
        }
        if chunked {
            Framing::Chunked
        } else {
            Framing::ToClose
        }
    } else {
        match length {
            Some(n) => Framing::Length(n),
            None => Framing::ToClose,
        }
    };
    if framing == Framing::ToClose {
        keep_alive = false;
    }
    Ok(Some(Head {
        len,
        status,
        framing,
        keep_alive,
    }))
}

/// The comma-separated tokens of a header value, trimmed.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// A chunked body being decoded as its bytes arrive: `resume` goes on from where it stopped
/// (the buffer only grows meanwhile), so each byte is looked at once.
#[derive(Default)]
struct Dechunk {
    /// Where the next chunk's size line starts in the buffer.
    at: usize,
    body: BytesMut,
}

impl Dechunk {
    /// `Some(n)`: the body is whole and took the buffer's first `n` bytes, trailers included
    /// (and ignored); `None`: more bytes are needed.
    fn resume(&mut self, buf: &[u8]) -> Result<Option<usize>, WireError> {
        let bad = |what: &str| WireError(format!("a chunked body that is not one: {what}"));
        loop {
            let rest = &buf[self.at..];
            match rest.first() {
                None => return Ok(None),
                // httparse reads a size line without digits as 0, the last chunk.
                Some(b) if !b.is_ascii_hexdigit() => return Err(bad("a chunk without a size")),
                Some(_) => {}
            }
            let (used, size) = match httparse::parse_chunk_size(rest) {
                Ok(httparse::Status::Complete(c)) => c,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(_) => return Err(bad("a chunk size that is not one")),
            };
            if size == 0 {
                // Trailer fields, then an empty line.
                let mut trailers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                return match httparse::parse_headers(&rest[used..], &mut trailers) {
                    Ok(httparse::Status::Complete((end, _))) => Ok(Some(self.at + used + end)),
                    Ok(httparse::Status::Partial) => Ok(None),
                    Err(_) => Err(bad("trailers that are not headers")),
                };
            }
            if self.body.len() as u64 + size > MAX_ANSWER as u64 {
                return Err(WireError::too_large());
            }
            let size = size as usize;
            if rest.len() < used + size + 2 {
                return Ok(None);
            }
            if &rest[used + size..used + size + 2] != b"\r\n" {
                return Err(bad("a chunk not ended by CRLF"));
            }
            self.body.extend_from_slice(&rest[used..used + size]);
            self.at += used + size + 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        parse_head(text.as_bytes()).unwrap().unwrap()
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let h = head("HTTP/1.1 201 Created\r\ncontent-length: 12\r\n\r\n");
        assert_eq!(
            (h.status, h.framing, h.keep_alive),
            (StatusCode::CREATED, Framing::Length(12), true)
        );
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, true));
        // Both: the coding wins, and the connection is not reused.
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, false));
        let h = head("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::ToClose, false));
        let h = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::ToClose, false));
        let h = head("HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Empty, true));
        let h = head("HTTP/1.1 100 Continue\r\n\r\n");
        assert_eq!(h.framing, Framing::Empty);
        let h = head("HTTP/1.1 200 OK\r\nConnection: upgrade, Close\r\ncontent-length: 0\r\n\r\n");
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n");
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n");
        assert!(h.keep_alive);
        // The same length twice is one length; two different ones are an error.
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(2));
        // HTTP/1.0 with a transfer-encoding: read, not reused.
        let h =
            head("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, false));
        for bad in [
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 1e3\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +3\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999999\r\n\r\n",
            "this is not HTTP\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
        ] {
            assert!(parse_head(bad.as_bytes()).is_err(), "{bad:?} was taken");
        }
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-le")
            .unwrap()
            .is_none());
        // A head over 64 KiB, whole or not yet.
        let long = format!("HTTP/1.1 200 OK\r\nx-big: {}\r\n", "b".repeat(MAX_HEAD));
        assert!(parse_head(long.as_bytes()).is_err());
        assert!(parse_head(format!("{long}\r\n").as_bytes()).is_err());
    }

    /// The body and the bytes it took, fed whole.
    fn dechunk(buf: &[u8]) -> Result<Option<(Bytes, usize)>, WireError> {
        let mut chunks = Dechunk::default();
        Ok(chunks.resume(buf)?.map(|used| (chunks.body.freeze(), used)))
    }

    #[test]
    fn chunked_bodies_are_joined_and_their_end_found() {
        let whole = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        let (body, used) = dechunk(whole).unwrap().unwrap();
        assert_eq!(&body[..], b"Wikipedia in\r\n\r\nchunks.");
        assert_eq!(&whole[used..], b"NEXT");
        // Every prefix is incomplete, never an error.
        for end in 0..whole.len() - 4 {
            assert!(dechunk(&whole[..end]).unwrap().is_none(), "{end}");
        }
        // Fed a byte more at a time, as reads may bring it: the same body, the same end.
        let mut chunks = Dechunk::default();
        let used = (1..=whole.len())
            .find_map(|end| chunks.resume(&whole[..end]).unwrap())
            .unwrap();
        assert_eq!((&chunks.body[..], used), (&body[..], whole.len() - 4));
        assert!(dechunk(b"4\r\nWikiXX0\r\n\r\n").is_err());
        assert!(dechunk(b"zz\r\n").is_err());
        assert!(dechunk(b"FFFFFFFFFF\r\n").is_err(), "over the answer limit");
        // A size line without digits is not the last chunk.
        assert!(dechunk(b"5\r\nhello\r\n\r\n\r\n").is_err());
        assert!(dechunk(b";x\r\n\r\n").is_err());
    }
}
