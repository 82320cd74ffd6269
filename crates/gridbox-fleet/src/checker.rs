//! A checker (`gridbox check`): reads every job record update from the market, replays a
//! sample of the jobs that ran (with the same engine as `gridbox verify`, against the results
//! the provider stored) and publishes a verdict per job; a mismatch is added to the provider's
//! tally, which the gateway shows on `/metrics`, and the verdict to the job's status.
//!
//! The sample is drawn with a secret seed of the checker's, so a provider cannot tell which of
//! its jobs will be checked.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{AckKind, kv};
use gridbox_core::artifacts::Artifacts;
use gridbox_core::engine::JobEngine;
use gridbox_core::errors::error_chain;
use gridbox_core::receipt::Receipt;
use gridbox_core::verify::{Evidence, VerifyOptions, verify};
use tokio::sync::watch;

use crate::FleetError;
use crate::market::{CHECKERS_CONSUMER, Market, RECORDS_STREAM};
use crate::metrics::{Figure, write_labelled, write_metric};
use crate::record::{End, JobRecord, RecordState, Tally, VerdictRecord, bounded_reason, parse_tally};
use crate::say::say;
use gridbox_service::db::now_ms;

/// Largest receipt a checker reads.
const MAX_RECEIPT_BYTES: u64 = 4 << 20;

/// The subjects of the record bucket's updates: this, then the job id.
const RECORDS_SUBJECT_PREFIX: &str = "$KV.gridbox-jobs.";

/// Largest blob a checker fetches.
const MAX_FETCH_BYTES: u64 = 4 << 30;

/// How a checker runs.
#[derive(Clone)]
pub struct CheckerConfig {
    /// The fraction of ended jobs to replay, 0 to 1.
    pub sample: f64,
    /// The secret the sample is drawn with.
    pub seed: [u8; 32],
    /// Replays at once.
    pub workers: usize,
    /// The policy its engine was made for: a job asking for more memory or table room than it
    /// allows is unverifiable here.
    pub policy: gridbox_core::manifest::Policy,
}

/// A checker's figures.
#[derive(Default)]
pub struct CheckerFigures {
    /// Ended jobs seen.
    pub seen: Figure,
    /// Jobs replayed.
    pub checked: Figure,
    /// Verdicts: match.
    pub matched: Figure,
    /// Verdicts: mismatch.
    pub mismatched: Figure,
    /// Verdicts: unverifiable.
    pub unverifiable: Figure,
    /// Records refused as malformed.
    pub malformed: Figure,
}

/// A checker process's state.
pub struct Checker {
    market: Market,
    engine: Arc<JobEngine>,
    config: CheckerConfig,
    /// Its figures.
    pub figures: CheckerFigures,
}

