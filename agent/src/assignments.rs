//! Keeping the assignments current: register, poll `GET /v1/agents/{node}/assignments`
//! with `If-None-Match`, fetch new modules by sha256 and verify their hash (a mismatch is
//! refused, never run, and reported), keep verified modules on disk and compiled in the
//! runtime's cache, and hand the scheduler a [`Plan`] whenever anything changes. The last
//! assignments are kept on disk too, so a restart probes before the balancer answers.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use plb_api::{Assignment, Assignments, RegisterRequest};
use plb_runtime::{Probe, Runtime, RuntimeError};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::balancer::{ApiError, BalancerClient, Fetched};
use crate::metrics::Metrics;
use crate::policy;
use crate::schedule::ProbeKey;

/// A probe's module as far as the agent knows it.
#[derive(Debug, Clone)]
pub enum Module {
    /// Verified against its sha256 and ready to run.
    Ready(Probe),
    /// Not to be run: its bytes did not match the sha256, or it is not a usable
    /// component. Every due run is reported as `invalid` with this message instead.
    Refused(String),
    /// Not fetched yet (the balancer is unreachable): runs are skipped, not reported.
    Missing,
}

/// What the scheduler runs: the target address and each probe with its module.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The node's address: every probe's target.
    pub address: String,
    /// The probes.
    pub probes: Vec<(Assignment, Module)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    etag: Option<String>,
    assignments: Assignments,
}

/// The syncer's fixed inputs.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Registration body.
    pub register: RegisterRequest,
    /// Poll period.
    pub poll: Duration,
    /// Where verified modules and the last assignments are kept.
    pub state_dir: PathBuf,
}

#[derive(Debug, Clone)]
struct Refusal {
    message: String,
    attempts: u32,
    retry_at: Instant,
}

/// Registers and keeps the [`Plan`] current.
#[derive(Debug)]
pub struct Syncer {
    client: BalancerClient,
    runtime: Runtime,
    cfg: SyncConfig,
    metrics: Arc<Metrics>,
    plan: watch::Sender<Plan>,
    etag: Option<String>,
    current: Option<Assignments>,
    /// Verified modules by sha256.
    ready: HashMap<String, Probe>,
    /// Modules refused, by sha256, with when to try downloading them again.
    refused: HashMap<String, Refusal>,
    /// The module last run per probe, to keep running while a new version downloads.
    running: BTreeMap<ProbeKey, (Assignment, Module)>,
}

fn modules_dir(state: &Path) -> PathBuf {
    state.join("modules")
}

fn saved_path(state: &Path) -> PathBuf {
    state.join("assignments.json")
}

/// Checks that `bytes` hash to `sha256`.
pub fn verify(sha256: &str, bytes: Vec<u8>) -> Result<Probe, String> {
    let probe = Probe::new(bytes);
    if probe.sha256().eq_ignore_ascii_case(sha256) {
        Ok(probe)
    } else {
        Err(format!(
            "module refused: its bytes hash to sha256 {} but the assignment names {}; not run",
            probe.sha256(),
            sha256
        ))
    }
}

impl Syncer {
    /// A syncer publishing to `plan`.
    pub fn new(
        client: BalancerClient,
        runtime: Runtime,
        cfg: SyncConfig,
        metrics: Arc<Metrics>,
        plan: watch::Sender<Plan>,
    ) -> Self {
        Syncer {
            client,
            runtime,
            cfg,
            metrics,
            plan,
            etag: None,
            current: None,
            ready: HashMap::new(),
            refused: HashMap::new(),
            running: BTreeMap::new(),
        }
    }

