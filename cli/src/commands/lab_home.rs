//! Where `drdctl lab` finds its files, from any directory: the repository (`--repo`, the
//! current directory or one of its parents, or else the manifests and schema embedded in the
//! binary, written into the lab's directory), and the running lab (a pointer that `lab up`
//! leaves in the user's state directory, so `lab status` and `lab down` need no `--dir`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// The files `lab up` deploys, embedded: a binary that is not run from a checkout still has
/// them. (A test checks the list against manifests/.)
pub const EMBEDDED: &[(&str, &str)] = &[
    ("init-db.sql", include_str!("../../../init-db.sql")),
    (
        "manifests/README.md",
        include_str!("../../../manifests/README.md"),
    ),
    (
        "manifests/base/app-config.yaml",
        include_str!("../../../manifests/base/app-config.yaml"),
    ),
    (
        "manifests/base/business-logic.yaml",
        include_str!("../../../manifests/base/business-logic.yaml"),
    ),
    (
        "manifests/base/data-ingest.yaml",
        include_str!("../../../manifests/base/data-ingest.yaml"),
    ),
    (
        "manifests/base/frontend-api.yaml",
        include_str!("../../../manifests/base/frontend-api.yaml"),
    ),
    (
        "manifests/base/ingress.yaml",
        include_str!("../../../manifests/base/ingress.yaml"),
    ),
    (
        "manifests/base/kustomization.yaml",
        include_str!("../../../manifests/base/kustomization.yaml"),
    ),
    (
        "manifests/base/postgresql/networkpolicies.yaml",
        include_str!("../../../manifests/base/postgresql/networkpolicies.yaml"),
    ),
    (
        "manifests/base/postgresql/role-configmap.yaml",
        include_str!("../../../manifests/base/postgresql/role-configmap.yaml"),
    ),
    (
        "manifests/base/postgresql/services.yaml",
        include_str!("../../../manifests/base/postgresql/services.yaml"),
    ),
    (
        "manifests/base/postgresql/start.sh",
        include_str!("../../../manifests/base/postgresql/start.sh"),
    ),
    (
        "manifests/base/postgresql/statefulset.yaml",
        include_str!("../../../manifests/base/postgresql/statefulset.yaml"),
    ),
    (
        "manifests/dr/kustomization.yaml",
        include_str!("../../../manifests/dr/kustomization.yaml"),
    ),
    (
        "manifests/primary/kustomization.yaml",
        include_str!("../../../manifests/primary/kustomization.yaml"),
    ),
    (
        "manifests/witness/guard/guard.yaml",
        include_str!("../../../manifests/witness/guard/guard.yaml"),
    ),
    (
        "manifests/witness/guard/kustomization.yaml",
        include_str!("../../../manifests/witness/guard/kustomization.yaml"),
    ),
    (
        "manifests/witness/primary/kustomization.yaml",
        include_str!("../../../manifests/witness/primary/kustomization.yaml"),
    ),
    (
        "manifests/witness/dr/kustomization.yaml",
        include_str!("../../../manifests/witness/dr/kustomization.yaml"),
    ),
];

fn is_repo(d: &Path) -> bool {
    d.join("manifests").is_dir() && d.join("init-db.sql").is_file()
}

