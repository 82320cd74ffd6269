//! The tensor bridge end to end: real guests through the SDK, hostile raw ABI calls, quotas,
//! capability refusal, the trace and its levels.

use std::collections::BTreeMap;
use std::sync::Arc;

use gridbox_compute::TraceLevel;
use gridbox_core::manifest::TensorSection;
use gridbox_core::{Capability, Digest, Job, JobEngine, JobRun, LimitKind, Manifest, Outcome, Policy, RunError, RunOptions};

use crate::common::*;
use crate::guests;

fn tensor_probe() -> Arc<[u8]> {
    std::fs::read(guests::TENSOR_PROBE.path()).unwrap().into()
}

fn tensor_manifest(module: &Arc<[u8]>, args: &[&str], limits: &[(LimitKind, u64)], tensor: Option<TensorSection>) -> Manifest {
    let mut manifest = Manifest::new(Digest::of(module));
    manifest.args = args.iter().map(|a| a.to_string()).collect();
    manifest.capabilities = vec![Capability::Wasi, Capability::Tensor];
    manifest.tensor = tensor;
    for (kind, value) in limits {
        manifest.limits.set(*kind, *value);
    }
    manifest
}

fn run_with(engine: &JobEngine, module: Arc<[u8]>, manifest: Manifest) -> Result<JobRun, RunError> {
    let job = Job::new(module, manifest.resolve(&Policy::default())?, BTreeMap::new())?;
    engine.run(&job, RunOptions::default())
}

fn run_tensor_probe(args: &[&str], limits: &[(LimitKind, u64)]) -> JobRun {
    let module = tensor_probe();
    let manifest = tensor_manifest(&module, args, limits, None);
    let run = run_with(engine(), module, manifest).unwrap();
    assert_eq!(run.outcome, Outcome::Exited { code: 0 }, "{}", String::from_utf8_lossy(&run.stderr));
    run
}

#[test]
fn every_op_runs_through_the_sdk_and_matches_the_kernels_called_directly() {
    let run = run_tensor_probe(&["ops"], &[]);
    let text = String::from_utf8_lossy(&run.stdout).into_owned();
    assert_eq!(text.lines().count(), 25, "{text}");
    // The guest's matmul equals the CPU kernel run on the host directly, bit for bit.
    use gridbox_compute::{Backend, OpCall, Tensor, TensorMeta};
    let values: Vec<f32> = (0..30).map(|i| (i as f32 - 13.5) * 0.37).collect();
    let a = Tensor::f32(vec![2, 3], values[..6].to_vec()).unwrap();
    let b = Tensor::f32(vec![3, 4], values[6..18].to_vec()).unwrap();
    let out = OpCall::Matmul.infer(&[a.meta(), b.meta()]).unwrap();
    let direct = Backend::cpu(1).execute(&OpCall::Matmul, &[&a, &b], &out).unwrap();
    let bits: Vec<String> = direct.as_f32().unwrap().iter().map(|x| format!("{:08x}", x.to_bits())).collect();
    assert!(text.contains(&format!("matmul [2, 4] {}", bits.join(","))), "{text}");
    let _: TensorMeta = out;
    assert!(run.trace.len() > 25, "every create, op and read is traced");
}

