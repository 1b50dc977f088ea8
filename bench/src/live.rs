//! One live repetition of a scenario: every policy at once, each on its own set of
//! loopback backends (a "lane") so that no policy's load touches another's queues, all
//! on the same script clock and the same seeded arrival schedule. Per lane: the
//! backends, a [`Control`] fed by probe-like polling of every backend's `/health` and
//! `/status` (as an agent's sample probe would, with the same interval, timeout and
//! report delay as the simulator), a publisher of node views, several sidecars that
//! rebuild their snapshots on their own staggered ticks, and the open-loop generator.
//! Each request goes to a random sidecar, which routes it; the response (or the
//! timeout) feeds that sidecar's live state and the control.
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use plb_routing::{NodeView, PolicyKind};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::BenchError;
use crate::anchors::{self, Anchor, Tools};
use crate::backend::{self, ArrivalHook, Backend, Status};
use crate::loadgen;
use crate::metrics::RunStats;
use crate::policies::{Control, HarnessConfig, ProbeSample, Sidecar};
use crate::scenario::{Scenario, mix};

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Lane {
    scenario: Arc<Scenario>,
    cfg: HarnessConfig,
    start: Instant,
    client: HttpClient,
    work: Vec<Uri>,
    health: Vec<Uri>,
    status: Vec<Uri>,
    control: Mutex<Control>,
    views: ArcSwap<Vec<NodeView>>,
    sidecars: Vec<Sidecar>,
    stats: Mutex<RunStats>,
}

impl Lane {
    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
}

/// Runs one repetition of `scenario` for every policy in `kinds` at once and returns
/// each one's record, in the order of `kinds`. `progress` gets the run time about once
/// a second.
pub async fn run_rep(
    scenario: Arc<Scenario>,
    kinds: &[PolicyKind],
    cfg: &HarnessConfig,
    seed: u64,
    progress: impl FnMut(f64),
) -> Result<Vec<RunStats>, BenchError> {
    let (stats, _) =
        run_rep_with(scenario, kinds, &[], &Tools::default(), cfg, seed, progress).await?;
    Ok(stats)
}

/// What one anchor measured in a repetition.
#[derive(Debug, Clone)]
pub struct AnchorStats {
    /// The same record as an in-process policy's (traffic per node from the backends).
    pub stats: RunStats,
    /// CPU seconds its process tree used from the first arrival to the last reply.
    pub cpu_s: Option<f64>,
    /// Requests sent through it (the whole run, warm-up included).
    pub sent: u64,
}

impl AnchorStats {
    /// CPU microseconds per request sent.
    pub fn cpu_us_per_request(&self) -> Option<f64> {
        self.cpu_s
            .filter(|_| self.sent > 0)
            .map(|s| s * 1e6 / self.sent as f64)
    }
}

/// One anchor's repetition, or why it did not run.
#[derive(Debug)]
pub struct AnchorRun {
    /// Which anchor.
    pub anchor: Anchor,
    /// Its record, or why it could not run (not installed, did not start).
    pub result: Result<AnchorStats, String>,
}

/// How long before the load starts the probe lane's agents are started, ms.
const AGENTS_LEAD_MS: u64 = 4000;

/// A lane behind a real balancer: its own backends, the balancer's process, the load.
struct ProxyLane {
    scenario: Arc<Scenario>,
    start: Instant,
    client: HttpClient,
    target: Uri,
    stats: Arc<Mutex<RunStats>>,
}