/// The repository the lab deploys: `--repo`, else the current directory or a parent, else the
/// embedded copy, written into drdctl's state directory.
pub fn repo(explicit: Option<&Path>, lab_dir: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(r) = explicit {
        if !is_repo(r) {
            bail!(
                "--repo {}: no manifests/ and init-db.sql there (give a drdctl checkout, or leave --repo out to use the copy built into drdctl)",
                r.display()
            );
        }
        return Ok(std::fs::canonicalize(r)?);
    }
    let cwd = std::env::current_dir()?;
    if let Some(r) = cwd.ancestors().find(|d| is_repo(d)) {
        return Ok(r.to_path_buf());
    }
    // Beside the lab's directory, not in it (`lab up` starts from an empty one), and where
    // the lab's processes can read it: the PostgreSQL pods run as another user (`postgres`)
    // from this directory, and a home directory is usually closed to them.
    let _ = lab_dir;
    let root = std::env::temp_dir().join(format!("drdctl-embedded-{}", env!("CARGO_PKG_VERSION")));
    for (rel, text) in EMBEDDED {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().expect("a relative file path"))?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        let mode = if rel.ends_with(".sh") { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    }
    for sub in [
        "",
        "manifests",
        "manifests/base",
        "manifests/base/postgresql",
        "manifests/primary",
        "manifests/dr",
    ] {
        let _ = std::fs::set_permissions(root.join(sub), std::fs::Permissions::from_mode(0o755));
    }
    Ok(root)
}

/// drdctl's state directory: `$XDG_STATE_HOME/drdctl`, else `~/.local/state/drdctl`.
fn state_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("drdctl"))
}

/// The user's pointer to the running lab.
fn pointer() -> Option<PathBuf> {
    Some(state_dir()?.join("lab-dir"))
}

/// The lab's directory: `--dir`, else `DRDCTL_LAB_DIR`, else (for everything but `up`) the
/// running lab the pointer names, else `.drdctl/lab` here.
pub fn dir(explicit: Option<PathBuf>, action: &str, env_dir: Option<PathBuf>) -> PathBuf {
    let chosen = explicit.or(env_dir).or_else(|| {
        if action == "up" || action == "drill" {
            return None;
        }
        let p = pointer()?;
        let d = PathBuf::from(std::fs::read_to_string(p).ok()?.trim());
        d.join("pid").is_file().then_some(d)
    });
    let d = chosen.unwrap_or_else(|| PathBuf::from(".drdctl/lab"));
    std::fs::create_dir_all(&d).ok();
    std::fs::canonicalize(&d).unwrap_or(d)
}

/// After `lab up`: the pointer names this lab.
pub fn remember(dir: &Path) {
    if let Some(p) = pointer() {
        if let Some(parent) = p.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let _ = std::fs::write(p, dir.display().to_string());
    }
}

/// After `lab down`: the pointer is removed if it named this lab.
pub fn forget(dir: &Path) {
    if let Some(p) = pointer() {
        if std::fs::read_to_string(&p).is_ok_and(|d| Path::new(d.trim()) == dir) {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// `drdctl -o json lab status`: whether the lab runs, and where its files are.
pub fn status_json(dir: &Path) -> serde_json::Value {
    let pid = super::lab::read_pid(dir).filter(|p| super::lab::pid_alive(*p));
    serde_json::json!({
        "running": pid.is_some(),
        "pid": pid,
        "dir": dir,
        "kubeconfig": dir.join("kubeconfig"),
        "config": dir.join("drdctl.toml"),
        "env": dir.join("env"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file `lab up` deploys is embedded (a new manifest must be added to EMBEDDED).
    #[test]
    fn every_manifest_is_embedded() {
        fn walk(d: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    if p.file_name().is_some_and(|n| n != "tests") {
                        walk(&p, out);
                    }
                } else {
                    out.push(p);
                }
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files = Vec::new();
        walk(&root.join("manifests"), &mut files);
        let embedded: Vec<&str> = EMBEDDED.iter().map(|(p, _)| *p).collect();
        for f in files {
            let rel = f.strip_prefix(&root).unwrap().to_str().unwrap().to_string();
            assert!(
                embedded.contains(&rel.as_str()),
                "{rel} is not in lab_home::EMBEDDED"
            );
        }
        assert!(embedded.contains(&"init-db.sql"));
    }

    #[test]
    fn an_explicit_repo_that_is_not_a_checkout_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let e = repo(Some(dir.path()), dir.path()).unwrap_err().to_string();
        assert!(e.contains("--repo") && e.contains("init-db.sql"), "{e}");
    }
}
