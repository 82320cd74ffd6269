//! Sequences of tensor bridge calls (create, ops, read, info, free) with arbitrary arguments and
//! memory, through the real host functions.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::run_calls(true, data));
