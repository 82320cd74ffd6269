//! Differential test of NaN canonicalisation at observation (`nan_rewrite`) against wasmtime's
//! eager canonicalisation: every module must run to the same receipt in both modes (outcome,
//! fuel used, stdout, stderr, outputs), at full fuel and at fuel limits that stop it midway.
//!
//! Modules are generated float programs (`nan_differential/`: odd NaN payloads and signs from
//! constants, data and reinterprets; arithmetic that makes NaNs; sign ops; every way a value
//! moves: locals, tee, select, blocks, branches, loop and block params, calls, indirect and
//! tail calls, globals; SIMD; every store width; bulk memory; nops; dead code), plus
//! hand-written cases whose EAGER bits are also checked against the spec.
//!
//! To show the programs can tell NaN bits apart, each is also run on a bare wasmtime with no
//! canonicalisation at all, which must differ from EAGER for some of them.
//!
//! A failure prints the seed and the module; `GRIDBOX_NAN_DIFF_SEED=<seed>` runs that program
//! alone, `GRIDBOX_NAN_DIFF_CASES=<n>` runs more programs than the default, and
//! `GRIDBOX_NAN_DIFF_DUMP=<folder>` writes each program's WAT there.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

#[path = "nan_differential/expr.rs"]
mod expr;
#[path = "nan_differential/fixed.rs"]
mod fixed;
#[path = "nan_differential/gen.rs"]
mod r#gen;
#[path = "nan_differential/module.rs"]
mod module;
#[path = "shared/rng.rs"]
mod rng;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use gridbox_compute::Backend;
use gridbox_core::engine::{NanCanonicalization, deterministic_config};
use gridbox_core::{Capability, Digest, Job, JobEngine, Manifest, Outcome, Policy, RunOptions};

const CASES: u64 = 300;
/// Fuel for a full run: far more than any program needs.
const FUEL: u64 = 50_000_000;

/// What a run shows that a receipt holds (or the kind of error that refused the job).
#[derive(Debug, PartialEq, Eq, Clone)]
enum Seen {
    Ran { outcome: Outcome, fuel_used: u64, stdout: Vec<u8>, stderr: Vec<u8>, outputs: BTreeMap<String, Vec<u8>> },
    Refused(String),
}

impl Seen {
    fn stdout(&self) -> &[u8] {
        match self {
            Seen::Ran { stdout, .. } => stdout,
            Seen::Refused(_) => &[],
        }
    }

    fn fuel_used(&self) -> u64 {
        match self {
            Seen::Ran { fuel_used, .. } => *fuel_used,
            Seen::Refused(_) => 0,
        }
    }
}

struct Sides {
    policy: Policy,
    eager: JobEngine,
    lazy: JobEngine,
    bare: wasmtime::Engine,
}

impl Sides {
    fn new() -> Self {
        let mut policy = Policy::default();
        policy.max.memory_bytes = Some(1 << 20);
        policy.max.table_elements = Some(1000);
        let engine = |mode| JobEngine::with_nan_canonicalization(&policy, Backend::cpu(1), mode).unwrap();
        let mut bare = deterministic_config();
        bare.cranelift_nan_canonicalization(false);
        Sides {
            eager: engine(NanCanonicalization::Eager),
            lazy: engine(NanCanonicalization::AtObservation),
            bare: wasmtime::Engine::new(&bare).unwrap(),
            policy,
        }
    }

    fn run(&self, engine: &JobEngine, module: &Arc<[u8]>, fuel: u64) -> Seen {
        let mut manifest = Manifest::new(Digest::of(module));
        manifest.limits.fuel = Some(fuel);
        let job = Job::new(module.clone(), manifest.resolve(&self.policy).unwrap(), BTreeMap::new()).unwrap();
        match engine.run(&job, RunOptions::default()) {
            Ok(run) => Seen::Ran { outcome: run.outcome, fuel_used: run.fuel_used, stdout: run.stdout, stderr: run.stderr, outputs: run.outputs },
            // The two sides word errors differently; what kind of refusal it is must agree.
            Err(e) => Seen::Refused(format!("{e:?}").split(['(', ' ', '{']).next().unwrap_or_default().to_string()),
        }
    }

