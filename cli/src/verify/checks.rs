//! The checks `drdctl verify` runs, built from the config and the adapters.

use std::collections::BTreeMap;
use std::time::Duration;

use drd_kube::{Cluster, KubeCluster, RolloutKind};

use super::{selected, Check, Outcome};
use crate::config::Config;

/// What the checks talk to; a region whose cluster could not even be set up has its error.
pub struct Targets {
    pub clusters: BTreeMap<String, KubeCluster>,
    pub dns: Option<drd_dns::DnsOps>,
    /// DNS is configured but its client could not be set up (no Azure login): the DNS checks
    /// fail with this, and the rest still run.
    pub dns_error: Option<String>,
    /// Clients may keep the old address for the record's TTL: above this, warn.
    pub rto_budget_secs: u32,
    /// Each region's database.
    pub databases: BTreeMap<String, drd_db::PgDatabase>,
    pub max_lag_bytes: u64,
    pub max_lag_seconds: f64,
    /// Both databases observed once, shared by the database checks.
    pub observed: tokio::sync::OnceCell<Observed>,
}

/// Per region: its database status and schema versions, or why they could not be read.
pub type Observed = BTreeMap<String, Result<(NodeStatus, Vec<i32>), String>>;

use drd_db::{Database, DbRole, NodeStatus};

impl Targets {
    async fn observed(&self) -> &Observed {
        self.observed
            .get_or_init(|| async {
                let runs = self.databases.iter().map(|(region, db)| async move {
                    let r = async {
                        let status = db.status().await?;
                        let versions = db.schema_versions().await.unwrap_or_default();
                        Ok::<_, drd_db::DbError>((status, versions))
                    }
                    .await
                    .map_err(|e| e.to_string());
                    (region.clone(), r)
                });
                futures_util::future::join_all(runs)
                    .await
                    .into_iter()
                    .collect()
            })
            .await
    }
}

/// A region retired by a failover away from it: its `postgresql-role` says `fenced` (its
/// database stopped, its app at 0). That is the expected state until `drdctl failback`, so
/// its checks warn instead of failing.
async fn retired(targets: &Targets, region: &str) -> bool {
    match targets.clusters.get(region) {
        Some(c) => c
            .configmap("postgresql-role")
            .await
            .ok()
            .flatten()
            .and_then(|d| d.get("role").cloned())
            .is_some_and(|r| r == "fenced"),
        None => false,
    }
}

const RETIRED: &str = "retired by a failover away from it (postgresql-role=fenced): expected until `drdctl failback` brings it back as a standby";

fn writable(n: &NodeStatus) -> bool {
    n.role == DbRole::Primary && !n.fenced
}

/// The region whose application is active (app ConfigMap role), or why that is unclear.
async fn active_app_region(targets: &Targets, configmap: &str) -> Result<String, String> {
    let mut active = Vec::new();
    for (name, c) in &targets.clusters {
        match app_role(c, configmap).await {
            Ok(role) if role == "active" => active.push(name.clone()),
            Ok(_) => {}
            Err(e) => return Err(format!("cannot tell which region is active: {e}")),
        }
    }
    match active.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err("no region's app ConfigMap says role=active".into()),
        many => Err(format!(
            "more than one region is active: {}",
            many.join(", ")
        )),
    }
}

/// The region's role from its app ConfigMap (`active` / `standby`).
async fn app_role(cluster: &KubeCluster, configmap: &str) -> Result<String, String> {
    match cluster.configmap(configmap).await {
        Err(e) => Err(e.to_string()),
        Ok(None) => Err(format!("configmap/{configmap} is missing")),
        Ok(Some(data)) => match data.get("role").map(String::as_str) {
            Some(r @ ("active" | "standby")) => Ok(r.to_string()),
            Some(other) => Err(format!(
                "configmap/{configmap} has role {other:?} (expected active or standby)"
            )),
            None => Err(format!("configmap/{configmap} has no key \"role\"")),
        },
    }
}

