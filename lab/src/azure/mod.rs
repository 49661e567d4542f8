//! A double of the two Azure endpoints drdctl's DNS adapter talks to, served over plain HTTP on
//! loopback: Azure Resource Manager for DNS zones and record sets (the real REST paths,
//! api-version 2018-05-01, JSON, ETags, `If-Match`, `CloudError` bodies, 429 with
//! `Retry-After` on demand) and the Entra ID token endpoint (client-credentials grant, by
//! secret or by federated assertion), so the real `azure_identity` credentials and drdctl's
//! ARM client run against it unchanged. One port serves both (path prefixes differ).
//!
//! [`AzureDouble`] is the handle tests and `drdctl lab` hold: start it, register a service
//! principal, seed a zone and its record, inject faults, read what ARM holds, read the request
//! log. [`crate::dns_server::DnsServer`] serves the same store over DNS.
//!
//! azure_core 1.x refuses to send a bearer token over plain http and azure_identity 1.x refuses
//! a plain-http authority host, so clients keep `https://` URLs and map them to this address
//! with a loopback transport (drd-dns does that when its `arm_endpoint` is `http://127.0.0.1:…`).

mod arm;
mod blob;
mod ctx;
mod faults;
mod server;
mod store;
mod token;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::nodelay::NoDelay;
use poem::Server;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use arm::API_VERSION;
pub use blob::{Blob, BlobStore, BlobWriteError};
pub use faults::{ArmFaults, Endpoint, Fault, RecordedRequest, RequestLog, WriteFaults};
pub use store::{AzureStore, Patch, Preconditions, RecordSet, Records, WriteError, Zone, ZoneId};
pub use token::TokenIssuer;

/// One running Azure double (ARM + token endpoint on one loopback port).
pub struct AzureDouble {
    addr: SocketAddr,
    ctx: Arc<ctx::Ctx>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<io::Result<()>>,
}

impl std::fmt::Debug for AzureDouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureDouble")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl AzureDouble {
    /// Starts a double on `127.0.0.1:0` (a free port).
    pub async fn start() -> io::Result<Self> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Starts a double on `addr`, sharing `store` (e.g. with a DNS server started first).
    pub async fn start_with_store(addr: SocketAddr, store: Arc<AzureStore>) -> io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let ctx = Arc::new(ctx::Ctx {
            store,
            faults: Arc::new(ArmFaults::default()),
            requests: Arc::new(RequestLog::default()),
            tokens: Arc::new(TokenIssuer::default()),
            blobs: Arc::new(BlobStore::default()),
        });
        let acceptor = NoDelay::from_tokio(listener)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(
            Server::new_with_acceptor(acceptor).run_with_graceful_shutdown(
                server::AzureEndpoint(ctx.clone()),
                async {
                    let _ = stopped.await;
                },
                Some(Duration::ZERO),
            ),
        );
        tracing::info!(%addr, "Azure ARM + token double started");
        Ok(AzureDouble {
            addr,
            ctx,
            stop: Some(stop),
            task,
        })
    }

    /// Starts a double on `addr` with an empty store.
    pub async fn start_on(addr: SocketAddr) -> io::Result<Self> {
        Self::start_with_store(addr, AzureStore::new()).await
    }

    /// `http://127.0.0.1:PORT`: the value for drd-dns's `arm_endpoint` and `authority_host`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address the double listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The zones and record sets (seed, inspect, or change them behind a client's back).
    pub fn store(&self) -> &Arc<AzureStore> {
        &self.ctx.store
    }

    /// Fault injection for ARM requests.
    pub fn faults(&self) -> &ArmFaults {
        &self.ctx.faults
    }

    /// What clients sent (ARM and token requests).
    pub fn requests(&self) -> &RequestLog {
        &self.ctx.requests
    }

    /// The token endpoint: registered applications, issued tokens.
    pub fn tokens(&self) -> &TokenIssuer {
        &self.ctx.tokens
    }

    /// The blob containers and blobs (the witness term).
    pub fn blobs(&self) -> &Arc<BlobStore> {
        &self.ctx.blobs
    }

    /// Registers a service principal (tenant, client id, client secret).
    pub fn register_client_secret(&self, tenant: &str, client_id: &str, secret: &str) {
        self.ctx
            .tokens
            .register_client_secret(tenant, client_id, secret);
    }

    /// Creates an empty zone with these name servers (what ARM reports in `nameServers`).
    pub fn create_zone(&self, zone: &ZoneId, name_servers: &[&str]) {
        self.ctx.store.create_zone(zone.clone(), name_servers);
    }

    /// Creates or replaces a record set, no preconditions; returns it with its new ETag.
    /// Panics if the zone does not exist (a test setup error).
    pub fn seed(&self, zone: &ZoneId, record_set: RecordSet) -> RecordSet {
        self.ctx
            .store
            .upsert(zone, record_set)
            .unwrap_or_else(|e| panic!("seeding {zone:?}: {e:?}"))
    }

    /// The record set ARM holds now.
    pub fn record(&self, zone: &ZoneId, record_type: &str, name: &str) -> Option<RecordSet> {
        self.ctx.store.record_set(zone, record_type, name)
    }

    /// Stops serving (connections are cut).
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for AzureDouble {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}
