//! The gateway's side of the market: [`FleetRunner`] takes the service's accepted jobs, places
//! their module and inputs in the market, writes each job's record and publishes it on the work
//! queue, then waits for a provider to end it and checks what it brings back before the service
//! stores it as the job's results.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use gridbox_core::LimitKind;
use gridbox_core::digest::Digest;
use gridbox_core::errors::error_chain;
use gridbox_core::job::Outcome;
use gridbox_core::manifest::ResolvedManifest;
use gridbox_core::receipt::Receipt;
use gridbox_service::blobs::BlobStore;
use gridbox_service::remote::{BoxFuture, RemoteJob, RemoteOutcome, RemoteRunner, RunResults, Verdict};
use tokio::sync::{Notify, watch};

use crate::FleetError;
use crate::market::{JOBS_STREAM, JOBS_SUBJECT, MAX_RECORD_BYTES, Market, MarketSettings, PROVIDERS_CONSUMER};
use crate::metrics::{Figure, write_metric};
use crate::record::{End, JobMessage, JobRecord, RecordState, Tally, parse_tally, parse_verdict, valid_key_hex};

/// Results of one job the gateway refuses (unreadable, unsigned, for another job) before it
/// gives up on the job: each refusal queues the job again for another provider.
pub const MAX_ATTEMPTS: u32 = 3;

/// How often a waiting job's record is read again even without a notice from the watcher (a
/// reconnect can drop a watch's updates).
const RECHECK_EVERY: Duration = Duration::from_secs(5);

/// Added to twice a job's wall-time limit: how long its record may stay unchanged before the
/// gateway queues it again (see [`FleetRunner::follow`]).
const STALL_SLACK: Duration = Duration::from_secs(300);

/// Whether the record `entry` has not changed for `stall`, tracking its revision.
fn stale(entry: &kv::Entry, seen_revision: &mut u64, since: &mut Instant, stall: Duration) -> bool {
    if entry.revision != *seen_revision {
        *seen_revision = entry.revision;
        *since = Instant::now();
    }
    since.elapsed() > stall
}

/// Largest receipt the gateway reads.
const MAX_RECEIPT_BYTES: u64 = 4 << 20;

/// Largest trace log the gateway reads.
const MAX_TRACE_BYTES: u64 = 1 << 30;

/// Providers the gateway keeps tallies of for `/metrics`; more are summed as one.
const MAX_TALLIES: usize = 10_000;

/// The gateway's figures.
#[derive(Default)]
struct GatewayFigures {
    published: Figure,
    ended: Figure,
    refused_results: Figure,
    malformed_records: Figure,
    queue_pending: Figure,
    queue_in_progress: Figure,
    redelivered: Figure,
}

/// The service's [`RemoteRunner`] on the market.
pub struct FleetRunner {
    market: Market,
    settings: MarketSettings,
    /// Jobs being waited for, woken by the record watcher.
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
    /// Blobs placed in the market lately, and when: not placed again until half their age is up.
    placed: Mutex<HashMap<Digest, Instant>>,
    figures: GatewayFigures,
    tallies: Mutex<BTreeMap<String, Tally>>,
    /// Jobs whose results this gateway accepted, by the provider that ended them.
    jobs_by_provider: Mutex<BTreeMap<String, u64>>,
}

impl FleetRunner {
    /// Starts the runner's watchers (records, tallies, queue depth) on the current runtime.
    pub fn start(market: Market, settings: MarketSettings) -> Arc<FleetRunner> {
        let runner = Arc::new(FleetRunner {
            market,
            settings,
            waiters: Mutex::new(HashMap::new()),
            placed: Mutex::new(HashMap::new()),
            figures: GatewayFigures::default(),
            tallies: Mutex::new(BTreeMap::new()),
            jobs_by_provider: Mutex::new(BTreeMap::new()),
        });
        tokio::spawn(runner.clone().watch_records());
        tokio::spawn(runner.clone().watch_tallies());
        tokio::spawn(runner.clone().poll_queue());
        runner
    }

