//! A started Azure double with a service principal, a zone and an A record, and a token.

use std::net::Ipv4Addr;

use lab::azure::{RecordSet, ZoneId};
use lab::AzureDouble;
use serde_json::Value;

pub const TENANT: &str = "tenant-1";
pub const CLIENT: &str = "client-1";
pub const SECRET: &str = "s3cret-value";

pub struct Arm {
    pub double: AzureDouble,
    pub zone: ZoneId,
    pub http: reqwest::Client,
    pub token: String,
}

impl Arm {
    pub async fn start() -> Arm {
        let double = AzureDouble::start().await.unwrap();
        double.register_client_secret(TENANT, CLIENT, SECRET);
        let zone = ZoneId::new("sub-1", "rg-dns", "example.com");
        double.create_zone(&zone, &["ns1-01.azure-dns.com", "ns2-01.azure-dns.net"]);
        double.seed(
            &zone,
            RecordSet::a("app", 300, &[Ipv4Addr::new(203, 0, 113, 10)])
                .with_metadata("owner", "ops"),
        );
        let http = reqwest::Client::new();
        let (status, body) = token(&http, &double.url(), TENANT, CLIENT, SECRET).await;
        assert_eq!(status, 200, "{body}");
        let token = body["access_token"].as_str().unwrap().to_string();
        Arm {
            double,
            zone,
            http,
            token,
        }
    }

    pub fn url(&self, rest: &str) -> String {
        format!(
            "{}/subscriptions/sub-1/resourceGroups/rg-dns/providers/Microsoft.Network/dnsZones/example.com{rest}",
            self.double.url()
        )
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut req = self.http.request(method, url).bearer_auth(&self.token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }
}

pub async fn token(
    http: &reqwest::Client,
    base: &str,
    tenant: &str,
    client: &str,
    secret: &str,
) -> (u16, Value) {
    let resp = http
        .post(format!("{base}/{tenant}/oauth2/v2.0/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "client_id={client}&client_secret={secret}&grant_type=client_credentials&scope=https%3A%2F%2Fmanagement.azure.com%2F.default"
        ))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}
