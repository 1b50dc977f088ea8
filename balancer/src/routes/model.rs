//! The feedback loop's endpoints (client token): `GET /v1/pools/{pool}/model` (the
//! pool's capacity model, how each fit did on the feedback that came after it, and
//! every series' forecast errors next to the last-value forecast) and
//! `GET /v1/pools/{pool}/state-changes` (stored state changes with their evidence).
use axum::extract::State;
use plb_api::{ErrorBody, HorizonSummary, PoolModelView, SeriesErrors, StateChangeList};
use serde::Deserialize;

use super::check_node_name;
use super::route::router_of;
use crate::auth::Principal;
use crate::engine::PoolKey;
use crate::error::{ApiJson, ApiPath, ApiQuery, AppError};
use crate::state::AppState;

/// Most stored forecast errors one answer carries.
const MAX_HISTORY: usize = 10_000;
/// Most state changes one answer carries.
const MAX_CHANGES: usize = 1_000;

/// Query of `GET /v1/pools/{pool}/model`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ModelParams {
    /// Also return the stored forecast errors from this time on, Unix ms.
    pub since: Option<i64>,
}

/// The pool's models and their errors.
#[utoipa::path(
    get, path = "/v1/pools/{pool}/model", operation_id = "get_model", tag = "routing",
    params(("pool" = String, Path, description = "Pool name"), ModelParams),
    responses(
        (status = 200, description = "Capacity model, its scores and forecast errors", body = PoolModelView),
        (status = 404, description = "The caller has no such pool", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(st): State<AppState>,
    who: Principal,
    ApiPath(pool): ApiPath<String>,
    ApiQuery(q): ApiQuery<ModelParams>,
) -> Result<ApiJson<PoolModelView>, AppError> {
    let client_id = who.client()?;
    let view = st.store.get_pool(client_id, pool.clone()).await?;
    let router = router_of(&st, client_id, &pool).await?;
    let key = PoolKey {
        client_id,
        pool: pool.clone(),
    };
    let details = st.engine.node_details(&key);
    let mut series = Vec::new();
    for (node, (a, _)) in &details {
        for m in &a.metrics {
            series.push(SeriesErrors {
                node: node.clone(),
                series: m.name.clone(),
                chosen: m.forecasts.iter().map(|f| f.model.clone()).collect(),
                errors: m.errors.clone(),
            });
        }
    }
    series.sort_by(|a, b| (&a.node, &a.series).cmp(&(&b.node, &b.series)));
    let horizons = st.engine.config().pipeline.node.report_horizons.clone();
    let summary = horizons
        .iter()
        .map(|&h| {
            let logs: Vec<f64> = series
                .iter()
                .filter_map(|s| s.errors.iter().find(|e| e.h == h))
                .filter_map(|e| e.relative_to_naive)
                .filter(|r| *r > 0.0 && r.is_finite())
                .map(f64::ln)
                .collect();
            HorizonSummary {
                h,
                series: logs.len() as u64,
                relative_to_naive: (!logs.is_empty())
                    .then(|| (logs.iter().sum::<f64>() / logs.len() as f64).exp())
                    .filter(|x| x.is_finite()),
            }
        })
        .collect();
    let cap = st.engine.capacity_view(&key);
    let history = match q.since {
        Some(since) => {
            st.store
                .forecast_errors(client_id, pool.clone(), since, MAX_HISTORY)
                .await?
        }
        None => Vec::new(),
    };
    Ok(ApiJson(PoolModelView {
        pool,
        policy: router.policy().as_str().to_string(),
        latency_slo_ms: view.latency_slo_ms,
        feedback_rows: cap.as_ref().map_or(0, |c| c.1),
        capacity: cap.as_ref().and_then(|c| c.0.clone()),
        capacity_scores: cap.map(|c| c.2).unwrap_or_default(),
        summary,
        series,
        history,
    }))
}

/// Query of `GET /v1/pools/{pool}/state-changes`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ChangesParams {
    /// Changes from this time on, Unix ms (default: all kept).
    pub since: Option<i64>,
    /// Only this node's.
    #[param(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
    pub node: Option<String>,
    /// The newest this many (default and most: 1000; more is taken as 1000, 0 as 1).
    pub limit: Option<usize>,
}

/// Stored state changes of the pool's nodes, oldest first, each with its evidence.
#[utoipa::path(
    get, path = "/v1/pools/{pool}/state-changes", operation_id = "list_state_changes", tag = "routing",
    params(("pool" = String, Path, description = "Pool name"), ChangesParams),
    responses(
        (status = 200, description = "State changes with evidence", body = StateChangeList),
        (status = 404, description = "The caller has no such pool", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn state_changes(
    State(st): State<AppState>,
    who: Principal,
    ApiPath(pool): ApiPath<String>,
    ApiQuery(q): ApiQuery<ChangesParams>,
) -> Result<ApiJson<StateChangeList>, AppError> {
    let client_id = who.client()?;
    if let Some(n) = &q.node {
        check_node_name(n)?;
    }
    let limit = q.limit.unwrap_or(MAX_CHANGES).clamp(1, MAX_CHANGES);
    let changes = st
        .store
        .state_changes(client_id, pool.clone(), q.since.unwrap_or(0), q.node, limit)
        .await?;
    Ok(ApiJson(StateChangeList { pool, changes }))
}
