//! The Azure Container Registry token flow, against a small stand-in for ACR's endpoints (the
//! Debian registry has no token service): `/v2/` answers 401 with a Bearer challenge, the token
//! endpoint takes an ACR token as the password of the null-GUID user (HTTP Basic) and returns
//! an access token, and registry calls must carry that access token. It checks that
//! `DRDCTL_REGISTRY_TOKEN` takes that path, and that a refused token says so.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use crate::common::*;
use base64::Engine;
use drd_registry::{build_push, Binaries, BuildPushOptions, Progress, RegistryError, Service};

const ACR_TOKEN: &str = "acr-refresh-token";
const ACCESS_TOKEN: &str = "acr-access-token";

/// One request as the stand-in saw it: method, path with query, Authorization header.
type Seen = Arc<Mutex<Vec<(String, String, Option<String>)>>>;

fn answer(mut s: TcpStream, host: &str, seen: &Seen) {
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut first = String::new();
    if r.read_line(&mut first).is_err() {
        return;
    }
    let mut auth = None;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                auth = Some(v.trim().to_string());
            }
        }
    }
    let mut parts = first.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    seen.lock()
        .unwrap()
        .push((method.clone(), path.clone(), auth.clone()));
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{ACR_TOKEN}",
            drd_registry::auth::ACR_TOKEN_USER
        ))
    );
    let bearer = format!("Bearer {ACCESS_TOKEN}");
    let (status, headers, body) = if path.starts_with("/oauth2/token") {
        if auth.as_deref() == Some(basic.as_str()) {
            (
                "200 OK",
                String::new(),
                format!(r#"{{"access_token":"{ACCESS_TOKEN}"}}"#),
            )
        } else {
            (
                "401 Unauthorized",
                String::new(),
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"invalid token"}]}"#.to_string(),
            )
        }
    } else if auth.as_deref() == Some(bearer.as_str()) {
        // Authorised: the blob the access check asks about is absent.
        ("404 Not Found", String::new(), String::new())
    } else {
        (
            "401 Unauthorized",
            format!(
                "WWW-Authenticate: Bearer realm=\"http://{host}/oauth2/token\",service=\"{host}\"\r\n"
            ),
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#.to_string(),
        )
    };
    let body = if method == "HEAD" {
        String::new()
    } else {
        body
    };
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Starts the stand-in on a free loopback port; it serves until the test process ends.
fn fake_acr() -> (String, Seen) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let host = l.local_addr().unwrap().to_string();
    let seen: Seen = Default::default();
    let (h, s) = (host.clone(), seen.clone());
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            answer(c, &h, &s);
        }
    });
    (host, seen)
}

fn opts(host: &str, token: &str) -> (BuildPushOptions, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut o = BuildPushOptions::new(repo_root(), &format!("{host}/drd"), "1.0.0");
    o.base_image = drd_registry::BaseImage::Scratch;
    o.images_file = Some(dir.path().join("images.json"));
    o.credentials = sources(&[("DRDCTL_REGISTRY_TOKEN", token)]);
    // Never read: the stand-in has no blobs, so the run stops after the access check.
    o.binaries = Binaries::Prebuilt(
        Service::ALL
            .into_iter()
            .map(|s| (s, "/nonexistent/never-read".into()))
            .collect(),
    );
    (o, dir)
}

#[tokio::test]
async fn an_acr_token_is_exchanged_for_an_access_token() {
    let (host, seen) = fake_acr();
    let (o, _dir) = opts(&host, ACR_TOKEN);
    // The access check passes; the run then fails on the missing binary, past the registry.
    let e = build_push(&o, &|_: &Progress| {}).await.unwrap_err();
    assert!(e.registry_error().is_none(), "{e}");
    assert!(e.to_string().contains("/nonexistent/never-read"), "{e}");
    let seen = seen.lock().unwrap().clone();
    let token_calls: Vec<_> = seen
        .iter()
        .filter(|(_, p, _)| p.starts_with("/oauth2/token"))
        .collect();
    assert!(!token_calls.is_empty(), "{seen:?}");
    assert!(
        token_calls[0]
            .1
            .contains("scope=repository%3Adrd%2Ffrontend-api%3Apull%2Cpush"),
        "{token_calls:?}"
    );
    let head = seen
        .iter()
        .find(|(m, p, _)| m == "HEAD" && p.contains("/blobs/"))
        .expect("a blob HEAD");
    assert_eq!(
        head.2.as_deref(),
        Some(format!("Bearer {ACCESS_TOKEN}").as_str())
    );
}

#[tokio::test]
async fn a_refused_acr_token_says_so() {
    let (host, _seen) = fake_acr();
    let (o, _dir) = opts(&host, "expired-token");
    let e = build_push(&o, &|_: &Progress| {}).await.unwrap_err();
    let msg = e.to_string();
    eprintln!("refused token: {msg}");
    assert!(
        matches!(e.registry_error(), Some(RegistryError::Unauthorized { .. })),
        "{e:?}"
    );
    assert!(
        msg.contains("refused the credentials from DRDCTL_REGISTRY_TOKEN"),
        "{msg}"
    );
    assert!(
        msg.contains("the token service said: invalid token"),
        "{msg}"
    );
    assert!(!msg.contains("expired-token"), "{msg}");
}