    /// Whether the engine runs tail calls.
    fn tail_calls(&self) -> bool {
        let module = wat::parse_str("(module (memory (export \"memory\") 1) (func $f) (func (export \"_start\") (return_call $f)))").unwrap();
        self.eager.prepare(&module, &[Capability::Wasi], &BTreeSet::new()).is_ok()
    }

    /// stdout on wasmtime with no canonicalisation at all (and a minimal fd_write), or None if
    /// it did not run to the end.
    fn bare_stdout(&self, module: &[u8]) -> Option<Vec<u8>> {
        use wasmtime::{Caller, Extern, Linker, Module, Store};
        let module = Module::new(&self.bare, module).ok()?;
        let mut linker: Linker<Vec<u8>> = Linker::new(&self.bare);
        linker
            .func_wrap("wasi_snapshot_preview1", "fd_write", |mut caller: Caller<'_, Vec<u8>>, _fd: i32, iov: i32, count: i32, nwritten: i32| -> i32 {
                let Some(Extern::Memory(memory)) = caller.get_export("memory") else { return 8 };
                let mut total = 0u32;
                for i in 0..count as usize {
                    let at = iov as usize + 8 * i;
                    let word = |m: &[u8], at: usize| u32::from_le_bytes(m[at..at + 4].try_into().unwrap()) as usize;
                    let (base, len) = (word(memory.data(&caller), at), word(memory.data(&caller), at + 4));
                    let bytes = memory.data(&caller)[base..base + len].to_vec();
                    caller.data_mut().extend_from_slice(&bytes);
                    total += len as u32;
                }
                memory.data_mut(&mut caller)[nwritten as usize..nwritten as usize + 4].copy_from_slice(&total.to_le_bytes());
                0
            })
            .ok()?;
        linker.func_wrap("wasi_snapshot_preview1", "proc_exit", |_: i32| -> wasmtime::Result<()> { Err(wasmtime::Error::msg("exit")) }).ok()?;
        let mut store = Store::new(&self.bare, Vec::new());
        store.set_fuel(FUEL).ok()?;
        store.set_epoch_deadline(u64::MAX / 2);
        let instance = linker.instantiate(&mut store, &module).ok()?;
        let start = instance.get_typed_func::<(), ()>(&mut store, "_start").ok()?;
        let _ = start.call(&mut store, ());
        Some(store.into_data())
    }
}

/// Tallies over a run of the test.
#[derive(Default, Debug)]
struct Counts {
    programs: u64,
    runs: u64,
    sweeps: u64,
    canonical_nans: usize,
    odd_nans: usize,
    traps: u64,
    fuel_stops: u64,
    bare_differs: u64,
}

/// Runs `module` at `fuel` on both sides; the mismatch, described, if any.
fn compare(sides: &Sides, module: &Arc<[u8]>, fuel: u64, counts: &mut Counts) -> Result<Seen, String> {
    let eager = sides.run(&sides.eager, module, fuel);
    let lazy = sides.run(&sides.lazy, module, fuel);
    counts.runs += 1;
    if let Seen::Ran { outcome, .. } = &eager {
        match outcome {
            Outcome::Trapped { .. } => counts.traps += 1,
            Outcome::LimitExceeded { .. } => counts.fuel_stops += 1,
            _ => {}
        }
    }
    if eager == lazy {
        Ok(eager)
    } else {
        Err(format!("at fuel {fuel}:\n  EAGER:          {}\n  AT_OBSERVATION: {}", describe(&eager, &lazy), describe(&lazy, &eager)))
    }
}

/// `seen`, with its stdout shown from the first byte where it differs from `other`'s.
fn describe(seen: &Seen, other: &Seen) -> String {
    match seen {
        Seen::Refused(e) => format!("refused: {e}"),
        Seen::Ran { outcome, fuel_used, stdout, stderr, outputs } => {
            let at = stdout.iter().zip(other.stdout()).position(|(a, b)| a != b).unwrap_or(stdout.len().min(other.stdout().len()));
            let from = at & !15;
            let shown: String = stdout[from.min(stdout.len())..(from + 32).min(stdout.len())].iter().map(|b| format!("{b:02x}")).collect();
            format!(
                "{outcome}, fuel {fuel_used}, stdout {} bytes, first difference at byte {at} (printed address {}): [{from}..] {shown}, stderr {:?}, {} outputs",
                stdout.len(),
                r#gen::REGION_START as usize + at % r#gen::REGION_LEN as usize,
                String::from_utf8_lossy(stderr),
                outputs.len()
            )
        }
    }
}

