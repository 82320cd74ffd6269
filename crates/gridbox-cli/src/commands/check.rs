//! `gridbox check`: a verifier in the market (spec/fleet.md): replays a sample of the jobs
//! providers end and publishes a verdict per job, tallied against the provider's key.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use gridbox_core::Policy;
use gridbox_fleet::checker::{Checker, CheckerConfig, render_metrics};
use gridbox_fleet::{Market, market};

use super::fleet_flags::{NatsArgs, run_until_signal, serve_metrics};
use crate::cache::CacheArgs;
use crate::device::engine_on;
use crate::flags::read_text;

/// `gridbox check`'s flags.
#[derive(Args)]
pub(crate) struct CheckArgs {
    /// The market's NATS server, e.g. nats://market.example:4222.
    #[arg(long, value_name = "URL")]
    nats: String,
    #[command(flatten)]
    nats_auth: NatsArgs,
    /// The fraction of ended jobs to replay, 0 to 1 (drawn with a secret seed, so providers
    /// cannot tell which).
    #[arg(long, value_name = "P")]
    sample: f64,
    /// The market's policy file, for the engine's sizes (as `provide --policy`).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Replays at once.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Serve GET /metrics on this address (port 0 picks one).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<String>,
    #[command(flatten)]
    cache: CacheArgs,
}

/// Checks until SIGTERM or SIGINT.
pub(crate) fn check(args: CheckArgs) -> Result<u8> {
    anyhow::ensure!((0.0..=1.0).contains(&args.sample), "--sample {}: use a fraction from 0 to 1", args.sample);
    anyhow::ensure!((1..=256).contains(&args.workers), "--workers {}: use 1 to 256", args.workers);
    let policy = match &args.policy {
        Some(path) => gridbox_service::ServiceConfig::from_toml(&read_text(path)?).with_context(|| format!("policy {}", path.display()))?.policy,
        None => Policy::default(),
    };
    // Replays run on the CPU: the reference every backend matches bit for bit.
    let engine = Arc::new(engine_on(&policy, Some(gridbox_compute::DeviceChoice::Cpu), false, &args.cache)?.into_engine());
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("cannot draw the sample's secret seed: {e}"))?;
    let credentials = args.nats_auth.credentials()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let client = market::connect(&args.nats, &credentials, "gridbox check").await?;
        let market = Market::open(client).await?;
        let checker = Checker::new(market, engine, CheckerConfig { sample: args.sample, seed, workers: args.workers, policy: policy.clone() });
        let shown = checker.clone();
        serve_metrics(args.metrics_addr.as_deref(), Arc::new(move || render_metrics(&shown))).await?;
        eprintln!("gridbox: checking {} of the jobs ended in {}", args.sample, gridbox_fleet::redacted_url(&args.nats));
        run_until_signal("checker", |stop| checker.run(stop)).await?;
        eprintln!("gridbox: stopped");
        Ok(0)
    })
}
