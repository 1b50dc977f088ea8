//! The policy trait, the request and decision types, the reasons in words, and the
//! [`PolicyKind`] names that pools use to select a policy; one module per policy below.
use std::fmt::{self, Write as _};
use std::str::FromStr;

use plb_api::NodeState;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::RoutingError;
use crate::snapshot::Snapshot;

pub mod least_conn;
pub mod least_request;
pub mod peak_ewma;
pub mod plb;
pub mod prequal;
pub mod round_robin;

pub use least_conn::LeastConn;
pub use least_request::LeastRequest;
pub use peak_ewma::PeakEwmaP2c;
pub use plb::Plb;
pub use prequal::Prequal;
pub use round_robin::RoundRobin;

/// One request to route.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RouteRequest<'a> {
    /// Locality key (a user, a shard, a cache key): same key, same node while it has room.
    pub key: Option<&'a str>,
    /// Request size in bytes (0 if unknown); adds `size / size_unit` to the work.
    pub size: f64,
    /// Relative cost, 1 = a typical request.
    pub cost: f64,
}

impl Default for RouteRequest<'_> {
    fn default() -> Self {
        RouteRequest {
            key: None,
            size: 0.0,
            cost: 1.0,
        }
    }
}

impl<'a> RouteRequest<'a> {
    /// A typical request with a locality key.
    pub fn with_key(key: &'a str) -> Self {
        RouteRequest {
            key: Some(key),
            ..RouteRequest::default()
        }
    }

    /// The request's work in typical-request units (at least 0.01); non-finite or
    /// negative inputs count as a typical request.
    pub fn work(&self, size_unit: f64) -> f64 {
        let cost = if self.cost.is_finite() && self.cost > 0.0 {
            self.cost
        } else {
            1.0
        };
        let size = if self.size.is_finite() && self.size > 0.0 && size_unit > 0.0 {
            self.size / size_unit
        } else {
            0.0
        };
        (cost + size).max(0.01)
    }
}

