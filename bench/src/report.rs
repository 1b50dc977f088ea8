//! The benchmark's output: every run's figures grouped into cells (scenario × mode ×
//! pool size × contender) with median and range over repetitions, `plb` against the
//! best baseline per scenario with the goals checked, the simulator checked
//! against the live run, printed as tables and serialised as JSON.
use std::fmt::Write as _;

use plb_routing::PolicyKind;
use serde::Serialize;

use crate::anchors::Anchor;
use crate::metrics::RunSummary;
use crate::policies::{Contender, HarnessConfig};
use crate::scenario::{Kind, Scenario, Shape};

/// Where a cell ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Where {
    /// Real HTTP on loopback.
    Live,
    /// The discrete-event simulator.
    Sim,
}

impl Where {
    fn as_str(self) -> &'static str {
        match self {
            Where::Live => "live",
            Where::Sim => "sim",
        }
    }
}

/// One run's headline figures (rates in percent of measured requests).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Figures {
    /// Median latency, ms.
    pub p50_ms: f64,
    /// p99 latency, ms.
    pub p99_ms: f64,
    /// p99.9 latency, ms.
    pub p999_ms: f64,
    /// Failed requests, %.
    pub errors_pct: f64,
    /// Failed or slower than the SLO, %.
    pub slo_breaking_pct: f64,
    /// Sent to an affected node inside its failure window, %.
    pub into_failure_pct: f64,
    /// The affected nodes' share of the traffic, %.
    pub affected_traffic_pct: Option<f64>,
    /// Their share of the capacity, %.
    pub affected_capacity_pct: Option<f64>,
    /// Total variation distance of traffic from capacity shares, %.
    pub share_deviation_pct: f64,
    /// The node farthest from its fair share: how far, in percentage points.
    pub node_share_off_pp: f64,
    /// Lead of the traffic shift over the SLO breach, s.
    pub lead_s: Option<f64>,
    /// CPU of a real balancer per request, µs (live anchors).
    pub cpu_us_per_request: Option<f64>,
    /// Time on the way (measured latency minus the node's own), median, ms (live).
    pub added_p50_ms: Option<f64>,
    /// Its p99, ms (live).
    pub added_p99_ms: Option<f64>,
    /// p99 of the time inside the nodes, ms (live).
    pub node_p99_ms: Option<f64>,
    /// Answered by the node within the SLO but past it at the client, % (live).
    pub breaking_on_the_way_pct: Option<f64>,
}

impl Figures {
    fn of(r: &RunSummary) -> Self {
        let pct = |x: u64| {
            if r.requests > 0 {
                100.0 * x as f64 / r.requests as f64
            } else {
                0.0
            }
        };
        Figures {
            p50_ms: r.p50_ms,
            p99_ms: r.p99_ms,
            p999_ms: r.p999_ms,
            errors_pct: pct(r.errors),
            slo_breaking_pct: pct(r.slo_breaking),
            into_failure_pct: pct(r.into_failure),
            affected_traffic_pct: r.affected_traffic.map(|x| 100.0 * x),
            affected_capacity_pct: r.affected_capacity.map(|x| 100.0 * x),
            share_deviation_pct: 100.0 * r.share_deviation,
            node_share_off_pp: 100.0 * r.node_share_off,
            lead_s: r.lead_s,
            cpu_us_per_request: r.cpu_us_per_request,
            added_p50_ms: r.path.as_ref().map(|p| p.added_p50_ms),
            added_p99_ms: r.path.as_ref().map(|p| p.added_p99_ms),
            node_p99_ms: r.path.as_ref().map(|p| p.node_p99_ms),
            breaking_on_the_way_pct: r.path.as_ref().map(|p| pct(p.breaking_on_the_way)),
        }
    }

    /// Per-field order statistic over runs: `pick` chooses from the sorted values.
    fn fold(runs: &[Figures], pick: impl Fn(&[f64]) -> f64) -> Figures {
        let get = |f: &dyn Fn(&Figures) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(f).filter(|x| !x.is_nan()).collect();
            v.sort_by(f64::total_cmp);
            if v.is_empty() { f64::NAN } else { pick(&v) }
        };
        let opt = |f: &dyn Fn(&Figures) -> Option<f64>| {
            let mut v: Vec<f64> = runs.iter().filter_map(f).collect();
            v.sort_by(f64::total_cmp);
            // A lead that is missing in most runs (never shifted) stays missing.
            (!v.is_empty() && 2 * v.len() >= runs.len()).then(|| pick(&v))
        };
        Figures {
            p50_ms: get(&|f| f.p50_ms),
            p99_ms: get(&|f| f.p99_ms),
            p999_ms: get(&|f| f.p999_ms),
            errors_pct: get(&|f| f.errors_pct),
            slo_breaking_pct: get(&|f| f.slo_breaking_pct),
            into_failure_pct: get(&|f| f.into_failure_pct),
            affected_traffic_pct: opt(&|f| f.affected_traffic_pct),
            affected_capacity_pct: opt(&|f| f.affected_capacity_pct),
            share_deviation_pct: get(&|f| f.share_deviation_pct),
            node_share_off_pp: get(&|f| f.node_share_off_pp),
            lead_s: opt(&|f| f.lead_s),
            cpu_us_per_request: opt(&|f| f.cpu_us_per_request),
            added_p50_ms: opt(&|f| f.added_p50_ms),
            added_p99_ms: opt(&|f| f.added_p99_ms),
            node_p99_ms: opt(&|f| f.node_p99_ms),
            breaking_on_the_way_pct: opt(&|f| f.breaking_on_the_way_pct),
        }
    }
}

