//! `kubectl exec` and `kubectl cp` (tar over exec) with real kubectl 1.32 against the double:
//! the WebSocket remote-command protocol (v5.channel.k8s.io), stdout / stderr / stdin, the exit
//! code in the status, and each container's own `/tmp`.

use crate::support::{deployment, double, pod_names, rolled_out, seed, Kubectl};

/// The deployment's pods, by name.
async fn pods_of(d: &lab::KubeDouble, app: &str, n: usize) -> Vec<String> {
    seed(d, deployment(app, n as i64));
    rolled_out(d, app).await;
    let pods = pod_names(d);
    assert_eq!(pods.len(), n);
    pods
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn exec_streams_and_exit_codes() {
    let d = double().await;
    let pod = &pods_of(&d, "web", 1).await[0];
    let k = Kubectl::new(&d);

    let out = k
        .run(&[
            "exec",
            pod,
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ])
        .await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out\n");
    assert_eq!(
        text(&out.stderr),
        "err\ncommand terminated with exit code 3\n"
    );

    let out = k.run(&["exec", pod, "--", "true"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty() && out.stderr.is_empty());

    // stdin: the v5 close of stdin ends `cat`, so kubectl returns.
    let big = "line\n".repeat(50_000);
    let out = k
        .run_with_stdin(&["exec", "-i", pod, "--", "cat"], Some(big.as_bytes()))
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout.len(), big.len());

    // The pod's environment (the container's env values) and its name.
    let out = k
        .ok(&["exec", pod, "--", "sh", "-c", "echo $HOSTNAME"])
        .await;
    assert_eq!(out.trim(), pod);

    // A killed command: 128 + the signal, as a shell reports it.
    let out = k.run(&["exec", pod, "--", "sh", "-c", "kill -9 $$"]).await;
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));

    let out = k.run(&["exec", pod, "--", "no-such-binary"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("executable file not found in $PATH"),
        "{}",
        text(&out.stderr)
    );

    let out = k.run(&["exec", pod, "-c", "nope", "--", "true"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("container nope is not valid for pod"),
        "{}",
        text(&out.stderr)
    );

    let out = k.run(&["exec", "missing-pod", "--", "true"]).await;
    assert_eq!(
        text(&out.stderr).trim(),
        "Error from server (NotFound): pods \"missing-pod\" not found"
    );
    // Through the owning object, as the seed runbook does (`statefulset/postgresql`).
    let out = k
        .ok(&["exec", "deploy/web", "--", "echo", "via deploy"])
        .await;
    assert_eq!(out, "via deploy\n");
}

#[tokio::test]
async fn cp_into_and_out_of_a_pod_with_its_own_tmp() {
    let d = double().await;
    let pods = pods_of(&d, "web", 2).await;
    let k = Kubectl::new(&d);
    let local = k.path("init-db.sql");
    let body = "CREATE TABLE IF NOT EXISTS t (id int);\n".repeat(1000);
    std::fs::write(&local, &body).unwrap();
    let local_s = local.to_str().unwrap();

    let target = format!("{}:/tmp/init-db.sql", pods[0]);
    k.ok(&["cp", local_s, &target]).await;
    let out = k
        .ok(&["exec", &pods[0], "--", "cat", "/tmp/init-db.sql"])
        .await;
    assert_eq!(out, body);
    // The other pod's /tmp is its own.
    let out = k
        .run(&["exec", &pods[1], "--", "cat", "/tmp/init-db.sql"])
        .await;
    assert_eq!(out.status.code(), Some(1));

    // Into a directory: kubectl tests it with `test -d` and appends the base name.
    k.ok(&["exec", &pods[0], "--", "mkdir", "/tmp/sql"]).await;
    k.ok(&["cp", local_s, &format!("{}:/tmp/sql", pods[0])])
        .await;
    let out = k.ok(&["exec", &pods[0], "--", "ls", "/tmp/sql"]).await;
    assert_eq!(out, "init-db.sql\n");

    // Back out of the pod: the member names are the container's (`tmp/...`).
    let back = k.path("back.sql");
    k.ok(&["cp", &target, back.to_str().unwrap()]).await;
    assert_eq!(std::fs::read_to_string(&back).unwrap(), body);

    // A missing source: tar's own message and code (kubectl cp itself races the status
    // against the end of the empty archive, on a real cluster too).
    let out = k
        .run(&["exec", &pods[0], "--", "tar", "cf", "-", "/tmp/missing"])
        .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with("tar: tmp/missing: Cannot stat: No such file or directory\n")
    );
    let _ = k
        .run(&[
            "cp",
            &format!("{}:/tmp/missing", pods[0]),
            k.path("m").to_str().unwrap(),
        ])
        .await;
    assert!(!k.path("m").exists());
}

/// Runs `script` (util-linux) with `shell` as the command on a new terminal, `input` typed
/// into it; returns what the terminal showed and the command's exit code.
async fn on_a_terminal(k: &Kubectl, shell: &str, input: &[u8]) -> (String, Option<i32>) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("script")
        .args(["-q", "-e", "-c", shell, "/dev/null"])
        .env("HOME", k.path(""))
        .env("TERM", "xterm")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("script (util-linux) must be installed");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    tokio::spawn(async move {
        let _ = stdin.write_all(&input).await;
        // Keep the terminal's input open: script ends with the command, not with its stdin.
        std::future::pending::<()>().await;
        drop(stdin);
    });
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the command on the terminal ends")
        .unwrap();
    (
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
        out.status.code(),
    )
}

/// Quotes `argv` for `sh -c`.
fn shell_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `kubectl exec -it` on a terminal: the command runs on a pseudo-terminal of the pod's (a
/// tty, the size kubectl sends, stderr on the terminal too), an interactive shell reads what is
/// typed, and the exit code comes back.
#[tokio::test]
async fn exec_with_a_terminal() {
    let d = double().await;
    let pod = &pods_of(&d, "web", 1).await[0];
    let k = Kubectl::new(&d);

    // As the issue runs it.
    let cmd = shell_line(&k.argv(&["exec", "-it", pod, "--", "sh", "-c", "echo hi"]));
    let (out, code) = on_a_terminal(&k, &cmd, b"").await;
    assert_eq!((out.as_str(), code), ("hi\r\n", Some(0)));

    let script = "tty; stty size; echo err >&2; test -t 0 && echo stdin is a terminal; exit 4";
    let cmd = shell_line(&k.argv(&["exec", "-it", pod, "--", "sh", "-c", script]));
    let (out, code) = on_a_terminal(&k, &format!("stty cols 100 rows 30; {cmd}"), b"").await;
    assert_eq!(code, Some(4), "{out}");
    let lines: Vec<&str> = out.split("\r\n").collect();
    assert!(lines[0].starts_with("/dev/pts/"), "{out:?}");
    assert_eq!(
        lines[1..],
        [
            "30 100",
            "err",
            "stdin is a terminal",
            "command terminated with exit code 4",
            ""
        ],
        "{out:?}"
    );

    // An interactive shell: a prompt, what is typed, its output.
    let cmd = shell_line(&k.argv(&["exec", "-it", pod, "--", "sh"]));
    let (out, code) = on_a_terminal(&k, &cmd, b"echo typed $((6*7))\nexit 5\n").await;
    assert_eq!(code, Some(5), "{out}");
    assert!(out.contains("typed 42\r\n"), "{out:?}");
}
