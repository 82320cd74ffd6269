//! The trace log (spec/trace.md): `gridbox run --out --keep-tensors` writes trace.jsonl and the
//! tensors it names; `gridbox check-op` proves one entry against the receipt and recomputes its
//! op; `gridbox verify --no-replay` checks the whole log; tampering is caught and named, and a
//! provider whose op silently computed a wrong bit is caught by check-op at that op.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use gridbox_compute::Backend;
use gridbox_compute::backend::faults::{Fault, FaultPlan};
use gridbox_core::kept_tensors::{TensorDir, file_name};
use gridbox_core::{Capability, Digest, Job, JobEngine, Manifest, Policy, Receipt, RunOptions, artifacts, keys, trace_file};

use crate::common::*;
use crate::guests;

/// `gridbox run` of the tensor probe's `chain N` into `work/NAME`, keeping tensors in
/// `work/NAME.tensors` when `keep`.
fn run_chain(work: &Path, name: &str, n: usize, keep: bool) -> (PathBuf, PathBuf) {
    let key = work.join("provider.key");
    if !key.exists() {
        assert!(gridbox_output(&[&"keygen", &key]).status.success());
    }
    let (out, tensors) = (work.join(name), work.join(format!("{name}.tensors")));
    let module = guests::TENSOR_PROBE.path();
    let n = n.to_string();
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"run", &module, &"--capability", &"tensor", &"--quiet", &"--key", &key, &"--out", &out];
    if keep {
        args.extend([&"--keep-tensors" as &dyn AsRef<std::ffi::OsStr>, &tensors]);
    }
    args.extend([&"--" as &dyn AsRef<std::ffi::OsStr>, &"chain", &n]);
    let output = gridbox_output(&args);
    assert!(output.status.success(), "{}", stderr(&output));
    (out, tensors)
}

fn check_op(receipt: &Path, trace: &Path, index: usize, tensors: &Path) -> (i32, serde_json::Value, Output) {
    let index = index.to_string();
    let output = gridbox_output(&[&"check-op", &receipt, &"--trace", &trace, &"--index", &index, &"--tensors", &tensors, &"--json"]);
    let json = serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
    (output.status.code().unwrap(), json, output)
}

fn entries(trace: &Path) -> Vec<gridbox_compute::TraceEntry> {
    trace_file::decode(&std::fs::read(trace).unwrap()).unwrap()
}

