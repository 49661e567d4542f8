//! drdctl end to end: the real binary against the lab's doubles (and real kubectl).

mod db;
mod deploy;
mod dns;
mod failover;
mod kustomize;
mod lab;
mod offpath;
mod practice;
mod support;
mod surface;
mod tidy;
mod verify;