fn median(v: &[f64]) -> f64 {
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// One scenario × mode × size × contender, over its repetitions.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// Scenario name.
    pub scenario: &'static str,
    /// Live or simulated.
    pub mode: Where,
    /// Nodes in the pool.
    pub nodes: usize,
    /// Who routed.
    pub contender: &'static str,
    /// Whether it is a baseline.
    pub baseline: bool,
    /// Whether the scenario overloads the pool for every contender (bursts), so its
    /// counts are left out of [`Report::totals`].
    pub overload: bool,
    /// Each repetition, in order.
    pub runs: Vec<RunSummary>,
    /// Median over repetitions.
    pub median: Figures,
    /// Lowest over repetitions.
    pub min: Figures,
    /// Highest over repetitions.
    pub max: Figures,
}

/// `plb` against the best baseline on one metric.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// The metric.
    pub metric: &'static str,
    /// `plb`'s median.
    pub plb: f64,
    /// The best baseline's median.
    pub best: f64,
    /// Which baseline that is.
    pub best_policy: &'static str,
    /// `plb / best` (1 when both are 0).
    pub ratio: f64,
}

/// One goal of the issue, checked.
#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    /// What it asks.
    pub goal: String,
    /// What was measured.
    pub measured: String,
    /// Whether it holds.
    pub met: bool,
}

/// `plb` (or `plb-proxy`, `plb-proxy-probe`, `plb-proxy-health`) against the baselines
/// (and the oracle) in one scenario × mode × size.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Who is compared: `plb` (in process), `plb-proxy` (PLB's reverse proxy) or
    /// `plb-proxy-probe` / `plb-proxy-health` (the proxy with agents running a probe of
    /// the node's queue / of its health endpoint's latency).
    pub contender: &'static str,
    /// Scenario name.
    pub scenario: &'static str,
    /// Live or simulated.
    pub mode: Where,
    /// Nodes.
    pub nodes: usize,
    /// Ratios per metric.
    pub ratios: Vec<Ratio>,
    /// Share of the gap between the best baseline's p99 and the oracle's that `plb`
    /// closes (simulator).
    pub gap_closed: Option<f64>,
    /// `plb`'s lead time and the best baseline lead, s.
    pub lead_s: Option<(Option<f64>, Option<f64>)>,
    /// The goals for this scenario.
    pub goals: Vec<Goal>,
}

/// The simulator against the live run at the same size.
#[derive(Debug, Clone, Serialize)]
pub struct SimLiveCheck {
    /// Scenario name.
    pub scenario: &'static str,
    /// Contender.
    pub contender: &'static str,
    /// Live p99 (median over reps), ms.
    pub live_p99_ms: f64,
    /// Simulated p99 (median over reps), ms.
    pub sim_p99_ms: f64,
    /// `sim / live - 1`.
    pub deviation: f64,
}

/// Everything one benchmark run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Base seed.
    pub seed: u64,
    /// Time scale of every script (1 = nominal).
    pub scale: f64,
    /// Repetitions per cell.
    pub reps: usize,
    /// The first repetition's number (`--first-rep`; 0 in a full run): repetition
    /// `first_rep + i` of a scenario has the seed that repetition has in a full run.
    pub first_rep: usize,
    /// Balancer, probe and sidecar settings.
    pub harness: HarnessConfig,
    /// The backends' shape (`--shape`).
    pub shape: Shape,
    /// The routing policy of the PLB proxy lanes when not the shipped `plb`
    /// (`--proxy-policy`).
    pub proxy_policy: Option<PolicyKind>,
    /// Every cell.
    pub cells: Vec<Cell>,
    /// `plb` against the best baseline.
    pub comparisons: Vec<Comparison>,
    /// Simulator against live.
    pub sim_vs_live: Vec<SimLiveCheck>,
    /// Contenders that could not run, and why (e.g. a balancer not installed).
    pub notes: Vec<Note>,
}

/// A contender that did not run in a scenario, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Note {
    /// Scenario name.
    pub scenario: &'static str,
    /// Live or simulated.
    pub mode: Where,
    /// Nodes.
    pub nodes: usize,
    /// Who.
    pub contender: &'static str,
    /// Why.
    pub note: String,
}

/// SLO-breaking requests of one contender summed over a run's scenarios.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Total {
    /// Live or simulated.
    pub mode: Where,
    /// Nodes.
    pub nodes: usize,
    /// Who.
    pub contender: &'static str,
    /// Scenarios counted.
    pub scenarios: usize,
    /// Repetitions counted, over those scenarios.
    pub runs: usize,
    /// Requests sent.
    pub requests: u64,
    /// Requests over the SLO or failed.
    pub slo_breaking: u64,
}