/// Whether job `id` is in the sample: BLAKE3 keyed by the seed, as a fraction of 2^64.
pub fn sampled(seed: &[u8; 32], id: &str, fraction: f64) -> bool {
    let hash = blake3::keyed_hash(seed, id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    (u64::from_le_bytes(first) as f64) < fraction * 18_446_744_073_709_551_616.0
}

impl Checker {
    /// A checker on `market`, replaying on `engine`.
    pub fn new(market: Market, engine: Arc<JobEngine>, config: CheckerConfig) -> Arc<Checker> {
        Arc::new(Checker { market, engine, config, figures: CheckerFigures::default() })
    }

    /// Checks until `stop` turns true. Errors only if the market is not there.
    pub async fn run(self: Arc<Self>, stop: watch::Receiver<bool>) -> Result<(), FleetError> {
        let consumer = self.market.consumer(RECORDS_STREAM, CHECKERS_CONSUMER).await?;
        let workers: Vec<_> = (0..self.config.workers.max(1)).map(|_| tokio::spawn(self.clone().work(consumer.clone(), stop.clone()))).collect();
        for worker in workers {
            let _ = worker.await;
        }
        Ok(())
    }

    async fn work(self: Arc<Self>, consumer: async_nats::jetstream::consumer::PullConsumer, stop: watch::Receiver<bool>) {
        let checker = &self;
        crate::pull::each_message(&consumer, stop, "checker", "record updates", |message| async move {
            let done = checker.handle(&message).await;
            let _ = if done { message.ack().await } else { message.ack_with(AckKind::Nak(Some(Duration::from_secs(2)))).await };
        })
        .await;
    }

    /// One record update; false to see it again later (a fault of the market or this machine).
    async fn handle(&self, message: &async_nats::jetstream::Message) -> bool {
        // A KV update's subject is `$KV.<bucket>.<key>`; deletes and purges carry no record.
        let Some(id) = message.subject.as_str().strip_prefix(RECORDS_SUBJECT_PREFIX).map(str::to_string) else { return true };
        if message.payload.is_empty() {
            return true;
        }
        let record = match JobRecord::parse(&id, &message.payload) {
            Ok(record) => record,
            Err(e) => {
                self.figures.malformed.add();
                say(&format!("gridbox: checker: {}", error_chain(&e)));
                return true;
            }
        };
        let RecordState::Ended { provider, end: End::Ran { receipt, .. }, .. } = &record.state else { return true };
        self.figures.seen.add();
        if !sampled(&self.config.seed, &id, self.config.sample) {
            return true;
        }
        let delivered = message.info().map(|info| info.delivered).unwrap_or(1);
        // Judged already (a redelivery, another checker, or the same end written again): once
        // per receipt.
        if self.judged(&id, &receipt.blake3.to_hex(), provider).await.unwrap_or(false) {
            return true;
        }
        let verdict = match self.replay(&record, provider, receipt.blake3, receipt.size, message).await {
            Ok(verdict) => verdict,
            Err(e) if delivered < 3 => {
                say(&format!("gridbox: checker: job {id}: cannot check it yet: {}", error_chain(&e)));
                return false;
            }
            Err(e) => Judged { verdict: "unverifiable", detail: Some(bounded_reason(&error_chain(&e))) },
        };
        let record = VerdictRecord {
            verdict: verdict.verdict.to_string(),
            provider: provider.clone(),
            receipt: receipt.blake3.to_hex(),
            detail: verdict.detail,
            checked_at_ms: now_ms(),
        };
        match self.publish(&id, &record).await {
            Ok(()) => true,
            Err(e) => {
                say(&format!("gridbox: checker: job {id}: cannot publish its verdict: {}", error_chain(&e)));
                // Not forever: after a few deliveries the update is let go.
                delivered >= 5
            }
        }
    }

    /// Replays the job the record says ended, against the receipt and results in the market.
    /// Only a replay that contradicts a receipt the record's provider signed is a mismatch;
    /// anything else wrong (a receipt or result that is not in the market or not what it is
    /// named, a receipt signed by another key or for another job) is unverifiable: anyone with
    /// the market's credentials can write a record naming any provider, so it proves nothing
    /// against that provider.
    async fn replay(
        &self,
        record: &JobRecord,
        provider: &str,
        receipt_hash: gridbox_core::digest::Digest,
        receipt_size: u64,
        message: &async_nats::jetstream::Message,
    ) -> Result<Judged, FleetError> {
        let unverifiable = |why: String| Ok(Judged { verdict: "unverifiable", detail: Some(bounded_reason(&why)) });
        let receipt_bytes = match self.market.get_blob(&receipt_hash, receipt_size.min(MAX_RECEIPT_BYTES), "receipt").await {
            Ok(bytes) => bytes,
            Err(e @ FleetError::Nats { .. }) => return Err(e),
            Err(e) => return unverifiable(format!("receipt: {}", error_chain(&e))),
        };
        let receipt = match Receipt::from_json(&receipt_bytes) {
            Ok(receipt) => receipt,
            Err(e) => return unverifiable(format!("receipt: {}", error_chain(&e))),
        };
        if let Err(e) = receipt.check_signature() {
            return unverifiable(format!("receipt: {}", error_chain(&e)));
        }
        if receipt.public_key != provider {
            return unverifiable(format!("the record names provider {provider}, but the receipt is signed by {}", receipt.public_key));
        }
        if receipt.manifest.text != record.manifest {
            return unverifiable("the receipt is for another manifest than the record's".into());
        }
        // A job this checker's engine is not sized for would run out of room here, not there.
        let limits = match gridbox_core::manifest::ResolvedManifest::from_canonical_text(&receipt.manifest.text) {
            Ok(resolved) => resolved.limits(),
            Err(e) => return unverifiable(format!("manifest: {}", error_chain(&e))),
        };
        for kind in [gridbox_core::LimitKind::MemoryBytes, gridbox_core::LimitKind::TableElements] {
            let (asked, allowed) = (limits.get(kind), self.config.policy.max(kind));
            if asked > allowed {
                return unverifiable(format!("it asks for {kind} {asked}, above this checker's policy ({allowed})"));
            }
        }
        let fetch = |digest: gridbox_core::digest::Digest, limit: u64, what: &'static str| async move {
            match self.market.get_blob(&digest, limit, what).await {
                Ok(bytes) => Ok(Ok(bytes)),
                Err(e @ FleetError::Nats { .. }) => Err(e),
                Err(e) => Ok(Err(format!("its {what}: {}", error_chain(&e)))),
            }
        };
        let module = match fetch(receipt.module.blake3, receipt.module.size.min(MAX_FETCH_BYTES), "module").await? {
            Ok(bytes) => bytes,
            Err(why) => return unverifiable(why),
        };
        let mut inputs = BTreeMap::new();
        let mut fetched: std::collections::HashMap<gridbox_core::digest::Digest, Arc<[u8]>> = std::collections::HashMap::new();
        for (name, blob) in &receipt.inputs {
            let bytes = match fetched.get(&blob.blake3) {
                Some(bytes) => bytes.clone(),
                None => match fetch(blob.blake3, blob.size.min(MAX_FETCH_BYTES), "input").await? {
                    Ok(bytes) => {
                        let bytes: Arc<[u8]> = Arc::from(bytes);
                        fetched.insert(blob.blake3, bytes.clone());
                        bytes
                    }
                    Err(why) => return unverifiable(why),
                },
            };
            inputs.insert(name.clone(), bytes);
        }
        // What the receipt claims is bounded by the job's limits, capped by this checker's policy,
        // before anything is read.
        let cap = |kind: gridbox_core::LimitKind| limits.get(kind).min(self.config.policy.max(kind));
        let stdio = receipt.stdout.size.saturating_add(receipt.stderr.size);
        let outputs_size = receipt.outputs.values().fold(0u64, |sum, blob| sum.saturating_add(blob.size));
        if stdio > cap(gridbox_core::LimitKind::StdioBytes)
            || receipt.outputs.len() as u64 > cap(gridbox_core::LimitKind::OutputFiles)
            || outputs_size > cap(gridbox_core::LimitKind::OutputBytes)
        {
            return unverifiable("its results are larger than the job's limits allow (or than this checker reads)".into());
        }
        // The results as the provider stored them: a replay must give these bytes.
        let stdout = match fetch(receipt.stdout.blake3, receipt.stdout.size, "stdout").await? {
            Ok(bytes) => Some(bytes),
            Err(why) => return unverifiable(why),
        };
        let stderr = match fetch(receipt.stderr.blake3, receipt.stderr.size, "stderr").await? {
            Ok(bytes) => Some(bytes),
            Err(why) => return unverifiable(why),
        };
        let mut outputs = BTreeMap::new();
        for (name, blob) in &receipt.outputs {
            match fetch(blob.blake3, blob.size, "output").await? {
                Ok(bytes) => _ = outputs.insert(name.clone(), bytes),
                Err(why) => return unverifiable(why),
            }
        }
        // Where a wall-time limit stops a job depends on the machine's speed: no replay can say.
        if let gridbox_core::job::Outcome::LimitExceeded { limit: gridbox_core::LimitKind::WallTimeMs, .. } = receipt.outcome {
            return unverifiable("the job was stopped by its wall-time limit, which no replay can check".into());
        }
        self.figures.checked.add();
        let evidence =
            Evidence { module: Arc::from(module), inputs, artifacts: Some(Artifacts { stdout, stderr, outputs, trace: None }), requested: None, trace: None };
        let engine = self.engine.clone();
        let mut replay = tokio::task::spawn_blocking(move || verify(&engine, &receipt, &evidence, VerifyOptions::default()));
        let report = loop {
            tokio::select! {
                report = &mut replay => break report,
                _ = tokio::time::sleep(Duration::from_secs(20)) => { let _ = message.ack_with(AckKind::Progress).await; }
            }
        };
        Ok(match report {
            Ok(Ok(report)) => match report.first_mismatch() {
                None => Judged { verdict: "match", detail: None },
                // This machine would not run the job at all: that says nothing of the provider.
                Some(check) if check.field == "replay" => {
                    Judged { verdict: "unverifiable", detail: Some(bounded_reason(&format!("the replay here: {}", check.got))) }
                }
                Some(check) => {
                    Judged { verdict: "mismatch", detail: Some(bounded_reason(&format!("{}: expected {}, got {}", check.field, check.expected, check.got))) }
                }
            },
            Ok(Err(e)) => Judged { verdict: "unverifiable", detail: Some(bounded_reason(&error_chain(&e))) },
            Err(panic) => Judged { verdict: "unverifiable", detail: Some(format!("internal error while replaying: {panic}")) },
        })
    }

    /// Publishes a verdict and adds it to the provider's tally, once per receipt. The tally is
    /// written first: if publishing the verdict then fails, the update comes back and may count
    /// twice (a mismatch is never lost; a count can be one too high).
    async fn publish(&self, id: &str, verdict: &VerdictRecord) -> Result<(), FleetError> {
        // Again after the replay: another checker may have judged it meanwhile.
        if self.judged(id, &verdict.receipt, &verdict.provider).await? {
            return Ok(());
        }
        if verdict.verdict != "unverifiable" {
            self.tally(id, verdict).await?;
        }
        let bytes = serde_json::to_vec(verdict).unwrap_or_default();
        self.market.verdicts.put(id, bytes.into()).await.map_err(|e| FleetError::nats(format!("publish the verdict on job {id}"), e))?;
        match verdict.verdict.as_str() {
            "match" => self.figures.matched.add(),
            "mismatch" => {
                self.figures.mismatched.add();
                say(&format!("gridbox: checker: job {id}: MISMATCH: provider {}: {}", verdict.provider, verdict.detail.as_deref().unwrap_or("")));
            }
            _ => self.figures.unverifiable.add(),
        }
        Ok(())
    }

    /// Whether job `id` has a verdict on receipt `receipt` (hex) of `provider` already.
    async fn judged(&self, id: &str, receipt: &str, provider: &str) -> Result<bool, FleetError> {
        let earlier = self.market.verdicts.get(id).await.map_err(|e| FleetError::nats(format!("read the verdict on job {id}"), e))?;
        Ok(earlier.and_then(|bytes| crate::record::parse_verdict(id, &bytes).ok()).is_some_and(|v| v.receipt == receipt && v.provider == provider))
    }

    /// Adds a verdict to its provider's tally, by compare-and-set.
    async fn tally(&self, id: &str, verdict: &VerdictRecord) -> Result<(), FleetError> {
        let key = verdict.provider.as_str();
        for _ in 0..32 {
            let entry = self.market.tally.entry(key).await.map_err(|e| FleetError::nats(format!("read the tally of {key}"), e))?;
            let (mut tally, revision) = match entry.filter(|e| e.operation == kv::Operation::Put) {
                Some(entry) => (parse_tally(key, &entry.value).unwrap_or_default(), Some(entry.revision)),
                None => (Tally::default(), None),
            };
            tally.checked = tally.checked.saturating_add(1);
            if verdict.verdict == "mismatch" {
                tally.mismatches = tally.mismatches.saturating_add(1);
                tally.last_mismatch = Some(id.to_string());
            }
            let bytes: bytes::Bytes = serde_json::to_vec(&tally).unwrap_or_default().into();
            let written = match revision {
                Some(revision) => {
                    self.market.tally.update(key, bytes, revision).await.map(|_| ()).map_err(|e| e.kind() == kv::UpdateErrorKind::WrongLastRevision)
                }
                None => self.market.tally.create(key, bytes).await.map(|_| ()).map_err(|e| e.kind() == kv::CreateErrorKind::AlreadyExists),
            };
            match written {
                Ok(()) => return Ok(()),
                Err(true) => continue,
                Err(false) => break,
            }
        }
        Err(FleetError::nats(format!("update the tally of {key}"), "the tally kept changing or could not be written"))
    }
}

