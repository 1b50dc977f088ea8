//! PLB's prediction pipeline for one pool: [`PoolPredictor`] turns probe samples, request
//! feedback and in-flight counts into the routing [`plb_routing::NodeView`]s that
//! snapshots are built from. It owns a [`plb_predict::NodeModel`] per node (profiles,
//! forecasts, state with hysteresis, degrade score), the pool's capacity training
//! ([`training`]: load-only and probe-feature models, fitted off the sample path and
//! scored on later feedback), and the step from both to views.
//!
//! It is the only producer of `NodeView`s: the balancer's engine wraps it with channels
//! and a blocking pool for fits, the benchmark's simulator and live harness call it
//! inline, so what the benchmark measures is what ships. Pure, synchronous code over
//! plain data: no I/O, no clock (every call takes `now_ms`), no threads.
#![forbid(unsafe_code)]

pub mod budget;
pub mod config;
pub mod demand;
pub mod outlook;
pub mod peers;
pub mod pool;
pub mod training;
pub mod trust;

pub use config::{PipelineConfig, TrainingConfig, ViewConfig};
pub use demand::{DemandConfig, DemandTracker, ScalingChange};
pub use outlook::OutlookConfig;
pub use pool::{Feedback, PoolPredictor, SeriesRefit};
pub use training::{FitJob, FitOutcome};
pub use trust::{TrustConfig, TrustTracker};

/// Why a pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Invalid model parameters.
    #[error("prediction parameters: {0}")]
    Params(#[from] plb_predict::PredictError),
    /// An invalid pipeline setting.
    #[error("pipeline setting `{name}`: {message}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// What is wrong.
        message: String,
    },
}
