//! The HTTP/1.1 connection loop: hyper with the timeouts and limits poem's `Server` lacks,
//! and in front of it, for a service with fast routes, the express lane.
//!
//! - The express lane ([`express_lane`]) reads a connection's first requests itself and
//!   answers those for a fast route that the middleware would pass unchanged, without hyper's
//!   server and poem; the first request that is anything else, and everything after it, goes
//!   to hyper, the bytes already read first. The rules below hold in both.
//! - A request head must arrive within the header-read timeout from its first byte, and a
//!   keep-alive connection may stay idle for the idle timeout (longer, so that a proxy's
//!   pooled connections are not closed under it): slow, idle or half-open connections are
//!   closed, not held forever.
//! - At most `max_connections` are open. Past it, the oldest connection that has no request in
//!   progress is closed to make room (half-open ones first); when every connection is busy the
//!   new one is answered 503 with `Retry-After` and closed.
//! - A connection is closed with a lingering close: our side sends FIN and reads (and drops)
//!   what the client still sends for a moment, so the kernel never answers it with a reset.
//! - Shutdown: the listener stops; connections idle after having served a request are closed,
//!   the others finish their request (answered with `Connection: close` by the middleware) or
//!   time out; whatever is left after the shutdown timeout is aborted.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use poem::{Endpoint, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use crate::config::Limits;
use crate::server::{AfterResponse, Express};

/// How long a closing connection keeps reading what the client still sends.
const LINGER: Duration = Duration::from_millis(1000);
/// The read buffer of one connection, which also bounds a request head hyper will parse.
const MAX_BUF: usize = 64 * 1024;

struct ConnState {
    /// Requests being served (a response not yet fully written).
    busy: AtomicUsize,
    /// Responses fully written.
    served: AtomicUsize,
    /// Finish the request in progress (if any), then close.
    close: Notify,
    /// Close now: there is no request in progress (a half-sent head at most).
    evict: Notify,
    evicted: AtomicBool,
    /// When the request head now arriving began (ms after `opened`, at least 1); 0 while
    /// the connection is idle or a request is with the service.
    head_since: AtomicU64,
    head_began: Notify,
    opened: tokio::time::Instant,
    /// Work of answered requests left for after their response is written.
    after: Mutex<Vec<AfterResponse>>,
}

impl ConnState {
    /// Bytes arrived while no request is with the service: a head has begun (if not already).
    fn bytes_read(&self) {
        if self.busy.load(Ordering::Acquire) == 0 && self.head_since.load(Ordering::Acquire) == 0 {
            let ms = self.opened.elapsed().as_millis() as u64 + 1;
            self.head_since.store(ms, Ordering::Release);
            self.head_began.notify_one();
        }
    }

    /// When the request head now arriving began (to the millisecond), if one is arriving.
    fn head_start(&self) -> Option<tokio::time::Instant> {
        match self.head_since.load(Ordering::Acquire) {
            0 => None,
            ms => Some(self.opened + Duration::from_millis(ms - 1)),
        }
    }

    /// Resolves when a request head has been arriving for longer than `limit`.
    async fn head_overdue(&self, limit: Duration) {
        loop {
            let Some(began) = self.head_start() else {
                self.head_began.notified().await;
                continue;
            };
            tokio::time::sleep_until(began + limit).await;
            if self.head_start() == Some(began) {
                return;
            }
        }
    }
}

#[derive(Default)]
struct Table {
    next: AtomicU64,
    conns: Mutex<BTreeMap<u64, Arc<ConnState>>>,
    emptied: Notify,
}

impl Table {
    fn len(&self) -> usize {
        self.conns.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Connections not already told to close to make room.
    fn open(&self) -> usize {
        self.conns
            .lock()
            .map(|c| {
                c.values()
                    .filter(|s| !s.evicted.load(Ordering::Acquire))
                    .count()
            })
            .unwrap_or(0)
    }

    fn insert(&self) -> (u64, Arc<ConnState>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState {
            busy: AtomicUsize::new(0),
            served: AtomicUsize::new(0),
            close: Notify::new(),
            evict: Notify::new(),
            evicted: AtomicBool::new(false),
            head_since: AtomicU64::new(0),
            head_began: Notify::new(),
            opened: tokio::time::Instant::now(),
            after: Mutex::default(),
        });
        if let Ok(mut c) = self.conns.lock() {
            c.insert(id, state.clone());
        }
        (id, state)
    }

