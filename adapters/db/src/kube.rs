//! The region's Kubernetes side, as the database adapter needs it: the password secret, the
//! port-forward bridge (a local listener whose every connection is one
//! `Api::<Pod>::portforward` stream to the PostgreSQL pod), the `postgresql-role` ConfigMap,
//! and a pod restart that waits for the new pod to be Ready and returns its log.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{DeleteParams, LogParams, Patch, PatchParams};
use kube::Api;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::KubeTarget;
use crate::error::{DbError, DbResult};

/// The field manager of drdctl's writes.
pub const FIELD_MANAGER: &str = "drdctl";

fn kube_err(region: &str, k: &KubeTarget, what: String) -> impl FnOnce(kube::Error) -> DbError {
    let (region, context) = (region.to_string(), k.context.clone());
    move |source| DbError::Kube {
        region,
        context,
        what,
        source: Box::new(source),
    }
}

/// Reads the first present key of `keys` from the region's secret.
pub(crate) async fn secret_value(region: &str, k: &KubeTarget, keys: &[&str]) -> DbResult<String> {
    let api: Api<Secret> = Api::namespaced(k.client.clone(), &k.namespace);
    let secret = api.get_opt(&k.secret).await.map_err(kube_err(
        region,
        k,
        format!("reading secret {}/{}", k.namespace, k.secret),
    ))?;
    let Some(secret) = secret else {
        return Err(DbError::MissingSecret {
            region: region.into(),
            context: k.context.clone(),
            namespace: k.namespace.clone(),
            name: k.secret.clone(),
        });
    };
    let data = secret.data.unwrap_or_default();
    let strings = secret.string_data.unwrap_or_default();
    for key in keys {
        if let Some(v) = data.get(*key) {
            return Ok(String::from_utf8_lossy(&v.0).into_owned());
        }
        if let Some(v) = strings.get(*key) {
            return Ok(v.clone());
        }
    }
    Err(DbError::MissingSecretKey {
        region: region.into(),
        context: k.context.clone(),
        namespace: k.namespace.clone(),
        name: k.secret.clone(),
        keys: keys.iter().map(|s| s.to_string()).collect(),
    })
}