/// [`run_rep`] with real balancers beside the in-process policies ([`crate::anchors`]):
/// each anchor gets its own lane of backends on the same script clock and the same
/// arrivals. An anchor that cannot start is reported, not fatal.
pub async fn run_rep_with(
    scenario: Arc<Scenario>,
    kinds: &[PolicyKind],
    anchor_list: &[Anchor],
    tools: &Tools,
    cfg: &HarnessConfig,
    seed: u64,
    progress: impl FnMut(f64),
) -> Result<(Vec<RunStats>, Vec<AnchorRun>), BenchError> {
    let n = scenario.nodes;
    // Anchors first: their backends' addresses go into their configs. PLB's proxy is
    // slow to set up and starts first; HAProxy and nginx last, just before the backends
    // serve, so that no health check fails for want of a backend.
    let mut order: Vec<Anchor> = anchor_list.to_vec();
    order.sort_by_key(|a| !a.is_plb());
    let mut pending = Vec::new();
    let mut failed = Vec::new();
    for anchor in order {
        let mut listeners = Vec::with_capacity(n);
        for _ in 0..n {
            listeners.push(backend::bind().await?);
        }
        let addrs: Vec<std::net::SocketAddr> = listeners
            .iter()
            .map(|l| {
                l.local_addr()
                    .map_err(|e| BenchError::Live(format!("backend address: {e}")))
            })
            .collect::<Result<_, _>>()?;
        match anchors::start(anchor, tools, &addrs, scenario.slo).await {
            Ok(running) => pending.push((running, listeners)),
            Err(e) => failed.push(AnchorRun {
                anchor,
                result: Err(e),
            }),
        }
    }
    // Time 0 of the script, a little ahead so that every lane is ready.
    let lanes_total = (kinds.len() + pending.len()) as u64;
    // Agents (the probe lane) start once their backends serve, then fetch, compile and
    // run their probe: they get a few seconds before the load starts.
    let agents_lead = if pending
        .iter()
        .any(|(r, _)| r.anchor.probe_config().is_some())
    {
        AGENTS_LEAD_MS
    } else {
        0
    };
    let start = Instant::now()
        + Duration::from_millis(200 + 20 * n as u64 * lanes_total / 16 + agents_lead);
    let mut backends: Vec<Vec<Backend>> = Vec::new();
    let mut proxies = Vec::new();
    let mut watchers: Vec<JoinHandle<()>> = Vec::new();
    for (mut running, listeners) in pending {
        let stats = Arc::new(Mutex::new(RunStats::new(&scenario)));
        let hook: ArrivalHook = {
            let stats = Arc::clone(&stats);
            Arc::new(move |node, t| lock(&stats).routed(node, t))
        };
        let mut set = Vec::with_capacity(n);
        for (i, l) in listeners.into_iter().enumerate() {
            set.push(backend::spawn_on(
                l,
                i,
                Arc::clone(&scenario),
                start,
                seed,
                Some(Arc::clone(&hook)),
            )?);
        }
        backends.push(set);
        if let Err(e) = running.start_agents() {
            let anchor = running.anchor;
            let tail = running.log_tail();
            running.stop().await;
            failed.push(AnchorRun {
                anchor,
                result: Err(format!("{e}; log: {tail}")),
            });
            continue;
        }
        let target: Uri = format!("http://{}/", running.listen)
            .parse()
            .map_err(|e| BenchError::Live(format!("proxy uri: {e}")))?;
        let lane = Arc::new(ProxyLane {
            scenario: Arc::clone(&scenario),
            start,
            client: http_client(),
            target,
            stats,
        });
        if let Some(watch) = running.watch().filter(|_| tools.watch) {
            watchers.push(tokio::spawn(watch_published(watch, Arc::clone(&lane))));
        }
        proxies.push((running, lane));
    }
    let mut lanes = Vec::new();
    for &kind in kinds {
        let mut set = Vec::with_capacity(n);
        for i in 0..n {
            set.push(backend::spawn(i, Arc::clone(&scenario), start, seed).await?);
        }
        lanes.push(Arc::new(lane(&scenario, cfg, kind, start, &set)?));
        backends.push(set);
    }
    let mut tasks: Vec<JoinHandle<()>> = Vec::new();
    for lane in &lanes {
        tasks.extend(spawn_probes(lane, seed));
        tasks.extend(spawn_publishing(lane, seed));
    }
    // CPU from the script's start: set-up (an agent compiling its probe) is not counted.
    tokio::time::sleep_until(start - Duration::from_millis(50)).await;
    let cpu_before: Vec<Option<f64>> = proxies.iter().map(|(r, _)| r.cpu_seconds()).collect();
    // Every generator on its own task, with the same arrivals; the first one here,
    // with the progress callback.
    let mut others: Vec<JoinHandle<u64>> = Vec::new();
    for lane in lanes.iter().skip(1) {
        let lane = Arc::clone(lane);
        others.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(mix(seed, 0xa11, 0));
            let sc = Arc::clone(&lane.scenario);
            let start = lane.start;
            loadgen::drive(
                &sc,
                &mut rng,
                start,
                |t0| request(Arc::clone(&lane), t0),
                |_| {},
            )
            .await
        }));
    }
    for (_, lane) in proxies.iter().skip(usize::from(lanes.is_empty())) {
        let lane = Arc::clone(lane);
        others.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(mix(seed, 0xa11, 0));
            let sc = Arc::clone(&lane.scenario);
            let start = lane.start;
            loadgen::drive(
                &sc,
                &mut rng,
                start,
                |t0| proxy_request(Arc::clone(&lane), t0),
                |_| {},
            )
            .await
        }));
    }
    let mut rng = SmallRng::seed_from_u64(mix(seed, 0xa11, 0));
    let mut sent = if let Some(lane) = lanes.first() {
        let lane = Arc::clone(lane);
        loadgen::drive(
            &scenario,
            &mut rng,
            start,
            |t0| request(Arc::clone(&lane), t0),
            progress,
        )
        .await
    } else if let Some((_, lane)) = proxies.first() {
        let lane = Arc::clone(lane);
        loadgen::drive(
            &scenario,
            &mut rng,
            start,
            |t0| proxy_request(Arc::clone(&lane), t0),
            progress,
        )
        .await
    } else {
        0
    };
    for d in others {
        sent = sent.max(
            d.await
                .map_err(|e| BenchError::Live(format!("load generator: {e}")))?,
        );
    }
    // Let the last requests answer or time out.
    tokio::time::sleep(Duration::from_secs_f64(scenario.timeout + 0.3)).await;
    for t in tasks.iter().chain(&watchers) {
        t.abort();
    }
    let mut runs = Vec::new();
    for ((running, lane), before) in proxies.into_iter().zip(cpu_before) {
        let after = running.cpu_seconds();
        let anchor = running.anchor;
        running.stop().await;
        runs.push(AnchorRun {
            anchor,
            result: Ok(AnchorStats {
                stats: lock(&lane.stats).clone(),
                cpu_s: before.zip(after).map(|(b, a)| a - b),
                sent,
            }),
        });
    }
    runs.extend(failed);
    runs.sort_by_key(|r| Anchor::ALL.iter().position(|a| *a == r.anchor));
    drop(backends);
    Ok((lanes.iter().map(|l| lock(&l.stats).clone()).collect(), runs))
}

