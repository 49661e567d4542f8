//! A started world in a temp dir, and kubectl pointed at it with the seed's context names.

use std::path::{Path, PathBuf};
use std::process::Output;

use lab::world::{World, WorldConfig};

use crate::bins::bin_dir;

pub const PASSWORD: &str = "lab-world-test-password";

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
        let dir = tempfile::tempdir().expect("tempdir");
        let world = World::start(WorldConfig {
            dir: dir.path().join("lab"),
            bin_dir: bin_dir(),
            repo_root: repo_root(),
            password: PASSWORD.into(),
            ingress_port: 0,
        })
        .await
        .expect("start the lab world");
        Lab { world, dir }
    }

    /// A kubeconfig with the seed README's context names for the two regions.
    pub fn seed_kubeconfig(&self) -> PathBuf {
        let kc = self.dir.path().join("seed-kubeconfig");
        lab::kube_api::write_kubeconfig(
            &kc,
            &[
                ("primary-aks-cluster", &self.world.primary.kube.url()),
                ("dr-aks-cluster", &self.world.dr.kube.url()),
            ],
        )
        .expect("write the kubeconfig");
        kc
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
