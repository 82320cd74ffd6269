//! A provider (`gridbox provide`): workers pull jobs from the market's work queue, run them with
//! the same engine as `gridbox run` and `gridbox serve`, store the results and the signed
//! receipt in the market, record the job's end by compare-and-set on its record, and only then
//! acknowledge the message. A provider that dies before the acknowledgement loses nothing: the
//! job is delivered to another provider after the ack wait; while a job runs, its delivery is
//! kept alive (an in-progress acknowledgement every third of the ack wait).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{AckKind, kv};
use ed25519_dalek::SigningKey;
use gridbox_core::LimitKind;
use gridbox_core::digest::Digest;
use gridbox_core::engine::JobEngine;
use gridbox_core::errors::error_chain;
use gridbox_core::job::{Job, Outcome, RunError, RunMonitor, RunOptions};
use gridbox_core::manifest::{Policy, ResolvedManifest};
use gridbox_core::receipt::Receipt;
use gridbox_core::trace_file;
use gridbox_service::service::failure_reason;
use tokio::sync::watch;

use crate::FleetError;
use crate::market::{JOBS_STREAM, Market, PROVIDERS_CONSUMER};
use crate::metrics::{Figure, write_metric};
use crate::record::{End, JobMessage, JobRecord, RecordState, bounded_reason};
use crate::say::say;
use gridbox_service::db::now_ms;

/// After this many deliveries of a job whose every attempt failed for the providers' reasons
/// (a blob that cannot be read, a device that fails), the job is ended as failed by them.
pub const MAX_FAULTY_DELIVERIES: i64 = 5;

/// Modules and inputs kept in memory between jobs, in bytes (most of a market's jobs share a
/// few modules).
const BLOB_CACHE_BYTES: usize = 256 << 20;

/// Largest module or input a provider fetches.
const MAX_FETCH_BYTES: u64 = crate::blobs::MAX_MARKET_BLOB_BYTES;

/// Most bytes of module and inputs one job may make a provider fetch (distinct blobs; a blob
/// named twice is fetched once).
const MAX_JOB_FETCH_BYTES: u64 = 4 << 30;

/// How a provider runs.
pub struct ProviderConfig {
    /// Jobs run at once.
    pub workers: usize,
    /// The key its receipts are signed with.
    pub key: SigningKey,
    /// The policy its engine was made for: a job asking for more memory or table room than it
    /// allows goes back to the queue for another provider (the job's limits are the gateway's).
    pub policy: Policy,
    /// Test builds only: flip one byte of the first output (or of stdout) before signing.
    #[cfg(feature = "lying-provider")]
    pub lie: bool,
}

/// A provider's figures, for its `/metrics`.
#[derive(Default)]
pub struct ProviderFigures {
    /// Jobs this provider ran to an outcome.
    pub ran: Figure,
    /// Jobs whose end this provider recorded (won the compare-and-set).
    pub ended: Figure,
    /// Jobs another provider had ended first (this run's results were the same bytes, unused).
    pub ended_elsewhere: Figure,
    /// Deliveries that were redeliveries.
    pub redelivered: Figure,
    /// Messages or records refused as malformed.
    pub malformed: Figure,
    /// Attempts that failed for this provider's reasons (sent back to the queue).
    pub faults: Figure,
    /// Jobs running now.
    pub running: Figure,
}

/// A provider process's state.
pub struct Provider {
    market: Market,
    engine: Arc<JobEngine>,
    config: ProviderConfig,
    public_key: String,
    /// Its figures.
    pub figures: ProviderFigures,
    blobs: Mutex<BlobCache>,
    ack_wait: Mutex<Duration>,
}

#[derive(Default)]
struct BlobCache {
    bytes: HashMap<Digest, Arc<[u8]>>,
    order: VecDeque<Digest>,
    size: usize,
}

/// How handling one delivery ended.
enum Handled {
    /// Acknowledged: the job ended (here or elsewhere), or the message was refused for good.
    Done,
    /// Sent back to the queue: this provider failed (or is stopping).
    Returned,
}

impl Provider {
    /// A provider on `market`, running jobs on `engine`.
    pub fn new(market: Market, engine: Arc<JobEngine>, config: ProviderConfig) -> Arc<Provider> {
        let public_key = hex::encode(config.key.verifying_key().as_bytes());
        Arc::new(Provider {
            market,
            engine,
            config,
            public_key,
            figures: ProviderFigures::default(),
            blobs: Mutex::new(BlobCache::default()),
            ack_wait: Mutex::new(Duration::from_secs(30)),
        })
    }

