//! What an ingested record is, and how a request body becomes records: pure, no IO.
//!
//! A record is `{"type": "...", "data": <any JSON>, "source": "..."}`: `type` is required
//! (1 to 64 characters), `data` defaults to `{}`, `source` defaults to `"api"` (1 to 128
//! characters). Unknown keys are refused rather than dropped, so nothing a client sends is
//! silently lost. PostgreSQL cannot store the NUL character in text or jsonb, so it is refused
//! with a 400 instead of failing at the database.
//!
//! Memory: the body is never turned into a `serde_json::Value` tree (about 30 bytes per JSON
//! value, whatever its size in the body). `data` stays the slice of the body it was sent as
//! (`&RawValue`): it is checked by walking it once (NUL characters, numbers that fit a double,
//! nesting below 128) and stored as that text, so numbers keep every digit they were sent with.
//! An array of more than [`MAX_BATCH`] records is counted without being kept.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The most records one request may carry.
pub const MAX_BATCH: usize = 10_000;

/// A valid record, borrowing `data` from the request body.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    pub data_type: String,
    pub source: String,
    /// `None` stands for the default, `{}`.
    pub data: Option<&'a RawValue>,
}

impl Record<'_> {
    /// The JSON text stored in the `payload` column.
    pub fn data_text(&self) -> &str {
        self.data.map_or("{}", |d| d.get())
    }
}

/// Why a body is refused.
#[derive(Debug, PartialEq)]
pub enum BodyError {
    /// 400, with a message naming the record and field.
    Invalid(String),
    /// 413: this many records, more than [`MAX_BATCH`].
    TooMany(usize),
}

impl From<String> for BodyError {
    fn from(m: String) -> Self {
        BodyError::Invalid(m)
    }
}

/// What kind of JSON value `raw` is, from its first character.
fn kind(raw: &RawValue) -> &'static str {
    match raw.get().trim_start().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

fn is_null(raw: &RawValue) -> bool {
    raw.get().trim() == "null"
}

/// Walks a JSON value without building it: refuses NUL characters (in strings and keys) and
/// numbers a double cannot hold; serde_json refuses nesting deeper than 128.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CheckVisitor)
    }
}

struct CheckVisitor;

fn check_str<E: de::Error>(s: &str) -> Result<Checked, E> {
    if s.contains('\0') {
        Err(E::custom("must not contain the NUL character"))
    } else {
        Ok(Checked)
    }
}

impl<'de> Visitor<'de> for CheckVisitor {
    type Value = Checked;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Checked, E> {
        check_str(s)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_key::<Checked>()?.is_some() {
            map.next_value::<Checked>()?;
        }
        Ok(Checked)
    }
}

/// A JSON array kept as its elements' text, at most [`MAX_BATCH`] of them; `total` counts all.
struct Items<'a> {
    items: Vec<&'a RawValue>,
    total: usize,
}

impl<'de> Deserialize<'de> for Items<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Items<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of records")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Items<'de>, A::Error> {
                let mut items = Vec::new();
                let mut total = 0;
                while total < MAX_BATCH {
                    match seq.next_element::<&'de RawValue>()? {
                        Some(r) => items.push(r),
                        None => return Ok(Items { items, total }),
                    }
                    total += 1;
                }
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    total += 1;
                }
                Ok(Items { items, total })
            }
        }
        d.deserialize_seq(V)
    }
}

fn text_field(
    obj: &HashMap<String, &RawValue>,
    key: &str,
    at: &str,
    max: usize,
    default: Option<&'static str>,
) -> Result<String, String> {
    match obj.get(key) {
        None => default
            .map(String::from)
            .ok_or_else(|| format!("{at}: missing required field \"{key}\"")),
        Some(raw) if is_null(raw) => default
            .map(String::from)
            .ok_or_else(|| format!("{at}: missing required field \"{key}\"")),
        Some(raw) => {
            let s: String = serde_json::from_str(raw.get())
                .map_err(|_| format!("{at}.{key}: must be a string, not {}", kind(raw)))?;
            let n = s.chars().count();
            if n == 0 || n > max {
                Err(format!(
                    "{at}.{key}: must be 1 to {max} characters long (got {n})"
                ))
            } else if s.contains('\0') {
                Err(format!("{at}.{key}: must not contain the NUL character"))
            } else {
                Ok(s)
            }
        }
    }
}

fn as_object<'a>(raw: &'a RawValue, at: &str) -> Result<HashMap<String, &'a RawValue>, String> {
    serde_json::from_str(raw.get()).map_err(|_| {
        format!(
            "{at}: must be an object like {{\"type\":\"sensor\",\"data\":{{...}}}}, not {}",
            kind(raw)
        )
    })
}

