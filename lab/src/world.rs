//! The whole two-region world on one machine, for `drdctl lab`: per region a Kubernetes API
//! double whose pods are real (PostgreSQL through start.sh, the services as processes), the
//! Services in front of them and the region's ingress; the Azure DNS double and its
//! authoritative name server; and the files a user points tools at (kubeconfig, drdctl.toml,
//! overlays that give each region's role ConfigMap the lab's addresses).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::azure::{RecordSet, ZoneId};
use crate::kube_api::write_kubeconfig;
use crate::pg::{PgPair, PgPairConfig, PgPodRuntime};
use crate::pods::{Endpoints, ProcessRuntime, ProcessRuntimeConfig, ServiceProxy};
use crate::{AzureDouble, DnsServer, KubeDouble, KubeDoubleConfig};

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
}

pub struct Region {
    pub name: String,
    pub ip: IpAddr,
    pub kube: KubeDouble,
    pub runtime: ProcessRuntime,
    pub ingress: ServiceProxy,
    _proxies: Vec<ServiceProxy>,
}

pub struct World {
    pub primary: Region,
    pub dr: Region,
    pub pg: PgPair,
    pub azure: AzureDouble,
    pub dns: DnsServer,
    pub cfg: WorldConfig,
}

async fn region(
    name: &str,
    ip: IpAddr,
    node: crate::pg::SharedNode,
    cfg: &WorldConfig,
    pod_net: u8,
) -> std::io::Result<Region> {
    let endpoints = Endpoints::default();
    let bl =
        ServiceProxy::start(SocketAddr::new(ip, 0), "business-logic", endpoints.clone()).await?;
    let di = ServiceProxy::start(SocketAddr::new(ip, 0), "data-ingest", endpoints.clone()).await?;
    let ingress = ServiceProxy::start(
        SocketAddr::new(ip, cfg.ingress_port),
        "frontend-api",
        endpoints.clone(),
    )
    .await?;
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
    let pg_rt =
        PgPodRuntime::with_fallback(node, Arc::new(runtime.clone()), Arc::new(runtime.clone()));
    let kube = KubeDouble::start_with(
        KubeDoubleConfig::new(name, SocketAddr::new(ip, 0))
            .runtime(Arc::new(pg_rt.clone()))
            .pod_io(Arc::new(pg_rt.clone())),
    )
    .await?;
    pg_rt.bind(&kube);
    runtime.attach(kube.store().clone());
    Ok(Region {
        name: name.into(),
        ip,
        kube,
        runtime,
        ingress,
        _proxies: vec![bl, di],
    })
}

impl World {
    pub async fn start(
        cfg: WorldConfig,
    ) -> Result<World, Box<dyn std::error::Error + Send + Sync>> {
        std::fs::create_dir_all(&cfg.dir)?;
        let cfg = WorldConfig {
            dir: std::fs::canonicalize(&cfg.dir)?,
            repo_root: std::fs::canonicalize(&cfg.repo_root)?,
            ..cfg
        };
        let pg = PgPair::new(PgPairConfig::new(&cfg.password))?;
        let primary = region(
            "primary",
            "127.0.0.2".parse()?,
            pg.primary.clone(),
            &cfg,
            10,
        )
        .await?;
        let dr = region("dr", "127.0.0.3".parse()?, pg.dr.clone(), &cfg, 20).await?;
        let azure = AzureDouble::start().await?;
        let dns = DnsServer::start(azure.store().clone()).await?;
        let zone = ZoneId::new(SUBSCRIPTION, "rg-drd-lab", "example.com");
        azure.register_client_secret(TENANT, CLIENT_ID, &cfg.password);
        azure.create_zone(&zone, &["ns1-lab.azure-dns.com"]);
        azure.seed(&zone, RecordSet::a("app", 60, &["127.0.0.2".parse()?]));
        let world = World {
            primary,
            dr,
            pg,
            azure,
            dns,
            cfg,
        };
        world.write_files()?;
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
                ("primary", &self.primary.kube.url()),
                ("dr", &self.dr.kube.url()),
            ],
        )?;
        let (p_role, d_role) = self.pg.initial_roles();
        for (region, role) in [("primary", &p_role), ("dr", &d_role)] {
            let overlay = dir.join("overlays").join(region);
            std::fs::create_dir_all(&overlay)?;
            let ops: String = role
                .to_config_map_data()
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| {
                    format!("      - op: add\n        path: /data/{k}\n        value: {v}\n")
                })
                .collect();
            std::fs::write(
                overlay.join("kustomization.yaml"),
                format!(
                    "# The lab's overlay: the region's overlay with the lab's PostgreSQL addresses.\nresources:\n  - {}\npatches:\n  - target:\n      kind: ConfigMap\n      name: postgresql-role\n    patch: |-\n{ops}",
                    relative_to(&overlay, &self.cfg.repo_root.join("manifests").join(region))
                        .display()
                ),
            )?;
        }
        let ingress = |r: &Region| format!("{}:{}", r.ip, r.ingress.addr.port());
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
"#,
                kc = self.kubeconfig().display(),
                dir = dir.display(),
                pi = ingress(&self.primary),
                di = ingress(&self.dr),
                ns = self.dns.addr(),
                arm = self.azure.url(),
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

    /// Stops every process the world started.
    pub async fn stop(self) {
        for r in [&self.primary, &self.dr] {
            r.runtime.stop_all(Duration::from_secs(5)).await;
        }
        let _ = self.pg.primary.stop().await;
        let _ = self.pg.dr.stop().await;
    }
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
