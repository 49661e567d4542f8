//! `drdctl practice`: rehearse a failover in the DR cluster without touching production.
//!
//! In a throwaway namespace `drdctl-practice-<id>` of the DR cluster: NetworkPolicies first
//! (nothing in, nothing out but the namespace itself and, until the copy is made, the DR
//! standby), then a copy of the DR standby's data (`copy.sh`: a base backup of the standby,
//! started as a standby of nothing), its freshness read (`pg_last_xact_replay_timestamp`),
//! promoted there (`pg_promote`), the three services started against it from the images DR
//! runs, and the seed's checks through port-forward (info, a read of the newest data, a
//! write). The practice RTO is the time from the start to the first accepted write.
//!
//! Production is observed before and after (both regions' objects, replication, the DNS
//! record) and compared; the DR standby is sampled throughout (it must keep streaming).
//! Then the namespace is deleted and awaited (unless `--keep`; `drdctl practice cleanup`
//! removes kept ones). The run goes to the audit trail like every mutating command.

mod production;

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use drd_db::{Database, DbRole, PgDatabase, RegionConfig};
use drd_kube::KubeCluster;
use serde::Serialize;
use serde_json::{json, Value};

use crate::cli::Output;
use crate::config::Config;
use production::{Comparison, Production, StreamingMonitor};

/// The label on a practice namespace (its value: the run's id).
pub const LABEL: &str = "drdctl.io/practice";
/// Practice namespaces are `drdctl-practice-<id>`.
pub const PREFIX: &str = "drdctl-practice-";
/// The EXAMPLES section of `drdctl practice --help`.
pub const EXAMPLES: &str = "Examples:\n  drdctl practice                            # rehearse, report, clean up\n  drdctl -o json practice | jq '.rto_secs, .freshness'\n  drdctl practice --keep                     # leave it for manual checks\n  kubectl --context dr -n drdctl-practice-<id> get pods\n  drdctl practice cleanup                    # remove kept practice namespaces";
/// The EXAMPLES section of `drdctl practice cleanup --help`.
pub const CLEANUP_EXAMPLES: &str = "Examples:\n  drdctl practice cleanup                    # every kept practice namespace\n  drdctl practice cleanup --id 20261203-051523-117\n  drdctl -o json practice cleanup";
/// How long production may take to be as before once the practice is over.
const SETTLE: Duration = Duration::from_secs(30);
/// The copy's container command (run as `bash -c`).
pub const COPY_SCRIPT: &str = include_str!("copy.sh");

/// `drdctl practice [--keep] | practice cleanup [--id ID]`.
#[derive(Args, Debug, Clone)]
#[command(args_conflicts_with_subcommands = true)]
pub struct PracticeArgs {
    #[command(subcommand)]
    pub action: Option<PracticeAction>,
    /// Leave the practice namespace running for manual checks (remove it later with
    /// `drdctl practice cleanup`).
    #[arg(long)]
    pub keep: bool,
    /// How long to wait for the copy, and then for the services, in seconds.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub wait: u64,
}

#[derive(Subcommand, Debug, Clone)]
pub enum PracticeAction {
    /// Remove practice namespaces left by `--keep` (all of them, or the one of `--id`).
    ///
    /// Only namespaces labelled drdctl.io/practice are deleted (with everything in it), and
    /// each is awaited until it is gone. Recorded in the audit trail.
    #[command(after_help = CLEANUP_EXAMPLES)]
    Cleanup {
        /// The run's id (`drdctl-practice-<id>`); default: every practice namespace.
        #[arg(long)]
        id: Option<String>,
    },
}

/// One step of the run, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub name: String,
    /// `done`, `failed`, `skipped`.
    pub state: String,
    pub detail: String,
    /// Seconds since the start when the step ended.
    pub at_secs: f64,
}

/// One check of the practice application.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// The data's freshness: the last commit the copy replayed.
#[derive(Debug, Clone, Serialize)]
pub struct Freshness {
    /// `pg_last_xact_replay_timestamp()` at the copy (before its promotion).
    pub last_replayed_commit: Option<DateTime<Utc>>,
    /// How old that commit was when the copy was read, in seconds.
    pub age_secs: Option<f64>,
}

/// What `drdctl practice` reports (`-o json` prints it).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub id: String,
    pub namespace: String,
    pub started: DateTime<Utc>,
    /// `passed`, or `failed: ...`.
    pub result: String,
    pub passed: bool,
    /// Start to the first write the practice application accepted, in seconds.
    pub rto_secs: Option<f64>,
    pub freshness: Freshness,
    pub checks: Vec<CheckReport>,
    pub steps: Vec<StepReport>,
    /// Production before and after, compared.
    pub production: Option<Comparison>,
    /// Samples of the DR standby during the run: how many, and how many not streaming.
    pub dr_streaming: production::StreamingSummary,
    /// `removed`, `kept`, or what failed.
    pub cleanup: String,
    pub total_secs: f64,
}

