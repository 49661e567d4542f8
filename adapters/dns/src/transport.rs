//! Where drdctl's HTTP requests go. In production: `https://management.azure.com` and the
//! Entra authority, through azure_core's own HTTP client. In the lab the doubles listen on
//! plain http on loopback, but azure_core 1.x refuses to attach a bearer token to an `http://`
//! URL and azure_identity 1.x refuses an `http://` authority host. So requests keep `https://`
//! URLs on reserved, never-resolvable host names (`*.lab.invalid`, RFC 2606) and this
//! transport rewrites them to `http://127.0.0.1:PORT` at the last moment. It serves only those
//! names and only loopback addresses: a token can never leave the machine over plain http.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use async_trait::async_trait;
use azure_core::error::ErrorKind;
use azure_core::http::{AsyncRawResponse, HttpClient, Request, Url};

/// The ARM host name the lab transport maps to the ARM double.
pub(crate) const LAB_ARM_HOST: &str = "management.lab.invalid";
/// The authority host name the lab transport maps to the token double.
pub(crate) const LAB_LOGIN_HOST: &str = "login.lab.invalid";

/// A configured endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// A real https endpoint.
    Https(Url),
    /// A lab double on a loopback address (plain http).
    Loopback(SocketAddr),
}

impl Endpoint {
    /// Parses `https://host[:port]` or `http://<loopback ip>:port`.
    pub(crate) fn parse(s: &str) -> Result<Endpoint, String> {
        let url = Url::parse(s.trim()).map_err(|e| format!("{s:?} is not a URL ({e})"))?;
        if url.path() != "/" && !url.path().is_empty() {
            return Err(format!("{s:?} must be a base URL with no path"));
        }
        match url.scheme() {
            "https" if url.host_str().is_some() => Ok(Endpoint::Https(url)),
            "http" => {
                let host = url.host_str().unwrap_or_default();
                let ip: Option<IpAddr> = if host == "localhost" {
                    Some(IpAddr::from([127, 0, 0, 1]))
                } else {
                    host.trim_matches(|c| c == '[' || c == ']').parse().ok()
                };
                match (ip, url.port()) {
                    (Some(ip), Some(port)) if ip.is_loopback() => {
                        Ok(Endpoint::Loopback(SocketAddr::new(ip, port)))
                    }
                    (Some(ip), None) if ip.is_loopback() => Err(format!(
                        "{s:?} needs an explicit port (the lab double's, like http://127.0.0.1:8443)"
                    )),
                    _ => Err(format!(
                        "{s:?}: plain http is accepted only for a loopback address (the lab \
                         doubles); a real endpoint must use https"
                    )),
                }
            }
            _ => Err(format!("{s:?} must be an https:// URL")),
        }
    }
}

/// Sends `https://<lab host>/…` to `http://<loopback>:PORT/…`; refuses every other host.
#[derive(Debug)]
pub(crate) struct LoopbackTransport {
    inner: Arc<dyn HttpClient>,
    routes: Vec<(String, SocketAddr)>,
}

impl LoopbackTransport {
    pub(crate) fn new(inner: Arc<dyn HttpClient>, routes: Vec<(String, SocketAddr)>) -> Self {
        LoopbackTransport { inner, routes }
    }
}

#[async_trait]
impl HttpClient for LoopbackTransport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let host = request.url().host_str().unwrap_or_default().to_string();
        let Some((_, addr)) = self.routes.iter().find(|(h, _)| *h == host) else {
            return Err(azure_core::Error::with_message(
                ErrorKind::Other,
                format!(
                    "the lab transport sends only to {}; refusing a request to {host}",
                    self.routes
                        .iter()
                        .map(|(h, _)| h.as_str())
                        .collect::<Vec<_>>()
                        .join(" and ")
                ),
            ));
        };
        let mut req = request.clone();
        let url = req.url_mut();
        let rewrite = url
            .set_scheme("http")
            .and_then(|_| url.set_ip_host(addr.ip()))
            .and_then(|_| url.set_port(Some(addr.port())));
        if rewrite.is_err() {
            return Err(azure_core::Error::with_message(
                ErrorKind::Other,
                format!("the lab transport could not rewrite the URL for {host}"),
            ));
        }
        self.inner.execute_request(&req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert!(matches!(
            Endpoint::parse("https://management.azure.com"),
            Ok(Endpoint::Https(_))
        ));
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:8443"),
            Ok(Endpoint::Loopback("127.0.0.1:8443".parse().unwrap()))
        );
        assert_eq!(
            Endpoint::parse("http://[::1]:8443"),
            Ok(Endpoint::Loopback("[::1]:8443".parse().unwrap()))
        );
        assert!(Endpoint::parse("http://10.0.0.1:80")
            .unwrap_err()
            .contains("loopback"));
        assert!(Endpoint::parse("http://127.0.0.1")
            .unwrap_err()
            .contains("port"));
        assert!(Endpoint::parse("https://x.example/path").is_err());
        assert!(Endpoint::parse("ftp://x").is_err());
    }
}
