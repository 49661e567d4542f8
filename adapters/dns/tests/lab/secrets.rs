//! No token and no secret in any output: every report's Display, Debug and JSON, every error's
//! Display and Debug, the adapter's Debug, and every log line (TRACE level, the SDK's included)
//! of a session that authenticates, switches, fails in every way, and gets a token refused.

use std::io::Write;
use std::sync::{Arc, Mutex};

use drd_dns::{AzureDns, DnsOps, SwitchOptions};
use lab::azure::Records;

use crate::support::*;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn all_forms<T: std::fmt::Display + std::fmt::Debug + serde::Serialize>(
    out: &mut Vec<String>,
    v: &T,
) {
    out.push(v.to_string());
    out.push(format!("{v:?}"));
    out.push(format!("{v:#?}"));
    out.push(serde_json::to_string(v).unwrap());
}

fn error_forms(out: &mut Vec<String>, e: &drd_dns::DnsError) {
    out.push(e.to_string());
    out.push(format!("{e:?}"));
    out.push(format!("{e:#?}"));
}

#[tokio::test]
async fn no_token_or_secret_in_any_output() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let lab = Lab::start().await;
    let mut out: Vec<String> = Vec::new();
    let adapter = lab.adapter();
    out.push(format!("{adapter:?}"));
    let ops = DnsOps::new(Arc::new(adapter));
    out.push(format!("{ops:?}"));
    out.push(format!("{:?}", lab.cfg));

    all_forms(&mut out, &ops.show().await.unwrap());
    all_forms(
        &mut out,
        &ops.switch(
            "dr",
            &SwitchOptions {
                plan: true,
                ..Default::default()
            },
        )
        .await
        .unwrap(),
    );
    all_forms(&mut out, &ops.prepare_ttl(60, false).await.unwrap());
    all_forms(
        &mut out,
        &ops.switch("dr", &SwitchOptions::default()).await.unwrap(),
    );
    all_forms(&mut out, &ops.restore_ttl(None, false).await.unwrap());

    // A concurrent change refused.
    let (store, zone) = (lab.azure.store().clone(), lab.zone.clone());
    lab.azure.faults().before_next_write(move || {
        store.modify(&zone, "A", "app", |rs| {
            rs.records = Records::A(vec!["192.0.2.1".parse().unwrap()])
        });
    });
    error_forms(
        &mut out,
        &ops.switch("primary", &SwitchOptions::default())
            .await
            .unwrap_err(),
    );

    // The token revoked: ARM answers 401 (the credential's cache keeps the token until it
    // expires, so a new adapter is needed to get another).
    lab.azure.tokens().revoke_all();
    error_forms(&mut out, &ops.show().await.unwrap_err());
    let ops = lab.ops();
    all_forms(&mut out, &ops.show().await.unwrap());

    // Throttled past the deadline, a missing record, a frozen name server.
    lab.azure.faults().throttle_next(1, 600);
    error_forms(&mut out, &ops.show().await.unwrap_err());
    error_forms(
        &mut out,
        &lab.ops_with(|c| c.record = "nope".into())
            .show()
            .await
            .unwrap_err(),
    );
    lab.dns.freeze();
    lab.azure.store().modify(&lab.zone, "A", "app", |rs| {
        rs.records = Records::A(vec![DR.parse().unwrap()])
    });
    let frozen = lab.ops_with(|c| c.authoritative_deadline_secs = 1);
    error_forms(
        &mut out,
        &frozen
            .switch("dr", &SwitchOptions::default())
            .await
            .unwrap_err(),
    );

    // A bad secret.
    let bad = env_of(&[
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_CLIENT_ID", CLIENT_ID),
        ("AZURE_CLIENT_SECRET", "Wrong~Secret.Also-Private_1"),
    ]);
    let bad_dns = AzureDns::with_env(&lab.cfg, &bad).unwrap();
    out.push(format!("{bad_dns:?}"));
    error_forms(
        &mut out,
        &DnsOps::new(Arc::new(bad_dns)).show().await.unwrap_err(),
    );

    drop(_guard);
    out.push(String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned());

    let tokens = lab.azure.tokens().issued_tokens();
    assert!(!tokens.is_empty(), "the session did authenticate");
    assert!(out.last().unwrap().contains("ARM"), "logs were captured");
    let forbidden: Vec<String> = tokens
        .into_iter()
        .chain([
            SECRET.to_string(),
            "Wrong~Secret.Also-Private_1".to_string(),
        ])
        .collect();
    for text in &out {
        for f in &forbidden {
            assert!(
                !text.contains(f.as_str()),
                "a secret or token leaked into:\n{text}"
            );
        }
        assert!(!text.contains("lab-token-"), "a token leaked into:\n{text}");
    }
}
