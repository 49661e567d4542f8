//! The data-ingest endpoints under `/api/v1`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use common::error::{ErrorDetail, ErrorEnvelope};
use common::server::ServiceInfo;
use common::{ApiError, ApiResult, AppState};
use poem::http::StatusCode;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use serde_json::Value;

use crate::records::{self, Record, Shape, MAX_BATCH};

#[derive(Tags)]
enum Tag {
    /// Taking records in
    Ingest,
    /// Reading what was ingested
    Reports,
    /// Service information
    Info,
}

pub struct Api {
    state: AppState,
}

impl Api {
    pub fn new(state: AppState) -> Self {
        Api { state }
    }
}

/// What was stored by `POST /ingest`.
#[derive(Object, Debug)]
pub struct Ingested {
    /// Always `ingested`.
    pub status: String,
    /// How many records were stored.
    pub ingested: i64,
    /// The id of the record, when the body was one record.
    pub id: Option<i64>,
    /// The ids of the stored records, in request order.
    pub ids: Vec<i64>,
}

/// What was stored by `POST /ingest/batch`: all records, or none.
#[derive(Object, Debug)]
pub struct BatchIngested {
    /// Always `ingested`.
    pub status: String,
    /// How many records were stored (all of the request's).
    pub ingested: i64,
}

#[derive(ApiResponse)]
pub enum IngestResponse {
    /// Stored.
    #[oai(status = 201)]
    Created(Json<Ingested>),
    /// The body is not a record, an array of records or `{"records": [...]}`.
    #[oai(status = 400)]
    BadRequest(Json<ErrorEnvelope>),
    /// More than 10,000 records.
    #[oai(status = 413)]
    TooLarge(Json<ErrorEnvelope>),
    /// This region's database is a read-only standby.
    #[oai(status = 503)]
    Unavailable(Json<ErrorEnvelope>),
}

#[derive(ApiResponse)]
pub enum BatchResponse {
    /// Every record stored, in one transaction.
    #[oai(status = 201)]
    Created(Json<BatchIngested>),
    /// A record is invalid; nothing was stored. The message names the record.
    #[oai(status = 400)]
    BadRequest(Json<ErrorEnvelope>),
    /// More than 10,000 records; nothing was stored.
    #[oai(status = 413)]
    TooLarge(Json<ErrorEnvelope>),
    /// This region's database is a read-only standby.
    #[oai(status = 503)]
    Unavailable(Json<ErrorEnvelope>),
}

/// Ingestion totals.
#[derive(Object, Debug)]
pub struct Stats {
    pub total_records: i64,
    pub records_last_hour: i64,
    pub last_ingested_at: Option<DateTime<Utc>>,
    /// Records per type (the 100 most common).
    pub by_type: BTreeMap<String, i64>,
    /// Records per source (the 100 most common).
    pub by_source: BTreeMap<String, i64>,
    pub region: String,
}

/// One stored record.
#[derive(Object, Debug)]
pub struct StoredRecord {
    pub id: i64,
    #[oai(rename = "type")]
    pub data_type: String,
    pub source: String,
    pub data: Value,
    pub ingested_at: DateTime<Utc>,
}

/// The newest records, newest first.
#[derive(Object, Debug)]
pub struct Recent {
    pub records: Vec<StoredRecord>,
    pub count: i64,
    pub limit: i64,
}

fn envelope(code: &str, message: String) -> Json<ErrorEnvelope> {
    Json(ErrorEnvelope {
        error: ErrorDetail {
            code: code.into(),
            message,
        },
    })
}

fn too_many(n: usize) -> Json<ErrorEnvelope> {
    envelope(
        "batch_too_large",
        format!("{n} records in one request; the limit is {MAX_BATCH}: split the batch"),
    )
}

/// Bodies with too many records are refused before each record is parsed.
fn record_count(body: &Value) -> usize {
    match body {
        Value::Array(a) => a.len(),
        Value::Object(o) => o
            .get("records")
            .and_then(Value::as_array)
            .map_or(1, Vec::len),
        _ => 0,
    }
}

fn columns(records: Vec<Record>) -> (Vec<String>, Vec<String>, Vec<Value>) {
    let mut types = Vec::with_capacity(records.len());
    let mut sources = Vec::with_capacity(records.len());
    let mut data = Vec::with_capacity(records.len());
    for r in records {
        types.push(r.data_type);
        sources.push(r.source);
        data.push(r.data);
    }
    (types, sources, data)
}

/// One COPY: a single statement, so the rows are stored all together or not at all, at the
/// database's bulk-load speed. Returns how many rows were stored.
async fn copy_in(pool: &sqlx::PgPool, rows: &[u8]) -> Result<u64, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let mut copy = conn
        .copy_in_raw("COPY ingested_data (data_type, source, payload) FROM STDIN")
        .await?;
    if let Err(e) = copy.send(rows).await {
        // Leave the connection usable; the COPY is rolled back either way.
        let _ = copy.abort("client failed while sending rows").await;
        return Err(e);
    }
    copy.finish().await
}

/// The error responses both ingest endpoints share, from a database error.
fn db_failure(context: &str, e: sqlx::Error) -> Result<Json<ErrorEnvelope>, poem::Error> {
    let err = ApiError::from_db(context, e);
    if err.status == StatusCode::SERVICE_UNAVAILABLE {
        Ok(envelope(err.code, err.message))
    } else {
        Err(err.into())
    }
}

