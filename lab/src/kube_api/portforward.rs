//! Pod I/O of the double: `pods/{name}/portforward`, and the routing of `log`, `exec` and
//! `attach` to their modules.
//!
//! Port-forward is served in the three ways clients ask for it, chosen by the upgrade request:
//! - **`kubectl port-forward`** (1.30 and later, by default): a WebSocket with subprotocol
//!   `SPDY/3.1+portforward.k8s.io` whose binary messages carry a SPDY/3.1 session (no channel
//!   byte; the client's frames arrive split over several messages);
//! - **kubectl's fallback** (`KUBECTL_PORT_FORWARD_WEBSOCKETS=false`, older kubectl, or any
//!   failed WebSocket upgrade): `POST` with `Upgrade: SPDY/3.1` and
//!   `X-Stream-Protocol-Version: portforward.k8s.io`, then the same session on the raw
//!   connection. One session carries every connection kubectl accepts locally, each a pair of
//!   error and data streams ([`super::spdy`]);
//! - **kube-rs** (`Api::<Pod>::portforward`, drdctl): the WebSocket channel protocol, the
//!   client asking for `v5.channel.k8s.io, v4.channel.k8s.io` and the server answering
//!   `v4.channel.k8s.io`; binary frames carry a channel byte first; port `i` of `?ports=` uses
//!   channel `2i` for data and `2i+1` for errors, and the first frame on each channel is the
//!   port number (2 bytes, little endian); one TCP connection per WebSocket.
//!
//! Like the kubelet, the double dials the pod's port when a connection's streams open; a
//! refused dial becomes the kubelet's message on the error stream or channel (`error
//! forwarding port 5432 to pod ...: dial tcp ...: connection refused`). When the region's API
//! goes down, open forwards are cut, as on a real outage.
//!
//! Where a pod's port really is comes from a [`super::PodIo`]: by default the pod's `status.podIP` and
//! the same port; the lab's PostgreSQL runtime maps `postgresql-0:5432` to its node's address.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use poem::http::{header, StatusCode};
use poem::{Request, Response};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::ctx::Ctx;
use super::error::ApiError;
use super::pod::{require_running, PodInfo};
use super::resources;
use super::spdy;

/// The channel subprotocol the double answers kube-rs with (the one kube-rs and the API server
/// share).
const PROTOCOL: &str = "v4.channel.k8s.io";

fn status_response(e: &ApiError) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .content_type("application/json")
        .body(serde_json::to_vec(&e.to_status()).unwrap_or_default())
}

/// Serves `GET /api/v1/namespaces/{ns}/pods/{name}/{portforward|log}`; `None` for any other
/// request, which the normal API path then serves.
pub(crate) async fn intercept(ctx: &Ctx, req: &Request) -> Option<Response> {
    let path = req.uri().path();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let ["api", "v1", "namespaces", ns, "pods", name, sub] = segs.as_slice() else {
        return None;
    };
    if !matches!(*sub, "portforward" | "log" | "exec" | "attach") {
        return None;
    }
    let pods = resources::lookup("pods").expect("pods are served");
    let Some(pod) = ctx.store.get(pods, ns, name) else {
        return Some(status_response(&ApiError::not_found(pods, name)));
    };
    let info = PodInfo::from_pod(&ctx.region, &pod);
    let query: BTreeMap<String, String> =
        form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
            .into_owned()
            .filter(|(k, _)| !k.is_empty())
            .collect();
    Some(match *sub {
        "log" => super::logs::serve(ctx, &info, &query),
        "exec" => super::exec::exec(ctx, req, &info, req.uri().query().unwrap_or_default())
            .unwrap_or_else(|e| status_response(&e)),
        "attach" => super::attach::attach(ctx, req, &info, req.uri().query().unwrap_or_default())
            .unwrap_or_else(|e| status_response(&e)),
        _ => match port_forward(ctx, req, &info, &query) {
            Ok(r) => r,
            Err(e) => status_response(&e),
        },
    })
}

