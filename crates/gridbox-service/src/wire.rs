//! The JSON bodies of the HTTP API (spec/http.md), shared by the server and the client.

use std::collections::BTreeMap;

pub use crate::db::JobState;
use gridbox_core::digest::BlobRef;

/// `POST /v1/jobs`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// The job manifest, in TOML (spec/manifest.md); it names the module and inputs by hash.
    pub manifest: String,
}

/// A job as `GET /v1/jobs/{id}` and `POST /v1/jobs` show it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobStatus {
    /// The job id.
    pub id: String,
    /// `queued`, `running`, `succeeded` or `failed`.
    pub state: JobState,
    /// When it was accepted, in milliseconds since the Unix epoch.
    pub submitted_at_ms: u64,
    /// When its run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<u64>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
    /// Fuel consumed so far (final once the job has ended).
    pub fuel_used: u64,
    /// The outcome the receipt states, once ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Why the job failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The signed receipt (also at `/v1/jobs/{id}/receipt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<BlobRef>,
    /// The job's stdout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<BlobRef>,
    /// The job's stderr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<BlobRef>,
    /// Files the job wrote under `/output`.
    #[serde(default)]
    pub outputs: BTreeMap<String, BlobRef>,
    /// The job's trace log (trace.jsonl, spec/trace.md), when it recorded bridge calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<BlobRef>,
    /// The tenant keeps the job: it never expires.
    #[serde(default)]
    pub kept: bool,
    /// When the ended job, its results and its receipt expire (unless kept), in milliseconds
    /// since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    /// A market verifier's verdict on the job's receipt (gateways only: `gridbox serve --fleet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<crate::remote::Verdict>,
}

/// `GET /v1/usage`: the tenant's storage.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Bytes of the blobs the tenant holds (uploads and unexpired job results).
    pub bytes: u64,
    /// The tenant's quota, in bytes.
    pub quota_bytes: u64,
}

/// `GET /v1/jobs`: a page of the tenant's jobs, newest first.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobList {
    /// The jobs.
    pub jobs: Vec<JobStatus>,
    /// Pass as `before=` for the next page; absent when this page is not full (no more jobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<u64>,
}

/// A stored blob, as uploads answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BlobStored {
    /// Its hash and size.
    #[serde(flatten)]
    pub blob: BlobRef,
    /// False when this tenant had it already.
    pub created: bool,
}

/// Every error response: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// A stable machine-readable code and a message that says what to fix.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ErrorDetail {
    /// One of the codes in spec/http.md.
    pub code: String,
    /// For people.
    pub message: String,
}

/// One entry of a job's trace log with its inclusion proof (sibling hashes, leaf first).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvenTraceEntry {
    /// The entry, as its line of trace.jsonl (spec/trace.md, "Files").
    pub entry: serde_json::Value,
    /// Its audit path to `trace.log_root`.
    pub siblings: Vec<gridbox_core::digest::Digest>,
}

/// `GET /v1/jobs/{id}/trace/{index}`: what `gridbox check-op` needs of the log to check one
/// entry.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceSample {
    /// Entries in the log (the receipt's `trace.length`).
    pub size: u64,
    /// The entry asked for.
    pub entry: ProvenTraceEntry,
    /// The entry before it (whose root the chain step starts from); absent for entry 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<ProvenTraceEntry>,
}
