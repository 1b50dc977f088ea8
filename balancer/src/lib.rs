//! PLB's balancer service: the REST API v1 (axum) over a SQLite or PostgreSQL store.
//! Clients upload probes to their pools, agents register nodes, pull assignments and
//! modules and push samples; the balancer keeps everything durable and, in later issues,
//! forecasts and routes from it.
//!
//! Layout: [`config`] (one clap struct), [`error`] (one `AppError`, the JSON extractor),
//! [`store`] (all SQL behind the [`store::Store`] trait), [`auth`] (tokens), [`routes`]
//! (one module per resource), [`metrics`], [`openapi`], [`ingest`] (the hook where
//! committed samples leave for the prediction engine), [`retention`].
#![forbid(unsafe_code)]

pub mod agent_check;
pub mod auth;
pub mod clock;
pub mod config;
pub mod dashboard;
pub mod engine;
pub mod error;
pub mod ingest;
pub mod leader;
pub mod metrics;
pub mod netpolicy;
pub mod openapi;
pub mod proxy;
pub mod reliability;
pub mod retention;
pub mod routes;
pub mod server;
pub mod state;
pub mod store;
pub mod tail;
pub mod webhooks;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::BalancerConfig;
pub use error::{AppError, Error};
pub use ingest::{CommittedBatch, IngestObserver};
pub use state::AppState;

use crate::metrics::Metrics;
use crate::store::{PgOptions, PgStore, SqliteOptions, SqliteStore, Store};

/// The whole HTTP app over `state`.
pub fn app(state: AppState) -> axum::Router {
    routes::router(state)
}

/// The runtime settings the balancer needs: it only compiles uploads to validate them,
/// so a small pool suffices.
fn runtime_config() -> plb_runtime::RuntimeConfig {
    plb_runtime::RuntimeConfig {
        max_concurrent_runs: 2,
        max_memory_mib: 64,
        ..plb_runtime::RuntimeConfig::default()
    }
}

/// Validates `cfg`, opens (and migrates) the store and starts the probe runtime.
pub async fn build_state(cfg: &BalancerConfig) -> Result<AppState, Error> {
    cfg.validate()?;
    let metrics = Arc::new(Metrics::new());
    let (store, runtime): (Arc<dyn Store>, _) = match &cfg.db {
        config::DbLocation::Sqlite(path) => {
            let opts = SqliteOptions {
                synchronous: cfg.db_sync,
                readers: cfg.db_readers,
                metrics: metrics.writer.clone(),
                quotas: cfg.quotas(),
                ..SqliteOptions::default()
            };
            let path = path.clone();
            let (store, runtime) = tokio::task::spawn_blocking(move || {
                let store = SqliteStore::open(&path, opts)?;
                let runtime = plb_runtime::Runtime::new(runtime_config())?;
                Ok::<_, Error>((store, runtime))
            })
            .await
            .map_err(|e| Error::Io {
                context: "opening the store".into(),
                source: std::io::Error::other(e),
            })??;
            (Arc::new(store), runtime)
        }
        config::DbLocation::Postgres(url) => {
            let opts = PgOptions {
                readers: cfg.db_readers,
                metrics: metrics.writer.clone(),
                quotas: cfg.quotas(),
                ..PgOptions::default()
            };
            let store = PgStore::open(url, opts).await?;
            let runtime = tokio::task::spawn_blocking(move || {
                plb_runtime::Runtime::new(runtime_config()).map_err(Error::from)
            })
            .await
            .map_err(|e| Error::Io {
                context: "starting the probe runtime".into(),
                source: std::io::Error::other(e),
            })??;
            (Arc::new(store), runtime)
        }
    };
    let engine = engine::Engine::new(engine::EngineConfig::default(), Arc::clone(&metrics))
        .map_err(|e| Error::Io {
            context: "starting the prediction engine".into(),
            source: std::io::Error::other(e),
        })?;
    let state = AppState::new(cfg, store, runtime, metrics, engine);
    Ok(match &cfg.db {
        config::DbLocation::Sqlite(_) => state,
        // Replicas may share the database: the once-only work goes to an elected leader.
        config::DbLocation::Postgres(url) => {
            let leadership = crate::store::elect(url, &cfg.replica_name())?;
            state.with_leadership(leadership)
        }
    })
}

