//! The authoritative DNS double over UDP and TCP: what ARM holds is what it serves, with the
//! TTL, and a frozen server keeps serving the old value.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use lab::azure::{RecordSet, Records, ZoneId};
use lab::{AzureDouble, DnsServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn query(name: &str, qtype: RecordType) -> Message {
    let mut q = Message::query();
    q.metadata.recursion_desired = false;
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    q
}

async fn udp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&query(name, qtype).to_vec().unwrap(), server)
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

async fn tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let mut conn = tokio::net::TcpStream::connect(server).await.unwrap();
    let q = query(name, qtype).to_vec().unwrap();
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    conn.write_all(&framed).await.unwrap();
    let mut len = [0u8; 2];
    conn.read_exact(&mut len).await.unwrap();
    let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
    conn.read_exact(&mut msg).await.unwrap();
    Message::from_vec(&msg).unwrap()
}

fn a_values(m: &Message) -> Vec<(Ipv4Addr, u32)> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some((a.0, r.ttl)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn serves_what_arm_holds_over_udp_and_tcp_and_freezes_on_demand() {
    let azure = AzureDouble::start().await.unwrap();
    let dns = DnsServer::start(azure.store().clone()).await.unwrap();
    let zone = ZoneId::new("sub", "rg", "example.com");
    azure.create_zone(&zone, &["ns1-01.azure-dns.com"]);
    azure.seed(
        &zone,
        RecordSet::a("app", 300, &[Ipv4Addr::new(203, 0, 113, 10)]),
    );

    let m = udp(dns.addr(), "app.example.com.", RecordType::A).await;
    assert!(m.metadata.authoritative);
    assert!(!m.metadata.recursion_available);
    assert_eq!(a_values(&m), vec![(Ipv4Addr::new(203, 0, 113, 10), 300)]);
    let m = tcp(dns.addr(), "APP.Example.COM.", RecordType::A).await;
    assert_eq!(a_values(&m), vec![(Ipv4Addr::new(203, 0, 113, 10), 300)]);

    // A switch through the store (as ARM does it) is served at once.
    azure.store().modify(&zone, "A", "app", |rs| {
        rs.records = Records::A(vec![Ipv4Addr::new(198, 51, 100, 20)]);
        rs.ttl = 60;
    });
    let m = udp(dns.addr(), "app.example.com.", RecordType::A).await;
    assert_eq!(a_values(&m), vec![(Ipv4Addr::new(198, 51, 100, 20), 60)]);

    // Frozen: the old answer stays.
    dns.freeze();
    azure.store().modify(&zone, "A", "app", |rs| {
        rs.records = Records::A(vec![Ipv4Addr::new(192, 0, 2, 1)]);
    });
    let m = udp(dns.addr(), "app.example.com.", RecordType::A).await;
    assert_eq!(a_values(&m), vec![(Ipv4Addr::new(198, 51, 100, 20), 60)]);
    dns.thaw();
    let m = udp(dns.addr(), "app.example.com.", RecordType::A).await;
    assert_eq!(a_values(&m), vec![(Ipv4Addr::new(192, 0, 2, 1), 60)]);

    // No such name, another zone, the apex SOA and NS.
    let m = udp(dns.addr(), "nope.example.com.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    let m = udp(dns.addr(), "app.example.org.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    let m = udp(dns.addr(), "example.com.", RecordType::NS).await;
    assert_eq!(m.answers.len(), 1);
    let m = udp(dns.addr(), "example.com.", RecordType::SOA).await;
    assert_eq!(m.answers[0].record_type(), RecordType::SOA);
    assert!(dns.queries() >= 9);
}
