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

pub mod capacity;
pub mod demand;
pub mod error;
pub mod forecast;
pub mod node;
pub mod num;
pub mod offline;
pub mod profile;
pub mod series;
pub mod state;
#[cfg(test)]
mod testutil;

pub use capacity::{Capacity, CapacityModel, CapacityParams, CapacityRow, CurveForm, fit_per_node};
pub use demand::{
    DemandParams, Direction, NodesNeeded, PoolDemand, RecommendationChange, Recommender,
    RecommenderParams, ScalePlan,
};
pub use error::{PredictError, Result};
pub use forecast::{AutoForecaster, Forecast, Forecaster, Holt, Naive, Ses};
pub use node::{DegradeParts, NodeConfig, NodeModel, NodeParams, Observation, ScoredSeries};
pub use offline::{
    forecast_series, forecast_series_with_step, parse_csv, parse_horizons, timestamp_seconds,
};
pub use profile::{Profile, ProfileParams};
pub use series::SeriesModel;
pub use state::{StateParams, infer_direction};
