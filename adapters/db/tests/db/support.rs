//! The lab for these tests: both regions' doubles with the manifests' PostgreSQL StatefulSet,
//! role ConfigMap and secret, pods run by [`PgPodRuntime`]; and adapters for each region.

use std::time::Duration;

use drd_db::{PgDatabase, PodNames, RegionConfig};
use lab::pg::{PgPair, PgPairConfig, RoleFiles};
use lab::world::RegionBuilder;
use lab::KubeDouble;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

/// The secret's `password` (also the superuser's): `:` and `\` test the escaping.
pub const PASSWORD: &str = "s3cret:pw\\x";

/// One region: its double, its node.
pub struct Region {
    pub name: &'static str,
    pub kube: KubeDouble,
    pub node: lab::pg::SharedNode,
}

/// The region's database as drdctl reaches it: drd-kube's port-forward to `postgresql-0` in
/// `default` of the double (kube context named as the region), the password from the secret.
pub fn port_forward_config(kube: &KubeDouble, region: &str) -> RegionConfig {
    let url = kube.url();
    let client = kube::Client::try_from(kube::Config::new(url.parse().expect("double url")))
        .expect("kube client");
    let target = drd_kube::Target {
        region: region.to_string(),
        context: region.to_string(),
        kubeconfig: None,
        namespace: "default".into(),
        timeout: None,
    };
    let cluster = drd_kube::KubeCluster::with_client(target, client, &url);
    let host = drdctl::dbhost::KubeHost::new(&cluster, PodNames::new(region, "default"));
    RegionConfig::port_forward(region, host)
}

/// Both regions.
pub struct Lab {
    pub primary: Region,
    pub dr: Region,
    _pair: PgPair,
}

pub use test_support::eventually;

async fn region(
    name: &'static str,
    node: lab::pg::SharedNode,
    role: &RoleFiles,
    env: &[(&str, &str)],
) -> Region {
    test_support::test_log();
    let kube = RegionBuilder::new(name, node.clone())
        .sync_delay(Duration::from_millis(10))
        .deployed(&test_support::workspace_root(), PASSWORD, role, env)
        .start()
        .await
        .expect("start the region");
    Region { name, kube, node }
}

impl Region {
    /// The adapter as drdctl builds it: port-forward, password from the secret.
    pub fn db(&self) -> PgDatabase {
        PgDatabase::new(port_forward_config(&self.kube, self.name))
    }

    /// A direct SQL connection to appdb as the superuser (test-side checks).
    pub async fn sql(&self) -> PgConnection {
        let addr = self.node.addr();
        let opts = PgConnectOptions::new()
            .host(&addr.ip().to_string())
            .port(addr.port())
            .username("postgres")
            .password(PASSWORD)
            .database("appdb");
        PgConnection::connect_with(&opts)
            .await
            .expect("connect to appdb")
    }

    /// One value of `sql` as text (NULL as "").
    pub async fn value(&self, sql: &str) -> String {
        let mut c = self.sql().await;
        let v: Option<String> = sqlx::query_scalar(sql)
            .fetch_one(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{sql} in {}: {e}", self.name));
        v.unwrap_or_default()
    }

    /// Runs statements.
    pub async fn exec(&self, sql: &str) {
        let mut c = self.sql().await;
        sqlx::Executor::execute(&mut c, sql)
            .await
            .unwrap_or_else(|e| panic!("{sql} in {}: {e}", self.name));
    }

    /// Waits until `sql` returns `want`.
    pub async fn wait_value(&self, sql: &str, want: &str) {
        let what = format!("{sql} = {want} in {}", self.name);
        eventually(&what, Duration::from_secs(60), || async {
            let mut c = self.sql().await;
            let v: Option<String> = sqlx::query_scalar(sql).fetch_one(&mut c).await.ok()?;
            (v.as_deref() == Some(want)).then_some(())
        })
        .await;
    }
}

/// Both regions: the primary region's pod inits the primary, then DR's clones it.
pub async fn lab() -> Lab {
    lab_with_env(&[]).await
}

/// [`lab`], with `env` added to the PostgreSQL container's environment in both regions.
pub async fn lab_with_env(env: &[(&str, &str)]) -> Lab {
    let pair = PgPair::new(PgPairConfig::new(PASSWORD)).expect("create the nodes");
    let (p_role, d_role) = pair.initial_roles();
    let primary = region("primary", pair.primary.clone(), &p_role, env).await;
    let dr = region("dr", pair.dr.clone(), &d_role, env).await;
    Lab {
        primary,
        dr,
        _pair: pair,
    }
}

/// Only the primary region (tests that need no standby).
pub async fn primary_only() -> (Region, PgPair) {
    let pair = PgPair::new(PgPairConfig::new(PASSWORD)).expect("create the nodes");
    let (p_role, _) = pair.initial_roles();
    let primary = region("primary", pair.primary.clone(), &p_role, &[]).await;
    (primary, pair)
}

/// A table for test rows.
pub async fn make_table(r: &Region) {
    r.exec("CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY, note text)")
        .await;
}
