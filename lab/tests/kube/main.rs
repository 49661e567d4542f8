//! Integration tests of the Kubernetes API double: one test binary (see the style guide), each
//! test starting its own double on 127.0.0.1:0 so they run in parallel.

mod events;
mod exec;
mod faults;
mod kube_rs;
mod kubectl;
mod logs;
mod openapi;
mod portforward;
mod rollout;
mod runtime;
mod support;
mod top;
