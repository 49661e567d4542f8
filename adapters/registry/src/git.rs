//! What the images say about the source: the git revision, the commit time (the images'
//! `created`, so rebuilding a commit gives the same bytes), and where the source lives.

use std::path::Path;
use std::process::Command;

use chrono::{DateTime, Utc};

/// The commit the images are built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceInfo {
    /// Full commit id, with `-dirty` appended when tracked files have uncommitted changes (the
    /// binaries then do not come from that commit alone, and the tag says so).
    pub revision: String,
    /// The commit time (committer date), as seconds since the epoch.
    pub commit_time: i64,
    /// The source repository URL (credentials stripped), if known.
    pub source_url: Option<String>,
}

impl SourceInfo {
    /// The commit time in RFC 3339 (`2024-05-06T07:08:09Z`).
    pub fn created(&self) -> String {
        DateTime::<Utc>::from_timestamp(self.commit_time, 0)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    }
}

/// Why the source could not be described.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the git revision of {dir}: {reason}. build-push tags images with the commit they come from: run it inside the repository's git checkout")]
pub struct GitError {
    pub dir: String,
    pub reason: String,
}

fn git(dir: &Path, args: &[&str]) -> Result<String, GitError> {
    let err = |reason: String| GitError {
        dir: dir.display().to_string(),
        reason,
    };
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .map_err(|e| err(format!("cannot run git: {e}")))?;
    if !out.status.success() {
        return Err(err(format!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Reads revision, commit time and origin URL of the checkout at `dir`.
pub fn source_info(dir: &Path) -> Result<SourceInfo, GitError> {
    let commit = git(dir, &["rev-parse", "HEAD"])?;
    let time = git(dir, &["show", "-s", "--format=%ct", "HEAD"])?;
    let commit_time = time.parse().map_err(|_| GitError {
        dir: dir.display().to_string(),
        reason: format!("unexpected commit time `{time}`"),
    })?;
    // Tracked files only: untracked files are not built unless something includes them, and
    // counting them would call every checkout with a stray file dirty.
    let dirty = !git(dir, &["status", "--porcelain", "--untracked-files=no"])?.is_empty();
    let source_url = git(dir, &["config", "--get", "remote.origin.url"])
        .ok()
        .filter(|u| !u.is_empty())
        .map(|u| strip_userinfo(&u));
    Ok(SourceInfo {
        revision: if dirty {
            format!("{commit}-dirty")
        } else {
            commit
        },
        commit_time,
        source_url,
    })
}

/// `https://user:token@host/x` → `https://host/x`: a URL with a token must never reach a label.
pub fn strip_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, ""),
            };
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_stripped() {
        assert_eq!(
            strip_userinfo("https://x-access-token:ghp_secret@github.com/org/repo.git"),
            "https://github.com/org/repo.git"
        );
        assert_eq!(
            strip_userinfo("https://github.com/org/repo"),
            "https://github.com/org/repo"
        );
        assert_eq!(
            strip_userinfo("git@github.com:org/repo.git"),
            "git@github.com:org/repo.git"
        );
    }

    #[test]
    fn created_is_rfc3339_utc() {
        let s = SourceInfo {
            revision: "r".into(),
            commit_time: 1_700_000_000,
            source_url: None,
        };
        assert_eq!(s.created(), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn reads_this_checkout() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let s = source_info(dir).unwrap();
        assert!(s.revision.len() >= 40, "{}", s.revision);
        assert!(s.commit_time > 1_600_000_000);
        let e = source_info(Path::new("/")).unwrap_err().to_string();
        assert!(e.contains("git checkout"), "{e}");
    }
}
