//! `drdctl practice` on the whole lab (`drdctl lab up`: the services as real processes, real
//! PostgreSQL through start.sh, the Azure DNS double): while traffic flows on the primary,
//! practice copies the DR standby into a throwaway namespace, promotes it there, runs the
//! services against it and checks them; production answers every request, its objects,
//! replication and DNS are the same afterwards, and nothing of the practice is left: no
//! object in the DR double, no process in the lab. Then `--keep` and `practice cleanup`, and
//! a practice stopped by Ctrl-C, which cleans up all the same.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use crate::support::{text, DRDCTL};

/// Stops the lab even when an assertion fails.
struct Down(String);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = std::process::Command::new(DRDCTL)
            .args(["lab", "down", "--dir", &self.0])
            .output();
    }
}

/// `(pid, command line)` of every process under `root` (the lab process), but PostgreSQL's
/// own children (backends, checkpointer, WAL receiver: they come and go with connections).
fn lab_processes(root: u32) -> BTreeMap<u32, String> {
    let mut parent = BTreeMap::new();
    let mut cmdline = BTreeMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        parent.insert(pid, ppid);
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        cmdline.insert(
            pid,
            String::from_utf8_lossy(&cmd)
                .replace('\0', " ")
                .trim()
                .to_string(),
        );
    }
    let under = |mut p: u32| {
        while let Some(&pp) = parent.get(&p) {
            if pp == root {
                return true;
            }
            if pp <= 1 {
                return false;
            }
            p = pp;
        }
        false
    };
    cmdline
        .into_iter()
        .filter(|(pid, cmd)| under(*pid) && !cmd.starts_with("postgres: ") && !cmd.is_empty())
        .collect()
}

