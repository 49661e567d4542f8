//! `kubectl logs` with real kubectl 1.32: `--tail`, `--since`, `--timestamps`, `--limit-bytes`,
//! `--previous`, `-c`, `-l`, and `-f` following the file until the pod goes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lab::kube_api::{PodInfo, PodIo};
use lab::{KubeDouble, KubeDoubleConfig};
use tokio::io::AsyncBufReadExt;

use crate::support::{deployment, eventually, pod_names, rolled_out, seed, Kubectl};

/// Pods whose logs are files `<dir>/<pod>.log`, as the lab's process runtime writes them.
struct FileLogs(PathBuf);

impl PodIo for FileLogs {
    fn log_path(&self, pod: &PodInfo) -> Option<PathBuf> {
        Some(self.0.join(format!("{}.log", pod.name)))
    }
}

async fn double_with_logs(dir: &std::path::Path) -> KubeDouble {
    let cfg = KubeDoubleConfig::new("primary", "127.0.0.1:0".parse().unwrap())
        .pod_start_delay(Duration::from_millis(50))
        .pod_io(Arc::new(FileLogs(dir.to_path_buf())));
    KubeDouble::start_with(cfg).await.unwrap()
}

fn json_line(ts: &str, msg: &str) -> String {
    format!("{{\"timestamp\":\"{ts}\",\"level\":\"INFO\",\"message\":\"{msg}\"}}\n")
}

#[tokio::test]
async fn logs_tail_since_timestamps_and_errors() {
    let logs = tempfile::tempdir().unwrap();
    let d = double_with_logs(logs.path()).await;
    seed(&d, deployment("web", 1));
    rolled_out(&d, "web").await;
    let pod = pod_names(&d).remove(0);
    let now = chrono::Utc::now();
    let old = (now - chrono::Duration::hours(3)).to_rfc3339();
    let recent = (now - chrono::Duration::seconds(5)).to_rfc3339();
    let text = format!(
        "{}a line without a time\n{}",
        json_line(&old, "old"),
        json_line(&recent, "recent")
    );
    std::fs::write(logs.path().join(format!("{pod}.log")), &text).unwrap();
    let k = Kubectl::new(&d);

    assert_eq!(k.ok(&["logs", &pod]).await, text);
    assert_eq!(
        k.ok(&["logs", &pod, "--tail=1"]).await,
        json_line(&recent, "recent")
    );
    // The untimed line has the time of the line before it.
    assert_eq!(
        k.ok(&["logs", &pod, "--since=1h"]).await,
        json_line(&recent, "recent")
    );
    let stamped = k.ok(&["logs", &pod, "--timestamps", "--tail=2"]).await;
    let first = stamped.lines().next().unwrap();
    assert!(
        first.ends_with(" a line without a time") && first.starts_with(&old[..19]),
        "{stamped}"
    );
    assert_eq!(k.ok(&["logs", &pod, "--limit-bytes=5"]).await, "{\"tim");
    assert_eq!(
        k.ok(&["logs", "deploy/web", "--tail=1"]).await.len(),
        json_line(&recent, "recent").len()
    );

    let out = k.run(&["logs", &pod, "--previous"]).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("Error from server (BadRequest): previous terminated container \"web\" in pod \"{pod}\" not found")
    );
    // kubectl checks the container itself, and the double says the same to other clients.
    let out = k.run(&["logs", &pod, "-c", "nope"]).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("error: container nope is not valid for pod {pod}")
    );
    let out = k
        .run(&[
            "get",
            "--raw",
            &format!("/api/v1/namespaces/default/pods/{pod}/log?container=nope"),
        ])
        .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("Error from server (BadRequest): container nope is not valid for pod {pod}")
    );
}

/// Reads `child`'s stdout until a line containing `want`.
async fn read_until(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    want: &str,
) -> Vec<String> {
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            let done = l.contains(want);
            seen.push(l);
            if done {
                return;
            }
        }
        panic!("kubectl logs ended before {want:?}: {seen:?}");
    })
    .await
    .unwrap_or_else(|_| panic!("no {want:?} from kubectl logs -f"));
    seen
}

#[tokio::test]
async fn follow_by_label_until_the_pods_go() {
    let logs = tempfile::tempdir().unwrap();
    let d = double_with_logs(logs.path()).await;
    seed(&d, deployment("web", 2));
    rolled_out(&d, "web").await;
    let names = pod_names(&d);
    let file = |p: &str| logs.path().join(format!("{p}.log"));
    for p in &names {
        std::fs::write(file(p), format!("{p} first\n")).unwrap();
    }
    let k = Kubectl::new(&d);
    // The seed README's monitoring command.
    let mut child = k.spawn(&["logs", "-l", "app=web", "--tail=100", "-f"]);
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = read_until(&mut lines, "first").await;
    seen.extend(read_until(&mut lines, "first").await);
    seen.sort();
    assert_eq!(
        seen,
        names
            .iter()
            .map(|p| format!("{p} first"))
            .collect::<Vec<_>>()
    );

    // A line written later arrives while kubectl is still running, half-written lines only
    // once complete.
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(file(&names[1]))
        .unwrap();
    f.write_all(b"second ha").unwrap();
    f.flush().unwrap();
    f.write_all(b"lf\n").unwrap();
    assert_eq!(read_until(&mut lines, "second").await, ["second half"]);

    // Scaled to 0: the pods go, the streams end, kubectl exits 0.
    k.ok(&["scale", "deploy/web", "--replicas=0"]).await;
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("kubectl logs -f ends when the pods go")
        .unwrap();
    assert!(status.success());
    eventually("pods gone", Duration::from_secs(5), || async {
        pod_names(&d).is_empty().then_some(())
    })
    .await;
}