    fn remove(&self, id: u64) {
        if let Ok(mut c) = self.conns.lock() {
            c.remove(&id);
            if c.is_empty() {
                self.emptied.notify_waiters();
            }
        }
    }

    /// Closes the oldest connection without a request in progress, preferring one that never
    /// completed a request (a slow or half-open client). False when every connection is busy.
    fn evict_one(&self) -> bool {
        let Ok(c) = self.conns.lock() else {
            return false;
        };
        let idle = |s: &&Arc<ConnState>| {
            s.busy.load(Ordering::Acquire) == 0 && !s.evicted.load(Ordering::Acquire)
        };
        let victim = c
            .values()
            .filter(idle)
            .find(|s| s.served.load(Ordering::Acquire) == 0)
            .or_else(|| c.values().find(idle));
        match victim {
            Some(s) => {
                s.evicted.store(true, Ordering::Release);
                s.evict.notify_one();
                true
            }
            None => false,
        }
    }

    /// At shutdown: connections idle after a completed request are closed now; the others
    /// finish the request they are reading or serving.
    fn close_idle(&self) {
        if let Ok(c) = self.conns.lock() {
            for s in c.values() {
                if s.busy.load(Ordering::Acquire) == 0 && s.served.load(Ordering::Acquire) > 0 {
                    s.close.notify_one();
                }
            }
        }
    }
}

/// A TCP stream that, when dropped, closes by lingering (see the module documentation).
///
/// It also gives hyper's own rejections (a malformed request line, a head past hyper's limits:
/// answered before any request reaches the service, with an empty body) the JSON error shape
/// and a request id, like every other answer.
struct Lingering {
    stream: Option<TcpStream>,
    /// The connection's state; `None` where no request is ever served (the 503 refusal).
    conn: Option<Arc<ConnState>>,
    /// A rewritten rejection being written: the bytes, how many are written, and how many
    /// bytes of hyper's own answer it stands for.
    pending: Option<(Vec<u8>, usize, usize)>,
    /// Whether anything was ever written: a connection that never got an answer (half-open,
    /// slow head) is closed at once, so the descriptor is free for the next client.
    wrote: bool,
    /// Bytes the express lane read and left to hyper: read again before the socket.
    rewind: Option<Bytes>,
}

impl Lingering {
    fn new(stream: TcpStream, conn: Option<Arc<ConnState>>) -> Self {
        Lingering {
            stream: Some(stream),
            conn,
            pending: None,
            wrote: false,
            rewind: None,
        }
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        if let (Some(stream), Ok(rt)) = (self.stream.take(), tokio::runtime::Handle::try_current())
        {
            if self.wrote {
                rt.spawn(linger(stream));
            }
        }
    }
}

/// hyper's bodyless 4xx, written while no request is with the service, as the JSON shape.
/// Every answer of the service itself has a body, so a 4xx head with `content-length: 0` and
/// nothing after it can only be hyper's.
fn rewrite_rejection(out: &[u8]) -> Option<Vec<u8>> {
    // Every answer is written through here: rule out the common case (a body after the
    // head, or not a 4xx) before any search or allocation.
    if !out.starts_with(b"HTTP/1.1 4") || !out.ends_with(b"\r\n\r\n") {
        return None;
    }
    let head_end = out.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&out[..head_end]).to_ascii_lowercase();
    if head_end + 4 != out.len() || !head.contains("\r\ncontent-length: 0") {
        return None;
    }
    let line_end = out.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&out[..line_end]).ok()?;
    let rest = line.strip_prefix("HTTP/1.1 ")?;
    let status: u16 = rest.get(..3)?.parse().ok()?;
    if !(400..500).contains(&status) {
        return None;
    }
    let (code, message) = match status {
        414 => ("uri_too_long", "the request target is too long"),
        431 => ("headers_too_large", "the request headers are too large"),
        _ => ("invalid_request", "the request is not valid HTTP/1.1"),
    };
    let body = format!(r#"{{"error":{{"code":"{code}","message":"{message}"}}}}"#);
    let mut answer = format!(
        "{line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\nx-request-id: {}\r\nx-content-type-options: nosniff\r\n\r\n",
        body.len(),
        crate::server::new_request_id()
    )
    .into_bytes();
    answer.extend_from_slice(body.as_bytes());
    Some(answer)
}

