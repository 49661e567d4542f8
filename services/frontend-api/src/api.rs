//! The frontend-api endpoints under `/api/v1`.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use common::error::{ErrorDetail, ErrorEnvelope};
use common::server::{FastAnswer, ServiceInfo};
use common::{
    ApiError, ApiResult, AppState, FastRequest, FastRoute, RawJson, RequestId, ServiceApi,
};
use poem::http::{Method, StatusCode};
use poem::{IntoResponse, Request};
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use serde_json::json;

use crate::upstream::Upstreams;

#[derive(Tags)]
enum Tag {
    /// Users
    Users,
    /// Data ingestion (passed through to data-ingest)
    Data,
    /// Service information
    Info,
}

pub struct Api {
    state: AppState,
    upstreams: Upstreams,
}

impl Api {
    pub fn new(state: AppState, upstreams: Upstreams) -> Self {
        Api { state, upstreams }
    }
}

fn request_id(req: &Request) -> &str {
    req.extensions()
        .get::<RequestId>()
        .map_or("", |r| r.0.as_str())
}

/// A user to create.
#[derive(Object, Debug)]
#[oai(example, deny_unknown_fields)]
pub struct NewUser {
    /// 3 to 50 letters, digits, `_`, `.` or `-` (checked by business-logic, which answers
    /// 400 with every problem; longer than 50 is refused here).
    #[oai(validator(max_length = 50))]
    pub username: String,
    /// `name@example.com`, at most 255 characters; unique, case-insensitively.
    #[oai(validator(max_length = 255))]
    pub email: String,
}

impl Example for NewUser {
    fn example() -> Self {
        NewUser {
            username: "testuser123".into(),
            email: "test@example.com".into(),
        }
    }
}

#[derive(serde::Deserialize)]
struct UserFields {
    username: String,
    email: String,
}

/// A problem with one field of a user.
#[derive(Object, Debug)]
pub struct FieldProblem {
    pub field: String,
    pub message: String,
}

/// The user breaks a rule: the error shape plus every problem (business-logic's answer).
#[derive(Object, Debug)]
pub struct UserInvalid {
    pub error: ErrorDetail,
    pub valid: bool,
    pub errors: Vec<FieldProblem>,
}

/// data-ingest's answer to a stored record or records.
#[derive(Object, Debug)]
pub struct IngestedAnswer {
    pub status: String,
    pub ingested: i64,
    /// The id of the record, when the body was one record.
    pub id: Option<i64>,
    pub ids: Vec<i64>,
}

/// A stored user.
#[derive(Object, Debug)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub created_at: DateTime<Utc>,
}