/// A double whose deployment `web` has one pod, its log `text`: the log directory (kept while
/// it lives), the double, the pod and its log file.
async fn one_pod_with_a_log(text: &str) -> (tempfile::TempDir, KubeDouble, String, PathBuf) {
    let logs = tempfile::tempdir().unwrap();
    let d = double_with_logs(logs.path()).await;
    seed(&d, deployment("web", 1));
    rolled_out(&d, "web").await;
    let pod = pod_names(&d).remove(0);
    let path = logs.path().join(format!("{pod}.log"));
    std::fs::write(&path, text).unwrap();
    (logs, d, pod, path)
}

/// `kubectl attach`: the pod's output from the attach on, until the pod goes (kubectl exits 0).
#[tokio::test]
async fn attach_streams_new_output_until_the_pod_goes() {
    use std::io::Write;
    let (_logs, d, pod, path) = one_pod_with_a_log("before the attach\n").await;
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    let k = Kubectl::new(&d);
    let mut child = k.spawn(&["attach", &pod]);
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    // The attach starts at the end of the log: write until a line comes through.
    let first = tokio::time::timeout(Duration::from_secs(20), async {
        for n in 0.. {
            writeln!(log, "tick {n}").unwrap();
            let next = tokio::time::timeout(Duration::from_millis(200), lines.next_line());
            match next.await {
                Ok(line) => return line.unwrap().expect("kubectl attach ended"),
                Err(_) => continue, // not attached yet: write another
            }
        }
        unreachable!()
    })
    .await
    .expect("output through kubectl attach");
    assert!(first.starts_with("tick "), "{first}");
    writeln!(log, "after").unwrap();
    loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("kubectl attach runs");
        if line == "after" {
            break;
        }
        assert!(line.starts_with("tick "), "{line}");
    }
    k.ok(&["delete", "pod", &pod, "--wait=false"]).await;
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("kubectl attach ends when the pod goes")
        .unwrap();
    assert!(status.success());
}

/// A container restarted in place (the kubelet after a crash): `--previous` is its former
/// run's log, the pod shows the restart; a replaced pod has no previous container.
#[tokio::test]
async fn previous_is_the_former_run_after_a_restart_in_place() {
    let (_logs, d, pod, path) = one_pod_with_a_log("first run\nfirst run, last line\n").await;
    let k = Kubectl::new(&d);
    let not_found = format!(
        "Error from server (BadRequest): previous terminated container \"web\" in pod \"{pod}\" not found"
    );
    let out = k.run(&["logs", &pod, "--previous"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), not_found);

    let restarted = d.restart_container("default", &pod, 137).await.unwrap();
    let status = &restarted["status"]["containerStatuses"][0];
    assert_eq!(status["restartCount"], 1);
    assert_eq!(status["lastState"]["terminated"]["exitCode"], 137);
    assert_eq!(status["lastState"]["terminated"]["reason"], "Error");
    assert!(
        status["state"]["running"]["startedAt"].is_string(),
        "{status}"
    );
    assert_eq!(
        restarted["metadata"]["uid"],
        d.get("pods", "default", &pod).unwrap()["metadata"]["uid"]
    );
    // The new run writes a new log.
    std::fs::write(&path, "second run\n").unwrap();

    assert_eq!(
        k.ok(&["logs", &pod, "--previous"]).await,
        "first run\nfirst run, last line\n"
    );
    assert_eq!(
        k.ok(&["logs", &pod, "-p", "--tail=1"]).await,
        "first run, last line\n"
    );
    // The former run has ended: -f prints it and returns.
    let followed = tokio::time::timeout(
        Duration::from_secs(20),
        k.ok(&["logs", &pod, "--previous", "-f"]),
    )
    .await
    .expect("logs -f --previous returns");
    assert_eq!(followed, "first run\nfirst run, last line\n");
    assert_eq!(k.ok(&["logs", &pod]).await, "second run\n");
    let row = k.ok(&["get", "pod", &pod, "--no-headers"]).await;
    assert!(row.contains(" Running   1 ("), "{row}");

    // `rollout restart` replaces the pod: the new one never restarted.
    k.ok(&["rollout", "restart", "deploy/web"]).await;
    let new = eventually("the replacement pod", Duration::from_secs(20), || async {
        let names = pod_names(&d);
        (names.len() == 1 && names[0] != pod).then(|| names[0].clone())
    })
    .await;
    rolled_out(&d, "web").await;
    let out = k.run(&["logs", &new, "--previous"]).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        not_found.replace(&pod, &new)
    );
}
