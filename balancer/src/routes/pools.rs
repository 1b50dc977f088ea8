//! Pools: create, list, get, change settings (`PATCH`: policy, objective), and the read
//! side of a pool's nodes with each node's prediction (state, evidence, profiles,
//! forecasts, errors, capacity, recent outcomes) and live routing figures. A client sees
//! only its own pools; another client's pool is a 404.
use axum::extract::State;
use axum::http::StatusCode;
use plb_api::{CreatePool, ErrorBody, PoolList, PoolNodes, PoolView, UpdatePool};

use super::route::parse_policy;
use super::{check_name, now_ms};
use crate::auth::Principal;
use crate::engine::PoolKey;
use crate::error::{ApiJson, ApiPath, AppError};
use crate::state::AppState;

/// Largest latency objective, ms (one hour).
const MAX_SLO_MS: f64 = 3_600_000.0;

fn check_slo(slo: f64) -> Result<(), AppError> {
    if slo.is_finite() && slo > 0.0 && slo <= MAX_SLO_MS {
        Ok(())
    } else {
        Err(AppError::BadRequest(
            "invalid_settings",
            format!(
                "invalid setting `latency_slo_ms`: must be positive and at most {MAX_SLO_MS}, got {slo}"
            ),
        ))
    }
}

/// Creates a pool (client token).
#[utoipa::path(
    post, path = "/v1/pools", operation_id = "create_pool", tag = "pools",
    request_body = CreatePool,
    responses(
        (status = 201, description = "Created", body = PoolView),
        (status = 400, description = "Bad name or objective", body = ErrorBody),
        (status = 403, description = "The pool quota would be exceeded (quota_exceeded)", body = ErrorBody),
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
    check_slo(req.latency_slo_ms)?;
    let pool = st.store.create_pool(client_id, req, now_ms()).await?;
    st.engine.topology_changed();
    Ok((StatusCode::CREATED, ApiJson(pool)))
}

/// The caller's pools (client token).
#[utoipa::path(
    get, path = "/v1/pools", operation_id = "list_pools", tag = "pools",
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
    get, path = "/v1/pools/{pool}", operation_id = "get_pool", tag = "pools",
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

/// Changes a pool's routing policy and/or latency objective (client token). Takes
/// effect for the next decision.
#[utoipa::path(
    patch, path = "/v1/pools/{pool}", operation_id = "update_pool", tag = "pools",
    params(("pool" = String, Path, description = "Pool name")),
    request_body = UpdatePool,
    responses(
        (status = 200, description = "The pool with its new settings", body = PoolView),
        (status = 400, description = "Unknown policy or bad objective", body = ErrorBody),
        (status = 404, description = "The caller has no such pool", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn update(
    State(st): State<AppState>,
    who: Principal,
    ApiPath(pool): ApiPath<String>,
    ApiJson(req): ApiJson<UpdatePool>,
) -> Result<ApiJson<PoolView>, AppError> {
    let client_id = who.client()?;
    let policy = req.policy.as_deref().map(parse_policy).transpose()?;
    if let Some(slo) = req.latency_slo_ms {
        check_slo(slo)?;
    }
    let view = st
        .store
        .update_pool(client_id, pool.clone(), policy, req.latency_slo_ms)
        .await?;
    let key = PoolKey { client_id, pool };
    if let Some(router) = st.engine.pool(&key) {
        if let Some(p) = policy {
            router.set_policy(p);
        }
        router.set_slo_ms(view.latency_slo_ms);
    }
    Ok(ApiJson(view))
}

/// A pool's nodes, each with its address, last-seen time, newest sample per probe, its
/// prediction (`assessment`) and live routing figures (`routing`) (client token).
#[utoipa::path(
    get, path = "/v1/pools/{pool}/nodes", operation_id = "list_nodes", tag = "pools",
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
    let mut view = st.store.pool_nodes(client_id, pool.clone()).await?;
    view.excluded_probes = st.reliability.exclusions().in_pool(client_id, &pool);
    let key = PoolKey { client_id, pool };
    if st.engine.pool_fresh(&st.store, &key).await?.is_some() {
        view.metric_trust = st.engine.metric_trust(&key);
        let mut details = st.engine.node_details(&key);
        for n in &mut view.nodes {
            if let Some((a, r)) = details.remove(&n.node) {
                n.assessment = Some(a);
                n.routing = r;
            }
        }
    }
    Ok(ApiJson(view))
}
