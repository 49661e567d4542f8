//! `pods/{name}/exec`: the remote-command protocol kubectl 1.32 speaks, over WebSocket.
//!
//! kubectl offers only `v5.channel.k8s.io` (kube-rs also offers `v4.channel.k8s.io`); the double
//! answers with the first of those it finds. Binary messages carry a channel byte first: 0 stdin
//! (to the server), 1 stdout, 2 stderr, 3 the status, 4 terminal resizes (to the server). In v5
//! the client ends stdin with `[0xFF, 0x00]`. When the command has exited and its output is
//! sent, the status goes on channel 3 (`Success`, or `NonZeroExitCode` with the code in
//! `details.causes[0].message`, which kubectl turns into its own exit code), then a Close with
//! code 1000: anything else loses the exit code on the client side.
//!
//! The command runs as a real process in the pod's environment, from [`super::PodIo::exec_env`]: for
//! the PostgreSQL pod the node's (its OS user, `PGHOST` its socket directory, the server
//! binaries on `PATH`), for a service pod the service's environment. Each container has a
//! root directory of its own holding `/tmp`: absolute paths in the command under it are mapped
//! there, so `kubectl cp` (`tar` over exec) and a later `psql -f /tmp/...` see the same files,
//! and two pods never share a `/tmp`. A new pod (a restart) starts with an empty one.
//! `-t` runs the command on a pseudo-terminal ([`super::pty`]): stderr joins stdout, the input
//! is echoed and line-edited by the terminal, kubectl's resizes (channel 4) set its size, and
//! the v5 close of stdin types ^D.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use poem::http::{header, StatusCode};
use poem::{Request, Response};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::ctx::Ctx;
use super::error::ApiError;
use super::pod::{require_running, PodInfo};
use super::pod_io::ExecEnv;
use super::pty::{Pty, PtyReader};

/// The subprotocols served, preferred first.
const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

pub(crate) const STDIN: u8 = 0;
pub(crate) const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
const RESIZE: u8 = 4;
/// v5: the client closed this channel (the next byte names it).
pub(crate) const CLOSE: u8 = 0xFF;

/// `/tmp/x` -> `<root>/tmp/x` when the path's first directory exists in the container's root.
fn map_path(root: &Path, arg: &str) -> Option<String> {
    let rest = arg.strip_prefix('/')?;
    let first = rest.split('/').next().filter(|f| !f.is_empty())?;
    if first == ".." || !root.join(first).is_dir() {
        return None;
    }
    let clean: Vec<&str> = rest
        .split('/')
        .filter(|s| !s.is_empty() && *s != "." && *s != "..")
        .collect();
    Some(root.join(clean.join("/")).to_string_lossy().into_owned())
}

/// The command as it runs on this machine: container paths mapped under the root. `tar c`
/// of absolute paths archives them relative to the root, so the member names are the
/// container's (`tmp/foo`), as kubectl cp expects.
pub(crate) fn host_command(root: &Path, command: &[String]) -> Vec<String> {
    let is_tar_create = command
        .first()
        .is_some_and(|c| c == "tar" || c == "/bin/tar")
        && command
            .get(1)
            .is_some_and(|f| !f.starts_with("--") && f.trim_start_matches('-').contains('c'));
    if is_tar_create {
        let mut out = vec![command[0].clone(), command[1].clone()];
        let mut args = command[2..].iter();
        if command[1].contains('f') {
            if let Some(archive) = args.next() {
                out.push(archive.clone());
            }
        }
        out.push("-C".into());
        out.push(root.to_string_lossy().into_owned());
        for a in args {
            match a.strip_prefix('/') {
                Some(rel) if map_path(root, a).is_some() => out.push(rel.to_string()),
                _ => out.push(a.clone()),
            }
        }
        return out;
    }
    command
        .iter()
        .map(|a| map_path(root, a).unwrap_or_else(|| a.clone()))
        .collect()
}

/// What the request asks for.
pub(crate) struct ExecRequest {
    command: Vec<String>,
    container: String,
    stdin: bool,
    tty: bool,
}

/// Reads an exec request's query (`attach`: no command).
fn parse_request(pod: &PodInfo, raw_query: &str, attach: bool) -> Result<ExecRequest, ApiError> {
    let mut command = Vec::new();
    let mut container = None;
    let mut flags: HashMap<String, bool> = HashMap::new();
    for (k, v) in form_urlencoded::parse(raw_query.as_bytes()) {
        match k.as_ref() {
            "command" => command.push(v.into_owned()),
            "container" => container = Some(v.into_owned()),
            "stdin" | "stdout" | "stderr" | "tty" => {
                flags.insert(k.into_owned(), matches!(v.as_ref(), "true" | "1"));
            }
            _ => {}
        }
    }
    let names: Vec<String> = pod
        .object
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(String::from))
        .collect();
    let container = match container {
        Some(c) if names.contains(&c) => c,
        Some(c) => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {}",
                pod.name
            )))
        }
        None if names.len() == 1 => names[0].clone(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {}, choose one of: [{}]",
                pod.name,
                names.join(" ")
            )))
        }
    };
    if command.is_empty() && !attach {
        return Err(ApiError::bad_request("you must specify at least 1 command"));
    }
    let flag = |k: &str| flags.get(k).copied().unwrap_or(false);
    Ok(ExecRequest {
        command,
        container,
        stdin: flag("stdin"),
        tty: flag("tty"),
    })
}

