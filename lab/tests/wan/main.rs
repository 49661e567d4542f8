//! The WAN relays on loopback: the added round trip, the bandwidth cap shared by a link's
//! connections, settings changed while connections are open, blackhole (hangs, then delivers
//! after the heal) and refuse (connection refused, open connections reset).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lab::wan::{CutMode, Link, Party, Relay, Wan, WanSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An echo server.
async fn echo() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

fn link() -> Link {
    Link(Party::Region("primary".into()), Party::Region("dr".into()))
}

async fn relay(wan: &Wan) -> Relay {
    Relay::start(wan, link(), "127.0.0.1:0".parse().unwrap(), echo().await)
        .await
        .unwrap()
}

/// One byte there and back.
async fn round_trip(s: &mut TcpStream) -> Duration {
    let t = Instant::now();
    s.write_all(b"x").await.unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
    t.elapsed()
}

#[tokio::test]
async fn latency_and_bandwidth_changeable_while_open() {
    let wan = Wan::new(WanSettings {
        rtt_ms: 200.0,
        mbit: 0.0,
    });
    let r = relay(&wan).await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    // The first exchange also waits for the relay's own connection (one way out).
    let rt = round_trip(&mut s).await;
    assert!(rt >= Duration::from_millis(300), "{rt:?}");
    let rt = round_trip(&mut s).await;
    assert!(rt >= Duration::from_millis(200), "{rt:?}");
    wan.set(WanSettings {
        rtt_ms: 0.0,
        mbit: 0.0,
    });
    let rt = round_trip(&mut s).await;
    assert!(rt < Duration::from_millis(200), "{rt:?}");

    // 4 MB at 100 Mbit/s takes at least 0.32 s each way; echoed, both ways overlap.
    wan.set(WanSettings {
        rtt_ms: 0.0,
        mbit: 100.0,
    });
    let data = vec![7u8; 4_000_000];
    let t = Instant::now();
    let (mut rd, mut wr) = s.into_split();
    let sender = tokio::spawn(async move {
        wr.write_all(&data).await.unwrap();
        wr
    });
    let mut got = vec![0u8; 4_000_000];
    rd.read_exact(&mut got).await.unwrap();
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(320), "{took:?}");
    assert!(got.iter().all(|b| *b == 7));
    drop(sender.await.unwrap());
}

#[tokio::test]
async fn blackhole_hangs_and_heal_delivers() {
    let wan = Wan::default();
    let r = relay(&wan).await;
    let mut open = TcpStream::connect(r.addr).await.unwrap();
    round_trip(&mut open).await;
    assert_eq!(
        wan.partition("dr", &[Party::Region("primary".into())], CutMode::Blackhole),
        vec![link()]
    );
    // Open and new connections hear nothing.
    open.write_all(b"a").await.unwrap();
    let mut b = [0u8; 1];
    let hung = tokio::time::timeout(Duration::from_millis(300), open.read_exact(&mut b)).await;
    assert!(hung.is_err(), "a blackholed link delivered");
    let mut fresh = TcpStream::connect(r.addr).await.unwrap();
    fresh.write_all(b"b").await.unwrap();
    let hung = tokio::time::timeout(Duration::from_millis(300), fresh.read_exact(&mut b)).await;
    assert!(hung.is_err(), "a blackholed link delivered");
    // Healed: what was held arrives, as TCP retransmits it.
    wan.heal(Some("primary"));
    open.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"a");
    fresh.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"b");
}

#[tokio::test]
async fn refuse_closes_the_door_and_resets() {
    let wan = Wan::default();
    let r = relay(&wan).await;
    let mut open = TcpStream::connect(r.addr).await.unwrap();
    round_trip(&mut open).await;
    wan.partition("primary", &[Party::Region("dr".into())], CutMode::Refuse);
    let mut b = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(10), open.read(&mut b))
        .await
        .expect("an open connection ends");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    test_support::eventually("connections refused", Duration::from_secs(10), || async {
        match TcpStream::connect(r.addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(()),
            _ => None,
        }
    })
    .await;
    wan.heal(None);
    let mut s = test_support::eventually("listening again", Duration::from_secs(10), || async {
        TcpStream::connect(r.addr).await.ok()
    })
    .await;
    round_trip(&mut s).await;
}
