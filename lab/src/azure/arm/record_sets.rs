//! ARM's A and CNAME record sets: `GET`, `PUT` (create or replace), `PATCH` (merge) and
//! `DELETE`, under `If-Match` / `If-None-Match`, with the faults tests inject around a write
//! (a change between the client's read and its write, a lost response).

use poem::http::{Method, StatusCode};
use poem::Response;
use serde_json::Value;

use super::super::faults::RecordedRequest;
use super::super::store::{Preconditions, RecordSet, Records, WriteError, Zone, ZoneId};
use super::body::parse_body;
use super::reply::{etagged, json_response};
use super::{ArmCall, ArmError};

/// One record set a request names.
struct Target<'a> {
    zone: &'a Zone,
    /// The zone as the path names it (ARM echoes the path's spelling).
    zone_id: &'a ZoneId,
    /// Upper-case.
    rtype: String,
    name: &'a str,
}

impl Target<'_> {
    fn not_found(&self) -> ArmError {
        let id = self.zone_id;
        ArmError::new(
            404,
            "NotFound",
            format!(
                "The resource record '{}' does not exist in resource group '{}' of \
                 subscription '{}'.",
                self.name, id.resource_group, id.subscription
            ),
        )
    }
}

/// Serves the record set `rtype`/`name` of `zone`, named `zone_id` by the path (`rtype` as the
/// client sent it).
pub(super) fn serve(
    call: &ArmCall<'_>,
    rec: &mut RecordedRequest,
    (zone, zone_id): (&Zone, &ZoneId),
    (rtype, name): (&str, &str),
) -> Result<Response, ArmError> {
    let target = Target {
        zone,
        zone_id,
        rtype: rtype.to_ascii_uppercase(),
        name,
    };
    if target.rtype != "A" && target.rtype != "CNAME" {
        return Err(ArmError::new(
            400,
            "BadRequest",
            format!(
                "Record type '{rtype}' is not served by the lab double (it serves A and CNAME)."
            ),
        ));
    }
    let pre = Preconditions {
        if_match: rec.if_match.clone(),
        if_none_match: rec.if_none_match.clone(),
    };
    match *call.method {
        Method::GET => get(call, &target),
        Method::PUT | Method::PATCH => write(call, rec, &target, &pre),
        Method::DELETE => delete(call, &target, &pre),
        _ => Err(ArmError::new(
            405,
            "MethodNotAllowed",
            format!(
                "The method '{}' is not allowed on record sets.",
                call.method
            ),
        )),
    }
}

fn get(call: &ArmCall<'_>, t: &Target<'_>) -> Result<Response, ArmError> {
    let rs = t
        .zone
        .record_set(&t.rtype, t.name)
        .ok_or_else(|| t.not_found())?;
    Ok(etagged(200, rs, t.zone_id, call.request_id))
}

/// `PUT` replaces the record set (201 when it is new), `PATCH` merges into it.
fn write(
    call: &ArmCall<'_>,
    rec: &mut RecordedRequest,
    t: &Target<'_>,
    pre: &Preconditions,
) -> Result<Response, ArmError> {
    let parsed: Value = serde_json::from_slice(call.body).map_err(|e| {
        ArmError::new(
            400,
            "InvalidRequestContent",
            format!("The request content was invalid and could not be deserialized: {e}."),
        )
    })?;
    rec.body = Some(parsed.clone());
    let is_put = *call.method == Method::PUT;
    let patch = parse_body(&parsed, &t.rtype, is_put)
        .map_err(|msg| ArmError::new(400, "BadRequest", msg))?;
    if let Some(hook) = call.ctx.faults.take_before_write() {
        hook();
    }
    let store = &call.ctx.store;
    let result = if is_put {
        let rs = RecordSet {
            name: t.name.to_string(),
            ttl: patch.ttl.unwrap_or(3600),
            metadata: patch.metadata.unwrap_or_default(),
            records: patch.records.unwrap_or(Records::A(Vec::new())),
            etag: String::new(),
        };
        store
            .put(t.zone_id, rs, pre)
            .map(|(rs, created)| (rs, if created { 201 } else { 200 }))
    } else {
        store
            .patch(t.zone_id, &t.rtype, t.name, patch, pre)
            .map(|rs| (rs, 200))
    };
    match result {
        Ok((rs, status)) => match call.ctx.faults.take_lost_write() {
            Some(lost) => Err(ArmError::for_status(lost)),
            None => Ok(etagged(status, &rs, t.zone_id, call.request_id)),
        },
        Err(WriteError::RecordNotFound | WriteError::ZoneNotFound) => Err(t.not_found()),
        Err(WriteError::PreconditionFailed(m)) => Err(ArmError::new(412, "PreconditionFailed", m)),
        Err(WriteError::Conflict(m)) => Err(ArmError::new(409, "Conflict", m)),
    }
}

/// `DELETE`: 200 when the record set was there, 204 when it was not (as ARM answers).
fn delete(call: &ArmCall<'_>, t: &Target<'_>, pre: &Preconditions) -> Result<Response, ArmError> {
    let Some(rs) = t.zone.record_set(&t.rtype, t.name) else {
        return Ok(Response::builder()
            .status(StatusCode::NO_CONTENT)
            .header("x-ms-request-id", call.request_id)
            .finish());
    };
    if let Some(m) = &pre.if_match {
        if m.trim_matches('"') != rs.etag && m != "*" {
            return Err(ArmError::new(
                412,
                "PreconditionFailed",
                format!("The condition '{m}' in the If-Match header was not satisfied."),
            ));
        }
    }
    call.ctx
        .store
        .delete_record_set(t.zone_id, &t.rtype, t.name);
    Ok(json_response(200, &Value::Null, call.request_id))
}