/// A balancer serving in the background (tests, `plb dev`).
#[derive(Debug)]
pub struct RunningBalancer {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// Its state (store, metrics).
    pub state: AppState,
    /// The `--proxy` listeners and the `--agent-check` export.
    pub edges: proxy::Edges,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), Error>>,
    retention: JoinHandle<()>,
    engine: Option<JoinHandle<()>>,
    /// The tail of what other replicas store ([`tail`]).
    tail: JoinHandle<()>,
    /// Probe reliability's tracker task and the webhook deliverer.
    reliability: Vec<JoinHandle<()>>,
}

impl RunningBalancer {
    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, lets requests in flight finish, and waits for the server.
    pub async fn stop(mut self) -> Result<(), Error> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.edges.stop().await;
        self.state.leadership.stop();
        self.retention.abort();
        self.tail.abort();
        if let Some(e) = &self.engine {
            e.abort();
        }
        for t in &self.reliability {
            t.abort();
        }
        match (&mut self.server).await {
            Ok(r) => r,
            Err(e) => Err(Error::Io {
                context: "the server task".into(),
                source: std::io::Error::other(e),
            }),
        }
    }
}

/// Builds the state from `cfg` and starts serving on `cfg.listen`.
pub async fn start(cfg: &BalancerConfig) -> Result<RunningBalancer, Error> {
    let state = build_state(cfg).await?;
    start_with_state(cfg, state).await
}

/// Starts serving `state` on `cfg.listen`, with the retention task.
pub async fn start_with_state(
    cfg: &BalancerConfig,
    state: AppState,
) -> Result<RunningBalancer, Error> {
    let listener = TcpListener::bind(cfg.listen).await.map_err(|e| Error::Io {
        context: format!("binding {}", cfg.listen),
        source: e,
    })?;
    let addr = listener.local_addr().map_err(|e| Error::Io {
        context: "reading the bound address".into(),
        source: e,
    })?;
    // The models are warm before the first request: a restart forgets no profile.
    state
        .engine
        .warm(&state.store)
        .await
        .map_err(|e| Error::Io {
            context: "warming the prediction engine".into(),
            source: std::io::Error::other(e),
        })?;
    let engine = state.engine.spawn(Arc::clone(&state.store));
    // Replicas on one database: this engine also learns from what the others store
    // (a no-op on SQLite). The engine never sees samples of a probe in `needs_update`.
    let tail = tokio::spawn(tail::run(Arc::clone(&state.store), state.observers()));
    // Probe states and windows are back before the first report: none is raised twice.
    state
        .reliability
        .warm(&state.store, &state.leadership)
        .await
        .map_err(|e| Error::Io {
            context: "warming probe reliability".into(),
            source: std::io::Error::other(e),
        })?;
    let mut reliability = Vec::new();
    reliability.extend(
        state
            .reliability
            .spawn(Arc::clone(&state.store), state.leadership.clone()),
    );
    // A replica that starts to lead stores the transitions it saw as a follower.
    {
        let (store, rel) = (Arc::clone(&state.store), Arc::clone(&state.reliability));
        reliability.push(
            state
                .leadership
                .while_leading("probe reliability", move || {
                    let (store, rel) = (Arc::clone(&store), Arc::clone(&rel));
                    vec![tokio::spawn(async move {
                        match rel.reconcile(&store).await {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(
                                n,
                                "stored probe reliability transitions seen as a follower"
                            ),
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot reconcile probe reliability")
                            }
                        }
                    })]
                }),
        );
    }
    // The outbox and retention run once, on the leader (always, on SQLite).
    {
        let (store, metrics) = (Arc::clone(&state.store), Arc::clone(&state.metrics));
        let (wake, delivery) = (Arc::clone(&state.reliability.wake), state.delivery.clone());
        reliability.push(
            state
                .leadership
                .while_leading("webhook deliveries", move || {
                    vec![tokio::spawn(webhooks::run(
                        Arc::clone(&store),
                        Arc::clone(&metrics),
                        Arc::clone(&wake),
                        delivery.clone(),
                    ))]
                }),
        );
    }
    {
        let (mut leadership, metrics) = (state.leadership.clone(), Arc::clone(&state.metrics));
        reliability.push(tokio::spawn(async move {
            loop {
                metrics.leader.set(i64::from(leadership.now().leader));
                leadership.changed().await;
            }
        }));
    }
    let retention = {
        let (store, metrics) = (Arc::clone(&state.store), Arc::clone(&state.metrics));
        let r = retention::Retention::from(cfg);
        state.leadership.while_leading("retention", move || {
            vec![tokio::spawn(retention::run(
                Arc::clone(&store),
                Arc::clone(&metrics),
                r,
            ))]
        })
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let edges = proxy::Edges::start(&cfg.edges(), &state.engine)
        .await
        .map_err(|e| match e {
            proxy::EdgesError::Proxy(e) => Error::Io {
                context: "starting the proxy".into(),
                source: std::io::Error::other(e),
            },
            proxy::EdgesError::AgentCheck { listen, source } => Error::Io {
                context: format!("--agent-check {listen}: cannot listen"),
                source,
            },
        })?;
    let router = app(state.clone());
    let limits = cfg.server_limits();
    let server = tokio::spawn(async move {
        server::serve(listener, router, limits, async move {
            let _ = stopped.await;
        })
        .await
        .map_err(|e| Error::Io {
            context: "serving".into(),
            source: e,
        })
    });
    tracing::info!(%addr, "balancer listening");
    Ok(RunningBalancer {
        addr,
        state,
        stop: Some(stop),
        server,
        edges,
        retention,
        engine,
        tail,
        reliability,
    })
}

