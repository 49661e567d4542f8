//! `kubectl top pods` against the metrics API: each pod's real CPU and memory from /proc.

use std::sync::Arc;
use std::time::Duration;

use lab::kube_api::{PodInfo, PodIo};
use lab::{KubeDouble, KubeDoubleConfig};

use crate::support::{deployment, rolled_out, seed, Kubectl};

/// Every pod "is" this test process (so its usage is real and non-zero).
struct ThisProcess;

impl PodIo for ThisProcess {
    fn processes(&self, _pod: &PodInfo) -> Vec<u32> {
        vec![std::process::id()]
    }
}

#[tokio::test]
async fn top_pods_shows_the_processes_real_usage() {
    let cfg = KubeDoubleConfig::new("primary", "127.0.0.1:0".parse().unwrap())
        .pod_start_delay(Duration::from_millis(50))
        .pod_io(Arc::new(ThisProcess));
    let d = KubeDouble::start_with(cfg).await.unwrap();
    seed(&d, deployment("web", 2));
    rolled_out(&d, "web").await;
    let k = Kubectl::new(&d);
    let out = k.ok(&["top", "pods", "-l", "app=web"]).await;
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["NAME", "CPU(cores)", "MEMORY(bytes)"], "{out}");
    assert_eq!(lines.len(), 3, "{out}");
    // This process's resident memory, in Mi as kubectl prints it.
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let rss_mi = statm
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 4096
        / (1 << 20);
    for l in &lines[1..] {
        assert!(l[0].starts_with("web-"), "{out}");
        assert!(l[1].ends_with('m'), "{out}");
        let mi: u64 = l[2].trim_end_matches("Mi").parse().unwrap();
        assert!(
            mi > 0 && mi.abs_diff(rss_mi) <= rss_mi / 2 + 8,
            "{mi} vs {rss_mi}: {out}"
        );
    }
    let out = k.run(&["top", "pod", "nope"]).await;
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("podmetrics.metrics.k8s.io \"nope\" not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
