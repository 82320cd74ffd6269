//! The tests' lying provider: `gridbox provide`, except that it flips one byte of each job's first
//! output (or of its stdout) before signing. A checker must catch it and record the mismatch
//! against its key. Built only with the `lying-provider` feature, never in a release.
//!
//! `lying_provider NATS_URL KEYFILE`

use std::sync::Arc;

use gridbox_core::engine::JobEngine;
use gridbox_core::keys;
use gridbox_fleet::provider::{Provider, ProviderConfig};
use gridbox_fleet::{Credentials, Market, market};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, key] = args.as_slice() else {
        return Err("usage: lying_provider NATS_URL KEYFILE".into());
    };
    let key = keys::read_secret_key(std::path::Path::new(key))?;
    let client = market::connect(url, &Credentials::default(), "gridbox lying provider").await?;
    let market = Market::open(client).await?;
    let policy = gridbox_core::manifest::Policy::default();
    let engine = Arc::new(JobEngine::new(&policy)?);
    let policy = policy.clone();
    let provider = Provider::new(market, engine, ProviderConfig { workers: 1, key, policy, lie: true });
    eprintln!("gridbox: lying provider {} ready", provider.public_key());
    let (_stop, stop) = tokio::sync::watch::channel(false);
    provider.run(stop).await?;
    Ok(())
}
