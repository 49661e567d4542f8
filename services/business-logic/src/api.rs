//! The business-logic endpoints under `/api/v1`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use common::error::{ErrorDetail, ErrorEnvelope};
use common::server::ServiceInfo;
use common::{ApiError, ApiResult, AppState, RawJson};
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};

use crate::validation;

#[derive(Tags)]
enum Tag {
    /// Validation rules
    Validation,
    /// Orders
    Orders,
    /// Analytics
    Analytics,
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

/// A user to validate. Any JSON object is answered: 200 when it is a valid user, otherwise
/// 400 listing every problem (including missing, mistyped and unknown fields).
#[derive(Object, Debug)]
#[oai(example, deny_unknown_fields)]
pub struct UserInput {
    /// 3 to 50 letters, digits, `_`, `.` or `-`.
    pub username: String,
    /// `name@example.com`, at most 255 characters.
    pub email: String,
}

impl Example for UserInput {
    fn example() -> Self {
        UserInput {
            username: "testuser123".into(),
            email: "test@example.com".into(),
        }
    }
}

/// One problem with one field.
#[derive(Object, Debug)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// The user is valid.
#[derive(Object, Debug)]
pub struct Valid {
    pub valid: bool,
}

/// The user is not valid: the error shape plus every problem found.
#[derive(Object, Debug)]
pub struct Invalid {
    pub error: ErrorDetail,
    pub valid: bool,
    pub errors: Vec<FieldError>,
}

#[derive(ApiResponse)]
pub enum ValidateResponse {
    /// The user passes every rule.
    #[oai(status = 200)]
    Valid(Json<Valid>),
    /// The user breaks at least one rule; `errors` lists them.
    #[oai(status = 400)]
    Invalid(Json<Invalid>),
}

/// An order to process.
#[derive(Object, Debug)]
#[oai(example, deny_unknown_fields)]
pub struct OrderInput {
    /// The id of an existing user.
    #[oai(validator(minimum(value = "1")))]
    pub user_id: i64,
    /// Positive, at most 2 decimals, below 10,000,000,000.
    #[oai(validator(minimum(value = "0.01"), maximum(value = "9999999999.99")))]
    pub amount: f64,
}

impl Example for OrderInput {
    fn example() -> Self {
        OrderInput {
            user_id: 1,
            amount: 99.99,
        }
    }
}

/// A stored order.
#[derive(Object, Debug)]
pub struct Order {
    pub id: i64,
    pub user_id: i64,
    pub amount: f64,
    pub status: String,
    pub created_at: DateTime<Utc>,
}

#[derive(ApiResponse)]
pub enum OrderResponse {
    /// The order was stored with status `processed`.
    #[oai(status = 201)]
    Created(Json<Order>),
    /// Bad amount or user id.
    #[oai(status = 400)]
    BadRequest(Json<ErrorEnvelope>),
    /// No user with that id.
    #[oai(status = 404)]
    UnknownUser(Json<ErrorEnvelope>),
}

/// Orders with one status.
#[derive(Object, Debug)]
pub struct StatusTotals {
    pub count: i64,
    pub total_amount: f64,
}

/// Totals across the application.
#[derive(Object, Debug)]
pub struct Summary {
    pub total_users: i64,
    pub total_orders: i64,
    pub total_revenue: f64,
    pub average_order_value: f64,
    pub orders_by_status: BTreeMap<String, StatusTotals>,
    pub total_ingested_records: i64,
    pub region: String,
    pub generated_at: DateTime<Utc>,
}

fn envelope(code: &str, message: String) -> Json<ErrorEnvelope> {
    Json(ErrorEnvelope {
        error: ErrorDetail {
            code: code.into(),
            message,
        },
    })
}

#[OpenApi]
impl Api {
    /// Check a user against the rules (used by frontend-api before storing a user).
    #[oai(path = "/validate/user", method = "post", tag = "Tag::Validation")]
    async fn validate_user(&self, body: RawJson<UserInput>) -> ValidateResponse {
        let problems = match validation::user_fields(&body.bytes) {
            Ok((username, email)) => validation::check_user(&username, &email),
            Err(problems) => problems,
        };
        if problems.is_empty() {
            return ValidateResponse::Valid(Json(Valid { valid: true }));
        }
        let message = problems
            .iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect::<Vec<_>>()
            .join("; ");
        ValidateResponse::Invalid(Json(Invalid {
            error: ErrorDetail {
                code: "validation_failed".into(),
                message,
            },
            valid: false,
            errors: problems
                .into_iter()
                .map(|p| FieldError {
                    field: p.field.into(),
                    message: p.message,
                })
                .collect(),
        }))
    }

