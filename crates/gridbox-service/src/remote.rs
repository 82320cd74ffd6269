//! Jobs run elsewhere: the seam through which a gateway (`gridbox serve --fleet`, crate
//! `gridbox-fleet`) hands the service's accepted jobs to a market of providers instead of running
//! them in its own workers. Everything else (tenants, uploads, quotas, the job database, the
//! HTTP API) stays the service's: a tenant cannot tell a gateway from a single provider except
//! by who signed the receipt.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;

use crate::blobs::BlobStore;
use gridbox_core::digest::Digest;

/// A boxed future, as the runner's methods return (the trait stays object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One accepted job, as the service hands it over.
#[derive(Debug, Clone)]
pub struct RemoteJob {
    /// The service's job id.
    pub id: String,
    /// The canonical text of the resolved manifest (its identity).
    pub manifest: String,
    /// The module's hash.
    pub module: Digest,
    /// The inputs' hashes, by name.
    pub inputs: BTreeMap<String, Digest>,
}

/// What a run gave, as bytes the service stores as the job's results; the same whether it ran
/// in this process or elsewhere.
#[derive(Debug, Clone, Default)]
pub struct RunResults {
    /// The signed receipt, canonical JSON.
    pub receipt: Vec<u8>,
    /// The job's stdout.
    pub stdout: Vec<u8>,
    /// The job's stderr.
    pub stderr: Vec<u8>,
    /// Its output files, by the receipt's names.
    pub outputs: BTreeMap<String, Vec<u8>>,
    /// Its trace log (`trace.jsonl`), when it recorded bridge calls.
    pub trace: Option<Vec<u8>>,
    /// Fuel used, as the receipt says.
    pub fuel_used: u64,
    /// The outcome, as the receipt states it (`exited with code 0`).
    pub outcome: String,
    /// Whether it exited with code 0.
    pub succeeded: bool,
    /// Why it failed: the outcome and the first line of its detail; `None` when it succeeded.
    pub reason: Option<String>,
    /// When the run started, if it started somewhere else (the service's own start otherwise).
    pub started_at_ms: Option<u64>,
}

impl RunResults {
    /// Bytes of results to store.
    pub fn size(&self) -> usize {
        self.stdout.len()
            + self.stderr.len()
            + self.receipt.len()
            + self.outputs.values().map(Vec::len).sum::<usize>()
            + self.trace.as_ref().map_or(0, Vec::len)
    }
}

/// How handing a job over ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum RemoteOutcome {
    /// It ran; its results are checked (hashes, signature, the job they are for).
    Ran(Box<RunResults>),
    /// It could not run, for the job's reasons (or the market gave up on it); recorded as failed.
    Refused(String),
    /// It could not be handed over or its results fetched, for the gateway's reasons: the
    /// service retries as it does a provider fault.
    HostFault(String),
    /// The service is stopping: the job stays queued for the next start.
    Stopped,
}

/// A verifier's verdict on a job's receipt, shown in the job's status.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Verdict {
    /// `match` (a replay gave the receipt's bytes), `mismatch`, or `unverifiable`.
    pub verdict: String,
    /// The public key (hex) of the provider whose receipt was checked.
    pub provider: String,
    /// The BLAKE3 (hex) of the receipt checked.
    pub receipt: String,
    /// For a mismatch, the first field that differed; for `unverifiable`, why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// When the verdict was reached, in milliseconds since the Unix epoch.
    pub checked_at_ms: u64,
}

/// Runs the service's jobs somewhere else. Implemented by `gridbox-fleet`'s gateway.
pub trait RemoteRunner: Send + Sync + 'static {
    /// Hands `job` over and waits for its end. Called at most once at a time per job and again
    /// after a restart for a job that had not ended: it must pick up where the last call left
    /// off (the job id names it). `stop` turns true when the service stops.
    fn run<'a>(&'a self, job: RemoteJob, blobs: &'a Arc<BlobStore>, stop: watch::Receiver<bool>) -> BoxFuture<'a, RemoteOutcome>;

    /// The latest verdict on job `id`'s receipt `receipt`, if a verifier has checked it (a
    /// verdict on any other receipt is not this job's).
    fn verdict<'a>(&'a self, id: &'a str, receipt: &'a Digest) -> BoxFuture<'a, Option<Verdict>>;

    /// Prometheus text for the runner's own figures, appended to the service's `/metrics`.
    fn render_metrics(&self) -> String;
}
