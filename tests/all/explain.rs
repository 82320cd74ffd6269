//! What `gridbox run` tells a person when a job fails: the panic message, the job's own frames,
//! how much of a limit was used and how to raise it, the inputs that exist, and hints for files
//! that are not wasm or capabilities not asked for. None of it goes into the receipt.

use crate::common::*;
use crate::guests;

fn run(args: &[&dyn AsRef<std::ffi::OsStr>]) -> (Option<i32>, String) {
    // Not `gridbox_output`: the job's own panic message is expected on stderr.
    let output = gridbox().args(args.iter().map(|a| a.as_ref())).output().unwrap();
    (output.status.code(), stderr(&output))
}

#[test]
fn a_panic_is_reported_with_its_message_and_the_jobs_frames() {
    let (code, text) = run(&[&"run", &guests::PROBE.path(), &"--", &"panic", &"the answer is not 41"]);
    assert_eq!(code, Some(134), "{text}");
    assert!(text.contains("gridbox: the job panicked at src/bin/probe.rs:") && text.contains(": the answer is not 41\n"), "{text}");
    assert!(text.contains("gridbox: the job's own frames, innermost first:\ngridbox:     probe"), "{text}");
    assert!(!text.contains("std::rt::lang_start"), "runtime frames are left out: {text}");
}

#[test]
fn a_limit_stop_says_what_was_used_and_how_to_raise_it() {
    let (code, text) = run(&[&"run", &guests::PROBE.path(), &"--limit", &"fuel=100000", &"--", &"work", &"100000000"]);
    assert_eq!(code, Some(135), "{text}");
    assert!(text.contains("it used all 100000 fuel; raise it with `--limit fuel=N`"), "{text}");
    assert!(!text.contains("wasm backtrace"), "{text}");
    let (_, text) = run(&[&"run", &guests::PROBE.path(), &"--limit", &"memory_bytes=1000000", &"--", &"alloc"]);
    assert!(text.contains("the job's memory would grow to ") && text.contains("`--limit memory_bytes=N`"), "{text}");
}

#[test]
fn a_missing_input_is_listed_against_the_inputs_that_exist() {
    let work = tempfile::tempdir().unwrap();
    put(work.path(), "data/present.txt", b"here");
    let dir = format!("{}::/input", work.path().join("data").display());
    let (code, text) = run(&[&"run", &guests::PROBE.path(), &"--dir", &dir, &"--", &"read", &"/input/absent.txt"]);
    assert_eq!(code, Some(134), "{text}");
    assert!(text.contains("the job looked for files that do not exist: /input/absent.txt"), "{text}");
    assert!(text.contains("its inputs are: /input/present.txt"), "{text}");
}

#[test]
fn wrong_files_and_missing_capabilities_say_what_to_do() {
    let work = tempfile::tempdir().unwrap();
    let native = work.path().join("job.wasm");
    std::fs::write(&native, b"\x7fELF\x02\x01\x01rest of a native binary").unwrap();
    let (code, text) = run(&[&"run", &native]);
    assert_eq!(code, Some(136), "{text}");
    assert!(text.contains("a native ELF executable, not WebAssembly: build the job for wasm32-wasip1"), "{text}");
    let (_, text) = run(&[&"run", &guests::TENSOR_PROBE.path()]);
    assert!(text.contains("run with `--capability tensor`"), "{text}");
}
