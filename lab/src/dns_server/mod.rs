//! An authoritative DNS server on loopback (UDP and TCP on one port) that serves the zones the
//! Azure double holds, so a switch made through ARM shows up in DNS answers exactly as it does
//! on Azure's name servers: `dig @127.0.0.1 -p PORT app.example.com` before and after, and
//! drdctl's authoritative check queries it like `ns1-01.azure-dns.com`.
//!
//! Answers carry the record set's TTL and the AA flag; a name with no data gets NODATA or
//! NXDOMAIN with the zone's SOA; names outside every zone get REFUSED (no recursion). The
//! server can be frozen: it keeps serving what it served at that moment, like a name server
//! that has not picked up a change yet (for the "authoritative check times out" test).

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, NS, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

use crate::azure::{AzureStore, Records, Zone};

/// Negative-caching TTL (the SOA minimum Azure DNS uses).
const NEGATIVE_TTL: u32 = 300;
/// The largest UDP answer sent to a client that did not advertise EDNS.
const CLASSIC_UDP_LIMIT: usize = 512;

struct Shared {
    store: Arc<AzureStore>,
    frozen: Mutex<Option<Vec<Zone>>>,
    queries: AtomicUsize,
}

impl Shared {
    fn zone_for(&self, name: &str) -> Option<Zone> {
        let frozen = self.frozen.lock().unwrap_or_else(|p| p.into_inner());
        match frozen.as_ref() {
            Some(zones) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                zones
                    .iter()
                    .filter(|z| {
                        let zn = z.id.zone.to_ascii_lowercase();
                        name == zn || name.ends_with(&format!(".{zn}"))
                    })
                    .max_by_key(|z| z.id.zone.len())
                    .cloned()
            }
            None => self.store.zone_for_name(name),
        }
    }
}

/// One running authoritative DNS server.
pub struct DnsServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("addr", &self.addr)
            .field("frozen", &self.is_frozen())
            .finish_non_exhaustive()
    }
}

impl DnsServer {
    /// Serves `store` on `127.0.0.1` on a free port (UDP and TCP).
    pub async fn start(store: Arc<AzureStore>) -> io::Result<Self> {
        // UDP and TCP must share the port: pick one by binding UDP, then take the same port
        // for TCP; retry if another process holds it for TCP.
        let mut last_err = None;
        for _ in 0..20 {
            let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
            let addr = udp.local_addr()?;
            match TcpListener::bind(addr).await {
                Ok(tcp) => return Ok(Self::serve(store, udp, tcp)),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("no free port for UDP and TCP")))
    }

    /// Serves `store` on exactly this address (UDP and TCP).
    pub async fn start_on(store: Arc<AzureStore>, addr: SocketAddr) -> io::Result<Self> {
        let udp = UdpSocket::bind(addr).await?;
        let addr = udp.local_addr()?;
        let tcp = TcpListener::bind(addr).await?;
        Ok(Self::serve(store, udp, tcp))
    }

    fn serve(store: Arc<AzureStore>, udp: UdpSocket, tcp: TcpListener) -> Self {
        let addr = udp
            .local_addr()
            .unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        let shared = Arc::new(Shared {
            store,
            frozen: Mutex::new(None),
            queries: AtomicUsize::new(0),
        });
        let udp_task = tokio::spawn(serve_udp(udp, shared.clone()));
        let tcp_task = tokio::spawn(serve_tcp(tcp, shared.clone()));
        tracing::info!(%addr, "authoritative DNS double started");
        DnsServer {
            addr,
            shared,
            tasks: vec![udp_task, tcp_task],
        }
    }

    /// The address (UDP and TCP), for `dig @IP -p PORT` and drd-dns's `name_servers`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Keeps serving what is served now, whatever ARM holds later.
    pub fn freeze(&self) {
        let zones = self.shared.store.zones();
        *self.shared.frozen.lock().unwrap_or_else(|p| p.into_inner()) = Some(zones);
    }

