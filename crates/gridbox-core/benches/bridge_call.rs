//! The cost of crossing into the tensor bridge: a bridge call that does no work (`info` on a
//! live tensor) against a no-op wasmtime host function with the same signature shape, each
//! called in a tight wasm loop, measured side by side in one process, both on an engine with
//! gridbox's deterministic settings (fuel metering and epochs on).
//!
//! `cargo bench -p gridbox-core --bench bridge_call` prints ns per call and the ratio.
//! Goal: <= 2x.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gridbox_core::{Capability, Digest, Job, JobEngine, LimitKind, Manifest, Outcome, Policy, RunOptions};
use wasmtime::{Engine, Linker, Module, Store};

const CALLS: u32 = 1_000_000;
const ROUNDS: usize = 11;

/// `_start` creates one [1] tensor, then calls `$import` CALLS times in a loop.
fn looping_module(import_module: &str, import: &str) -> String {
    format!(
        r#"(module
            (import "gridbox_tensor_v1" "create" (func $create (param i32 i32 i32 i32 i32 i32) (result i32)))
            (import "{import_module}" "{import}" (func $target (param i32 i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 0) "\01\00\00\00")
            (func (export "_start") (local $i i32)
                (drop (call $create (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 16) (i32.const 4) (i32.const 32)))
                (loop $again
                    (drop (call $target (i32.const 1) (i32.const 40) (i32.const 48) (i32.const 8) (i32.const 44)))
                    (local.set $i (i32.add (local.get $i) (i32.const 1)))
                    (br_if $again (i32.lt_u (local.get $i) (i32.const {CALLS}))))))"#
    )
}

fn main() {
    let engine = JobEngine::new(&Policy::default()).expect("engine");
    let module: Arc<[u8]> = wat::parse_str(looping_module("gridbox_tensor_v1", "info")).expect("wat").into();
    let mut manifest = Manifest::new(Digest::of(&module));
    manifest.capabilities = vec![Capability::Tensor];
    manifest.limits.set(LimitKind::Fuel, 1_000_000_000_000);
    let job = Job::new(module, manifest.resolve(&Policy::default()).expect("manifest"), Default::default()).expect("job");
    let gridbox_loop = || {
        let start = Instant::now();
        let run = engine.run(&job, RunOptions::default()).expect("run");
        assert_eq!(run.outcome, Outcome::Exited { code: 0 });
        start.elapsed()
    };

    // The same engine settings gridbox runs jobs with (fuel metering, epochs, NaN
    // canonicalisation), so the loop around the call costs the same on both sides and the ratio
    // is the bridge's own overhead.
    let bare_engine = Engine::new(&gridbox_core::engine::deterministic_config()).expect("engine");
    let mut linker: Linker<()> = Linker::new(&bare_engine);
    linker.func_wrap("gridbox_tensor_v1", "create", |_: i32, _: i32, _: i32, _: i32, _: i32, _: i32| 0i32).expect("create");
    linker.func_wrap("host", "nop", |_: i32, _: i32, _: i32, _: i32, _: i32| 0i32).expect("nop");
    let bare_module = Module::new(&bare_engine, wat::parse_str(looping_module("host", "nop")).expect("wat")).expect("bare module");
    let instance_pre = linker.instantiate_pre(&bare_module).expect("instantiate_pre");
    let bare_loop = || {
        let start = Instant::now();
        let mut store = Store::new(&bare_engine, ());
        store.set_fuel(u64::MAX).expect("fuel");
        store.set_epoch_deadline(u64::MAX / 2);
        let instance = instance_pre.instantiate(&mut store).expect("instantiate");
        instance.get_typed_func::<(), ()>(&mut store, "_start").expect("_start").call(&mut store, ()).expect("run");
        start.elapsed()
    };

    gridbox_loop();
    bare_loop();
    let (mut gridbox, mut bare) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        gridbox.push(gridbox_loop());
        bare.push(bare_loop());
    }
    let per_call = |times: &mut Vec<Duration>| {
        times.sort();
        times[times.len() / 2].as_secs_f64() * 1e9 / CALLS as f64
    };
    let (gridbox, bare) = (per_call(&mut gridbox), per_call(&mut bare));
    println!("{CALLS} calls in a wasm loop, median of {ROUNDS} runs:");
    println!("  no-op wasmtime host function:   {bare:>7.1} ns/call");
    println!("  gridbox bridge call (info):     {gridbox:>7.1} ns/call");
    println!("  ratio bridge / no-op:           {:>7.2}x  (goal <= 2x)", gridbox / bare);
}
