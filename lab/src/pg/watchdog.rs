//! Clean-up that survives a panic or a SIGKILL of the process that owns a node, on
//! test-support's one [`Watchdog`]: when the owner ends, for any reason, it kills the node's
//! processes (the start script's process group, recorded in `pgid`, and any postmaster named
//! by a `postmaster.pid`) and removes the node's directory.

use std::path::Path;

use test_support::Watchdog;

use super::{PgError, PgResult};

/// The watchdog of the node in `dir`.
pub(crate) fn spawn(dir: &Path) -> PgResult<Watchdog> {
    let dir = dir.display().to_string();
    if dir.contains('\'') {
        return Err(PgError::Setup(format!("unusable temp dir path {dir:?}")));
    }
    // Runs as the owner (root in CI): root may signal postgres processes and remove files.
    let script = format!(
        "if [ -f '{dir}/pgid' ]; then kill -KILL -- -\"$(cat '{dir}/pgid')\" 2>/dev/null; fi
         for d in '{dir}'/pgdata '{dir}'/pgdata.*; do
           if [ -f \"$d/postmaster.pid\" ]; then kill -KILL \"$(head -n1 \"$d/postmaster.pid\")\" 2>/dev/null; fi
         done
         rm -rf '{dir}'"
    );
    Watchdog::spawn(&format!("node {dir}"), &script).map_err(|source| PgError::Io {
        what: "starting the clean-up watchdog (setsid sh)".into(),
        source,
    })
}
