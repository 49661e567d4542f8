//! Production as `drdctl practice` must leave it: both regions' objects in the application's
//! namespace (and the cluster's namespaces), replication, the DNS record. Observed before and
//! after, compared; and the DR standby sampled while the practice runs.
//!
//! An object is compared by what defines it (uid, generation, labels, annotations, spec,
//! data), not by its status or resourceVersion, which controllers move on their own. Secrets
//! are compared by a digest computed here and never shown.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use anyhow::Context;
use drd_db::{Database, DbRole, PgDatabase};
use drd_kube::KubeCluster;
use serde::Serialize;
use serde_json::Value;

use crate::config::Config;

/// The kinds compared, in the application's namespace.
const KINDS: &[(&str, &str)] = &[
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "Service"),
    ("v1", "Pod"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "ReplicaSet"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("networking.k8s.io/v1", "Ingress"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
];

/// One observation of production.
#[derive(Debug, Clone, Serialize)]
pub struct Production {
    /// Per region: `Kind/name` -> digest of what defines it.
    #[serde(skip)]
    pub objects: BTreeMap<String, BTreeMap<String, u64>>,
    /// Per region: how many objects.
    pub counts: BTreeMap<String, usize>,
    /// Per region: the replication facts that must not move (role, timeline, system,
    /// WAL receiver / connected standbys, slots).
    pub replication: BTreeMap<String, Vec<String>>,
    /// The DNS record (values, TTL, ETag), when DNS is configured.
    pub dns: Option<String>,
}

impl Production {
    pub async fn observe(config: &Config) -> anyhow::Result<Production> {
        let mut p = Production {
            objects: BTreeMap::new(),
            counts: BTreeMap::new(),
            replication: BTreeMap::new(),
            dns: None,
        };
        for region in ["primary", "dr"] {
            let c = KubeCluster::connect(config.kube_target(region)).await?;
            let ns = config.region(region).namespace.clone();
            let mut objects = BTreeMap::new();
            for (api_version, kind) in KINDS {
                for o in c.list_objects(api_version, kind, Some(&ns)).await? {
                    // The audit trail's records are appended by every run (this one too).
                    if o["metadata"]["labels"]["drdctl.io/history"].is_string() {
                        continue;
                    }
                    let name = o["metadata"]["name"].as_str().unwrap_or_default();
                    objects.insert(format!("{kind}/{name}"), digest(&o));
                }
            }
            for n in c.list_objects("v1", "Namespace", None).await? {
                if n["metadata"]["labels"][super::LABEL].is_string() {
                    continue;
                }
                let name = n["metadata"]["name"].as_str().unwrap_or_default();
                objects.insert(format!("Namespace/{name}"), digest(&n));
            }
            p.counts.insert(region.into(), objects.len());
            p.objects.insert(region.into(), objects);
            let db = super::super::db::database(config, region, &c);
            p.replication
                .insert(region.into(), replication_facts(&db).await);
        }
        if config.dns.is_some() {
            let cfg = super::super::dns::dns_config(config)?;
            let hint = "practice compares the DNS record before and after; give drdctl Azure \
                        credentials (AZURE_* variables, see docs/dns.md)";
            let ops = drd_dns::DnsOps::from_env(&cfg).context(hint)?;
            let rs = ops.dns().read().await.context(hint)?;
            p.dns = Some(format!(
                "{} {} {} TTL {} (etag {})",
                rs.fqdn,
                rs.record_type,
                rs.value_text(),
                rs.ttl,
                rs.etag
            ));
        }
        Ok(p)
    }

    pub fn summary(&self) -> String {
        format!(
            "{} objects in primary, {} in dr; {}; dns {}",
            self.counts.get("primary").unwrap_or(&0),
            self.counts.get("dr").unwrap_or(&0),
            self.replication
                .get("dr")
                .map(|r| r.join(", "))
                .unwrap_or_default(),
            self.dns.as_deref().unwrap_or("not configured")
        )
    }
}

async fn replication_facts(db: &PgDatabase) -> Vec<String> {
    match db.status().await {
        Err(e) => vec![format!("unreadable: {e}")],
        Ok(s) => {
            let mut f = vec![
                format!("{} on timeline {}", s.role, s.timeline),
                format!("system {}", s.system_identifier),
            ];
            if let Some(w) = &s.wal_receiver {
                f.push(format!(
                    "WAL receiver {} from {}",
                    w.status,
                    w.sender.as_deref().unwrap_or("?")
                ));
            }
            for r in &s.replication {
                f.push(format!("standby {} {}", r.application_name, r.state));
            }
            for sl in &s.slots {
                f.push(format!(
                    "slot {} {}",
                    sl.name,
                    if sl.active { "active" } else { "inactive" }
                ));
            }
            f
        }
    }
}

/// A digest of what defines an object (not its status nor resourceVersion).
fn digest(o: &Value) -> u64 {
    let m = &o["metadata"];
    let defining = serde_json::json!({
        "uid": m["uid"], "generation": m["generation"], "labels": m["labels"],
        "annotations": m["annotations"], "spec": o["spec"], "data": o["data"],
        "binaryData": o["binaryData"], "type": o["type"],
    });
    let mut h = std::collections::hash_map::DefaultHasher::new();
    defining.to_string().hash(&mut h);
    h.finish()
}

/// Before and after, side by side.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub identical: bool,
    /// Objects per region, before and after.
    pub objects: BTreeMap<String, (usize, usize)>,
    pub replication_before: BTreeMap<String, Vec<String>>,
    pub replication_after: BTreeMap<String, Vec<String>>,
    pub dns_before: Option<String>,
    pub dns_after: Option<String>,
    /// What differs (`dr: changed Deployment/frontend-api`, ...); empty when identical.
    pub differences: Vec<String>,
}