    /// Its public key, hex: the name receipts, records and tallies know it by.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// Pulls and runs jobs until `stop` turns true; then returns the jobs it is running to the
    /// queue and returns. Errors only if the market is not there.
    pub async fn run(self: Arc<Self>, stop: watch::Receiver<bool>) -> Result<(), FleetError> {
        let mut consumer = self.market.consumer(JOBS_STREAM, PROVIDERS_CONSUMER).await?;
        if let Ok(info) = consumer.info().await {
            *self.ack_wait.lock().unwrap_or_else(|e| e.into_inner()) = info.config.ack_wait;
        }
        let workers: Vec<_> = (0..self.config.workers.max(1)).map(|_| tokio::spawn(self.clone().work(consumer.clone(), stop.clone()))).collect();
        for worker in workers {
            let _ = worker.await;
        }
        Ok(())
    }

    async fn work(self: Arc<Self>, consumer: async_nats::jetstream::consumer::PullConsumer, stop: watch::Receiver<bool>) {
        let watching = stop.clone();
        crate::pull::each_message(&consumer, stop, "provider", "jobs", |message| self.handle(message, &watching)).await;
    }

    /// One delivery, start to acknowledgement.
    async fn handle(&self, message: async_nats::jetstream::Message, stop: &watch::Receiver<bool>) {
        let delivered = message.info().map(|info| info.delivered).unwrap_or(1);
        if delivered > 1 {
            self.figures.redelivered.add();
        }
        let job = match JobMessage::parse(&message.payload) {
            Ok(job) => job,
            Err(e) => {
                // Nobody can run it: take it off the queue for good.
                self.figures.malformed.add();
                say(&format!("gridbox: provider: dropped a message from the work queue: {}", error_chain(&e)));
                let _ = message.ack_with(AckKind::Term).await;
                return;
            }
        };
        let handled = self.handle_job(&job, &message, delivered, stop).await;
        let acked = match handled {
            Handled::Done => message.ack().await,
            Handled::Returned => message.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await,
        };
        if let Err(e) = acked {
            // The job stays on the queue and comes back after the ack wait: nothing is lost.
            say(&format!("gridbox: provider: job {}: cannot acknowledge: {}", job.id, error_chain(&*e)));
        }
    }

    async fn handle_job(&self, job: &JobMessage, message: &async_nats::jetstream::Message, delivered: i64, stop: &watch::Receiver<bool>) -> Handled {
        let id = &job.id;
        let (record, revision) = match self.read_record(id).await {
            Ok(Some(found)) => found,
            // No record: the gateway writes it before it publishes, so the message is stale.
            Ok(None) => return Handled::Done,
            Err(e @ FleetError::Malformed { .. }) => {
                self.figures.malformed.add();
                say(&format!("gridbox: provider: job {id}: {}; leaving it to the gateway", error_chain(&e)));
                return Handled::Done;
            }
            Err(e) => {
                say(&format!("gridbox: provider: job {id}: {}", error_chain(&e)));
                self.figures.faults.add();
                return Handled::Returned;
            }
        };
        if record.ended() || record.attempt > job.attempt {
            // Ended elsewhere, or this message is for an attempt the gateway has moved past.
            return Handled::Done;
        }
        if let RecordState::Running { provider, .. } = &record.state
            && delivered == 1
            && *provider != self.public_key
        {
            // A first delivery of a job another provider is running: a second copy of its message
            // (the gateway publishes a job again when it waited long); the running one ends it.
            return Handled::Done;
        }
        let started_at_ms = now_ms();
        if delivered > MAX_FAULTY_DELIVERIES + 2 {
            // Delivered this often, the job is what kills or stalls the providers that take it
            // (a provider that failed cleanly would have given up at MAX_FAULTY_DELIVERIES).
            let end = End::ProvidersFailed { reason: format!("delivered {delivered} times without an end") };
            return match self.record_end(id, &record, started_at_ms, end).await {
                Ok(_) => Handled::Done,
                Err(_) => Handled::Returned,
            };
        }
        let running = JobRecord { state: RecordState::Running { provider: self.public_key.clone(), started_at_ms }, ..record.clone() };
        match self.market.records.update(id.as_str(), running.to_bytes().into(), revision).await {
            Ok(_) => {}
            // Someone changed it since it was read: the next delivery (or none) sorts it out.
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => return Handled::Returned,
            Err(e) => {
                say(&format!("gridbox: provider: job {id}: cannot mark it running: {}", error_chain(&e)));
                self.figures.faults.add();
                return Handled::Returned;
            }
        }
        say(&format!("gridbox: provider: job {id} started (delivery {delivered})"));
        self.figures.running.add();
        let end = self.run_job(&record, message, stop).await;
        self.figures.running.sub();
        let end = match end {
            Ok(end) => end,
            Err(Fault::Stopped) => return Handled::Returned,
            Err(Fault::Provider(reason)) => {
                self.figures.faults.add();
                say(&format!("gridbox: provider: job {id}: this provider failed: {reason}"));
                if delivered < MAX_FAULTY_DELIVERIES {
                    return Handled::Returned;
                }
                End::ProvidersFailed { reason: bounded_reason(&format!("{delivered} deliveries failed; the last: {reason}")) }
            }
        };
        match self.record_end(id, &record, started_at_ms, end).await {
            Ok(true) => {
                self.figures.ended.add();
                say(&format!("gridbox: provider: job {id} ended"));
                Handled::Done
            }
            Ok(false) => {
                self.figures.ended_elsewhere.add();
                Handled::Done
            }
            Err(e) => {
                say(&format!("gridbox: provider: job {id}: cannot record its end: {}", error_chain(&e)));
                self.figures.faults.add();
                // Not forever: the gateway takes back a job whose record stays unended.
                if delivered < MAX_FAULTY_DELIVERIES { Handled::Returned } else { Handled::Done }
            }
        }
    }

