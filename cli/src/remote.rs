//! Subcommands that talk to a running balancer over its REST API: clients and tokens,
//! pools, probe upload/list/status, route decisions and feedback, notifications. Every
//! answer is printed as pretty JSON on stdout; an API error exits non-zero with the
//! server's code and message.
use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use plb_api::{ProbeSettings, Tier};
use plb_client::{Client, Method};
use serde::Serialize;

/// Where the balancer is and who we are.
#[derive(Debug, Clone, Args)]
pub struct Remote {
    /// The balancer's base URL.
    #[arg(
        long,
        env = "PLB_BALANCER",
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    pub balancer: String,
    /// An API token (a client's, or the admin token for `plb client create`).
    #[arg(
        long,
        env = "PLB_TOKEN",
        hide_env_values = true,
        global = true,
        default_value = ""
    )]
    pub token: String,
}

impl Remote {
    fn client(&self) -> anyhow::Result<Client> {
        if self.token.is_empty() {
            anyhow::bail!("no token: pass --token or set PLB_TOKEN");
        }
        Client::new(&self.balancer, self.token.clone()).context("the balancer URL")
    }
}

fn print<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// `plb client ...` (admin token).
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Create a client; prints its id and API token (shown once).
    Create {
        /// The client's name.
        name: String,
    },
    /// Revoke a client's token and all its agent tokens.
    Revoke {
        /// The client id.
        id: i64,
    },
}

/// `plb agent-token ...`
#[derive(Debug, Subcommand)]
pub enum AgentTokenCommand {
    /// Create an agent token enrolled for the given pools (admin or the pools' owner).
    Create {
        /// A pool the agent may register nodes into; repeat for more.
        #[arg(long = "pool", required = true)]
        pools: Vec<String>,
        /// The owning client's id (required with the admin token).
        #[arg(long)]
        client: Option<i64>,
    },
    /// Revoke an agent token.
    Revoke {
        /// The token id.
        id: i64,
    },
}

/// `plb pool ...`
#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Create a pool.
    Create {
        /// Pool name.
        name: String,
        /// The pool's latency objective in ms.
        #[arg(long, default_value_t = 100.0)]
        latency_slo_ms: f64,
    },
    /// List your pools.
    List,
    /// One pool.
    Get {
        /// Pool name.
        name: String,
    },
    /// The pool's nodes: state, reason, profiles, forecasts, capacity, recent outcomes.
    Nodes {
        /// Pool name.
        name: String,
    },
}

/// Probe settings given on the command line.
#[derive(Debug, Args)]
pub struct UploadArgs {
    /// The component (.wasm).
    pub file: PathBuf,
    /// The pool.
    #[arg(long)]
    pub pool: String,
    /// The probe's name (default: the file name without `.wasm`).
    #[arg(long)]
    pub name: Option<String>,
    /// `quick` (cheap, every few seconds) or `deep` (a benchmark, every ~30-60 s).
    #[arg(long, default_value = "quick", value_parser = parse_tier)]
    pub tier: Tier,
    /// Time between runs on one node, ms.
    #[arg(long, default_value_t = 5_000)]
    pub interval_ms: u64,
    /// Wall-clock limit of one run, ms.
    #[arg(long, default_value_t = 1_000)]
    pub timeout_ms: u32,
    /// Fuel per run; 0 runs without fuel metering.
    #[arg(long, default_value_t = 1_000_000_000)]
    pub fuel: u64,
    /// Memory limit per run, MiB.
    #[arg(long, default_value_t = 64)]
    pub memory_mib: u32,
    /// A config entry `key=value`; repeat for more.
    #[arg(long = "config", value_parser = crate::probe::parse_kv)]
    pub config: Vec<(String, String)>,
}

fn parse_tier(s: &str) -> Result<Tier, String> {
    match s {
        "quick" => Ok(Tier::Quick),
        "deep" => Ok(Tier::Deep),
        _ => Err(format!("tier must be `quick` or `deep`, not {s:?}")),
    }
}

/// `plb route ...`
#[derive(Debug, Args)]
pub struct RouteArgs {
    /// The pool.
    pub pool: String,
    /// A locality key (the same key prefers the same node while it has headroom).
    #[arg(long)]
    pub key: Option<String>,
    /// Request size (relative units).
    #[arg(long)]
    pub size: Option<f64>,
    /// Request cost (relative units).
    #[arg(long)]
    pub cost: Option<f64>,
    /// Ask for this many decisions and print the share per node instead.
    #[arg(long, default_value_t = 1)]
    pub count: u32,
}

/// `plb feedback ...`
#[derive(Debug, Args)]
pub struct FeedbackArgs {
    /// The pool.
    pub pool: String,
    /// The node the request went to.
    #[arg(long)]
    pub node: String,
    /// Its latency, ms.
    #[arg(long)]
    pub latency_ms: f64,
    /// The request failed.
    #[arg(long)]
    pub error: bool,
}

pub async fn client_cmd(remote: &Remote, cmd: ClientCommand) -> anyhow::Result<()> {
    let c = remote.client()?;
    match cmd {
        ClientCommand::Create { name } => print(&c.create_client(&name).await?),
        ClientCommand::Revoke { id } => {
            c.revoke_client(id).await?;
            print(&serde_json::json!({ "revoked": id }))
        }
    }
}

