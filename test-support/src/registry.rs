//! A throwaway OCI registry for tests: Debian's `docker-registry` (distribution 2.8) on
//! `127.0.0.1:0` with its own config and storage in a temp dir. Never the packaged
//! `/etc/docker/registry/config.yml`, which listens on all interfaces.
//!
//! - [`TestRegistry::start`] / [`TestRegistry::start_with_auth`] (htpasswd, user
//!   [`TEST_USER`] / [`TEST_PASSWORD`]) return `None` when the registry is not installed, so
//!   the test can skip with a message; under `CI=true` a missing registry fails the test
//!   instead ([`require_tool`] does the same for other programs, e.g. skopeo).
//! - The port is the one the registry reports (`listening on 127.0.0.1:N` on its stderr):
//!   reading that line is the synchronisation, there is no polling.
//! - [`TestRegistry::requests`] returns the access log so far (method, path, status), e.g. to
//!   count blob uploads. It is made consistent with the caller's past requests by sending a
//!   marker request and reading the log up to it: the registry writes a request's log line
//!   before its (small, buffered) response leaves, so every request the caller has had an
//!   answer to is in the log before the marker. (A large blob download can be answered before
//!   it is logged; uploads, HEADs and manifests cannot.)
//! - A watchdog process kills the registry and removes its files if the test process dies
//!   without dropping it (panic in a static, SIGKILL).
//!
//! The binary comes from `DOCKER_REGISTRY_BIN` or `/usr/bin/docker-registry`
//! (`apt-get install -y docker-registry`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::Watchdog;
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The user of [`TestRegistry::start_with_auth`].
pub const TEST_USER: &str = "drd";
/// The password of [`TEST_USER`].
pub const TEST_PASSWORD: &str = "drd-test-password";
/// `TEST_USER:bcrypt(TEST_PASSWORD)`, cost 4 so each authenticated request stays cheap
/// (the registry checks the hash on every request; distribution only reads bcrypt).
const TEST_HTPASSWD: &str = "drd:$2b$04$tZbeFilZpKGDTmzQD5lgU.Om480d/0eHiDTVXkkySLJWt4bZh/AlO\n";

/// How long the registry may take to start, and the log to catch up.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Where the registry binary is.
pub fn registry_bin() -> PathBuf {
    std::env::var_os("DOCKER_REGISTRY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/docker-registry"))
}

/// True when the tests run in CI (`CI=true`), where a missing tool is a failure, not a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// `program` found on PATH (or as a path). Missing: `None` with a message on stderr (the test
/// skips), or a panic under `CI=true`.
pub fn require_tool(program: &str, package: &str) -> Option<PathBuf> {
    let found = if program.contains('/') {
        Some(PathBuf::from(program)).filter(|p| p.exists())
    } else {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
        })
    };
    if found.is_none() {
        let msg = format!("{program} not found: install it with `apt-get install -y {package}`");
        if in_ci() {
            panic!("{msg} (CI=true: this test must not be skipped)");
        }
        eprintln!("SKIPPED: {msg}");
    }
    found
}

/// One line of the registry's access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Path and query, e.g. `/v2/drd/x/blobs/uploads/…?digest=sha256:…`.
    pub uri: String,
    pub status: u16,
}

impl Request {
    /// Parses `127.0.0.1 - - [date] "PUT /v2/... HTTP/1.1" 201 0 "" "agent"`.
    fn parse(line: &str) -> Option<Request> {
        let start = line.find('"')? + 1;
        let end = start + line[start..].find('"')?;
        let mut req = line[start..end].split(' ');
        let method = req.next()?.to_string();
        let uri = req.next()?.to_string();
        let status = line[end + 1..].split_whitespace().next()?.parse().ok()?;
        Some(Request {
            method,
            uri,
            status,
        })
    }

    /// A finished blob upload (the `PUT` that commits it, with `?digest=`).
    pub fn is_blob_upload(&self) -> bool {
        self.method == "PUT" && self.uri.contains("/blobs/uploads/") && self.uri.contains("digest=")
    }

    /// The digest a committed upload was for.
    pub fn upload_digest(&self) -> Option<String> {
        let q = self.uri.split_once('?')?.1;
        q.split('&')
            .find_map(|kv| kv.strip_prefix("digest="))
            .map(|d| d.replace("%3A", ":").replace("%3a", ":"))
    }
}

#[derive(Default)]
struct Log {
    lines: Mutex<Vec<String>>,
    grew: Condvar,
}

/// Options for [`TestRegistry::start_with`].
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// htpasswd authentication with [`TEST_USER`] / [`TEST_PASSWORD`].
    pub auth: bool,
}

/// A running registry; stopped and removed on drop.
pub struct TestRegistry {
    addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
    access: Arc<Log>,
    stderr: Arc<Log>,
    watchdog: Watchdog,
}

impl TestRegistry {
    /// A registry without authentication; `None` (skip) when not installed outside CI.
    pub fn start() -> Option<TestRegistry> {
        Self::start_or_skip(RegistryOptions::default())
    }

