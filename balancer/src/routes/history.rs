//! A node's metric history for the dashboard's charts:
//! `GET /v1/pools/{pool}/nodes/{node}/history?metric=probe/metric&since=ms&limit=n`, the stored
//! raw samples of one series (`ok` runs only) over a recent window, oldest first, read
//! by [`crate::store::Store::node_probe_samples`]; past the row cap the answer keeps the
//! window's newest part and says `truncated`.
use axum::extract::State;
use plb_api::ErrorBody;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{check_name, check_node_name, now_ms};
use crate::auth::Principal;
use crate::error::{ApiJson, ApiPath, ApiQuery, AppError};
use crate::state::AppState;

/// Default window: the last 15 minutes.
const DEFAULT_WINDOW_MS: i64 = 15 * 60 * 1000;
/// Longest window: one hour (raw samples; older data is folded into minutes).
const MAX_WINDOW_MS: i64 = 60 * 60 * 1000;
/// Samples answered at most, and by default (a quick probe every 100 ms for an hour).
pub const MAX_POINTS: u32 = 36_000;

/// Query of the history endpoint.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    /// Series key `probe/metric`.
    pub metric: String,
    /// From this time on, Unix ms (default: 15 minutes ago; at most one hour back).
    pub since: Option<i64>,
    /// Most samples answered, 1 to 36000 (default 36000): the window's newest.
    pub limit: Option<u32>,
}

/// `GET /v1/pools/{pool}/nodes/{node}/history`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricHistory {
    /// The pool.
    pub pool: String,
    /// The node.
    pub node: String,
    /// Series key `probe/metric`.
    pub metric: String,
    /// Samples from this time on, Unix ms.
    pub since_ms: i64,
    /// `[taken_at_ms, value]`, oldest first.
    #[schema(schema_with = points_schema)]
    pub points: Vec<(i64, f64)>,
    /// True when the window held more samples than answered: its oldest part is left out.
    pub truncated: bool,
}

/// `points`: pairs `[taken_at_ms, value]`, as arrays of two numbers (utoipa renders a
/// tuple as the array form of `items`, which OpenAPI 3.1 does not have, and schemathesis
/// does not read `prefixItems`).
fn points_schema() -> utoipa::openapi::Array {
    use utoipa::openapi::schema::{ArrayBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type};
    let pair = ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::Number)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Double))),
        )
        .min_items(Some(2))
        .max_items(Some(2))
        .description(Some("`[taken_at_ms, value]`"));
    ArrayBuilder::new().items(pair).build()
}

/// One series' recent samples on one node (client token).
#[utoipa::path(
    get, path = "/v1/pools/{pool}/nodes/{node}/history", operation_id = "get_node_history", tag = "pools",
    params(
        ("pool" = String, Path, description = "Pool name"),
        ("node" = String, Path, description = "Node id"),
        ("metric" = String, Query, pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}/[\\s\\S]", description = "Series key `probe/metric`: a probe name, `/`, and a metric name of at least one character"),
        ("since" = Option<i64>, Query, description = "From this time on, Unix ms (default 15 minutes ago, at most one hour back)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 36000, description = "Most samples answered (default and at most 36000): the window's newest; `truncated` says when older ones were left out"),
    ),
    responses(
        (status = 200, description = "The series' samples, oldest first", body = MetricHistory),
        (status = 400, description = "Bad metric key or query", body = ErrorBody),
        (status = 404, description = "The caller has no such pool, or the node is not in it", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(st): State<AppState>,
    who: Principal,
    ApiPath((pool, node)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<HistoryParams>,
) -> Result<ApiJson<MetricHistory>, AppError> {
    let client_id = who.client()?;
    check_name("pool", &pool)?;
    check_node_name(&node)?;
    let Some((probe, name)) = q.metric.split_once('/') else {
        return Err(AppError::BadRequest(
            "invalid_query",
            "`metric` must be a series key `probe/metric`".into(),
        ));
    };
    if name.is_empty() {
        return Err(AppError::BadRequest(
            "invalid_query",
            "`metric` must name a metric after the `/`".into(),
        ));
    }
    check_name("probe", probe)?;
    let limit = q.limit.unwrap_or(MAX_POINTS);
    if !(1..=MAX_POINTS).contains(&limit) {
        return Err(AppError::BadRequest(
            "invalid_query",
            format!("`limit` must be between 1 and {MAX_POINTS}"),
        ));
    }
    let limit = limit as usize;
    let now = now_ms();
    let since_ms = q
        .since
        .unwrap_or(now - DEFAULT_WINDOW_MS)
        .max(now - MAX_WINDOW_MS);
    // The pool must be the caller's and the node in it (else 404).
    let nodes = st.store.pool_nodes(client_id, pool.clone()).await?;
    if !nodes.nodes.iter().any(|n| n.node == node) {
        return Err(AppError::NotFound(format!(
            "node `{node}` is not in pool `{pool}`"
        )));
    }
    let rows = st
        .store
        .node_probe_samples(
            client_id,
            pool.clone(),
            node.clone(),
            probe.to_string(),
            since_ms,
            limit + 1,
        )
        .await?;
    let truncated = rows.len() > limit;
    let skip = rows.len().saturating_sub(limit);
    let points = rows
        .into_iter()
        .skip(skip)
        .filter_map(|row| {
            let v = *row.metrics.get(name)?;
            v.is_finite().then_some((row.taken_at_ms, v))
        })
        .collect();
    Ok(ApiJson(MetricHistory {
        pool,
        node,
        metric: q.metric,
        since_ms,
        points,
        truncated,
    }))
}
