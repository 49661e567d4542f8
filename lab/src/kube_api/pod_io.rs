//! How the double reaches into a pod ([`PodIo`]): where its ports are (port-forward), its log,
//! its processes (`kubectl top`) and the environment `kubectl exec` runs a command in
//! ([`ExecEnv`]).

use std::net::SocketAddr;

use serde_json::Value;

use super::pod::PodInfo;

/// What the double needs to know to reach into a pod: where its ports are, and its log.
pub trait PodIo: Send + Sync + 'static {
    /// The address that `port` of `pod` is served on, or why it cannot be reached.
    fn forward_target(&self, pod: &PodInfo, port: u16) -> Result<SocketAddr, String> {
        pod_ip_target(pod, port)
    }

    /// The pod's log (`kubectl logs`); `None` when the runtime keeps none.
    fn logs(&self, _pod: &PodInfo) -> Option<String> {
        None
    }

    /// The file the pod's log is written to, when there is one (`kubectl logs -f` follows it).
    fn log_path(&self, _pod: &PodInfo) -> Option<std::path::PathBuf> {
        None
    }

    /// The pod's processes (`kubectl top pods` reads their CPU and memory); none by default.
    fn processes(&self, _pod: &PodInfo) -> Vec<u32> {
        Vec::new()
    }

    /// How `kubectl exec` runs a command in `pod`; by default a generic container
    /// ([`ExecEnv::from_spec`]).
    fn exec_env(&self, pod: &PodInfo) -> Result<ExecEnv, String> {
        Ok(ExecEnv::from_spec(pod))
    }
}

/// The default: a pod's port is `status.podIP:port`, and pods have no logs.
#[derive(Debug, Default, Clone, Copy)]
pub struct PodIpIo;

impl PodIo for PodIpIo {}

/// `status.podIP:port`, the kubelet's view of a pod's port.
pub fn pod_ip_target(pod: &PodInfo, port: u16) -> Result<SocketAddr, String> {
    let ip = pod
        .object
        .pointer("/status/podIP")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("pod {} has no IP yet", pod.name))?;
    let ip = ip
        .parse()
        .map_err(|_| format!("pod {} has an invalid IP {ip:?}", pod.name))?;
    Ok(SocketAddr::new(ip, port))
}

/// How a command runs inside a pod: its environment and OS user.
#[derive(Debug, Clone, Default)]
pub struct ExecEnv {
    /// The whole environment (`PATH` included).
    pub env: Vec<(String, String)>,
    /// The uid and gid to run as; `None` for this process's own.
    pub user: Option<(u32, u32)>,
}

impl ExecEnv {
    /// A generic container: the literal `env` values of the pod's first container on a
    /// standard `PATH`, as this process's user.
    pub fn from_spec(pod: &PodInfo) -> Self {
        let mut env = vec![
            (
                "PATH".to_string(),
                "/usr/local/bin:/usr/bin:/bin".to_string(),
            ),
            ("HOSTNAME".to_string(), pod.name.clone()),
        ];
        for e in pod
            .object
            .pointer("/spec/containers/0/env")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let (Some(k), Some(v)) = (e["name"].as_str(), e["value"].as_str()) {
                env.push((k.to_string(), v.to_string()));
            }
        }
        ExecEnv { env, user: None }
    }
}
