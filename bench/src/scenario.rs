//! The scenario table: named, seeded scripts of every node's speed, availability and
//! error rate and of the offered load, as pure functions of time, so the simulator and
//! the live backends play exactly the same script.
//!
//! Times inside a script are *nominal* seconds; a run scales them by `scale` (from
//! `--duration`), so a scenario keeps its shape at any length. Fluctuation periods
//! (0.5 s, 5 s) are properties of the disturbance, not of the timeline, and do not scale.
//! Affected nodes scale with the pool: one in 16 (two in 16 for `heterogeneous`), at
//! positions `i % 16 == 0` (and `1`); a quarter (`i % 8 < 2`) for `two-slow`; every node
//! for `rolling-restarts`, in eight waves (`i % 8`), so the 16-node live run and a
//! 1,000-node simulation are the same scenario.
use serde::Serialize;

use crate::BenchError;

/// What one node is like at speed 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct NodeProfile {
    /// Requests served at once; the rest wait in a FIFO queue.
    pub workers: u32,
    /// Mean service time at speed 1, seconds (lognormal).
    pub mean_service: f64,
    /// Shape of the lognormal service time (σ of its logarithm).
    pub sigma: f64,
    /// Time `/health` takes at speed 1 (it does not queue behind requests), seconds.
    pub health_work: f64,
}

impl Default for NodeProfile {
    fn default() -> Self {
        NodeProfile {
            workers: 4,
            mean_service: 0.040,
            sigma: 0.5,
            health_work: 0.010,
        }
    }
}

impl NodeProfile {
    /// A lognormal service time with this profile's mean at speed 1, from a standard
    /// normal draw `z`.
    pub fn service_time(&self, z: f64) -> f64 {
        self.mean_service * (self.sigma * z - 0.5 * self.sigma * self.sigma).exp()
    }

    /// The service-time quantile `q` at speed 1 (the idle node's latency tail).
    pub fn service_quantile(&self, z_q: f64) -> f64 {
        self.service_time(z_q)
    }
}

/// The shape of the backends and their load: the pool every scenario runs on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Shape {
    /// 4 workers per node, lognormal service time of mean 40 ms (σ 0.5), load 70% of
    /// capacity, SLO 200 ms.
    #[default]
    Standard,
    /// 2 workers per node, lognormal service time of median 20 ms (σ 0.5, mean
    /// 22.7 ms), load 68% of capacity, SLO 100 ms: the external harness of issue 13
    /// (8 nodes: 480 requests/s).
    LowConcurrency,
}

impl Shape {
    /// Its name on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Standard => "standard",
            Shape::LowConcurrency => "low-concurrency",
        }
    }

    /// Every node's profile at speed 1.
    pub fn profile(self) -> NodeProfile {
        match self {
            Shape::Standard => NodeProfile::default(),
            Shape::LowConcurrency => {
                let sigma = 0.5;
                NodeProfile {
                    workers: 2,
                    // Median 20 ms: the mean of a lognormal is its median × e^(σ²/2).
                    mean_service: 0.020 * (0.5_f64 * sigma * sigma).exp(),
                    sigma,
                    health_work: 0.010,
                }
            }
        }
    }

    /// Offered load as a fraction of the pool's base capacity.
    pub fn load(self) -> f64 {
        match self {
            Shape::Standard => 0.7,
            Shape::LowConcurrency => 0.68,
        }
    }

    /// The pool's latency objective, seconds.
    pub fn slo(self) -> f64 {
        match self {
            Shape::Standard => 0.2,
            Shape::LowConcurrency => 0.1,
        }
    }

    /// One line saying what it is.
    pub fn about(self) -> String {
        let p = self.profile();
        format!(
            "{} workers/node, lognormal service mean {:.1} ms (sigma {}), load {:.0}%, SLO {:.0} ms",
            p.workers,
            p.mean_service * 1000.0,
            p.sigma,
            self.load() * 100.0,
            self.slo() * 1000.0
        )
    }
}

/// A node's condition at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Condition {
    /// Part of the pool (a joining node is absent before it joins).
    pub present: bool,
    /// Answers at all; a node that is not up accepts connections and never replies.
    pub up: bool,
    /// Service speed relative to its profile (service time is divided by it).
    pub speed: f64,
    /// Probability that a request gets a fast 503 instead of being served.
    pub error_rate: f64,
    /// The node's process is down (restarting): it stays in the pool but refuses
    /// connections, and requests in progress when it went down are lost.
    pub refusing: bool,
}

