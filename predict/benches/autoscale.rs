//! Autoscaling replay: a per-minute demand trace derived from the real ELB request
//! count in data/nab (its daily cycle and weekly shape, a weekday surge, two one-off
//! ramps; see
//! data/derived/README.md), a simulated pool whose nodes take `STARTUP` minutes to
//! start, and two scaling policies run over it in the same pass:
//!
//! - reactive: the Kubernetes HPA rule, `desired = ceil(current x utilisation / target)`
//!   on the last minute's demand, with the HPA defaults of a 10 % tolerance and a
//!   5-minute scale-down stabilisation window;
//! - PLB: `PoolDemand` (the forecaster bank over requests per minute, background refits
//!   inline) planning the most nodes needed over the next 15 minutes, through the
//!   hysteresis `Recommender`.
//!
//! Compared on SLO-breaking minutes (demand above what the ready nodes serve within the
//! SLO) and node-minutes (every provisioned node, starting ones included), over days 4
//! to 14 (the first three days warm the models). Also measured: how far PLB's scale-up
//! leads the reactive rule's on each day's predictable rise.
//!
//! `cargo bench -p plb-predict --bench autoscale -- --write-trace` also writes the trace
//! to data/derived/pool_demand_elb.csv.
// A bench measures time, reads data files and prints: it opts out of the pure-crate
// lints of predict/clippy.toml.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::disallowed_macros
)]
mod common;

use std::collections::VecDeque;

use plb_predict::{DemandParams, PoolDemand, Recommender, RecommenderParams};

/// Minutes a node takes to start.
const STARTUP: usize = 5;
/// Requests per minute one node serves within the SLO.
const CAPACITY: f64 = 100.0;
/// The reactive rule's target utilisation.
const HPA_TARGET: f64 = 0.7;
/// HPA tolerance and scale-down stabilisation (its defaults).
const HPA_TOLERANCE: f64 = 0.1;
const HPA_DOWN_WINDOW: usize = 5;
/// Scored from this minute (3 days of warm-up).
const SCORE_FROM: usize = 3 * 1_440;
/// Demand scale: ELB requests per 5 minutes to requests per minute of the pool.
const SCALE: f64 = 20.0;

/// The weekday surge: from this minute of the day (13:00, where the ELB's own daily
/// rise is), demand rises by `SURGE` over `SURGE_UP` minutes, holds `SURGE_HOLD`, and
/// falls back over `SURGE_DOWN`. Weekdays only (the trace starts on a Thursday).
const SURGE_AT: usize = 13 * 60;
const SURGE: f64 = 0.8;
const SURGE_UP: usize = 10;
const SURGE_HOLD: usize = 60;
const SURGE_DOWN: usize = 120;
/// One-off ramps no cycle predicts: (start minute, ramp, hold, decay minutes, factor).
const RAMPS: [(usize, usize, usize, usize, f64); 2] = [
    (5 * 1_440 + 3 * 60, 15, 90, 30, 1.6),
    (10 * 1_440 + 21 * 60, 20, 60, 20, 1.7),
];
/// The trace's first day is a Thursday: day 2 and 3, 9 and 10 are weekends.
fn weekday(day: usize) -> bool {
    !matches!(day % 7, 2 | 3)
}

fn shape(t: usize, start: usize, up: usize, hold: usize, down: usize) -> f64 {
    if t < start {
        0.0
    } else if t < start + up {
        (t - start) as f64 / up as f64
    } else if t < start + up + hold {
        1.0
    } else if t < start + up + hold + down {
        1.0 - (t - start - up - hold) as f64 / down as f64
    } else {
        0.0
    }
}

/// splitmix64, for reproducible noise.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let u1 = self.next().max(1e-300);
        let u2 = self.next();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

fn ramp_factor(t: usize) -> f64 {
    let mut f = 1.0;
    for &(start, up, hold, down, peak) in &RAMPS {
        f *= 1.0 + (peak - 1.0) * shape(t, start, up, hold, down);
    }
    let day = t / 1_440;
    if weekday(day) {
        f *= 1.0 + SURGE * shape(t, day * 1_440 + SURGE_AT, SURGE_UP, SURGE_HOLD, SURGE_DOWN);
    }
    f
}

