//! Replicas on one database: each replica's engine learns from the samples the others
//! store, by tailing the samples table by its `seq` identity column (PostgreSQL). The
//! cursor is pure; [`run`] reads the store with it each time the store says another
//! process committed samples (PostgreSQL's LISTEN/NOTIFY), or every [`POLL`] when no
//! word comes, and hands what other replicas stored to every ingest observer (the engine
//! and probe reliability), as local ingest does.
//!
//! `seq` is drawn when a row is inserted, not when its transaction commits, so a
//! transaction may commit a lower `seq` after a higher one was read. The cursor keeps
//! the positions it skipped over as gaps and asks for them again until they show up or
//! [`GAP_TTL_MS`] passes (a rolled-back insert never shows up).
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::ingest::IngestObserver;
use crate::store::Store;

/// How long a skipped position is asked for again.
pub const GAP_TTL_MS: i64 = 10_000;
/// Most skipped positions tracked (a wider hole is given up on beyond this).
const MAX_GAPS: usize = 10_000;
/// Rows read per poll at most.
const PAGE: i64 = 5_000;
/// How often the table is read when no wake-up comes (the fallback when the store's
/// LISTEN connection is down).
pub const POLL: Duration = Duration::from_millis(500);
/// Least time between two reads: wake-ups that come faster are merged.
const MIN_GAP: Duration = Duration::from_millis(10);

/// Where a tail stands: the highest position read and the gaps below it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cursor {
    /// Highest `seq` read.
    pub after: i64,
    /// Skipped positions and when they were first skipped (ms).
    gaps: BTreeMap<i64, i64>,
}

impl Cursor {
    /// A cursor after position `after`.
    pub fn new(after: i64) -> Self {
        Cursor {
            after,
            gaps: BTreeMap::new(),
        }
    }

    /// The gaps to ask for again.
    pub fn gaps(&self) -> Vec<i64> {
        self.gaps.keys().copied().collect()
    }

    /// Records the positions read at `now_ms` (ascending); forgets gaps older than
    /// [`GAP_TTL_MS`].
    pub fn read(&mut self, seqs: &[i64], now_ms: i64) {
        for &seq in seqs {
            if seq <= self.after {
                self.gaps.remove(&seq);
                continue;
            }
            let first_missing = self.after + 1;
            if seq > first_missing && self.gaps.len() < MAX_GAPS {
                let room = (MAX_GAPS - self.gaps.len()) as i64;
                for missing in first_missing..seq.min(first_missing + room) {
                    self.gaps.insert(missing, now_ms);
                }
            }
            self.after = seq;
        }
        self.gaps
            .retain(|_, first| now_ms.saturating_sub(*first) < GAP_TTL_MS);
    }
}

/// Reads `store` when woken (or every [`POLL`]) and hands the batches other processes
/// stored to `observer`, until the task is dropped. Returns at once for a store only this process
/// writes.
pub async fn run(store: Arc<dyn Store>, observer: Arc<dyn IngestObserver>) {
    let start = loop {
        match store.tail_start().await {
            Ok(None) => return,
            Ok(Some(s)) => break s,
            Err(e) => {
                tracing::warn!(error = %e, "sample tail: cannot read where to start; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let mut cursor = Cursor::new(start);
    let wake = Arc::new(tokio::sync::Notify::new());
    // The store's wake-ups (LISTEN/NOTIFY); polling stays as the fallback.
    let mut listen = store.listen_samples(Arc::clone(&wake));
    let mut listening = true;
    let mut last_read = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(POLL) => {}
            // A store that stops listening: poll only.
            _ = &mut listen, if listening => listening = false,
        }
        // Under heavy ingest the wake-ups come faster than reads are worth.
        tokio::time::sleep_until(last_read + MIN_GAP).await;
        last_read = tokio::time::Instant::now();
        // Pages until the table is read up to its end.
        loop {
            let page = match store.tail_samples(cursor.after, cursor.gaps(), PAGE).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "sample tail: read failed; retrying");
                    break;
                }
            };
            cursor.read(&page.seqs, crate::clock::now_ms());
            for b in page.batches {
                observer.committed(&Arc::new(b));
            }
            if (page.seqs.len() as i64) < PAGE {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_positions_are_asked_again_until_they_show_up_or_expire() {
        let mut c = Cursor::new(10);
        c.read(&[11, 12, 15], 1_000);
        assert_eq!(c.after, 15);
        assert_eq!(c.gaps(), vec![13, 14]);
        // 14 commits late; 13 never does.
        c.read(&[14, 16], 2_000);
        assert_eq!(c.after, 16);
        assert_eq!(c.gaps(), vec![13]);
        c.read(&[], 1_000 + GAP_TTL_MS);
        assert!(c.gaps().is_empty());
        // Nothing new: nothing changes.
        c.read(&[], 20_000);
        assert_eq!(c, Cursor::new(16));
    }

    #[test]
    fn a_huge_hole_is_bounded() {
        let mut c = Cursor::new(0);
        c.read(&[1_000_000], 0);
        assert_eq!(c.after, 1_000_000);
        assert_eq!(c.gaps().len(), MAX_GAPS);
    }
}