/// kubectl's SPDY session tunnelled in a WebSocket (kubectl ≥ 1.30, client-go
/// `tools/portforward/tunneling_dialer.go`).
const SPDY_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";
/// The port-forward protocol of a raw SPDY upgrade (`X-Stream-Protocol-Version`).
const SPDY_PROTOCOL: &str = "portforward.k8s.io";

fn port_forward(
    ctx: &Ctx,
    req: &Request,
    pod: &PodInfo,
    query: &BTreeMap<String, String>,
) -> Result<Response, ApiError> {
    require_running(pod)?;
    let header = |n: &str| {
        req.headers()
            .get_all(n)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect::<Vec<String>>()
    };
    let upgrade = header("upgrade").join(",");
    let offered = header("sec-websocket-protocol");
    let transport = if upgrade.eq_ignore_ascii_case("websocket") {
        if offered.iter().any(|p| p == SPDY_TUNNEL) {
            Transport::Tunnel
        } else if offered.iter().any(|p| p == PROTOCOL) {
            Transport::Channels(ports_of(query)?)
        } else {
            return Err(ApiError::bad_request(format!(
                "unable to upgrade connection: port-forward is served over WebSocket \
                 {SPDY_TUNNEL} or {PROTOCOL}, not {offered:?}"
            )));
        }
    } else if upgrade.eq_ignore_ascii_case("SPDY/3.1") {
        let versions = header("x-stream-protocol-version");
        if !versions.iter().any(|v| v == SPDY_PROTOCOL) {
            // apimachinery `httpstream.Handshake`: no common protocol is a 403.
            return Err(ApiError::new(
                403,
                "Forbidden",
                format!(
                    "unable to upgrade: unable to negotiate protocol: client supports \
                     {versions:?}, server supports [\"{SPDY_PROTOCOL}\"]"
                ),
            ));
        }
        Transport::Spdy
    } else {
        return Err(ApiError::bad_request("Upgrade request required"));
    };
    let key = super::exec::header_of(req, header::SEC_WEBSOCKET_KEY);
    let on_upgrade = req
        .take_upgrade()
        .map_err(|e| ApiError::bad_request(format!("cannot upgrade the connection: {e}")))?;
    let down = ctx.down.clone();
    let pod_name = format!("{}/{}", pod.namespace, pod.name);
    let (pod_io, info) = (ctx.pod_io.clone(), pod.clone());
    let dial: spdy::Dial = Arc::new(move |port| pod_io.forward_target(&info, port));
    let response = match &transport {
        Transport::Spdy => Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "SPDY/3.1")
            .header("X-Stream-Protocol-Version", SPDY_PROTOCOL)
            .finish(),
        Transport::Tunnel => super::exec::upgrade_response(&key, SPDY_TUNNEL),
        Transport::Channels(_) => super::exec::upgrade_response(&key, PROTOCOL),
    };
    // The kubelet names the pod by name and uid in its errors.
    let spdy_pod = format!("{}, uid {}", pod.name, pod.uid);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "port-forward upgrade failed");
                return;
            }
        };
        match transport {
            Transport::Spdy => {
                let (r, w) = tokio::io::split(upgraded);
                spdy::serve(r, spdy::RawSink(w), dial, spdy_pod, down).await;
            }
            Transport::Tunnel => {
                let ws = WebSocketStream::from_raw_socket(upgraded, Role::Server, None).await;
                tunnel(ws, dial, spdy_pod, down).await;
            }
            Transport::Channels(ports) => {
                let ws = WebSocketStream::from_raw_socket(upgraded, Role::Server, None).await;
                let targets = ports.iter().map(|p| dial(*p)).collect();
                forward(ws, pod_name, ports, targets, down).await;
            }
        }
    });
    Ok(response)
}

/// How a port-forward is carried.
enum Transport {
    /// SPDY/3.1 on the upgraded connection (kubectl's fallback).
    Spdy,
    /// SPDY/3.1 in WebSocket binary messages (kubectl's default).
    Tunnel,
    /// The WebSocket channel protocol, for these ports (kube-rs).
    Channels(Vec<u16>),
}

