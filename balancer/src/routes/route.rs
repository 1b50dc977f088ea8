//! Routing endpoints (client token): `GET /v1/pools/{pool}/route` (one decision from the
//! pool's snapshot: no store access, no lock) and `GET /v1/pools/{pool}/decisions`
//! (route decisions per node and minute, as stored for the dashboard).
use std::collections::BTreeMap;

use axum::extract::State;
use plb_api::{DecisionMinute, DecisionShares, ErrorBody, NodeShare, RouteDecision};
use plb_routing::PolicyKind;
use serde::Deserialize;

use super::{check_name, now_ms};
use crate::auth::Principal;
use crate::engine::{PoolKey, PoolRouter, RouteQuery};
use crate::error::{ApiJson, ApiPath, ApiQuery, AppError};
use crate::state::AppState;

/// Longest routing key, characters.
const MAX_KEY: usize = 1024;
/// Default window of the decisions view, ms.
const DEFAULT_DECISIONS_WINDOW_MS: i64 = 3_600_000;
/// Minutes the decisions view answers by default (the default hour spans up to 61).
pub const DEFAULT_DECISIONS_MINUTES: u32 = 120;
/// Most minutes one decisions answer holds (a day; rows are minutes x nodes).
pub const MAX_DECISIONS_MINUTES: u32 = 1440;

/// Query of `GET /v1/pools/{pool}/route`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RouteParams {
    /// Locality key: the same key goes to the same node while it has headroom (at most
    /// 1024 characters).
    #[param(max_length = 1024)]
    pub key: Option<String>,
    /// Request size in bytes (non-negative).
    #[param(minimum = 0)]
    pub size: Option<f64>,
    /// Relative cost, 1 = a typical request (non-negative).
    #[param(minimum = 0)]
    pub cost: Option<f64>,
    /// Overrides the pool's policy for this decision: `plb`, `round-robin`,
    /// `least-request`, `least-conn`, `peak-ewma`, `prequal`.
    #[param(pattern = "^(plb|round-robin|least-request|least-conn|peak-ewma|prequal)$")]
    pub policy: Option<String>,
}

/// Parses a policy name with a message listing the choices.
pub(crate) fn parse_policy(name: &str) -> Result<PolicyKind, AppError> {
    name.parse::<PolicyKind>().map_err(|_| {
        AppError::BadRequest(
            "invalid_policy",
            format!(
                "unknown routing policy `{}`; use one of plb, round-robin, least-request, least-conn, peak-ewma, prequal",
                name.chars().take(64).collect::<String>()
            ),
        )
    })
}

/// The caller's pool's router, loaded from the store if the engine does not have it
/// yet; 404 if the caller has no such pool.
pub(crate) async fn router_of(
    st: &AppState,
    client_id: i64,
    pool: &str,
) -> Result<std::sync::Arc<PoolRouter>, AppError> {
    let key = PoolKey {
        client_id,
        pool: pool.to_string(),
    };
    st.engine
        .pool_fresh(&st.store, &key)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("pool `{pool}` not found")))
}

fn check_number(name: &str, v: Option<f64>) -> Result<(), AppError> {
    match v {
        Some(x) if !(x.is_finite() && x >= 0.0) => Err(AppError::BadRequest(
            "invalid_query",
            format!("`{name}` must be a finite number >= 0, got {x}"),
        )),
        _ => Ok(()),
    }
}

