//! PLB's load-balancing benchmark (`plb bench lb`): does predictive routing beat the best
//! reactive balancers when nodes degrade, and do no harm when they do not?
//!
//! Every policy of `plb-routing` (and an oracle, in the simulator) routes the same
//! scripted [`scenario`]s, in two ways that share the scenario table, the sidecar
//! plumbing ([`policies`]), the prediction pipeline the balancer ships
//! ([`plb_pipeline::PoolPredictor`]) and the metrics ([`metrics`]):
//! - **live** ([`live`]): real HTTP backends on loopback ([`backend`]), each a FIFO
//!   queue with its own workers and lognormal service times (async sleeps), driven by an
//!   open-loop Poisson generator ([`loadgen`]) through several independent sidecar
//!   balancers per policy, with probe-like polling of every backend;
//! - **sim** ([`sim`]): a discrete-event simulator on a virtual clock running the same
//!   policy and prediction code at 16 to 10,000+ nodes.
//!
//! Live, real balancers run beside the in-process policies as anchors ([`anchors`]):
//! HAProxy (`roundrobin`, `leastconn`), nginx (`least_conn`) and PLB's own reverse proxy
//! (`plb balancer --proxy`), each a child process in front of its own lane of backends
//! with the same arrivals, with its CPU time per request. The backends have two shapes
//! ([`scenario::Shape`], `--shape`): `standard` (4 workers per node) and
//! `low-concurrency` (2 workers, median 20 ms, SLO 100 ms: issue 13's external harness).
//!
//! [`lb::run`] runs a benchmark from [`LbArgs`] and returns a [`report::Report`] (printed
//! as tables with ratios of `plb` against the best baseline, and written as JSON).
//!
//! # Definitions
//! - Latency is measured from the intended send time (open loop); a timeout is an
//!   error; in the percentiles every failed request counts as the timeout (1 s), so a
//!   percentile is the time by which that share of requests succeeded and a policy
//!   cannot improve it by feeding a node that fails fast.
//! - SLO-breaking: failed, or slower than the pool's SLO (200 ms with mean service
//!   40 ms; 100 ms in the low-concurrency shape).
//! - A node's *SLO breach* (for the lead time) is read off the script, the same for
//!   every policy: the first time the node stops answering, fails requests, could not
//!   carry its fair share of the load, or would break the SLO at p99 even idle. The
//!   *traffic shift* is the first time after the disturbance starts that its share over
//!   2 s falls below half its fair share. Lead = breach - shift.
//! - Baselines get Envoy-style active health checks from the same probe samples
//!   (unhealthy after 2 failed `/health` probes, healthy after 2 passing ones); `plb`
//!   gets its prediction pipeline. All get the same probes, report delay and snapshot
//!   staleness.
//!
//! # Deviations and findings
//! - **One central control per policy, several sidecars.** Probe samples and feedback
//!   go to one control (the balancer), which publishes node views; each sidecar
//!   rebuilds its own snapshot from them on its own staggered tick and keeps its own
//!   policy instance and live state. Sidecars share no routing state.
//! - **The `plb` pipeline is the balancer's own** ([`plb_pipeline::PoolPredictor`] with
//!   the shipped [`plb_pipeline::PipelineConfig`]; `--pipeline k=v,...` overrides a
//!   setting for experiments, which is how each default was settled). The harness'
//!   probe reports the `/health` latency and, like a user's probe reading a status
//!   page, the node's queue (`--queue-metric false` leaves it out); the balancer's
//!   demand signal is the requests in flight over every sidecar, ticked once a second,
//!   and capacity fits run inline on the engine's schedule.
//! - **Routing change** (`plb-routing`): in pools of 3+, the second weighted draw is
//!   redrawn when it repeats the first, so the power of two choices compares two nodes
//!   (with replacement, 1/n of decisions ignored load: +3% p99 on a homogeneous pool and
//!   5x peak-EWMA's errors in a stall).
//! - **The simulator matches the live run** at 16 nodes within a few percent at p99 (the
//!   `sim vs live` lines); the simulator adds 0.8 ms of network and HTTP per request and
//!   up to 1 ms of timer rounding to probe latencies, as measured live.
#![forbid(unsafe_code)]

pub mod anchors;
pub mod backend;
pub mod lb;
pub mod live;
pub mod loadgen;
pub mod metrics;
pub mod policies;
pub mod report;
pub mod scenario;
pub mod sim;

pub use lb::{LbArgs, Mode};
pub use report::Report;

/// Errors of the benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A scenario name that is not in the table.
    #[error("unknown scenario {name:?}; known: all, {known}")]
    UnknownScenario {
        /// The name given.
        name: String,
        /// The names in the table.
        known: String,
    },
    /// A command-line value out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A command-line value that does not parse.
    #[error("invalid argument: {0}")]
    Args(String),
    /// A live run could not set up its backends or its client.
    #[error("live run: {0}")]
    Live(String),
    /// A routing snapshot could not be built.
    #[error("routing: {0}")]
    Routing(#[from] plb_routing::RoutingError),
    /// Writing the JSON report failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Serialising the report failed.
    #[error("serialising the report: {0}")]
    Json(#[from] serde_json::Error),
    /// The prediction models refused their configuration.
    #[error("prediction: {0}")]
    Predict(String),
    /// A simulator task died.
    #[error("simulator task failed: {0}")]
    Task(String),
}
