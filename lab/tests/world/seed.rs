//! The seed README's procedures, verbatim, with real kubectl against the lab: deploy both
//! regions (`kubectl create secret`, `kubectl apply -k`), initialise the database (`kubectl cp
//! init-db.sql postgresql-0:/tmp/init-db.sql`, then `psql -f` through `kubectl exec`), then
//! the manual failover (scale up DR, `pg_promote()` through `kubectl exec`, the ConfigMap
//! patch, the rolling restarts, the primary scaled to 0). The command lines are the README's,
//! split as a shell would; the only substitutions are the lab's overlay directories (the
//! overlays with the lab's PostgreSQL addresses) for `kubernetes/microservices/<region>/` and
//! the secret's value.

use std::time::Duration;

use test_support::eventually;

use crate::support::{ok, words, Lab, APPS};

async fn create_user(ingress: std::net::SocketAddr, name: &str) -> Option<u16> {
    let resp = reqwest::Client::new()
        .post(format!("http://{ingress}/api/v1/users"))
        .json(&serde_json::json!({"username": name, "email": format!("{name}@example.com")}))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    Some(resp.status().as_u16())
}

#[test]
fn command_lines_split_as_sh_does() {
    assert_eq!(
        words(r#"kubectl annotate pod p  'a=b c' x="" ''"#),
        ["kubectl", "annotate", "pod", "p", "a=b c", "x=", ""]
    );
    assert_eq!(
        words(r#"kubectl exec -it p -- psql -c "SELECT pg_promote();""#),
        [
            "kubectl",
            "exec",
            "-it",
            "p",
            "--",
            "psql",
            "-c",
            "SELECT pg_promote();"
        ]
    );
}

#[tokio::test]
async fn the_seed_readme_deploy_init_and_manual_failover_verbatim() {
    let lab = Lab::start().await;
    let op = lab.operator();

    // Deploy to each region (README "Deploy to Primary Region" / "Deploy to DR Region").
    op.deploy_both(&lab).await;

    // Monitoring: "kubectl top pods", the pods' real usage (PostgreSQL: its process group).
    let top = op
        .ok("kubectl --context primary-aks-cluster top pods")
        .await;
    let pg = top
        .lines()
        .find(|l| l.starts_with("postgresql-0 "))
        .unwrap_or_else(|| panic!("no postgresql-0 in\n{top}"));
    let mem: u64 = pg
        .split_whitespace()
        .nth(2)
        .unwrap()
        .trim_end_matches("Mi")
        .parse()
        .unwrap();
    assert!(mem >= 10, "PostgreSQL uses more than {mem}Mi:\n{top}");
    assert_eq!(
        top.lines()
            .filter(|l| l.starts_with("frontend-api-"))
            .count(),
        3,
        "{top}"
    );

    // Initialize Database, on the primary.
    op.ok("kubectl config use-context primary-aks-cluster")
        .await;
    op.ok("kubectl cp init-db.sql postgresql-0:/tmp/init-db.sql")
        .await;
    let out = op
        .line("kubectl exec -it postgresql-0 -- psql -U postgres -d appdb -f /tmp/init-db.sql")
        .await;
    let text = ok(&["exec psql -f"], &out);
    assert!(text.contains("CREATE TABLE"), "{text}");
    // No terminal here: kubectl says so and runs without one, as it does in any script.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unable to use a TTY"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The schema reached DR by streaming replication.
    let users_table = "SELECT count(*) FROM pg_tables WHERE tablename = 'users'";
    eventually("the schema on DR", Duration::from_secs(60), || async {
        (op.sql("dr-aks-cluster", users_table).await? == "1").then_some(())
    })
    .await;
    // The seed's init runs as `postgres`, so the tables are postgres's and the application's
    // user (`appuser`) may not write: the app answers 500, and its log (kubectl logs, as the
    // README's Monitoring section reads it) says why. drdctl init-db creates them as appuser.
    assert_eq!(
        create_user(lab.world.primary.ingress.addr, "refused").await,
        Some(500)
    );
    eventually(
        "the app's log names the cause",
        Duration::from_secs(10),
        || async {
            let logs = op.ok("kubectl logs -l app=frontend-api --tail=100").await;
            logs.contains("permission denied for table users")
                .then_some(())
        },
    )
    .await;
    let insert = |name: &str| {
        format!(
            "-- psql -U postgres -d appdb -c \"INSERT INTO users (username, email) VALUES ('{name}', '{name}@example.com')\""
        )
    };
    op.ok(&format!(
        "kubectl exec postgresql-0 {}",
        insert("before-failover")
    ))
    .await;
    assert_eq!(
        op.sql("dr-aks-cluster", "SELECT pg_is_in_recovery()")
            .await
            .as_deref(),
        Some("t")
    );

    // Manual Failover Steps (the lab's kubeconfig names its contexts as the README does).
    op.ok("kubectl config use-context dr-aks-cluster").await;
    for d in APPS {
        op.ok(&format!("kubectl scale deployment {d} --replicas=3"))
            .await;
    }
    let out = op
        .ok(r#"kubectl exec -it statefulset/postgresql -- psql -U postgres -c "SELECT pg_promote();""#)
        .await;
    assert!(out.contains("pg_promote") && out.contains(" t"), "{out}");
    op.ok(r#"kubectl patch configmap app-config --type merge -p '{"data":{"region":"primary-failover"}}'"#)
        .await;
    for d in APPS {
        let out = op
            .ok(&format!("kubectl rollout restart deployment/{d}"))
            .await;
        assert_eq!(out.trim(), format!("deployment.apps/{d} restarted"));
    }
    op.ok("kubectl config use-context primary-aks-cluster")
        .await;
    for d in APPS {
        op.ok(&format!("kubectl scale deployment {d} --replicas=0"))
            .await;
    }

    // DR's database is the primary now: it kept the write made before and takes new ones.
    assert_eq!(
        op.sql("dr-aks-cluster", "SELECT pg_is_in_recovery()")
            .await
            .as_deref(),
        Some("f")
    );
    assert_eq!(
        op.sql(
            "dr-aks-cluster",
            "SELECT count(*) FROM users WHERE username = 'before-failover'"
        )
        .await
        .as_deref(),
        Some("1")
    );
    op.ok(&format!(
        "kubectl --context dr-aks-cluster exec statefulset/postgresql {}",
        insert("after-failover")
    ))
    .await;
    for d in APPS {
        op.ok(&format!(
            "kubectl --context dr-aks-cluster rollout status deployment/{d}"
        ))
        .await;
    }
    // The app in DR answers (and, the grants being the seed's, still may not write).
    assert_eq!(
        create_user(lab.world.dr.ingress.addr, "after-failover-app").await,
        Some(500)
    );
    eventually(
        "the primary's pods gone",
        Duration::from_secs(30),
        || async {
            let out = op.ok("kubectl get pods -l app=frontend-api -o name").await;
            out.trim().is_empty().then_some(())
        },
    )
    .await;
    lab.world.stop().await;
}