fn ports_of(query: &BTreeMap<String, String>) -> Result<Vec<u16>, ApiError> {
    let ports: Vec<u16> = query
        .get("ports")
        .map(|p| p.split(',').map(|s| s.trim().parse::<u16>()).collect())
        .transpose()
        .map_err(|_| ApiError::bad_request("invalid port in ?ports="))?
        .unwrap_or_default();
    if ports.is_empty() || ports.contains(&0) {
        return Err(ApiError::bad_request(
            "at least one port (1-65535) must be given in ?ports=",
        ));
    }
    Ok(ports)
}

/// Serves a SPDY session whose bytes travel in the WebSocket's binary messages: what the
/// client sends is fed to the session as one byte stream (the Go framer splits frames over
/// several messages); each frame the session writes is one message.
async fn tunnel<S>(
    ws: WebSocketStream<S>,
    dial: spdy::Dial,
    pod: String,
    down: tokio::sync::watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sink, mut stream) = ws.split();
    let (reader, mut feed) = tokio::io::duplex(64 * 1024);
    let pump = tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            let gone = match msg {
                Message::Binary(b) => feed.write_all(&b).await.is_err(),
                Message::Close(_) => true,
                _ => false,
            };
            if gone {
                return;
            }
        }
    });
    spdy::serve(reader, spdy::WsSink(sink), dial, pod, down).await;
    pump.abort();
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::binary(v)
}

/// Relays one WebSocket to the pod's ports until either side closes or the API goes down.
async fn forward<S>(
    mut ws: WebSocketStream<S>,
    pod: String,
    ports: Vec<u16>,
    targets: Vec<Result<SocketAddr, String>>,
    mut down: tokio::sync::watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    // The port-number frame opens each channel, data and error alike.
    for (i, port) in ports.iter().enumerate() {
        for ch in [2 * i as u8, 2 * i as u8 + 1] {
            if ws.send(frame(ch, &port.to_le_bytes())).await.is_err() {
                return;
            }
        }
    }
    // Dial every port, as the kubelet does when the streams are created.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(usize, Option<Vec<u8>>)>(16);
    let mut writers = Vec::with_capacity(ports.len());
    for (i, (port, target)) in ports.iter().zip(targets).enumerate() {
        let conn = match spdy::dial_pod(target).await {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("error forwarding port {port} to pod {pod}: {e}");
                tracing::debug!(%msg, "port-forward dial failed");
                let _ = ws.send(frame(2 * i as u8 + 1, msg.as_bytes())).await;
                let _ = ws.close(None).await;
                return;
            }
        };
        let (read, write) = conn.into_split();
        writers.push(Some(write));
        super::exec::spawn_reader(read, i, tx.clone());
    }
    drop(tx);
    let mut open = writers.len();
    loop {
        if *down.borrow() {
            let _ = ws.close(None).await;
            return;
        }
        tokio::select! {
            _ = down.changed() => continue,
            msg = ws.next() => match msg {
                Some(Ok(Message::Binary(data))) if data.len() > 1 && data[0] % 2 == 0 => {
                    let idx = usize::from(data[0] / 2);
                    if let Some(Some(w)) = writers.get_mut(idx) {
                        if w.write_all(&data[1..]).await.is_err() {
                            let _ = ws.close(None).await;
                            return;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    for w in writers.iter_mut().flatten() {
                        let _ = w.shutdown().await;
                    }
                    let _ = ws.close(None).await;
                    return;
                }
                Some(Ok(_)) => {}
            },
            got = rx.recv() => match got {
                Some((i, Some(data))) => {
                    if ws.send(frame(2 * i as u8, &data)).await.is_err() {
                        return;
                    }
                }
                Some((i, None)) => {
                    // The pod closed this port: like the kubelet, end the stream once all are.
                    if let Some(w) = writers.get_mut(i).and_then(Option::take) {
                        drop(w);
                        open -= 1;
                    }
                    if open == 0 {
                        let _ = ws.close(None).await;
                        return;
                    }
                }
                None => {
                    let _ = ws.close(None).await;
                    return;
                }
            },
        }
    }
}
