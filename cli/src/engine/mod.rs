//! The failover / failback engine (issue #7): a run is a plan of steps; each step observes the
//! live state first and acts only when needed, so a re-run converges; progress goes to a
//! [`journal::Journal`]; one run at a time ([`lock::LocalLock`] here, a Lease in the cluster).
//!
//! Built so far: the planned switchover ([`switchover`]), the journal and the local lock. Not
//! yet: the emergency path, failback, the cluster Lease, concurrent steps.

pub mod journal;
pub mod lock;
pub mod switchover;