/// Tunables of the policies (the `plb` weights come from [`crate::Shaping`] at build).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Latency assumed for a node with no response yet, seconds (`peak-ewma`, `prequal`;
    /// linkerd uses a configurable default in the same way).
    pub default_rtt: f64,
    /// Nodes sampled per decision by `prequal` (its probe pool).
    pub prequal_probes: usize,
    /// `prequal`: a node is hot when its requests in flight exceed this quantile of the
    /// probed nodes' (the paper's Q_RIF, between 0.6 and 0.9).
    pub prequal_hot_quantile: f64,
    /// `plb` keyed routing: a key's owner keeps it while its in-flight count stays
    /// within (1 + epsilon) × its weighted share of the pool's.
    pub key_epsilon: f64,
    /// `plb` keyed routing: how many nodes in rendezvous order may take a key before
    /// the request falls back to the unkeyed choice.
    pub key_candidates: usize,
    /// `plb`: the cost is multiplied by `exp(error_penalty × recent error rate)` (with 20:
    /// 1 % errors ×1.2, 10 % ×7.4, 50 % ×22,000), so a node that fails fast does not
    /// attract traffic by its low latency: a failed request is worse than a slow one.
    pub error_penalty: f64,
    /// Bytes that count as one typical request of work.
    pub size_unit: f64,
    /// `plb`: pools with at most this many eligible nodes pick the lowest cost over
    /// every node instead of two weighted draws (a full scan is O(n) per decision; in
    /// small pools it finds the one free node that two samples miss).
    pub full_scan_max: usize,
    /// `plb` full scan: the cost is `latency^scan_latency_exp × (in flight + work) /
    /// weight` (latency taken relative to the pool's latency floor, which orders the
    /// nodes the same way); 1 weighs latency as peak-EWMA does, 0 leaves load and
    /// weight alone.
    pub scan_latency_exp: f64,
    /// `plb` full scan: latencies below this quantile of the scanned nodes' latencies
    /// count as that quantile (0 turns it off; 0.5: the median). A node slower than
    /// the pool is avoided as before; one faster than the pool's middle is not
    /// preferred over an idle peer for it. On identical nodes the peak-EWMA latencies
    /// differ by noise alone, and a cost that rewards the lowest of them sends requests
    /// behind a busy node's queue while an idle peer waits.
    pub scan_latency_floor: f64,
    /// `plb` full scan: the least fraction of its full weight a shed node's cost is
    /// divided by (so a shed node costs at most `1 / scan_weight_floor` times an
    /// unshed one at the same latency and load). Shedding moves traffic while the
    /// pool has room elsewhere; once every other node has that many requests queued, a
    /// shed node takes its turn, so that shedding several nodes at once (a pool-wide
    /// slow-down, a flap of the probes) cannot idle capacity the pool needs and turn
    /// an overload into a cascade. A node that is really gone is kept out by its
    /// latency, its errors and its state, not by this weight. 0 turns it off. At 0.4 a
    /// shed node costs at most 2.5 times its cost unshed, on top of its own latency
    /// (at 0.25, the per-second timeline of fluctuating-slow showed the pool losing
    /// its requests in the seconds it ran near capacity, where least-connections uses
    /// every node; `bench/RESULTS.md`).
    pub scan_weight_floor: f64,
    /// `plb` full scan: how busy the unshed nodes must be for a shed node's weight to
    /// stop counting. With `b` the fewest requests in flight on any node at (nearly)
    /// full weight (health factor 0.95 or more), the weight floor rises linearly from
    /// `scan_weight_floor` to 1 as `b` goes from 0 to this, for the nodes that
    /// `scan_busy_release_within` lets through (infinite: off). A node shed in a slow
    /// spell that has since become fast again is then costed by its own latency and
    /// load once the rest of the pool queues, instead of idling capacity the pool
    /// needs. Ungated at 4 it won fluctuating-slow live (ten repetitions: 2849
    /// SLO-breaking requests against HAProxy leastconn's 2924, where a fixed floor gave
    /// 3463 against 3282) but lost rolling restarts (six repetitions: 541 against 570,
    /// fixed 451 against 578; `bench/RESULTS.md`, run I).
    pub scan_busy_release: f64,
    /// `plb` full scan: `scan_busy_release` lifts the floor only for a node whose own
    /// latency is at most this multiple of the scanned nodes' median (infinite: for
    /// every node). A node still slow, or back cold from a restart, stays shed. At 1.2
    /// with the release at 4, live: rolling restarts 0.80x HAProxy leastconn over six
    /// repetitions (ungated 0.95x, a fixed floor 0.78x), fluctuating-slow 0.84x over
    /// ten. Its two full runs (`bench/RESULTS.md`, runs J and K) differed from each
    /// other more than from the fixed floor's (run F).
    pub scan_busy_release_within: f64,
    /// `plb` full scan: a node in slow start takes part in a share of the scans (its
    /// ramp against the pool's highest) and, while it is still cold (no answer since
    /// it came back, or a latency above 1.2 × the pool's median), its weight counts
    /// `share^slow_start_cost_exp` of its full weight when it does. A node that has
    /// just come back is often slow (caches, JIT, pools to refill): its first
    /// requests should go to it when the warm nodes are queued, not whenever it is
    /// idle. 0 lets it compete at full weight whenever it takes part.
    pub slow_start_cost_exp: f64,
    /// `plb` full scan: a node in slow start that is warm again (it has answered since
    /// it came back, within 1.2 × the pool's median latency) and has been back this
    /// many seconds takes part in every scan rather than its ramp's share of them
    /// (infinite: never, the ramp alone decides). With the ramp alone, a node that
    /// restarted and warmed within seconds sat out most scans for half a minute, and
    /// during rolling restarts two or three nodes at a time did, their peers queueing
    /// the requests they could serve. The wait is there because a node's first
    /// answers after its return say little: against its peers' peak-EWMA latencies,
    /// built from many answers, the largest of two or three fresh ones often looks
    /// warm while the process is still slow. Simulator, rolling restarts, 20 reps,
    /// mean (worst) SLO-breaking: never 586 (961), 0 s 318 (556), 1 s 292 (465), 2 s
    /// 276 (445), 3 s 304 (529); live in `bench/RESULTS.md`.
    pub slow_start_warm_after: f64,
    /// `plb` full scan: latency's exponent for a node in slow start, against the
    /// pool's latency floor (the median): such a node's latency counts as
    /// `floor × (latency / floor)^slow_start_latency_exp` instead of
    /// `floor × (latency / floor)^scan_latency_exp`, so at 0.5 a node back from a
    /// restart that answers four times as slowly as the pool costs twice, not four
    /// times. Slow start already keeps such a node's share down (the ramp, its cold
    /// weight); charging its first slow answers in full on top of that left its
    /// requests queued on its peers while it warmed up. Rolling restarts live, six
    /// repetitions in turns with the full exponent: 454 SLO-breaking requests against
    /// HAProxy leastconn's 577 (0.79x), the full exponent 502 against 581 (0.86x);
    /// with the health probe 0.73x against 0.91x. The simulator (20 repetitions)
    /// moves nothing else (`bench/RESULTS.md`, run L).
    pub slow_start_latency_exp: f64,
    /// `plb` full scan: a node whose mean latency ([`crate::live::MeanEwma`], its answers
    /// of the last few seconds) is more than this multiple of the median mean of the
    /// scanned nodes out of slow start counts a latency of at least that multiple of the
    /// latency floor (infinite: off; neither applied to a node in slow start, which has its
    /// own rules, nor counted in the median). Peak-EWMA follows a node's slowest recent
    /// answer, and how slow that is depends on how many answers there were: a node that
    /// routing already avoids answers rarely, so its peak sits near its typical answer,
    /// while its busy peers' peaks carry their outliers and their queueing. In leak then
    /// crash, a node at half speed showed the same peak-EWMA as its peers and took a
    /// request whenever they all had one in flight, a fifth of which broke the SLO. Its
    /// mean latency shows the slowdown (at half speed, about twice its peers'); on
    /// identical nodes the simulator saw no change. Simulator, one sidecar, 20 repetitions,
    /// mean SLO-breaking against the gate off: heterogeneous -23 %, long stall -24 %, two
    /// slow -12 %, stall -17 %, leak then crash -7 %, gradual -7 %, the rest within their
    /// noise (identical nodes +0.1 a repetition, SE 0.2); live in `bench/RESULTS.md`.
    pub scan_mean_gate: f64,
    /// `plb` full scan: out of slow start, a node's peak-EWMA latency counts at most
    /// this multiple of its mean latency ([`crate::live::MeanEwma`]) in its cost
    /// (infinite: off; the pool's latency floor and median are still read from the
    /// peaks). Peak-EWMA jumps to a node's slowest recent answer and takes seconds to
    /// come down: with lognormal service times one answer in a thousand is nearly five
    /// times the median, and such an outlier can price a healthy node out of the scans
    /// while its peers queue, until its peak comes down (3 s time constant). A node that
    /// really slows down raises its mean as well. Simulator, one sidecar, 20
    /// repetitions, SLO-breaking summed over every scenario but bursts: off 12102, cap
    /// 2 12042, 2.5 11789, 3 11576, 3.5 11996, 4 11939; at 3, leak then crash -3.9 a
    /// repetition (SE 0.8), identical nodes -0.7 (SE 0.2), no scenario worse beyond
    /// its noise; at 1.2-2, fluctuating-slow worse by 8-14 a repetition (the mean lags
    /// a node's turn to slow); live in `bench/RESULTS.md`.
    pub scan_peak_cap: f64,
    /// `plb` full scan: a node's mean latency, as the mean gate and the peak cap read
    /// it, fades toward zero with this time constant (seconds) while the node takes in
    /// no answer (infinite: never; the gate's median is of the unfaded means). A node
    /// the gate prices out gets no traffic, so nothing moves its mean: without the
    /// fade, a node whose few answers were slow (one cold first connection, 2.5 ms
    /// against its peers' 0.3 ms, in a proxy test on a loaded CI machine) is never tried
    /// again while its peers keep up. Simulator, one sidecar, 20 repetitions,
    /// SLO-breaking summed over every scenario but bursts: never 11576, 3 s 12227 (slow
    /// nodes tried again too soon: heterogeneous +5.2 a repetition, long stall +6.2),
    /// 10 s 11822, 30 s 11596 (every scenario within its noise: rolling restarts -3.0,
    /// SE 1.9; fluctuating-slow +3.6, SE 3.3), 100 s 11632.
    pub scan_mean_fade: f64,
    /// `plb` full scan: a node its clients gave up on (see
    /// [`crate::live::NodeLive::abandon_after`]) sits out the scans while it rests
    /// ([`crate::live::NodeLive::resting`]: 1, 2, then 4 s after each give-up in a
    /// row), and until it answers again its peak, which the give-up raised to the
    /// client's wait, is not capped by its mean (`scan_peak_cap` bounds one slow
    /// answer against the node's answers; a give-up is no answer). Without it a hung
    /// node was costed like a slow one: once the pipeline's evidence of it went stale
    /// (no answers, no feedback) it got its weight back, the cap held its give-ups at
    /// three times its last mean, and it took about one request a second, each lost
    /// to the client's timeout (leak then crash live: 14-22 timeouts a repetition
    /// through the proxy against HAProxy leastconn's 9-10).
    pub scan_give_ups: bool,
    /// `plb` full scan: requests a node in slow start may have in flight before its
    /// first answer since it came back (0: no limit). Until it answers, nothing says
    /// how cold it is, and an idle node wins every scan it takes part in. One at a
    /// time, its first answer comes back before the next is sent and from then on its
    /// latency prices it; a node that accepts and never answers holds one request, not
    /// a handful. (In rolling restarts live a node back at a third of its speed still
    /// took about six requests in its first second, a fifth of which broke the SLO:
    /// those come after its first answer, priced by slow start's rules.)
    pub slow_start_scouts: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            default_rtt: 0.03,
            prequal_probes: 8,
            prequal_hot_quantile: 0.75,
            key_epsilon: 0.25,
            key_candidates: 3,
            error_penalty: 20.0,
            size_unit: 1024.0 * 1024.0,
            full_scan_max: 32,
            scan_latency_exp: 1.0,
            scan_latency_floor: 0.5,
            scan_weight_floor: 0.4,
            scan_busy_release: 4.0,
            scan_busy_release_within: 1.2,
            slow_start_cost_exp: 0.5,
            slow_start_warm_after: 2.0,
            slow_start_latency_exp: 0.5,
            scan_mean_gate: 1.5,
            scan_peak_cap: 3.0,
            scan_mean_fade: 30.0,
            scan_give_ups: true,
            slow_start_scouts: 1,
        }
    }
}

