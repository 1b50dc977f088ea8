//! PLB's probe reliability policy: tells a broken probe from a sick node. Pure code over
//! plain data (no I/O, no clock: time is a parameter), so the balancer, tests and any
//! offline replay run the same decisions.
//!
//! - [`wilson`]: the Wilson score interval of a failure share, so that one failure in
//!   three runs and 300 in 900 are not treated alike.
//! - [`Tracker`]: per probe version and node, the recent runs by outcome class (a window
//!   bounded by count and by age); attribution of each failure to the probe or the node
//!   (by class, `timeout` by whether the node's other probes degrade too, and across
//!   nodes); probe states `reliable` → `flaky` → `needs_update` with hysteresis; the
//!   evidence a notification carries; resolution once a version runs reliably.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod tracker;
pub mod wilson;

pub use tracker::{Observation, Persisted, Policy, Tracker, Transition};
pub use wilson::{Interval, wilson};
