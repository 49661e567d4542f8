//! Just enough of the Kubernetes protobuf encoding to read what kubectl sends as protobuf:
//! kubectl 1.32's typed clients (`kubectl create configmap|secret|deployment|service|namespace|
//! serviceaccount|role|rolebinding`) post `application/vnd.kubernetes.protobuf` bodies and do
//! not fall back to JSON. Bodies are decoded into the same JSON the API would have received.
//!
//! The field tables below were generated from Kubernetes' `generated.proto` definitions (as
//! carried by the k8s-pb crate), limited to the messages those kubectl generators emit; fields
//! of other message types are skipped.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::error::{ApiError, ApiResult};

/// The media type of protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\x00";

#[derive(Clone, Copy)]
enum Ty {
    Str,
    Int,
    Bool,
    Msg(&'static [Field]),
    MapStr,
    MapBytes,
    MapQuantity,
    Time,
    IntOrString,
}
use Ty::*;

struct Field {
    tag: u64,
    name: &'static str,
    ty: Ty,
    repeated: bool,
}

const fn f(tag: u64, name: &'static str, ty: Ty, repeated: bool) -> Field {
    Field {
        tag,
        name,
        ty,
        repeated,
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

fn malformed() -> ApiError {
    ApiError::bad_request("the protobuf body of the request is malformed")
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> ApiResult<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.buf.split_first().ok_or_else(malformed)?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(malformed())
    }

    fn take(&mut self, n: usize) -> ApiResult<&'a [u8]> {
        if n > self.buf.len() {
            return Err(malformed());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn bytes(&mut self) -> ApiResult<&'a [u8]> {
        let n = usize::try_from(self.varint()?).map_err(|_| malformed())?;
        self.take(n)
    }

    /// The next field: its tag, and either a varint or a length-delimited payload.
    fn field(&mut self) -> ApiResult<Option<(u64, Wire<'a>)>> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Wire::Skip
            }
            2 => Wire::Len(self.bytes()?),
            5 => {
                self.take(4)?;
                Wire::Skip
            }
            _ => return Err(malformed()),
        };
        Ok(Some((key >> 3, wire)))
    }
}

enum Wire<'a> {
    Varint(u64),
    Len(&'a [u8]),
    Skip,
}

fn text(b: &[u8]) -> ApiResult<String> {
    String::from_utf8(b.to_vec()).map_err(|_| malformed())
}

/// Decodes a small message into (tag -> raw payloads).
fn raw_fields(buf: &[u8]) -> ApiResult<Vec<(u64, Wire<'_>)>> {
    let mut r = Reader { buf };
    let mut out = Vec::new();
    while let Some(f) = r.field()? {
        out.push(f);
    }
    Ok(out)
}

fn len_of<'a>(fields: &[(u64, Wire<'a>)], tag: u64) -> Option<&'a [u8]> {
    fields.iter().find_map(|(t, w)| match w {
        Wire::Len(b) if *t == tag => Some(*b),
        _ => None,
    })
}

