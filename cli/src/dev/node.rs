//! The demo nodes of `plb dev`: HTTP services in the process, each a queue in front of a
//! few workers whose service time follows a script (one node slowly degrades a minute
//! after start, then recovers, and the cycle repeats), so there is something to predict.
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use rand::Rng as _;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// How a demo node's speed changes over time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Script {
    /// Always at full speed.
    Steady,
    /// Full speed for `calm` s, then service times grow to `worst`× over `ramp` s, stay
    /// there for `hold` s, return to 1× over `recover` s; the cycle repeats.
    DegradeAndRecover {
        calm: f64,
        ramp: f64,
        hold: f64,
        recover: f64,
        worst: f64,
    },
}

impl Script {
    /// The demo's degrading node: calm for a minute, worse over 90 s, recovered 3.5 min
    /// after it started to slow down.
    pub fn demo_degrade() -> Script {
        Script::DegradeAndRecover {
            calm: 60.0,
            ramp: 90.0,
            hold: 30.0,
            recover: 90.0,
            worst: 6.0,
        }
    }

    /// Service-time multiplier `t` seconds after start.
    pub fn slowdown(self, t: f64) -> f64 {
        match self {
            Script::Steady => 1.0,
            Script::DegradeAndRecover {
                calm,
                ramp,
                hold,
                recover,
                worst,
            } => {
                let period = calm + ramp + hold + recover;
                let t = t.rem_euclid(period);
                let up = |x: f64| 1.0 + (worst - 1.0) * x.clamp(0.0, 1.0);
                if t < calm {
                    1.0
                } else if t < calm + ramp {
                    up((t - calm) / ramp)
                } else if t < calm + ramp + hold {
                    worst
                } else {
                    up(1.0 - (t - calm - ramp - hold) / recover)
                }
            }
        }
    }
}

struct Node {
    name: String,
    script: Script,
    start: Instant,
    base_ms: f64,
    workers: u32,
    permits: Semaphore,
    queued: AtomicU64,
    busy: AtomicU64,
}

impl Node {
    fn slowdown(&self) -> f64 {
        self.script.slowdown(self.start.elapsed().as_secs_f64())
    }
}

/// A demo node serving in the background.
#[derive(Debug)]
pub struct DemoNode {
    /// Its name (the node id its agent registers).
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DemoNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a demo node on `listen` (port 0 picks one).
pub async fn spawn(name: &str, listen: SocketAddr, script: Script) -> anyhow::Result<DemoNode> {
    let node = Arc::new(Node {
        name: name.to_string(),
        script,
        start: Instant::now(),
        base_ms: 8.0,
        workers: 4,
        permits: Semaphore::new(4),
        queued: AtomicU64::new(0),
        busy: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/", get(work).post(work))
        .route("/health", get(health))
        .route("/status", get(status))
        .with_state(node);
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "demo node stopped");
        }
    });
    Ok(DemoNode {
        name: name.to_string(),
        addr,
        task,
    })
}

/// A lognormal service time around `base_ms × slowdown`.
fn service_time(node: &Node) -> Duration {
    let z: f64 = {
        let mut rng = rand::rng();
        // Sum of uniforms: a cheap near-normal draw.
        (0..4).map(|_| rng.random::<f64>()).sum::<f64>() - 2.0
    };
    let ms = node.base_ms * node.slowdown() * (0.35 * z).exp();
    Duration::from_secs_f64(ms.max(0.1) / 1000.0)
}

async fn work(State(node): State<Arc<Node>>) -> impl IntoResponse {
    node.queued.fetch_add(1, Ordering::Relaxed);
    let permit = node.permits.acquire().await;
    node.queued.fetch_sub(1, Ordering::Relaxed);
    node.busy.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(service_time(&node)).await;
    node.busy.fetch_sub(1, Ordering::Relaxed);
    drop(permit);
    format!("served by {}\n", node.name)
}

async fn health(State(node): State<Arc<Node>>) -> impl IntoResponse {
    // A small fixed piece of work at the node's current speed, plus its queue.
    let wait = node.queued.load(Ordering::Relaxed) as f64 * 0.2;
    tokio::time::sleep(Duration::from_secs_f64((node.slowdown() + wait) / 1000.0)).await;
    Json(serde_json::json!({ "status": "ok", "node": node.name }))
}

async fn status(State(node): State<Arc<Node>>) -> impl IntoResponse {
    // Only what a real node's status page would show: no script internals (the probes
    // must find the slowdown themselves), nothing that grows for ever.
    Json(serde_json::json!({
        "node": node.name,
        "queued": node.queued.load(Ordering::Relaxed),
        "busy": node.busy.load(Ordering::Relaxed),
        "workers": node.workers,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_degrading_script_is_calm_then_slow_then_recovers() {
        let s = Script::demo_degrade();
        assert_eq!(s.slowdown(10.0), 1.0);
        assert!(s.slowdown(105.0) > 3.0 && s.slowdown(105.0) < 4.0);
        assert_eq!(s.slowdown(160.0), 6.0);
        assert!(s.slowdown(250.0) < 3.0);
        assert_eq!(s.slowdown(275.0), 1.0); // the next cycle's calm
        assert_eq!(Script::Steady.slowdown(1e6), 1.0);
    }
}