impl Report {
    /// An empty report.
    pub fn new(seed: u64, scale: f64, reps: usize, harness: HarnessConfig) -> Self {
        Report {
            seed,
            scale,
            reps,
            first_rep: 0,
            harness,
            shape: Shape::Standard,
            proxy_policy: None,
            cells: Vec::new(),
            comparisons: Vec::new(),
            sim_vs_live: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Records that `contender` did not run in `scenario` (once per reason).
    pub fn note(&mut self, scenario: &Scenario, mode: Where, contender: Contender, note: String) {
        let n = Note {
            scenario: scenario.name(),
            mode,
            nodes: scenario.nodes,
            contender: contender.name(),
            note,
        };
        let same = |m: &Note| {
            (m.scenario, m.mode, m.nodes, m.contender, &m.note)
                == (n.scenario, n.mode, n.nodes, n.contender, &n.note)
        };
        if !self.notes.iter().any(same) {
            self.notes.push(n);
        }
    }

    /// Adds one run's summary to its cell.
    pub fn add(&mut self, scenario: &Scenario, mode: Where, contender: Contender, run: RunSummary) {
        let key = (scenario.name(), mode, scenario.nodes, contender.name());
        let cell = find_or_push(
            &mut self.cells,
            |c| (c.scenario, c.mode, c.nodes, c.contender) == key,
            || {
                let f = Figures::of(&run);
                Cell {
                    scenario: key.0,
                    mode,
                    nodes: key.2,
                    contender: key.3,
                    baseline: contender.is_baseline(),
                    overload: scenario.def.kind == Kind::Bursts,
                    runs: Vec::new(),
                    median: f,
                    min: f,
                    max: f,
                }
            },
        );
        cell.runs.push(run);
        let figs: Vec<Figures> = cell.runs.iter().map(Figures::of).collect();
        cell.median = Figures::fold(&figs, median);
        cell.min = Figures::fold(&figs, |v| v[0]);
        cell.max = Figures::fold(&figs, |v| v[v.len() - 1]);
    }

    /// Compares `plb` with the baselines for `scenario` in `mode`, records it and
    /// returns the table for it (cells, ratios, goals).
    pub fn conclude(&mut self, scenario: &Scenario, mode: Where) -> String {
        let cells: Vec<&Cell> = self
            .cells
            .iter()
            .filter(|c| {
                c.scenario == scenario.name() && c.mode == mode && c.nodes == scenario.nodes
            })
            .collect();
        let mut out = table(scenario, mode, &cells, self.reps);
        for n in self.notes.iter().filter(|n| {
            n.scenario == scenario.name() && n.mode == mode && n.nodes == scenario.nodes
        }) {
            let _ = writeln!(out, "{:<14} not run: {}", n.contender, n.note);
        }
        if let Some(policy) = self.proxy_policy
            && mode == Where::Live
            && policy != PolicyKind::Plb
        {
            let _ = writeln!(
                out,
                "plb-proxy lanes routed by the pool policy `{policy}` (--proxy-policy), not `plb`"
            );
        }
        out.push_str(&cost(&cells));
        out.push_str(&on_the_way(&cells));
        // In-process `plb`, then PLB's proxy lanes; those with a probe are also held
        // against the proxy without one.
        let proxies = Anchor::ALL
            .into_iter()
            .filter(|a| a.is_plb())
            .map(|a| (a.name(), a.probe_config().is_some()));
        for (who, probe) in std::iter::once(("plb", false)).chain(proxies) {
            if let Some(mut cmp) = compare(scenario, mode, &cells, who) {
                if probe {
                    cmp.goals.extend(probe_goal(&cells, who));
                }
                out.push_str(&describe(&cmp));
                self.comparisons.push(cmp);
            }
        }
        if mode == Where::Sim {
            out.push_str(&self.check_sim(scenario));
        }
        out
    }

    /// Simulated against live p99 at the same pool size, when both ran.
    fn check_sim(&mut self, scenario: &Scenario) -> String {
        let mut out = String::new();
        let find = |mode: Where, who: &str| {
            self.cells.iter().find(|c| {
                c.scenario == scenario.name()
                    && c.mode == mode
                    && c.nodes == scenario.nodes
                    && c.contender == who
            })
        };
        let mut checks = Vec::new();
        for sim in self.cells.iter().filter(|c| {
            c.scenario == scenario.name() && c.mode == Where::Sim && c.nodes == scenario.nodes
        }) {
            if let Some(live) = find(Where::Live, sim.contender) {
                checks.push(SimLiveCheck {
                    scenario: sim.scenario,
                    contender: sim.contender,
                    live_p99_ms: live.median.p99_ms,
                    sim_p99_ms: sim.median.p99_ms,
                    deviation: sim.median.p99_ms / live.median.p99_ms - 1.0,
                });
            }
        }
        if !checks.is_empty() {
            let _ = writeln!(
                out,
                "simulator vs live at {} nodes, p99 (sim/live - 1; goal within 15%):",
                scenario.nodes
            );
            for c in &checks {
                let _ = writeln!(
                    out,
                    "  {:<14} live {:>7.1} ms  sim {:>7.1} ms  {:+.1}%",
                    c.contender,
                    c.live_p99_ms,
                    c.sim_p99_ms,
                    100.0 * c.deviation
                );
            }
        }
        self.sim_vs_live.extend(checks);
        out
    }

    /// SLO-breaking requests per mode, pool size and contender, summed over every
    /// repetition of every scenario but those that overload the pool for everyone
    /// (bursts, where thousands of requests break whoever routes and drown the
    /// differences), in the order the cells were added. Contenders compare only over
    /// the same scenarios: `scenarios` and `runs` say what each sum covers.
    pub fn totals(&self) -> Vec<Total> {
        let mut out: Vec<Total> = Vec::new();
        for c in self.cells.iter().filter(|c| !c.overload) {
            let key = (c.mode, c.nodes, c.contender);
            let t = find_or_push(
                &mut out,
                |t| (t.mode, t.nodes, t.contender) == key,
                || Total {
                    mode: c.mode,
                    nodes: c.nodes,
                    contender: c.contender,
                    scenarios: 0,
                    runs: 0,
                    requests: 0,
                    slo_breaking: 0,
                },
            );
            t.scenarios += 1;
            t.runs += c.runs.len();
            t.requests += c.runs.iter().map(|r| r.requests).sum::<u64>();
            t.slo_breaking += c.runs.iter().map(|r| r.slo_breaking).sum::<u64>();
        }
        out
    }

    /// The closing summary: every comparison on one line each, the goals missed, and
    /// the [totals](Self::totals).
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n== plb vs the best baseline (median ratios, < 1 is better; goals from issues 7 and 13) =="
        );
        let _ = writeln!(
            out,
            "{:<20} {:<16} {:<5} {:>5}  {:>6} {:>6} {:>6} {:>9} {:>7}  {:>13} {:>6}  goals",
            "scenario",
            "who",
            "mode",
            "nodes",
            "p50",
            "p99",
            "p99.9",
            "SLO-break",
            "errors",
            "lead plb/best",
            "gap"
        );
        for c in &self.comparisons {
            let r = |m: &str| {
                c.ratios
                    .iter()
                    .find(|r| r.metric == m)
                    .map_or("-".to_owned(), |r| fmt_ratio(r.ratio))
            };
            let lead = match c.lead_s {
                Some((p, b)) => format!("{}/{}", fmt_opt(p, 1), fmt_opt(b, 1)),
                None => "-".into(),
            };
            let gap = c
                .gap_closed
                .map_or("-".to_owned(), |g| format!("{:.0}%", 100.0 * g));
            let met = c.goals.iter().filter(|g| g.met).count();
            let goals = if c.goals.is_empty() {
                "-".to_owned()
            } else {
                format!("{met}/{} met", c.goals.len())
            };
            let _ = writeln!(
                out,
                "{:<20} {:<16} {:<5} {:>5}  {:>6} {:>6} {:>6} {:>9} {:>7}  {:>13} {:>6}  {}",
                c.scenario,
                c.contender,
                c.mode.as_str(),
                c.nodes,
                r("p50"),
                r("p99"),
                r("p99.9"),
                r("SLO-breaking"),
                r("errors"),
                lead,
                gap,
                goals
            );
        }
        let missed: Vec<String> = self
            .comparisons
            .iter()
            .flat_map(|c| {
                c.goals.iter().filter(|g| !g.met).map(move |g| {
                    format!(
                        "  {} {} {} {}: {} (measured {})",
                        c.scenario,
                        c.contender,
                        c.mode.as_str(),
                        c.nodes,
                        g.goal,
                        g.measured
                    )
                })
            })
            .collect();
        if !missed.is_empty() {
            let _ = writeln!(out, "goals missed:");
            for m in missed {
                let _ = writeln!(out, "{m}");
            }
        }
        let totals = self.totals();
        if !totals.is_empty() {
            let _ = writeln!(
                out,
                "SLO-breaking requests summed over every repetition of every scenario but bursts:"
            );
            for t in &totals {
                let share = if t.requests == 0 {
                    0.0
                } else {
                    100.0 * t.slo_breaking as f64 / t.requests as f64
                };
                let _ = writeln!(
                    out,
                    "  {:<5} {:>5}  {:<16} {:>8} of {:>9} ({share:.2}%) over {} scenarios, {} repetitions",
                    t.mode.as_str(),
                    t.nodes,
                    t.contender,
                    t.slo_breaking,
                    t.requests,
                    t.scenarios,
                    t.runs
                );
            }
        }
        if !self.sim_vs_live.is_empty() {
            let worst = self
                .sim_vs_live
                .iter()
                .map(|c| c.deviation.abs())
                .fold(0.0, f64::max);
            let within = self
                .sim_vs_live
                .iter()
                .filter(|c| c.deviation.abs() <= 0.15)
                .count();
            let _ = writeln!(
                out,
                "simulator vs live p99: {within}/{} within 15%, worst {:.1}%",
                self.sim_vs_live.len(),
                100.0 * worst
            );
        }
        out
    }
}

