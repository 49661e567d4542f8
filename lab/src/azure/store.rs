//! What the Azure DNS double holds: zones (by subscription, resource group and name) and their
//! A and CNAME record sets, with the ETag rules of the real service (a new GUID on every write,
//! `If-Match` / `If-None-Match` checked under one lock). The ARM endpoint and the authoritative
//! DNS server both read from here, so a switch made through ARM is what `dig` sees.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Map, Value};
use tokio::sync::watch;

/// Identifies a zone the way ARM does. Names are compared case-insensitively, like ARM.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ZoneId {
    /// Subscription id.
    pub subscription: String,
    /// Resource group name.
    pub resource_group: String,
    /// Zone name, without the trailing dot (`example.com`).
    pub zone: String,
}

impl ZoneId {
    /// A zone id; the parts are kept as given (lookups ignore case).
    pub fn new(subscription: &str, resource_group: &str, zone: &str) -> Self {
        ZoneId {
            subscription: subscription.to_string(),
            resource_group: resource_group.to_string(),
            zone: zone.trim_end_matches('.').to_string(),
        }
    }

    fn key(&self) -> (String, String, String) {
        (
            self.subscription.to_ascii_lowercase(),
            self.resource_group.to_ascii_lowercase(),
            self.zone.to_ascii_lowercase(),
        )
    }

    /// The ARM resource id of the zone.
    pub fn resource_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/dnszones/{}",
            self.subscription, self.resource_group, self.zone
        )
    }
}

/// The records of a record set (the lab double supports the two types drdctl switches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Records {
    /// `ARecords`: IPv4 addresses.
    A(Vec<Ipv4Addr>),
    /// `CNAMERecord`: the canonical name (no trailing dot).
    Cname(String),
}

impl Records {
    /// The ARM record type path segment (`A`, `CNAME`).
    pub fn record_type(&self) -> &'static str {
        match self {
            Records::A(_) => "A",
            Records::Cname(_) => "CNAME",
        }
    }
}

/// One record set as the double stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSet {
    /// Name relative to the zone (`app`, `@` for the apex).
    pub name: String,
    /// Time to live, seconds.
    pub ttl: u32,
    /// ARM metadata (string to string).
    pub metadata: BTreeMap<String, String>,
    /// The records.
    pub records: Records,
    /// Current ETag (a GUID, changed by every write).
    pub etag: String,
}

impl RecordSet {
    /// An A record set (the ETag is set when it is stored).
    pub fn a(name: &str, ttl: u32, addresses: &[Ipv4Addr]) -> Self {
        RecordSet {
            name: name.to_string(),
            ttl,
            metadata: BTreeMap::new(),
            records: Records::A(addresses.to_vec()),
            etag: String::new(),
        }
    }

    /// A CNAME record set (the ETag is set when it is stored).
    pub fn cname(name: &str, ttl: u32, target: &str) -> Self {
        RecordSet {
            name: name.to_string(),
            ttl,
            metadata: BTreeMap::new(),
            records: Records::Cname(target.trim_end_matches('.').to_string()),
            etag: String::new(),
        }
    }

    /// Adds one metadata entry.
    pub fn with_metadata(mut self, key: &str, value: &str) -> Self {
        self.metadata.insert(key.to_string(), value.to_string());
        self
    }

