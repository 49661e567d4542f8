//! kube-rs 5 against the double: every call drdctl's `Cluster` adapter makes (get, list, create,
//! replace, the three patch flavours, scale, delete, watch, await_condition), and the Status
//! errors it branches on.

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::wait::{await_condition, conditions, Condition};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::{json, Value};

use crate::support::{client, config_map, deployment, double, eventually, rolled_out, seed};

fn api_error(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn cm(v: Value) -> ConfigMap {
    serde_json::from_value(v).unwrap()
}

#[tokio::test]
async fn crud_and_status_errors() {
    let d = double().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client(&d));
    let created = api
        .create(
            &PostParams::default(),
            &cm(config_map("app", json!({"a": "1"}))),
        )
        .await
        .unwrap();
    let rv: u64 = created
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());

    let dup = api_error(
        api.create(&PostParams::default(), &cm(config_map("app", json!({}))))
            .await
            .unwrap_err(),
    );
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(dup.message, "configmaps \"app\" already exists");

    let got = api.get("app").await.unwrap();
    assert_eq!(got.data.unwrap()["a"], "1");
    let listed = api.list(&ListParams::default()).await.unwrap();
    assert!(
        listed
            .metadata
            .resource_version
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= rv
    );
    assert_eq!(listed.items.len(), 1);

    // Replace with the current resourceVersion works; with a stale one it is a 409 Conflict.
    let mut fresh = api.get("app").await.unwrap();
    fresh.data = Some([("a".to_string(), "2".to_string())].into());
    let replaced = api
        .replace("app", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert!(
        replaced
            .metadata
            .resource_version
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > rv
    );
    let conflict = api_error(
        api.replace("app", &PostParams::default(), &fresh)
            .await
            .unwrap_err(),
    );
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert!(conflict.is_conflict());

    let missing = api_error(api.get("nope").await.unwrap_err());
    assert!(missing.is_not_found());
    assert_eq!(missing.message, "configmaps \"nope\" not found");

    let deleted = api.delete("app", &DeleteParams::default()).await.unwrap();
    let status = deleted
        .right()
        .expect("a ConfigMap delete answers a Status");
    assert_eq!(
        status.status,
        Some(kube::core::response::StatusSummary::Success)
    );
    assert!(api.get_opt("app").await.unwrap().is_none());
}

#[tokio::test]
async fn invalid_objects_are_422_with_causes() {
    let d = double().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client(&d));
    let bad = api_error(
        api.create(
            &PostParams::default(),
            &cm(config_map("Bad_Name", json!({}))),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((bad.code, bad.reason.as_str()), (422, "Invalid"));
    assert!(bad.message.starts_with("ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"), "{}", bad.message);

    let deploys: Api<Deployment> = Api::default_namespaced(client(&d));
    let mut dep: Deployment = serde_json::from_value(deployment("web", -1)).unwrap();
    let e = api_error(
        deploys
            .create(&PostParams::default(), &dep)
            .await
            .unwrap_err(),
    );
    assert_eq!(e.message, "Deployment.apps \"web\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0");
    let details = e.details.unwrap();
    assert_eq!(details.causes[0].field, "spec.replicas");

    dep.spec.replicas = Some(1);
    dep.spec.template.metadata.as_mut().unwrap().labels =
        Some([("app".to_string(), "other".to_string())].into());
    let e = api_error(
        deploys
            .create(&PostParams::default(), &dep)
            .await
            .unwrap_err(),
    );
    assert!(e.message.contains("spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"other\"}: `selector` does not match template `labels`"), "{}", e.message);

    // A namespaced object in a namespace that does not exist.
    let elsewhere: Api<ConfigMap> = Api::namespaced(client(&d), "nowhere");
    let e = api_error(
        elsewhere
            .create(&PostParams::default(), &cm(config_map("x", json!({}))))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (404, "namespaces \"nowhere\" not found")
    );
    assert!(e.is_not_found());

    let e = api_error(
        api.list(&ListParams::default().fields("spec.nodeName=x"))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (400, "BadRequest"));
}

#[tokio::test]
async fn dry_run_stores_nothing() {
    let d = double().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client(&d));
    let rv = d.store().resource_version();
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let out = api
        .create(&pp, &cm(config_map("dry", json!({"a": "1"}))))
        .await
        .unwrap();
    assert_eq!(out.metadata.name.as_deref(), Some("dry"));
    assert!(api.get_opt("dry").await.unwrap().is_none());
    let patch = Patch::Apply(config_map("dry2", json!({})));
    api.patch("dry2", &PatchParams::apply("drdctl").dry_run(), &patch)
        .await
        .unwrap();
    assert!(api.get_opt("dry2").await.unwrap().is_none());
    assert_eq!(d.store().resource_version(), rv);
}

