//! The discrete-event simulator: the live harness's model on a virtual clock. Each node
//! is a FIFO queue with `workers` servers and lognormal service times divided by the
//! scripted speed at the start of service; Poisson arrivals (thinned for time-varying
//! load) go to a random sidecar, which routes with the *same* `plb-routing` policy code
//! over its own snapshot and live state; responses feed back into that live state and
//! the contender's [`Control`] (for `plb`, the prediction code), exactly as live.
//! Probes are modelled too: every node is probed each `probe_interval` with a random
//! phase, a sample reaches the balancer after the probe's own latency plus
//! `report_delay`, the balancer publishes views every `publish_interval` and each
//! sidecar rebuilds its snapshot on its own staggered interval.
//!
//! Like the live backends, a node keeps serving requests whose client gave up, a node
//! that is not up never replies (its clients time out), and a fast 503 takes no worker.
mod events;
pub mod oracle;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use self::events::{Clock, EvKind, Next};
use self::oracle::{MinTree, expected_completion};
use crate::BenchError;
use crate::loadgen::next_arrival;
use crate::metrics::RunStats;
use crate::policies::{Contender, Control, HarnessConfig, ProbeSample, Sidecar};
use crate::scenario::{Scenario, mix, std_normal};
use plb_routing::NodeView;

/// Weight of one completed request in a node's reported mean service time (`/status`).
pub const STATUS_EWMA_ALPHA: f64 = 0.1;
/// Time to send back a fast 503, seconds.
const FAST_REPLY: f64 = 0.0002;

#[derive(Debug, Clone, Copy)]
struct Req {
    t0: f64,
    start: f64,
    node: u32,
    sidecar: u16,
    /// The node's in flight at dispatch, as the sidecar estimated it.
    load: u16,
    client_open: bool,
    node_open: bool,
    generation: u32,
}

#[derive(Debug, Clone, Default)]
struct SimNode {
    busy: u32,
    queue: std::collections::VecDeque<u32>,
    /// The requests being served.
    serving: Vec<u32>,
    service_ewma: Option<f64>,
    /// Restarts so far: completions begun before the last one are lost.
    epoch: u32,
}

enum Routing {
    Oracle(MinTree),
    Policy {
        control: Box<Control>,
        sidecars: Vec<Sidecar>,
        rngs: Vec<SmallRng>,
        views: Vec<NodeView>,
    },
}

struct Sim<'a> {
    sc: &'a Scenario,
    cfg: &'a HarnessConfig,
    clock: Clock,
    reqs: Vec<Req>,
    free: Vec<u32>,
    nodes: Vec<SimNode>,
    member: Vec<bool>,
    samples: Vec<ProbeSample>,
    free_samples: Vec<u32>,
    stats: RunStats,
    routing: Routing,
    rng_arrival: SmallRng,
    rng_service: SmallRng,
    rng_misc: SmallRng,
}

/// Runs `contender` on `scenario` (seeded by `seed`: the same seed gives every
/// contender the same arrivals) and returns what it measured.
pub fn run(
    scenario: &Scenario,
    contender: Contender,
    cfg: &HarnessConfig,
    seed: u64,
) -> Result<RunStats, BenchError> {
    let n = scenario.nodes;
    if cfg.sidecars == 0 || cfg.sidecars > usize::from(u16::MAX) {
        return Err(BenchError::InvalidArgument(format!(
            "sidecars must be 1..=65535, not {}",
            cfg.sidecars
        )));
    }
    let member: Vec<bool> = (0..n).map(|i| scenario.condition(i, 0.0).present).collect();
    let routing = match contender {
        Contender::Oracle => Routing::Oracle(MinTree::new(n)),
        Contender::Anchor(a) => {
            return Err(BenchError::InvalidArgument(format!(
                "{} runs live only",
                a.name()
            )));
        }
        Contender::Policy(kind) => {
            let ids: Vec<(String, String)> = (0..n)
                .map(|i| (format!("n{i}"), format!("sim:{i}")))
                .collect();
            let mut control = Box::new(Control::new(kind, &ids, scenario.slo, cfg)?);
            for (i, &m) in member.iter().enumerate() {
                control.set_member(i, m, 0.0);
            }
            let views = control.views(0.0, &|_| 0.0);
            let sidecars = (0..cfg.sidecars)
                .map(|_| Sidecar::for_harness(kind, views.clone(), 0.0, cfg))
                .collect::<Result<Vec<_>, _>>()?;
            let rngs = (0..cfg.sidecars)
                .map(|s| SmallRng::seed_from_u64(mix(seed, 0x51de, s as u64)))
                .collect();
            Routing::Policy {
                control,
                sidecars,
                rngs,
                views,
            }
        }
    };
    let mut sim = Sim {
        sc: scenario,
        cfg,
        clock: Clock::default(),
        reqs: Vec::new(),
        free: Vec::new(),
        nodes: vec![SimNode::default(); n],
        member,
        samples: Vec::new(),
        free_samples: Vec::new(),
        stats: RunStats::new(scenario),
        routing,
        rng_arrival: SmallRng::seed_from_u64(mix(seed, 0xa11, 0)),
        rng_service: SmallRng::seed_from_u64(mix(seed, 0x5e1, 0)),
        rng_misc: SmallRng::seed_from_u64(mix(seed, 0x315c, 0)),
    };
    sim.start();
    sim.run_to(scenario.duration() + scenario.timeout + 0.5)?;
    Ok(sim.stats)
}

