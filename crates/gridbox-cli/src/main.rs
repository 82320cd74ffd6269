//! `gridbox`: run jobs, verify receipts, serve and submit jobs, make provider keys.
//!
//! One module per subcommand in [`commands`]; the flags they share in [`flags`]; exit statuses
//! in [`exit`]. The only crate of gridbox that uses `anyhow`.

mod allocator;
mod cache;
mod commands;
mod device;
mod exit;
mod explain;
mod flags;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use commands::{check_op, dispute, hash, load, manifest, run, serve, submit, verify};

#[derive(Parser)]
#[command(name = "gridbox", version, about = "Deterministic, verifiable WebAssembly compute jobs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a wasm32-wasip1 job and write its outputs and signed receipt.
    ///
    /// Exit status: the job's own (0-125), 134 if it trapped, 135 if a limit stopped it,
    /// 136 if gridbox refused it, 138 if this machine failed while it ran (no receipt).
    Run(run::RunArgs),
    /// Check a receipt: its signature, its commitments, and a replay of the job.
    ///
    /// Exit status: 0 if every field matches, 1 on a mismatch (the first is named), 2 if
    /// verification could not be carried out.
    Verify(verify::VerifyArgs),
    /// Check one entry of a run's trace log: its Merkle proof against the receipt, its chain
    /// step, its inputs' hashes, and its op recomputed on the CPU reference.
    ///
    /// Exit status: 0 if it holds, 1 if a check fails (named), 2 if it could not be checked.
    CheckOp(check_op::CheckOpArgs),
    /// Settle two disagreeing receipts of one job: bisect their trace logs to the first differing
    /// link, recompute that op on the CPU reference (or replay the job) and name the wrong one.
    ///
    /// Exit status: 0 if there is no dispute, 1 if a receipt is named wrong, 2 if undecided.
    Dispute(dispute::DisputeArgs),
    /// Check K randomly chosen ops of a job a server ran, each as check-op does, from the entries,
    /// proofs and tensors the server hands out; print the chance a cheater would have escaped.
    ///
    /// Exit status: 0 if every sample holds, 1 if one fails (or the server cannot produce what
    /// its receipt commits to), 2 if the samples could not be checked (network, auth).
    SpotCheck(commands::spot_check::SpotCheckArgs),
    /// Serve jobs over HTTP as a provider (spec/http.md). SIGTERM stops it gracefully.
    Serve(serve::ServeArgs),
    /// Run the market's jobs: pull them from its NATS JetStream work queue, run them, store
    /// results and signed receipts, record each job's end (spec/fleet.md).
    Provide(commands::provide::ProvideArgs),
    /// Replay a sample of the market's ended jobs and publish a verdict on each (spec/fleet.md).
    Check(commands::check::CheckArgs),
    /// Send a job to a server, wait for it, download its results and optionally replay it.
    ///
    /// Exit status as for `run`; with --verify, 1 if the replay does not match the receipt.
    Submit(submit::SubmitArgs),
    /// Measure a server: run many tiny jobs from concurrent clients; print jobs/s and latency.
    Load(load::LoadArgs),
    /// Print the manifest `run`'s flags would make (resolved against a policy, or with --request
    /// as a client sends it), to keep, review or pass to --manifest.
    Manifest(manifest::ManifestArgs),
    /// Print the BLAKE3 of files (or of every file under folders), as manifests name them.
    Hash(hash::HashArgs),
    /// Write a new provider key pair: KEYFILE (mode 0600) and KEYFILE.pub.
    Keygen {
        /// Where to write the secret key.
        #[arg(default_value = "provider.key")]
        keyfile: PathBuf,
    },
    /// Write a new job project (Rust for wasm32-wasip1, the SDK copied in): see docs/first-job.md.
    New(commands::new::NewArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::REFUSED } else { 0 });
        }
    };
    let (result, on_error) = match cli.command {
        Command::Run(args) => (run::run(args), exit::REFUSED),
        Command::Verify(args) => (verify::verify(args), exit::VERIFY_ERROR),
        Command::CheckOp(args) => (check_op::check(args), exit::VERIFY_ERROR),
        Command::Dispute(args) => (dispute::dispute(args), exit::VERIFY_ERROR),
        Command::SpotCheck(args) => (commands::spot_check::spot_check(args), exit::VERIFY_ERROR),
        Command::Serve(args) => (serve::serve(args), exit::REFUSED),
        Command::Provide(args) => (commands::provide::provide(args), exit::REFUSED),
        Command::Check(args) => (commands::check::check(args), exit::REFUSED),
        Command::Submit(args) => (submit::submit(args), exit::REFUSED),
        Command::Load(args) => (load::load(args), exit::REFUSED),
        Command::Manifest(args) => (manifest::manifest(args), exit::REFUSED),
        Command::Hash(args) => (hash::hash(args), exit::REFUSED),
        Command::Keygen { keyfile } => (commands::keygen::keygen(&keyfile), exit::REFUSED),
        Command::New(args) => (commands::new::new(args), exit::REFUSED),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("gridbox: error: {error:#}");
            // `verify` says 2 for anything that kept it from verifying, a fault of this machine included.
            let code = if on_error == exit::VERIFY_ERROR { on_error } else { exit::for_error(&error, on_error) };
            if code == exit::PROVIDER_FAULT {
                eprintln!("gridbox: this machine failed, not the job: no receipt was made; the job can be run again");
            }
            ExitCode::from(code)
        }
    }
}
