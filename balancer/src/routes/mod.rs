//! The REST API v1 routes, one module per resource, and the checks they share.
pub mod agents;
pub mod clients;
pub mod feedback;
pub mod history;
pub mod model;
pub mod notifications;
pub mod ops;
pub mod pools;
pub mod probes;
pub mod reports;
pub mod request_metrics;
pub mod route;
pub mod scaling;
pub mod webhook;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{delete, get, post, put};

use crate::error::{AppError, method_not_allowed, not_found};
use crate::state::AppState;

/// Now, Unix ms (the handlers' clock; it lives in [`crate::clock`]).
pub use crate::clock::now_ms;

/// Every route of the service, with metrics, body limits and the error shape for
/// unknown routes and methods.
pub fn router(state: AppState) -> Router {
    let json_limit = state.limits.max_json_bytes;
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .route("/v1/openapi.json", get(ops::openapi))
        .route("/v1/clients", post(clients::create))
        .route("/v1/clients/{id}", delete(clients::revoke))
        .route("/v1/agent-tokens", post(clients::create_agent_token))
        .route("/v1/agent-tokens/{id}", delete(clients::revoke_agent_token))
        .route("/v1/pools", post(pools::create).get(pools::list))
        .route("/v1/pools/{pool}", get(pools::get).patch(pools::update))
        .route("/v1/pools/{pool}/nodes", get(pools::nodes))
        .route("/v1/pools/{pool}/scaling", get(scaling::get))
        .route("/v1/pools/{pool}/nodes/{node}/history", get(history::get))
        .route("/v1/pools/{pool}/route", get(route::route))
        .route("/v1/pools/{pool}/feedback", post(feedback::post))
        .route("/v1/pools/{pool}/decisions", get(route::decisions))
        .route("/v1/pools/{pool}/model", get(model::get))
        .route("/v1/pools/{pool}/state-changes", get(model::state_changes))
        .route("/v1/pools/{pool}/probes", get(probes::list))
        .route(
            "/v1/pools/{pool}/probes/{name}",
            put(probes::put).get(probes::get).delete(probes::delete),
        )
        .route("/v1/agents/register", post(agents::register))
        .route("/v1/agents/{node}/assignments", get(agents::assignments))
        .route("/v1/modules/{sha256}", get(agents::module))
        .route("/v1/reports", post(reports::post))
        .route("/v1/notifications", get(notifications::list))
        .route(
            "/v1/pools/{pool}/webhook",
            put(webhook::put).get(webhook::get).delete(webhook::delete),
        )
        .route(
            "/v1/pools/{pool}/webhook/deliveries",
            get(webhook::deliveries),
        )
        .merge(crate::dashboard::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(json_limit))
        .layer(axum::middleware::from_fn(close_after_error))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            request_metrics::track,
        ))
        .with_state(state)
}

/// An error answered before the request body was read leaves unread bytes on the
/// connection; `Connection: close` tells the client not to reuse it (else its next
/// request may meet a connection the server has closed).
async fn close_after_error(req: Request, next: Next) -> Response {
    let has_body = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() != b"0")
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    let mut resp = next.run(req).await;
    let st = resp.status();
    if has_body && (st.is_client_error() || st.is_server_error()) {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Checks a pool or probe name: 1 to 64 of `[A-Za-z0-9._-]`, starting with a letter or
/// digit.
pub fn check_name(what: &str, name: &str) -> Result<(), AppError> {
    check_name_max(what, name, 64)
}

/// Checks a node name: like [`check_name`], up to 128 bytes (host names).
pub fn check_node_name(name: &str) -> Result<(), AppError> {
    check_name_max("node", name, 128)
}

fn check_name_max(what: &str, name: &str, max: usize) -> Result<(), AppError> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(AppError::BadRequest(
            "invalid_name",
            format!(
                "invalid {what} name `{}`: use 1 to {max} letters, digits, `.`, `_` or `-`, starting with a letter or digit",
                name.chars().take(140).collect::<String>()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["web", "a", "node-1.example_x", "9lives"] {
            check_name("pool", ok).expect(ok);
        }
        for bad in ["", "-x", ".x", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(check_name("pool", bad).is_err(), "{bad}");
        }
    }
}
