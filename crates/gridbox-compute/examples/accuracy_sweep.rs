//! Exhaustive accuracy sweep of gridbox's transcendental functions (`gridbox_compute::math`): every f32 bit pattern
//! (2^32, NaNs included), each result compared with the correctly rounded value of the exact function. Prints, per
//! function and per range that spec/determinism.md makes a claim for, the maximum error in ulp with its inputs, and how
//! many inputs lie at each error level and where. spec/determinism.md's "Max error" figures are this program's output.
//!
//! Run with `cargo run --release -p gridbox-compute --example accuracy_sweep`. Optional arguments after `--`: function
//! names (default: exp log tanh sigmoid gelu) and `--bits LO..HI` (hex, half-open) to sweep only those bit patterns, e.g.
//! to time a slice. Uses every core; the whole sweep takes about 16 core-minutes (8 minutes on 2 cores), gelu half of it.
//!
//! The reference (src/math/reference.rs, shared with math's unit tests) is the exact function rounded to f32: f64 where
//! that decides the rounding, double-double where the f64 value lies within 2^-10 ulp of a midpoint.
#![allow(missing_docs)]

#[path = "../src/math/reference.rs"]
mod reference;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use gridbox_compute::math;

/// A function under test, its correctly rounded reference, and the input ranges its accuracy is stated for.
struct Function {
    name: &'static str,
    ours: fn(f32) -> f32,
    reference: fn(f32) -> f32,
    ranges: &'static [Range],
}

/// A named part of the domain (NaN inputs belong to none: they are checked for the canonical NaN instead).
struct Range {
    name: &'static str,
    contains: fn(f32) -> bool,
}

const ALL: &[Range] = &[Range { name: "every non-NaN x", contains: |_| true }];

const FUNCTIONS: &[Function] = &[
    Function { name: "exp", ours: math::exp, reference: reference::exp, ranges: ALL },
    Function { name: "log", ours: math::log, reference: reference::log, ranges: ALL },
    Function { name: "tanh", ours: math::tanh, reference: reference::tanh, ranges: ALL },
    Function { name: "sigmoid", ours: math::sigmoid, reference: reference::sigmoid, ranges: ALL },
    Function { name: "sin", ours: math::sin, reference: reference::sin, ranges: ALL },
    Function { name: "cos", ours: math::cos, reference: reference::cos, ranges: ALL },
    Function {
        name: "silu",
        ours: math::silu,
        reference: reference::silu,
        ranges: &[Range { name: "x >= -87", contains: |x| x >= -87.0 }, Range { name: "x < -87", contains: |x| x < -87.0 }],
    },
    Function {
        name: "gelu",
        ours: math::gelu,
        reference: reference::gelu,
        ranges: &[Range { name: "x >= -9.5", contains: |x| x >= -9.5 }, Range { name: "x < -9.5", contains: |x| x < -9.5 }],
    },
];

/// Errors of this many ulp or more share the last histogram bucket.
const LEVELS: usize = 64;

/// Inputs at one error level: how many, and the least and greatest of them (in value order).
#[derive(Clone, Copy)]
struct Level {
    count: u64,
    least: f32,
    greatest: f32,
    /// One input at this level, with our result and the correct one: the one with the lowest bit pattern.
    example: (u32, f32, f32),
}

impl Level {
    const EMPTY: Level = Level { count: 0, least: f32::INFINITY, greatest: f32::NEG_INFINITY, example: (u32::MAX, 0.0, 0.0) };

    fn add(&mut self, x: f32, ours: f32, want: f32) {
        self.count += 1;
        self.least = self.least.min(x);
        self.greatest = self.greatest.max(x);
        if x.to_bits() < self.example.0 {
            self.example = (x.to_bits(), ours, want);
        }
    }

    fn merge(&mut self, o: &Level) {
        self.count += o.count;
        self.least = self.least.min(o.least);
        self.greatest = self.greatest.max(o.greatest);
        if o.example.0 < self.example.0 {
            self.example = o.example;
        }
    }
}