/// Fuel limits that stop a run needing `need` at many points, and just before and after the end.
fn sweep(need: u64, points: u64) -> Vec<u64> {
    if need <= points {
        return (1..=need + 1).collect();
    }
    let mut limits: BTreeSet<u64> = (1..=8).collect();
    limits.extend((1..points).map(|k| need * k / points));
    limits.extend([need - 1, need, need + 1]);
    limits.into_iter().collect()
}

#[test]
fn generated_float_programs_run_the_same_eager_and_at_observation() {
    let sides = Sides::new();
    let tail_calls = sides.tail_calls();
    let seeds: Vec<u64> = match std::env::var("GRIDBOX_NAN_DIFF_SEED") {
        Ok(seed) => vec![seed.parse().expect("GRIDBOX_NAN_DIFF_SEED is a number")],
        Err(_) => (0..std::env::var("GRIDBOX_NAN_DIFF_CASES").map_or(CASES, |n| n.parse().expect("GRIDBOX_NAN_DIFF_CASES is a number"))).collect(),
    };
    let mut counts = Counts::default();
    let mut failures = Vec::new();
    for &seed in &seeds {
        let program = module::program(seed, tail_calls);
        let bytes: Arc<[u8]> = match wat::parse_str(&program.wat) {
            Ok(bytes) => bytes.into(),
            Err(e) => panic!("seed {seed}: the generator made invalid WAT: {e}\n{}", program.wat),
        };
        counts.programs += 1;
        if let Some(dir) = std::env::var_os("GRIDBOX_NAN_DIFF_DUMP") {
            std::fs::write(std::path::Path::new(&dir).join(format!("{seed}.wat")), &program.wat).unwrap();
        }
        let full = match compare(&sides, &bytes, FUEL, &mut counts) {
            Ok(seen) => seen,
            Err(mismatch) => {
                failures.push(format!("seed {seed} {mismatch}\n{}", program.wat));
                continue;
            }
        };
        if let Seen::Refused(e) = &full {
            let why = sides.eager.prepare(&bytes, &[Capability::Wasi], &BTreeSet::new()).err().map(|e| format!("{e:?}"));
            panic!("seed {seed}: the generator made a module both sides refuse ({e}: {why:?})\n{}", program.wat);
        }
        let stdout = full.stdout();
        let region = r#gen::REGION_LEN as usize;
        if stdout.len() >= region {
            let last = &stdout[stdout.len() / region * region - region..stdout.len() / region * region];
            let (canonical, odd) = module::count_nans(last, &program.slots);
            counts.canonical_nans += canonical;
            counts.odd_nans += odd;
        }
        if sides.bare_stdout(&bytes).is_some_and(|bare| bare != stdout) {
            counts.bare_differs += 1;
        }
        if seed % 3 == 0 {
            counts.sweeps += 1;
            for fuel in sweep(full.fuel_used(), 24) {
                if let Err(mismatch) = compare(&sides, &bytes, fuel, &mut counts) {
                    failures.push(format!("seed {seed} (fuel sweep) {mismatch}\n{}", program.wat));
                    break;
                }
            }
        }
    }
    println!("{counts:?}");
    if !failures.is_empty() {
        for failure in failures.iter().take(5) {
            println!("\n==== MISMATCH ====\n{failure}");
        }
        let seeds: Vec<&str> = failures.iter().map(|f| f.split(' ').nth(1).unwrap_or("?")).collect();
        panic!("{} of {} programs differ between EAGER and AT_OBSERVATION (seeds {})", failures.len(), counts.programs, seeds.join(", "));
    }
    if seeds.len() as u64 >= CASES {
        // The test has teeth only if the programs store NaNs of both kinds, and if a run with no
        // canonicalisation at all gives other bytes.
        assert!(counts.odd_nans > 0 && counts.canonical_nans > 0, "the programs stored too few NaNs: {counts:?}");
        assert!(counts.bare_differs > 0, "no program told canonical NaNs from the CPU's own: {counts:?}");
        assert!(counts.sweeps > 0 && counts.fuel_stops > 0 && counts.traps > 0, "{counts:?}");
    }
    // A module the rewrite gave up on would run eager on both sides and prove nothing.
    assert_eq!(sides.lazy.eager_fallbacks(), 0, "every program went through the rewrite");
}

