//! drdctl's renderer gives the same objects as `kubectl kustomize` for both overlays and both
//! witness overlays (the guard sidecar).

use serde_json::Value;

use crate::support::repo_root;

fn by_kind_and_name(mut objs: Vec<Value>) -> Vec<Value> {
    objs.sort_by_key(|o| {
        (
            o["kind"].as_str().unwrap_or("").to_string(),
            o["metadata"]["name"].as_str().unwrap_or("").to_string(),
        )
    });
    objs
}

#[test]
fn rendering_equals_kubectl_kustomize() {
    for overlay in ["primary", "dr", "witness/primary", "witness/dr"] {
        let dir = repo_root().join("manifests").join(overlay);
        let out = std::process::Command::new("kubectl")
            .arg("kustomize")
            .arg(&dir)
            .output()
            .expect("kubectl is installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let theirs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
            .map(|d| {
                serde_json::to_value(
                    <serde_yaml::Value as serde::Deserialize>::deserialize(d).unwrap(),
                )
                .unwrap()
            })
            .filter(|v| !v.is_null())
            .collect();
        let ours = drdctl::kustomize::render(&dir).unwrap();
        assert_eq!(ours.len(), theirs.len(), "{overlay}: object count");
        let (ours, theirs) = (by_kind_and_name(ours), by_kind_and_name(theirs));
        for (a, b) in ours.iter().zip(&theirs) {
            assert_eq!(
                a, b,
                "{overlay}: {} {} differs",
                a["kind"], a["metadata"]["name"]
            );
        }
    }
}
