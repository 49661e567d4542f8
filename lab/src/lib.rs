//! The local two-region lab: the doubles that stand in for what cannot run on our machines.
//! Today that is the Kubernetes API double ([`kube_api::KubeDouble`]); the Azure DNS double,
//! the PostgreSQL pair and the process runner for pods join it here.

pub mod kube_api;
pub mod pods;

pub use kube_api::{KubeDouble, KubeDoubleConfig};
