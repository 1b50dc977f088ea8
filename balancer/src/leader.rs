//! Which replica leads. Several balancers may share one PostgreSQL database; work that
//! must happen once (the webhook outbox, retention) runs only on the leader, chosen
//! through the database (`store::PgStore::elect`: a session advisory lock, so the lock
//! goes when the leader's connection does, and another replica takes it within a
//! second or two). A balancer on SQLite is alone and always leads. Each time a replica
//! becomes leader it draws a new epoch (a database sequence): a fencing token that only
//! grows, reported by `/healthz`.
use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// This replica's standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lead {
    /// Whether it leads now.
    pub leader: bool,
    /// The epoch it leads in (0 when it does not, 1 forever on SQLite).
    pub epoch: i64,
}

/// Aborts its task when the last handle goes.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A replica's leadership, watched.
#[derive(Debug, Clone)]
pub struct Leadership {
    replica: Arc<str>,
    tx: Arc<watch::Sender<Lead>>,
    rx: watch::Receiver<Lead>,
    election: Option<Arc<AbortOnDrop>>,
}

impl Leadership {
    /// A replica that always leads (SQLite: it is alone).
    pub fn always(replica: &str) -> Leadership {
        let (tx, rx) = watch::channel(Lead {
            leader: true,
            epoch: 1,
        });
        Leadership {
            replica: Arc::from(replica),
            tx: Arc::new(tx),
            rx,
            election: None,
        }
    }

    /// Leadership decided by `election`, which sends this replica's standing as it
    /// changes; it runs until [`Leadership::stop`] or the last handle is dropped.
    pub fn elected<F>(replica: &str, election: impl FnOnce(Arc<watch::Sender<Lead>>) -> F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = watch::channel(Lead::default());
        let tx = Arc::new(tx);
        let task = tokio::spawn(election(Arc::clone(&tx)));
        Leadership {
            replica: Arc::from(replica),
            tx,
            rx,
            election: Some(Arc::new(AbortOnDrop(task))),
        }
    }

    /// This replica's name (`--replica`).
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Its standing now.
    pub fn now(&self) -> Lead {
        *self.rx.borrow()
    }

    /// Whether it leads now.
    pub fn is_leader(&self) -> bool {
        self.now().leader
    }

    /// Stops taking part in the election (a leader gives the lead up: its connection,
    /// and so its lock, goes).
    pub fn stop(&self) {
        if let Some(e) = &self.election {
            e.0.abort();
            self.tx.send_replace(Lead::default());
        }
    }

    /// Waits until this replica's standing changes.
    pub async fn changed(&mut self) -> Lead {
        let _ = self.rx.changed().await;
        self.now()
    }

    /// Runs the tasks `start` spawns while this replica leads, and aborts them when it
    /// stops leading (the next leader picks the work up from the database). The returned
    /// task aborts them too when it is itself aborted.
    pub fn while_leading(
        &self,
        what: &'static str,
        start: impl Fn() -> Vec<JoinHandle<()>> + Send + 'static,
    ) -> JoinHandle<()> {
        let mut rx = self.rx.clone();
        let replica = Arc::clone(&self.replica);
        tokio::spawn(async move {
            let mut running: Vec<AbortOnDrop> = Vec::new();
            loop {
                let leads = rx.borrow_and_update().leader;
                if leads && running.is_empty() {
                    tracing::info!(replica = &*replica, what, "leading: starting");
                    running = start().into_iter().map(AbortOnDrop).collect();
                } else if !leads && !running.is_empty() {
                    tracing::info!(replica = &*replica, what, "no longer leading: stopping");
                    running.clear();
                }
                if rx.changed().await.is_err() {
                    // Every handle is gone: so is the replica.
                    return;
                }
            }
        })
    }
}
