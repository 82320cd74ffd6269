//! Planted faults (gridbox-compute's test-only `fault-injection` feature): a device that fails
//! mid-run is the provider's fault, never the job's outcome, and no receipt is signed for it;
//! a device that silently computes a wrong bit is caught by a replay.

use std::collections::BTreeMap;
use std::sync::Arc;

use gridbox_compute::Backend;
use gridbox_compute::backend::faults::{Fault, FaultPlan};
use gridbox_core::verify::{self, Evidence};
use gridbox_core::{Capability, Digest, Job, JobEngine, Manifest, Outcome, Policy, ProviderFault, Receipt, RunError, RunOptions, keys};

use crate::common::engine;
use crate::guests;

/// The MLP example as a job over its own data folder.
fn mlp_job() -> Job {
    let module: Arc<[u8]> = guests::MLP.bytes().into();
    let data = guests::repo_root().join("examples/mlp/data");
    let mut inputs = BTreeMap::new();
    for entry in std::fs::read_dir(&data).unwrap() {
        let entry = entry.unwrap();
        inputs.insert(entry.file_name().to_string_lossy().into_owned(), Arc::from(std::fs::read(entry.path()).unwrap()));
    }
    let mut manifest = Manifest::new(Digest::of(&module));
    manifest.capabilities = vec![Capability::Wasi, Capability::Tensor];
    manifest.inputs = inputs.iter().map(|(name, bytes)| (name.clone(), Digest::of(bytes))).collect();
    Job::new(module, manifest.resolve(&Policy::default()).unwrap(), inputs).unwrap()
}

fn faulty_engine(plan: FaultPlan) -> JobEngine {
    JobEngine::with_backend(&Policy::default(), Backend::cpu(1).with_fault(plan)).unwrap()
}

#[test]
fn a_device_failure_mid_run_is_a_provider_fault_and_no_receipt_is_signed() {
    let job = mlp_job();
    let honest = engine().run(&job, RunOptions::default()).unwrap();
    assert_eq!(honest.outcome, Outcome::Exited { code: 0 });
    let plans = [
        (0, Fault::DeviceError),
        (1, Fault::DeviceError),
        (3, Fault::DeviceError),
        (0, Fault::UploadError),
        (2, Fault::UploadError),
        (0, Fault::DownloadError),
        (4, Fault::DownloadError),
    ];
    for (at_op, fault) in plans {
        let engine = faulty_engine(FaultPlan { at_op, fault });
        // `run` gives no `JobRun` for a provider fault, so there is nothing `Receipt::sign` could sign.
        match engine.run(&job, RunOptions::default()) {
            Err(error @ RunError::ProviderFault(ProviderFault::Device { .. })) => {
                assert!(error.is_provider_fault());
                let text = gridbox_core::errors::error_chain(&error);
                assert!(text.contains("the compute device failed") && text.contains("planted device fault"), "{text}");
            }
            Ok(run) => panic!("{fault:?} at {at_op}: expected a provider fault, the job ended: {}", run.outcome),
            Err(other) => panic!("{fault:?} at {at_op}: expected a provider fault, got {other:?}"),
        }
    }
}

#[test]
fn a_silently_wrong_bit_is_signed_by_the_faulty_provider_and_caught_by_a_replay() {
    let job = mlp_job();
    let faulty = faulty_engine(FaultPlan { at_op: 2, fault: Fault::FlipBit { bit: 7 } });
    let run = faulty.run(&job, RunOptions::default()).unwrap();
    let receipt = Receipt::sign(&job, &run, &faulty.backend().name(), &keys::generate().unwrap());
    let evidence = Evidence { module: job.module().into(), inputs: job.inputs().clone(), artifacts: None, requested: None, trace: None };
    let report = verify::verify(engine(), &receipt, &evidence, verify::VerifyOptions::default()).unwrap();
    let mismatch = report.first_mismatch().expect("the replay disagrees");
    assert!(["outputs", "stdout", "trace.root"].iter().any(|field| mismatch.field.starts_with(field)), "{mismatch:?}");
    assert!(report.checks.iter().any(|check| check.field == "trace.root" && !check.ok), "the trace pins the wrong op");
}