/// A local TCP listener that forwards each accepted connection through a new port-forward
/// stream to the pod. Failures of the forward (pod missing, port refused) are kept for the
/// connection error to quote.
pub(crate) struct Bridge {
    addr: SocketAddr,
    last_error: Arc<Mutex<Option<String>>>,
    task: JoinHandle<()>,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn describe(e: &kube::Error, k: &KubeTarget) -> String {
    match e {
        kube::Error::Api(s) if s.code == 404 => format!(
            "pod {}/{} not found: is the postgresql StatefulSet deployed and its pod running?",
            k.namespace, k.pod
        ),
        kube::Error::Api(s) => format!("the kube API refused the port-forward: {}", s.message),
        other => format!("kube API: {other}"),
    }
}

impl Bridge {
    pub(crate) async fn start(k: &KubeTarget) -> std::io::Result<Bridge> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let last_error = Arc::new(Mutex::new(None));
        let errors = last_error.clone();
        let api: Api<Pod> = Api::namespaced(k.client.clone(), &k.namespace);
        let k = k.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    // Out of file descriptors or similar: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let (api, k, errors) = (api.clone(), k.clone(), errors.clone());
                tokio::spawn(async move {
                    let record = |msg: String| {
                        tracing::debug!(error = %msg, "port-forward failed");
                        *errors.lock().expect("bridge lock") = Some(msg);
                    };
                    let mut pf = match api.portforward(&k.pod, &[k.port]).await {
                        Ok(pf) => pf,
                        Err(e) => return record(describe(&e, &k)),
                    };
                    let (Some(mut upstream), Some(error)) =
                        (pf.take_stream(k.port), pf.take_error(k.port))
                    else {
                        return record("the port-forward stream has no port".into());
                    };
                    let copy = tokio::io::copy_bidirectional(&mut sock, &mut upstream);
                    tokio::pin!(copy);
                    tokio::select! {
                        _ = &mut copy => {}
                        msg = error => {
                            if let Some(msg) = msg {
                                record(msg);
                            } else {
                                let _ = copy.await;
                            }
                        }
                    }
                });
            }
        });
        Ok(Bridge {
            addr,
            last_error,
            task,
        })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The latest forward failure, waiting up to `wait` for one to be reported (the error
    /// channel and the closed stream race).
    pub(crate) async fn take_error(&self, wait: Duration) -> Option<String> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(e) = self.last_error.lock().expect("bridge lock").take() {
                return Some(e);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The role ConfigMap's data.
pub(crate) async fn role_config(
    region: &str,
    k: &KubeTarget,
) -> DbResult<BTreeMap<String, String>> {
    let api: Api<ConfigMap> = Api::namespaced(k.client.clone(), &k.namespace);
    let cm = api.get(&k.role_config_map).await.map_err(kube_err(
        region,
        k,
        format!("reading configmap {}/{}", k.namespace, k.role_config_map),
    ))?;
    Ok(cm.data.unwrap_or_default())
}

/// Merges `data` into the role ConfigMap.
pub(crate) async fn patch_role_config(
    region: &str,
    k: &KubeTarget,
    data: &BTreeMap<String, String>,
) -> DbResult<()> {
    let api: Api<ConfigMap> = Api::namespaced(k.client.clone(), &k.namespace);
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    api.patch(
        &k.role_config_map,
        &pp,
        &Patch::Merge(serde_json::json!({ "data": data })),
    )
    .await
    .map_err(kube_err(
        region,
        k,
        format!("patching configmap {}/{}", k.namespace, k.role_config_map),
    ))?;
    Ok(())
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn waiting_message(p: &Pod) -> Option<String> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find_map(|c| c.state.as_ref()?.waiting.as_ref()?.message.clone())
}

/// The pod's log (all of the current container's output).
pub(crate) async fn pod_log(region: &str, k: &KubeTarget) -> DbResult<String> {
    let api: Api<Pod> = Api::namespaced(k.client.clone(), &k.namespace);
    api.logs(&k.pod, &LogParams::default())
        .await
        .map_err(kube_err(
            region,
            k,
            format!("reading the log of pod {}/{}", k.namespace, k.pod),
        ))
}

/// Deletes the pod (its StatefulSet recreates it; the start script runs again) and waits until
/// the new pod is Ready. Returns the new pod's log. A pod that fails to start is reported with
/// its log.
pub(crate) async fn restart_pod(
    region: &str,
    k: &KubeTarget,
    timeout: Duration,
) -> DbResult<String> {
    let api: Api<Pod> = Api::namespaced(k.client.clone(), &k.namespace);
    let old_uid = api
        .get_opt(&k.pod)
        .await
        .map_err(kube_err(
            region,
            k,
            format!("reading pod {}/{}", k.namespace, k.pod),
        ))?
        .and_then(|p| p.metadata.uid);
    if old_uid.is_some() {
        api.delete(&k.pod, &DeleteParams::default())
            .await
            .map_err(kube_err(
                region,
                k,
                format!("deleting pod {}/{}", k.namespace, k.pod),
            ))?;
    }
    let deadline = Instant::now() + timeout;
    loop {
        let pod = api.get_opt(&k.pod).await.map_err(kube_err(
            region,
            k,
            format!("reading pod {}/{}", k.namespace, k.pod),
        ))?;
        if let Some(p) = pod.filter(|p| p.metadata.uid != old_uid) {
            if pod_ready(&p) {
                return pod_log(region, k).await;
            }
            if let Some(msg) = waiting_message(&p) {
                let log = pod_log(region, k).await.unwrap_or_default();
                return Err(DbError::Rejoin {
                    region: region.into(),
                    reason: format!("pod {}/{} did not start: {msg}", k.namespace, k.pod),
                    log: tail(&log, 30),
                });
            }
        }
        if Instant::now() > deadline {
            let log = pod_log(region, k).await.unwrap_or_default();
            return Err(DbError::Rejoin {
                region: region.into(),
                reason: format!(
                    "pod {}/{} not Ready {timeout:?} after its restart",
                    k.namespace, k.pod
                ),
                log: tail(&log, 30),
            });
        }
        // Polling interval; the pod is re-read each time.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
