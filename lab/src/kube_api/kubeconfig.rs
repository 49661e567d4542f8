//! The lab's kubeconfig: one file with a cluster, a context and a user per region, pointing at
//! the regions' doubles over plain http, so `kubectl --context dr ...` and kube-rs
//! `KubeConfigOptions { context: Some("dr") }` reach the right double.

use std::io;
use std::path::Path;

/// A kubeconfig with one cluster/context/user per `(name, server_url)`; the first is current.
pub fn kubeconfig_yaml(clusters: &[(&str, &str)]) -> String {
    let mut out = String::from("apiVersion: v1\nkind: Config\nclusters:\n");
    for (name, url) in clusters {
        out.push_str(&format!("- name: {name}\n  cluster:\n    server: {url}\n"));
    }
    out.push_str("contexts:\n");
    for (name, _) in clusters {
        out.push_str(&format!(
            "- name: {name}\n  context:\n    cluster: {name}\n    user: {name}\n    namespace: default\n"
        ));
    }
    out.push_str("users:\n");
    for (name, _) in clusters {
        out.push_str(&format!("- name: {name}\n  user: {{}}\n"));
    }
    let current = clusters.first().map_or("", |c| c.0);
    out.push_str(&format!("current-context: {current}\npreferences: {{}}\n"));
    out
}

/// Writes [`kubeconfig_yaml`] to `path`.
pub fn write_kubeconfig(path: &Path, clusters: &[(&str, &str)]) -> io::Result<()> {
    std::fs::write(path, kubeconfig_yaml(clusters))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_both_contexts() {
        let y = kubeconfig_yaml(&[
            ("primary", "http://127.0.0.2:1"),
            ("dr", "http://127.0.0.3:2"),
        ]);
        let v: serde_yaml::Value = serde_yaml::from_str(&y).unwrap();
        assert_eq!(v["contexts"][1]["name"].as_str(), Some("dr"));
        assert_eq!(
            v["clusters"][1]["cluster"]["server"].as_str(),
            Some("http://127.0.0.3:2")
        );
        assert_eq!(v["current-context"].as_str(), Some("primary"));
    }
}
