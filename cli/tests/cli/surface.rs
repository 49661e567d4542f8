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
