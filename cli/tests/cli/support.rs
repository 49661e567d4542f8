//! A two-region lab of Kubernetes doubles, a kubeconfig and a drdctl.toml for them, and
//! runners for the real drdctl and kubectl binaries.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use lab::kube_api::write_kubeconfig;
use lab::{KubeDouble, KubeDoubleConfig};

pub const DRDCTL: &str = env!("CARGO_BIN_EXE_drdctl");
pub const PASSWORD: &str = "lab-Secret-9f3k";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub struct Lab {
    pub primary: KubeDouble,
    pub dr: KubeDouble,
    pub dir: tempfile::TempDir,
    pub dns: Option<DnsLab>,
    /// With real PostgreSQL: the pair (its nodes run as the `postgresql-0` pods) and the
    /// overlays that point each region's role ConfigMap at the pair's addresses.
    pub pg: Option<lab::pg::PgPair>,
}

/// Azure DNS for the lab: the ARM + token double and the authoritative name server.
pub struct DnsLab {
    pub azure: lab::AzureDouble,
    pub server: lab::DnsServer,
    pub zone: lab::azure::ZoneId,
}

pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const CLIENT_ID: &str = "5a0e2b3c-7d4f-4e21-9c1a-abcdefabcdef";
/// The service principal's secret: must never appear in any output.
pub const CLIENT_SECRET: &str = "Lab~Secret.Do-Not-Print_8Qz";
pub const PRIMARY_INGRESS: &str = "127.0.0.2";
pub const DR_INGRESS: &str = "127.0.0.3";

impl Lab {
    pub async fn start() -> Lab {
        test_support::test_log();
        let start = |region: &str| {
            KubeDouble::start_with(
                KubeDoubleConfig::new(region, "127.0.0.1:0".parse().unwrap())
                    .pod_start_delay(Duration::from_millis(50)),
            )
        };
        let primary = start("primary").await.unwrap();
        let dr = start("dr").await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        write_kubeconfig(
            &dir.path().join("kubeconfig"),
            &[("primary", &primary.url()), ("dr", &dr.url())],
        )
        .unwrap();
        let lab = Lab {
            primary,
            dr,
            dir,
            dns: None,
            pg: None,
        };
        lab.write_config("");
        lab
    }

    /// Two regions whose `postgresql-0` pods run real PostgreSQL (start.sh), reachable by
    /// drdctl through port-forward; app pods are simulated.
    pub async fn start_with_pg() -> Lab {
        test_support::test_log();
        use lab::pg::{PgPair, PgPairConfig};
        let pair = PgPair::new(PgPairConfig::new(PASSWORD)).expect("create the PostgreSQL nodes");
        let (p_role, d_role) = pair.initial_roles();
        let start = |region: &'static str, node: lab::pg::SharedNode| async move {
            lab::world::RegionBuilder::new(region, node)
                .start()
                .await
                .unwrap()
        };
        let primary = start("primary", pair.primary.clone()).await;
        let dr = start("dr", pair.dr.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        write_kubeconfig(
            &dir.path().join("kubeconfig"),
            &[("primary", &primary.url()), ("dr", &dr.url())],
        )
        .unwrap();
        for (region, role) in [("primary", &p_role), ("dr", &d_role)] {
            let overlay = dir.path().join(format!("overlay-{region}"));
            lab::world::write_overlay(&overlay, &repo_root(), region, role).unwrap();
        }
        let lab = Lab {
            primary,
            dr,
            dir,
            dns: None,
            pg: Some(pair),
        };
        lab.write_config("");
        lab
    }

    /// Adds Azure DNS: record `app.example.com` A -> the primary's ingress, TTL 300.
    pub async fn with_dns(mut self) -> Lab {
        let azure = lab::AzureDouble::start().await.unwrap();
        let server = lab::DnsServer::start(azure.store().clone()).await.unwrap();
        let zone = lab::azure::ZoneId::new(
            "0b1f6471-1bf0-4dda-aec3-111122223333",
            "rg-app",
            "example.com",
        );
        azure.register_client_secret(TENANT, CLIENT_ID, CLIENT_SECRET);
        azure.create_zone(&zone, &["ns1-09.azure-dns.com"]);
        azure.seed(
            &zone,
            lab::azure::RecordSet::a("app", 300, &[PRIMARY_INGRESS.parse().unwrap()])
                .with_metadata("owner", "platform-team"),
        );
        self.dns = Some(DnsLab {
            azure,
            server,
            zone,
        });
        self.write_config("");
        self
    }

    fn dns_section(&self) -> String {
        let Some(d) = &self.dns else {
            return String::new();
        };
        format!(
            r#"
[dns]
subscription = "0b1f6471-1bf0-4dda-aec3-111122223333"
resource_group = "rg-app"
zone = "example.com"
record = "app"
record_type = "A"
auth = "client-secret"
name_servers = ["{ns}"]
arm_endpoint = "{arm}"
authority_host = "{arm}"
authoritative_deadline_secs = 5
authoritative_poll_ms = 50
call_deadline_secs = 20
[dns.targets]
primary = "{PRIMARY_INGRESS}"
dr = "{DR_INGRESS}"
"#,
            ns = d.server.addr(),
            arm = d.azure.url()
        )
    }

    /// The record's values as ARM holds them.
    pub fn dns_values(&self) -> Vec<String> {
        let d = self.dns.as_ref().expect("a lab with DNS");
        let rs = d
            .azure
            .record(&d.zone, "A", "app")
            .expect("the record exists");
        match rs.records {
            lab::azure::Records::A(ips) => ips.iter().map(|i| i.to_string()).collect(),
            lab::azure::Records::Cname(c) => vec![c],
        }
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("drdctl.toml")
    }