#[test]
fn handleable_errors_come_back_as_values_with_the_hosts_detail() {
    let run = run_tensor_probe(&["errors"], &[]);
    let text = String::from_utf8_lossy(&run.stdout);
    // The SDK fetches each code's detail through `last_error` and prints it after the code's name.
    let long = format!("permute: takes one axis per dim: x [2, 3] has rank 2, got 64 axes [{}]", vec!["4294967295"; 64].join(", "));
    for expected in [
        "matmul 2x3 by 2x3: Some(ShapeMismatch): shape mismatch: matmul: shapes [2, 3] and [2, 3] do not fit: the inner dims 3 and 2 differ\n",
        "matmul 64x32 by 16x4: Some(ShapeMismatch): shape mismatch: matmul: shapes [64, 32] and [16, 4] do not fit: the inner dims 32 and 16 differ\n",
        "axis 5: Some(InvalidParameter): invalid parameter: sum: axis 5 is out of range for a rank-2 tensor [2, 3]: its axes are -2..=1\n",
        "slice past end: Some(InvalidParameter): invalid parameter: slice: [2, 9) on axis 1 of [2, 3] is not a range within 0..=3\n",
        "gather out of range: Some(InvalidParameter): invalid parameter: gather: indices[1] (flat) is 7, outside 0..2, the rows of the table [2, 3]\n",
        "exp of i32: Some(UnsupportedDType): unsupported dtype: exp: takes f32 only, but input 0 is i32 [2]\n",
        "relu: ok [2, 3]\n",
        "reshape 6 to 4: Some(ShapeMismatch): shape mismatch: reshape: cannot reshape [2, 3] (6 elements) to [4] (4 elements)\n",
        &format!("long detail: {} bytes, ends \" 4294967295]\"\n", long.len()),
        "transpose of a vector: Some(ShapeMismatch): shape mismatch: transpose: needs rank >= 2, got [2]\n",
        "to_vec of i32: Some(\"unsupported dtype: to_vec: the tensor is i32 [2]; read it with to_vec_i32\")\n",
    ] {
        assert!(text.contains(expected), "{expected} not in {text}");
    }
}

#[test]
fn quotas_are_error_codes_the_job_handles() {
    let run = run_tensor_probe(&["quota-bytes"], &[(LimitKind::TensorBytes, 10 * 4096)]);
    let text = String::from_utf8_lossy(&run.stdout);
    let detail = "tensor memory quota exceeded: create: the result needs 4096 bytes and 40960 are in use, above limits.tensor_bytes 40960";
    assert!(text.contains(&format!("quota after 10 tensors: {detail}\n")) && text.contains("allocated again"), "{text}");
    let run = run_tensor_probe(&["quota-count"], &[(LimitKind::TensorCount, 7)]);
    let text = String::from_utf8_lossy(&run.stdout);
    let detail = "tensor count quota exceeded: create: the tensors the job holds (7) reach limits.tensor_count 7";
    assert!(text.contains(&format!("count quota after 7 tensors: {detail}\n")), "{text}");
}

/// Through the real binary: the job prints the host's details, and two runs give byte-identical
/// receipts that verify. The details come from the planning code every backend shares (and a
/// gather's bad index from the one constructor both use), so a CUDA run prints the same words.
#[test]
fn a_job_that_prints_error_details_has_a_reproducible_receipt() {
    let work = tempfile::tempdir().unwrap();
    let key = work.path().join("provider.key");
    assert!(gridbox_output(&[&"keygen", &key]).status.success());
    let module = guests::TENSOR_PROBE.path();
    let run = |out: &str| {
        let out = work.path().join(out);
        let output = gridbox_output(&[&"run", &module, &"--capability", &"tensor", &"--quiet", &"--key", &key, &"--out", &out, &"--", &"errors"]);
        assert!(output.status.success(), "{}", stderr(&output));
        // The job's stdout as the `--out` folder keeps it (`--quiet` echoes nothing).
        (std::fs::read_to_string(out.join("stdout")).unwrap(), std::fs::read(out.join("receipt.json")).unwrap(), out)
    };
    let (stdout, receipt, out) = run("one");
    assert!(stdout.contains("shape mismatch: matmul: shapes [64, 32] and [16, 4] do not fit: the inner dims 32 and 16 differ"), "{stdout}");
    let (again, receipt_again, _) = run("two");
    assert_eq!(stdout, again);
    assert_eq!(String::from_utf8_lossy(&receipt), String::from_utf8_lossy(&receipt_again));
    let verified = gridbox_output(&[&"verify", &out.join("receipt.json"), &"--module", &module]);
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stdout));
}