    /// Wakes the job waiting for each record that changes. A watch that breaks is made again.
    async fn watch_records(self: Arc<Self>) {
        loop {
            if let Ok(mut watch) = self.market.records.watch_all().await {
                while let Some(entry) = watch.next().await {
                    let Ok(entry) = entry else { break };
                    let waiter = self.waiters.lock().unwrap_or_else(|e| e.into_inner()).get(&entry.key).cloned();
                    if let Some(waiter) = waiter {
                        waiter.notify_one();
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Keeps the providers' tallies for `/metrics`.
    async fn watch_tallies(self: Arc<Self>) {
        loop {
            if let Ok(mut watch) = self.market.tally.watch_with_history(">").await {
                while let Some(entry) = watch.next().await {
                    let Ok(entry) = entry else { break };
                    if entry.operation != kv::Operation::Put {
                        continue;
                    }
                    let tally = parse_tally(&entry.key, &entry.value).ok().filter(|_| valid_key_hex(&entry.key));
                    let Some(tally) = tally else {
                        self.figures.malformed_records.add();
                        continue;
                    };
                    let mut tallies = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
                    if tallies.len() < MAX_TALLIES || tallies.contains_key(&entry.key) {
                        tallies.insert(entry.key, tally);
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Reads the work queue's depth every 2 seconds.
    async fn poll_queue(self: Arc<Self>) {
        loop {
            if let Ok(mut consumer) = self.market.consumer(JOBS_STREAM, PROVIDERS_CONSUMER).await {
                while let Ok(info) = consumer.info().await {
                    self.figures.queue_pending.set(info.num_pending);
                    self.figures.queue_in_progress.set(info.num_ack_pending as u64);
                    self.figures.redelivered.set(info.num_redelivered as u64);
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Places blob `digest` from the service's store in the market, unless it did lately.
    async fn place(&self, digest: Digest, blobs: &Arc<BlobStore>) -> Result<(), Placement> {
        let fresh = self.settings.retention / 2;
        if self.placed.lock().unwrap_or_else(|e| e.into_inner()).get(&digest).is_some_and(|at| at.elapsed() < fresh) {
            return Ok(());
        }
        let store = blobs.clone();
        let (file, size) = tokio::task::spawn_blocking(move || store.open_checked(&digest))
            .await
            .map_err(|e| Placement::Local(e.to_string()))?
            .map_err(|e| Placement::Local(format!("blob {digest}: {}", error_chain(&e))))?;
        self.market.put_blob_file(digest, size, file).await.map_err(|e| match e {
            FleetError::Nats { .. } => Placement::Market(error_chain(&e)),
            _ => Placement::Local(error_chain(&e)),
        })?;
        let mut placed = self.placed.lock().unwrap_or_else(|e| e.into_inner());
        if placed.len() > 100_000 {
            placed.retain(|_, at| at.elapsed() < fresh);
        }
        placed.insert(digest, Instant::now());
        Ok(())
    }

    /// Publishes attempt `attempt` of job `id` on the work queue. JetStream drops a repeat within
    /// its duplicate window (the message id is the job and attempt).
    async fn publish(&self, id: &str, attempt: u32) -> Result<(), FleetError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, format!("{id}.{attempt}").as_str());
        let payload = JobMessage { id: id.to_string(), attempt }.to_bytes();
        let ack =
            self.market.js.publish_with_headers(JOBS_SUBJECT, headers, payload.into()).await.map_err(|e| FleetError::nats(format!("publish job {id}"), e))?;
        ack.await.map_err(|e| FleetError::nats(format!("publish job {id}"), e))?;
        self.figures.published.add();
        Ok(())
    }

    /// Runs the job in the market. A market that cannot be reached (NATS down or restarting) is
    /// waited out, never the job's failure: the job stays in flight until the market answers or
    /// the service stops.
    async fn run_job(&self, job: RemoteJob, blobs: &Arc<BlobStore>, mut stop: watch::Receiver<bool>) -> RemoteOutcome {
        let waiter = Arc::new(Notify::new());
        self.waiters.lock().unwrap_or_else(|e| e.into_inner()).insert(job.id.clone(), waiter.clone());
        let mut said = false;
        let outcome = loop {
            let attempt = match self.place_all(&job, blobs).await {
                Ok(()) => self.follow(&job, &waiter, &mut stop).await,
                Err(Placement::Local(reason)) => break RemoteOutcome::HostFault(format!("cannot read the job's blobs here: {reason}")),
                Err(Placement::Market(reason)) => Err(reason),
            };
            match attempt {
                Ok(outcome) => break outcome,
                Err(reason) => {
                    if !said {
                        eprintln!("gridbox: job {}: the market did not answer ({reason}); trying again every second", job.id);
                        said = true;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.wait_for(|stopping| *stopping) => break RemoteOutcome::Stopped,
                    }
                }
            }
        };
        self.waiters.lock().unwrap_or_else(|e| e.into_inner()).remove(&job.id);
        outcome
    }

    /// Places the job's module and inputs in the market.
    async fn place_all(&self, job: &RemoteJob, blobs: &Arc<BlobStore>) -> Result<(), Placement> {
        for digest in std::iter::once(job.module).chain(job.inputs.values().copied()) {
            self.place(digest, blobs).await?;
        }
        Ok(())
    }

    /// Drives the job's record until it ends with results the gateway accepts; `Err` when the
    /// market could not be read or written (to try again).
    async fn follow(&self, job: &RemoteJob, waiter: &Notify, stop: &mut watch::Receiver<bool>) -> Result<RemoteOutcome, String> {
        let id = &job.id;
        let mut published = false;
        // Records found malformed by this call, and the last attempt a well-formed one named:
        // a rogue's records are bounded like refused results.
        let (mut malformed, mut last_attempt) = (0u32, 0u32);
        // A record that does not change for this long is stale: a provider that took the job and
        // neither ended it nor let it go (a rogue that acknowledges and sits on it, or keeps
        // signalling progress), or a message lost to a rogue that took it and acknowledged it.
        let wall_time_ms = ResolvedManifest::from_canonical_text(&job.manifest).map(|r| r.limits().get(LimitKind::WallTimeMs)).unwrap_or(0);
        let stall = Duration::from_millis(wall_time_ms.saturating_mul(2)) + STALL_SLACK;
        let (mut seen_revision, mut since) = (0u64, Instant::now());
        let fault = |e: FleetError| Err(error_chain(&e));
        loop {
            if *stop.borrow() {
                return Ok(RemoteOutcome::Stopped);
            }
            let entry = match self.market.records.entry(id.as_str()).await {
                Ok(entry) => entry.filter(|e| e.operation == kv::Operation::Put),
                Err(e) => return fault(FleetError::nats(format!("read job record {id}"), e)),
            };
            match entry {
                None => {
                    let record =
                        JobRecord { id: id.clone(), manifest: job.manifest.clone(), attempt: 0, state: RecordState::Queued { queued_at_ms: now_ms() } };
                    let size = record.to_bytes().len();
                    if size > MAX_RECORD_BYTES {
                        return Ok(RemoteOutcome::Refused(format!(
                            "its job record would be {size} bytes (the manifest's text), above the market's limit of {MAX_RECORD_BYTES}"
                        )));
                    }
                    match self.market.records.create(id.as_str(), record.to_bytes().into()).await {
                        Ok(_) => {}
                        // Written meanwhile: read it again.
                        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => continue,
                        Err(e) => return fault(FleetError::nats(format!("create job record {id}"), e)),
                    }
                    if let Err(e) = self.publish(id, 0).await {
                        return fault(e);
                    }
                    published = true;
                }
                Some(entry) => match JobRecord::parse(id, &entry.value).inspect(|record| last_attempt = last_attempt.max(record.attempt)) {
                    Ok(record) => match &record.state {
                        // Taken up again after a restart, or queued by a refusal, or queued for
                        // long: make sure it is on the queue (a repeat within the window is dropped).
                        RecordState::Queued { .. } if !published || stale(&entry, &mut seen_revision, &mut since, stall) => {
                            if let Err(e) = self.publish(id, record.attempt).await {
                                return fault(e);
                            }
                            published = true;
                            since = Instant::now();
                        }
                        RecordState::Running { provider, started_at_ms } if stale(&entry, &mut seen_revision, &mut since, stall) => {
                            let reason = format!("provider {provider} took it at {started_at_ms} ms and had not ended it after {} s", stall.as_secs());
                            eprintln!("gridbox: job {id}: {reason}; queueing it again");
                            match self.requeue(id, job, record.attempt + 1, entry.revision, &reason).await {
                                Ok(None) => published = true,
                                Ok(Some(outcome)) => return Ok(outcome),
                                Err(e) => return fault(e),
                            }
                        }
                        RecordState::Queued { .. } | RecordState::Running { .. } => {}
                        RecordState::Ended { provider, started_at_ms, end, .. } => match self.collect(job, provider, *started_at_ms, end).await {
                            Collected::Done(outcome) => {
                                self.figures.ended.add();
                                let mut jobs = self.jobs_by_provider.lock().unwrap_or_else(|e| e.into_inner());
                                if jobs.len() < MAX_TALLIES || jobs.contains_key(provider) {
                                    *jobs.entry(provider.clone()).or_default() += 1;
                                }
                                return Ok(outcome);
                            }
                            Collected::Fault(reason) => return Err(reason),
                            Collected::Refused(reason) => {
                                self.figures.refused_results.add();
                                eprintln!("gridbox: job {id}: refused the result of provider {provider}: {reason}");
                                match self.requeue(id, job, record.attempt + 1, entry.revision, &reason).await {
                                    Ok(None) => published = true,
                                    Ok(Some(outcome)) => return Ok(outcome),
                                    Err(e) => return fault(e),
                                }
                            }
                        },
                    },
                    Err(e) => {
                        // Not a record anyone following spec/fleet.md writes: a rogue's. Start over.
                        self.figures.malformed_records.add();
                        eprintln!("gridbox: job {id}: {}; queueing the job again", error_chain(&e));
                        malformed += 1;
                        let attempt = (last_attempt + 1).max(malformed);
                        last_attempt = attempt;
                        match self.requeue(id, job, attempt, entry.revision, &error_chain(&e)).await {
                            Ok(None) => published = true,
                            Ok(Some(outcome)) => return Ok(outcome),
                            Err(e) => return fault(e),
                        }
                    }
                },
            }
            tokio::select! {
                _ = waiter.notified() => {}
                _ = tokio::time::sleep(RECHECK_EVERY) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// Queues attempt `attempt` of the job over the record at `revision`, or fails the job once
    /// [`MAX_ATTEMPTS`] results were refused. `Ok(None)`: queued (or someone else changed the
    /// record first; it is read again).
    async fn requeue(&self, id: &str, job: &RemoteJob, attempt: u32, revision: u64, reason: &str) -> Result<Option<RemoteOutcome>, FleetError> {
        if attempt >= MAX_ATTEMPTS {
            return Ok(Some(RemoteOutcome::Refused(format!("the market's providers returned {MAX_ATTEMPTS} results the gateway refused; the last: {reason}"))));
        }
        let record = JobRecord { id: id.to_string(), manifest: job.manifest.clone(), attempt, state: RecordState::Queued { queued_at_ms: now_ms() } };
        match self.market.records.update(id, record.to_bytes().into(), revision).await {
            Ok(_) => self.publish(id, attempt).await.map(|()| None),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(FleetError::nats(format!("queue job {id} again"), e)),
        }
    }

    /// Fetches and checks an ended job's results.
    async fn collect(&self, job: &RemoteJob, provider: &str, started_at_ms: u64, end: &End) -> Collected {
        let (receipt_ref, trace_ref, reason) = match end {
            End::Refused { reason } => return Collected::Done(RemoteOutcome::Refused(reason.clone())),
            End::ProvidersFailed { reason } => return Collected::Done(RemoteOutcome::Refused(format!("the market's providers failed to run it: {reason}"))),
            End::Ran { receipt, trace, reason } => (receipt, trace, reason),
        };
        let limits = match ResolvedManifest::from_canonical_text(&job.manifest) {
            Ok(resolved) => resolved.limits(),
            Err(e) => return Collected::Done(RemoteOutcome::Refused(format!("the stored manifest is unreadable: {}", error_chain(&e)))),
        };
        // A blob that is missing or does not match its name is the provider's lie or loss; a
        // NATS error is this side's, and retried.
        let fetch = |digest: Digest, size: u64, limit: u64, what: &'static str| async move {
            if size > limit {
                return Err(Collected::Refused(format!("its {what} is {size} bytes, above the job's limit of {limit}")));
            }
            match self.market.get_blob(&digest, size, what).await {
                Ok(bytes) => Ok(bytes),
                Err(e @ FleetError::Nats { .. }) => Err(Collected::Fault(error_chain(&e))),
                Err(e) => Err(Collected::Refused(format!("its {what}: {}", error_chain(&e)))),
            }
        };
        let receipt_bytes = match fetch(receipt_ref.blake3, receipt_ref.size, MAX_RECEIPT_BYTES, "receipt").await {
            Ok(bytes) => bytes,
            Err(c) => return c,
        };
        let receipt = match Receipt::from_json(&receipt_bytes) {
            Ok(receipt) => receipt,
            Err(e) => return Collected::Refused(format!("its receipt: {}", error_chain(&e))),
        };
        if let Err(e) = receipt.check_signature() {
            return Collected::Refused(error_chain(&e));
        }
        if receipt.public_key != provider {
            return Collected::Refused(format!("its receipt is signed by {}, not by the provider that ended the job", receipt.public_key));
        }
        if receipt.manifest.text != job.manifest || receipt.module.blake3 != job.module {
            return Collected::Refused("its receipt is for another job (manifest or module)".into());
        }
        let inputs: BTreeMap<&String, Digest> = receipt.inputs.iter().map(|(name, blob)| (name, blob.blake3)).collect();
        if inputs != job.inputs.iter().map(|(name, digest)| (name, *digest)).collect() {
            return Collected::Refused("its receipt is for other inputs".into());
        }
        let stdio = limits.get(LimitKind::StdioBytes);
        let output_limit = limits.get(LimitKind::OutputBytes);
        let stdout = match fetch(receipt.stdout.blake3, receipt.stdout.size, stdio, "stdout").await {
            Ok(bytes) => bytes,
            Err(c) => return c,
        };
        let stderr = match fetch(receipt.stderr.blake3, receipt.stderr.size, stdio, "stderr").await {
            Ok(bytes) => bytes,
            Err(c) => return c,
        };
        let mut outputs = BTreeMap::new();
        for (name, blob) in &receipt.outputs {
            match fetch(blob.blake3, blob.size, output_limit, "output").await {
                Ok(bytes) => _ = outputs.insert(name.clone(), bytes),
                Err(c) => return c,
            }
        }
        let trace = match trace_ref {
            Some(blob) => match fetch(blob.blake3, blob.size, MAX_TRACE_BYTES, "trace log").await {
                Ok(bytes) => Some(bytes),
                Err(c) => return c,
            },
            None => None,
        };
        let outcome = receipt.outcome.to_string();
        let succeeded = receipt.outcome == (Outcome::Exited { code: 0 });
        // The provider's reason must start with the receipt's outcome; otherwise the outcome alone.
        let reason = (!succeeded).then(|| reason.clone().filter(|r| r.starts_with(&outcome)).unwrap_or_else(|| outcome.clone()));
        Collected::Done(RemoteOutcome::Ran(Box::new(RunResults {
            receipt: receipt_bytes,
            stdout,
            stderr,
            outputs,
            trace,
            fuel_used: receipt.fuel_used,
            outcome,
            succeeded,
            reason,
            started_at_ms: Some(started_at_ms),
        })))
    }
}

/// Why a job's blobs could not be placed in the market.
enum Placement {
    /// This gateway's store could not give them (disk, damage): a provider fault of the gateway.
    Local(String),
    /// The market did not take them: try again.
    Market(String),
}

/// What collecting an ended job's results gave.
enum Collected {
    /// Accepted (or the job's own refusal).
    Done(RemoteOutcome),
    /// The results are not acceptable: queue the job again.
    Refused(String),
    /// The market could not be read: retry later.
    Fault(String),
}

impl RemoteRunner for FleetRunner {
    fn run<'a>(&'a self, job: RemoteJob, blobs: &'a Arc<BlobStore>, stop: watch::Receiver<bool>) -> BoxFuture<'a, RemoteOutcome> {
        Box::pin(self.run_job(job, blobs, stop))
    }

    fn verdict<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Option<Verdict>> {
        Box::pin(async move {
            let bytes = self.market.verdicts.get(id).await.ok().flatten()?;
            parse_verdict(id, &bytes).ok()
        })
    }

    fn render_metrics(&self) -> String {
        let f = &self.figures;
        let mut out = String::new();
        write_metric(&mut out, "queue_pending", "gauge", "Jobs on the market's work queue no provider has taken.", f.queue_pending.get());
        write_metric(&mut out, "queue_in_progress", "gauge", "Jobs taken by a provider and not yet acknowledged.", f.queue_in_progress.get());
        write_metric(&mut out, "redelivered", "gauge", "Job messages delivered more than once, as JetStream counts them now.", f.redelivered.get());
        write_metric(&mut out, "published_total", "counter", "Job messages this gateway published.", f.published.get());
        write_metric(&mut out, "ended_total", "counter", "Jobs whose end this gateway accepted.", f.ended.get());
        write_metric(
            &mut out,
            "refused_results_total",
            "counter",
            "Results refused (unreadable, unsigned, for another job); the job was queued again.",
            f.refused_results.get(),
        );
        write_metric(&mut out, "malformed_records_total", "counter", "Records or tallies in the market that break spec/fleet.md.", f.malformed_records.get());
        out.push_str("# HELP gridbox_fleet_provider_jobs_total Jobs whose results this gateway accepted, by the provider that ended them.\n# TYPE gridbox_fleet_provider_jobs_total counter\n");
        for (provider, jobs) in self.jobs_by_provider.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            out.push_str(&format!("gridbox_fleet_provider_jobs_total{{provider=\"{provider}\"}} {jobs}\n"));
        }
        let tallies = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
        out.push_str(
            "# HELP gridbox_fleet_provider_checked_total Receipts of a provider a checker replayed.\n# TYPE gridbox_fleet_provider_checked_total counter\n",
        );
        for (provider, tally) in tallies.iter() {
            out.push_str(&format!("gridbox_fleet_provider_checked_total{{provider=\"{provider}\"}} {}\n", tally.checked));
        }
        out.push_str("# HELP gridbox_fleet_provider_mismatches_total Receipts of a provider a checker's replay contradicted.\n# TYPE gridbox_fleet_provider_mismatches_total counter\n");
        for (provider, tally) in tallies.iter() {
            out.push_str(&format!("gridbox_fleet_provider_mismatches_total{{provider=\"{provider}\"}} {}\n", tally.mismatches));
        }
        out
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
