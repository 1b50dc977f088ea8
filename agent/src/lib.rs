//! PLB's node agent. It registers the node with the balancer, keeps its probe
//! assignments current, runs each probe in the sandbox on schedule against the node's
//! own address, samples the node itself, and reports every sample through outages:
//! each sample is written to an on-disk spool before it is sent, and the spool's
//! cursor moves only after the balancer accepted it.
//!
//! Entry point: [`run`] with an [`AgentConfig`] (the `plb agent` flags). Timing policy
//! is pure code ([`policy`], [`schedule`]); the tasks around it do the I/O.
#![forbid(unsafe_code)]

pub mod assignments;
pub mod balancer;
pub mod config;
mod error;
pub mod metrics;
pub mod policy;
pub mod reporter;
pub mod sampler;
pub mod schedule;
pub mod scheduler;
pub mod spool;

use std::fs::{File, OpenOptions, TryLockError};
use std::future::Future;
use std::sync::Arc;

use plb_api::RegisterRequest;
use plb_runtime::{Runtime, RuntimeConfig};
use tokio::sync::watch;

pub use config::{AgentConfig, ConfigError, Settings};
pub use error::AgentError;

use crate::assignments::{Plan, SyncConfig, Syncer};
use crate::balancer::BalancerClient;
use crate::metrics::Metrics;
use crate::policy::Budget;
use crate::reporter::{Outbox, Reporter, ReporterConfig};
use crate::scheduler::Scheduler;
use crate::spool::Spool;

/// Unix time now, in milliseconds.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for SIGINT: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

fn spool_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> AgentError + '_ {
    move |source| AgentError::Spool {
        path: path.to_path_buf(),
        source,
    }
}

/// Takes the spool directory's lock, so two agents never share one spool.
fn lock_spool(dir: &std::path::Path) -> Result<File, AgentError> {
    std::fs::create_dir_all(dir).map_err(spool_err(dir))?;
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(spool_err(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(AgentError::SpoolLocked(dir.to_path_buf())),
        Err(TryLockError::Error(e)) => Err(spool_err(&path)(e)),
    }
}

/// Runs the agent until `shutdown` resolves, then stops scheduling, lets running
/// probes finish within the grace period, and sends what it can; everything else
/// stays in the spool for the next start.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let s = config.validate()?;
    let _lock = lock_spool(&s.spool)?;
    let metrics = Arc::new(Metrics::new());

    let wal = s.spool.join("wal");
    let spool = Spool::open(&wal, s.spool_max_bytes).map_err(spool_err(&wal))?;
    if spool.pending_records() > 0 {
        tracing::info!(
            samples = spool.pending_records(),
            bytes = spool.pending_bytes(),
            "unsent samples in the spool will be sent first"
        );
    }
    let outbox = Outbox::new(spool, Arc::clone(&metrics), s.batch_max_age);

    let runtime = Runtime::new(RuntimeConfig {
        max_concurrent_runs: s.max_concurrent_runs,
        max_memory_mib: s.max_memory_mib,
        cache_dir: Some(s.spool.join("compiled")),
        ..RuntimeConfig::default()
    })?;
    let client = BalancerClient::with_balancers(
        s.balancers.clone(),
        &s.token,
        &s.node,
        Some(Arc::clone(&metrics)),
    )
    .map_err(|e| AgentError::Http(e.to_string()))?;

    let listener = tokio::net::TcpListener::bind(s.metrics_listen)
        .await
        .map_err(|source| AgentError::MetricsListen {
            addr: s.metrics_listen,
            source,
        })?;
    let metrics_addr = listener.local_addr().ok();

    let (stop_runs_tx, stop_runs) = watch::channel(false);
    let (stop_report_tx, stop_report) = watch::channel(false);
    let (stop_http_tx, mut stop_http) = watch::channel(false);
    let (plan_tx, plan_rx) = watch::channel(Plan::default());

    let http = tokio::spawn(metrics::serve(listener, Arc::clone(&metrics), async move {
        let _ = stop_http.wait_for(|v| *v).await;
    }));
    let syncer = tokio::spawn(
        Syncer::new(
            client.clone(),
            runtime.clone(),
            SyncConfig {
                register: RegisterRequest {
                    node: s.node.clone(),
                    address: s.address.clone(),
                    pools: s.pools.clone(),
                    labels: s.labels.clone(),
                },
                poll: s.poll,
                state_dir: s.spool.clone(),
            },
            Arc::clone(&metrics),
            plan_tx,
        )
        .run(stop_runs.clone()),
    );
    let scheduler = tokio::spawn(
        Scheduler::new(
            runtime.clone(),
            Arc::clone(&outbox),
            Arc::clone(&metrics),
            s.node.clone(),
            plan_rx,
            Budget::new(s.max_concurrent_runs),
            s.shutdown_grace,
        )
        .run(stop_runs.clone()),
    );
    let sampler = s.node_sample.map(|every| {
        tokio::spawn(sampler::run(
            s.pools.clone(),
            every,
            Arc::clone(&outbox),
            stop_runs.clone(),
        ))
    });
    let reporter = tokio::spawn(
        Reporter::new(
            Arc::clone(&outbox),
            client,
            ReporterConfig {
                node: s.node.clone(),
                batch_max: s.batch_max,
                batch_max_age: s.batch_max_age,
                retry_max: s.retry_max,
                flush_grace: s.shutdown_grace,
            },
            Arc::clone(&metrics),
        )
        .run(stop_report),
    );
    tracing::info!(
        node = %s.node,
        balancers = ?s.balancers.iter().map(reqwest::Url::as_str).collect::<Vec<_>>(),
        pools = ?s.pools,
        spool = %s.spool.display(),
        metrics = ?metrics_addr,
        "agent started"
    );

    shutdown.await;
    tracing::info!("shutting down: finishing running probes, then sending what is left");
    let _ = stop_runs_tx.send(true);
    for (name, task) in [("syncer", syncer), ("scheduler", scheduler)]
        .into_iter()
        .chain(sampler.map(|t| ("sampler", t)))
    {
        if let Err(e) = task.await {
            tracing::error!("{name} task failed: {e}");
        }
    }
    let _ = stop_report_tx.send(true);
    if let Err(e) = reporter.await {
        tracing::error!("reporter task failed: {e}");
    }
    let _ = stop_http_tx.send(true);
    let _ = http.await;
    tracing::info!(
        samples_taken = metrics.samples_taken.get(),
        samples_sent = metrics.samples_sent.get(),
        samples_dropped = metrics.samples_dropped.get(),
        left_in_spool = outbox.pending_records(),
        "agent stopped"
    );
    Ok(())
}
