//! A started world in a temp dir, and kubectl pointed at it with the seed's context names.

use std::path::{Path, PathBuf};
use std::process::Output;

use lab::wan::WanSettings;
use lab::world::{World, WorldConfig};

use crate::bins::bin_dir;

pub const PASSWORD: &str = "lab-world-test-password";

/// The application's deployments.
pub const APPS: [&str; 3] = ["frontend-api", "business-logic", "data-ingest"];

/// The repository (manifests/, init-db.sql).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("lab/ has a parent")
        .to_path_buf()
}

/// A running world and the directory holding its files.
pub struct Lab {
    pub world: World,
    pub dir: tempfile::TempDir,
}

impl Lab {
    pub async fn start() -> Lab {
        Self::start_with(WanSettings::default()).await
    }

    /// A world whose regions are `wan` apart.
    pub async fn start_with(wan: WanSettings) -> Lab {
        let dir = tempfile::tempdir().expect("tempdir");
        let world = World::start_with(
            WorldConfig {
                dir: dir.path().join("lab"),
                bin_dir: bin_dir(),
                repo_root: repo_root(),
                password: PASSWORD.into(),
                ingress_port: 0,
                guard_bin: None,
            },
            wan,
        )
        .await
        .expect("start the lab world");
        Lab { world, dir }
    }

    /// kubectl as the seed README's operator runs it (the README's context names), in the
    /// repository.
    pub fn operator(&self) -> Operator {
        Operator {
            kubeconfig: self.seed_kubeconfig(),
            home: self.dir.path().to_path_buf(),
            cwd: repo_root(),
        }
    }

    /// A kubeconfig with the seed README's context names for the two regions.
    pub fn seed_kubeconfig(&self) -> PathBuf {
        let kc = self.dir.path().join("seed-kubeconfig");
        lab::kube_api::write_kubeconfig(
            &kc,
            &[
                (
                    "primary-aks-cluster",
                    &format!("http://{}", self.world.primary.api.addr),
                ),
                (
                    "dr-aks-cluster",
                    &format!("http://{}", self.world.dr.api.addr),
                ),
            ],
        )
        .expect("write the kubeconfig");
        kc
    }
}

/// Splits a command line as sh does for these commands (words, '...' and "..." quoting).
pub fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

pub struct Operator {
    kubeconfig: PathBuf,
    home: PathBuf,
    cwd: PathBuf,
}

impl Operator {
    /// Runs one README line (`kubectl ...`).
    pub async fn line(&self, line: &str) -> Output {
        let w = words(line);
        assert_eq!(w[0], "kubectl", "{line}");
        let args: Vec<&str> = w[1..].iter().map(String::as_str).collect();
        kubectl(&self.kubeconfig, &self.home, &self.cwd, &args).await
    }

    /// Runs one README line, which must succeed; its stdout.
    pub async fn ok(&self, line: &str) -> String {
        ok(&[line], &self.line(line).await)
    }

    /// The README's deployment to both regions: the secret and `kubectl apply -k` of each
    /// region's lab overlay, then waits for the rollouts.
    pub async fn deploy_both(&self, lab: &Lab) {
        let overlays = lab.world.cfg.dir.join("overlays");
        for (context, region) in [("primary-aks-cluster", "primary"), ("dr-aks-cluster", "dr")] {
            self.ok(&format!("kubectl config use-context {context}"))
                .await;
            self.ok(&format!(
                "kubectl create secret generic postgresql-secret \
                 --from-literal=password='{PASSWORD}' --namespace=default"
            ))
            .await;
            let out = self
                .ok(&format!(
                    "kubectl apply -k {}/",
                    overlays.join(region).display()
                ))
                .await;
            assert!(out.contains("statefulset.apps/postgresql created"), "{out}");
            self.ok("kubectl rollout status statefulset/postgresql --timeout=120s")
                .await;
            for d in APPS {
                self.ok(&format!(
                    "kubectl rollout status deployment/{d} --timeout=120s"
                ))
                .await;
            }
        }
    }

    /// One value from psql in `context`'s PostgreSQL pod, through kubectl exec.
    pub async fn sql(&self, context: &str, sql: &str) -> Option<String> {
        let out = self
            .line(&format!(
                "kubectl --context {context} exec postgresql-0 -- psql -U postgres -d appdb -Atc \"{sql}\""
            ))
            .await;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// Real kubectl with `kubeconfig`, run in `cwd` (HOME and the cache in the test's dir).
pub async fn kubectl(kubeconfig: &Path, home: &Path, cwd: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", home)
        .current_dir(cwd)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("kubectl must be installed")
}

/// stdout of a successful run; panics with both streams otherwise.
pub fn ok(args: &[&str], out: &Output) -> String {
    assert!(
        out.status.success(),
        "kubectl {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
