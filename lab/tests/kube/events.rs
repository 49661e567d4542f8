//! Events from the double's controllers and kubelet, read with real kubectl: `kubectl get
//! events --sort-by=.lastTimestamp` (the seed README's troubleshooting command), the
//! events.k8s.io view, and `kubectl describe`.

use serde_json::Value;
use std::time::Duration;

use crate::support::{deployment, double, eventually, pod_names, rolled_out, seed, Kubectl};

#[tokio::test]
async fn scaling_pods_and_probes_become_events() {
    let d = double().await;
    seed(&d, deployment("web", 2));
    rolled_out(&d, "web").await;
    let k = Kubectl::new(&d);
    k.ok(&["scale", "deploy/web", "--replicas=3"]).await;
    rolled_out(&d, "web").await;
    let pod = pod_names(&d).remove(0);
    d.set_pod_ready("default", &pod, false).unwrap();
    k.ok(&["scale", "deploy/web", "--replicas=1"]).await;
    let hash = d.get("deployments", "default", "web").unwrap()["spec"]["template"].clone();
    let rs = format!("web-{}", lab::kube_api::template_hash(&hash));

    let out = eventually(
        "the scale-down's events",
        Duration::from_secs(10),
        || async {
            let out = k.ok(&["get", "events", "--sort-by=.lastTimestamp"]).await;
            (out.contains("to 1 from 3") && out.contains("Stopping container")).then_some(out)
        },
    )
    .await;
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    // Columns as words: the padding is kubectl's.
    let flat: String = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") + "\n")
        .collect();
    assert_eq!(
        header,
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        "{out}"
    );
    for want in [
        format!("Normal ScalingReplicaSet deployment/web Scaled up replica set {rs} to 2\n"),
        format!("deployment/web Scaled up replica set {rs} to 3 from 2"),
        format!("deployment/web Scaled down replica set {rs} to 1 from 3"),
        format!("SuccessfulCreate replicaset/{rs} Created pod: "),
        format!("SuccessfulDelete replicaset/{rs} Deleted pod: "),
        format!("Warning Unhealthy pod/{pod} Readiness probe failed: HTTP probe failed with statuscode: 503"),
        "Started container web".to_string(),
        "Stopping container web".to_string(),
    ] {
        assert!(flat.contains(&want), "no {want:?} in\n{out}");
    }

    // The same events in events.k8s.io/v1.
    let v: Value =
        serde_json::from_str(&k.ok(&["get", "events.events.k8s.io", "-o", "json"]).await).unwrap();
    let scaled = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["reason"] == "ScalingReplicaSet"
                && e["note"].as_str().unwrap().ends_with("to 1 from 3")
        })
        .expect("the scale-down in events.k8s.io");
    assert_eq!(scaled["regarding"]["kind"], "Deployment");
    assert_eq!(scaled["reportingController"], "deployment-controller");

    // describe lists a pod's own events (selected by involvedObject fields).
    rolled_out(&d, "web").await;
    let survivor = pod_names(&d).remove(0);
    let out = k.ok(&["describe", "pod", &survivor]).await;
    let events = out.split("Events:").nth(1).expect("an Events section");
    assert!(events.contains("Started container web"), "{out}");
}