impl Sim<'_> {
    fn start(&mut self) {
        if let Some(t) = next_arrival(self.sc, &mut self.rng_arrival, 0.0) {
            self.clock.at(t, EvKind::Arrival);
        }
        for i in 0..self.sc.nodes {
            let phase = self.rng_misc.random::<f64>() * self.cfg.probe_interval;
            self.clock.at(phase, EvKind::Probe { node: i as u32 });
            if let Some((down, _)) = self.sc.restart_window(i) {
                self.clock.at(down, EvKind::Crash { node: i as u32 });
            }
        }
        match &mut self.routing {
            Routing::Oracle(tree) => {
                for i in 0..self.sc.nodes {
                    let c = self.sc.condition(i, 0.0);
                    tree.set(i, expected_completion(&self.sc.profile, &c, 0, 0));
                }
                self.clock.at(0.05, EvKind::Tick);
            }
            Routing::Policy { sidecars, .. } => {
                self.clock.at(self.cfg.publish_interval, EvKind::Publish);
                for s in 0..sidecars.len() {
                    let phase = self.rng_misc.random::<f64>() * self.cfg.publish_interval;
                    self.clock.at(
                        self.cfg.publish_interval + phase,
                        EvKind::Rebuild { sidecar: s as u16 },
                    );
                }
            }
        }
    }

    fn run_to(&mut self, end: f64) -> Result<(), BenchError> {
        while let Some(next) = self.clock.next(end) {
            match next {
                Next::Deadline(t, req, generation) => self.deadline(t, req, generation),
                Next::Event(t, kind) => match kind {
                    EvKind::Arrival => self.arrival(t),
                    EvKind::Complete { node, req, epoch } => {
                        if self.nodes[node as usize].epoch == epoch {
                            self.complete(t, node as usize, req);
                        }
                    }
                    EvKind::Crash { node } => self.crash(t, node as usize),
                    EvKind::Reply { req } => {
                        let t0 = self.reqs[req as usize].t0;
                        self.finish(t, req, t - t0, false, false);
                        self.release(req);
                    }
                    EvKind::Probe { node } => self.probe(t, node as usize),
                    EvKind::Deliver { sample } => self.deliver(sample),
                    EvKind::Publish => self.publish(t),
                    EvKind::Rebuild { sidecar } => self.rebuild(t, sidecar as usize)?,
                    EvKind::Tick => self.tick(t),
                },
            }
        }
        Ok(())
    }

    fn alloc(&mut self, req: Req) -> u32 {
        match self.free.pop() {
            Some(i) => {
                let generation = self.reqs[i as usize].generation;
                self.reqs[i as usize] = Req { generation, ..req };
                i
            }
            None => {
                self.reqs.push(req);
                (self.reqs.len() - 1) as u32
            }
        }
    }

    /// Frees a request once both its client and its node are done with it.
    fn release(&mut self, req: u32) {
        let r = &mut self.reqs[req as usize];
        r.node_open = false;
        if !r.client_open {
            r.generation = r.generation.wrapping_add(1);
            self.free.push(req);
        }
    }

    fn arrival(&mut self, now: f64) {
        if let Some(t) = next_arrival(self.sc, &mut self.rng_arrival, now) {
            self.clock.at(t, EvKind::Arrival);
        }
        let picked = match &mut self.routing {
            Routing::Oracle(tree) => tree.best().map(|i| (i, 0usize, 0.0)),
            Routing::Policy { sidecars, rngs, .. } => {
                let s = self.rng_misc.random_range(0..sidecars.len());
                let b = sidecars.len();
                sidecars[s].pick(now, &mut rngs[s]).map(|i| {
                    let load = sidecars[s].load_estimate(i, b);
                    if let Some(live) = sidecars[s].live(i) {
                        live.begin(now);
                    }
                    (i, s, load)
                })
            }
        };
        let Some((node, sidecar, load)) = picked else {
            // Nothing to route to: the request fails at once.
            self.stats.done(now, None, 0.0, false, false);
            return;
        };
        self.stats.routed(node, now);
        let req = self.alloc(Req {
            t0: now,
            start: now,
            node: node as u32,
            sidecar: sidecar as u16,
            load: load.min(f64::from(u16::MAX)) as u16,
            client_open: true,
            node_open: true,
            generation: 0,
        });
        let generation = self.reqs[req as usize].generation;
        self.clock.deadline(now + self.sc.timeout, req, generation);
        let c = self.sc.condition(node, now);
        if !c.present || c.refusing {
            // Connection refused.
            self.clock.at(now + self.cfg.network, EvKind::Reply { req });
        } else if !c.up {
            // Accepted and never answered: the client times out.
            self.reqs[req as usize].node_open = false;
        } else if c.error_rate > 0.0 && self.rng_service.random::<f64>() < c.error_rate {
            self.clock
                .at(now + self.cfg.network + FAST_REPLY, EvKind::Reply { req });
        } else if self.nodes[node].busy < self.sc.profile.workers {
            self.serve(now, node, req);
        } else {
            self.nodes[node].queue.push_back(req);
            self.oracle_update(node, now);
        }
    }

    fn serve(&mut self, now: f64, node: usize, req: u32) {
        self.nodes[node].busy += 1;
        self.nodes[node].serving.push(req);
        self.reqs[req as usize].start = now;
        let speed = self.sc.condition(node, now).speed.max(1e-3);
        let z = std_normal(&mut self.rng_service);
        let dur = self.sc.profile.service_time(z) / speed;
        self.clock.at(
            now + dur,
            EvKind::Complete {
                node: node as u32,
                req,
                epoch: self.nodes[node].epoch,
            },
        );
        self.oracle_update(node, now);
    }

    fn complete(&mut self, now: f64, node: usize, req: u32) {
        let n = &mut self.nodes[node];
        n.busy = n.busy.saturating_sub(1);
        if let Some(k) = n.serving.iter().position(|&r| r == req) {
            n.serving.swap_remove(k);
        }
        let svc = now - self.reqs[req as usize].start;
        n.service_ewma = Some(match n.service_ewma {
            None => svc,
            Some(e) => e + STATUS_EWMA_ALPHA * (svc - e),
        });
        // A node that stopped answering meanwhile never sends the reply.
        if self.reqs[req as usize].client_open && self.sc.condition(node, now).up {
            let latency = now - self.reqs[req as usize].t0 + self.cfg.network;
            self.finish(now, req, latency, true, false);
        }
        self.release(req);
        if let Some(next) = self.nodes[node].queue.pop_front() {
            self.serve(now, node, next);
        } else {
            self.oracle_update(node, now);
        }
    }

    /// Node `node`'s process goes down: every request it was serving or queueing
    /// fails now (the connection is reset) and it comes back with no work.
    fn crash(&mut self, now: f64, node: usize) {
        let n = &mut self.nodes[node];
        n.epoch = n.epoch.wrapping_add(1);
        n.busy = 0;
        let lost: Vec<u32> = n.serving.drain(..).chain(n.queue.drain(..)).collect();
        for req in lost {
            if self.reqs[req as usize].client_open {
                let t0 = self.reqs[req as usize].t0;
                self.finish(now, req, now - t0 + self.cfg.network, false, false);
            }
            self.release(req);
        }
        self.oracle_update(node, now);
    }

    fn deadline(&mut self, now: f64, req: u32, generation: u32) {
        let r = self.reqs[req as usize];
        if r.generation != generation || !r.client_open {
            return;
        }
        self.finish(now, req, self.sc.timeout, false, true);
        if !self.reqs[req as usize].node_open {
            let r = &mut self.reqs[req as usize];
            r.generation = r.generation.wrapping_add(1);
            self.free.push(req);
        }
    }

    /// The client is done with `req`: record it and feed it back.
    fn finish(&mut self, now: f64, req: u32, latency: f64, ok: bool, timed_out: bool) {
        let r = &mut self.reqs[req as usize];
        r.client_open = false;
        let (t0, node, sidecar, load) = (r.t0, r.node as usize, r.sidecar as usize, r.load);
        self.stats.done(t0, Some(node), latency, ok, timed_out);
        if let Routing::Policy {
            control, sidecars, ..
        } = &mut self.routing
        {
            if let Some(live) = sidecars[sidecar].live(node) {
                if timed_out {
                    // As the proxy sees a client that gave up: no answer, only a wait.
                    live.abandon_after(latency, now);
                } else {
                    live.end(latency, ok, now);
                }
            }
            control.on_feedback(node, latency, ok, now, f64::from(load));
        }
    }

    fn probe(&mut self, now: f64, node: usize) {
        self.clock.at(
            now + self.cfg.probe_interval,
            EvKind::Probe { node: node as u32 },
        );
        if matches!(self.routing, Routing::Oracle(_)) {
            return;
        }
        let c = self.sc.condition(node, now);
        if !c.present {
            return;
        }
        let n = &self.nodes[node];
        // A refused probe fails as fast as the network answers; a hung one at its
        // timeout. Either reports the timeout as its latency, as live.
        let took = if c.refusing {
            self.cfg.network
        } else {
            self.cfg.probe_timeout
        };
        let sample = if c.serving() {
            ProbeSample {
                node,
                taken_at: now,
                ok: true,
                // Live, the async sleep ends on the next millisecond tick.
                health_latency: self.cfg.network
                    + self.sc.profile.health_work / c.speed.max(1e-3)
                    + 0.001 * self.rng_misc.random::<f64>(),
                queued: Some(n.queue.len() as f64),
                busy: Some(f64::from(n.busy)),
                workers: Some(f64::from(self.sc.profile.workers)),
                service: n.service_ewma,
            }
        } else {
            ProbeSample {
                node,
                taken_at: now,
                ok: false,
                health_latency: self.cfg.probe_timeout,
                queued: None,
                busy: None,
                workers: None,
                service: None,
            }
        };
        let took = if sample.ok {
            sample.health_latency.min(self.cfg.probe_timeout)
        } else {
            took
        };
        let arrives = now + took + self.cfg.report_delay;
        let idx = match self.free_samples.pop() {
            Some(i) => {
                self.samples[i as usize] = sample;
                i
            }
            None => {
                self.samples.push(sample);
                (self.samples.len() - 1) as u32
            }
        };
        self.clock.at(arrives, EvKind::Deliver { sample: idx });
    }

    fn deliver(&mut self, sample: u32) {
        if let Routing::Policy { control, .. } = &mut self.routing {
            control.on_sample(&self.samples[sample as usize]);
        }
        self.free_samples.push(sample);
    }

    fn publish(&mut self, now: f64) {
        self.clock
            .at(now + self.cfg.publish_interval, EvKind::Publish);
        if let Routing::Policy {
            control,
            views,
            sidecars,
            ..
        } = &mut self.routing
        {
            for &i in self.sc.affected() {
                let m = self.sc.condition(i, now).present;
                if m != self.member[i] {
                    self.member[i] = m;
                    control.set_member(i, m, now);
                }
            }
            let in_flight = |i: usize| -> f64 {
                sidecars
                    .iter()
                    .filter_map(|s| s.live(i))
                    .map(|l| l.in_flight() as f64)
                    .sum()
            };
            *views = control.views(now, &in_flight);
            for (i, v) in views.iter().enumerate() {
                self.stats.scored(now, i, v.degrade_score);
            }
        }
    }

    fn rebuild(&mut self, now: f64, sidecar: usize) -> Result<(), BenchError> {
        self.clock.at(
            now + self.cfg.publish_interval,
            EvKind::Rebuild {
                sidecar: sidecar as u16,
            },
        );
        if let Routing::Policy {
            sidecars, views, ..
        } = &self.routing
        {
            sidecars[sidecar].rebuild(views.clone(), now)?;
        }
        Ok(())
    }

    fn tick(&mut self, now: f64) {
        self.clock.at(now + 0.05, EvKind::Tick);
        for i in 0..self.sc.nodes {
            self.oracle_update(i, now);
        }
    }

    fn oracle_update(&mut self, node: usize, now: f64) {
        if let Routing::Oracle(tree) = &mut self.routing {
            let n = &self.nodes[node];
            let c = self.sc.condition(node, now);
            tree.set(
                node,
                expected_completion(&self.sc.profile, &c, n.busy, n.queue.len()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use plb_routing::PolicyKind;

    use super::*;
    use crate::scenario::select;

    fn sim(name: &str, nodes: usize, scale: f64, who: Contender) -> crate::metrics::RunSummary {
        let def = select(name).expect("known")[0];
        let s = Scenario::new(def, nodes, 3, scale);
        run(&s, who, &HarnessConfig::default(), 3)
            .expect("runs")
            .summarize(&s)
    }

    #[test]
    fn light_load_latency_matches_the_service_time() {
        // At 70% load with 4 workers queueing is modest: the median stays near the
        // lognormal median (mean × e^(-σ²/2) ≈ 35 ms) plus a little.
        let r = sim(
            "homogeneous",
            16,
            0.3,
            Contender::Policy(PolicyKind::LeastRequest),
        );
        assert!(r.requests > 5_000, "{}", r.requests);
        assert!((30.0..50.0).contains(&r.p50_ms), "{}", r.p50_ms);
        assert_eq!(r.errors, 0);
        assert!(r.share_deviation < 0.05, "{}", r.share_deviation);
    }

    #[test]
    fn oracle_beats_round_robin_on_heterogeneous() {
        let rr = sim(
            "heterogeneous",
            16,
            0.3,
            Contender::Policy(PolicyKind::RoundRobin),
        );
        let or = sim("heterogeneous", 16, 0.3, Contender::Oracle);
        assert!(
            or.p99_ms < rr.p99_ms / 2.0,
            "{} vs {}",
            or.p99_ms,
            rr.p99_ms
        );
        // Round-robin overloads the slow nodes: they get 1/8 of the traffic with 1/29
        // of the capacity.
        let t = rr.affected_traffic.expect("affected");
        assert!((t - 0.125).abs() < 0.01, "{t}");
    }

    #[test]
    fn restarts_fail_fast_until_health_checks_drop_the_node() {
        // Every node is refused for 1.5 s in turn (scale 0.5): a fast error, no
        // timeout, for what was sent there until two probes failed (the whole window
        // at 1 s probes) and what it held when it went down.
        for kind in [PolicyKind::RoundRobin, PolicyKind::LeastRequest] {
            let r = sim("rolling-restarts", 16, 0.5, Contender::Policy(kind));
            let errors = r.errors as f64 / r.requests as f64;
            assert!((0.02..0.1).contains(&errors), "{kind}: {errors}");
            assert!(r.timeouts < r.errors / 100, "{kind}: {r:?}");
            assert!(r.into_failure >= r.errors / 2, "{kind}: {r:?}");
            // The restarted nodes come back: every node carries its share.
            assert!(r.share_deviation < 0.05, "{kind}: {}", r.share_deviation);
        }
    }

    #[test]
    fn a_hung_node_causes_timeouts_until_health_checks_drop_it() {
        let r = sim(
            "leak-then-crash",
            16,
            1.0,
            Contender::Policy(PolicyKind::LeastRequest),
        );
        assert!(r.timeouts > 0);
        // 2 failed probes at 1 s plus delays: a few seconds of the node's traffic, far
        // from its 15 s down window.
        let per_s = r.requests as f64 / 90.0;
        assert!(
            (r.timeouts as f64) < per_s / 16.0 * 5.0,
            "{} timeouts at {per_s}/s",
            r.timeouts
        );
    }

    #[test]
    fn the_timeline_records_the_scores_that_shed_the_degrading_node() {
        let def = select("gradual-degradation").expect("known")[0];
        let s = Scenario::new(def, 8, 3, 1.0);
        let top = |who: Contender| -> Vec<f32> {
            let r = run(&s, who, &HarnessConfig::default(), 3)
                .expect("runs")
                .summarize(&s);
            let tl = r.timeline.expect("small pool");
            (0..8)
                .map(|i| tl.score.iter().map(|row| row[i]).fold(0.0, f32::max))
                .collect()
        };
        let plb = top(Contender::Policy(PolicyKind::Plb));
        let hit = s.affected()[0];
        assert!(plb[hit] > 0.5, "{plb:?}");
        let mut others = plb.iter().enumerate().filter(|(i, _)| *i != hit);
        assert!(others.all(|(_, v)| *v < plb[hit]), "{plb:?}");
        // A baseline has no pipeline to publish scores: its row stays 0.
        let lc = top(Contender::Policy(PolicyKind::LeastRequest));
        assert!(lc.iter().all(|v| *v == 0.0), "{lc:?}");
    }
}
