//! The body of a record-set PUT or PATCH (`properties`: `TTL`, `metadata`, `ARecords` or
//! `CNAMERecord`), checked as strictly as ARM checks it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::Value;

use super::super::store::{Patch, Records};

/// Parses a PUT/PATCH body into the parts it sets. A PUT must carry `TTL` and the records of
/// its type (the double is strict so that a client dropping them is caught, not defaulted).
pub(super) fn parse_body(body: &Value, rtype: &str, is_put: bool) -> Result<Patch, String> {
    let props = body
        .get("properties")
        .and_then(Value::as_object)
        .ok_or("The request body must have a 'properties' object.")?;
    if props
        .get("targetResource")
        .and_then(|t| t.get("id"))
        .is_some_and(|id| !id.is_null())
    {
        return Err(
            "Alias record sets (properties.targetResource) are not served by the lab double."
                .into(),
        );
    }
    let ttl = ttl(props.get("TTL"), is_put)?;
    let metadata = metadata(props.get("metadata"))?;
    let a = props.get("ARecords").filter(|v| !v.is_null());
    let cname = props.get("CNAMERecord").filter(|v| !v.is_null());
    let records = match rtype {
        "A" => {
            if cname.is_some() {
                return Err("An A record set cannot carry properties.CNAMERecord.".into());
            }
            let missing = "An A record set needs properties.ARecords.";
            present(a, is_put, missing)?.map(a_records).transpose()?
        }
        _ => {
            if a.is_some_and(|v| v.as_array().is_none_or(|l| !l.is_empty())) {
                return Err("A CNAME record set cannot carry properties.ARecords.".into());
            }
            let missing = "A CNAME record set needs properties.CNAMERecord.";
            present(cname, is_put, missing)?
                .map(cname_record)
                .transpose()?
        }
    };
    Ok(Patch {
        ttl,
        metadata,
        records,
    })
}

fn ttl(v: Option<&Value>, is_put: bool) -> Result<Option<u32>, String> {
    match v {
        None | Some(Value::Null) if is_put => {
            Err("The record set's TTL (properties.TTL) is required.".into())
        }
        None | Some(Value::Null) => Ok(None),
        Some(v) => Ok(Some(
            v.as_u64().filter(|t| *t <= 2_147_483_647).ok_or_else(|| {
                format!("properties.TTL must be an integer from 0 to 2147483647, got {v}.")
            })? as u32,
        )),
    }
}

fn metadata(v: Option<&Value>) -> Result<Option<BTreeMap<String, String>>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => {
            let mut out = BTreeMap::new();
            for (k, v) in m {
                let v = v
                    .as_str()
                    .ok_or_else(|| format!("properties.metadata.{k} must be a string."))?;
                out.insert(k.clone(), v.to_string());
            }
            Ok(Some(out))
        }
        Some(_) => Err("properties.metadata must be an object.".into()),
    }
}

/// The records of the body, if it has them: a PUT must (it replaces the whole record set).
fn present<'a>(
    records: Option<&'a Value>,
    is_put: bool,
    missing: &str,
) -> Result<Option<&'a Value>, String> {
    match records {
        None if is_put => Err(missing.into()),
        r => Ok(r),
    }
}

fn a_records(list: &Value) -> Result<Records, String> {
    let list = list
        .as_array()
        .ok_or("properties.ARecords must be an array.")?;
    if list.len() > 20 {
        return Err("A record set holds at most 20 records.".into());
    }
    let mut ips = Vec::new();
    for (i, r) in list.iter().enumerate() {
        let ip = r
            .get("ipv4Address")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<Ipv4Addr>().ok())
            .ok_or_else(|| {
                format!("properties.ARecords[{i}].ipv4Address must be an IPv4 address.")
            })?;
        ips.push(ip);
    }
    Ok(Records::A(ips))
}

fn cname_record(c: &Value) -> Result<Records, String> {
    let target = c
        .get("cname")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .ok_or("properties.CNAMERecord.cname must be a host name.")?;
    Ok(Records::Cname(target.trim_end_matches('.').to_string()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn put_bodies_must_keep_ttl_and_records() {
        let ok = json!({"properties": {"TTL": 60, "ARecords": [{"ipv4Address": "192.0.2.1"}]}});
        assert_eq!(parse_body(&ok, "A", true).unwrap().ttl, Some(60));
        let no_ttl = json!({"properties": {"ARecords": [{"ipv4Address": "192.0.2.1"}]}});
        assert!(parse_body(&no_ttl, "A", true).unwrap_err().contains("TTL"));
        let flip = json!({"properties": {"TTL": 60, "CNAMERecord": {"cname": "x.example"}}});
        assert!(parse_body(&flip, "A", true).is_err());
        let patch = json!({"properties": {"TTL": 30}});
        assert_eq!(parse_body(&patch, "CNAME", false).unwrap().records, None);
    }
}
