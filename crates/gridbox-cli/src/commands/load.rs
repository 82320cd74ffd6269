//! `gridbox load`: many tiny jobs from concurrent clients against a server.

use anyhow::{Context, Result, bail};
use clap::Args;
use gridbox_service::client::Client;

use crate::flags::ServerArgs;

/// `gridbox load`'s flags.
#[derive(Args)]
pub(crate) struct LoadArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// How many jobs to run.
    #[arg(long, default_value_t = 2000)]
    jobs: usize,
    /// Clients submitting at once, each waiting for its job's end before the next.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

/// Runs the load and prints jobs/s and latency; exit status 1 if any job failed.
pub(crate) fn load(args: LoadArgs) -> Result<u8> {
    if args.jobs == 0 || args.concurrency == 0 {
        bail!("--jobs and --concurrency must be at least 1");
    }
    let client = Client::new(&args.server.server, &args.server.token)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    let report = runtime.block_on(gridbox_service::load::run(&client, args.jobs, args.concurrency))?;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{} jobs ({} succeeded, {} failed) from {} clients in {:.2} s: {:.0} jobs/s; latency submit->end p50 {:.2} ms, p99 {:.2} ms; {} submissions throttled (429)",
        report.succeeded + report.failed,
        report.succeeded,
        report.failed,
        args.concurrency,
        report.elapsed.as_secs_f64(),
        report.jobs_per_second(),
        ms(report.latency(0.5)),
        ms(report.latency(0.99)),
        report.throttled,
    );
    Ok(if report.failed == 0 { 0 } else { 1 })
}
