//! What the engine talks to: object-safe traits, each with one real implementation, so the
//! engine runs unchanged against the in-memory world of the simulation tests
//! (`cli/tests/sim`). The clusters and databases are the adapters' own traits
//! ([`drd_kube::Cluster`], [`drd_db::Database`]); DNS, the lock, the journal's storage, the
//! clock and the crash hooks are the engine's narrow views.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::journal::Run;
use super::plan::Step;
use crate::cli::Region;

/// One region's handles.
#[derive(Clone)]
pub struct RegionPorts {
    pub region: Region,
    pub cluster: Arc<dyn drd_kube::Cluster>,
    pub db: Arc<dyn drd_db::Database>,
}

/// The app's shape, from the config: which deployments and ConfigMap, how many replicas.
#[derive(Debug, Clone)]
pub struct AppShape {
    pub configmap: String,
    pub deployments: Vec<String>,
    pub active_replicas: i32,
    pub standby_replicas: i32,
}

/// Everything a run touches.
#[derive(Clone)]
pub struct Ports {
    pub primary: RegionPorts,
    pub dr: RegionPorts,
    pub dns: Option<Arc<dyn Dns>>,
    /// `None`: no witness configured.
    pub term: Option<Arc<dyn Term>>,
    pub lock: Arc<dyn Lock>,
    pub journal: Arc<dyn JournalStore>,
    pub clock: Arc<dyn Clock>,
    pub hooks: Arc<dyn Hooks>,
    pub app: AppShape,
}

impl Ports {
    pub fn region(&self, r: Region) -> &RegionPorts {
        match r {
            Region::Primary => &self.primary,
            Region::Dr => &self.dr,
        }
    }
}

/// The application's DNS record.
#[async_trait]
pub trait Dns: Send + Sync {
    /// The region the record points at (`None`: no configured region's value) and its TTL.
    async fn active(&self) -> anyhow::Result<(Option<Region>, u32)>;
    /// Points the record at `to` (ETag-guarded) and waits for the name servers; returns a
    /// one-line summary and for how long clients may still use the old value (its TTL).
    async fn switch(&self, to: Region) -> anyhow::Result<(String, u32)>;
}

/// The witness term (docs/witness.md).
#[async_trait]
pub trait Term: Send + Sync {
    /// The region it names and its number (`None`: never written).
    async fn read(&self) -> anyhow::Result<Option<(Region, u64)>>;
    /// Compare-and-swap to `(to, n)` from `n - 1`. A retried write whose first attempt landed
    /// (a lost reply) counts as done; any other term found is an error naming it.
    async fn move_to(&self, to: Region, n: u64, by: &str) -> anyhow::Result<()>;
}

/// How the lock was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    Free,
    /// Already ours (a renewal).
    Renewed,
    /// The previous holder's lease lapsed, or it is a dead process of this machine, or the run
    /// being resumed.
    TookOver {
        previous: String,
    },
    /// Someone else holds it.
    Held {
        holder: String,
        expires_in_secs: i64,
    },
}

/// The lock between runs, wherever they run from (a Lease in the DR region).
#[async_trait]
pub trait Lock: Send + Sync {
    /// Takes or renews the lock for `me`; a holder for which `stale` is true is taken over.
    async fn acquire(
        &self,
        me: &str,
        stale: &(dyn for<'x> Fn(&'x str) -> bool + Send + Sync),
    ) -> anyhow::Result<Taken>;
    /// Releases it if `me` holds it.
    async fn release(&self, me: &str) -> anyhow::Result<()>;
    /// Who holds it, and for how many more seconds.
    async fn holder(&self) -> anyhow::Result<Option<(String, i64)>>;
}

/// Where the journal of the current run lives.
pub trait JournalStore: Send + Sync {
    fn load(&self) -> anyhow::Result<Option<Run>>;
    fn save(&self, run: &Run) -> anyhow::Result<()>;
    /// Where it is, for messages.
    fn describe(&self) -> String;
}

/// Time.
#[async_trait]
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
    async fn sleep(&self, d: Duration);
}

/// Where a step stands, for [`Hooks::at`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boundary {
    Begin,
    End,
}

/// Called at every step boundary, after the journal recorded it: the crash tests stop the
/// process there (`DRDCTL_KILL_AT`), the simulation crashes the run there.
pub trait Hooks: Send + Sync {
    fn at(&self, step: Step, boundary: Boundary);
}

/// The real clock.
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await
    }
}

/// The real hooks: with `DRDCTL_KILL_AT=<step>:begin` (or `:end`) the process sends itself
/// SIGKILL right after the journal recorded that point, as a crash or `kill -9` would stop it
/// there (docs/testing.md). Unset, it costs one environment lookup.
pub struct KillPoints;

impl Hooks for KillPoints {
    fn at(&self, step: Step, boundary: Boundary) {
        let Some(want) = std::env::var_os("DRDCTL_KILL_AT") else {
            return;
        };
        let at = match boundary {
            Boundary::Begin => "begin",
            Boundary::End => "end",
        };
        if want.to_str() == Some(&format!("{}:{at}", step.name())) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &std::process::id().to_string()])
                .status();
            std::process::abort();
        }
    }
}

/// The real DNS: drd-dns's operations over Azure DNS.
pub struct AzureDnsPort(pub drd_dns::DnsOps);

