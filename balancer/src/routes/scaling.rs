//! `GET /v1/pools/{pool}/scaling`: the pool's demand (route decisions and proxied
//! requests per second), its forecast at 5 min, 15 min and 1 h, the nodes needed now and
//! at each horizon with intervals, the per-node capacity used, the objective and when the
//! recommendation last changed. A client sees only its own pools; another client's pool
//! is a 404.
use axum::extract::State;
use plb_api::{ErrorBody, PoolScaling};

use crate::auth::Principal;
use crate::engine::PoolKey;
use crate::error::{ApiJson, ApiPath, AppError};
use crate::state::AppState;

/// The pool's demand forecast and autoscaling advice (client token).
#[utoipa::path(
    get, path = "/v1/pools/{pool}/scaling", operation_id = "get_scaling", tag = "pools",
    params(("pool" = String, Path, description = "Pool name")),
    responses(
        (status = 200, description = "Demand, its forecast and the nodes needed", body = PoolScaling),
        (status = 404, description = "The caller has no such pool", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(st): State<AppState>,
    who: Principal,
    ApiPath(pool): ApiPath<String>,
) -> Result<ApiJson<PoolScaling>, AppError> {
    let client_id = who.client()?;
    let key = PoolKey {
        client_id,
        pool: pool.clone(),
    };
    if st.engine.pool_fresh(&st.store, &key).await?.is_none() {
        return Err(AppError::NotFound(format!("pool `{pool}` not found")));
    }
    st.engine
        .scaling_view(&key)
        .map(ApiJson)
        .ok_or_else(|| AppError::NotFound(format!("pool `{pool}` not found")))
}
