//! `plb bench lb`: the arguments and the run. For each scenario, live repetitions run
//! every policy at once; simulated repetitions run every contender (the oracle too) in
//! turn, repetition-major, so slow drift of the machine touches every contender alike.
//! A progress line goes to stderr, each scenario's tables to stdout as soon as they
//! are done, then the summary; the whole [`Report`] to `--json`.
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use plb_routing::PolicyKind;

use crate::anchors::{Anchor, Tools};
use crate::policies::{Contender, HarnessConfig, PipelineVariant};
use crate::report::{Report, Where};
use crate::scenario::{self, Scenario, Shape, mix};
use crate::{BenchError, live, sim};

/// Where to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Real HTTP backends on loopback.
    Live,
    /// The discrete-event simulator.
    Sim,
    /// Both; the simulator also runs at the live pool size to check itself.
    Both,
}

/// The load-balancing benchmark: every routing policy on scripted scenarios, live on
/// loopback and in the discrete-event simulator.
#[derive(Debug, Clone, clap::Args)]
pub struct LbArgs {
    /// Scenario name, a comma-separated list, or `all`.
    #[arg(long, default_value = "all")]
    pub scenario: String,
    /// Length of a standard scenario in seconds (nominal 30); every script scales with
    /// it (gradual-degradation is 4x as long as a standard one).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Base seed; each repetition derives its own.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// live, sim or both.
    #[arg(long, value_enum, default_value = "both")]
    pub mode: Mode,
    /// Pool sizes for the simulator, comma-separated (default 1000).
    #[arg(long, value_delimiter = ',')]
    pub nodes: Vec<usize>,
    /// Pool size of the live run.
    #[arg(long, default_value_t = 16)]
    pub live_nodes: usize,
    /// Repetitions per cell (default 3, 2 with --quick).
    #[arg(long)]
    pub reps: Option<usize>,
    /// The first repetition's number (0-based): `--first-rep 1 --reps 1` runs only the
    /// second repetition of a full run, with its seed.
    #[arg(long, default_value_t = 0)]
    pub first_rep: usize,
    /// Independent balancer instances (sidecars) per policy.
    #[arg(long, default_value_t = 4)]
    pub sidecars: usize,
    /// Write the whole report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// A short run: standard scenario 6 s, 2 repetitions.
    #[arg(long)]
    pub quick: bool,
    /// Print no progress line.
    #[arg(long)]
    pub no_progress: bool,
    /// Simulator runs at once (each is single-threaded).
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// Overrides of `plb`'s shipped pipeline settings, `k=v,...` (degrading_state,
    /// capacity_deadband, refit_ms, keep_ms, ttl_ms, enter_after, leave_after,
    /// recover_after, min_rel_scale, warmup, max_features, full_scan_max,
    /// scan_latency_exp, scan_latency_floor, scan_weight_floor, scan_busy_release, scan_busy_release_within, slow_start_cost_exp, slow_start_warm_after, slow_start_latency_exp, scan_mean_gate, scan_peak_cap, scan_mean_fade, scan_give_ups, slow_start_scouts, peer_min_nodes, trust, trust_prior, trust_z, capacity_shrink_rows,
    /// peer_rel_floor, release, release_fast, release_fast_within, shed_budget, load_share_start,
    /// load_share_full, outlook, outlook_start, outlook_full, outlook_horizon_ms, outlook_restart,
    /// outlook_rel_start, outlook_rel_full, outlook_rel_z_start, outlook_rel_z_full): how
    /// the defaults were settled.
    #[arg(long, default_value = "")]
    pub pipeline: String,
    /// Whether the harness' probe also reports the node's queue as a metric.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub queue_metric: bool,
    /// The backends' shape, live and simulated: `standard` (4 workers per node, mean
    /// service 40 ms, load 70%, SLO 200 ms) or `low-concurrency` (2 workers, median
    /// 20 ms, load 68%, SLO 100 ms).
    #[arg(long, value_enum, default_value = "standard")]
    pub shape: Shape,
    /// Real balancers run live beside the in-process policies, each in front of its
    /// own backends: `all`, `none`, or a list of haproxy-rr, haproxy-lc, nginx-lc,
    /// plb-proxy (`plb balancer --proxy`). One that is not installed is reported in
    /// the table, not fatal.
    #[arg(long, default_value = "all")]
    pub anchors: String,
    /// The in-process policies to run, comma-separated, or `all` (fewer lanes load a
    /// small machine less in live runs; `plb` is always among them).
    #[arg(long, default_value = "all")]
    pub policies: String,
    /// The `plb` binary for the plb-proxy anchor (default: this program, or `plb`
    /// beside it or on PATH); the balancer crate's `plb-balancer` works too.
    #[arg(long)]
    pub plb_bin: Option<PathBuf>,
    /// The routing policy of the PLB proxy lanes (the pool's `policy`: plb, least-conn,
    /// ...; default the shipped `plb`). With `least-conn` the lanes show what the
    /// proxy's own cost does, apart from its routing.
    #[arg(long)]
    pub proxy_policy: Option<PolicyKind>,
    /// Reads each PLB proxy lane's nodes view every 0.5 s into its timeline (degrade
    /// scores, routing shares, metric trust). Off by default: the reads cost those
    /// balancers CPU that the other lanes' balancers do not spend.
    #[arg(long)]
    pub watch: bool,
}