struct Run<'a> {
    config: &'a Config,
    t0: Instant,
    steps: Vec<StepReport>,
    dr: KubeCluster,
    ns: String,
    /// This run created the namespace (only then does it delete it).
    created: bool,
}

impl Run<'_> {
    fn step(&mut self, name: &str, state: &str, detail: impl Into<String>) {
        let detail = detail.into();
        let at = self.t0.elapsed().as_secs_f64();
        eprintln!("  {name:<20} {state}: {detail} ({at:.1}s)");
        self.steps.push(StepReport {
            name: name.into(),
            state: state.into(),
            detail,
            at_secs: at,
        });
    }

    fn app_ns(&self) -> String {
        self.config.region("dr").namespace.clone()
    }
}

/// `drdctl practice`, `drdctl practice cleanup`: the exit code.
pub async fn run(config: &Config, args: PracticeArgs, output: Output) -> anyhow::Result<u8> {
    if let Some(PracticeAction::Cleanup { id }) = &args.action {
        return cleanup_command(config, id.as_deref(), output).await;
    }
    let started = Utc::now();
    let id = started.format("%Y%m%d-%H%M%S-%3f").to_string();
    let ns = format!("{PREFIX}{id}");
    let dr = KubeCluster::connect(config.kube_target("dr")).await?;
    let mut run = Run {
        config,
        t0: Instant::now(),
        steps: Vec::new(),
        dr,
        ns: ns.clone(),
        created: false,
    };
    eprintln!("practice {id}: in namespace {ns} of the DR cluster");
    let mut report = Report {
        id: id.clone(),
        namespace: ns.clone(),
        started,
        result: String::new(),
        passed: false,
        rto_secs: None,
        freshness: Freshness {
            last_replayed_commit: None,
            age_secs: None,
        },
        checks: Vec::new(),
        steps: Vec::new(),
        production: None,
        dr_streaming: Default::default(),
        cleanup: String::new(),
        total_secs: 0.0,
    };
    let wait = Duration::from_secs(args.wait);

    // Preflight: DR's database must be a standby (practice copies the standby).
    let dr_db = super::db::database(config, "dr", &run.dr);
    let status = dr_db
        .status()
        .await
        .context("reading the DR database (practice copies the DR standby)")?;
    if status.role != DbRole::Standby {
        bail!(
            "the DR database is a {} (timeline {}), not a standby: practice copies the DR standby \
             while production runs in the primary region; after a failover, fail back first",
            status.role,
            status.timeline
        );
    }
    run.step(
        "preflight",
        "done",
        format!(
            "DR database is a standby on timeline {}{}",
            status.timeline,
            status
                .wal_receiver
                .as_ref()
                .map(|w| format!(", {}", w.status))
                .unwrap_or_default()
        ),
    );
    let before = Production::observe(config).await?;
    run.step("observe-before", "done", before.summary());
    let monitor = StreamingMonitor::start(super::db::database(config, "dr", &run.dr));

    // Ctrl-C stops the practice where it is; the clean-up below still runs (a second Ctrl-C
    // ends drdctl at once: `drdctl practice cleanup` then removes what is left).
    let mut interrupted = false;
    let outcome = tokio::select! {
        r = practice(&mut run, &mut report, wait) => r,
        _ = tokio::signal::ctrl_c() => {
            interrupted = true;
            eprintln!("interrupted: cleaning up (Ctrl-C again to stop at once)");
            Err(anyhow!("interrupted (Ctrl-C)"))
        }
    };
    let ns_left = ns.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("stopped: {ns_left} may be left; `drdctl practice cleanup` removes it");
            std::process::exit(i32::from(crate::exit::INTERRUPTED));
        }
    });
    let mut failures = Vec::new();
    if let Err(e) = &outcome {
        run.step("stopped", "failed", crate::chain(e));
        failures.push(crate::chain(e));
    }
    for c in report.checks.iter().filter(|c| !c.passed) {
        failures.push(format!("check {} failed: {}", c.name, c.detail));
    }

    let mut code = crate::exit::OK;
    if !run.created {
        report.cleanup = "nothing to remove".into();
    } else if args.keep {
        report.cleanup = "kept".into();
        run.step(
            "cleanup",
            "skipped",
            format!("--keep: {ns} stays; remove it with `drdctl practice cleanup --id {id}`"),
        );
    } else {
        match remove_namespace(&run.dr, &ns, wait).await {
            Ok(d) => {
                report.cleanup = "removed".into();
                run.step("cleanup", "done", d);
            }
            Err(e) => {
                let msg = crate::chain(&e);
                report.cleanup = format!("failed: {msg}");
                run.step(
                    "cleanup",
                    "failed",
                    format!("{msg}; run `drdctl practice cleanup --id {id}`"),
                );
                failures.push(format!("clean-up failed: {msg}"));
                code = crate::exit::STOPPED_MIDWAY;
            }
        }
    }
    // Production after the practice (and its clean-up): observed until it is as before, for
    // at most SETTLE (what the practice's teardown still does, e.g. a base backup being
    // stopped, ends by then), then compared.
    match production::observe_until_same(config, &before, SETTLE).await {
        Ok(cmp) => {
            run.step(
                "observe-after",
                if cmp.identical { "done" } else { "failed" },
                cmp.summary(),
            );
            if !cmp.identical {
                failures.push(format!(
                    "production changed: {}",
                    cmp.differences.join("; ")
                ));
            }
            report.production = Some(cmp);
        }
        Err(e) => failures.push(format!(
            "observing production afterwards: {}",
            crate::chain(&e)
        )),
    }
    // The DR standby, sampled from before the copy to after the clean-up.
    report.dr_streaming = monitor.stop().await;
    if report.dr_streaming.not_streaming > 0 || report.dr_streaming.samples == 0 {
        failures.push(format!(
            "the DR standby was not streaming in {} of {} samples{}",
            report.dr_streaming.not_streaming,
            report.dr_streaming.samples,
            report
                .dr_streaming
                .first_problem
                .as_ref()
                .map(|p| format!(" (first: {p})"))
                .unwrap_or_default()
        ));
    }
    report.passed = failures.is_empty();
    report.result = if report.passed {
        "passed".into()
    } else {
        format!("failed: {}", failures.join("; "))
    };
    if !report.passed && code == crate::exit::OK {
        code = if interrupted {
            crate::exit::INTERRUPTED
        } else {
            crate::exit::FAILED
        };
    }
    report.total_secs = run.t0.elapsed().as_secs_f64();
    report.steps = run.steps.clone();

    let mut record = crate::audit::Record::new("practice", started);
    record.result = if report.passed {
        "done".into()
    } else {
        report.result.clone()
    };
    record.exit_code = code;
    record.plan = vec![
        format!("namespace {ns} in dr: NetworkPolicies, a copy of the DR standby, promoted"),
        "the three services from DR's images against it; info, read, write".into(),
        if args.keep {
            "keep the namespace".into()
        } else {
            "delete the namespace".into()
        },
    ];
    record.steps = report
        .steps
        .iter()
        .map(|s| crate::audit::Step {
            name: s.name.clone(),
            state: s.state.clone(),
            detail: s.detail.clone(),
        })
        .collect();
    crate::audit::write_or_warn(config, record).await;

    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Human => print!("{}", render(&report)),
    }
    Ok(code)
}

