//! HAProxy agent-check export (`--agent-check LISTEN_ADDR`): an HAProxy already in
//! production can weight its servers by PLB's predictions.
//!
//! Protocol (HAProxy's `agent-check`): HAProxy opens a TCP connection per server every
//! `agent-inter`, sends its `agent-send` string, reads one line and closes. The line names
//! the node as `CLIENT_ID/POOL/NODE`: the pool's owner (its client id), the pool and the
//! node (e.g. `agent-send "1/web/node-1\n"`), so a pool another tenant names the same is
//! never answered for; PLB answers
//! - `up ready NN%` with `NN` the node's `plb` weight relative to the heaviest node of
//!   the pool, 1-100 (HAProxy multiplies the server's configured weight by it, so with equal
//!   configured weights HAProxy's split follows PLB's);
//! - `drain` for a node PLB sends no new traffic to although it is not failing;
//! - `down` for an `unhealthy` node while another node of the pool is eligible (when every
//!   node is unhealthy PLB routes best effort, and so every node answers `up ready 100%`);
//! - an empty line when the line is not `CLIENT_ID/POOL/NODE` or the pool or node is
//!   unknown (HAProxy then keeps the server as it is) - logged on PLB's side.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use plb_api::NodeState;
use plb_routing::Snapshot;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::engine::{Engine, PoolKey};

/// Longest `agent-send` line read.
const MAX_LINE: usize = 512;
/// How long to wait for HAProxy's line.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// One answer to HAProxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Serving, at this percentage of the configured weight (1-100).
    Up(u8),
    /// No new traffic, but not failing.
    Drain,
    /// Failing.
    Down,
    /// Unknown pool or node: say nothing.
    Unknown,
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Up(pct) => writeln!(f, "up ready {pct}%"),
            Reply::Drain => writeln!(f, "drain"),
            Reply::Down => writeln!(f, "down"),
            Reply::Unknown => writeln!(f),
        }
    }
}

/// The answer for `node` in `snap` at `now` (seconds on the snapshot's clock). Pure.
pub fn reply_for(snap: &Snapshot, node: &str, now: f64) -> Reply {
    let Some(index) = snap.index_of(node) else {
        return Reply::Unknown;
    };
    let eligible = snap.eligible();
    if eligible.is_empty() {
        // Every node unhealthy: PLB routes best effort to all of them.
        return Reply::Up(100);
    }
    if !eligible.contains(&index) {
        return match snap.node(index).map(|n| n.state) {
            Some(NodeState::Unhealthy) => Reply::Down,
            _ => Reply::Drain,
        };
    }
    let max = eligible
        .iter()
        .map(|&i| snap.weight_at(i, now))
        .filter(|w| w.is_finite())
        .fold(0.0_f64, f64::max);
    let w = snap.weight_at(index, now);
    percent(w, max)
}

/// `w` relative to `max`, as HAProxy's 1-100 %; a zero weight is a drain.
pub fn percent(w: f64, max: f64) -> Reply {
    if !(w.is_finite() && max.is_finite()) || w <= 0.0 || max <= 0.0 {
        return Reply::Drain;
    }
    let pct = (100.0 * w / max).round().clamp(1.0, 100.0);
    // In 1..=100 after the clamp.
    Reply::Up(pct as u8)
}

/// `CLIENT_ID/POOL` as the operator writes it (`--proxy`, agent-check lines): the owner's
/// client id and the pool's name. A bare pool name is refused: pool names are unique per
/// client only.
pub fn parse_pool_ref(s: &str) -> Result<PoolKey, String> {
    let (client, pool) = s.split_once('/').ok_or_else(|| {
        format!(
            "`{s}`: expected CLIENT_ID/POOL (the owner's client id and the pool's name), e.g. 1/web"
        )
    })?;
    let client_id: i64 = client
        .trim()
        .parse()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| format!("`{s}`: `{client}` is not a client id (a positive number, as `POST /v1/clients` answers)"))?;
    let pool = pool.trim();
    if pool.is_empty() || pool.contains('/') {
        return Err(format!("`{s}`: `{pool}` is not a pool name"));
    }
    Ok(PoolKey {
        client_id,
        pool: pool.to_owned(),
    })
}

