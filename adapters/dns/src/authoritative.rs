//! Asking the zone's authoritative name servers directly what they serve for the record: one
//! non-recursive query per server (UDP, TCP when the answer is truncated), built and parsed
//! with hickory-proto. A switch is only done when these servers serve the new value; resolver
//! caches then still hold the old one for up to the old TTL, which drdctl reports.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, Query};
use hickory_proto::rr::{Name, RData, RecordType as WireType};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::types::normalise;
use crate::types::RecordType;

/// Parses `host`, `host:port`, `ip`, `ip:port`, `[v6]:port` into host and port (53 default).
pub(crate) fn parse_server(s: &str) -> Option<(String, u16)> {
    let s = s.trim().trim_end_matches('.');
    if s.is_empty() {
        return None;
    }
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Some((addr.ip().to_string(), addr.port()));
    }
    if let Ok(ip) = s.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>() {
        return Some((ip.to_string(), 53));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h.trim_end_matches('.'), p.parse::<u16>().ok()?),
        None => (s, 53),
    };
    crate::types::is_host_name(host).then(|| (host.to_string(), port))
}

/// One name server to ask, as configured and as resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NameServer {
    /// As configured (`ns1-01.azure-dns.com`, `127.0.0.1:5353`).
    pub label: String,
    /// Where queries go.
    pub addr: SocketAddr,
}

/// Resolves the configured name servers (host names through the system resolver, IPv4 first).
pub(crate) async fn resolve(list: &[String]) -> Result<Vec<NameServer>, String> {
    let mut out = Vec::new();
    for entry in list {
        let (host, port) =
            parse_server(entry).ok_or_else(|| format!("{entry:?} is not a name server address"))?;
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot resolve the name server {entry}: {e}"))?
            .collect();
        let addr = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| addrs.first())
            .copied()
            .ok_or_else(|| format!("the name server {entry} has no address"))?;
        out.push(NameServer {
            label: entry.clone(),
            addr,
        });
    }
    Ok(out)
}

/// What one authoritative server answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerAnswer {
    /// The server as configured.
    pub server: String,
    /// The address queried.
    pub address: String,
    /// The values served (sorted IPs, or the CNAME target); empty for NODATA / NXDOMAIN.
    pub values: Vec<String>,
    /// The TTL served with them.
    pub ttl: Option<u32>,
    /// Whether the answer had the AA flag.
    pub authoritative: bool,
    /// The response code (`NoError`, `NXDomain`, ...), when there was an answer.
    pub rcode: Option<String>,
    /// Why there was no usable answer (timeout, refused, ...).
    pub error: Option<String>,
}

impl ServerAnswer {
    /// Whether this server serves exactly `expected` (normalised comparison).
    pub fn serves(&self, record_type: RecordType, expected: &[String]) -> bool {
        self.error.is_none()
            && !self.values.is_empty()
            && normalise(record_type, &self.values) == normalise(record_type, expected)
    }

    /// One line: `ns (addr): value TTL n` or `ns (addr): error`.
    pub fn summary(&self) -> String {
        let what = match (&self.error, self.values.is_empty()) {
            (Some(e), _) => e.clone(),
            (None, true) => format!("no records ({})", self.rcode.as_deref().unwrap_or("?")),
            (None, false) => format!(
                "{}{}",
                self.values.join(", "),
                self.ttl.map(|t| format!(" (TTL {t})")).unwrap_or_default()
            ),
        };
        if self.server == self.address {
            format!("{}: {what}", self.server)
        } else {
            format!("{} ({}): {what}", self.server, self.address)
        }
    }
}

fn wire_type(t: RecordType) -> WireType {
    match t {
        RecordType::A => WireType::A,
        RecordType::CNAME => WireType::CNAME,
    }
}

async fn exchange_udp(
    server: SocketAddr,
    packet: &[u8],
    id: u16,
    until: Instant,
) -> Result<Message, String> {
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(local)
        .await
        .map_err(|e| format!("UDP socket: {e}"))?;
    sock.connect(server)
        .await
        .map_err(|e| format!("UDP connect: {e}"))?;
    sock.send(packet)
        .await
        .map_err(|e| format!("UDP send: {e}"))?;
    let mut buf = vec![0u8; 4096];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let n = match tokio::time::timeout(left, sock.recv(&mut buf)).await {
            Err(_) => return Err("no answer (timeout)".into()),
            Ok(Err(e)) => return Err(format!("UDP receive: {e}")),
            Ok(Ok(n)) => n,
        };
        // Ignore stray or spoofed datagrams: only the answer to our id counts.
        if let Ok(m) = Message::from_vec(&buf[..n]) {
            if m.metadata.id == id && m.metadata.message_type == MessageType::Response {
                return Ok(m);
            }
        }
    }
}

