//! The data-ingest endpoints under `/api/v1`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use common::db::Lanes;
use common::error::{ErrorDetail, ErrorEnvelope};
use common::openapi::{IngestBody, RecordsDoc};
use common::server::ServiceInfo;
use common::{ApiError, ApiResult, AppState, RawJson};
use poem::http::StatusCode;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use serde_json::Value;

use crate::records::{self, BodyError, Shape, MAX_BATCH};

#[derive(Tags)]
enum Tag {
    /// Taking records in
    Ingest,
    /// Reading what was ingested
    Reports,
    /// Service information
    Info,
}

/// One record: its id.
pub(crate) const INSERT_ONE: &str =
    "INSERT INTO ingested_data (data_type, source, payload) VALUES ($1, $2, $3::jsonb) RETURNING id";
/// Many records in one statement (three arrays): their ids in the arrays' order.
pub(crate) const INSERT_MANY: &str = "INSERT INTO ingested_data (data_type, source, payload) \
     SELECT t, s, d::jsonb FROM UNNEST($1::varchar[], $2::varchar[], $3::text[]) \
     WITH ORDINALITY AS u(t, s, d, n) ORDER BY n RETURNING id";

pub struct Api {
    state: AppState,
    /// Connections of `POST /ingest` (see [`Lanes`]); `None` only if the database
    /// configuration were invalid, which the state already refused.
    lanes: Option<std::sync::Arc<Lanes>>,
    /// Group commit of single-record ingests (`GROUP_COMMIT_US`; on unless `off`).
    group: Option<crate::group::GroupCommit>,
}

impl Api {
    pub fn new(state: AppState) -> Self {
        let lanes = Lanes::new(&state.config.database)
            .ok()
            .map(std::sync::Arc::new);
        let group = match (&lanes, state.config.group_commit) {
            (Some(l), Some(window)) => Some(crate::group::GroupCommit::start(
                l.clone(),
                window,
                state.config.group_commit_writers,
            )),
            _ => None,
        };
        Api {
            state,
            lanes,
            group,
        }
    }

    /// Runs `INSERT ... RETURNING id` statements (one for a record, one for many) on a lane.
    async fn insert<'q>(
        &self,
        query: sqlx::query::QueryScalar<'q, sqlx::Postgres, i64, sqlx::postgres::PgArguments>,
    ) -> Result<Vec<i64>, sqlx::Error> {
        let Some(lanes) = &self.lanes else {
            return query
                .fetch_all(self.state.db().map_err(|_| sqlx::Error::PoolClosed)?)
                .await;
        };
        let mut lane = lanes.take().await?;
        let result = query.fetch_all(&mut lane.conn).await;
        lane.done(&result);
        result
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
    Created(RawJson<Ingested>),
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

/// The newest records, newest first, at most `MAX_RESPONSE_BYTES` of them in all.
#[derive(Object, Debug)]
pub struct Recent {
    pub records: Vec<StoredRecord>,
    /// Records in this answer.
    pub count: i64,
    pub limit: i64,
    /// True when older records within `limit` were left out to keep the answer under the
    /// response size bound (`MAX_RESPONSE_BYTES`, 8 MiB by default).
    pub truncated: bool,
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

/// A record's type, source and where its data lies in the body.
type Row = (String, String, Option<std::ops::Range<usize>>);

/// Bodies above this are parsed on a blocking thread, so that parsing megabytes never holds
/// up the runtime's workers (and with them `/health/live`).
const INLINE_PARSE_BYTES: usize = 64 * 1024;

async fn off_the_runtime<T: Send + 'static>(
    body: bytes::Bytes,
    f: impl FnOnce(&[u8]) -> T + Send + 'static,
) -> Result<T, ApiError> {
    if body.len() <= INLINE_PARSE_BYTES {
        return Ok(f(&body));
    }
    tokio::task::spawn_blocking(move || f(&body))
        .await
        .map_err(|e| ApiError::internal("parsing the body", &e))
}

/// The [`Ingested`] answer, written directly (the hot path: no `Value` tree in between).
fn ingested(id: Option<i64>, ids: &[i64]) -> RawJson<Ingested> {
    use std::fmt::Write;
    let mut out = String::with_capacity(64 + ids.len() * 12);
    let _ = write!(
        out,
        "{{\"status\":\"ingested\",\"ingested\":{},\"id\":",
        ids.len()
    );
    let _ = match id {
        Some(id) => write!(out, "{id}"),
        None => write!(out, "null"),
    };
    out.push_str(",\"ids\":[");
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{id}");
    }
    out.push_str("]}");
    RawJson::new(StatusCode::CREATED, out)
}

