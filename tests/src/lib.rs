//! PLB's end-to-end suite (`tests/tests/*.rs`) and its cluster of real `plb` processes
//! ([`cluster`]); the generic helpers are in `plb-testkit`.

pub mod cluster;
