//! The pluggable pod runtime: the controller hands every pod to it to start and stop, which is
//! how the lab will later run real service processes as pods.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use lab::kube_api::{PodInfo, PodRuntime, PodStarted};
use lab::{KubeDouble, KubeDoubleConfig};
use serde_json::json;

use crate::support::{deployment, eventually, rolled_out, seed};

#[derive(Default)]
struct Log {
    started: Mutex<Vec<String>>,
    stopped: Mutex<Vec<String>>,
}

struct Recorder(Arc<Log>);

impl PodRuntime for Recorder {
    fn start(&self, pod: PodInfo) -> BoxFuture<'static, Result<PodStarted, String>> {
        self.0.started.lock().unwrap().push(pod.name.clone());
        let app = pod.labels.get("app").map(String::as_str);
        // "flaky" fails its pod's first start only; "broken" every start.
        let first = self
            .0
            .started
            .lock()
            .unwrap()
            .iter()
            .filter(|n| **n == pod.name)
            .count()
            == 1;
        let fail = app == Some("broken") || (app == Some("flaky") && first);
        Box::pin(async move {
            if fail {
                Err("exec format error".into())
            } else {
                Ok(PodStarted {
                    pod_ip: Some("127.0.0.9".into()),
                })
            }
        })
    }

    fn stop(&self, pod: PodInfo) -> BoxFuture<'static, ()> {
        self.0.stopped.lock().unwrap().push(pod.name);
        Box::pin(async {})
    }
}

/// A double whose pods run through a [`Recorder`], and what it records.
async fn recorded_double() -> (KubeDouble, Arc<Log>) {
    let rec = Arc::new(Log::default());
    let cfg = KubeDoubleConfig::new("dr", "127.0.0.1:0".parse().unwrap())
        .runtime(Arc::new(Recorder(rec.clone())))
        .sync_delay(Duration::from_millis(10));
    (KubeDouble::start_with(cfg).await.unwrap(), rec)
}

#[tokio::test]
async fn runtime_starts_and_stops_pods() {
    let (d, rec) = recorded_double().await;
    seed(&d, deployment("web", 2));
    rolled_out(&d, "web").await;
    let pods = d.list("pods", Some("default"));
    assert_eq!(pods.len(), 2);
    assert!(pods.iter().all(|p| p["status"]["podIP"] == "127.0.0.9"));
    assert_eq!(rec.started.lock().unwrap().len(), 2);

    d.update("deploy", "default", "web", |old| {
        let mut dep = old.clone();
        dep["spec"]["replicas"] = json!(1);
        Ok(dep)
    })
    .unwrap();
    eventually("a pod stopped", Duration::from_secs(10), || async {
        (rec.stopped.lock().unwrap().len() == 1).then_some(())
    })
    .await;

    seed(&d, deployment("broken", 1));
    let pod = eventually("broken pod reported", Duration::from_secs(10), || async {
        d.list("pods", Some("default")).into_iter().find(|p| {
            p["metadata"]["labels"]["app"] == "broken" && p["status"]["phase"] == "Running"
        })
    })
    .await;
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
        "CrashLoopBackOff"
    );
    let dep = d.get("deploy", "default", "broken").unwrap();
    assert_eq!(dep["status"]["conditions"][0]["status"], "False");
}

#[tokio::test]
async fn a_pod_turning_not_ready_shows_in_the_deployment() {
    let d = crate::support::double().await;
    seed(&d, deployment("web", 2));
    rolled_out(&d, "web").await;
    let pod = d.list("pods", Some("default"))[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    d.set_pod_ready("default", &pod, false).unwrap();
    eventually("readyReplicas drops", Duration::from_secs(10), || async {
        let dep = d.get("deploy", "default", "web")?;
        (dep["status"]["readyReplicas"] == 1 && dep["status"]["unavailableReplicas"] == 1)
            .then_some(())
    })
    .await;
    d.set_pod_ready("default", &pod, true).unwrap();
    rolled_out(&d, "web").await;
}

#[tokio::test]
async fn a_pod_that_failed_to_start_is_started_again_after_a_back_off() {
    let (d, rec) = recorded_double().await;
    seed(&d, deployment("flaky", 1));
    // CrashLoopBackOff first, then started again: the same pod, one restart, Ready.
    eventually("the first start fails", Duration::from_secs(10), || async {
        d.list("pods", Some("default")).into_iter().find(|p| {
            p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff"
        })
    })
    .await;
    rolled_out(&d, "flaky").await;
    let pods = d.list("pods", Some("default"));
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0]["status"]["containerStatuses"][0]["restartCount"], 1);
    assert_eq!(rec.started.lock().unwrap().len(), 2);
}