    /// Writes drdctl.toml for the lab; `extra` is appended (TOML).
    pub fn write_config(&self, extra: &str) {
        let manifests = repo_root().join("manifests");
        let overlay = |region: &str| match &self.pg {
            Some(_) => self.dir.path().join(format!("overlay-{region}")),
            None => manifests.join(region),
        };
        let text = format!(
            r#"
[kube]
kubeconfig = "{kc}"

[regions.primary]
context = "primary"
overlay = "{po}"

[regions.dr]
context = "dr"
overlay = "{do_}"
{extra}
{dns}
"#,
            kc = self.kubeconfig().display(),
            po = overlay("primary").display(),
            do_ = overlay("dr").display(),
            dns = self.dns_section()
        );
        std::fs::write(self.config(), text).unwrap();
    }

    pub async fn drdctl(&self, args: &[&str]) -> Output {
        self.drdctl_env(args, &[]).await
    }

    /// [`Lab::drdctl`] with extra environment variables.
    pub async fn drdctl_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.drdctl_command(args);
        cmd.envs(env.iter().copied());
        cmd.output().await.unwrap()
    }

    /// The drdctl command against this lab, not started (to signal it while it runs).
    pub fn drdctl_command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(DRDCTL);
        cmd.arg("--config")
            .arg(self.config())
            .args(args)
            .env("DRDCTL_POSTGRES_PASSWORD", PASSWORD)
            .env("AZURE_TENANT_ID", TENANT)
            .env("AZURE_CLIENT_ID", CLIENT_ID)
            .env("AZURE_CLIENT_SECRET", CLIENT_SECRET)
            .env_remove("KUBECONFIG");
        cmd
    }

    pub async fn kubectl(&self, args: &[&str]) -> Output {
        kubectl(&self.kubeconfig(), self.dir.path(), args).await
    }
}

pub async fn kubectl(kubeconfig: &Path, dir: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .arg("--cache-dir")
        .arg(dir.join("kube-cache"))
        .args(args)
        .output()
        .await
        .expect("kubectl is installed (apt-get install kubernetes-client)")
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[track_caller]
pub fn assert_ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed ({:?}):\n{}",
        o.status.code(),
        text(o)
    );
    text(o)
}

impl Lab {
    /// Real PostgreSQL in both regions (and Azure DNS when `dns`), the manifests deployed and
    /// the schema applied: the starting point of the database and failover tests.
    pub async fn ready(dns: bool) -> Lab {
        let lab = Lab::start_with_pg().await;
        let lab = if dns { lab.with_dns().await } else { lab };
        let out = assert_ok(
            &lab.drdctl(&["deploy", "--region", "all", "--rollout-timeout", "240"])
                .await,
        );
        assert!(out.contains("statefulset/postgresql rolled out"), "{out}");
        let schema = repo_root().join("init-db.sql");
        let out = assert_ok(
            &lab.drdctl(&["init-db", "--file", schema.to_str().unwrap()])
                .await,
        );
        assert!(!out.contains(PASSWORD), "the password was printed");
        lab
    }
}

/// Asks both databases every 100 ms whether they take writes (primary, and new sessions not
/// read-only); a database that does not answer takes none. Two at once is a split brain.
pub struct WritableMonitor {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Seen>,
}

#[derive(Debug, Default)]
pub struct Seen {
    pub samples: u64,
    /// When (since the monitor started) both took writes.
    pub both_writable: Vec<Duration>,
}

impl WritableMonitor {
    pub fn start(pg: &lab::pg::PgPair) -> WritableMonitor {
        let (a, b) = (pg.primary.clone(), pg.dr.clone());
        let (stop, mut rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let started = std::time::Instant::now();
            let mut seen = Seen::default();
            while !*rx.borrow() {
                let (x, y) = tokio::join!(writable(&a), writable(&b));
                seen.samples += 1;
                if x && y {
                    seen.both_writable.push(started.elapsed());
                }
                tokio::select! {
                    _ = rx.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
            seen
        });
        WritableMonitor { stop, task }
    }

    pub async fn stop(self) -> Seen {
        let _ = self.stop.send(true);
        self.task.await.unwrap()
    }
}

async fn writable(node: &lab::pg::SharedNode) -> bool {
    node.psql(
        "postgres",
        "SELECT NOT pg_is_in_recovery() AND current_setting('default_transaction_read_only') = 'off'",
    )
    .await
    .is_ok_and(|s| s == "t")
}

/// `pg_is_in_recovery()` of a lab node: "t" for a standby, "f" for a primary.
pub async fn in_recovery(node: &lab::pg::SharedNode) -> String {
    node.psql("postgres", "SELECT pg_is_in_recovery()")
        .await
        .unwrap()
}

/// The lab's authoritative name server, as `drdctl lab up` wrote it in `<dir>/drdctl.toml`.
pub fn lab_name_server(lab_dir: &Path) -> std::net::SocketAddr {
    let cfg = std::fs::read_to_string(lab_dir.join("drdctl.toml")).unwrap();
    cfg.lines()
        .find_map(|l| l.strip_prefix("name_servers = [\""))
        .and_then(|l| l.split('"').next())
        .expect("drdctl.toml names the lab's name server")
        .parse()
        .unwrap()
}

/// `drdctl lab up` listens on fixed ports (each region's ingress on :8080): the tests that
/// run it take turns.
pub static LAB_UP: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Ctrl-C to a running drdctl (SIGINT, as a terminal sends it); its output once it ended.
pub async fn interrupt(child: tokio::process::Child) -> Output {
    let pid = child.id().expect("still running").to_string();
    let kill = tokio::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .unwrap();
    assert!(kill.success());
    child.wait_with_output().await.unwrap()
}