/// One page of users, oldest first.
#[derive(Object, Debug)]
pub struct UserPage {
    pub users: Vec<User>,
    /// Users on this page.
    pub count: i64,
    /// Users in all.
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

#[derive(ApiResponse)]
pub enum CreateUserResponse {
    /// Stored.
    #[oai(status = 201)]
    Created(Json<User>),
    /// The user breaks a rule; `errors` lists every problem (from business-logic).
    #[oai(status = 400)]
    Invalid(RawJson<UserInvalid>),
    /// The username or email is taken.
    #[oai(status = 409)]
    Conflict(Json<ErrorEnvelope>),
    /// The body is larger than business-logic takes (64 KiB).
    #[oai(status = 413)]
    TooLarge(Json<ErrorEnvelope>),
}

/// data-ingest's answer, body as it gave it.
#[derive(ApiResponse)]
pub enum ProxyResponse {
    /// Stored.
    #[oai(status = 201)]
    Created(RawJson<IngestedAnswer>),
    /// Not a record, an array of records or `{"records": [...]}`.
    #[oai(status = 400)]
    BadRequest(RawJson<ErrorEnvelope>),
    /// More than 10,000 records.
    #[oai(status = 413)]
    TooLarge(RawJson<ErrorEnvelope>),
    /// data-ingest, or its database, cannot take writes now (read-only standby, down,
    /// overloaded).
    #[oai(status = 503)]
    Unavailable(RawJson<ErrorEnvelope>),
}

fn conflict(message: String) -> CreateUserResponse {
    CreateUserResponse::Conflict(Json(ErrorEnvelope {
        error: ErrorDetail {
            code: "conflict".into(),
            message,
        },
    }))
}

#[OpenApi]
impl Api {
    /// List users, oldest first: `limit` 1 to 100 (default 50), `offset` from 0.
    #[oai(path = "/users", method = "get", tag = "Tag::Users")]
    async fn list_users(
        &self,
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))] limit: Query<Option<i64>>,
        #[oai(validator(minimum(value = "0"), maximum(value = "10000000")))] offset: Query<
            Option<i64>,
        >,
    ) -> ApiResult<Json<UserPage>> {
        let limit = limit.0.unwrap_or(50);
        let offset = offset.0.unwrap_or(0);
        if !(1..=100).contains(&limit) {
            return Err(ApiError::bad_request(
                "invalid_limit",
                format!("limit must be between 1 and 100 (got {limit})"),
            )
            .into());
        }
        if !(0..=10_000_000).contains(&offset) {
            return Err(ApiError::bad_request(
                "invalid_offset",
                format!("offset must be between 0 and 10000000 (got {offset})"),
            )
            .into());
        }
        let db = self.state.db()?;
        let rows = sqlx::query_as::<_, (i64, String, String, DateTime<Utc>)>(
            "SELECT id, username, email, created_at FROM users ORDER BY id LIMIT $1 OFFSET $2",
        )
        .bind(limit)
        .bind(offset)
        .fetch_all(db)
        .await
        .map_err(|e| ApiError::from_db("listing users", e))?;
        let total = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM users")
            .fetch_one(db)
            .await
            .map_err(|e| ApiError::from_db("counting users", e))?;
        let users: Vec<User> = rows
            .into_iter()
            .map(|(id, username, email, created_at)| User {
                id,
                username,
                email,
                created_at,
            })
            .collect();
        Ok(Json(UserPage {
            count: users.len() as i64,
            users,
            total,
            limit,
            offset,
        }))
    }

    /// Create a user: validated by business-logic (the body as sent, so every problem, of
    /// shape or of rule, comes back as one 400 listing them), then stored.
    #[oai(path = "/users", method = "post", tag = "Tag::Users")]
    async fn create_user(
        &self,
        req: &Request,
        body: RawJson<NewUser>,
    ) -> ApiResult<CreateUserResponse> {
        let (status, bytes) = self
            .upstreams
            .post_bytes(
                &self.upstreams.validate_user,
                body.bytes.clone(),
                request_id(req),
                req.header("authorization"),
            )
            .await?;
        let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        match status {
            StatusCode::OK if answer["valid"] == json!(true) => {}
            StatusCode::PAYLOAD_TOO_LARGE => {
                return Ok(CreateUserResponse::TooLarge(Json(ErrorEnvelope {
                    error: ErrorDetail {
                        code: "payload_too_large".into(),
                        message: "the body is larger than a user can be (64 KiB)".into(),
                    },
                })))
            }
            StatusCode::BAD_REQUEST if answer["valid"] == json!(false) => {
                return Ok(CreateUserResponse::Invalid(RawJson::new(
                    StatusCode::BAD_REQUEST,
                    bytes,
                )));
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                return Err(ApiError::unavailable(
                    "upstream_unavailable",
                    "business-logic cannot validate users now; retry later",
                )
                .into())
            }
            other => {
                tracing::warn!(status = %other, body = %answer, "unexpected answer from business-logic");
                return Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "bad_gateway",
                    format!("business-logic answered {other} to the user validation"),
                )
                .into());
            }
        }
        // business-logic found two string fields and nothing else.
        let body: UserFields = serde_json::from_slice(&body.bytes).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                "business-logic accepted a user that is not one",
            )
        })?;
        let row = sqlx::query_as::<_, (i64, String, String, DateTime<Utc>)>(
            "INSERT INTO users (username, email) VALUES ($1, $2) \
             RETURNING id, username, email, created_at",
        )
        .bind(&body.username)
        .bind(&body.email)
        .fetch_one(self.state.db()?)
        .await;
        match row {
            Ok((id, username, email, created_at)) => Ok(CreateUserResponse::Created(Json(User {
                id,
                username,
                email,
                created_at,
            }))),
            Err(e) => match common::db::unique_violation(&e).as_deref() {
                Some("users_username_key") => Ok(conflict(format!(
                    "username {:?} is already taken",
                    body.username
                ))),
                Some("users_email_key") => Ok(conflict(format!(
                    "email {:?} is already registered",
                    body.email
                ))),
                _ => Err(ApiError::from_db("storing the user", e).into()),
            },
        }
    }

    /// Ingest data: passed to data-ingest `POST /api/v1/ingest` as is; its status and body
    /// come back unchanged. 503 when data-ingest cannot be reached, 504 when it is too slow.
    ///
    /// A JSON body is answered by [`IngestRoute`] before poem's router; this operation
    /// documents the route and answers the rest (415 for a body that is not JSON).
    #[oai(path = "/data/ingest", method = "post", tag = "Tag::Data")]
    async fn ingest(
        &self,
        req: &Request,
        body: RawJson<common::openapi::IngestBody>,
    ) -> ApiResult<ProxyResponse> {
        let head = self.upstreams.ingest.head(
            body.bytes.len(),
            request_id(req),
            req.header("authorization"),
        );
        let (status, bytes) = forward_ingest(&self.upstreams, head, body.bytes).await?;
        Ok(match status {
            StatusCode::CREATED => ProxyResponse::Created(RawJson::new(status, bytes)),
            StatusCode::BAD_REQUEST => ProxyResponse::BadRequest(RawJson::new(status, bytes)),
            StatusCode::PAYLOAD_TOO_LARGE => ProxyResponse::TooLarge(RawJson::new(status, bytes)),
            // 503: the only other status `forward_ingest` passes on.
            _ => ProxyResponse::Unavailable(RawJson::new(status, bytes)),
        })
    }

    /// Where this instance runs, which database and backends it uses.
    #[oai(path = "/info", method = "get", tag = "Tag::Info")]
    async fn info(&self) -> Json<FrontendInfo> {
        Json(FrontendInfo {
            service: self.state.info().await,
            business_logic_url: self.upstreams.business_logic.clone(),
            data_ingest_url: self.upstreams.data_ingest.clone(),
        })
    }
}

