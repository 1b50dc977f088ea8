//! The shed budget: how much of a pool may be shed at once. A degrade score takes
//! weight away from a node, and that weight lands on the others; when the pool is
//! already busy because some nodes are shed, its healthy nodes' metrics all climb and
//! whichever is noisiest at the moment stands out from its peers, gets shed in turn,
//! and pushes the rest further (a cascade). The budget caps the sum of the routed
//! degrade scores at `budget × nodes` (at least one node's worth, so a single bad node
//! can always be shed in full); the highest scores keep theirs and the rest share what
//! is left, so the nodes that look worst are the ones shed. Pure.

/// The scores after the budget: unchanged when their sum fits in
/// `max(1, budget × n)`, else the highest kept in full in turn (ties in pool order)
/// and the remainder given to the next. A budget of 1 or more (or not finite) is no
/// limit.
pub fn shed_budget(scores: &[f64], budget: f64) -> Vec<f64> {
    let n = scores.len();
    if !budget.is_finite() || budget >= 1.0 {
        return scores.to_vec();
    }
    let total = (budget.max(0.0) * n as f64).max(1.0);
    let clean = |s: f64| {
        if s.is_finite() {
            s.clamp(0.0, 1.0)
        } else {
            0.0
        }
    };
    if scores.iter().map(|&s| clean(s)).sum::<f64>() <= total {
        return scores.to_vec();
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| clean(scores[b]).total_cmp(&clean(scores[a])));
    let mut left = total;
    let mut out = vec![0.0; n];
    for i in order {
        let kept = clean(scores[i]).min(left);
        out[i] = kept;
        left -= kept;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_within_the_budget_are_untouched() {
        let s = [0.9, 0.8, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0];
        assert_eq!(shed_budget(&s, 0.25), s.to_vec());
        assert_eq!(shed_budget(&s, 1.0), s.to_vec());
    }

    #[test]
    fn past_the_budget_the_worst_nodes_keep_their_scores_and_the_rest_lose_theirs() {
        // Two slow nodes shed, then three busy healthy ones stand out in turn.
        let s = [0.95, 0.7, 0.9, 0.0, 1.0, 0.0, 0.3, 0.0];
        let out = shed_budget(&s, 0.25);
        let sum: f64 = out.iter().sum();
        assert!((sum - 2.0).abs() < 1e-9, "{out:?}");
        assert_eq!(out[4], 1.0);
        assert_eq!(out[0], 0.95);
        assert!((out[2] - 0.05).abs() < 1e-9, "{out:?}");
        assert_eq!((out[1], out[6]), (0.0, 0.0));
    }

    #[test]
    fn one_node_can_always_be_shed_in_full() {
        assert_eq!(shed_budget(&[1.0, 0.0], 0.25), vec![1.0, 0.0]);
        assert_eq!(shed_budget(&[1.0, 1.0, 0.0], 0.1), vec![1.0, 0.0, 0.0]);
    }

    #[test]
    fn odd_scores_count_as_none() {
        let out = shed_budget(&[f64::NAN, 1.0, 1.0, 0.0], 0.25);
        assert_eq!(out, vec![0.0, 1.0, 0.0, 0.0]);
    }
}
