//! The scheduler task: drives the pure [`Schedule`] with the clock, starts each due run
//! in the sandbox against the node's own address, turns its report into a sample and
//! hands it to the [`Outbox`]. Follows the [`Plan`] as the syncer updates it.
use std::sync::Arc;
use std::time::Duration;

use plb_api::{Assignment, Outcome, Sample, Tier};
use plb_runtime::{Limits, RunReport, RunSpec, Runtime, Target};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::assignments::{Module, Plan};
use crate::metrics::Metrics;
use crate::policy::Budget;
use crate::reporter::Outbox;
use crate::schedule::{ProbeKey, Schedule, Start};

/// Longest captured output kept in a sample (its tail).
const MAX_SAMPLE_STDERR: usize = 4096;
/// Extra time the agent gives the sandbox past a run's own limit before giving up on it.
const RUN_SLACK: Duration = Duration::from_secs(5);

/// Runs the assigned probes on schedule.
#[derive(Debug)]
pub struct Scheduler {
    runtime: Runtime,
    outbox: Arc<Outbox>,
    metrics: Arc<Metrics>,
    node: String,
    plan: watch::Receiver<Plan>,
    budget: Budget,
    /// How long in-flight runs may finish after the stop signal.
    grace: Duration,
}

impl Scheduler {
    /// A scheduler for `node`, following `plan`.
    pub fn new(
        runtime: Runtime,
        outbox: Arc<Outbox>,
        metrics: Arc<Metrics>,
        node: String,
        plan: watch::Receiver<Plan>,
        budget: Budget,
        grace: Duration,
    ) -> Self {
        Scheduler {
            runtime,
            outbox,
            metrics,
            node,
            plan,
            budget,
            grace,
        }
    }

    /// Runs until `stop` turns true; then lets in-flight runs finish (and their samples
    /// be spooled) within the grace period.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut rng = StdRng::from_os_rng();
        let mut schedule: Schedule<Module> = Schedule::new(self.budget);
        let mut address;
        let mut tasks: JoinSet<(ProbeKey, Tier)> = JoinSet::new();
        let mut plan_open = true;
        let mut plan_changed = false;
        // The plan as it stands (a watch's first value does not count as a change).
        let first = self.plan.borrow_and_update().clone();
        address = first.address;
        schedule.update(first.probes, Instant::now(), &mut rng);
        loop {
            if *stop.borrow() {
                break;
            }
            if plan_open && (plan_changed || self.plan.has_changed().unwrap_or(false)) {
                plan_changed = false;
                let plan = self.plan.borrow_and_update().clone();
                address = plan.address;
                schedule.update(plan.probes, Instant::now(), &mut rng);
            }
            let decisions = schedule.poll(Instant::now(), &mut rng);
            for key in decisions.skipped {
                tracing::debug!(probe = %key, "run skipped: the previous one is still going");
                self.metrics.skipped(&key.pool, &key.probe);
            }
            for start in decisions.start {
                let tier = start.assignment.tier;
                let run = RunTask {
                    runtime: self.runtime.clone(),
                    outbox: Arc::clone(&self.outbox),
                    metrics: Arc::clone(&self.metrics),
                    target: Target {
                        node: self.node.clone(),
                        address: address.clone(),
                    },
                };
                tasks.spawn(async move {
                    let key = start.key.clone();
                    run.run(start).await;
                    (key, tier)
                });
            }
            self.publish_in_flight(&schedule);
            let wake = schedule.next_wake();
            tokio::select! {
                _ = sleep_until_opt(wake) => {}
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    match done {
                        Ok((key, tier)) => schedule.finished(&key, tier),
                        Err(e) => tracing::error!("a probe run task failed: {e}"),
                    }
                }
                changed = self.plan.changed(), if plan_open => {
                    // `changed` marks the new value seen: apply it at the top.
                    match changed {
                        Ok(()) => plan_changed = true,
                        Err(_) => plan_open = false,
                    }
                }
                _ = stop.changed() => {}
            }
        }
        let in_flight = tasks.len();
        if in_flight > 0 {
            tracing::info!(in_flight, "waiting for running probes to finish");
            let drained = tokio::time::timeout(self.grace, async {
                while let Some(done) = tasks.join_next().await {
                    if let Ok((key, tier)) = done {
                        schedule.finished(&key, tier);
                    }
                }
            })
            .await;
            if drained.is_err() {
                tracing::warn!(
                    left = tasks.len(),
                    "probes still running at the end of the grace period were stopped"
                );
                tasks.abort_all();
            }
        }
        self.publish_in_flight(&schedule);
    }

    fn publish_in_flight(&self, schedule: &Schedule<Module>) {
        let (quick, deep) = schedule.running();
        self.metrics.in_flight(Tier::Quick, quick);
        self.metrics.in_flight(Tier::Deep, deep);
    }
}

