//! Disputes (spec/trace.md, "Disputes"): `gridbox dispute` over two receipts of the tensor
//! probe's `chain 5000` (10,002 bridge calls), one honest and one from a provider that flipped a
//! bit of one op's output, finds that op by bisection within `ceil(log2 n) + 1` chain states and
//! names the faulty receipt after recomputing one op. Honest receipts of two signers are no
//! dispute, a log that does not match its own receipt loses, receipts of two manifests are
//! refused, and a difference the trace cannot pin on one op is settled only by a replay.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use ed25519_dalek::SigningKey;
use gridbox_compute::backend::faults::{Fault, FaultPlan};
use gridbox_compute::{Backend, TraceChain, TraceEntry, merkle, trace_log};
use gridbox_core::kept_tensors::TensorDir;
use gridbox_core::{Capability, Digest, Job, JobEngine, Manifest, Policy, Receipt, RunOptions, artifacts, keys, trace_file};

use crate::common::*;
use crate::guests;

/// `chain N` records a create, N x (matmul, tanh) and a read: 2N + 2 entries, 2N ops.
const N: usize = 5000;
const ENTRIES: u64 = 2 * N as u64 + 2;

fn chain_job(n: usize) -> Job {
    let module: Arc<[u8]> = std::fs::read(guests::TENSOR_PROBE.path()).unwrap().into();
    let mut manifest = Manifest::new(Digest::of(&module));
    manifest.args = vec!["chain".into(), n.to_string()];
    manifest.capabilities = vec![Capability::Wasi, Capability::Tensor];
    Job::new(module, manifest.resolve(&Policy::default()).unwrap(), Default::default()).unwrap()
}

/// Runs `job` on `engine` (its log kept, its tensors in `tensors` if given), signs with `key` and
/// writes receipt.json and trace.jsonl to `out`: the receipt's path.
fn run_into(engine: &JobEngine, job: &Job, key: &SigningKey, out: &Path, tensors: Option<&Path>) -> PathBuf {
    let keeper = tensors.map(|dir| Arc::new(TensorDir::create(dir).unwrap()));
    let keep_tensors = keeper.clone().map(|k| k as Arc<dyn gridbox_compute::TensorKeeper>);
    let run = engine.run(job, RunOptions { keep_trace_log: true, keep_tensors, ..RunOptions::default() }).unwrap();
    if let Some(keeper) = keeper {
        keeper.finish().unwrap();
    }
    let receipt = Receipt::sign(job, &run, &engine.backend().name(), key);
    artifacts::write(out, &run, &receipt).unwrap();
    out.join("receipt.json")
}

/// The honest run of `chain 5000`, made once for every test here (key 1), with its tensors.
struct Honest {
    _work: tempfile::TempDir,
    dir: PathBuf,
    receipt: PathBuf,
    tensors: PathBuf,
}

fn honest() -> &'static Honest {
    static HONEST: OnceLock<Honest> = OnceLock::new();
    HONEST.get_or_init(|| {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().to_path_buf();
        let tensors = dir.join("honest.tensors");
        let receipt = run_into(engine(), &chain_job(N), &keys::generate().unwrap(), &dir.join("honest"), Some(&tensors));
        Honest { _work: work, dir, receipt, tensors }
    })
}

/// `gridbox dispute A B --json` with `extra` flags: exit status and the verdict.
fn dispute(a: &Path, b: &Path, extra: &[&dyn AsRef<std::ffi::OsStr>]) -> (i32, serde_json::Value, String) {
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"dispute", &a, &b, &"--json"];
    args.extend_from_slice(extra);
    let output = gridbox_output(&args);
    let json = serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
    (output.status.code().unwrap(), json, stderr(&output))
}

fn entries(receipt: &Path) -> Vec<TraceEntry> {
    trace_file::decode(&std::fs::read(receipt.with_file_name("trace.jsonl")).unwrap()).unwrap()
}

/// `ceil(log2 n) + 1`.
fn bound(n: u64) -> u64 {
    u64::from(u64::BITS - (n - 1).leading_zeros()) + 1
}