    /// Runs until `stop` turns true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        self.restore().await;
        let mut registered = false;
        let mut failures: u32 = 0;
        loop {
            if *stop.borrow() {
                return;
            }
            let ok = if registered {
                self.poll_once(&mut registered).await
            } else {
                match self.client.register(&self.cfg.register).await {
                    Ok(()) => {
                        tracing::info!(node = %self.cfg.register.node, pools = ?self.cfg.register.pools, "registered with the balancer");
                        self.metrics.set_registered();
                        registered = true;
                        self.poll_once(&mut registered).await
                    }
                    Err(e) => {
                        if failures == 0 || !e.retryable() {
                            tracing::warn!("registration failed, will retry: {e}");
                        }
                        false
                    }
                }
            };
            failures = if ok { 0 } else { failures.saturating_add(1) };
            // Poll at the period with a little jitter; back off on failures, but never
            // beyond a few periods so that a recovered balancer is seen soon.
            let wait = if ok {
                policy::jittered(
                    Instant::now() + self.cfg.poll,
                    self.cfg.poll,
                    rand::random(),
                )
                .saturating_duration_since(Instant::now())
            } else {
                policy::backoff(
                    failures,
                    self.cfg.poll / 4,
                    self.cfg.poll * 2,
                    rand::random(),
                )
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// One poll; returns whether the balancer answered usefully.
    async fn poll_once(&mut self, registered: &mut bool) -> bool {
        match self.client.assignments(self.etag.as_deref()).await {
            Ok(Fetched::Unchanged) => {
                self.metrics.poll("unchanged");
                self.metrics.balancer_up.set(1);
                if self.needs_retry() {
                    self.apply().await;
                }
                true
            }
            Ok(Fetched::Changed { assignments, etag }) => {
                self.metrics.poll("changed");
                self.metrics.balancer_up.set(1);
                if self.current.as_ref() != Some(&assignments) {
                    tracing::info!(probes = assignments.probes.len(), "new assignments");
                }
                self.current = Some(assignments);
                self.etag = etag;
                self.save().await;
                self.apply().await;
                true
            }
            Err(e) => {
                self.metrics.poll("error");
                if matches!(e.status(), Some(404)) {
                    // The balancer does not know this node (e.g. its store was reset).
                    tracing::warn!("balancer does not know this node; registering again");
                    *registered = false;
                    self.etag = None;
                } else if e.retryable() {
                    if e.status().is_none() {
                        self.metrics.balancer_up.set(0);
                    }
                    tracing::debug!("assignment poll failed: {e}");
                } else {
                    tracing::warn!("assignment poll failed: {e}");
                }
                false
            }
        }
    }

    fn needs_retry(&self) -> bool {
        let now = Instant::now();
        self.current.as_ref().is_some_and(|a| {
            a.probes.iter().any(|p| {
                let key = p.sha256.to_ascii_lowercase();
                !self.ready.contains_key(&key)
                    && self.refused.get(&key).is_none_or(|r| r.retry_at <= now)
            })
        })
    }

    /// Loads the last assignments and their verified modules from disk.
    async fn restore(&mut self) {
        let path = saved_path(&self.cfg.state_dir);
        let saved = match tokio::fs::read(&path).await {
            Ok(b) => match serde_json::from_slice::<Saved>(&b) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(path = %path.display(), "ignoring unreadable saved assignments: {e}");
                    return;
                }
            },
            Err(_) => return,
        };
        tracing::info!(
            probes = saved.assignments.probes.len(),
            "restored the last assignments"
        );
        self.etag = saved.etag;
        self.current = Some(saved.assignments);
        self.apply_offline().await;
    }

