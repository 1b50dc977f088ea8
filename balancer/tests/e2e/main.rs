//! The balancer's end-to-end tests, one test binary (one link, one copy of the helpers;
//! the tests of every file run side by side): real balancers on loopback ports, real
//! SQLite files and PostgreSQL servers, real agents' reports, real HAProxy.
#[macro_use]
mod common;
mod engine_common;

mod api;
mod durability;
mod haproxy;
mod hardening;
mod metrics_access;
mod predict;
mod properties;
mod proxy;
mod reliability;
mod replicas;
mod retention;
mod route;
mod scaling;
mod tenancy;
