//! The pair on its own: start.sh's paths (init, clone, start, promote, rejoin by rewind) on
//! real PostgreSQL, driven through the role files as the ConfigMap drives them.

use lab::pg::{PgPair, RoleFiles};

use crate::support::{config, pair, wait_value};

#[tokio::test]
async fn a_row_written_on_the_primary_appears_on_the_standby() {
    let p = pair().await;
    assert!(p.primary.current_log().contains("decision=init-primary"));
    assert!(
        p.dr.current_log().contains("decision=clone-standby"),
        "{}",
        p.dr.current_log()
    );
    p.primary
        .psql(
            "appdb",
            "CREATE TABLE t (id int); INSERT INTO t VALUES (1);",
        )
        .await
        .unwrap();
    wait_value(&p.dr, "SELECT count(*) FROM t", "1").await;
    assert_eq!(
        p.dr.psql("postgres", "SELECT pg_is_in_recovery()")
            .await
            .unwrap(),
        "t"
    );
    // The lab's tuning travelled with the clone, start.sh's settings are in place.
    assert_eq!(p.dr.psql("postgres", "SHOW fsync").await.unwrap(), "off");
    assert_eq!(
        p.dr.psql("postgres", "SHOW wal_log_hints").await.unwrap(),
        "on"
    );
}

#[tokio::test]
async fn either_node_stops_starts_and_survives_a_kill() {
    let p = pair().await;
    p.primary
        .psql("appdb", "CREATE TABLE t (id int)")
        .await
        .unwrap();
    p.dr.stop().await.unwrap();
    assert!(!p.dr.is_running());
    assert!(!p.dr.ready().await);
    p.primary
        .psql("appdb", "INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let again = p.dr.start().await.unwrap();
    assert_eq!(again.decision, "start-standby");
    wait_value(&p.dr, "SELECT count(*) FROM t", "1").await;

    p.primary
        .psql("appdb", "INSERT INTO t VALUES (2)")
        .await
        .unwrap();
    p.primary.kill().await.unwrap();
    assert!(!p.primary.is_running());
    assert!(!p.primary.ready().await);
    let back = p.primary.start().await.unwrap();
    assert_eq!(back.decision, "start-primary");
    assert_eq!(
        p.primary
            .psql("appdb", "SELECT count(*) FROM t")
            .await
            .unwrap(),
        "2"
    );
    wait_value(&p.dr, "SELECT count(*) FROM t", "2").await;
}

#[tokio::test]
async fn the_script_promotes_and_rewinds_when_the_roles_change() {
    promote_dr_then_rewind_the_old_primary(pair().await).await;
}

/// The rewound standby's trial start, on a machine where a postmaster takes half a second to
/// write its pid file. A trial that asked `pg_ctl status` 50 ms after starting took that for
/// a dead server: the rejoin fell back to a base backup, or start.sh failed reading a trial
/// log not yet created (CI saw `FATAL: command failed at line 425` in the drill).
#[tokio::test]
async fn a_slow_postmaster_start_is_not_taken_for_a_dead_one() {
    let slow = slow_postmaster_bin();
    let mut cfg = config();
    cfg.primary.pg_bin = slow.path().to_path_buf();
    promote_dr_then_rewind_the_old_primary(
        PgPair::start(cfg).await.expect("start the PostgreSQL pair"),
    )
    .await;
}

/// A `PG_BIN` whose `postgres` waits 0.5 s before running when started as a server on no
/// TCP address (start.sh's temporary and trial servers). `pg_ctl` is a copy, not a link, so
/// that it too starts this `postgres` (it looks in its own directory, links resolved).
fn slow_postmaster_bin() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let real = lab::pg::default_pg_bin();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for entry in std::fs::read_dir(&real).unwrap() {
        let name = entry.unwrap().file_name();
        let to = dir.path().join(&name);
        match name.to_str() {
            Some("postgres") => {
                std::fs::write(
                    &to,
                    format!(
                        "#!/bin/sh\ncase \"$*\" in *listen_addresses=*) sleep 0.5 ;; esac\nexec {} \"$@\"\n",
                        real.join("postgres").display()
                    ),
                )
                .unwrap();
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            // The copy keeps the binary's mode.
            Some("pg_ctl") => {
                std::fs::copy(real.join(&name), &to).unwrap();
            }
            _ => std::os::unix::fs::symlink(real.join(&name), &to).unwrap(),
        }
    }
    dir
}

/// dr promoted after the primary wrote a row it never got and crashed; then the old primary,
/// restarted with the standby role, is rewound, verified by its trial start, and follows dr.
async fn promote_dr_then_rewind_the_old_primary(p: PgPair) {
    p.primary
        .psql("appdb", "CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    wait_value(&p.dr, "SELECT count(*) FROM t", "1").await;
    // The primary writes a row the standby never gets, then crashes.
    p.dr.stop().await.unwrap();
    p.primary
        .psql("appdb", "INSERT INTO t VALUES (99)")
        .await
        .unwrap();
    p.primary.kill().await.unwrap();

    p.dr.write_role(&RoleFiles::primary(p.primary.addr()))
        .unwrap();
    let promoted = p.dr.start().await.unwrap();
    assert_eq!(promoted.decision, "promote");
    assert!(
        promoted.log.contains("promote: promoted, timeline 1 -> 2"),
        "{}",
        promoted.log
    );
    p.dr.psql("appdb", "INSERT INTO t VALUES (2)")
        .await
        .unwrap();

    p.primary
        .write_role(&RoleFiles::standby_of(p.dr.addr()))
        .unwrap();
    let rejoined = p.primary.start().await.unwrap();
    assert_eq!(rejoined.decision, "rejoin");
    assert!(
        rejoined.log.contains("rejoin: pg_rewind from"),
        "{}",
        rejoined.log
    );
    assert!(
        rejoined.log.contains("rejoin: verified"),
        "{}",
        rejoined.log
    );
    wait_value(
        &p.primary,
        "SELECT string_agg(id::text, ',' ORDER BY id) FROM t",
        "1,2",
    )
    .await;
}