impl Default for LbArgs {
    fn default() -> Self {
        LbArgs {
            scenario: "all".into(),
            duration: None,
            seed: 1,
            mode: Mode::Both,
            nodes: Vec::new(),
            live_nodes: 16,
            reps: None,
            first_rep: 0,
            sidecars: 4,
            json: None,
            quick: false,
            no_progress: false,
            jobs: 2,
            pipeline: String::new(),
            queue_metric: false,
            shape: Shape::Standard,
            anchors: "all".into(),
            policies: "all".into(),
            plb_bin: None,
            proxy_policy: None,
            watch: false,
        }
    }
}

/// The policies that run live; the simulator adds the oracle.
pub const POLICIES: [PolicyKind; 6] = PolicyKind::ALL;

/// A standard scenario's nominal length, seconds.
const STANDARD: f64 = 30.0;

struct Progress {
    on: bool,
    began: Instant,
}

impl Progress {
    fn line(&self, text: &str) {
        if self.on {
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "\r\x1b[K[{:>4.0} s] {text}",
                self.began.elapsed().as_secs_f64()
            );
            let _ = err.flush();
        }
    }

    fn clear(&self) {
        if self.on {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
        }
    }
}

/// Runs the benchmark `args` describe, printing tables to stdout as it goes; returns
/// the report (also written to `--json` if given).
pub async fn run(args: LbArgs) -> Result<Report, BenchError> {
    let defs = scenario::select(&args.scenario)?;
    let seconds = args
        .duration
        .unwrap_or(if args.quick { 6.0 } else { STANDARD });
    if !(seconds.is_finite() && seconds >= 1.0) {
        return Err(BenchError::InvalidArgument(format!(
            "--duration must be at least 1 s, not {seconds}"
        )));
    }
    let scale = seconds / STANDARD;
    let reps = args.reps.unwrap_or(if args.quick { 2 } else { 3 });
    if reps == 0 || args.sidecars == 0 || args.live_nodes < 2 {
        return Err(BenchError::InvalidArgument(
            "--reps and --sidecars must be at least 1, --live-nodes at least 2".into(),
        ));
    }
    let mut sizes = if args.nodes.is_empty() {
        vec![1000]
    } else {
        args.nodes.clone()
    };
    if sizes.iter().any(|&n| n < 2) {
        return Err(BenchError::InvalidArgument(
            "--nodes must be at least 2".into(),
        ));
    }
    let (do_live, do_sim) = match args.mode {
        Mode::Live => (true, false),
        Mode::Sim => (false, true),
        Mode::Both => (true, true),
    };
    if args.mode == Mode::Both && !sizes.contains(&args.live_nodes) {
        sizes.insert(0, args.live_nodes);
    }
    let harness = HarnessConfig {
        sidecars: args.sidecars,
        queue_metric: args.queue_metric,
        pipeline: PipelineVariant::parse(&args.pipeline)?,
        ..HarnessConfig::default()
    };
    let anchor_list = Anchor::parse_list(&args.anchors).map_err(BenchError::Args)?;
    let kinds = parse_policies(&args.policies)?;
    let tools = if do_live && !anchor_list.is_empty() {
        Tools {
            proxy_policy: args.proxy_policy,
            watch: args.watch,
            ..Tools::find(args.plb_bin.as_deref())
        }
    } else {
        Tools::default()
    };
    let mut report = Report::new(args.seed, scale, reps, harness);
    report.shape = args.shape;
    report.first_rep = args.first_rep;
    report.proxy_policy = args.proxy_policy;
    let progress = Progress {
        on: !args.no_progress,
        began: Instant::now(),
    };
    let first = args.first_rep;
    for def in &defs {
        // Seeds follow the scenario's place in the whole table, not in the selection,
        // so a focused run repeats a full run's repetitions.
        let si = scenario::position(def);
        let rep_seed = |rep: usize| mix(args.seed, si as u64, rep as u64);
        if do_live {
            let sc = Arc::new(Scenario::with_shape(
                def,
                args.live_nodes,
                args.seed,
                scale,
                args.shape,
            ));
            for rep in first..first + reps {
                let label = format!(
                    "live {} {} rep {}/{}",
                    sc.nodes,
                    def.name,
                    rep + 1,
                    first + reps
                );
                progress.line(&label);
                let total = sc.duration();
                let (stats, anchored) = live::run_rep_with(
                    Arc::clone(&sc),
                    &kinds,
                    &anchor_list,
                    &tools,
                    &harness,
                    rep_seed(rep),
                    |t| progress.line(&format!("{label}: {t:.0}/{total:.0} s")),
                )
                .await?;
                for (kind, st) in kinds.iter().zip(stats) {
                    report.add(
                        &sc,
                        Where::Live,
                        Contender::Policy(*kind),
                        st.summarize(&sc),
                    );
                }
                for run in anchored {
                    let who = Contender::Anchor(run.anchor);
                    match run.result {
                        Ok(a) => {
                            let mut summary = a.stats.summarize(&sc);
                            summary.cpu_us_per_request = a.cpu_us_per_request();
                            report.add(&sc, Where::Live, who, summary);
                        }
                        Err(why) => report.note(&sc, Where::Live, who, why),
                    }
                }
            }
            progress.clear();
            print_now(&report.conclude(&sc, Where::Live));
        }
        if do_sim {
            for &n in &sizes {
                let sc = Arc::new(Scenario::with_shape(def, n, args.seed, scale, args.shape));
                let contenders: Vec<Contender> = kinds
                    .iter()
                    .map(|&k| Contender::Policy(k))
                    .chain([Contender::Oracle])
                    .collect();
                for rep in first..first + reps {
                    progress.line(&format!(
                        "sim {n} {} rep {}/{}",
                        def.name,
                        rep + 1,
                        first + reps
                    ));
                    let seed = rep_seed(rep);
                    let summaries =
                        run_sims(Arc::clone(&sc), &contenders, harness, seed, args.jobs).await?;
                    for (who, summary) in contenders.iter().zip(summaries) {
                        report.add(&sc, Where::Sim, *who, summary);
                    }
                }
                progress.clear();
                print_now(&report.conclude(&sc, Where::Sim));
            }
        }
    }
    print_now(&report.summary());
    if let Some(path) = &args.json {
        let body = serde_json::to_vec_pretty(&report)?;
        std::fs::write(path, body).map_err(|source| BenchError::Write {
            path: path.display().to_string(),
            source,
        })?;
    }
    Ok(report)
}

