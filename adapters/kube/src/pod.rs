//! One pod, as the database adapter needs it (drdctl hands these to drd-db in
//! cli/src/dbhost.rs): a port-forward to the pod on a local listener, the pod's log, and a
//! restart that waits for the new pod to be Ready. Inherent methods of [`KubeCluster`], in the
//! target's namespace.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, LogParams};
use kube::Api;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::{KubeCluster, KubeError, Result};

/// A local TCP listener whose every accepted connection is one new port-forward stream to a
/// pod's port (`Api::<Pod>::portforward`), as `kubectl port-forward` does. Failures of the
/// forward (pod missing, port refused) are kept for a connection error to quote.
pub struct PortForward {
    addr: SocketAddr,
    last_error: Arc<Mutex<Option<String>>>,
    task: JoinHandle<()>,
}

impl Drop for PortForward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PortForward {
    /// The local address to connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The latest forward failure, waiting up to `wait` for one to be reported (the error
    /// channel and the closed stream race).
    pub async fn take_error(&self, wait: Duration) -> Option<String> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(e) = self.last_error.lock().expect("forward lock").take() {
                return Some(e);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Why a restarted pod is not serving.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct PodNotReady {
    /// What was seen (`pod default/postgresql-0 did not start: ...`).
    pub reason: String,
    /// The last 30 lines of the pod's log.
    pub log: String,
}

/// What a restart can end in.
#[derive(Debug, thiserror::Error)]
pub enum RestartError {
    /// The API refused or could not be reached.
    #[error(transparent)]
    Kube(#[from] KubeError),
    /// The new pod did not become Ready.
    #[error(transparent)]
    NotReady(PodNotReady),
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

/// Why a port-forward to `namespace/pod` could not start, for the connection error to quote.
fn forward_failure(e: &kube::Error, namespace: &str, pod: &str) -> String {
    match e {
        kube::Error::Api(s) if s.code == 404 => format!(
            "pod {namespace}/{pod} not found: is the postgresql StatefulSet deployed and its pod running?"
        ),
        kube::Error::Api(s) => format!("the kube API refused the port-forward: {}", s.message),
        other => format!("kube API: {other}"),
    }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl KubeCluster {
    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.target.namespace)
    }

    /// Listens on 127.0.0.1 (a free port) and forwards each connection to `pod`'s `port`.
    /// Nothing is contacted until the first connection.
    pub async fn port_forward(&self, pod: &str, port: u16) -> std::io::Result<PortForward> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let last_error = Arc::new(Mutex::new(None));
        let errors = last_error.clone();
        let api = self.pods();
        let pod = pod.to_string();
        let namespace = self.target.namespace.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    // Out of file descriptors or similar: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                // Each database message is written as it comes: no wait for a delayed ACK.
                let _ = sock.set_nodelay(true);
                let (api, pod, namespace, errors) =
                    (api.clone(), pod.clone(), namespace.clone(), errors.clone());
                tokio::spawn(async move {
                    let record = |msg: String| {
                        tracing::debug!(error = %msg, "port-forward failed");
                        *errors.lock().expect("forward lock") = Some(msg);
                    };
                    let mut pf = match api.portforward(&pod, &[port]).await {
                        Ok(pf) => pf,
                        Err(e) => return record(forward_failure(&e, &namespace, &pod)),
                    };
                    let (Some(mut upstream), Some(error)) =
                        (pf.take_stream(port), pf.take_error(port))
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
        Ok(PortForward {
            addr,
            last_error,
            task,
        })
    }

    /// The pod's log (all of the current container's output).
    pub async fn pod_log(&self, pod: &str) -> Result<String> {
        let what = format!("reading the log of pod {}/{pod}", self.target.namespace);
        self.pods()
            .logs(pod, &LogParams::default())
            .await
            .map_err(|e| self.err(what, e))
    }

    /// Deletes the pod (its StatefulSet recreates it and its start script runs again) and waits
    /// up to `timeout` until the new pod is Ready. Returns the new pod's log; a pod that fails
    /// to start is reported with the tail of its log.
    pub async fn restart_pod(
        &self,
        pod: &str,
        timeout: Duration,
    ) -> std::result::Result<String, RestartError> {
        let ns = self.target.namespace.clone();
        let api = self.pods();
        let read = || async {
            api.get_opt(pod)
                .await
                .map_err(|e| self.err(format!("reading pod {ns}/{pod}"), e))
        };
        let old_uid = read().await?.and_then(|p| p.metadata.uid);
        if old_uid.is_some() {
            api.delete(pod, &DeleteParams::default())
                .await
                .map_err(|e| self.err(format!("deleting pod {ns}/{pod}"), e))?;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(p) = read().await?.filter(|p| p.metadata.uid != old_uid) {
                if pod_ready(&p) {
                    return Ok(self.pod_log(pod).await?);
                }
                if let Some(msg) = waiting_message(&p) {
                    return Err(self
                        .not_ready(pod, format!("pod {ns}/{pod} did not start: {msg}"))
                        .await);
                }
            }
            if Instant::now() > deadline {
                return Err(self
                    .not_ready(
                        pod,
                        format!("pod {ns}/{pod} not Ready {timeout:?} after its restart"),
                    )
                    .await);
            }
            // Polling interval; the pod is re-read each time.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn not_ready(&self, pod: &str, reason: String) -> RestartError {
        let log = self.pod_log(pod).await.unwrap_or_default();
        RestartError::NotReady(PodNotReady {
            reason,
            log: tail(&log, 30),
        })
    }
}
