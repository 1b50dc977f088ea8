//! [`Tracker`]: outcome windows per probe version and node, attribution, probe states
//! with hysteresis, and the evidence of each transition. One tracker holds one client's
//! probes and nodes (node names are unique per client).
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use plb_api::{
    Blame, FailureExample, NODE_SAMPLER_PROBE, Outcome, ProbeReliability, ProbeState,
    ReliabilityEvidence,
};

use crate::wilson::{Interval, wilson};

/// The thresholds of the policy. The defaults are what the balancer runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Runs kept per probe version and node (the count bound of the window).
    pub window_runs: usize,
    /// Age bound of the window, ms.
    pub window_ms: i64,
    /// Standard deviations of the Wilson interval (1.96: about 95 %).
    pub z: f64,
    /// Runs (across nodes) before a probe may leave `reliable`.
    pub min_runs: u64,
    /// `reliable` → `flaky` when the interval's lower end of the probe's failure share
    /// exceeds this.
    pub flaky_enter_lo: f64,
    /// `flaky` → `reliable` when the upper end falls below this (below
    /// `flaky_enter_lo`'s share: the gap is the hysteresis).
    pub flaky_exit_hi: f64,
    /// → `needs_update` when the lower end exceeds this.
    pub needs_update_lo: f64,
    /// `needs_update` → `reliable` (resolved) when the upper end falls below this ...
    pub resolve_hi: f64,
    /// ... over at least this many runs of the version.
    pub resolve_min_runs: u64,
    /// A node "fails" a probe when at least this share of its runs there fail.
    pub node_failing_share: f64,
    /// A node "passes" a probe when at most this share of its runs there fail.
    pub node_passing_share: f64,
    /// Runs on a node before it counts as failing or passing.
    pub node_min_runs: u64,
    /// Recent runs of each other probe looked at to decide whether a node degrades.
    pub degrade_recent: usize,
    /// Node-side failures (`unhealthy`, `timeout`) among those that make the node degrade.
    pub degrade_min_failures: usize,
    /// Recent durations of another probe at least this times its older median: it slows.
    pub degrade_slowdown: f64,
    /// Example failures kept per version.
    pub max_examples: usize,
    /// Longest example message kept, bytes.
    pub max_message: usize,
    /// Longest example stderr tail kept, bytes.
    pub max_stderr: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            window_runs: 64,
            window_ms: 30 * 60 * 1000,
            z: 1.96,
            min_runs: 4,
            flaky_enter_lo: 0.05,
            flaky_exit_hi: 0.10,
            needs_update_lo: 0.5,
            resolve_hi: 0.25,
            resolve_min_runs: 12,
            node_failing_share: 0.5,
            node_passing_share: 0.1,
            node_min_runs: 3,
            degrade_recent: 5,
            degrade_min_failures: 2,
            degrade_slowdown: 2.0,
            max_examples: 5,
            max_message: 512,
            max_stderr: 1024,
        }
    }
}

/// One probe run, as the tracker needs it.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// The node it ran on.
    pub node: &'a str,
    /// The pool of the probe.
    pub pool: &'a str,
    /// The probe (the agent's node sampler, [`NODE_SAMPLER_PROBE`], only informs the
    /// node's health).
    pub probe: &'a str,
    /// The version that ran.
    pub version: u32,
    /// How it ended.
    pub outcome: Outcome,
    /// When it ran, Unix ms.
    pub taken_at_ms: i64,
    /// Its wall-clock duration, ms.
    pub duration_ms: f64,
    /// The failure message.
    pub message: &'a str,
    /// The captured output tail.
    pub stderr: &'a str,
}

/// A probe's state as stored by the caller, to restore after a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct Persisted {
    /// State.
    pub state: ProbeState,
    /// Since when, Unix ms.
    pub since_ms: Option<i64>,
    /// The version the state is about.
    pub version: u32,
}

/// A change of a probe's state (or, in `needs_update`, of the failing version).
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// Pool.
    pub pool: String,
    /// Probe.
    pub probe: String,
    /// Previous state.
    pub from: ProbeState,
    /// The version the previous state was about.
    pub from_version: u32,
    /// New state.
    pub to: ProbeState,
    /// The version the new state is about.
    pub version: u32,
    /// When, Unix ms (the evaluation time).
    pub at_ms: i64,
    /// The evidence at that moment.
    pub evidence: ReliabilityEvidence,
}

/// Whom one run's failure was charged to when it was observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Charge {
    None,
    Node,
    Probe,
}

