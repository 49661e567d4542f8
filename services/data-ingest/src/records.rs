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

fn text_field<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    at: &str,
    max: usize,
    default: Option<&'static str>,
) -> Result<&'a str, String> {
    match obj.get(key) {
        None | Some(Value::Null) => {
            default.ok_or_else(|| format!("{at}: missing required field \"{key}\""))
        }
        Some(Value::String(s)) => {
            let n = s.chars().count();
            if n == 0 || n > max {
                Err(format!(
                    "{at}.{key}: must be 1 to {max} characters long (got {n})"
                ))
            } else if s.contains('\0') {
                Err(format!("{at}.{key}: must not contain the NUL character"))
            } else {
                Ok(s.as_str())
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

/// A valid record, borrowed from the request body.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    pub data_type: &'a str,
    pub source: &'a str,
    /// `None` stands for the default, `{}`.
    pub data: Option<&'a Value>,
}

impl RecordRef<'_> {
    pub fn to_owned(self) -> Record {
        Record {
            data_type: self.data_type.to_string(),
            source: self.source.to_string(),
            data: self
                .data
                .cloned()
                .unwrap_or_else(|| Value::Object(Map::new())),
        }
    }
}

/// Checks one record; `at` names it in error messages (e.g. `records[3]`).
pub fn check_record<'a>(v: &'a Value, at: &str) -> Result<RecordRef<'a>, String> {
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
    let data = obj.get("data").filter(|d| !d.is_null());
    if data.is_some_and(contains_nul) {
        return Err(format!("{at}.data: must not contain the NUL character"));
    }
    Ok(RecordRef {
        data_type,
        source,
        data,
    })
}

/// Parses one record into an owned [`Record`].
pub fn parse_record(v: &Value, at: &str) -> Result<Record, String> {
    check_record(v, at).map(RecordRef::to_owned)
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
/// The records borrow from the body: a batch is checked and written out without copies.
pub fn parse_batch_body(body: &Value) -> Result<Vec<RecordRef<'_>>, String> {
    match body {
        Value::Object(o) => match o.get("records") {
            Some(r) => check_many(r),
            None => Err("body must be {\"records\": [...]} (no \"records\" field found)".into()),
        },
        Value::Array(_) => check_many(body),
        other => Err(format!(
            "body must be {{\"records\": [...]}} or an array of records, not {}",
            kind(other)
        )),
    }
}

fn parse_many(v: &Value) -> Result<Vec<Record>, String> {
    Ok(check_many(v)?
        .into_iter()
        .map(RecordRef::to_owned)
        .collect())
}

fn check_many(v: &Value) -> Result<Vec<RecordRef<'_>>, String> {
    let Value::Array(items) = v else {
        return Err(format!("records must be an array, not {}", kind(v)));
    };
    if items.is_empty() {
        return Err("records must not be empty".into());
    }
    items
        .iter()
        .enumerate()
        .map(|(i, r)| check_record(r, &format!("records[{i}]")))
        .collect()
}

/// The records as COPY text-format rows (`data_type`, `source`, `payload`), escaped so any
/// character a client sent (tab, newline, backslash) is stored as sent.
pub fn copy_text(records: &[RecordRef<'_>]) -> Vec<u8> {
    fn push_escaped(out: &mut String, s: &str) {
        for c in s.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c => out.push(c),
            }
        }
    }
    let mut out = String::with_capacity(records.len() * 64);
    let mut json = String::with_capacity(256);
    for r in records {
        push_escaped(&mut out, r.data_type);
        out.push('\t');
        push_escaped(&mut out, r.source);
        out.push('\t');
        json.clear();
        match r.data {
            None => json.push_str("{}"),
            // Writing a Value into a String cannot fail (its keys are strings).
            Some(d) => json.push_str(&serde_json::to_string(d).unwrap_or_default()),
        }
        push_escaped(&mut out, &json);
        out.push('\n');
    }
    out.into_bytes()
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
    fn copy_rows_escape_what_copy_would_interpret() {
        let data = json!({"k": "x\ny"});
        let r = RecordRef {
            data_type: "a\tb",
            source: "c\\d\ne",
            data: Some(&data),
        };
        assert_eq!(
            String::from_utf8(copy_text(&[r])).unwrap(),
            "a\\tb\tc\\\\d\\ne\t{\"k\":\"x\\\\ny\"}\n"
        );
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
