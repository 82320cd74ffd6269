//! `gridbox serve`: the provider service over HTTP (spec/http.md).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use gridbox_compute::DeviceChoice;
use gridbox_core::keys;
use gridbox_fleet::gateway::FleetRunner;
use gridbox_fleet::market::{self, Market, MarketSettings};
use gridbox_service::{EventHook, JobEvent, JobEventKind, Service, ServiceConfig, escape_control};

use super::fleet_flags::{NatsArgs, stop_signal};
use crate::cache::CacheArgs;
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
    /// Where tensor ops run: auto (the default), cpu, cuda or cuda:N.
    #[arg(long, value_name = "DEVICE")]
    device: Option<DeviceChoice>,
    #[command(flatten)]
    cache: CacheArgs,
    /// How each job event (accepted, started, ended, ...) is logged on stderr: `text`, or `json`
    /// (one object per line). Other messages stay plain text.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    log_format: LogFormat,
    /// Be the market's gateway: keep this HTTP API for tenants, but hand their jobs to the
    /// providers of the NATS JetStream market at URL instead of running them (spec/fleet.md).
    #[arg(long, value_name = "URL")]
    fleet: Option<String>,
    #[command(flatten)]
    nats: NatsArgs,
}

/// How `serve` logs job events.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// `gridbox: job ID accepted (tenant NAME)`, one line per event.
    Text,
    /// One JSON object per line: {"event", "at_ms", "job", "tenant", ...}.
    Json,
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
    // Tensor jobs are the policy's to allow: say which device runs them only if it does.
    let tensors = config.policy.capabilities.contains(&gridbox_core::Capability::Tensor);
    // A gateway runs no job: its engine is never used, so no GPU is looked for.
    let engine = engine_on(&config.policy, args.device, tensors && args.fleet.is_none(), &args.cache)?;
    if args.fleet.is_none() {
        engine.announce_device();
    }
    let engine = engine.into_engine();
    let credentials = args.nats.credentials()?;
    let events = log_events(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.addr).await.with_context(|| format!("cannot listen on {}", args.addr))?;
        let address = listener.local_addr().context("listening socket")?;
        let (workers, tenants) = (config.serve.workers, config.tenants.len());
        let runner = match &args.fleet {
            Some(url) => {
                let settings = MarketSettings {
                    retention: std::time::Duration::from_secs(config.serve.retention_s),
                    ack_wait: std::time::Duration::from_secs(config.fleet.ack_wait_s),
                    replicas: config.fleet.replicas,
                };
                let client = market::connect(url, &credentials, "gridbox gateway").await?;
                let market = Market::create(client, &settings).await?;
                Some(FleetRunner::start(market, settings) as Arc<dyn gridbox_service::remote::RemoteRunner>)
            }
            None => None,
        };
        let in_flight = config.fleet.in_flight;
        let service = Service::open_with_runner(config, engine, &args.data, key, events, runner)?;
        match &args.fleet {
            Some(url) => eprintln!(
                "gridbox: serving on http://{address} as the gateway of the market at {} (up to {in_flight} jobs in the market at once, {tenants} tenants, {} queued jobs recovered, data in {})",
                gridbox_fleet::redacted_url(url),
                service.queued(),
                args.data.display()
            ),
            None => eprintln!(
                "gridbox: serving on http://{address} ({workers} workers, {tenants} tenants, {} queued jobs recovered, data in {})",
                service.queued(),
                args.data.display()
            ),
        }
        gridbox_service::serve(
            listener,
            service,
            stop_signal("no new jobs; letting running jobs finish".into(), "stop the server with SIGKILL (queued jobs survive)".into()),
        )
        .await.context("serving")?;
        eprintln!("gridbox: stopped");
        Ok(0)
    });
    // A job stuck in a host call keeps its blocking thread; do not wait for it to exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    served
}

