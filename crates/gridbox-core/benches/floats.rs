//! The price of determinism on float-heavy wasm, in one process, side by side: tests/programs'
//! `pairs` loop (distances, a square root and a division per pair) on wasmtime as it comes,
//! with each of the switches gridbox needs added one at a time, and as gridbox runs it.
//!
//! `cargo bench -p gridbox-core --bench floats [-- N ROUNDS REPEATS]` (default 1000 10 7)
//! prints the median time of each and its ratio to bare wasmtime. Goal (issue 15): gridbox
//! <= 1.25x.

use std::time::{Duration, Instant};

use gridbox_core::engine::{NanCanonicalization, config_for, deterministic_config};
use gridbox_core::{Digest, Job, JobEngine, LimitKind, Manifest, Outcome, Policy, RunOptions, nan_rewrite};
use wasmtime::{Config, Engine, Linker, Module, Store};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;

#[path = "../../../tests/all/guests.rs"]
#[allow(dead_code, clippy::panic)] // Bench code: a guest that does not build stops the bench.
mod guests;

/// One way to run the job; returns its stdout.
type Runner<'a> = Box<dyn Fn() -> Vec<u8> + 'a>;

fn main() {
    let numbers: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (points, rounds, repeats) =
        (numbers.first().copied().unwrap_or(1000), numbers.get(1).copied().unwrap_or(10), numbers.get(2).copied().unwrap_or(7) as usize);
    let args = [points.to_string(), rounds.to_string()];
    let module = guests::PAIRS.bytes();
    let rewritten = nan_rewrite::rewrite(&module).expect("rewrite");

    let wasi_run = |config: &Config, bytes: &[u8], metered: bool| -> Runner<'static> {
        let engine = Engine::new(config).expect("engine");
        let compiled = Module::new(&engine, bytes).expect("compile");
        let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |cx| cx).expect("wasi");
        let instance_pre = linker.instantiate_pre(&compiled).expect("instantiate_pre");
        let argv = ["pairs.wasm".to_string(), args[0].clone(), args[1].clone()];
        Box::new(move || {
            let stdout = wasmtime_wasi::p2::pipe::MemoryOutputPipe::new(1 << 16);
            let wasi = WasiCtxBuilder::new().args(&argv).stdout(stdout.clone()).build_p1();
            let mut store = Store::new(&engine, wasi);
            if metered {
                store.set_fuel(u64::MAX / 2).expect("fuel");
            }
            store.set_epoch_deadline(u64::MAX / 2);
            let instance = instance_pre.instantiate(&mut store).expect("instantiate");
            instance.get_typed_func::<(), ()>(&mut store, "_start").expect("_start").call(&mut store, ()).expect("run");
            drop(store);
            stdout.contents().to_vec()
        })
    };
    let mut fuel = Config::new();
    fuel.consume_fuel(true);
    let mut fuel_epochs = fuel.clone();
    fuel_epochs.epoch_interruption(true);

    let engine = JobEngine::new(&Policy::default()).expect("engine");
    let mut manifest = Manifest::new(Digest::of(&module));
    manifest.args = args.to_vec();
    manifest.limits.set(LimitKind::Fuel, 1_000_000_000_000);
    let job = Job::new(module.clone().into(), manifest.resolve(&Policy::default()).expect("manifest"), Default::default()).expect("job");
    let gridbox: Runner<'_> = Box::new(|| {
        let run = engine.run(&job, RunOptions::default()).expect("run");
        assert_eq!(run.outcome, Outcome::Exited { code: 0 });
        run.stdout
    });

    let cases: Vec<(&str, Runner<'_>)> = vec![
        ("wasmtime, defaults", wasi_run(&Config::new(), &module, false)),
        ("+ fuel", wasi_run(&fuel, &module, true)),
        ("+ fuel + epochs", wasi_run(&fuel_epochs, &module, true)),
        ("+ eager NaNs (gridbox before)", wasi_run(&deterministic_config(), &module, true)),
        ("gridbox's engine, rewritten", wasi_run(&config_for(NanCanonicalization::AtObservation), &rewritten, true)),
        ("gridbox run (JobEngine)", gridbox),
    ];
    let expected = cases[0].1();
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); cases.len()];
    for _ in 0..repeats {
        for (i, (name, run)) in cases.iter().enumerate() {
            let start = Instant::now();
            let stdout = run();
            times[i].push(start.elapsed());
            assert_eq!(stdout, expected, "{name} printed other sums");
        }
    }
    let medians: Vec<f64> = times
        .iter_mut()
        .map(|t| {
            t.sort();
            t[t.len() / 2].as_secs_f64() * 1e3
        })
        .collect();
    println!("pairs {points} x {rounds} ({} M pairs), median of {repeats}, interleaved:", points * points.saturating_sub(1) / 2 * rounds / 1_000_000);
    for ((name, _), ms) in cases.iter().zip(&medians) {
        let goal = if name.starts_with("gridbox run") { "  (goal <= 1.25x)" } else { "" };
        println!("  {name:<32} {ms:>8.1} ms  {:.2}x{goal}", ms / medians[0]);
    }
}