async fn linger(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let mut buf = [0u8; 4096];
    let mut budget = 256 * 1024usize;
    let _ = tokio::time::timeout(LINGER, async {
        while budget > 0 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => budget = budget.saturating_sub(n),
            }
        }
    })
    .await;
}

impl Lingering {
    fn get(self: Pin<&mut Self>) -> Pin<&mut TcpStream> {
        // `TcpStream` is Unpin, and the Option is only emptied in Drop.
        match &mut self.get_mut().stream {
            Some(s) => Pin::new(s),
            None => unreachable!("the stream is only taken when dropped"),
        }
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        if let Some(rewind) = self.rewind.as_mut() {
            let n = rewind.len().min(buf.remaining());
            buf.put_slice(&rewind.split_to(n));
            if rewind.is_empty() {
                self.rewind = None;
            }
            return Poll::Ready(Ok(()));
        }
        let conn = self.conn.clone();
        let polled = self.get().poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(c)) = (&polled, conn) {
            if buf.filled().len() > before {
                c.bytes_read();
            }
        }
        polled
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.wrote = true;
        if this.pending.is_none() {
            let idle = this
                .conn
                .as_ref()
                .is_some_and(|c| c.busy.load(Ordering::Acquire) == 0);
            if idle {
                if let Some(answer) = rewrite_rejection(b) {
                    this.pending = Some((answer, 0, b.len()));
                }
            }
        }
        let Some((answer, written, stands_for)) = this.pending.as_mut() else {
            return Pin::new(this).get().poll_write(cx, b);
        };
        let stream = match this.stream.as_mut() {
            Some(s) => s,
            None => unreachable!("the stream is only taken when dropped"),
        };
        while *written < answer.len() {
            match Pin::new(&mut *stream).poll_write(cx, &answer[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = *stands_for;
        this.pending = None;
        Poll::Ready(Ok(n))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get().poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get().poll_shutdown(cx)
    }
    // Not vectored: hyper then writes each answer's head as one buffer, which
    // `poll_write` can recognise.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

/// A response body that marks its request finished when hyper is done with it.
struct Tracked {
    inner: BoxBody<Bytes, io::Error>,
    _done: Done,
}

/// The request is finished, and its [`AfterResponse`] is due. hyper drops a response's body
/// when it has buffered the last bytes, before it writes them; the connection runs the work
/// after that turn of hyper's ([`ConnState::after_written`]), so the client does not wait for
/// it.
struct Done(Arc<ConnState>, Option<AfterResponse>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.served.fetch_add(1, Ordering::AcqRel);
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
        if let Some(after) = self.1.take() {
            if let Ok(mut queue) = self.0.after.lock() {
                queue.push(after);
            }
        }
    }
}

/// A connection whose task ended with a response hyper had not finished (the client gone
/// mid-answer, an abort at the shutdown timeout) still records it.
impl Drop for ConnState {
    fn drop(&mut self) {
        self.after_written();
    }
}

impl ConnState {
    /// Runs the work of the responses hyper has finished with: after the turn in which it
    /// wrote them (all of an answer that fits the socket's buffer, else its first part), or
    /// when the connection is gone.
    fn after_written(&self) {
        let done = match self.after.lock() {
            Ok(mut queue) if !queue.is_empty() => std::mem::take(&mut *queue),
            _ => return,
        };
        for after in done {
            after.record();
        }
    }
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The 503 a connection gets when every slot is taken by a busy connection.
fn refusal() -> Vec<u8> {
    let body =
        br#"{"error":{"code":"overloaded","message":"too many open connections; retry later"}}"#;
    let mut out = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\
         x-content-type-options: nosniff\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Most connections this process can hold: the configured limit, kept below the open-file
/// limit (each connection is one descriptor; leave room for the pool, logs and lingering).
pub fn connection_cap(configured: usize) -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<usize>().ok())
        });
    match soft {
        Some(n) => configured.min(n.saturating_sub(64).max(16) * 3 / 4),
        None => configured,
    }
}

