//! Completes the OpenAPI document poem-openapi derives, so it is true of every answer.
//!
//! poem-openapi documents what a handler returns, not what the layers around it answer, and
//! it does not mark optional fields as nullable though they are answered `null`. Added here:
//! - `nullable: true` on every optional property (optional fields are answered `null`, and
//!   `null` is accepted for them in requests);
//! - on every operation: 503 (database known down, overloaded, request timeout; with
//!   `Retry-After`), 414 and 431 (target or head too long);
//! - with a request body: 400 (not JSON, not the schema), 408 (body too slow), 413 (too large),
//!   415 (not `application/json`);
//! - with parameters: 400 (a parameter out of range or not a number);
//! - when bearer tokens are configured: the `bearer` scheme, and 401 on every write.

use poem_openapi::types::Example;
use poem_openapi::{Object, Union};
use serde_json::{json, Map, Value};

// The body data-ingest's `POST /ingest` takes, which frontend-api's `POST /data/ingest` passes
// on: documentation only (both keep the body as bytes).

/// One record to store (documentation of the body; the body is parsed without a `Value` tree).
#[derive(Object, Debug)]
#[oai(rename = "Record", example, deny_unknown_fields)]
pub struct RecordDoc {
    /// What kind of record this is.
    #[oai(
        rename = "type",
        validator(min_length = 1, max_length = 64, pattern = "^[^\\x00]+$")
    )]
    pub data_type: String,
    /// Any JSON (no NUL character, numbers within a double's range, nesting below 128);
    /// stored as sent, `{}` when absent.
    pub data: Option<Value>,
    /// Where the record comes from; `api` when absent.
    #[oai(validator(min_length = 1, max_length = 128, pattern = "^[^\\x00]+$"))]
    pub source: Option<String>,
}

impl Example for RecordDoc {
    fn example() -> Self {
        RecordDoc {
            data_type: "sensor".into(),
            data: Some(serde_json::json!({"temperature": 25.5, "humidity": 60})),
            source: Some("api".into()),
        }
    }
}

/// `{"records": [...]}`: 1 to 10,000 records.
#[derive(Object, Debug)]
#[oai(rename = "Records", deny_unknown_fields)]
pub struct RecordsDoc {
    #[oai(validator(min_items = 1, max_items = 10000))]
    pub records: Vec<RecordDoc>,
}

/// The body of `POST /ingest`: one record or `{"records": [...]}`; a bare array of records
/// is also accepted.
#[derive(Union, Debug)]
#[oai(one_of)]
pub enum IngestBody {
    One(RecordDoc),
    Many(RecordsDoc),
}

fn error(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json; charset=utf-8": {
            "schema": {"$ref": "#/components/schemas/ErrorEnvelope"}
        }}
    })
}

fn add(responses: &mut Map<String, Value>, status: &str, description: &str) {
    responses
        .entry(status.to_string())
        .or_insert_with(|| error(description));
}

/// The document as served at `/openapi.json`; `keywords` are the service's own additions.
pub fn complete(mut spec: Value, keywords: &[(&str, &str, &str)], auth: bool) -> String {
    if auth {
        spec["components"]["securitySchemes"] =
            json!({"bearer": {"type": "http", "scheme": "bearer"}});
    }
    for (schema, property, extra) in keywords {
        let pointer = format!("/components/schemas/{schema}/properties/{property}");
        if let (Some(Value::Object(target)), Ok(Value::Object(extra))) = (
            spec.pointer_mut(&pointer),
            serde_json::from_str::<Value>(extra),
        ) {
            target.extend(extra);
        }
    }
    if let Some(schemas) = spec
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        for schema in schemas.values_mut() {
            let required: Vec<String> = schema["required"]
                .as_array()
                .map(|r| {
                    r.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
                for (name, prop) in props.iter_mut() {
                    if !required.contains(name) && prop.get("$ref").is_none() {
                        prop["nullable"] = Value::Bool(true);
                    }
                }
                // Unknown keys are refused in requests and never answered.
                if schema.get("additionalProperties").is_none() {
                    schema["additionalProperties"] = Value::Bool(false);
                }
            }
        }
    }
    if let Some(paths) = spec.get_mut("paths").and_then(Value::as_object_mut) {
        for ops in paths.values_mut() {
            let Some(ops) = ops.as_object_mut() else {
                continue;
            };
            for (method, op) in ops.iter_mut() {
                let has_body = op.get("requestBody").is_some();
                let write = !matches!(method.as_str(), "get" | "head" | "options");
                if auth && write {
                    op["security"] = json!([{"bearer": []}]);
                }
                let has_params = op["parameters"].as_array().is_some_and(|p| !p.is_empty());
                let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
                    continue;
                };
                let mut unavailable = error(
                    "Unavailable: the database is down or read-only, the service is overloaded \
                     or the request took too long; retry after `Retry-After` seconds",
                );
                unavailable["headers"] = json!({"Retry-After": {
                    "description": "seconds to wait before retrying (when overloaded)",
                    "schema": {"type": "integer"}
                }});
                responses.entry("503").or_insert(unavailable);
                add(responses, "414", "The request target is too long");
                if auth && write {
                    add(responses, "401", "No bearer token, or not a valid one");
                }
                add(responses, "431", "The request headers are too large");
                if has_body {
                    add(
                        responses,
                        "400",
                        "The body is not JSON or does not match the schema",
                    );
                    add(responses, "408", "The body did not arrive in time");
                    add(
                        responses,
                        "413",
                        "The body is larger than the service accepts",
                    );
                    add(responses, "415", "The body is not `application/json`");
                }
                if has_params {
                    add(
                        responses,
                        "400",
                        "A parameter is out of range or not a number",
                    );
                }
            }
        }
    }
    serde_json::to_string_pretty(&spec).unwrap_or_default()
}
