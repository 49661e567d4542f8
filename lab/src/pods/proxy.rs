//! kube-proxy for the lab: a TCP listener per Service that forwards each connection to one of
//! the Service's Ready pods, round robin. No Ready pod: the connection is closed at once, as a
//! Service without endpoints refuses.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// (pod name, address) of each Ready pod, by app label.
type ByApp = HashMap<String, Vec<(String, SocketAddr)>>;

/// Ready pods per app label, shared by the runtime (writer) and the proxies (readers).
#[derive(Clone, Default)]
pub struct Endpoints {
    inner: Arc<Mutex<ByApp>>,
}

impl Endpoints {
    pub fn add(&self, app: &str, pod: &str, addr: SocketAddr) {
        let mut m = self.inner.lock().expect("not poisoned");
        let list = m.entry(app.to_string()).or_default();
        list.retain(|(p, _)| p != pod);
        list.push((pod.to_string(), addr));
    }
    pub fn remove(&self, app: &str, pod: &str) {
        if let Some(list) = self.inner.lock().expect("not poisoned").get_mut(app) {
            list.retain(|(p, _)| p != pod);
        }
    }
    /// The Ready pods of `app`.
    pub fn of(&self, app: &str) -> Vec<SocketAddr> {
        self.inner
            .lock()
            .expect("not poisoned")
            .get(app)
            .map(|l| l.iter().map(|(_, a)| *a).collect())
            .unwrap_or_default()
    }
}

/// One Service's listener.
pub struct ServiceProxy {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl ServiceProxy {
    /// Listens on `listen` (port 0 picks one) and forwards to `app`'s endpoints.
    pub async fn start(
        listen: SocketAddr,
        app: &str,
        endpoints: Endpoints,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let app = app.to_string();
        let next = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                let targets = endpoints.of(&app);
                if targets.is_empty() {
                    drop(client);
                    continue;
                }
                let target = targets[next.fetch_add(1, Ordering::Relaxed) % targets.len()];
                tokio::spawn(async move {
                    let _ = client.set_nodelay(true);
                    if let Ok(mut upstream) = TcpStream::connect(target).await {
                        let _ = upstream.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        });
        Ok(ServiceProxy { addr, task })
    }
}

impl Drop for ServiceProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