struct RunTask {
    runtime: Runtime,
    outbox: Arc<Outbox>,
    metrics: Arc<Metrics>,
    target: Target,
}

impl RunTask {
    async fn run(self, start: Start<Module>) {
        let a = &start.assignment;
        let taken_at_ms = crate::unix_ms();
        let report = match &start.module {
            Module::Ready(probe) => {
                let spec = RunSpec {
                    target: self.target.clone(),
                    config: a.config.clone(),
                    limits: Limits {
                        fuel: a.fuel,
                        timeout_ms: a.timeout_ms,
                        memory_mib: a.memory_mib,
                    },
                };
                let budget = Duration::from_millis(u64::from(a.timeout_ms)) + RUN_SLACK;
                match tokio::time::timeout(budget, self.runtime.run(probe, &spec)).await {
                    Ok(r) => r,
                    Err(_) => failed(
                        Outcome::Timeout,
                        format!(
                            "the sandbox did not end the run within {} ms",
                            budget.as_millis()
                        ),
                        budget.as_secs_f64() * 1000.0,
                    ),
                }
            }
            Module::Refused(message) => failed(Outcome::Invalid, message.clone(), 0.0),
            Module::Missing => {
                tracing::debug!(probe = %start.key, "module not fetched yet; run skipped");
                self.metrics.skipped(&a.pool, &a.probe);
                return;
            }
        };
        self.metrics.run(&a.pool, &a.probe, report.outcome);
        if report.outcome != Outcome::Ok {
            tracing::debug!(probe = %start.key, outcome = %report.outcome, message = %report.message, "probe run failed");
        }
        self.outbox.push(sample(a, report, taken_at_ms)).await;
    }
}

fn failed(outcome: Outcome, message: String, duration_ms: f64) -> RunReport {
    RunReport {
        outcome,
        metrics: Default::default(),
        duration_ms,
        fuel_used: None,
        message,
        stderr: String::new(),
    }
}

/// The tail of `s`, at most `max` bytes, cut at a character boundary.
fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut at = s.len() - max;
    while !s.is_char_boundary(at) {
        at += 1;
    }
    s[at..].to_string()
}

/// The sample of one run.
pub fn sample(a: &Assignment, r: RunReport, taken_at_ms: i64) -> Sample {
    Sample {
        id: uuid::Uuid::now_v7().to_string(),
        pool: a.pool.clone(),
        probe: a.probe.clone(),
        version: a.version,
        taken_at_ms,
        outcome: r.outcome,
        metrics: if r.outcome == Outcome::Ok {
            r.metrics
        } else {
            Default::default()
        },
        duration_ms: if r.duration_ms.is_finite() {
            r.duration_ms.max(0.0)
        } else {
            0.0
        },
        fuel_used: r.fuel_used,
        message: tail(&r.message, MAX_SAMPLE_STDERR),
        stderr: tail(&r.stderr, MAX_SAMPLE_STDERR),
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn samples_carry_the_run_and_bound_its_output() {
        let a = Assignment {
            pool: "web".into(),
            probe: "p".into(),
            version: 3,
            sha256: "00".into(),
            tier: Tier::Quick,
            interval_ms: 1000,
            timeout_ms: 100,
            fuel: None,
            memory_mib: 16,
            config: BTreeMap::new(),
        };
        let r = RunReport {
            outcome: Outcome::Trap,
            metrics: BTreeMap::from([("x".to_string(), 1.0)]),
            duration_ms: f64::NAN,
            fuel_used: Some(7),
            message: "boom".into(),
            stderr: "é".repeat(5000),
        };
        let s = sample(&a, r, 99);
        assert_eq!(
            (s.version, s.taken_at_ms, s.outcome),
            (3, 99, Outcome::Trap)
        );
        assert!(s.metrics.is_empty(), "metrics only with ok");
        assert_eq!(s.duration_ms, 0.0);
        assert!(s.stderr.len() <= MAX_SAMPLE_STDERR && s.stderr.starts_with('é'));
        assert!(uuid::Uuid::parse_str(&s.id).is_ok());
    }
}
