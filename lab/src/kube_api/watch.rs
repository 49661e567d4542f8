//! Watch streams: newline-delimited JSON `WatchEvent` frames, one chunk per event, the way
//! kube-rs (`LinesCodec` over the body) and kubectl read them. Covers the start-point semantics
//! (initial ADDED, replay from a resourceVersion, 410 Expired), `timeoutSeconds`, bookmarks and
//! `sendInitialEvents`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream;
use poem::{Body, Response};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, watch};

use super::error::ApiError;
use super::resources::ResourceDef;
use super::selector::{FieldSelector, LabelSelector};
use super::store::{Event, Store};

/// What a watch request asked for.
pub struct WatchRequest {
    /// The resource watched.
    pub res: &'static ResourceDef,
    /// The namespace, for a namespaced collection path.
    pub namespace: Option<String>,
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// `resourceVersion` (None when absent or "0").
    pub since: Option<u64>,
    /// `timeoutSeconds`.
    pub timeout: Duration,
    /// `allowWatchBookmarks=true`.
    pub bookmarks: bool,
    /// `sendInitialEvents=true`.
    pub send_initial_events: bool,
    /// How often to send a bookmark when allowed.
    pub bookmark_interval: Duration,
}

impl WatchRequest {
    fn matches(&self, ev: &Event) -> bool {
        std::ptr::eq(ev.resource, self.res)
            && self
                .namespace
                .as_deref()
                .is_none_or(|ns| ev.namespace() == ns)
            && self.labels.matches(&ev.object)
            && self.fields.matches(&ev.object)
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Value {
        let mut meta = json!({ "resourceVersion": rv.to_string() });
        if initial_end {
            meta["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
        }
        json!({
            "type": "BOOKMARK",
            "object": { "kind": self.res.kind, "apiVersion": self.res.api_version(), "metadata": meta }
        })
    }
}

fn frame(v: &Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(v).unwrap_or_default();
    line.push(b'\n');
    line
}

fn event_frame(ev: &Event) -> Vec<u8> {
    frame(&json!({ "type": ev.kind.as_str(), "object": ev.object }))
}

/// Serves one watch: a 200 response whose body streams events until the timeout, a client
/// disconnect, or the double going down (`down` turning true).
pub fn serve(store: Arc<Store>, req: WatchRequest, mut down: watch::Receiver<bool>) -> Response {
    let (tx, rx) = mpsc::channel::<Vec<u8>>(64);
    let since = if req.send_initial_events {
        None
    } else {
        req.since
    };
    match store.watch_from(req.res, since) {
        Err(e) => {
            let err = expired_frame(&e);
            tokio::spawn(async move {
                let _ = tx.send(err).await;
            });
        }
        Ok((replay, events, start_rv)) => {
            tokio::spawn(async move {
                run(req, replay, events, start_rv, tx, &mut down).await;
            });
        }
    }
    let body = stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    Response::builder()
        .content_type("application/json")
        .body(Body::from_bytes_stream(body))
}

fn expired_frame(e: &ApiError) -> Vec<u8> {
    frame(&json!({ "type": "ERROR", "object": e.to_status() }))
}

async fn run(
    req: WatchRequest,
    replay: Vec<Arc<Event>>,
    mut events: broadcast::Receiver<Arc<Event>>,
    start_rv: u64,
    tx: mpsc::Sender<Vec<u8>>,
    down: &mut watch::Receiver<bool>,
) {
    let mut last_rv = start_rv;
    for ev in &replay {
        if req.matches(ev) && tx.send(event_frame(ev)).await.is_err() {
            return;
        }
    }
    if req.send_initial_events
        && req.bookmarks
        && tx.send(frame(&req.bookmark(start_rv, true))).await.is_err()
    {
        return;
    }
    let deadline = tokio::time::sleep(req.timeout);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(req.bookmark_interval);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = &mut deadline => {
                if req.bookmarks {
                    let _ = tx.send(frame(&req.bookmark(last_rv, false))).await;
                }
                return;
            }
            _ = ticker.tick(), if req.bookmarks => {
                if tx.send(frame(&req.bookmark(last_rv, false))).await.is_err() {
                    return;
                }
            }
            changed = down.changed() => {
                if changed.is_err() || *down.borrow() {
                    return;
                }
            }
            ev = events.recv() => match ev {
                Ok(ev) => {
                    if ev.rv <= last_rv {
                        continue;
                    }
                    last_rv = ev.rv;
                    if req.matches(&ev) && tx.send(event_frame(&ev)).await.is_err() {
                        return;
                    }
                }
                // A watcher too slow to keep up is cut off, as the real server does; the
                // client re-watches from its last resourceVersion.
                Err(_) => return,
            },
            _ = tx.closed() => return,
        }
    }
}
