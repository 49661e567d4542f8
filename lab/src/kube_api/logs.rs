//! `pods/{name}/log`: `kubectl logs` with `-f`, `--tail`, `--since`/`--since-time`,
//! `--timestamps`, `--limit-bytes` and `--previous`, answered as the kubelet answers them
//! (through the API server): `200 text/plain`, whole lines; with `follow` the body stays open,
//! each new line sent as it is written, until the pod goes (then kubectl exits 0). Errors are
//! `400 BadRequest` Status bodies with the kubelet's messages.
//!
//! The text is the pod's log file from [`super::PodIo::log_path`] (else [`super::PodIo::logs`]). The double
//! keeps no per-line times, so a line's time is the one it carries (the services' JSON
//! `timestamp`, start.sh's and PostgreSQL's leading stamp), else the previous line's, else the
//! pod's start: that is what `--since` filters on and `--timestamps` prints.
//! `--previous` serves the log of a container's former run once it restarted in place
//! (`restartCount` > 0, [`super::restart`]); for a container that never did (a replaced pod
//! starts at 0) it answers the kubelet's "previous terminated container ... not found".

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use futures_util::stream;
use poem::http::StatusCode;
use poem::{Body, Response};
use serde_json::Value;
use tokio::sync::mpsc;

use super::ctx::Ctx;
use super::error::ApiError;
use super::pod::PodInfo;
use super::resources;

/// How often a followed log is checked for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// The time a log line carries, if any.
fn line_time(line: &str) -> Option<DateTime<Utc>> {
    let t = line.trim_start();
    if t.starts_with('{') {
        let v: Value = serde_json::from_str(t).ok()?;
        let ts = v.get("timestamp").or_else(|| v.get("time"))?.as_str()?;
        return DateTime::parse_from_rfc3339(ts).ok().map(|d| d.to_utc());
    }
    let first = t.split_whitespace().next()?;
    if let Ok(d) = DateTime::parse_from_rfc3339(first) {
        return Some(d.to_utc());
    }
    // PostgreSQL's `%m`: `2026-12-02 22:49:54.625 UTC`.
    let head: String = t.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    NaiveDateTime::parse_from_str(&head, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(|n| n.and_utc())
}

/// What the request asks for.
struct LogRequest {
    /// `--previous`: the container whose former run's log is asked for.
    previous: Option<String>,
    follow: bool,
    tail: Option<usize>,
    since: Option<DateTime<Utc>>,
    timestamps: bool,
    limit_bytes: Option<usize>,
}

fn bad_request(msg: String) -> ApiError {
    ApiError::bad_request(msg)
}

/// The kubelet's answer to `--previous` for a container that never restarted.
fn previous_not_found(pod: &PodInfo, container: &str) -> ApiError {
    bad_request(format!(
        "previous terminated container {container:?} in pod {:?} not found",
        pod.name
    ))
}

fn parse(pod: &PodInfo, q: &BTreeMap<String, String>) -> Result<LogRequest, ApiError> {
    let containers: Vec<&str> = pod
        .object
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let container = match q.get("container") {
        Some(c) if containers.contains(&c.as_str()) => c.clone(),
        Some(c) => {
            return Err(bad_request(format!(
                "container {c} is not valid for pod {}",
                pod.name
            )))
        }
        None if containers.len() == 1 => containers[0].to_string(),
        None => {
            return Err(bad_request(format!(
                "a container name must be specified for pod {}, choose one of: [{}]",
                pod.name,
                containers.join(" ")
            )))
        }
    };
    let flag = |k: &str| q.get(k).is_some_and(|v| v == "true" || v == "1");
    let status = pod
        .object
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["name"] == container.as_str()));
    let previous = flag("previous");
    let restarted = status.is_some_and(|c| c["restartCount"].as_i64().unwrap_or(0) > 0);
    if previous && !restarted {
        return Err(previous_not_found(pod, &container));
    }
    let started = status.is_some_and(|c| c.pointer("/state/running").is_some());
    if !started && !previous {
        return Err(bad_request(format!(
            "container {container:?} in pod {:?} is waiting to start: ContainerCreating",
            pod.name
        )));
    }
    let number = |k: &str| -> Result<Option<i64>, ApiError> {
        q.get(k)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| bad_request(format!("{k}: invalid value {v:?}")))
            })
            .transpose()
    };
    let since = match (number("sinceSeconds")?, q.get("sinceTime")) {
        (Some(s), _) => Some(Utc::now() - chrono::Duration::seconds(s)),
        (None, Some(t)) => Some(
            DateTime::parse_from_rfc3339(t)
                .map_err(|_| bad_request(format!("sinceTime: invalid value {t:?}")))?
                .to_utc(),
        ),
        (None, None) => None,
    };
    Ok(LogRequest {
        previous: previous.then_some(container),
        follow: flag("follow"),
        tail: number("tailLines")?.map(|n| n.max(0) as usize),
        since,
        timestamps: flag("timestamps"),
        limit_bytes: number("limitBytes")?.map(|n| n.max(0) as usize),
    })
}

/// Lines with their times, each line's time inherited from the line before when it carries
/// none.
struct Timed {
    last: DateTime<Utc>,
}

impl Timed {
    fn line(&mut self, line: &str) -> DateTime<Utc> {
        if let Some(t) = line_time(line) {
            self.last = t;
        }
        self.last
    }
}

