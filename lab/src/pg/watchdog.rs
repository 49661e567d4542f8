//! Clean-up that survives a panic or a SIGKILL of the process that owns a node: a `setsid sh`
//! holds the read end of a pipe whose write end only the owner has. When the owner ends, for
//! any reason, the pipe closes and the watchdog kills the node's processes (the start script's
//! process group, recorded in `pgid`, and any postmaster named by a `postmaster.pid`) and
//! removes the node's directory. The same design as `test-support`'s clusters.

use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;

use super::{PgError, PgResult};

/// Owns the watchdog; dropping it (or ending the process) triggers the clean-up.
pub(crate) struct Watchdog {
    _pipe: Mutex<ChildStdin>,
    _child: Mutex<Child>,
}

impl Watchdog {
    pub(crate) fn spawn(dir: &Path) -> PgResult<Watchdog> {
        let dir = dir.display().to_string();
        if dir.contains('\'') {
            return Err(PgError::Setup(format!("unusable temp dir path {dir:?}")));
        }
        // Runs as the owner (root in CI): root may signal postgres processes and remove files.
        let script = format!(
            "cat >/dev/null
             if [ -f '{dir}/pgid' ]; then kill -KILL -- -\"$(cat '{dir}/pgid')\" 2>/dev/null; fi
             for d in '{dir}'/pgdata '{dir}'/pgdata.*; do
               if [ -f \"$d/postmaster.pid\" ]; then kill -KILL \"$(head -n1 \"$d/postmaster.pid\")\" 2>/dev/null; fi
             done
             rm -rf '{dir}'"
        );
        let mut child = Command::new("setsid")
            .args(["sh", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| PgError::Io {
                what: "starting the clean-up watchdog (setsid sh)".into(),
                source,
            })?;
        let pipe = child.stdin.take().expect("piped stdin");
        Ok(Watchdog {
            _pipe: Mutex::new(pipe),
            _child: Mutex::new(child),
        })
    }
}
