//! A `coordination.k8s.io/v1` Lease as the lock between operators: one failover or failback at
//! a time, whoever runs it and from wherever. Taken by create (409 when someone else created it
//! first) or by replace with the observed resourceVersion (409 when it changed in between: then
//! it is read again), so two operators can never both believe they hold it.
//!
//! The holder is `user@host`: the same operator on the same machine may resume a run that was
//! killed; anyone else waits until it is released or has expired (not renewed within its
//! duration), and is told who holds it and how to break it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::PostParams;
use kube::Api;
use serde_json::{json, Value};

use crate::{KubeCluster, KubeError, Result};

/// How the lease was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseTaken {
    /// It was free (absent or released).
    Free,
    /// We held it already (a resumed run): renewed.
    Renewed,
    /// Someone else held it but let it expire: taken over.
    TookOverExpired { previous: String },
    /// Someone else held it, and the caller's `take_over` said that holder is gone (a killed
    /// run of this machine, or the run being resumed): taken over.
    TookOver { previous: String },
}

/// Who holds a Lease, for `drdctl status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    pub holder: String,
    /// Seconds until it lapses unless renewed (negative: lapsed).
    pub expires_in_secs: i64,
}

fn micro_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

impl KubeCluster {
    fn leases(&self) -> Api<Lease> {
        Api::namespaced(self.client.clone(), &self.target.namespace)
    }

    fn lease_object(
        name: &str,
        holder: &str,
        duration: Duration,
        acquired: DateTime<Utc>,
        resource_version: Option<String>,
    ) -> Result<Lease, serde_json::Error> {
        let now = Utc::now();
        serde_json::from_value(json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": name,
                "resourceVersion": resource_version,
                "labels": {"app.kubernetes.io/managed-by": "drdctl"},
            },
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": duration.as_secs(),
                "acquireTime": micro_time(acquired),
                "renewTime": micro_time(now),
            },
        }))
    }

    /// Takes (or renews) the Lease `name` in the region's namespace for `holder`, valid for
    /// `duration` unless renewed. Fails with [`KubeError::LeaseHeld`] while someone else holds
    /// it, unless `take_over(holder)` says that holder is gone.
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        duration: Duration,
        take_over: &(dyn Fn(&str) -> bool + Send + Sync),
    ) -> Result<LeaseTaken> {
        let api = self.leases();
        let what = || format!("taking Lease {}/{name}", self.target.namespace);
        let bad = |e: serde_json::Error| KubeError::Other {
            context: self.target.context.clone(),
            what: what(),
            message: e.to_string(),
        };
        for _ in 0..5 {
            let current = api.get_opt(name).await.map_err(|e| self.err(what(), e))?;
            let Some(current) = current else {
                let lease =
                    Self::lease_object(name, holder, duration, Utc::now(), None).map_err(bad)?;
                match api.create(&PostParams::default(), &lease).await {
                    Ok(_) => return Ok(LeaseTaken::Free),
                    // Created by someone else in between: look again.
                    Err(kube::Error::Api(s)) if s.code == 409 => continue,
                    Err(e) => return Err(self.err(what(), e)),
                }
            };
            let spec = serde_json::to_value(&current.spec).unwrap_or(Value::Null);
            let held_by = spec["holderIdentity"].as_str().unwrap_or("").to_string();
            let renewed = spec["renewTime"]
                .as_str()
                .and_then(|t| t.parse::<DateTime<Utc>>().ok());
            let secs = spec["leaseDurationSeconds"].as_i64().unwrap_or(0);
            let expires = renewed.map(|r| r + chrono::Duration::seconds(secs));
            let (taken, acquired) = if held_by.is_empty() {
                (LeaseTaken::Free, Utc::now())
            } else if held_by == holder {
                let acquired = spec["acquireTime"]
                    .as_str()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or_else(Utc::now);
                (LeaseTaken::Renewed, acquired)
            } else if expires.is_none_or(|e| e < Utc::now()) {
                (
                    LeaseTaken::TookOverExpired { previous: held_by },
                    Utc::now(),
                )
            } else if take_over(&held_by) {
                (LeaseTaken::TookOver { previous: held_by }, Utc::now())
            } else {
                return Err(KubeError::LeaseHeld(Box::new(crate::error::LeaseHeld {
                    context: self.target.context.clone(),
                    namespace: self.target.namespace.clone(),
                    name: name.to_string(),
                    holder: held_by,
                    renewed: renewed.map(|r| r.to_rfc3339()).unwrap_or_default(),
                    expires_in_secs: expires
                        .map(|e| (e - Utc::now()).num_seconds().max(0))
                        .unwrap_or(0),
                })));
            };
            let lease = Self::lease_object(
                name,
                holder,
                duration,
                acquired,
                current.metadata.resource_version.clone(),
            )
            .map_err(bad)?;
            match api.replace(name, &PostParams::default(), &lease).await {
                Ok(_) => return Ok(taken),
                // Changed since we read it (someone else took or renewed it): look again.
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(self.err(what(), e)),
            }
        }
        Err(KubeError::Other {
            context: self.target.context.clone(),
            what: what(),
            message: "the Lease kept changing under us; try again".into(),
        })
    }

    /// Who holds the Lease `name` (`None`: absent or released).
    pub async fn lease_holder(&self, name: &str) -> Result<Option<LeaseHolder>> {
        let api = self.leases();
        let what = || format!("reading Lease {}/{name}", self.target.namespace);
        let Some(current) = api.get_opt(name).await.map_err(|e| self.err(what(), e))? else {
            return Ok(None);
        };
        let spec = serde_json::to_value(&current.spec).unwrap_or(Value::Null);
        let holder = spec["holderIdentity"].as_str().unwrap_or("").to_string();
        if holder.is_empty() {
            return Ok(None);
        }
        let renewed = spec["renewTime"]
            .as_str()
            .and_then(|t| t.parse::<DateTime<Utc>>().ok());
        let secs = spec["leaseDurationSeconds"].as_i64().unwrap_or(0);
        let expires_in_secs = renewed
            .map(|r| (r + chrono::Duration::seconds(secs) - Utc::now()).num_seconds())
            .unwrap_or(0);
        Ok(Some(LeaseHolder {
            holder,
            expires_in_secs,
        }))
    }

    /// Releases the Lease if `holder` holds it (clears the holder, keeping the object);
    /// anything else is left alone.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        let api = self.leases();
        let what = || format!("releasing Lease {}/{name}", self.target.namespace);
        let Some(mut current) = api.get_opt(name).await.map_err(|e| self.err(what(), e))? else {
            return Ok(());
        };
        let Some(spec) = current.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(holder) {
            return Ok(());
        }
        spec.holder_identity = None;
        match api.replace(name, &PostParams::default(), &current).await {
            Ok(_) => Ok(()),
            // Taken over meanwhile (it had expired): not ours to release any more.
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(()),
            Err(e) => Err(self.err(what(), e)),
        }
    }
}