#[tokio::test]
async fn label_and_field_selectors() {
    let d = double().await;
    for (name, tier) in [("a", "front"), ("b", "back"), ("c", "back")] {
        let mut o = config_map(name, json!({}));
        o["metadata"]["labels"] = json!({"tier": tier, "app": "x"});
        seed(&d, o);
    }
    let api: Api<ConfigMap> = Api::default_namespaced(client(&d));
    let names = |l: kube::core::ObjectList<ConfigMap>| -> Vec<String> {
        l.items
            .into_iter()
            .map(|c| c.metadata.name.unwrap())
            .collect()
    };
    let lp = |s: &str| ListParams::default().labels(s);
    assert_eq!(names(api.list(&lp("tier=back")).await.unwrap()), ["b", "c"]);
    assert_eq!(names(api.list(&lp("tier!=back")).await.unwrap()), ["a"]);
    assert_eq!(
        names(api.list(&lp("tier in (front,side)")).await.unwrap()),
        ["a"]
    );
    assert_eq!(
        names(api.list(&lp("tier notin (front),app")).await.unwrap()),
        ["b", "c"]
    );
    assert_eq!(
        names(api.list(&lp("!app")).await.unwrap()),
        Vec::<String>::new()
    );
    let fp = ListParams::default().fields("metadata.name=c");
    assert_eq!(names(api.list(&fp).await.unwrap()), ["c"]);
}

