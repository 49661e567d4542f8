//! A two-region lab of Kubernetes doubles, a kubeconfig and a drdctl.toml for them, and
//! runners for the real drdctl and kubectl binaries.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use lab::kube_api::write_kubeconfig;
use lab::{KubeDouble, KubeDoubleConfig};

pub const DRDCTL: &str = env!("CARGO_BIN_EXE_drdctl");
pub const PASSWORD: &str = "lab-Secret-9f3k";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub struct Lab {
    pub primary: KubeDouble,
    pub dr: KubeDouble,
    pub dir: tempfile::TempDir,
}

impl Lab {
    pub async fn start() -> Lab {
        let start = |region: &str| {
            KubeDouble::start_with(
                KubeDoubleConfig::new(region, "127.0.0.1:0".parse().unwrap())
                    .pod_start_delay(Duration::from_millis(50)),
            )
        };
        let primary = start("primary").await.unwrap();
        let dr = start("dr").await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        write_kubeconfig(
            &dir.path().join("kubeconfig"),
            &[("primary", &primary.url()), ("dr", &dr.url())],
        )
        .unwrap();
        let lab = Lab { primary, dr, dir };
        lab.write_config("");
        lab
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("drdctl.toml")
    }

    /// Writes drdctl.toml for the lab; `extra` is appended (TOML).
    pub fn write_config(&self, extra: &str) {
        let manifests = repo_root().join("manifests");
        let text = format!(
            r#"
[kube]
kubeconfig = "{kc}"

[regions.primary]
context = "primary"
overlay = "{m}/primary"

[regions.dr]
context = "dr"
overlay = "{m}/dr"
{extra}
"#,
            kc = self.kubeconfig().display(),
            m = manifests.display()
        );
        std::fs::write(self.config(), text).unwrap();
    }

    pub async fn drdctl(&self, args: &[&str]) -> Output {
        tokio::process::Command::new(DRDCTL)
            .arg("--config")
            .arg(self.config())
            .args(args)
            .env("DRDCTL_POSTGRES_PASSWORD", PASSWORD)
            .env_remove("KUBECONFIG")
            .output()
            .await
            .unwrap()
    }

    pub async fn kubectl(&self, args: &[&str]) -> Output {
        kubectl(&self.kubeconfig(), self.dir.path(), args).await
    }
}

pub async fn kubectl(kubeconfig: &Path, dir: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .arg("--cache-dir")
        .arg(dir.join("kube-cache"))
        .args(args)
        .output()
        .await
        .expect("kubectl is installed (apt-get install kubernetes-client)")
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[track_caller]
pub fn assert_ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed ({:?}):\n{}",
        o.status.code(),
        text(o)
    );
    text(o)
}
