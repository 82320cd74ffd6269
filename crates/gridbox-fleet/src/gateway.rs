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
use gridbox_service::db::now_ms;
use gridbox_service::remote::{BoxFuture, RemoteJob, RemoteOutcome, RemoteRunner, RunResults, Verdict};
use tokio::sync::{Notify, watch};

use crate::FleetError;
use crate::market::{JOBS_STREAM, JOBS_SUBJECT, MAX_RECORD_BYTES, Market, MarketSettings, PROVIDERS_CONSUMER};
use crate::metrics::{Figure, write_labelled, write_metric};
use crate::record::{End, JobMessage, JobRecord, RecordState, Tally, parse_tally, parse_verdict, valid_key_hex};
use crate::say::say;

/// Attempts of one job the gateway takes back from the market (results refused, records
/// malformed or stale, refusals claimed) before it gives up on the job, per call of the runner.
pub const MAX_ATTEMPTS: u32 = 3;

/// How often a waiting job's record is read again even without a notice from the watcher (a
/// reconnect can drop a watch's updates).
const RECHECK_EVERY: Duration = Duration::from_secs(5);

/// Added to twice a job's wall-time limit: how long its record may stay unchanged before the
/// gateway queues it again (see [`FleetRunner::follow`]).
const STALL_SLACK: Duration = Duration::from_secs(300);

/// Room left in a queued record for what providers add to it: their key, receipt references,
/// started and finished times, a reason (escaped, up to six bytes per byte of it).
const RECORD_HEADROOM: usize = 6 * crate::record::MAX_REASON_BYTES + 1024;

/// Largest receipt the gateway reads.
const MAX_RECEIPT_BYTES: u64 = 4 << 20;

/// Largest trace log the gateway reads.
const MAX_TRACE_BYTES: u64 = 1 << 30;

