//! The service's own errors, with stable codes (spec/http.md) and their causes. They know
//! nothing of HTTP: `http::error` maps each to a status code.

use gridbox_core::digest::Digest;
use gridbox_core::manifest::ManifestError;

use crate::blobs::BlobError;
use crate::db::DbError;

/// Why the service refused or could not carry out a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The data folder could not be made.
    #[error("cannot create the data folder {}", .path.display())]
    DataFolder {
        /// The folder.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The manifest does not parse or does not fit the policy.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The manifest names a blob the tenant may not read (it never uploaded it).
    #[error("the manifest's {what} is blob {digest}, which you have not uploaded: PUT /v1/blobs/{digest} first")]
    BlobNotUploaded {
        /// `module` or `input "NAME"`.
        what: String,
        /// The blob named.
        digest: Digest,
    },
    /// The server's queue is full.
    #[error("{limit} jobs are waiting, this server's limit; retry later")]
    QueueFull {
        /// The server's limit.
        limit: usize,
        /// Seconds after which a retry is sensible.
        retry_after_s: u64,
    },
    /// The tenant's share of the queue is full.
    #[error("{limit} of your jobs are waiting, this server's limit per tenant; retry later")]
    TenantQueueFull {
        /// The per-tenant limit.
        limit: usize,
        /// Seconds after which a retry is sensible.
        retry_after_s: u64,
    },
    /// The tenant's blobs already fill its storage quota.
    #[error(
        "you hold {used} bytes of this server's storage, and your quota is {quota}: delete jobs (DELETE /v1/jobs/ID) or uploads (DELETE /v1/blobs/HASH), or wait for them to expire"
    )]
    StorageQuota {
        /// The quota, in bytes.
        quota: u64,
        /// What the tenant holds.
        used: u64,
    },
    /// The job has not ended, so it cannot be kept or deleted yet.
    #[error("job {0} has not ended yet")]
    NotEnded(String),
    /// The service is stopping and takes no new work.
    #[error("the server is shutting down; retry against it once it is back")]
    ShuttingDown,
    /// No job with this id belongs to the tenant.
    #[error("no job {0:?} (job ids are per tenant)")]
    JobNotFound(String),
    /// The job has no receipt (yet, or ever).
    #[error("job {id} {}", if *.ended { "was refused before it ran, so it has no receipt" } else { "has not ended yet" })]
    NoReceipt {
        /// The job.
        id: String,
        /// Whether it has ended (then it never will have one).
        ended: bool,
    },
    /// No blob with this hash, or none the tenant may read.
    #[error("no blob {0} that you uploaded or that your jobs made")]
    BlobNotFound(Digest),
    /// The job has no trace log, or none with this entry.
    #[error("job {id} has no trace entry {index}: {why}")]
    NoTraceEntry {
        /// The job.
        id: String,
        /// Asked for.
        index: u64,
        /// The log's length, or why there is none.
        why: String,
    },
    /// No tensor with this hash is kept for the tenant.
    #[error(
        "the provider could not produce tensor {0}: it is not kept (keep_tensors is off, or it was removed after tensor_retention_s or to stay within tenant_tensor_bytes)"
    )]
    TensorNotKept(Digest),
    /// A kept tensor's file no longer hashes to its name: it is not served.
    #[error("kept tensor {0} is damaged on disk: it is not served")]
    TensorCorrupted(Digest),
    /// The blob store failed or found damage.
    #[error(transparent)]
    Blobs(#[from] BlobError),
    /// The job database failed.
    #[error(transparent)]
    Database(#[from] DbError),
    /// A task the service ran in the background died.
    #[error("a background task of the service failed")]
    Task(#[from] tokio::task::JoinError),
}

impl ServiceError {
    /// The stable code clients see (spec/http.md).
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::Manifest(ManifestError::LimitAbovePolicy { .. }) => "limit_above_policy",
            ServiceError::Manifest(ManifestError::CapabilityNotGranted(_)) => "capability_not_granted",
            ServiceError::Manifest(_) => "invalid_manifest",
            ServiceError::BlobNotUploaded { .. } => "blob_not_found",
            ServiceError::QueueFull { .. } => "queue_full",
            ServiceError::TenantQueueFull { .. } => "tenant_queue_full",
            ServiceError::ShuttingDown => "shutting_down",
            ServiceError::JobNotFound(_) | ServiceError::BlobNotFound(_) | ServiceError::NoTraceEntry { .. } | ServiceError::TensorNotKept(_) => "not_found",
            ServiceError::TensorCorrupted(_) => "blob_corrupted",
            ServiceError::NoReceipt { .. } => "no_receipt",
            ServiceError::StorageQuota { .. } => "storage_quota",
            ServiceError::NotEnded(_) => "not_ended",
            ServiceError::Blobs(BlobError::NotFound(_)) => "not_found",
            ServiceError::Blobs(BlobError::Corrupted(_)) => "blob_corrupted",
            ServiceError::Blobs(BlobError::HashMismatch { .. }) => "hash_mismatch",
            ServiceError::Blobs(BlobError::TooLarge { .. }) => "body_too_large",
            ServiceError::Blobs(_) | ServiceError::Database(_) | ServiceError::Task(_) | ServiceError::DataFolder { .. } => "internal",
        }
    }

    /// Seconds after which a retry is sensible, for refusals that are only for now.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ServiceError::QueueFull { retry_after_s, .. } | ServiceError::TenantQueueFull { retry_after_s, .. } => Some(*retry_after_s),
            ServiceError::ShuttingDown => Some(5),
            _ => None,
        }
    }
}
