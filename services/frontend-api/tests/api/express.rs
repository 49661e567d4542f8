//! The express lane (`common::conn`): frontend-api's pass-through served straight from the
//! bytes the connection read, without hyper's server and poem, and handed to them for anything
//! else. The answers must be the ones the middleware gives, and no byte of a request may be
//! lost or reordered when a connection leaves the lane.

use std::time::Duration;

use common::Running;
use test_support::raw::{closed_within, read_answer, read_answers, RawAnswer};
use test_support::TestDb;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::support::config;
use super::{recording_ingest, Received};

/// The bodies the recording stand-in for data-ingest received, in order.
fn bodies(seen: &Received) -> Vec<String> {
    seen.lock().unwrap().iter().map(|r| r.2.clone()).collect()
}

async fn front(data_ingest: &str, extra: &[(&str, &str)]) -> (TestDb, Running) {
    let db = TestDb::new();
    let mut env = vec![("DATA_INGEST_URL", data_ingest)];
    env.extend_from_slice(extra);
    let fe = frontend_api::start(config(8080, 1024, &db.url, &env))
        .await
        .unwrap();
    (db, fe)
}

/// `POST /api/v1/data/ingest` of a JSON `body` as raw bytes, with `extra` header lines.
fn ingest_request(body: &str, extra: &str) -> Vec<u8> {
    typed_request("application/json", body, extra)
}

