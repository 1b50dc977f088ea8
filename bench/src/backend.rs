//! The live backends: real HTTP/1.1 servers on loopback (hyper), many in one process.
//! Each is a FIFO queue with its own workers (a fair semaphore) and lognormal service
//! times simulated by async sleeps, scaled by the scenario's scripted speed, so CPU is
//! not the limit. Besides `/` (the work) each serves what a node's probes measure:
//! `/health` (a small fixed piece of work at the node's current speed, not queued) and
//! `/status` (JSON: queued, busy, workers, recent mean service time).
//!
//! Like the simulator's nodes: the work of a request whose client gave up still runs
//! (it is a detached task), a node that is not up accepts connections and never
//! answers, and a fast 503 takes no worker. A node whose process is down (restarting)
//! closes its listener and every connection (connections are refused), and comes back
//! on the same port with an empty queue and fresh workers.
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::BenchError;
use crate::scenario::{Condition, Scenario, mix, std_normal};
use crate::sim::STATUS_EWMA_ALPHA;

/// What `/status` answers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Requests waiting for a worker.
    pub queued: u64,
    /// Requests being served.
    pub busy: u64,
    /// Workers.
    pub workers: u64,
    /// Recent mean service time (EWMA over completions), ms; `None` before the first.
    pub service_ms: Option<f64>,
}

/// What one run of the node's process holds: a restart starts a new one (the old
/// one's detached work runs out unseen).
struct Proc {
    workers: Arc<Semaphore>,
    queued: AtomicU64,
    busy: AtomicU64,
    service: Mutex<Option<f64>>,
}

impl Proc {
    fn new(workers: u32) -> Arc<Self> {
        Arc::new(Proc {
            workers: Arc::new(Semaphore::new(workers as usize)),
            queued: AtomicU64::new(0),
            busy: AtomicU64::new(0),
            service: Mutex::new(None),
        })
    }
}

/// Called with the node and the script time of every work request it receives.
pub type ArrivalHook = Arc<dyn Fn(usize, f64) + Send + Sync>;

struct State {
    node: usize,
    scenario: Arc<Scenario>,
    start: Instant,
    proc: arc_swap::ArcSwap<Proc>,
    rng: Mutex<SmallRng>,
    on_arrival: Option<ArrivalHook>,
}

impl State {
    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn condition(&self) -> Condition {
        self.scenario.condition(self.node, self.now())
    }

    fn draw(&self) -> (f64, f64) {
        let mut rng = self
            .rng
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (rng.random::<f64>(), std_normal(&mut *rng))
    }

    fn status(&self) -> Status {
        let p = self.proc.load();
        Status {
            queued: p.queued.load(Ordering::Relaxed),
            busy: p.busy.load(Ordering::Relaxed),
            workers: u64::from(self.scenario.profile.workers),
            service_ms: p
                .service
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .map(|s| s * 1000.0),
        }
    }
}

/// A running backend; stops accepting when dropped.
#[derive(Debug)]
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Starts the backend of node `node` of `scenario` on an ephemeral loopback port; its
/// script's time 0 is `start`.
pub async fn spawn(
    node: usize,
    scenario: Arc<Scenario>,
    start: Instant,
    seed: u64,
) -> Result<Backend, BenchError> {
    spawn_with(node, scenario, start, seed, None).await
}

/// [`spawn`], calling `on_arrival` with every work request's arrival (how a lane
/// behind an external proxy learns where its traffic went).
pub async fn spawn_with(
    node: usize,
    scenario: Arc<Scenario>,
    start: Instant,
    seed: u64,
    on_arrival: Option<ArrivalHook>,
) -> Result<Backend, BenchError> {
    let listener = bind().await?;
    spawn_on(listener, node, scenario, start, seed, on_arrival)
}

/// A listener on an ephemeral loopback port for a backend that starts serving later
/// ([`spawn_on`]): its address can go into a proxy's configuration first.
pub async fn bind() -> Result<TcpListener, BenchError> {
    TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| BenchError::Live(format!("binding a backend: {e}")))
}