#[tokio::test]
async fn patches_merge_strategic_and_apply() {
    let d = double().await;
    let api: Api<Deployment> = Api::default_namespaced(client(&d));
    let pp = PatchParams::apply("drdctl");
    let applied = api
        .patch("web", &pp, &Patch::Apply(deployment("web", 2)))
        .await
        .unwrap();
    assert_eq!(applied.metadata.generation, Some(1));
    let rv = applied.metadata.resource_version.clone();
    // Re-applying the same manifest changes nothing, not even the resourceVersion.
    let again = api
        .patch("web", &pp, &Patch::Apply(deployment("web", 2)))
        .await
        .unwrap();
    assert_eq!(again.metadata.resource_version, rv);

    // Strategic merge: containers merge by name.
    let sidecar = json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "sidecar:1"}]}}}});
    let s = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(sidecar.clone()),
        )
        .await
        .unwrap();
    let names: Vec<String> = s
        .spec
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(names, ["web", "sidecar"]);
    assert_eq!(s.metadata.generation, Some(2));

    // Merge patch: lists are replaced whole; label edits do not bump the generation.
    let m = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tier": "front"}}})),
        )
        .await
        .unwrap();
    assert_eq!(m.metadata.generation, Some(2));
    let m = api
        .patch("web", &PatchParams::default(), &Patch::Merge(sidecar))
        .await
        .unwrap();
    assert_eq!(m.spec.template.spec.unwrap().containers.len(), 1);

    // A stale resourceVersion inside a patch is a conflict.
    let stale = json!({"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 5}});
    let e = api_error(
        api.patch("web", &PatchParams::default(), &Patch::Merge(stale))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.reason, "Conflict");
}

#[tokio::test]
async fn scale_subresource_and_apply_conflict() {
    let d = double().await;
    let api: Api<Deployment> = Api::default_namespaced(client(&d));
    api.patch(
        "web",
        &PatchParams::apply("drdctl"),
        &Patch::Apply(deployment("web", 1)),
    )
    .await
    .unwrap();
    let scale = api.get_scale("web").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(1));
    let scaled = api
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(scaled.spec.unwrap().replicas, Some(3));
    assert_eq!(scaled.status.unwrap().selector.as_deref(), Some("app=web"));
    let dep = api.get("web").await.unwrap();
    assert_eq!(dep.spec.replicas, Some(3));
    assert_eq!(dep.metadata.generation, Some(2));

    // Re-applying replicas: 1 now conflicts with the scale write, unless forced.
    let e = api_error(
        api.patch(
            "web",
            &PatchParams::apply("drdctl"),
            &Patch::Apply(deployment("web", 1)),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 409);
    assert_eq!(
        e.message,
        "Apply failed with 1 conflict: conflict with \"unknown\" with subresource \"scale\" using apps/v1: .spec.replicas"
    );
    assert_eq!(e.details.unwrap().causes[0].reason, "FieldManagerConflict");
    let forced = api
        .patch(
            "web",
            &PatchParams::apply("drdctl").force(),
            &Patch::Apply(deployment("web", 1)),
        )
        .await
        .unwrap();
    assert_eq!(forced.spec.replicas, Some(1));
}

#[tokio::test]
async fn await_condition_until_rolled_out() {
    let d = double().await;
    let api: Api<Deployment> = Api::default_namespaced(client(&d));
    api.patch(
        "web",
        &PatchParams::apply("drdctl"),
        &Patch::Apply(deployment("web", 3)),
    )
    .await
    .unwrap();
    let done = tokio::time::timeout(
        Duration::from_secs(20),
        await_condition(api.clone(), "web", conditions::is_deployment_completed()),
    )
    .await
    .expect("rolled out in time")
    .unwrap()
    .unwrap();
    let status = done.status.unwrap();
    assert_eq!(status.available_replicas, Some(3));
    assert_eq!(status.observed_generation, done.metadata.generation);
    let pods: Api<Pod> = Api::default_namespaced(client(&d));
    let listed = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 3);
    for p in &listed.items {
        assert!(p
            .metadata
            .labels
            .as_ref()
            .unwrap()
            .contains_key("pod-template-hash"));
        assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Running"));
    }
}

#[tokio::test]
async fn status_lags_spec_like_a_real_controller() {
    // A slow controller (500 ms) so the window is wide even on a loaded machine.
    let cfg = lab::KubeDoubleConfig::new("primary", "127.0.0.1:0".parse().unwrap())
        .pod_start_delay(Duration::from_millis(50))
        .sync_delay(Duration::from_millis(500));
    let d = lab::KubeDouble::start_with(cfg).await.unwrap();
    seed(&d, deployment("web", 1));
    rolled_out(&d, "web").await;
    let api: Api<Deployment> = Api::default_namespaced(client(&d));
    let patched = api
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
    assert!(patched.spec.is_some());
    // Right after the change the controller has not observed it yet: kube's
    // is_deployment_completed still says "done" (its known pitfall), observedGeneration says not.
    let dep = api.get("web").await.unwrap();
    let st = dep.status.clone().unwrap();
    assert!(st.observed_generation < dep.metadata.generation);
    assert!(conditions::is_deployment_completed().matches_object(Some(&dep)));
    rolled_out(&d, "web").await;
}

