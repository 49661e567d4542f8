//! `drdctl deploy` against two Kubernetes doubles; real kubectl against the same lab.

use crate::support::{assert_ok, kubectl, repo_root, text, Lab, PASSWORD};

#[tokio::test]
async fn deploys_both_regions_then_reports_unchanged() {
    let lab = Lab::start().await;
    let out = lab
        .drdctl(&["deploy", "--region", "all", "--rollout-timeout", "60"])
        .await;
    let first = assert_ok(&out);
    assert!(
        first.contains("deployment.apps/frontend-api created"),
        "{first}"
    );
    assert!(
        first.contains("secret/postgresql-secret created"),
        "{first}"
    );
    assert!(
        first.contains("deployment/frontend-api rolled out"),
        "{first}"
    );
    assert!(!first.contains(PASSWORD), "the password was printed");

    let replicas = |d: &lab::KubeDouble| {
        d.get("deployments", "default", "frontend-api").unwrap()["spec"]["replicas"].clone()
    };
    assert_eq!(replicas(&lab.primary), 3);
    assert_eq!(replicas(&lab.dr), 1);
    let secret = lab
        .dr
        .get("secrets", "default", "postgresql-secret")
        .expect("secret created");
    assert!(secret.to_string().contains("password"));

    let second = assert_ok(
        &lab.drdctl(&["deploy", "--region", "all", "--no-wait"])
            .await,
    );
    let applied: Vec<&str> = second
        .lines()
        .filter(|l| l.contains('/') && !l.starts_with("region"))
        .collect();
    assert!(applied.len() > 20, "{second}");
    for line in applied {
        assert!(
            line.ends_with(" unchanged"),
            "second deploy changed something: {line}\n{second}"
        );
    }
}

#[tokio::test]
async fn dry_run_changes_nothing() {
    let lab = Lab::start().await;
    let out = assert_ok(&lab.drdctl(&["deploy", "--region", "dr", "--dry-run"]).await);
    assert!(out.contains("created (server dry run)"), "{out}");
    assert!(
        out.contains("secret/postgresql-secret would be created"),
        "{out}"
    );
    assert!(lab.dr.list("deployments", Some("default")).is_empty());
    assert!(lab
        .dr
        .get("secrets", "default", "postgresql-secret")
        .is_none());
}

#[tokio::test]
async fn a_failover_role_survives_a_redeploy() {
    let lab = Lab::start().await;
    assert_ok(&lab.drdctl(&["deploy", "--region", "dr", "--no-wait"]).await);
    assert_ok(
        &lab.kubectl(&[
            "--context",
            "dr",
            "patch",
            "configmap",
            "app-config",
            "--type",
            "merge",
            "-p",
            r#"{"data":{"role":"active"}}"#,
        ])
        .await,
    );
    let out = assert_ok(&lab.drdctl(&["deploy", "--region", "dr", "--no-wait"]).await);
    assert!(out.contains("keeping live role=\"active\""), "{out}");
    assert_eq!(
        lab.dr.get("configmaps", "default", "app-config").unwrap()["data"]["role"],
        "active"
    );
}