    async fn save(&self) {
        let Some(a) = &self.current else { return };
        let body = match serde_json::to_vec(&Saved {
            etag: self.etag.clone(),
            assignments: a.clone(),
        }) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("encoding assignments: {e}");
                return;
            }
        };
        let path = saved_path(&self.cfg.state_dir);
        if let Err(e) = write_atomic(&path, &body).await {
            tracing::warn!(path = %path.display(), "could not save the assignments: {e}");
        }
    }

    /// Resolves modules from disk only (no balancer yet), and publishes.
    async fn apply_offline(&mut self) {
        let Some(a) = self.current.clone() else {
            return;
        };
        for p in &a.probes {
            let sha = p.sha256.to_ascii_lowercase();
            if !self.ready.contains_key(&sha)
                && let Some(probe) = self.load_from_disk(&sha).await
            {
                self.prepare(&sha, probe, p.fuel.is_some()).await;
            }
        }
        self.publish(&a);
    }

    /// Resolves every assigned module (disk, then the balancer) and publishes.
    async fn apply(&mut self) {
        let Some(a) = self.current.clone() else {
            return;
        };
        // What needs no download (interval changes, known modules) applies at once, so a
        // slow download of one probe's new module does not hold up the others.
        self.publish(&a);
        let now = Instant::now();
        for p in &a.probes {
            let sha = p.sha256.to_ascii_lowercase();
            if self.ready.contains_key(&sha)
                || self.refused.get(&sha).is_some_and(|r| r.retry_at > now)
            {
                continue;
            }
            if let Some(probe) = self.load_from_disk(&sha).await {
                self.prepare(&sha, probe, p.fuel.is_some()).await;
                continue;
            }
            match self.client.module(&sha).await {
                Ok(bytes) => match verify(&sha, bytes) {
                    Ok(probe) => {
                        self.metrics.modules_downloaded.inc();
                        self.refused.remove(&sha);
                        let path = modules_dir(&self.cfg.state_dir).join(format!("{sha}.wasm"));
                        if let Err(e) = write_atomic(&path, probe.bytes()).await {
                            tracing::warn!(path = %path.display(), "could not keep the module on disk: {e}");
                        }
                        tracing::info!(pool = %p.pool, probe = %p.probe, version = p.version, %sha, "module downloaded and verified");
                        self.prepare(&sha, probe, p.fuel.is_some()).await;
                    }
                    Err(message) => {
                        self.metrics.modules_rejected.inc();
                        tracing::error!(pool = %p.pool, probe = %p.probe, version = p.version, "{message}");
                        self.refuse(&sha, message);
                    }
                },
                Err(e) => self.fetch_failed(&sha, p, &e),
            }
        }
        self.publish(&a);
    }

    fn refuse(&mut self, sha: &str, message: String) {
        let attempts = self
            .refused
            .get(sha)
            .map_or(0, |r| r.attempts.saturating_add(1));
        let wait = policy::backoff(
            attempts,
            self.cfg.poll.max(Duration::from_secs(1)),
            Duration::from_secs(600),
            rand::random(),
        );
        self.refused.insert(
            sha.to_string(),
            Refusal {
                message,
                attempts,
                retry_at: Instant::now() + wait,
            },
        );
    }

    fn fetch_failed(&mut self, sha: &str, p: &Assignment, e: &ApiError) {
        if matches!(e.status(), Some(404)) {
            tracing::warn!(pool = %p.pool, probe = %p.probe, %sha, "balancer has no such module");
        } else {
            tracing::warn!(pool = %p.pool, probe = %p.probe, %sha, "module download failed, will retry: {e}");
        }
    }

    async fn load_from_disk(&self, sha: &str) -> Option<Probe> {
        let path = modules_dir(&self.cfg.state_dir).join(format!("{sha}.wasm"));
        let bytes = tokio::fs::read(&path).await.ok()?;
        match verify(sha, bytes) {
            Ok(p) => Some(p),
            Err(_) => {
                tracing::warn!(path = %path.display(), "kept module is damaged; removing it and downloading again");
                let _ = tokio::fs::remove_file(&path).await;
                None
            }
        }
    }

    /// Compiles ahead of the first run (or loads the compiled artifact from the
    /// runtime's disk cache); a module that is not a usable component is refused.
    async fn prepare(&mut self, sha: &str, probe: Probe, metered: bool) {
        let rt = self.runtime.clone();
        let p = probe.clone();
        let result = tokio::task::spawn_blocking(move || rt.prepare(&p, metered)).await;
        match result {
            Ok(Ok(())) => {
                self.ready.insert(sha.to_string(), probe);
            }
            Ok(Err(RuntimeError::Invalid(msg))) => {
                tracing::error!(%sha, "module is not a usable probe: {msg}");
                self.refuse(sha, format!("module refused: {msg}"));
            }
            Ok(Err(e)) => {
                // The sandbox's own trouble, not the module's: let the run report it.
                tracing::warn!(%sha, "could not compile ahead of time: {e}");
                self.ready.insert(sha.to_string(), probe);
            }
            Err(e) => tracing::error!(%sha, "compile task failed: {e}"),
        }
    }

    /// Pairs each assignment with its module and hands the plan to the scheduler. A
    /// probe whose new version is not here yet keeps running its previous version.
    fn publish(&mut self, a: &Assignments) {
        let mut probes = Vec::with_capacity(a.probes.len());
        let mut running = BTreeMap::new();
        for p in &a.probes {
            let sha = p.sha256.to_ascii_lowercase();
            let key = ProbeKey::of(p);
            let entry = if let Some(probe) = self.ready.get(&sha) {
                (p.clone(), Module::Ready(probe.clone()))
            } else if let Some(r) = self.refused.get(&sha) {
                (p.clone(), Module::Refused(r.message.clone()))
            } else if let Some(prev @ (_, Module::Ready(_))) = self.running.get(&key) {
                // Keep the previous version, at the new interval.
                let mut old = prev.0.clone();
                old.interval_ms = p.interval_ms;
                (old, prev.1.clone())
            } else {
                (p.clone(), Module::Missing)
            };
            running.insert(key, entry.clone());
            probes.push(entry);
        }
        self.running = running;
        // Forget modules no longer assigned.
        let live: std::collections::HashSet<String> = a
            .probes
            .iter()
            .map(|p| p.sha256.to_ascii_lowercase())
            .collect();
        self.ready.retain(|k, _| live.contains(k));
        self.refused.retain(|k, _| live.contains(k));
        self.metrics.assignments.set(probes.len() as i64);
        let address = if a.address.is_empty() {
            self.cfg.register.address.clone()
        } else {
            a.address.clone()
        };
        self.plan.send_replace(Plan { address, probes });
    }
}

async fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::rename(&tmp, path).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_must_match_its_hash() {
        let bytes = b"\0asm\x0d\0\x01\0".to_vec();
        let sha = Probe::new(bytes.clone()).sha256().to_string();
        assert!(verify(&sha, bytes.clone()).is_ok());
        assert!(verify(&sha.to_ascii_uppercase(), bytes.clone()).is_ok());
        let mut flipped = bytes;
        flipped[7] ^= 1;
        let err = verify(&sha, flipped).expect_err("mismatch");
        assert!(err.contains("refused") && err.contains(&sha), "{err}");
    }
}
