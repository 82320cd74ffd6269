//! `gridbox spot-check`: check K randomly chosen ops of a job a server ran, each as
//! `gridbox check-op` does, from the entries, proofs and tensors the server hands out
//! (spec/trace.md, "Spot checks"). Cost: K entries, their proofs and input tensors, K ops on the
//! CPU reference; no replay.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use gridbox_compute::{Tensor, tensor_file};
use gridbox_core::verify::spot::{escape_bound, escape_probability, sample_indices};
use gridbox_core::verify::{CheckOpError, ProvenEntry, check_entry};
use gridbox_core::{Digest, Receipt, trace_file};
use gridbox_service::client::{Client, ClientError};
use gridbox_service::wire::ProvenTraceEntry;

use crate::exit;
use crate::flags::{ServerArgs, read};

/// `gridbox spot-check`'s flags.
#[derive(Args)]
pub(crate) struct SpotCheckArgs {
    /// The job's receipt (its signature is checked strictly; its `trace.log_root` is what every
    /// sample is proven against).
    receipt: PathBuf,
    #[command(flatten)]
    server: ServerArgs,
    /// The job's id on the server.
    #[arg(long, value_name = "ID")]
    job: String,
    /// How many distinct entries to check.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
    samples: u64,
    /// The seed of the draw, to redo the same check; default: one from the OS.
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// One sample's result.
struct Sample {
    index: u64,
    op: Option<String>,
    /// `ok`, a check-op verdict, `not produced` or `not checked`.
    verdict: String,
    detail: String,
}

impl Sample {
    fn failed(&self) -> bool {
        !matches!(self.verdict.as_str(), "ok" | "not checked")
    }
}

/// Checks; exit status 0 when every sample holds, 1 when one fails (a provider that cannot
/// produce an entry or tensor it committed to fails), 2 when the samples could not be checked.
pub(crate) fn spot_check(args: SpotCheckArgs) -> Result<u8> {
    let receipt = Receipt::from_json(&read(&args.receipt)?).with_context(|| format!("receipt {}", args.receipt.display()))?;
    let n = receipt.trace.length;
    if n == 0 {
        bail!("the receipt's trace has no entries: there is nothing to spot-check (the job's manifest does not trace, or it made no bridge calls)");
    }
    // RandomState is seeded from the OS; its hash of nothing is a random u64.
    let seed = args.seed.unwrap_or_else(|| std::collections::hash_map::RandomState::new().build_hasher().finish());
    let indices = sample_indices(n, args.samples, seed);
    let client = Client::new(&args.server.server, &args.server.token)?;
    // Fetching is async on this thread; each sample's check (hashing, one op on the CPU
    // reference) runs on a blocking thread, one per core, so the next samples' fetches go on
    // while earlier ones are checked. Each check's op gets one kernel thread: samples are the
    // parallelism, and a second level would only oversubscribe the cores.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().max_blocking_threads(cores).build().context("cannot start the async runtime")?;
    let samples = runtime.block_on(async {
        // The job itself must be there: a wrong id, token or server is "could not check", not
        // a provider that failed.
        client.status(&args.job, std::time::Duration::ZERO).await.with_context(|| format!("job {}", args.job))?;
        // The samples are fetched concurrently (a few at a time): each is several round trips.
        let receipt = std::sync::Arc::new(receipt.clone());
        let fetched = FetchedTensors::default();
        let mut running = tokio::task::JoinSet::new();
        let mut samples = Vec::with_capacity(indices.len());
        for (order, &index) in indices.iter().enumerate() {
            if running.len() >= CONCURRENT_SAMPLES
                && let Some(done) = running.join_next().await
            {
                samples.push(done.context("a sample's task")??);
            }
            let (client, job, receipt, fetched) = (client.clone(), args.job.clone(), receipt.clone(), fetched.clone());
            running.spawn(async move { sample(&client, &job, receipt, index, &fetched).await.map(|s| (order, s)) });
        }
        while let Some(done) = running.join_next().await {
            samples.push(done.context("a sample's task")??);
        }
        samples.sort_by_key(|(order, _)| *order);
        anyhow::Ok(samples.into_iter().map(|(_, s)| s).collect::<Vec<_>>())
    })?;
    let failed = samples.iter().filter(|s| s.failed()).count();
    let unchecked = samples.iter().filter(|s| s.verdict == "not checked").count();
    let verdict = match (failed, unchecked) {
        (0, 0) => "ok",
        (0, _) => "not checked",
        _ => "failed",
    };
    let k = indices.len() as u64;
    let escape: Vec<_> = [0.01, 0.10]
        .iter()
        .map(|&f| serde_json::json!({"f": f, "falsified": (f * n as f64).ceil() as u64, "probability": escape_probability(n, k, f), "bound": escape_bound(k, f)}))
        .collect();
    if args.json {
        let json = serde_json::json!({
            "ok": verdict == "ok", "verdict": verdict, "job": args.job, "seed": seed, "entries": n, "bytes_received": client.bytes_received(),
            "samples": samples.iter().map(|s| serde_json::json!({"index": s.index, "op": s.op, "verdict": s.verdict, "ok": s.verdict == "ok", "detail": s.detail})).collect::<Vec<_>>(), "escape": escape, "escape_method": "hypergeometric (k distinct entries of n, ceil(f n) falsified)",
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        for s in &samples {
            println!("{:>10}  {:12}  {:18}  {}", s.index, s.op.as_deref().unwrap_or("?"), s.verdict, s.detail);
        }
        println!("{verdict}: {} of {k} samples of {n} entries hold (seed {seed}; {} bytes received)", k as usize - failed - unchecked, client.bytes_received());
        for e in &escape {
            println!(
                "a provider that falsified {}% of its entries ({} of {n}) escapes {k} distinct samples with probability {:.3e} (exact, hypergeometric; (1-f)^K = {:.3e})",
                e["f"].as_f64().unwrap_or_default() * 100.0,
                e["falsified"],
                e["probability"].as_f64().unwrap_or_default(),
                e["bound"].as_f64().unwrap_or_default()
            );
        }
    }
    Ok(match verdict {
        "ok" => 0,
        "failed" => exit::MISMATCH,
        _ => exit::VERIFY_ERROR,
    })
}

/// The shared tensors, also after a task that held the lock panicked (the map stays consistent:
/// every insert is one call).
fn lock(fetched: &FetchedTensors) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Fetched>> {
    fetched.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether the server answered (a refusal) rather than could not be reached or asked.
fn answered(error: &ClientError) -> bool {
    matches!(error, ClientError::Api { status, .. } if *status != 401)
}

/// How many samples are fetched at once.
const CONCURRENT_SAMPLES: usize = 8;

/// A fetched tensor, decoded with its tensor hash, or why the provider could not produce it.
type Fetched = Result<(Tensor, Digest), String>;

/// The tensors fetched so far, by the hash asked for: samples share inputs (a weight every layer
/// reads), and one download and one hash per tensor is enough.
type FetchedTensors = std::sync::Arc<std::sync::Mutex<HashMap<[u8; 32], Fetched>>>;

/// Fetches and checks entry `index`. An error is the server out of reach or refusing us.
async fn sample(client: &Client, job: &str, receipt: std::sync::Arc<Receipt>, index: u64, fetched: &FetchedTensors) -> Result<Sample> {
    let mut result = Sample { index, op: None, verdict: String::new(), detail: String::new() };
    let not_produced = |mut result: Sample, detail: String| {
        result.verdict = "not produced".into();
        result.detail = detail;
        Ok(result)
    };
    let trace = match client.trace_entry(job, index).await {
        Ok(trace) => trace,
        Err(e) if answered(&e) => return not_produced(result, format!("the provider could not produce entry {index}: {e}")),
        Err(e) => return Err(e).context(format!("entry {index}")),
    };
    let proven = |p: &ProvenTraceEntry| -> Result<ProvenEntry> {
        let entry = trace_file::entry_from_value(&p.entry).context("an entry the server sent")?;
        Ok(ProvenEntry { entry, siblings: p.siblings.iter().map(|d| d.0).collect() })
    };
    let (entry, previous) = match (proven(&trace.entry), trace.previous.as_ref().map(proven).transpose()) {
        (Ok(entry), Ok(previous)) => (entry, previous),
        (Err(e), _) | (_, Err(e)) => return not_produced(result, format!("{e:#}")),
    };
    result.op = Some(entry.entry.link.op.clone());
    if entry.entry.index != index || trace.size != receipt.trace.length {
        let detail = format!("asked for entry {index} of {}, got entry {} of {}", receipt.trace.length, entry.entry.index, trace.size);
        return not_produced(result, detail);
    }
    // Fetched first (the check itself is synchronous): the inputs, and a create's or read's
    // output, which is what check-op loads.
    let link = &entry.entry.link;
    let mut wanted = link.inputs.clone();
    if matches!(link.op.as_str(), "create" | "read") {
        wanted.push(link.output);
    }
    let mut tensors: HashMap<[u8; 32], Fetched> = HashMap::new();
    for hash in wanted {
        let known = lock(fetched).get(&hash).cloned();
        let got = match known {
            Some(got) => got,
            None => {
                let got = match client.kept_tensor(job, &Digest(hash)).await {
                    // Decoded and hashed off the async thread: a tensor can be large.
                    Ok(bytes) => tokio::task::spawn_blocking(move || {
                        tensor_file::decode(&bytes).map(|t| {
                            let digest = Digest(t.content_hash());
                            (t, digest)
                        })
                    })
                    .await
                    .context("a tensor's decoding task")?
                    .map_err(|e| format!("not a tensor file: {e}")),
                    Err(e) if answered(&e) => Err(e.to_string()),
                    Err(e) => return Err(e).context(format!("tensor {} of entry {index}", Digest(hash))),
                };
                lock(fetched).insert(hash, got.clone());
                got
            }
        };
        tensors.insert(hash, got);
    }
    let size = trace.size;
    let checked = tokio::task::spawn_blocking(move || {
        let mut source = |hash: &[u8; 32]| match tensors.get(hash) {
            Some(Ok(found)) => Ok(found.clone()),
            Some(Err(reason)) => Err(CheckOpError::Unavailable { hash: Digest(*hash), reason: reason.clone() }),
            None => Err(CheckOpError::Unavailable { hash: Digest(*hash), reason: "not asked for".into() }),
        };
        check_entry(&receipt, &entry, previous.as_ref(), size, &mut source, 1)
    })
    .await
    .context("a sample's checking task")?;
    match checked {
        Ok(report) => {
            result.verdict = report.verdict().into();
            result.detail = report.failed().map_or_else(|| format!("{} checks hold", report.steps.len()), |step| format!("{}: {}", step.check, step.detail));
            Ok(result)
        }
        // A tensor it committed to and cannot hand out: the provider fails the check.
        Err(e @ CheckOpError::Unavailable { .. }) => not_produced(result, e.to_string()),
        Err(e) => {
            result.verdict = "not checked".into();
            result.detail = gridbox_core::errors::error_chain(&e);
            Ok(result)
        }
    }
}
