//! gridbox's core: what a provider runs and a verifier embeds. It runs untrusted
//! wasm32-wasip1 jobs deterministically in wasmtime, enforces their limits, signs receipts that
//! commit to everything a run used and made, and verifies receipts by replaying the job. It has
//! no HTTP, no database and no command-line parser: `gridbox-service` and `gridbox-cli` build
//! on it, and a third-party verifier needs nothing else.
//!
//! The pieces, in the order a run uses them: [`manifest`] (what a job asks, what a policy
//! grants), [`engine`] (deterministic wasmtime and its module cache, with [`compiled_cache`] on
//! disk), [`job`] (one run), the
//! job's imports ([`wasi`], deterministic WASI, and [`bridge`], the tensor bridge over
//! `gridbox-compute`), [`receipt`] (signing), [`artifacts`] (the output directory) and
//! [`verify`] (replay and compare).

pub mod artifacts;
pub mod bridge;
pub mod compiled_cache;
pub mod digest;
pub mod dispute;
pub mod engine;
pub mod errors;
pub mod fault;
mod guest_memory;
pub mod job;
pub mod kept_tensors;
pub mod keys;
pub mod limits;
pub mod manifest;
mod manifest_text;
pub mod mounts;
pub mod nan_rewrite;
pub mod receipt;
mod strict_json;
pub mod trace_file;
pub mod trap_names;
pub mod verify;
pub mod wasi;

pub use compiled_cache::CompiledCache;
pub use digest::{BlobRef, Digest};
pub use engine::JobEngine;
pub use fault::ProviderFault;
pub use job::{Job, JobRun, Outcome, RunError, RunMonitor, RunOptions};
pub use limits::{LimitExceeded, LimitKind};
pub use manifest::{Capability, Manifest, Policy, ResolvedManifest};
pub use receipt::Receipt;
