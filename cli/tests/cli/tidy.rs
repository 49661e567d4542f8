//! The house rules, checked (as rust-analyzer's tidy test): which crate may depend on which,
//! read from `cargo metadata`; the engine only on the adapters' traits; every path and link
//! in the docs exists. docs/ARCHITECTURE.md states the same rules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::support::repo_root;

const SERVICES: &[&str] = &["common", "frontend-api", "business-logic", "data-ingest"];
const ADAPTERS: &[&str] = &["drd-kube", "drd-db", "drd-dns", "drd-registry"];

/// Each workspace package's normal (non-dev) dependencies: name -> (dependency, optional).
fn dependencies() -> BTreeMap<String, Vec<(String, bool)>> {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null() || d["kind"] == "build")
                .map(|d| {
                    (
                        d["name"].as_str().unwrap().to_string(),
                        d["optional"].as_bool().unwrap_or(false),
                    )
                })
                .collect();
            (p["name"].as_str().unwrap().to_string(), deps)
        })
        .collect()
}

#[test]
fn crates_depend_only_as_the_architecture_says() {
    let deps = dependencies();
    let on = |pkg: &str| -> BTreeSet<String> { deps[pkg].iter().map(|(d, _)| d.clone()).collect() };
    let ours: BTreeSet<String> = deps.keys().cloned().collect();
    for s in SERVICES {
        let bad: Vec<_> = on(s)
            .intersection(&ours)
            .filter(|d| !SERVICES.contains(&d.as_str()))
            .cloned()
            .collect();
        assert!(
            bad.is_empty(),
            "service {s} depends on {bad:?}: services depend only on common"
        );
    }
    for a in ADAPTERS {
        let bad: Vec<_> = on(a).intersection(&ours).cloned().collect();
        assert!(
            bad.is_empty(),
            "adapter {a} depends on {bad:?}: adapters depend on no crate of ours"
        );
    }
    let bad: Vec<_> = on("lab")
        .into_iter()
        .filter(|d| d == "drdctl" || SERVICES.contains(&d.as_str()))
        .collect();
    assert!(
        bad.is_empty(),
        "lab depends on {bad:?}: it runs the services as processes"
    );
    assert!(
        deps["drdctl"]
            .iter()
            .any(|(d, optional)| d == "lab" && *optional),
        "drdctl's lab must stay optional (feature `lab`)"
    );
    let kube_clients: Vec<_> = deps
        .iter()
        .filter(|(_, d)| d.iter().any(|(n, _)| n == "kube" || n == "k8s-openapi"))
        .map(|(p, _)| p.clone())
        .collect();
    assert_eq!(
        kube_clients,
        ["drd-kube"],
        "one Kubernetes adapter: only drd-kube talks to the API (drd-db asks through its PodHost trait)"
    );
    assert!(
        !on("test-support")
            .iter()
            .any(|d| SERVICES.contains(&d.as_str())),
        "test-support knows nothing of the services"
    );
}

#[test]
fn the_engine_talks_to_traits_not_to_the_real_adapters() {
    let dir = repo_root().join("cli/src/engine");
    for file in ["plan.rs", "run.rs", "mod.rs", "journal.rs"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        for concrete in ["KubeCluster", "PgDatabase", "DnsOps", "AzureDns"] {
            assert!(
                !text.contains(concrete),
                "cli/src/engine/{file} names {concrete}: the engine uses the ports (ports.rs holds the real implementations)"
            );
        }
    }
}

/// Markdown links `[x](path)` and code spans that name a path of the repository.
fn referenced_paths(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = md;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        let end = rest.find(')').unwrap_or(rest.len());
        let target = &rest[..end];
        if !target.contains("://") && !target.starts_with('#') && !target.starts_with("mailto:") {
            out.push(target.split('#').next().unwrap().to_string());
        }
    }
    let roots = [
        "cli/",
        "adapters/",
        "services/",
        "lab/",
        "manifests/",
        "docs/",
        "test-support/",
        ".ci/",
    ];
    for span in md.split('`').skip(1).step_by(2) {
        let span = span.trim();
        if roots.iter().any(|r| span.starts_with(r))
            && !span.contains(' ')
            && !span.contains('*')
            && !span.contains('<')
            && !span.contains('{')
        {
            let path = span.split("::").next().unwrap();
            let path = path.split(':').next().unwrap();
            out.push(path.trim_end_matches(['.', ',', ')']).to_string());
        }
    }
    out
}

#[test]
fn every_path_and_link_in_the_docs_exists() {
    let root = repo_root();
    let mut files = vec![root.join("README.md"), root.join("manifests/README.md")];
    for e in std::fs::read_dir(root.join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            files.push(p);
        }
    }
    for e in std::fs::read_dir(root.join("docs/runbooks")).unwrap() {
        files.push(e.unwrap().path());
    }
    let mut missing = Vec::new();
    let mut checked = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for p in referenced_paths(&text) {
            if p.is_empty() {
                continue;
            }
            checked += 1;
            let from_file = f.parent().unwrap().join(&p);
            let from_root = root.join(&p);
            if !from_file.exists() && !from_root.exists() {
                missing.push(format!(
                    "{}: {p}",
                    f.strip_prefix(&root).unwrap_or(Path::new("?")).display()
                ));
            }
        }
    }
    assert!(
        checked > 40,
        "only {checked} paths found: the extraction is broken"
    );
    assert!(
        missing.is_empty(),
        "paths named in the docs that do not exist:\n{}",
        missing.join("\n")
    );
}