fn render(line: &str, at: DateTime<Utc>, timestamps: bool) -> String {
    if timestamps {
        format!(
            "{} {line}\n",
            at.to_rfc3339_opts(SecondsFormat::Nanos, true)
        )
    } else {
        format!("{line}\n")
    }
}

/// Reads `path` from `offset`: the complete lines, and the offset after the last of them.
fn read_lines(path: &PathBuf, offset: u64) -> (Vec<String>, u64) {
    let Ok(mut f) = std::fs::File::open(path) else {
        return (Vec::new(), offset);
    };
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(offset)).is_err() || f.read_to_end(&mut buf).is_err() {
        return (Vec::new(), offset);
    }
    let Some(end) = buf.iter().rposition(|b| *b == b'\n') else {
        return (Vec::new(), offset);
    };
    let text = String::from_utf8_lossy(&buf[..end]);
    (
        text.split('\n').map(String::from).collect(),
        offset + end as u64 + 1,
    )
}

/// Serves one log request.
pub(crate) fn serve(ctx: &Ctx, pod: &PodInfo, q: &BTreeMap<String, String>) -> Response {
    match serve_inner(ctx, pod, q) {
        Ok(r) => r,
        Err(e) => Response::builder()
            .status(StatusCode::from_u16(e.code).unwrap_or(StatusCode::BAD_REQUEST))
            .content_type("application/json")
            .body(serde_json::to_vec(&e.to_status()).unwrap_or_default()),
    }
}

fn serve_inner(
    ctx: &Ctx,
    pod: &PodInfo,
    q: &BTreeMap<String, String>,
) -> Result<Response, ApiError> {
    let req = parse(pod, q)?;
    let start = pod
        .object
        .pointer("/status/startTime")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map_or_else(Utc::now, |d| d.to_utc());
    let mut timed = Timed { last: start };
    // The former run of a restarted container has ended: nothing to follow.
    let path = ctx.pod_io.log_path(pod).filter(|_| req.previous.is_none());
    let (lines, offset) = match (&req.previous, &path) {
        (Some(container), _) => {
            let text = ctx
                .previous_logs
                .get(&pod.uid, container)
                .ok_or_else(|| previous_not_found(pod, container))?;
            (text.lines().map(String::from).collect(), 0)
        }
        (None, Some(p)) => read_lines(p, 0),
        (None, None) => {
            let text = ctx.pod_io.logs(pod).unwrap_or_default();
            (text.lines().map(String::from).collect(), 0)
        }
    };
    let mut selected: Vec<(DateTime<Utc>, String)> = lines
        .into_iter()
        .map(|l| (timed.line(&l), l))
        .filter(|(t, _)| req.since.is_none_or(|s| *t >= s))
        .collect();
    if let Some(n) = req.tail {
        selected.drain(..selected.len().saturating_sub(n));
    }
    let mut text: String = selected
        .iter()
        .map(|(t, l)| render(l, *t, req.timestamps))
        .collect();
    if let Some(n) = req.limit_bytes {
        let mut cut = n.min(text.len());
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    let follow_path = path.filter(|_| req.follow && req.limit_bytes.is_none());
    let Some(path) = follow_path else {
        return Ok(Response::builder().content_type("text/plain").body(text));
    };
    let (tx, rx) = mpsc::channel::<Vec<u8>>(64);
    let store = ctx.store.clone();
    let mut down = ctx.down.clone();
    let (ns, name, uid) = (pod.namespace.clone(), pod.name.clone(), pod.uid.clone());
    let timestamps = req.timestamps;
    tokio::spawn(async move {
        if !text.is_empty() && tx.send(text.into_bytes()).await.is_err() {
            return;
        }
        let pods = resources::lookup("pods").expect("pods are served");
        let mut offset = offset;
        loop {
            let alive = store
                .get(pods, &ns, &name)
                .is_some_and(|p| p["metadata"]["uid"].as_str() == Some(uid.as_str()));
            if !alive || *down.borrow() {
                return;
            }
            let (lines, next) = read_lines(&path, offset);
            offset = next;
            if !lines.is_empty() {
                let chunk: String = lines
                    .iter()
                    .map(|l| render(l, timed.line(l), timestamps))
                    .collect();
                if tx.send(chunk.into_bytes()).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
                _ = down.changed() => {}
                _ = tx.closed() => return,
            }
        }
    });
    let body = stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    Ok(Response::builder()
        .content_type("text/plain")
        .body(Body::from_bytes_stream(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_from_the_lines_themselves() {
        let t = |s: &str| line_time(s).map(|d| d.to_rfc3339_opts(SecondsFormat::Millis, true));
        assert_eq!(
            t(r#"{"timestamp":"2026-12-02T22:49:54.625239Z","level":"WARN"}"#).as_deref(),
            Some("2026-12-02T22:49:54.625Z")
        );
        assert_eq!(
            t("2026-12-02T22:49:54Z start.sh: decision=init-primary").as_deref(),
            Some("2026-12-02T22:49:54.000Z")
        );
        assert_eq!(
            t("2026-12-02 22:49:54.625 UTC [42] LOG:  database system is ready").as_deref(),
            Some("2026-12-02T22:49:54.625Z")
        );
        assert_eq!(t("role=primary decision=init-primary"), None);
    }
}