/// The hook that logs each job event as one line on stderr, in `format`.
fn log_events(format: LogFormat) -> EventHook {
    Arc::new(move |event: &JobEvent<'_>| {
        let mut line = match format {
            LogFormat::Text => text_line(event),
            LogFormat::Json => json_line(event),
        };
        line.push('\n');
        // One write per line, so that lines from concurrent workers never interleave; a log that
        // cannot be written must not stop the server (eprintln! would panic).
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    })
}

/// `gridbox: job ID ...`, for people. Text that comes from a job (its outcome's detail) has its
/// control characters escaped, so that a job cannot forge or garble log lines.
fn text_line(event: &JobEvent<'_>) -> String {
    let job = event.job;
    match event.kind {
        JobEventKind::Accepted => format!("gridbox: job {job} accepted (tenant {})", event.tenant),
        JobEventKind::Recovered => format!("gridbox: job {job} recovered: queued again after a stop (tenant {})", event.tenant),
        JobEventKind::Started { waited_ms } => format!("gridbox: job {job} started (queued {waited_ms} ms)"),
        JobEventKind::Requeued { reason, tries, max_tries } => {
            format!("gridbox: job {job} requeued: the provider failed ({tries} of {max_tries} tries): {}", escape_control(reason))
        }
        JobEventKind::Ended { state, outcome, reason, fuel_used, wall_ms } => {
            // A failure's reason says more than its outcome (it starts with it).
            let how = reason.or(outcome).unwrap_or("no outcome");
            format!("gridbox: job {job} ended: {}: {} (fuel {fuel_used}, {wall_ms} ms)", state.as_str(), escape_control(how))
        }
        JobEventKind::Expired => format!("gridbox: job {job} expired (tenant {})", event.tenant),
        _ => format!("gridbox: job {job} {}", event.kind.name()),
    }
}

/// One JSON object: `event`, `at_ms` (Unix milliseconds), `job`, `tenant`, and the event's own
/// fields.
fn json_line(event: &JobEvent<'_>) -> String {
    let mut object = serde_json::json!({ "event": event.kind.name(), "at_ms": event.at_ms, "job": event.job, "tenant": event.tenant });
    let fields = match event.kind {
        JobEventKind::Started { waited_ms } => serde_json::json!({ "waited_ms": waited_ms }),
        JobEventKind::Requeued { reason, tries, max_tries } => serde_json::json!({ "reason": reason, "tries": tries, "max_tries": max_tries }),
        JobEventKind::Ended { state, outcome, reason, fuel_used, wall_ms } => serde_json::json!({
            "state": state.as_str(), "outcome": outcome, "reason": reason, "fuel_used": fuel_used, "wall_ms": wall_ms,
        }),
        _ => serde_json::json!({}),
    };
    if let (Some(object), serde_json::Value::Object(fields)) = (object.as_object_mut(), fields) {
        object.extend(fields);
    }
    object.to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use gridbox_service::wire::JobState;

    #[test]
    fn a_jobs_text_cannot_forge_log_lines_and_json_is_one_object_per_line() {
        let reason = "trapped: oops\ngridbox: job ffff ended: succeeded\u{1b}[2K";
        let kind = JobEventKind::Ended { state: JobState::Failed, outcome: Some("trapped: oops"), reason: Some(reason), fuel_used: 7, wall_ms: 3 };
        let event = JobEvent { at_ms: 1, job: "abc", tenant: "alice", kind };
        let text = text_line(&event);
        assert_eq!(text, "gridbox: job abc ended: failed: trapped: oops\\ngridbox: job ffff ended: succeeded\\u{1b}[2K (fuel 7, 3 ms)");
        let json = json_line(&event);
        assert!(!json.contains('\n'), "{json}");
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!((value["event"].as_str(), value["reason"].as_str(), value["fuel_used"].as_u64()), (Some("ended"), Some(reason), Some(7)));
        let accepted = JobEvent { at_ms: 1, job: "abc", tenant: "alice", kind: JobEventKind::Accepted };
        assert_eq!(text_line(&accepted), "gridbox: job abc accepted (tenant alice)");
    }
}
