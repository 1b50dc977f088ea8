//! `plb`: PLB's predictive policy. Weighted power of two choices over forecast-shaped
//! weights, a recovery floor for shed nodes, and rendezvous hashing with bounded load
//! for keyed requests. See the crate docs for the reasoning behind each part.
use plb_api::NodeState;
use rand::Rng;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use super::{
    Candidates, Decision, Facts, KeyMiss, KeyNote, Policy, PolicyConfig, PolicyKind, Reason,
    RouteRequest, Rule, p2c_on, score_of,
};
use crate::snapshot::Snapshot;

/// Most rendezvous candidates a keyed request may try.
const MAX_KEY_CANDIDATES: usize = 8;
/// Weighted draws tried before slow-start rejection gives up and takes the last draw.
const MAX_DRAWS: usize = 16;
/// Times the second weighted draw is redrawn when it hits the first node (pools of 3+).
const MAX_REDRAWS: usize = 3;
/// Seed that derives a key's shed and ramp draws from its rendezvous hash.
const KEY_DRAW_SEED: u64 = 0x9e37_79b9_7f4a_7c15;
/// Least latency used in a cost, seconds: keeps in-flight counts meaningful when an
/// idle node's estimate has decayed to almost nothing.
const MIN_LATENCY: f64 = 1e-6;
/// A node in slow start counts as still cold (its weight reduced in the full scan)
/// while its latency is above this multiple of the pool's median, or unknown.
const COLD_MARGIN: f64 = 1.2;
/// A node whose health factor is at least this counts as unshed for
/// `scan_busy_release`.
const UNSHED: f64 = 0.95;
/// Pools up to this size keep a full scan's latencies on the stack.
const SCAN_STACK: usize = 64;

/// The `plb` policy.
#[derive(Debug, Clone)]
pub struct Plb {
    config: PolicyConfig,
}

impl Plb {
    /// The policy with `config`.
    pub fn new(config: PolicyConfig) -> Self {
        Plb { config }
    }

    /// The node's cost for `work` more units at `now` with latency `lat` (lower wins):
    /// `latency × (1 + max(0, in flight + work − 1) / weight) × exp(error_penalty × error rate)`.
    /// For a typical request on a node of weight 1 this is Finagle's
    /// `latency × (in flight + 1)`; dividing the load by the weight makes in-flight
    /// counts settle in proportion to weight; and an idle node costs its latency alone
    /// whatever its weight, so idle candidates tie and the weighted draw decides (shares
    /// proportional to weight at low load, instead of the lighter node always losing).
    fn cost(&self, snap: &Snapshot, i: usize, lat: f64, work: f64, now: f64) -> f64 {
        let live = snap.live_at(i);
        let penalty = (self.config.error_penalty.max(0.0) * live.error_rate(now)).exp();
        let w = snap.weight_at(i, now).max(1e-12);
        let queue = (live.in_flight() as f64 + work - 1.0).max(0.0);
        lat.max(MIN_LATENCY) * (1.0 + queue / w) * penalty
    }

    /// One weighted draw among eligible nodes: alias table on the static weight, slow
    /// start applied by rejection so the draw is proportional to weight × ramp.
    fn draw<R: Rng + ?Sized>(&self, snap: &Snapshot, now: f64, rng: &mut R) -> Option<usize> {
        let shaping = snap.shaping();
        let mut last = None;
        for _ in 0..MAX_DRAWS {
            let i = snap.eligible()[snap.alias().sample(rng)?];
            let ramp = shaping.ramp(snap.ready_since_at(i), now);
            if ramp >= 1.0 || rng.random::<f64>() < ramp {
                return Some(i);
            }
            last = Some(i);
        }
        last
    }

