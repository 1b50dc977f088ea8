//! The oracle: sees every node's true queue, busy workers, speed and error rate, and
//! sends each request to the node with the least expected completion time. A min
//! segment tree keeps the choice O(log n) per change at 10,000 nodes.
use crate::scenario::{Condition, NodeProfile};

/// Seconds charged per unit of error probability, so a failing node loses to any node
/// that would answer within that time.
const ERROR_COST: f64 = 10.0;

/// Expected time to complete one more request at a node in condition `c` with `busy`
/// workers busy and `queued` waiting (FIFO, `workers` servers, mean service time
/// `mean / speed`): the service time, plus the wait for a worker if all are busy
/// (`(waiting ahead + 1) × mean / workers` in expectation).
pub fn expected_completion(p: &NodeProfile, c: &Condition, busy: u32, queued: usize) -> f64 {
    if !c.serving() || c.speed <= 0.0 {
        return f64::INFINITY;
    }
    let m = p.mean_service / c.speed;
    let ahead = f64::from(busy) + queued as f64 + 1.0 - f64::from(p.workers);
    let wait = if ahead > 0.0 {
        ahead * m / f64::from(p.workers)
    } else {
        0.0
    };
    m + wait + ERROR_COST * c.error_rate
}

/// A min segment tree over node costs.
#[derive(Debug, Clone)]
pub struct MinTree {
    size: usize,
    /// (cost, node) per tree position; leaves at `size..2 × size`.
    tree: Vec<(f64, u32)>,
}

impl MinTree {
    /// `n` nodes, every cost infinite.
    pub fn new(n: usize) -> Self {
        let size = n.max(1).next_power_of_two();
        let mut tree = vec![(f64::INFINITY, 0u32); 2 * size];
        for (i, leaf) in tree[size..size + n].iter_mut().enumerate() {
            leaf.1 = i as u32;
        }
        for pos in (1..size).rev() {
            tree[pos] = min_of(tree[2 * pos], tree[2 * pos + 1]);
        }
        MinTree { size, tree }
    }

    /// Sets node `i`'s cost.
    pub fn set(&mut self, i: usize, cost: f64) {
        let mut pos = self.size + i;
        if pos >= self.tree.len() {
            return;
        }
        self.tree[pos].0 = if cost.is_nan() { f64::INFINITY } else { cost };
        while pos > 1 {
            pos /= 2;
            self.tree[pos] = min_of(self.tree[2 * pos], self.tree[2 * pos + 1]);
        }
    }

    /// The node with the least cost (the first on ties), `None` if every cost is
    /// infinite.
    pub fn best(&self) -> Option<usize> {
        let (c, i) = self.tree[1];
        c.is_finite().then_some(i as usize)
    }
}

fn min_of(a: (f64, u32), b: (f64, u32)) -> (f64, u32) {
    if b.0 < a.0 { b } else { a }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_tracks_the_minimum() {
        let mut t = MinTree::new(5);
        assert_eq!(t.best(), None);
        for (i, c) in [5.0, 3.0, 4.0, 9.0, 3.5].into_iter().enumerate() {
            t.set(i, c);
        }
        assert_eq!(t.best(), Some(1));
        t.set(1, 10.0);
        assert_eq!(t.best(), Some(4));
        t.set(4, f64::NAN);
        assert_eq!(t.best(), Some(2));
    }

    #[test]
    fn completion_grows_with_queue_and_slowness() {
        let p = NodeProfile::default();
        let c = Condition {
            present: true,
            up: true,
            speed: 1.0,
            error_rate: 0.0,
            refusing: false,
        };
        let idle = expected_completion(&p, &c, 0, 0);
        assert!((idle - p.mean_service).abs() < 1e-12);
        assert_eq!(expected_completion(&p, &c, 3, 0), idle, "a worker is free");
        assert!(expected_completion(&p, &c, 4, 2) > idle);
        let slow = Condition { speed: 0.25, ..c };
        assert!((expected_completion(&p, &slow, 0, 0) - 4.0 * idle).abs() < 1e-12);
        let down = Condition { up: false, ..c };
        assert!(expected_completion(&p, &down, 0, 0).is_infinite());
        let restarting = Condition {
            refusing: true,
            ..c
        };
        assert!(expected_completion(&p, &restarting, 0, 0).is_infinite());
    }
}