/// What a node looked like when a decision was taken.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// Index in the snapshot.
    pub index: usize,
    /// Requests in flight.
    pub in_flight: u64,
    /// Peak-EWMA latency, seconds.
    pub latency: Option<f64>,
    /// Recent error rate.
    pub error_rate: f64,
    /// `plb` weight relative to the node's full weight (health × slow start), 0..=1.
    pub weight: f64,
    /// Forecast headroom fraction.
    pub headroom: Option<f64>,
}

impl Facts {
    /// Reads the node's facts at `now`.
    pub fn read(snap: &Snapshot, index: usize, now: f64) -> Self {
        let live = snap.live_at(index);
        Facts {
            index,
            in_flight: live.in_flight(),
            latency: live.latency(now),
            error_rate: live.error_rate(now),
            weight: snap.weight_fraction_at(index, now),
            headroom: snap.derived(index).headroom,
        }
    }
}

/// Why a `plb` key owner was passed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMiss {
    /// In flight above its bounded-load share.
    Loaded,
    /// No forecast headroom.
    NoHeadroom,
    /// Being shed (degrading, low headroom or unknown) and this key is among those moved.
    Shed,
    /// In slow start and this key is not yet among those it takes.
    SlowStart,
    /// Not eligible (unhealthy or drained).
    Ineligible,
}