#[test]
fn ungranted_capabilities_and_ops_are_refused_at_load() {
    let module = tensor_probe();
    let mut manifest = tensor_manifest(&module, &["ops"], &[], None);
    manifest.capabilities = vec![Capability::Wasi];
    let message = run_with(engine(), module.clone(), manifest).err().unwrap().to_string();
    assert!(message.contains("gridbox_tensor_v1::") && message.contains("`tensor` capability"), "{message}");

    let only_add = TensorSection { ops: vec!["add".into()], ..TensorSection::default() };
    let manifest = tensor_manifest(&module, &["ops"], &[], Some(only_add));
    let message = run_with(engine(), module, manifest).err().unwrap().to_string();
    assert!(message.contains("gridbox_tensor_v1::") && message.contains("tensor.ops"), "{message}");
}

/// The ops added after the first release (silu, argmax, cast, rope, attention) run when the manifest names
/// them; a manifest that lists no `tensor.ops` grants exactly the first release's 25, so the
/// resolved manifest (and so the receipt) of a job written before them is unchanged.
#[test]
fn model_ops_run_when_named_and_the_default_grant_is_the_first_releases() {
    let module: Arc<[u8]> = std::fs::read(guests::MODEL_PROBE.path()).unwrap().into();
    let mut every_op = TensorSection::default();
    every_op.ops.extend(["silu", "argmax", "cast", "rope", "attention"].map(String::from));
    let manifest = tensor_manifest(&module, &["ops"], &[], Some(every_op.clone()));
    let run = run_with(engine(), module.clone(), manifest).unwrap();
    assert_eq!(run.outcome, Outcome::Exited { code: 0 }, "{}", String::from_utf8_lossy(&run.stderr));
    let text = String::from_utf8_lossy(&run.stdout).into_owned();
    // The guest's rope equals the CPU kernel run on the host directly, bit for bit.
    use gridbox_compute::{Backend, OpCall, Tensor};
    let values: Vec<f32> = (0..24).map(|i| (i as f32 - 11.5) * 0.37).collect();
    let x = Tensor::f32(vec![2, 3, 4], values).unwrap();
    let call = OpCall::Rope { offset: 7, theta: 10_000.0 };
    let out = call.infer(&[x.meta()]).unwrap();
    let direct = Backend::cpu(1).execute(&call, &[&x], &out).unwrap();
    let bits: Vec<String> = direct.as_f32().unwrap().iter().map(|x| format!("{:08x}", x.to_bits())).collect();
    assert!(text.contains(&format!("rope [2, 3, 4] {}", bits.join(","))), "{text}");
    for expected in [
        "argmax [2, 3] [3, 3, 3, 3, 3, 3]\n",
        "cast_f16 [2, 2] 3f800000,ff800000,33800000,7fc00000\n",
        "cast_bf16 [2, 1] 00010000,7fc00000\n",
        "bf16_bytes [0, 128, 193, 127]\n",
        "attention [3, 2, 2] ",
    ] {
        assert!(text.contains(expected), "{expected} not in {text}");
    }
    let edges = run_with(engine(), module.clone(), tensor_manifest(&module, &["edges"], &[], Some(every_op))).unwrap();
    assert_eq!(edges.outcome, Outcome::Exited { code: 0 }, "{}", String::from_utf8_lossy(&edges.stderr));

    // The default grant: the first release's ops, so this module's imports are refused at load.
    let message = run_with(engine(), module.clone(), tensor_manifest(&module, &["ops"], &[], None)).err().unwrap().to_string();
    assert!(message.contains("gridbox_tensor_v1::") && message.contains("tensor.ops"), "{message}");
    let resolved = tensor_manifest(&module, &[], &[], None).resolve(&Policy::default()).unwrap();
    let first_release = "ops = [\"matmul\", \"add\", \"sub\", \"mul\", \"div\", \"neg\", \"relu\", \"gelu\", \"sigmoid\", \"tanh\", \"exp\", \"log\", \"sqrt\", \"softmax\", \"layer_norm\", \"rms_norm\", \"sum\", \"mean\", \"max\", \"permute\", \"reshape\", \"slice\", \"concat\", \"gather\", \"conv2d\"]\n";
    assert!(resolved.text().contains(first_release), "{}", resolved.text());
}