    /// Store an order for an existing user.
    #[oai(path = "/process/order", method = "post", tag = "Tag::Orders")]
    async fn process_order(&self, body: Json<OrderInput>) -> ApiResult<OrderResponse> {
        if body.user_id < 1 {
            return Ok(OrderResponse::BadRequest(envelope(
                "invalid_user_id",
                format!("user_id must be a positive integer (got {})", body.user_id),
            )));
        }
        let cents = match validation::check_amount(body.amount) {
            Ok(c) => c,
            Err(m) => return Ok(OrderResponse::BadRequest(envelope("invalid_amount", m))),
        };
        let row = sqlx::query_as::<_, (i64, i64, f64, String, DateTime<Utc>)>(
            "INSERT INTO orders (user_id, amount, status) \
             VALUES ($1, ($2::bigint)::numeric(14,0) / 100, 'processed') \
             RETURNING id, user_id, amount::float8, status, created_at",
        )
        .bind(body.user_id)
        .bind(cents)
        .fetch_one(self.state.db()?)
        .await;
        match row {
            Ok((id, user_id, amount, status, created_at)) => {
                Ok(OrderResponse::Created(Json(Order {
                    id,
                    user_id,
                    amount,
                    status,
                    created_at,
                })))
            }
            Err(e) if common::db::is_foreign_key_violation(&e) => {
                Ok(OrderResponse::UnknownUser(envelope(
                    "user_not_found",
                    format!("no user with id {}", body.user_id),
                )))
            }
            Err(e) => Err(ApiError::from_db("storing the order", e).into()),
        }
    }

    /// Totals of users, orders and ingested records.
    #[oai(path = "/analytics/summary", method = "get", tag = "Tag::Analytics")]
    async fn analytics_summary(&self) -> ApiResult<Json<Summary>> {
        let db = self.state.db()?;
        let (total_users, total_ingested, generated_at) =
            sqlx::query_as::<_, (i64, i64, DateTime<Utc>)>(
                "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM ingested_data), now()",
            )
            .fetch_one(db)
            .await
            .map_err(|e| ApiError::from_db("reading totals", e))?;
        let rows = sqlx::query_as::<_, (String, i64, f64)>(
            "SELECT status, count(*), coalesce(sum(amount), 0)::float8 FROM orders GROUP BY status",
        )
        .fetch_all(db)
        .await
        .map_err(|e| ApiError::from_db("reading order totals", e))?;
        let total_orders: i64 = rows.iter().map(|r| r.1).sum();
        let total_revenue: f64 = rows.iter().map(|r| r.2).sum();
        let average = if total_orders > 0 {
            (total_revenue / total_orders as f64 * 100.0).round() / 100.0
        } else {
            0.0
        };
        Ok(Json(Summary {
            total_users,
            total_orders,
            total_revenue: (total_revenue * 100.0).round() / 100.0,
            average_order_value: average,
            orders_by_status: rows
                .into_iter()
                .map(|(s, count, total_amount)| {
                    (
                        s,
                        StatusTotals {
                            count,
                            total_amount,
                        },
                    )
                })
                .collect(),
            total_ingested_records: total_ingested,
            region: self.state.config.region.clone(),
            generated_at,
        }))
    }

    /// Where this instance runs and which database it uses.
    #[oai(path = "/info", method = "get", tag = "Tag::Info")]
    async fn info(&self) -> Json<ServiceInfo> {
        Json(self.state.info().await)
    }
}

impl common::ServiceApi for Api {}
