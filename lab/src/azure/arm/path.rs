//! The ARM path of a DNS zone or record set:
//! `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Network/dnsZones/{zone}
//! [/{type}/{name}]` (segments already percent-decoded; literals compared ignoring case).

use super::super::store::ZoneId;
use super::ArmError;

/// What an ARM path names: a zone, and in it maybe a record set.
pub(super) struct ArmPath {
    pub zone: ZoneId,
    /// The record type as sent and the record set's name.
    pub record: Option<(String, String)>,
}

impl ArmPath {
    pub(super) fn parse(segs: &[String]) -> Result<Self, ArmError> {
        let literal =
            |i: usize, want: &str| segs.get(i).is_some_and(|s| s.eq_ignore_ascii_case(want));
        let shape_ok = (segs.len() == 8 || segs.len() == 10)
            && literal(2, "resourceGroups")
            && literal(4, "providers")
            && literal(5, "Microsoft.Network")
            && literal(6, "dnsZones");
        if !shape_ok {
            return Err(ArmError::new(
                400,
                "InvalidResourceType",
                format!(
                    "The resource type could not be found for path '/{}' (the lab double serves \
                     Microsoft.Network/dnsZones and their record sets).",
                    segs.join("/")
                ),
            ));
        }
        Ok(ArmPath {
            zone: ZoneId::new(&segs[1], &segs[3], &segs[7]),
            record: (segs.len() == 10).then(|| (segs[8].clone(), segs[9].clone())),
        })
    }
}