impl KeyMiss {
    fn words(self) -> &'static str {
        match self {
            KeyMiss::Loaded => "over its bounded-load share",
            KeyMiss::NoHeadroom => "no forecast headroom",
            KeyMiss::Shed => "shedding keys while degrading",
            KeyMiss::SlowStart => "still in slow start",
            KeyMiss::Ineligible => "not eligible",
        }
    }
}

/// Keyed-routing details.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyNote {
    /// The key's first node in rendezvous order.
    pub owner: usize,
    /// Why the owner was passed over, if it was.
    pub owner_miss: Option<KeyMiss>,
    /// The chosen node's rank in rendezvous order (0 = the owner); `None` when every
    /// candidate was passed over and the unkeyed choice decided.
    pub rank: Option<usize>,
}

/// The rule that decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// Only one node could be chosen.
    Only,
    /// Next in rotation.
    RoundRobin,
    /// Won a power-of-two-choices comparison.
    PowerOfTwo {
        /// The other candidate.
        other: Facts,
    },
    /// Both weighted draws fell on this node.
    DrawnTwice,
    /// Drawn for the recovery floor of a shed node.
    RecoveryFloor,
    /// The lowest cost after scanning every eligible node (small pools).
    FullScan {
        /// Nodes scanned.
        scanned: usize,
    },
    /// Keyed: the key's owner, or the next node in rendezvous order.
    Key,
    /// Prequal: a cold node (in flight at or below the hot threshold) with the lowest
    /// latency among the probed.
    PrequalCold {
        /// Nodes probed.
        probed: usize,
        /// In-flight threshold above which a node is hot.
        threshold: u64,
    },
    /// Prequal: every probed node hot, this one with the fewest in flight.
    PrequalHot {
        /// Nodes probed.
        probed: usize,
        /// In-flight threshold above which a node is hot.
        threshold: u64,
    },
}

