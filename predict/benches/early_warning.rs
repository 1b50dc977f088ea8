//! Early warning on the NAB series with their labelled anomaly windows: each series is
//! fed to a node model as one metric, sample by sample, and its `degrading` flags are
//! compared with the windows: a window counts as warned when the node is `degrading`
//! at a sample between the window's start and its middle (NAB centres a window on
//! the labelled incident); the lead time is from the first such sample to the middle;
//! false alarms are entries into `degrading` outside every window, per day of
//! out-of-window time, and the share of out-of-window time spent flagged. The baseline is reactive: the same profile band and hysteresis,
//! flagged on the current value instead of the forecast.
// A bench measures time, reads data files and prints: it opts out of the pure-crate
// lints of predict/clippy.toml.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::disallowed_macros
)]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use plb_api::{NodeState, Outcome};
use plb_predict::state::{Hysteresis, StateParams, Verdict};
use plb_predict::{NodeConfig, NodeModel, NodeParams, Observation, Profile};

const DAY: f64 = 86_400.0;

#[derive(Default, Clone)]
struct Score {
    windows: usize,
    warned: usize,
    leads_h: Vec<f64>,
    false_alarms: usize,
    outside_days: f64,
    /// Days spent flagged outside every window.
    flagged_outside_days: f64,
}

impl Score {
    fn add(&mut self, o: &Score) {
        self.windows += o.windows;
        self.warned += o.warned;
        self.leads_h.extend(&o.leads_h);
        self.false_alarms += o.false_alarms;
        self.outside_days += o.outside_days;
        self.flagged_outside_days += o.flagged_outside_days;
    }
    fn flagged_pct(&self) -> f64 {
        100.0 * self.flagged_outside_days / self.outside_days.max(1e-9)
    }
    fn median_lead(&self) -> f64 {
        let mut v = self.leads_h.clone();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            f64::NAN
        } else {
            v[v.len() / 2]
        }
    }
    fn fa_per_day(&self) -> f64 {
        self.false_alarms as f64 / self.outside_days.max(1e-9)
    }
}

/// Scores a sequence of (time, degrading?, entered?) against the windows.
fn score(times: &[f64], flags: &[(bool, bool)], windows: &[(f64, f64)]) -> Score {
    let inside = |t: f64| windows.iter().any(|&(a, b)| t >= a && t <= b);
    let mut s = Score {
        windows: windows.len(),
        ..Default::default()
    };
    for &(a, b) in windows {
        let mid = (a + b) / 2.0;
        if let Some(i) = (0..times.len()).find(|&i| times[i] >= a && times[i] <= mid && flags[i].0)
        {
            s.warned += 1;
            s.leads_h.push((mid - times[i]) / 3_600.0);
        }
    }
    let step = if times.len() > 1 {
        times[1] - times[0]
    } else {
        0.0
    };
    for (i, &t) in times.iter().enumerate() {
        if !inside(t) {
            s.outside_days += step / DAY;
            if flags[i].0 {
                s.flagged_outside_days += step / DAY;
            }
            if flags[i].1 {
                s.false_alarms += 1;
            }
        }
    }
    s
}

fn main() {
    let series = common::load_nab();
    let mut params = NodeParams::default();
    params.state.stale_after_ms = 3_600_000; // samples every 5 minutes
    let config = NodeConfig::new(params.clone()).expect("config");
    println!(
        "Early warning on NAB (horizon {} samples = {} min; band ±{}σ; margin_z {}; enter after {}, leave after {})",
        params.state.horizon,
        params.state.horizon * 5,
        params.state.band_k,
        params.state.margin_z,
        params.state.enter_after,
        params.state.leave_after
    );
    println!(
        "warned = windows flagged `degrading` between start and middle; lead = median hours before the middle;"
    );
    println!(
        "FA/day = entries into `degrading` outside windows per day; out% = share of out-of-window time flagged"
    );
    println!();
    println!(
        "{:<30} {:>4} | {:>6} {:>7} {:>6} {:>6} | {:>6} {:>7} {:>6} {:>6}",
        "series", "win", "plb", "lead h", "FA/d", "out%", "react", "lead h", "FA/d", "out%"
    );
    let (mut plb_all, mut react_all) = (Score::default(), Score::default());
    for s in &series {
        let mut node = NodeModel::new(Arc::clone(&config));
        let mut profile = Profile::new(params.profile);
        let mut hyst = Hysteresis::default();
        let sp: &StateParams = &params.state;
        let (mut plb_flags, mut react_flags) = (Vec::new(), Vec::new());
        for (&t, &v) in s.times.iter().zip(&s.values) {
            let t_ms = (t * 1_000.0) as i64;
            let metrics: BTreeMap<String, f64> = [("value".to_string(), v)].into();
            let change = node
                .observe(&Observation {
                    t_ms,
                    probe: "nab",
                    outcome: Outcome::Ok,
                    duration_ms: None,
                    metrics: &metrics,
                })
                .expect("observe");
            plb_flags.push((
                node.state() == NodeState::Degrading,
                change.is_some_and(|c| c.to == NodeState::Degrading),
            ));
            // Reactive baseline: the current value against the same kind of band.
            let out = profile.is_ready() && profile.band(sp.band_k).is_some_and(|(_, hi)| v > hi);
            profile.observe(t_ms, v);
            let verdict = Verdict {
                state: if out {
                    NodeState::Degrading
                } else {
                    NodeState::Healthy
                },
                reason: String::new(),
                evidence: vec![],
            };
            let c = hyst.step(t_ms, verdict, sp);
            react_flags.push((
                hyst.state() == NodeState::Degrading,
                c.is_some_and(|c| c.to == NodeState::Degrading),
            ));
        }
        let p = score(&s.times, &plb_flags, &s.windows);
        let r = score(&s.times, &react_flags, &s.windows);
        println!(
            "{:<30} {:>4} | {:>6} {:>7.1} {:>6.2} {:>6.1} | {:>6} {:>7.1} {:>6.2} {:>6.1}",
            s.name,
            p.windows,
            p.warned,
            p.median_lead(),
            p.fa_per_day(),
            p.flagged_pct(),
            r.warned,
            r.median_lead(),
            r.fa_per_day(),
            r.flagged_pct()
        );
        plb_all.add(&p);
        react_all.add(&r);
    }
    println!();
    println!(
        "{:<10} {:>8} {:>8} {:>14} {:>10} {:>8}",
        "detector", "windows", "warned", "median lead h", "FA/day", "out%"
    );
    for (name, s) in [("plb", &plb_all), ("reactive", &react_all)] {
        println!(
            "{:<10} {:>8} {:>8} {:>14.1} {:>10.2} {:>8.1}",
            name,
            s.windows,
            s.warned,
            s.median_lead(),
            s.fa_per_day(),
            s.flagged_pct()
        );
    }
}