impl Comparison {
    pub fn summary(&self) -> String {
        if self.identical {
            format!(
                "identical: {} objects, replication and DNS as before",
                self.objects.values().map(|(_, a)| a).sum::<usize>()
            )
        } else {
            format!("DIFFERENT: {}", self.differences.join("; "))
        }
    }

    /// Lines for the text report.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (region, (b, a)) in &self.objects {
            out.push(format!("{region}: {b} objects before, {a} after"));
        }
        for (region, facts) in &self.replication_after {
            let same = self.replication_before.get(region) == Some(facts);
            out.push(format!(
                "{region} database: {} ({})",
                facts.join(", "),
                if same { "as before" } else { "CHANGED" }
            ));
        }
        if let Some(d) = &self.dns_after {
            out.push(format!(
                "dns: {d} ({})",
                if self.dns_before.as_ref() == Some(d) {
                    "as before"
                } else {
                    "CHANGED"
                }
            ));
        }
        out.extend(self.differences.iter().cloned());
        out
    }
}

/// Observes production until it is as `before` (every 500 ms, at most `settle`): the
/// comparison of the last observation.
pub async fn observe_until_same(
    config: &Config,
    before: &Production,
    settle: Duration,
) -> anyhow::Result<Comparison> {
    let deadline = std::time::Instant::now() + settle;
    loop {
        let cmp = compare(before, &Production::observe(config).await?);
        if cmp.identical || std::time::Instant::now() > deadline {
            return Ok(cmp);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub fn compare(before: &Production, after: &Production) -> Comparison {
    let mut differences = Vec::new();
    let mut objects = BTreeMap::new();
    for (region, b) in &before.objects {
        let empty = BTreeMap::new();
        let a = after.objects.get(region).unwrap_or(&empty);
        objects.insert(region.clone(), (b.len(), a.len()));
        for (k, d) in b {
            match a.get(k) {
                None => differences.push(format!("{region}: {k} gone")),
                Some(x) if x != d => differences.push(format!("{region}: {k} changed")),
                _ => {}
            }
        }
        for k in a.keys().filter(|k| !b.contains_key(*k)) {
            differences.push(format!("{region}: {k} new"));
        }
    }
    for (region, facts) in &before.replication {
        if after.replication.get(region) != Some(facts) {
            differences.push(format!(
                "{region} database: {} -> {}",
                facts.join(", "),
                after
                    .replication
                    .get(region)
                    .map(|f| f.join(", "))
                    .unwrap_or_default()
            ));
        }
    }
    if before.dns != after.dns {
        differences.push(format!(
            "dns: {} -> {}",
            before.dns.as_deref().unwrap_or("-"),
            after.dns.as_deref().unwrap_or("-")
        ));
    }
    Comparison {
        identical: differences.is_empty(),
        objects,
        replication_before: before.replication.clone(),
        replication_after: after.replication.clone(),
        dns_before: before.dns.clone(),
        dns_after: after.dns.clone(),
        differences,
    }
}

/// Samples of the DR standby while the practice runs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamingSummary {
    pub samples: u64,
    pub not_streaming: u64,
    /// The first sample that was not a streaming standby, if any.
    pub first_problem: Option<String>,
}

/// Asks the DR database every 500 ms whether it is a standby streaming WAL.
pub struct StreamingMonitor {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<StreamingSummary>,
}

impl StreamingMonitor {
    pub fn start(db: PgDatabase) -> StreamingMonitor {
        let (stop, mut rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut s = StreamingSummary::default();
            loop {
                let problem = match db.status().await {
                    Ok(st) if st.role == DbRole::Standby => match &st.wal_receiver {
                        Some(w) if w.status == "streaming" => None,
                        Some(w) => Some(format!("WAL receiver {}", w.status)),
                        None => Some("no WAL receiver".into()),
                    },
                    Ok(st) => Some(format!("a {}", st.role)),
                    Err(e) => Some(format!("unreadable: {e}")),
                };
                s.samples += 1;
                if let Some(p) = problem {
                    s.not_streaming += 1;
                    s.first_problem.get_or_insert(p);
                }
                if *rx.borrow() {
                    return s;
                }
                tokio::select! {
                    _ = rx.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        });
        StreamingMonitor { stop, task }
    }

    /// Takes one last sample and returns the summary.
    pub async fn stop(self) -> StreamingSummary {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn observed(objects: &[(&str, Value)], dr_facts: &[&str], dns: &str) -> Production {
        Production {
            objects: BTreeMap::from([(
                "dr".to_string(),
                objects
                    .iter()
                    .map(|(k, v)| (k.to_string(), digest(v)))
                    .collect(),
            )]),
            counts: BTreeMap::from([("dr".to_string(), objects.len())]),
            replication: BTreeMap::from([(
                "dr".to_string(),
                dr_facts.iter().map(|s| s.to_string()).collect(),
            )]),
            dns: Some(dns.to_string()),
        }
    }

    #[test]
    fn status_and_resource_versions_do_not_count_definitions_do() {
        let d = json!({"metadata": {"uid": "u1", "generation": 3, "resourceVersion": "10"},
                       "spec": {"replicas": 1}, "status": {"readyReplicas": 1}});
        let mut moved = d.clone();
        moved["metadata"]["resourceVersion"] = json!("11");
        moved["status"]["readyReplicas"] = json!(0);
        assert_eq!(digest(&d), digest(&moved));
        let mut scaled = d.clone();
        scaled["spec"]["replicas"] = json!(2);
        assert_ne!(digest(&d), digest(&scaled));
        let mut recreated = d.clone();
        recreated["metadata"]["uid"] = json!("u2");
        assert_ne!(digest(&d), digest(&recreated));
    }

    #[test]
    fn every_difference_is_named() {
        let cm = json!({"metadata": {"uid": "c"}, "data": {"role": "standby"}});
        let before = observed(
            &[
                ("ConfigMap/app-config", cm.clone()),
                ("Pod/a", json!({"metadata": {"uid": "a"}})),
            ],
            &["standby on timeline 1"],
            "app A 127.0.0.2 TTL 60",
        );
        assert!(compare(&before, &before).identical);
        let mut changed = cm;
        changed["data"]["role"] = json!("active");
        let after = observed(
            &[
                ("ConfigMap/app-config", changed),
                ("Pod/b", json!({"metadata": {"uid": "b"}})),
            ],
            &["standby on timeline 1", "slot pg_basebackup_7 active"],
            "app A 127.0.0.3 TTL 60",
        );
        let cmp = compare(&before, &after);
        assert!(!cmp.identical);
        assert_eq!(
            cmp.differences,
            [
                "dr: ConfigMap/app-config changed",
                "dr: Pod/a gone",
                "dr: Pod/b new",
                "dr database: standby on timeline 1 -> standby on timeline 1, slot pg_basebackup_7 active",
                "dns: app A 127.0.0.2 TTL 60 -> app A 127.0.0.3 TTL 60",
            ]
        );
    }
}