/// A verdict before it is published.
struct Judged {
    verdict: &'static str,
    detail: Option<String>,
}

/// The checker's `/metrics`.
pub fn render_metrics(checker: &Checker) -> String {
    let f = &checker.figures;
    let mut out = String::new();
    write_metric(&mut out, "checker_seen_total", "counter", "Ended jobs this checker saw.", f.seen.get());
    write_metric(&mut out, "checker_checked_total", "counter", "Jobs this checker replayed.", f.checked.get());
    let verdicts = [("match", f.matched.get()), ("mismatch", f.mismatched.get()), ("unverifiable", f.unverifiable.get())];
    write_labelled(&mut out, "checker_verdicts_total", "counter", "Verdicts this checker published.", "verdict", verdicts);
    write_metric(&mut out, "checker_malformed_total", "counter", "Records refused as malformed.", f.malformed.get());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_is_about_the_fraction_asked_and_depends_on_the_seed() {
        let ids: Vec<String> = (0..10_000).map(|i| format!("{i:032x}")).collect();
        let count = |seed: &[u8; 32], p: f64| ids.iter().filter(|id| sampled(seed, id, p)).count();
        assert_eq!(count(&[1; 32], 0.0), 0);
        assert_eq!(count(&[1; 32], 1.0), 10_000);
        let tenth = count(&[1; 32], 0.1);
        assert!((800..1200).contains(&tenth), "{tenth}");
        let other: Vec<&String> = ids.iter().filter(|id| sampled(&[2; 32], id, 0.1)).collect();
        let first: Vec<&String> = ids.iter().filter(|id| sampled(&[1; 32], id, 0.1)).collect();
        assert_ne!(first, other);
    }
}
