//! Operations: `/healthz`, `/metrics` (Prometheus text) and `/v1/openapi.json`.
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use plb_api::{ErrorBody, Health};

use crate::error::{ApiJson, AppError};
use crate::state::AppState;

/// `ok` when the store answers a query.
#[utoipa::path(
    get, path = "/healthz", tag = "ops",
    responses(
        (status = 200, description = "Up", body = Health),
        (status = 503, description = "The store does not answer", body = ErrorBody),
    )
)]
pub async fn healthz(State(st): State<AppState>) -> Result<ApiJson<Health>, AppError> {
    st.store
        .ping()
        .await
        .map_err(|e| AppError::Unavailable(format!("the store does not answer: {e}")))?;
    Ok(ApiJson(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    }))
}

/// Prometheus text exposition.
#[utoipa::path(
    get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String))
)]
pub async fn metrics(State(st): State<AppState>) -> Result<Response, AppError> {
    let text = st.metrics.encode().map_err(AppError::internal)?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}

/// This API's OpenAPI 3 document, generated from the handlers and the `plb_api` types.
#[utoipa::path(
    get, path = "/v1/openapi.json", tag = "ops",
    responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json"))
)]
pub async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        crate::openapi::document_json(),
    )
        .into_response()
}
