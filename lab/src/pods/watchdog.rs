//! Kills the lab's child processes if this process dies without doing it (panic, SIGKILL).
//!
//! A `sh` holds the read end of a pipe whose write end only this process has; when this
//! process ends, `cat` sees end-of-file and the shell sends SIGKILL to every pid registered.

use std::io::Write;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;

pub struct Watchdog {
    pids_file: tempfile::NamedTempFile,
    _pipe: Mutex<ChildStdin>,
    _child: Mutex<Child>,
}

impl Watchdog {
    pub fn start() -> std::io::Result<Self> {
        let pids_file = tempfile::Builder::new()
            .prefix("drd-lab-pids-")
            .tempfile()?;
        let script = format!(
            "cat >/dev/null; for p in $(cat '{f}'); do kill -9 \"$p\" 2>/dev/null; done; rm -f '{f}'",
            f = pids_file.path().display()
        );
        let mut child = Command::new("setsid")
            .args(["sh", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let pipe = child.stdin.take().expect("piped stdin");
        Ok(Watchdog {
            pids_file,
            _pipe: Mutex::new(pipe),
            _child: Mutex::new(child),
        })
    }

    /// Registers a child to kill if this process dies.
    pub fn add(&self, pid: u32) {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .open(self.pids_file.path())
        {
            let _ = writeln!(f, "{pid}");
        }
    }
}
