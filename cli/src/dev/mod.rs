//! `plb dev`: a whole local cluster in one process on the embedded SQLite default: the
//! balancer (data in a local folder, reused by the next start), a few demo nodes (one
//! slowly degrades a minute after start, then recovers), an agent per node running the
//! sample probes uploaded to a `demo` pool, and a small built-in load routed through the
//! balancer, so the dashboard and the API have something to show.
mod load;
mod node;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser};
use plb_api::{ProbeSettings, Tier};
use plb_client::Client;
use rand::Rng as _;
use serde::{Deserialize, Serialize};

pub use node::Script;

/// The demo pool's name.
pub const POOL: &str = "demo";

/// `plb dev`
#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// Where the cluster keeps its data (SQLite file, tokens, agent spools); a second
    /// start reuses it.
    #[arg(long, env = "PLB_DEV_DATA", default_value = ".plb-dev")]
    pub data: PathBuf,
    /// The balancer's address (API and dashboard).
    #[arg(long, env = "PLB_DEV_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// The reverse proxy for the demo pool (port 0 for a free one, e.g. `127.0.0.1:0`).
    #[arg(long, env = "PLB_DEV_PROXY", default_value = "127.0.0.1:7080")]
    pub proxy: SocketAddr,
    /// Demo nodes (the second one degrades and recovers).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub nodes: u32,
    /// Built-in load, requests per second through the balancer (0: none).
    #[arg(long, default_value_t = 20.0)]
    pub load_rps: f64,
    /// Stop by itself after this many seconds (for scripted runs); default: run until
    /// Ctrl-C.
    #[arg(long)]
    pub exit_after_s: Option<u64>,
}

/// What the first start creates and later starts reuse.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DevState {
    admin_token: String,
    client_id: i64,
    client_token: String,
    /// One agent token per node (a token is bound to the first node it registers).
    #[serde(default)]
    agent_tokens: std::collections::BTreeMap<String, String>,
}

fn random_token() -> String {
    let bytes: [u8; 24] = rand::rng().random();
    format!("dev-admin-{}", hex::encode(bytes))
}

fn state_path(data: &Path) -> PathBuf {
    data.join("dev.json")
}

