//! A JSON body kept as bytes: documented in the OpenAPI document with the schema of `T`, but
//! neither parsed into a `serde_json::Value` tree on the way in nor built from one on the way
//! out.
//!
//! poem-openapi's `Json<T>` turns every body into a whole `Value` first (about 30 bytes per JSON
//! value: a 16 MB array of zeros became 550 MB) and answers through one as well. With
//! [`RawJson`] a handler parses the bytes itself, borrowing from them (`&RawValue` for opaque
//! parts, which also keeps numbers exactly as sent), and writes its answer as bytes.

use std::marker::PhantomData;

use bytes::Bytes;
use poem::http::StatusCode;
use poem::{IntoResponse, Request, RequestBody, Response};
use poem_openapi::registry::{
    MetaMediaType, MetaRequest, MetaResponse, MetaResponses, MetaSchemaRef, Registry,
};
use poem_openapi::types::Type;
use poem_openapi::{ApiExtractor, ApiExtractorType, ApiResponse, ExtractParamOptions};

use crate::ApiError;

const CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// JSON bytes documented as `T`.
pub struct RawJson<T> {
    pub bytes: Bytes,
    status: StatusCode,
    _schema: PhantomData<fn() -> T>,
}

impl<T> RawJson<T> {
    /// An answer with `status` and JSON `bytes` the caller guarantees match `T`'s schema.
    pub fn new(status: StatusCode, bytes: impl Into<Bytes>) -> Self {
        RawJson {
            bytes: bytes.into(),
            status,
            _schema: PhantomData,
        }
    }
}

/// `application/json`, `application/json; charset=utf-8`, `application/problem+json`, ...
pub fn is_json(content_type: &str) -> bool {
    // The common case without the parser's allocation.
    content_type.eq_ignore_ascii_case("application/json")
        || matches!(content_type.parse::<mime::Mime>(), Ok(m) if m.type_() == "application"
        && (m.subtype() == "json" || m.suffix().is_some_and(|s| s == "json")))
}

impl<T: Type> poem_openapi::payload::Payload for RawJson<T> {
    const CONTENT_TYPE: &'static str = CONTENT_TYPE;

    fn check_content_type(content_type: &str) -> bool {
        is_json(content_type)
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<'a, T: Type> ApiExtractor<'a> for RawJson<T> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: CONTENT_TYPE,
                schema: T::schema_ref(),
            }],
            required: true,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        if !request.content_type().is_some_and(is_json) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected a JSON body with Content-Type: application/json",
            )
            .into());
        }
        // The body was read (bounded, timed and accounted) by the server's middleware.
        let bytes = body.take()?.into_bytes().await.map_err(|_| {
            ApiError::bad_request("invalid_request", "the request body could not be read")
        })?;
        Ok(RawJson::new(StatusCode::OK, bytes))
    }
}

impl<T: Type> IntoResponse for RawJson<T> {
    fn into_response(self) -> Response {
        Response::builder()
            .status(self.status)
            .content_type(CONTENT_TYPE)
            .body(self.bytes)
    }
}

impl<T: Type> ApiResponse for RawJson<T> {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "",
                status: Some(200),
                status_range: None,
                content: vec![MetaMediaType {
                    content_type: CONTENT_TYPE,
                    schema: T::schema_ref(),
                }],
                headers: vec![],
            }],
        }
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}
