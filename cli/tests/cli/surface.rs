//! The command surface: help lists every command; usage errors exit 2.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_drdctl");

#[test]
fn help_lists_every_command() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "build-push",
        "deploy",
        "init-db",
        "verify",
        "status",
        "failover",
        "failback",
        "lab",
    ] {
        assert!(help.contains(cmd), "{cmd} missing from --help:\n{help}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let out = Command::new(BIN)
        .args(["failover", "--to", "mars"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// docs/man/*.1 and docs/cli-reference.md are what `drdctl docs` generates now: the help of
/// every command, checked in (regenerate with `cargo run -p drdctl -- docs --dir docs`).
#[test]
fn the_man_pages_and_the_reference_are_current() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["docs", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let docs = crate::support::repo_root().join("docs");
    let mut compared = 0;
    for entry in walk(dir.path()) {
        let rel = entry.strip_prefix(dir.path()).unwrap();
        let want = std::fs::read(&entry).unwrap();
        let have = std::fs::read(docs.join(rel)).unwrap_or_default();
        assert!(
            want == have,
            "docs/{} is stale: run `cargo run -p drdctl -- docs --dir docs`",
            rel.display()
        );
        compared += 1;
    }
    assert!(compared > 15, "{compared} files");
    // Every command's help has examples.
    let reference = std::fs::read_to_string(docs.join("cli-reference.md")).unwrap();
    for section in reference.split("\n## ").skip(1) {
        let name = section.lines().next().unwrap();
        if ["drdctl completions", "drdctl docs"].contains(&name) || section.contains("Examples:") {
            continue;
        }
        panic!("no examples in the help of {name}");
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn completions_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("failover") && script.contains("discard-writes-of"),
            "{shell}"
        );
    }
}

/// `drdctl --help | head -1`: stdout closed before drdctl writes: it ends quietly (141), no
/// panic.
#[test]
fn a_closed_pipe_ends_quietly() {
    for args in [
        &["--help"][..],
        &["completions", "bash"],
        &["failover", "--help"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(BIN)
            .args(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            matches!(out.status.code(), Some(141) | Some(0)),
            "{args:?}: {:?} {err}",
            out.status
        );
    }
}

/// An API server that accepts connections and never answers: with --timeout 2s, status ends
/// (exit 5: no region can be named active) and names the server and the context. Config
/// from the seed's variables alone (no drdctl.toml).
#[test]
fn a_hanging_api_server_is_bounded_by_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Accept and hold every connection, answering nothing.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming() {
            held.push(c);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let cluster = |name: &str| format!("- name: {name}\n  cluster:\n    server: http://{addr}\n");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n{}{}contexts:\n- name: east\n  context: {{cluster: east, user: u}}\n- name: west\n  context: {{cluster: west, user: u}}\nusers:\n- name: u\n  user: {{token: t}}\ncurrent-context: east\n",
            cluster("east"),
            cluster("west")
        ),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .args(["--timeout", "2s", "--kubeconfig"])
        .arg(&kubeconfig)
        .args(["status", "--state-dir"])
        .arg(dir.path())
        .env("PRIMARY_CLUSTER", "east")
        .env("DR_CLUSTER", "west")
        .env_remove("DRDCTL_CONFIG")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(5), "{text}");
    assert!(
        text.contains(&addr.to_string()) && text.contains("east"),
        "{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
    // Not a timing test: only a guard that --timeout took effect at all (kube-rs's default
    // read timeout is 295 s).
    assert!(
        started.elapsed() < std::time::Duration::from_secs(120),
        "{text}"
    );
}