#[test]
fn a_flipped_bit_anywhere_in_10000_calls_is_found_by_bisection_and_one_op() {
    let honest = honest();
    let job = chain_job(N);
    let ops = 2 * N as u64;
    // A seeded pick (splitmix64 of a fixed seed), so a failure names a K that can be rerun.
    let mut z = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(12);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    let random = (z ^ (z >> 31)) % ops;
    let faulty_key = keys::generate().unwrap();
    for (at_op, swap) in [(0, false), (ops / 2, false), (ops - 1, false), (random, true)] {
        let engine = JobEngine::with_backend(&Policy::default(), Backend::cpu(1).with_fault(FaultPlan { at_op, fault: Fault::FlipBit { bit: 3 } })).unwrap();
        let faulty = run_into(&engine, &job, &faulty_key, &honest.dir.join(format!("faulty-{at_op}")), None);
        // Entry 0 is the create: op `at_op` is entry `at_op + 1`.
        let k = at_op + 1;
        let (a, b, wrong) = if swap { (&faulty, &honest.receipt, "A") } else { (&honest.receipt, &faulty, "B") };
        let (code, json, err) = dispute(a, b, &[&"--tensors-a", &honest.tensors, &"--tensors-b", &honest.tensors]);
        assert_eq!((code, json["wrong"].as_str(), json["index"].as_u64()), (1, Some(wrong), Some(k)), "op {at_op}: {json} {err}");
        assert_eq!(json["op"], entries(&honest.receipt)[k as usize].link.op.as_str(), "{json}");
        assert_eq!((json["settled_by"].as_str(), json["ops_recomputed"].as_u64(), json["replayed"].as_bool()), (Some("op"), Some(1), Some(false)));
        assert_eq!((json["calls"].as_u64(), json["bound"].as_u64()), (Some(ENTRIES), Some(bound(ENTRIES))), "{json}");
        let compared = json["chain_states_compared"].as_u64().unwrap();
        assert!((1..=bound(ENTRIES)).contains(&compared), "op {at_op}: {compared} chain states compared");
        assert_eq!(json["verdict"], format!("{wrong} is wrong"), "{json}");
        assert!(err.contains(&format!("{wrong} is wrong")), "{err}");
        if at_op == 0 {
            // Without the input tensors the op cannot be recomputed; a replay still settles it.
            let (code, json, _) = dispute(a, b, &[]);
            assert_eq!((code, json["index"].as_u64(), json["wrong"].as_str()), (2, Some(k), None), "{json}");
            assert!(json["needs"].as_str().unwrap().contains("input tensors"), "{json}");
            let (code, json, _) = dispute(a, b, &[&"--module", &guests::TENSOR_PROBE.path()]);
            assert_eq!((code, json["wrong"].as_str(), json["settled_by"].as_str(), json["ops_recomputed"].as_u64()), (1, Some(wrong), Some("replay"), Some(0)));
        }
    }
}

#[test]
fn honest_receipts_of_two_signers_are_no_dispute_and_a_log_that_is_not_its_receipts_loses() {
    let honest = honest();
    // A second honest provider: the same run (it is deterministic) under another key.
    let mut second: Receipt = Receipt::from_json(&std::fs::read(&honest.receipt).unwrap()).unwrap();
    second.sign_with(&keys::generate().unwrap());
    let other = honest.dir.join("second");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("receipt.json"), second.to_canonical_json()).unwrap();
    std::fs::copy(honest.receipt.with_file_name("trace.jsonl"), other.join("trace.jsonl")).unwrap();
    let (code, json, err) = dispute(&honest.receipt, &other.join("receipt.json"), &[]);
    assert_eq!((code, json["verdict"].as_str(), json["wrong"].as_str()), (0, Some("no dispute"), Some("neither")), "{json} {err}");
    assert_eq!((json["chain_states_compared"].as_u64(), json["ops_recomputed"].as_u64()), (Some(1), Some(0)), "{json}");

    // B's delivered log has one output changed: it no longer follows its own chain.
    let text = std::fs::read_to_string(other.join("trace.jsonl")).unwrap();
    let log = entries(&honest.receipt);
    let output = hex::encode(log[77].link.output);
    let lines: Vec<String> = text.lines().enumerate().map(|(i, l)| if i == 77 { l.replace(&output, &"0".repeat(64)) } else { l.into() }).collect();
    let tampered = honest.dir.join("tampered.jsonl");
    std::fs::write(&tampered, lines.join("\n") + "\n").unwrap();
    let (code, json, err) = dispute(&honest.receipt, &other.join("receipt.json"), &[&"--trace-b", &tampered]);
    assert_eq!((code, json["wrong"].as_str(), json["settled_by"].as_str()), (1, Some("B"), Some("log")), "{json} {err}");
    assert!(json["reason"].as_str().unwrap().contains("entry 77"), "{json}");
    // A log cut short (a consistent prefix) is not the one the receipt commits to either.
    let short = honest.dir.join("short.jsonl");
    std::fs::write(&short, text.lines().take(100).map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let (code, json, _) = dispute(&honest.receipt, &other.join("receipt.json"), &[&"--trace-a", &short, &"--trace-b", &short]);
    assert_eq!((code, json["wrong"].as_str()), (1, Some("both")), "{json}");
}