    /// A registry that wants [`TEST_USER`] / [`TEST_PASSWORD`] (HTTP Basic).
    pub fn start_with_auth() -> Option<TestRegistry> {
        Self::start_or_skip(RegistryOptions { auth: true })
    }

    fn start_or_skip(opts: RegistryOptions) -> Option<TestRegistry> {
        require_tool(registry_bin().to_str()?, "docker-registry")?;
        Some(Self::start_with(opts).expect("starting the test registry"))
    }

    /// Starts a registry; an error when it cannot (including when it is not installed).
    pub fn start_with(opts: RegistryOptions) -> Result<TestRegistry> {
        let bin = registry_bin();
        if !bin.exists() {
            bail!(
                "{} not found: apt-get install -y docker-registry (or set DOCKER_REGISTRY_BIN)",
                bin.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("drd-registry-")
            .tempdir()
            .context("creating the registry's temp dir")?;
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:0\n  secret: {secret}\n",
            data = dir.path().join("data").display(),
            secret = uuid::Uuid::new_v4().simple(),
        );
        if opts.auth {
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, TEST_HTPASSWD)?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: drd-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config)?;

        let mut child = Command::new(&bin)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        // Kills the registry and removes its files if the test process dies first.
        let watchdog = Watchdog::spawn(
            "the test registry",
            &format!(
                "kill -9 {} 2>/dev/null; rm -rf '{}'",
                child.id(),
                dir.path().display()
            ),
        )?;

        // stdout: the access log; stderr: the service log, where the address is announced.
        let access = Arc::new(Log::default());
        let stderr = Arc::new(Log::default());
        drain(child.stdout.take().expect("piped"), access.clone(), None);
        let (tx, rx) = mpsc::channel();
        drain(
            child.stderr.take().expect("piped"),
            stderr.clone(),
            Some(tx),
        );

        let mut reg = TestRegistry {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child,
            dir,
            access,
            stderr,
            watchdog,
        };
        match rx.recv_timeout(TIMEOUT) {
            Ok(addr) => reg.addr = addr,
            Err(_) => {
                let log = reg.stderr.lines.lock().unwrap().join("\n");
                bail!("the registry did not start listening; its log:\n{log}");
            }
        }
        Ok(reg)
    }

    /// `127.0.0.1:PORT`: the registry part of image names.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the registry keeps its blobs.
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Every request the registry has logged, including all requests whose responses the
    /// caller has received.
    pub fn requests(&self) -> Vec<Request> {
        let marker = format!("drd-sync={}", uuid::Uuid::new_v4().simple());
        // Any answer will do (401 with auth): the registry logs the request after answering
        // every earlier one, in order on its stdout.
        let mut s = TcpStream::connect(self.addr).expect("connecting to the test registry");
        write!(
            s,
            "GET /v2/?{marker} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .expect("sending the marker request");
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
        let deadline = Instant::now() + TIMEOUT;
        let mut lines = self.access.lines.lock().unwrap();
        loop {
            if let Some(pos) = lines.iter().position(|l| l.contains(&marker)) {
                return lines[..pos]
                    .iter()
                    .filter_map(|l| Request::parse(l))
                    .collect();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the registry's access log did not show the marker request"
            );
            lines = self.access.grew.wait_timeout(lines, left).unwrap().0;
        }
    }

    /// The digests of the blob uploads the registry committed, in order.
    pub fn uploads(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter(|r| r.is_blob_upload() && r.status == 201)
            .filter_map(Request::upload_digest)
            .collect()
    }

    /// The registry's own log so far (for failure messages).
    pub fn log(&self) -> String {
        self.stderr.lines.lock().unwrap().join("\n")
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        // Tell the watchdog we clean up ourselves, then stop the registry; the temp dir goes
        // when `dir` drops.
        self.watchdog.disarm();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `from` line by line into `log`; the first `listening on ADDR` goes to `announce`.
fn drain(
    from: impl Read + Send + 'static,
    log: Arc<Log>,
    announce: Option<mpsc::Sender<SocketAddr>>,
) {
    std::thread::spawn(move || {
        let mut announce = announce;
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if let Some(tx) = &announce {
                if let Some(addr) = line
                    .split("listening on ")
                    .nth(1)
                    .and_then(|rest| rest.split(|c: char| c == '"' || c.is_whitespace()).next())
                    .and_then(|a| a.parse().ok())
                {
                    let _ = tx.send(addr);
                    announce = None;
                }
            }
            log.lines.lock().unwrap().push(line);
            log.grew.notify_all();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_log_lines_parse() {
        let r = Request::parse(
            r#"127.0.0.1 - - [24/Nov/2026:16:26:30 +0000] "PUT /v2/drd/x/blobs/uploads/abc?_state=s&digest=sha256%3A12 HTTP/1.1" 201 0 "" "oci-client""#,
        )
        .unwrap();
        assert_eq!(r.method, "PUT");
        assert_eq!(r.status, 201);
        assert!(r.is_blob_upload());
        assert_eq!(r.upload_digest().as_deref(), Some("sha256:12"));
        assert!(Request::parse("time=x level=info msg=y").is_none());
    }
}