#[test]
fn trace_levels_and_thread_counts() {
    let module = tensor_probe();
    let full = run_with(engine(), module.clone(), tensor_manifest(&module, &["chain", "6"], &[], None)).unwrap();
    let readback_section = TensorSection { trace: TraceLevel::Readback, ..TensorSection::default() };
    let readback = run_with(engine(), module.clone(), tensor_manifest(&module, &["chain", "6"], &[], Some(readback_section))).unwrap();
    assert_eq!(full.stdout, readback.stdout);
    // full: 1 create + 12 ops + 1 read; readback: the create and the read.
    assert_eq!((full.trace.len(), readback.trace.len()), (14, 2));
    assert_ne!(full.trace.root(), readback.trace.root());

    // More kernel threads change nothing but speed.
    let policy = Policy { kernel_threads: 3, ..Policy::default() };
    let threaded = JobEngine::new(&policy).unwrap();
    let again = run_with(&threaded, module.clone(), tensor_manifest(&module, &["chain", "6"], &[], None)).unwrap();
    assert_eq!((again.stdout, again.trace, again.fuel_used), (full.stdout, full.trace, full.fuel_used));
}

#[test]
fn bridge_work_is_paid_in_fuel_and_a_short_budget_stops_it() {
    let short = run_tensor_probe(&["chain", "1"], &[]);
    let long = run_tensor_probe(&["chain", "20"], &[]);
    // Each extra step is an 8x8x8 matmul (512 + base) and a tanh (64 * 8 + base) at least.
    assert!(long.fuel_used - short.fuel_used >= 19 * (512 + 512 + 200), "{} vs {}", short.fuel_used, long.fuel_used);
    let module = tensor_probe();
    let limit = short.fuel_used + 1000;
    let stopped = run_with(engine(), module.clone(), tensor_manifest(&module, &["chain", "200"], &[(LimitKind::Fuel, limit)], None)).unwrap();
    assert_eq!(stopped.outcome, Outcome::LimitExceeded { limit: LimitKind::Fuel, value: limit });
    assert_eq!(stopped.fuel_used, limit);
}

/// A raw module calling one bridge import with the given i32 arguments from `_start`, after
/// creating a [2, 2] f32 tensor (handle 1) from memory offset 64.
fn raw_call(import: &str, params: usize, args: &[i64]) -> String {
    let param_list = "i32 ".repeat(params);
    let arg_list: String = args.iter().map(|a| format!("(i32.const {a}) ")).collect();
    format!(
        r#"(module
            (import "gridbox_tensor_v1" "create" (func $create (param i32 i32 i32 i32 i32 i32) (result i32)))
            (import "gridbox_tensor_v1" "{import}" (func $target (param {param_list}) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 0) "\02\00\00\00\02\00\00\00")
            (func (export "_start")
                (drop (call $create (i32.const 0) (i32.const 0) (i32.const 2) (i32.const 64) (i32.const 16) (i32.const 32)))
                (drop (call $target {arg_list}))))"#
    )
}

fn run_raw(wat_text: &str) -> JobRun {
    let module: Arc<[u8]> = wat::parse_str(wat_text).unwrap().into();
    run_with(engine(), module.clone(), tensor_manifest(&module, &[], &[], None)).unwrap()
}

fn assert_trap(run: &JobRun, needle: &str) {
    match &run.outcome {
        Outcome::Trapped { trap, message } => {
            assert_eq!(trap, "host");
            assert!(message.contains(needle), "{needle:?} not in {message:?}");
        }
        other => panic!("expected a trap with {needle:?}, got {other:?}"),
    }
}

