//! PLB's probe sandbox: runs a client's probe (a WebAssembly component of the
//! `plb:probe/probe` world) against one node, under hard fuel, wall-clock, memory
//! and output limits, and classifies how the run ended.
//!
//! One [`Runtime`] per process: it owns the wasmtime engines (one with fuel metering,
//! one without, each with epochs and the pooling allocator), an epoch ticker thread
//! (ticking only while a run is in flight) and a compiled-component cache keyed by
//! sha256 (in memory and, optionally, on disk).
//! Each run gets its own `Store` with its limits; nothing is shared between runs.
//! Probes get no ambient authority: no files, no environment, no sockets; the host
//! `http` and `tcp-connect` functions reach the run's target address and nothing else.
#![deny(unsafe_code)]

mod bindings;
mod cache;
mod capture;
mod config;
mod engine;
mod error;
mod host;
mod limits;
mod report;
mod run;

pub use config::RuntimeConfig;
pub use error::RuntimeError;
pub use report::{Limits, RunReport, RunSpec, Target};
pub use run::{Probe, Runtime};

/// The WIT package the sandbox serves, for messages and docs.
pub const WORLD: &str = "plb:probe/probe@0.1.0";
