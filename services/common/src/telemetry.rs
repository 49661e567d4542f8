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

use tracing_subscriber::fmt::MakeWriter;
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
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init();
    }
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