/// A refused body: 400 with the message, or 413 for too many records.
fn refused(e: BodyError) -> Result<Json<ErrorEnvelope>, Json<ErrorEnvelope>> {
    match e {
        BodyError::Invalid(m) => Ok(envelope("invalid_record", m)),
        BodyError::TooMany(n) => Err(too_many(n)),
    }
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
    async fn ingest(&self, body: RawJson<IngestBody>) -> ApiResult<IngestResponse> {
        let body = body.bytes;
        let parsed = off_the_runtime(body.clone(), |b| {
            records::parse_ingest_body(b).map(|(shape, recs)| {
                let rows: Vec<Row> = recs
                    .iter()
                    .map(|r| {
                        (
                            r.data_type.clone(),
                            r.source.clone(),
                            records::data_range(b, r),
                        )
                    })
                    .collect();
                (shape, rows)
            })
        })
        .await?;
        let (shape, rows) = match parsed {
            Ok(r) => r,
            Err(e) => {
                return Ok(match refused(e) {
                    Ok(bad) => IngestResponse::BadRequest(bad),
                    Err(large) => IngestResponse::TooLarge(large),
                })
            }
        };
        // The body was checked to be UTF-8 JSON, and the ranges point at whole values in it.
        let text = std::str::from_utf8(&body).unwrap_or_default();
        let data = |r: &Option<std::ops::Range<usize>>| {
            r.clone().and_then(|r| text.get(r)).unwrap_or("{}")
        };
        // Known down: 503 at once.
        self.state.db()?;
        let ids: Result<Vec<i64>, sqlx::Error> =
            if let (Shape::One, Some(group)) = (&shape, &self.group) {
                let (data_type, source, range) = &rows[0];
                let alone = self.state.requests_in_flight() <= 1;
                group
                    .insert(data_type, source, data(range), alone)
                    .await
                    .map(|id| vec![id])
            } else if shape == Shape::One {
                let (data_type, source, range) = &rows[0];
                self.insert(
                    sqlx::query_scalar::<_, i64>(INSERT_ONE)
                        .bind(data_type)
                        .bind(source)
                        .bind(data(range)),
                )
                .await
            } else {
                let types: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
                let sources: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
                let payloads: Vec<&str> = rows.iter().map(|r| data(&r.2)).collect();
                let query = sqlx::query_scalar::<_, i64>(INSERT_MANY)
                    .bind(types)
                    .bind(sources)
                    .bind(payloads);
                self.insert(query).await
            };
        match ids {
            Ok(ids) => Ok(IngestResponse::Created(ingested(
                (shape == Shape::One).then(|| ids[0]),
                &ids,
            ))),
            Err(e) => db_failure("storing records", e).map(IngestResponse::Unavailable),
        }
    }

    /// Ingest up to 10,000 records in one COPY: all are stored, or none.
    #[oai(path = "/ingest/batch", method = "post", tag = "Tag::Ingest")]
    async fn ingest_batch(&self, body: RawJson<RecordsDoc>) -> ApiResult<BatchResponse> {
        let rows = off_the_runtime(body.bytes, |b| {
            records::parse_batch_body(b).map(|recs| records::copy_text(&recs))
        })
        .await?;
        let rows = match rows {
            Ok(r) => r,
            Err(e) => {
                return Ok(match refused(e) {
                    Ok(bad) => BatchResponse::BadRequest(bad),
                    Err(large) => BatchResponse::TooLarge(large),
                })
            }
        };
        match copy_in(self.state.db()?, &rows).await {
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
        let db = self.state.db()?;
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

    /// The newest records, newest first; `limit` from 1 to 100 (default 10). The answer
    /// holds at most `MAX_RESPONSE_BYTES` (8 MiB by default): older records past that are left
    /// out and `truncated` is true.
    #[oai(path = "/ingest/recent", method = "get", tag = "Tag::Reports")]
    async fn recent(
        &self,
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))] limit: Query<Option<i64>>,
    ) -> ApiResult<RawJson<Recent>> {
        let limit = limit.0.unwrap_or(10);
        if !(1..=100).contains(&limit) {
            return Err(ApiError::bad_request(
                "invalid_limit",
                format!("limit must be between 1 and 100 (got {limit})"),
            )
            .into());
        }
        let bound = self.state.config.limits.max_response_bytes;
        // The database adds up each record's size as it will be written (strings may grow six
        // times when escaped) and returns only those that fit: nothing larger is ever loaded.
        let rows = sqlx::query_as::<_, (i64, String, String, String, DateTime<Utc>, i64)>(
            "SELECT id, data_type, source, payload, ingested_at, available FROM ( \
               SELECT id, data_type, source, payload::text AS payload, ingested_at, \
                 count(*) OVER () AS available, \
                 sum(octet_length(payload::text) + 6 * octet_length(data_type) \
                     + 6 * octet_length(source) + 128) OVER (ORDER BY id DESC) AS running \
               FROM (SELECT * FROM ingested_data ORDER BY id DESC LIMIT $1) newest \
             ) sized WHERE running <= $2 - 128 ORDER BY id DESC",
        )
        .bind(limit)
        .bind(bound as i64)
        .fetch_all(self.state.db()?)
        .await
        .map_err(|e| ApiError::from_db("reading recent records", e))?;
        let available = match rows.first() {
            Some(r) => r.5,
            None => sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM (SELECT 1 FROM ingested_data LIMIT $1) n",
            )
            .bind(limit)
            .fetch_one(self.state.db()?)
            .await
            .map_err(|e| ApiError::from_db("reading recent records", e))?,
        };
        let mut out = String::with_capacity(rows.iter().map(|r| r.3.len() + 160).sum());
        out.push_str("{\"records\":[");
        for (i, (id, data_type, source, payload, at, _)) in rows.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let text = |s: &str| serde_json::to_string(s).unwrap_or_default();
            out.push_str(&format!(
                "{{\"id\":{id},\"type\":{},\"source\":{},\"data\":{payload},\"ingested_at\":{}}}",
                text(data_type),
                text(source),
                text(&at.to_rfc3339()),
            ));
        }
        out.push_str(&format!(
            "],\"count\":{},\"limit\":{limit},\"truncated\":{}}}",
            rows.len(),
            (rows.len() as i64) < available
        ));
        Ok(RawJson::new(StatusCode::OK, out))
    }

    /// Where this instance runs and which database it uses.
    #[oai(path = "/info", method = "get", tag = "Tag::Info")]
    async fn info(&self) -> Json<ServiceInfo> {
        Json(self.state.info().await)
    }
}

impl common::ServiceApi for Api {}