fn varint_of(fields: &[(u64, Wire<'_>)], tag: u64) -> Option<u64> {
    fields.iter().find_map(|(t, w)| match w {
        Wire::Varint(v) if *t == tag => Some(*v),
        _ => None,
    })
}

fn scalar(ty: Ty, wire: &Wire<'_>) -> ApiResult<Option<Value>> {
    Ok(match (ty, wire) {
        (Str, Wire::Len(b)) => Some(json!(text(b)?)),
        (Int, Wire::Varint(v)) => Some(json!(*v as i64)),
        (Bool, Wire::Varint(v)) => Some(json!(*v != 0)),
        (Msg(fields), Wire::Len(b)) => Some(message(b, fields)?),
        (Time, Wire::Len(b)) => {
            let secs = varint_of(&raw_fields(b)?, 1).unwrap_or(0) as i64;
            (secs != 0)
                .then(|| chrono::DateTime::from_timestamp(secs, 0))
                .flatten()
                .map(|t| json!(t.format("%Y-%m-%dT%H:%M:%SZ").to_string()))
        }
        (IntOrString, Wire::Len(b)) => {
            let inner = raw_fields(b)?;
            if varint_of(&inner, 1).unwrap_or(0) == 1 {
                Some(json!(text(len_of(&inner, 3).unwrap_or_default())?))
            } else {
                Some(json!(varint_of(&inner, 2).unwrap_or(0) as i64))
            }
        }
        _ => None,
    })
}

fn message(buf: &[u8], schema: &[Field]) -> ApiResult<Value> {
    let mut out = Map::new();
    for (tag, wire) in raw_fields(buf)? {
        let Some(field) = schema.iter().find(|f| f.tag == tag) else {
            continue;
        };
        match field.ty {
            MapStr | MapBytes | MapQuantity => {
                let Wire::Len(entry) = wire else { continue };
                let entry = raw_fields(entry)?;
                let key = text(len_of(&entry, 1).unwrap_or_default())?;
                let raw = len_of(&entry, 2).unwrap_or_default();
                let value = match field.ty {
                    MapStr => json!(text(raw)?),
                    MapBytes => json!(STANDARD.encode(raw)),
                    _ => json!(text(len_of(&raw_fields(raw)?, 1).unwrap_or_default())?),
                };
                let map = out.entry(field.name).or_insert_with(|| json!({}));
                map[key] = value;
            }
            _ => {
                let Some(v) = scalar(field.ty, &wire)? else {
                    continue;
                };
                if field.repeated {
                    let list = out.entry(field.name).or_insert_with(|| json!([]));
                    if let Some(a) = list.as_array_mut() {
                        a.push(v);
                    }
                    continue;
                }
                // Go's protobuf always writes non-pointer scalars; JSON would omit the zero ones.
                let zero = v == json!("")
                    || v == json!(false)
                    || (v == json!(0) && field.name != "replicas");
                if !zero {
                    out.insert(field.name.to_string(), v);
                }
            }
        }
    }
    Ok(Value::Object(out))
}

/// Decodes a protobuf request body (`k8s\0` + `runtime.Unknown`) into a JSON object.
pub fn decode(body: &[u8]) -> ApiResult<Value> {
    let envelope = body.strip_prefix(MAGIC).ok_or_else(malformed)?;
    let unknown = raw_fields(envelope)?;
    let type_meta = raw_fields(len_of(&unknown, 1).unwrap_or_default())?;
    let api_version = text(len_of(&type_meta, 1).unwrap_or_default())?;
    let kind = text(len_of(&type_meta, 2).unwrap_or_default())?;
    let schema: &[Field] = match (api_version.as_str(), kind.as_str()) {
        ("v1", "ConfigMap") => CONFIGMAP,
        ("v1", "Secret") => SECRET,
        ("v1", "Namespace") => NAMESPACE,
        ("v1", "ServiceAccount") => SERVICEACCOUNT,
        ("v1", "Service") => SERVICE,
        ("apps/v1", "Deployment") => DEPLOYMENT,
        ("rbac.authorization.k8s.io/v1", "Role") => ROLE,
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => ROLEBINDING,
        _ => {
            return Err(ApiError::unsupported_media_type(&format!(
                "{MEDIA_TYPE} ({api_version} {kind})"
            )))
        }
    };
    let mut obj = message(len_of(&unknown, 2).unwrap_or_default(), schema)?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

// Generated field tables (tag, JSON name, type, repeated).

static OBJECTMETA: &[Field] = &[
    f(1, "name", Str, false),
    f(2, "generateName", Str, false),
    f(3, "namespace", Str, false),
    f(4, "selfLink", Str, false),
    f(5, "uid", Str, false),
    f(6, "resourceVersion", Str, false),
    f(7, "generation", Int, false),
    f(8, "creationTimestamp", Time, false),
    f(9, "deletionTimestamp", Time, false),
    f(10, "deletionGracePeriodSeconds", Int, false),
    f(11, "labels", MapStr, false),
    f(12, "annotations", MapStr, false),
    f(13, "ownerReferences", Msg(OWNERREFERENCE), true),
    f(14, "finalizers", Str, true),
];
static OWNERREFERENCE: &[Field] = &[
    f(5, "apiVersion", Str, false),
    f(1, "kind", Str, false),
    f(3, "name", Str, false),
    f(4, "uid", Str, false),
    f(6, "controller", Bool, false),
    f(7, "blockOwnerDeletion", Bool, false),
];
static LABELSELECTOR: &[Field] = &[
    f(1, "matchLabels", MapStr, false),
    f(2, "matchExpressions", Msg(LABELSELECTORREQUIREMENT), true),
];
static LABELSELECTORREQUIREMENT: &[Field] = &[
    f(1, "key", Str, false),
    f(2, "operator", Str, false),
    f(3, "values", Str, true),
];
static CONFIGMAP: &[Field] = &[
    f(1, "metadata", Msg(OBJECTMETA), false),
    f(4, "immutable", Bool, false),
    f(2, "data", MapStr, false),
    f(3, "binaryData", MapBytes, false),
];
static SECRET: &[Field] = &[
    f(1, "metadata", Msg(OBJECTMETA), false),
    f(5, "immutable", Bool, false),
    f(2, "data", MapBytes, false),
    f(4, "stringData", MapStr, false),
    f(3, "type", Str, false),
];
static NAMESPACE: &[Field] = &[
    f(1, "metadata", Msg(OBJECTMETA), false),
    f(2, "spec", Msg(NAMESPACESPEC), false),
];
static NAMESPACESPEC: &[Field] = &[f(1, "finalizers", Str, true)];
static SERVICEACCOUNT: &[Field] = &[
    f(1, "metadata", Msg(OBJECTMETA), false),
    f(2, "secrets", Msg(OBJECTREFERENCE), true),
    f(3, "imagePullSecrets", Msg(LOCALOBJECTREFERENCE), true),
    f(4, "automountServiceAccountToken", Bool, false),
];
static OBJECTREFERENCE: &[Field] = &[
    f(1, "kind", Str, false),
    f(2, "namespace", Str, false),
    f(3, "name", Str, false),
    f(4, "uid", Str, false),
    f(5, "apiVersion", Str, false),
    f(6, "resourceVersion", Str, false),
    f(7, "fieldPath", Str, false),
];
static LOCALOBJECTREFERENCE: &[Field] = &[f(1, "name", Str, false)];
static SERVICE: &[Field] = &[
    f(1, "metadata", Msg(OBJECTMETA), false),
    f(2, "spec", Msg(SERVICESPEC), false),
];
static SERVICESPEC: &[Field] = &[
    f(1, "ports", Msg(SERVICEPORT), true),
    f(2, "selector", MapStr, false),
    f(3, "clusterIP", Str, false),
    f(18, "clusterIPs", Str, true),
    f(4, "type", Str, false),
    f(5, "externalIPs", Str, true),
    f(7, "sessionAffinity", Str, false),
    f(8, "loadBalancerIP", Str, false),
    f(9, "loadBalancerSourceRanges", Str, true),
    f(10, "externalName", Str, false),
    f(11, "externalTrafficPolicy", Str, false),
    f(12, "healthCheckNodePort", Int, false),
    f(13, "publishNotReadyAddresses", Bool, false),
    f(19, "ipFamilies", Str, true),
    f(17, "ipFamilyPolicy", Str, false),
    f(20, "allocateLoadBalancerNodePorts", Bool, false),
    f(21, "loadBalancerClass", Str, false),
    f(22, "internalTrafficPolicy", Str, false),
    f(23, "trafficDistribution", Str, false),
];
static SERVICEPORT: &[Field] = &[
    f(1, "name", Str, false),
    f(2, "protocol", Str, false),
    f(6, "appProtocol", Str, false),
    f(3, "port", Int, false),
    f(4, "targetPort", IntOrString, false),
    f(5, "nodePort", Int, false),
];
static PODTEMPLATESPEC: &[Field] = &[
    f(1, "metadata", Msg(OBJECTMETA), false),
    f(2, "spec", Msg(PODSPEC), false),
];
static PODSPEC: &[Field] = &[
    f(20, "initContainers", Msg(CONTAINER), true),
    f(2, "containers", Msg(CONTAINER), true),
    f(3, "restartPolicy", Str, false),
    f(4, "terminationGracePeriodSeconds", Int, false),
    f(5, "activeDeadlineSeconds", Int, false),
    f(6, "dnsPolicy", Str, false),
    f(7, "nodeSelector", MapStr, false),
    f(8, "serviceAccountName", Str, false),
    f(9, "serviceAccount", Str, false),
    f(21, "automountServiceAccountToken", Bool, false),
    f(10, "nodeName", Str, false),
    f(11, "hostNetwork", Bool, false),
    f(12, "hostPID", Bool, false),
    f(13, "hostIPC", Bool, false),
    f(27, "shareProcessNamespace", Bool, false),
    f(15, "imagePullSecrets", Msg(LOCALOBJECTREFERENCE), true),
    f(16, "hostname", Str, false),
    f(17, "subdomain", Str, false),
    f(19, "schedulerName", Str, false),
    f(24, "priorityClassName", Str, false),
    f(25, "priority", Int, false),
    f(29, "runtimeClassName", Str, false),
    f(30, "enableServiceLinks", Bool, false),
    f(31, "preemptionPolicy", Str, false),
    f(32, "overhead", MapQuantity, false),
    f(35, "setHostnameAsFqdn", Bool, false),
    f(37, "hostUsers", Bool, false),
    f(40, "resources", Msg(RESOURCEREQUIREMENTS), false),
    f(41, "hostnameOverride", Str, false),
];
static CONTAINER: &[Field] = &[
    f(1, "name", Str, false),
    f(2, "image", Str, false),
    f(3, "command", Str, true),
    f(4, "args", Str, true),
    f(5, "workingDir", Str, false),
    f(6, "ports", Msg(CONTAINERPORT), true),
    f(7, "env", Msg(ENVVAR), true),
    f(8, "resources", Msg(RESOURCEREQUIREMENTS), false),
    f(24, "restartPolicy", Str, false),
    f(9, "volumeMounts", Msg(VOLUMEMOUNT), true),
    f(13, "terminationMessagePath", Str, false),
    f(20, "terminationMessagePolicy", Str, false),
    f(14, "imagePullPolicy", Str, false),
    f(16, "stdin", Bool, false),
    f(17, "stdinOnce", Bool, false),
    f(18, "tty", Bool, false),
];
static CONTAINERPORT: &[Field] = &[
    f(1, "name", Str, false),
    f(2, "hostPort", Int, false),
    f(3, "containerPort", Int, false),
    f(4, "protocol", Str, false),
    f(5, "hostIP", Str, false),
];
static ENVVAR: &[Field] = &[f(1, "name", Str, false), f(2, "value", Str, false)];
static RESOURCEREQUIREMENTS: &[Field] = &[
    f(1, "limits", MapQuantity, false),
    f(2, "requests", MapQuantity, false),
];
static VOLUMEMOUNT: &[Field] = &[
    f(1, "name", Str, false),
    f(2, "readOnly", Bool, false),
    f(7, "recursiveReadOnly", Str, false),
    f(3, "mountPath", Str, false),
    f(4, "subPath", Str, false),
    f(5, "mountPropagation", Str, false),
    f(6, "subPathExpr", Str, false),
];
static DEPLOYMENT: &[Field] = &[
    f(1, "metadata", Msg(OBJECTMETA), false),
    f(2, "spec", Msg(DEPLOYMENTSPEC), false),
];
static DEPLOYMENTSPEC: &[Field] = &[
    f(1, "replicas", Int, false),
    f(2, "selector", Msg(LABELSELECTOR), false),
    f(3, "template", Msg(PODTEMPLATESPEC), false),
    f(4, "strategy", Msg(DEPLOYMENTSTRATEGY), false),
    f(5, "minReadySeconds", Int, false),
    f(6, "revisionHistoryLimit", Int, false),
    f(7, "paused", Bool, false),
    f(9, "progressDeadlineSeconds", Int, false),
];
static DEPLOYMENTSTRATEGY: &[Field] = &[
    f(1, "type", Str, false),
    f(2, "rollingUpdate", Msg(ROLLINGUPDATEDEPLOYMENT), false),
];
static ROLLINGUPDATEDEPLOYMENT: &[Field] = &[
    f(1, "maxUnavailable", IntOrString, false),
    f(2, "maxSurge", IntOrString, false),
];
static ROLE: &[Field] = &[
    f(1, "metadata", Msg(OBJECTMETA), false),
    f(2, "rules", Msg(POLICYRULE), true),
];
static POLICYRULE: &[Field] = &[
    f(1, "verbs", Str, true),
    f(2, "apiGroups", Str, true),
    f(3, "resources", Str, true),
    f(4, "resourceNames", Str, true),
    f(5, "nonResourceUrLs", Str, true),
];
static ROLEBINDING: &[Field] = &[
    f(1, "metadata", Msg(OBJECTMETA), false),
    f(2, "subjects", Msg(SUBJECT), true),
    f(3, "roleRef", Msg(ROLEREF), false),
];
static SUBJECT: &[Field] = &[
    f(1, "kind", Str, false),
    f(2, "apiGroup", Str, false),
    f(3, "name", Str, false),
    f(4, "namespace", Str, false),
];
static ROLEREF: &[Field] = &[
    f(1, "apiGroup", Str, false),
    f(2, "kind", Str, false),
    f(3, "name", Str, false),
];