    /// The record type (`A`, `CNAME`).
    pub fn record_type(&self) -> &'static str {
        self.records.record_type()
    }

    /// The fully qualified name with the trailing dot, as ARM reports it.
    pub fn fqdn(&self, zone: &str) -> String {
        if self.name == "@" {
            format!("{zone}.")
        } else {
            format!("{}.{zone}.", self.name)
        }
    }

    /// The ARM JSON of this record set.
    pub fn to_arm_json(&self, zone: &ZoneId) -> Value {
        let mut props = Map::new();
        if !self.metadata.is_empty() {
            props.insert("metadata".into(), json!(self.metadata));
        }
        props.insert("TTL".into(), json!(self.ttl));
        props.insert("fqdn".into(), json!(self.fqdn(&zone.zone)));
        props.insert("provisioningState".into(), json!("Succeeded"));
        props.insert("targetResource".into(), json!({}));
        match &self.records {
            Records::A(ips) => {
                let recs: Vec<Value> = ips
                    .iter()
                    .map(|ip| json!({ "ipv4Address": ip.to_string() }))
                    .collect();
                props.insert("ARecords".into(), Value::Array(recs));
            }
            Records::Cname(target) => {
                props.insert("CNAMERecord".into(), json!({ "cname": target }));
            }
        }
        json!({
            "id": format!("{}/{}/{}", zone.resource_id(), self.record_type(), self.name),
            "name": self.name,
            "type": format!("Microsoft.Network/dnszones/{}", self.record_type()),
            "etag": self.etag,
            "properties": Value::Object(props),
        })
    }
}

/// One zone: its name servers (what ARM reports in `nameServers`) and record sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// Where the zone lives.
    pub id: ZoneId,
    /// `properties.nameServers`.
    pub name_servers: Vec<String>,
    /// Zone ETag.
    pub etag: String,
    /// Record sets by (type, lower-case name).
    pub record_sets: BTreeMap<(String, String), RecordSet>,
}

impl Zone {
    /// The record set of this type and name, if any.
    pub fn record_set(&self, record_type: &str, name: &str) -> Option<&RecordSet> {
        self.record_sets.get(&record_key(record_type, name))
    }

    /// The ARM JSON of the zone.
    pub fn to_arm_json(&self) -> Value {
        json!({
            "id": self.id.resource_id(),
            "name": self.id.zone,
            "type": "Microsoft.Network/dnszones",
            "location": "global",
            "etag": self.etag,
            "tags": {},
            "properties": {
                "maxNumberOfRecordSets": 10000,
                "maxNumberOfRecordsPerRecordSet": 20,
                "numberOfRecordSets": self.record_sets.len() + 2,
                "nameServers": self.name_servers,
                "zoneType": "Public",
            },
        })
    }
}

/// Why a write was refused; the server turns these into ARM error responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// No zone with that subscription, resource group and name.
    ZoneNotFound,
    /// No such record set (PATCH, or `If-Match` on a missing record set).
    RecordNotFound,
    /// `If-Match` / `If-None-Match` did not hold.
    PreconditionFailed(String),
    /// A CNAME would share its name with another record set, or the other way round.
    Conflict(String),
}

/// `If-Match` / `If-None-Match` as sent by the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preconditions {
    /// `If-Match` (`*` or an ETag).
    pub if_match: Option<String>,
    /// `If-None-Match` (only `*` is meaningful).
    pub if_none_match: Option<String>,
}

/// A PATCH: only the given parts change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Patch {
    /// New TTL.
    pub ttl: Option<u32>,
    /// New metadata (replaces the whole map).
    pub metadata: Option<BTreeMap<String, String>>,
    /// New records.
    pub records: Option<Records>,
}

/// The key of a record set in its zone: upper-case type, lower-case name.
fn record_key(record_type: &str, name: &str) -> (String, String) {
    (record_type.to_ascii_uppercase(), name.to_ascii_lowercase())
}

fn etag_matches(header: &str, current: &str) -> bool {
    header.split(',').any(|t| {
        let t = t.trim();
        let t = t.strip_prefix("W/").unwrap_or(t);
        t == "*" || t.trim_matches('"') == current
    })
}

/// `If-Match` against the current ETag.
fn check_if_match(header: &str, current: &str) -> Result<(), WriteError> {
    if etag_matches(header, current) {
        return Ok(());
    }
    Err(WriteError::PreconditionFailed(format!(
        "The condition '{header}' in the If-Match header was not satisfied. The current was \
         '{current}'."
    )))
}

