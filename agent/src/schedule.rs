//! The pure run schedule: which probe runs next and when, given the assignments, the
//! tier budget and what is still running. A state machine with time and randomness as
//! parameters; [`crate::scheduler`] drives it with the clock and does the running.
use std::collections::BTreeMap;
use std::time::Duration;

use plb_api::{Assignment, Tier};
use rand::Rng;
use tokio::time::Instant;

use crate::policy::{self, Budget};

/// One probe of one pool.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProbeKey {
    /// Pool name.
    pub pool: String,
    /// Probe name.
    pub probe: String,
}

impl ProbeKey {
    /// The key of an assignment.
    pub fn of(a: &Assignment) -> ProbeKey {
        ProbeKey {
            pool: a.pool.clone(),
            probe: a.probe.clone(),
        }
    }
}

impl std::fmt::Display for ProbeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.pool, self.probe)
    }
}

#[derive(Debug)]
struct Slot<M> {
    assignment: Assignment,
    module: M,
    /// Unjittered time of the next run.
    anchor: Instant,
    /// When the next run is due (the anchor with jitter).
    due: Instant,
    /// The previous run has not finished.
    running: bool,
    /// When the last run started.
    last_start: Option<Instant>,
    /// Due, waiting for a budget slot since then.
    waiting: Option<Instant>,
    /// No longer assigned; kept only until its running run finishes.
    retired: bool,
}

impl<M> Slot<M> {
    fn interval(&self) -> Duration {
        Duration::from_millis(self.assignment.interval_ms.max(1))
    }

    fn tier(&self) -> Tier {
        self.assignment.tier
    }

    /// Moves to the next anchor; returns runs skipped by a long stall.
    fn advance(&mut self, now: Instant, rng: &mut impl Rng) -> u64 {
        let (anchor, missed) = policy::next_anchor(self.anchor, self.interval(), now);
        self.anchor = anchor;
        self.due = policy::jittered(anchor, self.interval(), rng.random());
        missed
    }
}

/// A run to start now.
#[derive(Debug, Clone)]
pub struct Start<M> {
    /// Which probe.
    pub key: ProbeKey,
    /// Its assignment at start time (version, limits, config).
    pub assignment: Assignment,
    /// Its module, as last given to [`Schedule::update`].
    pub module: M,
    /// When it was due.
    pub due: Instant,
}

/// What [`Schedule::poll`] decided.
#[derive(Debug)]
pub struct Decisions<M> {
    /// Runs to start now.
    pub start: Vec<Start<M>>,
    /// Runs not started: the previous run was still going, the run waited a whole
    /// interval for a slot, or the agent stalled. One entry per skipped run.
    pub skipped: Vec<ProbeKey>,
}

/// The schedule of every assigned probe.
#[derive(Debug)]
pub struct Schedule<M> {
    slots: BTreeMap<ProbeKey, Slot<M>>,
    budget: Budget,
    quick: u32,
    deep: u32,
}

impl<M: Clone> Schedule<M> {
    /// An empty schedule with this budget.
    pub fn new(budget: Budget) -> Self {
        Schedule {
            slots: BTreeMap::new(),
            budget,
            quick: 0,
            deep: 0,
        }
    }

    /// Probes assigned (not counting retired ones still finishing).
    pub fn len(&self) -> usize {
        self.slots.values().filter(|s| !s.retired).count()
    }

    /// Whether nothing is assigned.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs in flight, by tier: `(quick, deep)`.
    pub fn running(&self) -> (u32, u32) {
        (self.quick, self.deep)
    }

    /// Replaces the assignment set. A probe already known keeps its phase; a changed
    /// interval takes effect from its last run (so a shorter one applies at once); a
    /// new version or config applies from its next run. New probes start at a random
    /// phase. Probes no longer assigned stop (a run in flight finishes).
    pub fn update(&mut self, items: Vec<(Assignment, M)>, now: Instant, rng: &mut impl Rng) {
        let mut keep = std::collections::BTreeSet::new();
        for (a, module) in items {
            let key = ProbeKey::of(&a);
            keep.insert(key.clone());
            match self.slots.get_mut(&key) {
                Some(slot) => {
                    let old = slot.interval();
                    slot.retired = false;
                    slot.assignment = a;
                    slot.module = module;
                    let new = slot.interval();
                    if new != old {
                        let last = slot
                            .last_start
                            .or_else(|| slot.anchor.checked_sub(old))
                            .unwrap_or(now);
                        slot.anchor = policy::retimed_anchor(last, new, now);
                        slot.due = policy::jittered(slot.anchor, new, rng.random());
                        slot.waiting = None;
                    }
                }
                None => {
                    let interval = Duration::from_millis(a.interval_ms.max(1));
                    let anchor = policy::first_anchor(now, interval, rng.random());
                    let due = policy::jittered(anchor, interval, rng.random());
                    self.slots.insert(
                        key,
                        Slot {
                            assignment: a,
                            module,
                            anchor,
                            due,
                            running: false,
                            last_start: None,
                            waiting: None,
                            retired: false,
                        },
                    );
                }
            }
        }
        self.slots.retain(|k, s| {
            if keep.contains(k) {
                return true;
            }
            s.retired = true;
            s.waiting = None;
            s.running
        });
    }

