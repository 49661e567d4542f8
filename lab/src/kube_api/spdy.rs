//! SPDY/3.1, the subset `kubectl port-forward` speaks: the kubelet's side of a port-forward
//! session (kubernetes/kubernetes `pkg/kubelet/cri/streaming/portforward/httpstream.go`), over
//! moby/spdystream's framing (`spdy/read.go`, `spdy/write.go`).
//!
//! The session carries any number of forwarded TCP connections, each a pair of streams the
//! client opens: SYN_STREAM *n* with headers `streamtype: error`, `port`, `requestid`, then
//! *n+2* with `streamtype: data` and the same request id. Every SYN_STREAM is answered at once
//! with an empty SYN_REPLY (the client waits for it). Once a request id has both streams the
//! pod's port is dialled and DATA frames are relayed both ways: the client's FIN on the data
//! stream shuts the connection's write half; the pod closing its side ends the data stream,
//! then the error stream, with FINs (an empty error stream means no error). A failed dial is
//! the kubelet's message on the error stream, then both FINs. PING is echoed; GOAWAY, the
//! transport closing or the region's API going down ends the session and every connection.
//! SETTINGS and WINDOW_UPDATE are ignored and none are sent (spdystream has no flow control).
//!
//! Header blocks are zlib streams with the SPDY/3 dictionary: one inflate context for all the
//! client's blocks in a session and one deflate context for the server's, each block ended with
//! a sync flush. Each frame is written whole, in one write (one WebSocket message when
//! tunnelled): the Go reader checks that a header block's bytes are all consumed once parsed.
//!
//! The transport is either a raw upgraded connection (`Upgrade: SPDY/3.1`) or a WebSocket whose
//! binary messages carry the SPDY byte stream (`SPDY/3.1+portforward.k8s.io`, kubectl ≥ 1.30);
//! [`FrameSink`] is the writing side of either.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use futures_util::SinkExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const FLAG_FIN: u8 = 0x01;
/// The most a DATA frame carries here (the protocol allows 16 MiB).
const CHUNK: usize = 32 * 1024;
/// The largest frame accepted from a client.
const MAX_FRAME: usize = 1 << 24;

/// Where a port of the pod is: its address, or why it cannot be reached.
pub(crate) type Dial = Arc<dyn Fn(u16) -> Result<SocketAddr, String> + Send + Sync>;

/// The writing side of a transport: one call per whole frame.
pub(crate) trait FrameSink: Send + 'static {
    /// Writes one frame.
    fn send(&mut self, frame: Vec<u8>) -> impl Future<Output = io::Result<()>> + Send;
    /// Ends the transport.
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}

/// A raw upgraded connection.
pub(crate) struct RawSink<W>(pub W);

impl<W: AsyncWrite + Unpin + Send + 'static> FrameSink for RawSink<W> {
    async fn send(&mut self, frame: Vec<u8>) -> io::Result<()> {
        self.0.write_all(&frame).await?;
        self.0.flush().await
    }

    async fn close(&mut self) {
        let _ = self.0.shutdown().await;
    }
}

/// A WebSocket: each frame one binary message.
pub(crate) struct WsSink<S>(pub S);

impl<S> FrameSink for WsSink<S>
where
    S: futures_util::Sink<tokio_tungstenite::tungstenite::Message> + Unpin + Send + 'static,
{
    async fn send(&mut self, frame: Vec<u8>) -> io::Result<()> {
        self.0
            .send(tokio_tungstenite::tungstenite::Message::binary(frame))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "websocket closed"))
    }

    async fn close(&mut self) {
        let _ = self.0.close().await;
    }
}