impl Condition {
    const NORMAL: Condition = Condition {
        present: true,
        up: true,
        speed: 1.0,
        error_rate: 0.0,
        refusing: false,
    };

    /// Whether the node serves requests at all (present, up and not refusing).
    pub fn serving(&self) -> bool {
        self.present && self.up && !self.refusing
    }
}

/// The scripted scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Every node alike.
    Homogeneous,
    /// Two nodes in 16 at a quarter of the speed, for the whole run.
    Heterogeneous,
    /// One node in 16 slows from 1× to 0.2× over 60 s, holds, then recovers.
    GradualDegradation,
    /// One node in 16 slows (a leak), then stops answering, then restarts.
    LeakThenCrash,
    /// One node in 16 runs 20× slower for 10 s.
    Stall,
    /// Every node re-draws its speed (0.4×..1.6×) every 0.5 s.
    FluctuatingFast,
    /// Every node re-draws its speed (0.4×..1.6×) every 5 s.
    FluctuatingSlow,
    /// Load bursts to 1.3× capacity for 1 s in every 8 s (0.65× between).
    Bursts,
    /// One node in 16 answers half of its requests with a fast 503.
    FastErrors,
    /// One node in 16 joins a third of the way in, cold (0.25× rising to 1× over 10 s).
    JoinCold,
    /// Every node restarts once, in eight waves 9 s apart: down (connections refused)
    /// for 3 s, then back cold (0.3× rising to 1× over 8 s).
    RollingRestarts,
    /// One node in 16 fails fast (503) in bursts: 80% of its requests for 2 s in
    /// every 5 s, none between (the trap that makes least-connections send it more).
    IntermittentErrors,
    /// One node in 16 runs 20× slower for 30 s.
    LongStall,
    /// A quarter of the nodes (`i % 8 < 2`, 2 of 8) slow from 1× to 0.4× over 10 s and
    /// stay slow.
    TwoSlow,
}

/// Waves of `rolling-restarts`: node `i` restarts in wave `i % 8`.
pub const RESTART_WAVES: usize = 8;
/// `rolling-restarts`: when wave 0 goes down, the time between waves, how long a node
/// is down and how long it takes to warm up afterwards, nominal seconds.
const RESTART_FIRST: f64 = 10.0;
const RESTART_EVERY: f64 = 9.0;
const RESTART_DOWN: f64 = 3.0;
const RESTART_WARM: f64 = 8.0;
/// `intermittent-errors`: burst cycle and burst length (seconds, not scaled: they are
/// the disturbance's own rhythm), and the error rate inside a burst.
const FLAP_PERIOD: f64 = 5.0;
const FLAP_ON: f64 = 2.0;
const FLAP_ERRORS: f64 = 0.8;

/// A scenario as listed in the table.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ScenarioDef {
    /// Its name on the command line.
    pub name: &'static str,
    /// Its script.
    pub kind: Kind,
    /// Length at scale 1, seconds.
    pub nominal: f64,
    /// One line saying what happens.
    pub about: &'static str,
}