/// [`spawn_with`] on a listener from [`bind`].
pub fn spawn_on(
    listener: TcpListener,
    node: usize,
    scenario: Arc<Scenario>,
    start: Instant,
    seed: u64,
    on_arrival: Option<ArrivalHook>,
) -> Result<Backend, BenchError> {
    let addr = listener
        .local_addr()
        .map_err(|e| BenchError::Live(format!("backend address: {e}")))?;
    let restart = scenario.restart_window(node);
    let state = Arc::new(State {
        node,
        proc: arc_swap::ArcSwap::new(Proc::new(scenario.profile.workers)),
        scenario,
        start,
        rng: Mutex::new(SmallRng::seed_from_u64(mix(seed, 0xbac, node as u64))),
        on_arrival,
    });
    let accept = tokio::spawn(async move {
        let Some((down, back)) = restart else {
            serve(&listener, &state, None).await;
            return;
        };
        // Up until the process goes down; then no listener (refused) and no
        // connection; then a new process on the same port.
        let (kill, _) = tokio::sync::watch::channel(());
        let at = |t: f64| state.start + Duration::from_secs_f64(t);
        let _ = tokio::time::timeout_at(at(down), serve(&listener, &state, Some(&kill))).await;
        drop(listener);
        kill.send_replace(());
        state.proc.store(Proc::new(state.scenario.profile.workers));
        tokio::time::sleep_until(at(back)).await;
        loop {
            match TcpListener::bind(addr).await {
                Ok(l) => {
                    serve(&l, &state, None).await;
                    return;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    });
    Ok(Backend { addr, accept })
}

/// Accepts and serves connections for ever; each one ends early when `kill` fires.
async fn serve(
    listener: &TcpListener,
    state: &Arc<State>,
    kill: Option<&tokio::sync::watch::Sender<()>>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors or similar: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(state);
        let mut killed = kill.map(tokio::sync::watch::Sender::subscribe);
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(Arc::clone(&state), req));
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
            match killed.as_mut() {
                Some(k) => {
                    tokio::select! {
                        _ = conn => {}
                        _ = k.changed() => {}
                    }
                }
                None => {
                    let _ = conn.await;
                }
            }
        });
    }
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

/// The response header that names the node (its index) answering a work request, so
/// that a client behind a balancer knows where each request went.
pub const NODE_HEADER: &str = "x-bench-node";

/// The response header with the time a work request spent in the node, from the
/// backend's reading of its head to its answer, µs: what the client measured beyond it
/// was spent on the way (the client, a balancer, the loopback).
pub const NODE_TIME_HEADER: &str = "x-bench-node-us";

/// An answer naming the node and the time the request spent in it since `arrived`: to
/// a work request, or from a node not in the pool.
fn work_reply(
    state: &State,
    arrived: Instant,
    status: StatusCode,
    body: &'static str,
) -> Response<Full<Bytes>> {
    let mut r = reply(status, body);
    let us = u64::try_from(arrived.elapsed().as_micros()).unwrap_or(u64::MAX);
    let headers = r.headers_mut();
    headers.insert(NODE_HEADER, hyper::header::HeaderValue::from(state.node));
    headers.insert(NODE_TIME_HEADER, hyper::header::HeaderValue::from(us));
    r
}

