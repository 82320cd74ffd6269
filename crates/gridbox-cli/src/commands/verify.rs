//! `gridbox verify`: check a receipt by its signature, its commitments and a replay.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use gridbox_compute::DeviceChoice;
use gridbox_core::verify::{self, Basis, Evidence, Verification, VerifyOptions};
use gridbox_core::{Manifest, Policy, Receipt, artifacts};

use crate::device::engine_on;
use crate::exit;
use crate::flags::{InputArgs, artifacts_beside, gather_inputs, read, read_text};

/// `gridbox verify`'s flags.
#[derive(Args)]
pub(crate) struct VerifyArgs {
    /// The receipt to check.
    receipt: PathBuf,
    /// The job's wasm module.
    #[arg(long)]
    module: PathBuf,
    #[command(flatten)]
    inputs: InputArgs,
    /// Folder holding the delivered stdout, stderr and output/ to check too; default: the
    /// receipt's folder when it holds them.
    #[arg(long)]
    artifacts: Option<PathBuf>,
    /// The manifest the job was submitted with (TOML, as the client wrote it): every field it
    /// sets must be what the receipt says ran.
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// A provider key to trust (64 hex digits, or a file of keys such as a keygen .pub file);
    /// repeatable. Without one the signer is not pinned, and the report says so.
    #[arg(long = "trust", value_name = "KEY|FILE")]
    trust: Vec<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Where the replay's tensor ops run: auto, cpu, cuda or cuda:N. Any backend must give the
    /// receipt's bytes.
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    device: DeviceChoice,
    /// Give up on a replay that runs longer than this (exit status 2); default: ten times the
    /// job's own wall-time limit, at least 60 s.
    #[arg(long, value_name = "SECONDS")]
    time_limit: Option<u64>,
}

/// Verifies; exit status 0 when every field matches, 1 on a mismatch.
pub(crate) fn verify(args: VerifyArgs) -> Result<u8> {
    let receipt = Receipt::from_json(&read(&args.receipt)?).with_context(|| format!("receipt {}", args.receipt.display()))?;
    let artifact_dir = args.artifacts.clone().or_else(|| artifacts_beside(&args.receipt));
    // The receipt's manifest says which inputs a mount flag's files are; an unreadable one is
    // reported by the verification itself.
    let manifest = Manifest::from_toml(&receipt.manifest.text).ok();
    let evidence = Evidence {
        module: read(&args.module)?.into(),
        inputs: gather_inputs(&args.inputs, manifest.as_ref())?.inputs,
        artifacts: artifact_dir.as_deref().map(artifacts::read).transpose()?,
        requested: match &args.manifest {
            Some(path) => Some(Manifest::from_toml(&read_text(path)?).with_context(|| format!("manifest {}", path.display()))?),
            None => None,
        },
    };
    let engine = engine_on(&Policy::default(), args.device)?;
    let options = VerifyOptions { replay_time_ms: args.time_limit.map(|s| s.saturating_mul(1000)), trusted_keys: trusted_keys(&args.trust)? };
    let report = verify::verify(&engine, &receipt, &evidence, options)?;
    if args.json {
        let json = serde_json::json!({
            "ok": report.ok(),
            "first_mismatch": report.first_mismatch().map(|check| &check.field),
            "signer_pinned": report.signer_pinned,
            "request_checked": evidence.requested.is_some(),
            "checks": report.checks,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print_table(&report);
    }
    match report.first_mismatch() {
        None => {
            eprintln!("gridbox: receipt verified: every field matches");
            if evidence.requested.is_none() {
                eprintln!("gridbox: note: no --manifest given: the receipt's manifest was not compared with what the client asked for");
            }
            warn_if_unpinned(&report);
            Ok(0)
        }
        Some(check) => {
            eprintln!("gridbox: verification FAILED: first mismatch in `{}`: expected {}, got {}", check.field, check.expected, check.got);
            Ok(exit::MISMATCH)
        }
    }
}

/// Prints the checks as a table. The last column says what each row rests on; `claim` rows are
/// the provider's word, checked by nothing.
pub(crate) fn print_table(report: &Verification) {
    let width = |f: fn(&verify::Check) -> usize| report.checks.iter().map(f).max().unwrap_or(0);
    let (fw, ew) = (width(|c| c.field.len()).max(5), width(|c| c.expected.len()).clamp(8, 80));
    println!("{:fw$}  {:ew$}  {:ew$}  ok   checked by", "field", "expected", "got");
    for check in &report.checks {
        let mark = match (check.ok, check.basis) {
            (_, Basis::Claim) => "-  ",
            (true, _) => "yes",
            (false, _) => "NO ",
        };
        let basis = if check.basis == Basis::Claim { "nothing (the provider's claim)" } else { check.basis.as_str() };
        println!("{:fw$}  {:ew$}  {:ew$}  {mark}  {basis}", check.field, check.expected, check.got);
    }
}

/// The keys `--trust` names.
pub(crate) fn trusted_keys(specs: &[String]) -> Result<Vec<ed25519_dalek::VerifyingKey>> {
    let mut keys = Vec::new();
    for spec in specs {
        keys.extend(gridbox_core::keys::read_trusted_keys(spec)?);
    }
    Ok(keys)
}

/// Says plainly that a valid signature proved only that someone signed, when no key was pinned.
pub(crate) fn warn_if_unpinned(report: &Verification) {
    if !report.signer_pinned {
        eprintln!("gridbox: note: the signer is not pinned (no --trust key): the signature is valid, but anyone could have made it");
    }
}
