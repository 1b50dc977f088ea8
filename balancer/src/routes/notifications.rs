//! `GET /v1/notifications`: the update prompts raised for the caller's probes (a probe
//! entering `needs_update`, and its resolution), oldest first, paged by id.
use axum::extract::State;
use plb_api::{ErrorBody, NotificationList};

use crate::auth::Principal;
use crate::error::{ApiJson, ApiQuery, AppError};
use crate::state::AppState;

/// Most notifications per page.
const MAX_LIMIT: usize = 1000;

/// Query of `GET /v1/notifications`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NotificationQuery {
    /// Only notifications with an id above this (the previous page's `next_since`).
    pub since: Option<i64>,
    /// Only notifications raised at or after this Unix time, ms.
    pub since_ms: Option<i64>,
    /// Page size (1 ..= 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// The caller's notifications (client token).
#[utoipa::path(
    get, path = "/v1/notifications", operation_id = "list_notifications", tag = "reliability",
    params(NotificationQuery),
    responses(
        (status = 200, description = "Notifications after `since`, oldest first", body = NotificationList),
        (status = 400, description = "A bad query parameter", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(st): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<NotificationQuery>,
) -> Result<ApiJson<NotificationList>, AppError> {
    let client_id = who.client()?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(AppError::bad_request(format!(
            "`limit` must be between 1 and {MAX_LIMIT}"
        )));
    }
    let since = q.since.unwrap_or(0);
    let notifications = st
        .store
        .notifications(client_id, since, q.since_ms, limit)
        .await?;
    let next_since = notifications.last().map_or(since, |n| n.id);
    Ok(ApiJson(NotificationList {
        notifications,
        next_since,
    }))
}
