//! What an ingested record is, and how a request body becomes records: pure, no IO.
//!
//! A record is `{"type": "...", "data": <any JSON>, "source": "..."}`: `type` is required
//! (1 to 64 characters), `data` defaults to `{}`, `source` defaults to `"api"` (1 to 128
//! characters). Unknown keys are refused rather than dropped, so nothing a client sends is
//! silently lost. PostgreSQL cannot store the NUL character in text or jsonb, so it is refused
//! with a 400 instead of failing at the database.

use serde_json::{Map, Value};

/// The most records one batch request may carry.
pub const MAX_BATCH: usize = 10_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub data_type: String,
    pub source: String,
    pub data: Value,
}

fn contains_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(contains_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

fn text_field(
    obj: &Map<String, Value>,
    key: &str,
    at: &str,
    max: usize,
    default: Option<&str>,
) -> Result<String, String> {
    match obj.get(key) {
        None | Some(Value::Null) => default
            .map(str::to_string)
            .ok_or_else(|| format!("{at}: missing required field \"{key}\"")),
        Some(Value::String(s)) => {
            let n = s.chars().count();
            if n == 0 || n > max {
                Err(format!(
                    "{at}.{key}: must be 1 to {max} characters long (got {n})"
                ))
            } else if s.contains('\0') {
                Err(format!("{at}.{key}: must not contain the NUL character"))
            } else {
                Ok(s.clone())
            }
        }
        Some(other) => Err(format!("{at}.{key}: must be a string, not {}", kind(other))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses one record; `at` names it in error messages (e.g. `records[3]`).
pub fn parse_record(v: &Value, at: &str) -> Result<Record, String> {
    let Value::Object(obj) = v else {
        return Err(format!(
            "{at}: must be an object like {{\"type\":\"sensor\",\"data\":{{...}}}}, not {}",
            kind(v)
        ));
    };
    if let Some(unknown) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "type" | "data" | "source"))
    {
        return Err(format!(
            "{at}: unknown field \"{unknown}\" (a record has \"type\", \"data\" and \"source\"; put values under \"data\")"
        ));
    }
    let data_type = text_field(obj, "type", at, 64, None)?;
    let source = text_field(obj, "source", at, 128, Some("api"))?;
    let data = obj
        .get("data")
        .cloned()
        .unwrap_or_else(|| Value::Object(Map::new()));
    if contains_nul(&data) {
        return Err(format!("{at}.data: must not contain the NUL character"));
    }
    Ok(Record {
        data_type,
        source,
        data,
    })
}

/// How the body of `POST /ingest` was shaped, which decides the shape of the answer.
#[derive(Debug, PartialEq)]
pub enum Shape {
    One,
    Many,
}

/// `POST /ingest`: one record, an array of records, or `{"records": [...]}`.
pub fn parse_ingest_body(body: &Value) -> Result<(Shape, Vec<Record>), String> {
    match body {
        Value::Object(o) if o.contains_key("records") => Ok((
            Shape::Many,
            parse_many(o.get("records").unwrap_or(&Value::Null))?,
        )),
        Value::Object(_) => Ok((Shape::One, vec![parse_record(body, "body")?])),
        Value::Array(_) => Ok((Shape::Many, parse_many(body)?)),
        other => Err(format!(
            "body must be a record object, an array of records or {{\"records\": [...]}}, not {}",
            kind(other)
        )),
    }
}

/// `POST /ingest/batch`: `{"records": [...]}` or a bare array, 1 to [`MAX_BATCH`] records.
pub fn parse_batch_body(body: &Value) -> Result<Vec<Record>, String> {
    match body {
        Value::Object(o) => match o.get("records") {
            Some(r) => parse_many(r),
            None => Err("body must be {\"records\": [...]} (no \"records\" field found)".into()),
        },
        Value::Array(_) => parse_many(body),
        other => Err(format!(
            "body must be {{\"records\": [...]}} or an array of records, not {}",
            kind(other)
        )),
    }
}

fn parse_many(v: &Value) -> Result<Vec<Record>, String> {
    let Value::Array(items) = v else {
        return Err(format!("records must be an array, not {}", kind(v)));
    };
    if items.is_empty() {
        return Err("records must not be empty".into());
    }
    items
        .iter()
        .enumerate()
        .map(|(i, r)| parse_record(r, &format!("records[{i}]")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_seed_example_parses() {
        let body =
            json!({"type":"sensor","data":{"temperature":25.5,"humidity":60},"source":"api"});
        let (shape, recs) = parse_ingest_body(&body).unwrap();
        assert_eq!(shape, Shape::One);
        assert_eq!(recs[0].data_type, "sensor");
        assert_eq!(recs[0].data, json!({"temperature":25.5,"humidity":60}));
    }

    #[test]
    fn defaults_and_shapes() {
        let (shape, recs) =
            parse_ingest_body(&json!([{"type":"a"},{"type":"b","source":"s"}])).unwrap();
        assert_eq!(shape, Shape::Many);
        assert_eq!(recs[0].source, "api");
        assert_eq!(recs[0].data, json!({}));
        assert_eq!(recs[1].source, "s");
        let (_, recs) = parse_ingest_body(&json!({"records":[{"type":"a"}]})).unwrap();
        assert_eq!(recs.len(), 1);
    }

    #[test]
    fn errors_name_the_record_and_field() {
        let e = parse_batch_body(&json!({"records":[{"type":"a"},{"type":5}]})).unwrap_err();
        assert_eq!(e, "records[1].type: must be a string, not a number");
        let e = parse_ingest_body(&json!({"type":"a","temperature":5})).unwrap_err();
        assert!(e.contains("unknown field \"temperature\""), "{e}");
        let e = parse_ingest_body(&json!({"data":{}})).unwrap_err();
        assert!(e.contains("missing required field \"type\""), "{e}");
        assert!(parse_ingest_body(&json!({"type":"a","data":{"k":"nul\u{0}"}})).is_err());
        assert!(parse_ingest_body(&json!({"type": "x".repeat(65)})).is_err());
        assert!(parse_batch_body(&json!({"records":[]})).is_err());
        assert!(parse_ingest_body(&json!("text")).is_err());
    }
}
