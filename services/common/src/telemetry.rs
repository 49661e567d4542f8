//! Logging: human-readable on a terminal, one JSON object per line otherwise (containers, CI).
//!
//! The level comes from `RUST_LOG` (default `info`). Call once, at the top of `main`.
//!
//! Off a terminal, lines go through [`Buffered`]: appended to a buffer in memory and written to
//! stdout by a background thread, at most 100 ms after the first line of a batch, or at once
//! by the logging thread when the buffer passes 64 KiB or the line is a warning or an error
//! (everything buffered before it goes first, in order). A request's access-log line then
//! costs no system call of its own (it was one `write(2)` each). [`flush`] writes what is
//! buffered: the services call it when they stop, and a panic does too.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields};
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// The most a line waits in the buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// A buffer this large is written at once.
pub const FLUSH_BYTES: usize = 64 * 1024;

static STDOUT: OnceLock<Buffered> = OnceLock::new();

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A second init (tests) is harmless: keep the first subscriber.
    if std::io::stdout().is_terminal() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stdout)
            .try_init();
    } else {
        let writer = STDOUT
            .get_or_init(|| Buffered::start(Box::new(std::io::stdout())))
            .clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            flush();
            previous(info);
        }));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer)
            .json()
            .event_format(WithRequestId(json_format()))
            .try_init();
    }
}

/// One JSON object a line: the event's fields at the top level, then the current span's.
fn json_format() -> format::Format<format::Json> {
    format::format()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
}

tokio::task_local! {
    /// The id of the request the current task serves (see [`with_request_id`]).
    static REQUEST_ID: Box<str>;
}

/// Runs `f` with `id` as its request id: off a terminal every log line `f` writes carries
/// `"span":{"request_id":…,"name":"request"}`, as it would inside a `request` span, without
/// the span's cost on every request (a `tracing` span is made, formatted, and entered and
/// left at every poll; this is one task-local). On a terminal (not [`json_lines`]) the caller
/// makes the span itself.
pub async fn with_request_id<F: std::future::Future>(id: &str, f: F) -> F::Output {
    REQUEST_ID.scope(id.into(), f).await
}

/// Whether log lines are JSON (written through the buffer), which is when [`access`] and
/// [`with_request_id`] stand in for the request span.
pub fn json_lines() -> bool {
    STDOUT.get().is_some()
}

/// The JSON event format, plus the request's span from [`with_request_id`] when no span is
/// current.
struct WithRequestId<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithRequestId<F>
where
    F: FormatEvent<S, N>,
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let id = REQUEST_ID.try_with(|id| id.clone()).ok();
        let Some(id) = id.filter(|_| ctx.lookup_current().is_none()) else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0
            .format_event(ctx, format::Writer::new(&mut line), event)?;
        // The object ends the line: `…}` and a newline. The span goes last, as the JSON format
        // puts the current span after the target.
        let object = line.trim_end();
        let Some(open) = object.strip_suffix('}') else {
            return writer.write_str(&line);
        };
        let mut tail = Vec::new();
        request_span(&mut tail, &id);
        writer.write_str(open)?;
        writer.write_str(std::str::from_utf8(&tail).map_err(|_| std::fmt::Error)?)
    }
}

/// The target the access lines carry (the module that answers requests), for `RUST_LOG`.
pub const ACCESS_TARGET: &str = "common::server";

