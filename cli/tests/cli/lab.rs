//! `drdctl lab drill` (which runs `lab up`): the drill passes with nothing acknowledged lost;
//! with `--keep`, real kubectl lists both regions' deployments and the lab's name server
//! answers; `down` leaves no process and no listening port.

use std::process::Command;

use crate::support::{text, DRDCTL};

fn drdctl(args: &[&str]) -> std::process::Output {
    Command::new(DRDCTL).args(args).output().unwrap()
}

fn listening(addr: &str) -> bool {
    std::net::TcpStream::connect(addr).is_ok()
}

/// Stops the lab even when an assertion fails.
struct Down(String);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = drdctl(&["lab", "down", "--dir", &self.0]);
    }
}

/// Keeps the temp directory (the lab's logs, the drill's report) when the test fails, and
/// says where: an intermittent failure can then be read after the fact.
struct KeepOnFailure(Option<tempfile::TempDir>);

impl KeepOnFailure {
    fn path(&self) -> &std::path::Path {
        self.0
            .as_ref()
            .map(|t| t.path())
            .unwrap_or(std::path::Path::new(""))
    }
}

impl Drop for KeepOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(t) = self.0.take() {
                eprintln!(
                    "kept for reading (lab logs, drill report): {}",
                    t.keep().display()
                );
            }
        }
    }
}

#[test]
fn the_drill_refuses_distance_flags_and_names_the_variables() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lab");
    let out = drdctl(&[
        "lab",
        "drill",
        "--dir",
        dir.to_str().unwrap(),
        "--wan-rtt",
        "40ms",
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("DRDCTL_LAB_WAN_RTT_MS=40"), "{t}");
    assert!(!dir.exists(), "the drill started a lab anyway");
}

