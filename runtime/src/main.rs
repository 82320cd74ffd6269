//! `gridbox`: run jobs, verify receipts, make provider keys.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use gridbox_runtime::artifacts::{self, RECEIPT_FILE};
use gridbox_runtime::job::INPUT_DIR;
use gridbox_runtime::verify::{self, Evidence};
use gridbox_runtime::manifest::TensorSection;
use host_gpu_bridge::{Backend, DeviceChoice, TraceLevel};
use gridbox_runtime::client::Client;
use gridbox_runtime::serve::{Service, ServiceConfig};
use gridbox_runtime::{Capability, Digest, Job, JobEngine, LimitKind, Manifest, Outcome, Policy, Receipt, RunOptions, keys};

/// Exit status when the job trapped (as `wasmtime run`: 128 + SIGABRT).
const EXIT_TRAPPED: u8 = 134;
/// Exit status when the job was stopped by one of its limits.
const EXIT_LIMIT: u8 = 135;
/// Exit status when gridbox refused the job or could not run it (bad module, manifest, flags).
const EXIT_REFUSED: u8 = 136;
/// `gridbox verify`: a field did not match.
const EXIT_MISMATCH: u8 = 1;
/// `gridbox verify`: verification could not be carried out.
const EXIT_VERIFY_ERROR: u8 = 2;

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
    /// 136 if gridbox refused it or could not run it.
    Run(RunArgs),
    /// Check a receipt: its signature, its commitments, and a replay of the job.
    ///
    /// Exit status: 0 if every field matches, 1 on a mismatch (the first is named), 2 if
    /// verification could not be carried out.
    Verify(VerifyArgs),
    /// Serve jobs over HTTP as a provider (spec/http.md). SIGTERM stops it gracefully.
    Serve(ServeArgs),
    /// Send a job to a server, wait for it, download its results and optionally replay it.
    ///
    /// Exit status as for `run`; with --verify, 1 if the replay does not match the receipt.
    Submit(SubmitArgs),
    /// Measure a server: run many tiny jobs from concurrent clients; print jobs/s and latency.
    Load(LoadArgs),
    /// Write a new provider key pair: KEYFILE (mode 0600) and KEYFILE.pub.
    Keygen {
        /// Where to write the secret key.
        #[arg(default_value = "provider.key")]
        keyfile: PathBuf,
    },
}

#[derive(Args)]
struct InputArgs {
    /// An input, mounted read-only at /input/NAME.
    #[arg(long = "input", value_name = "NAME=FILE")]
    inputs: Vec<String>,
    /// Mount every file under a host folder as inputs under GUEST (which must be /input or below).
    #[arg(long = "dir", value_name = "HOST::GUEST")]
    dirs: Vec<String>,
}

#[derive(Args)]
struct RunArgs {
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
    /// The provider's secret key; without one, a throwaway key signs the receipt.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Do not echo the job's stdout and stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Where tensor ops run: auto (a CUDA GPU if there is one), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    device: DeviceChoice,
}

/// What a job asks for, when no manifest file is given.
#[derive(Args)]
struct JobFlags {
    /// An environment variable; NAME alone takes the value from gridbox's own environment.
    #[arg(long = "env", value_name = "NAME[=VAL]")]
    env: Vec<String>,
    /// The input to feed to the job's stdin.
    #[arg(long, value_name = "NAME")]
    stdin: Option<String>,
    /// A capability to grant besides `wasi`: `tensor` (the tensor bridge, every op).
    #[arg(long = "capability", value_name = "NAME")]
    capabilities: Vec<String>,
    /// What the tensor trace records: `full` or `readback` (needs the `tensor` capability).
    #[arg(long, value_name = "LEVEL")]
    trace: Option<String>,
    /// A limit for the job, e.g. `fuel=1000000` (see spec/manifest.md for names).
    #[arg(long = "limit", value_name = "NAME=VALUE")]
    limits: Vec<String>,
    /// Arguments passed to the job after argv[0].
    #[arg(last = true)]
    args: Vec<String>,
}

