//! The whole two-region world on one machine, for `drdctl lab`: per region a Kubernetes API
//! double whose pods are real (PostgreSQL through start.sh, the services as processes), the
//! Services in front of them and the region's ingress; the Azure DNS double and its
//! authoritative name server; and the files a user points tools at (kubeconfig, drdctl.toml,
//! overlays that give each region's role ConfigMap the lab's addresses).
//!
//! Every path that crosses regions goes through a WAN relay ([`crate::wan`]): replication and
//! the split-brain guard's peer checks between the databases, the operator to each region's
//! API (port-forwards included) and to Azure, the clients to each region's ingress. The
//! relays' latency and bandwidth are set at start ([`World::start_with`], or `wan.json` and
//! the environment in [`World::start`]) and, like partitions
//! and the loss of a region, changed through the control API ([`crate::control`]) while the
//! world runs.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

mod region;

pub use region::RegionBuilder;

use crate::azure::{RecordSet, ZoneId};
use crate::control::{ControlServer, Controls, RegionHandle, CONTROL_FILE};
use crate::kube_api::write_kubeconfig;
use crate::pg::{PgPair, PgPairConfig};
use crate::pods::{Endpoints, ProcessRuntime, ProcessRuntimeConfig, ServiceProxy};
use crate::wan::{Link, Party, Relay, Wan, WanSettings};
use crate::{AzureDouble, DnsServer, KubeDouble};

pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const CLIENT_ID: &str = "5a0e2b3c-7d4f-4e21-9c1a-abcdefabcdef";
pub const SUBSCRIPTION: &str = "0b1f6471-1bf0-4dda-aec3-111122223333";

#[derive(Clone, Debug)]
pub struct WorldConfig {
    /// Where the lab's files go (kubeconfig, drdctl.toml, overlays, logs).
    pub dir: PathBuf,
    /// The service binaries.
    pub bin_dir: PathBuf,
    /// The repository (its manifests/).
    pub repo_root: PathBuf,
    /// The PostgreSQL password (postgresql-secret) and the lab's Azure client secret.
    pub password: String,
    /// Ingress port on each region's address (127.0.0.2 primary, 127.0.0.3 dr).
    pub ingress_port: u16,
    /// The drdctl binary: with it each region runs its witness guard (`drdctl guard`) and
    /// drdctl.toml gets a `[witness]`; without it there is no witness.
    pub guard_bin: Option<PathBuf>,
}

/// The file in the lab's directory holding the WAN settings to start with (JSON
/// [`WanSettings`]; written by `drdctl lab up --wan-rtt ... --wan-mbit ...`).
pub const WAN_FILE: &str = "wan.json";

pub struct Region {
    pub name: String,
    pub ip: IpAddr,
    pub kube: Arc<KubeDouble>,
    pub runtime: ProcessRuntime,
    /// The region's ingress as the clients reach it (through the WAN).
    pub ingress: Relay,
    /// The region's API as the operator reaches it (through the WAN).
    pub api: Relay,
    _proxies: Vec<ServiceProxy>,
}

pub struct World {
    pub primary: Region,
    pub dr: Region,
    pub pg: PgPair,
    pub azure: AzureDouble,
    pub dns: DnsServer,
    pub cfg: WorldConfig,
    /// The distance and the cuts between the parties.
    pub wan: Wan,
    /// Azure's API as the operator reaches it.
    pub azure_api: Relay,
    /// Each region's way to the other's database (replication, peer checks).
    pub replication: Vec<Relay>,
    /// The control API (its URL is in `<dir>/control`).
    pub control: Option<ControlServer>,
    /// Each region's witness guard (none without [`WorldConfig::guard_bin`]).
    pub guards: Vec<crate::guards::GuardProcess>,
}