/// Polls until the lab runs exactly the processes of `before` (the double deletes a namespace
/// at once; its pods' processes stop right after), at most 30 s; the processes then.
async fn processes_back_to(lab_pid: u32, before: &BTreeMap<u32, String>) -> BTreeMap<u32, String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = lab_processes(lab_pid);
        let same = now.keys().eq(before.keys());
        if same || std::time::Instant::now() > deadline {
            assert!(same, "before: {before:#?}\nafter: {now:#?}");
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `drdctl lab up`. Its ingresses listen on fixed ports (127.0.0.2:8080, 127.0.0.3:8080): while
/// another lab holds them (another test process on this machine), wait for them, at most 10
/// minutes, and try again.
async fn lab_up(dir: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    loop {
        let out = tokio::process::Command::new(DRDCTL)
            .args(["lab", "up", "--dir"])
            .arg(dir)
            .output()
            .await
            .unwrap();
        let log = std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default();
        if out.status.success() {
            return;
        }
        let busy = log.contains("Address already in use");
        assert!(
            busy && std::time::Instant::now() < deadline,
            "lab up: {}\nserve.log:\n{log}",
            text(&out)
        );
        eprintln!("another lab holds the ingress ports; waiting for it to go");
        test_support::eventually(
            "the ingress ports free",
            Duration::from_secs(600),
            || async {
                ["127.0.0.2:8080", "127.0.0.3:8080"]
                    .iter()
                    .all(|a| std::net::TcpStream::connect(a).is_err())
                    .then_some(())
            },
        )
        .await;
    }
}

fn env_file(dir: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(dir.join("env"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn drdctl(dir: &Path, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(DRDCTL)
        .arg("--config")
        .arg(dir.join("drdctl.toml"))
        .args(args)
        .envs(env_file(dir))
        .env_remove("KUBECONFIG")
        .output()
        .await
        .unwrap()
}

async fn kubectl(dir: &Path, args: &[&str]) -> String {
    let out = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(dir.join("kubeconfig"))
        .arg("--cache-dir")
        .arg(dir.join("kube-cache"))
        .args(args)
        .output()
        .await
        .unwrap();
    text(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn practice_while_traffic_flows_leaves_production_identical_and_nothing_behind() {
    let _turn = crate::support::LAB_UP.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lab");
    let d = dir.to_str().unwrap().to_string();
    let _down = Down(d.clone());
    lab_up(&dir).await;
    let lab_pid: u32 = std::fs::read_to_string(dir.join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let password = env_file(&dir)
        .into_iter()
        .find(|(k, _)| k == "DRDCTL_POSTGRES_PASSWORD")
        .unwrap()
        .1;
    let name_server = crate::support::lab_name_server(&dir);

    // Traffic on the primary, through the DNS name, as clients send it.
    let mut tc = lab::traffic::TrafficConfig::new(name_server, "app.example.com", 8080);
    tc.prefix = format!("practice{}", std::process::id());
    let traffic = lab::traffic::Traffic::start(tc);
    assert!(
        traffic.wait_for_acked(20, Duration::from_secs(60)).await,
        "production takes writes before the practice"
    );
    let processes_before = lab_processes(lab_pid);
    let namespaces_before = kubectl(&dir, &["--context", "dr", "get", "ns", "-o", "name"]).await;

    let practice_from = traffic.now_ms();
    let out = drdctl(&dir, &["-o", "json", "practice"]).await;
    let practice_to = traffic.now_ms();
    // Production also keeps answering while the practice's processes stop after it.
    let acked = traffic.acked();
    assert!(
        traffic
            .wait_for_acked(acked + 100, Duration::from_secs(60))
            .await
    );
    let log = traffic.stop().await;
    eprintln!("practice ran from {practice_from} ms to {practice_to} ms of the traffic");
    let t = text(&out);
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(!t.contains(&password), "the password reached the output");
    assert_eq!(out.status.code(), Some(0), "{t}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    // Production answered every request while the practice ran.
    let (writes, writes_ok) = log.count(lab::traffic::Kind::Write);
    let (reads, reads_ok) = log.count(lab::traffic::Kind::Read);
    let slow: Vec<(u64, u32, bool)> = log
        .requests
        .iter()
        .filter(|q| q.latency_ms > 200)
        .map(|q| (q.at_ms, q.latency_ms, q.ok))
        .collect();
    eprintln!("slow production requests (sent at ms, latency ms, ok): {slow:?}");
    let failed: Vec<_> = log.requests.iter().filter(|q| !q.ok).take(5).collect();
    assert!(failed.is_empty(), "failed production requests: {failed:?}");
    assert!(
        writes > 50 && reads > 10,
        "traffic flowed: {writes} writes, {reads} reads"
    );
    assert_eq!((writes, reads), (writes_ok, reads_ok));

    // The report: passed; the practice RTO and the data's freshness; the checks.
    assert_eq!(r["passed"], true, "{r:#}");
    let rto = r["rto_secs"].as_f64().expect("an RTO");
    assert!(rto > 0.0 && rto < 240.0, "{r:#}");
    let last_commit = r["freshness"]["last_replayed_commit"]
        .as_str()
        .expect("the copy replayed commits (traffic was flowing)");
    let age = r["freshness"]["age_secs"].as_f64().unwrap();
    assert!(age < 60.0, "the copy is fresh: {age} s");
    let checks: Vec<(&str, bool)> = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["passed"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        checks,
        [
            ("info", true),
            ("read-recent", true),
            ("write", true),
            ("same-images", true)
        ],
        "{r:#}"
    );
    // The practice's frontend-api used the practice database, a primary, not DR's standby;
    // and the newest data it read was production's traffic.
    let info = r["checks"][0]["detail"].as_str().unwrap();
    assert!(
        info.contains("(primary)") && !info.contains("127.0.0.3:"),
        "{info}"
    );
    let read = r["checks"][1]["detail"].as_str().unwrap();
    assert!(
        read.contains(&format!("practice{}", std::process::id())),
        "{read}"
    );
    eprintln!("practice RTO {rto:.1} s; last replayed commit {last_commit} ({age:.1} s old)");

    // Production before and after: identical; DR streamed throughout.
    let p = &r["production"];
    assert_eq!(p["identical"], true, "{p:#}");
    assert_eq!(p["differences"], serde_json::json!([]));
    for region in ["primary", "dr"] {
        let counts = &p["objects"][region];
        assert_eq!(counts[0], counts[1], "{region}: {p:#}");
        assert!(counts[0].as_u64().unwrap() > 10, "{region}: {p:#}");
    }
    assert_eq!(p["replication_before"], p["replication_after"]);
    let dr_facts = p["replication_after"]["dr"].to_string();
    assert!(dr_facts.contains("WAL receiver streaming"), "{dr_facts}");
    assert!(
        p["dns_before"].as_str().unwrap().contains("127.0.0.2"),
        "{p:#}"
    );
    assert_eq!(p["dns_before"], p["dns_after"]);
    let s = &r["dr_streaming"];
    assert!(s["samples"].as_u64().unwrap() > 3, "{s}");
    assert_eq!(s["not_streaming"], 0, "{s}");

    // Nothing left: no practice namespace or object in the DR double ...
    assert_eq!(r["cleanup"], "removed");
    let ns = r["namespace"].as_str().unwrap();
    let namespaces_after = kubectl(&dir, &["--context", "dr", "get", "ns", "-o", "name"]).await;
    assert_eq!(namespaces_before, namespaces_after);
    assert!(!namespaces_after.contains(ns));
    let left = kubectl(
        &dir,
        &[
            "--context",
            "dr",
            "get",
            "all,configmaps,secrets,networkpolicies",
            "-n",
            ns,
        ],
    )
    .await;
    assert!(left.contains("No resources found"), "{left}");
    // ... and no process: the lab runs exactly the processes it ran before (the same pids:
    // no production process was restarted either).
    let before: BTreeSet<u32> = processes_before.keys().copied().collect();
    let processes_after = processes_back_to(lab_pid, &processes_before).await;
    eprintln!("the lab's processes, the same before and after:\n{processes_after:#?}");
    assert!(
        !processes_after
            .values()
            .any(|c| c.contains("drd-lab-pg-practice")),
        "{processes_after:#?}"
    );

    // --keep: the practice stays for manual checks (its database a process of its own, its
    // policies stored by the double), and `practice cleanup` removes it.
    let out = drdctl(&dir, &["-o", "json", "practice", "--keep"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let kept: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(kept["cleanup"], "kept");
    let ns = kept["namespace"].as_str().unwrap();
    let pods = kubectl(&dir, &["--context", "dr", "get", "pods", "-n", ns]).await;
    for app in [
        "postgresql-0",
        "frontend-api",
        "business-logic",
        "data-ingest",
    ] {
        assert!(pods.contains(app), "{pods}");
    }
    let policies = kubectl(
        &dir,
        &[
            "--context",
            "dr",
            "get",
            "networkpolicies",
            "-n",
            ns,
            "-o",
            "name",
        ],
    )
    .await;
    assert_eq!(
        policies.lines().collect::<Vec<_>>(),
        [
            "networkpolicy.networking.k8s.io/practice-default-deny",
            "networkpolicy.networking.k8s.io/practice-dns",
            "networkpolicy.networking.k8s.io/practice-same-namespace",
        ],
        "the copy's way to the standby is closed once the copy is made"
    );
    let running = lab_processes(lab_pid);
    assert!(
        running
            .values()
            .any(|c| c.contains("postgres -D") && c.contains("drd-lab-pg-practice")),
        "the copy is a PostgreSQL process of its own: {running:#?}"
    );
    let mut new: Vec<&str> = running
        .iter()
        .filter(|(pid, _)| !before.contains(pid))
        .filter_map(|(_, cmd)| {
            let bin = cmd.split_whitespace().next()?.rsplit('/').next()?;
            matches!(
                bin,
                "postgres" | "frontend-api" | "business-logic" | "data-ingest"
            )
            .then_some(bin)
        })
        .collect();
    new.sort_unstable();
    assert_eq!(
        new,
        ["business-logic", "data-ingest", "frontend-api", "postgres"],
        "the copy and the three services, as processes of their own: {running:#?}"
    );
    let out = drdctl(&dir, &["practice", "cleanup"]).await;
    let t = text(&out);
    assert!(
        out.status.success() && t.contains(&format!("removed {ns}")),
        "{t}"
    );
    processes_back_to(lab_pid, &processes_before).await;
    let namespaces = kubectl(&dir, &["--context", "dr", "get", "ns", "-o", "name"]).await;
    assert_eq!(namespaces, namespaces_before);
    let out = drdctl(&dir, &["practice", "cleanup"]).await;
    assert!(
        text(&out).contains("no practice namespace to remove"),
        "{}",
        text(&out)
    );

    // Ctrl-C mid-run: the practice stops where it is, cleans up all the same, exits 130.
    let child = tokio::process::Command::new(DRDCTL)
        .arg("--config")
        .arg(dir.join("drdctl.toml"))
        .args(["-o", "json", "practice"])
        .envs(env_file(&dir))
        .env_remove("KUBECONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    test_support::eventually(
        "the practice's database pod",
        Duration::from_secs(120),
        || async {
            let pods = kubectl(&dir, &["--context", "dr", "get", "pods", "-A"]).await;
            pods.lines()
                .any(|l| l.starts_with("drdctl-practice-") && l.contains("postgresql-0"))
                .then_some(())
        },
    )
    .await;
    let out = crate::support::interrupt(child).await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(130), "{t}");
    let stopped: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stopped["passed"], false);
    assert!(
        stopped["result"].as_str().unwrap().contains("interrupted"),
        "{stopped:#}"
    );
    assert_eq!(stopped["cleanup"], "removed", "{stopped:#}");
    let steps: Vec<&str> = stopped["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    eprintln!("interrupted after {steps:?}");
    assert_eq!(stopped["production"]["identical"], true, "{stopped:#}");
    let namespaces = kubectl(&dir, &["--context", "dr", "get", "ns", "-o", "name"]).await;
    assert_eq!(namespaces, namespaces_before);
    processes_back_to(lab_pid, &processes_before).await;

    // The runs are in the audit trail, without the password.
    let out = drdctl(&dir, &["-o", "json", "history", "--limit", "4"]).await;
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(!t.contains(&password));
    let h: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<&str> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["practice", "practice-cleanup", "practice", "practice"],
        "{h:#}"
    );
    assert!(
        h[0]["result"].as_str().unwrap().contains("interrupted"),
        "{h:#}"
    );
    assert_eq!(h[0]["exit_code"], 130);
    for r in &h.as_array().unwrap()[1..] {
        assert_eq!(r["result"], "done", "{r:#}");
    }
    assert!(h[3]["steps"].as_array().unwrap().len() >= 8, "{h:#}");
}
