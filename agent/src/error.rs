//! The agent's error type: what stops the agent from starting or running.
use std::path::PathBuf;

use thiserror::Error;

/// What can stop the agent. Failures that the agent rides out (the balancer being
/// unreachable, a probe misbehaving, a module failing its hash check) are not errors:
/// they are retried, spooled or reported as samples.
#[derive(Debug, Error)]
pub enum AgentError {
    /// A flag or environment variable is unusable.
    #[error("invalid agent config: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// The spool directory could not be opened, locked or written.
    #[error("spool at {path}: {source}")]
    Spool {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying failure.
        source: std::io::Error,
    },
    /// Another agent holds the spool directory.
    #[error("spool at {0} is in use by another agent (its lock file is held)")]
    SpoolLocked(PathBuf),
    /// The probe sandbox could not be built.
    #[error("probe runtime: {0}")]
    Runtime(#[from] plb_runtime::RuntimeError),
    /// The local `/metrics` listener could not be bound.
    #[error("metrics listener on {addr}: {source}")]
    MetricsListen {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The bind failure.
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Http(String),
}