/// The policies `text` names (`all`, or a comma-separated list), `plb` always
/// among them.
fn parse_policies(text: &str) -> Result<Vec<PolicyKind>, BenchError> {
    if text.trim() == "all" {
        return Ok(POLICIES.to_vec());
    }
    let mut out = vec![PolicyKind::Plb];
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let kind = POLICIES
            .into_iter()
            .find(|k| k.as_str() == part)
            .ok_or_else(|| {
                BenchError::Args(format!(
                    "--policies: unknown policy `{part}`; known: all, {}",
                    POLICIES.map(|k| k.as_str()).join(", ")
                ))
            })?;
        if !out.contains(&kind) {
            out.push(kind);
        }
    }
    // In the table order.
    out.sort_by_key(|k| POLICIES.iter().position(|p| p == k));
    Ok(out)
}

/// Runs every contender on `sc` with `seed`, `jobs` at a time on blocking threads;
/// the summaries in the order of `contenders`.
async fn run_sims(
    sc: Arc<Scenario>,
    contenders: &[Contender],
    harness: HarnessConfig,
    seed: u64,
    jobs: usize,
) -> Result<Vec<crate::metrics::RunSummary>, BenchError> {
    let permits = Arc::new(tokio::sync::Semaphore::new(jobs.max(1)));
    let tasks: Vec<_> = contenders
        .iter()
        .map(|&who| {
            let sc = Arc::clone(&sc);
            let permits = Arc::clone(&permits);
            tokio::spawn(async move {
                let _permit = permits
                    .acquire_owned()
                    .await
                    .map_err(|e| BenchError::Task(e.to_string()))?;
                tokio::task::spawn_blocking(move || {
                    sim::run(&sc, who, &harness, seed).map(|st| st.summarize(&sc))
                })
                .await
                .map_err(|e| BenchError::Task(e.to_string()))?
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.map_err(|e| BenchError::Task(e.to_string()))??);
    }
    Ok(out)
}

fn print_now(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_plb_is_always_in() {
        assert_eq!(parse_policies("all").expect("all"), POLICIES.to_vec());
        assert_eq!(
            parse_policies("least-conn, round-robin").expect("two"),
            vec![
                PolicyKind::RoundRobin,
                PolicyKind::LeastConn,
                PolicyKind::Plb
            ]
        );
        let e = parse_policies("random").expect_err("unknown");
        assert!(e.to_string().contains("least-conn"), "{e}");
    }
}