/// The steps between the observations: namespace to checks. Fills `report` as it goes.
async fn practice(run: &mut Run<'_>, report: &mut Report, wait: Duration) -> anyhow::Result<()> {
    let (ns, app_ns) = (run.ns.clone(), run.app_ns());
    let id = ns.trim_start_matches(PREFIX).to_string();
    // Namespace and isolation first: nothing runs before the policies exist.
    run.dr
        .create_object(&json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {
                LABEL: id, "app.kubernetes.io/managed-by": "drdctl"}},
        }))
        .await?;
    run.created = true;
    let policies = network_policies(&ns, &app_ns);
    for p in &policies {
        run.dr.create_object(p).await?;
    }
    run.step(
        "isolate",
        "done",
        format!(
            "namespace {ns}; NetworkPolicies {}",
            policies
                .iter()
                .map(|p| p["metadata"]["name"].as_str().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );

    // What the copy and the services need, from DR's live objects.
    let copied = copy_objects(run, &ns).await?;
    run.step("configure", "done", copied.join(", "));
    let sts = run
        .dr
        .get_object("apps/v1", "StatefulSet", Some(&app_ns), "postgresql")
        .await?
        .ok_or_else(|| anyhow!("dr: StatefulSet {app_ns}/postgresql not found: deploy first"))?;
    run.dr
        .create_object(&practice_statefulset(&sts, &ns, &app_ns))
        .await?;
    wait_pod_ready(&run.dr, &ns, "app=postgresql", wait)
        .await
        .context("the practice copy of the database")?;

    let db = practice_database(run);
    let probe = db.probe_copy().await?;
    let last = probe
        .last_replayed_commit
        .and_then(|s| DateTime::<Utc>::from_timestamp_micros((s * 1e6) as i64));
    report.freshness = Freshness {
        last_replayed_commit: last,
        age_secs: probe.last_replayed_commit.map(|t| (probe.now - t).max(0.0)),
    };
    if probe.primary_conninfo_set || probe.wal_receiver {
        bail!("the copy follows another server (primary_conninfo set or a WAL receiver running): stopped, it must be isolated");
    }
    run.step(
        "copy",
        "done",
        format!(
            "base backup of the DR standby, in recovery: {}; last replayed commit {}",
            probe.in_recovery,
            match (
                &report.freshness.last_replayed_commit,
                report.freshness.age_secs
            ) {
                (Some(t), Some(a)) => format!("{} ({a:.1}s old)", t.format("%H:%M:%S%.3fZ")),
                _ => "none (no commit replayed)".into(),
            }
        ),
    );
    // The copy is made: the way to the DR standby closes.
    run.dr
        .delete_object(
            "networking.k8s.io/v1",
            "NetworkPolicy",
            Some(&ns),
            "practice-copy-from-dr-standby",
        )
        .await?;
    let promoted = db.promote(Duration::from_secs(60)).await?;
    run.step(
        "promote",
        "done",
        format!(
            "promoted in isolation: timeline {} -> {}",
            promoted.timeline_before, promoted.timeline_after
        ),
    );

    let mut apps = Vec::new();
    for name in &run.config.app.deployments {
        let d = run
            .dr
            .get_object("apps/v1", "Deployment", Some(&app_ns), name)
            .await?
            .ok_or_else(|| anyhow!("dr: Deployment {app_ns}/{name} not found: deploy first"))?;
        apps.push(image_of(&d));
        run.dr.create_object(&practice_deployment(&d, &ns)).await?;
    }
    for name in &run.config.app.deployments {
        wait_pod_ready(&run.dr, &ns, &format!("app={name}"), wait)
            .await
            .with_context(|| format!("the practice {name}"))?;
    }
    run.step(
        "start-services",
        "done",
        format!("from DR's images: {}", apps.join(", ")),
    );

    let frontend = ready_pods(&run.dr, &ns, "app=frontend-api")
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no Ready frontend-api pod in {ns}"))?;
    let mut checks = checks(run, &frontend, &id).await;
    report.rto_secs = checks.1;
    checks.0.push(same_images(run, &apps).await);
    let passed = checks.0.iter().filter(|c| c.passed).count();
    let total = checks.0.len();
    report.checks = checks.0;
    run.step(
        "checks",
        if passed == total { "done" } else { "failed" },
        format!(
            "{passed}/{total} passed; first accepted write at {}",
            report
                .rto_secs
                .map(|s| format!("{s:.1}s"))
                .unwrap_or_else(|| "never".into())
        ),
    );
    Ok(())
}

/// The practice namespace's database, through port-forward to its `postgresql-0`.
fn practice_database(run: &Run<'_>) -> PgDatabase {
    let kube = crate::dbhost::KubeHost::new(&run.dr, run.config.pod_names("dr", &run.ns));
    PgDatabase::new(RegionConfig::port_forward("dr-practice", kube))
}

/// Default deny in and out; the namespace's pods talk to each other and to DNS; the copy may
/// reach the DR standby's PostgreSQL port until the copy is made (that policy is deleted
/// then). Nothing admits the ingress controller, the other region, or the real primary.
fn network_policies(ns: &str, app_ns: &str) -> Vec<Value> {
    let np = |name: &str, spec: Value| {
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": name, "namespace": ns, "labels": {LABEL: "true"}},
               "spec": spec})
    };
    vec![
        np(
            "practice-default-deny",
            json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        ),
        np(
            "practice-same-namespace",
            json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
                   "ingress": [{"from": [{"podSelector": {}}]}],
                   "egress": [{"to": [{"podSelector": {}}]}]}),
        ),
        np(
            "practice-dns",
            json!({"podSelector": {}, "policyTypes": ["Egress"],
                   "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                                       "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                               "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]}),
        ),
        np(
            "practice-copy-from-dr-standby",
            json!({"podSelector": {"matchLabels": {"app": "postgresql"}}, "policyTypes": ["Egress"],
                   "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": app_ns}},
                                       "podSelector": {"matchLabels": {"app": "postgresql"}}}],
                               "ports": [{"protocol": "TCP", "port": 5432}]}]}),
        ),
    ]
}