/// Why a node was chosen: structured, cheap to build on every request, and put into
/// words by [`Decision::explain`] only when someone reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reason {
    /// The deciding policy.
    pub policy: PolicyKind,
    /// The deciding rule.
    pub rule: Rule,
    /// The chosen node's facts.
    pub chosen: Facts,
    /// Keyed-routing details.
    pub key: Option<KeyNote>,
    /// Every node was unhealthy: the choice is best effort.
    pub best_effort: bool,
}

/// A route decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Index of the chosen node in the snapshot.
    pub index: usize,
    /// The policy's score for it, higher is better, in (0, 1].
    pub score: f64,
    /// Why.
    pub reason: Reason,
}

impl Decision {
    /// The reason in words, e.g. "node b: 62% forecast headroom, 3 in flight, 12.0 ms;
    /// power of two choices over a (degrading, weight 20%, 5 in flight, 40.0 ms)".
    pub fn explain(&self, snap: &Snapshot) -> String {
        let mut s = String::with_capacity(160);
        let r = &self.reason;
        if r.best_effort {
            let _ = write!(s, "every node is unhealthy, best effort: ");
        }
        describe(&mut s, snap, &r.chosen, true);
        s.push_str("; ");
        match &r.rule {
            Rule::Only => s.push_str("the only node that can take traffic"),
            Rule::RoundRobin => s.push_str("next in round-robin order"),
            Rule::PowerOfTwo { other } => {
                let _ = write!(s, "{} power of two choices over ", r.policy.as_str());
                describe(&mut s, snap, other, false);
            }
            Rule::DrawnTwice => s.push_str("drawn by both weighted choices"),
            Rule::FullScan { scanned } => {
                let _ = write!(s, "{} lowest cost of all {scanned} nodes", r.policy.as_str());
            }
            Rule::RecoveryFloor => s.push_str(
                "recovery floor: a shed node keeps a small share of traffic so its recovery is seen",
            ),
            Rule::Key => {}
            Rule::PrequalCold { probed, threshold } => {
                let _ = write!(
                    s,
                    "prequal: cold (at most {threshold} in flight) with the lowest latency of {probed} probed"
                );
            }
            Rule::PrequalHot { probed, threshold } => {
                let _ = write!(
                    s,
                    "prequal: all {probed} probed are hot (over {threshold} in flight), fewest in flight"
                );
            }
        }
        if let Some(k) = &r.key {
            if !matches!(r.rule, Rule::Key) {
                s.push_str("; ");
            }
            let owner = name(snap, k.owner);
            match (k.rank, k.owner_miss) {
                (Some(0), _) => s.push_str("owns the key (rendezvous hashing)"),
                (Some(rank), miss) => {
                    let _ = write!(
                        s,
                        "key moved from its owner {owner} ({}) to rank {rank} in rendezvous order",
                        miss.map_or("passed over", KeyMiss::words)
                    );
                }
                (None, miss) => {
                    let _ = write!(
                        s,
                        "key owner {owner} passed over ({}) and no other rendezvous candidate had room",
                        miss.map_or("passed over", KeyMiss::words)
                    );
                }
            }
        }
        s
    }
}

