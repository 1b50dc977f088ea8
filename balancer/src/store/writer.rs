//! The writer thread: the only connection that writes. Group commit: it takes every write
//! waiting in its channel (up to a cap), runs each in its own savepoint inside one
//! transaction, commits once, and only then answers each caller. A write that fails
//! rolls back to its savepoint without touching the others; a failed commit fails all.
//! Its counters ([`WriterMetrics`]) are registered in `/metrics` by the caller.
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::StoreError;

/// Counters of the writer thread, registered in `/metrics` by the caller.
#[derive(Debug, Clone)]
pub struct WriterMetrics {
    /// Transactions committed.
    pub commits: Counter,
    /// Transactions that failed to commit.
    pub failed_commits: Counter,
    /// Writes per transaction.
    pub group_size: Histogram,
    /// Time to run and commit one transaction, in seconds.
    pub commit_seconds: Histogram,
}

impl Default for WriterMetrics {
    fn default() -> Self {
        WriterMetrics {
            commits: Counter::default(),
            failed_commits: Counter::default(),
            group_size: Histogram::new(exponential_buckets(1.0, 2.0, 8)),
            commit_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
        }
    }
}

impl WriterMetrics {
    pub(crate) fn observe_commit(&self, jobs: usize, took: Duration, ok: bool) {
        if ok {
            self.commits.inc();
        } else {
            self.failed_commits.inc();
        }
        self.group_size.observe(jobs as f64);
        self.commit_seconds.observe(took.as_secs_f64());
    }
}

/// Tells a job how its transaction ended: `Ok` once committed.
type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;

/// One write: runs on the writer's connection (or learns the transaction could not
/// start) and returns how to answer its caller once the commit is known.
type Job = Box<dyn FnOnce(Result<&Connection, String>) -> Completion + Send>;

/// Most writes committed in one transaction.
const MAX_GROUP: usize = 128;

/// Handle to the writer thread. Dropping every handle stops the thread after it has
/// committed what it was given.
pub(crate) struct Writer {
    tx: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the thread on `conn`.
    pub(crate) fn start(
        conn: Connection,
        metrics: WriterMetrics,
        queue: usize,
    ) -> std::io::Result<(Writer, JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel::<Job>(queue.max(1));
        let handle = std::thread::Builder::new()
            .name("plb-store-writer".into())
            .spawn(move || run(conn, rx, metrics))?;
        Ok((Writer { tx }, handle))
    }

    /// Queues `f` and resolves with its result once its transaction has committed.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (done, answer) = oneshot::channel::<Result<T, StoreError>>();
        let job: Job = Box::new(move |conn| {
            let result = match conn {
                Ok(conn) => in_savepoint(conn, f),
                Err(e) => Err(StoreError::Commit(e)),
            };
            Box::new(move |commit| {
                let out = match (result, commit) {
                    (Ok(v), Ok(())) => Ok(v),
                    (Ok(_), Err(e)) => Err(StoreError::Commit(e)),
                    (Err(e), _) => Err(e),
                };
                // The caller may have gone away (client disconnected): the write stands.
                let _ = done.send(out);
            })
        });
        self.tx.send(job).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.execute_batch("SAVEPOINT job")?;
    match f(conn) {
        Ok(v) => {
            conn.execute_batch("RELEASE job")?;
            Ok(v)
        }
        Err(e) => {
            conn.execute_batch("ROLLBACK TO job; RELEASE job")?;
            Err(e)
        }
    }
}

fn run(conn: Connection, mut rx: mpsc::Receiver<Job>, metrics: WriterMetrics) {
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = rx.blocking_recv() {
        jobs.push(first);
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let n = jobs.len();
        let started = std::time::Instant::now();
        let began = conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| format!("begin: {e}"));
        if let Err(e) = &began {
            tracing::error!(error = %e, "store writer cannot begin a transaction");
        }
        let mut completions: Vec<Completion> = Vec::with_capacity(n);
        for job in jobs.drain(..) {
            // SQLite may roll a whole transaction back on its own (disk full, I/O
            // error): the jobs after that are failed, not run outside a transaction.
            let open = began.is_ok() && !conn.is_autocommit();
            completions.push(if open {
                job(Ok(&conn))
            } else {
                job(Err(began.clone().err().unwrap_or_else(|| {
                    "the transaction was rolled back".to_string()
                })))
            });
        }
        let commit = if began.is_err() || conn.is_autocommit() {
            Err("the transaction was rolled back".to_string())
        } else {
            match conn.execute_batch("COMMIT") {
                Ok(()) => Ok(()),
                Err(e) => {
                    tracing::error!(error = %e, jobs = n, "store commit failed; rolling back");
                    let _ = conn.execute_batch("ROLLBACK");
                    Err(e.to_string())
                }
            }
        };
        metrics.observe_commit(n, started.elapsed(), commit.is_ok());
        for c in completions {
            c(commit.clone());
        }
    }
    tracing::debug!("store writer stopped");
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_write_rolls_back_alone_and_writes_share_commits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("w.db");
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (x INTEGER UNIQUE);")
            .expect("schema");
        let metrics = WriterMetrics::default();
        let (w, thread) = Writer::start(conn, metrics.clone(), 256).expect("writer");
        let w = Arc::new(w);
        let handles: Vec<_> = (0..90i64)
            .map(|i| {
                let w = Arc::clone(&w);
                tokio::spawn(async move {
                    w.write(move |c| {
                        c.execute("INSERT INTO t VALUES (?1)", [i])?;
                        if i % 3 == 0 {
                            // Fails: its first insert must not survive.
                            c.execute("INSERT INTO t VALUES (?1)", [i])?;
                        }
                        Ok(i)
                    })
                    .await
                })
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            let r = h.await.expect("task");
            assert_eq!(r.is_ok(), i % 3 != 0, "write {i}: {r:?}");
        }
        let check = Connection::open(&path).expect("open");
        let (n, bad): (i64, i64) = check
            .query_row(
                "SELECT count(*), count(*) FILTER (WHERE x % 3 = 0) FROM t",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("count");
        assert_eq!((n, bad), (60, 0));
        assert!(metrics.commits.get() <= 90);
        drop(w);
        thread
            .join()
            .expect("the writer stops when its handles are gone");
    }
}
