//! gridbox's integration tests, in one binary: real wasm32-wasip1 jobs built from the sources in
//! tests/programs and examples/, run through the library and through the `gridbox` binary.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::panic)]

mod authoring;
mod common;
mod compiled_cache;
mod determinism;
mod dispute;
mod examples;
mod explain;
mod faults;
mod first_job;
mod fleet;
mod fleet_procs;
mod guests;
mod hardening;
mod layout;
mod limits;
mod llama;
mod mounts;
mod nan_modes;
mod receipts;
mod refusals;
mod serve;
mod spot_check;
mod tensor;
mod trace_log;
mod verify;