async fn region(
    name: &str,
    ip: IpAddr,
    node: crate::pg::SharedNode,
    cfg: &WorldConfig,
    pod_net: u8,
    wan: &Wan,
) -> std::io::Result<Region> {
    let endpoints = Endpoints::default();
    let bl =
        ServiceProxy::start(SocketAddr::new(ip, 0), "business-logic", endpoints.clone()).await?;
    let di = ServiceProxy::start(SocketAddr::new(ip, 0), "data-ingest", endpoints.clone()).await?;
    let ingress =
        ServiceProxy::start(SocketAddr::new(ip, 0), "frontend-api", endpoints.clone()).await?;
    let runtime = ProcessRuntime::new(
        ProcessRuntimeConfig {
            region: name.into(),
            bin_dir: cfg.bin_dir.clone(),
            pod_net,
            services: HashMap::from([
                ("business-logic".to_string(), bl.addr),
                ("data-ingest".to_string(), di.addr),
                ("frontend-api".to_string(), ingress.addr),
                ("postgresql".to_string(), node.addr()),
            ]),
            log_dir: cfg.dir.join("logs").join(name),
            ready_timeout: Duration::from_secs(60),
            extra_env: vec![("RUST_LOG".into(), "info".into())],
        },
        endpoints,
    )?;
    let kube = RegionBuilder::new(name, node)
        .addr(SocketAddr::new(ip, 0))
        .fallback(Arc::new(runtime.clone()), Arc::new(runtime.clone()))
        .start()
        .await
        .map_err(std::io::Error::other)?;
    runtime.attach(kube.store().clone());
    let me = Party::Region(name.to_string());
    let api = Relay::start(
        wan,
        Link(Party::Operator, me.clone()),
        "127.0.0.1:0".parse().expect("literal"),
        kube.addr(),
    )
    .await?;
    let ingress_relay = Relay::start(
        wan,
        Link(Party::Clients, me),
        SocketAddr::new(ip, cfg.ingress_port),
        ingress.addr,
    )
    .await?;
    Ok(Region {
        name: name.into(),
        ip,
        kube: Arc::new(kube),
        runtime,
        ingress: ingress_relay,
        api,
        _proxies: vec![bl, di, ingress],
    })
}

type StartResult = Result<World, Box<dyn std::error::Error + Send + Sync>>;