    /// Decides what runs now: due probes start when the budget allows, quick ones
    /// first, then the longest waiting. A probe whose previous run is still going is
    /// skipped, never started twice.
    pub fn poll(&mut self, now: Instant, rng: &mut impl Rng) -> Decisions<M> {
        let mut skipped = Vec::new();
        for (key, slot) in self.slots.iter_mut().filter(|(_, s)| !s.retired) {
            if slot.due > now {
                continue;
            }
            if slot.running {
                // Overrun: this run is skipped; the next one keeps the grid.
                skipped.push(key.clone());
                let missed = slot.advance(now, rng);
                skipped.extend((0..missed).map(|_| key.clone()));
            } else if let Some(since) = slot.waiting {
                // Waited a whole interval for a slot: give this one up.
                if now >= slot.anchor + slot.interval() && now > since {
                    skipped.push(key.clone());
                    slot.waiting = None;
                    let missed = slot.advance(now, rng);
                    skipped.extend((0..missed).map(|_| key.clone()));
                }
            } else {
                slot.waiting = Some(slot.due);
            }
        }
        let mut queue: Vec<(Tier, Instant, ProbeKey)> = self
            .slots
            .iter()
            .filter_map(|(k, s)| s.waiting.map(|w| (s.tier(), w, k.clone())))
            .collect();
        queue.sort_by(|a, b| {
            let rank = |t: Tier| u8::from(t == Tier::Deep);
            (rank(a.0), a.1, &a.2).cmp(&(rank(b.0), b.1, &b.2))
        });
        let mut start = Vec::new();
        for (tier, _, key) in queue {
            if !self.budget.admits(tier, self.quick, self.deep) {
                continue;
            }
            let Some(slot) = self.slots.get_mut(&key) else {
                continue;
            };
            let due = slot.due;
            slot.waiting = None;
            slot.running = true;
            slot.last_start = Some(now);
            let missed = slot.advance(now, rng);
            skipped.extend((0..missed).map(|_| key.clone()));
            match tier {
                Tier::Quick => self.quick += 1,
                Tier::Deep => self.deep += 1,
            }
            start.push(Start {
                key,
                assignment: slot.assignment.clone(),
                module: slot.module.clone(),
                due,
            });
        }
        Decisions { start, skipped }
    }

    /// Records that a run started by [`Schedule::poll`] ended.
    pub fn finished(&mut self, key: &ProbeKey, tier: Tier) {
        match tier {
            Tier::Quick => self.quick = self.quick.saturating_sub(1),
            Tier::Deep => self.deep = self.deep.saturating_sub(1),
        }
        if let Some(slot) = self.slots.get_mut(key) {
            slot.running = false;
            if slot.retired {
                self.slots.remove(key);
            }
        }
    }

