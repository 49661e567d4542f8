//! Where a proxied request's time goes inside a proxy, read from its system calls: perf's
//! `raw_syscalls` tracepoints (nanosecond timestamps) while wrk sends one request at a time.
//!
//! A proxy's request is two turns of its event loop, each from the wake-up of `epoll_wait` to
//! a write: the client's request in, to the upstream write; the upstream's answer in, to the
//! client write. Their medians are the proxy's own time on the request's path, without the
//! backend's and wrk's. A third figure is the time from the client write to the next wake-up:
//! wrk's turn-around, unless the proxy's work after the write (its bookkeeping) is longer.
//!
//! System call numbers are x86-64's.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};

use super::median;

/// `write`, `writev`, `sendto`, `sendmsg`.
const WRITES: [u32; 4] = [1, 20, 44, 46];
/// `epoll_wait`, `epoll_pwait`, `epoll_pwait2`.
const WAITS: [u32; 3] = [232, 281, 441];

/// The medians, in µs.
pub struct OnPath {
    pub request: f64,
    pub answer: f64,
    pub after_answer: f64,
    pub requests: usize,
}

/// Starts recording the system calls of `pids` into `out` (stopped with SIGINT).
pub fn record(pids: &[u32], out: &Path) -> std::process::Child {
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    Command::new("perf")
        .args([
            "record",
            "-q",
            "-e",
            "raw_syscalls:sys_enter,raw_syscalls:sys_exit",
            "-p",
            &pids.join(","),
            "-o",
        ])
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting perf record")
}

/// The figures of a recording, if it holds at least 100 proxied requests.
pub fn on_path(file: &Path) -> Option<OnPath> {
    let out = Command::new("perf")
        .args(["script", "--ns", "-F", "tid,time,event,trace", "-i"])
        .arg(file)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    analyse(&String::from_utf8_lossy(&out.stdout))
}

fn analyse(script: &str) -> Option<OnPath> {
    // Per thread: when its last wait returned (not yet followed by a write), and its last
    // write (fd, when) not yet followed by a wait's return.
    let mut woke: HashMap<u64, f64> = HashMap::new();
    let mut wrote: HashMap<u64, (String, f64)> = HashMap::new();
    // Per fd: wake -> write, and write -> next wake, in µs.
    let mut to_write: HashMap<String, Vec<f64>> = HashMap::new();
    let mut to_wake: HashMap<String, Vec<f64>> = HashMap::new();
    for line in script.lines() {
        let mut words = line.split_whitespace();
        let (Some(tid), Some(time), Some(event)) = (words.next(), words.next(), words.next())
        else {
            continue;
        };
        let (Ok(tid), Ok(seconds)) = (
            tid.parse::<u64>(),
            time.trim_end_matches(':').parse::<f64>(),
        ) else {
            continue;
        };
        let us = seconds * 1e6;
        let (Some("NR"), Some(nr)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(nr) = nr.parse::<u32>() else { continue };
        if event.starts_with("raw_syscalls:sys_exit") && WAITS.contains(&nr) {
            if let Some((fd, at)) = wrote.remove(&tid) {
                to_wake.entry(fd).or_default().push(us - at);
            }
            woke.insert(tid, us);
        } else if event.starts_with("raw_syscalls:sys_enter") && WRITES.contains(&nr) {
            let fd = words
                .next()
                .unwrap_or("")
                .trim_matches(|c| c == '(' || c == ',')
                .to_string();
            if let Some(at) = woke.remove(&tid) {
                to_write.entry(fd.clone()).or_default().push(us - at);
            }
            wrote.insert(tid, (fd, us));
        }
    }
    // The upstream connection is the fd whose writes wait longest for the next wake (the
    // backend's time); the client's is the other busy one.
    let mut busy: Vec<(String, f64)> = to_wake
        .iter()
        .filter(|(_, v)| v.len() >= 100)
        .map(|(fd, v)| (fd.clone(), median(v)))
        .collect();
    busy.sort_by(|a, b| b.1.total_cmp(&a.1));
    let [(upstream, _), (client, after_answer), ..] = busy.as_slice() else {
        return None;
    };
    Some(OnPath {
        request: median(to_write.get(upstream)?),
        answer: median(to_write.get(client)?),
        after_answer: *after_answer,
        requests: to_write.get(client)?.len(),
    })
}
