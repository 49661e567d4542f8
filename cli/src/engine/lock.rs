//! The two locks of a failover or failback, both naming their holder when refused:
//!
//! - [`LocalLock`]: one run at a time on this machine (and per state directory). A file created
//!   with O_EXCL holding who took it; a lock whose process is gone (same host) is stale and
//!   taken over, with a note.
//! - the Lease `drdctl-switchover` in the DR region's namespace ([`super::ports::LeaseLock`]):
//!   one run at a time, whoever runs it from wherever (DR takes part in every failover and
//!   failback). Held by one run (`user@host pid=N run=ID`): two terminals of one user contend;
//!   the run being resumed, or a dead process of this machine, is taken over; released when the
//!   run ends or stops (a stopped run is resumed from the live state, not from the lock).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Holder {
    pub user: String,
    pub host: String,
    pub pid: u32,
    pub started: String,
    pub command: String,
}

impl Holder {
    pub fn me(command: &str) -> Holder {
        Holder {
            user: std::env::var("USER").unwrap_or_else(|_| "unknown".into()),
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            pid: std::process::id(),
            started: chrono::Utc::now().to_rfc3339(),
            command: command.to_string(),
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} by {}@{} (pid {}) since {}",
            self.command, self.user, self.host, self.pid, self.started
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another drdctl run holds the lock {path}: {holder}; wait for it, or if it is gone remove the file")]
    Held { path: PathBuf, holder: Box<Holder> },
    #[error("cannot take the lock {path}: {message}")]
    Io { path: PathBuf, message: String },
}

/// Held while the value lives; removed on drop.
pub struct LocalLock {
    path: PathBuf,
}

impl LocalLock {
    pub fn acquire(
        state_dir: &Path,
        command: &str,
    ) -> Result<(LocalLock, Option<Holder>), LockError> {
        let path = state_dir.join("lock");
        let io = |e: std::io::Error| LockError::Io {
            path: path.clone(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(state_dir).map_err(io)?;
        let me = Holder::me(command);
        let mut taken_over = None;
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(&serde_json::to_vec(&me).expect("serialisable"))
                        .map_err(io)?;
                    return Ok((LocalLock { path }, taken_over));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder: Option<Holder> = std::fs::read(&path)
                        .ok()
                        .and_then(|b| serde_json::from_slice(&b).ok());
                    match holder {
                        Some(h) if h.host == me.host && !Path::new(&format!("/proc/{}", h.pid)).exists() => {
                            // The holder died without cleaning up: take over.
                            std::fs::remove_file(&path).map_err(io)?;
                            taken_over = Some(h);
                        }
                        Some(h) => return Err(LockError::Held { path, holder: Box::new(h) }),
                        None => {
                            return Err(LockError::Io {
                                path: path.clone(),
                                message: "the lock file exists but is unreadable; remove it if no drdctl is running".into(),
                            })
                        }
                    }
                }
                Err(e) => return Err(io(e)),
            }
        }
        Err(LockError::Io {
            path: path.clone(),
            message: "the lock keeps reappearing; another drdctl is starting".into(),
        })
    }
}

/// The Lease's name, in the DR region's namespace.
pub const LEASE_NAME: &str = "drdctl-switchover";
/// Without release or renewal, the Lease lapses after this long (a run renews it before every
/// step; a run killed with SIGKILL keeps it this long, or until it is resumed).
pub const LEASE_DURATION: std::time::Duration = std::time::Duration::from_secs(15 * 60);

impl Drop for LocalLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_the_message_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let (lock, _) = LocalLock::acquire(dir.path(), "failover --to dr").unwrap();
        let e = LocalLock::acquire(dir.path(), "failback")
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("failover --to dr") && e.contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(lock);
        assert!(LocalLock::acquire(dir.path(), "failback").is_ok());
    }

    #[test]
    fn a_dead_holder_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let mut dead = Holder::me("failover --to dr");
        dead.pid = 999_999_999;
        std::fs::write(dir.path().join("lock"), serde_json::to_vec(&dead).unwrap()).unwrap();
        let (_lock, taken) = LocalLock::acquire(dir.path(), "failover --to dr").unwrap();
        assert_eq!(taken, Some(dead));
    }
}