/// How often a PLB lane's nodes view is read for its timeline's scores and trust.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// Reads what a PLB lane's balancer publishes (degrade scores, shares of the routing
/// weight, metric trust) into the lane's timeline every [`WATCH_EVERY`] of the script,
/// until aborted (`--watch` only). Two API calls a second beside hundreds of proxied
/// requests, but each builds the whole nodes view: they cost the balancer CPU that the
/// other lanes do not spend. A failed read is skipped.
async fn watch_published(watch: anchors::Watch, lane: Arc<ProxyLane>) {
    let http = anchors::api_client();
    tokio::time::sleep_until(lane.start).await;
    let mut every = tokio::time::interval(WATCH_EVERY);
    loop {
        every.tick().await;
        let Ok(published) = watch.read(&http).await else {
            continue;
        };
        let t = lane.start.elapsed().as_secs_f64();
        let mut stats = lock(&lane.stats);
        let n = published.nodes.len() as f64;
        for (i, score, share) in published.nodes {
            stats.scored(t, i, score);
            stats.shared(t, i, share * n);
        }
        for (metric, trust) in published.trust {
            stats.trusted(t, &metric, trust);
        }
    }
}

fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

/// One request intended at `t0` through a real balancer: send, measure from `t0`.
/// Where it went is counted by the backends.
async fn proxy_request(lane: Arc<ProxyLane>, t0: f64) {
    let timeout = lane.scenario.timeout;
    let deadline = lane.start + Duration::from_secs_f64(t0 + timeout);
    let answer =
        tokio::time::timeout_at(deadline, get_work(&lane.client, lane.target.clone())).await;
    let end = lane.start.elapsed().as_secs_f64();
    let (latency, ok, timed_out, stamp) = match answer {
        Ok(Some(a)) => (end - t0, a.status == StatusCode::OK, false, a.stamp),
        Ok(None) => (end - t0, false, false, None),
        Err(_) => (timeout, false, true, None),
    };
    let mut stats = lock(&lane.stats);
    stats.done(t0, stamp.map(|(node, _)| node), latency, ok, timed_out);
    if let Some((_, in_node)) = stamp.filter(|_| ok) {
        stats.stamped(t0, latency, in_node);
    }
}

