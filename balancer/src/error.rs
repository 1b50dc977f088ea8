//! Errors: [`AppError`], the one HTTP error (always `{"error": {"code", "message"}}` with
//! its status; internal details logged, never sent), the [`ApiJson`], [`ApiPath`] and
//! [`ApiQuery`] extractors whose rejections take the same shape, and [`Error`], what
//! starting the service can fail with.
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use plb_api::{ErrorBody, ErrorDetail};

use crate::config::ConfigError;
use crate::store::StoreError;

/// Why the balancer could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config is unusable.
    #[error("config: {0}")]
    Config(#[from] ConfigError),
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The probe runtime could not start.
    #[error("probe runtime: {0}")]
    Runtime(#[from] plb_runtime::RuntimeError),
    /// Binding or serving failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// An HTTP error answer.
#[derive(Debug)]
pub enum AppError {
    /// 400 with a code, e.g. `invalid_json`, `invalid_settings`.
    BadRequest(&'static str, String),
    /// 401: no token or an unknown one.
    Unauthorized(String),
    /// 403: a valid token that may not do this.
    Forbidden(String),
    /// 404.
    NotFound(String),
    /// 409.
    Conflict(String),
    /// 413.
    TooLarge(String),
    /// 415.
    UnsupportedMediaType(String),
    /// 422 with a code, e.g. `invalid_probe`, `invalid_report`.
    Unprocessable(&'static str, String),
    /// 403 `quota_exceeded`: the request would take the client past one of its quotas
    /// (the message names the quota and its value).
    QuotaExceeded(String),
    /// 429 with a code and `Retry-After` (seconds): the caller has as many requests of
    /// this kind in progress as it may; try again later.
    TooManyRequests {
        /// The code, e.g. `too_many_uploads`.
        code: &'static str,
        /// What is busy.
        message: String,
        /// The `Retry-After` header, seconds.
        retry_after_s: u64,
    },
    /// 500: logged in full, answered with a generic message.
    Internal(String),
    /// 503: the store is shutting down.
    Unavailable(String),
}

impl AppError {
    /// A 400 `invalid_request` naming the problem.
    pub fn bad_request(message: impl Into<String>) -> Self {
        AppError::BadRequest("invalid_request", message.into())
    }

    /// A 500 whose cause is logged, never sent.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        AppError::Internal(cause.to_string())
    }

    /// The status and the code.
    pub fn status_code(&self) -> (StatusCode, &'static str) {
        match self {
            AppError::BadRequest(code, _) => (StatusCode::BAD_REQUEST, code),
            AppError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            AppError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            AppError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            AppError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            AppError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            AppError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            AppError::Unprocessable(code, _) => (StatusCode::UNPROCESSABLE_ENTITY, code),
            AppError::QuotaExceeded(_) => (StatusCode::FORBIDDEN, "quota_exceeded"),
            AppError::TooManyRequests { code, .. } => (StatusCode::TOO_MANY_REQUESTS, code),
            AppError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            AppError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        }
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (status, code) = self.status_code();
        write!(f, "{status} {code}")
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => AppError::NotFound(format!("{what} not found")),
            StoreError::Conflict(m) => AppError::Conflict(m),
            StoreError::Forbidden(m) => AppError::Forbidden(m),
            StoreError::Invalid(m) => AppError::Unprocessable("invalid_reference", m),
            StoreError::Closed => AppError::Unavailable("the balancer is shutting down".into()),
            StoreError::Quota(q) => AppError::QuotaExceeded(q.to_string()),
            other => AppError::Internal(other.to_string()),
        }
    }
}

impl From<JsonRejection> for AppError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::MissingJsonContentType(_) => AppError::UnsupportedMediaType(
                "expected a JSON body with `Content-Type: application/json`".into(),
            ),
            JsonRejection::JsonSyntaxError(e) => {
                AppError::BadRequest("invalid_json", format!("malformed JSON: {}", e.body_text()))
            }
            JsonRejection::JsonDataError(e) => {
                AppError::Unprocessable("invalid_body", e.body_text())
            }
            JsonRejection::BytesRejection(e) => {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    AppError::TooLarge(
                        "the request body is larger than this endpoint accepts".into(),
                    )
                } else {
                    AppError::bad_request(format!("cannot read the body: {}", e.body_text()))
                }
            }
            other => AppError::bad_request(other.body_text()),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_code();
        let retry_after = match &self {
            AppError::TooManyRequests { retry_after_s, .. } => Some(*retry_after_s),
            _ => None,
        };
        let message = match self {
            AppError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                "internal error; see the balancer's log".to_string()
            }
            AppError::BadRequest(_, m)
            | AppError::Unauthorized(m)
            | AppError::Forbidden(m)
            | AppError::NotFound(m)
            | AppError::Conflict(m)
            | AppError::TooLarge(m)
            | AppError::UnsupportedMediaType(m)
            | AppError::Unprocessable(_, m)
            | AppError::QuotaExceeded(m)
            | AppError::TooManyRequests { message: m, .. }
            | AppError::Unavailable(m) => m,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_string(),
                message,
            },
        };
        let mut resp = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(s) = retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