fn name(snap: &Snapshot, index: usize) -> &str {
    snap.node(index).map_or("?", |n| n.id.as_str())
}

fn describe(s: &mut String, snap: &Snapshot, f: &Facts, lead: bool) {
    let state = snap.node(f.index).map_or(NodeState::Unknown, |n| n.state);
    let _ = write!(
        s,
        "{}{}",
        if lead { "node " } else { "" },
        name(snap, f.index)
    );
    let _ = write!(s, " ({}", state.as_str());
    if f.weight < 0.995 {
        let _ = write!(s, ", weight {:.0}% of normal", f.weight * 100.0);
    }
    s.push(')');
    s.push(':');
    if let Some(h) = f.headroom {
        let _ = write!(s, " {:.0}% forecast headroom,", h * 100.0);
    }
    let _ = write!(s, " {} in flight", f.in_flight);
    if let Some(l) = f.latency {
        let _ = write!(s, ", {:.1} ms", l * 1000.0);
    }
    if f.error_rate >= 0.005 {
        let _ = write!(s, ", {:.0}% errors", f.error_rate * 100.0);
    }
}

/// A routing policy: pure, synchronous, and reading time only from `now`.
pub trait Policy {
    /// Its name.
    fn kind(&self) -> PolicyKind;

    /// Chooses a node for `req` at time `now` (seconds, caller's clock), or `None` if
    /// the snapshot is empty. Does not count the request in flight: the caller does
    /// that with the node's [`crate::NodeLive`] once it sends it.
    fn pick<R: Rng + ?Sized>(
        &self,
        snap: &Snapshot,
        req: &RouteRequest<'_>,
        now: f64,
        rng: &mut R,
    ) -> Option<Decision>;
}

/// The policies by name, as pools select them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyKind {
    /// Rotation over the nodes that are not unhealthy.
    RoundRobin,
    /// Power of two choices on requests in flight.
    LeastRequest,
    /// Fewest requests in flight over every node (HAProxy `leastconn`).
    LeastConn,
    /// Power of two choices on peak-EWMA latency × (in flight + 1).
    PeakEwma,
    /// Prequal's hot/cold rule on requests in flight and latency.
    Prequal,
    /// PLB's predictive policy.
    #[default]
    Plb,
}

impl PolicyKind {
    /// Every policy, baselines first.
    pub const ALL: [PolicyKind; 6] = [
        PolicyKind::RoundRobin,
        PolicyKind::LeastRequest,
        PolicyKind::LeastConn,
        PolicyKind::PeakEwma,
        PolicyKind::Prequal,
        PolicyKind::Plb,
    ];

    /// The name used in config and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::RoundRobin => "round-robin",
            PolicyKind::LeastRequest => "least-request",
            PolicyKind::LeastConn => "least-conn",
            PolicyKind::PeakEwma => "peak-ewma",
            PolicyKind::Prequal => "prequal",
            PolicyKind::Plb => "plb",
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PolicyKind {
    type Err = RoutingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PolicyKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| RoutingError::UnknownPolicy(s.to_owned()))
    }
}

/// Any policy, chosen at run time by [`PolicyKind`].
#[derive(Debug)]
pub enum AnyPolicy {
    /// `round-robin`.
    RoundRobin(RoundRobin),
    /// `least-request`.
    LeastRequest(LeastRequest),
    /// `least-conn`.
    LeastConn(LeastConn),
    /// `peak-ewma`.
    PeakEwma(PeakEwmaP2c),
    /// `prequal`.
    Prequal(Prequal),
    /// `plb`.
    Plb(Plb),
}