/// A copy of `trace` with line `line` (0-based) passed through `change`.
fn tampered(trace: &Path, line: usize, change: impl Fn(&str) -> String) -> PathBuf {
    let text = std::fs::read_to_string(trace).unwrap();
    let lines: Vec<String> = text.lines().enumerate().map(|(at, l)| if at == line { change(l) } else { l.to_string() }).collect();
    let path = trace.with_file_name(format!("tampered-{line}-{}.jsonl", lines[line].len()));
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn check_op_passes_on_an_honest_run_and_names_every_tampering() {
    let work = tempfile::tempdir().unwrap();
    let (out, tensors) = run_chain(work.path(), "kept", 4, true);
    let (plain, _) = run_chain(work.path(), "plain", 4, false);
    let (receipt, trace) = (out.join("receipt.json"), out.join("trace.jsonl"));
    // Keeping tensors changes nothing: the receipts are byte-identical.
    assert_eq!(std::fs::read(&receipt).unwrap(), std::fs::read(plain.join("receipt.json")).unwrap());
    let log = entries(&trace);
    // create, 4 x (matmul, tanh), read.
    assert_eq!(log.len(), 10);
    let parsed = Receipt::from_json(&std::fs::read(&receipt).unwrap()).unwrap();
    assert_eq!(parsed.format, "gridbox-receipt/2");
    assert_eq!(parsed.trace.length, 10);
    assert_ne!(parsed.trace.log_root, Digest([0; 32]));
    // Every tensor the trace names is kept, by hash.
    for entry in &log {
        for hash in entry.link.inputs.iter().chain([&entry.link.output]) {
            assert!(tensors.join(file_name(hash)).is_file(), "entry {} names a tensor that was not kept", entry.index);
        }
    }
    let middle = 5;
    for index in [0, middle, log.len() - 1] {
        let (code, json, output) = check_op(&receipt, &trace, index, &tensors);
        assert_eq!((code, json["verdict"].as_str()), (0, Some("ok")), "entry {index}: {}{}", String::from_utf8_lossy(&output.stdout), stderr(&output));
        assert!(json["proof"]["siblings"].as_array().unwrap().len() <= 4, "{json}");
    }
    let (_, json, _) = check_op(&receipt, &trace, middle, &tensors);
    assert_eq!(json["op"], log[middle].link.op.as_str());
    assert!(json["steps"].as_array().unwrap().iter().any(|s| s["check"] == "output"), "{json}");

    // A changed entry, or an entry claiming another index: its proof fails.
    let output_hex = hex::encode(log[middle].link.output);
    let changed = tampered(&trace, middle, |line| line.replace(&output_hex, &"0".repeat(64)));
    let (code, json, _) = check_op(&receipt, &changed, middle, &tensors);
    assert_eq!((code, json["verdict"].as_str(), json["failed"].as_str()), (1, Some("proof failed"), Some("proof")), "{json}");
    let renumbered = tampered(&trace, middle, |line| line.replace(&format!("\"index\":{middle}"), &format!("\"index\":{}", middle + 1)));
    let (code, json, _) = check_op(&receipt, &renumbered, middle, &tensors);
    assert_eq!((code, json["failed"].as_str()), (1, Some("proof")), "{json}");

    // A kept input whose bytes changed: named as the input's hash.
    let bad_tensors = work.path().join("bad.tensors");
    copy_dir(&tensors, &bad_tensors);
    let input = bad_tensors.join(file_name(&log[middle].link.inputs[0]));
    let mut bytes = std::fs::read(&input).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    std::fs::write(&input, &bytes).unwrap();
    let (code, json, _) = check_op(&receipt, &trace, middle, &bad_tensors);
    assert_eq!((code, json["verdict"].as_str()), (1, Some("input hash differs")), "{json}");

    // A receipt changed after signing.
    let text = std::fs::read_to_string(&receipt).unwrap();
    let forged = work.path().join("forged.json");
    std::fs::write(&forged, text.replace(&parsed.trace.log_root.to_hex(), &"1".repeat(64))).unwrap();
    let (code, json, _) = check_op(&forged, &trace, middle, &tensors);
    assert_eq!((code, json["failed"].as_str()), (1, Some("signature")), "{json}");

    // Could not check: no such entry, a missing or malformed tensor file, a malformed log.
    let (code, _, output) = check_op(&receipt, &trace, 99, &tensors);
    assert!(code == 2 && stderr(&output).contains("entry 99 is not in the log, which has 10 entries"), "{}", stderr(&output));
    let (code, _, output) = check_op(&receipt, &trace, middle, &work.path().join("nowhere"));
    assert!(code == 2 && stderr(&output).contains("cannot be loaded") && stderr(&output).contains(".tensor"), "{}", stderr(&output));
    std::fs::write(&input, b"gbtens").unwrap();
    let (code, _, output) = check_op(&receipt, &trace, middle, &bad_tensors);
    assert!(code == 2 && stderr(&output).contains("not a gridbox tensor file"), "{}", stderr(&output));
    let broken = tampered(&trace, 2, |line| line.replace("\"op\":", "\"op\" :"));
    let (code, _, output) = check_op(&receipt, &broken, middle, &tensors);
    assert!(code == 2 && stderr(&output).contains("trace.jsonl line 3"), "{}", stderr(&output));
    let cut = work.path().join("cut.jsonl");
    std::fs::write(&cut, &std::fs::read(&trace).unwrap()[..100]).unwrap();
    let (code, _, output) = check_op(&receipt, &cut, middle, &tensors);
    assert!(code == 2 && stderr(&output).contains("cut off"), "{}", stderr(&output));
}

#[test]
fn verify_without_replay_checks_the_whole_log_and_names_a_tampered_entry() {
    let work = tempfile::tempdir().unwrap();
    let (out, _) = run_chain(work.path(), "run", 3, false);
    let module = guests::TENSOR_PROBE.path();
    let receipt = out.join("receipt.json");
    let output = gridbox_output(&[&"verify", &receipt, &"--module", &module, &"--no-replay"]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{text}{}", stderr(&output));
    assert!(text.contains("trace.log_root") && text.contains("log"), "{text}");
    // A changed output hash in entry 3 of the delivered log.
    let log = entries(&out.join("trace.jsonl"));
    let changed = tampered(&out.join("trace.jsonl"), 3, |line| line.replace(&hex::encode(log[3].link.output), &"0".repeat(64)));
    let output = gridbox_output(&[&"verify", &receipt, &"--module", &module, &"--no-replay", &"--trace", &changed, &"--json"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["first_mismatch"], "trace.log[3]", "{json}");
    // The normal replay passes on the clean folder, and its log root matches.
    let output = gridbox_output(&[&"verify", &receipt, &"--module", &module, &"--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(json["checks"].as_array().unwrap().iter().any(|c| c["field"] == "trace.log_root" && c["basis"] == "replay" && c["ok"] == true), "{json}");
}

#[test]
fn a_flipped_bit_at_op_k_is_output_differs_at_k_and_a_replay_names_entry_k() {
    let work = tempfile::tempdir().unwrap();
    let module: Arc<[u8]> = std::fs::read(guests::TENSOR_PROBE.path()).unwrap().into();
    let mut manifest = Manifest::new(Digest::of(&module));
    manifest.args = vec!["chain".into(), "3".into()];
    manifest.capabilities = vec![Capability::Wasi, Capability::Tensor];
    let job = Job::new(module, manifest.resolve(&Policy::default()).unwrap(), Default::default()).unwrap();
    let at_op = 2;
    let faulty = JobEngine::with_backend(&Policy::default(), Backend::cpu(1).with_fault(FaultPlan { at_op, fault: Fault::FlipBit { bit: 3 } })).unwrap();
    let tensors = work.path().join("tensors");
    let keeper = Arc::new(TensorDir::create(&tensors).unwrap());
    let run = faulty.run(&job, RunOptions { keep_trace_log: true, keep_tensors: Some(keeper.clone()), ..RunOptions::default() }).unwrap();
    keeper.finish().unwrap();
    let receipt = Receipt::sign(&job, &run, &faulty.backend().name(), &keys::generate().unwrap());
    let out = work.path().join("out");
    artifacts::write(&out, &run, &receipt).unwrap();
    let (receipt_path, trace) = (out.join("receipt.json"), out.join("trace.jsonl"));
    let log = entries(&trace);
    // The provider's log is consistent with its lie: entry K is op `at_op` (creates and reads are no ops).
    let k = log.iter().filter(|e| !matches!(e.link.op.as_str(), "create" | "read")).nth(at_op as usize).unwrap().index as usize;
    let (code, json, _) = check_op(&receipt_path, &trace, k, &tensors);
    assert_eq!((code, json["verdict"].as_str(), json["failed"].as_str()), (1, Some("output differs"), Some("output")), "{json}");
    // The ops around it were computed right (the next one on the wrong input, faithfully).
    for index in [k - 1, k + 1] {
        let (code, json, _) = check_op(&receipt_path, &trace, index, &tensors);
        assert_eq!(code, 0, "entry {index}: {json}");
    }
    let module = guests::TENSOR_PROBE.path();
    // Without replay the log agrees with the receipt: only recomputing finds the lie.
    let output = gridbox_output(&[&"verify", &receipt_path, &"--module", &module, &"--no-replay"]);
    assert!(output.status.success(), "{}", stderr(&output));
    // A replay differs, and verify names the first differing entry.
    let output = gridbox_output(&[&"verify", &receipt_path, &"--module", &module, &"--json"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let field = format!("trace first difference: entry {k}");
    assert!(json["checks"].as_array().unwrap().iter().any(|c| c["field"] == field.as_str() && c["ok"] == false), "{json}");
    assert!(stderr(&output).contains(&field), "{}", stderr(&output));
}