    /// The lowest `latency^exp × (in flight + work) / weight × error penalty` over every
    /// eligible node, scanned from a random start so that ties fall at random. A node
    /// with no latency yet (or none since it re-entered service) is costed at the mean
    /// of those with one (neutral); a latency below the `scan_latency_floor` quantile of
    /// the pool's counts as that quantile (noise among peers buys no preference).
    /// Weight divides the whole cost, so a shed node costs more even when idle: the
    /// predicted shift holds without the weighted draw; the weight counts as at least
    /// `scan_weight_floor` of the node's full weight, so a shed node takes its turn
    /// once the rest of the pool is queued (with `scan_busy_release`, the floor itself
    /// rises to the full weight as the unshed nodes fill up, for a node whose own
    /// latency is near the pool's median). Slow start is a share instead, and only
    /// while the node is cold (not heard from since it came back, or slower than
    /// `COLD_MARGIN` × the pool's median): a ramping node takes part in that fraction
    /// of scans and its weight counts `share^slow_start_cost_exp`; a warm one takes
    /// part in every scan once it has been back `slow_start_warm_after` seconds. While
    /// it ramps, its latency counts at `slow_start_latency_exp` rather than `exp`
    /// (both relative to the floor, so that the two compare), and until its first
    /// answer since it came back it has at most `slow_start_scouts` requests in flight.
    /// A node out of slow start whose mean latency is above `scan_mean_gate` times the
    /// median mean of the nodes out of slow start counts at least that multiple of the
    /// floor (and is not released by `scan_busy_release`): its peak-EWMA, from few
    /// answers, can look like its busy peers'. Out of slow start, a node's peak counts
    /// at most `scan_peak_cap` times its own mean: one outlier does not price a
    /// healthy node out of the scans. For both, a node's mean fades while it takes in
    /// no answer (`scan_mean_fade`), so that a node the gate priced out is tried again.
    /// A node its clients gave up on sits out the scans while it rests, and its peak
    /// is not capped until it answers (`scan_give_ups`).
    fn full_scan<R: Rng + ?Sized>(
        &self,
        snap: &Snapshot,
        work: f64,
        now: f64,
        rng: &mut R,
    ) -> Option<(usize, f64)> {
        let eligible = snap.eligible();
        let n = eligible.len();
        if n == 0 {
            return None;
        }
        let exp = self.config.scan_latency_exp.clamp(0.0, 2.0);
        let penalty = self.config.error_penalty.max(0.0);
        let weight_floor = self.config.scan_weight_floor.clamp(0.0, 1.0);
        let ramp_exp = self.config.slow_start_cost_exp.clamp(0.0, 4.0);
        let start = rng.random_range(0..n);
        let shaping = snap.shaping();
        let warm_after = self.config.slow_start_warm_after;
        // Each latency read once (a read decays it), in scan order; a node without one
        // is costed at the mean of those with one (neutral) in the same pass, so it ties
        // with an average node and ties fall at random: a node that has never answered
        // (new, or dead) still gets tried.
        // With them each node's slow-start ramp: a node takes part in a scan in
        // proportion to its ramp against the highest, so nodes that all returned at
        // once (the pool lost its network) compete by cost alone.
        let mut stack = [(None, 1.0, f64::INFINITY, None); SCAN_STACK];
        let mut heap = Vec::new();
        let lats: &mut [(Option<f64>, f64, f64, Option<f64>)] = if n <= SCAN_STACK {
            &mut stack[..n]
        } else {
            heap.resize(n, (None, 1.0, f64::INFINITY, None));
            &mut heap
        };
        // The mean latencies, packed, for their median (only with `scan_mean_gate`).
        let mean_gate = self.config.scan_mean_gate;
        let use_mean = mean_gate.is_finite() && mean_gate > 0.0;
        // Out of slow start, a peak above `scan_peak_cap` times the node's mean counts
        // as that multiple (the means are read for either).
        let use_cap = self.config.scan_peak_cap.is_finite() && self.config.scan_peak_cap > 0.0;
        let peak_cap = self.config.scan_peak_cap.max(1.0);
        // A mean fades while its node takes in no answer (never, when infinite).
        let fade_tau = self.config.scan_mean_fade.max(1e-3);
        let fades = fade_tau.is_finite();
        let give_ups = self.config.scan_give_ups;
        let (mut means_stack, mut means_heap) = ([0.0f64; SCAN_STACK], Vec::new());
        let known_means = scratch(&mut means_stack, &mut means_heap, n);
        let mut means_known = 0usize;
        // The known latencies again, packed, for the floor's quantile.
        let (mut known_stack, mut known_heap) = ([0.0f64; SCAN_STACK], Vec::new());
        let known_lats = scratch(&mut known_stack, &mut known_heap, n);
        let (mut sum, mut known, mut top_ramp, mut low_ramp) = (0.0, 0usize, 0.0f64, 1.0f64);
        // The fewest requests in flight on a node at (nearly) full weight.
        let busy_release = self.config.scan_busy_release;
        let mut least_busy = u64::MAX;
        for (off, slot) in lats.iter_mut().enumerate() {
            let i = eligible[(start + off) % n];
            if busy_release.is_finite() && snap.derived(i).health >= UNSHED {
                least_busy = least_busy.min(snap.live_at(i).in_flight());
            }
            let ready = snap.ready_since_at(i);
            let ramp = shaping.ramp(ready, now);
            // Only nodes out of slow start are gated, and only against each other: a
            // node warming up takes fewer requests and queues less, and its lower mean
            // can set the bar by which its busier peers are judged.
            // The pool's median is taken over the means as they are; a node is judged
            // by its mean faded for the time it has been idle (a node the gate prices
            // out gets no answers to lower its mean, and must be tried again as its
            // peak-EWMA's decay would have it tried).
            let means = if (use_mean || use_cap) && ramp >= 1.0 {
                snap.live_at(i).mean_latency_idle(now, ready)
            } else {
                None
            };
            if let Some((m, _)) = means.filter(|_| use_mean) {
                known_means[means_known] = m;
                means_known += 1;
            }
            let mean = means.map(|(m, idle)| {
                if fades {
                    m * (-idle / fade_tau).exp()
                } else {
                    m
                }
            });
            *slot = (
                snap.live_at(i).latency_since(now, ready),
                ramp,
                ready.map_or(f64::INFINITY, |t| now - t),
                mean,
            );
            if let Some(l) = slot.0 {
                sum += l;
                known_lats[known] = l;
                known += 1;
            }
            top_ramp = top_ramp.max(slot.1);
            low_ramp = low_ramp.min(slot.1);
        }
        let neutral = if known > 0 { sum / known as f64 } else { 1.0 };
        // The weight floor rises toward 1 as the unshed nodes fill up, for the nodes
        // whose own latency is at most `scan_busy_release_within` × the median.
        let released_floor =
            if busy_release.is_finite() && busy_release > 0.0 && least_busy != u64::MAX {
                let r = (least_busy as f64 / busy_release).min(1.0);
                weight_floor + (1.0 - weight_floor) * r
            } else {
                weight_floor
            };
        // Quantiles of the known latencies, the last one kept: the gate, the latency
        // floor (the median by default) and slow start's median each read one, and a
        // repeat costs nothing.
        let mut last_q: Option<(f64, f64)> = None;
        let mut quantile = |lats: &mut [f64], q: f64| match last_q {
            Some((lq, v)) if lq.to_bits() == q.to_bits() => v,
            _ => {
                let v = latency_quantile(lats, q);
                last_q = Some((q, v));
                v
            }
        };
        let release_below = if released_floor > weight_floor {
            let within = self.config.scan_busy_release_within;
            if within.is_finite() {
                quantile(&mut known_lats[..known], 0.5) * within
            } else {
                f64::INFINITY
            }
        } else {
            0.0
        };
        // Without a latency term (exponent 0) there is nothing to floor.
        let floor = if exp > 0.0 {
            quantile(&mut known_lats[..known], self.config.scan_latency_floor)
        } else {
            0.0
        };
        // The pool's median latency, which a node in slow start must come within
        // `COLD_MARGIN` of to compete at its full weight and, once back
        // `slow_start_warm_after`, in every scan (only read while one ramps; 0 with
        // fewer than three latencies known, when every ramping node is cold).
        let middle = if low_ramp < top_ramp && (ramp_exp > 0.0 || warm_after.is_finite()) {
            quantile(&mut known_lats[..known], 0.5)
        } else {
            0.0
        };
        // Latencies are costed relative to the pool's latency floor (or mean), so that
        // nodes costed with different exponents compare.
        let lat_ref = if floor > 0.0 { floor } else { neutral }.max(MIN_LATENCY);
        // A node whose mean latency is more than `scan_mean_gate` times the pool's
        // median mean costs at least that multiple of the latency floor.
        let mean_mid = if use_mean && means_known >= 3 {
            latency_quantile(&mut known_means[..means_known], 0.5)
        } else {
            0.0
        };
        let ramp_lat_exp = self.config.slow_start_latency_exp.clamp(0.0, 2.0);
        let scouts = self.config.slow_start_scouts;
        let cost = |i: usize, lat: f64, ramp: f64, share: f64, cold: bool, floor_w: f64| {
            let live = snap.live_at(i);
            let w = snap.weight_at(i, now);
            if w <= 0.0 {
                return f64::INFINITY;
            }
            // A cold node in slow start counts `share^slow_start_cost_exp` of its
            // weight: a milder cut than the ramp, lifted once its own latency comes
            // near the pool's.
            let mut w = (w / ramp.max(1e-9)).max(snap.derived(i).base * floor_w);
            if cold && share < 1.0 && ramp_exp > 0.0 {
                w *= share.max(1e-9).powf(ramp_exp);
            }
            // A node in slow start has its own exponent (`slow_start_latency_exp`).
            let exp = if ramp < 1.0 { ramp_lat_exp } else { exp };
            let lat = if exp == 1.0 {
                lat.max(MIN_LATENCY)
            } else if exp > 0.0 {
                lat_ref * (lat.max(MIN_LATENCY) / lat_ref).powf(exp)
            } else {
                lat_ref
            };
            let err = live.error_rate(now);
            let penalty = if err > 0.0 {
                (penalty * err).exp()
            } else {
                1.0
            };
            lat * (live.in_flight() as f64 + work) / w * penalty
        };
        let mut best: Option<(usize, f64)> = None;
        // The best of the nodes slow start left out: the pick when it left out all
        // (every node returning at once, after the pool lost its network).
        let mut best_skipped: Option<(usize, f64)> = None;
        for (off, &(lat, ramp, back_for, mean)) in lats.iter().enumerate() {
            let i = eligible[(start + off) % n];
            let share = ramp / top_ramp.max(1e-9);
            // Slower than the pool's middle, or not yet heard from since it came back.
            let cold = lat.is_none_or(|l| l > middle * COLD_MARGIN);
            // Warm: near the pool's latency, and back long enough for that to be more
            // than its first few answers.
            let warm = !cold && back_for >= warm_after;
            // Slow start as a share, not a cost: a node ramping up that is not yet warm
            // takes part in a fraction `share` of the scans (its ramp against the
            // pool's highest). (Dividing its cost by the ramp would give it traffic
            // only once every other node had a queue: none at all in a calm pool, so a
            // restarted node never came back.)
            let skipped = share < 1.0 && !warm && rng.random::<f64>() >= share;
            // Not heard from since it came back: `slow_start_scouts` requests at a time
            // until it answers.
            let live = snap.live_at(i);
            let skipped = skipped
                || (ramp < 1.0 && lat.is_none() && scouts > 0 && live.in_flight() >= scouts);
            // Its clients gave up on it: it rests (a hung node costs one lost request
            // per rest, not one per client timeout), and the wait stands uncapped.
            let given_up = give_ups && live.given_up();
            let skipped = skipped || (given_up && live.resting(now));
            // Out of slow start, a mean above the gate is a floor under the latency.
            let mean_floor = match mean {
                Some(m) if mean_mid > 0.0 && m > mean_gate * mean_mid => lat_ref * m / mean_mid,
                _ => 0.0,
            };
            let wf = match lat {
                Some(l) if l.max(floor).max(mean_floor) <= release_below => released_floor,
                _ => weight_floor,
            };
            let lat = match (lat, mean) {
                (Some(l), Some(m)) if use_cap && !given_up => Some(l.min(m * peak_cap)),
                (l, _) => l,
            };
            let lat = lat.unwrap_or(neutral).max(floor).max(mean_floor);
            let c = cost(i, lat, ramp, share, cold, wf);
            let slot = if skipped {
                &mut best_skipped
            } else {
                &mut best
            };
            if slot.is_none_or(|(_, b)| c < b) {
                *slot = Some((i, c));
            }
        }
        best.filter(|(_, c)| c.is_finite())
            .or(best_skipped.filter(|(_, c)| c.is_finite()))
            .or_else(|| Some((eligible[start], f64::INFINITY)))
    }

    fn unkeyed<R: Rng + ?Sized>(
        &self,
        snap: &Snapshot,
        work: f64,
        now: f64,
        rng: &mut R,
        key: Option<KeyNote>,
    ) -> Option<Decision> {
        let decision = |index: usize, cost: f64, rule: Rule| Decision {
            index,
            score: score_of(cost),
            reason: Reason {
                policy: PolicyKind::Plb,
                rule,
                chosen: Facts::read(snap, index, now),
                key: key.clone(),
                best_effort: false,
            },
        };
        let u: f64 = rng.random();
        if u < snap.floor_total() {
            // The floor is there to see a shed node recover; an overdue node already
            // has that answer pending, and another request would only queue behind it;
            // a resting one (its clients gave up on it, again and again) is looked at
            // once per rest, not once per client timeout.
            let i = snap.floor_pick(u)?;
            let live = snap.live_at(i);
            if !live.overdue(now) && !live.resting(now) {
                let lat = live.latency(now).unwrap_or(1.0);
                return Some(decision(
                    i,
                    self.cost(snap, i, lat, work, now),
                    Rule::RecoveryFloor,
                ));
            }
        }
        if snap.eligible().len() <= self.config.full_scan_max {
            let (i, cost) = self.full_scan(snap, work, now, rng)?;
            let scanned = snap.eligible().len();
            let rule = if scanned == 1 {
                Rule::Only
            } else {
                Rule::FullScan { scanned }
            };
            return Some(decision(i, cost, rule));
        }
        let a = self.draw(snap, now, rng)?;
        // In pools of three or more, a second draw that hits the first node is redrawn
        // (a few times), so the power of two choices compares two nodes: with
        // replacement, about 1/n of the decisions in a pool of n similar nodes would be
        // a single weighted draw that ignores load (measured in plb-bench: +3% p99 on a
        // homogeneous 16-node pool, and 5x the errors of peak-ewma in a stall). Ties at
        // zero load still go to the first draw, so idle shares stay proportional to
        // weight; two-node pools keep plain draws with replacement (see the crate docs).
        let mut b = self.draw(snap, now, rng)?;
        if snap.eligible().len() > 2 {
            for _ in 0..MAX_REDRAWS {
                if b != a {
                    break;
                }
                b = self.draw(snap, now, rng)?;
            }
        }
        let la = snap.live_at(a).latency(now);
        if a == b {
            let cost = self.cost(snap, a, la.unwrap_or(1.0), work, now);
            return Some(decision(a, cost, Rule::DrawnTwice));
        }
        // A node with no latency yet is compared at the other's latency: neutral, so
        // neither an unknown nor a known node is favoured for that alone.
        let lb = snap.live_at(b).latency(now);
        let (la, lb) = match (la, lb) {
            (Some(x), Some(y)) => (x, y),
            (Some(x), None) => (x, x),
            (None, Some(y)) => (y, y),
            (None, None) => (1.0, 1.0),
        };
        let (ca, cb) = (
            self.cost(snap, a, la, work, now),
            self.cost(snap, b, lb, work, now),
        );
        let (win, lose, c) = if cb < ca { (b, a, cb) } else { (a, b, ca) };
        let mut d = decision(
            win,
            c,
            Rule::PowerOfTwo {
                other: Facts::read(snap, lose, now),
            },
        );
        d.reason.key = key;
        Some(d)
    }