/// A work request's answer: its status and, when a backend answered (not the balancer
/// itself), the node and the time the request spent in it, from the backend's
/// [`backend::NODE_HEADER`] and [`backend::NODE_TIME_HEADER`].
struct WorkAnswer {
    status: StatusCode,
    stamp: Option<(usize, f64)>,
}

/// GET `uri` (through a balancer or straight to a node), reading the whole body.
async fn get_work(client: &HttpClient, uri: Uri) -> Option<WorkAnswer> {
    let resp = client.get(uri).await.ok()?;
    let status = resp.status();
    let header = |name: &str| resp.headers().get(name)?.to_str().ok();
    let stamp = header(backend::NODE_HEADER)
        .and_then(|v| v.parse().ok())
        .zip(header(backend::NODE_TIME_HEADER).and_then(|v| v.parse::<u64>().ok()))
        .map(|(node, us)| (node, us as f64 * 1e-6));
    resp.into_body().collect().await.ok()?;
    Some(WorkAnswer { status, stamp })
}

fn lane(
    scenario: &Arc<Scenario>,
    cfg: &HarnessConfig,
    kind: PolicyKind,
    start: Instant,
    set: &[Backend],
) -> Result<Lane, BenchError> {
    let uri = |addr: std::net::SocketAddr, path: &str| -> Result<Uri, BenchError> {
        format!("http://{addr}{path}")
            .parse()
            .map_err(|e| BenchError::Live(format!("backend uri: {e}")))
    };
    let ids: Vec<(String, String)> = set
        .iter()
        .enumerate()
        .map(|(i, b)| (format!("n{i}"), b.addr.to_string()))
        .collect();
    let mut control = Control::new(kind, &ids, scenario.slo, cfg)?;
    for i in 0..set.len() {
        control.set_member(i, scenario.condition(i, 0.0).present, 0.0);
    }
    let views = control.views(0.0, &|_| 0.0);
    let sidecars = (0..cfg.sidecars.max(1))
        .map(|_| Sidecar::for_harness(kind, views.clone(), 0.0, cfg))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Lane {
        scenario: Arc::clone(scenario),
        cfg: *cfg,
        start,
        client: http_client(),
        work: set
            .iter()
            .map(|b| uri(b.addr, "/"))
            .collect::<Result<_, _>>()?,
        health: set
            .iter()
            .map(|b| uri(b.addr, "/health"))
            .collect::<Result<_, _>>()?,
        status: set
            .iter()
            .map(|b| uri(b.addr, "/status"))
            .collect::<Result<_, _>>()?,
        control: Mutex::new(control),
        views: ArcSwap::from_pointee(views),
        sidecars,
        stats: Mutex::new(RunStats::new(scenario)),
    })
}

/// GET `uri`, reading the whole body; the status and body.
async fn get(client: &HttpClient, uri: Uri) -> Option<(StatusCode, Bytes)> {
    let resp = client.get(uri).await.ok()?;
    let status = resp.status();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, body))
}

/// One request intended at `t0`: route, send, measure from `t0`, feed back.
async fn request(lane: Arc<Lane>, t0: f64) {
    let now = lane.now();
    let s = rand::rng().random_range(0..lane.sidecars.len());
    let sidecar = &lane.sidecars[s];
    let picked = sidecar.pick(now, &mut rand::rng());
    let Some((node, live)) = picked.and_then(|i| Some((i, sidecar.live(i)?))) else {
        lock(&lane.stats).done(t0, None, 0.0, false, false);
        return;
    };
    let load = sidecar.load_estimate(node, lane.sidecars.len());
    let guard = live.start(now);
    lock(&lane.stats).routed(node, t0);
    let timeout = lane.scenario.timeout;
    let deadline = lane.start + Duration::from_secs_f64(t0 + timeout);
    let answer =
        tokio::time::timeout_at(deadline, get_work(&lane.client, lane.work[node].clone())).await;
    let end = lane.now();
    let (latency, ok, timed_out, in_node) = match answer {
        Ok(Some(a)) => (
            end - t0,
            a.status == StatusCode::OK,
            false,
            a.stamp.map(|(_, s)| s),
        ),
        Ok(None) => (end - t0, false, false, None),
        Err(_) => (timeout, false, true, None),
    };
    guard.finish(latency, ok, end);
    lock(&lane.control).on_feedback(node, latency, ok, end, load);
    let mut stats = lock(&lane.stats);
    stats.done(t0, Some(node), latency, ok, timed_out);
    if let Some(in_node) = in_node.filter(|_| ok) {
        stats.stamped(t0, latency, in_node);
    }
}

