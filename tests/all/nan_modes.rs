//! The NaN rewrite changes nothing a job can see: every test program gives the same run (outcome,
//! fuel, stdout, stderr, outputs, trace) with NaNs canonicalised where observed (the default
//! engine) and with wasmtime's eager canonicalisation, including runs cut short by the fuel
//! limit at many points. Generated float programs: crates/gridbox-core/tests/nan_differential.rs.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use gridbox_compute::Backend;
use gridbox_core::engine::NanCanonicalization;
use gridbox_core::{Capability, Digest, Job, JobEngine, JobRun, LimitKind, Manifest, Outcome, Policy, RunOptions};

use crate::common::engine;
use crate::guests::{self, Guest};

fn eager_engine() -> &'static JobEngine {
    static ENGINE: OnceLock<JobEngine> = OnceLock::new();
    ENGINE.get_or_init(|| JobEngine::with_nan_canonicalization(&Policy::default(), Backend::cpu(1), NanCanonicalization::Eager).expect("engine"))
}

fn job(guest: Guest, args: &[&str], fuel: Option<u64>) -> Job {
    let module: Arc<[u8]> = std::fs::read(guest.path()).expect("guest").into();
    let mut manifest = Manifest::new(Digest::of(&module));
    manifest.args = args.iter().map(|a| a.to_string()).collect();
    manifest.capabilities = vec![Capability::Wasi, Capability::Tensor];
    if let Some(fuel) = fuel {
        manifest.limits.set(LimitKind::Fuel, fuel);
    }
    Job::new(module, manifest.resolve(&Policy::default()).expect("resolves"), BTreeMap::new()).expect("job")
}

/// Runs the job on both engines and requires the same run; returns it.
fn same_both_ways(guest: Guest, args: &[&str], fuel: Option<u64>) -> JobRun {
    let job = job(guest, args, fuel);
    let observed = engine().run(&job, RunOptions::default()).expect("runs");
    let eager = eager_engine().run(&job, RunOptions::default()).expect("runs");
    let what = format!("{args:?} with fuel {fuel:?}");
    assert_eq!(observed.outcome, eager.outcome, "{what}");
    assert_eq!(observed.fuel_used, eager.fuel_used, "{what}");
    assert_eq!(observed.stdout, eager.stdout, "{what}");
    assert_eq!(observed.stderr, eager.stderr, "{what}");
    assert_eq!(observed.outputs, eager.outputs, "{what}");
    assert_eq!(observed.trace.root(), eager.trace.root(), "{what}");
    assert_eq!(observed.trace.len(), eager.trace.len(), "{what}");
    observed
}

#[test]
fn every_test_program_runs_the_same_with_nans_canonicalised_eagerly_or_where_observed() {
    let probe: &[&[&str]] = &[
        &["hello"],
        &["floats", "300"],
        &["nan-bits"],
        &["report"],
        &["work", "3000"],
        &["exit", "3"],
        &["trap"],
        &["fs-ops"],
        &["write-files", "3", "100"],
        &["panic", "at the disco"],
    ];
    for args in probe {
        same_both_ways(guests::PROBE, args, None);
    }
    for args in [&["ops"][..], &["edges"], &["errors"], &["chain", "20"]] {
        same_both_ways(guests::TENSOR_PROBE, args, None);
    }
    let pairs = same_both_ways(guests::PAIRS, &["120", "2"], None);
    assert!(String::from_utf8_lossy(&pairs.stdout).starts_with("pairs 120 x 2: potential"));
    assert_eq!(engine().eager_fallbacks(), 0, "every test program went through the rewrite");
}

#[test]
fn runs_stopped_by_the_fuel_limit_stop_at_the_same_point_either_way() {
    let full = same_both_ways(guests::PAIRS, &["60", "2"], None);
    assert_eq!(full.outcome, Outcome::Exited { code: 0 });
    // Limits all through the run: during start-up, the loops, the final print.
    let mut stopped = 0;
    for step in 1..=24u64 {
        let fuel = full.fuel_used * step / 25 + step;
        let run = same_both_ways(guests::PAIRS, &["60", "2"], Some(fuel));
        stopped += usize::from(matches!(run.outcome, Outcome::LimitExceeded { limit: LimitKind::Fuel, .. }));
    }
    assert!(stopped >= 20, "most limits stop the run ({stopped} of 24 did)");
    for fuel in [1, 2, 100, 1_000, 10_000] {
        same_both_ways(guests::PROBE, &["floats", "300"], Some(fuel));
    }
}
