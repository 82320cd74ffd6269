//! Startup overhead: an in-process gridbox run of a hello-world job against a bare wasmtime
//! instantiate-and-run of the same module, measured side by side in one process.
//!
//! `cargo bench -p gridbox-core --bench startup` prints the median of each and their ratio.
//! Goal: a gridbox run <= 1.5x bare wasmtime. The receipt is timed too, on its own line: it adds
//! one Ed25519 signature (about 13 us here), which no bare run pays.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gridbox_core::{Digest, Job, JobEngine, Manifest, Policy, Receipt, RunOptions, keys};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, Linker, Module, PoolingAllocationConfig, Store};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;

// The guest programs are built from source the first time a bench or test asks for one.
#[path = "../../../tests/all/guests.rs"]
#[allow(dead_code, clippy::panic)] // Bench code: a guest that does not build stops the bench.
mod guests;

const ROUNDS: usize = 2_000;

fn main() {
    let module: Arc<[u8]> = guests::PROBE.bytes().into();

    // gridbox: engine and module cache warm, as in a provider that has seen the module before.
    let engine = JobEngine::new(&Policy::default()).expect("engine");
    let mut manifest = Manifest::new(Digest::of(&module));
    manifest.args = vec!["hello".into()];
    let job = Job::new(module.clone(), manifest.resolve(&Policy::default()).expect("manifest"), Default::default()).expect("job");
    let key = keys::generate().expect("key");
    let gridbox_run_only = || {
        let run = engine.run(&job, RunOptions::default()).expect("run");
        assert_eq!(run.stdout, b"hello from a gridbox job\n");
        run
    };
    let gridbox_run = || Receipt::sign(&job, &gridbox_run_only(), "cpu", &key);

    // Bare wasmtime: default configuration plus the pooling allocator, module compiled once,
    // `InstancePre` reused, a fresh WASI context per run writing stdout to memory.
    let mut config = Config::new();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(PoolingAllocationConfig::new()));
    let bare_engine = Engine::new(&config).expect("bare engine");
    let mut linker: Linker<WasiP1Ctx> = Linker::new(&bare_engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |cx| cx).expect("wasi");
    let compiled = Module::new(&bare_engine, &module).expect("compile");
    let instance_pre = linker.instantiate_pre(&compiled).expect("instantiate_pre");
    let bare_run = || {
        let stdout = wasmtime_wasi::p2::pipe::MemoryOutputPipe::new(1 << 20);
        let wasi = WasiCtxBuilder::new().args(&["job.wasm", "hello"]).stdout(stdout.clone()).build_p1();
        let mut store = Store::new(&bare_engine, wasi);
        let instance = instance_pre.instantiate(&mut store).expect("instantiate");
        let start = instance.get_typed_func::<(), ()>(&mut store, "_start").expect("_start");
        start.call(&mut store, ()).expect("run");
        drop(store);
        assert_eq!(&stdout.contents()[..], b"hello from a gridbox job\n");
    };

    for _ in 0..50 {
        gridbox_run();
        bare_run();
    }
    let mut gridbox_times = Vec::with_capacity(ROUNDS);
    let mut run_only_times = Vec::with_capacity(ROUNDS);
    let mut bare_times = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        std::hint::black_box(gridbox_run());
        gridbox_times.push(start.elapsed());
        let start = Instant::now();
        std::hint::black_box(gridbox_run_only());
        run_only_times.push(start.elapsed());
        let start = Instant::now();
        bare_run();
        bare_times.push(start.elapsed());
    }
    let (gridbox, run_only, bare) = (median(&mut gridbox_times), median(&mut run_only_times), median(&mut bare_times));
    println!("hello-world job, {ROUNDS} rounds interleaved, median:");
    println!("  bare wasmtime instantiate + run:  {:>9.1} us", micros(bare));
    println!("  gridbox run (no receipt):         {:>9.1} us  ratio {:.2}x  (goal <= 1.50x)", micros(run_only), micros(run_only) / micros(bare));
    println!("  gridbox run + signed receipt:     {:>9.1} us  ratio {:.2}x  (adds one Ed25519 signature)", micros(gridbox), micros(gridbox) / micros(bare));
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}
