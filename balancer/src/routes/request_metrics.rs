//! The request-metrics middleware: counts and times every request by its route template
//! into the registry's HTTP families ([`crate::metrics::Metrics::requests`] and
//! [`crate::metrics::Metrics::request_seconds`]).
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::metrics::{RequestLabels, RouteLabels, method_label};
use crate::state::AppState;

/// Middleware: counts and times every request by its route template (the method from a
/// fixed set: [`method_label`]).
pub async fn track(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = method_label(req.method().as_str());
    let started = Instant::now();
    let resp = next.run(req).await;
    st.metrics
        .request_seconds
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    st.metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            method,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}