impl AnyPolicy {
    /// The policy `kind` with `config`.
    pub fn new(kind: PolicyKind, config: PolicyConfig) -> Self {
        match kind {
            PolicyKind::RoundRobin => AnyPolicy::RoundRobin(RoundRobin::new()),
            PolicyKind::LeastRequest => AnyPolicy::LeastRequest(LeastRequest::new()),
            PolicyKind::LeastConn => AnyPolicy::LeastConn(LeastConn::new()),
            PolicyKind::PeakEwma => AnyPolicy::PeakEwma(PeakEwmaP2c::new(config)),
            PolicyKind::Prequal => AnyPolicy::Prequal(Prequal::new(config)),
            PolicyKind::Plb => AnyPolicy::Plb(Plb::new(config)),
        }
    }
}

impl Policy for AnyPolicy {
    fn kind(&self) -> PolicyKind {
        match self {
            AnyPolicy::RoundRobin(p) => p.kind(),
            AnyPolicy::LeastRequest(p) => p.kind(),
            AnyPolicy::LeastConn(p) => p.kind(),
            AnyPolicy::PeakEwma(p) => p.kind(),
            AnyPolicy::Prequal(p) => p.kind(),
            AnyPolicy::Plb(p) => p.kind(),
        }
    }

    fn pick<R: Rng + ?Sized>(
        &self,
        snap: &Snapshot,
        req: &RouteRequest<'_>,
        now: f64,
        rng: &mut R,
    ) -> Option<Decision> {
        match self {
            AnyPolicy::RoundRobin(p) => p.pick(snap, req, now, rng),
            AnyPolicy::LeastRequest(p) => p.pick(snap, req, now, rng),
            AnyPolicy::LeastConn(p) => p.pick(snap, req, now, rng),
            AnyPolicy::PeakEwma(p) => p.pick(snap, req, now, rng),
            AnyPolicy::Prequal(p) => p.pick(snap, req, now, rng),
            AnyPolicy::Plb(p) => p.pick(snap, req, now, rng),
        }
    }
}

/// Two distinct positions in `0..n`, uniformly over unordered pairs (linkerd's
/// `gen_pair`); `None` when `n < 2`.
pub fn gen_pair<R: Rng + ?Sized>(n: usize, rng: &mut R) -> Option<(usize, usize)> {
    if n < 2 {
        return None;
    }
    let a = rng.random_range(0..n);
    let mut b = rng.random_range(0..n - 1);
    if b >= a {
        b += 1;
    }
    Some((a, b))
}

/// The candidate set of a baseline policy: the eligible nodes, or every node when none
/// is eligible (best effort). `None` for an empty snapshot.
pub(crate) fn candidates(snap: &Snapshot) -> Option<(Candidates<'_>, bool)> {
    if !snap.eligible().is_empty() {
        Some((Candidates::Some(snap.eligible()), false))
    } else if !snap.is_empty() {
        Some((Candidates::All(snap.len()), true))
    } else {
        None
    }
}

/// Positions mapping to node indices without allocating.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Candidates<'a> {
    Some(&'a [usize]),
    All(usize),
}

impl Candidates<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Candidates::Some(v) => v.len(),
            Candidates::All(n) => *n,
        }
    }

    pub(crate) fn get(&self, pos: usize) -> usize {
        match self {
            Candidates::Some(v) => v[pos],
            Candidates::All(_) => pos,
        }
    }
}

