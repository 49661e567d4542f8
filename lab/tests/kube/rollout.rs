//! ReplicaSets, `kubectl rollout history` and `kubectl rollout undo` with real kubectl.

use serde_json::Value;
use std::time::Duration;

use crate::support::{deployment, double, eventually, rolled_out, seed, Kubectl};

fn image(d: &lab::KubeDouble) -> String {
    d.get("deployments", "default", "web").unwrap()["spec"]["template"]["spec"]["containers"][0]
        ["image"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `kubectl rollout history` as (revision, change-cause) rows.
async fn history(k: &Kubectl) -> Vec<(String, String)> {
    let out = k.ok(&["rollout", "history", "deploy/web"]).await;
    let mut lines = out.lines();
    assert_eq!(lines.next().unwrap().trim(), "deployment.apps/web");
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["REVISION", "CHANGE-CAUSE"]
    );
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (r, c) = l.trim().split_once(char::is_whitespace).unwrap();
            (r.to_string(), c.trim().to_string())
        })
        .collect()
}

#[tokio::test]
async fn history_and_undo() {
    let d = double().await;
    seed(&d, deployment("web", 2));
    rolled_out(&d, "web").await;
    let k = Kubectl::new(&d);
    for v in ["2.0", "3.0"] {
        k.ok(&["set", "image", "deploy/web", &format!("web=web:{v}")])
            .await;
        rolled_out(&d, "web").await;
        k.ok(&[
            "annotate",
            "deploy/web",
            &format!("kubernetes.io/change-cause=image {v}"),
            "--overwrite",
        ])
        .await;
    }
    let want = |rows: &[(&str, &str)]| -> Vec<(String, String)> {
        rows.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    let h = eventually("three revisions", Duration::from_secs(10), || async {
        let h = history(&k).await;
        (h.len() == 3 && h[2].1 == "image 3.0").then_some(h)
    })
    .await;
    assert_eq!(
        h,
        want(&[("1", "<none>"), ("2", "image 2.0"), ("3", "image 3.0")])
    );
    let rs: Value = serde_json::from_str(&k.ok(&["get", "rs", "-o", "json"]).await).unwrap();
    assert_eq!(rs["items"].as_array().unwrap().len(), 3);
    let out = k
        .ok(&["rollout", "history", "deploy/web", "--revision=2"])
        .await;
    assert!(
        out.contains("Image:\tweb:2.0") || out.contains("web:2.0"),
        "{out}"
    );

    // Back to the previous revision: its ReplicaSet is used again, as revision 4.
    let out = k.ok(&["rollout", "undo", "deploy/web"]).await;
    assert_eq!(out.trim(), "deployment.apps/web rolled back");
    assert_eq!(image(&d), "web:2.0");
    rolled_out(&d, "web").await;
    let h = eventually("revision 2 again as 4", Duration::from_secs(10), || async {
        let h = history(&k).await;
        (h.iter().map(|r| r.0.as_str()).collect::<Vec<_>>() == ["1", "3", "4"]).then_some(h)
    })
    .await;
    assert_eq!(h[2].1, "image 2.0");
    let out = k
        .run(&["rollout", "undo", "deploy/web", "--to-revision=9"])
        .await;
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("unable to find specified revision 9 in history"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    k.ok(&["rollout", "undo", "deploy/web", "--to-revision=1"])
        .await;
    assert_eq!(image(&d), "web:1.0");

    // The ReplicaSets go with their Deployment.
    k.ok(&["delete", "deploy/web"]).await;
    eventually(
        "replica sets collected",
        Duration::from_secs(10),
        || async {
            d.list("replicasets", Some("default"))
                .is_empty()
                .then_some(())
        },
    )
    .await;
}
