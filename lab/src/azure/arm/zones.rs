//! ARM's DNS zones: finding the zone a path names (or the error ARM gives when it, or its
//! resource group, is missing), and reading it.

use poem::http::Method;
use poem::Response;

use super::super::store::{Zone, ZoneId};
use super::reply::json_response;
use super::{ArmCall, ArmError};

/// The zone, or ARM's 404 for a missing zone or resource group.
pub(super) fn find(call: &ArmCall<'_>, id: &ZoneId) -> Result<Zone, ArmError> {
    if let Some(zone) = call.ctx.store.zone(id) {
        return Ok(zone);
    }
    let store = &call.ctx.store;
    if store.resource_group_exists(&id.subscription, &id.resource_group) {
        Err(ArmError::new(
            404,
            "ResourceNotFound",
            format!(
                "The Resource 'Microsoft.Network/dnszones/{}' under resource group '{}' was not \
                 found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
                id.zone, id.resource_group
            ),
        ))
    } else {
        Err(ArmError::new(
            404,
            "ResourceGroupNotFound",
            format!("Resource group '{}' could not be found.", id.resource_group),
        ))
    }
}

/// `GET` of a zone (the only verb the double serves on zones).
pub(super) fn get(call: &ArmCall<'_>, zone: &Zone) -> Result<Response, ArmError> {
    if *call.method != Method::GET {
        return Err(ArmError::new(
            405,
            "MethodNotAllowed",
            "The lab double only reads zones.",
        ));
    }
    Ok(json_response(200, &zone.to_arm_json(), call.request_id))
}