/// The answer for the `agent-send` line `line` (`CLIENT_ID/POOL/NODE`).
pub fn answer(engine: &Engine, line: &str) -> Reply {
    let parsed = line
        .trim()
        .rsplit_once('/')
        .and_then(|(pool, node)| Some((parse_pool_ref(pool).ok()?, node)));
    let Some((key, node)) = parsed else {
        tracing::warn!(
            line,
            "agent-check: expected `CLIENT_ID/POOL/NODE` (HAProxy's agent-send)"
        );
        return Reply::Unknown;
    };
    let pool = key.pool.as_str();
    let Some(router) = engine.pool(&key) else {
        tracing::warn!(
            client_id = key.client_id,
            pool,
            "agent-check: the client has no such pool"
        );
        return Reply::Unknown;
    };
    let reply = reply_for(&router.snapshot(), node, router.now());
    if reply == Reply::Unknown {
        tracing::warn!(pool, node, "agent-check: no such node in the pool");
    }
    reply
}

/// The agent-check listener serving in the background.
#[derive(Debug)]
pub struct RunningAgentCheck {
    /// The bound address.
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningAgentCheck {
    /// Stops accepting.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Binds `listen` and answers agent checks from `engine`.
pub async fn start(engine: Arc<Engine>, listen: SocketAddr) -> std::io::Result<RunningAgentCheck> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stopped.wait_for(|s| *s) => break,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let engine = Arc::clone(&engine);
                    tokio::spawn(async move {
                        if let Err(e) = serve_one(&engine, stream).await {
                            tracing::debug!(%peer, error = %e, "agent-check connection failed");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "agent-check accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    tracing::info!(%addr, "HAProxy agent-check listening");
    Ok(RunningAgentCheck { addr, stop, task })
}

/// Reads one line (up to `\n`, the end of the stream or [`READ_TIMEOUT`]) and answers it.
async fn serve_one(engine: &Engine, mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(64);
    let mut chunk = [0u8; 128];
    let read = async {
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.contains(&b'\n') || buf.len() >= MAX_LINE {
                break;
            }
        }
        Ok::<_, std::io::Error>(())
    };
    // HAProxy without `agent-send` sends nothing: the timeout ends the wait.
    let _ = tokio::time::timeout(READ_TIMEOUT, read).await;
    let line = String::from_utf8_lossy(&buf);
    let line = line.split('\n').next().unwrap_or("");
    let reply = answer(engine, line);
    stream.write_all(reply.to_string().as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_haproxy_words() {
        assert_eq!(Reply::Up(73).to_string(), "up ready 73%\n");
        assert_eq!(Reply::Drain.to_string(), "drain\n");
        assert_eq!(Reply::Down.to_string(), "down\n");
        assert_eq!(Reply::Unknown.to_string(), "\n");
    }

    fn snapshot(nodes: Vec<plb_routing::NodeView>) -> Snapshot {
        let live = plb_routing::LiveSet::default();
        Snapshot::new(nodes, &live, plb_routing::Shaping::default(), 0.0).expect("snapshot")
    }

    // A hand-made view: this tests agent-check replies, not the pipeline.
    #[allow(clippy::disallowed_methods)]
    fn node(id: &str, state: NodeState, weight: f64) -> plb_routing::NodeView {
        let mut n = plb_routing::NodeView::new(id, "127.0.0.1:1");
        n.state = state;
        n.weight = weight;
        n
    }

    #[test]
    fn replies_follow_the_snapshot() {
        let snap = snapshot(vec![
            node("full", NodeState::Healthy, 2.0),
            node("half", NodeState::Healthy, 1.0),
            node("unknown", NodeState::Unknown, 2.0),
            node("drained", NodeState::Healthy, 0.0),
            node("failing", NodeState::Unhealthy, 2.0),
        ]);
        assert_eq!(reply_for(&snap, "full", 100.0), Reply::Up(100));
        assert_eq!(reply_for(&snap, "half", 100.0), Reply::Up(50));
        // Unknown nodes count at half their weight.
        assert_eq!(reply_for(&snap, "unknown", 100.0), Reply::Up(50));
        assert_eq!(reply_for(&snap, "drained", 100.0), Reply::Drain);
        assert_eq!(reply_for(&snap, "failing", 100.0), Reply::Down);
        assert_eq!(reply_for(&snap, "nobody", 100.0), Reply::Unknown);

        // All unhealthy: PLB routes best effort to every node, so all stay up.
        let snap = snapshot(vec![
            node("a", NodeState::Unhealthy, 1.0),
            node("b", NodeState::Unhealthy, 1.0),
        ]);
        assert_eq!(reply_for(&snap, "a", 100.0), Reply::Up(100));
    }

    #[test]
    fn percent_is_relative_to_the_heaviest() {
        assert_eq!(percent(2.0, 2.0), Reply::Up(100));
        assert_eq!(percent(1.0, 2.0), Reply::Up(50));
        assert_eq!(percent(0.001, 2.0), Reply::Up(1));
        assert_eq!(percent(0.0, 2.0), Reply::Drain);
        assert_eq!(percent(f64::NAN, 2.0), Reply::Drain);
    }
}