/// Providers the gateway keeps tallies and job counts of for `/metrics`; more are not shown.
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

    /// Wakes the job waiting for each record that changes. The watch is made again every
    /// minute and whenever it breaks (a watch can also go quiet without an error; the 5-second
    /// recheck of each waiting job covers the gap).
    async fn watch_records(self: Arc<Self>) {
        loop {
            if let Ok(mut watch) = self.market.records.watch_all().await {
                let renew = tokio::time::Instant::now() + Duration::from_secs(60);
                while let Ok(Some(entry)) = tokio::time::timeout_at(renew, watch.next()).await {
                    let Ok(entry) = entry else { break };
                    let waiter = self.waiters.lock().unwrap_or_else(|e| e.into_inner()).get(&entry.key).cloned();
                    if let Some(waiter) = waiter {
                        waiter.notify_one();
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Keeps the providers' tallies for `/metrics`.
    async fn watch_tallies(self: Arc<Self>) {
        loop {
            if let Ok(mut watch) = self.market.tally.watch_with_history(">").await {
                let renew = tokio::time::Instant::now() + Duration::from_secs(60);
                while let Ok(Some(entry)) = tokio::time::timeout_at(renew, watch.next()).await {
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
            FleetError::BlobTooLarge { .. } => Placement::TooLarge(error_chain(&e)),
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
                Ok(()) => self.follow(&job, blobs, &waiter, &mut stop).await,
                Err(Placement::Local(reason)) => break RemoteOutcome::HostFault(format!("cannot read the job's blobs here: {reason}")),
                Err(Placement::TooLarge(reason)) => break RemoteOutcome::Refused(reason),
                Err(Placement::Market(reason)) => Err(reason),
            };
            match attempt {
                Ok(outcome) => break outcome,
                Err(reason) => {
                    if !said {
                        say(&format!("gridbox: job {}: the market did not answer ({reason}); trying again every second", job.id));
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
    ///
    /// Every result refused, record found malformed or rewritten (another manifest, another
    /// attempt than the one this call queued), refusal or give-up claimed, stale record or
    /// deleted record counts against [`MAX_ATTEMPTS`] in this call's own count, never in a
    /// number read from the market (anyone with the market's credentials can write a record).
    async fn follow(&self, job: &RemoteJob, blobs: &Arc<BlobStore>, waiter: &Notify, stop: &mut watch::Receiver<bool>) -> Result<RemoteOutcome, String> {
        let id = &job.id;
        let mut retake = Retake::default();
        // An attempt queued or running this long is stale: a provider that took the job and
        // neither ended it nor let it go, or a message lost to a rogue that took it and
        // acknowledged it. Counted from when this call first saw the attempt in that phase, so
        // rewriting the record does not keep a job alive.
        let limits = ResolvedManifest::from_canonical_text(&job.manifest).map(|r| r.limits());
        let wall_time_ms = limits.as_ref().map(|l| l.get(LimitKind::WallTimeMs)).unwrap_or(0);
        let stall = Duration::from_millis(wall_time_ms.saturating_mul(2)) + STALL_SLACK;
        let mut clock = PhaseClock::default();
        let fault = |e: FleetError| Err(error_chain(&e));
        loop {
            if *stop.borrow() {
                return Ok(RemoteOutcome::Stopped);
            }
            let entry = match self.market.records.entry(id.as_str()).await {
                Ok(entry) => entry.filter(|e| e.operation == kv::Operation::Put),
                Err(e) => return fault(FleetError::nats(format!("read job record {id}"), e)),
            };
            let Some(entry) = entry else {
                // New, or deleted by someone: (re)create it, after every attempt seen so far. A
                // deletion takes an attempt back like any other rogue write.
                if retake.last_attempt.is_some() {
                    retake.count += 1;
                    if retake.count >= MAX_ATTEMPTS {
                        return Ok(self.give_up(id, "its record was deleted").await);
                    }
                }
                let attempt = retake.next_attempt();
                let record = JobRecord { id: id.clone(), manifest: job.manifest.clone(), attempt, state: RecordState::Queued { queued_at_ms: now_ms() } };
                // Room for what providers add (their key, receipt references, a reason).
                let size = record.to_bytes().len() + RECORD_HEADROOM;
                if size > MAX_RECORD_BYTES {
                    return Ok(RemoteOutcome::Refused(format!(
                        "its job record would be {size} bytes with room for its end (the manifest's text is most of it), above the market's limit of {MAX_RECORD_BYTES}"
                    )));
                }
                match self.market.records.create(id.as_str(), record.to_bytes().into()).await {
                    Ok(_) => {}
                    // Written meanwhile: read it again.
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    Err(e) => return fault(FleetError::nats(format!("create job record {id}"), e)),
                }
                retake.written = Some(attempt);
                retake.seen(attempt);
                if let Err(e) = self.publish(id, attempt).await {
                    return fault(e);
                }
                clock.published(attempt);
                continue;
            };
            let parsed = JobRecord::parse(id, &entry.value).and_then(|record| {
                if record.manifest != job.manifest {
                    Err(FleetError::malformed(format!("job record {id}"), "it names another manifest than the job's"))
                } else if retake.written.is_some_and(|written| written != record.attempt) {
                    Err(FleetError::malformed(
                        format!("job record {id}"),
                        format!("it names attempt {}; the gateway queued attempt {}", record.attempt, retake.written.unwrap_or(0)),
                    ))
                } else {
                    Ok(record)
                }
            });
            let retaken = match parsed {
                Err(e) => {
                    // Not a record anyone following spec/fleet.md writes: a rogue's. Start over.
                    self.figures.malformed_records.add();
                    Some(error_chain(&e))
                }
                Ok(record) => {
                    // After a restart, the record's attempt is the one to follow.
                    retake.wrote(record.attempt);
                    clock.at(record.attempt);
                    match &record.state {
                        // Taken up again after a restart, or queued for long: make sure it is on the
                        // queue (a repeat within JetStream's duplicate window is dropped).
                        RecordState::Queued { .. } => {
                            if !clock.published || clock.queued_since.get_or_insert_with(Instant::now).elapsed() > stall {
                                if let Err(e) = self.publish(id, record.attempt).await {
                                    return fault(e);
                                }
                                clock.published(record.attempt);
                            }
                            None
                        }
                        RecordState::Running { provider, started_at_ms } => {
                            let since = clock.running_since.get_or_insert_with(Instant::now);
                            (since.elapsed() > stall)
                                .then(|| format!("provider {provider} took it at {started_at_ms} ms and had not ended it after {} s", stall.as_secs()))
                        }
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
                                Some(format!("provider {provider}: {reason}"))
                            }
                            // A refusal or a give-up is nobody's signed word: it stands only once
                            // [`MAX_ATTEMPTS`] attempts in a row have ended so.
                            Collected::Claimed(reason) if retake.claims + 1 >= MAX_ATTEMPTS && retake.claims == retake.count => {
                                self.forget(id).await;
                                return Ok(RemoteOutcome::Refused(reason));
                            }
                            Collected::Claimed(reason) => {
                                retake.claims += 1;
                                Some(format!("provider {provider} says: {reason}"))
                            }
                        },
                    }
                }
            };
            if let Some(reason) = retaken {
                match self.retake(id, job, blobs, (&mut retake, &mut clock), entry.revision, reason).await {
                    Ok(None) => {}
                    Ok(Some(outcome)) => return Ok(outcome),
                    Err(e) => return fault(e),
                }
                continue;
            }
            tokio::select! {
                _ = waiter.notified() => {}
                _ = tokio::time::sleep(RECHECK_EVERY) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// Queues the job again as its next attempt over the record at `revision`, placing its
    /// blobs in the market again first (a rogue may have overwritten them), or gives up once this
    /// call has taken [`MAX_ATTEMPTS`] back. `Ok(None)`: queued (or someone changed the record
    /// first; it is read again).
    async fn retake(
        &self,
        id: &str,
        job: &RemoteJob,
        blobs: &Arc<BlobStore>,
        (retake, clock): (&mut Retake, &mut PhaseClock),
        revision: u64,
        reason: String,
    ) -> Result<Option<RemoteOutcome>, FleetError> {
        say(&format!("gridbox: job {id}: {reason}; queueing the job again"));
        retake.count += 1;
        if retake.count >= MAX_ATTEMPTS {
            return Ok(Some(self.give_up(id, &reason).await));
        }
        self.unplace(job);
        match self.place_all(job, blobs).await {
            Ok(()) => {}
            Err(Placement::Local(reason)) => return Ok(Some(RemoteOutcome::HostFault(format!("cannot read the job's blobs here: {reason}")))),
            Err(Placement::TooLarge(reason)) => return Ok(Some(RemoteOutcome::Refused(reason))),
            Err(Placement::Market(reason)) => return Err(FleetError::nats(format!("place the blobs of job {id}"), reason)),
        }
        let attempt = retake.next_attempt();
        let record = JobRecord { id: id.to_string(), manifest: job.manifest.clone(), attempt, state: RecordState::Queued { queued_at_ms: now_ms() } };
        match self.market.records.update(id, record.to_bytes().into(), revision).await {
            Ok(_) => {
                retake.written = Some(attempt);
                retake.seen(attempt);
                self.publish(id, attempt).await?;
                clock.published(attempt);
                Ok(None)
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(FleetError::nats(format!("queue job {id} again"), e)),
        }
    }

    /// The end of a job the market gave no acceptable result for: its record is deleted, so
    /// that no provider runs it for nothing.
    async fn give_up(&self, id: &str, reason: &str) -> RemoteOutcome {
        self.forget(id).await;
        RemoteOutcome::Refused(format!("the market gave {MAX_ATTEMPTS} attempts no result the gateway could accept; the last: {reason}"))
    }

    /// Deletes job `id`'s record (best effort: it expires with the market's retention anyway).
    async fn forget(&self, id: &str) {
        let _ = self.market.records.delete(id).await;
    }

    /// Forgets that the job's module and inputs were placed, so that they are placed again.
    fn unplace(&self, job: &RemoteJob) {
        let mut placed = self.placed.lock().unwrap_or_else(|e| e.into_inner());
        for digest in std::iter::once(&job.module).chain(job.inputs.values()) {
            placed.remove(digest);
        }
    }

    /// Fetches and checks an ended job's results.
    async fn collect(&self, job: &RemoteJob, provider: &str, started_at_ms: u64, end: &End) -> Collected {
        let (receipt_ref, trace_ref, reason) = match end {
            End::Refused { reason } => return Collected::Claimed(reason.clone()),
            End::ProvidersFailed { reason } => return Collected::Claimed(format!("the market's providers failed to run it: {reason}")),
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
        // What the receipt claims is checked against the job's limits before anything is read.
        let stdio = limits.get(LimitKind::StdioBytes);
        let output_limit = limits.get(LimitKind::OutputBytes);
        let stdio_claimed = receipt.stdout.size.saturating_add(receipt.stderr.size);
        if stdio_claimed > stdio {
            return Collected::Refused(format!("its stdout and stderr are {stdio_claimed} bytes, above the job's limit of {stdio}"));
        }
        let files = receipt.outputs.len() as u64;
        let output_claimed = receipt.outputs.values().fold(0u64, |sum, blob| sum.saturating_add(blob.size));
        if files > limits.get(LimitKind::OutputFiles) || output_claimed > output_limit {
            return Collected::Refused(format!("its {files} outputs of {output_claimed} bytes are above the job's limits"));
        }
        if trace_ref.is_some() && receipt.trace.length == 0 {
            return Collected::Refused("it names a trace log, but its receipt records no bridge calls".into());
        }
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
            // Entries are bounded by fuel (at most one per 100 fuel, each under 3 KiB: spec/trace.md).
            Some(blob) => match fetch(blob.blake3, blob.size, (limits.get(LimitKind::Fuel) / 100).saturating_mul(3072).min(MAX_TRACE_BYTES), "trace log").await
            {
                Ok(bytes) => Some(bytes),
                Err(c) => return c,
            },
            None => None,
        };
        // The trace log is served for spot checks: it must be the log the receipt commits to.
        if let Some(bytes) = &trace {
            let mismatch = match gridbox_core::trace_file::decode(bytes) {
                Ok(entries) => gridbox_core::verify::log_mismatch(&receipt, &entries),
                Err(e) => Some(error_chain(&e)),
            };
            if let Some(why) = mismatch {
                return Collected::Refused(format!("its trace log is not the receipt's: {why}"));
            }
        }
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
    /// Larger than the market holds: the job cannot run there.
    TooLarge(String),
}

/// This call's count of the attempts it took back from the market (see [`FleetRunner::follow`]).
#[derive(Default)]
struct Retake {
    /// Attempts taken back.
    count: u32,
    /// Of those, the ones a provider ended as refused or given up on.
    claims: u32,
    /// The highest attempt number seen in a record or written.
    last_attempt: Option<u32>,
    /// The attempt this call queued (or, after a restart, found): a record naming another is a
    /// rogue's.
    written: Option<u32>,
}

impl Retake {
    fn seen(&mut self, attempt: u32) {
        self.last_attempt = Some(self.last_attempt.map_or(attempt, |last| last.max(attempt)));
    }

    /// The attempt is this call's (written or adopted), if none is yet.
    fn wrote(&mut self, attempt: u32) {
        self.seen(attempt);
        self.written.get_or_insert(attempt);
    }

    /// The number for the next attempt: after every one seen (message ids name it, and JetStream
    /// drops a repeated id within its duplicate window).
    fn next_attempt(&self) -> u32 {
        self.last_attempt.map_or(0, |last| last.saturating_add(1))
    }
}

/// When this call first saw the current attempt queued and running, and whether it published it.
#[derive(Default)]
struct PhaseClock {
    attempt: Option<u32>,
    queued_since: Option<Instant>,
    running_since: Option<Instant>,
    published: bool,
}

impl PhaseClock {
    /// Starts the clock again if `attempt` is not the one it was timing.
    fn at(&mut self, attempt: u32) {
        if self.attempt != Some(attempt) {
            *self = PhaseClock { attempt: Some(attempt), ..PhaseClock::default() };
        }
    }

    /// This call published `attempt` now.
    fn published(&mut self, attempt: u32) {
        self.at(attempt);
        self.published = true;
        self.queued_since = Some(Instant::now());
    }
}

/// What collecting an ended job's results gave.
enum Collected {
    /// Accepted.
    Done(RemoteOutcome),
    /// The provider says the job cannot run (the job's reasons) or that the providers gave up on
    /// it: unsigned, so it stands only when attempts keep ending so.
    Claimed(String),
    /// The results are not acceptable: queue the job again.
    Refused(String),
    /// The market could not be read: retry later.
    Fault(String),
}

impl RemoteRunner for FleetRunner {
    fn run<'a>(&'a self, job: RemoteJob, blobs: &'a Arc<BlobStore>, stop: watch::Receiver<bool>) -> BoxFuture<'a, RemoteOutcome> {
        Box::pin(self.run_job(job, blobs, stop))
    }

    fn verdict<'a>(&'a self, id: &'a str, receipt: &'a Digest) -> BoxFuture<'a, Option<Verdict>> {
        Box::pin(async move {
            let bytes = tokio::time::timeout(Duration::from_secs(1), self.market.verdicts.get(id)).await.ok()?.ok().flatten()?;
            // Only a verdict on the receipt this job has.
            parse_verdict(id, &bytes).ok().filter(|verdict| verdict.receipt == receipt.to_hex())
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
        let jobs = self.jobs_by_provider.lock().unwrap_or_else(|e| e.into_inner());
        let help = "Jobs whose results this gateway accepted, by the provider that ended them.";
        write_labelled(&mut out, "provider_jobs_total", "counter", help, "provider", jobs.iter().map(|(provider, jobs)| (provider.as_str(), *jobs)));
        let tallies = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
        let rows = |count: fn(&Tally) -> u64| tallies.iter().map(move |(provider, tally)| (provider.as_str(), count(tally)));
        write_labelled(&mut out, "provider_checked_total", "counter", "Receipts of a provider a checker replayed.", "provider", rows(|t| t.checked));
        let help = "Receipts of a provider a checker's replay contradicted.";
        write_labelled(&mut out, "provider_mismatches_total", "counter", help, "provider", rows(|t| t.mismatches));
        out
    }
}