/// Runs the balancer until `shutdown` resolves (the `plb balancer` entry point).
pub async fn serve(
    cfg: BalancerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let mut running = start(&cfg).await?;
    let ended = tokio::select! {
        () = shutdown => None,
        r = &mut running.server => Some(r),
    };
    match ended {
        None => {
            tracing::info!("shutting down");
            running.stop().await
        }
        Some(r) => {
            running.edges.stop().await;
            running.retention.abort();
            running.tail.abort();
            if let Some(e) = &running.engine {
                e.abort();
            }
            for t in &running.reliability {
                t.abort();
            }
            match r {
                Ok(r) => r,
                Err(e) => Err(Error::Io {
                    context: "the server task".into(),
                    source: std::io::Error::other(e),
                }),
            }
        }
    }
}

/// Resolves on SIGINT or SIGTERM (for `serve`).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn the_app_answers_in_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = BalancerConfig::new(dir.path().join("t.db"), "an-admin-token-long-enough");
        let state = build_state(&cfg).await.expect("state");
        let resp = app(state.clone())
            .oneshot(
                Request::get("/healthz")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("answer");
        assert_eq!(resp.status(), StatusCode::OK);
        let resp = app(state)
            .oneshot(
                Request::post("/v1/clients")
                    .header("authorization", "Bearer an-admin-token-long-enough")
                    .header("content-type", "application/json")
                    .body(Body::from(r#"{"name":"acme"}"#))
                    .expect("request"),
            )
            .await
            .expect("answer");
        assert_eq!(resp.status(), StatusCode::CREATED);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .expect("body");
        let created: plb_api::ClientCreated = serde_json::from_slice(&body).expect("json");
        assert!(created.token.starts_with(auth::CLIENT_PREFIX));
    }

    #[tokio::test]
    async fn a_bad_config_is_refused_before_anything_opens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = BalancerConfig::new(dir.path().join("t.db"), "short");
        let e = build_state(&cfg).await.expect_err("short admin token");
        assert!(matches!(
            e,
            Error::Config(config::ConfigError::AdminTokenTooShort)
        ));
        assert!(!dir.path().join("t.db").exists());
    }
}