/// Serves `ep` on `listener` until `stop` turns true, then shuts down as described above.
pub(crate) async fn serve<E>(
    listener: TcpListener,
    ep: E,
    express: Option<Arc<Express>>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    shutdown_timeout: Duration,
) -> io::Result<()>
where
    E: Endpoint<Output = Response> + 'static,
{
    let ep = Arc::new(ep);
    let table = Arc::new(Table::default());
    let cap = connection_cap(limits.max_connections);
    let local = listener.local_addr()?;
    let mut tasks = JoinSet::new();
    let admit = |tasks: &mut JoinSet<()>, sock: TcpStream, peer: SocketAddr| {
        let _ = sock.set_nodelay(true);
        if table.open() >= cap && !table.evict_one() {
            tasks.spawn(async move {
                let mut sock = Lingering::new(sock, None);
                let _ = tokio::time::timeout(LINGER, sock.write_all(&refusal())).await;
            });
            return;
        }
        let (id, state) = table.insert();
        let (ep, table, limits) = (ep.clone(), table.clone(), limits.clone());
        let express = express.clone();
        tasks.spawn(async move {
            connection(sock, local, peer, ep, express, state, &limits).await;
            table.remove(id);
        });
    };
    loop {
        tokio::select! {
            biased;
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((sock, peer)) => admit(&mut tasks, sock, peer),
                Err(e) => {
                    // Out of descriptors (EMFILE) and the like: wait a little instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    // Connections the kernel completed but nobody accepted yet would be reset when the
    // listener closes: take them in first (they are served, then closed).
    while let Poll::Ready(Ok((sock, peer))) =
        std::future::poll_fn(|cx| Poll::Ready(listener.poll_accept(cx))).await
    {
        admit(&mut tasks, sock, peer);
    }
    drop(listener);
    table.close_idle();
    let all_closed = async {
        loop {
            let emptied = table.emptied.notified();
            if table.len() == 0 {
                break;
            }
            emptied.await;
        }
    };
    if tokio::time::timeout(shutdown_timeout, all_closed)
        .await
        .is_err()
    {
        tracing::warn!(
            open = table.len(),
            "shutdown timeout: closing the remaining connections"
        );
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn connection<E>(
    sock: TcpStream,
    local: SocketAddr,
    peer: SocketAddr,
    ep: Arc<E>,
    express: Option<Arc<Express>>,
    state: Arc<ConnState>,
    limits: &Limits,
) where
    E: Endpoint<Output = Response> + 'static,
{
    let mut io = Lingering::new(sock, Some(state.clone()));
    if let Some(express) = &express {
        if let Lane::Done = express_lane(&mut io, express, &state, limits).await {
            return;
        }
    }
    let svc_state = state.clone();
    let svc = service_fn(move |req: hyper::Request<Incoming>| {
        let ep = ep.clone();
        let state = svc_state.clone();
        async move {
            state.busy.fetch_add(1, Ordering::AcqRel);
            // The head is complete: its timer stops.
            state.head_since.store(0, Ordering::Release);
            let mut done = Done(state, None);
            let req: poem::Request = (
                req,
                poem::web::LocalAddr(local.into()),
                poem::web::RemoteAddr(peer.into()),
                poem::http::uri::Scheme::HTTP,
            )
                .into();
            let mut resp: hyper::Response<BoxBody<Bytes, io::Error>> =
                ep.get_response(req).await.into();
            done.1 = resp.extensions_mut().remove::<AfterResponse>();
            Ok::<_, Infallible>(resp.map(|inner| Tracked { inner, _done: done }))
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        // hyper's timer runs from the end of one answer to the end of the next head: the idle
        // keep-alive timeout. The head's own, shorter timeout runs from its first byte.
        .header_read_timeout(limits.idle_timeout)
        .max_buf_size(MAX_BUF)
        // The header count stays hyper's default, 100: parsed in arrays on the stack; any other
        // limit allocates and fills two arrays of that many entries for every request.
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            // The connection first: a response it can write goes out before the other
            // branches are looked at.
            biased;
            // The work of the responses written in this turn, once they are written.
            result = std::future::poll_fn(|cx| {
                let polled = conn.as_mut().poll(cx);
                state.after_written();
                polled
            }) => {
                if let Err(e) = result {
                    tracing::debug!(remote = %peer, error = %e, "connection ended");
                }
                break;
            }
            _ = state.close.notified(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = state.head_overdue(limits.header_read_timeout), if !closing => {
                if state.busy.load(Ordering::Acquire) == 0 {
                    tracing::debug!(remote = %peer, "request head too slow: closing");
                    break;
                }
            }
            _ = state.evict.notified() => {
                if state.busy.load(Ordering::Acquire) == 0 {
                    tracing::debug!(remote = %peer, "closing an idle connection to make room");
                    break;
                }
                // A request started meanwhile: let it finish, then close.
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// How the express lane left a connection.
enum Lane {
    /// Closed (by either side, a timeout, an eviction, or after the answer while shutting
    /// down): nothing more to serve.
    Done,
    /// Everything from the first request the lane does not serve on goes to hyper, the bytes
    /// already read first.
    Hyper,
}

/// The most header lines the express lane parses; a request with more goes to hyper.
const EXPRESS_HEADERS: usize = 32;

/// The express lane: a connection's requests for the service's fast routes, read, parsed
/// (`httparse`, as hyper does), answered and written here, without hyper's server and poem,
/// as nginx serves a proxied request in its own event loop (docs/performance.md, "Seventh
/// pass"). The lane serves only a complete HTTP/1.1 request for a fast route whose body has
/// arrived, framed by one `content-length`, without `transfer-encoding`, `expect`,
/// `connection` or `upgrade`, that the middleware would pass unchanged ([`Express::start`]);
/// from the first request that is anything else, the connection is hyper's, with what was
/// read. The lane keeps the connection's rules: the head timeout from its first byte, the
/// idle timeout between requests, eviction, and the graceful close at shutdown.
async fn express_lane(
    io: &mut Lingering,
    express: &Express,
    state: &ConnState,
    limits: &Limits,
) -> Lane {
    let mut buf = bytes::BytesMut::with_capacity(8 * 1024);
    let mut out = Vec::with_capacity(1024);
    let hand_over = |io: &mut Lingering, buf: bytes::BytesMut| {
        if !buf.is_empty() {
            io.rewind = Some(buf.freeze());
        }
        Lane::Hyper
    };
    // The connection's timers, kept across requests: one sleep, moved only when its deadline
    // must come sooner (a head began: `ConnState::head_start`, set by `Lingering` as bytes
    // arrive) and otherwise re-armed when it fires early, and the two notices, registered
    // once. (A notice one of them received is passed on when the lane hands the connection
    // over: tokio forwards it.)
    let mut idle_since = tokio::time::Instant::now();
    let timer = tokio::time::sleep_until(idle_since + limits.idle_timeout);
    let close = state.close.notified();
    let evict = state.evict.notified();
    tokio::pin!(timer, close, evict);
    loop {
        if !buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; EXPRESS_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            let head_len = match req.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) if buf.len() < MAX_BUF => 0,
                _ => return hand_over(io, buf),
            };
            if head_len > 0 {
                let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version)
                else {
                    return hand_over(io, buf);
                };
                let (Some(route), Some(len)) =
                    (express.route(method, target), express_framing(req.headers))
                else {
                    return hand_over(io, buf);
                };
                if len > express.max_body_bytes() || buf.len() < head_len + len {
                    return hand_over(io, buf);
                }
                let body = Bytes::copy_from_slice(&buf[head_len..head_len + len]);
                let Some(call) = express.start(route, target, req.headers, body) else {
                    return hand_over(io, buf);
                };
                // The request is the lane's: its head is complete, so its timer stops.
                state.busy.fetch_add(1, Ordering::AcqRel);
                state.head_since.store(0, Ordering::Release);
                bytes::Buf::advance(&mut buf, head_len + len);
                out.clear();
                let (after, closing) = call.answer(&mut out).await;
                let written = io.write_all(&out).await;
                state.served.fetch_add(1, Ordering::AcqRel);
                state.busy.fetch_sub(1, Ordering::AcqRel);
                after.record();
                if written.is_err() || closing {
                    return Lane::Done;
                }
                idle_since = tokio::time::Instant::now();
                // Bytes of a next request may have been read with this one (pipelining).
                if !buf.is_empty() {
                    state.bytes_read();
                }
                continue;
            }
        }
        // From the end of one answer to the end of the next head, as hyper's timer; and a
        // head must arrive within the head timeout from its first byte.
        let idle_due = idle_since + limits.idle_timeout;
        let due = state
            .head_start()
            .map_or(idle_due, |t| idle_due.min(t + limits.header_read_timeout));
        if due < timer.deadline() {
            timer.as_mut().reset(due);
        }
        tokio::select! {
            biased;
            read = io.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => return Lane::Done,
                Ok(_) => {}
            },
            // At shutdown an idle connection closes. One with a head arriving leaves the
            // notice to be passed on: its request is answered with `connection: close` (the
            // service is shutting down), here or by hyper, which then takes the notice.
            _ = &mut close, if buf.is_empty() => return Lane::Done,
            // No request is in progress here (only a head arriving): close to make room.
            _ = &mut evict => return Lane::Done,
            _ = &mut timer => {
                if tokio::time::Instant::now() >= due {
                    return Lane::Done;
                }
                // Armed for an earlier deadline that has since moved on.
                timer.as_mut().reset(due);
            }
        }
    }
}

/// The body's length when a head's framing is one the express lane serves: one
/// `content-length` of digits, and no `transfer-encoding`, `expect`, `connection` or
/// `upgrade` header.
fn express_framing(headers: &[httparse::Header<'_>]) -> Option<usize> {
    let mut len = None;
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let digits = h.value;
            if len.is_some()
                || digits.is_empty()
                || digits.len() > 12
                || !digits.iter().all(u8::is_ascii_digit)
            {
                return None;
            }
            len = Some(
                digits
                    .iter()
                    .fold(0usize, |n, d| n * 10 + usize::from(d - b'0')),
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("connection")
            || name.eq_ignore_ascii_case("upgrade")
        {
            return None;
        }
    }
    len
}

#[cfg(test)]
mod tests {
    use super::{express_framing, rewrite_rejection};

    #[test]
    fn the_lane_takes_only_a_body_framed_by_one_content_length() {
        let h = |name, value: &'static str| httparse::Header {
            name,
            value: value.as_bytes(),
        };
        let cl = h("Content-Length", "42");
        assert_eq!(express_framing(&[h("Host", "x"), cl]), Some(42));
        assert_eq!(express_framing(&[h("content-length", "0")]), Some(0));
        // No length, two lengths (even equal), or not digits: hyper decides.
        assert_eq!(express_framing(&[h("Host", "x")]), None);
        assert_eq!(express_framing(&[cl, cl]), None);
        for bad in ["", "-1", "+1", "1 2", "0x10", "1234567890123"] {
            assert_eq!(
                express_framing(&[h("content-length", bad)]),
                None,
                "{bad:?}"
            );
        }
        // Framing or connection semantics of their own: hyper's.
        for name in ["Transfer-Encoding", "expect", "Connection", "upgrade"] {
            assert_eq!(express_framing(&[cl, h(name, "x")]), None, "{name}");
        }
    }

    #[test]
    fn hyper_rejections_get_the_json_shape() {
        let out = rewrite_rejection(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n",
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{text}"
        );
        assert!(text.contains("x-request-id: "), "{text}");
        assert!(text.ends_with(r#"{"error":{"code":"headers_too_large","message":"the request headers are too large"}}"#), "{text}");
        assert!(rewrite_rejection(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        // The service's own 4xx has a body: left alone.
        assert!(
            rewrite_rejection(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}").is_none()
        );
        assert!(rewrite_rejection(b"{\"partial\":").is_none());
    }
}