/// One probe task per node: `/health` timed and `/status` read every probe interval,
/// the sample delivered to the control after the report delay.
fn spawn_probes(lane: &Arc<Lane>, seed: u64) -> Vec<JoinHandle<()>> {
    let mut rng = SmallRng::seed_from_u64(mix(seed, 0x9b0be, 0));
    (0..lane.scenario.nodes)
        .map(|node| {
            let lane = Arc::clone(lane);
            let phase = rng.random::<f64>() * lane.cfg.probe_interval;
            tokio::spawn(async move {
                let interval = Duration::from_secs_f64(lane.cfg.probe_interval);
                let limit = Duration::from_secs_f64(lane.cfg.probe_timeout);
                let mut next = lane.start + Duration::from_secs_f64(phase);
                loop {
                    tokio::time::sleep_until(next).await;
                    next += interval;
                    let taken_at = lane.now();
                    if !lane.scenario.condition(node, taken_at).present {
                        continue;
                    }
                    let t = Instant::now();
                    let health =
                        tokio::time::timeout(limit, get(&lane.client, lane.health[node].clone()))
                            .await;
                    let ok = matches!(health, Ok(Some((StatusCode::OK, _))));
                    let health_latency = if ok {
                        t.elapsed().as_secs_f64()
                    } else {
                        lane.cfg.probe_timeout
                    };
                    let status = if ok {
                        match tokio::time::timeout(
                            limit,
                            get(&lane.client, lane.status[node].clone()),
                        )
                        .await
                        {
                            Ok(Some((StatusCode::OK, body))) => {
                                serde_json::from_slice::<Status>(&body).ok()
                            }
                            _ => None,
                        }
                    } else {
                        None
                    };
                    let sample = ProbeSample {
                        node,
                        taken_at,
                        ok,
                        health_latency,
                        queued: status.map(|s| s.queued as f64),
                        busy: status.map(|s| s.busy as f64),
                        workers: status.map(|s| s.workers as f64),
                        service: status.and_then(|s| s.service_ms).map(|ms| ms / 1000.0),
                    };
                    let lane = Arc::clone(&lane);
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs_f64(lane.cfg.report_delay)).await;
                        lock(&lane.control).on_sample(&sample);
                    });
                }
            })
        })
        .collect()
}

/// The publisher (membership from the script, then views) and each sidecar's rebuild
/// loop on its own phase.
fn spawn_publishing(lane: &Arc<Lane>, seed: u64) -> Vec<JoinHandle<()>> {
    let every = Duration::from_secs_f64(lane.cfg.publish_interval);
    let mut tasks = Vec::new();
    {
        let lane = Arc::clone(lane);
        tasks.push(tokio::spawn(async move {
            let mut member: Vec<bool> = (0..lane.scenario.nodes)
                .map(|i| lane.scenario.condition(i, 0.0).present)
                .collect();
            let mut next = lane.start + every;
            loop {
                tokio::time::sleep_until(next).await;
                next += every;
                let now = lane.now();
                let views = {
                    let mut control = lock(&lane.control);
                    for &i in lane.scenario.affected() {
                        let m = lane.scenario.condition(i, now).present;
                        if m != member[i] {
                            member[i] = m;
                            control.set_member(i, m, now);
                        }
                    }
                    let in_flight = |i: usize| -> f64 {
                        lane.sidecars
                            .iter()
                            .filter_map(|s| s.live(i))
                            .map(|l| l.in_flight() as f64)
                            .sum()
                    };
                    control.views(now, &in_flight)
                };
                lane.views.store(Arc::new(views));
            }
        }));
    }
    let mut rng = SmallRng::seed_from_u64(mix(seed, 0x5ebd, 0));
    for s in 0..lane.sidecars.len() {
        let lane = Arc::clone(lane);
        let phase = rng.random::<f64>() * lane.cfg.publish_interval;
        tasks.push(tokio::spawn(async move {
            let mut next = lane.start + every + Duration::from_secs_f64(phase);
            loop {
                tokio::time::sleep_until(next).await;
                next += every;
                let views = (**lane.views.load()).clone();
                // Same nodes in the same order every time: the build cannot fail.
                let _ = lane.sidecars[s].rebuild(views, lane.now());
            }
        }));
    }
    tasks
}