    /// Serves what ARM holds again.
    pub fn thaw(&self) {
        *self.shared.frozen.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Whether the server is frozen.
    pub fn is_frozen(&self) -> bool {
        self.shared
            .frozen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// How many queries were answered so far.
    pub fn queries(&self) -> usize {
        self.shared.queries.load(Ordering::Relaxed)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn serve_udp(sock: UdpSocket, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "DNS double: UDP receive failed");
                continue;
            }
        };
        if let Some(reply) = respond(&shared, &buf[..n], true) {
            let _ = sock.send_to(&reply, peer).await;
        }
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                let mut len = [0u8; 2];
                if conn.read_exact(&mut len).await.is_err() {
                    return;
                }
                let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
                if conn.read_exact(&mut msg).await.is_err() {
                    return;
                }
                let Some(reply) = respond(&shared, &msg, false) else {
                    return;
                };
                let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&reply);
                if conn.write_all(&framed).await.is_err() {
                    return;
                }
            }
        });
    }
}

fn respond(shared: &Shared, packet: &[u8], udp: bool) -> Option<Vec<u8>> {
    let request = Message::from_vec(packet).ok()?;
    if request.metadata.message_type != MessageType::Query {
        return None;
    }
    shared.queries.fetch_add(1, Ordering::Relaxed);
    let mut reply = answer(&request, |name| shared.zone_for(name));
    let bytes = reply.to_vec().ok()?;
    let limit = match &request.edns {
        Some(e) => e.max_payload().max(512) as usize,
        None => CLASSIC_UDP_LIMIT,
    };
    if udp && bytes.len() > limit {
        reply.answers.clear();
        reply.authorities.clear();
        reply.additionals.clear();
        reply.metadata.truncation = true;
        return reply.to_vec().ok();
    }
    Some(bytes)
}

fn name(s: &str) -> Option<Name> {
    let fq = if s.ends_with('.') {
        s.to_string()
    } else {
        format!("{s}.")
    };
    Name::from_ascii(fq).ok()
}

fn soa_record(zone: &Zone) -> Option<Record> {
    let apex = name(&zone.id.zone)?;
    let mname = zone
        .name_servers
        .iter()
        .find_map(|n| name(n))
        .or_else(|| name("ns1-lab.azure-dns.invalid"))?;
    let rname = name("azuredns-hostmaster.microsoft.com")?;
    Some(Record::from_rdata(
        apex,
        3600,
        RData::SOA(SOA::new(
            mname,
            rname,
            1,
            3600,
            300,
            2_419_200,
            NEGATIVE_TTL,
        )),
    ))
}

