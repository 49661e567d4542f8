//! The record set as drdctl reasons about it, and its ARM JSON (api-version 2018-05-01): the
//! `TTL` / `ARecords` / `CNAMERecord` / `metadata` properties drdctl changes, plus every other
//! property kept verbatim so that a GET → modify → PUT round trip never drops what another tool
//! put there (a PUT is a full replacement).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::types::{normalise, RecordType};

/// Properties ARM computes, never sent back on a PUT.
const READ_ONLY: &[&str] = &["fqdn", "provisioningState", "targetResource"];
/// Properties drdctl models itself.
const MODELLED: &[&str] = &["metadata", "TTL", "ARecords", "CNAMERecord"];

/// One record set, as read from ARM.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordSet {
    /// Name relative to the zone (`app`, `@`).
    pub name: String,
    /// Fully qualified name, without the trailing dot.
    pub fqdn: String,
    /// `A` or `CNAME`.
    pub record_type: RecordType,
    /// Time to live, seconds.
    pub ttl: u32,
    /// The value: IPv4 addresses (A, sorted) or the one canonical name (CNAME, lower case,
    /// no trailing dot).
    pub values: Vec<String>,
    /// ARM metadata.
    pub metadata: BTreeMap<String, String>,
    /// The ETag this copy was read with.
    pub etag: String,
    /// Other properties, sent back unchanged.
    #[serde(skip)]
    pub(crate) extra: Map<String, Value>,
}

/// Why an ARM record-set body could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// The record set is an alias (`targetResource`): drdctl does not switch those.
    Alias(String),
    /// Not the JSON drdctl expects.
    Invalid(String),
}

impl RecordSet {
    /// Whether the record holds exactly `values` (normalised comparison).
    pub fn holds(&self, values: &[String]) -> bool {
        normalise(self.record_type, &self.values) == normalise(self.record_type, values)
    }

    /// The value as one line (`203.0.113.10, 203.0.113.11` or `app-dr.example.net`).
    pub fn value_text(&self) -> String {
        if self.values.is_empty() {
            "(no records)".into()
        } else {
            self.values.join(", ")
        }
    }

    /// Parses an ARM record-set body, expecting `record_type`.
    pub(crate) fn from_arm(body: &Value, record_type: RecordType) -> Result<Self, ParseError> {
        let bad = |m: &str| ParseError::Invalid(m.to_string());
        let props = body
            .get("properties")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("no properties object"))?;
        if let Some(id) = props
            .get("targetResource")
            .and_then(|t| t.get("id"))
            .and_then(Value::as_str)
        {
            return Err(ParseError::Alias(id.to_string()));
        }
        let etag = body
            .get("etag")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no etag"))?
            .to_string();
        let ttl = props
            .get("TTL")
            .and_then(Value::as_u64)
            .and_then(|t| u32::try_from(t).ok())
            .ok_or_else(|| bad("no properties.TTL"))?;
        let name = body
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let fqdn = props
            .get("fqdn")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim_end_matches('.')
            .to_string();
        let metadata = props
            .get("metadata")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        let v = v
                            .as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string());
                        (k.clone(), v)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let values = match record_type {
            RecordType::A => {
                if props.get("CNAMERecord").is_some_and(|c| !c.is_null()) {
                    return Err(bad("an A record set carries a CNAMERecord"));
                }
                let list = props
                    .get("ARecords")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let mut ips = Vec::new();
                for r in list {
                    let ip = r
                        .get("ipv4Address")
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad("an ARecords entry has no ipv4Address"))?;
                    ips.push(ip.to_string());
                }
                normalise(RecordType::A, &ips)
            }
            RecordType::CNAME => match props
                .get("CNAMERecord")
                .and_then(|c| c.get("cname"))
                .and_then(Value::as_str)
            {
                Some(c) => normalise(RecordType::CNAME, &[c.to_string()]),
                None => Vec::new(),
            },
        };
        let extra = props
            .iter()
            .filter(|(k, _)| !READ_ONLY.contains(&k.as_str()) && !MODELLED.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(RecordSet {
            name,
            fqdn,
            record_type,
            ttl,
            values,
            metadata,
            etag,
            extra,
        })
    }

    /// The PUT body: everything this record set holds, nothing ARM computes.
    pub(crate) fn to_arm_put(&self) -> Value {
        let mut props = self.extra.clone();
        if !self.metadata.is_empty() {
            props.insert("metadata".into(), json!(self.metadata));
        }
        props.insert("TTL".into(), json!(self.ttl));
        match self.record_type {
            RecordType::A => {
                let recs: Vec<Value> = self
                    .values
                    .iter()
                    .map(|ip| json!({ "ipv4Address": ip }))
                    .collect();
                props.insert("ARecords".into(), Value::Array(recs));
            }
            RecordType::CNAME => {
                if let Some(c) = self.values.first() {
                    props.insert("CNAMERecord".into(), json!({ "cname": c }));
                }
            }
        }
        json!({ "properties": Value::Object(props) })
    }
}

