//! What compiling a job costs, by part, in one process: the NaN rewrite, then Cranelift under
//! gridbox's switches, against Cranelift under wasmtime's defaults (what `wasmtime run -C
//! cache=n` pays) and under the old eager NaN canonicalisation.
//!
//! `cargo bench -p gridbox-core --bench compile [-- ROUNDS]` prints medians per module (the
//! probe, a Rust program with std, and the pairs loop) and ratios to the bare compile. Goal
//! (issue 15): a first `gridbox run` <= 1.2x `wasmtime run -C cache=n`, so rewrite + compile
//! <= about 1.2x the bare compile.

use std::time::{Duration, Instant};

use gridbox_core::engine::{NanCanonicalization, config_for};
use gridbox_core::nan_rewrite;
use wasmtime::{Config, Engine, Module};

#[path = "../../../tests/all/guests.rs"]
#[allow(dead_code, clippy::panic)] // Bench code: a guest that does not build stops the bench.
mod guests;

fn main() {
    let rounds: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(9);
    let bare = Engine::new(&Config::new()).expect("engine");
    let mut switches = Config::new();
    switches.consume_fuel(true).epoch_interruption(true);
    let bare_switches = Engine::new(&switches).expect("engine");
    let eager = Engine::new(&config_for(NanCanonicalization::Eager)).expect("engine");
    let observed = Engine::new(&config_for(NanCanonicalization::AtObservation)).expect("engine");
    println!("compile, median of {rounds} rounds (ms; ratio to wasmtime's defaults)");
    for (name, guest) in [("probe", guests::PROBE), ("pairs", guests::PAIRS)] {
        let module = guest.bytes();
        let mut times: [Vec<Duration>; 5] = Default::default();
        for _ in 0..rounds {
            let time = |f: &mut dyn FnMut()| {
                let start = Instant::now();
                f();
                start.elapsed()
            };
            times[0].push(time(&mut || drop(Module::new(&bare, &module).expect("compile"))));
            times[1].push(time(&mut || drop(Module::new(&bare_switches, &module).expect("compile"))));
            times[2].push(time(&mut || drop(Module::new(&eager, &module).expect("compile"))));
            let mut rewritten = Vec::new();
            times[3].push(time(&mut || rewritten = nan_rewrite::rewrite(&module).expect("rewrite")));
            times[4].push(time(&mut || drop(Module::new(&observed, &rewritten).expect("compile"))));
        }
        let [base, with_switches, eager_nans, rewrite, after] = times.map(|mut t| median(&mut t));
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let ratio = |d: Duration| ms(d) / ms(base);
        println!("{name} ({} KiB):", module.len() / 1024);
        println!("  wasmtime defaults                 {:>8.1}", ms(base));
        println!("  + fuel + epochs                   {:>8.1}  {:.2}x", ms(with_switches), ratio(with_switches));
        println!("  + eager NaNs (gridbox before)     {:>8.1}  {:.2}x", ms(eager_nans), ratio(eager_nans));
        println!("  gridbox: rewrite                  {:>8.1}  {:.2}x", ms(rewrite), ratio(rewrite));
        println!("  gridbox: compile the rewritten    {:>8.1}  {:.2}x", ms(after), ratio(after));
        println!("  gridbox: both                     {:>8.1}  {:.2}x  (goal <= 1.2x)", ms(rewrite + after), ratio(rewrite + after));
    }
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}