fn new_etag() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[derive(Debug, Default)]
struct State {
    zones: BTreeMap<(String, String, String), Zone>,
}

/// The shared state of one Azure DNS double. Every change bumps a version that watchers
/// (the DNS server, tests) can wait on.
#[derive(Debug)]
pub struct AzureStore {
    state: Mutex<State>,
    version: watch::Sender<u64>,
}

impl Default for AzureStore {
    fn default() -> Self {
        AzureStore {
            state: Mutex::new(State::default()),
            version: watch::channel(0).0,
        }
    }
}

impl AzureStore {
    /// An empty store.
    pub fn new() -> Arc<Self> {
        Arc::new(AzureStore::default())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// A receiver that changes on every write (for tests that wait for a change).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Creates (or replaces) an empty zone with these name servers.
    pub fn create_zone(&self, id: ZoneId, name_servers: &[&str]) {
        let zone = Zone {
            id: id.clone(),
            name_servers: name_servers.iter().map(|s| s.to_string()).collect(),
            etag: new_etag(),
            record_sets: BTreeMap::new(),
        };
        self.lock().zones.insert(id.key(), zone);
        self.bump();
    }

    /// Sets a zone's name servers (what ARM reports).
    pub fn set_name_servers(&self, id: &ZoneId, name_servers: &[String]) -> bool {
        let found = match self.lock().zones.get_mut(&id.key()) {
            Some(z) => {
                z.name_servers = name_servers.to_vec();
                true
            }
            None => false,
        };
        if found {
            self.bump();
        }
        found
    }

    /// Removes a zone with its record sets.
    pub fn delete_zone(&self, id: &ZoneId) -> bool {
        let removed = self.lock().zones.remove(&id.key()).is_some();
        if removed {
            self.bump();
        }
        removed
    }

    /// A copy of the zone.
    pub fn zone(&self, id: &ZoneId) -> Option<Zone> {
        self.lock().zones.get(&id.key()).cloned()
    }

    /// Whether any zone lives in this subscription and resource group.
    pub fn resource_group_exists(&self, subscription: &str, resource_group: &str) -> bool {
        let (s, rg) = (
            subscription.to_ascii_lowercase(),
            resource_group.to_ascii_lowercase(),
        );
        self.lock()
            .zones
            .keys()
            .any(|(zs, zrg, _)| *zs == s && *zrg == rg)
    }

    /// The zone that is authoritative for a DNS name (the longest matching zone name), for the
    /// DNS server. `name` has no trailing dot and is compared case-insensitively.
    pub fn zone_for_name(&self, name: &str) -> Option<Zone> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.lock()
            .zones
            .values()
            .filter(|z| {
                let zn = z.id.zone.to_ascii_lowercase();
                name == zn || name.ends_with(&format!(".{zn}"))
            })
            .max_by_key(|z| z.id.zone.len())
            .cloned()
    }

    /// Every zone (copies).
    pub fn zones(&self) -> Vec<Zone> {
        self.lock().zones.values().cloned().collect()
    }

    /// A copy of one record set.
    pub fn record_set(&self, id: &ZoneId, record_type: &str, name: &str) -> Option<RecordSet> {
        self.lock()
            .zones
            .get(&id.key())
            .and_then(|z| z.record_set(record_type, name).cloned())
    }

    /// Creates or replaces a record set with no preconditions (seeding, or a "colleague"
    /// changing the record behind drdctl's back). Returns the stored copy with its new ETag.
    pub fn upsert(&self, id: &ZoneId, record_set: RecordSet) -> Result<RecordSet, WriteError> {
        self.put(id, record_set, &Preconditions::default())
            .map(|(rs, _)| rs)
    }