fn fmt_ratio(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.2}x")
    } else {
        "inf".into()
    }
}

fn fmt_opt(x: Option<f64>, prec: usize) -> String {
    x.map_or("never".to_owned(), |v| format!("{v:.prec$}"))
}

fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        "-".into()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// `median (min-max)`, or just the median for one repetition.
/// The first element of `items` that `is` picks, pushed from `make` if there is none.
fn find_or_push<T>(
    items: &mut Vec<T>,
    is: impl Fn(&T) -> bool,
    make: impl FnOnce() -> T,
) -> &mut T {
    let at = match items.iter().position(is) {
        Some(i) => i,
        None => {
            items.push(make());
            items.len() - 1
        }
    };
    &mut items[at]
}

fn ranged(med: f64, lo: f64, hi: f64, reps: usize) -> String {
    if reps <= 1 || (lo == hi) {
        fmt_num(med)
    } else {
        format!("{} ({}-{})", fmt_num(med), fmt_num(lo), fmt_num(hi))
    }
}

fn table(scenario: &Scenario, mode: Where, cells: &[&Cell], reps: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n== {} | {} | {} nodes, {}, load {:.0}% | {} rep(s) | {:.0} s | SLO {:.0} ms | {} ==",
        scenario.name(),
        mode.as_str(),
        scenario.nodes,
        scenario.shape.name(),
        scenario.load * 100.0,
        cells.first().map_or(reps, |c| c.runs.len()),
        scenario.duration(),
        scenario.slo * 1000.0,
        scenario.def.about
    );
    let lead = scenario.reports_lead();
    let lead_head = crate::metrics::lead_bound(scenario)
        .map_or("lead s".to_owned(), |b| format!("lead s (<={b:.1})"));
    let _ = writeln!(
        out,
        "{:<14} {:>22} {:>22} {:>22} {:>18} {:>20} {:>10} {:>16}{}",
        "policy",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "errors %",
        "SLO-breaking %",
        "into-fail%",
        if scenario.affected().is_empty() {
            "traffic-vs-cap"
        } else {
            "affected tr/cap%"
        },
        if lead {
            format!(" {lead_head:>16}")
        } else {
            String::new()
        }
    );
    for c in cells {
        let (m, lo, hi) = (&c.median, &c.min, &c.max);
        let n = c.runs.len();
        let share = match (m.affected_traffic_pct, m.affected_capacity_pct) {
            (Some(t), Some(cap)) => format!("{t:.1}/{cap:.1}"),
            _ => format!("tvd {:.1}%", m.share_deviation_pct),
        };
        let lead_col = if lead {
            let l = match (m.lead_s, lo.lead_s, hi.lead_s) {
                (Some(v), Some(a), Some(b)) if n > 1 && a != b => {
                    format!("{v:.1} ({a:.1}-{b:.1})")
                }
                (Some(v), _, _) => format!("{v:.1}"),
                _ => "never".into(),
            };
            format!(" {l:>16}")
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{:<14} {:>22} {:>22} {:>22} {:>18} {:>20} {:>10.2} {:>16}{}",
            c.contender,
            ranged(m.p50_ms, lo.p50_ms, hi.p50_ms, n),
            ranged(m.p99_ms, lo.p99_ms, hi.p99_ms, n),
            ranged(m.p999_ms, lo.p999_ms, hi.p999_ms, n),
            ranged(m.errors_pct, lo.errors_pct, hi.errors_pct, n),
            ranged(
                m.slo_breaking_pct,
                lo.slo_breaking_pct,
                hi.slo_breaking_pct,
                n
            ),
            m.into_failure_pct,
            share,
            lead_col
        );
    }
    out
}