/// Every check, in report order, filtered by `--region` and `--check`.
pub fn build<'a>(
    config: &'a Config,
    targets: &'a Targets,
    regions: &[String],
    filters: &[String],
) -> Vec<Check<'a>> {
    let mut checks = Vec::new();
    let app = &config.app;
    for region in regions {
        let Some(c) = targets.clusters.get(region) else {
            continue;
        };
        let r = Some(region.as_str());
        let ctx = c.target().context.clone();
        if selected("kube.api", filters) {
            checks.push(Check::new("kube.api", r, async move {
                match c.version().await {
                    Ok(v) => {
                        Outcome::pass(format!("context {ctx}: API server {v} at {}", c.server()))
                    }
                    Err(e) => Outcome::fail(e.to_string()),
                }
            }));
        }
        if selected("kube.namespace", filters) {
            checks.push(Check::new("kube.namespace", r, async move {
                let ns = &c.target().namespace;
                match c.namespace_exists().await {
                    Ok(true) => Outcome::pass(format!("namespace {ns} present")),
                    Ok(false) => Outcome::fail(format!(
                        "namespace {ns} is missing in context {}",
                        c.target().context
                    )),
                    Err(e) => Outcome::fail(e.to_string()),
                }
            }));
        }
        if selected("app.deployments", filters) {
            checks.push(Check::new("app.deployments", r, async move {
                let role = match app_role(c, &app.configmap).await {
                    Ok(role) => role,
                    Err(e) => return Outcome::fail(e),
                };
                let expected = if role == "active" {
                    app.active_replicas
                } else {
                    app.standby_replicas
                };
                let mut problems = Vec::new();
                let mut ok = Vec::new();
                for d in &app.deployments {
                    match c.rollout(RolloutKind::Deployment, d).await {
                        Err(e) => problems.push(e.to_string()),
                        Ok(ro) if ro.desired < expected => problems.push(format!(
                            "deployment/{d} is scaled to {} but a {role} region needs {expected}",
                            ro.desired
                        )),
                        Ok(ro) if !ro.is_complete() => {
                            problems.push(format!("deployment/{d}: {ro}"))
                        }
                        Ok(ro) => ok.push(format!("{d} {}/{}", ro.ready, ro.desired)),
                    }
                }
                if problems.is_empty() {
                    Outcome::pass(format!("role {role}: {}", ok.join(", ")))
                } else if retired(targets, &c.target().region).await {
                    Outcome::warn(format!("{RETIRED}; {}", problems.join("; ")))
                } else {
                    Outcome::fail(format!("role {role}: {}", problems.join("; ")))
                }
            }));
        }
        if selected("app.pods", filters) {
            checks.push(Check::new("app.pods", r, async move {
                match c.failing_pods().await {
                    Ok(p) if p.is_empty() => Outcome::pass("no pod crash-looping"),
                    Ok(p) if retired(targets, &c.target().region).await => Outcome::warn(format!(
                        "{RETIRED}; {}",
                        p.iter()
                            .map(|(pod, why)| format!("pod/{pod}: {why}"))
                            .collect::<Vec<_>>()
                            .join("; ")
                    )),
                    Ok(p) => Outcome::fail(
                        p.iter()
                            .map(|(pod, why)| format!("pod/{pod}: {why}"))
                            .collect::<Vec<_>>()
                            .join("; "),
                    ),
                    Err(e) => Outcome::fail(e.to_string()),
                }
            }));
        }
        if selected("app.health", filters) {
            let ingress = config.region(region).ingress.clone();
            checks.push(Check::new("app.health", r, async move {
                let Some(ingress) = ingress else {
                    return Outcome::skip(format!(
                        "regions.{}.ingress is not set",
                        c.target().region
                    ));
                };
                let addr = if ingress.contains(':') {
                    ingress.clone()
                } else {
                    format!("{ingress}:80")
                };
                match http_get(&addr, "/health/ready").await {
                    Ok((200, body)) => Outcome::pass(format!(
                        "http://{addr}/health/ready: 200 {}",
                        one_line(&body)
                    )),
                    other => {
                        let why = match other {
                            Ok((code, body)) => format!("{code} {}", one_line(&body)),
                            Err(e) => e,
                        };
                        if retired(targets, &c.target().region).await {
                            Outcome::warn(format!("{RETIRED}; http://{addr}/health/ready: {why}"))
                        } else {
                            Outcome::fail(format!("http://{addr}/health/ready: {why}"))
                        }
                    }
                }
            }));
        }
    }
    if selected("images.same", filters) && regions.len() == 2 {
        if let (Some(p), Some(d)) = (targets.clusters.get("primary"), targets.clusters.get("dr")) {
            checks.push(Check::new("images.same", None, async move {
                let mut diffs = Vec::new();
                for name in &app.deployments {
                    let (a, b) = (
                        p.images(RolloutKind::Deployment, name).await,
                        d.images(RolloutKind::Deployment, name).await,
                    );
                    match (a, b) {
                        (Ok(Some(a)), Ok(Some(b))) if a == b => {}
                        (Ok(Some(a)), Ok(Some(b))) => diffs.push(format!(
                            "deployment/{name}: primary runs {} but dr runs {}",
                            a.join(","),
                            b.join(",")
                        )),
                        (Ok(None), _) => {
                            diffs.push(format!("deployment/{name} missing in primary"))
                        }
                        (_, Ok(None)) => diffs.push(format!("deployment/{name} missing in dr")),
                        (Err(e), _) | (_, Err(e)) => diffs.push(e.to_string()),
                    }
                }
                if diffs.is_empty() {
                    Outcome::pass("both regions run the same images")
                } else {
                    Outcome::fail(diffs.join("; "))
                }
            }));
        }
    }
    if !targets.databases.is_empty() {
        database_checks(config, targets, regions, filters, &mut checks);
    }
    if let Some(e) = &targets.dns_error {
        for name in ["dns.record", "dns.authoritative", "dns.ttl"] {
            if selected(name, filters) {
                let e = e.clone();
                checks.push(Check::new(name, None, async move { Outcome::fail(e) }));
            }
        }
    }
    if let Some(dns) = &targets.dns {
        let fqdn = dns.config().fqdn();
        if selected("dns.record", filters) {
            let fqdn = fqdn.clone();
            checks.push(Check::new("dns.record", None, async move {
                let active = match active_app_region(targets, &app.configmap).await {
                    Ok(r) => r,
                    Err(e) => return Outcome::fail(e),
                };
                match dns.show().await {
                    Err(e) => Outcome::fail(e.to_string()),
                    Ok(r) => match &r.active_region {
                        Some(region) if *region == active => Outcome::pass(format!(
                            "{fqdn} {} -> {} (region {region}, the active region)",
                            r.record_type,
                            r.values.join(",")
                        )),
                        Some(region) => Outcome::fail(format!(
                            "{fqdn} points at region {region} ({}) but the active region is {active}",
                            r.values.join(",")
                        )),
                        None => Outcome::fail(format!(
                            "{fqdn} -> {} is no configured region's target (active region: {active})",
                            r.values.join(",")
                        )),
                    },
                }
            }));
        }
        if selected("dns.authoritative", filters) {
            let fqdn = fqdn.clone();
            checks.push(Check::new("dns.authoritative", None, async move {
                match dns.show().await {
                    Err(e) => Outcome::fail(e.to_string()),
                    Ok(r) if r.in_sync => Outcome::pass(format!(
                        "{} name server(s) serve {fqdn} -> {}",
                        r.authoritative.len(),
                        r.values.join(",")
                    )),
                    Ok(r) => Outcome::fail(match r.authoritative_error {
                        Some(e) => format!("cannot ask the name servers of {fqdn}: {e}"),
                        None => format!(
                            "the name servers do not all serve what Azure holds for {fqdn} ({}): {}",
                            r.values.join(","),
                            serde_json::to_string(&r.authoritative).unwrap_or_default()
                        ),
                    }),
                }
            }));
        }
        if selected("dns.ttl", filters) {
            let budget = targets.rto_budget_secs;
            checks.push(Check::new("dns.ttl", None, async move {
                match dns.show().await {
                    Err(e) => Outcome::fail(e.to_string()),
                    Ok(r) if r.ttl <= budget => Outcome::pass(format!("TTL {} s, within the RTO budget of {budget} s", r.ttl)),
                    Ok(r) => Outcome::warn(format!(
                        "TTL {} s: after a switch clients may use the old address for up to {} s, above the RTO budget of {budget} s; lower it ahead of a planned failover: drdctl dns prepare --ttl 60",
                        r.ttl, r.ttl
                    )),
                }
            }));
        }
    }
    checks
}

