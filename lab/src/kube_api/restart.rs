//! Restarting a pod's container in place, as the kubelet does when a container exits (a
//! crash, an OOM kill, a failed liveness probe) under `restartPolicy: Always`: the same pod
//! object, `restartCount` + 1, `lastState.terminated` with the exit code and times, and the
//! former container's log kept for `kubectl logs --previous` (the kubelet keeps one previous
//! log per container). The runtime stops the process and starts it again; the new log
//! replaces the current one.
//!
//! Elsewhere in the double a "restart" replaces the pod (`kubectl rollout restart`, drdctl's
//! role changes, a deleted pod): the new pod has `restartCount` 0 and no previous log, and
//! `--previous` answers the kubelet's "previous terminated container ... not found", as on a
//! real cluster.

use serde_json::{json, Value};

use super::ctx::Ctx;
use super::error::{ApiError, ApiResult};
use super::events::{self, EventType as Kind};
use super::pod::PodInfo;
use super::store::{now_rfc3339, WriteOpts};

fn pods() -> &'static super::resources::ResourceDef {
    super::resources::lookup("pods").expect("pods are served")
}

/// The pod's current log, whole.
fn current_log(ctx: &Ctx, pod: &PodInfo) -> String {
    match ctx.pod_io.log_path(pod) {
        Some(p) => std::fs::read_to_string(p).unwrap_or_default(),
        None => ctx.pod_io.logs(pod).unwrap_or_default(),
    }
}

/// Sets the pod's `Ready` and `ContainersReady` conditions (a transition time when they flip).
pub(crate) fn set_ready_conditions(pod: &mut Value, ready: bool) {
    let flag = if ready { "True" } else { "False" };
    let conds = pod
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut);
    for c in conds.into_iter().flatten() {
        if (c["type"] == "Ready" || c["type"] == "ContainersReady") && c["status"] != flag {
            c["status"] = json!(flag);
            c["lastTransitionTime"] = json!(now_rfc3339());
        }
    }
}

/// Writes the first container's status (and the pod's Ready conditions) with `f`, if the pod
/// is still the one with `uid`.
fn write_status(
    ctx: &Ctx,
    pod: &PodInfo,
    ready: bool,
    f: impl FnOnce(&mut Value),
) -> ApiResult<Value> {
    ctx.store.update(
        pods(),
        &pod.namespace,
        &pod.name,
        WriteOpts::status(),
        |old| {
            if old["metadata"]["uid"].as_str() != Some(pod.uid.as_str()) {
                return Err(ApiError::not_found(pods(), &pod.name));
            }
            let mut new = old.clone();
            set_ready_conditions(&mut new, ready);
            let status = new
                .pointer_mut("/status/containerStatuses/0")
                .ok_or_else(|| ApiError::bad_request("the pod has no container status"))?;
            status["ready"] = json!(ready);
            status["started"] = json!(ready);
            f(status);
            Ok(new)
        },
    )
}

/// Restarts the first container of a running pod in place; see the module docs. Returns the
/// pod once the container runs again (or is back off after a failed start).
pub(crate) async fn restart_container(
    ctx: &Ctx,
    namespace: &str,
    name: &str,
    exit_code: i32,
) -> ApiResult<Value> {
    let object = ctx
        .store
        .get(pods(), namespace, name)
        .ok_or_else(|| ApiError::not_found(pods(), name))?;
    let pod = PodInfo::from_pod(&ctx.region, &object);
    let started_at = object
        .pointer("/status/containerStatuses/0/state/running/startedAt")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ApiError::bad_request(format!("the container of pod {name} is not running"))
        })?
        .to_string();
    let container = object
        .pointer("/spec/containers/0/name")
        .and_then(Value::as_str)
        .unwrap_or("main")
        .to_string();
    // The container ends: its log becomes the previous one.
    let live: Vec<String> = ctx
        .store
        .list(pods(), None)
        .0
        .iter()
        .filter_map(|p| p["metadata"]["uid"].as_str().map(String::from))
        .collect();
    ctx.previous_logs
        .put(&pod.uid, &container, current_log(ctx, &pod), &live);
    ctx.runtime.stop(pod.clone()).await;
    let reason = if exit_code == 0 { "Completed" } else { "Error" };
    let terminated = json!({"terminated": {
        "exitCode": exit_code, "reason": reason, "startedAt": started_at,
        "finishedAt": now_rfc3339(),
    }});
    let stopped = write_status(ctx, &pod, false, |c| {
        c["restartCount"] = json!(c["restartCount"].as_i64().unwrap_or(0) + 1);
        c["lastState"] = terminated;
        c["state"] = json!({"waiting": {"reason": "ContainerCreating"}});
    })?;
    // ... and starts again.
    let outcome = ctx.runtime.start(pod.clone()).await;
    let ready = outcome.is_ok();
    let written = write_status(ctx, &pod, ready, |c| {
        c["state"] = match &outcome {
            Ok(_) => json!({"running": {"startedAt": now_rfc3339()}}),
            Err(msg) => json!({"waiting": {"reason": "CrashLoopBackOff", "message": msg}}),
        };
    });
    let Ok(pod_now) = written else {
        // Deleted meanwhile: what was started goes too.
        ctx.runtime.stop(pod).await;
        return Err(ApiError::not_found(pods(), name));
    };
    match &outcome {
        Ok(_) => events::pod_event(
            &ctx.store,
            &stopped,
            Kind::Normal,
            "Started",
            format!("Started container {container}"),
        ),
        Err(e) => events::pod_event(
            &ctx.store,
            &stopped,
            Kind::Warning,
            "BackOff",
            format!(
                "Back-off restarting failed container {container} in pod \
                 {name}_{namespace}({}): {e}",
                pod.uid
            ),
        ),
    }
    Ok(pod_now)
}
