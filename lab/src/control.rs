//! The lab's control API: what `drdctl lab partition|heal|kill-region|wan` ask the running
//! lab process for. Plain JSON over HTTP on loopback; its address is in `<lab dir>/control`.
//!
//! | request | body | effect |
//! |---|---|---|
//! | `GET /wan` | | the settings, the links and the cuts now |
//! | `PUT /wan` | `{"rtt_ms": 40, "mbit": 200}` | new latency and bandwidth, open connections included |
//! | `POST /partition` | `{"region": "primary", "parties": ["operator", "dr"], "mode": "blackhole"}` | cuts the links between the region and those parties (`refuse` refuses instead) |
//! | `POST /heal` | `{"region": "primary"}` (or `{}`: every link) | the links open again |
//! | `POST /kill-region` | `{"region": "primary"}` | SIGKILL to the region's processes and its database, its API gone, every path to it refused |
//!
//! Errors are `400 {"error": "..."}`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use crate::nodelay::NoDelay;
use poem::http::StatusCode;
use poem::web::Json;
use poem::{handler, Body, EndpointExt, Request, Response, Route, Server};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::kube_api::KubeDouble;
use crate::pg::SharedNode;
use crate::pods::ProcessRuntime;
use crate::wan::{CutMode, Party, Wan, WanSettings};

/// The file in the lab's directory holding the control API's URL.
pub const CONTROL_FILE: &str = "control";

/// What losing a region means: its processes, its database, its API.
#[derive(Clone)]
pub struct RegionHandle {
    pub name: String,
    pub runtime: ProcessRuntime,
    pub node: SharedNode,
    pub kube: Arc<KubeDouble>,
    /// The region's witness guard (its process group), if it runs one.
    pub guard_pid: Option<u32>,
}

/// Everything the control API acts on (cheap handles to the world's parts).
#[derive(Clone)]
pub struct Controls {
    pub wan: Wan,
    pub regions: Vec<RegionHandle>,
}

/// A partition request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionRequest {
    pub region: String,
    /// `operator`, `clients`, `azure`, or the other region's name.
    pub parties: Vec<String>,
    pub mode: CutMode,
}

impl Controls {
    fn region(&self, name: &str) -> Result<&RegionHandle, String> {
        self.regions.iter().find(|r| r.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.regions.iter().map(|r| r.name.as_str()).collect();
            format!("no region {name:?} (one of {})", names.join(", "))
        })
    }

    /// See the module docs.
    pub fn state(&self) -> Value {
        let s = self.wan.state();
        json!({
            "settings": s.settings,
            "links": self.wan.links().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "cuts": s.cuts.iter().map(|(l, m)| json!({"link": l.to_string(), "mode": m})).collect::<Vec<_>>(),
        })
    }

    /// Cuts `region` off from `parties`; the links cut.
    pub fn partition(&self, req: &PartitionRequest) -> Result<Vec<String>, String> {
        self.region(&req.region)?;
        if req.parties.is_empty() {
            return Err("name at least one party to cut the region off from".into());
        }
        let mut parties = Vec::new();
        for p in &req.parties {
            let party = Party::parse(p);
            if let Party::Region(r) = &party {
                self.region(r)?;
                if *r == req.region {
                    return Err(format!("{r} cannot be cut off from itself"));
                }
            }
            parties.push(party);
        }
        let cut = self.wan.partition(&req.region, &parties, req.mode);
        Ok(cut.iter().map(ToString::to_string).collect())
    }

    /// Heals `region`'s links (every link with None).
    pub fn heal(&self, region: Option<&str>) -> Result<Vec<String>, String> {
        if let Some(r) = region {
            self.region(r)?;
        }
        Ok(self
            .wan
            .heal(region)
            .iter()
            .map(ToString::to_string)
            .collect())
    }

    /// SIGKILLs everything of `region`; see the module docs.
    pub async fn kill_region(&self, name: &str) -> Result<(), String> {
        let region = self.region(name)?.clone();
        let mut parties = vec![Party::Operator, Party::Clients, Party::Azure];
        parties.extend(
            self.regions
                .iter()
                .filter(|r| r.name != name)
                .map(|r| Party::Region(r.name.clone())),
        );
        self.wan.partition(name, &parties, CutMode::Refuse);
        region.runtime.kill_all().await;
        if let Some(pid) = region.guard_pid {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        region.node.kill().await.map_err(|e| e.to_string())?;
        region.kube.down().await;
        tracing::warn!(region = name, "region killed");
        Ok(())
    }
}

