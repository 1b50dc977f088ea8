//! The runtime's error type: failures of the sandbox itself, apart from a probe's outcome.
use thiserror::Error;

/// What can go wrong outside a run's own outcome.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// The bytes are not a usable probe: not wasm, a core module, malformed, or the wrong world.
    #[error("{0}")]
    Invalid(String),
    /// The runtime's configuration is unusable.
    #[error("invalid runtime config: {0}")]
    Config(String),
    /// The engine failed (e.g. could not reserve memory for the pool).
    #[error("engine: {0}")]
    Engine(String),
    /// Reading or writing the compiled cache failed.
    #[error("compiled cache: {0}")]
    Io(#[from] std::io::Error),
}

impl RuntimeError {
    pub(crate) fn engine(e: wasmtime::Error) -> Self {
        RuntimeError::Engine(format!("{e:#}"))
    }
}