    /// Rendezvous hashing with bounded load: the first of the key's top candidates (in
    /// weighted HRW order) that may take it, or the note for the fallback.
    fn keyed(&self, snap: &Snapshot, key: &str, work: f64, now: f64) -> Result<Decision, KeyNote> {
        let kb = xxh3_64(key.as_bytes()).to_le_bytes();
        let k = self.config.key_candidates.clamp(1, MAX_KEY_CANDIDATES);
        let uniform = snap.key_uniform();
        let mut top = [(f64::NEG_INFINITY, usize::MAX, 0u64); MAX_KEY_CANDIDATES];
        let total_in_flight = snap.pool_in_flight();
        for &(seed, base, i) in snap.key_table() {
            let h = xxh3_64_with_seed(&kb, seed);
            let score = if uniform {
                h as f64
            } else {
                // Weighted rendezvous: -w / ln(u), u uniform in (0, 1). Since
                // -ln(u) >= 1 - u, w / (1 - u) bounds the score from above: skip the
                // logarithm for a node that cannot enter the top k.
                let u = ((h >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64);
                if base / (1.0 - u) <= top[k - 1].0 {
                    continue;
                }
                -base / u.ln()
            };
            if score > top[k - 1].0 {
                let mut pos = k - 1;
                while pos > 0 && score > top[pos - 1].0 {
                    top[pos] = top[pos - 1];
                    pos -= 1;
                }
                top[pos] = (score, i, h);
            }
        }
        let owner = top[0].1;
        let mut note = KeyNote {
            owner,
            owner_miss: None,
            rank: None,
        };
        if owner == usize::MAX {
            return Err(note);
        }
        for (rank, &(_, i, h)) in top[..k].iter().enumerate() {
            if i == usize::MAX {
                break;
            }
            match self.key_miss(snap, i, h, total_in_flight, work, now) {
                None => {
                    note.rank = Some(rank);
                    let lat = snap.live_at(i).latency(now).unwrap_or(1.0);
                    return Ok(Decision {
                        index: i,
                        score: score_of(self.cost(snap, i, lat, work, now)),
                        reason: Reason {
                            policy: PolicyKind::Plb,
                            rule: Rule::Key,
                            chosen: Facts::read(snap, i, now),
                            key: Some(note),
                            best_effort: false,
                        },
                    });
                }
                Some(miss) if rank == 0 => note.owner_miss = Some(miss),
                Some(_) => {}
            }
        }
        Err(note)
    }

    /// Why node `i` may not take the key whose rendezvous hash with it is `h`, if so.
    /// The shed and slow-start tests use draws fixed by the key, so the same keys move
    /// as a node degrades and the same keys come back as it ramps up.
    fn key_miss(
        &self,
        snap: &Snapshot,
        i: usize,
        h: u64,
        total_in_flight: u64,
        work: f64,
        now: f64,
    ) -> Option<KeyMiss> {
        let node = &snap.nodes()[i];
        let d = snap.derived(i);
        if node.state == NodeState::Unhealthy || d.base <= 0.0 {
            return Some(KeyMiss::Ineligible);
        }
        if d.headroom.is_some_and(|h| h <= 0.0) {
            return Some(KeyMiss::NoHeadroom);
        }
        let draws = xxh3_64_with_seed(&h.to_le_bytes(), KEY_DRAW_SEED);
        let u_shed = (draws >> 32) as f64 / (1u64 << 32) as f64;
        let u_ramp = (draws & 0xffff_ffff) as f64 / (1u64 << 32) as f64;
        if u_shed >= d.health {
            return Some(KeyMiss::Shed);
        }
        if u_ramp >= snap.shaping().ramp(snap.ready_since_at(i), now) {
            return Some(KeyMiss::SlowStart);
        }
        let share = d.base / snap.key_base_total();
        let eps = self.config.key_epsilon.max(0.0);
        let limit = ((1.0 + eps) * (total_in_flight as f64 + work) * share)
            .ceil()
            .max(work);
        if snap.live_at(i).in_flight() as f64 + work > limit {
            return Some(KeyMiss::Loaded);
        }
        None
    }
}

impl Policy for Plb {
    fn kind(&self) -> PolicyKind {
        PolicyKind::Plb
    }

    fn pick<R: Rng + ?Sized>(
        &self,
        snap: &Snapshot,
        req: &RouteRequest<'_>,
        now: f64,
        rng: &mut R,
    ) -> Option<Decision> {
        if snap.is_empty() {
            return None;
        }
        let work = req.work(self.config.size_unit);
        if snap.eligible().is_empty() {
            // Every node unhealthy or drained: best effort on load and errors alone.
            let penalty = self.config.error_penalty.max(0.0);
            return Some(p2c_on(
                PolicyKind::Plb,
                snap,
                Candidates::All(snap.len()),
                true,
                now,
                rng,
                |i| {
                    let live = snap.live_at(i);
                    (live.in_flight() as f64 + work) * (penalty * live.error_rate(now)).exp()
                },
            ));
        }
        let note = match req.key {
            Some(key) => match self.keyed(snap, key, work, now) {
                Ok(d) => return Some(d),
                Err(note) => Some(note),
            },
            None => None,
        };
        self.unkeyed(snap, work, now, rng, note)
    }
}

/// `n` slots for a scan's latencies: on the stack when they fit, else in `heap`.
fn scratch<'a>(
    stack: &'a mut [f64; SCAN_STACK],
    heap: &'a mut Vec<f64>,
    n: usize,
) -> &'a mut [f64] {
    if n <= SCAN_STACK {
        &mut stack[..n]
    } else {
        heap.resize(n, 0.0);
        heap
    }
}