#[test]
fn receipts_of_different_manifests_are_refused() {
    let honest = honest();
    let work = tempfile::tempdir().unwrap();
    let small = run_into(engine(), &chain_job(3), &keys::generate().unwrap(), &work.path().join("small"), None);
    let (code, _, err) = dispute(&honest.receipt, &small, &[]);
    assert!(code == 2 && err.contains("not the same job"), "{code}: {err}");
    // A receipt changed after signing is refused too.
    let text = std::fs::read_to_string(&small).unwrap().replace("\"fuel_used\":", "\"fuel_used\":1");
    let forged = work.path().join("small/forged.json");
    std::fs::write(&forged, text).unwrap();
    let (code, _, err) = dispute(&small, &forged, &[]);
    assert!(code == 2 && err.contains("signature is invalid"), "{code}: {err}");
}

/// Re-signs `receipt` with `key` after `change`, writing it and `log` into `dir`.
fn forge(receipt: &Path, log: &[TraceEntry], dir: &Path, key: &SigningKey, change: impl Fn(&mut Receipt)) -> PathBuf {
    let mut forged = Receipt::from_json(&std::fs::read(receipt).unwrap()).unwrap();
    change(&mut forged);
    forged.sign_with(key);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("receipt.json"), forged.to_canonical_json()).unwrap();
    std::fs::write(dir.join("trace.jsonl"), trace_file::encode(log)).unwrap();
    dir.join("receipt.json")
}

#[test]
fn what_the_trace_cannot_pin_on_one_op_is_settled_by_a_replay_or_left_undecided() {
    let work = tempfile::tempdir().unwrap();
    let job = chain_job(3);
    let honest = run_into(engine(), &job, &keys::generate().unwrap(), &work.path().join("honest"), None);
    let log = entries(&honest);
    let key = keys::generate().unwrap();
    let module = guests::TENSOR_PROBE.path();

    // Same trace, another stdout: the job's own code, which only a replay settles.
    let liar = forge(&honest, &log, &work.path().join("stdout"), &key, |r| r.stdout = gridbox_core::BlobRef::of(b"chain 42\n"));
    let (code, json, err) = dispute(&honest, &liar, &[]);
    assert_eq!((code, json["verdict"].as_str(), json["wrong"].as_str()), (2, Some("undecided: needs a replay (the module and inputs)"), None), "{json} {err}");
    assert!(json["reason"].as_str().unwrap().contains("stdout differ"), "{json}");
    let (code, json, err) = dispute(&liar, &honest, &[&"--module", &module]);
    assert_eq!(
        (code, json["wrong"].as_str(), json["settled_by"].as_str(), json["replayed"].as_bool()),
        (1, Some("A"), Some("replay"), Some(true)),
        "{json} {err}"
    );
    assert!(json["reason"].as_str().unwrap().contains("receipt A's stdout differs from the replay's"), "{json}");

    // A log whose entry 3 names other inputs, consistent with its (re-signed) receipt: the calls
    // differ at 3, which only a replay settles.
    let mut changed = log.clone();
    changed[3].link.inputs = vec![[9; 32]];
    let mut chain = TraceChain::new();
    for entry in &mut changed {
        entry.root = chain.append(&entry.link);
    }
    let log_root = Digest(merkle::root(&trace_log::leaves(&changed)));
    let root = Digest(chain.root());
    let forged = forge(&honest, &changed, &work.path().join("inputs"), &key, |r| {
        r.trace.root = root;
        r.trace.log_root = log_root;
    });
    let (code, json, _) = dispute(&honest, &forged, &[]);
    assert_eq!((code, json["index"].as_u64(), json["wrong"].as_str()), (2, Some(3), None), "{json}");
    let (code, json, _) = dispute(&honest, &forged, &[&"--module", &module]);
    assert_eq!((code, json["index"].as_u64(), json["wrong"].as_str(), json["settled_by"].as_str()), (1, Some(3), Some("B"), Some("replay")), "{json}");
    assert!(json["reason"].as_str().unwrap().contains("receipt B's trace differs from the replay's"), "{json}");
}