/// The 101 answer to a WebSocket upgrade with `protocol` selected.
pub(crate) fn upgrade_response(key: &str, protocol: &str) -> Response {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(key.as_bytes()),
        )
        .header(header::SEC_WEBSOCKET_PROTOCOL, protocol)
        .finish()
}

pub(crate) fn header_of(req: &Request, name: header::HeaderName) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// The remote-command subprotocol to answer with (v5 first), or why there is none.
fn negotiate(req: &Request, what: &str) -> Result<&'static str, ApiError> {
    let offered = header_of(req, header::SEC_WEBSOCKET_PROTOCOL);
    let protocol = PROTOCOLS
        .into_iter()
        .find(|p| offered.split(',').any(|o| o.trim() == *p));
    protocol
        .filter(|_| header_of(req, header::UPGRADE).eq_ignore_ascii_case("websocket"))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "the lab's API double serves {what} over WebSocket ({}) only; SPDY is not \
                 implemented (upgrade {:?}, subprotocols {offered:?})",
                PROTOCOLS.join(", "),
                header_of(req, header::UPGRADE)
            ))
        })
}

/// Whether `protocol` (from [`negotiate`]) is v5, which has the close-stdin message.
pub(crate) fn is_v5(protocol: &str) -> bool {
    protocol == PROTOCOLS[0]
}

/// Checks an exec (or attach) request before the upgrade: a running pod, a valid query, a
/// subprotocol both sides speak.
pub(crate) fn accept(
    req: &Request,
    pod: &PodInfo,
    raw_query: &str,
    attach: bool,
) -> Result<(ExecRequest, &'static str), ApiError> {
    require_running(pod)?;
    let request = parse_request(pod, raw_query, attach)?;
    let what = if attach { "attach" } else { "exec" };
    Ok((request, negotiate(req, what)?))
}

/// Serves one exec request: checks it, then upgrades and runs the command.
pub(crate) fn exec(
    ctx: &Ctx,
    req: &Request,
    pod: &PodInfo,
    raw_query: &str,
) -> Result<Response, ApiError> {
    let (request, protocol) = accept(req, pod, raw_query, false)?;
    let env = ctx.pod_io.exec_env(pod).map_err(|e| {
        ApiError::new(
            500,
            "InternalError",
            format!("Internal error occurred: {e}"),
        )
    })?;
    let pods = super::resources::lookup("pods").expect("pods are served");
    let live: Vec<String> = ctx
        .store
        .list(pods, None)
        .0
        .iter()
        .filter_map(|p| p["metadata"]["uid"].as_str().map(String::from))
        .collect();
    ctx.containers.retain(&live);
    let root = ctx
        .containers
        .root(&pod.uid, &request.container)
        .map_err(|e| {
            ApiError::new(
                500,
                "InternalError",
                format!("Internal error occurred: {e}"),
            )
        })?;
    let v5 = is_v5(protocol);
    serve_websocket(req, protocol, move |ws| run(ws, request, env, root, v5))
}

/// Answers the upgrade with `protocol` and hands the WebSocket to `serve` once upgraded.
pub(crate) fn serve_websocket<F, Fut>(
    req: &Request,
    protocol: &'static str,
    serve: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(WebSocketStream<poem::Upgraded>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let key = header_of(req, header::SEC_WEBSOCKET_KEY);
    let on_upgrade = req
        .take_upgrade()
        .map_err(|e| ApiError::bad_request(format!("cannot upgrade the connection: {e}")))?;
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, protocol, "upgrade failed");
                return;
            }
        };
        serve(WebSocketStream::from_raw_socket(upgraded, Role::Server, None).await).await;
    });
    Ok(upgrade_response(&key, protocol))
}

pub(crate) fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::binary(v)
}