fn record_from<'a>(obj: &HashMap<String, &'a RawValue>, at: &str) -> Result<Record<'a>, String> {
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
    let data = obj.get("data").copied().filter(|d| !is_null(d));
    if let Some(d) = data {
        serde_json::from_str::<Checked>(d.get()).map_err(|e| {
            let e = e.to_string();
            let e = e.split(" at line ").next().unwrap_or_default();
            format!("{at}.data: {e}")
        })?;
    }
    Ok(Record {
        data_type,
        source,
        data,
    })
}

/// Checks one record; `at` names it in error messages (e.g. `records[3]`).
pub fn parse_record<'a>(raw: &'a RawValue, at: &str) -> Result<Record<'a>, String> {
    record_from(&as_object(raw, at)?, at)
}

fn parse_many(raw: &RawValue) -> Result<Vec<Record<'_>>, BodyError> {
    let items: Items = serde_json::from_str(raw.get())
        .map_err(|_| format!("records must be an array, not {}", kind(raw)))?;
    if items.total > MAX_BATCH {
        return Err(BodyError::TooMany(items.total));
    }
    if items.items.is_empty() {
        return Err("records must not be empty".to_string().into());
    }
    Ok(items
        .items
        .iter()
        .enumerate()
        .map(|(i, r)| parse_record(r, &format!("records[{i}]")))
        .collect::<Result<_, _>>()?)
}

fn top(body: &[u8]) -> Result<&RawValue, BodyError> {
    let text =
        std::str::from_utf8(body).map_err(|_| "the body is not valid UTF-8 text".to_string())?;
    Ok(serde_json::from_str(text).map_err(|e| format!("the body is not valid JSON: {e}"))?)
}

/// How the body of `POST /ingest` was shaped, which decides the shape of the answer.
#[derive(Debug, PartialEq)]
pub enum Shape {
    One,
    Many,
}

/// `{"records": [...]}` alone, or something else (`None`).
fn wrapped<'a>(obj: &HashMap<String, &'a RawValue>) -> Result<Option<&'a RawValue>, String> {
    let Some(records) = obj.get("records") else {
        return Ok(None);
    };
    if let Some(other) = obj.keys().find(|k| *k != "records") {
        return Err(format!(
            "body: unknown field \"{other}\" next to \"records\" (the body is {{\"records\": [...]}} alone)"
        ));
    }
    Ok(Some(records))
}

/// `POST /ingest`: one record, an array of records, or `{"records": [...]}`.
pub fn parse_ingest_body(body: &[u8]) -> Result<(Shape, Vec<Record<'_>>), BodyError> {
    let raw = top(body)?;
    match kind(raw) {
        "an array" => Ok((Shape::Many, parse_many(raw)?)),
        "an object" => {
            let obj = as_object(raw, "body")?;
            match wrapped(&obj)? {
                Some(records) => Ok((Shape::Many, parse_many(records)?)),
                None => Ok((Shape::One, vec![record_from(&obj, "body")?])),
            }
        }
        other => Err(format!(
            "body must be a record object, an array of records or {{\"records\": [...]}}, not {other}"
        )
        .into()),
    }
}

/// `POST /ingest/batch`: `{"records": [...]}` or a bare array, 1 to [`MAX_BATCH`] records.
pub fn parse_batch_body(body: &[u8]) -> Result<Vec<Record<'_>>, BodyError> {
    let raw = top(body)?;
    match kind(raw) {
        "an array" => parse_many(raw),
        "an object" => match wrapped(&as_object(raw, "body")?)? {
            Some(records) => parse_many(records),
            None => Err(
                "body must be {\"records\": [...]} (no \"records\" field found)"
                    .to_string()
                    .into(),
            ),
        },
        other => Err(format!(
            "body must be {{\"records\": [...]}} or an array of records, not {other}"
        )
        .into()),
    }
}

