//! Distance and faults between the lab's regions, in user space (this kernel has no netem).
//!
//! Every path that crosses regions goes through a [`Relay`]: a TCP listener that forwards each
//! connection to its target and delays and paces the bytes on the way, both directions. A relay
//! belongs to one [`Link`] between two [`Party`]s (a region and the operator, the other region,
//! the clients, Azure), and all relays share one [`Wan`]: its settings (round-trip time, bandwidth
//! cap) and its cuts, both changeable while connections are open.
//!
//! - **Latency**: each chunk is delivered half the RTT after it was read, each way.
//! - **Bandwidth**: each direction of a link is one pipe of `mbit` Mbit/s shared by all of its
//!   connections: a chunk occupies the pipe for `bytes * 8 / rate` and is delivered after that
//!   plus the one-way delay, so large transfers run at the cap and small ones see the RTT.
//! - **Blackhole** (a partition as a network fault): bytes already in flight and new ones are
//!   held, new connections are accepted and then hear nothing; clients hang until their own
//!   timeouts. Healing delivers what was held, as TCP's retransmissions would.
//! - **Refuse**: the listener closes (new connections are refused) and open connections are
//!   reset. Healing listens again on the same address.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Who is at one end of a path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Party {
    /// A region (`primary`, `dr`): its API, databases, ingress.
    Region(String),
    /// drdctl and kubectl, wherever the operator is.
    Operator,
    /// The application's users.
    Clients,
    /// The Azure DNS API.
    Azure,
}

impl Party {
    /// Parses `primary`, `dr` (regions), `operator`, `clients`, `azure`.
    pub fn parse(s: &str) -> Party {
        match s {
            "operator" => Party::Operator,
            "clients" => Party::Clients,
            "azure" => Party::Azure,
            region => Party::Region(region.to_string()),
        }
    }
}

impl std::fmt::Display for Party {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Party::Region(r) => f.write_str(r),
            Party::Operator => f.write_str("operator"),
            Party::Clients => f.write_str("clients"),
            Party::Azure => f.write_str("azure"),
        }
    }
}

/// The two ends of a path (unordered).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Link(pub Party, pub Party);

impl Link {
    fn touches(&self, a: &Party, b: &Party) -> bool {
        (&self.0 == a && &self.1 == b) || (&self.0 == b && &self.1 == a)
    }
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} <-> {}", self.0, self.1)
    }
}

/// How a cut link behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CutMode {
    /// Nothing passes and nothing answers: connections hang.
    Blackhole,
    /// Connections are refused, open ones reset.
    Refuse,
}

/// Latency and bandwidth of every link.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct WanSettings {
    /// Round-trip time added (half each way), in milliseconds.
    pub rtt_ms: f64,
    /// Bandwidth cap per link and direction in Mbit/s; 0 means none.
    pub mbit: f64,
}

impl WanSettings {
    fn one_way(&self) -> Duration {
        Duration::from_secs_f64(self.rtt_ms.max(0.0) / 2000.0)
    }

    fn transmit(&self, bytes: usize) -> Duration {
        if self.mbit <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(bytes as f64 * 8.0 / (self.mbit * 1e6))
    }
}

/// The state every relay watches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WanState {
    pub settings: WanSettings,
    /// The links cut now, and how.
    pub cuts: Vec<(Link, CutMode)>,
}

impl WanState {
    fn cut_of(&self, link: &Link) -> Option<CutMode> {
        self.cuts.iter().find(|(l, _)| l == link).map(|(_, m)| *m)
    }
}

/// The shared WAN: settings and cuts, and the links its relays carry.
#[derive(Clone)]
pub struct Wan {
    state: watch::Sender<WanState>,
    links: Arc<Mutex<BTreeSet<Link>>>,
}

impl Default for Wan {
    fn default() -> Self {
        Wan::new(WanSettings::default())
    }
}

impl Wan {
    pub fn new(settings: WanSettings) -> Wan {
        let (state, _) = watch::channel(WanState {
            settings,
            cuts: Vec::new(),
        });
        Wan {
            state,
            links: Arc::default(),
        }
    }

    /// The current settings and cuts.
    pub fn state(&self) -> WanState {
        self.state.borrow().clone()
    }