/// The status kubectl reads on channel 3 (kubelet `cri/streaming/remotecommand/exec.go`).
fn exit_status(status: &ExitStatus) -> Value {
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
        "message": format!("command terminated with non-zero exit code: error executing command [{code}], exit code {code}"),
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

fn internal_error(message: &str) -> Value {
    json!({
        "metadata": {}, "status": "Failure", "reason": "InternalError", "code": 500,
        "message": format!("Internal error occurred: error executing command in container: {message}"),
        "details": {"causes": [{"message": format!("error executing command in container: {message}")}]},
    })
}

/// Copies `from` into `tx` as `(tag, Some(bytes))`, then `(tag, None)` at its end.
pub(crate) fn spawn_reader<R, T>(
    mut from: R,
    tag: T,
    tx: tokio::sync::mpsc::Sender<(T, Option<Vec<u8>>)>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    T: Copy + Send + 'static,
{
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = tx.send((tag, None)).await;
                    return;
                }
                Ok(n) => {
                    if tx.send((tag, Some(buf[..n].to_vec()))).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
}

/// Ends the session as the kubelet does: the status, then a normal close, read to its end.
pub(crate) async fn finish<S>(mut ws: WebSocketStream<S>, status: &Value)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let body = serde_json::to_vec(status).unwrap_or_default();
    if ws.send(frame(STATUS, &body)).await.is_err() {
        return;
    }
    let close = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    if ws.close(Some(close)).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// `program` as `PATH` in `env` finds it (a path with a slash as it is), if it exists.
fn find_program(program: &str, env: &[(String, String)]) -> Option<PathBuf> {
    if program.contains('/') {
        return Path::new(program).is_file().then(|| PathBuf::from(program));
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())?;
    path.split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}

/// Where the command's input goes.
enum Input {
    /// Its stdin pipe (none when closed or not asked for).
    Pipe(Option<tokio::process::ChildStdin>),
    /// The terminal it runs on.
    Tty(std::sync::Arc<Pty>),
}

impl Input {
    /// What the client sent on a channel to the server: stdin, its close (v5), resizes.
    async fn take(&mut self, data: &[u8], v5: bool) {
        let closes_stdin = v5 && data.first() == Some(&CLOSE) && data.get(1) == Some(&STDIN);
        match (data.first(), self) {
            (Some(&STDIN), Input::Pipe(stdin)) => {
                if let Some(w) = stdin.as_mut() {
                    if w.write_all(&data[1..]).await.is_err() {
                        *stdin = None;
                    }
                }
            }
            (Some(&STDIN), Input::Tty(pty)) => {
                let _ = pty.write_all(&data[1..]).await;
            }
            // Dropping the pipe is the process's end of input.
            (_, Input::Pipe(stdin)) if closes_stdin => *stdin = None,
            // The end of input on a terminal: ^D.
            (_, Input::Tty(pty)) if closes_stdin => {
                let _ = pty.write_all(&[0x04]).await;
            }
            (Some(&RESIZE), Input::Tty(pty)) => {
                for (w, h) in super::pty::parse_resizes(&data[1..]) {
                    let _ = pty.resize(w, h);
                }
            }
            _ => {} // resizes without a terminal, and anything else
        }
    }
}

/// How long the terminal's first size is waited for before the command starts (kubectl sends
/// it at once).
const FIRST_SIZE: Duration = Duration::from_secs(1);

/// Reads the client's messages until its first resize (or [`FIRST_SIZE`]), so the command
/// starts on a terminal of the client's size, as a runtime creates it; returns the messages
/// read, the resize last, to hand to the command once it runs.
async fn first_size<S>(ws: &mut WebSocketStream<S>) -> Vec<Vec<u8>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut early = Vec::new();
    let _ = tokio::time::timeout(FIRST_SIZE, async {
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Binary(data) = msg {
                let resize = data.first() == Some(&RESIZE);
                early.push(data.to_vec());
                if resize {
                    return;
                }
            }
        }
    })
    .await;
    early
}

/// How long output still written to the terminal is waited for after the command exited,
/// when something it started keeps the terminal open.
const TTY_DRAIN: Duration = Duration::from_secs(2);

