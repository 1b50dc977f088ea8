//! Reporting: the [`Outbox`] every sample goes into (appended to the spool first), and
//! the [`Reporter`] task that sends the spool to the balancer in batches (by count or
//! age) with retries, exponential backoff and jitter, moving the spool's cursor only
//! after the balancer accepted a batch.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use plb_api::{ReportBatch, Sample};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::balancer::BalancerClient;
use crate::metrics::Metrics;
use crate::policy;
use crate::spool::{Batch, Spool};

/// Largest report body the agent builds, in bytes of spooled JSON.
const MAX_BATCH_BYTES: u64 = 4 * 1024 * 1024;
/// First retry wait.
const RETRY_BASE: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct State {
    spool: Spool,
    /// When the oldest sample not yet sent was appended (by this process).
    oldest: Option<Instant>,
}

/// Where samples go: the spool, shared by every producer and the reporter.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    notify: Notify,
    metrics: Arc<Metrics>,
    /// The last report attempt failed: new samples wait in the spool.
    failing: AtomicBool,
}

impl Outbox {
    /// Wraps an opened spool. Samples already in it (from before a restart) are due at once.
    pub fn new(spool: Spool, metrics: Arc<Metrics>, batch_max_age: Duration) -> Arc<Self> {
        let now = Instant::now();
        let oldest =
            (spool.pending_records() > 0).then(|| now.checked_sub(batch_max_age).unwrap_or(now));
        metrics
            .spool_samples
            .set(i64::try_from(spool.pending_records()).unwrap_or(i64::MAX));
        metrics
            .spool_bytes
            .set(i64::try_from(spool.pending_bytes()).unwrap_or(i64::MAX));
        Arc::new(Outbox {
            state: Mutex::new(State { spool, oldest }),
            notify: Notify::new(),
            metrics,
            failing: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish_gauges(&self, st: &State) {
        self.metrics
            .spool_samples
            .set(i64::try_from(st.spool.pending_records()).unwrap_or(i64::MAX));
        self.metrics
            .spool_bytes
            .set(i64::try_from(st.spool.pending_bytes()).unwrap_or(i64::MAX));
    }

    /// Takes ownership of a sample: appends it to the spool (surviving a crash of the
    /// agent from then on) and wakes the reporter.
    pub async fn push(self: &Arc<Self>, sample: Sample) {
        let me = Arc::clone(self);
        let done = tokio::task::spawn_blocking(move || {
            let mut st = me.lock();
            let result = st.spool.append(&sample);
            if result.is_ok() && st.oldest.is_none() {
                st.oldest = Some(Instant::now());
            }
            me.publish_gauges(&st);
            result
        })
        .await;
        match done {
            Ok(Ok(dropped)) => {
                self.metrics.samples_taken.inc();
                if self.failing.load(Ordering::Relaxed) {
                    self.metrics.samples_spooled.inc();
                }
                if dropped > 0 {
                    self.metrics.samples_dropped.inc_by(dropped);
                }
            }
            Ok(Err(e)) => tracing::error!("could not spool a sample, it is lost: {e}"),
            Err(e) => tracing::error!("spool task failed, a sample is lost: {e}"),
        }
        self.notify.notify_one();
    }

    /// `(pending samples, when the oldest was appended)`.
    fn pending(&self) -> (u64, Option<Instant>) {
        let st = self.lock();
        (st.spool.pending_records(), st.oldest)
    }

    async fn peek(self: &Arc<Self>, max: usize) -> std::io::Result<Batch> {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || me.lock().spool.peek(max, MAX_BATCH_BYTES))
            .await
            .map_err(std::io::Error::other)?
    }

    async fn commit(self: &Arc<Self>, batch: Batch) -> std::io::Result<()> {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut st = me.lock();
            let r = st.spool.commit(&batch);
            st.oldest = (st.spool.pending_records() > 0).then(Instant::now);
            me.publish_gauges(&st);
            r
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Forces everything appended so far to stable storage.
    pub async fn sync(self: &Arc<Self>) {
        let me = Arc::clone(self);
        let r = tokio::task::spawn_blocking(move || me.lock().spool.sync()).await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("syncing the spool: {e}"),
            Err(e) => tracing::error!("spool sync task failed: {e}"),
        }
    }

    /// Unsent samples.
    pub fn pending_records(&self) -> u64 {
        self.lock().spool.pending_records()
    }
}

/// How the reporter batches and retries.
#[derive(Debug, Clone)]
pub struct ReporterConfig {
    /// The reporting node.
    pub node: String,
    /// Most samples per report.
    pub batch_max: usize,
    /// Longest a sample waits for its batch to fill.
    pub batch_max_age: Duration,
    /// Longest wait between retries.
    pub retry_max: Duration,
    /// After the stop signal, how long to keep trying to send what is left.
    pub flush_grace: Duration,
}

/// Sends the spool to the balancer.
#[derive(Debug)]
pub struct Reporter {
    outbox: Arc<Outbox>,
    client: BalancerClient,
    cfg: ReporterConfig,
    metrics: Arc<Metrics>,
}

enum Sent {
    /// Accepted, or skipped as unsendable: the cursor moved.
    Done,
    /// Not sent; retry after a wait.
    Failed,
}

impl Reporter {
    /// A reporter for `outbox`.
    pub fn new(
        outbox: Arc<Outbox>,
        client: BalancerClient,
        cfg: ReporterConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        Reporter {
            outbox,
            client,
            cfg,
            metrics,
        }
    }

    /// Runs until `stop` turns true, then flushes what it can within the grace period;
    /// whatever is left stays in the spool for the next start.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut attempt: u32 = 0;
        let mut limit = self.cfg.batch_max;
        loop {
            if *stop.borrow() {
                break;
            }
            // Wait until a batch is full or old enough.
            let (pending, oldest) = self.outbox.pending();
            let ready_at = oldest.map(|t| t + self.cfg.batch_max_age);
            let ready = pending as usize >= self.cfg.batch_max
                || ready_at.is_some_and(|t| t <= Instant::now())
                || (pending > 0 && oldest.is_none());
            if !ready {
                let notified = self.outbox.notify.notified();
                tokio::select! {
                    _ = notified => {}
                    _ = sleep_until_opt(ready_at) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            match self.send_one(&mut limit).await {
                Sent::Done => attempt = 0,
                Sent::Failed => {
                    let wait =
                        policy::backoff(attempt, RETRY_BASE, self.cfg.retry_max, rand::random());
                    attempt = attempt.saturating_add(1);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        }
        self.flush().await;
    }

    /// Sends what is left, until done, a failure, or the grace period ends.
    async fn flush(&self) {
        let deadline = Instant::now() + self.cfg.flush_grace;
        let mut limit = self.cfg.batch_max;
        let mut failures = 0;
        while self.outbox.pending_records() > 0 && Instant::now() < deadline {
            match tokio::time::timeout_at(deadline, self.send_one(&mut limit)).await {
                Ok(Sent::Done) => {}
                Ok(Sent::Failed) => {
                    failures += 1;
                    if failures >= 2 {
                        break;
                    }
                    tokio::time::sleep(
                        RETRY_BASE.min(deadline.saturating_duration_since(Instant::now())),
                    )
                    .await;
                }
                Err(_) => break,
            }
        }
        self.outbox.sync().await;
        let left = self.outbox.pending_records();
        if left > 0 {
            tracing::warn!(
                left,
                "balancer not reachable at shutdown: unsent samples stay in the spool"
            );
        }
    }

    async fn send_one(&self, limit: &mut usize) -> Sent {
        let batch = match self.outbox.peek(*limit).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("reading the spool: {e}");
                return Sent::Failed;
            }
        };
        if batch.samples.is_empty() {
            // Only unreadable lines (or nothing): move past them.
            if let Err(e) = self.outbox.commit(batch).await {
                tracing::error!("moving the spool cursor: {e}");
                return Sent::Failed;
            }
            return Sent::Done;
        }
        let n = batch.samples.len();
        let body = ReportBatch {
            node: self.cfg.node.clone(),
            samples: batch.samples.clone(),
            dropped: batch.dropped,
        };
        match self.client.report(&body).await {
            Ok(ack) => {
                self.metrics.balancer_up.set(1);
                if self.outbox.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        waiting = self.outbox.pending_records(),
                        "balancer reachable again: sending the spooled samples in order"
                    );
                }
                self.metrics.samples_sent.inc_by(n as u64);
                tracing::debug!(
                    n,
                    accepted = ack.accepted,
                    duplicates = ack.duplicates,
                    "report accepted"
                );
                *limit = self.cfg.batch_max;
                if let Err(e) = self.outbox.commit(batch).await {
                    // Sent but the cursor did not move: the batch will be resent, which
                    // the balancer deduplicates.
                    tracing::error!("moving the spool cursor after a report: {e}");
                    return Sent::Failed;
                }
                Sent::Done
            }
            Err(e) if e.rejected_content() => {
                self.metrics.balancer_up.set(1);
                if n > 1 {
                    // Find the bad sample by halving; the good ones go through.
                    *limit = (n / 2).max(1);
                    tracing::warn!(
                        n,
                        "balancer refused a report ({e}); retrying in smaller batches"
                    );
                    return Sent::Done;
                }
                self.metrics.samples_rejected.inc();
                tracing::error!(sample = %batch.samples[0].id, "balancer refused a sample, dropping it: {e}");
                match self.outbox.commit(batch).await {
                    Ok(()) => Sent::Done,
                    Err(e) => {
                        tracing::error!("moving the spool cursor: {e}");
                        Sent::Failed
                    }
                }
            }
            Err(e) => {
                self.metrics.report_failures.inc();
                let first = !self.outbox.failing.swap(true, Ordering::Relaxed);
                if first {
                    // What is waiting now waits for the balancer: count it as spooled,
                    // as every sample taken until a report goes through again.
                    self.metrics
                        .samples_spooled
                        .inc_by(self.outbox.pending_records());
                }
                let unreachable = e.status().is_none_or(|s| s >= 500);
                if unreachable {
                    self.metrics.balancer_up.set(0);
                }
                if first {
                    tracing::warn!(
                        "report failed, spooling samples until the balancer takes them: {e}"
                    );
                } else {
                    tracing::debug!("report failed again: {e}");
                }
                Sent::Failed
            }
        }
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
