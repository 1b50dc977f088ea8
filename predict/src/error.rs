//! The crate's one error type: every way a prediction input can be refused.
use thiserror::Error;

/// Why an input was refused. Carries the offending name and value so that the
/// balancer can answer a client with a message that points at the problem.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum PredictError {
    /// A value was NaN or infinite (a probe bug; the whole sample is refused).
    #[error("`{name}` is not a finite number ({value})")]
    NonFinite {
        /// Metric or field name.
        name: String,
        /// The value as received.
        value: f64,
    },
    /// A finite value too large in magnitude to forecast safely.
    #[error("`{name}` = {value:e} is outside the accepted range ±{limit:e}")]
    OutOfRange {
        /// Metric or field name.
        name: String,
        /// The value as received.
        value: f64,
        /// The largest accepted magnitude.
        limit: f64,
    },
    /// A value older than the newest one already seen for the same series.
    #[error("`{name}` at {t_ms} ms is older than its last value at {last_ms} ms")]
    OutOfOrder {
        /// Series name.
        name: String,
        /// Time of the refused value.
        t_ms: i64,
        /// Time of the newest accepted value.
        last_ms: i64,
    },
    /// A node already has the most series it may keep.
    #[error("too many series on one node: `{name}` would exceed the limit of {limit}")]
    TooManySeries {
        /// The refused series.
        name: String,
        /// The limit.
        limit: usize,
    },
    /// A parameter outside its allowed range.
    #[error("invalid parameter `{name}`: {message}")]
    InvalidParam {
        /// The parameter.
        name: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// Too little usable training data to fit a model.
    #[error("not enough data: {usable} usable rows, need at least {needed}")]
    NotEnoughData {
        /// Rows that passed validation.
        usable: usize,
        /// Rows needed.
        needed: usize,
    },
    /// The data does not determine a model (e.g. all rows at one load).
    #[error("cannot fit a model: {0}")]
    Degenerate(String),
    /// A malformed line of a `timestamp,value` CSV (1-based line number).
    #[error("line {line}: {message}")]
    Csv {
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        message: String,
    },
    /// A malformed horizon list such as `1,3,6`.
    #[error("invalid horizons `{input}`: {message}")]
    Horizons {
        /// The list as given.
        input: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Shorthand for this crate's results.
pub type Result<T, E = PredictError> = std::result::Result<T, E>;