/// `axum::Json` for a body that must be a JSON object (every request type but
/// feedback's bare array): an empty body, a body of another JSON type (serde would read
/// a struct from an array, so `[null, null]` was a valid `UpdatePool`) and every other
/// rejection are answered as an [`AppError`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        json_body(req, state, true).await.map(ApiJson)
    }
}

/// Like [`ApiJson`], for a body that may be any JSON value (feedback: an item, a batch
/// object or a bare array); the handler checks its shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJsonAny<T>(pub T);

impl<S, T> FromRequest<S> for ApiJsonAny<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        json_body(req, state, false).await.map(ApiJsonAny)
    }
}

/// Reads and parses a JSON body: 415 without a JSON content type, 413 past the body
/// limit, 400 `empty_body` or `invalid_json`, 422 `invalid_body` for a well-formed body
/// of the wrong shape (with `object`, anything but a JSON object).
async fn json_body<S, T>(req: Request, state: &S, object: bool) -> Result<T, AppError>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    if !is_json(req.headers()) {
        return Err(AppError::UnsupportedMediaType(
            "expected a JSON body with `Content-Type: application/json`".into(),
        ));
    }
    let bytes = bytes::Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::TooLarge("the request body is larger than this endpoint accepts".into())
        } else {
            AppError::bad_request(format!("cannot read the body: {}", e.body_text()))
        }
    })?;
    let Some(&first) = bytes.iter().find(|b| !b.is_ascii_whitespace()) else {
        return Err(AppError::BadRequest(
            "empty_body",
            "the request body is empty; expected a JSON object".into(),
        ));
    };
    if object && first != b'{' {
        return Err(not_an_object(&bytes, first));
    }
    match axum::Json::<T>::from_bytes(&bytes) {
        Ok(axum::Json(v)) => Ok(v),
        Err(r) => Err(r.into()),
    }
}

/// The answer to a body that does not start with `{`: 400 if it is not JSON at all, else
/// 422 naming the JSON type sent.
fn not_an_object(bytes: &[u8], first: u8) -> AppError {
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
        return AppError::BadRequest("invalid_json", format!("malformed JSON: {e}"));
    }
    let kind = match first {
        b'[' => "an array",
        b'"' => "a string",
        b't' | b'f' => "a boolean",
        b'n' => "null",
        _ => "a number",
    };
    AppError::Unprocessable(
        "invalid_body",
        format!("the request body must be a JSON object (`{{...}}`), got {kind}"),
    )
}

/// Whether the request says its body is JSON (`application/json`, `application/*+json`).
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

impl<T: serde::Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Answers every unknown route with the error shape.
pub async fn not_found() -> AppError {
    AppError::NotFound("no such endpoint".into())
}

/// Answers a wrong method on a known route with the error shape.
pub async fn method_not_allowed() -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: "method_not_allowed".into(),
            message: "this endpoint does not take that method".into(),
        },
    };
    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}

/// `axum::extract::Path`, with rejections answered as an [`AppError`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiPath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(r) => Err(AppError::BadRequest("invalid_path", r.body_text())),
        }
    }
}

/// `axum::extract::Query`, with a bad query string answered as an [`AppError`]: 400
/// `invalid_query` with a message naming the parameter (e.g. "Failed to deserialize query
/// string: limit: invalid digit found in string").
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T: serde::de::DeserializeOwned> ApiQuery<T> {
    /// Parses the query string of `uri` (for handlers that read it beside a body).
    pub fn try_from_uri(uri: &axum::http::Uri) -> Result<Self, AppError> {
        match axum::extract::Query::<T>::try_from_uri(uri) {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(r) => Err(query_rejection(&r)),
        }
    }
}

impl<S, T> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Self::try_from_uri(&parts.uri)
    }
}

/// A query string's rejection in the one error shape.
fn query_rejection(r: &axum::extract::rejection::QueryRejection) -> AppError {
    AppError::BadRequest("invalid_query", r.body_text())
}
