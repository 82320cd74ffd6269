//! `gridbox serve`: the provider service over HTTP (spec/http.md).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use gridbox_compute::DeviceChoice;
use gridbox_core::keys;
use gridbox_service::{Service, ServiceConfig};

use crate::device::engine_on;
use crate::flags::read_text;

/// `gridbox serve`'s flags.
#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (the log says which).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Folder for blobs and the job database; created if absent.
    #[arg(long)]
    data: PathBuf,
    /// The policy file: job limits, [[tenants]] and [serve] settings (spec/http.md).
    #[arg(long)]
    policy: PathBuf,
    /// The provider's secret key; default: DATA/provider.key, made on first start.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Where tensor ops run: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    device: DeviceChoice,
}

/// Serves until SIGTERM or SIGINT; a non-zero status if the service stopped itself.
pub(crate) fn serve(args: ServeArgs) -> Result<u8> {
    // Before any thread starts (the engine's epoch ticker is the first).
    crate::allocator::cap_arenas_for_serve();
    let text = read_text(&args.policy)?;
    let config = ServiceConfig::from_toml(&text).with_context(|| format!("policy {}", args.policy.display()))?;
    if config.tenants.is_empty() {
        bail!("policy {}: no [[tenants]]: nobody could use this server (see spec/http.md)", args.policy.display());
    }
    let key = match &args.key {
        Some(path) => keys::read_secret_key(path)?,
        None => {
            // A provider's receipts must be signed by one key across restarts: keep it with the data.
            let path = args.data.join("provider.key");
            std::fs::create_dir_all(&args.data).with_context(|| format!("cannot create data folder {}", args.data.display()))?;
            if !path.exists() {
                keys::write_key_pair(&keys::generate()?, &path)?;
                eprintln!("gridbox: made a provider key in {}", path.display());
            }
            keys::read_secret_key(&path)?
        }
    };
    let engine = engine_on(&config.policy, args.device)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.addr).await.with_context(|| format!("cannot listen on {}", args.addr))?;
        let address = listener.local_addr().context("listening socket")?;
        let (workers, tenants) = (config.serve.workers, config.tenants.len());
        let service = Service::open(config, engine, &args.data, key)?;
        eprintln!(
            "gridbox: serving on http://{address} ({workers} workers, {tenants} tenants, {} queued jobs recovered, data in {})",
            service.queued(),
            args.data.display()
        );
        gridbox_service::serve(listener, service, stop_signal()).await.context("serving")?;
        eprintln!("gridbox: stopped");
        Ok(0)
    });
    // A job stuck in a host call keeps its blocking thread; do not wait for it to exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    served
}

/// Resolves on SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut interrupt)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        eprintln!("gridbox: cannot watch for SIGTERM; stop the server with SIGKILL (queued jobs survive)");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => eprintln!("gridbox: SIGTERM: no new jobs; letting running jobs finish"),
        _ = interrupt.recv() => eprintln!("gridbox: SIGINT: no new jobs; letting running jobs finish"),
    }
}
