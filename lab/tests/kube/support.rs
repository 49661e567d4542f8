//! Shared helpers for the Kubernetes double's integration tests: start a double on a free port,
//! build a kube-rs client or a kubectl runner for it, fixtures, and deadline polling (tests never
//! sleep to synchronise).

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use kube::Client;
use lab::kube_api::write_kubeconfig;
use lab::{KubeDouble, KubeDoubleConfig};
use serde_json::{json, Value};

/// Starts a double on 127.0.0.1:0 with fast pods (50 ms to Ready).
pub async fn double() -> KubeDouble {
    test_support::test_log();
    let cfg = KubeDoubleConfig::new("primary", "127.0.0.1:0".parse().unwrap())
        .pod_start_delay(Duration::from_millis(50));
    KubeDouble::start_with(cfg).await.expect("start the double")
}

/// A kube-rs client for the double (namespace `default`).
pub fn client(d: &KubeDouble) -> Client {
    let config = kube::Config::new(d.url().parse().expect("double url"));
    Client::try_from(config).expect("kube client")
}

pub use test_support::eventually;

/// A Deployment manifest.
pub fn deployment(name: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": format!("{name}:1.0"), "ports": [{"containerPort": 8080}]}]}
            }
        }
    })
}

/// A Service manifest.
pub fn service(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}
    })
}

/// A ConfigMap manifest.
pub fn config_map(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
}

/// Seeds an object in namespace `default` through the store, as a test fixture.
pub fn seed(d: &KubeDouble, mut obj: Value) -> Value {
    obj["metadata"]["namespace"] = json!("default");
    d.create(obj).expect("seed object")
}

/// Waits until the deployment `name` is fully rolled out (kubectl's verdict).
pub async fn rolled_out(d: &KubeDouble, name: &str) -> Value {
    eventually(
        &format!("deployment {name} rolled out"),
        Duration::from_secs(20),
        || async {
            let o = d.get("deployments", "default", name)?;
            let gen = o["metadata"]["generation"].as_i64()?;
            let st = &o["status"];
            let want = o["spec"]["replicas"].as_i64()?;
            let n = |k: &str| st[k].as_i64().unwrap_or(0);
            let done = st["observedGeneration"].as_i64() == Some(gen)
                && n("updatedReplicas") == want
                && n("replicas") == want
                && n("availableReplicas") == want;
            done.then_some(o)
        },
    )
    .await
}

/// Real kubectl pointed at one or more doubles through a generated kubeconfig.
pub struct Kubectl {
    dir: tempfile::TempDir,
    context: String,
}

impl Kubectl {
    /// kubectl for the double (context `primary`).
    pub fn new(d: &KubeDouble) -> Self {
        Self::with_contexts(&[("primary", d)], "primary")
    }

    /// kubectl with several contexts, using `context`.
    pub fn with_contexts(doubles: &[(&str, &KubeDouble)], context: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let urls: Vec<(String, String)> = doubles
            .iter()
            .map(|(n, d)| (n.to_string(), d.url()))
            .collect();
        let pairs: Vec<(&str, &str)> = urls.iter().map(|(n, u)| (n.as_str(), u.as_str())).collect();
        write_kubeconfig(&dir.path().join("kubeconfig"), &pairs).expect("write kubeconfig");
        Kubectl {
            dir,
            context: context.to_string(),
        }
    }

    /// A path inside this kubectl's temp dir (for manifests).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs kubectl with `args`; the cache dir is private so discovery is never stale.
    pub async fn run(&self, args: &[&str]) -> Output {
        self.run_with_stdin(args, None).await
    }

    /// Starts kubectl with `args` (stdout piped, stdin empty), for commands that stream.
    pub fn spawn(&self, args: &[&str]) -> tokio::process::Child {
        let mut cmd = self.command(args);
        cmd.stderr(std::process::Stdio::inherit());
        cmd.spawn().expect("kubectl must be installed")
    }

    /// kubectl with `args`, to be spawned by the caller (stdin empty, stdout and stderr
    /// piped, killed on drop), e.g. with extra environment.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(self.dir.path().join("kubeconfig"))
            .arg("--context")
            .arg(&self.context)
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .env("HOME", self.dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// The whole kubectl command line for `args` (kubeconfig, context, cache dir), e.g. to run
    /// it on a terminal through `script`.
    pub fn argv(&self, args: &[&str]) -> Vec<String> {
        let d = self.dir.path();
        let mut v = vec!["kubectl".to_string(), "--kubeconfig".to_string()];
        v.push(d.join("kubeconfig").to_string_lossy().into_owned());
        v.extend(["--context".to_string(), self.context.clone()]);
        v.push("--cache-dir".to_string());
        v.push(d.join("cache").to_string_lossy().into_owned());
        v.extend(args.iter().map(|a| a.to_string()));
        v
    }

    /// Runs kubectl with `args`, `input` as its stdin (none: an empty stdin).
    pub async fn run_with_stdin(&self, args: &[&str], input: Option<&[u8]>) -> Output {
        use tokio::io::AsyncWriteExt;
        let kubeconfig = self.dir.path().join("kubeconfig");
        let cache = self.dir.path().join("cache");
        let mut child = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--context")
            .arg(&self.context)
            .arg("--cache-dir")
            .arg(&cache)
            .args(args)
            .env("HOME", self.dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("kubectl must be installed (Debian package kubernetes-client or kubectl)");
        let mut stdin = child.stdin.take().expect("piped stdin");
        let input = input.unwrap_or_default().to_vec();
        tokio::spawn(async move {
            let _ = stdin.write_all(&input).await;
        });
        child.wait_with_output().await.expect("kubectl ran")
    }

    /// Runs kubectl and returns stdout, panicking with stderr on failure.
    pub async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The names of the pods in `default`, sorted.
pub fn pod_names(d: &KubeDouble) -> Vec<String> {
    let mut names: Vec<String> = d
        .list("pods", Some("default"))
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
        .collect();
    names.sort();
    names
}