#[derive(Debug, Clone, Copy)]
struct Run {
    at_ms: i64,
    outcome: Outcome,
    charge: Charge,
}

/// One version's runs on one node, with running counts.
#[derive(Debug, Default)]
struct NodeWindow {
    runs: VecDeque<Run>,
    by_outcome: [u64; Outcome::ALL.len()],
    node_charged: u64,
    probe_charged: u64,
}

fn outcome_index(o: Outcome) -> usize {
    Outcome::ALL.iter().position(|x| *x == o).unwrap_or(0)
}

impl NodeWindow {
    fn push(&mut self, run: Run, p: &Policy) {
        self.by_outcome[outcome_index(run.outcome)] += 1;
        match run.charge {
            Charge::Node => self.node_charged += 1,
            Charge::Probe => self.probe_charged += 1,
            Charge::None => {}
        }
        self.runs.push_back(run);
        while self.runs.len() > p.window_runs {
            self.pop();
        }
    }

    fn pop(&mut self) {
        if let Some(r) = self.runs.pop_front() {
            let i = outcome_index(r.outcome);
            self.by_outcome[i] = self.by_outcome[i].saturating_sub(1);
            match r.charge {
                Charge::Node => self.node_charged = self.node_charged.saturating_sub(1),
                Charge::Probe => self.probe_charged = self.probe_charged.saturating_sub(1),
                Charge::None => {}
            }
        }
    }

    fn prune(&mut self, oldest_ms: i64) {
        while self.runs.front().is_some_and(|r| r.at_ms < oldest_ms) {
            self.pop();
        }
    }

    fn n(&self) -> u64 {
        self.runs.len() as u64
    }

    fn failures(&self) -> u64 {
        self.n() - self.by_outcome[0]
    }
}

/// Recent runs of one probe on one node, for the node's health as other probes see it.
#[derive(Debug, Default)]
struct Recent {
    runs: VecDeque<(Outcome, f64)>,
    /// Node-side failures among `runs`.
    node_side: usize,
}

/// Runs kept per probe and node for the degrade and pass checks.
const RECENT_KEPT: usize = 32;

impl Recent {
    fn push(&mut self, o: Outcome, duration_ms: f64) {
        self.runs.push_back((o, duration_ms));
        self.node_side += usize::from(Self::node_side(o));
        while self.runs.len() > RECENT_KEPT {
            if let Some((old, _)) = self.runs.pop_front() {
                self.node_side -= usize::from(Self::node_side(old));
            }
        }
    }

    fn node_side(o: Outcome) -> bool {
        matches!(o, Outcome::Unhealthy | Outcome::Timeout)
    }

    /// Does this probe show the node degrading: node-side failures or a slowdown among
    /// its newest runs?
    fn degrading(&self, p: &Policy) -> bool {
        let k = p.degrade_recent.min(self.runs.len());
        let split = self.runs.len() - k;
        let older = self.runs.iter().take(split);
        let newer = self.runs.iter().skip(split);
        let fails = newer.clone().filter(|(o, _)| Self::node_side(*o)).count();
        if k > 0 && fails >= p.degrade_min_failures {
            return true;
        }
        let mut base: Vec<f64> = older
            .filter(|(o, _)| *o == Outcome::Ok)
            .map(|(_, d)| *d)
            .collect();
        let recent: Vec<f64> = newer
            .filter(|(o, _)| *o == Outcome::Ok)
            .map(|(_, d)| *d)
            .collect();
        if base.len() < p.degrade_recent || recent.is_empty() {
            return false;
        }
        base.sort_by(f64::total_cmp);
        let median = base[base.len() / 2];
        let mean = recent.iter().sum::<f64>() / recent.len() as f64;
        median > 0.0 && mean >= p.degrade_slowdown * median
    }

    /// Does this probe pass on the node (few node-side failures)?
    fn passing(&self, p: &Policy) -> Option<bool> {
        let n = self.runs.len() as u64;
        if n < p.node_min_runs {
            return None;
        }
        Some(self.node_side as f64 / n as f64 <= p.node_passing_share)
    }
}

type ProbeKey = (String, String);

/// Everything tracked about one probe.
#[derive(Debug, Default)]
struct ProbeTrack {
    state: ProbeState,
    since_ms: Option<i64>,
    state_version: u32,
    /// The newest version seen: the one the windows are about.
    version: u32,
    nodes: BTreeMap<String, NodeWindow>,
    first_failure_ms: Option<i64>,
    examples: VecDeque<FailureExample>,
    evidence: Option<ReliabilityEvidence>,
    dirty: bool,
}