#[tokio::test]
async fn watcher_sees_events() {
    let d = double().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client(&d));
    let mut stream = watcher(api.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let creator = api.clone();
    tokio::spawn(async move {
        creator
            .create(
                &PostParams::default(),
                &cm(config_map("watched", json!({}))),
            )
            .await
            .unwrap();
    });
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(obj) = stream.try_next().await.unwrap() {
            if obj.metadata.name.as_deref() == Some("watched") {
                return obj;
            }
        }
        panic!("watch ended");
    })
    .await
    .expect("event in time");
    assert!(seen.metadata.resource_version.is_some());
}

#[tokio::test]
async fn raw_watch_replays_and_expires() {
    let d = double().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client(&d));
    let rv = d.store().resource_version().to_string();
    seed(&d, config_map("one", json!({})));
    api.delete("one", &DeleteParams::default()).await.unwrap();
    let wp = WatchParams::default().timeout(2);
    let events: Vec<_> = api
        .watch(&wp, &rv)
        .await
        .unwrap()
        .take(2)
        .try_collect()
        .await
        .unwrap();
    assert!(matches!(events[0], WatchEvent::Added(_)));
    assert!(matches!(events[1], WatchEvent::Deleted(_)));

    d.store().compact();
    let mut s = api.watch(&wp, &rv).await.unwrap().boxed();
    match s.try_next().await.unwrap() {
        Some(WatchEvent::Error(e)) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410, got {other:?}"),
    }
}

#[tokio::test]
async fn namespaces_and_statefulset_pods() {
    let d = double().await;
    let ns: Api<Namespace> = Api::all(client(&d));
    let names: Vec<String> = ns
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|n| n.metadata.name.unwrap())
        .collect();
    assert!(names.contains(&"default".to_string()) && names.contains(&"kube-system".to_string()));
    let created = ns
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "app"}})).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Active"));

    let mut sts = deployment("postgresql", 2);
    sts["kind"] = json!("StatefulSet");
    seed(&d, sts);
    let pods: Api<Pod> = Api::default_namespaced(client(&d));
    eventually(
        "statefulset pods ready",
        Duration::from_secs(10),
        || async {
            let items = pods
                .list(&ListParams::default().labels("app=postgresql"))
                .await
                .ok()?
                .items;
            let ready = items.iter().filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            });
            (ready.count() == 2).then_some(())
        },
    )
    .await;
    assert!(pods.get("postgresql-0").await.is_ok() && pods.get("postgresql-1").await.is_ok());
}

#[tokio::test]
async fn discovery_legacy_and_aggregated() {
    let d = double().await;
    let c = client(&d);
    let info = c.apiserver_version().await.unwrap();
    assert_eq!((info.major.as_str(), info.minor.as_str()), ("1", "32"));

    let legacy = kube::Discovery::new(c.clone()).run().await.unwrap();
    let aggregated = kube::Discovery::new(c.clone())
        .run_aggregated()
        .await
        .unwrap();
    for disc in [&legacy, &aggregated] {
        let apps = disc.get("apps").expect("apps group");
        let (deploy, caps) = apps
            .recommended_resources()
            .into_iter()
            .find(|(r, _)| r.kind == "Deployment")
            .expect("deployments");
        assert_eq!(deploy.plural, "deployments");
        assert!(caps.supports_operation(kube::discovery::verbs::WATCH));
        assert!(caps
            .subresources
            .iter()
            .any(|(s, _)| s.plural == "deployments/scale" || s.plural == "scale"));
        assert!(disc.get("batch").is_none(), "unknown groups are absent");
    }
    let gvk = kube::api::GroupVersionKind::gvk("apps", "v1", "StatefulSet");
    let (ar, _) = kube::discovery::pinned_kind(&c, &gvk).await.unwrap();
    assert_eq!(ar.plural, "statefulsets");

    // Unregistered API paths answer plain text, as a real server does.
    let req = http::Request::get("/apis/batch/v1/jobs")
        .body(Vec::new())
        .unwrap();
    let e = api_error(c.request_text(req).await.unwrap_err());
    assert_eq!(e.code, 404);
    assert_eq!(e.message.trim(), "404 page not found");
}