    /// Reads job `id`'s record and its revision.
    async fn read_record(&self, id: &str) -> Result<Option<(JobRecord, u64)>, FleetError> {
        let entry = self.market.records.entry(id).await.map_err(|e| FleetError::nats(format!("read job record {id}"), e))?;
        match entry.filter(|e| e.operation == kv::Operation::Put) {
            None => Ok(None),
            Some(entry) => Ok(Some((JobRecord::parse(id, &entry.value)?, entry.revision))),
        }
    }

    /// Records the job's end unless it has ended already (`Ok(false)`), by compare-and-set:
    /// whoever writes `ended` first wins, and an `ended` record is never overwritten here.
    async fn record_end(&self, id: &str, record: &JobRecord, started_at_ms: u64, end: End) -> Result<bool, FleetError> {
        let ended = JobRecord {
            state: RecordState::Ended { provider: self.public_key.clone(), started_at_ms, finished_at_ms: now_ms().max(started_at_ms), end },
            ..record.clone()
        };
        for _ in 0..16 {
            let Some((current, revision)) = self.read_record(id).await? else { return Ok(false) };
            if current.ended() || current.attempt != record.attempt {
                return Ok(false);
            }
            match self.market.records.update(id, ended.to_bytes().into(), revision).await {
                Ok(_) => return Ok(true),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(FleetError::nats(format!("record the end of job {id}"), e)),
            }
        }
        Err(FleetError::nats(format!("record the end of job {id}"), "the record kept changing under 16 tries"))
    }

    /// Fetches a module or input, through the in-memory cache.
    async fn fetch(&self, digest: Digest, what: &'static str, limit: u64) -> Result<Arc<[u8]>, FleetError> {
        if let Some(bytes) = self.blobs.lock().unwrap_or_else(|e| e.into_inner()).bytes.get(&digest) {
            return Ok(bytes.clone());
        }
        let bytes: Arc<[u8]> = Arc::from(self.market.get_blob(&digest, limit.min(MAX_FETCH_BYTES), what).await?);
        let mut cache = self.blobs.lock().unwrap_or_else(|e| e.into_inner());
        if bytes.len() <= BLOB_CACHE_BYTES / 4 && !cache.bytes.contains_key(&digest) {
            while cache.size + bytes.len() > BLOB_CACHE_BYTES {
                let Some(old) = cache.order.pop_front() else { break };
                if let Some(gone) = cache.bytes.remove(&old) {
                    cache.size -= gone.len();
                }
            }
            cache.size += bytes.len();
            cache.order.push_back(digest);
            cache.bytes.insert(digest, bytes.clone());
        }
        Ok(bytes)
    }

