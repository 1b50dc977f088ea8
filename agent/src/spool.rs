//! The sample spool: a write-ahead log on disk that every sample goes through. A sample
//! is appended (one JSON line, written through to the OS before `append` returns, so it
//! survives `kill -9`) before anyone may send it; the reporter reads batches from the
//! cursor, and only after the balancer accepted a batch does the cursor move past it.
//! A crash between the balancer's answer and the cursor update resends that batch,
//! which is safe: sample ids are UUIDs and the balancer stores each id once.
//!
//! Layout under the spool's `wal/` directory: numbered segment files of JSON lines,
//! oldest first, and a `cursor` file `{segment, offset, dropped}` replaced atomically
//! but not flushed to disk (after a power loss it may be older than the last commit,
//! which only means a resend).
//! The log is bounded by bytes: past the bound whole oldest segments are dropped, and
//! the number of samples dropped is kept (in the cursor file, so a restart keeps it)
//! until a report carrying it is accepted.
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use plb_api::Sample;
use serde::{Deserialize, Serialize};

/// A place in the log: byte `offset` in segment `segment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct Position {
    /// Segment id.
    pub segment: u64,
    /// Byte offset in it (always at a record boundary).
    pub offset: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
struct CursorFile {
    segment: u64,
    offset: u64,
    #[serde(default)]
    dropped: u64,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    id: u64,
    /// File length.
    bytes: u64,
    /// Records in the file (complete lines).
    records: u64,
}

/// A batch read from the cursor, to be committed once the balancer accepted it.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The samples, oldest first.
    pub samples: Vec<Sample>,
    /// Where the log continues after this batch.
    pub end: Position,
    /// Records in `end.segment` before `end.offset`.
    end_index: u64,
    /// Samples dropped (spool full) not yet reported, to send with this batch.
    pub dropped: u64,
    /// Lines skipped because they could not be parsed (disk corruption).
    pub corrupt: u64,
}

impl Batch {
    /// Whether the batch moves the cursor at all.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty() && self.corrupt == 0
    }
}

/// The on-disk spool. Synchronous: call it from a blocking thread or under a short lock.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_max: u64,
    /// Oldest first; the front holds the cursor, the back is appended to.
    segments: VecDeque<Segment>,
    head: File,
    cursor: Position,
    /// Records in the cursor's segment before the cursor.
    cursor_index: u64,
    pending_records: u64,
    pending_bytes: u64,
    /// Dropped and not yet reported.
    dropped: u64,
    /// Dropped by this process (for metrics).
    dropped_total: u64,
    unsynced: bool,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

fn segment_id(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".seg")?.parse().ok()
}

/// Counts complete lines and returns the length up to the last complete one.
fn scan(path: &Path) -> io::Result<(u64, u64)> {
    let mut f = BufReader::new(File::open(path)?);
    let (mut records, mut good, mut pos) = (0u64, 0u64, 0u64);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = f.read_until(b'\n', &mut buf)? as u64;
        if n == 0 {
            break;
        }
        pos += n;
        if buf.last() == Some(&b'\n') {
            records += 1;
            good = pos;
        }
    }
    Ok((records, good))
}

