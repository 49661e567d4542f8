//! Each region's witness guard (`drdctl guard`) as a real process beside the region's
//! PostgreSQL, wired the way a cluster would wire it, but every path through the WAN: to Azure
//! (the term blob and the token endpoint) over the region's own relay, to the other region's
//! guard over the link between the regions. So `drdctl lab partition --region primary --from
//! operator,dr,azure` cuts exactly what a regional network fault cuts.
//!
//! The guard runs in its own process group with its watchdog child; `stop` and
//! `kill` end both. Its pid is in `<dir>/guard/<region>/guard.pid` (tests pause it with
//! SIGSTOP), its state at `http://<addr>/v1/state`, its log in `logs/<region>/guard.log`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::pg::SharedNode;
use crate::wan::{Link, Party, Relay, Wan};

/// One region's guard.
pub struct GuardProcess {
    pub region: String,
    /// Where it serves `/v1/state` and `/v1/confirm` (its own address, not through the WAN).
    pub addr: SocketAddr,
    /// The term file start.sh reads (`TERM_FILE`).
    pub term_file: PathBuf,
    pub pid: u32,
    child: Mutex<Option<tokio::process::Child>>,
    _relays: Vec<Relay>,
}

/// What the guards need from the world.
pub struct GuardSetup<'a> {
    pub bin: &'a Path,
    pub dir: &'a Path,
    pub wan: &'a Wan,
    pub azure: SocketAddr,
    pub tenant: &'a str,
    pub client_id: &'a str,
    pub password: &'a str,
    /// (region, its address, its database)
    pub regions: [(&'a str, IpAddr, SharedNode); 2],
}

/// The blob the lab keeps the term in.
pub const TERM_CONTAINER: &str = "drdctl";
pub const TERM_BLOB: &str = "term";

fn io(e: impl std::fmt::Display, what: &str) -> String {
    format!("{what}: {e}")
}

/// Waits until every guard has read the term from the witness once (its `/v1/state` shows a
/// term): the lab is not up before its guards can confirm a promotion, and a guard that
/// cannot reach the witness at start is named here (with its log) instead of showing up later
/// as a fenced primary.
pub async fn wait_until_reading(guards: &[GuardProcess], within: Duration) -> Result<(), String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .map_err(|e| format!("a client for the guards' state: {e}"))?;
    let deadline = tokio::time::Instant::now() + within;
    for g in guards {
        let url = format!("http://{}/v1/state", g.addr);
        loop {
            let state: Option<serde_json::Value> = match http.get(&url).send().await {
                Ok(r) => r.json().await.ok(),
                Err(_) => None,
            };
            if state
                .as_ref()
                .is_some_and(|s| !s["guard"]["highest"].is_null())
            {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                let why = state
                    .and_then(|s| s["last_error"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "its state did not answer".into());
                return Err(format!(
                    "the {} guard did not read the term from the witness within {within:?}: {why} \
                     (logs/{}/guard.log)",
                    g.region, g.region
                ));
            }
            // Polling interval, not synchronisation: the state is asked again.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Starts both guards.
pub async fn start(s: GuardSetup<'_>) -> Result<Vec<GuardProcess>, String> {
    let free = |ip: IpAddr| crate::pg::node::free_port(ip).map_err(|e| e.to_string());
    let ports = [free(s.regions[0].1)?, free(s.regions[1].1)?];
    let mut out = Vec::new();
    for i in 0..2 {
        let (name, ip, node) = &s.regions[i];
        let (peer_name, peer_ip, _) = &s.regions[1 - i];
        let me = Party::Region(name.to_string());
        let to_azure = Relay::start(
            s.wan,
            Link(me.clone(), Party::Azure),
            SocketAddr::new(*ip, 0),
            s.azure,
        )
        .await
        .map_err(|e| io(e, "the guard's relay to Azure"))?;
        let to_peer = Relay::start(
            s.wan,
            Link(me, Party::Region(peer_name.to_string())),
            SocketAddr::new(*ip, 0),
            SocketAddr::new(*peer_ip, ports[1 - i]),
        )
        .await
        .map_err(|e| io(e, "the guard's relay to its peer"))?;
        let gdir = s.dir.join("guard").join(name);
        std::fs::create_dir_all(&gdir).map_err(|e| io(e, "creating the guard's directory"))?;
        let logs = s.dir.join("logs").join(name);
        std::fs::create_dir_all(&logs).map_err(|e| io(e, "creating the log directory"))?;
        let log = std::fs::File::create(logs.join("guard.log"))
            .map_err(|e| io(e, "creating guard.log"))?;
        let log2 = log.try_clone().map_err(|e| io(e, "guard.log"))?;
        let addr = SocketAddr::new(*ip, ports[i]);
        // Beside the node's files, where start.sh (the postgres user) can read it.
        let term_file = node.dir().join("guard").join("term.json");
        node.set_term(term_file.clone(), name);
        let pgdata = node.pgdata();
        let mut cmd = tokio::process::Command::new(s.bin);
        cmd.arg("guard")
            .env("DRDCTL_GUARD_REGION", name)
            .env(
                "DRDCTL_GUARD_DB_URL",
                format!("postgres://postgres@{}/postgres", node.addr()),
            )
            .env("DRDCTL_POSTGRES_PASSWORD", s.password)
            .env(
                "DRDCTL_WITNESS_URL",
                format!("http://{}/{TERM_CONTAINER}/{TERM_BLOB}", to_azure.addr),
            )
            .env(
                "DRDCTL_WITNESS_AUTHORITY_HOST",
                format!("http://{}", to_azure.addr),
            )
            .env("DRDCTL_WITNESS_AUTH", "client-secret")
            .env("AZURE_TENANT_ID", s.tenant)
            .env("AZURE_CLIENT_ID", s.client_id)
            .env("AZURE_CLIENT_SECRET", s.password)
            .env("DRDCTL_GUARD_PEER", format!("http://{}", to_peer.addr))
            .env("DRDCTL_GUARD_LISTEN", addr.to_string())
            .env("DRDCTL_GUARD_TERM_FILE", &term_file)
            .env("DRDCTL_WITNESS_TIMING", "lab")
            .env(
                "DRDCTL_GUARD_STOP_COMMAND",
                format!(
                    "kill -QUIT $(head -1 '{}/postmaster.pid' 2>/dev/null) 2>/dev/null",
                    pgdata.display()
                ),
            )
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| io(e, &format!("starting {} guard", s.bin.display())))?;
        let pid = child.id().unwrap_or_default();
        std::fs::write(gdir.join("guard.pid"), pid.to_string())
            .map_err(|e| io(e, "writing guard.pid"))?;
        out.push(GuardProcess {
            region: name.to_string(),
            addr,
            term_file,
            pid,
            child: Mutex::new(Some(child)),
            _relays: vec![to_azure, to_peer],
        });
    }
    Ok(out)
}

impl GuardProcess {
    /// SIGKILL to the guard and its watchdog (the process group).
    pub fn kill(&self) {
        if self.pid > 0 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Some(mut c) = self.child.lock().expect("not poisoned").take() {
            let _ = c.start_kill();
        }
    }
}

impl Drop for GuardProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