/// One range's histogram of errors, plus the inputs where exactly one of ours and the reference is NaN (or ours is a NaN
/// other than the canonical one): those have no ulp distance.
#[derive(Clone)]
struct Stats {
    levels: [Level; LEVELS],
    nan_mismatch: Level,
    /// The largest `|ours - correct|` (finite results only) and the input with the lowest bit pattern where it occurs.
    max_abs: (f64, u32),
}

impl Stats {
    fn new() -> Stats {
        Stats { levels: [Level::EMPTY; LEVELS], nan_mismatch: Level::EMPTY, max_abs: (0.0, u32::MAX) }
    }

    fn merge(&mut self, o: &Stats) {
        self.levels.iter_mut().zip(&o.levels).for_each(|(a, b)| a.merge(b));
        self.nan_mismatch.merge(&o.nan_mismatch);
        self.add_abs(o.max_abs.0, o.max_abs.1);
    }

    fn add_abs(&mut self, error: f64, bits: u32) {
        if error > self.max_abs.0 || (error == self.max_abs.0 && bits < self.max_abs.1) {
            self.max_abs = (error, bits);
        }
    }
}

/// Sweeps `f` over the bit patterns `lo..hi` on every core: per range of `f`, the statistics; and the NaN inputs whose
/// result is not the canonical NaN.
fn sweep(f: &Function, lo: u64, hi: u64) -> (Vec<Stats>, Level) {
    const CHUNK: u64 = 1 << 20;
    let next = AtomicU64::new(lo);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let results: Vec<(Vec<Stats>, Level)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut stats = vec![Stats::new(); f.ranges.len()];
                    let mut bad_nan = Level::EMPTY;
                    loop {
                        let start = next.fetch_add(CHUNK, Ordering::Relaxed);
                        if start >= hi {
                            return (stats, bad_nan);
                        }
                        for bits in start..(start + CHUNK).min(hi) {
                            let x = f32::from_bits(bits as u32);
                            let ours = (f.ours)(x);
                            if x.is_nan() {
                                if ours.to_bits() != math::CANONICAL_NAN.to_bits() {
                                    bad_nan.add(x, ours, math::CANONICAL_NAN);
                                }
                                continue;
                            }
                            let want = (f.reference)(x);
                            for (range, s) in f.ranges.iter().zip(&mut stats) {
                                if !(range.contains)(x) {
                                    continue;
                                }
                                if want.is_nan() || ours.is_nan() {
                                    if ours.to_bits() == math::CANONICAL_NAN.to_bits() && want.is_nan() {
                                        s.levels[0].add(x, ours, want);
                                    } else {
                                        s.nan_mismatch.add(x, ours, want);
                                    }
                                } else {
                                    let error = reference::ulps(ours, want).min(LEVELS as u64 - 1) as usize;
                                    s.levels[error].add(x, ours, want);
                                    if ours.is_finite() && want.is_finite() {
                                        s.add_abs((f64::from(ours) - f64::from(want)).abs(), x.to_bits());
                                    }
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("a sweep thread panicked")).collect()
    });
    let mut stats = vec![Stats::new(); f.ranges.len()];
    let mut bad_nan = Level::EMPTY;
    for (s, b) in &results {
        stats.iter_mut().zip(s).for_each(|(a, b)| a.merge(b));
        bad_nan.merge(b);
    }
    (stats, bad_nan)
}

fn show(x: f32) -> String {
    format!("{x:e} (0x{:08X})", x.to_bits())
}

fn report(f: &Function, stats: &[Stats], bad_nan: &Level, nan_inputs: u64) {
    println!("  NaN inputs: {nan_inputs}, of which {} give something other than the canonical NaN", bad_nan.count);
    for (range, s) in f.ranges.iter().zip(stats) {
        let inputs: u64 = s.levels.iter().map(|l| l.count).sum::<u64>() + s.nan_mismatch.count;
        let Some(worst) = s.levels.iter().rposition(|l| l.count > 0) else {
            println!("  {}: no inputs", range.name);
            continue;
        };
        let w = &s.levels[worst];
        let at_least = if worst == LEVELS - 1 { " or more" } else { "" };
        println!(
            "  {}: {inputs} inputs, max error {worst}{at_least} ulp at {} inputs in [{:e}, {:e}]; e.g. x = {}: ours {}, correctly rounded {}",
            range.name,
            w.count,
            w.least,
            w.greatest,
            show(f32::from_bits(w.example.0)),
            show(w.example.1),
            show(w.example.2),
        );
        let (abs, at) = s.max_abs;
        if abs > 0.0 {
            println!("    max absolute error {abs:e} (2^{:.2}) at x = {}", abs.log2(), show(f32::from_bits(at)));
        }
        for (error, l) in s.levels.iter().enumerate().filter(|(_, l)| l.count > 0) {
            println!("    {error:>2} ulp: {:>10} inputs, x in [{:e}, {:e}]", l.count, l.least, l.greatest);
        }
        if s.nan_mismatch.count > 0 {
            let m = &s.nan_mismatch;
            println!(
                "    NaN where the other is not: {} inputs in [{:e}, {:e}], e.g. x = {}: ours {}, correct {}",
                m.count,
                m.least,
                m.greatest,
                show(f32::from_bits(m.example.0)),
                show(m.example.1),
                show(m.example.2)
            );
        }
    }
}

/// Parses `LO..HI` (hex, `0x` optional): the half-open range of bit patterns to sweep.
fn parse_bits(arg: &str) -> Option<(u64, u64)> {
    let (lo, hi) = arg.split_once("..")?;
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x").trim_start_matches("0X"), 16).ok();
    let (lo, hi) = (hex(lo)?, hex(hi)?);
    (lo <= hi && hi <= 1 << 32).then_some((lo, hi))
}

fn main() {
    let mut names = Vec::new();
    let (mut lo, mut hi) = (0u64, 1u64 << 32);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--bits" {
            let Some(range) = args.next().as_deref().and_then(parse_bits) else {
                eprintln!("--bits takes LO..HI in hex, e.g. --bits 0xC0000000..0xC0800000");
                std::process::exit(2);
            };
            (lo, hi) = range;
        } else if FUNCTIONS.iter().any(|f| f.name == arg) {
            names.push(arg);
        } else {
            eprintln!(
                "unknown argument {arg:?}: expected function names ({}) or --bits LO..HI",
                FUNCTIONS.iter().map(|f| f.name).collect::<Vec<_>>().join(" ")
            );
            std::process::exit(2);
        }
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("bit patterns 0x{lo:08X}..0x{hi:X}, {threads} threads");
    println!(
        "gelu's reference constants (spec/determinism.md): K2 = 0x{:08X}, K1 = {:e} (0x{:08X})",
        reference::GELU_K2.to_bits(),
        reference::GELU_K1,
        reference::GELU_K1.to_bits()
    );
    // The case of issue 11: 4 ulp, just below a power of two.
    let x = f32::from_bits(0xC078_CB35);
    let (ours, want) = (math::gelu(x), reference::gelu(x));
    println!("gelu({}) = {}, correctly rounded {}: {} ulp", show(x), show(ours), show(want), reference::ulps(ours, want));

    let total = Instant::now();
    for f in FUNCTIONS.iter().filter(|f| names.is_empty() || names.iter().any(|n| n == f.name)) {
        let start = Instant::now();
        let (refined_before, wrong_before) = reference::refinements();
        let (stats, bad_nan) = sweep(f, lo, hi);
        let (refined, wrong) = reference::refinements();
        // The ranges cover every non-NaN input once (checked here), so the rest are NaNs.
        let covered: u64 = stats.iter().map(|s| s.levels.iter().map(|l| l.count).sum::<u64>() + s.nan_mismatch.count).sum();
        let nan_inputs = (hi - lo) - covered;
        assert_eq!(nan_inputs, (lo..hi).filter(|&b| f32::from_bits(b as u32).is_nan()).count() as u64, "{}'s ranges overlap", f.name);
        println!(
            "{}: {:.1} s; {} references decided in double-double, {} of them where f64 alone rounds wrongly",
            f.name,
            start.elapsed().as_secs_f64(),
            refined - refined_before,
            wrong - wrong_before
        );
        report(f, &stats, &bad_nan, nan_inputs);
    }
    println!("total {:.1} s", total.elapsed().as_secs_f64());
}