async fn run<S>(
    mut ws: WebSocketStream<S>,
    request: ExecRequest,
    mut env: ExecEnv,
    root: PathBuf,
    v5: bool,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut argv = host_command(&root, &request.command);
    let not_found = || {
        internal_error(&format!(
            "exec: {:?}: executable file not found in $PATH",
            request.command[0]
        ))
    };
    // A terminal: the runtime's TERM, and the command in a session of its own with the
    // terminal as its controlling one (`setsid --ctty`, when the image has setsid).
    let mut pty = None;
    if request.tty {
        if find_program(&argv[0], &env.env).is_none() {
            finish(ws, &not_found()).await;
            return;
        }
        if !env.env.iter().any(|(k, _)| k == "TERM") {
            env.env.push(("TERM".into(), "xterm".into()));
        }
        if let Some(setsid) = find_program("setsid", &env.env) {
            let mut wrapped = vec![setsid.to_string_lossy().into_owned(), "--ctty".into()];
            wrapped.push("--wait".into());
            wrapped.append(&mut argv);
            argv = wrapped;
        }
        match Pty::open() {
            Ok(p) => pty = Some(p),
            Err(e) => {
                finish(ws, &internal_error(&format!("opening a terminal: {e}"))).await;
                return;
            }
        }
    }
    let early = match &pty {
        Some((p, _)) => {
            let early = first_size(&mut ws).await;
            for data in early.iter().filter(|d| d.first() == Some(&RESIZE)) {
                for (w, h) in super::pty::parse_resizes(&data[1..]) {
                    let _ = p.resize(w, h);
                }
            }
            early
        }
        None => Vec::new(),
    };
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(env.env.iter().cloned())
        .current_dir(&root)
        .kill_on_drop(true);
    let pty = match pty {
        Some((pty, slave)) => {
            let (Ok(a), Ok(b)) = (slave.try_clone(), slave.try_clone()) else {
                finish(ws, &internal_error("opening a terminal")).await;
                return;
            };
            cmd.stdin(Stdio::from(a))
                .stdout(Stdio::from(b))
                .stderr(Stdio::from(slave));
            Some(std::sync::Arc::new(pty))
        }
        None => {
            cmd.stdin(if request.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
            None
        }
    };
    if let Some((uid, gid)) = env.user {
        cmd.uid(uid).gid(gid);
    }
    let spawned = cmd.spawn();
    // The command holds the terminal's slave: ours must close, or the master never ends.
    drop(cmd);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let status = if e.kind() == std::io::ErrorKind::NotFound {
                not_found()
            } else {
                internal_error(&format!("exec: {:?}: {e}", request.command[0]))
            };
            finish(ws, &status).await;
            return;
        }
    };
    tracing::debug!(command = ?request.command, tty = request.tty, "exec started");
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let (mut input, mut open) = match &pty {
        Some(pty) => {
            spawn_reader(PtyReader(pty.clone()), STDOUT, tx);
            (Input::Tty(pty.clone()), 1)
        }
        None => {
            let out = child.stdout.take().expect("piped stdout");
            let err = child.stderr.take().expect("piped stderr");
            spawn_reader(out, STDOUT, tx.clone());
            spawn_reader(err, STDERR, tx);
            (Input::Pipe(child.stdin.take()), 2)
        }
    };
    // What the client typed before the command started.
    for data in early.iter().filter(|d| d.first() != Some(&RESIZE)) {
        input.take(data, v5).await;
    }
    let mut exited: Option<ExitStatus> = None;
    let drain = tokio::time::sleep(Duration::MAX);
    tokio::pin!(drain);
    while open > 0 || exited.is_none() {
        tokio::select! {
            status = child.wait(), if exited.is_none() => {
                match status {
                    Ok(s) => exited = Some(s),
                    Err(e) => {
                        finish(ws, &internal_error(&e.to_string())).await;
                        return;
                    }
                }
                drain.as_mut().reset(tokio::time::Instant::now() + TTY_DRAIN);
            }
            () = &mut drain, if pty.is_some() && exited.is_some() => break,
            got = rx.recv(), if open > 0 => match got {
                Some((ch, Some(data))) => {
                    if ws.send(frame(ch, &data)).await.is_err() {
                        return;
                    }
                }
                Some((_, None)) => open -= 1,
                None => open = 0,
            },
            msg = ws.next() => match msg {
                Some(Ok(Message::Binary(data))) => input.take(&data, v5).await,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    // The client went away: so does the command.
                    let _ = child.kill().await;
                    return;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    let status = exited.expect("the loop ends after the exit");
    finish(ws, &exit_status(&status)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn container_paths_map_under_the_root() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("tmp")).unwrap();
        let r = root.path().display().to_string();
        assert_eq!(
            host_command(root.path(), &strings(&["psql", "-f", "/tmp/init-db.sql"])),
            strings(&["psql", "-f", &format!("{r}/tmp/init-db.sql")])
        );
        // Paths outside the container's own directories are the image's (the host's).
        assert_eq!(
            host_command(
                root.path(),
                &strings(&["/usr/bin/test", "-d", "/etc/../tmp"])
            ),
            strings(&["/usr/bin/test", "-d", "/etc/../tmp"])
        );
        assert_eq!(
            host_command(root.path(), &strings(&["cat", "/tmp/../../etc/passwd"])),
            strings(&["cat", &format!("{r}/tmp/etc/passwd")])
        );
        assert_eq!(
            host_command(root.path(), &strings(&["tar", "-xmf", "-", "-C", "/tmp"])),
            strings(&["tar", "-xmf", "-", "-C", &format!("{r}/tmp")])
        );
        assert_eq!(
            host_command(root.path(), &strings(&["tar", "cf", "-", "/tmp/dir"])),
            strings(&["tar", "cf", "-", "-C", &r, "tmp/dir"])
        );
    }
}
