//! `drdctl lab up|status|down`: the whole two-region world in a background process; real
//! kubectl lists both regions' deployments; `down` leaves no process and no listening port.

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

#[test]
fn up_serves_both_regions_and_down_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lab");
    let d = dir.to_str().unwrap();
    let _down = Down(d.to_string());
    let out = drdctl(&["lab", "up", "--dir", d]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("The lab is up") && t.contains("schema version"),
        "{t}"
    );
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
    // The application answers through the region's ingress, from the real service process.
    assert!(listening("127.0.0.2:8080") && listening("127.0.0.3:8080"));
    let status = text(&drdctl(&["lab", "status", "--dir", d]));
    assert!(status.contains("the lab is up"), "{status}");

    let out = drdctl(&["lab", "down", "--dir", d]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
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
