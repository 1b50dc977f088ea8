//! Helpers shared by the end-to-end tests: locating the `plb` binary, free ports, child processes.

pub mod cluster;