/// Writes a request's access-log line straight into the log buffer, in the shape the JSON
/// formatter gives an event (`timestamp`, `level`, `message`, the fields, `target`, `span`),
/// formatted by hand: the formatter's machinery (field visitors, `serde_json`, the timestamp's
/// calendar arithmetic on every line) cost about as much as the rest of the line's request.
/// The date and time to the second are formatted once a second per thread.
///
/// Returns `false`, having written nothing, when the lines are not JSON (a terminal, or
/// [`init`] not called) or `RUST_LOG` turns the level off for [`ACCESS_TARGET`]: the caller
/// then logs through `tracing` as usual (which drops what is turned off).
pub fn access(
    level: tracing::Level,
    request_id: &str,
    method: &str,
    path: &str,
    status: u16,
    elapsed: Duration,
) -> bool {
    let Some(out) = STDOUT.get() else {
        return false;
    };
    let enabled = match level {
        tracing::Level::ERROR | tracing::Level::WARN => {
            tracing::enabled!(target: ACCESS_TARGET, tracing::Level::WARN)
        }
        tracing::Level::INFO => tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO),
        _ => false,
    };
    if !enabled {
        return false;
    }
    thread_local! {
        static LINE: std::cell::RefCell<(Vec<u8>, i64, [u8; 19])> =
            const { std::cell::RefCell::new((Vec::new(), i64::MIN, [0; 19])) };
    }
    LINE.with(|cell| {
        let Ok(mut cell) = cell.try_borrow_mut() else {
            return false;
        };
        let (line, second, stamp) = &mut *cell;
        line.clear();
        let now = chrono::Utc::now();
        if now.timestamp() != *second {
            *second = now.timestamp();
            let text = now.format("%Y-%m-%dT%H:%M:%S").to_string();
            stamp.copy_from_slice(&text.as_bytes()[..19]);
        }
        let micros = now.timestamp_subsec_micros().min(999_999);
        let level = if level <= tracing::Level::WARN {
            "WARN"
        } else {
            "INFO"
        };
        access_line(
            line,
            (stamp, micros),
            level,
            request_id,
            method,
            path,
            status,
            elapsed,
        );
        out.0.append(line, level == "WARN");
        true
    })
}

/// The access line's bytes; `when`: the date and time to the second, and the microseconds.
#[allow(clippy::too_many_arguments)]
fn access_line(
    line: &mut Vec<u8>,
    when: (&[u8; 19], u32),
    level: &str,
    request_id: &str,
    method: &str,
    path: &str,
    status: u16,
    elapsed: Duration,
) {
    let took = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    line.extend_from_slice(b"{\"timestamp\":\"");
    line.extend_from_slice(when.0);
    line.push(b'.');
    digits(line, u64::from(when.1), 6);
    line.extend_from_slice(b"Z\",\"level\":\"");
    line.extend_from_slice(level.as_bytes());
    line.extend_from_slice(b"\",\"message\":\"request\",\"method\":");
    json_str(line, method);
    line.extend_from_slice(b",\"path\":");
    json_str(line, path);
    line.extend_from_slice(b",\"status\":");
    digits(line, u64::from(status), 1);
    line.extend_from_slice(b",\"ms\":");
    digits(line, took / 1000, 1);
    line.push(b'.');
    digits(line, took % 1000, 3);
    line.extend_from_slice(b",\"target\":\"");
    line.extend_from_slice(ACCESS_TARGET.as_bytes());
    line.push(b'"');
    request_span(line, request_id);
}

/// What ends every line a request logs: `,"span":{"request_id":…,"name":"request"}`, the
/// object's closing brace and the newline (the JSON format's current span, which goes last).
fn request_span(out: &mut Vec<u8>, request_id: &str) {
    out.extend_from_slice(b",\"span\":{\"request_id\":");
    json_str(out, request_id);
    out.extend_from_slice(b",\"name\":\"request\"}}\n");
}

/// `n` in decimal, zero-padded to at least `width` digits (without `core::fmt`'s machinery).
pub(crate) fn digits(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut at = buf.len();
    while n > 0 || buf.len() - at < width.max(1) {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&buf[at..]);
}

/// `s` as a JSON string.
fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let mut plain = 0;
    for (i, b) in s.bytes().enumerate() {
        let escaped: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&s.as_bytes()[plain..i]);
        plain = i + 1;
        if escaped.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.extend_from_slice(escaped);
        }
    }
    out.extend_from_slice(&s.as_bytes()[plain..]);
    out.push(b'"');
}

/// Writes the log lines still buffered (none when logging goes straight to a terminal).
pub fn flush() {
    if let Some(b) = STDOUT.get() {
        b.flush();
    }
}

/// A [`MakeWriter`] that buffers lines and has a thread write them (module documentation).
#[derive(Clone)]
pub struct Buffered(Arc<Shared>);

