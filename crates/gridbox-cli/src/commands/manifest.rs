//! `gridbox manifest`: print the manifest `run`'s flags would make, so that it can be kept in a
//! repository, reviewed, and passed to `run --manifest`, `submit --manifest` or `verify --manifest`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use gridbox_core::Policy;
use gridbox_service::ServiceConfig;

use crate::flags::{InputArgs, JobFlags, job_manifest, read, read_text};

/// `gridbox manifest`'s flags: `run`'s job flags.
#[derive(Args)]
pub(crate) struct ManifestArgs {
    /// The job's wasm module (its BLAKE3 goes in the manifest).
    module: PathBuf,
    #[command(flatten)]
    inputs: InputArgs,
    #[command(flatten)]
    job: JobFlags,
    /// Print the manifest resolved against this provider policy (TOML) instead of the built-in
    /// one: every limit filled in, as a receipt embeds it.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Print only what the flags set (unset limits are left to the provider's policy), as a
    /// client would send it.
    #[arg(long, conflicts_with = "policy")]
    request: bool,
}

/// Prints the manifest on stdout.
pub(crate) fn manifest(args: ManifestArgs) -> Result<u8> {
    let module = read(&args.module)?;
    let (manifest, _inputs) = job_manifest(None, &args.job, &args.inputs, &module)?;
    if args.request {
        print!("{}", manifest.to_canonical_toml());
        return Ok(0);
    }
    let policy = match &args.policy {
        Some(path) => ServiceConfig::from_toml(&read_text(path)?).with_context(|| format!("policy {}", path.display()))?.policy,
        None => Policy::default(),
    };
    print!("{}", manifest.resolve(&policy)?.text());
    Ok(0)
}