#[test]
fn the_drill_passes_then_kubectl_and_dns_see_the_lab_and_down_leaves_nothing_behind() {
    let _turn = crate::support::LAB_UP.blocking_lock();
    // Dropped after `_down` (declared before it): the lab is stopped, then its directory kept
    // if the test failed.
    let tmp = KeepOnFailure(Some(tempfile::tempdir().unwrap()));
    let dir = tmp.path().join("lab");
    let out_dir = tmp.path().join("drill");
    let d = dir.to_str().unwrap();
    let _down = Down(d.to_string());
    let out = drdctl(&[
        "lab",
        "drill",
        "--dir",
        d,
        "--out",
        out_dir.to_str().unwrap(),
        "--keep",
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("the drill PASSED"), "{t}");
    assert!(
        !t.contains(lab_password()),
        "the lab's password reached the output"
    );

    // The report: every command passed, traffic flowed, nothing acknowledged was lost, the
    // name moved to DR and back, never two writable databases.
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("report.json")).unwrap()).unwrap();
    let r = &doc["report"];
    assert_eq!(doc["passed"], true, "{:#}", doc["failures"]);
    assert_eq!(r["acknowledged_writes_missing"], 0);
    assert!(r["writes"]["acknowledged"].as_u64().unwrap() > 50, "{r:#}");
    assert!(r["reads"]["acknowledged"].as_u64().unwrap() > 10, "{r:#}");
    let phases: Vec<(&str, i64)> = r["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["exit_code"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        phases,
        [
            ("failover", 0),
            ("verify", 0),
            ("failback", 0),
            ("verify", 0)
        ]
    );
    let failover_steps = r["phases"][0]["steps"].as_array().unwrap();
    assert!(
        failover_steps
            .iter()
            .any(|s| s["name"] == "promote-target" && s["state"] == "done"),
        "{failover_steps:#?}"
    );
    assert_eq!(r["phases"][0]["lost_bytes"], 0);
    let answers: Vec<&str> = r["dns_answers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a[1][0].as_str().unwrap())
        .collect();
    assert_eq!(answers, ["127.0.0.2", "127.0.0.3", "127.0.0.2"], "{r:#}");
    assert!(r["split_brain"]["samples"].as_u64().unwrap() > 10);
    assert_eq!(
        r["split_brain"]["both_writable_at_ms"],
        serde_json::json!([])
    );
    assert!(doc["requests"].as_array().unwrap().len() > 60);
    let report_txt = std::fs::read_to_string(out_dir.join("report.txt")).unwrap();
    assert!(
        report_txt.contains("acknowledged writes missing afterwards: 0"),
        "{report_txt}"
    );
    // The picture is well-formed SVG with the three rates and the commands marked.
    let svg = std::fs::read_to_string(out_dir.join("timeline.svg")).unwrap();
    let xml = roxmltree::Document::parse(&svg).unwrap();
    assert_eq!(xml.root_element().tag_name().name(), "svg");
    let texts: Vec<&str> = xml
        .descendants()
        .filter_map(|n| n.text())
        .map(str::trim)
        .collect();
    for label in [
        "failover",
        "failback",
        "promote-target",
        "acknowledged writes/s",
        "failed requests/s",
    ] {
        assert!(texts.contains(&label), "{label} not in the picture");
    }
    for f in ["report.json", "report.txt", "timeline.svg"] {
        let body = std::fs::read_to_string(out_dir.join(f)).unwrap();
        assert!(!body.contains(lab_password()), "the password is in {f}");
    }

    // The lab is still up (--keep): real kubectl lists both regions' deployments...
    let pid: u32 = std::fs::read_to_string(dir.join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for ctx in ["primary", "dr"] {
        let out = Command::new("kubectl")
            .args([
                "--kubeconfig",
                dir.join("kubeconfig").to_str().unwrap(),
                "--context",
                ctx,
            ])
            .args([
                "--cache-dir",
                tmp.path().join("kc").to_str().unwrap(),
                "get",
                "deploy",
            ])
            .output()
            .unwrap();
        let t = text(&out);
        assert!(out.status.success(), "{t}");
        for d in ["frontend-api", "business-logic", "data-ingest"] {
            assert!(t.contains(d), "{ctx}: {t}");
        }
    }
    // ... drdctl history lists the drill's failover and failback, newest first, with their
    // steps, and nothing secret ...
    let out = drdctl(&[
        "--config",
        dir.join("drdctl.toml").to_str().unwrap(),
        "-o",
        "json",
        "history",
    ]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        !t.contains(lab_password()),
        "the password is in the history"
    );
    let history: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    let (fb, fo) = (
        kinds
            .iter()
            .position(|k| *k == "failback")
            .expect("failback recorded"),
        kinds
            .iter()
            .position(|k| *k == "failover")
            .expect("failover recorded"),
    );
    assert!(fb < fo, "newest first: {kinds:?}");
    for i in [fb, fo] {
        let r = &history[i];
        assert_eq!(r["result"], "done", "{r:#}");
        assert!(r["steps"].as_array().unwrap().len() >= 8, "{r:#}");
        assert!(
            r["local_user"].is_string() && r["kube_user"]["dr"].is_string(),
            "{r:#}"
        );
    }
    let out = drdctl(&[
        "--config",
        dir.join("drdctl.toml").to_str().unwrap(),
        "history",
    ]);
    assert!(text(&out).contains("promote-target"), "{}", text(&out));
    // ... the lab's name server answers with the primary ingress again ...
    let ns = crate::support::lab_name_server(&dir);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (addrs, _) = rt
        .block_on(lab::traffic::query_a(
            ns,
            "app.example.com",
            std::time::Duration::from_secs(2),
        ))
        .unwrap();
    assert_eq!(addrs, ["127.0.0.2".parse::<std::net::IpAddr>().unwrap()]);
    // ... and the application answers through both ingresses, from real service processes.
    assert!(listening("127.0.0.2:8080") && listening("127.0.0.3:8080"));
    let status = text(&drdctl(&["lab", "status", "--dir", d]));
    assert!(status.contains("the lab is up"), "{status}");

    let out = drdctl(&["lab", "down", "--dir", d]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        !drdctl::commands::lab::pid_alive(pid),
        "the lab process is gone"
    );
    assert!(
        !listening("127.0.0.2:8080") && !listening("127.0.0.3:8080"),
        "no ingress left"
    );
    assert!(!dir.exists());
    // Safe to run twice.
    let out = drdctl(&["lab", "down", "--dir", d]);
    assert_eq!(out.status.code(), Some(0));
}

/// The password `drdctl lab` gives its databases and service principal.
fn lab_password() -> &'static str {
    drdctl::commands::lab::PASSWORD
}