impl World {
    /// Starts the world with the WAN settings of `<dir>/wan.json`, else of the environment
    /// (`DRDCTL_LAB_WAN_RTT_MS`, `DRDCTL_LAB_WAN_MBIT`: how a benchmark that runs `drdctl lab
    /// up` puts distance between the regions), else none.
    pub async fn start(cfg: WorldConfig) -> StartResult {
        let wan = match std::fs::read(cfg.dir.join(WAN_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => wan_from_env()?,
            Err(e) => return Err(e.into()),
        };
        Self::start_with(cfg, wan).await
    }

    /// Starts the world with these WAN settings.
    pub async fn start_with(cfg: WorldConfig, wan: WanSettings) -> StartResult {
        std::fs::create_dir_all(&cfg.dir)?;
        let cfg = WorldConfig {
            dir: std::fs::canonicalize(&cfg.dir)?,
            repo_root: std::fs::canonicalize(&cfg.repo_root)?,
            ..cfg
        };
        let wan = Wan::new(wan);
        let pg = PgPair::new(PgPairConfig::new(&cfg.password))?;
        let primary = region(
            "primary",
            "127.0.0.2".parse()?,
            pg.primary.clone(),
            &cfg,
            10,
            &wan,
        )
        .await?;
        let dr = region("dr", "127.0.0.3".parse()?, pg.dr.clone(), &cfg, 20, &wan).await?;
        let between = || Link(Party::Region("primary".into()), Party::Region("dr".into()));
        // Each side's way to the other's database: on its own address, across the WAN.
        let primary_from_dr = Relay::start(
            &wan,
            between(),
            SocketAddr::new(dr.ip, 0),
            pg.primary.addr(),
        )
        .await?;
        let dr_from_primary = Relay::start(
            &wan,
            between(),
            SocketAddr::new(primary.ip, 0),
            pg.dr.addr(),
        )
        .await?;
        let azure = AzureDouble::start().await?;
        let azure_api = Relay::start(
            &wan,
            Link(Party::Operator, Party::Azure),
            "127.0.0.1:0".parse()?,
            azure.addr(),
        )
        .await?;
        let dns = DnsServer::start(azure.store().clone()).await?;
        let zone = ZoneId::new(SUBSCRIPTION, "rg-drd-lab", "example.com");
        azure.register_client_secret(TENANT, CLIENT_ID, &cfg.password);
        azure.create_zone(&zone, &["ns1-lab.azure-dns.com"]);
        azure.seed(&zone, RecordSet::a("app", 60, &["127.0.0.2".parse()?]));
        // The witness term: the primary region holds it.
        azure
            .blobs()
            .create_container(crate::guards::TERM_CONTAINER);
        let term = serde_json::json!({
            "region": "primary", "n": 1,
            "at": chrono::Utc::now().to_rfc3339(), "by": "drdctl lab up",
        });
        azure
            .blobs()
            .put(
                crate::guards::TERM_CONTAINER,
                crate::guards::TERM_BLOB,
                serde_json::to_vec(&term)?,
                "application/json",
                None,
                None,
            )
            .map_err(|e| format!("seeding the term: {e:?}"))?;
        let guards = match &cfg.guard_bin {
            None => Vec::new(),
            Some(bin) => {
                crate::guards::start(crate::guards::GuardSetup {
                    bin,
                    dir: &cfg.dir,
                    wan: &wan,
                    azure: azure.addr(),
                    tenant: TENANT,
                    client_id: CLIENT_ID,
                    password: &cfg.password,
                    regions: [
                        ("primary", primary.ip, pg.primary.clone()),
                        ("dr", dr.ip, pg.dr.clone()),
                    ],
                })
                .await?
            }
        };
        crate::guards::wait_until_reading(&guards, std::time::Duration::from_secs(30)).await?;
        let world = World {
            primary,
            dr,
            pg,
            azure,
            dns,
            cfg,
            wan,
            azure_api,
            replication: vec![primary_from_dr, dr_from_primary],
            control: None,
            guards,
        };
        world.write_files()?;
        let control = ControlServer::start(world.controls()).await?;
        std::fs::write(world.cfg.dir.join(CONTROL_FILE), control.url())?;
        let world = World {
            control: Some(control),
            ..world
        };
        Ok(world)
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.cfg.dir.join("kubeconfig")
    }

    pub fn config(&self) -> PathBuf {
        self.cfg.dir.join("drdctl.toml")
    }

    /// `AZURE_*` for drdctl's DNS adapter (a file to source).
    pub fn env_file(&self) -> PathBuf {
        self.cfg.dir.join("env")
    }

    fn write_files(&self) -> std::io::Result<()> {
        let dir = &self.cfg.dir;
        write_kubeconfig(
            &self.kubeconfig(),
            &[
                ("primary", &format!("http://{}", self.primary.api.addr)),
                ("dr", &format!("http://{}", self.dr.api.addr)),
            ],
        )?;
        let (p_role, d_role) = self
            .pg
            .roles_via(self.replication[0].addr, self.replication[1].addr);
        for (region, role) in [("primary", &p_role), ("dr", &d_role)] {
            write_overlay(
                &dir.join("overlays").join(region),
                &self.cfg.repo_root,
                region,
                role,
            )?;
        }
        let ingress = |r: &Region| r.ingress.addr.to_string();
        let witness = if self.guards.is_empty() {
            String::new()
        } else {
            format!(
                "\n[witness]\nurl = \"http://{}/{}/{}\"\ntiming = \"lab\"\n",
                self.azure_api.addr,
                crate::guards::TERM_CONTAINER,
                crate::guards::TERM_BLOB
            )
        };
        std::fs::write(
            self.config(),
            format!(
                r#"# Written by drdctl lab up: the lab's two regions.
[kube]
kubeconfig = "{kc}"

[regions.primary]
context = "primary"
overlay = "{dir}/overlays/primary"
ingress = "{pi}"

[regions.dr]
context = "dr"
overlay = "{dir}/overlays/dr"
ingress = "{di}"

[images]
file = "{dir}/images.json"

[dns]
subscription = "{SUBSCRIPTION}"
resource_group = "rg-drd-lab"
zone = "example.com"
record = "app"
record_type = "A"
auth = "client-secret"
name_servers = ["{ns}"]
arm_endpoint = "{arm}"
authority_host = "{arm}"
authoritative_deadline_secs = 10
authoritative_poll_ms = 100
[dns.targets]
primary = "{pip}"
dr = "{dip}"
{witness}"#,
                kc = self.kubeconfig().display(),
                dir = dir.display(),
                pi = ingress(&self.primary),
                di = ingress(&self.dr),
                ns = self.dns.addr(),
                arm = format!("http://{}", self.azure_api.addr),
                pip = self.primary.ip,
                dip = self.dr.ip,
            ),
        )?;
        std::fs::write(
            self.env_file(),
            format!(
                "AZURE_TENANT_ID={TENANT}\nAZURE_CLIENT_ID={CLIENT_ID}\nAZURE_CLIENT_SECRET={}\nDRDCTL_POSTGRES_PASSWORD={}\n",
                self.cfg.password, self.cfg.password
            ),
        )?;
        Ok(())
    }

    /// The region called `name`.
    pub fn region(&self, name: &str) -> Option<&Region> {
        [&self.primary, &self.dr]
            .into_iter()
            .find(|r| r.name == name)
    }

    /// What the control API acts on.
    pub fn controls(&self) -> Controls {
        let handle = |r: &Region, node: &crate::pg::SharedNode| RegionHandle {
            name: r.name.clone(),
            runtime: r.runtime.clone(),
            node: node.clone(),
            kube: r.kube.clone(),
            guard_pid: self
                .guards
                .iter()
                .find(|g| g.region == r.name)
                .map(|g| g.pid),
        };
        Controls {
            wan: self.wan.clone(),
            regions: vec![
                handle(&self.primary, &self.pg.primary),
                handle(&self.dr, &self.pg.dr),
            ],
        }
    }

    /// Loses a region at once: SIGKILL to its service processes and its PostgreSQL, its API
    /// gone, every path to it refused.
    pub async fn kill_region(&self, name: &str) -> Result<(), String> {
        self.controls().kill_region(name).await
    }

    /// Stops every process the world started.
    pub async fn stop(self) {
        for g in &self.guards {
            g.kill();
        }
        for r in [&self.primary, &self.dr] {
            r.runtime.stop_all(Duration::from_secs(5)).await;
        }
        let _ = self.pg.primary.stop().await;
        let _ = self.pg.dr.stop().await;
        let _ = std::fs::remove_file(self.cfg.dir.join(CONTROL_FILE));
    }
}

/// Writes the kustomization in `overlay`: the repository's overlay of `region` with `role` (the
/// lab's PostgreSQL addresses) patched into its `postgresql-role` ConfigMap.
pub fn write_overlay(
    overlay: &Path,
    repo_root: &Path,
    region: &str,
    role: &crate::pg::RoleFiles,
) -> std::io::Result<()> {
    std::fs::create_dir_all(overlay)?;
    let ops: String = role
        .to_config_map_data()
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("      - op: add\n        path: /data/{k}\n        value: {v}\n"))
        .collect();
    let base = relative_to(overlay, &repo_root.join("manifests").join(region));
    std::fs::write(
        overlay.join("kustomization.yaml"),
        format!(
            "# The lab's overlay: the region's overlay with the lab's PostgreSQL addresses.\nresources:\n  - {}\npatches:\n  - target:\n      kind: ConfigMap\n      name: postgresql-role\n    patch: |-\n{ops}",
            base.display()
        ),
    )
}

