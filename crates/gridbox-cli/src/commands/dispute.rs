//! `gridbox dispute`: two receipts of the same job that disagree, settled by bisecting their
//! trace logs to the first differing link and recomputing that one op, or by a replay where the
//! difference is the job's own code (spec/trace.md, "Disputes").

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use gridbox_compute::{DeviceChoice, TraceEntry};
use gridbox_core::dispute::{self, Party, Replay, Wrong};
use gridbox_core::trace_file::{self, TRACE_FILE};
use gridbox_core::{Manifest, Policy, Receipt};

use crate::cache::CacheArgs;
use crate::device::{engine_on, uses_tensors};
use crate::exit;
use crate::flags::{InputArgs, gather_inputs, read};

/// `gridbox dispute`'s flags.
#[derive(Args)]
pub(crate) struct DisputeArgs {
    /// Receipt A.
    receipt_a: PathBuf,
    /// Receipt B (of the same manifest).
    receipt_b: PathBuf,
    /// A's trace log; default: trace.jsonl beside receipt A.
    #[arg(long, value_name = "FILE")]
    trace_a: Option<PathBuf>,
    /// B's trace log; default: trace.jsonl beside receipt B.
    #[arg(long, value_name = "FILE")]
    trace_b: Option<PathBuf>,
    /// A's kept tensors (`gridbox run --keep-tensors DIR`), for recomputing the disputed op.
    #[arg(long, value_name = "DIR")]
    tensors_a: Option<PathBuf>,
    /// B's kept tensors.
    #[arg(long, value_name = "DIR")]
    tensors_b: Option<PathBuf>,
    /// The job's module, for a replay when the difference is not one op's output.
    #[arg(long)]
    module: Option<PathBuf>,
    #[command(flatten)]
    inputs: InputArgs,
    /// Where a replay's tensor ops run: auto (the default), cpu, cuda or cuda:N.
    #[arg(long, value_name = "DEVICE")]
    device: Option<DeviceChoice>,
    #[command(flatten)]
    cache: CacheArgs,
    /// Print the verdict as JSON.
    #[arg(long)]
    json: bool,
}

/// Settles; exit status 0 when there is no dispute, 1 when a receipt is named wrong, 2 when it
/// is undecided or could not be had.
pub(crate) fn dispute(args: DisputeArgs) -> Result<u8> {
    let receipt_a = load_receipt(&args.receipt_a)?;
    let receipt_b = load_receipt(&args.receipt_b)?;
    let log_a = load_log(&args.receipt_a, args.trace_a.as_deref())?;
    let log_b = load_log(&args.receipt_b, args.trace_b.as_deref())?;
    let engine;
    let replay = match &args.module {
        None => None,
        Some(module) => {
            // The receipt's manifest says which inputs a mount flag's files are.
            let manifest = Manifest::from_toml(&receipt_a.manifest.text).ok();
            engine = engine_on(&Policy::default(), args.device, uses_tensors(manifest.as_ref()), &args.cache)?;
            let module: Arc<[u8]> = read(module)?.into();
            Some(Replay { engine: &engine, module, inputs: gather_inputs(&args.inputs, manifest.as_ref())?.inputs, time_ms: None })
        }
    };
    let a = Party { receipt: &receipt_a, log: &log_a, tensors: args.tensors_a.as_deref() };
    let b = Party { receipt: &receipt_b, log: &log_b, tensors: args.tensors_b.as_deref() };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let verdict = dispute::dispute(a, b, replay.as_ref(), threads)?;
    if args.json {
        let mut json = serde_json::to_value(&verdict)?;
        json["verdict"] = verdict.summary().into();
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        println!("verdict                {}", verdict.summary());
        println!("wrong                  {}", verdict.wrong.map_or("undecided", Wrong::as_str));
        if let (Some(index), Some(op)) = (verdict.index, &verdict.op) {
            println!("first difference       entry {index} ({op})");
        }
        println!("chain states compared  {} (bound ceil(log2 {}) + 1 = {})", verdict.chain_states_compared, verdict.calls, verdict.bound);
        println!("ops recomputed         {}", verdict.ops_recomputed);
        println!("replayed               {}", if verdict.replayed { "yes" } else { "no" });
        println!("reason                 {}", verdict.reason);
    }
    eprintln!("gridbox: dispute: {}", verdict.summary());
    Ok(match verdict.wrong {
        Some(Wrong::Neither) => 0,
        Some(_) => exit::MISMATCH,
        None => exit::VERIFY_ERROR,
    })
}

fn load_receipt(path: &Path) -> Result<Receipt> {
    Receipt::from_json(&read(path)?).with_context(|| format!("receipt {}", path.display()))
}

/// `trace`, or the trace.jsonl in the receipt's folder.
fn load_log(receipt: &Path, trace: Option<&Path>) -> Result<Vec<TraceEntry>> {
    let path = match trace {
        Some(path) => path.to_path_buf(),
        None => receipt.parent().unwrap_or(Path::new(".")).join(TRACE_FILE),
    };
    trace_file::decode(&read(&path)?).with_context(|| format!("trace {}", path.display()))
}