pub async fn agent_token_cmd(remote: &Remote, cmd: AgentTokenCommand) -> anyhow::Result<()> {
    let c = remote.client()?;
    match cmd {
        AgentTokenCommand::Create { pools, client } => {
            let pools: Vec<&str> = pools.iter().map(String::as_str).collect();
            print(&c.create_agent_token(&pools, client).await?)
        }
        AgentTokenCommand::Revoke { id } => {
            c.revoke_agent_token(id).await?;
            print(&serde_json::json!({ "revoked": id }))
        }
    }
}

pub async fn pool_cmd(remote: &Remote, cmd: PoolCommand) -> anyhow::Result<()> {
    let c = remote.client()?;
    match cmd {
        PoolCommand::Create {
            name,
            latency_slo_ms,
        } => print(&c.create_pool(&name, latency_slo_ms).await?),
        PoolCommand::List => print(&c.pools().await?),
        PoolCommand::Get { name } => print(&c.pool(&name).await?),
        PoolCommand::Nodes { name } => print(&c.pool_nodes(&name).await?),
    }
}

pub async fn upload(remote: &Remote, args: UploadArgs) -> anyhow::Result<()> {
    let c = remote.client()?;
    let wasm =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let name = match args.name {
        Some(n) => n,
        None => args
            .file
            .file_stem()
            .and_then(|s| s.to_str())
            .map(|s| s.replace('_', "-"))
            .context("cannot take a probe name from the file name: pass --name")?,
    };
    let settings = ProbeSettings {
        tier: args.tier,
        interval_ms: args.interval_ms,
        timeout_ms: args.timeout_ms,
        fuel: (args.fuel > 0).then_some(args.fuel),
        memory_mib: args.memory_mib,
        config: args.config.into_iter().collect::<BTreeMap<_, _>>(),
    };
    let up = c.upload_probe(&args.pool, &name, wasm, &settings).await?;
    if !up.created {
        eprintln!("unchanged: this module and these settings are already active");
    }
    print(&up.probe)
}

pub async fn probes(remote: &Remote, pool: &str) -> anyhow::Result<()> {
    print(&remote.client()?.probes(pool).await?)
}

pub async fn probe_status(remote: &Remote, pool: &str, name: Option<&str>) -> anyhow::Result<()> {
    let c = remote.client()?;
    let names: Vec<String> = match name {
        Some(n) => vec![n.to_string()],
        None => c.probes(pool).await?.into_iter().map(|p| p.name).collect(),
    };
    let mut probes = Vec::with_capacity(names.len());
    for n in &names {
        probes.push(
            c.get_value(&["v1", "pools", pool, "probes", n], &[])
                .await?,
        );
    }
    match (name, probes.len()) {
        (Some(_), 1) => print(&probes[0]),
        _ => print(&serde_json::json!({ "pool": pool, "probes": probes })),
    }
}

pub async fn delete_probe(remote: &Remote, pool: &str, name: &str) -> anyhow::Result<()> {
    remote.client()?.delete_probe(pool, name).await?;
    print(&serde_json::json!({ "deleted": name }))
}

pub async fn route(remote: &Remote, args: RouteArgs) -> anyhow::Result<()> {
    let c = remote.client()?;
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(k) = &args.key {
        query.push(("key", k.clone()));
    }
    if let Some(s) = args.size {
        query.push(("size", s.to_string()));
    }
    if let Some(s) = args.cost {
        query.push(("cost", s.to_string()));
    }
    let q: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let path = ["v1", "pools", args.pool.as_str(), "route"];
    if args.count <= 1 {
        return print(&c.get_value(&path, &q).await?);
    }
    let mut share: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..args.count {
        let d = c.get_value(&path, &q).await?;
        let node = d
            .get("node")
            .and_then(|n| n.as_str())
            .unwrap_or("?")
            .to_string();
        *share.entry(node).or_default() += 1;
    }
    print(&share)
}

pub async fn feedback(remote: &Remote, args: FeedbackArgs) -> anyhow::Result<()> {
    let body = serde_json::json!({
        "node": args.node,
        "latency_ms": args.latency_ms,
        "ok": !args.error,
    });
    let v = remote
        .client()?
        .send_value(
            Method::POST,
            &["v1", "pools", &args.pool, "feedback"],
            &body,
        )
        .await?;
    print(&v)
}

pub async fn notifications(remote: &Remote, since: Option<String>) -> anyhow::Result<()> {
    let q: Vec<(&str, &str)> = since.as_deref().map(|s| ("since", s)).into_iter().collect();
    print(
        &remote
            .client()?
            .get_value(&["v1", "notifications"], &q)
            .await?,
    )
}

/// `plb scaling POOL`: the pool's demand forecast and the nodes it needs now and at
/// 5 min, 15 min and 1 h (`GET /v1/pools/{pool}/scaling`), as JSON.
pub async fn scaling(remote: &Remote, pool: &str) -> anyhow::Result<()> {
    print(
        &remote
            .client()?
            .get_value(&["v1", "pools", pool, "scaling"], &[])
            .await?,
    )
}
