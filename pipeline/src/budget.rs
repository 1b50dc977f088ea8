//! The shed budget: how much of a pool may be shed at once. A degrade score takes
//! weight away from a node, and that weight lands on the others; when the pool is
//! already busy because some nodes are shed, its healthy nodes' metrics all climb and
//! whichever is noisiest at the moment stands out from its peers, gets shed in turn,
//! and pushes the rest further (a cascade). The budget caps the sum of the degrade
//! scores of the nodes still routed at `budget × nodes` less the nodes already out of
//! service (their capacity is gone too), and at least one node's worth, so a single
//! bad node can always be shed in full; the highest scores keep theirs and the rest
//! share what is left, so the nodes that look worst are the ones shed. Pure.

/// The scores after the budget: nodes out of service (`routed[i]` false) keep theirs
/// and take none of it; the others' are unchanged when their sum fits in
/// `max(1, budget × n − nodes out of service)`, else the highest kept in full in turn
/// (ties in pool order) and the remainder given to the next. A budget of 1 or more (or
/// not finite) is no limit.
pub fn shed_budget(scores: &[f64], routed: &[bool], budget: f64) -> Vec<f64> {
    let n = scores.len();
    if !budget.is_finite() || budget >= 1.0 {
        return scores.to_vec();
    }
    let is_routed = |i: usize| routed.get(i).copied().unwrap_or(true);
    let out_of_service = (0..n).filter(|&i| !is_routed(i)).count();
    let total = (budget.max(0.0) * n as f64 - out_of_service as f64).max(1.0);
    let clean = |s: f64| {
        if s.is_finite() {
            s.clamp(0.0, 1.0)
        } else {
            0.0
        }
    };
    let mut order: Vec<usize> = (0..n).filter(|&i| is_routed(i)).collect();
    if order.iter().map(|&i| clean(scores[i])).sum::<f64>() <= total {
        return scores.to_vec();
    }
    order.sort_by(|&a, &b| clean(scores[b]).total_cmp(&clean(scores[a])));
    let mut left = total;
    let mut capped = scores.to_vec();
    for i in order {
        let kept = clean(scores[i]).min(left);
        capped[i] = kept;
        left -= kept;
    }
    capped
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [bool; 8] = [true; 8];

    #[test]
    fn scores_within_the_budget_are_untouched() {
        let s = [0.9, 0.8, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0];
        assert_eq!(shed_budget(&s, &ALL, 0.25), s.to_vec());
        assert_eq!(shed_budget(&s, &ALL, 1.0), s.to_vec());
    }

    #[test]
    fn past_the_budget_the_worst_nodes_keep_their_scores_and_the_rest_lose_theirs() {
        // Two slow nodes shed, then three busy healthy ones stand out in turn.
        let s = [0.95, 0.7, 0.9, 0.0, 1.0, 0.0, 0.3, 0.0];
        let out = shed_budget(&s, &ALL, 0.25);
        let sum: f64 = out.iter().sum();
        assert!((sum - 2.0).abs() < 1e-9, "{out:?}");
        assert_eq!(out[4], 1.0);
        assert_eq!(out[0], 0.95);
        assert!((out[2] - 0.05).abs() < 1e-9, "{out:?}");
        assert_eq!((out[1], out[6]), (0.0, 0.0));
    }

    #[test]
    fn one_node_can_always_be_shed_in_full() {
        assert_eq!(shed_budget(&[1.0, 0.0], &ALL, 0.25), vec![1.0, 0.0]);
        assert_eq!(
            shed_budget(&[1.0, 1.0, 0.0], &ALL, 0.1),
            vec![1.0, 0.0, 0.0]
        );
    }

    #[test]
    fn odd_scores_count_as_none() {
        let out = shed_budget(&[f64::NAN, 1.0, 1.0, 0.0], &ALL, 0.25);
        assert_eq!(out, vec![0.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn a_node_out_of_service_takes_none_of_the_budget_and_shrinks_it() {
        // A node back and cold, two busy ones: within two nodes' worth of eight.
        let s = [0.0, 0.9, 0.6, 0.3, 0.0, 0.0, 0.0, 0.0];
        assert_eq!(shed_budget(&s, &ALL, 0.25), s.to_vec());
        // With another one restarting (out of service, whatever its score), the pool
        // has lost that node's capacity too: one node's worth is left to shed.
        let mut routed = ALL;
        routed[0] = false;
        let mut down = s;
        down[0] = 1.0;
        let out = shed_budget(&down, &routed, 0.25);
        assert_eq!((out[0], out[1]), (1.0, 0.9));
        assert!((out[2] - 0.1).abs() < 1e-9, "{out:?}");
        assert!(out[3..].iter().all(|&x| x == 0.0), "{out:?}");
    }
}
