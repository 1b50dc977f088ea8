//! The retention task: every `--retention-every`, raw samples older than
//! `--retention-raw` are folded into per-minute aggregates (in chunks, so ingest keeps
//! flowing between them) and aggregates older than `--retention-aggregates` deleted.
//! Then probe versions superseded before the raw window (no raw sample of theirs is
//! left) and any left of deleted probes are removed, with the modules no stored version
//! uses any more (the balancer keeps no compiled artifacts on disk: uploads are compiled
//! only to validate them).
use std::sync::Arc;
use std::time::Duration;

use crate::clock::now_ms;
use crate::config::BalancerConfig;
use crate::metrics::Metrics;
use crate::store::{FoldStats, Store, StoreError};

/// Raw samples folded per store write.
pub const CHUNK: usize = 5_000;

/// The retention windows.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Raw samples are kept this long.
    pub raw: Duration,
    /// Aggregates are kept this long.
    pub aggregates: Duration,
    /// Time between passes.
    pub every: Duration,
}

impl From<&BalancerConfig> for Retention {
    fn from(c: &BalancerConfig) -> Self {
        Retention {
            raw: c.retention_raw,
            aggregates: c.retention_aggregates,
            every: c.retention_every,
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// One pass at time `now_ms`: folds until nothing older than the raw window is left,
/// then collects versions and modules no longer needed.
pub async fn pass(
    store: &dyn Store,
    metrics: &Metrics,
    r: Retention,
    now_ms: i64,
) -> Result<FoldStats, StoreError> {
    let raw_before = now_ms.saturating_sub(ms(r.raw));
    let aggregates_before = now_ms.saturating_sub(ms(r.aggregates));
    let mut total = FoldStats::default();
    loop {
        let s = store.fold(raw_before, aggregates_before, CHUNK).await?;
        metrics.retention_folded.inc_by(s.folded);
        metrics.retention_expired.inc_by(s.expired_minutes);
        total.folded += s.folded;
        total.minutes += s.minutes;
        total.expired_minutes += s.expired_minutes;
        if (s.folded as usize) < CHUNK {
            break;
        }
    }
    let gc = store.collect_modules(raw_before).await?;
    if gc.versions > 0 || gc.modules > 0 {
        tracing::info!(
            versions = gc.versions,
            modules = gc.modules,
            bytes = gc.bytes,
            "retention: unused probe versions and modules removed"
        );
    }
    Ok(total)
}

/// Runs passes forever.
pub async fn run(store: Arc<dyn Store>, metrics: Arc<Metrics>, r: Retention) {
    let mut tick = tokio::time::interval(r.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match pass(store.as_ref(), &metrics, r, now_ms()).await {
            Ok(s) if s.folded > 0 || s.expired_minutes > 0 => {
                tracing::info!(
                    folded = s.folded,
                    minutes = s.minutes,
                    expired = s.expired_minutes,
                    "retention pass"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention pass failed; retrying next time"),
        }
    }
}
