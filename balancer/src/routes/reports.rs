//! `POST /v1/reports`: a batch of samples from one node, checked whole (nothing is
//! stored if any sample is bad), stored idempotently by sample id, answered only after
//! the commit, then handed to the ingest observers.
use axum::extract::State;
use plb_api::{ErrorBody, ReportAck, ReportBatch, Sample};

use super::{check_name, check_node_name, now_ms};
use crate::auth::Principal;
use crate::error::{ApiJson, AppError};
use crate::ingest::CommittedBatch;
use crate::state::AppState;
use crate::store::Ingest;

/// Most samples per batch.
pub const MAX_BATCH: usize = 10_000;
/// Most metrics per sample.
const MAX_METRICS: usize = 256;
/// Longest metric name.
const MAX_METRIC_NAME: usize = 64;
/// Longest sample id.
const MAX_ID: usize = 128;
/// Longest message or stderr tail.
const MAX_TEXT: usize = 64 * 1024;
/// How far in the future a sample may be dated (clock skew).
const MAX_FUTURE_MS: i64 = 24 * 3600 * 1000;

fn invalid(s: &Sample, what: impl std::fmt::Display) -> AppError {
    AppError::Unprocessable(
        "invalid_report",
        format!(
            "sample `{}`: {what}",
            s.id.chars().take(MAX_ID).collect::<String>()
        ),
    )
}

/// Checks a sample's own fields (pools and probes are checked against the store).
fn check_sample(s: &Sample, now_ms: i64) -> Result<(), AppError> {
    if s.id.is_empty() || s.id.len() > MAX_ID {
        return Err(invalid(s, format!("`id` must be 1 to {MAX_ID} bytes")));
    }
    check_name("pool", &s.pool).map_err(|_| invalid(s, format!("bad pool name `{}`", s.pool)))?;
    check_name("probe", &s.probe)
        .map_err(|_| invalid(s, format!("bad probe name `{}`", s.probe)))?;
    if s.taken_at_ms <= 0 || s.taken_at_ms > now_ms + MAX_FUTURE_MS {
        return Err(invalid(
            s,
            format!(
                "`taken_at_ms` {} is not a plausible Unix time in ms (check the agent's clock)",
                s.taken_at_ms
            ),
        ));
    }
    if !s.duration_ms.is_finite() || s.duration_ms < 0.0 {
        return Err(invalid(
            s,
            "`duration_ms` must be a finite non-negative number",
        ));
    }
    if s.metrics.len() > MAX_METRICS {
        return Err(invalid(s, format!("at most {MAX_METRICS} metrics")));
    }
    for (name, v) in &s.metrics {
        if name.is_empty() || name.len() > MAX_METRIC_NAME {
            return Err(invalid(
                s,
                format!("metric names must be 1 to {MAX_METRIC_NAME} bytes"),
            ));
        }
        if !v.is_finite() {
            return Err(invalid(
                s,
                format!("metric `{name}` is not a finite number"),
            ));
        }
    }
    if s.message.len() > MAX_TEXT || s.stderr.len() > MAX_TEXT {
        return Err(invalid(
            s,
            format!("`message` and `stderr` are at most {MAX_TEXT} bytes"),
        ));
    }
    Ok(())
}

/// Stores a batch of samples from the token's node. Idempotent by sample id: a resent
/// batch stores nothing twice and its samples count as duplicates.
#[utoipa::path(
    post, path = "/v1/reports", operation_id = "post_reports", tag = "agents",
    request_body = ReportBatch,
    responses(
        (status = 200, description = "Committed", body = ReportAck),
        (status = 403, description = "Not the token's node", body = ErrorBody),
        (status = 404, description = "The node is not registered (register it first)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "A bad sample, or one for a pool or probe the node is not assigned; nothing stored", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn post(
    State(st): State<AppState>,
    who: Principal,
    ApiJson(batch): ApiJson<ReportBatch>,
) -> Result<ApiJson<ReportAck>, AppError> {
    let (token_id, client_id) = who.agent()?;
    check_node_name(&batch.node)?;
    if batch.samples.len() > MAX_BATCH {
        return Err(AppError::TooLarge(format!(
            "at most {MAX_BATCH} samples per batch, got {}",
            batch.samples.len()
        )));
    }
    let now = now_ms();
    for s in &batch.samples {
        check_sample(s, now)?;
    }
    let node = batch.node.clone();
    let dropped = batch.dropped;
    let done = st
        .store
        .ingest(Ingest {
            token_id,
            client_id,
            batch,
            now_ms: now,
        })
        .await?;
    let m = &st.metrics;
    m.report_batches.inc();
    m.samples_ingested.inc_by(done.ack.accepted as u64);
    m.samples_duplicate.inc_by(done.ack.duplicates as u64);
    if done.ack.accepted > 0 {
        m.samples_dropped_by_agents.inc_by(dropped);
    }
    if dropped > 0 {
        tracing::warn!(%node, dropped, "agent reports samples dropped from its spool");
    }
    let ack = done.ack.clone();
    if !done.stored.is_empty() {
        st.committed(CommittedBatch {
            client_id,
            node_id: done.node_id,
            node,
            received_at_ms: now,
            samples: done.stored,
        });
    }
    Ok(ApiJson(ack))
}

#[cfg(test)]
mod tests {
    use super::*;
    use plb_api::Outcome;

    fn sample() -> Sample {
        Sample {
            id: "s1".into(),
            pool: "web".into(),
            probe: "p".into(),
            version: 1,
            taken_at_ms: 1_700_000_000_000,
            outcome: Outcome::Ok,
            metrics: [("latency-ms".to_string(), 1.5)].into(),
            duration_ms: 2.0,
            fuel_used: None,
            message: String::new(),
            stderr: String::new(),
        }
    }

    #[test]
    fn good_sample_passes() {
        check_sample(&sample(), 1_700_000_000_000).expect("valid");
    }

    #[test]
    fn non_finite_and_implausible_values_are_named() {
        let now = 1_700_000_000_000;
        let mut s = sample();
        s.metrics.insert("x".into(), f64::NAN);
        let e = check_sample(&s, now).expect_err("rejected");
        assert!(format!("{e:?}").contains("metric `x`"), "{e:?}");
        let mut s = sample();
        s.metrics.insert("y".into(), f64::INFINITY);
        assert!(check_sample(&s, now).is_err());
        let mut s = sample();
        s.duration_ms = -1.0;
        assert!(
            format!("{:?}", check_sample(&s, now).expect_err("rejected")).contains("duration_ms")
        );
        let mut s = sample();
        s.taken_at_ms = now + 2 * MAX_FUTURE_MS;
        assert!(
            format!("{:?}", check_sample(&s, now).expect_err("rejected")).contains("taken_at_ms")
        );
        let mut s = sample();
        s.id.clear();
        assert!(check_sample(&s, now).is_err());
    }
}