fn answer(result: Result<Value, String>) -> Response {
    match result {
        Ok(v) => Response::builder()
            .content_type("application/json")
            .body(Body::from_json(v).unwrap_or_default()),
        Err(e) => Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .content_type("application/json")
            .body(Body::from_json(json!({ "error": e })).unwrap_or_default()),
    }
}

#[derive(Deserialize)]
struct RegionBody {
    region: Option<String>,
}

#[handler]
async fn get_wan(req: &Request) -> Response {
    answer(Ok(controls(req).state()))
}

#[handler]
async fn put_wan(req: &Request, Json(settings): Json<WanSettings>) -> Response {
    let c = controls(req);
    if settings.rtt_ms < 0.0 || settings.mbit < 0.0 || !settings.rtt_ms.is_finite() {
        return answer(Err("rtt_ms and mbit must be 0 or more".into()));
    }
    c.wan.set(settings);
    answer(Ok(c.state()))
}

#[handler]
async fn partition(req: &Request, Json(body): Json<PartitionRequest>) -> Response {
    answer(
        controls(req)
            .partition(&body)
            .map(|cut| json!({ "cut": cut })),
    )
}

#[handler]
async fn heal(req: &Request, Json(body): Json<RegionBody>) -> Response {
    answer(
        controls(req)
            .heal(body.region.as_deref())
            .map(|healed| json!({ "healed": healed })),
    )
}

#[handler]
async fn kill_region(req: &Request, Json(body): Json<RegionBody>) -> Response {
    let Some(region) = body.region else {
        return answer(Err("kill-region needs a region".into()));
    };
    answer(
        controls(req)
            .kill_region(&region)
            .await
            .map(|()| json!({ "killed": region })),
    )
}

fn controls(req: &Request) -> &Controls {
    req.data::<Controls>()
        .expect("the control API has its data")
}

/// The running control API.
pub struct ControlServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ControlServer {
    /// Serves `controls` on 127.0.0.1 (a free port).
    pub async fn start(controls: Controls) -> std::io::Result<ControlServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Route::new()
            .at("/wan", poem::get(get_wan).put(put_wan))
            .at("/partition", poem::post(partition))
            .at("/heal", poem::post(heal))
            .at("/kill-region", poem::post(kill_region))
            .data(controls);
        let server = Server::new_with_acceptor(NoDelay::from_tokio(listener)?);
        let task = tokio::spawn(server.run(app));
        Ok(ControlServer { addr, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A client of a running lab's control API (found through `<dir>/control`): sends `body`
/// (JSON) with `method` (`GET`, `PUT`, `POST`) to `path`; the answer, or the lab's error.
pub async fn call(
    dir: &Path,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let file = dir.join(CONTROL_FILE);
    let url = std::fs::read_to_string(&file).map_err(|e| {
        format!(
            "the lab is not running ({}: {e}); drdctl lab up starts it",
            file.display()
        )
    })?;
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", url.trim()));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("the lab's control API at {}: {e}", url.trim()))?;
    let ok = resp.status().is_success();
    let v: Value = resp.json().await.map_err(|e| e.to_string())?;
    if ok {
        Ok(v)
    } else {
        Err(v["error"].as_str().unwrap_or("the lab refused").to_string())
    }
}