/// What the session and its connections send to the client.
enum Out {
    /// An empty SYN_REPLY for a stream the client opened.
    Reply(u32),
    /// DATA on a stream, with FIN when `fin`.
    Data { id: u32, bytes: Vec<u8>, fin: bool },
    /// The echo of the client's PING.
    Ping(u32),
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    f.extend_from_slice(&kind.to_be_bytes());
    f.extend_from_slice(&(((flags as u32) << 24) | payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn data(id: u32, fin: bool, bytes: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + bytes.len());
    f.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
    let flags = if fin { FLAG_FIN } else { 0 };
    f.extend_from_slice(&(((flags as u32) << 24) | bytes.len() as u32).to_be_bytes());
    f.extend_from_slice(bytes);
    f
}

/// A header block, uncompressed: `u32` count, then (`u32` length, name, `u32` length, value).
fn encode_headers(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut b = (headers.len() as u32).to_be_bytes().to_vec();
    for (k, v) in headers {
        for s in [k.to_ascii_lowercase().as_str(), v] {
            b.extend_from_slice(&(s.len() as u32).to_be_bytes());
            b.extend_from_slice(s.as_bytes());
        }
    }
    b
}

fn decode_headers(block: &[u8]) -> Result<HashMap<String, String>, String> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], String> {
        let s = block
            .get(at..at + n)
            .ok_or_else(|| "truncated header block".to_string())?;
        at += n;
        Ok(s)
    };
    let word = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let count = word(take(4)?);
    let mut headers = HashMap::new();
    for _ in 0..count {
        let n = word(take(4)?);
        let name = String::from_utf8_lossy(take(n)?).to_ascii_lowercase();
        let n = word(take(4)?);
        let value = String::from_utf8_lossy(take(n)?).into_owned();
        headers.insert(name, value);
    }
    Ok(headers)
}

/// The client's header blocks: one zlib stream with the SPDY dictionary for the session.
pub(crate) struct Inflater(Decompress);

impl Inflater {
    pub(crate) fn new() -> Self {
        Inflater(Decompress::new(true))
    }

    /// The next block of the stream, decompressed.
    pub(crate) fn block(&mut self, input: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(input.len() * 4 + 64);
        let mut pos = 0;
        loop {
            let (before_in, before_out) = (self.0.total_in(), self.0.total_out());
            if out.len() == out.capacity() {
                out.reserve(1024);
            }
            match self
                .0
                .decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync)
            {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.0
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| format!("header dictionary: {e}"))?;
                }
                Err(e) => return Err(format!("header block: {e}")),
            }
            pos += (self.0.total_in() - before_in) as usize;
            if pos >= input.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            let progressed = self.0.total_in() != before_in || self.0.total_out() != before_out;
            if !progressed && out.len() < out.capacity() {
                return Err("header block: truncated".into());
            }
        }
    }
}

/// The server's header blocks: one zlib stream with the SPDY dictionary for the session.
pub(crate) struct Deflater(Compress);

impl Deflater {
    pub(crate) fn new() -> Self {
        let mut c = Compress::new(Compression::default(), true);
        c.set_dictionary(DICTIONARY)
            .expect("a fresh deflate stream takes a dictionary");
        Deflater(c)
    }

    /// `block` compressed and sync-flushed, continuing the stream.
    pub(crate) fn block(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len() + 64);
        let mut pos = 0;
        loop {
            let before = self.0.total_in();
            if out.len() == out.capacity() {
                out.reserve(256);
            }
            self.0
                .compress_vec(&input[pos..], &mut out, FlushCompress::Sync)
                .expect("deflate into memory");
            pos += (self.0.total_in() - before) as usize;
            if pos >= input.len() && out.len() < out.capacity() {
                return out;
            }
        }
    }
}

/// One frame from the client.
enum Frame {
    Control { kind: u16, payload: Vec<u8> },
    Data { id: u32, fin: bool, bytes: Vec<u8> },
}

async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Frame> {
    let mut head = [0u8; 8];
    r.read_exact(&mut head).await?;
    let first = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let flags = head[4];
    let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(if first & 0x8000_0000 != 0 {
        Frame::Control {
            kind: (first & 0xffff) as u16,
            payload,
        }
    } else {
        Frame::Data {
            id: first & 0x7fff_ffff,
            fin: flags & FLAG_FIN != 0,
            bytes: payload,
        }
    })
}

