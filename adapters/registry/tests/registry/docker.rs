//! The docker builder: what it runs (through a stand-in `docker` that records its arguments and
//! writes buildx's metadata file), and the messages when there is no daemon or no buildx, with
//! the real docker CLI too when it is installed (this machine has the CLI and no daemon).

use std::path::{Path, PathBuf};

use crate::common::*;
use drd_registry::docker::{check_docker, DockerError};
use drd_registry::{build_push, read_images_file, BuildPushOptions, Builder, Error, Progress};

/// Writes an executable script, and waits until it can be executed: another test thread that
/// forks while the file is open for writing holds it open, and exec says "text file busy".
fn write_script(path: &Path, body: &str) {
    std::fs::write(
        path,
        format!("#!/bin/sh\n[ \"$1\" = __probe__ ] && exit 0\n{body}"),
    )
    .unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    loop {
        match std::process::Command::new(path).arg("__probe__").status() {
            Err(e) if e.raw_os_error() == Some(26) => std::thread::yield_now(),
            Err(e) => panic!("cannot run {}: {e}", path.display()),
            Ok(_) => break,
        }
    }
}

const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

/// A docker with a daemon and buildx that "builds" by recording its arguments.
fn fake_docker(dir: &Path) -> PathBuf {
    let docker = dir.join("docker");
    let log = dir.join("argv.log");
    write_script(
        &docker,
        &format!(
            r#"case "$1 $2" in
  "version --format") echo 28.2.2 ;;
  "buildx version") echo "github.com/docker/buildx v0.20.0" ;;
  "buildx build")
    meta=""; prev=""
    for a in "$@"; do [ "$prev" = --metadata-file ] && meta=$a; prev=$a; done
    echo "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH" >> "{log}"
    printf '%s\n' "$@" >> "{log}"; echo --- >> "{log}"
    printf '{{"containerimage.digest": "{DIGEST}"}}' > "$meta" ;;
  *) echo "unexpected: $*" >&2; exit 2 ;;
esac
"#,
            log = log.display()
        ),
    );
    docker
}

fn docker_options(docker: PathBuf, images_file: &Path) -> BuildPushOptions {
    let mut o = BuildPushOptions::new(repo_root(), "registry.example/drd", "2.0.0");
    o.builder = Builder::Docker;
    o.docker = docker;
    o.images_file = Some(images_file.to_path_buf());
    o.credentials = sources(&[]);
    o
}

#[tokio::test]
async fn the_docker_builder_runs_buildx_push_per_service_and_records_the_digests() {
    let dir = tempfile::tempdir().unwrap();
    let docker = fake_docker(dir.path());
    let opts = docker_options(docker, &dir.path().join("images.json"));
    let report = build_push(&opts, &|_: &Progress| {}).await.unwrap();
    assert_eq!(report.images.len(), 3);
    let argv = std::fs::read_to_string(dir.path().join("argv.log")).unwrap();
    let runs: Vec<&str> = argv.split("---\n").collect();
    for (svc, run) in ["frontend-api", "business-logic", "data-ingest"]
        .iter()
        .zip(&runs)
    {
        let (env, args) = run.split_once('\n').unwrap();
        let epoch: i64 = env
            .strip_prefix("SOURCE_DATE_EPOCH=")
            .unwrap()
            .parse()
            .unwrap();
        assert!(epoch > 1_600_000_000, "the commit time: {env}");
        let args: Vec<&str> = args.lines().collect();
        let after = |flag: &str| -> Vec<&str> {
            args.windows(2)
                .filter(|w| w[0] == flag)
                .map(|w| w[1])
                .collect()
        };
        assert_eq!(&args[..3], ["buildx", "build", "--push"], "{run}");
        assert_eq!(
            after("--file"),
            [repo_root()
                .join(format!("services/{svc}/Dockerfile"))
                .to_str()
                .unwrap()]
        );
        assert_eq!(
            after("--tag"),
            [
                format!("registry.example/drd/{svc}:2.0.0"),
                format!("registry.example/drd/{svc}:{}", report.revision)
            ]
        );
        assert_eq!(after("--platform"), ["linux/amd64"]);
        let labels = after("--label");
        assert!(
            labels.contains(&"org.opencontainers.image.version=2.0.0"),
            "{labels:?}"
        );
        assert!(labels
            .contains(&format!("org.opencontainers.image.revision={}", report.revision).as_str()));
        assert_eq!(args.last().copied(), Some(repo_root().to_str().unwrap()));
    }
    let f = read_images_file(&dir.path().join("images.json")).unwrap();
    let rec = f.get("data-ingest").unwrap();
    assert_eq!(
        rec.reference,
        format!("registry.example/drd/data-ingest:2.0.0@{DIGEST}")
    );
    assert_eq!(rec.builder, "docker");
}

#[tokio::test]
async fn no_daemon_and_no_buildx_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let no_daemon = dir.path().join("docker-no-daemon");
    write_script(
        &no_daemon,
        "echo 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?' >&2; exit 1\n",
    );
    let opts = docker_options(no_daemon, &dir.path().join("images.json"));
    let e = build_push(&opts, &|_: &Progress| {}).await.unwrap_err();
    assert!(
        matches!(e, Error::Docker(DockerError::NoDaemon { .. })),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("needs a Docker daemon, and none answers"),
        "{msg}"
    );
    assert!(msg.contains("Cannot connect to the Docker daemon"), "{msg}");
    assert!(msg.contains("use the native builder"), "{msg}");
    assert!(!dir.path().join("images.json").exists());

    let no_buildx = dir.path().join("docker-no-buildx");
    write_script(
        &no_buildx,
        "[ \"$1\" = version ] && { echo 28.2.2; exit 0; }\necho \"docker: unknown command: docker buildx\" >&2; exit 1\n",
    );
    let e = check_docker(&no_buildx).await.unwrap_err().to_string();
    assert!(e.contains("needs the buildx plugin"), "{e}");

    let e = check_docker(Path::new("/nonexistent/docker"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs the docker CLI"), "{e}");
}

#[tokio::test]
async fn the_real_docker_cli_without_a_daemon() {
    // This machine has the docker CLI and no daemon; elsewhere there may be neither, or both.
    let Some(docker) = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("docker"))
            .find(|p| p.is_file())
    }) else {
        eprintln!("SKIPPED: no docker CLI on PATH");
        return;
    };
    match check_docker(&docker).await {
        Ok(()) => eprintln!("SKIPPED: a Docker daemon with buildx answers here"),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains("none answers") || msg.contains("buildx"),
                "{msg}"
            );
            eprintln!("docker builder here says: {msg}");
        }
    }
}
