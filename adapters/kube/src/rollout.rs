//! Rollout state, judged the way `kubectl rollout status` judges it.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutKind {
    Deployment,
    StatefulSet,
}

impl std::fmt::Display for RolloutKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RolloutKind::Deployment => "deployment",
            RolloutKind::StatefulSet => "statefulset",
        })
    }
}

/// Where a rollout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    pub desired: i32,
    pub updated: i32,
    pub ready: i32,
    pub available: i32,
    /// Pods of older templates still around.
    pub old: i32,
    /// The controller has seen the latest spec (observedGeneration >= generation).
    pub observed: bool,
}

impl Rollout {
    pub fn of_deployment(d: &Deployment) -> Self {
        let desired = d.spec.replicas.unwrap_or(1);
        let st = d.status.clone().unwrap_or_default();
        let generation = d.metadata.generation.unwrap_or(0);
        let updated = st.updated_replicas.unwrap_or(0);
        Rollout {
            desired,
            updated,
            ready: st.ready_replicas.unwrap_or(0),
            available: st.available_replicas.unwrap_or(0),
            old: st.replicas.unwrap_or(0) - updated,
            observed: st.observed_generation.unwrap_or(0) >= generation,
        }
    }

    pub fn of_statefulset(s: &StatefulSet) -> Self {
        let desired = s.spec.replicas.unwrap_or(1);
        let st = s.status.clone().unwrap_or_default();
        let generation = s.metadata.generation.unwrap_or(0);
        let updated = st.updated_replicas.unwrap_or(0);
        let ready = st.ready_replicas.unwrap_or(0);
        Rollout {
            desired,
            updated,
            ready,
            available: st.available_replicas.unwrap_or(ready),
            old: (st.replicas - updated).max(0),
            observed: st.observed_generation.unwrap_or(0) >= generation,
        }
    }

    /// Done as `kubectl rollout status` says "successfully rolled out".
    pub fn is_complete(&self) -> bool {
        self.observed
            && self.updated >= self.desired
            && self.old <= 0
            && self.available >= self.desired
    }
}

impl std::fmt::Display for Rollout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.observed {
            return write!(f, "waiting for the controller to see the new spec");
        }
        write!(
            f,
            "{}/{} ready, {} updated, {} available",
            self.ready, self.desired, self.updated, self.available
        )?;
        if self.old > 0 {
            write!(f, ", {} old pending termination", self.old)?;
        }
        Ok(())
    }
}
