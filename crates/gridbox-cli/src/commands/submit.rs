//! `gridbox submit`: send a job to a server, follow it, fetch its results, maybe replay it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use gridbox_compute::DeviceChoice;
use gridbox_core::artifacts::{self, RECEIPT_FILE};
use gridbox_core::verify::{self, Evidence};
use gridbox_core::{BlobRef, Job, Policy, Receipt};
use gridbox_service::client::Client;

use super::verify::{table, trusted_keys, warn_if_unpinned};
use crate::cache::CacheArgs;
use crate::device::{engine_on, uses_tensors};
use crate::exit;
use crate::flags::{InputArgs, JobFlags, ServerArgs, job_manifest, read};

/// `gridbox submit`'s flags.
#[derive(Args)]
pub(crate) struct SubmitArgs {
    /// The job's wasm module.
    module: PathBuf,
    /// The job's manifest (TOML); without one, gridbox writes one from the flags.
    #[arg(long)]
    manifest: Option<PathBuf>,
    #[command(flatten)]
    inputs: InputArgs,
    #[command(flatten)]
    server: ServerArgs,
    /// Folder for stdout, stderr, output/ and receipt.json (must be absent or empty).
    #[arg(long)]
    out: Option<PathBuf>,
    /// With --out: replace the results of an earlier run in that folder (one holding a
    /// receipt.json), once the new ones are written.
    #[arg(long, requires = "out")]
    replace: bool,
    /// Do not echo the job's stdout and stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Replay the job here and check the receipt, as `gridbox verify` does.
    #[arg(long)]
    verify: bool,
    /// With --verify: a provider key to trust (64 hex digits, or a file of keys such as a
    /// keygen .pub file); repeatable. Without one the signer is not pinned, and it says so.
    #[arg(long = "trust", value_name = "KEY|FILE")]
    trust: Vec<String>,
    /// Where the replay's tensor ops run: auto (the default), cpu, cuda or cuda:N.
    #[arg(long, value_name = "DEVICE")]
    device: Option<DeviceChoice>,
    #[command(flatten)]
    job: JobFlags,
    #[command(flatten)]
    cache: CacheArgs,
}

/// Submits and waits; exit status as for `run`, 1 if a replay does not match.
pub(crate) fn submit(args: SubmitArgs) -> Result<u8> {
    let module = read(&args.module)?;
    let (manifest, inputs) = job_manifest(args.manifest.as_deref(), &args.job, &args.inputs, &module)?;
    let manifest_text = manifest.to_canonical_toml();
    // Check locally what the server would refuse anyway, before uploading anything.
    Job::new(module.clone().into(), manifest.clone().resolve(&Policy::default())?, inputs.clone())?;
    if let Some(out) = &args.out {
        if args.replace { artifacts::check_replaceable(out)? } else { artifacts::check_writable(out)? }
    }
    let client = Client::new(&args.server.server, &args.server.token)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    let (status, receipt, parts) = runtime.block_on(async {
        let mut uploaded = 0;
        for bytes in std::iter::once(module.as_slice()).chain(inputs.values().map(|b| &b[..])) {
            uploaded += usize::from(client.ensure_blob(&bytes::Bytes::copy_from_slice(bytes)).await?);
        }
        let total = 1 + inputs.len();
        eprintln!("gridbox: uploaded {uploaded} of {total} blobs ({} already on the server)", total - uploaded);
        let mut status = client.submit(&manifest_text).await?;
        eprintln!("gridbox: job {} {}", status.id, status.state.as_str());
        let mut shown = (status.state, status.fuel_used);
        while !status.state.is_final() {
            status = client.status(&status.id, std::time::Duration::from_secs(1)).await?;
            if (status.state, status.fuel_used) != shown {
                eprintln!("gridbox: job {} {} (fuel used {})", status.id, status.state.as_str(), status.fuel_used);
                shown = (status.state, status.fuel_used);
            }
        }
        let Some(_) = &status.receipt else {
            return anyhow::Ok((status, None, None));
        };
        let receipt = client.receipt(&status.id).await?;
        let mut outputs = BTreeMap::new();
        for (name, blob) in &status.outputs {
            outputs.insert(name.clone(), client.download(blob).await?);
        }
        let download = |blob: Option<BlobRef>| {
            let client = client.clone();
            async move {
                match blob {
                    Some(blob) => client.download(&blob).await,
                    None => Ok(Vec::new()),
                }
            }
        };
        let parts = artifacts::Artifacts { stdout: Some(download(status.stdout).await?), stderr: Some(download(status.stderr).await?), outputs, trace: None };
        anyhow::Ok((status, Some(receipt), Some(parts)))
    })?;
    let (Some(receipt_bytes), Some(parts)) = (receipt, parts) else {
        eprintln!("gridbox: job {} failed before it ran: {}", status.id, status.reason.as_deref().unwrap_or("no reason given"));
        return Ok(exit::REFUSED);
    };
    let receipt = Receipt::from_json(&receipt_bytes).context("the server's receipt")?;
    // As `run` does: the job's output, with --out or without.
    if !args.quiet {
        std::io::stdout().write_all(parts.stdout.as_deref().unwrap_or_default()).context("writing stdout")?;
        std::io::stdout().flush().context("writing stdout")?;
        std::io::stderr().write_all(parts.stderr.as_deref().unwrap_or_default()).context("writing stderr")?;
    }
    if let Some(out) = &args.out {
        super::run::write_results(out, args.replace, &receipt, || artifacts::write_parts(out, &parts, &receipt))?;
        eprintln!("gridbox: {}; receipt in {}", receipt.outcome, out.join(RECEIPT_FILE).display());
    } else {
        eprintln!("gridbox: {}", receipt.outcome);
    }
    if args.verify {
        // The manifest this client built is the request: the receipt must show that it ran.
        let evidence = Evidence { module: module.into(), inputs, artifacts: Some(parts), requested: Some(manifest), trace: None };
        let engine = engine_on(&Policy::default(), args.device, uses_tensors(evidence.requested.as_ref()), &args.cache)?;
        engine.announce_device();
        let options = verify::VerifyOptions { trusted_keys: trusted_keys(&args.trust)?, ..verify::VerifyOptions::default() };
        let report = verify::verify(&engine, &receipt, &evidence, options)?;
        if let Some(check) = report.first_mismatch() {
            print!("{}", table(&report, false));
            eprintln!("gridbox: verification FAILED: first mismatch in `{}`: expected {}, got {}", check.field, check.expected, check.got);
            return Ok(exit::MISMATCH);
        }
        eprintln!("gridbox: replayed locally: every field of the receipt matches, and it ran the manifest sent");
        warn_if_unpinned(&report);
    }
    Ok(exit::for_outcome(&receipt.outcome))
}
