//! Connection checks of the nodes that traffic found unreachable: a node whose
//! connection was refused (nothing listening, no route) is left alone by the policy (its
//! error rate raises its cost), and only a connection check tells when it listens again
//! (a restarted process). Every [`CHECK_EVERY`] the proxy opens a TCP connection to each
//! such node, at an address the node networks allow, and closes it; one that connects is
//! tried again at once, its refusals forgiven, and after
//! [`OUT_AFTER_FAILURES`](plb_routing::live::OUT_AFTER_FAILURES) or more of them it starts
//! its slow start (HAProxy's `check` without `rise`: a request that finds it refusing
//! again is retried elsewhere and marks it unreachable again).
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{ForwardSettings, Upstream};

/// Time between two rounds of checks.
pub const CHECK_EVERY: Duration = Duration::from_millis(500);

/// Checks the upstream's unreachable nodes every [`CHECK_EVERY`] until stopped.
pub async fn run<U: Upstream>(
    upstream: Arc<U>,
    settings: ForwardSettings,
    mut stopped: watch::Receiver<Option<Duration>>,
) {
    let mut every = tokio::time::interval(CHECK_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stopped.wait_for(Option::is_some) => return,
        }
        for (node, address) in upstream.unreachable_nodes() {
            if listens(&address, &settings).await {
                tracing::info!(%node, %address, "an unreachable node accepts connections again");
                upstream.reachable(&node);
            }
        }
    }
}

/// Whether a TCP connection to `address` (`host:port`) opens within the connect
/// timeout, at an address the node networks allow.
async fn listens(address: &str, settings: &ForwardSettings) -> bool {
    let timeout = settings.connect_timeout.min(CHECK_EVERY);
    let resolved: Vec<SocketAddr> =
        match tokio::time::timeout(timeout, tokio::net::lookup_host(address)).await {
            Ok(Ok(addrs)) => settings.nodes.filter(addrs),
            _ => return false,
        };
    let Some(&addr) = resolved.first() else {
        return false;
    };
    matches!(
        tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}
