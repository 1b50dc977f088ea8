//! `POST /v1/pools/{pool}/feedback` (client token): what happened to routed requests.
//! One item `{node, latency_ms, ok}`, a batch `{"items": [...]}` or a bare JSON array.
//! Every item is checked before any is applied; each one releases the node's oldest
//! in-flight HTTP decision, updates its latency and error estimates at once and queues
//! a row for the pool's capacity model.
use axum::extract::State;
use plb_api::{ErrorBody, Feedback, FeedbackAck};

use super::route::router_of;
use crate::auth::Principal;
use crate::engine::FeedbackError;
use crate::error::{ApiJson, ApiJsonAny, ApiPath, AppError};
use crate::state::AppState;

/// Most items per request.
pub const MAX_ITEMS: usize = 10_000;

fn invalid(msg: String) -> AppError {
    AppError::Unprocessable("invalid_feedback", msg)
}

/// Reads the three accepted shapes.
fn items(body: serde_json::Value) -> Result<Vec<Feedback>, AppError> {
    let parse = |v: serde_json::Value, at: Option<usize>| {
        // serde would read the struct from an array too (`["a", 1, true]`).
        if !v.is_object() {
            let msg = "expected an object `{node, latency_ms, ok}`";
            return Err(invalid(match at {
                Some(i) => format!("item {i}: {msg}"),
                None => msg.to_string(),
            }));
        }
        // With the path, so that the message names the field (`latency_ms: invalid type`).
        serde_path_to_error::deserialize::<_, Feedback>(v).map_err(|e| {
            invalid(match at {
                Some(i) => format!("item {i}: {e}"),
                None => e.to_string(),
            })
        })
    };
    let list = match body {
        serde_json::Value::Array(a) => a,
        serde_json::Value::Object(mut o) if o.contains_key("items") => {
            if o.len() != 1 {
                return Err(invalid(
                    "a batch is `{\"items\": [...]}` with no other field".into(),
                ));
            }
            match o.remove("items") {
                Some(serde_json::Value::Array(a)) => a,
                _ => return Err(invalid("`items` must be an array".into())),
            }
        }
        v @ serde_json::Value::Object(_) => return Ok(vec![parse(v, None)?]),
        _ => {
            return Err(invalid(
                "expected `{node, latency_ms, ok}`, `{\"items\": [...]}` or an array".into(),
            ));
        }
    };
    if list.len() > MAX_ITEMS {
        return Err(AppError::TooLarge(format!(
            "at most {MAX_ITEMS} feedback items per request, got {}",
            list.len()
        )));
    }
    list.into_iter()
        .enumerate()
        .map(|(i, v)| parse(v, Some(i)))
        .collect()
}

/// Reports what happened to routed requests.
#[utoipa::path(
    post, path = "/v1/pools/{pool}/feedback", operation_id = "post_feedback", tag = "routing",
    params(("pool" = String, Path, description = "Pool name")),
    request_body(content = Feedback, description = "One item, `{\"items\": [...]}` or an array of items"),
    responses(
        (status = 200, description = "Applied", body = FeedbackAck),
        (status = 404, description = "The caller has no such pool", body = ErrorBody),
        (status = 413, description = "Too many items", body = ErrorBody),
        (status = 422, description = "A bad item (unknown node, latency not finite or negative); nothing applied", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn post(
    State(st): State<AppState>,
    who: Principal,
    ApiPath(pool): ApiPath<String>,
    ApiJsonAny(body): ApiJsonAny<serde_json::Value>,
) -> Result<ApiJson<FeedbackAck>, AppError> {
    let client_id = who.client()?;
    let items = items(body)?;
    let router = router_of(&st, client_id, &pool).await?;
    let many = items.len() > 1;
    let name = |i: usize, e: FeedbackError| {
        invalid(if many {
            format!("item {i}: {e}")
        } else {
            e.to_string()
        })
    };
    for (i, f) in items.iter().enumerate() {
        router
            .check_feedback(&f.node, f.latency_ms)
            .map_err(|e| name(i, e))?;
    }
    for (i, f) in items.iter().enumerate() {
        router
            .feedback_http(&f.node, f.latency_ms, f.ok)
            .map_err(|e| name(i, e))?;
    }
    st.metrics.feedback_items.inc_by(items.len() as u64);
    Ok(ApiJson(FeedbackAck {
        accepted: items.len(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_shapes_and_named_errors() {
        let one = serde_json::json!({"node": "a", "latency_ms": 1.5, "ok": true});
        assert_eq!(items(one.clone()).expect("single").len(), 1);
        let batch = serde_json::json!({"items": [one.clone(), one.clone()]});
        assert_eq!(items(batch).expect("batch").len(), 2);
        let arr = serde_json::json!([one.clone(), one.clone(), one]);
        assert_eq!(items(arr).expect("array").len(), 3);
        let bad = serde_json::json!([{"node": "a", "latency_ms": "x", "ok": true}]);
        let e = format!("{:?}", items(bad).expect_err("bad type"));
        assert!(e.contains("item 0"), "{e}");
        let extra = serde_json::json!({"node": "a", "latency_ms": 1, "ok": true, "z": 1});
        assert!(items(extra).is_err());
        assert!(items(serde_json::json!(3)).is_err());
        assert!(items(serde_json::json!({"items": 3})).is_err());
        let positional = serde_json::json!([["a", 1.5, true]]);
        let e = format!("{:?}", items(positional).expect_err("an item as an array"));
        assert!(e.contains("item 0: expected an object"), "{e}");
    }
}