/// The `q` quantile (nearest rank) of the latencies the scan read (`lats`, reordered),
/// 0 when `q` is not in (0, 1] or fewer than three nodes have one.
fn latency_quantile(lats: &mut [f64], q: f64) -> f64 {
    let known = lats.len();
    if q.is_nan() || q <= 0.0 || q > 1.0 || known < 3 {
        return 0.0;
    }
    let rank = ((q * known as f64).ceil() as usize).clamp(1, known) - 1;
    let (_, &mut x, _) = lats.select_nth_unstable_by(rank, f64::total_cmp);
    if x.is_finite() { x } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;
    use crate::{LiveSet, NodeView, Shaping};

    /// The weighted power-of-two-choices path (pools larger than `full_scan_max`).
    fn p2c() -> PolicyConfig {
        PolicyConfig {
            full_scan_max: 0,
            ..PolicyConfig::default()
        }
    }

    fn build(live: &LiveSet, nodes: Vec<NodeView>) -> Snapshot {
        Snapshot::new(nodes, live, Shaping::default(), 0.0).expect("builds")
    }

    fn healthy(n: usize) -> Vec<NodeView> {
        (0..n)
            .map(|i| NodeView::new(format!("n{i}"), format!("10.0.0.{i}:80")))
            .collect()
    }

    /// Traffic shares at zero load (decisions not counted in flight).
    fn idle_shares(snap: &Snapshot, draws: usize, seed: u64, now: f64) -> Vec<f64> {
        let p = Plb::new(p2c());
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut counts = vec![0usize; snap.len()];
        for _ in 0..draws {
            counts[p
                .pick(snap, &RouteRequest::default(), now, &mut rng)
                .expect("some")
                .index] += 1;
        }
        counts.iter().map(|&c| c as f64 / draws as f64).collect()
    }

    /// Traffic shares with `window` requests kept in flight, completing oldest first
    /// after latency `lat(node)`.
    fn loaded_shares(
        snap: &Snapshot,
        draws: usize,
        window: usize,
        lat: impl Fn(usize) -> f64,
    ) -> Vec<f64> {
        let p = Plb::new(p2c());
        let mut rng = SmallRng::seed_from_u64(11);
        let mut counts = vec![0usize; snap.len()];
        let mut open = VecDeque::new();
        for step in 0..draws {
            let now = step as f64 * 0.001;
            let d = p
                .pick(snap, &RouteRequest::default(), now, &mut rng)
                .expect("some");
            counts[d.index] += 1;
            snap.live(d.index).expect("bound").begin(0.0);
            open.push_back(d.index);
            if open.len() > window {
                let i = open.pop_front().expect("non-empty");
                snap.live(i).expect("bound").end(lat(i), true, now);
            }
        }
        counts.iter().map(|&c| c as f64 / draws as f64).collect()
    }

    #[test]
    fn unhealthy_gets_nothing_unless_all_are_unhealthy() {
        let live = LiveSet::default();
        let mut nodes = healthy(4);
        nodes[1].state = NodeState::Unhealthy;
        let snap = build(&live, nodes);
        let shares = idle_shares(&snap, 20_000, 1, 0.0);
        assert_eq!(shares[1], 0.0);
        let mut keyed = vec![0usize; 4];
        let p = Plb::new(p2c());
        let mut rng = SmallRng::seed_from_u64(2);
        for k in 0..2_000 {
            let key = format!("user-{k}");
            keyed[p
                .pick(&snap, &RouteRequest::with_key(&key), 0.0, &mut rng)
                .expect("some")
                .index] += 1;
        }
        assert_eq!(keyed[1], 0, "{keyed:?}");

        let live = LiveSet::default();
        let mut nodes = healthy(3);
        for n in &mut nodes {
            n.state = NodeState::Unhealthy;
        }
        let snap = build(&live, nodes);
        let mut rng = SmallRng::seed_from_u64(3);
        let d = p
            .pick(&snap, &RouteRequest::default(), 0.0, &mut rng)
            .expect("best effort");
        assert!(d.reason.best_effort);
        assert!(
            d.explain(&snap).starts_with("every node is unhealthy"),
            "{}",
            d.explain(&snap)
        );
        assert!(
            p.pick(&Snapshot::empty(), &RouteRequest::default(), 0.0, &mut rng)
                .is_none()
        );
    }

    #[test]
    fn idle_shares_follow_weight_and_capacity() {
        let live = LiveSet::default();
        let mut nodes = healthy(3);
        nodes[0].capacity = Some(100.0);
        nodes[1].capacity = Some(100.0);
        nodes[2].capacity = Some(200.0);
        let snap = build(&live, nodes);
        let shares = idle_shares(&snap, 100_000, 4, 0.0);
        assert!((shares[2] - 0.5).abs() < 0.02, "{shares:?}");
        assert!((shares[0] - 0.25).abs() < 0.02, "{shares:?}");
    }

    #[test]
    fn degrading_share_is_small_nonzero_and_falls_smoothly() {
        let mut prev_idle = f64::INFINITY;
        let mut prev_loaded = f64::INFINITY;
        let fair = 0.25;
        for step in 0..=10 {
            let score = f64::from(step) / 10.0;
            let live = LiveSet::default();
            let mut nodes = healthy(4);
            nodes[0].degrade_score = score;
            if score >= 0.5 {
                nodes[0].state = NodeState::Degrading;
            }
            let snap = build(&live, nodes);
            let idle = idle_shares(&snap, 60_000, 5, 0.0)[0];
            let loaded = loaded_shares(&snap, 60_000, 12, |_| 0.010)[0];
            // Falls as the score rises (allowing sampling noise), by no cliff.
            assert!(
                idle <= prev_idle + 0.006,
                "idle {score}: {idle} after {prev_idle}"
            );
            assert!(
                loaded <= prev_loaded + 0.006,
                "loaded {score}: {loaded} after {prev_loaded}"
            );
            if prev_idle.is_finite() {
                assert!(
                    prev_idle - idle < 0.08,
                    "cliff at {score}: {prev_idle} -> {idle}"
                );
            }
            // Never below the floor of 5 % of a fair share.
            assert!(idle >= 0.05 * fair, "idle {score}: {idle}");
            assert!(loaded >= 0.05 * fair, "loaded {score}: {loaded}");
            if step == 10 {
                assert!(
                    idle < 0.15 * fair,
                    "fully degraded keeps only a little: {idle}"
                );
                assert!(
                    loaded < 0.3 * fair,
                    "fully degraded keeps only a little: {loaded}"
                );
            }
            prev_idle = idle;
            prev_loaded = loaded;
        }
    }

    /// Two nodes, the second degrading at full score (shed to the floor).
    fn one_shed(live: &LiveSet) -> Snapshot {
        let mut nodes = healthy(2);
        nodes[1].state = NodeState::Degrading;
        nodes[1].degrade_score = 1.0;
        build(live, nodes)
    }

    #[test]
    fn recovery_floor_reason_is_given() {
        let live = LiveSet::default();
        let snap = one_shed(&live);
        let p = Plb::new(p2c());
        let mut rng = SmallRng::seed_from_u64(8);
        let floor = (0..5_000)
            .filter_map(|_| p.pick(&snap, &RouteRequest::default(), 0.0, &mut rng))
            .find(|d| d.reason.rule == Rule::RecoveryFloor)
            .expect("some floor decisions");
        assert_eq!(floor.index, 1);
        let words = floor.explain(&snap);
        assert!(
            words.contains("node n1 (degrading, weight 5% of normal)"),
            "{words}"
        );
        assert!(words.contains("recovery"), "{words}");
    }

    #[test]
    fn the_recovery_floor_skips_an_overdue_node() {
        let live = LiveSet::default();
        let snap = one_shed(&live);
        let hung = snap.live(1).expect("bound");
        hung.begin(0.0);
        hung.end(0.1, true, 1.0);
        hung.begin(1.0);
        let p = Plb::new(p2c());
        let floor_at = |now: f64| {
            let mut rng = SmallRng::seed_from_u64(8);
            (0..5_000)
                .filter_map(|_| p.pick(&snap, &RouteRequest::default(), now, &mut rng))
                .filter(|d| d.reason.rule == Rule::RecoveryFloor)
                .count()
        };
        assert!(floor_at(1.1) > 0, "answering at its pace: still observed");
        assert_eq!(floor_at(2.0), 0, "a second with its request unanswered");
    }

    /// Slow start from 10 % over 60 s.
    fn slow_start_60s() -> Shaping {
        Shaping {
            slow_start_window: 60.0,
            slow_start_min: 0.1,
            ..Shaping::default()
        }
    }

    #[test]
    fn slow_start_ramps_a_new_node_up() {
        let shaping = slow_start_60s();
        let live = LiveSet::default();
        let mut nodes = healthy(4);
        nodes[3].ready_since = Some(1_000.0);
        let snap = Snapshot::new(nodes, &live, shaping, 1_000.0).expect("builds");
        let mut prev = 0.0;
        for (t, lo, hi) in [
            (0.0, 0.02, 0.05),
            (30.0, 0.13, 0.18),
            (60.0, 0.23, 0.27),
            (90.0, 0.23, 0.27),
        ] {
            let share = idle_shares(&snap, 60_000, 6, 1_000.0 + t)[3];
            assert!(share >= prev - 0.01, "ramps up: {share} after {prev}");
            assert!((lo..=hi).contains(&share), "t+{t}: {share}");
            prev = share;
        }
    }

    #[test]
    fn a_node_that_answers_again_after_failing_ramps_up() {
        let shaping = slow_start_60s();
        let live = LiveSet::default();
        let snap = Snapshot::new(healthy(4), &live, shaping, 0.0).expect("builds");
        // n3 refused a few connections (its process restarting), then answered at 100 s.
        let n3 = snap.live(3).expect("bound");
        for t in 0..crate::live::OUT_AFTER_FAILURES {
            n3.observe(0.0, false, 90.0 + f64::from(t));
        }
        n3.observe(0.02, true, 100.0);
        assert_eq!(snap.ready_since_at(3), Some(100.0));
        // Errors left out of the cost, so that the shares show the ramp alone.
        let p = Plb::new(PolicyConfig {
            error_penalty: 0.0,
            ..p2c()
        });
        let mut rng = SmallRng::seed_from_u64(9);
        for (t, lo, hi) in [(1.0, 0.02, 0.05), (90.0, 0.23, 0.27)] {
            let to_n3 = (0..60_000)
                .filter_map(|_| p.pick(&snap, &RouteRequest::default(), 100.0 + t, &mut rng))
                .filter(|d| d.index == 3)
                .count();
            let share = to_n3 as f64 / 60_000.0;
            assert!((lo..=hi).contains(&share), "t+{t}: {share}");
        }
    }

    #[test]
    fn a_pool_returning_all_at_once_still_routes_by_cost() {
        let shaping = slow_start_60s();
        let live = LiveSet::default();
        let snap = Snapshot::new(healthy(4), &live, shaping, 0.0).expect("builds");
        for i in 0..4 {
            let l = snap.live(i).expect("bound");
            for t in 0..crate::live::OUT_AFTER_FAILURES {
                l.observe(0.0, false, f64::from(t));
            }
            l.observe(0.02, true, 10.0);
        }
        // n0 is busy: every node ramping, the scans still prefer the idle ones.
        let busy = snap.live(0).expect("bound");
        for _ in 0..8 {
            busy.begin(0.0);
        }
        let p = Plb::new(PolicyConfig::default());
        let mut rng = SmallRng::seed_from_u64(10);
        let to_busy = (0..2_000)
            .filter_map(|_| p.pick(&snap, &RouteRequest::default(), 11.0, &mut rng))
            .filter(|d| d.index == 0)
            .count();
        assert!(to_busy < 100, "{to_busy} of 2000 to the busy node");
    }

    #[test]
    fn unknown_nodes_are_treated_cautiously() {
        let live = LiveSet::default();
        let mut nodes = healthy(2);
        nodes[1].state = NodeState::Unknown;
        let snap = build(&live, nodes);
        let share = idle_shares(&snap, 60_000, 7, 0.0)[1];
        assert!(share > 0.25 && share < 0.45, "{share}");
    }

    #[test]
    fn fast_failing_node_gets_no_more_than_its_healthy_share() {
        let live = LiveSet::default();
        let snap = build(&live, healthy(4));
        // n0 answers fast but half of its answers are errors.
        let p = Plb::new(p2c());
        let mut rng = SmallRng::seed_from_u64(12);
        let mut counts = [0usize; 4];
        let mut open = VecDeque::new();
        for step in 0..40_000u32 {
            let now = f64::from(step) * 0.001;
            let d = p
                .pick(&snap, &RouteRequest::default(), now, &mut rng)
                .expect("some");
            counts[d.index] += 1;
            let live = snap.live(d.index).expect("bound");
            live.begin(0.0);
            open.push_back((d.index, step));
            if open.len() > 12 {
                let (i, s) = open.pop_front().expect("non-empty");
                let (lat, ok) = if i == 0 {
                    (0.001, s % 2 == 0)
                } else {
                    (0.010, true)
                };
                snap.live(i).expect("bound").end(lat, ok, now);
            }
        }
        let share = counts[0] as f64 / 40_000.0;
        assert!(share <= 0.25, "{share} {counts:?}");
    }

    #[test]
    fn slower_node_gets_less_under_load() {
        let live = LiveSet::default();
        let snap = build(&live, healthy(4));
        let shares = loaded_shares(&snap, 40_000, 16, |i| if i == 0 { 0.050 } else { 0.010 });
        assert!(shares[0] < 0.15, "{shares:?}");
    }

    #[test]
    fn keys_stick_to_their_owner_and_move_without_headroom() {
        let p = Plb::new(p2c());
        let mut rng = SmallRng::seed_from_u64(13);
        let live = LiveSet::default();
        let mut nodes = healthy(8);
        for n in &mut nodes {
            n.capacity = Some(100.0);
            n.forecast_load = Some(40.0);
        }
        let snap = build(&live, nodes.clone());
        let key = "tenant-42";
        let first = p
            .pick(&snap, &RouteRequest::with_key(key), 0.0, &mut rng)
            .expect("some");
        assert_eq!(first.reason.key.as_ref().expect("keyed").rank, Some(0));
        for _ in 0..200 {
            let d = p
                .pick(&snap, &RouteRequest::with_key(key), 0.0, &mut rng)
                .expect("some");
            assert_eq!(d.index, first.index, "sticky");
        }
        assert!(
            first.explain(&snap).contains("owns the key"),
            "{}",
            first.explain(&snap)
        );
        // Keys spread over the pool.
        let mut owners = std::collections::HashSet::new();
        for k in 0..400 {
            let key = format!("k{k}");
            owners.insert(
                p.pick(&snap, &RouteRequest::with_key(&key), 0.0, &mut rng)
                    .expect("some")
                    .index,
            );
        }
        assert_eq!(owners.len(), 8);

        // The owner's forecast reaches its capacity: the key moves, always to the same
        // next node in rendezvous order.
        let mut nodes2 = nodes.clone();
        nodes2[first.index].forecast_load = Some(100.0);
        let snap2 = build(&live, nodes2);
        let moved = p
            .pick(&snap2, &RouteRequest::with_key(key), 0.0, &mut rng)
            .expect("some");
        assert_ne!(moved.index, first.index);
        let note = moved.reason.key.clone().expect("keyed");
        assert_eq!(
            (note.owner, note.owner_miss, note.rank),
            (first.index, Some(KeyMiss::NoHeadroom), Some(1))
        );
        for _ in 0..50 {
            assert_eq!(
                p.pick(&snap2, &RouteRequest::with_key(key), 0.0, &mut rng)
                    .expect("some")
                    .index,
                moved.index
            );
        }
        assert!(
            moved.explain(&snap2).contains("no forecast headroom"),
            "{}",
            moved.explain(&snap2)
        );

        // Headroom back: the key comes home.
        let snap3 = build(&live, nodes.clone());
        assert_eq!(
            p.pick(&snap3, &RouteRequest::with_key(key), 0.0, &mut rng)
                .expect("some")
                .index,
            first.index
        );

        // The owner far above its bounded-load share: the key moves too.
        for _ in 0..20 {
            snap3.live(first.index).expect("bound").begin(0.0);
        }
        let loaded = p
            .pick(&snap3, &RouteRequest::with_key(key), 0.0, &mut rng)
            .expect("some");
        assert_ne!(loaded.index, first.index);
        assert_eq!(
            loaded.reason.key.expect("keyed").owner_miss,
            Some(KeyMiss::Loaded)
        );
    }

    #[test]
    fn keys_move_gradually_as_the_owner_degrades() {
        let p = Plb::new(p2c());
        let mut rng = SmallRng::seed_from_u64(14);
        let keys: Vec<String> = (0..4_000).map(|k| format!("key-{k}")).collect();
        let mut prev = usize::MAX;
        let mut prev_set: Option<std::collections::HashSet<usize>> = None;
        for step in 0..=4 {
            let live = LiveSet::default();
            let mut nodes = healthy(4);
            nodes[0].degrade_score = f64::from(step) / 4.0;
            let snap = build(&live, nodes);
            let kept: std::collections::HashSet<usize> = keys
                .iter()
                .enumerate()
                .filter(|(_, k)| {
                    p.pick(&snap, &RouteRequest::with_key(k), 0.0, &mut rng)
                        .expect("some")
                        .index
                        == 0
                })
                .map(|(i, _)| i)
                .collect();
            assert!(kept.len() <= prev, "falls: {} after {prev}", kept.len());
            if let Some(prev_set) = &prev_set {
                assert!(kept.is_subset(prev_set), "only keys it had are kept");
            }
            prev = kept.len();
            prev_set = Some(kept);
        }
        assert!(
            prev > 0 && prev < 4_000 / 4 / 10,
            "a few keys stay at the floor: {prev}"
        );
    }

    #[test]
    fn weighted_rendezvous_follows_capacity() {
        let p = Plb::new(p2c());
        let mut rng = SmallRng::seed_from_u64(15);
        let live = LiveSet::default();
        let mut nodes = healthy(2);
        nodes[0].capacity = Some(100.0);
        nodes[1].capacity = Some(300.0);
        let snap = build(&live, nodes);
        let big = (0..8_000)
            .filter(|k| {
                let key = format!("k{k}");
                p.pick(&snap, &RouteRequest::with_key(&key), 0.0, &mut rng)
                    .expect("some")
                    .index
                    == 1
            })
            .count();
        let share = big as f64 / 8_000.0;
        assert!((share - 0.75).abs() < 0.03, "{share}");
    }

    #[test]
    fn weighted_rendezvous_owner_matches_a_brute_force_ranking() {
        let p = Plb::new(p2c());
        let mut rng = SmallRng::seed_from_u64(18);
        let live = LiveSet::default();
        let mut nodes = healthy(50);
        for (i, n) in nodes.iter_mut().enumerate() {
            n.capacity = Some(50.0 + (i * 37 % 100) as f64);
        }
        let snap = build(&live, nodes);
        for k in 0..500 {
            let key = format!("key-{k}");
            let kb = xxh3_64(key.as_bytes()).to_le_bytes();
            let want = (0..snap.len())
                .map(|i| {
                    let h = xxh3_64_with_seed(&kb, snap.derived(i).key_seed);
                    let u = ((h >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64);
                    (-snap.derived(i).base / u.ln(), i)
                })
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .expect("non-empty")
                .1;
            let d = p
                .pick(&snap, &RouteRequest::with_key(&key), 0.0, &mut rng)
                .expect("some");
            assert_eq!(d.reason.key.expect("keyed").owner, want, "{key}");
        }
    }

    #[test]
    fn a_latency_below_the_pools_middle_does_not_beat_an_idle_peer() {
        let live = LiveSet::default();
        let snap = build(&live, healthy(4));
        // n0 is the fastest so far but has two requests in flight; the others idle.
        for (i, lat) in [0.01, 0.05, 0.05, 0.06].into_iter().enumerate() {
            snap.live(i).expect("bound").observe(lat, true, 0.0);
        }
        snap.live(0).expect("bound").begin(0.0);
        snap.live(0).expect("bound").begin(0.0);
        let mut rng = SmallRng::seed_from_u64(3);
        let pick = |cfg: PolicyConfig, rng: &mut SmallRng| {
            Plb::new(cfg)
                .pick(&snap, &RouteRequest::default(), 0.0, rng)
                .expect("some")
                .index
        };
        // Raw latency: 0.01 x 3 = 0.03 beats an idle 0.05 x 1: the busy node.
        let raw = PolicyConfig {
            scan_latency_floor: 0.0,
            ..PolicyConfig::default()
        };
        assert_eq!(pick(raw, &mut rng), 0);
        // Floored at the median (0.05): 0.15 against 0.05, an idle peer.
        for _ in 0..50 {
            assert_ne!(pick(PolicyConfig::default(), &mut rng), 0);
        }
        assert_eq!(latency_quantile(&mut [3.0, 1.0], 0.5), 0.0);
        assert_eq!(latency_quantile(&mut [3.0, 1.0, 2.0], 0.5), 2.0);
        assert_eq!(latency_quantile(&mut [3.0, 1.0, 2.0], 1.0), 3.0);
        assert_eq!(latency_quantile(&mut [3.0, 1.0, 2.0], 0.0), 0.0);
    }

    #[test]
    fn a_node_slow_on_average_is_costed_by_its_mean_though_its_peak_is_the_pools() {
        let live = LiveSet::default();
        let snap = build(&live, healthy(4));
        // n1-n3 answer in 20 ms with one 60 ms outlier each (peak-EWMA 60 ms, mean
        // 20 ms); n0 answers every request in 50 ms (peak-EWMA 50 ms, mean 50 ms). By
        // their peaks n0 looks the fastest; by their means it is 2.5 times slower.
        for i in 1..4 {
            snap.live(i).expect("bound").observe(0.02, true, 0.0);
            snap.live(i).expect("bound").observe(0.06, true, 0.001);
            snap.live(i).expect("bound").begin(0.0);
        }
        snap.live(0).expect("bound").observe(0.05, true, 0.0);
        snap.live(0).expect("bound").observe(0.05, true, 0.001);
        // The peers each have a request in flight, n0 none. Without the mean, n0 idle
        // (the floor, 60 ms) beats a busy peer (60 ms x 2): it takes every request.
        let off = PolicyConfig {
            scan_mean_gate: f64::INFINITY,
            ..PolicyConfig::default()
        };
        assert_eq!(scan_picks_of(&snap, 0, off, 5), 500);
        // With it n0 costs 2.5 x the floor (150 ms) and the busy peers (120 ms) win.
        assert_eq!(scan_picks_of(&snap, 0, PolicyConfig::default(), 5), 0);
        // A node within the gate of the pool's mean is costed as before.
        let wide = PolicyConfig {
            scan_mean_gate: 3.0,
            ..PolicyConfig::default()
        };
        assert_eq!(scan_picks_of(&snap, 0, wide, 5), 500);
    }

    #[test]
    fn a_node_the_mean_gate_priced_out_is_tried_again_once_it_has_been_idle() {
        // n0's one answer took 2.5 ms; n1 and n2 answer in 0.3 ms, the last 10 ms
        // before each decision, with nothing in flight (one client, one request at a
        // time). n0's mean is over eight times the pool's median mean.
        let live = LiveSet::default();
        let snap = build(&live, healthy(3));
        snap.live(0).expect("bound").observe(0.0025, true, 0.0);
        let peers_answer = |at: f64| {
            for i in 1..3 {
                snap.live(i).expect("bound").observe(0.0003, true, at);
            }
        };
        peers_answer(0.09);
        // At once the gate prices it out: it costs its mean, its peers 0.3 ms.
        assert_eq!(scan_picks_at(&snap, 0, PolicyConfig::default(), 5, 0.1), 0);
        // Nothing it does can move its mean now: it gets no traffic. Its peak-EWMA
        // decays while it idles (3 s time constant); its mean fades more slowly (30 s):
        // half a minute on, at 0.9 ms, it still prices the node out.
        peers_answer(29.99);
        assert_eq!(scan_picks_at(&snap, 0, PolicyConfig::default(), 5, 30.0), 0);
        // A minute on, faded to 0.34 ms, within the gate of its peers' 0.3 ms: it ties
        // with them at the pool's latency floor and takes about a third.
        peers_answer(59.99);
        let picks = scan_picks_at(&snap, 0, PolicyConfig::default(), 5, 60.0);
        assert!((100..250).contains(&picks), "{picks} of 500");
        // Unfaded, it would be priced out for as long as its peers keep up.
        let never = PolicyConfig {
            scan_mean_fade: f64::INFINITY,
            ..PolicyConfig::default()
        };
        assert_eq!(scan_picks_at(&snap, 0, never, 5, 60.0), 0);
    }

    #[test]
    fn a_node_its_clients_gave_up_on_rests_out_of_the_scans_and_stays_priced_by_the_wait() {
        // Every node answers in 20 ms; n1-n3 have three requests in flight each. n0
        // took one more request at 0.5 s and never answered: its client gave up after
        // 1 s (a hung node).
        let live = LiveSet::default();
        let snap = build(&live, healthy(4));
        for i in 0..4 {
            let n = snap.live(i).expect("bound");
            n.observe(0.02, true, 0.0);
            n.observe(0.02, true, 0.5);
            if i > 0 {
                (0..3).for_each(|_| n.begin(0.5));
            }
        }
        let n0 = snap.live(0).expect("bound");
        n0.begin(0.5);
        n0.abandon_after(1.0, 1.5);
        assert!(n0.given_up() && n0.resting(2.0));
        let off = PolicyConfig {
            scan_give_ups: false,
            ..PolicyConfig::default()
        };
        let peers_answer = |at: f64| {
            for i in 1..4 {
                snap.live(i).expect("bound").observe(0.02, true, at);
            }
        };
        peers_answer(1.99);
        // Costed as a slow node, its peak (1 s) is capped at three times its mean
        // (60 ms), under a busy peer's 20 ms x 4: it takes every request, each lost.
        assert_eq!(scan_picks_at(&snap, 0, off, 5, 2.0), 500);
        // It rests for a second after the give-up: no request at all.
        assert_eq!(scan_picks_at(&snap, 0, PolicyConfig::default(), 5, 2.0), 0);
        // Rested, it is priced by the wait (decayed to 0.6 s, uncapped): still none.
        assert!(!n0.resting(3.0));
        peers_answer(2.99);
        assert_eq!(scan_picks_at(&snap, 0, PolicyConfig::default(), 5, 3.0), 0);
        // An answer (the recovery floor's look) ends it: priced by its answers again.
        n0.observe(0.02, true, 3.0);
        assert!(!n0.given_up());
        assert_eq!(
            scan_picks_at(&snap, 0, PolicyConfig::default(), 5, 3.0),
            500
        );
    }

    #[test]
    fn one_outlier_does_not_price_a_healthy_node_out_of_the_scans() {
        let live = LiveSet::default();
        let snap = build(&live, healthy(4));
        // Every node answers in 20 ms; n0's last answer took 200 ms (an outlier: its
        // peak-EWMA 200 ms, its mean about 20 ms). n1-n3 have three requests in
        // flight each, n0 none.
        for i in 0..4 {
            let n = snap.live(i).expect("bound");
            n.observe(0.02, true, 0.0);
            if i > 0 {
                n.observe(0.02, true, 0.001);
                (0..3).for_each(|_| n.begin(0.0));
            }
        }
        snap.live(0).expect("bound").observe(0.2, true, 0.001);
        // By its peak n0 idle costs 200 ms against a busy peer's 20 ms x 4 = 80 ms:
        // it is passed over while its peers queue.
        let uncapped = PolicyConfig {
            scan_peak_cap: f64::INFINITY,
            ..PolicyConfig::default()
        };
        assert_eq!(scan_picks_of(&snap, 0, uncapped, 5), 0);
        // Capped at three times its mean (about 60 ms), it takes every request.
        assert_eq!(scan_picks_of(&snap, 0, PolicyConfig::default(), 5), 500);
        // A node slow on average is not helped: at 200 ms every answer, its mean is
        // its peak.
        let live = LiveSet::default();
        let snap = build(&live, healthy(4));
        for i in 0..4 {
            let n = snap.live(i).expect("bound");
            let l = if i == 0 { 0.2 } else { 0.02 };
            n.observe(l, true, 0.0);
            n.observe(l, true, 0.001);
            if i > 0 {
                (0..3).for_each(|_| n.begin(0.0));
            }
        }
        assert_eq!(scan_picks_of(&snap, 0, PolicyConfig::default(), 5), 0);
    }

    #[test]
    fn nodes_in_slow_start_do_not_set_the_bar_of_the_mean_gate() {
        // n0 answers in 50 ms (peak-EWMA and mean); n1 and n2 in 40 ms with one 70 ms
        // outlier (peak 70, mean 40); n3-n6 in 10 ms with one 60 ms outlier (peak 60,
        // mean 10) and twenty requests in flight each, so that they never win. The
        // latency floor (the median peak) is 60 ms.
        let n0_picks = |n3_to_n6_back: Option<f64>| {
            let live = LiveSet::default();
            let mut nodes = healthy(7);
            for n in &mut nodes[3..] {
                n.ready_since = n3_to_n6_back;
            }
            let snap = build(&live, nodes);
            let n0 = snap.live(0).expect("bound");
            n0.observe(0.05, true, 0.0);
            n0.observe(0.05, true, 0.001);
            for i in 1..7 {
                let n = snap.live(i).expect("bound");
                let (typical, outlier) = if i < 3 { (0.04, 0.07) } else { (0.01, 0.06) };
                n.observe(typical, true, 0.0);
                n.observe(outlier, true, 0.001);
                if i >= 3 {
                    (0..20).for_each(|_| n.begin(0.0));
                }
            }
            scan_picks_of(&snap, 0, PolicyConfig::default(), 5)
        };
        // n3-n6 back in service 10 s ago (slow start): the gate compares n0's mean with
        // n1's and n2's only (median 40 ms; 50 ms is inside 1.5x), and n0 costs the
        // floor (60 ms) against their 70: it wins every scan.
        assert_eq!(n0_picks(Some(-10.0)), 500);
        // Out of slow start, n3-n6's 10 ms means set the median: n0 costs five times
        // the floor (300 ms), n1 and n2 four times (240 ms), and n0 never wins.
        assert_eq!(n0_picks(None), 0);
    }

    /// Of 500 decisions at 0 s with `config`, how many full-scan decisions picked node
    /// `node` (the recovery floor's picks, a trickle to a shed node, not counted).
    fn scan_picks_of(snap: &Snapshot, node: usize, config: PolicyConfig, seed: u64) -> usize {
        scan_picks_at(snap, node, config, seed, 0.0)
    }

    /// [`scan_picks_of`] at `now`.
    fn scan_picks_at(
        snap: &Snapshot,
        node: usize,
        config: PolicyConfig,
        seed: u64,
        now: f64,
    ) -> usize {
        let p = Plb::new(config);
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut picks = 0;
        for _ in 0..500 {
            let d = p
                .pick(snap, &RouteRequest::default(), now, &mut rng)
                .expect("some");
            if let Rule::FullScan { .. } = d.reason.rule {
                picks += usize::from(d.index == node);
            }
        }
        picks
    }

    #[test]
    fn a_shed_node_takes_its_turn_once_the_rest_of_the_pool_is_queued() {
        let live = LiveSet::default();
        let mut nodes = healthy(4);
        nodes[3].degrade_score = 1.0;
        let snap = build(&live, nodes);
        for i in 0..4 {
            snap.live(i).expect("bound").observe(0.02, true, 0.0);
        }
        let scan_picks = |config: PolicyConfig| scan_picks_of(&snap, 3, config, 5);
        // The pool has room: the shed node gets nothing from the scan.
        assert_eq!(scan_picks(PolicyConfig::default()), 0);
        // Every other node has four requests queued: the shed node (cost 0.02 / 0.4)
        // is cheaper than any of them (0.02 x 5), unless the floor is off (0.02 / 0.05).
        for i in 0..3 {
            for _ in 0..4 {
                snap.live(i).expect("bound").begin(0.0);
            }
        }
        assert!(scan_picks(PolicyConfig::default()) > 400);
        let off = PolicyConfig {
            scan_weight_floor: 0.0,
            scan_busy_release: f64::INFINITY,
            ..PolicyConfig::default()
        };
        assert_eq!(scan_picks(off), 0);
    }

    #[test]
    fn once_the_unshed_nodes_are_busy_a_shed_node_is_costed_at_full_weight() {
        // Node 3 fully shed and slower (50 ms against 20 ms).
        let live = LiveSet::default();
        let mut nodes = healthy(4);
        nodes[3].degrade_score = 1.0;
        let snap = build(&live, nodes);
        for i in 0..4 {
            let lat = if i == 3 { 0.05 } else { 0.02 };
            snap.live(i).expect("bound").observe(lat, true, 0.0);
        }
        let scan_picks = |config: PolicyConfig| scan_picks_of(&snap, 3, config, 6);
        let fixed = PolicyConfig {
            scan_busy_release: f64::INFINITY,
            ..PolicyConfig::default()
        };
        let released = PolicyConfig {
            scan_busy_release: 4.0,
            scan_busy_release_within: f64::INFINITY,
            ..PolicyConfig::default()
        };
        // Two requests in flight on each unshed node: 0.02 x 3 = 0.06 beats the shed
        // node's 0.05 / 0.4 with the floor fixed, and its 0.05 / 0.7 with the floor
        // half way to 1.
        for i in 0..3 {
            for _ in 0..2 {
                snap.live(i).expect("bound").begin(0.0);
            }
        }
        assert_eq!(scan_picks(fixed), 0);
        assert_eq!(scan_picks(released), 0);
        // Four each: 0.02 x 5 = 0.1. The fixed floor still keeps the shed node out
        // (0.125); released, it costs its latency alone (0.05) and takes the requests.
        for i in 0..3 {
            for _ in 0..2 {
                snap.live(i).expect("bound").begin(0.0);
            }
        }
        assert_eq!(scan_picks(fixed), 0);
        assert!(scan_picks(released) > 400);
        // Gated on its own latency (within 1.2x the median, 0.02), as it ships: still
        // slow, it stays shed.
        assert_eq!(scan_picks(PolicyConfig::default()), 0);
    }

    /// Four nodes at 100 s: n0-n2 warm (0.02 s), n3 back in service at 100 s (slow
    /// start: 10 % of its weight, 30 s window) and answering in `n3_latency`.
    fn n3_just_back(n3_latency: f64) -> (LiveSet, Snapshot) {
        let live = LiveSet::default();
        let mut nodes = healthy(4);
        nodes[3].ready_since = Some(100.0);
        let snap = Snapshot::new(nodes, &live, Shaping::default(), 100.0).expect("builds");
        for i in 0..4 {
            let lat = if i == 3 { n3_latency } else { 0.02 };
            snap.live(i).expect("bound").observe(lat, true, 100.0);
        }
        (live, snap)
    }

    /// Adds `n` requests in flight to each warm node (n0-n2).
    fn queue_warm(snap: &Snapshot, n: usize) {
        for i in 0..3 {
            for _ in 0..n {
                snap.live(i).expect("bound").begin(100.0);
            }
        }
    }

    /// Of 2,000 decisions at 100 s, those that picked n3.
    fn picks_of_n3(snap: &Snapshot, config: PolicyConfig) -> usize {
        picks_of_n3_at(snap, config, 100.0)
    }

    /// Of 2,000 decisions at `now`, those that picked n3.
    fn picks_of_n3_at(snap: &Snapshot, config: PolicyConfig, now: f64) -> usize {
        let p = Plb::new(config);
        let mut rng = SmallRng::seed_from_u64(12);
        (0..2_000)
            .filter_map(|_| p.pick(snap, &RouteRequest::default(), now, &mut rng))
            .filter(|d| d.index == 3)
            .count()
    }

    #[test]
    fn a_node_just_back_waits_until_the_warm_nodes_are_queued() {
        // n3's first answer took three times the others' latency: its process is
        // still cold.
        let (_live, snap) = n3_just_back(0.06);
        let at_full_weight = PolicyConfig {
            slow_start_cost_exp: 0.0,
            ..PolicyConfig::default()
        };
        // The warm nodes have three requests each (cost 0.02 x 4): at its full weight
        // the cold node (0.06 x 1) wins every scan it takes part in, a tenth of them.
        queue_warm(&snap, 3);
        assert!(picks_of_n3(&snap, at_full_weight) > 100);
        // Its weight counted at sqrt(0.1) of full, it costs 0.19: it waits.
        assert_eq!(picks_of_n3(&snap, PolicyConfig::default()), 0);
        // Once the warm nodes have ten each (0.02 x 11), it takes its share of scans.
        queue_warm(&snap, 7);
        assert!(picks_of_n3(&snap, PolicyConfig::default()) > 100);
    }

    #[test]
    fn a_node_back_and_already_warm_takes_part_in_every_scan() {
        // n3 answers as fast as its peers, which have two requests each: idle, it wins
        // every scan it takes part in (0.02 against 0.02 x 3).
        let (_live, snap) = n3_just_back(0.02);
        queue_warm(&snap, 2);
        // Just back, its first answers say little yet: it takes part in its ramp's
        // share of the scans (a tenth), at its full weight.
        let first = picks_of_n3_at(&snap, PolicyConfig::default(), 100.0);
        assert!((100..400).contains(&first), "{first}");
        // Back for 3 s and still as fast as its peers, it is warm: every scan.
        let warm = picks_of_n3_at(&snap, PolicyConfig::default(), 103.0);
        assert_eq!(warm, 2_000);
        // Held to its ramp alone (0.19 at 3 s), it would still sit out most of them.
        let ramped = PolicyConfig {
            slow_start_warm_after: f64::INFINITY,
            ..PolicyConfig::default()
        };
        let share = picks_of_n3_at(&snap, ramped, 103.0);
        assert!((250..550).contains(&share), "{share}");
    }

    #[test]
    fn a_node_back_but_not_yet_heard_from_takes_one_request_at_a_time() {
        let live = LiveSet::default();
        let mut nodes = healthy(4);
        nodes[3].ready_since = Some(100.0);
        let snap = Snapshot::new(nodes, &live, Shaping::default(), 100.0).expect("builds");
        for i in 0..3 {
            snap.live(i).expect("bound").observe(0.02, true, 100.0);
        }
        // The warm nodes have six requests each (cost 0.02 x 7). Idle, priced at the
        // pool's mean latency and at its cold weight (sqrt(0.1)), n3 costs 0.06 and
        // wins the scans it takes part in (its ramp's tenth).
        queue_warm(&snap, 6);
        let idle = picks_of_n3(&snap, PolicyConfig::default());
        assert!((100..400).contains(&idle), "{idle}");
        // With its first request in flight and no answer yet it waits for one...
        let n3 = snap.live(3).expect("bound");
        n3.begin(100.0);
        assert_eq!(picks_of_n3(&snap, PolicyConfig::default()), 0);
        // ...which without the limit it would not (0.13 against 0.14).
        let unlimited = PolicyConfig {
            slow_start_scouts: 0,
            ..PolicyConfig::default()
        };
        assert!(picks_of_n3(&snap, unlimited) > 50);
        // Answered (three times as slowly as its peers), its latency prices it and the
        // limit is off: with its peers queued deeper, it takes its share of the scans.
        n3.end(0.06, true, 100.0);
        n3.begin(100.0);
        queue_warm(&snap, 9);
        let answered = picks_of_n3(&snap, PolicyConfig::default());
        assert!(answered > 100, "{answered}");
        assert_eq!(answered, picks_of_n3(&snap, unlimited));
        // A node not in slow start is not held back before its first answer.
        let live = LiveSet::default();
        let snap = Snapshot::new(healthy(4), &live, Shaping::default(), 100.0).expect("builds");
        for i in 0..3 {
            snap.live(i).expect("bound").observe(0.02, true, 100.0);
        }
        snap.live(3).expect("bound").begin(100.0);
        queue_warm(&snap, 1);
        assert!(picks_of_n3(&snap, PolicyConfig::default()) > 100);
    }

    #[test]
    fn a_node_in_slow_start_pays_its_slow_answers_at_a_lower_exponent() {
        // n3 is back and answers four times as slowly as its peers (0.08 against
        // 0.02), which have two requests each (0.02 x 3 = 0.06). Its weight is left
        // whole here, so that the latency term alone decides.
        let (_live, snap) = n3_just_back(0.08);
        queue_warm(&snap, 2);
        let whole = PolicyConfig {
            slow_start_cost_exp: 0.0,
            ..PolicyConfig::default()
        };
        // Charged in full (0.08), it loses every scan.
        let full = PolicyConfig {
            slow_start_latency_exp: 1.0,
            ..whole
        };
        assert_eq!(picks_of_n3(&snap, full), 0);
        // At 0.5 it counts 0.02 x sqrt(4) = 0.04 and wins the scans it takes part in
        // (its ramp's tenth).
        let picks = picks_of_n3(&snap, whole);
        assert!((100..400).contains(&picks), "{picks}");
        // A node not in slow start with the same latency is charged in full.
        let live = LiveSet::default();
        let snap = Snapshot::new(healthy(4), &live, Shaping::default(), 100.0).expect("builds");
        for i in 0..4 {
            let lat = if i == 3 { 0.08 } else { 0.02 };
            snap.live(i).expect("bound").observe(lat, true, 100.0);
        }
        queue_warm(&snap, 2);
        assert_eq!(picks_of_n3(&snap, whole), 0);
    }

    #[test]
    fn big_requests_prefer_big_nodes() {
        let live = LiveSet::default();
        let mut nodes = healthy(2);
        nodes[0].capacity = Some(100.0);
        nodes[1].capacity = Some(400.0);
        let snap = build(&live, nodes);
        for _ in 0..3 {
            snap.live(0).expect("bound").begin(0.0);
        }
        for _ in 0..10 {
            snap.live(1).expect("bound").begin(0.0);
        }
        snap.live(0).expect("bound").observe(0.01, true, 0.0);
        snap.live(1).expect("bound").observe(0.01, true, 0.0);
        let p = Plb::new(p2c());
        // Per unit weight: small node (3 + 1) / 0.25 = 16 vs big (10 + 1) / 1 = 11 ->
        // big; so both draws decide for the big one whenever they differ.
        let mut rng = SmallRng::seed_from_u64(16);
        let small = RouteRequest::default();
        let huge = RouteRequest {
            cost: 50.0,
            ..RouteRequest::default()
        };
        let mut wins = [0usize; 2];
        for _ in 0..2_000 {
            let d = p.pick(&snap, &small, 0.0, &mut rng).expect("some");
            if let Rule::PowerOfTwo { .. } = d.reason.rule {
                wins[0] += usize::from(d.index == 1);
            }
            let d = p.pick(&snap, &huge, 0.0, &mut rng).expect("some");
            if let Rule::PowerOfTwo { .. } = d.reason.rule {
                wins[1] += usize::from(d.index == 1);
            }
        }
        assert!(wins[0] > 0 && wins[1] >= wins[0], "{wins:?}");
    }

    #[test]
    fn explains_a_power_of_two_choice_in_words() {
        let live = LiveSet::default();
        let mut nodes = healthy(2);
        nodes[0].id = "a".into();
        nodes[1].id = "b".into();
        nodes[0].capacity = Some(100.0);
        nodes[0].forecast_load = Some(90.0);
        nodes[0].state = NodeState::Degrading;
        nodes[0].degrade_score = 0.6;
        nodes[1].capacity = Some(100.0);
        nodes[1].forecast_load = Some(38.0);
        let snap = build(&live, nodes);
        for _ in 0..3 {
            snap.live(1).expect("bound").begin(0.0);
        }
        snap.live(1).expect("bound").observe(0.0123, true, 0.0);
        snap.live(0).expect("bound").begin(0.0);
        snap.live(0).expect("bound").observe(0.040, true, 0.0);
        let p = Plb::new(p2c());
        let mut rng = SmallRng::seed_from_u64(17);
        let d = (0..10_000)
            .filter_map(|_| p.pick(&snap, &RouteRequest::default(), 0.0, &mut rng))
            .find(|d| matches!(d.reason.rule, Rule::PowerOfTwo { .. }))
            .expect("a p2c decision");
        let words = d.explain(&snap);
        assert_eq!(d.index, 1, "{words}");
        assert!(
            words.starts_with("node b (healthy): 62% forecast headroom, 3 in flight, 12.3 ms; plb power of two choices over a (degrading, weight "),
            "{words}"
        );
        assert!(d.score > 0.0 && d.score <= 1.0);
    }

    /// Shares with `window` requests in flight under the shipped config (full scan in
    /// small pools), completing oldest first after latency `lat(node)`.
    fn scanned_shares(
        snap: &Snapshot,
        draws: usize,
        window: usize,
        lat: impl Fn(usize) -> f64,
    ) -> Vec<f64> {
        scanned_shares_with(PolicyConfig::default(), snap, draws, window, lat)
    }

    fn scanned_shares_with(
        config: PolicyConfig,
        snap: &Snapshot,
        draws: usize,
        window: usize,
        lat: impl Fn(usize) -> f64,
    ) -> Vec<f64> {
        let p = Plb::new(config);
        let mut rng = SmallRng::seed_from_u64(5);
        let mut counts = vec![0usize; snap.len()];
        let mut open = VecDeque::new();
        for step in 0..draws {
            let now = step as f64 * 0.001;
            let d = p
                .pick(snap, &RouteRequest::default(), now, &mut rng)
                .expect("some");
            counts[d.index] += 1;
            snap.live(d.index).expect("bound").begin(0.0);
            open.push_back(d.index);
            if open.len() > window {
                let i = open.pop_front().expect("non-empty");
                snap.live(i).expect("bound").end(lat(i), true, now);
            }
        }
        counts.iter().map(|&c| c as f64 / draws as f64).collect()
    }

    #[test]
    fn small_pools_scan_every_node_and_find_the_free_one() {
        let live = LiveSet::default();
        let snap = build(&live, healthy(8));
        for i in 0..8 {
            if i != 6 {
                snap.live(i).expect("bound").begin(0.0);
                snap.live(i).expect("bound").begin(0.0);
            }
        }
        let p = Plb::new(PolicyConfig::default());
        let mut rng = SmallRng::seed_from_u64(9);
        for _ in 0..20 {
            let d = p
                .pick(&snap, &RouteRequest::default(), 0.0, &mut rng)
                .expect("some");
            assert_eq!(d.index, 6);
            assert_eq!(d.reason.rule, Rule::FullScan { scanned: 8 });
            assert!(
                d.explain(&snap).contains("lowest cost of all 8 nodes"),
                "{}",
                d.explain(&snap)
            );
        }
    }

    #[test]
    fn identical_nodes_get_equal_shares_under_load() {
        let live = LiveSet::default();
        let snap = build(&live, healthy(8));
        let shares = scanned_shares(&snap, 40_000, 12, |_| 0.02);
        for s in &shares {
            assert!((s - 0.125).abs() < 0.01, "{shares:?}");
        }
    }

    #[test]
    fn a_degrading_node_is_shed_under_full_scan_too() {
        // Node 3 fully shed, every node answering in 20 ms, `window` requests in flight.
        let shares_with = |config: PolicyConfig, window: usize| {
            let live = LiveSet::default();
            let mut nodes = healthy(8);
            nodes[3].state = NodeState::Degrading;
            nodes[3].degrade_score = 1.0;
            let snap = build(&live, nodes);
            scanned_shares_with(config, &snap, 40_000, window, |_| 0.02)
        };
        let fixed = PolicyConfig {
            scan_busy_release: f64::INFINITY,
            ..PolicyConfig::default()
        };
        let release = PolicyConfig {
            scan_busy_release: 4.0,
            scan_busy_release_within: f64::INFINITY,
            ..PolicyConfig::default()
        };
        // At a light load the rest of the pool has room: the shed node gets little.
        let shares = shares_with(release, 4);
        assert!(shares[3] < 0.03, "{shares:?}");
        assert!(shares[3] > 0.0, "the recovery floor keeps some: {shares:?}");
        // With three requests in flight per node it costs at most 1 / scan_weight_floor
        // times its peers at the same latency: shed, but its capacity is not idle.
        let fair = 1.0 / 8.0;
        let shares = shares_with(fixed, 24);
        assert!(shares[3] < 0.6 * fair, "{shares:?}");
        assert!(shares[3] > 0.3 * fair, "{shares:?}");
        // The busy release lifts the floor as the unshed nodes fill up: more than with
        // the floor fixed, still short of a fair share at three per node; about fair
        // at six per node, where the floor is all the way up.
        let released = shares_with(release, 24);
        assert!(released[3] > shares[3], "{released:?} against {shares:?}");
        assert!(released[3] < fair, "{released:?}");
        let busy = shares_with(release, 48);
        assert!(busy[3] > 0.8 * fair, "{busy:?}");
        // Its latency is the pool's: the gate on its own latency (as it ships) lets it
        // go too.
        let busy = shares_with(PolicyConfig::default(), 48);
        assert!(busy[3] > 0.8 * fair, "{busy:?}");
    }

    #[test]
    fn large_pools_keep_two_weighted_choices() {
        let live = LiveSet::default();
        let snap = build(&live, healthy(PolicyConfig::default().full_scan_max + 1));
        let p = Plb::new(PolicyConfig::default());
        let mut rng = SmallRng::seed_from_u64(4);
        let d = p
            .pick(&snap, &RouteRequest::default(), 0.0, &mut rng)
            .expect("some");
        assert!(
            matches!(d.reason.rule, Rule::PowerOfTwo { .. } | Rule::DrawnTwice),
            "{:?}",
            d.reason.rule
        );
    }
}