/// Every scenario, in the order `all` runs them.
pub const SCENARIOS: [ScenarioDef; 14] = [
    ScenarioDef {
        name: "homogeneous",
        kind: Kind::Homogeneous,
        nominal: 30.0,
        about: "every node alike",
    },
    ScenarioDef {
        name: "heterogeneous",
        kind: Kind::Heterogeneous,
        nominal: 30.0,
        about: "2 of 16 nodes at 0.25x speed",
    },
    ScenarioDef {
        name: "gradual-degradation",
        kind: Kind::GradualDegradation,
        nominal: 120.0,
        about: "1 of 16 nodes 1x -> 0.2x over 60 s (from 20 s), holds 15 s, recovers by 100 s",
    },
    ScenarioDef {
        name: "leak-then-crash",
        kind: Kind::LeakThenCrash,
        nominal: 100.0,
        about: "1 of 16 nodes slows 1x -> 0.3x over 45 s (from 20 s), hangs 65-80 s, restarts",
    },
    ScenarioDef {
        name: "stall",
        kind: Kind::Stall,
        nominal: 40.0,
        about: "1 of 16 nodes 20x slower for 10 s (15-25 s)",
    },
    ScenarioDef {
        name: "fluctuating-fast",
        kind: Kind::FluctuatingFast,
        nominal: 30.0,
        about: "every node re-draws its speed in 0.4x..1.6x every 0.5 s",
    },
    ScenarioDef {
        name: "fluctuating-slow",
        kind: Kind::FluctuatingSlow,
        nominal: 40.0,
        about: "every node re-draws its speed in 0.4x..1.6x every 5 s",
    },
    ScenarioDef {
        name: "bursts",
        kind: Kind::Bursts,
        nominal: 40.0,
        about: "load 1.3x capacity for 1 s in every 8 s, 0.65x between",
    },
    ScenarioDef {
        name: "fast-errors",
        kind: Kind::FastErrors,
        nominal: 30.0,
        about: "1 of 16 nodes answers half of its requests with a fast 503",
    },
    ScenarioDef {
        name: "join-cold",
        kind: Kind::JoinCold,
        nominal: 40.0,
        about: "1 of 16 nodes joins at 12 s, cold: 0.25x rising to 1x over 10 s",
    },
    ScenarioDef {
        name: "rolling-restarts",
        kind: Kind::RollingRestarts,
        nominal: 90.0,
        about: "every node restarts in 8 waves from 10 s, 9 s apart: refused 3 s, back cold 0.3x -> 1x over 8 s",
    },
    ScenarioDef {
        name: "intermittent-errors",
        kind: Kind::IntermittentErrors,
        nominal: 40.0,
        about: "1 of 16 nodes fails 80% of requests fast (503) for 2 s in every 5 s",
    },
    ScenarioDef {
        name: "long-stall",
        kind: Kind::LongStall,
        nominal: 60.0,
        about: "1 of 16 nodes 20x slower for 30 s (15-45 s)",
    },
    ScenarioDef {
        name: "two-slow",
        kind: Kind::TwoSlow,
        nominal: 40.0,
        about: "a quarter of the nodes (2 of 8) slow 1x -> 0.4x over 10-20 s and stay slow",
    },
];

/// `def`'s place in [`SCENARIOS`] (its repetitions' seeds derive from it).
pub fn position(def: &ScenarioDef) -> usize {
    SCENARIOS
        .iter()
        .position(|d| d.name == def.name)
        .unwrap_or(SCENARIOS.len())
}

