//! Fault injection: the API refusing connections and coming back on the same port, added
//! latency, and the next N requests failing with a given status. drdctl's error handling and
//! retries are tested against exactly these.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;

use crate::support::{client, double};

#[tokio::test]
async fn api_down_refuses_connections_then_comes_back() {
    // An address of its own: on 127.0.0.1 another test's double (or relay) may be given the
    // port this one frees, and then the connection would not be refused.
    let cfg = lab::KubeDoubleConfig::new("primary", "127.0.42.1:0".parse().unwrap());
    let d = lab::KubeDouble::start_with(cfg).await.unwrap();
    let addr = d.addr();
    let api: Api<ConfigMap> = Api::default_namespaced(client(&d));
    assert!(api.get_opt("x").await.unwrap().is_none());
    d.down().await;
    assert!(!d.is_up().await);
    let refused = tokio::net::TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    let fresh: Api<ConfigMap> = Api::default_namespaced(client(&d));
    let e = fresh.get_opt("x").await.unwrap_err();
    assert!(
        !matches!(e, kube::Error::Api(_)),
        "a transport error, not a Status: {e:?}"
    );
    d.up().await.unwrap();
    assert_eq!(d.addr(), addr);
    assert!(api.get_opt("x").await.unwrap().is_none());
}

#[tokio::test]
async fn latency_is_added_to_every_request() {
    let d = double().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client(&d));
    d.faults().set_latency(Duration::from_millis(300));
    let t = Instant::now();
    api.get_opt("x").await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
    d.faults().clear();
    assert_eq!(d.faults().latency(), Duration::ZERO);
}

#[tokio::test]
async fn next_requests_fail_with_a_status() {
    let d = double().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client(&d));
    d.faults().fail_next(2, 500);
    for _ in 0..2 {
        match api.get_opt("x").await.unwrap_err() {
            kube::Error::Api(s) => assert_eq!((s.code, s.reason.as_str()), (500, "InternalError")),
            other => panic!("expected a Status, got {other:?}"),
        }
    }
    assert_eq!(d.faults().pending_failures(), 0);
    assert!(api.get_opt("x").await.unwrap().is_none());
}

#[tokio::test]
async fn request_log_records_what_clients_sent() {
    let d = double().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client(&d));
    api.get_opt("x").await.unwrap();
    let log = d.requests().snapshot();
    let last = log.last().unwrap();
    assert_eq!(
        (last.method.as_str(), last.path.as_str()),
        ("GET", "/api/v1/namespaces/default/configmaps/x")
    );
}