    /// Changes a stored record set in place with no preconditions (new ETag). Returns the new
    /// copy, or `None` when there is no such record set.
    pub fn modify(
        &self,
        id: &ZoneId,
        record_type: &str,
        name: &str,
        change: impl FnOnce(&mut RecordSet),
    ) -> Option<RecordSet> {
        let out = {
            let mut st = self.lock();
            let zone = st.zones.get_mut(&id.key())?;
            let rs = zone.record_sets.get_mut(&record_key(record_type, name))?;
            change(rs);
            rs.etag = new_etag();
            rs.clone()
        };
        self.bump();
        Some(out)
    }

    /// PUT semantics: full replacement under the preconditions. Returns the stored record set
    /// and whether it was created.
    pub fn put(
        &self,
        id: &ZoneId,
        mut record_set: RecordSet,
        pre: &Preconditions,
    ) -> Result<(RecordSet, bool), WriteError> {
        self.write_zone(id, |zone| {
            let rtype = record_set.record_type().to_string();
            let key = (rtype.clone(), record_set.name.to_ascii_lowercase());
            let existing = zone.record_sets.get(&key);
            if let Some(m) = &pre.if_match {
                match existing {
                    None => {
                        return Err(WriteError::PreconditionFailed(format!(
                            "The Resource 'Microsoft.Network/dnszones/{}/{}/{}' does not exist, \
                             so the If-Match condition '{m}' cannot hold.",
                            id.zone, rtype, record_set.name
                        )))
                    }
                    Some(cur) => check_if_match(m, &cur.etag)?,
                }
            }
            if let (Some(n), Some(cur)) = (&pre.if_none_match, existing) {
                if n.trim() == "*" || etag_matches(n, &cur.etag) {
                    return Err(WriteError::PreconditionFailed(format!(
                        "The condition '{n}' in the If-None-Match header was not satisfied: \
                         the record set already exists."
                    )));
                }
            }
            let name_lc = record_set.name.to_ascii_lowercase();
            let others: Vec<&String> = zone
                .record_sets
                .keys()
                .filter(|(t, n)| *n == name_lc && *t != rtype)
                .map(|(t, _)| t)
                .collect();
            if !others.is_empty() && (rtype == "CNAME" || others.iter().any(|t| *t == "CNAME")) {
                return Err(WriteError::Conflict(format!(
                    "The record set {} of type {rtype} conflicts with the existing {} record \
                     set of the same name: a CNAME record set cannot share its name with any \
                     other record set.",
                    record_set.name, others[0]
                )));
            }
            let created = existing.is_none();
            record_set.etag = new_etag();
            zone.record_sets.insert(key, record_set.clone());
            Ok((record_set, created))
        })
    }

    /// PATCH semantics: merge into an existing record set under `If-Match`.
    pub fn patch(
        &self,
        id: &ZoneId,
        record_type: &str,
        name: &str,
        patch: Patch,
        pre: &Preconditions,
    ) -> Result<RecordSet, WriteError> {
        self.write_zone(id, |zone| {
            let rs = zone
                .record_sets
                .get_mut(&record_key(record_type, name))
                .ok_or(WriteError::RecordNotFound)?;
            if let Some(m) = &pre.if_match {
                check_if_match(m, &rs.etag)?;
            }
            if let Some(r) = &patch.records {
                if r.record_type() != rs.record_type() {
                    return Err(WriteError::Conflict(format!(
                        "A PATCH cannot turn the {} record set {} into a {} record set.",
                        rs.record_type(),
                        rs.name,
                        r.record_type()
                    )));
                }
            }
            if let Some(ttl) = patch.ttl {
                rs.ttl = ttl;
            }
            if let Some(md) = patch.metadata {
                rs.metadata = md;
            }
            if let Some(r) = patch.records {
                rs.records = r;
            }
            rs.etag = new_etag();
            Ok(rs.clone())
        })
    }