#[test]
fn hostile_abi_calls_trap_with_a_message_and_never_crash_the_host() {
    // Pointers outside memory.
    assert_trap(&run_raw(&raw_call("create", 6, &[0, 65530, 2, 64, 16, 32])), "outside the job's memory");
    assert_trap(&run_raw(&raw_call("create", 6, &[0, 0, 2, -16, 16, 32])), "outside the job's memory");
    assert_trap(&run_raw(&raw_call("read", 3, &[1, 65530, 16])), "outside the job's memory");
    // Unknown and freed handles.
    assert_trap(&run_raw(&raw_call("read", 3, &[99, 0, 16])), "handle 99 is not a live tensor");
    assert_trap(&run_raw(&raw_call("free", 1, &[7])), "handle 7 is not a live tensor");
    assert_trap(&run_raw(&raw_call("neg", 5, &[4096, 1, 0, 0, 32])), "not a live tensor");
    // A read whose length is not the tensor's size.
    assert_trap(&run_raw(&raw_call("read", 3, &[1, 0, 15])), "has 16 bytes");
    // Too many inputs or params, and a rank above the maximum.
    assert_trap(&run_raw(&raw_call("concat", 5, &[0, 100_000, 0, 1, 32])), "at most");
    assert_trap(&run_raw(&raw_call("reshape", 5, &[0, 1, 0, -1, 32])), "at most");
    assert_trap(&run_raw(&raw_call("create", 6, &[0, 0, 9, 64, 16, 32])), "rank 9");
    // A data length that does not match the shape.
    assert_trap(&run_raw(&raw_call("create", 6, &[0, 0, 2, 64, 12, 32])), "needs 16 bytes");
}

#[test]
fn huge_and_overflowing_shapes_get_codes_before_any_allocation() {
    // dims 0xffffffff x 0xffffffff: the byte count overflows or passes the quota; either way an
    // error code, no allocation, no trap. The job stores the code at offset 128 and exits with it.
    let wat_text = r#"(module
        (import "gridbox_tensor_v1" "create" (func $create (param i32 i32 i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
        (memory (export "memory") 1)
        (data (i32.const 0) "\ff\ff\ff\ff\ff\ff\ff\ff\ff\ff\ff\ff")
        (func (export "_start")
            (call $exit (call $create (i32.const 0) (i32.const 0) (i32.const 3) (i32.const 64) (i32.const 16) (i32.const 32)))))"#;
    let run = run_raw(wat_text);
    match run.outcome {
        Outcome::Exited { code } => assert!(code == 1 || code == 3, "quota (1) or shape (3) code, got {code}"),
        other => panic!("{other:?}"),
    }
    // A reshape to a huge shape is refused with a code too.
    let wat_text = raw_call("reshape", 5, &[200, 1, 208, 2, 32]).replace(
        "(data (i32.const 0)",
        r#"(data (i32.const 200) "\01\00\00\00") (data (i32.const 208) "\ff\ff\ff\ff\ff\ff\ff\7f\ff\ff\ff\ff\ff\ff\ff\7f") (data (i32.const 0)"#,
    );
    assert_eq!(run_raw(&wat_text).outcome, Outcome::Exited { code: 0 });
}

#[test]
fn last_error_fills_a_short_buffer_returns_the_full_length_and_traps_outside_memory() {
    // A create with dtype 7 is refused (unsupported_dtype); `last_error` gets a 4-byte buffer in a
    // row of dots, the job writes the 16 bytes there to stdout and exits with the returned length.
    let wat_text = r#"(module
        (import "gridbox_tensor_v1" "create" (func $create (param i32 i32 i32 i32 i32 i32) (result i32)))
        (import "gridbox_tensor_v1" "last_error" (func $last_error (param i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
        (memory (export "memory") 1)
        (data (i32.const 256) "................")
        (data (i32.const 300) "\00\01\00\00\10\00\00\00")
        (func (export "_start")
            (local $len i32)
            (drop (call $create (i32.const 7) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 32)))
            (local.set $len (call $last_error (i32.const 256) (i32.const 4)))
            (drop (call $fd_write (i32.const 1) (i32.const 300) (i32.const 1) (i32.const 320)))
            (call $exit (local.get $len))))"#;
    let run = run_raw(wat_text);
    let detail = "create: dtype code 7 is not a dtype (f32 is 0, i32 is 1, f16 is 2, bf16 is 3)";
    assert_eq!(run.outcome, Outcome::Exited { code: detail.len() as u32 });
    assert_eq!(String::from_utf8_lossy(&run.stdout), "crea............");
    // The buffer must lie in memory, whatever the detail's length (here empty).
    assert_trap(&run_raw(&raw_call("last_error", 2, &[65530, 16])), "last_error: buf at 65530 with 16 bytes is outside the job's memory");
    assert_trap(&run_raw(&raw_call("last_error", 2, &[-4, 1])), "outside the job's memory");
}

#[test]
fn last_error_comes_with_the_tensor_capability_and_needs_no_op_grant() {
    let wat_text = r#"(module
        (import "gridbox_tensor_v1" "last_error" (func $last_error (param i32 i32) (result i32)))
        (memory (export "memory") 1)
        (func (export "_start") (drop (call $last_error (i32.const 0) (i32.const 8)))))"#;
    let module: Arc<[u8]> = wat::parse_str(wat_text).unwrap().into();
    let only_add = TensorSection { ops: vec!["add".into()], ..TensorSection::default() };
    let run = run_with(engine(), module.clone(), tensor_manifest(&module, &[], &[], Some(only_add))).unwrap();
    assert_eq!(run.outcome, Outcome::Exited { code: 0 });
    assert_eq!(run.trace.len(), 0, "last_error is not traced");
    let mut manifest = tensor_manifest(&module, &[], &[], None);
    manifest.capabilities = vec![Capability::Wasi];
    let message = run_with(engine(), module, manifest).err().unwrap().to_string();
    assert!(message.contains("gridbox_tensor_v1::last_error") && message.contains("`tensor` capability"), "{message}");
}

/// Runs an example through the real binary with its data, then verifies the receipt.
fn run_example(module: std::path::PathBuf, data: &str, trace: &str) -> (String, std::path::PathBuf, tempfile::TempDir) {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let dir = format!("{}/examples/{data}::/input", guests::repo_root().display());
    let output = gridbox_output(&[&"run", &module, &"--capability", &"tensor", &"--trace", &trace, &"--dir", &dir, &"--out", &out]);
    assert!(output.status.success(), "{}", stderr(&output));
    let verified = gridbox_output(&[&"verify", &out.join("receipt.json"), &"--module", &module, &"--dir", &dir]);
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stdout));
    (String::from_utf8_lossy(&output.stdout).into_owned(), out, work)
}