    /// Changes latency and bandwidth; open connections follow at once.
    pub fn set(&self, settings: WanSettings) {
        self.state.send_modify(|s| s.settings = settings);
    }

    /// The links the relays carry.
    pub fn links(&self) -> Vec<Link> {
        self.links
            .lock()
            .expect("links lock")
            .iter()
            .cloned()
            .collect()
    }

    /// Cuts every link between `region` and any of `parties` (`Party::Region(other)` for the
    /// other region); returns the links cut.
    pub fn partition(&self, region: &str, parties: &[Party], mode: CutMode) -> Vec<Link> {
        let me = Party::Region(region.to_string());
        let cut: Vec<Link> = self
            .links()
            .into_iter()
            .filter(|l| parties.iter().any(|p| l.touches(&me, p)))
            .collect();
        self.state.send_modify(|s| {
            s.cuts.retain(|(l, _)| !cut.contains(l));
            s.cuts.extend(cut.iter().map(|l| (l.clone(), mode)));
        });
        tracing::info!(region, ?parties, ?mode, "WAN partition");
        cut
    }

    /// Heals the links of `region` (every link with None); returns the links healed.
    pub fn heal(&self, region: Option<&str>) -> Vec<Link> {
        let mut healed = Vec::new();
        self.state.send_modify(|s| {
            s.cuts.retain(|(l, _)| {
                let hit = region.is_none_or(|r| {
                    let me = Party::Region(r.to_string());
                    l.0 == me || l.1 == me
                });
                if hit {
                    healed.push(l.clone());
                }
                !hit
            });
        });
        tracing::info!(?region, "WAN healed");
        healed
    }
}

/// One relay: `listen` forwards to `target` over `link`.
pub struct Relay {
    pub addr: SocketAddr,
    pub target: SocketAddr,
    pub link: Link,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A direction's pipe: when it is next free (the bandwidth cap).
#[derive(Clone)]
struct Pipe(Arc<Mutex<Instant>>);

impl Pipe {
    fn new() -> Pipe {
        Pipe(Arc::new(Mutex::new(Instant::now())))
    }

    /// Reserves the pipe for `busy` from now or when it frees; returns when the last byte left.
    fn reserve(&self, busy: Duration) -> Instant {
        let mut next = self.0.lock().expect("pipe lock");
        let start = (*next).max(Instant::now());
        *next = start + busy;
        *next
    }
}

impl Relay {
    /// Listens on `listen` (port 0: a free one) and forwards to `target` over `link` of `wan`.
    pub async fn start(
        wan: &Wan,
        link: Link,
        listen: SocketAddr,
        target: SocketAddr,
    ) -> std::io::Result<Relay> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        wan.links.lock().expect("links lock").insert(link.clone());
        let state = wan.state.subscribe();
        let pipes = (Pipe::new(), Pipe::new());
        let l = link.clone();
        let task = tokio::spawn(async move {
            serve(listener, addr, target, l, state, pipes).await;
        });
        Ok(Relay {
            addr,
            target,
            link,
            task,
        })
    }
}

async fn serve(
    mut listener: TcpListener,
    addr: SocketAddr,
    target: SocketAddr,
    link: Link,
    mut state: watch::Receiver<WanState>,
    pipes: (Pipe, Pipe),
) {
    loop {
        let refused = state.borrow().cut_of(&link) == Some(CutMode::Refuse);
        if refused {
            // Closed: connections are refused until the link heals.
            drop(listener);
            if state
                .wait_for(|s| s.cut_of(&link) != Some(CutMode::Refuse))
                .await
                .is_err()
            {
                return;
            }
            listener = loop {
                match TcpListener::bind(addr).await {
                    Ok(l) => break l,
                    Err(e) => {
                        tracing::warn!(%addr, error = %e, "relay cannot listen again; retrying");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            };
            continue;
        }
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                let _ = client.set_nodelay(true);
                let state = state.clone();
                let link = link.clone();
                let pipes = pipes.clone();
                tokio::spawn(async move {
                    connection(client, target, link, state, pipes).await;
                });
            }
            changed = state.changed() => if changed.is_err() { return },
        }
    }
}

