//! The simulator's clock: a binary heap of timed events (earliest first, ties in
//! insertion order) and a FIFO of client deadlines, which is already sorted because
//! every request gets the same timeout and requests are created in time order.
use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

/// What happens at an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EvKind {
    /// The next request arrives.
    Arrival,
    /// Node `node` finishes serving request `req` (unless it restarted since: `epoch`
    /// is the node's restart count when it began).
    Complete { node: u32, req: u32, epoch: u32 },
    /// Node `node`'s process goes down (a restart): what it held is lost.
    Crash { node: u32 },
    /// Request `req` gets an immediate error reply (fast 503, refused).
    Reply { req: u32 },
    /// A probe of node `node` starts.
    Probe { node: u32 },
    /// Probe sample `sample` reaches the balancer.
    Deliver { sample: u32 },
    /// The balancer publishes node views.
    Publish,
    /// Sidecar `sidecar` rebuilds its snapshot.
    Rebuild { sidecar: u16 },
    /// The oracle re-reads every node's speed.
    Tick,
}

#[derive(Debug, Clone, Copy)]
struct Ev {
    t: f64,
    seq: u64,
    kind: EvKind,
}

impl PartialEq for Ev {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ev {}

impl PartialOrd for Ev {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ev {
    /// Reversed, so the max-heap yields the earliest event (then the first inserted).
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .t
            .total_cmp(&self.t)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

/// The next thing to happen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Next {
    /// A heap event.
    Event(f64, EvKind),
    /// A client deadline: request `req` of generation `gen`.
    Deadline(f64, u32, u32),
}

/// Event heap plus deadline FIFO.
#[derive(Debug, Default)]
pub(crate) struct Clock {
    heap: BinaryHeap<Ev>,
    deadlines: VecDeque<(f64, u32, u32)>,
    seq: u64,
}

impl Clock {
    pub(crate) fn at(&mut self, t: f64, kind: EvKind) {
        self.seq += 1;
        self.heap.push(Ev {
            t,
            seq: self.seq,
            kind,
        });
    }

    /// A deadline at `t`, no earlier than any deadline queued before.
    pub(crate) fn deadline(&mut self, t: f64, req: u32, generation: u32) {
        debug_assert!(self.deadlines.back().is_none_or(|d| d.0 <= t));
        self.deadlines.push_back((t, req, generation));
    }

    /// Takes the earliest pending item if it is not later than `until`.
    pub(crate) fn next(&mut self, until: f64) -> Option<Next> {
        let te = self.heap.peek().map_or(f64::INFINITY, |e| e.t);
        let td = self.deadlines.front().map_or(f64::INFINITY, |d| d.0);
        if te.min(td) > until {
            return None;
        }
        if td <= te {
            let (t, r, g) = self.deadlines.pop_front()?;
            Some(Next::Deadline(t, r, g))
        } else {
            let e = self.heap.pop()?;
            Some(Next::Event(e.t, e.kind))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_ties_in_order_deadlines_merged() {
        let mut c = Clock::default();
        c.at(2.0, EvKind::Publish);
        c.at(1.0, EvKind::Probe { node: 1 });
        c.at(1.0, EvKind::Probe { node: 2 });
        c.deadline(1.5, 7, 0);
        c.deadline(3.0, 8, 0);
        let mut order = Vec::new();
        while let Some(n) = c.next(2.5) {
            order.push(n);
        }
        assert_eq!(
            order,
            vec![
                Next::Event(1.0, EvKind::Probe { node: 1 }),
                Next::Event(1.0, EvKind::Probe { node: 2 }),
                Next::Deadline(1.5, 7, 0),
                Next::Event(2.0, EvKind::Publish),
            ]
        );
        assert_eq!(c.next(10.0), Some(Next::Deadline(3.0, 8, 0)));
        assert_eq!(c.next(10.0), None);
    }
}