impl JobFlags {
    fn any(&self) -> bool {
        !self.env.is_empty() || !self.args.is_empty() || self.stdin.is_some() || !self.limits.is_empty() || !self.capabilities.is_empty() || self.trace.is_some()
    }
}

#[derive(Args)]
struct VerifyArgs {
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
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Where the replay's tensor ops run: auto, cpu, cuda or cuda:N. Any backend must give the
    /// receipt's bytes.
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    device: DeviceChoice,
}

#[derive(Args)]
struct ServeArgs {
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

#[derive(Args)]
struct ServerArgs {
    /// The server, as http://HOST:PORT.
    #[arg(long, env = "GRIDBOX_SERVER")]
    server: String,
    /// Your tenant token (or set GRIDBOX_TOKEN).
    #[arg(long, env = "GRIDBOX_TOKEN", hide_env_values = true)]
    token: String,
}

#[derive(Args)]
struct SubmitArgs {
    /// The job's wasm module.
    module: PathBuf,
    /// The job's manifest (TOML); without one, gridbox writes one from the flags.
    #[arg(long)]
    manifest: Option<PathBuf>,
    #[command(flatten)]
    inputs: InputArgs,
    #[command(flatten)]
    server: ServerArgs,
    /// Folder for stdout, stderr, output/ and receipt.json (must be absent or empty); without
    /// it, the job's stdout and stderr are echoed.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replay the job here and check the receipt, as `gridbox verify` does.
    #[arg(long)]
    verify: bool,
    /// Where the replay's tensor ops run: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    device: DeviceChoice,
    #[command(flatten)]
    job: JobFlags,
}

#[derive(Args)]
struct LoadArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// How many jobs to run.
    #[arg(long, default_value_t = 2000)]
    jobs: usize,
    /// Clients submitting at once, each waiting for its job's end before the next.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_REFUSED } else { 0 });
        }
    };
    let result = match cli.command {
        Command::Run(args) => run(args).map_err(|e| (EXIT_REFUSED, e)),
        Command::Verify(args) => verify(args).map_err(|e| (EXIT_VERIFY_ERROR, e)),
        Command::Serve(args) => serve(args).map_err(|e| (EXIT_REFUSED, e)),
        Command::Submit(args) => submit(args).map_err(|e| (EXIT_REFUSED, e)),
        Command::Load(args) => load(args).map_err(|e| (EXIT_REFUSED, e)),
        Command::Keygen { keyfile } => keygen(&keyfile).map_err(|e| (EXIT_REFUSED, e)),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err((code, error)) => {
            eprintln!("gridbox: error: {error:#}");
            ExitCode::from(code)
        }
    }
}

fn run(args: RunArgs) -> Result<u8> {
    let module: Arc<[u8]> = read(&args.module)?.into();
    let inputs = gather_inputs(&args.inputs)?;
    let policy = match &args.policy {
        Some(path) => ServiceConfig::from_toml(&read_text(path)?).with_context(|| format!("policy {}", path.display()))?.policy,
        None => Policy::default(),
    };
    let manifest = job_manifest(args.manifest.as_deref(), &args.job, &module, &inputs)?;
    let resolved = manifest.resolve(&policy)?;
    if let Some(out) = &args.out {
        artifacts::check_writable(out)?;
    }
    let key = match &args.key {
        Some(path) => keys::read_secret_key(path)?,
        None => keys::generate()?,
    };
    let engine = engine_on(&policy, args.device)?;
    let job = Job::new(module, resolved, inputs)?;
    let run = engine.run(&job, RunOptions::default())?;
    let receipt = Receipt::sign(&job, &run, &engine.backend().name(), &key);

    if !args.quiet {
        std::io::stdout().write_all(&run.stdout).context("writing stdout")?;
        std::io::stderr().write_all(&run.stderr).context("writing stderr")?;
    }
    if let Some(out) = &args.out {
        artifacts::write(out, &run, &receipt)?;
        eprintln!("gridbox: {}; receipt in {}", run.outcome, out.join(RECEIPT_FILE).display());
    } else if !matches!(run.outcome, Outcome::Exited { code: 0 }) {
        eprintln!("gridbox: {}", run.outcome);
    }
    if args.key.is_none() && args.out.is_some() {
        eprintln!("gridbox: note: signed with a throwaway key; pass --key (see `gridbox keygen`) to sign as a provider");
    }
    Ok(match &run.outcome {
        Outcome::Exited { code } => u8::try_from(*code).unwrap_or(1),
        Outcome::Trapped { .. } => {
            if let Some(detail) = &run.detail {
                eprintln!("gridbox: {detail}");
            }
            EXIT_TRAPPED
        }
        _ => EXIT_LIMIT,
    })
}

