//! `drdctl verify`'s wall time over both lab regions (target < 1 s).
//!
//! `cargo bench -p drdctl --bench verify`: starts two Kubernetes doubles, deploys the
//! manifests to both with the real binary, then runs the real `drdctl verify --output json`
//! 10 times and prints the median and worst wall time (process start included).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use lab::kube_api::write_kubeconfig;
use lab::{KubeDouble, KubeDoubleConfig};

fn drdctl() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    // Benches build in release; the binary next to this bench is the release drdctl.
    let p = target.join("release/drdctl");
    assert!(
        p.exists(),
        "{} missing: cargo build --release -p drdctl",
        p.display()
    );
    p
}

#[tokio::main]
async fn main() {
    let start = |r: &str| {
        KubeDouble::start_with(
            KubeDoubleConfig::new(r, "127.0.0.1:0".parse().unwrap())
                .pod_start_delay(Duration::from_millis(50)),
        )
    };
    let (primary, dr) = (start("primary").await.unwrap(), start("dr").await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    write_kubeconfig(&kc, &[("primary", &primary.url()), ("dr", &dr.url())]).unwrap();
    let manifests = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests");
    let config = dir.path().join("drdctl.toml");
    std::fs::write(
        &config,
        format!(
            "[kube]\nkubeconfig = \"{}\"\n[regions.primary]\ncontext = \"primary\"\noverlay = \"{m}/primary\"\n[regions.dr]\ncontext = \"dr\"\noverlay = \"{m}/dr\"\n",
            kc.display(),
            m = manifests.display()
        ),
    )
    .unwrap();
    let run = |args: Vec<&'static str>| {
        let config = config.clone();
        async move {
            tokio::process::Command::new(drdctl())
                .arg("--config")
                .arg(&config)
                .args(args)
                .env("DRDCTL_POSTGRES_PASSWORD", "bench")
                .output()
                .await
                .unwrap()
        }
    };
    let out = run(vec!["deploy", "--region", "all"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut times = Vec::new();
    let mut checks = 0;
    for _ in 0..10 {
        let t = Instant::now();
        let out = run(vec!["verify", "--output", "json"]).await;
        times.push(t.elapsed());
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        checks = doc["results"].as_array().unwrap().len();
    }
    times.sort();
    println!(
        "drdctl verify over both lab regions ({checks} checks): median {:.0} ms, worst {:.0} ms (target < 1000 ms)",
        times[times.len() / 2].as_secs_f64() * 1000.0,
        times[times.len() - 1].as_secs_f64() * 1000.0
    );
}