/// Never answers in time: the client's timeout ends it.
async fn hang(state: &State) -> Response<Full<Bytes>> {
    tokio::time::sleep(Duration::from_secs_f64(state.scenario.timeout + 1.0)).await;
    reply(StatusCode::SERVICE_UNAVAILABLE, "hung")
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let arrived = Instant::now();
    let c = state.condition();
    if !c.present {
        return Ok(work_reply(
            &state,
            arrived,
            StatusCode::SERVICE_UNAVAILABLE,
            "not in service",
        ));
    }
    if !c.up {
        return Ok(hang(&state).await);
    }
    Ok(match req.uri().path() {
        "/health" => {
            let work = state.scenario.profile.health_work / c.speed.max(1e-3);
            tokio::time::sleep(Duration::from_secs_f64(work)).await;
            reply(StatusCode::OK, "ok")
        }
        "/status" => match serde_json::to_vec(&state.status()) {
            Ok(body) => reply(StatusCode::OK, body),
            Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        _ => work(state, c, arrived).await,
    })
}

async fn work(state: Arc<State>, c: Condition, arrived: Instant) -> Response<Full<Bytes>> {
    if let Some(hook) = &state.on_arrival {
        hook(state.node, state.now());
    }
    let (u, z) = state.draw();
    if c.error_rate > 0.0 && u < c.error_rate {
        return work_reply(
            &state,
            arrived,
            StatusCode::SERVICE_UNAVAILABLE,
            "fast failure",
        );
    }
    // Detached: the work goes on if the client gives up.
    let task = {
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let p = state.proc.load_full();
            p.queued.fetch_add(1, Ordering::Relaxed);
            let permit = Arc::clone(&p.workers).acquire_owned().await;
            p.queued.fetch_sub(1, Ordering::Relaxed);
            p.busy.fetch_add(1, Ordering::Relaxed);
            let began = Instant::now();
            let speed = state.condition().speed.max(1e-3);
            let dur = state.scenario.profile.service_time(z) / speed;
            tokio::time::sleep(Duration::from_secs_f64(dur)).await;
            p.busy.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
            let svc = began.elapsed().as_secs_f64();
            {
                let mut e = p
                    .service
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                *e = Some(match *e {
                    None => svc,
                    Some(v) => v + STATUS_EWMA_ALPHA * (svc - v),
                });
            }
            // A node that stopped answering meanwhile never sends the reply.
            state.condition().up
        })
    };
    match task.await {
        Ok(true) => work_reply(&state, arrived, StatusCode::OK, "done"),
        _ => hang(&state).await,
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    use super::*;
    use crate::scenario::select;

    async fn get(
        client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
        addr: SocketAddr,
        path: &str,
    ) -> (StatusCode, Bytes, f64) {
        let t = Instant::now();
        let uri: hyper::Uri = format!("http://{addr}{path}").parse().expect("uri");
        let resp = client.get(uri).await.expect("answers");
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, body, t.elapsed().as_secs_f64())
    }

    #[tokio::test]
    async fn serves_work_health_and_status_with_a_queue() {
        let def = select("heterogeneous").expect("known")[0];
        let sc = Arc::new(Scenario::new(def, 16, 1, 1.0));
        let start = Instant::now();
        // Node 0 runs at 0.25x: mean service 160 ms.
        let slow = spawn(0, Arc::clone(&sc), start, 1).await.expect("starts");
        let fast = spawn(2, Arc::clone(&sc), start, 1).await.expect("starts");
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let (s, _, _) = get(&client, fast.addr, "/").await;
        assert_eq!(s, StatusCode::OK);
        // A work answer names its node, for a client behind a balancer.
        let uri: hyper::Uri = format!("http://{}/", fast.addr).parse().expect("uri");
        let resp = client.get(uri).await.expect("answers");
        assert_eq!(
            resp.headers()
                .get(NODE_HEADER)
                .and_then(|v| v.to_str().ok()),
            Some("2")
        );
        // ... and the time it spent in the node, within what the client measured.
        let t = Instant::now();
        let uri: hyper::Uri = format!("http://{}/", fast.addr).parse().expect("uri");
        let resp = client.get(uri).await.expect("answers");
        let outside = t.elapsed().as_secs_f64();
        let inside: f64 = resp
            .headers()
            .get(NODE_TIME_HEADER)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .expect("stamped");
        assert!(
            inside > 0.0 && inside / 1e6 <= outside,
            "{inside} µs in {outside} s"
        );
        let (s, _, lat) = get(&client, slow.addr, "/health").await;
        assert_eq!(s, StatusCode::OK);
        assert!(lat >= 0.040, "health at 0.25x takes 10 ms / 0.25: {lat}");
        // Eight requests at once on four workers: four wait in the queue.
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let client = client.clone();
            let addr = slow.addr;
            tasks.push(tokio::spawn(async move { get(&client, addr, "/").await }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (_, body, _) = get(&client, slow.addr, "/status").await;
        let st: Status = serde_json::from_slice(&body).expect("json");
        assert_eq!((st.busy, st.queued, st.workers), (4, 4, 4), "{st:?}");
        for t in tasks {
            assert_eq!(t.await.expect("joins").0, StatusCode::OK);
        }
        let (_, body, _) = get(&client, slow.addr, "/status").await;
        let st: Status = serde_json::from_slice(&body).expect("json");
        let svc = st.service_ms.expect("served");
        assert!(svc > 40.0, "{svc}");
    }

    #[tokio::test]
    async fn fast_errors_and_hangs() {
        let def = select("fast-errors").expect("known")[0];
        let sc = Arc::new(Scenario::new(def, 16, 1, 1.0));
        let b = spawn(0, Arc::clone(&sc), Instant::now(), 9)
            .await
            .expect("starts");
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let mut errors = 0;
        for _ in 0..40 {
            let (s, _, lat) = get(&client, b.addr, "/").await;
            if s == StatusCode::SERVICE_UNAVAILABLE {
                errors += 1;
                assert!(lat < 0.01, "fast: {lat}");
            }
        }
        assert!((8..=32).contains(&errors), "{errors}");

        // Leak then crash at scale 0.1: node 0 hangs from 6.5 s to 8 s; start the
        // script 7 s in the past.
        let def = select("leak-then-crash").expect("known")[0];
        let sc = Arc::new(Scenario::new(def, 16, 1, 0.1));
        let past = Instant::now() - Duration::from_secs(7);
        let b = spawn(0, sc, past, 9).await.expect("starts");
        let uri: hyper::Uri = format!("http://{}/health", b.addr).parse().expect("uri");
        let r = tokio::time::timeout(Duration::from_millis(300), client.get(uri)).await;
        assert!(r.is_err(), "a hung node does not answer");
    }

    #[tokio::test]
    async fn a_restarting_node_refuses_then_comes_back_on_its_port() {
        // Rolling restarts at scale 0.1: node 0 is down from 1.0 s to 1.3 s.
        let def = select("rolling-restarts").expect("known")[0];
        let sc = Arc::new(Scenario::new(def, 8, 1, 0.1));
        let start = Instant::now();
        let seen = Arc::new(AtomicU64::new(0));
        let hook: ArrivalHook = {
            let seen = Arc::clone(&seen);
            Arc::new(move |node, t| {
                assert_eq!(node, 0);
                assert!(t >= 0.0);
                seen.fetch_add(1, Ordering::Relaxed);
            })
        };
        let b = spawn_with(0, sc, start, 1, Some(hook))
            .await
            .expect("starts");
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        assert_eq!(get(&client, b.addr, "/").await.0, StatusCode::OK);
        // A request in progress when the process goes down is lost.
        tokio::time::sleep_until(start + Duration::from_millis(960)).await;
        let uri: hyper::Uri = format!("http://{}/", b.addr).parse().expect("uri");
        let lost = client.get(uri.clone()).await;
        assert!(lost.is_err(), "the connection is closed under it");
        tokio::time::sleep_until(start + Duration::from_millis(1100)).await;
        let refused = tokio::net::TcpStream::connect(b.addr).await;
        assert!(refused.is_err(), "connections are refused while down");
        tokio::time::sleep_until(start + Duration::from_millis(1400)).await;
        let (s, _, _) = get(&client, b.addr, "/").await;
        assert_eq!(s, StatusCode::OK, "back on the same port");
        let (_, body, _) = get(&client, b.addr, "/status").await;
        let st: Status = serde_json::from_slice(&body).expect("json");
        assert_eq!((st.busy, st.queued), (0, 0), "a fresh process: {st:?}");
        assert_eq!(seen.load(Ordering::Relaxed), 3);
    }
}