/// Power of two choices over `cands` on `cost` (lower wins; ties go to the first
/// draw), returning a finished decision.
pub(crate) fn p2c_on<R: Rng + ?Sized>(
    kind: PolicyKind,
    snap: &Snapshot,
    cands: Candidates<'_>,
    best_effort: bool,
    now: f64,
    rng: &mut R,
    cost: impl Fn(usize) -> f64,
) -> Decision {
    let Some((pa, pb)) = gen_pair(cands.len(), rng) else {
        let index = cands.get(0);
        return Decision {
            index,
            score: score_of(cost(index)),
            reason: Reason {
                policy: kind,
                rule: Rule::Only,
                chosen: Facts::read(snap, index, now),
                key: None,
                best_effort,
            },
        };
    };
    let (a, b) = (cands.get(pa), cands.get(pb));
    let (ca, cb) = (cost(a), cost(b));
    let (win, lose, c) = if cb < ca { (b, a, cb) } else { (a, b, ca) };
    Decision {
        index: win,
        score: score_of(c),
        reason: Reason {
            policy: kind,
            rule: Rule::PowerOfTwo {
                other: Facts::read(snap, lose, now),
            },
            chosen: Facts::read(snap, win, now),
            key: None,
            best_effort,
        },
    }
}

/// Maps a non-negative cost to a score in (0, 1], higher is better.
pub(crate) fn score_of(cost: f64) -> f64 {
    if cost.is_nan() {
        0.0
    } else if cost <= 0.0 {
        1.0
    } else {
        1.0 / (1.0 + cost)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;

    #[test]
    fn gen_pair_gives_distinct_uniform_pairs() {
        // Property-style: many sizes, many seeded draws; every pair distinct and in
        // range, and each index appears about 2/n of the time.
        for seed in 0..8u64 {
            let mut rng = SmallRng::seed_from_u64(seed);
            for n in [2usize, 3, 5, 10, 37] {
                let draws = 20_000 * n;
                let mut counts = vec![0usize; n];
                let mut pair_counts = vec![0usize; n * n];
                for _ in 0..draws {
                    let (a, b) = gen_pair(n, &mut rng).expect("n >= 2");
                    assert!(a < n && b < n && a != b, "n={n}: ({a},{b})");
                    counts[a] += 1;
                    counts[b] += 1;
                    pair_counts[a.min(b) * n + a.max(b)] += 1;
                }
                let want = 2.0 * draws as f64 / n as f64;
                for (i, &c) in counts.iter().enumerate() {
                    let dev = (c as f64 - want).abs() / want;
                    assert!(dev < 0.03, "seed {seed} n={n} index {i}: {c} vs {want}");
                }
                if n <= 10 {
                    let pairs = n * (n - 1) / 2;
                    let want_pair = draws as f64 / pairs as f64;
                    for a in 0..n {
                        for b in a + 1..n {
                            let c = pair_counts[a * n + b] as f64;
                            assert!((c - want_pair).abs() / want_pair < 0.1, "pair ({a},{b})");
                        }
                    }
                }
            }
        }
        let mut rng = SmallRng::seed_from_u64(1);
        assert_eq!(gen_pair(0, &mut rng), None);
        assert_eq!(gen_pair(1, &mut rng), None);
    }

    #[test]
    fn policy_kind_names_round_trip() {
        for k in PolicyKind::ALL {
            assert_eq!(k.as_str().parse::<PolicyKind>().expect("known"), k);
            let json = serde_json::to_string(&k).expect("serialises");
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            assert_eq!(
                serde_json::from_str::<PolicyKind>(&json).expect("parses"),
                k
            );
        }
        assert!(matches!(
            "random".parse::<PolicyKind>(),
            Err(RoutingError::UnknownPolicy(_))
        ));
        assert_eq!(PolicyKind::default(), PolicyKind::Plb);
    }

    #[test]
    fn request_work() {
        let r = RouteRequest {
            key: None,
            size: 2.0 * 1024.0 * 1024.0,
            cost: 1.5,
        };
        assert!((r.work(1024.0 * 1024.0) - 3.5).abs() < 1e-12);
        let bad = RouteRequest {
            key: None,
            size: f64::NAN,
            cost: -3.0,
        };
        assert_eq!(bad.work(1.0), 1.0);
    }

    #[test]
    fn score_is_in_unit_interval() {
        assert_eq!(score_of(0.0), 1.0);
        assert!(score_of(1.0) > score_of(2.0));
        assert_eq!(score_of(f64::INFINITY), 0.0);
        assert_eq!(score_of(f64::NAN), 0.0);
    }
}
