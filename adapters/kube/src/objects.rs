//! Plain object access for commands that work on whole namespaces (`drdctl practice`): get,
//! list, create and delete any served kind as JSON, and one HTTP request to a pod's port
//! through the API server's port-forward (no listener, no cluster network needed).
//!
//! Secrets travel as the API returns them (base64 `data`) and are never formatted: errors
//! name the object, not its content.

use kube::api::{DeleteParams, DynamicObject, ListParams, PostParams};
use serde_json::Value;

use crate::{KubeCluster, KubeError, Result};

impl KubeCluster {
    /// The object, or `None` when it does not exist. `namespace` `None`: the target's
    /// namespace (ignored for cluster-scoped kinds).
    pub async fn get_object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>> {
        let (ar, caps) = self.resource(api_version, kind).await?;
        let api = self.dynamic(&ar, &caps, namespace);
        let obj = api
            .get_opt(name)
            .await
            .map_err(|e| self.err(format!("reading {kind} {name}"), e))?;
        obj.map(to_value).transpose()
    }

    /// Every object of `kind` in `namespace` (`None`: the target's namespace).
    pub async fn list_objects(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<Value>> {
        let (ar, caps) = self.resource(api_version, kind).await?;
        let api = self.dynamic(&ar, &caps, namespace);
        let list = api.list(&ListParams::default()).await.map_err(|e| {
            self.err(
                format!(
                    "listing {kind} in {}",
                    namespace.unwrap_or(&self.target.namespace)
                ),
                e,
            )
        })?;
        list.items.into_iter().map(to_value).collect()
    }

    /// Creates `object` (its `metadata.namespace`, else the target's namespace).
    pub async fn create_object(&self, object: &Value) -> Result<()> {
        let what = crate::object_ref(object);
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        let (ar, caps) = self.resource(api_version, kind).await?;
        let api = self.dynamic(&ar, &caps, object["metadata"]["namespace"].as_str());
        let dynamic: DynamicObject =
            serde_json::from_value(object.clone()).map_err(|e| KubeError::Invalid {
                context: self.target.context.clone(),
                object: what.clone(),
                message: e.to_string(),
            })?;
        api.create(
            &PostParams {
                field_manager: Some("drdctl".into()),
                ..PostParams::default()
            },
            &dynamic,
        )
        .await
        .map_err(|e| self.err(format!("creating {what}"), e))?;
        Ok(())
    }

    /// Deletes the object; `false` when it was already gone.
    pub async fn delete_object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<bool> {
        let (ar, caps) = self.resource(api_version, kind).await?;
        let api = self.dynamic(&ar, &caps, namespace);
        match api.delete(name, &DeleteParams::foreground()).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(e) => Err(self.err(format!("deleting {kind} {name}"), e)),
        }
    }

    /// One HTTP/1.1 request to `port` of `pod` in `namespace`, through the API server's
    /// port-forward: (status, body). `body` is sent as JSON when given.
    pub async fn pod_http(
        &self,
        namespace: &str,
        pod: &str,
        port: u16,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String)> {
        use k8s_openapi::api::core::v1::Pod;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let api: kube::Api<Pod> = kube::Api::namespaced(self.client.clone(), namespace);
        let what = format!("{method} {path} on pod {namespace}/{pod}:{port}");
        let mut pf = api
            .portforward(pod, &[port])
            .await
            .map_err(|e| self.err(format!("port-forward for {what}"), e))?;
        let mut stream = pf.take_stream(port).ok_or_else(|| KubeError::Invalid {
            context: self.target.context.clone(),
            object: format!("pod {namespace}/{pod}"),
            message: "the port-forward has no stream".into(),
        })?;
        let body = body.unwrap_or("");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {pod}\r\nConnection: close\r\nUser-Agent: drdctl\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let io = |e: std::io::Error| KubeError::Invalid {
            context: self.target.context.clone(),
            object: format!("pod {namespace}/{pod}"),
            message: format!("{what}: {e}"),
        };
        stream.write_all(head.as_bytes()).await.map_err(io)?;
        stream.write_all(body.as_bytes()).await.map_err(io)?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await.map_err(io)?;
        drop(stream);
        let _ = pf.join().await;
        let text = String::from_utf8_lossy(&buf);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| KubeError::Invalid {
                context: self.target.context.clone(),
                object: format!("pod {namespace}/{pod}"),
                message: format!("{what}: no HTTP answer"),
            })?;
        Ok((code, body.to_string()))
    }
}

fn to_value(o: DynamicObject) -> Result<Value> {
    serde_json::to_value(o).map_err(|e| KubeError::Invalid {
        context: String::new(),
        object: String::new(),
        message: e.to_string(),
    })
}
