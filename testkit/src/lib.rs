//! PLB's test kit: the helpers every test and bench used to copy. Loopback ports and
//! targets ([`net`]), wall-clock time and polling ([`time`]), child processes and test
//! directories ([`process`]), a webhook receiver that checks signatures ([`webhook`]),
//! a blocking HTTP GET and Prometheus text ([`http`]), a throwaway PostgreSQL server
//! ([`pg`]).
//!
//! It depends on no PLB crate but `plb-api` (wire types), so every crate's tests can
//! use it as a dev-dependency without a cycle.

pub mod http;
pub mod net;
pub mod pg;
pub mod process;
pub mod time;
pub mod webhook;

pub use http::{http_get, metric_sum, parse_metrics};
pub use net::{free_addr, free_port, loopback, tcp_target};
pub use pg::PgServer;
pub use process::{
    KillOnDrop, Proc, built_plb_bin, plb_bin, proc_status, spawn_haproxy, test_dir, which,
    workspace_root,
};
pub use time::{now_ms, now_s, wait_for};
pub use webhook::{Delivery, WebhookReceiver};