    /// Runs the job of `record` and stores its results in the market; its end, to record.
    async fn run_job(&self, record: &JobRecord, message: &async_nats::jetstream::Message, stop: &watch::Receiver<bool>) -> Result<End, Fault> {
        let refused = |reason: String| Ok(End::Refused { reason: bounded_reason(&reason) });
        let resolved = match ResolvedManifest::from_canonical_text(&record.manifest) {
            Ok(resolved) => resolved,
            Err(e) => return refused(format!("its manifest is unreadable: {}", error_chain(&e))),
        };
        for kind in [LimitKind::MemoryBytes, LimitKind::TableElements] {
            let (asked, allowed) = (resolved.limits().get(kind), self.config.policy.max(kind));
            if asked > allowed {
                return Err(Fault::Provider(format!("it asks for {kind} {asked}, above this provider's policy ({allowed})")));
            }
        }
        let fault = |e: FleetError| Fault::Provider(error_chain(&e));
        let module = self.fetch(resolved.manifest().module, "module", MAX_FETCH_BYTES).await.map_err(fault)?;
        let mut inputs = BTreeMap::new();
        let mut fetched: HashMap<Digest, Arc<[u8]>> = HashMap::new();
        let mut budget = MAX_JOB_FETCH_BYTES.saturating_sub(module.len() as u64);
        for (name, digest) in &resolved.manifest().inputs {
            let bytes = match fetched.get(digest) {
                Some(bytes) => bytes.clone(),
                None => {
                    let bytes = self.fetch(*digest, "input", budget).await.map_err(fault)?;
                    budget = budget.saturating_sub(bytes.len() as u64);
                    bytes
                }
            };
            fetched.insert(*digest, bytes.clone());
            inputs.insert(name.clone(), bytes);
        }
        let job = match Job::new(module, resolved, inputs) {
            Ok(job) => job,
            Err(e) => return refused(error_chain(&e)),
        };
        let monitor = Arc::new(RunMonitor::default());
        let engine = self.engine.clone();
        let key = self.config.key.clone();
        #[cfg(feature = "lying-provider")]
        let lie = self.config.lie;
        let options = RunOptions { monitor: Some(monitor.clone()), keep_trace_log: true, ..RunOptions::default() };
        let mut running = tokio::task::spawn_blocking(move || {
            let run = engine.run(&job, options)?;
            #[cfg(feature = "lying-provider")]
            let run = if lie { lie_about(run) } else { run };
            let receipt = Receipt::sign(&job, &run, &engine.backend().name(), &key);
            Ok::<_, RunError>((run, receipt))
        });
        // Keep the delivery alive while the job runs; stop it if the provider stops.
        let beat = *self.ack_wait.lock().unwrap_or_else(|e| e.into_inner()) / 3;
        let mut stop = stop.clone();
        let ran = loop {
            tokio::select! {
                ran = &mut running => break ran,
                _ = tokio::time::sleep(beat.max(Duration::from_millis(100))) => {
                    let _ = message.ack_with(AckKind::Progress).await;
                }
                _ = stop.changed() => if *stop.borrow() { monitor.cancel() },
            }
        };
        let (run, receipt) = match ran {
            Ok(Ok(ran)) => ran,
            Ok(Err(RunError::Cancelled)) => return Err(Fault::Stopped),
            Ok(Err(e)) if e.is_provider_fault() => return Err(Fault::Provider(error_chain(&e))),
            Ok(Err(e)) => return refused(format!("refused: {}", error_chain(&e))),
            Err(panic) => return Err(Fault::Provider(format!("internal error while running the job: {panic}"))),
        };
        self.figures.ran.add();
        let trace = run.trace_log.entries().filter(|entries| !entries.is_empty()).map(trace_file::encode);
        let succeeded = run.outcome == (Outcome::Exited { code: 0 });
        let reason = (!succeeded).then(|| bounded_reason(&failure_reason(&run.outcome.to_string(), run.detail.as_deref())));
        // Every result is in the market before the end that names them is written.
        for bytes in [&run.stdout, &run.stderr].into_iter().chain(run.outputs.values()) {
            self.market.put_blob(bytes).await.map_err(fault)?;
        }
        let trace = match &trace {
            Some(bytes) => Some(self.market.put_blob(bytes).await.map_err(fault)?),
            None => None,
        };
        let receipt = self.market.put_blob(&receipt.to_canonical_json()).await.map_err(fault)?;
        Ok(End::Ran { receipt, trace, reason })
    }
}

/// Why a run gave no end to record.
enum Fault {
    /// The provider is stopping.
    Stopped,
    /// The provider failed, not the job.
    Provider(String),
}

/// The lying provider's one lie: one byte of the first output (or of stdout) flipped.
#[cfg(feature = "lying-provider")]
fn lie_about(mut run: gridbox_core::job::JobRun) -> gridbox_core::job::JobRun {
    let target = match run.outputs.values_mut().find(|bytes| !bytes.is_empty()) {
        Some(bytes) => bytes,
        None => &mut run.stdout,
    };
    match target.first_mut() {
        Some(byte) => *byte ^= 1,
        None => target.push(b'!'),
    }
    run
}

/// The provider's `/metrics`.
pub fn render_metrics(provider: &Provider) -> String {
    let f = &provider.figures;
    let mut out = String::new();
    write_metric(&mut out, "provider_running", "gauge", "Jobs this provider is running now.", f.running.get());
    write_metric(&mut out, "provider_ran_total", "counter", "Jobs this provider ran to an outcome.", f.ran.get());
    write_metric(&mut out, "provider_ended_total", "counter", "Jobs whose end this provider recorded.", f.ended.get());
    write_metric(&mut out, "provider_ended_elsewhere_total", "counter", "Jobs another provider ended first.", f.ended_elsewhere.get());
    write_metric(&mut out, "provider_redelivered_total", "counter", "Deliveries that were redeliveries (a provider died or failed).", f.redelivered.get());
    write_metric(&mut out, "provider_malformed_total", "counter", "Messages or records refused as malformed.", f.malformed.get());
    write_metric(&mut out, "provider_faults_total", "counter", "Attempts that failed for this provider's reasons.", f.faults.get());
    out
}