/// The real balancers' CPU per request, with ratios against the cheaper HAProxy.
fn cost(cells: &[&Cell]) -> String {
    let costs: Vec<(&str, f64)> = cells
        .iter()
        .filter_map(|c| Some((c.contender, c.median.cpu_us_per_request?)))
        .collect();
    if costs.is_empty() {
        return String::new();
    }
    let reference = costs
        .iter()
        .filter(|(who, _)| who.starts_with("haproxy"))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .copied();
    let mut out = String::from(
        "CPU per request sent (process tree, first arrival to last reply, median over reps):",
    );
    for (who, us) in &costs {
        let _ = write!(out, " {who} {us:.0} us");
        if let Some((_, r)) = reference.filter(|r| r.1 > 0.0) {
            let _ = write!(out, " ({:.2}x)", us / r);
        }
        out.push(';');
    }
    if let Some((who, _)) = reference {
        let _ = write!(out, " ratios vs {who}");
    }
    out.push('\n');
    out
}

/// Where each live lane's time went: on the way (the client, a balancer, the loopback)
/// or inside the nodes, from the backends' stamps, and the SLO breaks the way alone
/// caused.
fn on_the_way(cells: &[&Cell]) -> String {
    let rows: Vec<String> = cells
        .iter()
        .filter_map(|c| {
            let m = &c.median;
            Some(format!(
                " {} {:.2}/{:.2} ms, {:.0} ms, {:.3}%;",
                c.contender,
                m.added_p50_ms?,
                m.added_p99_ms?,
                m.node_p99_ms?,
                m.breaking_on_the_way_pct?
            ))
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    format!(
        "Time on the way p50/p99, inside the nodes p99, SLO broken on the way (median over reps):{}\n",
        rows.concat()
    )
}

fn compare(
    scenario: &Scenario,
    mode: Where,
    cells: &[&Cell],
    who: &'static str,
) -> Option<Comparison> {
    let plb = cells.iter().find(|c| c.contender == who)?;
    let baselines: Vec<&&Cell> = cells.iter().filter(|c| c.baseline).collect();
    if baselines.is_empty() {
        return None;
    }
    let ratio = |metric: &'static str, get: &dyn Fn(&Figures) -> f64| {
        let best = baselines
            .iter()
            .min_by(|a, b| get(&a.median).total_cmp(&get(&b.median)))?;
        let (p, b) = (get(&plb.median), get(&best.median));
        let ratio = ratio_of(p, b);
        Some(Ratio {
            metric,
            plb: p,
            best: b,
            best_policy: best.contender,
            ratio,
        })
    };
    let ratios: Vec<Ratio> = [
        ratio("p50", &|f| f.p50_ms),
        ratio("p99", &|f| f.p99_ms),
        ratio("p99.9", &|f| f.p999_ms),
        ratio("SLO-breaking", &|f| f.slo_breaking_pct),
        ratio("errors", &|f| f.errors_pct),
    ]
    .into_iter()
    .flatten()
    .collect();
    let gap_closed = cells
        .iter()
        .find(|c| c.contender == "oracle")
        .and_then(|o| {
            let r = ratios.iter().find(|r| r.metric == "p99")?;
            let gap = r.best - o.median.p99_ms;
            (gap > 0.0).then(|| (r.best - r.plb) / gap)
        });
    let lead_s = scenario.reports_lead().then(|| {
        let best = baselines
            .iter()
            .filter_map(|c| c.median.lead_s)
            .fold(None, |acc: Option<f64>, v| {
                Some(acc.map_or(v, |a| a.max(v)))
            });
        (plb.median.lead_s, best)
    });
    let get = |m: &str| ratios.iter().find(|r| r.metric == m);
    let mut goals = Vec::new();
    let mut ratio_goal = |metric: &str, limit: f64| {
        if let Some(r) = get(metric) {
            goals.push(Goal {
                goal: format!("{metric} <= {limit}x best baseline"),
                measured: format!(
                    "{:.2}x ({} vs {} {})",
                    r.ratio,
                    fmt_num(r.plb),
                    r.best_policy,
                    fmt_num(r.best)
                ),
                met: r.ratio <= limit,
            });
        }
    };
    match scenario.def.kind {
        Kind::GradualDegradation | Kind::LeakThenCrash | Kind::TwoSlow => {
            ratio_goal("SLO-breaking", 0.5);
            ratio_goal("p99.9", 0.7);
            // Issue 7 asked 10 s of the older scenarios, issue 13 5 s of two-slow.
            let need = if scenario.def.kind == Kind::TwoSlow {
                5.0
            } else {
                10.0
            } * scenario.scale;
            let got = plb.median.lead_s;
            // What the scenario allows at all, so a goal beyond it reads as such.
            let bound = crate::metrics::lead_bound(scenario)
                .map_or(String::new(), |b| format!(" (any policy: at most {b:.1})"));
            goals.push(Goal {
                goal: format!("traffic shifted >= {need:.1} s before the SLO breach"),
                measured: format!("{}{bound}", fmt_opt(got, 1)),
                met: got.is_some_and(|l| l >= need),
            });
        }
        Kind::Heterogeneous | Kind::FluctuatingFast | Kind::FluctuatingSlow => {
            ratio_goal("p99", 0.85);
            if mode == Where::Sim {
                goals.push(Goal {
                    goal: "closes >= 40% of the p99 gap to the oracle".into(),
                    measured: gap_closed.map_or("-".into(), |g| format!("{:.0}%", 100.0 * g)),
                    met: gap_closed.is_some_and(|g| g >= 0.4),
                });
            }
        }
        Kind::Homogeneous | Kind::Stall | Kind::Bursts | Kind::FastErrors => {
            ratio_goal("p99", 1.05);
            if scenario.def.kind == Kind::Homogeneous {
                // Issue 13: SLO-breaking too, and every node within a point of its
                // fair share (in the median repetition; the worst is printed beside).
                ratio_goal("SLO-breaking", 1.05);
                let (median, worst) = (plb.median.node_share_off_pp, plb.max.node_share_off_pp);
                goals.push(Goal {
                    goal: "every node within 1 point of its fair share".into(),
                    measured: format!(
                        "farthest node {median:.2} points off (worst repetition {worst:.2})"
                    ),
                    met: median <= 1.0,
                });
            }
            if let Some(r) = get("errors") {
                // "No more errors", with a tolerance of 10% + 0.01 points for noise.
                goals.push(Goal {
                    goal: "no more errors than the best baseline (10% + 0.01 pt tolerance)".into(),
                    measured: format!("{:.3}% vs {} {:.3}%", r.plb, r.best_policy, r.best),
                    met: r.plb <= r.best * 1.1 + 0.01,
                });
            }
            if scenario.def.kind == Kind::FastErrors {
                let healthy_share: f64 = 100.0
                    * scenario
                        .affected()
                        .iter()
                        .map(|&i| scenario.fair_share(i, 0.0))
                        .sum::<f64>();
                let got = plb.median.affected_traffic_pct;
                goals.push(Goal {
                    goal: format!("failing node gets <= its healthy share ({healthy_share:.1}%)"),
                    measured: fmt_opt(got, 2),
                    met: got.is_some_and(|t| t <= healthy_share),
                });
            }
        }
        Kind::RollingRestarts | Kind::IntermittentErrors | Kind::LongStall => {
            ratio_goal("SLO-breaking", 0.7);
        }
        Kind::JoinCold => {}
    }
    Some(Comparison {
        contender: who,
        scenario: scenario.name(),
        mode,
        nodes: scenario.nodes,
        ratios,
        gap_closed,
        lead_s,
        goals,
    })
}

/// `a / b`: 1 when both are 0, infinite when only `b` is.
fn ratio_of(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else if a <= 0.0 {
        1.0
    } else {
        f64::INFINITY
    }
}

/// Issue 13: with the probe on (`with_probe`'s lane), never worse than the same pool
/// with the probe off by more than 5 % (SLO-breaking share, medians over the
/// repetitions).
fn probe_goal(cells: &[&Cell], with_probe: &str) -> Option<Goal> {
    let find = |who: &str| cells.iter().find(|c| c.contender == who);
    let (on, off) = (find(with_probe)?, find(Anchor::PlbProxy.name())?);
    let (a, b) = (on.median.slo_breaking_pct, off.median.slo_breaking_pct);
    let ratio = ratio_of(a, b);
    Some(Goal {
        goal: "SLO-breaking with the probe <= 1.05x without (plb-proxy)".into(),
        measured: format!("{ratio:.2}x ({} vs {})", fmt_num(a), fmt_num(b)),
        met: ratio <= 1.05,
    })
}

fn describe(c: &Comparison) -> String {
    let mut out = format!("{} vs best baseline:", c.contender);
    for r in &c.ratios {
        let _ = write!(
            out,
            " {} {} ({});",
            r.metric,
            fmt_ratio(r.ratio),
            r.best_policy
        );
    }
    if let Some(g) = c.gap_closed {
        let _ = write!(out, " p99 gap to oracle closed {:.0}%;", 100.0 * g);
    }
    out.push('\n');
    for g in &c.goals {
        let _ = writeln!(
            out,
            "  [{}] {}: {}",
            if g.met { "met" } else { "MISSED" },
            g.goal,
            g.measured
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::PathTime;
    use crate::scenario::select;

    fn summary(p99: f64, errors: u64) -> RunSummary {
        RunSummary {
            requests: 1000,
            errors,
            timeouts: 0,
            slo_breaking: errors,
            into_failure: 0,
            p50_ms: p99 / 3.0,
            p99_ms: p99,
            p999_ms: p99 * 1.5,
            affected_traffic: None,
            affected_capacity: None,
            share_deviation: 0.01,
            node_share_off: 0.005,
            shift_at: None,
            breach_at: None,
            lead_s: None,
            traffic_share: Vec::new(),
            capacity_share: Vec::new(),
            cpu_us_per_request: None,
            timeline: None,
            path: None,
        }
    }

    #[test]
    fn live_tables_say_when_the_proxy_lanes_ran_another_policy() {
        let def = select("homogeneous").expect("known")[0];
        let sc = Scenario::new(def, 8, 1, 1.0);
        let says = |policy: Option<PolicyKind>, mode: Where| {
            let mut r = Report::new(1, 1.0, 1, HarnessConfig::default());
            r.proxy_policy = policy;
            r.add(
                &sc,
                mode,
                Contender::Policy(PolicyKind::Plb),
                summary(80.0, 0),
            );
            r.conclude(&sc, mode).contains("routed by the pool policy")
        };
        assert!(says(Some(PolicyKind::LeastConn), Where::Live));
        assert!(
            !says(Some(PolicyKind::LeastConn), Where::Sim),
            "the simulator has no proxy"
        );
        assert!(
            !says(Some(PolicyKind::Plb), Where::Live),
            "the shipped policy needs no word"
        );
        assert!(!says(None, Where::Live));
    }

    #[test]
    fn live_tables_split_the_time_on_the_way_from_the_nodes() {
        let def = select("homogeneous").expect("known")[0];
        let sc = Scenario::new(def, 8, 1, 1.0);
        let mut r = Report::new(1, 1.0, 2, HarnessConfig::default());
        for (added, breaking) in [(1.0, 2), (3.0, 4)] {
            let mut s = summary(80.0, 0);
            s.path = Some(PathTime {
                requests: 990,
                node_p99_ms: 70.0,
                added_p50_ms: added,
                added_p99_ms: 4.0 * added,
                added_p999_ms: 9.0 * added,
                breaking_on_the_way: breaking,
            });
            r.add(&sc, Where::Live, Contender::Policy(PolicyKind::Plb), s);
        }
        let out = r.conclude(&sc, Where::Live);
        // Medians over the two runs; 3 of 1000 requests broke the SLO on the way.
        assert!(out.contains(" plb 2.00/8.00 ms, 70 ms, 0.300%;"), "{out}");
        // Without stamps (the simulator) there is no such line.
        let mut r = Report::new(1, 1.0, 1, HarnessConfig::default());
        r.add(
            &sc,
            Where::Sim,
            Contender::Policy(PolicyKind::Plb),
            summary(80.0, 0),
        );
        assert!(!r.conclude(&sc, Where::Sim).contains("Time on the way"));
    }

    /// Issue 13 asks identical nodes within one point of their fair share: the goal is
    /// judged on the median repetition, and the worst one is printed beside it.
    #[test]
    fn identical_nodes_have_a_share_goal() {
        let def = select("homogeneous").expect("known")[0];
        let sc = Scenario::new(def, 8, 1, 1.0);
        let goal = |offs: [f64; 3]| {
            let mut r = Report::new(1, 1.0, 3, HarnessConfig::default());
            for off in offs {
                r.add(
                    &sc,
                    Where::Sim,
                    Contender::Policy(PolicyKind::LeastConn),
                    summary(80.0, 0),
                );
                let mut s = summary(80.0, 0);
                s.node_share_off = off;
                r.add(&sc, Where::Sim, Contender::Policy(PolicyKind::Plb), s);
            }
            r.conclude(&sc, Where::Sim);
            r.comparisons[0]
                .goals
                .iter()
                .find(|g| g.goal.contains("fair share"))
                .cloned()
                .expect("a share goal")
        };
        let met = goal([0.005, 0.008, 0.02]);
        assert!(met.met, "{met:?}");
        assert!(
            met.measured
                .contains("0.80 points off (worst repetition 2.00)"),
            "{met:?}"
        );
        assert!(!goal([0.012, 0.015, 0.004]).met);
    }

    #[test]
    fn medians_ranges_ratios_and_goals() {
        let def = select("heterogeneous").expect("known")[0];
        let sc = Scenario::new(def, 16, 1, 1.0);
        let mut r = Report::new(1, 1.0, 3, HarnessConfig::default());
        for (p99s, who) in [
            (
                [300.0, 320.0, 310.0],
                Contender::Policy(PolicyKind::RoundRobin),
            ),
            (
                [200.0, 190.0, 210.0],
                Contender::Policy(PolicyKind::LeastRequest),
            ),
            ([150.0, 160.0, 140.0], Contender::Policy(PolicyKind::Plb)),
            ([100.0, 100.0, 100.0], Contender::Oracle),
        ] {
            for p in p99s {
                r.add(&sc, Where::Sim, who, summary(p, 0));
            }
        }
        let text = r.conclude(&sc, Where::Sim);
        assert!(text.contains("200 (190-210)"), "{text}");
        let c = &r.comparisons[0];
        let p99 = c.ratios.iter().find(|x| x.metric == "p99").expect("p99");
        assert_eq!(p99.best_policy, "least-request");
        assert!((p99.ratio - 0.75).abs() < 1e-12);
        assert!((c.gap_closed.expect("oracle ran") - 0.5).abs() < 1e-12);
        assert!(c.goals.iter().all(|g| g.met), "{:?}", c.goals);
        assert!(r.summary().contains("0.75x"));
    }

    #[test]
    fn totals_sum_every_repetition_and_leave_out_the_overload_scenario() {
        let mut r = Report::new(1, 1.0, 2, HarnessConfig::default());
        let plb = Contender::Policy(PolicyKind::Plb);
        let lc = Contender::Policy(PolicyKind::LeastConn);
        for (name, counts) in [
            ("heterogeneous", [3, 4]),
            ("stall", [5, 6]),
            ("bursts", [900, 800]),
        ] {
            let def = select(name).expect("known")[0];
            let sc = Scenario::new(def, 8, 1, 1.0);
            for n in counts {
                r.add(&sc, Where::Sim, plb, summary(100.0, n));
                r.add(&sc, Where::Sim, lc, summary(100.0, 2 * n));
            }
            if name == "stall" {
                r.add(&sc, Where::Live, plb, summary(100.0, 7));
            }
        }
        let t = r.totals();
        assert_eq!(t.len(), 3, "{t:?}");
        assert_eq!(
            (
                t[0].mode,
                t[0].contender,
                t[0].scenarios,
                t[0].runs,
                t[0].slo_breaking,
                t[0].requests
            ),
            (Where::Sim, "plb", 2, 4, 18, 4000)
        );
        assert_eq!((t[1].contender, t[1].slo_breaking), ("least-conn", 36));
        assert_eq!(
            (t[2].mode, t[2].scenarios, t[2].slo_breaking),
            (Where::Live, 1, 7)
        );
        assert!(
            r.summary()
                .contains("18 of      4000 (0.45%) over 2 scenarios, 4 repetitions"),
            "{}",
            r.summary()
        );
    }
}
