//! Attacks that once took a provider down, as hand-written modules through the real binary:
//! each must end at once with an outcome and a receipt, never an abort, a hang or free work.
//! (The classes behind them are tested with thousands of generated inputs next to the code:
//! gridbox-compute's session tests and gridbox-core's WASI tests.)

use std::path::Path;

use crate::common::*;

fn run_wat(work: &Path, wat: &str, extra: &[&str]) -> std::process::Output {
    let module = work.join("job.wasm");
    std::fs::write(&module, wat::parse_str(wat).unwrap()).unwrap();
    let out = work.join("out");
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"run", &module, &"--out", &out];
    for arg in extra {
        args.push(arg);
    }
    gridbox_output(&args)
}

/// An empty tensor reshaped to dims whose leading product is 2^31 * 2^31, then summed, sliced
/// and concatenated over them: the 817-byte job that aborted (256 GiB reserve) or pinned a CPU.
#[test]
fn empty_tensors_with_astronomical_dims_end_at_once() {
    let work = tempfile::tempdir().unwrap();
    // Each failing call exits with 10 x its step + the ABI code, so a failure names itself.
    let wat = r#"(module
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (import "gridbox_tensor_v1" "create" (func $create (param i32 i32 i32 i32 i32 i32) (result i32)))
      (import "gridbox_tensor_v1" "reshape" (func $reshape (param i32 i32 i32 i32 i32) (result i32)))
      (import "gridbox_tensor_v1" "sum" (func $sum (param i32 i32 i32 i32 i32) (result i32)))
      (import "gridbox_tensor_v1" "slice" (func $slice (param i32 i32 i32 i32 i32) (result i32)))
      (import "gridbox_tensor_v1" "concat" (func $concat (param i32 i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      ;; shape [0] at 0; reshape params [2^31, 2^31, 0] at 64; sum params [axis 1, keepdims 0] at 128;
      ;; slice params [axis 1, start 0, end 2^31] at 192; concat params [axis 2] at 256
      ;; (along axis 1 the result would be 2^32 long, above MAX_DIM: shape_mismatch).
      (data (i32.const 64) "\00\00\00\80\00\00\00\00\00\00\00\80\00\00\00\00\00\00\00\00\00\00\00\00")
      (data (i32.const 128) "\01\00\00\00\00\00\00\00\00\00\00\00\00\00\00\00")
      (data (i32.const 192) "\01\00\00\00\00\00\00\00\00\00\00\00\00\00\00\00\00\00\00\80\00\00\00\00")
      (data (i32.const 256) "\02\00\00\00\00\00\00\00")
      (func $check (param $step i32) (param $code i32)
        (if (local.get $code) (then (call $exit (i32.add (i32.mul (local.get $step) (i32.const 10)) (local.get $code))))))
      (func (export "_start")
        ;; handles: created at 512, reshaped at 516, summed at 520, sliced at 524, joined at 532
        (call $check (i32.const 1) (call $create (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 16) (i32.const 0) (i32.const 512)))
        (call $check (i32.const 2) (call $reshape (i32.const 512) (i32.const 1) (i32.const 64) (i32.const 3) (i32.const 516)))
        (call $check (i32.const 3) (call $sum (i32.const 516) (i32.const 1) (i32.const 128) (i32.const 2) (i32.const 520)))
        (call $check (i32.const 4) (call $slice (i32.const 516) (i32.const 1) (i32.const 192) (i32.const 3) (i32.const 524)))
        (i32.store (i32.const 600) (i32.load (i32.const 516)))
        (i32.store (i32.const 604) (i32.load (i32.const 516)))
        (call $check (i32.const 5) (call $concat (i32.const 600) (i32.const 2) (i32.const 256) (i32.const 1) (i32.const 532)))))"#;
    let output = run_wat(work.path(), wat, &["--capability", "tensor", "--device", "cpu"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(work.path().join("out/receipt.json").exists());
}

/// One `random_get` of 64 MiB used to cost about 4 fuel and seconds of host work; it now costs
/// a unit per byte, paid before any byte is made.
#[test]
fn random_bytes_are_paid_for_before_they_are_made() {
    let work = tempfile::tempdir().unwrap();
    let wat = r#"(module
      (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
      (memory (export "memory") 1025)
      (func (export "_start") (drop (call $random_get (i32.const 0) (i32.const 67108864)))))"#;
    let output = run_wat(work.path(), wat, &["--limit", "fuel=1000000"]);
    assert_eq!(output.status.code(), Some(135), "{}", stderr(&output));
    assert!(stderr(&output).contains("fuel"), "{}", stderr(&output));
    let receipt = std::fs::read_to_string(work.path().join("out/receipt.json")).unwrap();
    assert!(receipt.contains(r#""limit":"fuel""#), "{receipt}");
}

/// Output names that are ordinary on Linux but awkward elsewhere (a backslash, names that differ
/// only in case) are written as they are, and the receipt with them verifies.
#[test]
fn awkward_output_names_are_written_and_verify() {
    let work = tempfile::tempdir().unwrap();
    let wat = r#"(module
      (import "wasi_snapshot_preview1" "path_open"
        (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 1)
      (data (i32.const 0) "a\\b")
      (data (i32.const 16) "Case")
      (data (i32.const 32) "case")
      (func (export "_start")
        ;; path_open(fd 4 = /output, dirflags 0, path, len, O_CREAT, rights all, inheriting all, 0, &fd)
        (if (call $open (i32.const 4) (i32.const 0) (i32.const 0) (i32.const 3) (i32.const 1) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 64))
          (then (call $exit (i32.const 11))))
        (if (call $open (i32.const 4) (i32.const 0) (i32.const 16) (i32.const 4) (i32.const 1) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 64))
          (then (call $exit (i32.const 12))))
        (if (call $open (i32.const 4) (i32.const 0) (i32.const 32) (i32.const 4) (i32.const 1) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 64))
          (then (call $exit (i32.const 13))))))"#;
    let output = run_wat(work.path(), wat, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let out = work.path().join("out");
    for name in ["a\\b", "Case", "case"] {
        assert!(out.join("output").join(name).is_file(), "{name} was written");
    }
    let verify = gridbox_output(&[&"verify", &out.join("receipt.json"), &"--module", &work.path().join("job.wasm")]);
    assert!(verify.status.success(), "{}", stderr(&verify));
}