fn database_checks<'a>(
    config: &'a Config,
    targets: &'a Targets,
    regions: &[String],
    filters: &[String],
    checks: &mut Vec<Check<'a>>,
) {
    let app = &config.app;
    if selected("db.primary", filters) && regions.len() == 2 {
        checks.push(Check::new("db.primary", None, async move {
            let seen = targets.observed().await;
            let writable: Vec<&str> = seen
                .iter()
                .filter(|(_, r)| r.as_ref().is_ok_and(|(n, _)| writable(n)))
                .map(|(r, _)| r.as_str())
                .collect();
            let unreachable: Vec<String> = seen
                .iter()
                .filter_map(|(r, s)| s.as_ref().err().map(|e| format!("{r}: {e}")))
                .collect();
            match writable.as_slice() {
                [one] if unreachable.is_empty() => Outcome::pass(format!("exactly one writable primary: {one}")),
                [one] => Outcome::warn(format!(
                    "{one} is the only writable primary seen; the other region cannot be checked ({}), so a second primary cannot be ruled out",
                    unreachable.join("; ")
                )),
                [] => Outcome::fail(format!(
                    "no writable primary: the application cannot write{}",
                    if unreachable.is_empty() { String::new() } else { format!(" ({})", unreachable.join("; ")) }
                )),
                many => Outcome::fail(format!(
                    "split brain: {} all accept writes; fence all but one now",
                    many.join(" and ")
                )),
            }
        }));
    }
    for region in regions {
        let r = Some(region.as_str());
        if selected("db.role", filters) {
            let region = region.clone();
            checks.push(Check::new("db.role", r, async move {
                let seen = targets.observed().await;
                let node = match seen.get(&region) {
                    Some(Ok((n, _))) => n,
                    Some(Err(e)) if retired(targets, &region).await => {
                        return Outcome::warn(format!("{RETIRED}; {e}"))
                    }
                    Some(Err(e)) => return Outcome::fail(e.clone()),
                    None => return Outcome::skip("no database configured"),
                };
                let Some(c) = targets.clusters.get(&region) else {
                    return Outcome::skip("no cluster");
                };
                let role = match app_role(c, &app.configmap).await {
                    Ok(r) => r,
                    Err(e) => return Outcome::fail(e),
                };
                let expected = if role == "active" {
                    DbRole::Primary
                } else {
                    DbRole::Standby
                };
                let mut detail = format!(
                    "app role {role}, database {} on timeline {}",
                    node.role, node.timeline
                );
                if node.fenced {
                    detail.push_str(" (fenced: writes refused)");
                }
                if node.role == expected {
                    Outcome::pass(detail)
                } else {
                    Outcome::fail(format!(
                        "configmap/{} says {role} but the database is a {}: {detail}",
                        app.configmap, node.role
                    ))
                }
            }));
        }
        if selected("db.standby", filters) {
            let region = region.clone();
            checks.push(Check::new("db.standby", r, async move {
                let seen = targets.observed().await;
                match seen.get(&region) {
                    Some(Ok((n, _))) if n.role == DbRole::Primary => {
                        Outcome::skip("primary: nothing to stream")
                    }
                    Some(Ok((n, _))) => match &n.wal_receiver {
                        Some(w) if w.status == "streaming" => Outcome::pass(format!(
                            "streaming from {}",
                            w.sender.as_deref().unwrap_or("the primary")
                        )),
                        Some(w) => Outcome::fail(format!(
                            "standby in region {region} is not streaming (receiver: {})",
                            w.status
                        )),
                        None => Outcome::fail(format!(
                            "standby in region {region} has no WAL receiver: it is not replicating"
                        )),
                    },
                    Some(Err(e)) if retired(targets, &region).await => {
                        Outcome::warn(format!("{RETIRED}; {e}"))
                    }
                    Some(Err(e)) => Outcome::fail(e.clone()),
                    None => Outcome::skip("no database configured"),
                }
            }));
        }
    }
    if selected("db.lag", filters) && regions.len() == 2 {
        checks.push(Check::new("db.lag", None, async move {
            let seen = targets.observed().await;
            let nodes: Vec<&NodeStatus> = seen.values().filter_map(|r| r.as_ref().ok().map(|(n, _)| n)).collect();
            let primary = nodes.iter().find(|n| n.role == DbRole::Primary);
            let standby = nodes.iter().find(|n| n.role == DbRole::Standby);
            let (Some(p), Some(s)) = (primary, standby) else {
                for r in ["primary", "dr"] {
                    if retired(targets, r).await {
                        return Outcome::warn(format!("no standby to measure: {r} is {RETIRED}"));
                    }
                }
                return Outcome::fail("lag cannot be measured: needs one primary and one reachable standby");
            };
            let (Some(cur), Some(rep)) = (p.current_lsn, s.replay_lsn) else {
                return Outcome::fail("lag cannot be measured: LSNs unavailable");
            };
            let bytes = cur.bytes_since(rep);
            let seconds = s.local_lag.as_ref().map_or(0.0, |l| l.seconds);
            let detail = format!(
                "standby {} is {} ({bytes} bytes) and {seconds:.1}s behind {} (bounds {} bytes, {}s)",
                s.region,
                drd_db::human_bytes(bytes),
                p.region,
                targets.max_lag_bytes,
                targets.max_lag_seconds
            );
            if bytes > targets.max_lag_bytes || seconds > targets.max_lag_seconds {
                Outcome::fail(detail)
            } else {
                Outcome::pass(detail)
            }
        }));
    }
    if selected("db.slot", filters) && regions.len() == 2 {
        checks.push(Check::new("db.slot", None, async move {
            let seen = targets.observed().await;
            let Some(p) = seen.values().filter_map(|r| r.as_ref().ok().map(|(n, _)| n)).find(|n| n.role == DbRole::Primary) else {
                return Outcome::fail("no reachable primary to hold the replication slot");
            };
            match p.slots.iter().find(|s| s.name == "dr_slot") {
                Some(s) if s.wal_status.as_deref() == Some("lost") => Outcome::fail(format!(
                    "slot dr_slot on {} is lost: the standby needs a fresh clone",
                    p.region
                )),
                Some(s) => Outcome::pass(format!(
                    "slot dr_slot on {} ({})",
                    p.region,
                    if s.active { "in use" } else { "not in use" }
                )),
                None => Outcome::fail(format!(
                    "the primary ({}) has no replication slot dr_slot: WAL the standby needs may be removed",
                    p.region
                )),
            }
        }));
    }
    if selected("db.schema", filters) && regions.len() == 2 {
        checks.push(Check::new("db.schema", None, async move {
            let seen = targets.observed().await;
            let versions: Vec<(String, Vec<i32>)> = seen
                .iter()
                .filter_map(|(r, s)| s.as_ref().ok().map(|(_, v)| (r.clone(), v.clone())))
                .collect();
            if versions.len() < 2 {
                for r in ["primary", "dr"] {
                    if retired(targets, r).await {
                        return Outcome::warn(format!(
                            "schema versions cannot be compared: {r} is {RETIRED}"
                        ));
                    }
                }
                return Outcome::fail(
                    "schema versions cannot be compared: a region is unreachable",
                );
            }
            if versions[0].1 == versions[1].1 {
                Outcome::pass(format!(
                    "schema versions {:?} in both regions",
                    versions[0].1
                ))
            } else {
                Outcome::fail(format!(
                    "schema versions differ: {} has {:?}, {} has {:?}",
                    versions[0].0, versions[0].1, versions[1].0, versions[1].1
                ))
            }
        }));
    }
}

fn one_line(s: &str) -> String {
    let s: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.len() > 160 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(160).map_or(s.len(), |(i, _)| i)]
        )
    } else {
        s
    }
}

/// An HTTP GET of `http://{addr}{path}` on a fresh connection: (status, body).
pub async fn http_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .user_agent("drdctl-verify")
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|e| e.to_string())?;
    let resp = client
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .map_err(|e| match e {
            e if e.is_timeout() => "timed out".to_string(),
            e if e.is_connect() => format!("cannot connect: {e}"),
            e => format!("not an HTTP answer: {e}"),
        })?;
    let code = resp.status().as_u16();
    let body = resp.text().await.map_err(|e| e.to_string())?;
    Ok((code, body))
}
