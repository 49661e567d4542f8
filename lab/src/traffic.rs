//! The drill's traffic generator: writers that create users and readers that list them, both
//! through the application's DNS name. The name is resolved at the lab's authoritative name
//! server (re-resolved at most every `resolve_every`, like a resolver with a short cache), so
//! the DNS switch is what moves the traffic from one region's ingress to the other's.
//!
//! Every request is logged (time, kind, outcome, the address it went to), and every write the
//! application acknowledged (`201 Created`) is remembered by its username, so that afterwards
//! the database can be asked whether each one is still there.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use serde::Serialize;
use tokio::net::UdpSocket;

#[derive(Debug, Clone)]
pub struct TrafficConfig {
    /// The authoritative name server of the application's zone.
    pub name_server: SocketAddr,
    /// The application's name (`app.example.com`).
    pub fqdn: String,
    /// The ingress port (8080).
    pub port: u16,
    pub writers: usize,
    pub readers: usize,
    /// Each worker's pause between two requests.
    pub pause: Duration,
    /// How long a DNS answer is used before asking again.
    pub resolve_every: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Usernames are `<prefix>-<worker>-<n>`: unique per drill.
    pub prefix: String,
}

impl TrafficConfig {
    pub fn new(name_server: SocketAddr, fqdn: &str, port: u16) -> Self {
        TrafficConfig {
            name_server,
            fqdn: fqdn.trim_end_matches('.').to_string(),
            port,
            writers: 2,
            readers: 1,
            pause: Duration::from_millis(20),
            resolve_every: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            prefix: format!("drill{}", std::process::id()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Write,
    Read,
}

/// One request.
#[derive(Debug, Clone, Serialize)]
pub struct Request {
    /// Milliseconds since the traffic started (when the request was sent).
    pub at_ms: u64,
    pub kind: Kind,
    /// The application answered with success (201 for a write, 200 for a read).
    pub ok: bool,
    /// The HTTP status, if there was an answer.
    pub status: Option<u16>,
    /// Where it went (the address the name resolved to), if it resolved.
    pub to: Option<IpAddr>,
    pub latency_ms: u32,
    /// The username a write created (to look it up in the database afterwards).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Why it failed (transport error or status), if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A change of the DNS answer the generator saw.
#[derive(Debug, Clone, Serialize)]
pub struct DnsChange {
    pub at_ms: u64,
    pub addresses: Vec<IpAddr>,
    pub ttl: Option<u32>,
}

/// Everything the generator saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TrafficLog {
    pub requests: Vec<Request>,
    pub dns: Vec<DnsChange>,
}

impl TrafficLog {
    /// Usernames of the acknowledged writes.
    pub fn acked_users(&self) -> Vec<String> {
        self.requests
            .iter()
            .filter(|r| r.kind == Kind::Write && r.ok)
            .filter_map(|r| r.user.clone())
            .collect()
    }

    pub fn count(&self, kind: Kind) -> (usize, usize) {
        let all = self.requests.iter().filter(|r| r.kind == kind);
        let ok = all.clone().filter(|r| r.ok).count();
        (all.count(), ok)
    }

    /// The longest time without an acknowledged write, between the first and the last one
    /// (milliseconds), and when it started.
    pub fn longest_write_gap_ms(&self) -> Option<(u64, u64)> {
        self.longest_kept_write_gap_ms(&[])
    }

    /// The same, counting only the writes that were kept: an acknowledged write whose username
    /// is in `lost` (acknowledged, then not found in the database) does not end a gap, because
    /// from the application's point of view it never happened.
    pub fn longest_kept_write_gap_ms(&self, lost: &[String]) -> Option<(u64, u64)> {
        let lost: std::collections::HashSet<&str> = lost.iter().map(String::as_str).collect();
        let mut acked: Vec<u64> = self
            .requests
            .iter()
            .filter(|r| r.kind == Kind::Write && r.ok)
            .filter(|r| r.user.as_deref().is_none_or(|u| !lost.contains(u)))
            .map(|r| r.at_ms + u64::from(r.latency_ms))
            .collect();
        acked.sort_unstable();
        acked
            .windows(2)
            .map(|w| (w[1] - w[0], w[0]))
            .max_by_key(|(gap, _)| *gap)
    }
}

struct Shared {
    started: Instant,
    log: Mutex<TrafficLog>,
    answer: tokio::sync::Mutex<Option<(Instant, Vec<IpAddr>)>>,
}

/// The running generator; [`Traffic::stop`] ends it and returns the log.
pub struct Traffic {
    shared: Arc<Shared>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    pub fn start(cfg: TrafficConfig) -> Traffic {
        let shared = Arc::new(Shared {
            started: Instant::now(),
            log: Mutex::new(TrafficLog::default()),
            answer: tokio::sync::Mutex::new(None),
        });
        let (stop, _) = tokio::sync::watch::channel(false);
        let client = reqwest::Client::builder()
            // A new connection per request: a kept-alive connection would outlive the DNS
            // switch and hide it.
            .pool_max_idle_per_host(0)
            .timeout(cfg.timeout)
            .build()
            .expect("an HTTP client");
        let cfg = Arc::new(cfg);
        let mut tasks = Vec::new();
        for (kind, n) in [(Kind::Write, cfg.writers), (Kind::Read, cfg.readers)] {
            for worker in 0..n {
                let (shared, cfg, client) = (shared.clone(), cfg.clone(), client.clone());
                let mut stop = stop.subscribe();
                tasks.push(tokio::spawn(async move {
                    let mut seq = 0u64;
                    while !*stop.borrow() {
                        seq += 1;
                        one_request(&shared, &cfg, &client, kind, worker, seq).await;
                        tokio::select! {
                            _ = stop.changed() => {}
                            _ = tokio::time::sleep(cfg.pause) => {}
                        }
                    }
                }));
            }
        }
        Traffic {
            shared,
            stop,
            tasks,
        }
    }

    /// Milliseconds since the traffic started (to place other events on the same clock).
    pub fn now_ms(&self) -> u64 {
        self.shared.started.elapsed().as_millis() as u64
    }

    /// The instant the traffic started.
    pub fn started(&self) -> Instant {
        self.shared.started
    }

    /// Writes acknowledged so far.
    pub fn acked(&self) -> usize {
        self.shared.log.lock().unwrap().count(Kind::Write).1
    }

    /// Waits until `n` writes were acknowledged, at most `within`; whether they were.
    pub async fn wait_for_acked(&self, n: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.acked() < n {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Stops the workers (each finishes its request in flight) and returns the log.
    pub async fn stop(self) -> TrafficLog {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let log = self.shared.log.lock().unwrap().clone();
        log
    }
}

async fn resolve(shared: &Shared, cfg: &TrafficConfig) -> Result<Vec<IpAddr>, String> {
    let mut answer = shared.answer.lock().await;
    if let Some((at, addrs)) = answer.as_ref() {
        if at.elapsed() < cfg.resolve_every {
            return Ok(addrs.clone());
        }
    }
    let (addrs, ttl) = query_a(cfg.name_server, &cfg.fqdn, cfg.timeout).await?;
    let changed = answer.as_ref().is_none_or(|(_, old)| *old != addrs);
    if changed {
        shared.log.lock().unwrap().dns.push(DnsChange {
            at_ms: shared.started.elapsed().as_millis() as u64,
            addresses: addrs.clone(),
            ttl,
        });
    }
    *answer = Some((Instant::now(), addrs.clone()));
    Ok(addrs)
}

async fn one_request(
    shared: &Shared,
    cfg: &TrafficConfig,
    client: &reqwest::Client,
    kind: Kind,
    worker: usize,
    seq: u64,
) {
    let sent = Instant::now();
    let at_ms = shared.started.elapsed().as_millis() as u64;
    let username = format!("{}-{kind:?}{worker}-{seq}", cfg.prefix).to_lowercase();
    let result = async {
        let addrs = resolve(shared, cfg).await.map_err(|e| (None, e))?;
        let ip = *addrs
            .first()
            .ok_or((None, format!("{} has no address", cfg.fqdn)))?;
        let base = format!("http://{}/api/v1/users", SocketAddr::new(ip, cfg.port));
        let req = match kind {
            Kind::Write => client.post(&base).json(&serde_json::json!({
                "username": username,
                "email": format!("{username}@drill.example.com"),
            })),
            Kind::Read => client.get(format!("{base}?limit=5")),
        };
        let resp = req
            .header(reqwest::header::HOST, format!("{}:{}", cfg.fqdn, cfg.port))
            .send()
            .await
            .map_err(|e| (Some(ip), transport_error(&e)))?;
        Ok::<_, (Option<IpAddr>, String)>((ip, resp.status().as_u16()))
    }
    .await;
    let latency_ms = sent.elapsed().as_millis() as u32;
    let want = if kind == Kind::Write { 201 } else { 200 };
    let (status, to, error) = match result {
        Ok((ip, status)) => (
            Some(status),
            Some(ip),
            (status != want).then(|| format!("HTTP {status}")),
        ),
        Err((to, e)) => (None, to, Some(e)),
    };
    let record = Request {
        at_ms,
        kind,
        ok: status == Some(want),
        status,
        to,
        latency_ms,
        user: (kind == Kind::Write).then_some(username),
        error,
    };
    let mut log = shared.log.lock().unwrap();
    log.requests.push(record);
}

fn transport_error(e: &reqwest::Error) -> String {
    if e.is_connect() {
        "connection refused".into()
    } else if e.is_timeout() {
        "timeout".into()
    } else {
        "connection error".into()
    }
}

/// Asks `server` for `fqdn`'s A records: the addresses and the smallest TTL.
pub async fn query_a(
    server: SocketAddr,
    fqdn: &str,
    timeout: Duration,
) -> Result<(Vec<IpAddr>, Option<u32>), String> {
    let name = Name::from_ascii(format!("{}.", fqdn.trim_end_matches('.')))
        .map_err(|e| format!("bad name {fqdn}: {e}"))?;
    let mut msg = Message::query();
    msg.add_query(Query::query(name, RecordType::A));
    let id = msg.metadata.id;
    let packet = msg.to_vec().map_err(|e| format!("encoding: {e}"))?;
    let sock = UdpSocket::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0))
        .await
        .map_err(|e| format!("UDP socket: {e}"))?;
    sock.connect(server)
        .await
        .map_err(|e| format!("UDP connect {server}: {e}"))?;
    sock.send(&packet)
        .await
        .map_err(|e| format!("UDP send: {e}"))?;
    let mut buf = vec![0u8; 4096];
    let until = Instant::now() + timeout;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let n = match tokio::time::timeout(left, sock.recv(&mut buf)).await {
            Err(_) => return Err(format!("no DNS answer from {server}")),
            Ok(Err(e)) => return Err(format!("UDP receive: {e}")),
            Ok(Ok(n)) => n,
        };
        let Ok(reply) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        if reply.metadata.id != id || reply.metadata.message_type != MessageType::Response {
            continue;
        }
        let mut addrs = Vec::new();
        let mut ttl: Option<u32> = None;
        for rec in &reply.answers {
            if let RData::A(a) = &rec.data {
                addrs.push(IpAddr::V4(a.0));
                ttl = Some(ttl.map_or(rec.ttl, |t| t.min(rec.ttl)));
            }
        }
        addrs.sort();
        return Ok((addrs, ttl));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(at_ms: u64, ok: bool) -> Request {
        Request {
            at_ms,
            kind: Kind::Write,
            ok,
            status: Some(if ok { 201 } else { 503 }),
            to: None,
            latency_ms: 0,
            user: Some(format!("u{at_ms}")),
            error: None,
        }
    }

    #[test]
    fn the_longest_gap_is_between_acknowledged_writes() {
        let log = TrafficLog {
            requests: vec![
                req(0, true),
                req(100, true),
                req(150, false),
                req(900, false),
                req(1600, true),
                req(1700, true),
            ],
            ..Default::default()
        };
        assert_eq!(log.longest_write_gap_ms(), Some((1500, 100)));
        assert_eq!(log.count(Kind::Write), (6, 4));
        assert_eq!(TrafficLog::default().longest_write_gap_ms(), None);
    }

    #[test]
    fn a_lost_write_does_not_end_a_gap() {
        let log = TrafficLog {
            requests: vec![
                req(0, true),
                req(100, true),
                // Acknowledged, then not found in the database: as if it never happened.
                req(400, true),
                req(800, true),
                req(1000, true),
                req(1100, true),
            ],
            ..Default::default()
        };
        assert_eq!(log.longest_write_gap_ms(), Some((400, 400)));
        let lost = ["u400".to_string(), "u800".to_string()];
        assert_eq!(log.longest_kept_write_gap_ms(&lost), Some((900, 100)));
    }
}
