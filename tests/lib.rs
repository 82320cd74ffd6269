//! Paths of the wasm32-wasip1 programs that `build.rs` compiled from source: the test programs in
//! `tests/programs` and the jobs in `examples/`.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));
