//! The audit trail's storage: append-only records (one ConfigMap each, created and never
//! updated) and Events on the objects a run touched.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Event};
use kube::api::{ListParams, PostParams};
use serde_json::json;

use crate::{KubeCluster, KubeError, Result};

/// The label every audit record carries.
pub const HISTORY_LABEL: &str = "drdctl.io/history";

impl KubeCluster {
    /// Creates ConfigMap `name` with `data`, labelled as an audit record. Never overwrites:
    /// an existing one is a conflict.
    pub async fn append_record(&self, name: &str, data: BTreeMap<String, String>) -> Result<()> {
        let what = format!("writing configmap {}/{name}", self.target.namespace);
        let cm: ConfigMap = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "labels": {HISTORY_LABEL: "true", "app.kubernetes.io/managed-by": "drdctl"},
            },
            "data": data,
        }))
        .map_err(|e| KubeError::Other {
            context: self.target.context.clone(),
            what: what.clone(),
            message: e.to_string(),
        })?;
        self.configmaps()
            .create(&PostParams::default(), &cm)
            .await
            .map(|_| ())
            .map_err(|e| self.err(what, e))
    }

    /// Every audit record's data.
    pub async fn records(&self) -> Result<Vec<BTreeMap<String, String>>> {
        let what = format!(
            "listing configmaps -l {HISTORY_LABEL} in {}",
            self.target.namespace
        );
        let list = self
            .configmaps()
            .list(&ListParams::default().labels(&format!("{HISTORY_LABEL}=true")))
            .await
            .map_err(|e| self.err(what, e))?;
        Ok(list.items.into_iter().filter_map(|cm| cm.data).collect())
    }

    /// Records an Event (core/v1) on `kind/name` in the region's namespace, as a controller
    /// would: `reason` in CamelCase, `message` one line, type Normal or Warning.
    pub async fn event(
        &self,
        (api_version, kind, name): (&str, &str, &str),
        reason: &str,
        message: &str,
        warning: bool,
    ) -> Result<()> {
        let now = chrono::Utc::now();
        let what = format!("recording an event on {kind}/{name}");
        let ev: Event = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": format!("{name}.drdctl-{}", now.format("%Y%m%d%H%M%S%6f")),
            },
            "involvedObject": {
                "apiVersion": api_version,
                "kind": kind,
                "name": name,
                "namespace": self.target.namespace,
            },
            "reason": reason,
            "message": message,
            "type": if warning { "Warning" } else { "Normal" },
            "source": {"component": "drdctl"},
            "reportingComponent": "drdctl",
            "firstTimestamp": now.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "lastTimestamp": now.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "count": 1,
        }))
        .map_err(|e| KubeError::Other {
            context: self.target.context.clone(),
            what: what.clone(),
            message: e.to_string(),
        })?;
        kube::Api::<Event>::namespaced(self.client.clone(), &self.target.namespace)
            .create(&PostParams::default(), &ev)
            .await
            .map(|_| ())
            .map_err(|e| self.err(what, e))
    }
}