/// `POST /api/v1/data/ingest` to data-ingest: its answer when it is one the operation
/// documents, else 502.
async fn forward_ingest(
    upstreams: &Upstreams,
    head: Vec<u8>,
    body: Bytes,
) -> Result<(StatusCode, Bytes), ApiError> {
    let (status, bytes) = upstreams.post(&upstreams.ingest, head, body).await?;
    match status {
        StatusCode::CREATED
        | StatusCode::BAD_REQUEST
        | StatusCode::PAYLOAD_TOO_LARGE
        | StatusCode::SERVICE_UNAVAILABLE => Ok((status, bytes)),
        other => {
            tracing::warn!(status = %other, "unexpected answer from data-ingest");
            Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                format!("data-ingest answered {other} to the ingestion"),
            ))
        }
    }
}

/// `POST /api/v1/data/ingest` with a JSON body, answered without poem's router and
/// extractors (the gateway's hot path: docs/performance.md, "Fifth pass"). Anything else is
/// left to [`Api::ingest`].
struct IngestRoute(Upstreams);

impl FastRoute for IngestRoute {
    fn method(&self) -> Method {
        Method::POST
    }

    fn path(&self) -> &'static str {
        "/api/v1/data/ingest"
    }

    fn answer<'a>(&'a self, req: &FastRequest<'_>, body: Bytes) -> Option<FastAnswer<'a>> {
        if !req.content_type.is_some_and(common::payload::is_json) {
            return None;
        }
        let head = self
            .0
            .ingest
            .head(body.len(), req.request_id, req.authorization);
        Some(Box::pin(async move {
            match forward_ingest(&self.0, head, body).await {
                Ok((status, bytes)) => {
                    RawJson::<IngestedAnswer>::new(status, bytes).into_response()
                }
                Err(e) => e.to_response(),
            }
        }))
    }
}

impl ServiceApi for Api {
    fn fast_routes(&self) -> Vec<Arc<dyn FastRoute>> {
        vec![Arc::new(IngestRoute(self.upstreams.clone()))]
    }
}

/// frontend-api's `/info`: the common fields plus its backends.
#[derive(Object, Debug)]
pub struct FrontendInfo {
    #[oai(flatten)]
    pub service: ServiceInfo,
    pub business_logic_url: String,
    pub data_ingest_url: String,
}
