//! Kills the lab's child processes if this process dies without doing it (panic, SIGKILL), on
//! test-support's one [`test_support::Watchdog`]: its script kills every pid registered in a
//! file.

use std::io::Write;

pub struct Watchdog {
    pids_file: tempfile::NamedTempFile,
    _dog: test_support::Watchdog,
}

impl Watchdog {
    pub fn start() -> std::io::Result<Self> {
        let pids_file = tempfile::Builder::new()
            .prefix("drd-lab-pids-")
            .tempfile()?;
        let script = format!(
            "for p in $(cat '{f}'); do kill -9 \"$p\" 2>/dev/null; done; rm -f '{f}'",
            f = pids_file.path().display()
        );
        let dog = test_support::Watchdog::spawn("the lab's pods", &script)?;
        Ok(Watchdog {
            pids_file,
            _dog: dog,
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
