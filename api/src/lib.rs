//! PLB's REST API v1 wire types: the JSON shapes that the balancer, the agent, the CLI
//! and the runtime exchange. Plain serde structs, no I/O; `ToSchema` feeds `/v1/openapi.json`.
#![deny(missing_docs)]

mod model;
mod outcome;
mod prediction;
mod probe;
mod reliability;
mod resources;
mod scaling;
mod wire;

pub use model::*;
pub use outcome::{Blame, Outcome};
pub use prediction::*;
pub use probe::{ProbeSettings, SettingsError, Tier};
pub use reliability::*;
pub use resources::*;
pub use scaling::*;
pub use wire::*;
