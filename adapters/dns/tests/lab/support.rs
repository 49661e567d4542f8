//! One lab per test: an ARM + token double and an authoritative DNS server on loopback ports
//! picked by the OS, a service principal registered with the token double, and the record
//! `app.example.com` seeded with the primary's address, a TTL and metadata. Tests build the
//! real `AzureDns` (real azure_identity client-secret flow) against it.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use drd_dns::{AzureDns, DnsConfig, DnsOps, RecordType};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType as WireType};
use lab::azure::{RecordSet, ZoneId};
use lab::{AzureDouble, DnsServer};

pub const SUB: &str = "0b1f6471-1bf0-4dda-aec3-111122223333";
pub const RG: &str = "rg-dns";
pub const ZONE: &str = "example.com";
pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const CLIENT_ID: &str = "5a0e2b3c-7d4f-4e21-9c1a-abcdefabcdef";
/// The service principal's secret: must never appear in any output.
pub const SECRET: &str = "Lab~Secret.Do-Not-Print_8Qz";
pub const PRIMARY: &str = "203.0.113.10";
pub const DR: &str = "198.51.100.20";
pub const PRIMARY_HOST: &str = "app-primary.westeurope.cloudapp.example.net";
pub const DR_HOST: &str = "app-dr.northeurope.cloudapp.example.net";
pub const TTL: u32 = 300;

pub struct Lab {
    pub azure: AzureDouble,
    pub dns: DnsServer,
    pub zone: ZoneId,
    pub cfg: DnsConfig,
}

pub fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let m: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| m.get(k).cloned()
}

impl Lab {
    /// A lab with an A record `app` (TTL 300, metadata) pointing at the primary.
    pub async fn start() -> Lab {
        Self::start_with(RecordType::A).await
    }

    /// A lab whose record is of `record_type` and points at the primary.
    pub async fn start_with(record_type: RecordType) -> Lab {
        let azure = AzureDouble::start().await.expect("start the Azure double");
        let dns = DnsServer::start(azure.store().clone())
            .await
            .expect("start the DNS double");
        let zone = ZoneId::new(SUB, RG, ZONE);
        azure.register_client_secret(TENANT, CLIENT_ID, SECRET);
        azure.create_zone(&zone, &["ns1-09.azure-dns.com", "ns2-09.azure-dns.net"]);
        let (seed, primary, dr) = match record_type {
            RecordType::A => (
                RecordSet::a("app", TTL, &[PRIMARY.parse::<Ipv4Addr>().unwrap()]),
                PRIMARY,
                DR,
            ),
            RecordType::CNAME => (
                RecordSet::cname("app", TTL, PRIMARY_HOST),
                PRIMARY_HOST,
                DR_HOST,
            ),
        };
        azure.seed(
            &zone,
            seed.with_metadata("owner", "platform-team")
                .with_metadata("ticket", "DR-42"),
        );
        let mut cfg = DnsConfig::new(SUB, RG, ZONE, "app", record_type)
            .target("primary", primary)
            .target("dr", dr);
        cfg.arm_endpoint = Some(azure.url());
        cfg.authority_host = Some(azure.url());
        cfg.name_servers = vec![dns.addr().to_string()];
        cfg.call_deadline_secs = 30;
        cfg.attempt_timeout_secs = 10;
        cfg.authoritative_deadline_secs = 10;
        cfg.authoritative_poll_ms = 20;
        cfg.query_timeout_ms = 1000;
        Lab {
            azure,
            dns,
            zone,
            cfg,
        }
    }

    /// The environment of a service principal with the right secret.
    pub fn env(&self) -> impl Fn(&str) -> Option<String> {
        env_of(&[
            ("AZURE_TENANT_ID", TENANT),
            ("AZURE_CLIENT_ID", CLIENT_ID),
            ("AZURE_CLIENT_SECRET", SECRET),
        ])
    }

    pub fn adapter(&self) -> AzureDns {
        AzureDns::with_env(&self.cfg, &self.env()).expect("build the adapter")
    }

    pub fn ops(&self) -> DnsOps {
        DnsOps::new(Arc::new(self.adapter()))
    }

    /// Operations with a changed config.
    pub fn ops_with(&self, change: impl FnOnce(&mut DnsConfig)) -> DnsOps {
        let mut cfg = self.cfg.clone();
        change(&mut cfg);
        DnsOps::new(Arc::new(
            AzureDns::with_env(&cfg, &self.env()).expect("build the adapter"),
        ))
    }

    /// The record set as the ARM double holds it.
    pub fn record(&self) -> RecordSet {
        self.azure
            .record(&self.zone, self.cfg.record_type.as_str(), "app")
            .expect("the record exists")
    }

    /// The PUT requests ARM received.
    pub fn puts(&self) -> Vec<lab::azure::RecordedRequest> {
        self.azure
            .requests()
            .arm()
            .into_iter()
            .filter(|r| r.method == "PUT")
            .collect()
    }
}

/// What a DNS server answers for `name` (A values, or the CNAME target), with the TTL: an
/// independent resolver (hickory-proto over UDP), like `dig @server name`.
pub async fn dig(
    server: std::net::SocketAddr,
    name: &str,
    qtype: WireType,
) -> (Vec<String>, Option<u32>) {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut q = Message::query();
    q.metadata.recursion_desired = false;
    q.add_query(Query::query(
        Name::from_ascii(format!("{name}.")).unwrap(),
        qtype,
    ));
    sock.send_to(&q.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .expect("the DNS double answers")
        .unwrap();
    let reply = Message::from_vec(&buf[..n]).unwrap();
    let mut values = Vec::new();
    let mut ttl = None;
    for r in &reply.answers {
        match &r.data {
            RData::A(a) if qtype == WireType::A => values.push(a.0.to_string()),
            RData::CNAME(c) if qtype == WireType::CNAME => {
                values.push(c.0.to_ascii().trim_end_matches('.').to_string())
            }
            _ => continue,
        }
        ttl = Some(r.ttl);
    }
    (values, ttl)
}
