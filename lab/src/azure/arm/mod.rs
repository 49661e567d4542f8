//! The ARM DNS API of the Azure double (api-version 2018-05-01): zones and their A and CNAME
//! record sets with ARM's JSON, ETags, status codes and `CloudError` bodies. The router checks
//! in ARM's order: latency, authentication, injected faults (throttling happens after
//! authentication), api-version, the path ([`path`]), the zone ([`zones`]), then the record
//! set ([`record_sets`]).

mod body;
mod path;
mod record_sets;
mod reply;
mod zones;

use poem::http::Method;
use poem::Response;

use super::ctx::Ctx;
use super::faults::RecordedRequest;
use path::ArmPath;
pub(crate) use reply::ArmError;

/// The one api-version the double (and drdctl) speaks: the current GA version of Azure DNS.
pub const API_VERSION: &str = "2018-05-01";

/// One ARM request, as the endpoint hands it on.
pub(crate) struct ArmCall<'a> {
    pub ctx: &'a Ctx,
    pub method: &'a Method,
    /// The path's segments, percent-decoded.
    pub segs: &'a [String],
    pub query: &'a str,
    pub body: &'a [u8],
    /// The bearer token of the `Authorization` header, if any.
    pub bearer: Option<String>,
    pub request_id: &'a str,
}

/// Serves one ARM request; what is worth logging goes to `rec`.
pub(crate) async fn serve(call: &ArmCall<'_>, rec: &mut RecordedRequest) -> Response {
    let latency = call.ctx.faults.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    route(call, rec).unwrap_or_else(|e| e.into_response(call.request_id))
}

fn route(call: &ArmCall<'_>, rec: &mut RecordedRequest) -> Result<Response, ArmError> {
    authenticate(call, rec)?;
    if let Some(fault) = call.ctx.faults.take_next() {
        return Err(ArmError::for_fault(fault));
    }
    check_api_version(call.query)?;
    let path = ArmPath::parse(call.segs)?;
    let zone = zones::find(call, &path.zone)?;
    match &path.record {
        None => zones::get(call, &zone),
        Some((rtype, name)) => record_sets::serve(call, rec, (&zone, &path.zone), (rtype, name)),
    }
}

fn authenticate(call: &ArmCall<'_>, rec: &mut RecordedRequest) -> Result<(), ArmError> {
    match &call.bearer {
        None => Err(ArmError::new(
            401,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
        )),
        Some(t) if !call.ctx.tokens.is_valid(t) => Err(ArmError::new(
            401,
            "InvalidAuthenticationToken",
            "The access token is invalid.",
        )),
        Some(_) => {
            rec.authorized = true;
            Ok(())
        }
    }
}

fn check_api_version(query: &str) -> Result<(), ArmError> {
    let api_version = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "api-version")
        .map(|(_, v)| v.into_owned());
    match api_version.as_deref() {
        None => Err(ArmError::new(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )),
        Some(API_VERSION) => Ok(()),
        Some(v) => Err(ArmError::new(
            400,
            "NoRegisteredProviderFound",
            format!(
                "No registered resource provider found for location 'global' and API version \
                 '{v}' for type 'dnszones'. The supported api-versions are '{API_VERSION}' (lab \
                 double)."
            ),
        )),
    }
}
