//! Integration tests of the lab's PostgreSQL: the real pair run by start.sh, its pod runtime in
//! the Kubernetes double, and port-forward to it (kube-rs). One test binary; every test starts
//! its own pair on free ports, so they run in parallel.

mod pair;
mod pod;
mod practice;
mod support;