async fn exchange_tcp(
    server: SocketAddr,
    packet: &[u8],
    until: Instant,
) -> Result<Message, String> {
    let left = until.saturating_duration_since(Instant::now());
    let work = async {
        let mut conn = TcpStream::connect(server)
            .await
            .map_err(|e| format!("TCP connect: {e}"))?;
        let mut framed = (packet.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(packet);
        conn.write_all(&framed)
            .await
            .map_err(|e| format!("TCP send: {e}"))?;
        let mut len = [0u8; 2];
        conn.read_exact(&mut len)
            .await
            .map_err(|e| format!("TCP receive: {e}"))?;
        let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
        conn.read_exact(&mut msg)
            .await
            .map_err(|e| format!("TCP receive: {e}"))?;
        Message::from_vec(&msg).map_err(|e| format!("undecodable answer: {e}"))
    };
    tokio::time::timeout(left, work)
        .await
        .unwrap_or_else(|_| Err("no answer over TCP (timeout)".into()))
}

/// Asks `server` (non-recursively) for `fqdn`'s record of `record_type`.
pub(crate) async fn query(
    server: &NameServer,
    fqdn: &str,
    record_type: RecordType,
    timeout: Duration,
) -> ServerAnswer {
    let mut answer = ServerAnswer {
        server: server.label.clone(),
        address: server.addr.to_string(),
        values: Vec::new(),
        ttl: None,
        authoritative: false,
        rcode: None,
        error: None,
    };
    let name = match Name::from_ascii(format!("{}.", fqdn.trim_end_matches('.'))) {
        Ok(n) => n,
        Err(e) => {
            answer.error = Some(format!("bad name {fqdn}: {e}"));
            return answer;
        }
    };
    let mut msg = Message::query();
    msg.metadata.recursion_desired = false;
    msg.add_query(Query::query(name, wire_type(record_type)));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    msg.set_edns(edns);
    let id = msg.metadata.id;
    let packet = match msg.to_vec() {
        Ok(p) => p,
        Err(e) => {
            answer.error = Some(format!("cannot encode the query: {e}"));
            return answer;
        }
    };
    let until = Instant::now() + timeout;
    let mut reply = exchange_udp(server.addr, &packet, id, until).await;
    if matches!(&reply, Ok(m) if m.metadata.truncation) {
        reply = exchange_tcp(server.addr, &packet, until).await;
    }
    let reply = match reply {
        Ok(m) => m,
        Err(e) => {
            answer.error = Some(e);
            return answer;
        }
    };
    answer.authoritative = reply.metadata.authoritative;
    answer.rcode = Some(format!("{:?}", reply.metadata.response_code));
    let mut ttl: Option<u32> = None;
    for rec in &reply.answers {
        let value = match (&rec.data, record_type) {
            (RData::A(a), RecordType::A) => Some(a.0.to_string()),
            (RData::CNAME(c), RecordType::CNAME) => Some(c.0.to_ascii()),
            _ => None,
        };
        if let Some(v) = value {
            answer.values.push(v);
            ttl = Some(ttl.map_or(rec.ttl, |t| t.min(rec.ttl)));
        }
    }
    answer.values = normalise(record_type, &answer.values);
    answer.ttl = ttl;
    let rcode = reply.metadata.response_code;
    if rcode != hickory_proto::op::ResponseCode::NoError
        && rcode != hickory_proto::op::ResponseCode::NXDomain
    {
        answer.error = Some(format!("answered {rcode:?}"));
    } else if !reply.metadata.authoritative {
        answer.error = Some("answered without the authoritative (AA) flag: not an authoritative server for this zone".into());
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_forms() {
        assert_eq!(
            parse_server("ns1-01.azure-dns.com"),
            Some(("ns1-01.azure-dns.com".into(), 53))
        );
        assert_eq!(
            parse_server("ns1-01.azure-dns.com."),
            Some(("ns1-01.azure-dns.com".into(), 53))
        );
        assert_eq!(
            parse_server("127.0.0.1:5353"),
            Some(("127.0.0.1".into(), 5353))
        );
        assert_eq!(parse_server("[::1]:5353"), Some(("::1".into(), 5353)));
        assert_eq!(parse_server("::1"), Some(("::1".into(), 53)));
        assert_eq!(parse_server("ns1:x"), None);
        assert_eq!(parse_server(""), None);
    }

    #[test]
    fn serves_compares_normalised() {
        let a = ServerAnswer {
            server: "ns".into(),
            address: "127.0.0.1:53".into(),
            values: vec!["10.0.0.2".into(), "10.0.0.1".into()],
            ttl: Some(60),
            authoritative: true,
            rcode: Some("NoError".into()),
            error: None,
        };
        assert!(a.serves(RecordType::A, &["10.0.0.1".into(), "10.0.0.2".into()]));
        assert!(!a.serves(RecordType::A, &["10.0.0.1".into()]));
    }
}