fn word(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// What the client sends on a connection's data stream.
enum FromClient {
    Bytes(Vec<u8>),
    Fin,
}

/// A request id's streams as they arrive.
#[derive(Default)]
struct Pending {
    error: Option<u32>,
    data: Option<(u32, mpsc::Receiver<FromClient>)>,
    port: String,
}

struct Session {
    out: mpsc::Sender<Out>,
    inflate: Inflater,
    pending: HashMap<String, Pending>,
    /// Open connections, by data stream id.
    conns: HashMap<u32, mpsc::Sender<FromClient>>,
    done: mpsc::UnboundedSender<u32>,
    dial: Dial,
    pod: String,
}

/// Serves one port-forward session until the client ends it, the transport closes or `down`
/// turns true.
pub(crate) async fn serve<R, K>(
    reader: R,
    mut sink: K,
    dial: Dial,
    pod: String,
    mut down: watch::Receiver<bool>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    K: FrameSink,
{
    let (out, mut out_rx) = mpsc::channel::<Out>(64);
    let writer = tokio::spawn(async move {
        let mut deflate = Deflater::new();
        while let Some(o) = out_rx.recv().await {
            let frame = match o {
                Out::Reply(id) => {
                    let mut p = id.to_be_bytes().to_vec();
                    p.extend(deflate.block(&encode_headers(&[])));
                    control(SYN_REPLY, 0, &p)
                }
                Out::Data { id, bytes, fin } => data(id, fin, &bytes),
                Out::Ping(id) => control(PING, 0, &id.to_be_bytes()),
            };
            if sink.send(frame).await.is_err() {
                break;
            }
        }
        sink.close().await;
    });
    let (done, mut done_rx) = mpsc::unbounded_channel();
    let mut session = Session {
        out,
        inflate: Inflater::new(),
        pending: HashMap::new(),
        conns: HashMap::new(),
        done,
        dial,
        pod,
    };
    // Frames are read in a task of their own: reading one is not cancel-safe, and the loop
    // below also waits for other things.
    let (frames_tx, mut frames) = mpsc::channel(16);
    let frame_reader = tokio::spawn(async move {
        let mut reader = BufReader::new(reader);
        while let Ok(f) = read_frame(&mut reader).await {
            if frames_tx.send(f).await.is_err() {
                return;
            }
        }
    });
    loop {
        if *down.borrow() {
            break;
        }
        tokio::select! {
            changed = down.changed() => if changed.is_err() { break },
            Some(id) = done_rx.recv() => { session.conns.remove(&id); }
            frame = frames.recv() => match frame {
                Some(f) => {
                    if let Err(e) = session.handle(f).await {
                        tracing::debug!(error = %e, "port-forward session ended");
                        break;
                    }
                }
                None => break,
            },
        }
    }
    // The client is gone (or the API went down): so are its connections and the transport.
    drop(session);
    frame_reader.abort();
    writer.abort();
}

impl Session {
    async fn send(&self, o: Out) -> Result<(), String> {
        self.out
            .send(o)
            .await
            .map_err(|_| "the client's side is closed".to_string())
    }

    async fn handle(&mut self, frame: Frame) -> Result<(), String> {
        match frame {
            Frame::Data { id, fin, bytes } => {
                let Some(tx) = self.conns.get(&id) else {
                    return Ok(()); // the error stream's half-close, or a finished connection
                };
                let mut gone = false;
                if !bytes.is_empty() {
                    gone |= tx.send(FromClient::Bytes(bytes)).await.is_err();
                }
                if fin && !gone {
                    gone |= tx.send(FromClient::Fin).await.is_err();
                }
                if gone {
                    self.conns.remove(&id);
                }
                Ok(())
            }
            Frame::Control { kind, payload } => match kind {
                SYN_STREAM => {
                    let id = word(&payload, 0).ok_or("short SYN_STREAM")? & 0x7fff_ffff;
                    let block = self.inflate.block(payload.get(10..).unwrap_or_default())?;
                    let headers = decode_headers(&block)?;
                    self.send(Out::Reply(id)).await?;
                    self.open(id, headers).await
                }
                HEADERS => {
                    // Inflated only to keep the zlib stream in step.
                    self.inflate.block(payload.get(4..).unwrap_or_default())?;
                    Ok(())
                }
                RST_STREAM => {
                    if let Some(id) = word(&payload, 0) {
                        self.conns.remove(&(id & 0x7fff_ffff));
                    }
                    Ok(())
                }
                PING => {
                    let id = word(&payload, 0).ok_or("short PING")?;
                    self.send(Out::Ping(id)).await
                }
                GOAWAY => Err("the client sent GOAWAY".into()),
                _ => Ok(()), // SETTINGS, WINDOW_UPDATE, NOOP: no flow control here
            },
        }
    }

    /// Records a stream the client opened; a request id with both streams starts forwarding.
    async fn open(&mut self, id: u32, headers: HashMap<String, String>) -> Result<(), String> {
        let request = headers
            .get("requestid")
            .cloned()
            .unwrap_or_else(|| id.to_string());
        let port = headers.get("port").cloned().unwrap_or_default();
        let pending = self.pending.entry(request.clone()).or_default();
        pending.port = port;
        match headers.get("streamtype").map(String::as_str) {
            Some("error") => pending.error = Some(id),
            Some("data") => {
                let (tx, rx) = mpsc::channel(16);
                self.conns.insert(id, tx);
                pending.data = Some((id, rx));
            }
            other => {
                tracing::debug!(stream = id, kind = ?other, "port-forward: unknown stream type");
                return Ok(());
            }
        }
        if pending.error.is_none() || pending.data.is_none() {
            return Ok(());
        }
        let p = self.pending.remove(&request).expect("just seen");
        let (error_id, (data_id, from_client)) = (p.error.expect("set"), p.data.expect("set"));
        let c = Connection {
            port: p.port,
            data_id,
            error_id,
            out: self.out.clone(),
            pod: self.pod.clone(),
        };
        let (dial, done) = (self.dial.clone(), self.done.clone());
        tokio::spawn(async move {
            c.relay(dial, from_client).await;
            let _ = done.send(data_id);
        });
        Ok(())
    }
}

/// One forwarded TCP connection.
struct Connection {
    port: String,
    data_id: u32,
    error_id: u32,
    out: mpsc::Sender<Out>,
    pod: String,
}

impl Connection {
    async fn fail(&self, reason: String) {
        let msg = format!(
            "error forwarding port {} to pod {}: {reason}",
            self.port, self.pod
        );
        tracing::debug!(%msg, "port-forward dial failed");
        let _ = self
            .out
            .send(Out::Data {
                id: self.error_id,
                bytes: msg.into_bytes(),
                fin: false,
            })
            .await;
        self.finish().await;
    }

    /// FIN on the data stream, then on the error stream (empty: no error).
    async fn finish(&self) {
        for id in [self.data_id, self.error_id] {
            let _ = self
                .out
                .send(Out::Data {
                    id,
                    bytes: Vec::new(),
                    fin: true,
                })
                .await;
        }
    }

    async fn relay(self, dial: Dial, mut from_client: mpsc::Receiver<FromClient>) {
        let port = match self.port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                let reason = format!("invalid port {:?}", self.port);
                return self.fail(reason).await;
            }
        };
        let conn = match dial_pod(dial(port)).await {
            Ok(c) => c,
            Err(e) => return self.fail(e).await,
        };
        let (mut rd, mut wr) = conn.into_split();
        // The client's bytes to the pod in a task of their own, so that neither direction
        // waits for the other (an echo would otherwise fill both ways and stop). It ends with
        // `true` when the client reset the stream or the session ended.
        let mut upstream = tokio::spawn(async move {
            while let Some(m) = from_client.recv().await {
                match m {
                    FromClient::Bytes(b) => {
                        if wr.write_all(&b).await.is_err() {
                            return false;
                        }
                    }
                    FromClient::Fin => {
                        let _ = wr.shutdown().await;
                    }
                }
            }
            true
        });
        let mut buf = vec![0u8; CHUNK];
        loop {
            tokio::select! {
                n = rd.read(&mut buf) => match n {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let o = Out::Data { id: self.data_id, bytes: buf[..n].to_vec(), fin: false };
                        if self.out.send(o).await.is_err() {
                            upstream.abort();
                            return;
                        }
                    }
                },
                abandoned = &mut upstream => {
                    if abandoned.unwrap_or(true) {
                        return;
                    }
                    break; // the pod's side is gone: so is the connection
                }
            }
        }
        upstream.abort();
        self.finish().await;
    }
}