struct Shared {
    pending: Mutex<Pending>,
    /// Wakes the flusher when a line arrives while it waits for one.
    arrived: Condvar,
    /// Held while a batch is taken and written, so that batches are written in order.
    out: Mutex<Box<dyn Write + Send>>,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// The flusher waits for a line (nothing is buffered).
    idle: bool,
}

impl Buffered {
    /// Buffers lines for `out`, with a thread writing them.
    pub fn start(out: Box<dyn Write + Send>) -> Buffered {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            arrived: Condvar::new(),
            out: Mutex::new(out),
        });
        let flusher = shared.clone();
        let _ = std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(move || loop {
                {
                    let mut p = flusher.pending();
                    while p.bytes.is_empty() {
                        p.idle = true;
                        p = flusher.arrived.wait(p).unwrap_or_else(|e| e.into_inner());
                    }
                    p.idle = false;
                }
                std::thread::sleep(FLUSH_EVERY);
                flusher.flush();
            });
        Buffered(shared)
    }

    /// Writes what is buffered now.
    pub fn flush(&self) {
        self.0.flush();
    }
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn flush(&self) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = std::mem::take(&mut self.pending().bytes);
        if !bytes.is_empty() {
            let _ = out.write_all(&bytes);
            let _ = out.flush();
        }
    }

    fn append(&self, line: &[u8], urgent: bool) {
        let (full, wake) = {
            let mut p = self.pending();
            if p.bytes.capacity() == 0 {
                p.bytes.reserve(FLUSH_BYTES + 4096);
            }
            p.bytes.extend_from_slice(line);
            (p.bytes.len() >= FLUSH_BYTES, std::mem::take(&mut p.idle))
        };
        if urgent || full {
            self.flush();
        } else if wake {
            self.arrived.notify_one();
        }
    }
}