#[test]
fn the_mlp_example_classifies_as_numpy_did_and_verifies() {
    let (stdout, out, _work) = run_example(guests::MLP.path(), "mlp/data", "full");
    // examples/mlp/train.py reports held-out accuracy 0.9535 (246 of 258) in numpy.
    assert!(stdout.contains("258 points, 3 classes: 246 correct, accuracy 0.9535"), "{stdout}");
    assert_eq!(std::fs::read_to_string(out.join("output/predictions.csv")).unwrap().lines().count(), 259);
}

#[test]
fn the_transformer_example_runs_and_verifies_at_both_trace_levels() {
    let (full, full_out, _a) = run_example(guests::TRANSFORMER.path(), "transformer/data", "full");
    let (readback, readback_out, _b) = run_example(guests::TRANSFORMER.path(), "transformer/data", "readback");
    assert!(full.contains("output shape [16, 64]"), "{full}");
    assert_eq!(full, readback);
    let hidden = |dir: &std::path::Path| std::fs::read(dir.join("output/hidden.bin")).unwrap();
    assert_eq!(hidden(&full_out), hidden(&readback_out));
    let level = |dir: &std::path::Path| {
        let receipt: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("receipt.json")).unwrap()).unwrap();
        (receipt["trace"]["level"].as_str().unwrap().to_string(), receipt["trace"]["length"].as_u64().unwrap())
    };
    let ((full_level, full_len), (readback_level, readback_len)) = (level(&full_out), level(&readback_out));
    assert_eq!((full_level.as_str(), readback_level.as_str()), ("full", "readback"));
    assert!(full_len > readback_len, "{full_len} vs {readback_len}");
}

