//! What every request handler of the double can reach ([`Ctx`]), with the state the pod I/O
//! handlers keep per pod: each container's root directory (exec), the last CPU reading
//! (metrics) and each container's previous log (in-place restarts, `logs --previous`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::faults::{Faults, RequestLog};
use super::pod::PodRuntime;
use super::pod_io::PodIo;
use super::store::Store;

/// What every request handler can reach.
pub(crate) struct Ctx {
    pub store: Arc<Store>,
    pub faults: Arc<Faults>,
    pub requests: Arc<RequestLog>,
    pub down: watch::Receiver<bool>,
    pub bookmark_interval: Duration,
    pub server_address: String,
    pub region: String,
    pub pod_io: Arc<dyn PodIo>,
    pub containers: Containers,
    pub cpu_samples: CpuSamples,
    /// Runs the pods (the controller's too): in-place container restarts use it.
    pub runtime: Arc<dyn PodRuntime>,
    pub previous_logs: PreviousLogs,
}

/// The containers' root directories (`/tmp` of each), by pod uid and container.
#[derive(Default)]
pub(crate) struct Containers {
    roots: Mutex<HashMap<(String, String), tempfile::TempDir>>,
}

impl Containers {
    /// The root of `container` in the pod `uid`, created (with a world-writable `/tmp`, as in
    /// an image) on first use.
    pub(crate) fn root(&self, uid: &str, container: &str) -> std::io::Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let mut roots = self.roots.lock().expect("containers lock");
        let key = (uid.to_string(), container.to_string());
        if let Some(d) = roots.get(&key) {
            return Ok(d.path().to_path_buf());
        }
        let dir = tempfile::Builder::new()
            .prefix("drd-lab-container-")
            .tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777))?;
        let path = dir.path().to_path_buf();
        roots.insert(key, dir);
        Ok(path)
    }

    /// Forgets the containers of pods that no longer exist (their files go with them).
    pub(crate) fn retain(&self, live_uids: &[String]) {
        self.roots
            .lock()
            .expect("containers lock")
            .retain(|(uid, _), _| live_uids.contains(uid));
    }
}

/// The previous CPU reading of each pod (uid): total CPU seconds, when.
#[derive(Default)]
pub(crate) struct CpuSamples(pub(crate) Mutex<HashMap<String, (f64, Instant)>>);

/// The log of each container's previous run, by pod uid and container.
#[derive(Default)]
pub(crate) struct PreviousLogs(Mutex<HashMap<(String, String), String>>);

impl PreviousLogs {
    /// The previous run's log of `container` in the pod `uid`, if it restarted here.
    pub(crate) fn get(&self, uid: &str, container: &str) -> Option<String> {
        let logs = self.0.lock().unwrap_or_else(|p| p.into_inner());
        logs.get(&(uid.to_string(), container.to_string())).cloned()
    }

    pub(crate) fn put(&self, uid: &str, container: &str, log: String, live: &[String]) {
        let mut logs = self.0.lock().unwrap_or_else(|p| p.into_inner());
        logs.retain(|(u, _), _| live.contains(u));
        logs.insert((uid.to_string(), container.to_string()), log);
    }
}