/// Counts complete lines before `offset`.
fn count_before(path: &Path, offset: u64) -> io::Result<u64> {
    let mut bytes = Vec::new();
    File::open(path)?.take(offset).read_to_end(&mut bytes)?;
    Ok(bytes.iter().filter(|b| **b == b'\n').count() as u64)
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, bounded to `max_bytes` of unsent samples.
    /// Recovers from a crash: a torn last line is cut off, and everything after the
    /// cursor is pending again.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Spool> {
        fs::create_dir_all(dir)?;
        let cursor_file = match fs::read(dir.join("cursor")) {
            Ok(b) => match serde_json::from_slice::<CursorFile>(&b) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), "unreadable spool cursor, replaying the whole spool: {e}");
                    None
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let mut ids: Vec<u64> = fs::read_dir(dir)?
            .filter_map(|e| e.ok().and_then(|e| segment_id(&e.path())))
            .collect();
        ids.sort_unstable();
        let (mut cursor, dropped) = match &cursor_file {
            Some(c) => (
                Position {
                    segment: c.segment,
                    offset: c.offset,
                },
                c.dropped,
            ),
            None => (Position::default(), 0),
        };
        // Segments wholly before the cursor were sent: remove leftovers.
        for id in ids.iter().filter(|id| **id < cursor.segment) {
            fs::remove_file(segment_path(dir, *id))?;
        }
        ids.retain(|id| *id >= cursor.segment);
        let mut segments = VecDeque::new();
        for id in &ids {
            let path = segment_path(dir, *id);
            let (records, good) = scan(&path)?;
            let len = fs::metadata(&path)?.len();
            if good < len {
                tracing::warn!(path = %path.display(), "cutting a torn record ({} bytes) off the spool", len - good);
                OpenOptions::new().write(true).open(&path)?.set_len(good)?;
            }
            segments.push_back(Segment {
                id: *id,
                bytes: good,
                records,
            });
        }
        match segments.front() {
            Some(front) if front.id == cursor.segment => {
                cursor.offset = cursor.offset.min(front.bytes)
            }
            Some(front) => {
                cursor = Position {
                    segment: front.id,
                    offset: 0,
                }
            }
            None => {
                let id = cursor.segment.max(1);
                File::create(segment_path(dir, id))?;
                segments.push_back(Segment {
                    id,
                    bytes: 0,
                    records: 0,
                });
                cursor = Position {
                    segment: id,
                    offset: 0,
                };
            }
        }
        let cursor_index = count_before(&segment_path(dir, cursor.segment), cursor.offset)?;
        let back_id = segments.back().map_or(cursor.segment, |s| s.id);
        let head = OpenOptions::new()
            .append(true)
            .open(segment_path(dir, back_id))?;
        let pending_records = segments.iter().map(|s| s.records).sum::<u64>() - cursor_index;
        let pending_bytes = segments.iter().map(|s| s.bytes).sum::<u64>() - cursor.offset;
        let spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_max: (max_bytes / 8).max(4096),
            segments,
            head,
            cursor,
            cursor_index,
            pending_records,
            pending_bytes,
            dropped,
            dropped_total: 0,
            unsynced: false,
        };
        spool.write_cursor()?;
        Ok(spool)
    }

    /// Samples not yet accepted by the balancer.
    pub fn pending_records(&self) -> u64 {
        self.pending_records
    }

    /// Bytes of samples not yet accepted.
    pub fn pending_bytes(&self) -> u64 {
        self.pending_bytes
    }

    /// Samples dropped and not yet reported to the balancer.
    pub fn dropped_unreported(&self) -> u64 {
        self.dropped
    }

    /// Samples this process dropped because the spool was full.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }

    /// Appends one sample. When this returns `Ok`, the sample is in the OS's hands
    /// (it survives the process being killed) and will be sent unless the spool
    /// overflows. Returns how many older samples were dropped to stay in bounds.
    pub fn append(&mut self, sample: &Sample) -> io::Result<u64> {
        let mut line = serde_json::to_vec(sample).map_err(io::Error::other)?;
        line.push(b'\n');
        let len = line.len() as u64;
        let back = self.back();
        if back.bytes > 0 && back.bytes + len > self.segment_max {
            self.rotate()?;
        }
        let before = self.back().bytes;
        if let Err(e) = self.head.write_all(&line) {
            // Leave no partial record behind.
            let _ = self.head.set_len(before);
            return Err(e);
        }
        let back = self.back_mut();
        back.bytes += len;
        back.records += 1;
        self.pending_bytes += len;
        self.pending_records += 1;
        self.unsynced = true;
        self.enforce_bound()
    }

    fn back(&self) -> Segment {
        self.segments.back().copied().unwrap_or(Segment {
            id: self.cursor.segment,
            bytes: 0,
            records: 0,
        })
    }

    fn back_mut(&mut self) -> &mut Segment {
        if self.segments.is_empty() {
            self.segments.push_back(Segment {
                id: self.cursor.segment,
                bytes: 0,
                records: 0,
            });
        }
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.head.sync_data()?;
        let id = self.back().id + 1;
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .truncate(false)
            .open(segment_path(&self.dir, id))?;
        self.head = file;
        self.segments.push_back(Segment {
            id,
            bytes: 0,
            records: 0,
        });
        Ok(())
    }

    /// Drops whole oldest segments while the unsent bytes exceed the bound.
    fn enforce_bound(&mut self) -> io::Result<u64> {
        let mut lost_now = 0;
        while self.pending_bytes > self.max_bytes && self.segments.len() > 1 {
            let Some(oldest) = self.segments.pop_front() else {
                break;
            };
            let lost = oldest.records.saturating_sub(self.cursor_index);
            self.pending_records = self.pending_records.saturating_sub(lost);
            self.pending_bytes = self
                .pending_bytes
                .saturating_sub(oldest.bytes.saturating_sub(self.cursor.offset));
            lost_now += lost;
            fs::remove_file(segment_path(&self.dir, oldest.id))?;
            let next = self.segments.front().map_or(oldest.id + 1, |s| s.id);
            self.cursor = Position {
                segment: next,
                offset: 0,
            };
            self.cursor_index = 0;
        }
        if lost_now > 0 {
            self.dropped += lost_now;
            self.dropped_total += lost_now;
            tracing::warn!(
                dropped = lost_now,
                max_bytes = self.max_bytes,
                "spool full: dropped the oldest unsent samples"
            );
            self.write_cursor()?;
        }
        Ok(lost_now)
    }

    /// Reads up to `max_records` samples (and about `max_bytes`) from the cursor on,
    /// without moving it.
    pub fn peek(&self, max_records: usize, max_bytes: u64) -> io::Result<Batch> {
        let mut samples = Vec::new();
        let mut corrupt = 0;
        let mut pos = self.cursor;
        let mut index = self.cursor_index;
        let mut read_bytes = 0u64;
        let mut line = Vec::new();
        'segments: for seg in self.segments.iter().filter(|s| s.id >= self.cursor.segment) {
            if seg.id != pos.segment {
                pos = Position {
                    segment: seg.id,
                    offset: 0,
                };
                index = 0;
            }
            if pos.offset >= seg.bytes {
                continue;
            }
            let mut file = File::open(segment_path(&self.dir, seg.id))?;
            file.seek(SeekFrom::Start(pos.offset))?;
            let mut reader = BufReader::new(file.take(seg.bytes - pos.offset));
            loop {
                if samples.len() >= max_records || (read_bytes >= max_bytes && !samples.is_empty())
                {
                    break 'segments;
                }
                line.clear();
                let n = reader.read_until(b'\n', &mut line)? as u64;
                if n == 0 || line.last() != Some(&b'\n') {
                    break;
                }
                pos.offset += n;
                index += 1;
                read_bytes += n;
                match serde_json::from_slice::<Sample>(&line[..line.len() - 1]) {
                    Ok(s) => samples.push(s),
                    Err(e) => {
                        corrupt += 1;
                        tracing::error!(
                            segment = seg.id,
                            "skipping an unreadable spooled sample: {e}"
                        );
                    }
                }
            }
        }
        Ok(Batch {
            samples,
            end: pos,
            end_index: index,
            dropped: self.dropped,
            corrupt,
        })
    }

    /// Moves the cursor past `batch` after the balancer accepted it. Safe to call with
    /// a batch that the bound partly dropped meanwhile.
    pub fn commit(&mut self, batch: &Batch) -> io::Result<()> {
        self.dropped = self.dropped.saturating_sub(batch.dropped);
        if batch.end > self.cursor {
            let consumed = self.records_between(batch.end, batch.end_index);
            let bytes: u64 = self
                .segments
                .iter()
                .filter(|s| s.id >= self.cursor.segment && s.id < batch.end.segment)
                .map(|s| s.bytes)
                .sum::<u64>()
                + batch.end.offset
                - self.cursor.offset;
            self.pending_records = self.pending_records.saturating_sub(consumed);
            self.pending_bytes = self.pending_bytes.saturating_sub(bytes);
            self.cursor = batch.end;
            self.cursor_index = batch.end_index;
            // Segments before the cursor, and the cursor's own once read to its end
            // (unless it is the one being appended to), are done.
            while self.segments.len() > 1 {
                let Some(front) = self.segments.front().copied() else {
                    break;
                };
                let done = front.id < self.cursor.segment
                    || (front.id == self.cursor.segment && self.cursor.offset >= front.bytes);
                if !done {
                    break;
                }
                self.segments.pop_front();
                fs::remove_file(segment_path(&self.dir, front.id))?;
                if let Some(next) = self.segments.front()
                    && next.id > self.cursor.segment
                {
                    self.cursor = Position {
                        segment: next.id,
                        offset: 0,
                    };
                    self.cursor_index = 0;
                }
            }
        }
        self.write_cursor()
    }

    fn records_between(&self, end: Position, end_index: u64) -> u64 {
        if end.segment == self.cursor.segment {
            return end_index.saturating_sub(self.cursor_index);
        }
        let mut n = 0;
        for s in &self.segments {
            if s.id == self.cursor.segment {
                n += s.records.saturating_sub(self.cursor_index);
            } else if s.id > self.cursor.segment && s.id < end.segment {
                n += s.records;
            }
        }
        n + end_index
    }

    /// Flushes appended records to stable storage (they already survive a crash of
    /// this process; this makes them survive a crash of the machine).
    pub fn sync(&mut self) -> io::Result<()> {
        if self.unsynced {
            self.head.sync_data()?;
            self.unsynced = false;
        }
        Ok(())
    }

    fn write_cursor(&self) -> io::Result<()> {
        let body = serde_json::to_vec(&CursorFile {
            segment: self.cursor.segment,
            offset: self.cursor.offset,
            dropped: self.dropped,
        })
        .map_err(io::Error::other)?;
        // Replaced atomically (a crash of this process leaves the old cursor or the new
        // one), but not flushed to stable storage: after a crash of the machine the
        // cursor may be an older one, or unreadable, and the spool then resends from
        // there, which the balancer deduplicates by sample id (a count of dropped
        // samples may then be reported twice). An `fdatasync` here, once per accepted
        // report, was about a fifth of an agent's CPU in a profile of a benchmark lane
        // (`bench/RESULTS.md`).
        let tmp = self.dir.join("cursor.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&body)?;
        drop(f);
        fs::rename(&tmp, self.dir.join("cursor"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use plb_api::Outcome;

    use super::*;

    fn sample(i: usize) -> Sample {
        Sample {
            id: format!("00000000-0000-0000-0000-{i:012}"),
            pool: "web".into(),
            probe: "p".into(),
            version: 1,
            taken_at_ms: i as i64,
            outcome: Outcome::Ok,
            metrics: BTreeMap::from([("latency-ms".to_string(), i as f64)]),
            duration_ms: 1.0,
            fuel_used: None,
            message: String::new(),
            stderr: String::new(),
        }
    }

    fn ids(b: &Batch) -> Vec<i64> {
        b.samples.iter().map(|s| s.taken_at_ms).collect()
    }

    /// Sends everything, `n` at a time, as a reporter would; returns the order seen.
    fn drain(s: &mut Spool, n: usize) -> Vec<i64> {
        let mut seen = Vec::new();
        loop {
            let b = s.peek(n, u64::MAX).expect("peek");
            if b.is_empty() {
                return seen;
            }
            seen.extend(ids(&b));
            s.commit(&b).expect("commit");
        }
    }

    #[test]
    fn appends_are_read_in_order_and_committed_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = Spool::open(dir.path(), 1 << 20).expect("open");
        for i in 0..100 {
            s.append(&sample(i)).expect("append");
        }
        assert_eq!(s.pending_records(), 100);
        let b = s.peek(10, u64::MAX).expect("peek");
        assert_eq!(ids(&b), (0..10).collect::<Vec<_>>());
        // Peeking again without commit gives the same batch (a failed send retries it).
        assert_eq!(ids(&s.peek(10, u64::MAX).expect("peek")), ids(&b));
        s.commit(&b).expect("commit");
        assert_eq!(s.pending_records(), 90);
        assert_eq!(drain(&mut s, 7), (10..100).collect::<Vec<_>>());
        assert_eq!(s.pending_records(), 0);
        assert_eq!(s.pending_bytes(), 0);
    }

    #[test]
    fn segments_rotate_and_are_removed_once_sent() {
        let dir = tempfile::tempdir().expect("tmp");
        // 64 KiB bound: 8 KiB segments.
        let mut s = Spool::open(dir.path(), 64 * 1024).expect("open");
        for i in 0..200 {
            s.append(&sample(i)).expect("append");
        }
        let segs = || {
            fs::read_dir(dir.path())
                .expect("ls")
                .filter(|e| e.as_ref().is_ok_and(|e| segment_id(&e.path()).is_some()))
                .count()
        };
        assert!(segs() > 2, "rotated into {} segments", segs());
        assert_eq!(drain(&mut s, 33), (0..200).collect::<Vec<_>>());
        assert_eq!(segs(), 1, "only the head segment is left");
        assert_eq!(s.dropped_total(), 0);
    }

    #[test]
    fn a_restart_resumes_at_the_cursor_and_nothing_is_lost_or_repeated() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let mut s = Spool::open(dir.path(), 64 * 1024).expect("open");
            for i in 0..150 {
                s.append(&sample(i)).expect("append");
            }
            let b = s.peek(60, u64::MAX).expect("peek");
            s.commit(&b).expect("commit");
            // A batch read but not acknowledged before the crash is sent again.
            let _unacked = s.peek(40, u64::MAX).expect("peek");
            // dropped without sync or shutdown: like kill -9
        }
        let mut s = Spool::open(dir.path(), 64 * 1024).expect("reopen");
        assert_eq!(s.pending_records(), 90);
        for i in 150..160 {
            s.append(&sample(i)).expect("append");
        }
        assert_eq!(drain(&mut s, 25), (60..160).collect::<Vec<_>>());
        drop(s);
        let s = Spool::open(dir.path(), 64 * 1024).expect("reopen");
        assert_eq!(s.pending_records(), 0);
        assert!(s.peek(10, u64::MAX).expect("peek").is_empty());
    }

    #[test]
    fn a_torn_last_record_is_cut_off() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let mut s = Spool::open(dir.path(), 1 << 20).expect("open");
            for i in 0..5 {
                s.append(&sample(i)).expect("append");
            }
        }
        let seg = segment_path(dir.path(), 1);
        let mut f = OpenOptions::new()
            .append(true)
            .open(&seg)
            .expect("open seg");
        f.write_all(br#"{"id":"torn","po"#).expect("write");
        drop(f);
        let mut s = Spool::open(dir.path(), 1 << 20).expect("reopen");
        s.append(&sample(5)).expect("append");
        assert_eq!(drain(&mut s, 100), (0..6).collect::<Vec<_>>());
    }

    #[test]
    fn when_full_the_oldest_are_dropped_and_counted_until_reported() {
        let dir = tempfile::tempdir().expect("tmp");
        let bound = 64 * 1024;
        let mut s = Spool::open(dir.path(), bound).expect("open");
        let mut dropped = 0;
        for i in 0..2000 {
            dropped += s.append(&sample(i)).expect("append");
            assert!(
                s.pending_bytes() <= bound + 8 * 1024,
                "bounded: {}",
                s.pending_bytes()
            );
        }
        assert!(dropped > 0);
        assert_eq!(s.dropped_unreported(), dropped);
        assert_eq!(s.pending_records() + dropped, 2000);
        // The dropped count survives a restart.
        drop(s);
        let mut s = Spool::open(dir.path(), bound).expect("reopen");
        assert_eq!(s.dropped_unreported(), dropped);
        let b = s.peek(10, u64::MAX).expect("peek");
        assert_eq!(b.dropped, dropped);
        // What is left is the newest, in order, with no gap.
        let first = b.samples[0].taken_at_ms;
        assert_eq!(first as u64, dropped);
        s.commit(&b).expect("commit");
        assert_eq!(
            s.dropped_unreported(),
            0,
            "reported with the accepted batch"
        );
        let rest = drain(&mut s, 500);
        assert_eq!(rest, ((first + 10)..2000).collect::<Vec<_>>());
    }

    #[test]
    fn a_batch_partly_dropped_while_in_flight_commits_cleanly() {
        let dir = tempfile::tempdir().expect("tmp");
        let bound = 64 * 1024;
        let mut s = Spool::open(dir.path(), bound).expect("open");
        for i in 0..300 {
            s.append(&sample(i)).expect("append");
        }
        let in_flight = s.peek(400, u64::MAX).expect("peek");
        for i in 300..700 {
            s.append(&sample(i)).expect("append");
        }
        assert!(s.dropped_unreported() > 0);
        s.commit(&in_flight).expect("commit");
        let rest = drain(&mut s, 1000);
        // Nothing already sent comes again; what follows is contiguous to the newest.
        let first = *rest.first().expect("some left");
        assert!(first >= 300, "{first}");
        assert_eq!(rest, (first..700).collect::<Vec<_>>());
        assert_eq!(s.pending_records(), 0);
    }

    #[test]
    fn batches_are_bounded_by_bytes() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = Spool::open(dir.path(), 1 << 20).expect("open");
        for i in 0..50 {
            s.append(&sample(i)).expect("append");
        }
        let b = s.peek(1000, 1000).expect("peek");
        assert!(
            !b.samples.is_empty() && b.samples.len() < 50,
            "{}",
            b.samples.len()
        );
    }
}