/// Where a record's `data` lies in the body it was parsed from (`None`: the default, `{}`), so
/// the records can outlive the borrow (parsing runs on a blocking thread for large bodies).
pub fn data_range(body: &[u8], r: &Record<'_>) -> Option<std::ops::Range<usize>> {
    let d = r.data?.get();
    let start = (d.as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
    (start + d.len() <= body.len()).then(|| start..start + d.len())
}

/// The records as COPY text-format rows (`data_type`, `source`, `payload`), escaped so any
/// character a client sent (tab, newline, backslash) is stored as sent.
pub fn copy_text(records: &[Record<'_>]) -> Vec<u8> {
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
    for r in records {
        push_escaped(&mut out, &r.data_type);
        out.push('\t');
        push_escaped(&mut out, &r.source);
        out.push('\t');
        push_escaped(&mut out, r.data_text());
        out.push('\n');
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn bytes(v: &Value) -> Vec<u8> {
        serde_json::to_vec(v).unwrap()
    }

    fn data(r: &Record<'_>) -> Value {
        serde_json::from_str(r.data_text()).unwrap()
    }

    #[test]
    fn the_seed_example_parses() {
        let body = bytes(
            &json!({"type":"sensor","data":{"temperature":25.5,"humidity":60},"source":"api"}),
        );
        let (shape, recs) = parse_ingest_body(&body).unwrap();
        assert_eq!(shape, Shape::One);
        assert_eq!(recs[0].data_type, "sensor");
        assert_eq!(data(&recs[0]), json!({"temperature":25.5,"humidity":60}));
    }

    #[test]
    fn defaults_and_shapes() {
        let body = bytes(&json!([{"type":"a"},{"type":"b","source":"s"}]));
        let (shape, recs) = parse_ingest_body(&body).unwrap();
        assert_eq!(shape, Shape::Many);
        assert_eq!(recs[0].source, "api");
        assert_eq!(recs[0].data_text(), "{}");
        assert_eq!(recs[1].source, "s");
        let body = bytes(&json!({"records":[{"type":"a"}]}));
        let (_, recs) = parse_ingest_body(&body).unwrap();
        assert_eq!(recs.len(), 1);
    }

    #[test]
    fn numbers_keep_every_digit() {
        let body = br#"{"type":"n","data":[123456789012345678901234567890,1e-400,0.1]}"#;
        let (_, recs) = parse_ingest_body(body).unwrap();
        assert_eq!(
            recs[0].data_text(),
            "[123456789012345678901234567890,1e-400,0.1]"
        );
        let e = parse_ingest_body(br#"{"type":"n","data":1e400}"#).unwrap_err();
        assert!(
            matches!(&e, BodyError::Invalid(m) if m.starts_with("body.data: number out of range")),
            "{e:?}"
        );
    }

    #[test]
    fn copy_rows_escape_what_copy_would_interpret() {
        let body = br#"{"type":"a\tb","source":"c\\d\ne","data":{"k": "x\ny"}}"#;
        let (_, recs) = parse_ingest_body(body).unwrap();
        assert_eq!(
            String::from_utf8(copy_text(&recs)).unwrap(),
            "a\\tb\tc\\\\d\\ne\t{\"k\": \"x\\\\ny\"}\n"
        );
    }

    #[test]
    fn data_ranges_point_into_the_body() {
        let body = br#"[{"type":"a","data":{"k":[1,2]}},{"type":"b"}]"#;
        let (_, recs) = parse_ingest_body(body).unwrap();
        let r = data_range(body, &recs[0]).unwrap();
        assert_eq!(&body[r], br#"{"k":[1,2]}"#);
        assert_eq!(data_range(body, &recs[1]), None);
    }

    #[test]
    fn too_many_records_are_counted_not_kept() {
        let body = format!("[{}{{}}]", "0,".repeat(MAX_BATCH + 5));
        assert_eq!(
            parse_batch_body(body.as_bytes()).unwrap_err(),
            BodyError::TooMany(MAX_BATCH + 6)
        );
    }

    #[test]
    fn errors_name_the_record_and_field() {
        let invalid = |r: Result<Vec<Record<'_>>, BodyError>| match r {
            Err(BodyError::Invalid(m)) => m,
            other => panic!("expected a 400, got {other:?}"),
        };
        let body = bytes(&json!({"records":[{"type":"a"},{"type":5}]}));
        let e = invalid(parse_batch_body(&body));
        assert_eq!(e, "records[1].type: must be a string, not a number");
        let one = |v: Value| invalid(parse_ingest_body(&bytes(&v)).map(|(_, r)| r));
        let e = one(json!({"type":"a","temperature":5}));
        assert!(e.contains("unknown field \"temperature\""), "{e}");
        let e = one(json!({"records":[{"type":"a"}],"type":"b"}));
        assert!(
            e.contains("unknown field \"type\" next to \"records\""),
            "{e}"
        );
        let e = one(json!({"data":{}}));
        assert!(e.contains("missing required field \"type\""), "{e}");
        let e = one(json!({"type":"a","data":{"k":"nul\u{0}"}}));
        assert!(e.contains("NUL"), "{e}");
        let e = one(json!({"type":"a","data":{"nul\u{0}":1}}));
        assert!(e.contains("NUL"), "{e}");
        one(json!({"type": "x".repeat(65)}));
        invalid(parse_batch_body(&bytes(&json!({"records":[]}))));
        one(json!("text"));
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let e = invalid(
            parse_ingest_body(format!(r#"{{"type":"a","data":{deep}}}"#).as_bytes())
                .map(|(_, r)| r),
        );
        assert!(e.contains("recursion limit"), "{e}");
    }
}
