//! `gridbox run`: run a job here and sign its receipt.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use gridbox_compute::DeviceChoice;
use gridbox_core::artifacts::{self, RECEIPT_FILE};
use gridbox_core::kept_tensors::TensorDir;
use gridbox_core::wasi::{StdStream, StdioEcho};
use gridbox_core::{Job, Outcome, Policy, Receipt, RunOptions, keys};
use gridbox_service::ServiceConfig;

use crate::cache::CacheArgs;
use crate::device::{engine_on, uses_tensors};
use crate::exit;
use crate::flags::{InputArgs, JobFlags, job_manifest, read, read_text};

/// `gridbox run`'s flags.
#[derive(Args)]
pub(crate) struct RunArgs {
    /// The job's wasm module.
    module: PathBuf,
    /// The job's manifest (TOML). Without one, gridbox writes one from the flags.
    #[arg(long)]
    manifest: Option<PathBuf>,
    #[command(flatten)]
    inputs: InputArgs,
    #[command(flatten)]
    job: JobFlags,
    /// The provider policy (TOML) that caps every limit; default: gridbox's built-in policy.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Folder for stdout, stderr, output/ and receipt.json (must be absent or empty).
    #[arg(long)]
    out: Option<PathBuf>,
    /// With --out: replace the results of an earlier run in that folder (one holding a
    /// receipt.json), once the new ones are written.
    #[arg(long, requires = "out")]
    replace: bool,
    /// The provider's secret key; without one, a throwaway key signs the receipt.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Do not echo the job's stdout and stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Keep every tensor the trace names (created, op inputs and outputs, read) in DIR, as
    /// DIR/<tensor hash>.tensor, for `gridbox check-op`. Changes nothing in the run or receipt.
    #[arg(long, value_name = "DIR")]
    keep_tensors: Option<PathBuf>,
    /// Where tensor ops run: auto (the default: a CUDA GPU if there is one), cpu, cuda or cuda:N.
    #[arg(long, value_name = "DEVICE")]
    device: Option<DeviceChoice>,
    #[command(flatten)]
    cache: CacheArgs,
}

/// Runs the job; the exit status is the job's own or what stopped it.
pub(crate) fn run(args: RunArgs) -> Result<u8> {
    let module: Arc<[u8]> = read(&args.module)?.into();
    let policy = match &args.policy {
        Some(path) => ServiceConfig::from_toml(&read_text(path)?).with_context(|| format!("policy {}", path.display()))?.policy,
        None => Policy::default(),
    };
    let (manifest, inputs) = job_manifest(args.manifest.as_deref(), &args.job, &args.inputs, &module)?;
    let resolved = manifest.resolve(&policy)?;
    if let Some(out) = &args.out {
        if args.replace { artifacts::check_replaceable(out)? } else { artifacts::check_writable(out)? }
    }
    let key = match &args.key {
        Some(path) => keys::read_secret_key(path)?,
        None => keys::generate()?,
    };
    let engine = engine_on(&policy, args.device, uses_tensors(Some(resolved.manifest())), &args.cache)?;
    let job = Job::new(module, resolved, inputs)?;
    engine.announce(&job)?;
    // The job's output is shown as it is written, so a long job shows signs of life.
    let echo = (!args.quiet).then(|| StdioEcho(Arc::new(echo_to_terminal)));
    let keeper = args.keep_tensors.as_deref().map(TensorDir::create).transpose()?.map(Arc::new);
    let keep_tensors = keeper.clone().map(|k| k as Arc<dyn gridbox_compute::TensorKeeper>);
    // With --out the trace log's entries are kept for trace.jsonl (bounded by the job's fuel).
    let run = engine.run(&job, RunOptions { echo, keep_trace_log: args.out.is_some(), keep_tensors, ..RunOptions::default() })?;
    let receipt = Receipt::sign(&job, &run, &engine.backend().name(), &key);

    if let Some(out) = &args.out {
        write_results(out, args.replace, &receipt, || artifacts::write(out, &run, &receipt))?;
        eprintln!("gridbox: {}; receipt in {}", run.outcome, out.join(RECEIPT_FILE).display());
    } else if !matches!(run.outcome, Outcome::Exited { code: 0 }) {
        eprintln!("gridbox: {}", run.outcome);
    }
    if args.key.is_none() && args.out.is_some() {
        eprintln!("gridbox: note: signed with a throwaway key; pass --key (see `gridbox keygen`) to sign as a provider");
    }
    for line in crate::explain::explain(&job, &run, &policy) {
        eprintln!("gridbox: {line}");
    }
    if let (Some(keeper), Some(dir)) = (&keeper, &args.keep_tensors) {
        let kept =
            keeper.finish().with_context(|| format!("--keep-tensors {}: the run and its receipt are fine, but not every tensor was kept", dir.display()))?;
        eprintln!("gridbox: kept {kept} tensors in {}", dir.display());
    }
    Ok(exit::for_outcome(&run.outcome))
}

/// Writes a signed run's results to `out` with `write`: into an absent or empty folder, or with
/// `replace` over an earlier run's results, which are set aside first and deleted only once the
/// new ones are in place (put back if they cannot be written). The receipt is never lost.
pub(crate) fn write_results(out: &Path, replace: bool, receipt: &Receipt, write: impl FnOnce() -> Result<(), artifacts::ArtifactError>) -> Result<()> {
    let aside = if replace { artifacts::set_aside(out)? } else { None };
    match write() {
        Ok(()) => {
            if let Some(aside) = aside {
                artifacts::discard(&aside)?;
            }
            Ok(())
        }
        Err(error) => {
            keep_receipt(out, receipt);
            if let Some(aside) = aside {
                artifacts::restore(out, &aside)?;
            }
            Err(error.into())
        }
    }
}

/// After the artifacts of a signed run could not be written to `out`: the receipt must not be
/// lost with the folder, so it goes to `OUT.receipt.json`, or to stderr if even that fails.
pub(crate) fn keep_receipt(out: &Path, receipt: &Receipt) {
    let fallback = PathBuf::from(format!("{}.receipt.json", out.display()));
    match std::fs::write(&fallback, receipt.to_canonical_json()) {
        Ok(()) => eprintln!("gridbox: {}; cannot write {}; the receipt is in {}", receipt.outcome, out.display(), fallback.display()),
        Err(_) => eprintln!(
            "gridbox: {}; cannot write {} or {}; the receipt:\n{}",
            receipt.outcome,
            out.display(),
            fallback.display(),
            String::from_utf8_lossy(&receipt.to_canonical_json())
        ),
    }
}

/// Writes what the job wrote to gridbox's own stdout or stderr. A closed terminal or pipe is
/// ignored: it must not change the job.
fn echo_to_terminal(stream: StdStream, bytes: &[u8]) {
    let _ = match stream {
        StdStream::Stdout => std::io::stdout().lock().write_all(bytes).and_then(|()| std::io::stdout().flush()),
        StdStream::Stderr => std::io::stderr().lock().write_all(bytes),
    };
}
