//! Pools: create, list, get, and the read side of a pool's nodes. A client sees only its
//! own pools; another client's pool is a 404.
use axum::extract::State;
use axum::http::StatusCode;
use plb_api::{CreatePool, ErrorBody, PoolList, PoolNodes, PoolView};

use super::{check_name, now_ms};
use crate::auth::Principal;
use crate::error::{ApiJson, ApiPath, AppError};
use crate::state::AppState;

/// Largest latency objective, ms (one hour).
const MAX_SLO_MS: f64 = 3_600_000.0;

/// Creates a pool (client token).
#[utoipa::path(
    post, path = "/v1/pools", tag = "pools",
    request_body = CreatePool,
    responses(
        (status = 201, description = "Created", body = PoolView),
        (status = 400, description = "Bad name or objective", body = ErrorBody),
        (status = 409, description = "The caller has a pool of that name", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(st): State<AppState>,
    who: Principal,
    ApiJson(req): ApiJson<CreatePool>,
) -> Result<(StatusCode, ApiJson<PoolView>), AppError> {
    let client_id = who.client()?;
    check_name("pool", &req.name)?;
    if !(req.latency_slo_ms.is_finite()
        && req.latency_slo_ms > 0.0
        && req.latency_slo_ms <= MAX_SLO_MS)
    {
        return Err(AppError::BadRequest(
            "invalid_settings",
            format!(
                "invalid setting `latency_slo_ms`: must be positive and at most {MAX_SLO_MS}, got {}",
                req.latency_slo_ms
            ),
        ));
    }
    let pool = st.store.create_pool(client_id, req, now_ms()).await?;
    Ok((StatusCode::CREATED, ApiJson(pool)))
}

/// The caller's pools (client token).
#[utoipa::path(
    get, path = "/v1/pools", tag = "pools",
    responses((status = 200, description = "The caller's pools", body = PoolList)),
    security(("bearer" = []))
)]
pub async fn list(
    State(st): State<AppState>,
    who: Principal,
) -> Result<ApiJson<PoolList>, AppError> {
    let client_id = who.client()?;
    let pools = st.store.list_pools(client_id).await?;
    Ok(ApiJson(PoolList { pools }))
}

/// One of the caller's pools (client token).
#[utoipa::path(
    get, path = "/v1/pools/{pool}", tag = "pools",
    params(("pool" = String, Path, description = "Pool name")),
    responses(
        (status = 200, description = "The pool", body = PoolView),
        (status = 404, description = "The caller has no such pool", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(st): State<AppState>,
    who: Principal,
    ApiPath(pool): ApiPath<String>,
) -> Result<ApiJson<PoolView>, AppError> {
    let client_id = who.client()?;
    Ok(ApiJson(st.store.get_pool(client_id, pool).await?))
}

/// A pool's nodes, each with its address, last-seen time and newest sample per probe
/// (client token).
#[utoipa::path(
    get, path = "/v1/pools/{pool}/nodes", tag = "pools",
    params(("pool" = String, Path, description = "Pool name")),
    responses(
        (status = 200, description = "The pool's nodes", body = PoolNodes),
        (status = 404, description = "The caller has no such pool", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn nodes(
    State(st): State<AppState>,
    who: Principal,
    ApiPath(pool): ApiPath<String>,
) -> Result<ApiJson<PoolNodes>, AppError> {
    let client_id = who.client()?;
    Ok(ApiJson(st.store.pool_nodes(client_id, pool).await?))
}