#[tokio::test]
async fn clear_errors_and_non_zero_exits() {
    let lab = Lab::start().await;

    // Unknown context: names it and lists what the kubeconfig has.
    std::fs::write(
        lab.config(),
        std::fs::read_to_string(lab.config())
            .unwrap()
            .replace("context = \"dr\"", "context = \"dr-typo\""),
    )
    .unwrap();
    let out = lab.drdctl(&["deploy", "--region", "dr"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("\"dr-typo\"") && t.contains("contexts there: primary, dr"),
        "{t}"
    );
    assert!(t.contains("regions.dr.context"), "{t}");
    lab.write_config("");

    // A config key that does not exist: usage error, named.
    std::fs::write(lab.config(), "[regions.primary]\ncontext = \"primary\"\n").unwrap();
    let out = lab.drdctl(&["deploy"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("regions.dr"), "{}", text(&out));
    lab.write_config("");

    // The API is down.
    lab.primary.down().await;
    let out = lab.drdctl(&["deploy", "--region", "primary"]).await;
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(
        t.contains("context primary") && t.contains("unreachable"),
        "{t}"
    );
    lab.primary.up().await.unwrap();

    // An invalid object: the server's 422 names the object and the field.
    let bad = lab.dir.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("kustomization.yaml"),
        "resources:\n  - deploy.yaml\n",
    )
    .unwrap();
    std::fs::write(
        bad.join("deploy.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: broken\nspec:\n  replicas: -1\n  selector:\n    matchLabels: {app: broken}\n  template:\n    metadata:\n      labels: {app: broken}\n    spec:\n      containers: [{name: c, image: x}]\n",
    )
    .unwrap();
    lab.write_config("");
    let cfg = std::fs::read_to_string(lab.config()).unwrap().replace(
        &format!("{}/dr", repo_root().join("manifests").display()),
        &bad.display().to_string(),
    );
    std::fs::write(lab.config(), cfg).unwrap();
    let out = lab.drdctl(&["deploy", "--region", "dr"]).await;
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(
        t.contains("Deployment/broken is invalid") && t.contains("replicas"),
        "{t}"
    );
}

#[tokio::test]
async fn a_conflict_names_the_manager_and_the_way_out() {
    let lab = Lab::start().await;
    assert_ok(&lab.drdctl(&["deploy", "--region", "dr", "--no-wait"]).await);
    assert_ok(
        &lab.kubectl(&[
            "--context",
            "dr",
            "scale",
            "deploy/frontend-api",
            "--replicas=2",
        ])
        .await,
    );
    let out = lab.drdctl(&["deploy", "--region", "dr", "--no-wait"]).await;
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(
        t.contains("conflict") && t.contains("--force-conflicts") && t.contains("spec.replicas"),
        "{t}"
    );
    assert_ok(
        &lab.drdctl(&["deploy", "--region", "dr", "--no-wait", "--force-conflicts"])
            .await,
    );
    assert_eq!(
        lab.dr
            .get("deployments", "default", "frontend-api")
            .unwrap()["spec"]["replicas"],
        1
    );
}

#[tokio::test]
async fn kubectl_applies_the_manifests_and_runs_the_seed_failover_commands() {
    let lab = Lab::start().await;
    // The seed's context names, so its commands run verbatim.
    let kc = lab.dir.path().join("seed-kubeconfig");
    lab::kube_api::write_kubeconfig(
        &kc,
        &[
            ("primary-aks-cluster", &lab.primary.url()),
            ("dr-aks-cluster", &lab.dr.url()),
        ],
    )
    .unwrap();
    let dir = lab.dir.path();
    let root = repo_root();
    for (ctx, overlay) in [("primary-aks-cluster", "primary"), ("dr-aks-cluster", "dr")] {
        let m = root.join("manifests").join(overlay);
        assert_ok(&kubectl(&kc, dir, &["config", "use-context", ctx]).await);
        assert_ok(
            &kubectl(
                &kc,
                dir,
                &[
                    "create",
                    "secret",
                    "generic",
                    "postgresql-secret",
                    "--from-literal=password=x",
                    "--namespace=default",
                ],
            )
            .await,
        );
        let out = assert_ok(
            &kubectl(
                &kc,
                dir,
                &["apply", "--server-side", "-k", m.to_str().unwrap()],
            )
            .await,
        );
        assert!(
            out.contains("deployment.apps/frontend-api serverside-applied"),
            "{out}"
        );
    }
    let json = assert_ok(
        &kubectl(
            &kc,
            dir,
            &["--context", "dr-aks-cluster", "get", "deploy", "-o", "json"],
        )
        .await,
    );
    assert!(json.contains("\"business-logic\""), "{json}");

    // The seed's manual failover, step by step (exec aside).
    assert_ok(&kubectl(&kc, dir, &["config", "use-context", "dr-aks-cluster"]).await);
    for d in ["frontend-api", "business-logic", "data-ingest"] {
        assert_ok(&kubectl(&kc, dir, &["scale", "deployment", d, "--replicas=3"]).await);
    }
    assert_ok(
        &kubectl(
            &kc,
            dir,
            &[
                "patch",
                "configmap",
                "app-config",
                "--type",
                "merge",
                "-p",
                r#"{"data":{"region":"primary-failover"}}"#,
            ],
        )
        .await,
    );
    for d in ["frontend-api", "business-logic", "data-ingest"] {
        let target = format!("deployment/{d}");
        assert_ok(&kubectl(&kc, dir, &["rollout", "restart", &target]).await);
        let out =
            assert_ok(&kubectl(&kc, dir, &["rollout", "status", &target, "--timeout=30s"]).await);
        assert!(out.contains("successfully rolled out"), "{out}");
    }
    assert_ok(&kubectl(&kc, dir, &["config", "use-context", "primary-aks-cluster"]).await);
    for d in ["frontend-api", "business-logic", "data-ingest"] {
        assert_ok(&kubectl(&kc, dir, &["scale", "deployment", d, "--replicas=0"]).await);
    }
    assert_eq!(
        lab.dr.get("configmaps", "default", "app-config").unwrap()["data"]["region"],
        "primary-failover"
    );
    assert_eq!(
        lab.primary
            .get("deployments", "default", "data-ingest")
            .unwrap()["spec"]["replicas"],
        0
    );
    assert_eq!(
        lab.dr.get("deployments", "default", "data-ingest").unwrap()["spec"]["replicas"],
        3
    );
}

#[tokio::test]
async fn deploy_pins_images_by_the_digests_build_push_recorded() {
    let lab = Lab::start().await;
    let digest = format!("sha256:{}", "ab".repeat(32));
    let file = lab.dir.path().join("images.json");
    let record = |s: &str| {
        serde_json::json!({
            "repository": format!("127.0.0.1:5000/{s}"), "tag": "1.2.3", "digest": digest,
            "reference": format!("127.0.0.1:5000/{s}:1.2.3@{digest}"), "tags": ["1.2.3"],
            "revision": "abc", "created": "2026-11-24T00:00:00Z", "builder": "native"
        })
    };
    std::fs::write(
        &file,
        serde_json::to_vec(&serde_json::json!({"version": 1, "images": {
            "frontend-api": record("frontend-api"), "business-logic": record("business-logic"),
            "data-ingest": record("data-ingest")}}))
        .unwrap(),
    )
    .unwrap();
    lab.write_config(&format!("[images]\nfile = \"{}\"\n", file.display()));
    let out = assert_ok(
        &lab.drdctl(&["deploy", "--region", "all", "--no-wait"])
            .await,
    );
    assert!(out.contains("images pinned by digest"), "{out}");
    for d in [&lab.primary, &lab.dr] {
        let dep = d.get("deployments", "default", "data-ingest").unwrap();
        assert_eq!(
            dep["spec"]["template"]["spec"]["containers"][0]["image"],
            format!("127.0.0.1:5000/data-ingest:1.2.3@{digest}")
        );
    }
}