/// Metadata for a copy in `ns`: the name and labels, nothing of the original's identity.
fn fresh_meta(orig: &Value, ns: &str) -> Value {
    let mut labels = orig["metadata"]["labels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    labels[LABEL] = json!("true");
    json!({"name": orig["metadata"]["name"], "namespace": ns, "labels": labels})
}

/// Copies what the services and the copy need from DR's namespace: the database Secret (and
/// the optional auth Secret), app-config (role active: this is the practice's active
/// region), and the ClusterIP Services. Never an Ingress or a LoadBalancer.
async fn copy_objects(run: &Run<'_>, ns: &str) -> anyhow::Result<Vec<String>> {
    let app_ns = run.app_ns();
    let r = run.config.region("dr");
    let mut done = Vec::new();
    for name in [r.database.secret.as_str(), "app-auth"] {
        if let Some(s) = run
            .dr
            .get_object("v1", "Secret", Some(&app_ns), name)
            .await?
        {
            run.dr
                .create_object(&json!({"apiVersion": "v1", "kind": "Secret",
                    "metadata": fresh_meta(&s, ns), "type": s["type"], "data": s["data"]}))
                .await?;
            done.push(format!("secret/{name}"));
        }
    }
    let cm_name = &run.config.app.configmap;
    if let Some(cm) = run
        .dr
        .get_object("v1", "ConfigMap", Some(&app_ns), cm_name)
        .await?
    {
        let mut data = cm["data"].clone();
        data["role"] = json!("active");
        run.dr
            .create_object(&json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": fresh_meta(&cm, ns), "data": data}))
            .await?;
        done.push(format!("configmap/{cm_name} (role active)"));
    }
    for svc in run.dr.list_objects("v1", "Service", Some(&app_ns)).await? {
        let ty = svc["spec"]["type"].as_str().unwrap_or("ClusterIP");
        let name = svc["metadata"]["name"].as_str().unwrap_or_default();
        if ty != "ClusterIP" || name == "kubernetes" {
            continue;
        }
        let mut spec = json!({
            "selector": svc["spec"]["selector"],
            "ports": svc["spec"]["ports"],
        });
        if svc["spec"]["clusterIP"] == "None" {
            spec["clusterIP"] = json!("None");
            spec["publishNotReadyAddresses"] = svc["spec"]["publishNotReadyAddresses"].clone();
        }
        run.dr
            .create_object(&json!({"apiVersion": "v1", "kind": "Service",
                "metadata": fresh_meta(&svc, ns), "spec": spec}))
            .await?;
        done.push(format!("service/{name}"));
    }
    Ok(done)
}

/// DR's StatefulSet, in `ns`: the same image, running `copy.sh` (a base backup of
/// `postgresql.<app_ns>`, started standalone) instead of start.sh; no role or scripts volume;
/// its volumes deleted with it.
fn practice_statefulset(sts: &Value, ns: &str, app_ns: &str) -> Value {
    let mut spec = sts["spec"].clone();
    if let Some(o) = spec.as_object_mut() {
        o.remove("status");
    }
    spec["replicas"] = json!(1);
    spec["persistentVolumeClaimRetentionPolicy"] =
        json!({"whenDeleted": "Delete", "whenScaled": "Delete"});
    let tpl = &mut spec["template"];
    tpl["metadata"]["labels"][LABEL] = json!("true");
    if let Some(a) = tpl["metadata"]
        .get_mut("annotations")
        .and_then(Value::as_object_mut)
    {
        a.retain(|k, _| !k.starts_with("drdctl.io/") && !k.starts_with("kubectl.kubernetes.io/"));
    }
    let pod = &mut tpl["spec"];
    let keep_volume = |v: &Value| !matches!(v["name"].as_str(), Some("scripts" | "role"));
    if let Some(vols) = pod["volumes"].as_array_mut() {
        vols.retain(keep_volume);
    }
    let c = &mut pod["containers"][0];
    c["command"] = json!(["bash", "-c", COPY_SCRIPT]);
    if let Some(o) = c.as_object_mut() {
        o.remove("args");
    }
    if let Some(mounts) = c["volumeMounts"].as_array_mut() {
        mounts.retain(keep_volume);
    }
    let mut env: Vec<Value> = c["env"].as_array().cloned().unwrap_or_default();
    env.retain(|e| !matches!(e["name"].as_str(), Some("SOURCE_HOST" | "SOURCE_PORT")));
    env.push(
        json!({"name": "SOURCE_HOST", "value": format!("postgresql.{app_ns}.svc.cluster.local")}),
    );
    env.push(json!({"name": "SOURCE_PORT", "value": "5432"}));
    c["env"] = Value::Array(env);
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
           "metadata": fresh_meta(sts, ns), "spec": spec})
}