#[test]
fn hand_written_cases_run_the_same_and_as_the_spec_says() {
    let sides = Sides::new();
    let mut counts = Counts::default();
    let mut failures = Vec::new();
    for (name, wat, expected) in fixed::cases(sides.tail_calls()) {
        let bytes: Arc<[u8]> = wat::parse_str(&wat).unwrap_or_else(|e| panic!("{name}: {e}")).into();
        let full = match compare(&sides, &bytes, FUEL, &mut counts) {
            Ok(seen) => seen,
            Err(mismatch) => {
                failures.push(format!("{name}: {mismatch}\n{wat}"));
                continue;
            }
        };
        let Seen::Ran { stdout, .. } = &full else { panic!("{name}: refused: {full:?}") };
        // The last snapshot of 1024..1280 that `$flush` printed.
        let last = &stdout[stdout.len().saturating_sub(256)..];
        for &(addr, width, bits) in &expected {
            let at = (addr - 1024) as usize;
            let mut got = 0u64;
            for (i, b) in last[at..at + width as usize].iter().enumerate() {
                got |= u64::from(*b) << (8 * i);
            }
            if got != bits {
                failures.push(format!("{name}: EAGER stored {got:#x} at {addr}, the spec says {bits:#x}"));
            }
        }
        for fuel in sweep(full.fuel_used(), 400) {
            if let Err(mismatch) = compare(&sides, &bytes, fuel, &mut counts) {
                failures.push(format!("{name} (fuel sweep): {mismatch}\n{wat}"));
                break;
            }
        }
    }
    println!("{counts:?}");
    assert!(failures.is_empty(), "{} failures:\n\n{}", failures.len(), failures.join("\n\n"));
    assert_eq!(sides.lazy.eager_fallbacks(), 0, "every case went through the rewrite");
}

/// A function at wasm's limit of 50,000 locals: the rewrite's scratch locals would take it past
/// the limit, so AT_OBSERVATION runs the module as it is on its eager fallback engine, with the
/// same results.
#[test]
fn a_function_at_the_locals_limit_runs_in_both_modes() {
    let wat = format!(
        "(module (memory (export \"memory\") 1) (func (export \"_start\") (local {}) (local.set 0 (f32.div (f32.const 0) (f32.const 0))) (f32.store (i32.const 0) (local.get 0))))",
        "f32 ".repeat(50_000)
    );
    runs_the_same_on_the_fallback(&wat::parse_str(&wat).unwrap());
}

/// Runs `module` both ways and requires the same run, with AT_OBSERVATION on its fallback engine.
fn runs_the_same_on_the_fallback(module: &[u8]) {
    let sides = Sides::new();
    if let Err(mismatch) = compare(&sides, &Arc::from(module), FUEL, &mut Counts::default()) {
        panic!("{mismatch}");
    }
    assert_eq!(sides.lazy.eager_fallbacks(), 1, "the module ran on the fallback engine");
}

/// A function that is valid as it is but past wasm's limit on body size once rewritten
/// (canonicalising before each `neg` adds about 15 bytes to every two): AT_OBSERVATION runs the
/// module as it is on its eager fallback engine, with the same results.
#[test]
fn a_function_the_rewrite_would_make_too_large_runs_in_both_modes() {
    let wat = format!(
        "(module (memory (export \"memory\") 1) (func (export \"_start\") (f32.const -1) {} (f32.store (i32.const 0) (f32.div (f32.const 0) (f32.const 0))) (drop)))",
        "f32.sqrt f32.neg ".repeat(460_000)
    );
    let bytes = wat::parse_str(&wat).unwrap();
    assert!(gridbox_core::nan_rewrite::rewrite(&bytes).unwrap().len() > 7_654_321, "the rewritten body passes the limit");
    runs_the_same_on_the_fallback(&bytes);
}