#[async_trait]
impl Dns for AzureDnsPort {
    async fn active(&self) -> anyhow::Result<(Option<Region>, u32)> {
        let show = self.0.show().await?;
        let region = show.active_region.as_deref().and_then(Region::parse);
        Ok((region, show.ttl))
    }
    async fn switch(&self, to: Region) -> anyhow::Result<(String, u32)> {
        let report = self
            .0
            .switch(
                to.name(),
                &drd_dns::SwitchOptions {
                    plan: false,
                    ttl: None,
                    confirm: true,
                },
            )
            .await?;
        Ok((report.summary(), report.old_value_cached_for_secs))
    }
}

/// The real term: drd-dns's blob witness.
pub struct BlobTerm(pub Arc<dyn drd_dns::Witness>);

impl BlobTerm {
    /// The term and its ETag, for a compare-and-swap: a read that does not answer in time is
    /// tried twice more.
    async fn read_versioned(&self) -> anyhow::Result<Option<drd_dns::Versioned>> {
        let mut last = None;
        for _ in 0..3 {
            match self.0.read().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_unreachable() => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last
            .map(Into::into)
            .unwrap_or_else(|| anyhow::anyhow!("unreachable")))
    }
}

#[async_trait]
impl Term for BlobTerm {
    async fn read(&self) -> anyhow::Result<Option<(Region, u64)>> {
        // One attempt: the engine's observation tries every read three times already.
        let Some(v) = self.0.read().await? else {
            return Ok(None);
        };
        let region = Region::parse(&v.term.region).ok_or_else(|| {
            anyhow::anyhow!(
                "the witness term names {:?}, not primary or dr ({})",
                v.term.region,
                self.0.url()
            )
        })?;
        Ok(Some((region, v.term.n)))
    }

    async fn move_to(&self, to: Region, n: u64, by: &str) -> anyhow::Result<()> {
        let term = drd_dns::Term {
            region: to.name().to_string(),
            n,
            at: Utc::now().to_rfc3339(),
            by: by.to_string(),
        };
        for _ in 0..3 {
            let current = self.read_versioned().await?;
            let cond = match &current {
                Some(v) if v.term.region == term.region && v.term.n == n => return Ok(()),
                Some(v) if v.term.n + 1 != n => anyhow::bail!(
                    "the witness term is {} (n={}), not n={} as this run read it: another run moved it; run `drdctl status` and decide again",
                    v.term.region,
                    v.term.n,
                    n - 1
                ),
                Some(v) => drd_dns::Condition::IfMatch(v.etag.clone()),
                None => drd_dns::Condition::IfAbsent,
            };
            match self.0.write(&term, cond).await {
                Ok(drd_dns::WriteOutcome::Written { .. }) => return Ok(()),
                // Someone wrote between the read and the write, or this write landed and
                // its reply was lost: the next read tells which.
                Ok(drd_dns::WriteOutcome::Conflict) => continue,
                Err(e) if e.is_unreachable() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        match self.read_versioned().await? {
            Some(v) if v.term.region == term.region && v.term.n == n => Ok(()),
            other => anyhow::bail!(
                "the witness term could not be moved to {to} (n={n}) in three attempts; it is {}",
                other.map_or("unwritten".to_string(), |v| format!(
                    "{} (n={})",
                    v.term.region, v.term.n
                ))
            ),
        }
    }
}

/// DNS that cannot be used (its client could not be set up, e.g. no Azure login): every call
/// fails with the reason.
pub struct UnavailableDns(pub String);

#[async_trait]
impl Dns for UnavailableDns {
    async fn active(&self) -> anyhow::Result<(Option<Region>, u32)> {
        anyhow::bail!("{}", self.0)
    }
    async fn switch(&self, _: Region) -> anyhow::Result<(String, u32)> {
        anyhow::bail!("{}", self.0)
    }
}

/// The real lock: the Lease `drdctl-switchover` in the DR region's namespace.
pub struct LeaseLock {
    pub cluster: drd_kube::KubeCluster,
}

#[async_trait]
impl Lock for LeaseLock {
    async fn acquire(
        &self,
        me: &str,
        stale: &(dyn for<'x> Fn(&'x str) -> bool + Send + Sync),
    ) -> anyhow::Result<Taken> {
        match self
            .cluster
            .acquire_lease(
                super::lock::LEASE_NAME,
                me,
                super::lock::LEASE_DURATION,
                stale,
            )
            .await
        {
            Ok(drd_kube::LeaseTaken::Free) => Ok(Taken::Free),
            Ok(drd_kube::LeaseTaken::Renewed) => Ok(Taken::Renewed),
            Ok(drd_kube::LeaseTaken::TookOverExpired { previous })
            | Ok(drd_kube::LeaseTaken::TookOver { previous }) => Ok(Taken::TookOver { previous }),
            Err(drd_kube::KubeError::LeaseHeld(h)) => Ok(Taken::Held {
                holder: h.holder,
                expires_in_secs: h.expires_in_secs,
            }),
            Err(e) => Err(e.into()),
        }
    }
    async fn release(&self, me: &str) -> anyhow::Result<()> {
        Ok(self
            .cluster
            .release_lease(super::lock::LEASE_NAME, me)
            .await?)
    }
    async fn holder(&self) -> anyhow::Result<Option<(String, i64)>> {
        Ok(self
            .cluster
            .lease_holder(super::lock::LEASE_NAME)
            .await?
            .map(|h| (h.holder, h.expires_in_secs)))
    }
}