/// The job's manifest: the file given, or one written from the job flags (not both).
fn job_manifest(path: Option<&Path>, flags: &JobFlags, module: &[u8], inputs: &BTreeMap<String, Arc<[u8]>>) -> Result<Manifest> {
    match path {
        Some(_) if flags.any() => {
            bail!("--env, --stdin, --limit, --capability, --trace and job arguments go in the manifest when --manifest is given")
        }
        Some(path) => Ok(Manifest::from_toml(&read_text(path)?).with_context(|| format!("manifest {}", path.display()))?),
        None => manifest_from_flags(flags, module, inputs),
    }
}

fn manifest_from_flags(args: &JobFlags, module: &[u8], inputs: &BTreeMap<String, Arc<[u8]>>) -> Result<Manifest> {
    let mut manifest = Manifest::new(Digest::of(module));
    manifest.args = args.args.clone();
    manifest.stdin = args.stdin.clone();
    manifest.inputs = inputs.iter().map(|(name, bytes)| (name.clone(), Digest::of(bytes))).collect();
    for pair in &args.env {
        let (name, value) = match pair.split_once('=') {
            Some((name, value)) => (name.to_string(), value.to_string()),
            None => (pair.clone(), std::env::var(pair).with_context(|| format!("--env {pair}: not set in gridbox's environment"))?),
        };
        manifest.env.insert(name, value);
    }
    for pair in &args.limits {
        let (name, value) = pair.split_once('=').with_context(|| format!("--limit {pair:?}: expected NAME=VALUE"))?;
        let kind = LimitKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .with_context(|| format!("--limit {pair:?}: unknown limit {name:?}; known: {}", LimitKind::ALL.map(|k| k.as_str()).join(", ")))?;
        let value: u64 = value.replace('_', "").parse().with_context(|| format!("--limit {pair:?}: {value:?} is not a whole number"))?;
        manifest.limits.set(kind, value);
    }
    for name in &args.capabilities {
        let capability: Capability = serde_json::from_value(serde_json::Value::String(name.clone()))
            .map_err(|_| anyhow::anyhow!("--capability {name:?}: unknown; known: wasi, tensor"))?;
        if !manifest.capabilities.contains(&capability) {
            manifest.capabilities.push(capability);
        }
    }
    if let Some(level) = &args.trace {
        let trace: TraceLevel = serde_json::from_value(serde_json::Value::String(level.clone()))
            .map_err(|_| anyhow::anyhow!("--trace {level:?}: expected `full` or `readback`"))?;
        if !manifest.capabilities.contains(&Capability::Tensor) {
            bail!("--trace needs --capability tensor");
        }
        manifest.tensor = Some(TensorSection { trace, ..TensorSection::default() });
    }
    manifest.validate()?;
    Ok(manifest)
}