fn typed_request(content_type: &str, body: &str, extra: &str) -> Vec<u8> {
    let mut r = format!(
        "POST /api/v1/data/ingest HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\n\
         {extra}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body.as_bytes());
    r
}

/// The head without its `date` line (the only one that may differ between two answers).
fn head_without_date(a: &RawAnswer) -> Vec<&str> {
    a.head.lines().filter(|l| !l.starts_with("date:")).collect()
}

#[tokio::test]
async fn the_lane_answers_as_the_middleware_does() {
    let (di, seen) = recording_ingest().await;
    let (_db, fe) = front(&di, &[]).await;
    let body = r#"{"type":"lane","data":{"n":12345678901234567890}}"#;

    // The lane: the whole request arrives in one write.
    let mut lane = TcpStream::connect(fe.addr).await.unwrap();
    lane.write_all(&ingest_request(body, "X-Request-Id: same-id\r\n"))
        .await
        .unwrap();
    let from_lane = read_answer(&mut lane).await.unwrap();
    assert_eq!(fe.state.express_served(), 1, "{from_lane:?}");

    // hyper and the middleware: a `connection` header keeps a request out of the lane.
    let mut hyper = TcpStream::connect(fe.addr).await.unwrap();
    hyper
        .write_all(&ingest_request(
            body,
            "X-Request-Id: same-id\r\nConnection: keep-alive\r\n",
        ))
        .await
        .unwrap();
    let from_hyper = read_answer(&mut hyper).await.unwrap();
    assert_eq!(fe.state.express_served(), 1, "{from_hyper:?}");

    assert_eq!(from_lane.status, 201, "{from_lane:?}");
    assert_eq!(
        head_without_date(&from_lane),
        head_without_date(&from_hyper)
    );
    assert_eq!(from_lane.body, from_hyper.body);
    assert!(from_lane.body.contains(r#""id":9"#), "{from_lane:?}");
    let date = from_lane.header("date").unwrap_or_default();
    assert!(
        date.ends_with(" gmt") && date.len() == 29,
        "an IMF-fixdate like hyper's: {date:?}"
    );
    assert_eq!(bodies(&seen), vec![body.to_string(); 2]);
}

#[tokio::test]
async fn pipelined_requests_and_a_handover_keep_every_byte_in_order() {
    let (di, seen) = recording_ingest().await;
    let (_db, fe) = front(&di, &[]).await;
    let mut conn = TcpStream::connect(fe.addr).await.unwrap();
    // Four requests in one write: two for the lane, then one it leaves to hyper (and with it
    // the rest of the connection, the bytes already read first).
    let mut bytes = ingest_request(r#"{"type":"one"}"#, "");
    bytes.extend(ingest_request(r#"{"type":"two"}"#, ""));
    bytes.extend_from_slice(b"GET /health/live HTTP/1.1\r\nHost: test\r\n\r\n");
    bytes.extend(ingest_request(r#"{"type":"three"}"#, ""));
    conn.write_all(&bytes).await.unwrap();
    let answers = read_answers(&mut conn, 4).await.unwrap();
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [201, 201, 200, 201], "{answers:?}");
    assert_eq!(
        bodies(&seen),
        [
            r#"{"type":"one"}"#,
            r#"{"type":"two"}"#,
            r#"{"type":"three"}"#
        ]
    );
    assert_eq!(fe.state.express_served(), 2);

    // A head whose body is not there yet leaves the lane too, and loses nothing.
    let mut split = TcpStream::connect(fe.addr).await.unwrap();
    let request = ingest_request(r#"{"type":"four"}"#, "");
    let (head, body) = request.split_at(request.len() - 5);
    split.write_all(head).await.unwrap();
    split.flush().await.unwrap();
    split.write_all(body).await.unwrap();
    assert_eq!(read_answer(&mut split).await.unwrap().status, 201);
    assert_eq!(bodies(&seen).last().unwrap(), r#"{"type":"four"}"#);
}

#[tokio::test]
async fn malformed_heads_and_vanished_clients_leave_the_service_serving() {
    let (di, seen) = recording_ingest().await;
    let (_db, fe) = front(&di, &[]).await;
    // Not HTTP: the lane hands the bytes to hyper, whose rejection gets the JSON shape.
    let mut junk = TcpStream::connect(fe.addr).await.unwrap();
    junk.write_all(b"POST /api/v1/data/ingest HTTP/1.1\r\nbad header\r\n\r\n")
        .await
        .unwrap();
    let rejected = read_answer(&mut junk).await.unwrap();
    assert_eq!(rejected.status, 400, "{rejected:?}");
    assert!(
        rejected.body.contains(r#""code":"invalid_request""#),
        "{rejected:?}"
    );
    assert!(rejected.header("x-request-id").is_some(), "{rejected:?}");
    // A client gone before its answer: the request is still passed on, and the next client
    // is served.
    let mut gone = TcpStream::connect(fe.addr).await.unwrap();
    gone.write_all(&ingest_request(r#"{"type":"gone"}"#, ""))
        .await
        .unwrap();
    drop(gone);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !bodies(&seen).contains(&r#"{"type":"gone"}"#.to_string()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            bodies(&seen)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut next = TcpStream::connect(fe.addr).await.unwrap();
    next.write_all(&ingest_request(r#"{"type":"next"}"#, ""))
        .await
        .unwrap();
    assert_eq!(read_answer(&mut next).await.unwrap().status, 201);
    assert_eq!(fe.state.express_served(), 2);
}

#[tokio::test]
async fn what_the_middleware_refuses_is_refused_by_it() {
    let (di, seen) = recording_ingest().await;
    let token = "express-lane-token-0123456789";
    let (_db, fe) = front(&di, &[("AUTH_TOKENS", token)]).await;
    let mut conn = TcpStream::connect(fe.addr).await.unwrap();
    // No token: 401 from the middleware; the same connection then carries a good request.
    conn.write_all(&ingest_request(r#"{"type":"x"}"#, ""))
        .await
        .unwrap();
    let refused = read_answer(&mut conn).await.unwrap();
    assert_eq!(refused.status, 401, "{refused:?}");
    assert!(
        refused.body.contains(r#""code":"unauthorized""#),
        "{refused:?}"
    );
    assert_eq!(refused.header("www-authenticate"), Some("bearer"));
    let auth = format!("Authorization: Bearer {token}\r\n");
    conn.write_all(&ingest_request(r#"{"type":"y"}"#, &auth))
        .await
        .unwrap();
    assert_eq!(read_answer(&mut conn).await.unwrap().status, 201);
    // Over the body limit (1,024 bytes here): 413 and nothing sent on.
    let mut big = TcpStream::connect(fe.addr).await.unwrap();
    let data = "a".repeat(2000);
    big.write_all(&ingest_request(&format!(r#"{{"d":"{data}"}}"#), &auth))
        .await
        .unwrap();
    let too_large = read_answer(&mut big).await.unwrap();
    assert_eq!(too_large.status, 413, "{too_large:?}");
    // Not JSON: the operation's 415.
    let mut text = TcpStream::connect(fe.addr).await.unwrap();
    text.write_all(&typed_request("text/plain", "plain", &auth))
        .await
        .unwrap();
    assert_eq!(read_answer(&mut text).await.unwrap().status, 415);
    assert_eq!(bodies(&seen), [r#"{"type":"y"}"#]);
    assert_eq!(fe.state.express_served(), 0);
    // With the token on a fresh connection: the lane.
    let mut good = TcpStream::connect(fe.addr).await.unwrap();
    good.write_all(&ingest_request(r#"{"type":"z"}"#, &auth))
        .await
        .unwrap();
    assert_eq!(read_answer(&mut good).await.unwrap().status, 201);
    assert_eq!(fe.state.express_served(), 1);
}

#[tokio::test]
async fn the_lane_keeps_the_connection_rules() {
    let (di, _seen) = recording_ingest().await;
    let (_db, fe) = front(
        &di,
        &[
            ("HEADER_READ_TIMEOUT_MS", "300"),
            ("IDLE_TIMEOUT_MS", "2000"),
        ],
    )
    .await;
    // Half a head: closed by the head's timeout.
    let mut half = TcpStream::connect(fe.addr).await.unwrap();
    let request = ingest_request(r#"{"type":"x"}"#, "");
    half.write_all(&request[..30]).await.unwrap();
    assert!(closed_within(&mut half, Duration::from_millis(1500)).await);
    // Idle after a request: kept for the idle timeout, then closed.
    let mut idle = TcpStream::connect(fe.addr).await.unwrap();
    idle.write_all(&request).await.unwrap();
    assert_eq!(read_answer(&mut idle).await.unwrap().status, 201);
    assert!(!closed_within(&mut idle, Duration::from_millis(800)).await);
    idle.write_all(&request).await.unwrap();
    assert_eq!(read_answer(&mut idle).await.unwrap().status, 201);
    assert!(closed_within(&mut idle, Duration::from_secs(5)).await);
    assert_eq!(fe.state.express_served(), 2);
    // At shutdown an idle connection is closed, and the lane answers nothing after.
    let mut open = TcpStream::connect(fe.addr).await.unwrap();
    open.write_all(&request).await.unwrap();
    assert_eq!(read_answer(&mut open).await.unwrap().status, 201);
    fe.shutdown().await.unwrap();
    assert!(closed_within(&mut open, Duration::from_secs(5)).await);
}