/// The zone, as far as drdctl needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ZoneInfo {
    /// Zone name.
    pub name: String,
    /// `properties.nameServers`.
    pub name_servers: Vec<String>,
}

impl ZoneInfo {
    pub(crate) fn from_arm(body: &Value) -> Self {
        ZoneInfo {
            name: body
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            name_servers: body
                .pointer("/properties/nameServers")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(|s| s.trim_end_matches('.').to_string())
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// The ARM `CloudError` body: `{"error":{"code","message"}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ArmErrorBody {
    pub code: String,
    pub message: String,
}

impl ArmErrorBody {
    pub(crate) fn parse(body: &[u8]) -> Self {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let e = v.get("error").unwrap_or(&v);
        ArmErrorBody {
            code: e
                .get("code")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            message: e
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| {
                    let text = String::from_utf8_lossy(body);
                    text.chars().take(300).collect()
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm_a() -> Value {
        json!({
            "id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/dnszones/example.com/A/app",
            "name": "app", "type": "Microsoft.Network/dnszones/A", "etag": "e1",
            "properties": {
                "metadata": {"owner": "ops"}, "TTL": 3600, "fqdn": "app.example.com.",
                "provisioningState": "Succeeded", "targetResource": {},
                "ARecords": [{"ipv4Address": "203.0.113.11"}, {"ipv4Address": "203.0.113.10"}],
                "futureProperty": {"x": 1}
            }
        })
    }

    #[test]
    fn round_trip_keeps_ttl_metadata_and_unknown_properties() {
        let rs = RecordSet::from_arm(&arm_a(), RecordType::A).unwrap();
        assert_eq!(rs.ttl, 3600);
        assert_eq!(rs.values, vec!["203.0.113.10", "203.0.113.11"]);
        assert_eq!(rs.fqdn, "app.example.com");
        let put = rs.to_arm_put();
        assert_eq!(put["properties"]["metadata"]["owner"], "ops");
        assert_eq!(put["properties"]["TTL"], 3600);
        assert_eq!(put["properties"]["futureProperty"]["x"], 1);
        assert!(put["properties"].get("fqdn").is_none());
        assert!(put["properties"].get("provisioningState").is_none());
    }

    #[test]
    fn alias_and_wrong_type_are_refused() {
        let mut v = arm_a();
        v["properties"]["targetResource"] =
            json!({"id": "/subscriptions/s/.../trafficManagerProfiles/tm"});
        assert!(matches!(
            RecordSet::from_arm(&v, RecordType::A),
            Err(ParseError::Alias(_))
        ));
        let mut v = arm_a();
        v["properties"]["CNAMERecord"] = json!({"cname": "x.example"});
        assert!(RecordSet::from_arm(&v, RecordType::A).is_err());
    }

    #[test]
    fn normalise_sorts_ips_numerically_and_lowercases_names() {
        assert_eq!(
            normalise(
                RecordType::A,
                &["10.0.0.10".into(), "10.0.0.9".into(), "10.0.0.9".into()]
            ),
            vec!["10.0.0.9", "10.0.0.10"]
        );
        assert_eq!(
            normalise(RecordType::CNAME, &["App-DR.Example.NET.".into()]),
            vec!["app-dr.example.net"]
        );
    }

    #[test]
    fn arm_error_body_falls_back_to_text() {
        let e = ArmErrorBody::parse(br#"{"error":{"code":"NotFound","message":"gone"}}"#);
        assert_eq!((e.code.as_str(), e.message.as_str()), ("NotFound", "gone"));
        let e = ArmErrorBody::parse(b"<html>bad gateway</html>");
        assert_eq!(e.code, "");
        assert!(e.message.contains("bad gateway"));
    }
}
