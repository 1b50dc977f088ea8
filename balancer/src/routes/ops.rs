//! Operations: `/healthz`, `/metrics` (Prometheus text) and `/v1/openapi.json`.
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use plb_api::{ErrorBody, Health};

use crate::error::{ApiJson, AppError};
use crate::metrics::Exposure;
use crate::state::AppState;

/// `ok` when the store answers a query; which replica this is and whether it leads.
#[utoipa::path(
    get, path = "/healthz", operation_id = "healthz", tag = "ops",
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
    let lead = st.leadership.now();
    Ok(ApiJson(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        replica: st.leadership.replica().to_string(),
        leader: lead.leader,
        leader_epoch: lead.epoch,
    }))
}

/// Prometheus text exposition. With `--metrics-token` set, the metrics or the admin
/// token is needed and every series is shown; without it, anyone gets the aggregate
/// series, and the series labelled with tenants' pool and probe names only come with the
/// admin token.
#[utoipa::path(
    get, path = "/metrics", operation_id = "metrics", tag = "ops",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        (status = 401, description = "A metrics token is configured and was not presented, or the token presented is neither the metrics nor the admin token", body = ErrorBody),
    )
)]
pub async fn metrics(State(st): State<AppState>, headers: HeaderMap) -> Result<Response, AppError> {
    let exposure = if headers.contains_key(header::AUTHORIZATION) {
        let token = crate::auth::bearer_in(&headers)?;
        if !st.auth.metrics_reader(token) {
            return Err(AppError::Unauthorized(
                "/metrics takes the metrics token (--metrics-token) or the admin token".into(),
            ));
        }
        Exposure::Full
    } else if st.auth.metrics_token_set() {
        return Err(AppError::Unauthorized(
            "/metrics needs `Authorization: Bearer <metrics token>` (--metrics-token is set)"
                .into(),
        ));
    } else {
        Exposure::Public
    };
    let text = st.metrics.encode(exposure).map_err(AppError::internal)?;
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
    get, path = "/v1/openapi.json", operation_id = "openapi", tag = "ops",
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
