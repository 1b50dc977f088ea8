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

/// A pool or probe name as a JSON Schema pattern: 1 to 64 of `[A-Za-z0-9._-]`, starting
/// with a letter or digit (what the balancer accepts).
pub const NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$";
/// A node name as a JSON Schema pattern: like [`NAME_PATTERN`], up to 128 characters.
pub const NODE_NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$";
/// The routing policies' names as a JSON Schema pattern.
pub const POLICY_PATTERN: &str = "^(plb|round-robin|least-request|least-conn|peak-ewma|prequal)$";

/// A list of 1 to `max` pool names, for `schema_with`.
fn pool_names_schema(max: usize) -> utoipa::openapi::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .description(Some(format!("1 to {max} pool names")))
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(NAME_PATTERN)),
        )
        .min_items(Some(1))
        .max_items(Some(max))
        .build()
}

/// Pools of an agent token or a node registration: 1 to 64 names.
fn pool_names() -> utoipa::openapi::Array {
    pool_names_schema(64)
}