/// Builds the authoritative answer to `request` from the zone `zone_for` finds for a name.
pub fn answer(request: &Message, zone_for: impl Fn(&str) -> Option<Zone>) -> Message {
    let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = false;
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        reply.set_edns(edns);
    }
    if request.metadata.op_code != OpCode::Query {
        reply.metadata.response_code = ResponseCode::NotImp;
        return reply;
    }
    let [query] = request.queries.as_slice() else {
        reply.metadata.response_code = ResponseCode::FormErr;
        return reply;
    };
    reply.add_query(query.clone());
    let qname = query.name().to_ascii().to_ascii_lowercase();
    let qname = qname.trim_end_matches('.');
    let Some(zone) = zone_for(qname) else {
        reply.metadata.response_code = ResponseCode::Refused;
        return reply;
    };
    reply.metadata.authoritative = true;
    let zone_name = zone.id.zone.to_ascii_lowercase();
    let relative = if qname == zone_name {
        "@".to_string()
    } else {
        qname
            .strip_suffix(&format!(".{zone_name}"))
            .unwrap_or(qname)
            .to_string()
    };
    let owner = query.name().clone();
    let qtype = query.query_type();
    let mut answers = Vec::new();
    if relative == "@" && qtype == RecordType::SOA {
        answers.extend(soa_record(&zone));
    } else if relative == "@" && qtype == RecordType::NS {
        for ns in &zone.name_servers {
            if let Some(n) = name(ns) {
                answers.push(Record::from_rdata(owner.clone(), 172_800, RData::NS(NS(n))));
            }
        }
    } else if let Some(cname) = zone.record_set("CNAME", &relative) {
        if let Records::Cname(target) = &cname.records {
            if let Some(t) = name(target) {
                answers.push(Record::from_rdata(
                    owner.clone(),
                    cname.ttl,
                    RData::CNAME(CNAME(t)),
                ));
            }
            // Chase the chain inside the zone, like an authoritative server does.
            if qtype == RecordType::A {
                let t = target.to_ascii_lowercase();
                if let Some(rel) = t.strip_suffix(&format!(".{zone_name}")) {
                    if let Some(rs) = zone.record_set("A", rel) {
                        if let (Records::A(ips), Some(tn)) = (&rs.records, name(target)) {
                            for ip in ips {
                                answers.push(Record::from_rdata(
                                    tn.clone(),
                                    rs.ttl,
                                    RData::A(A(*ip)),
                                ));
                            }
                        }
                    }
                }
            }
        }
    } else if qtype == RecordType::A {
        if let Some(rs) = zone.record_set("A", &relative) {
            if let Records::A(ips) = &rs.records {
                for ip in ips {
                    answers.push(Record::from_rdata(owner.clone(), rs.ttl, RData::A(A(*ip))));
                }
            }
        }
    }
    if answers.is_empty() {
        let name_exists = relative == "@"
            || zone
                .record_sets
                .keys()
                .any(|(_, n)| *n == relative.to_ascii_lowercase());
        if !name_exists {
            reply.metadata.response_code = ResponseCode::NXDomain;
        }
        if let Some(soa) = soa_record(&zone) {
            let mut soa = soa;
            soa.ttl = NEGATIVE_TTL;
            reply.add_authority(soa);
        }
    } else {
        reply.add_answers(answers);
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::{RecordSet, ZoneId};
    use hickory_proto::op::Query;

    fn store() -> Arc<AzureStore> {
        let s = AzureStore::new();
        let z = ZoneId::new("sub", "rg", "example.com");
        s.create_zone(z.clone(), &["ns1.example.net"]);
        s.upsert(
            &z,
            RecordSet::a("app", 300, &[Ipv4Addr::new(203, 0, 113, 10)]),
        )
        .unwrap();
        s.upsert(&z, RecordSet::cname("www", 60, "app.example.com"))
            .unwrap();
        s
    }

    fn ask(store: &AzureStore, qname: &str, qtype: RecordType) -> Message {
        let mut q = Message::query();
        q.add_query(Query::query(name(qname).unwrap(), qtype));
        answer(&q, |n| store.zone_for_name(n))
    }

    #[test]
    fn answers_a_records_with_their_ttl_authoritatively() {
        let s = store();
        let r = ask(&s, "APP.example.com", RecordType::A);
        assert!(r.metadata.authoritative);
        assert_eq!(r.answers.len(), 1);
        assert_eq!(r.answers[0].ttl, 300);
        assert_eq!(
            r.answers[0].data,
            RData::A(A(Ipv4Addr::new(203, 0, 113, 10)))
        );
    }

    #[test]
    fn cname_is_answered_and_chased_inside_the_zone() {
        let s = store();
        let r = ask(&s, "www.example.com", RecordType::A);
        assert_eq!(r.answers.len(), 2);
        assert_eq!(r.answers[0].record_type(), RecordType::CNAME);
        assert_eq!(r.answers[1].record_type(), RecordType::A);
        let r = ask(&s, "www.example.com", RecordType::CNAME);
        assert_eq!(r.answers.len(), 1);
    }

    #[test]
    fn nodata_nxdomain_and_refused() {
        let s = store();
        let r = ask(&s, "app.example.com", RecordType::AAAA);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.answers.is_empty());
        assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
        let r = ask(&s, "nope.example.com", RecordType::A);
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        let r = ask(&s, "example.org", RecordType::A);
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
        assert!(!r.metadata.authoritative);
    }
}
