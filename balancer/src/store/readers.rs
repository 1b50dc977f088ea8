//! A bounded pool of read-only connections, used on tokio's blocking threads. In WAL mode
//! readers never block the writer nor each other, and see the last committed state.
//!
//! At most `max` connections are ever open: a read first waits (asynchronously, holding
//! no thread) for one of `max` permits, then takes an idle connection or opens one. So a
//! flood of reads (e.g. token lookups of unknown tokens, which no cache answers) queues
//! instead of opening a connection, and a blocking thread, per request.
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use super::StoreError;

/// Bytes of the database file read through a memory map, per connection (the writer's
/// too).
pub(crate) const MMAP_BYTES: i64 = 256 * 1024 * 1024;

pub(crate) struct Readers {
    path: PathBuf,
    /// Connections not in use. With `permits`, `in use + idle <= max` at all times.
    idle: Mutex<Vec<Connection>>,
    /// One per connection that may be in use.
    permits: Arc<Semaphore>,
}

impl Readers {
    /// A pool of at most `max` (at least 1) connections to `path`.
    pub(crate) fn new(path: PathBuf, max: usize) -> Arc<Readers> {
        Arc::new(Readers {
            path,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(max.max(1))),
        })
    }

    fn open(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "cache_size", -16 * 1024)?;
        conn.pragma_update(None, "mmap_size", MMAP_BYTES)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }

    /// An idle connection or a new one; call only while holding a permit.
    fn take(&self) -> Result<Connection, StoreError> {
        let idle = self.idle.lock().map(|mut v| v.pop()).unwrap_or(None);
        match idle {
            Some(c) => Ok(c),
            None => self.open(),
        }
    }

    /// Keeps `conn` for the next read (before the permit is released, so the count
    /// holds).
    fn give_back(&self, conn: Connection) {
        if let Ok(mut v) = self.idle.lock() {
            v.push(conn);
        }
    }

    /// Runs `f` on a read connection, on a blocking thread, once one of the pool's
    /// connections is free.
    pub(crate) async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = me.take()?;
            // One snapshot for every statement of `f`.
            conn.execute_batch("BEGIN")?;
            let out = f(&conn);
            let end = conn.execute_batch("COMMIT");
            if end.is_ok() {
                me.give_back(conn);
            }
            let v = out?;
            end?;
            Ok(v)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// Many concurrent reads never hold more than `max` connections at once, and all of
    /// them are answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn reads_beyond_the_bound_wait_for_a_connection() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.db");
        Connection::open(&path)
            .and_then(|c| c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (x);"))
            .expect("create");
        let readers = Readers::new(path, 3);
        let busy = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let (r, busy, peak) = (Arc::clone(&readers), Arc::clone(&busy), Arc::clone(&peak));
            tasks.push(tokio::spawn(async move {
                r.read(move |c| {
                    let now = busy.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    let n: i64 = c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?;
                    busy.fetch_sub(1, Ordering::SeqCst);
                    Ok(n)
                })
                .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.expect("task").expect("read"), 0);
        }
        assert_eq!(peak.load(Ordering::SeqCst), 3);
        assert!(readers.idle.lock().expect("lock").len() <= 3);
    }
}
