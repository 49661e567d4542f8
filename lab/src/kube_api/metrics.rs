//! The metrics API (`metrics.k8s.io/v1beta1` PodMetrics), as metrics-server serves it, for
//! `kubectl top pods`: each pod's real CPU and memory, read from `/proc` for the processes
//! [`super::PodIo::processes`] names (a service pod's process; the PostgreSQL pod's whole process
//! group: postmaster, backends, walsender). CPU is the rate since the previous read of the
//! same pod (the first read: since the processes started), memory the resident set.

use std::time::Instant;

use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};

use super::ctx::Ctx;
use super::pod::PodInfo;

/// Linux's USER_HZ: the unit of utime/stime in `/proc/<pid>/stat`.
const TICKS_PER_SECOND: f64 = 100.0;

/// One process's CPU time so far (seconds), resident memory (bytes) and age (seconds).
fn process_usage(pid: u32) -> Option<(f64, u64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the command: state is field 3, so field n is fields[n - 3].
    let num = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
    let cpu = (num(14)? + num(15)?) / TICKS_PER_SECOND;
    let rss_pages = num(24)?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let age = uptime - num(22)? / TICKS_PER_SECOND;
    Some((cpu, (rss_pages * 4096.0) as u64, age.max(0.001)))
}

/// The processes of a process group.
pub fn process_group(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(2)?
                        .parse::<u32>()
                        .ok()
                })
                == Some(pgid)
        })
        .collect()
}

fn usage(ctx: &Ctx, pod: &PodInfo) -> (f64, u64) {
    let procs: Vec<(f64, u64, f64)> = ctx
        .pod_io
        .processes(pod)
        .into_iter()
        .filter_map(process_usage)
        .collect();
    let cpu: f64 = procs.iter().map(|p| p.0).sum();
    let mem: u64 = procs.iter().map(|p| p.1).sum();
    let oldest = procs.iter().map(|p| p.2).fold(0.001, f64::max);
    let now = Instant::now();
    let mut samples = ctx.cpu_samples.0.lock().expect("samples lock");
    let rate = match samples.insert(pod.uid.clone(), (cpu, now)) {
        Some((before, at)) if now.duration_since(at).as_secs_f64() > 0.05 && cpu >= before => {
            (cpu - before) / now.duration_since(at).as_secs_f64()
        }
        _ => cpu / oldest,
    };
    (rate, mem)
}

/// One PodMetrics object.
pub(crate) fn pod_metrics(ctx: &Ctx, pod: &PodInfo) -> Value {
    let (cpu, mem) = usage(ctx, pod);
    let container = pod
        .object
        .pointer("/spec/containers/0/name")
        .and_then(Value::as_str)
        .unwrap_or("main");
    json!({
        "kind": "PodMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {"name": pod.name, "namespace": pod.namespace, "labels": pod.object["metadata"]["labels"],
            "creationTimestamp": Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)},
        "timestamp": Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
        "window": "10s",
        "containers": [{"name": container, "usage": {
            "cpu": format!("{}n", (cpu * 1e9) as u64),
            "memory": format!("{}Ki", mem / 1024),
        }}],
    })
}