/// Chooses a node for one request. The decision counts the request in flight on that
/// node until feedback for the node arrives (`POST .../feedback`) or 30 s pass.
#[utoipa::path(
    get, path = "/v1/pools/{pool}/route", operation_id = "route", tag = "routing",
    params(("pool" = String, Path, description = "Pool name"), RouteParams),
    responses(
        (status = 200, description = "The chosen node and why", body = RouteDecision),
        (status = 400, description = "A bad key, size, cost or policy", body = ErrorBody),
        (status = 404, description = "The caller has no such pool", body = ErrorBody),
        (status = 409, description = "The pool has no nodes yet", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn route(
    State(st): State<AppState>,
    who: Principal,
    ApiPath(pool): ApiPath<String>,
    ApiQuery(q): ApiQuery<RouteParams>,
) -> Result<ApiJson<RouteDecision>, AppError> {
    let client_id = who.client()?;
    check_name("pool", &pool)?;
    check_number("size", q.size)?;
    check_number("cost", q.cost)?;
    if q.key.as_ref().is_some_and(|k| k.chars().count() > MAX_KEY) {
        return Err(AppError::BadRequest(
            "invalid_query",
            format!("`key` is at most {MAX_KEY} characters"),
        ));
    }
    let policy = q.policy.as_deref().map(parse_policy).transpose()?;
    let router = router_of(&st, client_id, &pool).await?;
    let query = RouteQuery {
        key: q.key,
        size: q.size,
        cost: q.cost,
    };
    match router.route_http(&query, policy) {
        Some(mut d) => {
            let exclusions = st.reliability.exclusions();
            if exclusions.any_in_pool(client_id, &pool) {
                let names = exclusions.in_pool(client_id, &pool);
                d.decision.reason.push_str(&format!(
                    "; not weighed: probe(s) {} need an update (their samples are left out of forecasts)",
                    names.join(", ")
                ));
            }
            Ok(ApiJson(d.decision))
        }
        None => Err(AppError::Conflict(format!(
            "pool `{pool}` has no nodes yet: register a node (an agent) into it first"
        ))),
    }
}

/// Query of `GET /v1/pools/{pool}/decisions`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DecisionsParams {
    /// Minutes from this time on, Unix ms (default: the last hour).
    pub since: Option<i64>,
    /// Most minutes answered, 1 to 1440 (default 120): the newest minutes with decisions
    /// at or after `since`; when the window holds more, its oldest minutes are left out.
    #[param(minimum = 1, maximum = 1440)]
    pub limit: Option<u32>,
}

/// Route decisions per node and minute, with each node's share (client token).
#[utoipa::path(
    get, path = "/v1/pools/{pool}/decisions", operation_id = "list_decisions", tag = "routing",
    params(("pool" = String, Path, description = "Pool name"), DecisionsParams),
    responses(
        (status = 200, description = "Decisions per minute and node (the newest `limit` minutes)", body = DecisionShares),
        (status = 400, description = "`limit` out of range", body = ErrorBody),
        (status = 404, description = "The caller has no such pool", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn decisions(
    State(st): State<AppState>,
    who: Principal,
    ApiPath(pool): ApiPath<String>,
    ApiQuery(q): ApiQuery<DecisionsParams>,
) -> Result<ApiJson<DecisionShares>, AppError> {
    let client_id = who.client()?;
    let since_ms = q
        .since
        .unwrap_or_else(|| now_ms() - DEFAULT_DECISIONS_WINDOW_MS);
    let limit = q.limit.unwrap_or(DEFAULT_DECISIONS_MINUTES);
    if !(1..=MAX_DECISIONS_MINUTES).contains(&limit) {
        return Err(AppError::BadRequest(
            "invalid_query",
            format!("`limit` must be between 1 and {MAX_DECISIONS_MINUTES} minutes"),
        ));
    }
    let rows = st
        .store
        .route_decisions(client_id, pool.clone(), since_ms, limit as usize)
        .await?;
    let mut minutes: BTreeMap<i64, Vec<(String, u64)>> = BTreeMap::new();
    for r in rows {
        minutes
            .entry(r.minute_ms)
            .or_default()
            .push((r.node, r.decisions));
    }
    let minutes = minutes
        .into_iter()
        .map(|(minute_ms, nodes)| {
            let total: u64 = nodes.iter().map(|(_, n)| n).sum();
            DecisionMinute {
                minute_ms,
                total,
                nodes: nodes
                    .into_iter()
                    .map(|(node, decisions)| NodeShare {
                        node,
                        decisions,
                        share: if total > 0 {
                            decisions as f64 / total as f64
                        } else {
                            0.0
                        },
                    })
                    .collect(),
            }
        })
        .collect();
    Ok(ApiJson(DecisionShares {
        pool,
        since_ms,
        minutes,
    }))
}
