//! Sequences of WASI preview1 calls with arbitrary arguments and memory over a small tree,
//! through the real host functions.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::run_calls(false, data));
