//! gridbox's host bridge between jobs and tensor kernels.
//!
//! So far this crate holds the [`TraceChain`], the BLAKE3 hash chain over bridge calls that every
//! receipt commits to. Runs that differ can be bisected to the first differing call by comparing
//! chains link by link.

mod trace;

pub use trace::{TraceChain, TraceLink};
