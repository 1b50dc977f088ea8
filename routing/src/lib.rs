//! PLB's routing: pure, synchronous policies that choose a node for each request from an
//! immutable [`Snapshot`] of node predictions plus lock-free per-node live state. No I/O
//! and no clock: time is the `now` argument (seconds on any clock), so the live balancer,
//! the reverse proxy and the discrete-event simulator run exactly this code.
//!
//! # Parts
//! - [`snapshot`]: [`NodeView`] (state, forecast capacity and load, degrade score, weight,
//!   slow-start time) → [`Snapshot`], built when predictions change and shared through
//!   [`SharedSnapshot`] (`arc-swap`). The build precomputes everything the `plb` policy
//!   needs that does not change per request: weights, an alias table for O(1) weighted
//!   draws, the recovery-floor table and rendezvous-hash seeds.
//! - [`live`]: [`NodeLive`] per node (in flight, [`PeakEwma`] and [`MeanEwma`]
//!   latency, [`ErrorRate`], counters), updated with atomics only, kept by node id in a [`LiveSet`] across
//!   snapshot swaps.
//! - [`policy`]: the [`Policy`] trait and `round-robin`, `least-request`, `peak-ewma`,
//!   `prequal` and `plb`, selectable by [`PolicyKind`] name through [`AnyPolicy`].
//!
//! # Deviations from the first design, and why
//! - **The snapshot binds the live handles.** `Snapshot::new` resolves each node's id
//!   to its `Arc<NodeLive>` in the [`LiveSet`] once, so a decision reads live state by
//!   index with no map lookup and no lock, and `Policy::pick` takes no separate live
//!   argument. Live state still persists across swaps because it is keyed by id.
//! - **Reasons are structured.** A [`Decision`] carries a [`Reason`] (rule, facts about
//!   the chosen and the other candidate, key details); [`Decision::explain`] puts it in
//!   words only when someone reads it. Formatting a sentence costs more than the
//!   decision itself, and the simulator makes millions of decisions.
//! - **Times are `f64` seconds; latencies are seconds.** The REST layer converts ms.
//!
//! # The `plb` policy
//! Each eligible node (not `unhealthy`, weight > 0) gets a weight
//! `operator weight × capacity / median capacity × health × slow start`, where
//! `health = degrade factor × headroom factor × (0.5 if unknown)`:
//! - the *degrade factor* falls from 1 to `degrade_floor` (5 %) along a smoothstep of the
//!   degrade score, so traffic shifts as the forecast worsens, before the state changes,
//!   and never by a cliff (no slope at either end: noise near 0 moves nothing);
//! - the *headroom factor* is 1 while forecast headroom is above `headroom_knee` (25 %) and
//!   falls smoothly to the floor at zero headroom: only a node forecast near its capacity
//!   sheds, so weights do not chase every wiggle of the forecast load (a weight
//!   proportional to spare capacity has a high gain near saturation and oscillates when
//!   forecasts lag);
//! - *slow start* ramps linearly from 10 % to 100 % over 30 s after the node
//!   (re)entered service, as Envoy's slow start does: the later of its view's
//!   `ready_since` (the pipeline saw it join or return) and its return seen from the
//!   traffic (`NodeLive::back_since`: the first success after three failures in a
//!   row, or after a refused connection, or a connection check that finds a refusing
//!   node listening again: a restarted process, as PLB's proxy sees it without
//!   agents). A node `unknown` to the pipeline (no fresh probe samples) weighs half
//!   while some node of its pool reports, and in full when none does (a pool without
//!   probes). Until its first answer
//!   since then, a node in slow start has at most `slow_start_scouts` (1) requests in
//!   flight: nothing yet says how cold it is. In the full scan slow start lasts only
//!   while the node is still cold (not heard from since it came back, or slower than
//!   1.2 × the pool's median latency): it then takes part in a share of the scans, its
//!   ramp against the pool's highest (so nodes that all return at once compete by cost
//!   alone), and its weight there counts only `share^slow_start_cost_exp` (√share) of
//!   its full weight, so a process still warming up takes requests when the warm nodes
//!   are queued rather than whenever it is idle. Once it answers as fast as its peers
//!   and has been back 2 s (`slow_start_warm_after`: its first few answers say little)
//!   it takes part in every scan: the 30 s ramp would otherwise keep a node that has
//!   warmed out of most scans, and its peers queue the requests it could serve. While
//!   it ramps, its latency counts at a lower exponent (`slow_start_latency_exp`, 0.5,
//!   relative to the pool's median): four times the pool's latency costs twice, so its
//!   first slow answers do not keep it idle on top of the ramp.
//!
//! In the full scan a node out of slow start whose mean latency is more than
//! `scan_mean_gate` (1.5) times the median mean of the nodes out of slow start counts at
//! least that multiple of the latency floor. Peak-EWMA follows each node's slowest
//! recent answer, and a node that routing already avoids has few answers to be slow: at
//! half speed it can show the peak of its busy peers and win whenever they all have a
//! request in flight. The other way round, a node's peak counts at most
//! `scan_peak_cap` (3) times its own mean there: one outlier answer (with lognormal
//! service times, one in a thousand is nearly five times the median) can otherwise
//! price a healthy node out of the scans while its peers queue, until its peak comes
//! down; a node that really slows down raises its mean too. For both, a node's mean
//! fades toward zero while it takes in no answer (`scan_mean_fade`, 30 s time
//! constant): a node the gate priced out gets no answers to lower its mean, and must be
//! tried again, as its peak-EWMA's decay has it tried. A node its clients gave up on
//! (waited past its latency with no answer) sits out the scans while it rests (1, 2,
//! then 4 s after each give-up in a row) and is priced by the clients' wait, uncapped,
//! until it answers (`scan_give_ups`): a hung node costs one lost request per rest.
//!
//! A request then takes one of three paths:
//! 1. **Recovery floor.** With probability `Σ floor × (1 − health) × fair share` over shed
//!    nodes, a shed node is chosen directly, so a degrading node keeps at least ~5 % of its
//!    fair share and its recovery shows in feedback. Without this, a degraded node loses
//!    nearly every comparison below and its share falls to the square of its weight.
//! 2. **Weighted power of two choices.** Two nodes are drawn *with replacement* in
//!    proportion to weight (alias table; slow start by rejection). With replacement, the
//!    share at zero load is exactly proportional to weight, and weights still matter in a
//!    two-node pool, where distinct draws would always compare the same pair; in pools of
//!    three or more a second draw that repeats the first is redrawn (up to 3 times), so
//!    about 1/n of the decisions are not single draws that ignore load. The lower
//!    `latency × (1 + max(0, in flight + work − 1) / weight) × exp(error_penalty × error
//!    rate)` wins. The live signals correct stale predictions within milliseconds;
//!    dividing the load by the weight keeps the live feedback from undoing the predicted
//!    shift (in-flight counts settle in proportion to weight); an idle node costs its
//!    latency alone whatever its weight, so idle candidates tie and the weighted draw
//!    decides (were the weight applied to the `+1` too, the lighter of two idle nodes
//!    would always lose and a node at weight w would get about w² of its share); and the
//!    steep error term stops a node that fails fast from drawing traffic by its low
//!    latency. Randomised draws keep many balancers with slightly
//!    stale snapshots from herding onto the same node. A node with no latency yet is
//!    compared at the other's latency (neutral). Large `cost`/`size` requests weigh the
//!    weight more, so they go to nodes with more capacity.
//! 3. **Keys.** With a `key`, weighted rendezvous hashing (xxh3) ranks the nodes; the owner
//!    takes the key unless it has no forecast headroom, or its in-flight count would pass
//!    `(1 + key_epsilon) ×` its weighted share of the pool's (bounded load), or the key is
//!    among those it sheds while degrading or does not yet take in slow start. Those last
//!    two use draws fixed by the key, so the *same* keys move as a node degrades and come
//!    back as it recovers. Else the next in rendezvous order is tried, up to
//!    `key_candidates`, then the unkeyed choice decides.
//!
//! `unhealthy` nodes get nothing while any node is eligible; when none is, every policy
//! still answers (best effort, fewest in flight) and the reason says so.
//!
//! Baselines follow their models: `least-request` and `peak-ewma` are linkerd/Finagle P2C
//! (distinct uniform pair), `prequal` is Prequal's hot/cold rule over a random probe sample
//! of this instance's live state. They skip `unhealthy` nodes (as active health checks
//! would) and ignore every prediction.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod live;
pub mod policy;
pub mod snapshot;

pub use live::{ErrorRate, InFlight, LiveConfig, LiveSet, MeanEwma, NodeLive, PeakEwma};
pub use policy::{
    AnyPolicy, Decision, Facts, KeyMiss, KeyNote, Policy, PolicyConfig, PolicyKind, Reason,
    RouteRequest, Rule, gen_pair,
};
pub use snapshot::{NodeView, Shaping, SharedSnapshot, Snapshot};

/// Errors of this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoutingError {
    /// Two nodes in one snapshot share an id.
    #[error("node id {0:?} appears twice in the snapshot")]
    DuplicateNode(String),
    /// A node has an empty id.
    #[error("node at position {position} has an empty id")]
    EmptyNodeId {
        /// Its position in the list given.
        position: usize,
    },
    /// A policy name that is not one of `round-robin|least-request|least-conn|peak-ewma|prequal|plb`.
    #[error(
        "unknown routing policy {0:?}; expected one of round-robin, least-request, least-conn, peak-ewma, prequal, plb"
    )]
    UnknownPolicy(String),
}