/// The trace: minute timestamps (text) and requests per minute. The ELB series starts
/// at midnight (00:04) and is 5-minutely, about 50 requests per 5 minutes, so bursty;
/// its spikes are capped at the 99th percentile and its level taken as a centred 2-hour
/// running median, smoothed by a 35-minute running mean (the daily cycle, the weekly
/// shape and the day-to-day level stay; the bursts of a small service do not: the pool
/// here has about 20x its traffic per minute). Then linear interpolation to minutes,
/// x20, the weekday surge and the one-off ramps, a slow multiplicative wander (AR(1),
/// about 2.5 %), Poisson-like noise (sqrt of the rate) and 2 % multiplicative noise.
fn trace() -> (Vec<String>, Vec<f64>) {
    let nab = common::load_nab();
    let elb = nab
        .iter()
        .find(|s| s.name.starts_with("elb_request_count"))
        .expect("data/nab/elb_request_count_*.csv");
    let v = &elb.values;
    let mut sorted = v.clone();
    sorted.sort_by(f64::total_cmp);
    let cap = sorted[(sorted.len() as f64 * 0.99) as usize];
    let capped: Vec<f64> = v.iter().map(|x| x.min(cap)).collect();
    let median: Vec<f64> = (0..capped.len())
        .map(|i| {
            let lo = i.saturating_sub(12);
            let hi = (i + 13).min(capped.len());
            let mut w = capped[lo..hi].to_vec();
            w.sort_by(f64::total_cmp);
            w[w.len() / 2]
        })
        .collect();
    let smooth: Vec<f64> = (0..median.len())
        .map(|i| {
            let lo = i.saturating_sub(3);
            let hi = (i + 4).min(median.len());
            median[lo..hi].iter().sum::<f64>() / (hi - lo) as f64
        })
        .collect();
    let mut wander = 0.0;
    let mut rng = Rng(0x5EED);
    let t0 = elb.times[0];
    let mut times = Vec::new();
    let mut out = Vec::new();
    for i in 0..smooth.len() - 1 {
        let (a, b) = (smooth[i], smooth[i + 1]);
        for k in 0..5 {
            let t = out.len();
            wander = 0.98 * wander + 0.005 * rng.normal();
            let rate = (a + (b - a) * k as f64 / 5.0) * SCALE * ramp_factor(t) * (1.0 + wander);
            let noisy = rate + rate.sqrt() * rng.normal() + 0.02 * rate * rng.normal();
            out.push(noisy.max(0.0).round());
            times.push(t0 + 60.0 * t as f64);
        }
    }
    let text = times
        .iter()
        .map(|&s| {
            let days = (s / 86_400.0).floor() as i64;
            let rem = s as i64 - days * 86_400;
            let (y, m, d) = civil(days);
            format!(
                "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
                rem / 3_600,
                rem % 3_600 / 60,
                rem % 60
            )
        })
        .collect();
    (text, out)
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A pool: nodes started at given minutes; a node serves from `start + STARTUP`.
struct Pool {
    /// Launch minutes of provisioned nodes, oldest first.
    nodes: VecDeque<usize>,
}

impl Pool {
    fn new(n: u32) -> Pool {
        Pool {
            nodes: (0..n).map(|_| 0).collect(),
        }
    }
    fn provisioned(&self) -> u32 {
        self.nodes.len() as u32
    }
    fn ready(&self, t: usize) -> u32 {
        self.nodes
            .iter()
            .filter(|&&s| s == 0 || s + STARTUP <= t)
            .count() as u32
    }
    /// Scales to `n` at the end of minute `t`: new nodes launch now; removals take the
    /// newest (still starting) nodes first.
    fn scale_to(&mut self, n: u32, t: usize) {
        while self.provisioned() < n {
            self.nodes.push_back(t + 1);
        }
        while self.provisioned() > n.max(1) {
            self.nodes.pop_back();
        }
    }
}

#[derive(Default)]
struct Outcome {
    breaking: usize,
    breaking_in_ramps: usize,
    node_minutes: u64,
    /// Provisioned count per minute.
    provisioned: Vec<u32>,
}

fn in_injected_ramp(t: usize) -> bool {
    RAMPS
        .iter()
        .any(|&(s, up, hold, down, _)| t >= s && t < s + up + hold + down + STARTUP)
}

fn score(out: &mut Outcome, pool: &Pool, t: usize, demand: f64) {
    out.provisioned.push(pool.provisioned());
    if t < SCORE_FROM {
        return;
    }
    if demand > f64::from(pool.ready(t)) * CAPACITY {
        out.breaking += 1;
        if in_injected_ramp(t) {
            out.breaking_in_ramps += 1;
        }
    }
    out.node_minutes += u64::from(pool.provisioned());
}

fn reactive(demand: &[f64]) -> Outcome {
    let first = (demand[0] / (CAPACITY * HPA_TARGET)).ceil().max(1.0) as u32;
    let mut pool = Pool::new(first);
    let mut recent: VecDeque<u32> = VecDeque::new();
    let mut out = Outcome::default();
    for (t, &d) in demand.iter().enumerate() {
        score(&mut out, &pool, t, d);
        let current = pool.ready(t).max(1);
        let util = d / (f64::from(current) * CAPACITY);
        let ratio = util / HPA_TARGET;
        let desired = if (ratio - 1.0).abs() <= HPA_TOLERANCE {
            pool.provisioned()
        } else {
            (f64::from(current) * ratio).ceil().max(1.0) as u32
        };
        recent.push_back(desired);
        if recent.len() > HPA_DOWN_WINDOW {
            recent.pop_front();
        }
        // Scale-down stabilisation: the highest recommendation of the window.
        let stabilised = recent.iter().copied().max().unwrap_or(desired);
        let target = if desired >= pool.provisioned() {
            desired
        } else {
            stabilised.min(pool.provisioned())
        };
        pool.scale_to(target, t);
    }
    out
}

struct PlbConfig {
    name: &'static str,
    target: f64,
    plan_z: f64,
    up_after: u32,
    down_after: u32,
}

fn plb(demand: &[f64], cfg: &PlbConfig) -> (Outcome, Option<(u64, f64)>) {
    let params = DemandParams {
        target_utilisation: cfg.target,
        plan_z: cfg.plan_z,
        ..DemandParams::default()
    };
    let mut model = PoolDemand::new(params).expect("demand params");
    let mut rec = Recommender::new(RecommenderParams {
        up_after: cfg.up_after,
        down_after: cfg.down_after,
    })
    .expect("recommender params");
    let first = (demand[0] / (CAPACITY * cfg.target)).ceil().max(1.0) as u32;
    let mut pool = Pool::new(first);
    let mut out = Outcome::default();
    for (t, &d) in demand.iter().enumerate() {
        score(&mut out, &pool, t, d);
        model.observe(t as i64 * 60_000, d).expect("observe");
        model.refit_inline();
        if let Some(plan) = model.plan(CAPACITY, pool.provisioned())
            && let Some(change) = rec.observe(&plan)
        {
            pool.scale_to(change.to, t);
        }
    }
    (out, model.forecaster().bank().season())
}

/// Lead of `a` over `b` on each weekday's surge (the rise the daily cycle predicts):
/// for each node count `b` reaches during the surge's rise (plus twice the start-up
/// time) above the most it had in the hour before, the minutes from `a` reaching it
/// (for good) to `b` reaching it; the median per day.
fn daily_leads(a: &[u32], b: &[u32]) -> Vec<(usize, f64, usize)> {
    let mut out = Vec::new();
    for day in 0..b.len() / 1_440 {
        let surge = day * 1_440 + SURGE_AT;
        let (from, to) = (surge - 60, surge + SURGE_UP + 2 * STARTUP);
        if !weekday(day) || from < SCORE_FROM || to > b.len() {
            continue;
        }
        // Node counts the surge brings: above anything the hour before it needed.
        let base = b[from..surge].iter().copied().max().unwrap_or(0);
        let top = b[from..to].iter().copied().max().unwrap_or(base);
        let mut leads = Vec::new();
        for k in base + 1..=top {
            let Some(tb) = (from..to).find(|&t| b[t] >= k) else {
                continue;
            };
            // Where `a` has reached k for good before `b` does (or, failing that, first after).
            let ta = (from..to).find(|&t| a[t..tb.max(t + 1)].iter().all(|&n| n >= k));
            leads.push(ta.map_or(f64::NEG_INFINITY, |ta| tb as f64 - ta as f64));
        }
        if leads.is_empty() {
            continue;
        }
        leads.sort_by(f64::total_cmp);
        out.push((day, leads[leads.len() / 2], leads.len()));
    }
    out
}

fn main() {
    let (times, demand) = trace();
    if std::env::args().any(|a| a == "--write-trace") {
        let dir = common::data_dir().join("../derived");
        std::fs::create_dir_all(&dir).expect("mkdir data/derived");
        let mut text = String::from("timestamp,value\n");
        for (t, v) in times.iter().zip(&demand) {
            text.push_str(&format!("{t},{v}\n"));
        }
        std::fs::write(dir.join("pool_demand_elb.csv"), text).expect("write trace");
        println!(
            "wrote data/derived/pool_demand_elb.csv ({} rows)",
            demand.len()
        );
    }
    let hpa = reactive(&demand);
    let configs = [
        PlbConfig {
            name: "plb (default: target 0.8, plan mean+1 sigma)",
            target: 0.8,
            plan_z: 1.0,
            up_after: 2,
            down_after: 10,
        },
        PlbConfig {
            name: "plb (target 0.7, plan mean)",
            target: 0.7,
            plan_z: 0.0,
            up_after: 2,
            down_after: 10,
        },
        PlbConfig {
            name: "plb (target 0.9, plan mean+1.5 sigma)",
            target: 0.9,
            plan_z: 1.5,
            up_after: 2,
            down_after: 10,
        },
    ];
    let minutes = demand.len() - SCORE_FROM;
    println!(
        "Autoscaling replay: {} minutes of demand derived from data/nab/elb_request_count (x{SCALE}/min: daily cycle, weekends, a weekday surge, 2 one-off ramps), scored over the last {minutes} minutes",
        demand.len()
    );
    println!(
        "node capacity {CAPACITY} requests/min within the SLO; nodes take {STARTUP} min to start; reactive = HPA rule (target {HPA_TARGET}, tolerance {HPA_TOLERANCE}, {HPA_DOWN_WINDOW}-min scale-down window)"
    );
    println!();
    println!(
        "{:<46} {:>9} {:>9} {:>11} {:>9} {:>9}",
        "policy", "SLO-break", "in ramps", "node-min", "break/hpa", "nodes/hpa"
    );
    println!(
        "{:<46} {:>9} {:>9} {:>11} {:>9.2} {:>9.3}",
        "reactive (HPA rule)", hpa.breaking, hpa.breaking_in_ramps, hpa.node_minutes, 1.0, 1.0
    );
    let mut first = None;
    for cfg in &configs {
        let (out, season) = plb(&demand, cfg);
        println!(
            "{:<46} {:>9} {:>9} {:>11} {:>9.2} {:>9.3}",
            cfg.name,
            out.breaking,
            out.breaking_in_ramps,
            out.node_minutes,
            out.breaking as f64 / hpa.breaking.max(1) as f64,
            out.node_minutes as f64 / hpa.node_minutes.max(1) as f64
        );
        if first.is_none() {
            first = Some((out, season));
        }
    }
    let Some((out, season)) = first else {
        return;
    };
    println!();
    println!(
        "PLB default: period found {:?} (samples, strength)",
        season.map(|(p, s)| (p, (s * 100.0).round() / 100.0))
    );
    let leads = daily_leads(&out.provisioned, &hpa.provisioned);
    println!(
        "lead of PLB's scale-up over the reactive rule on each weekday surge (13:00, the rise the daily cycle predicts), median over node counts, minutes:"
    );
    let mut all_ok = !leads.is_empty();
    for (day, lead, levels) in &leads {
        println!(
            "  day {:>2}: {:>6.1} min over {} node counts",
            day + 1,
            lead,
            levels
        );
        all_ok &= *lead >= STARTUP as f64;
    }
    let met = |b: bool| if b { "met" } else { "NOT met" };
    println!();
    println!(
        "goal SLO-breaking minutes <= 0.5x reactive: {} ({} vs {}); node-minutes <= 1.1x: {} ({:.3}x); lead >= {STARTUP} min on each daily rise: {}",
        met(out.breaking * 2 <= hpa.breaking),
        out.breaking,
        hpa.breaking,
        met(out.node_minutes as f64 <= 1.1 * hpa.node_minutes as f64),
        out.node_minutes as f64 / hpa.node_minutes.max(1) as f64,
        met(all_ok)
    );
}