/// DR's Deployment, in `ns`: the same pod template (images, environment), one replica.
fn practice_deployment(d: &Value, ns: &str) -> Value {
    let mut spec = d["spec"].clone();
    spec["replicas"] = json!(1);
    spec["template"]["metadata"]["labels"][LABEL] = json!("true");
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": fresh_meta(d, ns), "spec": spec})
}

fn image_of(d: &Value) -> String {
    d["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or("?")
        .to_string()
}

fn selector_matches(pod: &Value, selector: &str) -> bool {
    selector.split(',').all(|kv| match kv.split_once('=') {
        Some((k, v)) => pod["metadata"]["labels"][k] == v,
        None => false,
    })
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_none()
        && pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

async fn ready_pods(c: &KubeCluster, ns: &str, selector: &str) -> anyhow::Result<Vec<String>> {
    Ok(c.list_objects("v1", "Pod", Some(ns))
        .await?
        .iter()
        .filter(|p| selector_matches(p, selector) && is_ready(p))
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect())
}

/// Polls until a pod of `selector` in `ns` is Ready; fails at once with the container's
/// reason when it cannot start.
async fn wait_pod_ready(
    c: &KubeCluster,
    ns: &str,
    selector: &str,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let pods = c.list_objects("v1", "Pod", Some(ns)).await?;
        let mine: Vec<&Value> = pods
            .iter()
            .filter(|p| selector_matches(p, selector))
            .collect();
        if mine.iter().any(|p| is_ready(p)) {
            return Ok(());
        }
        for p in &mine {
            let waiting = &p["status"]["containerStatuses"][0]["state"]["waiting"];
            if let Some(reason) = waiting["reason"].as_str() {
                if reason != "ContainerCreating" && reason != "PodInitializing" {
                    bail!(
                        "pod {ns}/{} cannot start: {reason}: {}",
                        p["metadata"]["name"].as_str().unwrap_or("?"),
                        waiting["message"].as_str().unwrap_or("")
                    );
                }
            }
        }
        if Instant::now() > deadline {
            bail!("no pod {selector} Ready in {ns} within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The seed's checks against the practice application, through port-forward to its
/// frontend-api: info (served by the practice database, a primary), a read of the newest
/// data, a write. Returns the checks and the seconds from the start to the accepted write.
async fn checks(run: &Run<'_>, pod: &str, id: &str) -> (Vec<CheckReport>, Option<f64>) {
    let mut out = Vec::new();
    let http = |method: &'static str, path: String, body: Option<String>| {
        let (c, ns, pod) = (&run.dr, run.ns.clone(), pod.to_string());
        async move {
            c.pod_http(&ns, &pod, 8080, method, &path, body.as_deref())
                .await
                .map_err(|e| e.to_string())
                .map(|(code, body)| {
                    (
                        code,
                        serde_json::from_str::<Value>(&dechunk(&body)).unwrap_or(Value::Null),
                    )
                })
        }
    };
    let info = http("GET", "/api/v1/info".into(), None).await;
    out.push(match info {
        Ok((200, v)) if v["database"]["role"] == "primary" => CheckReport {
            name: "info".into(),
            passed: true,
            detail: format!(
                "{} {} in {}: database {}:{} {} ({})",
                v["service"].as_str().unwrap_or("?"),
                v["version"].as_str().unwrap_or("?"),
                v["region"].as_str().unwrap_or("?"),
                v["database"]["host"].as_str().unwrap_or("?"),
                v["database"]["port"],
                v["database"]["name"].as_str().unwrap_or("?"),
                v["database"]["role"].as_str().unwrap_or("?"),
            ),
        },
        Ok((code, v)) => CheckReport {
            name: "info".into(),
            passed: false,
            detail: format!("HTTP {code}; database {}", v["database"]),
        },
        Err(e) => CheckReport {
            name: "info".into(),
            passed: false,
            detail: e,
        },
    });
    let read = async {
        let (code, first) = http("GET", "/api/v1/users?limit=1".into(), None).await?;
        if code != 200 {
            return Err(format!("GET /api/v1/users: HTTP {code}"));
        }
        let total = first["total"].as_i64().unwrap_or(0);
        if total == 0 {
            // An application without data yet: the read works, there is nothing to compare.
            return Ok("0 users (the application holds no data yet)".to_string());
        }
        let (code, last) = http(
            "GET",
            format!("/api/v1/users?limit=1&offset={}", total - 1),
            None,
        )
        .await?;
        if code != 200 {
            return Err(format!("GET the newest user: HTTP {code}"));
        }
        let u = &last["users"][0];
        Ok(format!(
            "{total} users; the newest, {}, created {}",
            u["username"].as_str().unwrap_or("?"),
            u["created_at"].as_str().unwrap_or("?")
        ))
    }
    .await;
    out.push(CheckReport {
        name: "read-recent".into(),
        passed: read.is_ok(),
        detail: read.unwrap_or_else(|e| e),
    });
    let username = format!("practice-{id}");
    let body = json!({"username": username, "email": format!("{username}@practice.invalid")});
    let write = http("POST", "/api/v1/users".into(), Some(body.to_string())).await;
    let rto = run.t0.elapsed().as_secs_f64();
    let (passed, detail) = match write {
        Ok((201, _)) => (true, format!("POST /api/v1/users {username}: 201 Created")),
        Ok((code, v)) => (
            false,
            format!("POST /api/v1/users: HTTP {code} {}", v["error"]),
        ),
        Err(e) => (false, e),
    };
    out.push(CheckReport {
        name: "write".into(),
        passed,
        detail,
    });
    (out, passed.then_some(rto))
}

/// The practice ran what production runs: the images DR's Deployments (which the practice
/// copied) are the primary region's.
async fn same_images(run: &Run<'_>, practised: &[String]) -> CheckReport {
    let primary = async {
        let c = KubeCluster::connect(run.config.kube_target("primary")).await?;
        let ns = run.config.region("primary").namespace.clone();
        let mut images = Vec::new();
        for name in &run.config.app.deployments {
            let d = c
                .get_object("apps/v1", "Deployment", Some(&ns), name)
                .await?
                .ok_or_else(|| anyhow!("primary: Deployment {ns}/{name} not found"))?;
            images.push(image_of(&d));
        }
        Ok::<_, anyhow::Error>(images)
    }
    .await;
    let (passed, detail) = match primary {
        Ok(p) if p == practised => (true, "the primary region runs the same images".to_string()),
        Ok(p) => (
            false,
            format!(
                "the primary region runs {}; DR (and so the practice) {}",
                p.join(", "),
                practised.join(", ")
            ),
        ),
        Err(e) => (
            false,
            format!("primary's images unreadable: {}", crate::chain(&e)),
        ),
    };
    CheckReport {
        name: "same-images".into(),
        passed,
        detail,
    }
}

/// A chunked HTTP body, joined (a plain body is returned as it is).
fn dechunk(body: &str) -> String {
    if serde_json::from_str::<Value>(body).is_ok() {
        return body.to_string();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            return body.to_string();
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// Deletes the namespace (everything in it goes with it) and waits until it is gone.
async fn remove_namespace(c: &KubeCluster, ns: &str, within: Duration) -> anyhow::Result<String> {
    let t = Instant::now();
    c.delete_object("v1", "Namespace", None, ns).await?;
    let deadline = Instant::now() + within;
    while c.get_object("v1", "Namespace", None, ns).await?.is_some() {
        if Instant::now() > deadline {
            bail!("namespace {ns} still there after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(format!(
        "namespace {ns} deleted with everything in it ({:.1}s)",
        t.elapsed().as_secs_f64()
    ))
}

/// `drdctl practice cleanup`: deletes kept practice namespaces.
async fn cleanup_command(config: &Config, id: Option<&str>, output: Output) -> anyhow::Result<u8> {
    let started = Utc::now();
    let dr = KubeCluster::connect(config.kube_target("dr")).await?;
    let wanted: Vec<String> = match id {
        Some(id) => vec![format!("{PREFIX}{}", id.trim_start_matches(PREFIX))],
        None => dr
            .list_objects("v1", "Namespace", None)
            .await?
            .iter()
            .filter(|n| n["metadata"]["labels"][LABEL].is_string())
            .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
            .collect(),
    };
    let mut removed = Vec::new();
    let mut failed = Vec::new();
    for ns in &wanted {
        // Only namespaces drdctl practice made.
        match dr.get_object("v1", "Namespace", None, ns).await? {
            Some(n) if n["metadata"]["labels"][LABEL].is_string() => {}
            Some(_) => {
                failed.push(format!(
                    "{ns}: not a practice namespace (no {LABEL} label); left alone"
                ));
                continue;
            }
            None => {
                failed.push(format!("{ns}: no such namespace"));
                continue;
            }
        }
        match remove_namespace(&dr, ns, Duration::from_secs(300)).await {
            Ok(_) => removed.push(ns.clone()),
            Err(e) => failed.push(format!("{ns}: {}", crate::chain(&e))),
        }
    }
    let code = if failed.is_empty() {
        crate::exit::OK
    } else {
        crate::exit::FAILED
    };
    if !wanted.is_empty() {
        let mut record = crate::audit::Record::new("practice-cleanup", started);
        record.result = if failed.is_empty() {
            "done".into()
        } else {
            format!("failed: {}", failed.join("; "))
        };
        record.exit_code = code;
        record.steps = removed
            .iter()
            .map(|ns| crate::audit::Step {
                name: "delete-namespace".into(),
                state: "done".into(),
                detail: ns.clone(),
            })
            .collect();
        crate::audit::write_or_warn(config, record).await;
    }
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({"removed": removed, "failed": failed}))?
        ),
        Output::Human => {
            if wanted.is_empty() {
                println!("no practice namespace to remove");
            }
            for ns in &removed {
                println!("removed {ns}");
            }
            for f in &failed {
                println!("not removed: {f}");
            }
        }
    }
    Ok(code)
}

/// The report as people read it.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let f = |x: Option<f64>| x.map(|v| format!("{v:.1}s")).unwrap_or_else(|| "-".into());
    s.push_str(&format!(
        "practice {} ({}): {}\n",
        r.id, r.namespace, r.result
    ));
    s.push_str(&format!(
        "  practice RTO (start to first accepted write): {}\n",
        f(r.rto_secs)
    ));
    s.push_str(&format!(
        "  data freshness (last replayed commit at the copy): {}\n",
        match (&r.freshness.last_replayed_commit, r.freshness.age_secs) {
            (Some(t), Some(a)) => format!("{} ({a:.1}s before the copy was read)", t.to_rfc3339()),
            _ => "no commit replayed (no traffic while the copy was taken)".into(),
        }
    ));
    s.push_str("  checks:\n");
    for c in &r.checks {
        s.push_str(&format!(
            "    {:<12} {}  {}\n",
            c.name,
            if c.passed { "pass" } else { "FAIL" },
            c.detail
        ));
    }
    if let Some(p) = &r.production {
        s.push_str(&format!(
            "  production before/after: {}\n",
            if p.identical {
                "identical"
            } else {
                "DIFFERENT"
            }
        ));
        for line in p.lines() {
            s.push_str(&format!("    {line}\n"));
        }
    }
    s.push_str(&format!(
        "  DR standby streaming throughout: {} of {} samples streaming\n",
        r.dr_streaming.samples - r.dr_streaming.not_streaming,
        r.dr_streaming.samples
    ));
    s.push_str(&format!("  clean-up: {}\n", r.cleanup));
    s.push_str(&format!("  total {:.1}s\n", r.total_secs));
    s
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn dr_statefulset() -> Value {
        let yaml = include_str!("../../../../manifests/base/postgresql/statefulset.yaml");
        let mut v: Value = serde_yaml::from_str(yaml).unwrap();
        v["metadata"]["namespace"] = json!("default");
        v["metadata"]["uid"] = json!("0b5e");
        v["metadata"]["resourceVersion"] = json!("42");
        v["status"] = json!({"replicas": 1});
        v
    }

    #[test]
    fn the_copy_runs_copy_sh_from_the_same_image_without_the_role_or_the_scripts() {
        let sts = dr_statefulset();
        let p = practice_statefulset(&sts, "drdctl-practice-x", "default");
        assert_eq!(p["metadata"]["namespace"], "drdctl-practice-x");
        assert!(
            p["metadata"].get("uid").is_none() && p["metadata"].get("resourceVersion").is_none()
        );
        assert!(p.get("status").is_none());
        let c = &p["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            c["image"],
            sts["spec"]["template"]["spec"]["containers"][0]["image"]
        );
        assert_eq!(c["command"], json!(["bash", "-c", COPY_SCRIPT]));
        let env: BTreeMap<&str, &Value> = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap(), e))
            .collect();
        assert_eq!(
            env["SOURCE_HOST"]["value"],
            "postgresql.default.svc.cluster.local"
        );
        assert!(env.contains_key("REPLICATION_PASSWORD"), "from the secret");
        let names = |v: &Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x["name"].as_str().unwrap().to_string())
                .collect()
        };
        for n in names(&c["volumeMounts"])
            .into_iter()
            .chain(names(&p["spec"]["template"]["spec"]["volumes"]))
        {
            assert!(n != "role" && n != "scripts", "{n}");
        }
        assert_eq!(
            p["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"],
            "Delete"
        );
        assert_eq!(p["spec"]["template"]["metadata"]["labels"][LABEL], "true");
    }

    #[test]
    fn the_policies_deny_everything_but_the_namespace_dns_and_the_copy_source() {
        let ps = network_policies("drdctl-practice-x", "default");
        let by_name: BTreeMap<&str, &Value> = ps
            .iter()
            .map(|p| (p["metadata"]["name"].as_str().unwrap(), p))
            .collect();
        let deny = &by_name["practice-default-deny"]["spec"];
        assert_eq!(deny["podSelector"], json!({}));
        assert_eq!(deny["policyTypes"], json!(["Ingress", "Egress"]));
        assert!(deny.get("ingress").is_none() && deny.get("egress").is_none());
        // Ingress is admitted from the namespace's own pods only (never the ingress controller).
        let ingress_rules: Vec<&Value> = ps
            .iter()
            .filter_map(|p| p["spec"]["ingress"].as_array())
            .flatten()
            .collect();
        assert_eq!(ingress_rules, [&json!({"from": [{"podSelector": {}}]})]);
        let copy = &by_name["practice-copy-from-dr-standby"]["spec"]["egress"][0];
        assert_eq!(
            copy["to"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "default"
        );
        assert_eq!(copy["ports"], json!([{"protocol": "TCP", "port": 5432}]));
    }

    #[test]
    fn chunked_bodies_are_joined_and_plain_ones_kept() {
        assert_eq!(dechunk("{\"a\":1}"), "{\"a\":1}");
        assert_eq!(dechunk("4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n"), "{\"a\":1}");
    }

    #[test]
    fn selectors_match_every_pair() {
        let pod = json!({"metadata": {"labels": {"app": "frontend-api", "x": "1"}}});
        assert!(selector_matches(&pod, "app=frontend-api"));
        assert!(selector_matches(&pod, "app=frontend-api,x=1"));
        assert!(!selector_matches(&pod, "app=data-ingest"));
        assert!(!selector_matches(&pod, "app"));
    }
}