fn verify(args: VerifyArgs) -> Result<u8> {
    let receipt = Receipt::from_json(&read(&args.receipt)?).with_context(|| format!("receipt {}", args.receipt.display()))?;
    let artifact_dir = match &args.artifacts {
        Some(dir) => Some(dir.clone()),
        None => {
            let folder = args.receipt.parent().unwrap_or(Path::new("."));
            folder.join(artifacts::STDOUT_FILE).exists().then(|| folder.to_path_buf())
        }
    };
    let evidence = Evidence {
        module: read(&args.module)?.into(),
        inputs: gather_inputs(&args.inputs)?,
        artifacts: artifact_dir.as_deref().map(artifacts::read).transpose()?,
    };
    let engine = engine_on(&Policy::default(), args.device)?;
    let report = verify::verify(&engine, &receipt, &evidence);
    if args.json {
        let json = serde_json::json!({
            "ok": report.ok(),
            "first_mismatch": report.first_mismatch().map(|check| &check.field),
            "checks": report.checks,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print_table(&report);
    }
    match report.first_mismatch() {
        None => {
            eprintln!("gridbox: receipt verified: every field matches");
            Ok(0)
        }
        Some(check) => {
            eprintln!("gridbox: verification FAILED: first mismatch in `{}`: expected {}, got {}", check.field, check.expected, check.got);
            Ok(EXIT_MISMATCH)
        }
    }
}

fn print_table(report: &verify::Verification) {
    let width = |f: fn(&verify::Check) -> usize| report.checks.iter().map(f).max().unwrap_or(0);
    let (fw, ew) = (width(|c| c.field.len()).max(5), width(|c| c.expected.len()).clamp(8, 80));
    println!("{:fw$}  {:ew$}  {:ew$}  ok", "field", "expected", "got");
    for check in &report.checks {
        let mark = if check.ok { "yes" } else { "NO" };
        println!("{:fw$}  {:ew$}  {:ew$}  {mark}", check.field, check.expected, check.got);
    }
}

/// An engine on the chosen device, saying on stderr which one it is.
fn engine_on(policy: &Policy, device: DeviceChoice) -> Result<JobEngine> {
    let (backend, fallback) = Backend::select(device, policy.kernel_threads).with_context(|| format!("--device {device}"))?;
    match (&backend, fallback) {
        (Backend::Cpu { .. }, Some(why)) => eprintln!("gridbox: tensor ops on the CPU ({why})"),
        (backend, _) => eprintln!("gridbox: tensor ops on {}", backend.name()),
    }
    Ok(JobEngine::with_backend(policy, backend)?)
}

fn serve(args: ServeArgs) -> Result<u8> {
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
        let service = Service::open(config, engine, &args.data, key).map_err(anyhow::Error::msg)?;
        eprintln!(
            "gridbox: serving on http://{address} ({workers} workers, {tenants} tenants, {} queued jobs recovered, data in {})",
            service.queued(),
            args.data.display()
        );
        gridbox_runtime::serve::serve(listener, service, stop_signal()).await.context("serving")?;
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

fn submit(args: SubmitArgs) -> Result<u8> {
    let module = read(&args.module)?;
    let inputs = gather_inputs(&args.inputs)?;
    let manifest = job_manifest(args.manifest.as_deref(), &args.job, &module, &inputs)?;
    let manifest_text = toml::to_string(&manifest).context("writing the manifest")?;
    // Check locally what the server would refuse anyway, before uploading anything.
    Job::new(module.clone().into(), manifest.clone().resolve(&Policy::default())?, inputs.clone())?;
    if let Some(out) = &args.out {
        artifacts::check_writable(out)?;
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
        let download = |blob: Option<gridbox_runtime::BlobRef>| {
            let client = client.clone();
            async move {
                match blob {
                    Some(blob) => client.download(&blob).await,
                    None => Ok(Vec::new()),
                }
            }
        };
        let parts = artifacts::Artifacts { stdout: Some(download(status.stdout).await?), stderr: Some(download(status.stderr).await?), outputs };
        anyhow::Ok((status, Some(receipt), Some(parts)))
    })?;
    let (Some(receipt_bytes), Some(parts)) = (receipt, parts) else {
        eprintln!("gridbox: job {} failed before it ran: {}", status.id, status.reason.as_deref().unwrap_or("no reason given"));
        return Ok(EXIT_REFUSED);
    };
    let receipt = Receipt::from_json(&receipt_bytes).context("the server's receipt")?;
    if let Some(out) = &args.out {
        artifacts::write_parts(out, &parts, &receipt)?;
        eprintln!("gridbox: {}; receipt in {}", receipt.outcome, out.join(RECEIPT_FILE).display());
    } else {
        std::io::stdout().write_all(parts.stdout.as_deref().unwrap_or_default()).context("writing stdout")?;
        std::io::stderr().write_all(parts.stderr.as_deref().unwrap_or_default()).context("writing stderr")?;
        eprintln!("gridbox: {}", receipt.outcome);
    }
    if args.verify {
        let evidence = Evidence { module: module.into(), inputs, artifacts: Some(parts) };
        let engine = engine_on(&Policy::default(), args.device)?;
        let report = verify::verify(&engine, &receipt, &evidence);
        if let Some(check) = report.first_mismatch() {
            print_table(&report);
            eprintln!("gridbox: verification FAILED: first mismatch in `{}`: expected {}, got {}", check.field, check.expected, check.got);
            return Ok(EXIT_MISMATCH);
        }
        eprintln!("gridbox: replayed locally: every field of the receipt matches");
    }
    Ok(match &receipt.outcome {
        Outcome::Exited { code } => u8::try_from(*code).unwrap_or(1),
        Outcome::Trapped { .. } => EXIT_TRAPPED,
        _ => EXIT_LIMIT,
    })
}

fn load(args: LoadArgs) -> Result<u8> {
    if args.jobs == 0 || args.concurrency == 0 {
        bail!("--jobs and --concurrency must be at least 1");
    }
    let client = Client::new(&args.server.server, &args.server.token)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    let report = runtime.block_on(gridbox_runtime::load::run(&client, args.jobs, args.concurrency))?;
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

fn keygen(path: &Path) -> Result<u8> {
    let key = keys::generate()?;
    let public = keys::write_key_pair(&key, path)?;
    println!("wrote {} (secret, mode 0600) and {}", path.display(), public.display());
    println!("public key: {}", hex::encode(key.verifying_key().as_bytes()));
    Ok(0)
}

fn gather_inputs(args: &InputArgs) -> Result<BTreeMap<String, Arc<[u8]>>> {
    let mut inputs = BTreeMap::new();
    let mut add = |name: String, bytes: Vec<u8>| -> Result<()> {
        gridbox_runtime::manifest::check_input_name(&name).map_err(|reason| anyhow::anyhow!("input {name:?}: {reason}"))?;
        if inputs.insert(name.clone(), Arc::from(bytes)).is_some() {
            bail!("input {name:?} is given twice");
        }
        Ok(())
    };
    for pair in &args.inputs {
        let (name, file) = pair.split_once('=').with_context(|| format!("--input {pair:?}: expected NAME=FILE"))?;
        add(name.to_string(), read(Path::new(file))?)?;
    }
    for pair in &args.dirs {
        let (host, guest) = pair.split_once("::").with_context(|| format!("--dir {pair:?}: expected HOST::GUEST"))?;
        let prefix = match guest.trim_end_matches('/').strip_prefix(INPUT_DIR) {
            Some("") => String::new(),
            Some(rest) if rest.starts_with('/') => format!("{}/", &rest[1..]),
            _ => bail!("--dir {pair:?}: the guest folder must be {INPUT_DIR} or below it (outputs go to /output)"),
        };
        for (relative, path) in artifacts::walk_files(Path::new(host)).with_context(|| format!("--dir {pair:?}"))? {
            add(format!("{prefix}{relative}"), read(&path)?)?;
        }
    }
    Ok(inputs)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}
