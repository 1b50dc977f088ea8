//! PLB's prediction policy: per node and metric, a robust profile of what is normal,
//! self-tuning forecasts of where each metric is heading, a capacity model learnt from
//! request feedback, and the node state (`healthy`, `degrading`, `unhealthy`,
//! `unknown`) with its evidence.
//!
//! Pure, synchronous code over plain data: no I/O, no clocks (time is a parameter),
//! no threads. The balancer, `plb forecast`, the benchmarks and the simulator run the
//! same code. No NaN or infinite value leaves the crate: inputs are checked
//! ([`num::check_input`]) and outputs clamped.
#![forbid(unsafe_code)]

pub mod error;
pub mod forecast;
pub mod num;
pub mod offline;

pub use error::{PredictError, Result};
pub use forecast::{AutoForecaster, Forecast, Forecaster, Holt, Naive, Ses};
pub use offline::{forecast_series, parse_csv, parse_horizons, timestamp_seconds};