    /// When [`Schedule::poll`] next has something to do, unless a run ends first.
    pub fn next_wake(&self) -> Option<Instant> {
        self.slots
            .values()
            .filter(|s| !s.retired)
            .map(|s| match s.waiting {
                Some(_) => s.anchor + s.interval(),
                None => s.due,
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn a(probe: &str, tier: Tier, interval_ms: u64) -> Assignment {
        Assignment {
            pool: "web".into(),
            probe: probe.into(),
            version: 1,
            sha256: "00".into(),
            tier,
            interval_ms,
            timeout_ms: 100,
            fuel: None,
            memory_mib: 16,
            config: BTreeMap::new(),
        }
    }

    fn key(p: &str) -> ProbeKey {
        ProbeKey {
            pool: "web".into(),
            probe: p.into(),
        }
    }

    /// Steps a virtual clock in `step` increments until `end`, finishing every run
    /// `run_for` after it started; returns the start times per probe and the skips.
    fn simulate(
        s: &mut Schedule<()>,
        t0: Instant,
        end: Duration,
        step: Duration,
        run_for: impl Fn(&ProbeKey) -> Duration,
        rng: &mut StdRng,
    ) -> (BTreeMap<String, Vec<Duration>>, Vec<ProbeKey>) {
        let mut starts: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
        let mut skipped = Vec::new();
        let mut running: Vec<(Instant, ProbeKey, Tier)> = Vec::new();
        let mut now = t0;
        while now < t0 + end {
            running.retain(|(until, k, tier)| {
                if *until <= now {
                    s.finished(k, *tier);
                    false
                } else {
                    true
                }
            });
            let d = s.poll(now, rng);
            skipped.extend(d.skipped);
            for st in d.start {
                starts
                    .entry(st.key.probe.clone())
                    .or_default()
                    .push(now - t0);
                running.push((now + run_for(&st.key), st.key, st.assignment.tier));
            }
            now += step;
        }
        (starts, skipped)
    }

    #[test]
    fn runs_keep_their_interval_within_jitter() {
        let mut rng = StdRng::seed_from_u64(7);
        let t0 = Instant::now();
        let mut s = Schedule::new(Budget::new(4));
        s.update(
            vec![
                (a("fast", Tier::Quick, 1000), ()),
                (a("slow", Tier::Deep, 5000), ()),
            ],
            t0,
            &mut rng,
        );
        let (starts, skipped) = simulate(&mut s, t0, ms(60_000), ms(10), |_| ms(50), &mut rng);
        assert!(skipped.is_empty(), "{skipped:?}");
        for (probe, interval, n) in [("fast", 1000u64, 60usize), ("slow", 5000, 12)] {
            let t = &starts[probe];
            assert!(t.len().abs_diff(n) <= 1, "{probe}: {} runs", t.len());
            assert!(
                t[0] <= ms(interval + interval / 10 + 10),
                "first run within one interval"
            );
            for w in t.windows(2) {
                let gap = w[1] - w[0];
                // Consecutive anchors are one interval apart; each start moves by ±10 %.
                assert!(
                    gap >= ms(interval * 8 / 10) && gap <= ms(interval * 12 / 10 + 10),
                    "{probe}: {gap:?}"
                );
            }
        }
    }

    #[test]
    fn jitter_spreads_a_fleet() {
        // Ten agents started at the same instant do not run in lockstep.
        let t0 = Instant::now();
        let mut firsts = Vec::new();
        for seed in 0..10 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut s = Schedule::new(Budget::new(4));
            s.update(vec![(a("p", Tier::Quick, 1000), ())], t0, &mut rng);
            firsts.push(s.next_wake().expect("due") - t0);
        }
        firsts.sort();
        firsts.dedup();
        assert!(firsts.len() >= 9, "{firsts:?}");
        assert!(
            *firsts.last().expect("some") - firsts[0] > ms(300),
            "{firsts:?}"
        );
    }

    #[test]
    fn an_overrunning_run_is_not_started_twice() {
        let mut rng = StdRng::seed_from_u64(1);
        let t0 = Instant::now();
        let mut s = Schedule::new(Budget::new(4));
        s.update(vec![(a("hang", Tier::Quick, 1000), ())], t0, &mut rng);
        // Every run takes 2.5 intervals.
        let (starts, skipped) = simulate(&mut s, t0, ms(20_000), ms(10), |_| ms(2500), &mut rng);
        let t = &starts["hang"];
        for w in t.windows(2) {
            assert!(w[1] - w[0] >= ms(2500), "started while running: {t:?}");
        }
        assert!(skipped.len() >= 10, "skips counted: {}", skipped.len());
        assert!(t.len() >= 5, "{t:?}");
    }

    #[test]
    fn quick_probes_are_not_starved_by_deep_ones() {
        let mut rng = StdRng::seed_from_u64(3);
        let t0 = Instant::now();
        let mut s = Schedule::new(Budget::new(2));
        // Many deep probes that each run for 20 s, every 5 s, and one quick probe.
        let mut items: Vec<_> = (0..6)
            .map(|i| (a(&format!("deep{i}"), Tier::Deep, 5000), ()))
            .collect();
        items.push((a("quick", Tier::Quick, 1000), ()));
        s.update(items, t0, &mut rng);
        let (starts, _) = simulate(
            &mut s,
            t0,
            ms(30_000),
            ms(10),
            |k| {
                if k.probe == "quick" {
                    ms(20)
                } else {
                    ms(20_000)
                }
            },
            &mut rng,
        );
        let q = &starts["quick"];
        assert!(q.len() >= 29, "quick ran {} times", q.len());
        for w in q.windows(2) {
            assert!(w[1] - w[0] <= ms(1210), "{:?}", w);
        }
        let deep_runs: usize = starts
            .iter()
            .filter(|(k, _)| k.starts_with("deep"))
            .map(|(_, v)| v.len())
            .sum();
        assert!(deep_runs >= 1, "deep probes run too");
        let (quick, deep) = s.running();
        assert!(deep <= 1 && quick <= 1, "{quick} {deep}");
    }

    #[test]
    fn runs_never_exceed_the_budget() {
        let mut rng = StdRng::seed_from_u64(5);
        let t0 = Instant::now();
        let mut s = Schedule::new(Budget::new(3));
        let items: Vec<_> = (0..10)
            .map(|i| {
                (
                    a(
                        &format!("p{i}"),
                        if i % 2 == 0 { Tier::Quick } else { Tier::Deep },
                        500,
                    ),
                    (),
                )
            })
            .collect();
        s.update(items, t0, &mut rng);
        let mut now = t0;
        let mut running: Vec<(Instant, ProbeKey, Tier)> = Vec::new();
        for _ in 0..2000 {
            running.retain(|(u, k, t)| {
                if *u <= now {
                    s.finished(k, *t);
                    false
                } else {
                    true
                }
            });
            for st in s.poll(now, &mut rng).start {
                running.push((now + ms(700), st.key, st.assignment.tier));
            }
            let deep = running.iter().filter(|r| r.2 == Tier::Deep).count();
            assert!(
                running.len() <= 3 && deep <= 1,
                "{} running, {deep} deep",
                running.len()
            );
            now += ms(5);
        }
    }

    #[test]
    fn a_shorter_interval_applies_from_the_last_run() {
        let mut rng = StdRng::seed_from_u64(9);
        let t0 = Instant::now();
        let mut s = Schedule::new(Budget::new(4));
        s.update(vec![(a("p", Tier::Deep, 60_000), ())], t0, &mut rng);
        let first = s.next_wake().expect("due");
        let d = s.poll(first, &mut rng);
        assert_eq!(d.start.len(), 1);
        s.finished(&key("p"), Tier::Deep);
        // A minute to the next run; the interval drops to 1 s two seconds later.
        let t = first + ms(2000);
        let mut b = a("p", Tier::Deep, 1000);
        b.version = 2;
        s.update(vec![(b, ())], t, &mut rng);
        let wake = s.next_wake().expect("due");
        assert!(
            wake <= t + ms(100),
            "runs within jitter of now: {:?}",
            wake - t
        );
        let d = s.poll(wake, &mut rng);
        assert_eq!(d.start[0].assignment.version, 2, "the new version runs");
        assert_eq!(d.start[0].assignment.interval_ms, 1000);
    }

    #[test]
    fn removed_probes_stop_and_a_running_one_finishes_first() {
        let mut rng = StdRng::seed_from_u64(11);
        let t0 = Instant::now();
        let mut s = Schedule::new(Budget::new(4));
        s.update(
            vec![
                (a("p", Tier::Quick, 1000), ()),
                (a("q", Tier::Quick, 1000), ()),
            ],
            t0,
            &mut rng,
        );
        let mut now = t0;
        let mut started = Vec::new();
        while started.len() < 2 {
            started.extend(s.poll(now, &mut rng).start.into_iter().map(|st| st.key));
            now += ms(10);
        }
        s.update(vec![], now, &mut rng);
        assert!(s.is_empty());
        // Re-added while its old run is still going: not started twice.
        s.update(vec![(a("p", Tier::Quick, 1000), ())], now, &mut rng);
        for _ in 0..300 {
            assert!(s.poll(now, &mut rng).start.is_empty(), "p is still running");
            now += ms(10);
        }
        s.finished(&key("q"), Tier::Quick);
        s.finished(&key("p"), Tier::Quick);
        assert_eq!(s.running(), (0, 0));
        assert_eq!(s.len(), 1);
        let mut later = Vec::new();
        for _ in 0..200 {
            later.extend(
                s.poll(now, &mut rng)
                    .start
                    .into_iter()
                    .map(|st| st.key.probe),
            );
            now += ms(10);
        }
        assert!(
            !later.is_empty() && later.iter().all(|p| p == "p"),
            "{later:?}"
        );
    }
}