/// One client's probes and nodes: windows, attribution, states.
#[derive(Debug, Default)]
pub struct Tracker {
    policy: Policy,
    probes: HashMap<ProbeKey, ProbeTrack>,
    /// Per node, recent runs of each probe (all pools), for degrade and pass checks.
    nodes: HashMap<String, BTreeMap<ProbeKey, Recent>>,
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

/// The per-node numbers the cross-node rules look at.
#[derive(Debug)]
struct NodeFacts<'a> {
    node: &'a str,
    n: u64,
    node_charged: u64,
    probe_charged: u64,
    failures: u64,
    /// Do the node's other probes pass there (`None`: no other probe with enough runs)?
    others_pass: Option<bool>,
}

impl Tracker {
    /// An empty tracker with `policy`.
    pub fn new(policy: Policy) -> Self {
        Tracker {
            policy,
            probes: HashMap::new(),
            nodes: HashMap::new(),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Sets a probe's state as stored before a restart (before or after replaying
    /// samples: the windows are kept).
    pub fn restore(&mut self, pool: &str, probe: &str, p: Persisted) {
        let t = self
            .probes
            .entry((pool.to_string(), probe.to_string()))
            .or_default();
        t.state = p.state;
        t.since_ms = p.since_ms;
        t.state_version = p.version;
        t.version = t.version.max(p.version);
        t.dirty = true;
    }

    /// Forgets a probe (deleted).
    pub fn forget(&mut self, pool: &str, probe: &str) {
        let key = (pool.to_string(), probe.to_string());
        self.probes.remove(&key);
        for per in self.nodes.values_mut() {
            per.remove(&key);
        }
    }

    /// Whether the node's probes other than `key` show it degrading.
    fn node_degrading(&self, node: &str, key: &ProbeKey) -> bool {
        self.nodes.get(node).is_some_and(|per| {
            per.iter()
                .any(|(k, r)| k != key && r.degrading(&self.policy))
        })
    }

    /// Whether the node's other client probes (not the node sampler) pass there.
    fn others_pass(&self, node: &str, key: &ProbeKey) -> Option<bool> {
        let per = self.nodes.get(node)?;
        let mut verdict = None;
        for (k, r) in per {
            if k == key || k.1 == NODE_SAMPLER_PROBE {
                continue;
            }
            match r.passing(&self.policy) {
                Some(false) => return Some(false),
                Some(true) => verdict = Some(true),
                None => {}
            }
        }
        verdict
    }

    /// Records one run. Runs of a version older than the newest seen only inform the
    /// node's health; a newer version starts fresh windows.
    pub fn observe(&mut self, o: &Observation<'_>) {
        let key = (o.pool.to_string(), o.probe.to_string());
        // Attribute before this run joins the node's recent runs.
        let charge = match o.outcome.blame() {
            Blame::None => Charge::None,
            Blame::Node => Charge::Node,
            Blame::Probe => Charge::Probe,
            Blame::Depends => {
                if self.node_degrading(o.node, &key) {
                    Charge::Node
                } else {
                    Charge::Probe
                }
            }
        };
        self.nodes
            .entry(o.node.to_string())
            .or_default()
            .entry(key.clone())
            .or_default()
            .push(o.outcome, o.duration_ms);
        if o.probe == NODE_SAMPLER_PROBE {
            return;
        }
        let p = &self.policy;
        let t = self.probes.entry(key).or_default();
        if o.version < t.version {
            return;
        }
        if o.version > t.version {
            t.version = o.version;
            t.nodes.clear();
            t.first_failure_ms = None;
            t.examples.clear();
        }
        t.dirty = true;
        let w = t.nodes.entry(o.node.to_string()).or_default();
        w.prune(o.taken_at_ms.saturating_sub(p.window_ms));
        w.push(
            Run {
                at_ms: o.taken_at_ms,
                outcome: o.outcome,
                charge,
            },
            p,
        );
        if o.outcome != Outcome::Ok {
            if charge == Charge::Probe {
                t.first_failure_ms = Some(
                    t.first_failure_ms
                        .map_or(o.taken_at_ms, |f| f.min(o.taken_at_ms)),
                );
            }
            let msg = truncate(o.message, p.max_message);
            t.examples
                .retain(|e| !(e.outcome == o.outcome && e.message == msg));
            t.examples.push_back(FailureExample {
                node: o.node.to_string(),
                outcome: o.outcome,
                taken_at_ms: o.taken_at_ms,
                message: msg,
                stderr: tail(o.stderr, p.max_stderr),
            });
            while t.examples.len() > p.max_examples {
                t.examples.pop_front();
            }
        }
    }

    /// Re-evaluates every probe with new runs (or restored state); answers the
    /// transitions, in a stable order.
    pub fn evaluate(&mut self, now_ms: i64) -> Vec<Transition> {
        let mut keys: Vec<ProbeKey> = self
            .probes
            .iter()
            .filter(|(_, t)| t.dirty)
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        let mut out = Vec::new();
        for key in keys {
            if let Some(tr) = self.evaluate_one(&key, now_ms) {
                out.push(tr);
            }
        }
        out
    }

    fn evaluate_one(&mut self, key: &ProbeKey, now_ms: i64) -> Option<Transition> {
        let oldest = now_ms.saturating_sub(self.policy.window_ms);
        {
            let t = self.probes.get_mut(key)?;
            t.dirty = false;
            for w in t.nodes.values_mut() {
                w.prune(oldest);
            }
            t.nodes.retain(|_, w| w.n() > 0);
        }
        let p = &self.policy;
        let t = self.probes.get(key)?;
        let facts: Vec<NodeFacts<'_>> = t
            .nodes
            .iter()
            .map(|(node, w)| {
                // Only a node failing node-side needs the other probes' verdict.
                let failing =
                    w.n() > 0 && w.node_charged as f64 / w.n() as f64 >= p.node_failing_share;
                NodeFacts {
                    node: node.as_str(),
                    n: w.n(),
                    node_charged: w.node_charged,
                    probe_charged: w.probe_charged,
                    failures: w.failures(),
                    others_pass: if failing {
                        self.others_pass(node, key)
                    } else {
                        None
                    },
                }
            })
            .collect();
        let ev = evidence(p, t, &facts);
        let i = Interval {
            p: ev.failure_rate,
            lo: ev.failure_rate_lo,
            hi: ev.failure_rate_hi,
        };
        let from = t.state;
        let from_version = t.state_version;
        let to = next_state(p, from, ev.runs, i);
        // Still `needs_update`, but a newer version is broken too: a new prompt.
        let version_moved = to == ProbeState::NeedsUpdate
            && from == ProbeState::NeedsUpdate
            && t.version > from_version
            && is_broken(p, ev.runs, i);
        let t = self.probes.get_mut(key)?;
        t.evidence = Some(ev.clone());
        if to == from && !version_moved {
            if to != ProbeState::NeedsUpdate {
                t.state_version = t.version;
            }
            return None;
        }
        t.state = to;
        t.since_ms = Some(now_ms);
        t.state_version = t.version;
        Some(Transition {
            pool: key.0.clone(),
            probe: key.1.clone(),
            from,
            from_version,
            to,
            version: t.version,
            at_ms: now_ms,
            evidence: ev,
        })
    }

    /// Whether the probe is in `needs_update` (its samples excluded from forecasts and
    /// routing).
    pub fn excluded(&self, pool: &str, probe: &str) -> bool {
        self.probes
            .get(&(pool.to_string(), probe.to_string()))
            .is_some_and(|t| t.state == ProbeState::NeedsUpdate)
    }

    /// The probe's reliability view (`None` if never seen nor restored).
    pub fn reliability(&self, pool: &str, probe: &str) -> Option<ProbeReliability> {
        let t = self.probes.get(&(pool.to_string(), probe.to_string()))?;
        Some(ProbeReliability {
            state: t.state,
            since_ms: t.since_ms,
            excluded: t.state == ProbeState::NeedsUpdate,
            version: t.version,
            evidence: t.evidence.clone(),
        })
    }

    /// Every tracked probe `(pool, probe, reliability)`, sorted.
    pub fn all(&self) -> Vec<(String, String, ProbeReliability)> {
        let mut v: Vec<_> = self
            .probes
            .keys()
            .filter_map(|(pool, probe)| {
                self.reliability(pool, probe)
                    .map(|r| (pool.clone(), probe.clone(), r))
            })
            .collect();
        v.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        v
    }
}

/// Whether the interval over `n` runs shows the probe broken.
fn is_broken(p: &Policy, n: u64, i: Interval) -> bool {
    n >= p.min_runs && i.lo > p.needs_update_lo
}

/// The next state from `cur` given the probe's failure-share interval over `n` runs of
/// its newest version. Entering a worse state needs the interval's lower end above a
/// threshold, leaving it the upper end below a lower one: no flapping in between.
fn next_state(p: &Policy, cur: ProbeState, n: u64, i: Interval) -> ProbeState {
    let broken = is_broken(p, n, i);
    match cur {
        ProbeState::Reliable => {
            if broken {
                ProbeState::NeedsUpdate
            } else if n >= p.min_runs && i.lo > p.flaky_enter_lo {
                ProbeState::Flaky
            } else {
                ProbeState::Reliable
            }
        }
        ProbeState::Flaky => {
            if broken {
                ProbeState::NeedsUpdate
            } else if i.hi < p.flaky_exit_hi {
                ProbeState::Reliable
            } else {
                ProbeState::Flaky
            }
        }
        ProbeState::NeedsUpdate => {
            if n >= p.resolve_min_runs && i.hi < p.resolve_hi {
                ProbeState::Reliable
            } else {
                ProbeState::NeedsUpdate
            }
        }
    }
}

/// Applies the cross-node rules and builds the evidence of the probe's current version.
fn evidence(p: &Policy, t: &ProbeTrack, facts: &[NodeFacts]) -> ReliabilityEvidence {
    let eligible: Vec<&NodeFacts> = facts.iter().filter(|f| f.n >= p.node_min_runs).collect();
    let share = |k: u64, n: u64| if n == 0 { 0.0 } else { k as f64 / n as f64 };
    // Rule A: node-side failures on most nodes while the other probes there pass: the
    // probe's fault (e.g. it calls an endpoint that changed shape and says `unhealthy`).
    let node_side_failing: BTreeSet<&str> = eligible
        .iter()
        .filter(|f| {
            share(f.node_charged, f.n) >= p.node_failing_share && f.others_pass == Some(true)
        })
        .map(|f| f.node)
        .collect();
    let rule_a = node_side_failing.len() >= 2 && node_side_failing.len() * 2 > eligible.len();
    // Rule B: probe-side failures on few nodes while it passes on the others: those
    // nodes' fault (e.g. a node answers garbage that the probe cannot parse).
    let probe_side_failing: BTreeSet<&str> = eligible
        .iter()
        .filter(|f| share(f.probe_charged, f.n) >= p.node_failing_share)
        .map(|f| f.node)
        .collect();
    let passing = eligible
        .iter()
        .filter(|f| share(f.failures, f.n) <= p.node_passing_share)
        .count();
    let rule_b = !probe_side_failing.is_empty()
        && passing >= 2
        && probe_side_failing.len() * 3 <= eligible.len();

    let mut runs = 0;
    let mut probe_failures = 0;
    let mut node_failures = 0;
    let mut affected = Vec::new();
    let mut outcomes = BTreeMap::new();
    for f in facts {
        runs += f.n;
        let (mut pf, mut nf) = (f.probe_charged, f.node_charged);
        if rule_a && node_side_failing.contains(f.node) {
            pf += nf;
            nf = 0;
        }
        if rule_b && probe_side_failing.contains(f.node) {
            nf += pf;
            pf = 0;
        }
        if pf > 0 {
            affected.push(f.node.to_string());
        }
        probe_failures += pf;
        node_failures += nf;
    }
    for w in t.nodes.values() {
        for (i, o) in Outcome::ALL.iter().enumerate() {
            if w.by_outcome[i] > 0 {
                *outcomes.entry(o.as_str().to_string()).or_insert(0) += w.by_outcome[i];
            }
        }
    }
    let i = wilson(probe_failures, runs, p.z);
    let mut reason = format!(
        "{probe_failures} of {runs} runs of version {} failed by the probe's fault on {} of {} nodes; {node_failures} failures count against nodes",
        t.version,
        affected.len(),
        facts.len()
    );
    if rule_a {
        reason.push_str(&format!(
            "; `unhealthy`/`timeout` on {} of {} nodes while the other probes there pass: the probe's fault",
            node_side_failing.len(),
            eligible.len()
        ));
    }
    if rule_b {
        reason.push_str(&format!(
            "; failing on {} node(s) ({}) while passing on {passing}: those nodes' fault",
            probe_side_failing.len(),
            probe_side_failing
                .iter()
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    ReliabilityEvidence {
        version: t.version,
        runs,
        probe_failures,
        node_failures,
        outcomes,
        failure_rate: i.p,
        failure_rate_lo: i.lo,
        failure_rate_hi: i.hi,
        nodes_affected: affected,
        nodes_seen: facts.len() as u64,
        failing_since_ms: t.first_failure_ms,
        examples: t.examples.iter().cloned().collect(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000;

    struct Feed {
        tr: Tracker,
        now: i64,
    }

    impl Feed {
        fn new() -> Self {
            Feed {
                tr: Tracker::new(Policy::default()),
                now: T0,
            }
        }

        /// One run, then an evaluation; answers the transitions.
        fn run(
            &mut self,
            node: &str,
            probe: &str,
            version: u32,
            outcome: Outcome,
        ) -> Vec<Transition> {
            self.run_with(node, probe, version, outcome, 5.0, "")
        }

        fn run_with(
            &mut self,
            node: &str,
            probe: &str,
            version: u32,
            outcome: Outcome,
            duration_ms: f64,
            message: &str,
        ) -> Vec<Transition> {
            self.now += 100;
            self.tr.observe(&Observation {
                node,
                pool: "web",
                probe,
                version,
                outcome,
                taken_at_ms: self.now,
                duration_ms,
                message,
                stderr: "",
            });
            self.tr.evaluate(self.now)
        }

        fn state(&self, probe: &str) -> ProbeState {
            self.tr
                .reliability("web", probe)
                .map(|r| r.state)
                .unwrap_or_default()
        }
    }

    const NODES: [&str; 3] = ["n1", "n2", "n3"];

    #[test]
    fn a_version_that_panics_everywhere_needs_an_update_after_four_runs_once() {
        let mut f = Feed::new();
        for _ in 0..10 {
            for n in NODES {
                assert!(f.run(n, "p", 1, Outcome::Ok).is_empty());
            }
        }
        let mut transitions = Vec::new();
        let mut at_run = None;
        for i in 1..=60 {
            let n = NODES[i % 3];
            let t = f.run_with(n, "p", 2, Outcome::Trap, 1.0, "panicked at src/lib.rs:3");
            if !t.is_empty() && at_run.is_none() {
                at_run = Some(i);
            }
            transitions.extend(t);
        }
        // Wilson lower end of 4/4 at z=1.96 is 0.5101 > 0.5; of 3/3 it is 0.4385.
        assert_eq!(at_run, Some(4));
        assert_eq!(transitions.len(), 1, "{transitions:?}");
        let t = &transitions[0];
        assert_eq!(
            (t.from, t.to, t.version),
            (ProbeState::Reliable, ProbeState::NeedsUpdate, 2)
        );
        assert_eq!(t.evidence.runs, 4);
        assert_eq!(t.evidence.probe_failures, 4);
        assert_eq!(t.evidence.outcomes.get("trap"), Some(&4));
        assert_eq!(t.evidence.nodes_affected, vec!["n1", "n2", "n3"]);
        assert_eq!(t.evidence.failing_since_ms, Some(T0 + 3100));
        assert_eq!(
            t.evidence.examples.len(),
            1,
            "identical failures are kept once"
        );
        assert_eq!(t.evidence.examples[0].message, "panicked at src/lib.rs:3");
        assert!(f.tr.excluded("web", "p"));
    }

    #[test]
    fn unhealthy_on_one_node_counts_against_that_node() {
        let mut f = Feed::new();
        let mut transitions = Vec::new();
        for _ in 0..50 {
            for n in NODES {
                transitions.extend(f.run(n, "other", 1, Outcome::Ok));
                let o = if n == "n2" {
                    Outcome::Unhealthy
                } else {
                    Outcome::Ok
                };
                transitions.extend(f.run(n, "p", 1, o));
            }
        }
        assert!(transitions.is_empty(), "{transitions:?}");
        assert_eq!(f.state("p"), ProbeState::Reliable);
        let ev =
            f.tr.reliability("web", "p")
                .and_then(|r| r.evidence)
                .expect("evidence");
        assert_eq!(ev.probe_failures, 0);
        assert_eq!(ev.node_failures, 50);
        assert_eq!(ev.runs, 150);
        assert!(!f.tr.excluded("web", "p"));
    }

    #[test]
    fn unhealthy_on_most_nodes_while_other_probes_pass_is_the_probes_fault() {
        let mut f = Feed::new();
        let mut transitions = Vec::new();
        for _ in 0..6 {
            for n in NODES {
                transitions.extend(f.run(n, "other", 1, Outcome::Ok));
                transitions.extend(f.run(n, "p", 1, Outcome::Unhealthy));
            }
        }
        assert_eq!(f.state("p"), ProbeState::NeedsUpdate, "{transitions:?}");
        assert_eq!(f.state("other"), ProbeState::Reliable);
        let ev = &transitions.last().expect("a transition").evidence;
        assert!(ev.reason.contains("the probe's fault"), "{}", ev.reason);
        // Without another probe to compare with, `unhealthy` stays the nodes' fault.
        let mut g = Feed::new();
        for _ in 0..6 {
            for n in NODES {
                assert!(g.run(n, "p", 1, Outcome::Unhealthy).is_empty());
            }
        }
        assert_eq!(g.state("p"), ProbeState::Reliable);
    }

    #[test]
    fn a_probe_failing_on_one_node_while_passing_elsewhere_blames_that_node() {
        let mut f = Feed::new();
        let nodes = ["n1", "n2", "n3", "n4"];
        let mut transitions = Vec::new();
        for _ in 0..30 {
            for n in nodes {
                let o = if n == "n4" {
                    Outcome::Trap
                } else {
                    Outcome::Ok
                };
                transitions.extend(f.run(n, "p", 1, o));
            }
        }
        // Before n4 has node_min_runs runs, 1 trap in 4 may make it look flaky; once the
        // rule applies, the traps count against n4 and the probe ends reliable.
        assert_eq!(f.state("p"), ProbeState::Reliable, "{transitions:?}");
        let ev =
            f.tr.reliability("web", "p")
                .and_then(|r| r.evidence)
                .expect("evidence");
        assert_eq!(ev.probe_failures, 0);
        assert_eq!(ev.node_failures, 30);
        assert!(ev.reason.contains("n4"), "{}", ev.reason);
    }

    #[test]
    fn timeout_counts_against_the_node_only_when_its_other_probes_degrade() {
        // Node n1's other probe times out too: n1 is slow, the timeouts are n1's.
        let mut f = Feed::new();
        for _ in 0..4 {
            f.run("n1", "other", 1, Outcome::Ok);
        }
        f.run("n1", "other", 1, Outcome::Timeout);
        f.run("n1", "other", 1, Outcome::Unhealthy);
        f.run("n1", "p", 1, Outcome::Timeout);
        let ev =
            f.tr.reliability("web", "p")
                .and_then(|r| r.evidence)
                .expect("evidence");
        assert_eq!((ev.node_failures, ev.probe_failures), (1, 0));
        // Node n2's other probe is fine: the timeout is the probe's.
        for _ in 0..6 {
            f.run("n2", "other", 1, Outcome::Ok);
        }
        f.run("n2", "p", 1, Outcome::Timeout);
        let ev =
            f.tr.reliability("web", "p")
                .and_then(|r| r.evidence)
                .expect("evidence");
        assert_eq!((ev.node_failures, ev.probe_failures), (1, 1));
        // Node n3's other probe slows down threefold without failing: n3 degrades.
        for _ in 0..10 {
            f.run_with("n3", "other", 1, Outcome::Ok, 10.0, "");
        }
        for _ in 0..5 {
            f.run_with("n3", "other", 1, Outcome::Ok, 30.0, "");
        }
        f.run("n3", "p", 1, Outcome::Timeout);
        let ev =
            f.tr.reliability("web", "p")
                .and_then(|r| r.evidence)
                .expect("evidence");
        assert_eq!((ev.node_failures, ev.probe_failures), (2, 1));
    }

    /// A probe failing (by its own fault) once every `every` runs, across three nodes.
    fn low_rate(every: usize, rounds: usize) -> (Feed, Vec<Transition>) {
        let mut f = Feed::new();
        let mut transitions = Vec::new();
        let mut i = 0;
        for _ in 0..rounds {
            for n in NODES {
                i += 1;
                let o = if i % every == 0 {
                    Outcome::Broken
                } else {
                    Outcome::Ok
                };
                transitions.extend(f.run(n, "p", 1, o));
            }
        }
        (f, transitions)
    }

    #[test]
    fn a_low_failure_rate_does_not_flap() {
        // 1 in 25 (4 %): never leaves reliable.
        let (f, t) = low_rate(25, 200);
        assert!(t.is_empty(), "{t:?}");
        assert_eq!(f.state("p"), ProbeState::Reliable);
        // 1 in 7 (14 %): flaky once, and stays there.
        let (f, t) = low_rate(7, 200);
        assert_eq!(t.len(), 1, "{t:?}");
        assert_eq!(t[0].to, ProbeState::Flaky);
        assert_eq!(f.state("p"), ProbeState::Flaky);
        // 1 in 10 (10 %), between the thresholds: at most one change in 600 runs.
        let (_, t) = low_rate(10, 200);
        assert!(t.len() <= 1, "{t:?}");
    }

    #[test]
    fn a_fixed_version_resolves_after_twelve_reliable_runs() {
        let mut f = Feed::new();
        for i in 0..6 {
            f.run(NODES[i % 3], "p", 2, Outcome::Trap);
        }
        assert_eq!(f.state("p"), ProbeState::NeedsUpdate);
        let mut resolved_at = None;
        for i in 1..=30 {
            let t = f.run(NODES[i % 3], "p", 3, Outcome::Ok);
            if let Some(t) = t.first() {
                assert!(resolved_at.is_none(), "resolved twice");
                assert_eq!(
                    (t.from, t.to, t.version, t.from_version),
                    (ProbeState::NeedsUpdate, ProbeState::Reliable, 3, 2)
                );
                assert_eq!(t.evidence.runs, 12);
                resolved_at = Some(i);
            }
        }
        // Upper end of 0/12 at z=1.96 is 0.2425 < 0.25; of 0/11 it is 0.2589.
        assert_eq!(resolved_at, Some(12));
        assert!(!f.tr.excluded("web", "p"));
        // Late samples of the broken version change nothing.
        assert!(f.run("n1", "p", 2, Outcome::Trap).is_empty());
        assert_eq!(f.state("p"), ProbeState::Reliable);
    }

    #[test]
    fn a_newer_version_broken_too_is_prompted_once_more() {
        let mut f = Feed::new();
        let mut all = Vec::new();
        for i in 0..10 {
            all.extend(f.run(NODES[i % 3], "p", 2, Outcome::Trap));
        }
        for i in 0..10 {
            all.extend(f.run(NODES[i % 3], "p", 3, Outcome::Broken));
        }
        let v: Vec<_> = all
            .iter()
            .map(|t| (t.from, t.to, t.from_version, t.version))
            .collect();
        assert_eq!(
            v,
            vec![
                (ProbeState::Reliable, ProbeState::NeedsUpdate, 2, 2),
                (ProbeState::NeedsUpdate, ProbeState::NeedsUpdate, 2, 3),
            ]
        );
    }

    #[test]
    fn a_restored_state_is_not_announced_again_on_replay() {
        let mut f = Feed::new();
        f.tr.restore(
            "web",
            "p",
            Persisted {
                state: ProbeState::NeedsUpdate,
                since_ms: Some(T0),
                version: 2,
            },
        );
        for i in 0..9 {
            let n = NODES[i % 3];
            f.now += 100;
            f.tr.observe(&Observation {
                node: n,
                pool: "web",
                probe: "p",
                version: 2,
                outcome: Outcome::Trap,
                taken_at_ms: f.now,
                duration_ms: 1.0,
                message: "boom",
                stderr: "",
            });
        }
        assert!(f.tr.evaluate(f.now).is_empty());
        assert_eq!(f.state("p"), ProbeState::NeedsUpdate);
        assert_eq!(
            f.tr.reliability("web", "p").map(|r| r.since_ms),
            Some(Some(T0))
        );
    }

    #[test]
    fn old_runs_leave_the_window() {
        let mut f = Feed::new();
        for i in 0..6 {
            f.run(NODES[i % 3], "p", 1, Outcome::Ok);
        }
        f.now += Policy::default().window_ms + 1;
        f.run("n1", "p", 1, Outcome::Ok);
        let ev =
            f.tr.reliability("web", "p")
                .and_then(|r| r.evidence)
                .expect("evidence");
        assert_eq!(ev.runs, 1);
        assert_eq!(ev.nodes_seen, 1);
    }

    #[test]
    fn examples_are_truncated_on_char_boundaries() {
        let mut f = Feed::new();
        let long = "é".repeat(1000);
        f.now += 1;
        f.tr.observe(&Observation {
            node: "n1",
            pool: "web",
            probe: "p",
            version: 1,
            outcome: Outcome::Broken,
            taken_at_ms: f.now,
            duration_ms: 1.0,
            message: &long,
            stderr: &long,
        });
        f.tr.evaluate(f.now);
        let ev =
            f.tr.reliability("web", "p")
                .and_then(|r| r.evidence)
                .expect("evidence");
        let e = &ev.examples[0];
        assert!(e.message.len() <= 512 + 3 && e.message.ends_with('…'));
        assert!(e.stderr.len() <= 1024 + 3 && e.stderr.starts_with('…'));
    }

    #[test]
    fn the_node_sampler_is_not_a_probe() {
        let mut f = Feed::new();
        for _ in 0..10 {
            f.run("n1", NODE_SAMPLER_PROBE, 0, Outcome::Trap);
        }
        assert!(f.tr.reliability("web", NODE_SAMPLER_PROBE).is_none());
    }
}