    /// Runs `write` on the zone under the lock; a write that succeeds bumps the version.
    fn write_zone<T>(
        &self,
        id: &ZoneId,
        write: impl FnOnce(&mut Zone) -> Result<T, WriteError>,
    ) -> Result<T, WriteError> {
        let out = {
            let mut st = self.lock();
            let zone = st
                .zones
                .get_mut(&id.key())
                .ok_or(WriteError::ZoneNotFound)?;
            write(zone)?
        };
        self.bump();
        Ok(out)
    }

    /// Deletes a record set; `true` if it existed.
    pub fn delete_record_set(&self, id: &ZoneId, record_type: &str, name: &str) -> bool {
        let removed = {
            let mut st = self.lock();
            st.zones.get_mut(&id.key()).is_some_and(|z| {
                z.record_sets
                    .remove(&record_key(record_type, name))
                    .is_some()
            })
        };
        if removed {
            self.bump();
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone() -> ZoneId {
        ZoneId::new("sub", "rg", "example.com")
    }

    fn store() -> Arc<AzureStore> {
        let s = AzureStore::new();
        s.create_zone(zone(), &["ns1.example.net"]);
        s
    }

    #[test]
    fn every_write_changes_the_etag_and_if_match_checks_it() {
        let s = store();
        let a = RecordSet::a("app", 300, &[Ipv4Addr::new(203, 0, 113, 10)]);
        let first = s.upsert(&zone(), a.clone()).unwrap();
        let pre = Preconditions {
            if_match: Some(first.etag.clone()),
            if_none_match: None,
        };
        let (second, created) = s.put(&zone(), a.clone(), &pre).unwrap();
        assert!(!created);
        assert_ne!(first.etag, second.etag);
        // The first ETag is now stale.
        assert!(matches!(
            s.put(&zone(), a, &pre),
            Err(WriteError::PreconditionFailed(_))
        ));
    }

    #[test]
    fn if_none_match_star_is_create_only_and_names_are_case_insensitive() {
        let s = store();
        let pre = Preconditions {
            if_match: None,
            if_none_match: Some("*".into()),
        };
        let a = RecordSet::a("App", 60, &[Ipv4Addr::LOCALHOST]);
        assert!(s.put(&zone(), a.clone(), &pre).unwrap().1);
        assert!(s.put(&zone(), a, &pre).is_err());
        assert!(s
            .record_set(&ZoneId::new("SUB", "RG", "Example.COM"), "a", "app")
            .is_some());
    }

    #[test]
    fn a_cname_cannot_share_its_name() {
        let s = store();
        s.upsert(&zone(), RecordSet::a("app", 60, &[Ipv4Addr::LOCALHOST]))
            .unwrap();
        assert!(matches!(
            s.upsert(&zone(), RecordSet::cname("app", 60, "x.example.net")),
            Err(WriteError::Conflict(_))
        ));
    }

    #[test]
    fn patch_merges_and_needs_an_existing_record_set() {
        let s = store();
        let pre = Preconditions::default();
        let patch = Patch {
            ttl: Some(30),
            ..Patch::default()
        };
        assert_eq!(
            s.patch(&zone(), "A", "app", patch.clone(), &pre),
            Err(WriteError::RecordNotFound)
        );
        s.upsert(
            &zone(),
            RecordSet::a("app", 60, &[Ipv4Addr::LOCALHOST]).with_metadata("owner", "ops"),
        )
        .unwrap();
        let rs = s.patch(&zone(), "A", "app", patch, &pre).unwrap();
        assert_eq!(rs.ttl, 30);
        assert_eq!(rs.metadata["owner"], "ops");
    }

    #[test]
    fn zone_for_name_picks_the_longest_zone() {
        let s = store();
        s.create_zone(ZoneId::new("sub", "rg", "eu.example.com"), &[]);
        assert_eq!(
            s.zone_for_name("app.eu.example.com.").unwrap().id.zone,
            "eu.example.com"
        );
        assert_eq!(
            s.zone_for_name("APP.example.com").unwrap().id.zone,
            "example.com"
        );
        assert!(s.zone_for_name("example.org").is_none());
    }
}