/// The scenarios named by `name` (`all` for every one).
pub fn select(name: &str) -> Result<Vec<&'static ScenarioDef>, BenchError> {
    if name == "all" {
        return Ok(SCENARIOS.iter().collect());
    }
    let mut out = Vec::new();
    for part in name.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match SCENARIOS.iter().find(|d| d.name == part) {
            Some(d) => out.push(d),
            None => {
                return Err(BenchError::UnknownScenario {
                    name: part.to_owned(),
                    known: SCENARIOS
                        .iter()
                        .map(|d| d.name)
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
    }
    if out.is_empty() {
        return Err(BenchError::UnknownScenario {
            name: name.to_owned(),
            known: SCENARIOS
                .iter()
                .map(|d| d.name)
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(out)
}

/// Standard-normal quantile of 0.99.
pub const Z99: f64 = 2.326_347_874;

/// One scenario instantiated for a pool size, a seed and a time scale.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The table entry.
    pub def: &'static ScenarioDef,
    /// Nodes in the pool.
    pub nodes: usize,
    /// Seed of the script's random parts (fluctuations) and of the run.
    pub seed: u64,
    /// Time scale: script times are nominal × scale.
    pub scale: f64,
    /// The backends' shape.
    pub shape: Shape,
    /// Every node's profile at speed 1.
    pub profile: NodeProfile,
    /// Offered load as a fraction of the pool's base capacity (between bursts).
    pub load: f64,
    /// The pool's latency objective, seconds.
    pub slo: f64,
    /// Client timeout, seconds: a request not answered by then is an error.
    pub timeout: f64,
    affected: Vec<usize>,
    is_affected: Vec<bool>,
    base_capacity: Vec<f64>,
    capacity_shares: std::sync::OnceLock<Vec<f64>>,
}

impl Scenario {
    /// `def` on `nodes` nodes with time `scale` (1 = nominal), standard shape.
    pub fn new(def: &'static ScenarioDef, nodes: usize, seed: u64, scale: f64) -> Self {
        Self::with_shape(def, nodes, seed, scale, Shape::Standard)
    }

    /// `def` on `nodes` nodes of `shape` with time `scale` (1 = nominal).
    pub fn with_shape(
        def: &'static ScenarioDef,
        nodes: usize,
        seed: u64,
        scale: f64,
        shape: Shape,
    ) -> Self {
        let nodes = nodes.max(2);
        let profile = shape.profile();
        let slow =
            |i: usize| i.is_multiple_of(16) || (def.kind == Kind::Heterogeneous && i % 16 == 1);
        let affected: Vec<usize> = match def.kind {
            Kind::Homogeneous | Kind::FluctuatingFast | Kind::FluctuatingSlow | Kind::Bursts => {
                Vec::new()
            }
            Kind::RollingRestarts => (0..nodes).collect(),
            Kind::TwoSlow => (0..nodes).filter(|&i| i % 8 < 2).collect(),
            _ => (0..nodes).filter(|&i| slow(i)).collect(),
        };
        let mut is_affected = vec![false; nodes];
        for &i in &affected {
            is_affected[i] = true;
        }
        let base_capacity = (0..nodes)
            .map(|i| {
                let speed = if def.kind == Kind::Heterogeneous && is_affected[i] {
                    0.25
                } else {
                    1.0
                };
                f64::from(profile.workers) * speed / profile.mean_service
            })
            .collect();
        Scenario {
            def,
            nodes,
            seed,
            scale: if scale.is_finite() && scale > 0.0 {
                scale
            } else {
                1.0
            },
            shape,
            profile,
            load: shape.load(),
            slo: shape.slo(),
            timeout: 1.0,
            affected,
            is_affected,
            base_capacity,
            capacity_shares: std::sync::OnceLock::new(),
        }
    }

    /// Its name.
    pub fn name(&self) -> &'static str {
        self.def.name
    }

    /// Run length, seconds.
    pub fn duration(&self) -> f64 {
        self.def.nominal * self.scale
    }

    /// Requests sent before this time are not measured (policies learn the pool).
    pub fn warmup(&self) -> f64 {
        0.1 * self.duration()
    }

    /// The nodes the script disturbs (empty when it disturbs every node alike).
    pub fn affected(&self) -> &[usize] {
        &self.affected
    }

    /// Whether node `i` is one of the disturbed nodes.
    pub fn is_affected(&self, i: usize) -> bool {
        self.is_affected.get(i).copied().unwrap_or(false)
    }

    /// Whether the lead time of the traffic shift is reported (degradation scenarios).
    pub fn reports_lead(&self) -> bool {
        matches!(
            self.def.kind,
            Kind::GradualDegradation | Kind::LeakThenCrash | Kind::TwoSlow
        )
    }

    /// When the disturbance of the affected nodes starts, if it starts during the run.
    pub fn disturbance_start(&self) -> Option<f64> {
        let u = match self.def.kind {
            Kind::GradualDegradation | Kind::LeakThenCrash => 20.0,
            Kind::Stall | Kind::LongStall => 15.0,
            Kind::JoinCold => 12.0,
            Kind::RollingRestarts | Kind::TwoSlow => 10.0,
            _ => return None,
        };
        Some(u * self.scale)
    }

    /// The affected nodes that share one script (the failure window of their metrics):
    /// node `i`'s group, in `0..script_groups()`; one group unless the script differs
    /// per node (`rolling-restarts`: its wave).
    pub fn script_group(&self, i: usize) -> usize {
        match self.def.kind {
            Kind::RollingRestarts => i % RESTART_WAVES,
            _ => 0,
        }
    }

    /// When node `i`'s process goes down and when it is back (`rolling-restarts`),
    /// seconds into the run.
    pub fn restart_window(&self, i: usize) -> Option<(f64, f64)> {
        match self.def.kind {
            Kind::RollingRestarts if i < self.nodes => {
                let down = RESTART_FIRST + RESTART_EVERY * (i % RESTART_WAVES) as f64;
                Some((down * self.scale, (down + RESTART_DOWN) * self.scale))
            }
            _ => None,
        }
    }

    /// The number of groups [`Scenario::script_group`] returns.
    pub fn script_groups(&self) -> usize {
        match self.def.kind {
            Kind::RollingRestarts => RESTART_WAVES.min(self.nodes),
            _ => 1,
        }
    }

    /// Requests per second at speed 1 of node `i` (its profile and its base speed).
    pub fn base_capacity(&self, i: usize) -> f64 {
        self.base_capacity.get(i).copied().unwrap_or(0.0)
    }

    /// The pool's base capacity, requests per second.
    pub fn total_base_capacity(&self) -> f64 {
        self.base_capacity.iter().sum()
    }

    /// Offered load at `t` as a fraction of base capacity.
    pub fn load_at(&self, t: f64) -> f64 {
        match self.def.kind {
            Kind::Bursts => {
                let u = (t / self.scale).rem_euclid(8.0);
                if (4.0..5.0).contains(&u) { 1.3 } else { 0.65 }
            }
            _ => self.load,
        }
    }

    /// Poisson arrival rate at `t`, requests per second.
    pub fn rate(&self, t: f64) -> f64 {
        self.load_at(t) * self.total_base_capacity()
    }

    /// The highest arrival rate of the run (for thinning).
    pub fn max_rate(&self) -> f64 {
        let peak = match self.def.kind {
            Kind::Bursts => 1.3,
            _ => self.load,
        };
        peak * self.total_base_capacity()
    }

    /// Node `i`'s condition at `t` seconds into the run.
    pub fn condition(&self, i: usize, t: f64) -> Condition {
        let u = t / self.scale;
        let mut c = Condition::NORMAL;
        match self.def.kind {
            Kind::Homogeneous | Kind::Bursts => {}
            Kind::Heterogeneous => {
                if self.is_affected(i) {
                    c.speed = 0.25;
                }
            }
            Kind::GradualDegradation => {
                if self.is_affected(i) {
                    c.speed = piecewise(u, &[(20.0, 1.0), (80.0, 0.2), (95.0, 0.2), (100.0, 1.0)]);
                }
            }
            Kind::LeakThenCrash => {
                if self.is_affected(i) {
                    c.speed = piecewise(u, &[(20.0, 1.0), (65.0, 0.3)]);
                    if (65.0..80.0).contains(&u) {
                        c.up = false;
                    } else if u >= 80.0 {
                        c.speed = 1.0;
                    }
                }
            }
            Kind::Stall => {
                if self.is_affected(i) && (15.0..25.0).contains(&u) {
                    c.speed = 0.05;
                }
            }
            Kind::FluctuatingFast => c.speed = self.fluctuation(i, t, 0.5),
            Kind::FluctuatingSlow => c.speed = self.fluctuation(i, t, 5.0),
            Kind::FastErrors => {
                if self.is_affected(i) {
                    c.error_rate = 0.5;
                }
            }
            Kind::JoinCold => {
                if self.is_affected(i) {
                    c.present = u >= 12.0;
                    c.speed = piecewise(u, &[(12.0, 0.25), (22.0, 1.0)]);
                }
            }
            Kind::RollingRestarts => {
                let down = RESTART_FIRST + RESTART_EVERY * (i % RESTART_WAVES) as f64;
                let back = down + RESTART_DOWN;
                if (down..back).contains(&u) {
                    c.refusing = true;
                } else if u >= back {
                    c.speed = piecewise(u, &[(back, 0.3), (back + RESTART_WARM, 1.0)]);
                }
            }
            Kind::IntermittentErrors => {
                if self.is_affected(i) && (t.max(0.0) % FLAP_PERIOD) < FLAP_ON {
                    c.error_rate = FLAP_ERRORS;
                }
            }
            Kind::LongStall => {
                if self.is_affected(i) && (15.0..45.0).contains(&u) {
                    c.speed = 0.05;
                }
            }
            Kind::TwoSlow => {
                if self.is_affected(i) {
                    c.speed = piecewise(u, &[(10.0, 1.0), (20.0, 0.4)]);
                }
            }
        }
        c
    }

    /// Speed in 0.4..1.6 re-drawn every `period` seconds, with a per-node phase.
    fn fluctuation(&self, i: usize, t: f64, period: f64) -> f64 {
        let phase = unit(mix(self.seed, i as u64, u64::MAX)) * period;
        let epoch = ((t + phase) / period).floor().max(0.0) as u64;
        0.4 + 1.2 * unit(mix(self.seed, i as u64, epoch))
    }

    /// Node `i`'s capacity at `t`, requests per second (0 when absent or not answering).
    pub fn capacity_at(&self, i: usize, t: f64) -> f64 {
        let c = self.condition(i, t);
        if !c.serving() {
            return 0.0;
        }
        f64::from(self.profile.workers) * c.speed / self.profile.mean_service * (1.0 - c.error_rate)
    }

    /// Node `i`'s fair share of the traffic at `t`: its base capacity over that of the
    /// nodes present.
    pub fn fair_share(&self, i: usize, t: f64) -> f64 {
        if !self.condition(i, t).present {
            return 0.0;
        }
        // Only affected nodes are ever absent.
        let absent: f64 = self
            .affected
            .iter()
            .filter(|&&j| !self.condition(j, t).present)
            .map(|&j| self.base_capacity(j))
            .sum();
        let total = self.total_base_capacity() - absent;
        if total > 0.0 {
            self.base_capacity(i) / total
        } else {
            0.0
        }
    }

    /// Whether node `i` breaks the SLO at `t` by the script alone, whatever the policy:
    /// it stops answering, fails requests, could not carry its fair share of the load
    /// (capacity below fair demand), or its idle p99 service time exceeds the SLO.
    pub fn in_breach(&self, i: usize, t: f64) -> bool {
        let c = self.condition(i, t);
        if !c.present {
            return false;
        }
        let p99 = self.profile.service_quantile(Z99);
        let demand = self.rate(t) * self.fair_share(i, t);
        !c.serving()
            || c.error_rate > 0.0
            || self.capacity_at(i, t) < demand
            || p99 / c.speed > self.slo
    }

    /// When node `i` first breaks the SLO by the script ([`Scenario::in_breach`]) from
    /// the disturbance's start; `None` if it never does during the run.
    pub fn breach_time(&self, i: usize) -> Option<f64> {
        let start = self.disturbance_start().unwrap_or(0.0);
        let step = 0.01 * self.scale;
        let mut t = start;
        while t < self.duration() {
            if self.in_breach(i, t) {
                return Some(t);
            }
            t += step;
        }
        None
    }

    /// Each node's share of the pool's capacity integrated over the measured window
    /// (after warm-up), computed once per scenario.
    pub fn capacity_shares(&self) -> &[f64] {
        self.capacity_shares.get_or_init(|| {
            let (from, to) = (self.warmup(), self.duration());
            let steps = 400usize.max(((to - from) / 0.05) as usize);
            let dt = (to - from) / steps as f64;
            let mut acc = vec![0.0; self.nodes];
            for k in 0..steps {
                let t = from + (k as f64 + 0.5) * dt;
                for (i, a) in acc.iter_mut().enumerate() {
                    *a += self.capacity_at(i, t);
                }
            }
            let total: f64 = acc.iter().sum();
            if total > 0.0 {
                acc.iter_mut().for_each(|a| *a /= total);
            }
            acc
        })
    }
}

/// A standard normal draw (Box-Muller).
pub fn std_normal<R: rand::Rng + ?Sized>(rng: &mut R) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// An exponential draw with `rate` per second.
pub fn exp_draw<R: rand::Rng + ?Sized>(rng: &mut R, rate: f64) -> f64 {
    -(1.0 - rng.random::<f64>()).ln() / rate
}

/// Linear interpolation through `(u, value)` points; constant before the first and after
/// the last.
fn piecewise(u: f64, points: &[(f64, f64)]) -> f64 {
    let Some(&(u0, v0)) = points.first() else {
        return 1.0;
    };
    if u <= u0 {
        return v0;
    }
    for w in points.windows(2) {
        let ((a, va), (b, vb)) = (w[0], w[1]);
        if u <= b {
            return if b > a {
                va + (vb - va) * (u - a) / (b - a)
            } else {
                vb
            };
        }
    }
    points.last().map_or(1.0, |p| p.1)
}

/// splitmix64 of three words: a stateless, seeded hash for scripted draws.
pub(crate) fn mix(a: u64, b: u64, c: u64) -> u64 {
    let mut z = a
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(b.wrapping_mul(0xbf58_476d_1ce4_e5b9))
        .wrapping_add(c.wrapping_mul(0x94d0_49bb_1331_11eb))
        .wrapping_add(0x2545_f491_4f6c_dd1d);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A hash mapped to [0, 1).
pub(crate) fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(name: &str, nodes: usize) -> Scenario {
        let def = select(name).expect("known")[0];
        Scenario::new(def, nodes, 7, 1.0)
    }

    #[test]
    fn names_select_and_unknown_is_refused() {
        assert_eq!(select("all").expect("all").len(), SCENARIOS.len());
        let two = select("stall,bursts").expect("two");
        assert_eq!(two.len(), 2);
        let err = select("nope").expect_err("unknown");
        assert!(err.to_string().contains("homogeneous"), "{err}");
    }

    #[test]
    fn affected_nodes_scale_with_the_pool() {
        assert_eq!(scenario("heterogeneous", 16).affected(), &[0, 1]);
        assert_eq!(scenario("stall", 16).affected(), &[0]);
        assert_eq!(scenario("stall", 1000).affected().len(), 63);
        assert_eq!(scenario("heterogeneous", 1000).affected().len(), 126);
        assert!(scenario("homogeneous", 16).affected().is_empty());
    }

    #[test]
    fn gradual_degradation_follows_its_script() {
        let s = scenario("gradual-degradation", 16);
        assert_eq!(s.condition(0, 10.0).speed, 1.0);
        assert!((s.condition(0, 50.0).speed - 0.6).abs() < 1e-9);
        assert!((s.condition(0, 90.0).speed - 0.2).abs() < 1e-9);
        assert_eq!(s.condition(0, 110.0).speed, 1.0);
        assert_eq!(s.condition(3, 90.0).speed, 1.0);
        // Overload at fair share when speed < load (0.7): 20 + 60 * 0.3 / 0.8 = 42.5 s.
        let b = s.breach_time(0).expect("breaches");
        assert!((b - 42.5).abs() < 0.05, "{b}");
        assert_eq!(s.breach_time(3), None);
        // Scaled: the same shape at half the length.
        let half = Scenario::new(s.def, 16, 7, 0.5);
        assert!((half.condition(0, 25.0).speed - 0.6).abs() < 1e-9);
        assert!((half.breach_time(0).expect("breaches") - 21.25).abs() < 0.05);
    }

    #[test]
    fn leak_then_crash_hangs_then_restarts() {
        let s = scenario("leak-then-crash", 16);
        assert!(s.condition(0, 70.0).speed < 0.31);
        assert!(!s.condition(0, 70.0).up);
        let after = s.condition(0, 85.0);
        assert!(after.up && after.speed == 1.0);
        assert_eq!(s.capacity_at(0, 70.0), 0.0);
    }

    #[test]
    fn fluctuations_are_seeded_bounded_and_redrawn() {
        let s = scenario("fluctuating-fast", 16);
        let mut distinct = std::collections::HashSet::new();
        let mut sum = 0.0;
        let n = 4000;
        for k in 0..n {
            let v = s.condition(3, f64::from(k) * 0.5).speed;
            assert!((0.4..1.6).contains(&v));
            assert_eq!(v, s.condition(3, f64::from(k) * 0.5).speed, "pure");
            distinct.insert(v.to_bits());
            sum += v;
        }
        assert!(distinct.len() > n as usize / 2);
        assert!((sum / f64::from(n) - 1.0).abs() < 0.03);
    }

    #[test]
    fn bursts_exceed_capacity_and_join_is_absent_before() {
        let s = scenario("bursts", 16);
        assert!(s.rate(4.5) > s.total_base_capacity());
        assert!(s.rate(1.0) < s.total_base_capacity());
        let j = scenario("join-cold", 16);
        assert!(!j.condition(0, 5.0).present);
        assert!(j.condition(0, 13.0).present && j.condition(0, 13.0).speed < 0.5);
        assert_eq!(j.fair_share(0, 5.0), 0.0);
        assert!((j.fair_share(1, 5.0) - 1.0 / 15.0).abs() < 1e-12);
    }

    #[test]
    fn a_scenario_s_position_is_its_place_in_the_table() {
        for (i, def) in SCENARIOS.iter().enumerate() {
            assert_eq!(position(def), i, "{}", def.name);
        }
        let picked = select("two-slow,homogeneous").expect("known");
        assert_eq!(position(picked[0]), SCENARIOS.len() - 1);
        assert_eq!(position(picked[1]), 0);
    }

    #[test]
    fn rolling_restarts_take_every_node_down_once_in_waves() {
        let s = scenario("rolling-restarts", 16);
        assert_eq!(s.affected().len(), 16);
        assert_eq!(s.script_groups(), 8);
        assert_eq!((s.script_group(3), s.script_group(11)), (3, 3));
        // Wave 0 (nodes 0 and 8) is down 10-13 s, wave 1 19-22 s.
        assert!(!s.condition(0, 9.9).refusing);
        for i in [0, 8] {
            let c = s.condition(i, 11.0);
            assert!(c.refusing && c.present && !c.serving(), "{c:?}");
            assert!(s.in_breach(i, 11.0));
            assert_eq!(s.capacity_at(i, 11.0), 0.0);
        }
        assert!(s.condition(1, 11.0).serving());
        assert!(s.condition(1, 20.0).refusing);
        // Back cold: 0.3x at 13 s rising to 1x at 21 s.
        let cold = s.condition(0, 13.0 + 4.0).speed;
        assert!((cold - 0.65).abs() < 1e-9, "{cold}");
        assert_eq!(s.condition(0, 30.0).speed, 1.0);
        // The last wave is back and warm before the end.
        assert!(s.condition(7, 89.0).serving() && s.condition(7, 89.0).speed == 1.0);
        // Fair shares do not change (a restarting node stays in the pool).
        assert!((s.fair_share(1, 11.0) - 1.0 / 16.0).abs() < 1e-12);
        assert_eq!(s.restart_window(9), Some((19.0, 22.0)));
        assert_eq!(scenario("stall", 16).restart_window(0), None);
    }

    #[test]
    fn intermittent_errors_come_in_bursts_on_one_node_in_16() {
        let s = scenario("intermittent-errors", 8);
        assert_eq!(s.affected(), &[0]);
        let (mut on, mut switches, mut prev) = (0, 0, false);
        let n = 4000;
        for k in 0..n {
            let t = f64::from(k) * 0.01;
            let e = s.condition(0, t).error_rate;
            assert!(e == 0.0 || e == 0.8, "{e}");
            if e > 0.0 {
                on += 1;
            }
            if (e > 0.0) != prev {
                switches += 1;
                prev = e > 0.0;
            }
            assert_eq!(s.condition(1, t).error_rate, 0.0);
        }
        // 2 s in every 5 s over 40 s: 40% of the time, 8 bursts.
        assert!((f64::from(on) / f64::from(n) - 0.4).abs() < 0.01, "{on}");
        assert_eq!(switches, 16);
        // The rhythm is the disturbance's own: it does not scale with the run.
        let short = Scenario::new(s.def, 8, 7, 0.25);
        assert_eq!(short.condition(0, 1.0).error_rate, 0.8);
        assert_eq!(short.condition(0, 3.0).error_rate, 0.0);
    }

    #[test]
    fn long_stall_and_two_slow_follow_their_scripts() {
        let s = scenario("long-stall", 16);
        assert_eq!(s.condition(0, 14.0).speed, 1.0);
        assert_eq!(s.condition(0, 30.0).speed, 0.05);
        assert_eq!(s.condition(0, 44.9).speed, 0.05);
        assert_eq!(s.condition(0, 45.0).speed, 1.0);
        assert_eq!(s.condition(5, 30.0).speed, 1.0);
        assert_eq!(s.breach_time(0), Some(15.0));

        let t = scenario("two-slow", 8);
        assert_eq!(t.affected(), &[0, 1]);
        assert_eq!(scenario("two-slow", 16).affected(), &[0, 1, 8, 9]);
        assert_eq!(scenario("two-slow", 1000).affected().len(), 250);
        assert_eq!(t.condition(1, 5.0).speed, 1.0);
        assert!((t.condition(1, 15.0).speed - 0.7).abs() < 1e-9);
        assert!((t.condition(0, 39.0).speed - 0.4).abs() < 1e-9);
        assert_eq!(t.condition(2, 39.0).speed, 1.0);
        assert!(t.reports_lead());
        // Overloaded at its fair share once speed < load (0.7): 10 + 10 × 0.3 / 0.6 = 15 s.
        let b = t.breach_time(0).expect("breaches");
        assert!((b - 15.0).abs() < 0.05, "{b}");
    }

    #[test]
    fn low_concurrency_shape_is_the_external_harness() {
        let def = select("homogeneous").expect("known")[0];
        let s = Scenario::with_shape(def, 8, 1, 1.0, Shape::LowConcurrency);
        assert_eq!(s.profile.workers, 2);
        // Median 20 ms: the service time at z = 0 is the median.
        assert!((s.profile.service_time(0.0) - 0.020).abs() < 1e-12);
        // 8 nodes × 2 workers / 22.66 ms × 68% = 480 requests/s.
        assert!((s.rate(1.0) - 480.0).abs() < 1.0, "{}", s.rate(1.0));
        assert_eq!(s.slo, 0.1);
        assert_eq!(Scenario::new(def, 8, 1, 1.0).shape, Shape::Standard);
    }

    #[test]
    fn heterogeneous_capacity_counts_slow_nodes_at_their_speed() {
        let s = scenario("heterogeneous", 16);
        let per = 4.0 / 0.040;
        assert!((s.total_base_capacity() - per * 14.5).abs() < 1e-9);
        assert!((s.capacity_at(0, 3.0) - per * 0.25).abs() < 1e-9);
    }
}