fn wan_from_env() -> Result<WanSettings, Box<dyn std::error::Error + Send + Sync>> {
    let var = |k: &str| -> Result<f64, Box<dyn std::error::Error + Send + Sync>> {
        match std::env::var(k) {
            Ok(v) => Ok(v
                .trim()
                .parse()
                .map_err(|_| format!("{k}={v:?} is not a number"))?),
            Err(_) => Ok(0.0),
        }
    };
    Ok(WanSettings {
        rtt_ms: var("DRDCTL_LAB_WAN_RTT_MS")?,
        mbit: var("DRDCTL_LAB_WAN_MBIT")?,
    })
}

/// `target` as a path relative to the directory `from` (both absolute): kustomize (kubectl
/// apply -k) refuses absolute resource paths.
fn relative_to(from: &Path, target: &Path) -> PathBuf {
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = target.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut rel = PathBuf::new();
    for _ in common..from.len() {
        rel.push("..");
    }
    for c in &to[common..] {
        rel.push(c);
    }
    rel
}

/// Where `drdctl lab` keeps the world's files by default.
pub fn default_dir(repo_root: &Path) -> PathBuf {
    repo_root.join(".drdctl").join("lab")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_for_kustomize() {
        assert_eq!(
            relative_to(
                Path::new("/tmp/x/lab/overlays/dr"),
                Path::new("/work/main/manifests/dr")
            ),
            PathBuf::from("../../../../../work/main/manifests/dr")
        );
        assert_eq!(
            relative_to(
                Path::new("/w/.drdctl/lab/overlays/dr"),
                Path::new("/w/manifests/dr")
            ),
            PathBuf::from("../../../../manifests/dr")
        );
    }
}
