//! `gridbox check-op`: check one entry of a run's trace log against its receipt, and recompute
//! its op on the CPU reference from the kept tensors (spec/trace.md).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use gridbox_core::verify::check_op;
use gridbox_core::{Receipt, trace_file};

use crate::exit;
use crate::flags::read;

/// `gridbox check-op`'s flags.
#[derive(Args)]
pub(crate) struct CheckOpArgs {
    /// The receipt (its signature is checked strictly).
    receipt: PathBuf,
    /// The run's trace log (trace.jsonl, as `gridbox run --out` writes it).
    #[arg(long, value_name = "TRACE.jsonl")]
    trace: PathBuf,
    /// Which entry (from 0).
    #[arg(long, value_name = "I")]
    index: u64,
    /// The kept tensors (`gridbox run --keep-tensors DIR`).
    #[arg(long, value_name = "DIR")]
    tensors: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Checks; exit status 0 when the entry holds, 1 when a check fails, 2 when it cannot be checked.
pub(crate) fn check(args: CheckOpArgs) -> Result<u8> {
    let receipt = Receipt::from_json(&read(&args.receipt)?).with_context(|| format!("receipt {}", args.receipt.display()))?;
    let entries = trace_file::decode(&read(&args.trace)?).with_context(|| format!("trace {}", args.trace.display()))?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let report =
        check_op(&receipt, &entries, args.index, &args.tensors, threads).with_context(|| format!("entry {} of {}", args.index, args.trace.display()))?;
    if args.json {
        let json = serde_json::json!({
            "ok": report.ok(),
            "verdict": report.verdict(),
            "failed": report.failed().map(|step| step.check),
            "index": report.index,
            "op": report.op,
            "steps": report.steps,
            "proof": report.proof,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        for step in &report.steps {
            println!("{:10}  {:3}  {}", step.check, if step.ok { "yes" } else { "NO" }, step.detail);
        }
    }
    match report.failed() {
        None => {
            eprintln!("gridbox: entry {} ({}) checked: ok", report.index, report.op);
            Ok(0)
        }
        Some(step) => {
            eprintln!("gridbox: entry {} ({}) FAILED: {}: {}", report.index, report.op, report.verdict(), step.detail);
            Ok(exit::MISMATCH)
        }
    }
}
