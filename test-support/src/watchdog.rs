//! Clean-up that survives its owner: a `setsid sh` holds the read end of a pipe whose write end
//! only the owning process has. When the owner ends, however it ends (panic, SIGKILL), or drops
//! the [`Watchdog`], the pipe closes and the shell runs the clean-up script. setsid keeps a
//! Ctrl-C to the owner's process group from killing the watchdog first. The one watchdog of the
//! repository: the test clusters, the test registry, and the lab's nodes and pods use it.

use std::io::Write;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;

/// Runs its script when the owner ends or drops it, unless [`Watchdog::disarm`]ed.
pub struct Watchdog {
    pipe: Mutex<Option<ChildStdin>>,
    child: Mutex<Child>,
}

impl Watchdog {
    /// Starts the watchdog of `what` (for the error) with the shell `cleanup` script.
    pub fn spawn(what: &str, cleanup: &str) -> std::io::Result<Watchdog> {
        // `read` fails at end of file (the owner is gone), succeeds on `disarm`'s line.
        let script = format!("if read -r _; then exit 0; fi\n{cleanup}");
        let mut child = Command::new("setsid")
            .args(["sh", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("starting the clean-up watchdog of {what} (setsid sh): {e}"),
                )
            })?;
        let pipe = child.stdin.take().expect("piped stdin");
        Ok(Watchdog {
            pipe: Mutex::new(Some(pipe)),
            child: Mutex::new(child),
        })
    }

    /// The owner has cleaned up itself: the watchdog ends without running the script.
    pub fn disarm(&self) {
        if let Some(mut p) = self.pipe.lock().expect("watchdog lock").take() {
            let _ = p.write_all(b"done\n");
        }
        let _ = self.child.lock().expect("watchdog lock").wait();
    }
}