/// With a GPU: every example's receipt made on CUDA verifies by a CPU replay, field for field.
/// Without one: asking for CUDA is a clear error, never a silent CPU run.
#[test]
fn cuda_receipts_verify_on_the_cpu_or_asking_for_cuda_without_one_is_an_error() {
    let work = tempfile::tempdir().unwrap();
    let has_gpu = gridbox_compute::Backend::cuda_device_count().map(|n| n > 0).unwrap_or(false);
    if !has_gpu {
        let output = gridbox_output(&[&"run", &guests::PROBE.path(), &"--device", &"cuda"]);
        assert_eq!(output.status.code(), Some(136), "{}", stderr(&output));
        assert!(stderr(&output).contains("--device cuda:0"), "{}", stderr(&output));
        println!("SKIPPED the CUDA half of this test: no CUDA device; only the refusal was checked");
        return;
    }
    for (module, data) in [(guests::MLP.path(), "mlp/data"), (guests::TRANSFORMER.path(), "transformer/data")] {
        let dir = format!("{}/examples/{data}::/input", guests::repo_root().display());
        let (cuda_out, cpu_out) = (work.path().join(format!("{data}-cuda")), work.path().join(format!("{data}-cpu")));
        for (device, out) in [("cuda", &cuda_out), ("cpu", &cpu_out)] {
            let output = gridbox_output(&[&"run", &module, &"--device", &device, &"--capability", &"tensor", &"--dir", &dir, &"--out", out]);
            assert!(output.status.success(), "{device}: {}", stderr(&output));
        }
        let receipt = |dir: &std::path::Path| -> serde_json::Value { serde_json::from_slice(&std::fs::read(dir.join("receipt.json")).unwrap()).unwrap() };
        let (on_cuda, on_cpu) = (receipt(&cuda_out), receipt(&cpu_out));
        assert!(on_cuda["backend"].as_str().unwrap().starts_with("cuda:"), "{}", on_cuda["backend"]);
        for field in ["outcome", "fuel_used", "stdout", "stderr", "outputs", "trace"] {
            assert_eq!(on_cuda[field], on_cpu[field], "{data}: {field} differs between CUDA and CPU");
        }
        let verified = gridbox_output(&[&"verify", &cuda_out.join("receipt.json"), &"--module", &module, &"--dir", &dir, &"--device", &"cpu"]);
        assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stdout));
    }
}

/// The device line ("gridbox: tensor ops on ...") is for jobs that use tensors, or when
/// `--device` was asked for; it never comes before an error that has nothing to do with it.
#[test]
fn the_device_line_shows_only_for_tensor_jobs_or_an_explicit_device_and_never_before_unrelated_errors() {
    let probe = guests::PROBE.path();
    let device_line = |output: &std::process::Output| stderr(output).lines().any(|line| line.starts_with("gridbox: tensor ops on"));

    let plain = gridbox_output(&[&"run", &probe, &"--", &"hello"]);
    assert!(plain.status.success(), "{}", stderr(&plain));
    assert!(!device_line(&plain), "no tensors, no --device: {}", stderr(&plain));

    let tensors = gridbox_output(&[&"run", &probe, &"--capability", &"tensor", &"--", &"hello"]);
    assert!(tensors.status.success() && device_line(&tensors), "{}", stderr(&tensors));
    let asked = gridbox_output(&[&"run", &probe, &"--device", &"cpu", &"--", &"hello"]);
    assert!(asked.status.success() && stderr(&asked).contains("gridbox: tensor ops on cpu"), "{}", stderr(&asked));

    // Errors of the job's own files and manifest: only the error, even for a tensor job.
    let work = tempfile::tempdir().unwrap();
    let missing = format!("x={}", work.path().join("missing.txt").display());
    let not_wasm = work.path().join("job.wasm");
    std::fs::write(&not_wasm, b"(module)").unwrap();
    let cases: [Vec<&dyn AsRef<std::ffi::OsStr>>; 3] = [
        vec![&"run", &probe, &"--capability", &"tensor", &"--input", &missing],
        vec![&"run", &probe, &"--capability", &"tensor", &"--limit", &"no_such_limit=1"],
        vec![&"run", &not_wasm, &"--capability", &"tensor"],
    ];
    for args in cases {
        let output = gridbox_output(&args);
        assert_eq!(output.status.code(), Some(136), "{}", stderr(&output));
        assert!(!device_line(&output), "{}", stderr(&output));
        assert!(stderr(&output).starts_with("gridbox: error:"), "the error comes first: {}", stderr(&output));
    }
}
