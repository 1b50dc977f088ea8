//! A small pool of read-only connections, used on tokio's blocking threads. In WAL mode
//! readers never block the writer nor each other, and see the last committed state.
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};

use super::StoreError;

/// Bytes of the database file read through a memory map, per connection (the writer's
/// too).
pub(crate) const MMAP_BYTES: i64 = 256 * 1024 * 1024;

pub(crate) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    max_idle: usize,
}

impl Readers {
    pub(crate) fn new(path: PathBuf, max_idle: usize) -> Arc<Readers> {
        Arc::new(Readers {
            path,
            idle: Mutex::new(Vec::new()),
            max_idle: max_idle.max(1),
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

    fn take(&self) -> Result<Connection, StoreError> {
        let idle = self.idle.lock().map(|mut v| v.pop()).unwrap_or(None);
        match idle {
            Some(c) => Ok(c),
            None => self.open(),
        }
    }

    fn give_back(&self, conn: Connection) {
        if let Ok(mut v) = self.idle.lock()
            && v.len() < self.max_idle
        {
            v.push(conn);
        }
    }

    /// Runs `f` on a read connection, on a blocking thread.
    pub(crate) async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
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