/// The kubelet's dial to a pod's port (`target`, or why there is none): `TCP_NODELAY` set, as
/// Go sets it on every connection; a failure worded as the kubelet reports it.
pub(crate) async fn dial_pod(target: Result<SocketAddr, String>) -> Result<TcpStream, String> {
    let addr = target?;
    let c = TcpStream::connect(addr)
        .await
        .map_err(|e| dial_error(addr, &e))?;
    let _ = c.set_nodelay(true);
    Ok(c)
}

/// A failed dial as Go's `net.Dial` words it (`dial tcp 127.0.0.1:5432: connect: connection
/// refused`), which is what the kubelet reports.
fn dial_error(addr: SocketAddr, e: &io::Error) -> String {
    let reason = match e.kind() {
        io::ErrorKind::ConnectionRefused => "connect: connection refused".to_string(),
        io::ErrorKind::TimedOut => "i/o timeout".to_string(),
        _ => format!("connect: {e}"),
    };
    format!("dial tcp {addr}: {reason}")
}

/// The SPDY/3 header compression dictionary (spdystream `spdy/dictionary.go`, from the SPDY/3
/// draft); its Adler-32 is 0xe3c6a7c2.
pub(crate) const DICTIONARY: &[u8] = b"\
    \x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put\x00\
    \x00\x00\x06delete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\x00\x00\x00\x0eaccept-char\
    set\x00\x00\x00\x0faccept-encoding\x00\x00\x00\x0faccept-language\x00\x00\x00\x0daccept-\
    ranges\x00\x00\x00\x03age\x00\x00\x00\x05allow\x00\x00\x00\x0dauthorization\x00\x00\x00\
    \x0dcache-control\x00\x00\x00\x0aconnection\x00\x00\x00\x0ccontent-base\x00\x00\x00\x10c\
    ontent-encoding\x00\x00\x00\x10content-language\x00\x00\x00\x0econtent-length\x00\x00\
    \x00\x10content-location\x00\x00\x00\x0bcontent-md5\x00\x00\x00\x0dcontent-range\x00\x00\
    \x00\x0ccontent-type\x00\x00\x00\x04date\x00\x00\x00\x04etag\x00\x00\x00\x06expect\x00\
    \x00\x00\x07expires\x00\x00\x00\x04from\x00\x00\x00\x04host\x00\x00\x00\x08if-match\x00\
    \x00\x00\x11if-modified-since\x00\x00\x00\x0dif-none-match\x00\x00\x00\x08if-range\x00\
    \x00\x00\x13if-unmodified-since\x00\x00\x00\x0dlast-modified\x00\x00\x00\x08location\x00\
    \x00\x00\x0cmax-forwards\x00\x00\x00\x06pragma\x00\x00\x00\x12proxy-authenticate\x00\x00\
    \x00\x13proxy-authorization\x00\x00\x00\x05range\x00\x00\x00\x07referer\x00\x00\x00\x0br\
    etry-after\x00\x00\x00\x06server\x00\x00\x00\x02te\x00\x00\x00\x07trailer\x00\x00\x00\
    \x11transfer-encoding\x00\x00\x00\x07upgrade\x00\x00\x00\x0auser-agent\x00\x00\x00\x04va\
    ry\x00\x00\x00\x03via\x00\x00\x00\x07warning\x00\x00\x00\x10www-authenticate\x00\x00\x00\
    \x06method\x00\x00\x00\x03get\x00\x00\x00\x06status\x00\x00\x00\x06200 OK\x00\x00\x00\
    \x07version\x00\x00\x00\x08HTTP/1.1\x00\x00\x00\x03url\x00\x00\x00\x06public\x00\x00\x00\
    \x0aset-cookie\x00\x00\x00\x0akeep-alive\x00\x00\x00\x06origin10010120120220520630030230\
    3304305306307402405406407408409410411412413414415416417502504505203 Non-Authoritative In\
    formation204 No Content301 Moved Permanently400 Bad Request401 Unauthorized403 Forbidden\
    404 Not Found500 Internal Server Error501 Not Implemented503 Service UnavailableJan Feb \
    Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT\
    chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,te\
    xt/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-\
    8859-1,utf-,*,enq=0.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_spdy3s() {
        assert_eq!(DICTIONARY.len(), 1423);
        let mut c = Compress::new(Compression::default(), true);
        assert_eq!(c.set_dictionary(DICTIONARY).unwrap(), 0xe3c6a7c2);
    }

    /// Two header blocks as Go's (and Python's) zlib with the SPDY dictionary writes them,
    /// each sync-flushed: the second refers back into the first.
    #[test]
    fn inflates_a_clients_header_blocks() {
        let first = [
            0x78, 0xbb, 0xe3, 0xc6, 0xa7, 0xc2, 0x02, 0x25, 0x3a, 0x48, 0xf9, 0x5b, 0x04, 0x4e,
            0xea, 0xa6, 0x26, 0xc6, 0x46, 0x40, 0x9a, 0xb3, 0x08, 0x12, 0x5f, 0x99, 0xa0, 0x74,
            0xcc, 0x68, 0x00, 0x4e, 0x89, 0x25, 0x45, 0xa9, 0x89, 0xb9, 0xd0, 0xc2, 0x86, 0x35,
            0x15, 0x14, 0x15, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff,
        ];
        let second = [
            0x22, 0x53, 0x33, 0xa8, 0xa4, 0x4a, 0x04, 0x00, 0x00, 0x00, 0xff, 0xff,
        ];
        let mut inflate = Inflater::new();
        let h = decode_headers(&inflate.block(&first).unwrap()).unwrap();
        assert_eq!(h["streamtype"], "error");
        assert_eq!(h["port"], "5432");
        assert_eq!(h["requestid"], "0");
        let h = decode_headers(&inflate.block(&second).unwrap()).unwrap();
        assert_eq!(h["streamtype"], "data");
        assert_eq!(h["port"], "5432");
    }

    #[test]
    fn header_blocks_round_trip_through_one_stream() {
        let (mut d, mut i) = (Deflater::new(), Inflater::new());
        for n in 0..3 {
            let port = format!("{}", 5430 + n);
            let block = encode_headers(&[("Port", &port), ("streamtype", "data")]);
            let h = decode_headers(&i.block(&d.block(&block)).unwrap()).unwrap();
            assert_eq!(h["port"], port);
            assert_eq!(h["streamtype"], "data");
        }
        let empty = d.block(&encode_headers(&[]));
        assert!(decode_headers(&i.block(&empty).unwrap())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn frames_are_laid_out_as_spdy3() {
        assert_eq!(
            control(PING, 0, &7u32.to_be_bytes()),
            [0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 7]
        );
        assert_eq!(data(5, true, b"ab"), [0, 0, 0, 5, 1, 0, 0, 2, b'a', b'b']);
    }
}
