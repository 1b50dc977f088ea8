//! The scenario table: named, seeded scripts of every node's speed, availability and
//! error rate and of the offered load, as pure functions of time, so the simulator and
//! the live backends play exactly the same script.
//!
//! Times inside a script are *nominal* seconds; a run scales them by `scale` (from
//! `--duration`), so a scenario keeps its shape at any length. Fluctuation periods
//! (0.5 s, 5 s) are properties of the disturbance, not of the timeline, and do not scale.
//! Affected nodes scale with the pool: one in 16 (two in 16 for `heterogeneous`), at
//! positions `i % 16 == 0` (and `1`), so the 16-node live run and a 1,000-node
//! simulation are the same scenario.
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
}

impl Condition {
    const NORMAL: Condition = Condition {
        present: true,
        up: true,
        speed: 1.0,
        error_rate: 0.0,
    };
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
}

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
pub const SCENARIOS: [ScenarioDef; 10] = [
    ScenarioDef {
        name: "homogeneous",
        kind: Kind::Homogeneous,
        nominal: 30.0,
        about: "every node alike, 70% load",
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
];

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
    /// `def` on `nodes` nodes with time `scale` (1 = nominal).
    pub fn new(def: &'static ScenarioDef, nodes: usize, seed: u64, scale: f64) -> Self {
        let nodes = nodes.max(2);
        let profile = NodeProfile::default();
        let slow =
            |i: usize| i.is_multiple_of(16) || (def.kind == Kind::Heterogeneous && i % 16 == 1);
        let affected: Vec<usize> = match def.kind {
            Kind::Homogeneous | Kind::FluctuatingFast | Kind::FluctuatingSlow | Kind::Bursts => {
                Vec::new()
            }
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
            profile,
            load: 0.7,
            slo: 0.2,
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
            Kind::GradualDegradation | Kind::LeakThenCrash
        )
    }

    /// When the disturbance of the affected nodes starts, if it starts during the run.
    pub fn disturbance_start(&self) -> Option<f64> {
        let u = match self.def.kind {
            Kind::GradualDegradation | Kind::LeakThenCrash => 20.0,
            Kind::Stall => 15.0,
            Kind::JoinCold => 12.0,
            _ => return None,
        };
        Some(u * self.scale)
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
        if !c.present || !c.up {
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
        !c.up || c.error_rate > 0.0 || self.capacity_at(i, t) < demand || p99 / c.speed > self.slo
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
    fn heterogeneous_capacity_counts_slow_nodes_at_their_speed() {
        let s = scenario("heterogeneous", 16);
        let per = 4.0 / 0.040;
        assert!((s.total_base_capacity() - per * 14.5).abs() < 1e-9);
        assert!((s.capacity_at(0, 3.0) - per * 0.25).abs() < 1e-9);
    }
}