/// Waits until `link` is not blackholed; false if it is refused (or the WAN is gone).
async fn passable(state: &mut watch::Receiver<WanState>, link: &Link) -> bool {
    match state
        .wait_for(|s| s.cut_of(link) != Some(CutMode::Blackhole))
        .await
    {
        Ok(s) => s.cut_of(link).is_none(),
        Err(_) => false,
    }
}

async fn connection(
    client: TcpStream,
    target: SocketAddr,
    link: Link,
    mut state: watch::Receiver<WanState>,
    pipes: (Pipe, Pipe),
) {
    // A blackholed link: the connection was accepted (the kernel did) and then hears nothing.
    if !passable(&mut state, &link).await {
        return;
    }
    // The connection to the far side crosses the link too: one way out before it starts.
    let one_way = state.borrow().settings.one_way();
    if !one_way.is_zero() {
        tokio::time::sleep(one_way).await;
    }
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = direction(cr, sw, link.clone(), state.clone(), pipes.0);
    let down = direction(sr, cw, link.clone(), state.clone(), pipes.1);
    let reset = async {
        let _ = state
            .wait_for(|s| s.cut_of(&link) == Some(CutMode::Refuse))
            .await;
    };
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        _ = reset => {} // dropping both halves resets the connection
    }
}

/// One direction: read chunks, deliver each after its pipe time and the one-way delay, hold
/// them while the link is blackholed. EOF is passed on after the data before it.
async fn direction(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    link: Link,
    mut state: watch::Receiver<WanState>,
    pipe: Pipe,
) {
    // In flight: at most 64 chunks of 64 KiB (4 MiB, above 40 ms x 200 Mbit/s).
    let (tx, mut rx) = mpsc::channel::<(Instant, Option<Vec<u8>>)>(64);
    let settings = state.clone();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = from.read(&mut buf).await.unwrap_or(0);
            let s = settings.borrow().settings;
            let due = if n == 0 {
                Instant::now() + s.one_way()
            } else {
                pipe.reserve(s.transmit(n)) + s.one_way()
            };
            let chunk = (n > 0).then(|| buf[..n].to_vec());
            if tx.send((due, chunk)).await.is_err() || n == 0 {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            // Only a deadline still ahead is waited for: tokio rounds a deadline up to its
            // next millisecond tick, so "now" would cost up to a millisecond each way (about
            // 2.5 ms a round trip through the relays with no distance set).
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            }
            if !passable(&mut state, &link).await {
                return;
            }
            match chunk {
                Some(bytes) => {
                    if to.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                None => {
                    let _ = to.shutdown().await;
                    return;
                }
            }
        }
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transmit_time_follows_the_cap() {
        let s = WanSettings {
            rtt_ms: 40.0,
            mbit: 200.0,
        };
        assert_eq!(s.one_way(), Duration::from_millis(20));
        // 25 MB at 200 Mbit/s: 1 s.
        assert_eq!(s.transmit(25_000_000), Duration::from_secs(1));
        assert_eq!(WanSettings::default().transmit(1 << 30), Duration::ZERO);
    }

    #[test]
    fn partitions_cut_the_links_of_the_region_and_the_parties_named() {
        let wan = Wan::default();
        let p = || Party::Region("primary".into());
        let d = || Party::Region("dr".into());
        for l in [
            Link(p(), d()),
            Link(Party::Operator, p()),
            Link(Party::Operator, d()),
            Link(Party::Clients, p()),
        ] {
            wan.links.lock().unwrap().insert(l);
        }
        let cut = wan.partition("primary", &[Party::Operator, d()], CutMode::Blackhole);
        assert_eq!(cut, vec![Link(p(), d()), Link(Party::Operator, p())]);
        assert_eq!(
            wan.state().cut_of(&Link(p(), d())),
            Some(CutMode::Blackhole)
        );
        assert_eq!(wan.state().cut_of(&Link(Party::Clients, p())), None);
        assert_eq!(wan.heal(Some("dr")), vec![Link(p(), d())]);
        assert_eq!(wan.heal(None), vec![Link(Party::Operator, p())]);
        assert!(wan.state().cuts.is_empty());
    }
}