fn load_state(data: &Path) -> anyhow::Result<Option<DevState>> {
    match std::fs::read(state_path(data)) {
        Ok(b) => Ok(Some(serde_json::from_slice(&b).context(
            "reading dev.json (delete the data folder to start over)",
        )?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).context("reading dev.json"),
    }
}

fn save_state(data: &Path, state: &DevState) -> anyhow::Result<()> {
    let tmp = data.join("dev.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(state)?)?;
    std::fs::rename(&tmp, state_path(data))?;
    Ok(())
}

/// Creates the demo client, pool and agent token, or checks that the saved ones still
/// work.
async fn bootstrap(url: &str, data: &Path, admin_token: String) -> anyhow::Result<DevState> {
    if let Some(state) = load_state(data)? {
        let client = Client::new(url, state.client_token.clone())?;
        if client.pool(POOL).await.is_ok() {
            return Ok(state);
        }
        tracing::warn!("the saved demo client no longer works; creating a new one");
    }
    let admin = Client::new(url, admin_token.clone())?;
    let created = admin.create_client("demo").await?;
    let client = Client::new(url, created.token.clone())?;
    client.create_pool(POOL, 50.0).await?;
    let state = DevState {
        admin_token,
        client_id: created.id,
        client_token: created.token,
        agent_tokens: Default::default(),
    };
    save_state(data, &state)?;
    Ok(state)
}

/// The sample probes the demo pool runs.
async fn upload_probes(client: &Client) -> anyhow::Result<()> {
    let probe = |tier, interval_ms, timeout_ms, config: &[(&str, &str)]| ProbeSettings {
        tier,
        interval_ms,
        timeout_ms,
        fuel: None,
        memory_mib: 32,
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let uploads = [
        (
            "health",
            plb_probe_artifacts::HTTP_CHECK,
            probe(Tier::Quick, 1_000, 1_000, &[("path", "/health")]),
        ),
        (
            "queue",
            plb_probe_artifacts::HTTP_CHECK,
            probe(
                Tier::Quick,
                1_000,
                1_000,
                &[
                    ("path", "/status"),
                    ("json-field", "queued"),
                    ("json-metric", "queue-depth"),
                ],
            ),
        ),
        (
            "tcp",
            plb_probe_artifacts::TCP_CONNECT,
            probe(Tier::Quick, 2_000, 1_000, &[]),
        ),
        (
            "cpu",
            plb_probe_artifacts::CPU_BENCH,
            probe(Tier::Deep, 30_000, 5_000, &[]),
        ),
    ];
    for (name, wasm, settings) in uploads {
        client
            .upload_probe(POOL, name, wasm.to_vec(), &settings)
            .await
            .with_context(|| format!("uploading the {name} probe"))?;
    }
    Ok(())
}

#[derive(Debug, Parser)]
struct AgentCli {
    #[command(flatten)]
    config: plb_agent::AgentConfig,
}

fn agent_config(
    url: &str,
    token: &str,
    node: &str,
    address: SocketAddr,
    spool: &Path,
) -> anyhow::Result<plb_agent::AgentConfig> {
    let spool = spool.to_string_lossy().into_owned();
    let address = address.to_string();
    let cli = AgentCli::try_parse_from([
        "agent",
        "--balancer",
        url,
        "--token",
        token,
        "--node",
        node,
        "--address",
        &address,
        "--pool",
        POOL,
        "--spool",
        &spool,
        "--metrics-listen",
        "127.0.0.1:0",
        "--poll-ms",
        "2000",
        "--node-sample-ms",
        "5000",
    ])
    .context("the demo agent's config")?;
    Ok(cli.config)
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("creating {}", args.data.display()))?;
    let admin_token = match load_state(&args.data)? {
        Some(s) => s.admin_token,
        None => random_token(),
    };
    let mut cfg = plb_balancer::BalancerConfig::new(args.data.join("plb.db"), admin_token.clone());
    cfg.listen = args.listen;
    // The demo client is the first one created in its database (id 1) unless a saved
    // state names another.
    let demo_client = load_state(&args.data)?.map_or(1, |s| s.client_id);
    cfg.proxy = vec![
        format!("{demo_client}/{POOL}={}", args.proxy)
            .parse()
            .map_err(|e: String| anyhow::anyhow!(e))?,
    ];
    let balancer = plb_balancer::start(&cfg)
        .await
        .with_context(|| format!("starting the balancer on {}", args.listen))?;
    let url = balancer.url();
    let proxy_url = balancer
        .edges
        .proxy(demo_client, POOL)
        .map(|p| p.url())
        .context("the demo pool's proxy")?;
    let mut state = bootstrap(&url, &args.data, admin_token).await?;
    let client = Client::new(&url, state.client_token.clone())?;
    for i in 1..=args.nodes {
        let name = format!("node-{i}");
        if let std::collections::btree_map::Entry::Vacant(e) = state.agent_tokens.entry(name) {
            let t = client.create_agent_token(&[POOL], None).await?;
            e.insert(t.token);
            save_state(&args.data, &state)?;
        }
    }
    upload_probes(&client).await?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut nodes = Vec::new();
    let mut agents = Vec::new();
    for i in 1..=args.nodes {
        let name = format!("node-{i}");
        let script = if i == 2 {
            Script::demo_degrade()
        } else {
            Script::Steady
        };
        let n = node::spawn(&name, SocketAddr::from(([127, 0, 0, 1], 0)), script).await?;
        let spool = args.data.join("spool").join(&name);
        let token = state
            .agent_tokens
            .get(&name)
            .context("an agent token for every node")?;
        let cfg = agent_config(&url, token, &name, n.addr, &spool)?;
        let mut rx = stop_rx.clone();
        let agent_name = name.clone();
        agents.push(tokio::spawn(async move {
            let stop = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = plb_agent::run(cfg, stop).await {
                tracing::error!(node = %agent_name, error = %e, "demo agent stopped");
            }
        }));
        nodes.push(n);
    }
    let load = (args.load_rps > 0.0).then(|| {
        let targets = nodes.iter().map(|n| (n.name.clone(), n.addr)).collect();
        tokio::spawn(load::run(
            client.clone(),
            proxy_url.clone(),
            targets,
            args.load_rps,
            stop_rx.clone(),
        ))
    });

    print_banner(&args, &url, &proxy_url, &state, &nodes);

    let deadline = async {
        match args.exit_after_s {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = plb_balancer::shutdown_signal() => {}
        () = deadline => {}
    }
    eprintln!("stopping: agents flush their samples, then the balancer stops");
    let _ = stop_tx.send(true);
    if let Some(l) = load {
        let _ = l.await;
    }
    for a in agents {
        let _ = tokio::time::timeout(Duration::from_secs(10), a).await;
    }
    drop(nodes);
    balancer.stop().await?;
    Ok(())
}

fn print_banner(
    args: &DevArgs,
    url: &str,
    proxy_url: &str,
    state: &DevState,
    nodes: &[node::DemoNode],
) {
    let mut out = String::new();
    out.push_str("\nPLB dev cluster is up\n\n");
    out.push_str(&format!(
        "  dashboard   {url}/#token={}\n",
        state.client_token
    ));
    out.push_str(&format!(
        "  API         {url}/v1/  (OpenAPI: {url}/v1/openapi.json)\n"
    ));
    out.push_str(&format!("  proxy       {proxy_url}/  (pool {POOL})\n"));
    out.push_str(&format!("  metrics     {url}/metrics\n"));
    out.push_str(&format!("  data        {}\n\n", args.data.display()));
    for n in nodes {
        out.push_str(&format!("  {:<10}  http://{}/\n", n.name, n.addr));
    }
    out.push_str(&format!(
        "\n  client token  {}\n  admin token   {}\n  (agent tokens in {})\n\n",
        state.client_token,
        state.admin_token,
        state_path(&args.data).display()
    ));
    out.push_str("Try:\n");
    out.push_str(&format!(
        "  export PLB_BALANCER={url} PLB_TOKEN={}\n",
        state.client_token
    ));
    out.push_str(&format!(
        "  curl -s -H \"Authorization: Bearer $PLB_TOKEN\" {url}/v1/pools/{POOL}/route\n"
    ));
    out.push_str(&format!(
        "  curl -s -H \"Authorization: Bearer $PLB_TOKEN\" {url}/v1/pools/{POOL}/nodes\n"
    ));
    out.push_str(&format!("  curl -s {proxy_url}/\n"));
    out.push_str(&format!("  plb route {POOL} --count 100\n"));
    out.push_str(&format!("  plb probe list --pool {POOL}\n"));
    out.push_str("\nnode-2 starts to slow down a minute after start and recovers ~4 min later.\nCtrl-C stops everything.\n");
    println!("{out}");
}