/// One log line on its way into the buffer.
pub struct LineWriter<'a> {
    shared: &'a Shared,
    urgent: bool,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.shared.append(buf, self.urgent);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffered {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            shared: &self.0,
            urgent: false,
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        LineWriter {
            shared: &self.0,
            urgent: *meta.level() <= tracing::Level::WARN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the test reads back, counting the writes it got.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut s = self.0.lock().unwrap();
            s.0.extend_from_slice(buf);
            s.1 += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().0.clone()).unwrap()
        }
        fn writes(&self) -> usize {
            self.0.lock().unwrap().1
        }
    }

    fn line(b: &Buffered, text: &str) {
        let mut w = b.make_writer();
        w.write_all(format!("{text}\n").as_bytes()).unwrap();
    }

    /// Polls `f` until it holds, for at most 5 s.
    fn within(what: &str, f: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The hand-written access line has the JSON formatter's shape: the same keys in the same
    /// order and the same values (the time aside), with strings escaped.
    #[test]
    fn the_access_line_is_what_the_json_formatter_writes() {
        let path = "/nope\"\\x\u{1}\n\u{e9}";
        let (id, status, ms) = ("68e58021-c544", 404u16, 0.777);
        let lines = Sink::default();
        let out = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .json()
            .event_format(json_format())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(target: ACCESS_TARGET, "request", request_id = %id);
            span.in_scope(|| {
                tracing::info!(target: ACCESS_TARGET, method = %"GET", path, status, ms, "request")
            });
        });
        let theirs = lines.text();

        let mut ours = Vec::new();
        let stamp = *b"2026-12-03T14:42:41";
        access_line(
            &mut ours,
            (&stamp, 56573),
            "INFO",
            id,
            "GET",
            path,
            status,
            Duration::from_micros(777),
        );
        let ours = String::from_utf8(ours).unwrap();
        let mut text = Vec::new();
        for (n, width) in [(0, 1), (7, 3), (1234, 3), (56573, 6), (u64::MAX, 1)] {
            digits(&mut text, n, width);
            text.push(b' ');
        }
        assert_eq!(text, b"0 007 1234 056573 18446744073709551615 ");
        let parsed: serde_json::Value = serde_json::from_str(&ours).unwrap();
        assert_eq!(parsed["timestamp"], "2026-12-03T14:42:41.056573Z");
        assert_eq!(parsed["path"], path);
        assert_eq!(parsed["ms"], 0.777);
        // Byte for byte after the time.
        let after_time = |l: &str| l[l.find(r#"","level""#).unwrap()..].to_string();
        assert_eq!(after_time(&ours), after_time(&theirs), "{ours}{theirs}");
    }

    /// A line logged under `with_request_id` is the line the same event gets inside a
    /// `request` span; a span of its own inside the request is shown as before.
    #[test]
    fn lines_in_a_request_carry_its_id_as_the_span_did() {
        let (old, new) = (Sink::default(), Sink::default());
        let log = || {
            tracing::warn!(
                upstream = "data-ingest",
                error = "refused \"x\"",
                "upstream call failed"
            )
        };
        let id = "req-1.a:b_c";
        let (out, json) = (old.clone(), json_format());
        let before = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .json()
            .event_format(json)
            .finish();
        tracing::subscriber::with_default(before, || {
            tracing::info_span!("request", request_id = %id).in_scope(log)
        });
        let out = new.clone();
        let after = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .json()
            .event_format(WithRequestId(json_format()))
            .finish();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        tracing::subscriber::with_default(after, || {
            runtime.block_on(with_request_id(id, async {
                log();
                tracing::info_span!("inner", n = 1).in_scope(log);
            }));
            log();
        });
        let (old, new) = (old.text(), new.text());
        let new: Vec<&str> = new.lines().collect();
        assert_eq!(new.len(), 3, "{new:?}");
        let after_time = |l: &str| l[l.find(r#"","level""#).unwrap()..].to_string();
        assert_eq!(
            after_time(new[0]),
            after_time(old.trim_end()),
            "{new:?} {old}"
        );
        assert!(
            new[1].ends_with(r#""span":{"n":1,"name":"inner"}}"#),
            "{}",
            new[1]
        );
        assert!(!new[2].contains("span"), "{}", new[2]);
    }

    #[test]
    fn lines_arrive_in_one_write_after_a_while() {
        let sink = Sink::default();
        let b = Buffered::start(Box::new(sink.clone()));
        for i in 0..50 {
            line(&b, &format!("line {i}"));
        }
        within("the lines to be written", || {
            sink.text().lines().count() == 50
        });
        let expected: String = (0..50).map(|i| format!("line {i}\n")).collect();
        assert_eq!(sink.text(), expected);
        // Written together (a second write only if the flusher woke in the middle).
        assert!(sink.writes() <= 2, "{} writes", sink.writes());
        // And again after a quiet moment.
        line(&b, "later");
        within("a line after a pause", || sink.text().ends_with("later\n"));
    }

    #[test]
    fn warnings_and_flush_write_at_once_in_order() {
        let sink = Sink::default();
        let b = Buffered::start(Box::new(sink.clone()));
        line(&b, "info");
        let meta = tracing::Level::WARN;
        let mut w = LineWriter {
            shared: &b.0,
            urgent: meta <= tracing::Level::WARN,
        };
        w.write_all(b"warn\n").unwrap();
        assert_eq!(sink.text(), "info\nwarn\n");
        line(&b, "before shutdown");
        b.flush();
        assert_eq!(sink.text(), "info\nwarn\nbefore shutdown\n");
    }

    #[test]
    fn a_burst_from_many_threads_loses_nothing() {
        let sink = Sink::default();
        let b = Buffered::start(Box::new(sink.clone()));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        line(&b, &format!("{t} {i} {}", "x".repeat(100)));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        b.flush();
        let text = sink.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 40_000);
        // Every line whole, and each thread's lines in the order it wrote them.
        let mut next = [0usize; 8];
        for l in lines {
            let mut parts = l.split(' ');
            let t: usize = parts.next().unwrap().parse().unwrap();
            let i: usize = parts.next().unwrap().parse().unwrap();
            assert_eq!(parts.next().unwrap().len(), 100);
            assert_eq!(i, next[t]);
            next[t] += 1;
        }
        // Batched: far fewer writes than lines (a write per 64 KiB or per 100 ms).
        assert!(sink.writes() < 1000, "{} writes", sink.writes());
    }
}