#[OpenApi]
impl Api {
    /// Ingest one record, an array of records, or `{"records": [...]}` (at most 10,000).
    #[oai(path = "/ingest", method = "post", tag = "Tag::Ingest")]
    async fn ingest(&self, body: Json<Value>) -> ApiResult<IngestResponse> {
        let n = record_count(&body);
        if n > MAX_BATCH {
            return Ok(IngestResponse::TooLarge(too_many(n)));
        }
        let (shape, recs) = match records::parse_ingest_body(&body) {
            Ok(r) => r,
            Err(m) => return Ok(IngestResponse::BadRequest(envelope("invalid_record", m))),
        };
        let db = &self.state.db;
        let ids: Result<Vec<i64>, sqlx::Error> = if shape == Shape::One {
            let r = &recs[0];
            sqlx::query_scalar::<_, i64>(
                "INSERT INTO ingested_data (data_type, source, payload) VALUES ($1, $2, $3) RETURNING id",
            )
            .bind(&r.data_type)
            .bind(&r.source)
            .bind(&r.data)
            .fetch_one(db)
            .await
            .map(|id| vec![id])
        } else {
            let (types, sources, data) = columns(recs);
            sqlx::query_scalar::<_, i64>(
                "INSERT INTO ingested_data (data_type, source, payload) \
                 SELECT * FROM UNNEST($1::varchar[], $2::varchar[], $3::jsonb[]) RETURNING id",
            )
            .bind(types)
            .bind(sources)
            .bind(data)
            .fetch_all(db)
            .await
        };
        match ids {
            Ok(ids) => Ok(IngestResponse::Created(Json(Ingested {
                status: "ingested".into(),
                ingested: ids.len() as i64,
                id: (shape == Shape::One).then(|| ids[0]),
                ids,
            }))),
            Err(e) => db_failure("storing records", e).map(IngestResponse::Unavailable),
        }
    }

    /// Ingest up to 10,000 records in one COPY: all are stored, or none.
    #[oai(path = "/ingest/batch", method = "post", tag = "Tag::Ingest")]
    async fn ingest_batch(&self, body: Json<Value>) -> ApiResult<BatchResponse> {
        let n = record_count(&body);
        if n > MAX_BATCH {
            return Ok(BatchResponse::TooLarge(too_many(n)));
        }
        let recs = match records::parse_batch_body(&body) {
            Ok(r) => r,
            Err(m) => return Ok(BatchResponse::BadRequest(envelope("invalid_record", m))),
        };
        let rows = records::copy_text(&recs);
        match copy_in(&self.state.db, &rows).await {
            Ok(ingested) => Ok(BatchResponse::Created(Json(BatchIngested {
                status: "ingested".into(),
                ingested: ingested as i64,
            }))),
            Err(e) => db_failure("storing the batch", e).map(BatchResponse::Unavailable),
        }
    }

    /// Totals by type and source.
    #[oai(path = "/ingest/stats", method = "get", tag = "Tag::Reports")]
    async fn stats(&self) -> ApiResult<Json<Stats>> {
        let db = &self.state.db;
        let (total_records, records_last_hour, last_ingested_at) = sqlx::query_as::<
            _,
            (i64, i64, Option<DateTime<Utc>>),
        >(
            "SELECT count(*), count(*) FILTER (WHERE ingested_at > now() - interval '1 hour'), \
                 max(ingested_at) FROM ingested_data",
        )
        .fetch_one(db)
        .await
        .map_err(|e| ApiError::from_db("reading ingestion totals", e))?;
        let group = |column: &'static str| async move {
            sqlx::query_as::<_, (String, i64)>(&format!(
                "SELECT {column}, count(*) FROM ingested_data GROUP BY 1 ORDER BY 2 DESC LIMIT 100"
            ))
            .fetch_all(db)
            .await
            .map(|rows| rows.into_iter().collect::<BTreeMap<_, _>>())
            .map_err(|e| ApiError::from_db("reading ingestion totals", e))
        };
        Ok(Json(Stats {
            total_records,
            records_last_hour,
            last_ingested_at,
            by_type: group("data_type").await?,
            by_source: group("source").await?,
            region: self.state.config.region.clone(),
        }))
    }

    /// The newest records, newest first; `limit` from 1 to 100 (default 10).
    #[oai(path = "/ingest/recent", method = "get", tag = "Tag::Reports")]
    async fn recent(&self, limit: Query<Option<i64>>) -> ApiResult<Json<Recent>> {
        let limit = limit.0.unwrap_or(10);
        if !(1..=100).contains(&limit) {
            return Err(ApiError::bad_request(
                "invalid_limit",
                format!("limit must be between 1 and 100 (got {limit})"),
            )
            .into());
        }
        let rows = sqlx::query_as::<_, (i64, String, String, Value, DateTime<Utc>)>(
            "SELECT id, data_type, source, payload, ingested_at FROM ingested_data \
             ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.state.db)
        .await
        .map_err(|e| ApiError::from_db("reading recent records", e))?;
        let records: Vec<StoredRecord> = rows
            .into_iter()
            .map(|(id, data_type, source, data, ingested_at)| StoredRecord {
                id,
                data_type,
                source,
                data,
                ingested_at,
            })
            .collect();
        Ok(Json(Recent {
            count: records.len() as i64,
            records,
            limit,
        }))
    }

    /// Where this instance runs and which database it uses.
    #[oai(path = "/info", method = "get", tag = "Tag::Info")]
    async fn info(&self) -> Json<ServiceInfo> {
        Json(self.state.info().await)
    }
}
