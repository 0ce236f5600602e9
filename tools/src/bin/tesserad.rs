//! `tesserad`: the Tessera server. A thin wrapper: flags and config file -> `tessera_net::Node`,
//! then wait for SIGINT/SIGTERM or a SHUTDOWN command and stop in order.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tessera_net::server::{load_config, Overrides};
use tessera_net::Node;

/// The Tessera server: a thread-per-core, shared-nothing in-memory cache speaking RESP2/RESP3.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    bind: Option<IpAddr>,
    /// TCP port (default 6379).
    #[arg(long)]
    port: Option<u16>,
    /// Executors, one per core (default: every CPU this process may use).
    #[arg(long)]
    cores: Option<usize>,
    /// TOML config file (see config/example.toml).
    #[arg(long, env = "TESSERA_CONFIG")]
    config: Option<PathBuf>,
    /// Memory budget of the node: bytes or 100mb / 1gb forms (0 = unlimited).
    #[arg(long)]
    maxmemory: Option<String>,
    /// noeviction | allkeys-lru | volatile-lru | allkeys-lfu | volatile-ttl | allkeys-sieve.
    #[arg(long)]
    maxmemory_policy: Option<String>,
    /// Password clients must give with AUTH.
    #[arg(long)]
    requirepass: Option<String>,
    /// Port of the admin HTTP listener serving /metrics (Prometheus) and /health (off unless
    /// given here or as `[admin] port` in the config file).
    #[arg(long)]
    admin_port: Option<u16>,
    /// Address of the admin listener (default 127.0.0.1: it has no authentication).
    #[arg(long)]
    admin_bind: Option<IpAddr>,
    /// Run as a cluster member (gossip, peer links, -MOVED redirects).
    #[arg(long)]
    cluster: bool,
    /// Gossip addresses of seed nodes (their --cluster-port), comma separated.
    #[arg(long, value_delimiter = ',')]
    seeds: Option<Vec<String>>,
    /// Peer-link (TCP) and gossip (UDP) port (default 16379).
    #[arg(long)]
    cluster_port: Option<u16>,
    /// The cluster secret peers authenticate with (required with --cluster).
    #[arg(long, env = "TESSERA_CLUSTER_SECRET")]
    cluster_secret: Option<String>,
    /// Log filter (error, warn, info, debug, trace, or a tracing EnvFilter).
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log_level)
                .with_context(|| format!("bad --log-level '{}'", args.log_level))?,
        )
        .with_writer(std::io::stderr)
        .init();
    let overrides = Overrides {
        bind: args.bind,
        port: args.port,
        cores: args.cores,
        maxmemory: args.maxmemory,
        maxmemory_policy: args.maxmemory_policy,
        requirepass: args.requirepass,
        admin_port: args.admin_port,
        admin_bind: args.admin_bind,
        cluster: args.cluster,
        seeds: args.seeds,
        cluster_port: args.cluster_port,
        cluster_secret: args.cluster_secret,
    };
    let config = load_config(args.config.as_deref(), &overrides)?;
    // Signals are registered before the node starts so none is missed.
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("cannot install signal handlers")?;
    let sig_handle = signals.handle();
    let (sig_tx, sig_rx) = crossbeam_channel::bounded(1);
    let sig_thread = std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            let _ = sig_tx.send(sig);
        }
    });
    let node = Node::start(config).context("cannot start the node")?;
    if let Some(addr) = node.local_addr() {
        tracing::info!(%addr, cores = node.cores(), "ready to accept connections");
    }
    if let Some(addr) = node.admin_addr() {
        tracing::info!(%addr, "admin port: /metrics, /health");
    }
    let shutdown = node.shutdown_requested();
    crossbeam_channel::select! {
        recv(sig_rx) -> sig => tracing::info!(signal = ?sig.ok(), "signal received, shutting down"),
        recv(shutdown) -> _ => tracing::info!("SHUTDOWN received, shutting down"),
    }
    node.shutdown();
    sig_handle.close();
    let _ = sig_thread.join();
    tracing::info!("bye");
    Ok(())
}
