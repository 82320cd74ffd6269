//! The gridbox host: runs untrusted wasm32-wasip1 jobs deterministically in wasmtime, enforces
//! their limits, signs receipts that commit to everything a run used and made, and verifies
//! receipts by replaying the job.
//!
//! The pieces, in the order a run uses them: [`manifest`] (what a job asks, what a policy
//! grants), [`engine`] (deterministic wasmtime and its module cache), [`job`] (one run),
//! [`wasi`] (deterministic WASI), [`receipt`] (signing), [`artifacts`] (the output directory)
//! and [`verify`] (replay and compare).

pub mod artifacts;
pub mod client;
pub mod digest;
pub mod engine;
pub mod job;
pub mod keys;
pub mod limits;
pub mod load;
pub mod manifest;
pub mod receipt;
pub mod serve;
pub mod verify;
pub mod wasi;

pub use digest::{BlobRef, Digest};
pub use engine::JobEngine;
pub use job::{Job, JobRun, Outcome, RunError, RunMonitor, RunOptions};
pub use limits::{LimitExceeded, LimitKind};
pub use manifest::{Capability, Manifest, Policy, ResolvedManifest};
pub use receipt::Receipt;
