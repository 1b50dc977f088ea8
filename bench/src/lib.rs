//! PLB's load-balancing benchmark (`plb bench lb`): does predictive routing beat the best
//! reactive balancers when nodes degrade, and do no harm when they do not?
//!
//! Every policy of `plb-routing` (and an oracle, in the simulator) routes the same
//! scripted [`scenario`]s, in two ways that share the scenario table, the sidecar and
//! prediction plumbing ([`policies`]) and the metrics ([`metrics`]):
//! - **live** ([`live`]): real HTTP backends on loopback ([`backend`]), each a FIFO
//!   queue with its own workers and lognormal service times (async sleeps), driven by an
//!   open-loop Poisson generator ([`loadgen`]) through several independent sidecar
//!   balancers per policy, with probe-like polling of every backend;
//! - **sim** ([`sim`]): a discrete-event simulator on a virtual clock running the same
//!   policy and prediction code at 16 to 10,000+ nodes.
//!
//! [`lb::run`] runs a benchmark from [`LbArgs`] and returns a [`report::Report`] (printed
//! as tables with ratios of `plb` against the best baseline, and written as JSON).
#![forbid(unsafe_code)]

pub mod backend;
pub mod lb;
pub mod live;
pub mod loadgen;
pub mod metrics;
pub mod policies;
pub mod predictions;
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
