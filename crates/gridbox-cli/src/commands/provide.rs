//! `gridbox provide`: a provider in the market (spec/fleet.md): pulls jobs from the work queue,
//! runs them, stores their results and signed receipts, and records each job's end once.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use gridbox_compute::DeviceChoice;
use gridbox_core::{Capability, Policy, keys};
use gridbox_fleet::provider::{Provider, ProviderConfig, render_metrics};
use gridbox_fleet::{Market, market};

use super::fleet_flags::{NatsArgs, run_until_signal, serve_metrics};
use crate::cache::CacheArgs;
use crate::device::engine_on;
use crate::flags::read_text;

/// `gridbox provide`'s flags.
#[derive(Args)]
pub(crate) struct ProvideArgs {
    /// The market's NATS server, e.g. nats://market.example:4222.
    #[arg(long, value_name = "URL")]
    nats: String,
    #[command(flatten)]
    nats_auth: NatsArgs,
    /// The key this provider signs receipts with (`gridbox keygen`): its name in the market.
    /// Default: `$XDG_DATA_HOME/gridbox/provider.key` (or `~/.local/share/gridbox/provider.key`),
    /// made on first start, so that the provider keeps one name across restarts.
    #[arg(long)]
    key: Option<PathBuf>,
    /// The market's policy file (the gateway's; its [[tenants]] and [serve] are ignored): the
    /// engine is sized for the largest job it allows. Default: the built-in policy.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Where tensor ops run: auto (the default), cpu, cuda or cuda:N.
    #[arg(long, value_name = "DEVICE")]
    device: Option<DeviceChoice>,
    /// Jobs run at once; default: the number of CPUs.
    #[arg(long)]
    workers: Option<usize>,
    /// Serve GET /metrics on this address (e.g. 127.0.0.1:9101; port 0 picks one).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<String>,
    #[command(flatten)]
    cache: CacheArgs,
}

/// Provides until SIGTERM or SIGINT.
pub(crate) fn provide(args: ProvideArgs) -> Result<u8> {
    let policy = match &args.policy {
        Some(path) => gridbox_service::ServiceConfig::from_toml(&read_text(path)?).with_context(|| format!("policy {}", path.display()))?.policy,
        None => Policy::default(),
    };
    let key = match &args.key {
        Some(path) => keys::read_secret_key(path)?,
        None => default_key()?,
    };
    let tensors = policy.capabilities.contains(&Capability::Tensor);
    let engine = engine_on(&policy, args.device, tensors, &args.cache)?;
    engine.announce_device();
    let engine = Arc::new(engine.into_engine());
    let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    anyhow::ensure!((1..=256).contains(&workers), "--workers {workers}: use 1 to 256");
    let credentials = args.nats_auth.credentials()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let client = market::connect(&args.nats, &credentials, "gridbox provide").await?;
        let market = Market::open(client).await?;
        let provider = Provider::new(market, engine, ProviderConfig { workers, key, policy });
        let shown = provider.clone();
        serve_metrics(args.metrics_addr.as_deref(), Arc::new(move || render_metrics(&shown))).await?;
        eprintln!("gridbox: providing to {} as {} ({workers} workers)", gridbox_fleet::redacted_url(&args.nats), provider.public_key());
        run_until_signal("provider", |stop| provider.run(stop)).await?;
        eprintln!("gridbox: stopped; jobs it was running go back to the queue");
        Ok(0)
    })
}

/// The provider's own key in its data folder, made if it is not there yet.
fn default_key() -> Result<ed25519_dalek::SigningKey> {
    let data = match std::env::var_os("XDG_DATA_HOME").filter(|dir| !dir.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").context("no --key, and neither XDG_DATA_HOME nor HOME is set to keep a provider key under")?)
            .join(".local/share"),
    };
    let path = data.join("gridbox").join("provider.key");
    if !path.exists() {
        let folder = path.parent().unwrap_or(&data);
        std::fs::create_dir_all(folder).with_context(|| format!("cannot create {}", folder.display()))?;
        keys::write_key_pair(&keys::generate()?, &path)?;
        eprintln!("gridbox: made a provider key in {} (its public half beside it)", path.display());
    }
    Ok(keys::read_secret_key(&path)?)
}
