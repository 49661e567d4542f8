//! `pods/{name}/attach`: `kubectl attach` over the remote-command WebSocket protocol of
//! [`super::exec`] (`v5.channel.k8s.io`; v4 for kube-rs).
//!
//! A pod's main process here is a real process (or nothing) whose output the runtime writes to
//! the pod's log ([`super::PodIo::log_path`]). Attaching streams that output from the moment of
//! the attach on, on stdout (channel 1), as an attached container's output is; the stream ends
//! when the pod goes (the container ended: `Success` on channel 3, a normal close, and kubectl
//! exits 0), when the region's API goes down (cut), or when the client leaves. The lab's
//! processes read no input and have no TTY: stdin the client sends is accepted and dropped, as
//! for a container without `stdin: true`, and resizes are ignored. kubectl itself turns `-t` off
//! for a container whose spec has no `tty: true`.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use poem::{Request, Response};
use serde_json::json;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::ctx::Ctx;
use super::error::ApiError;
use super::exec::{accept, finish, frame, serve_websocket, STDOUT};
use super::pod::PodInfo;
use super::store::Store;

/// How often the pod's log is checked for new output (and the pod for its end).
const POLL: Duration = Duration::from_millis(100);

/// Serves one attach request: checks it, then upgrades and streams the pod's output.
pub(crate) fn attach(
    ctx: &Ctx,
    req: &Request,
    pod: &PodInfo,
    raw_query: &str,
) -> Result<Response, ApiError> {
    let (_, protocol) = accept(req, pod, raw_query, true)?;
    // Output from now on: where the log ends before the answer goes out.
    let path = ctx.pod_io.log_path(pod);
    let offset = path
        .as_ref()
        .and_then(|p| std::fs::metadata(p).ok())
        .map_or(0, |m| m.len());
    let attached = Attached {
        store: ctx.store.clone(),
        down: ctx.down.clone(),
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        uid: pod.uid.clone(),
        path,
        offset,
    };
    serve_websocket(req, protocol, move |ws| attached.stream(ws))
}

struct Attached {
    store: Arc<Store>,
    down: watch::Receiver<bool>,
    namespace: String,
    name: String,
    uid: String,
    path: Option<PathBuf>,
    offset: u64,
}

impl Attached {
    fn alive(&self) -> bool {
        let pods = super::resources::lookup("pods").expect("pods are served");
        self.store
            .get(pods, &self.namespace, &self.name)
            .is_some_and(|p| p["metadata"]["uid"].as_str() == Some(self.uid.as_str()))
    }

    /// What the log gained since the last read (from the start again if it was recreated).
    fn new_output(&mut self) -> Vec<u8> {
        let Some(path) = &self.path else {
            return Vec::new();
        };
        let Ok(mut f) = std::fs::File::open(path) else {
            return Vec::new();
        };
        let len = f.metadata().map_or(0, |m| m.len());
        if len < self.offset {
            self.offset = 0;
        }
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(self.offset)).is_err() || f.read_to_end(&mut buf).is_err() {
            return Vec::new();
        }
        self.offset += buf.len() as u64;
        buf
    }

    async fn stream<S>(mut self, mut ws: WebSocketStream<S>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let mut poll = tokio::time::interval(POLL);
        let mut down = self.down.clone();
        loop {
            if *down.borrow() {
                let _ = ws.close(None).await;
                return;
            }
            let out = self.new_output();
            for chunk in out.chunks(32 * 1024) {
                if ws.send(frame(STDOUT, chunk)).await.is_err() {
                    return;
                }
            }
            if !self.alive() {
                finish(ws, &json!({"metadata": {}, "status": "Success"})).await;
                return;
            }
            tokio::select! {
                _ = poll.tick() => {}
                _ = down.changed() => {}
                msg = ws.next() => match msg {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => {} // stdin and resizes: nothing reads them
                },
            }
        }
    }
}
