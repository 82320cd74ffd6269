//! `gridbox run` then `gridbox verify`: a clean receipt verifies, and every kind of tamper is
//! caught with the field named.

use std::path::{Path, PathBuf};

use crate::common::*;
use crate::guests;

struct Example {
    _work: tempfile::TempDir,
    data: PathBuf,
    out: PathBuf,
    module: PathBuf,
}

fn run_wordfreq() -> Example {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    put(&data, "one.txt", b"the cat sat on the mat");
    put(&data, "more/two.txt", b"The dog chased the cat");
    let module = work.path().join("wordfreq.wasm");
    std::fs::copy(guests::WORDFREQ.path(), &module).unwrap();
    let out = work.path().join("out");
    let output = gridbox_output(&[&"run", &module, &"--dir", &format!("{}::/input", data.display()), &"--out", &out, &"--", &"--top", &"3"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("2 files, 11 words, 7 distinct"));
    assert_eq!(std::fs::read_to_string(out.join("output/freq.tsv")).unwrap().lines().nth(1), Some("the\t4"));
    Example { _work: work, data, out, module }
}

fn verify(example: &Example, extra: &[&dyn AsRef<std::ffi::OsStr>]) -> (Option<i32>, serde_json::Value) {
    let dir = format!("{}::/input", example.data.display());
    let receipt = example.out.join("receipt.json");
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"verify", &receipt, &"--module", &example.module, &"--dir", &dir, &"--json"];
    args.extend_from_slice(extra);
    let output = gridbox_output(&args);
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&output)));
    (output.status.code(), report)
}

fn flip_byte(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let index = offset.min(bytes.len() - 1);
    bytes[index] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

fn assert_caught(example: &Example, field: &str) {
    let (code, report) = verify(example, &[]);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(report["first_mismatch"], field, "{report:#}");
}

#[test]
fn a_clean_run_verifies_with_a_table_and_json() {
    let example = run_wordfreq();
    let (code, report) = verify(&example, &[]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["ok"], true);
    let fields: Vec<&str> = report["checks"].as_array().unwrap().iter().map(|c| c["field"].as_str().unwrap()).collect();
    for field in ["signature", "manifest", "module", "inputs[\"more/two.txt\"]", "outcome", "fuel_used", "stdout", "outputs[\"freq.tsv\"]", "trace.root"] {
        assert!(fields.contains(&field), "{field} not checked: {fields:?}");
    }
    let table =
        gridbox_output(&[&"verify", &example.out.join("receipt.json"), &"--module", &example.module, &"--dir", &format!("{}::/input", example.data.display())]);
    assert!(table.status.success());
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("field") && text.contains("expected") && text.contains("signature"), "{text}");
}

#[test]
fn a_flipped_output_byte_is_caught() {
    let example = run_wordfreq();
    flip_byte(&example.out.join("output/freq.tsv"), 12);
    assert_caught(&example, "delivered outputs[\"freq.tsv\"]");
}

#[test]
fn a_flipped_stdout_byte_is_caught() {
    let example = run_wordfreq();
    flip_byte(&example.out.join("stdout"), 3);
    assert_caught(&example, "delivered stdout");
}

#[test]
fn a_flipped_input_byte_is_caught() {
    let example = run_wordfreq();
    flip_byte(&example.data.join("more/two.txt"), 0);
    assert_caught(&example, "inputs[\"more/two.txt\"]");
}

#[test]
fn a_flipped_module_byte_is_caught() {
    let example = run_wordfreq();
    flip_byte(&example.module, 5000);
    assert_caught(&example, "module");
}

#[test]
fn an_edited_receipt_is_caught() {
    let example = run_wordfreq();
    let path = example.out.join("receipt.json");
    let mut receipt: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    receipt["fuel_used"] = serde_json::json!(receipt["fuel_used"].as_u64().unwrap() - 1);
    std::fs::write(&path, serde_json::to_vec(&receipt).unwrap()).unwrap();
    assert_caught(&example, "signature");
}

#[test]
fn a_flipped_receipt_byte_is_caught() {
    let example = run_wordfreq();
    let path = example.out.join("receipt.json");
    let text = std::fs::read_to_string(&path).unwrap();
    // Flip one hex digit of the committed stdout hash.
    let at = text.find("\"stdout\":{\"blake3\":\"").unwrap() + 20;
    let mut bytes = text.into_bytes();
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    std::fs::write(&path, bytes).unwrap();
    assert_caught(&example, "signature");
}

#[test]
fn receipts_carry_key_signature_and_an_empty_trace() {
    let example = run_wordfreq();
    let receipt: serde_json::Value = serde_json::from_slice(&std::fs::read(example.out.join("receipt.json")).unwrap()).unwrap();
    assert_eq!(receipt["public_key"].as_str().unwrap().len(), 64);
    assert_eq!(receipt["signature"].as_str().unwrap().len(), 128);
    assert_eq!(receipt["trace"], serde_json::json!({"root": "0".repeat(64), "length": 0, "level": "full", "log_root": "0".repeat(64)}));
}

#[test]
fn traps_exit_134_with_a_receipt_that_verifies() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let output = gridbox_output(&[&"run", &guests::PROBE.path(), &"--out", &out, &"--", &"trap"]);
    assert_eq!(output.status.code(), Some(134), "{}", stderr(&output));
    let verified = gridbox_output(&[&"verify", &out.join("receipt.json"), &"--module", &guests::PROBE.path()]);
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stdout));
    let exited = gridbox_output(&[&"run", &guests::PROBE.path(), &"--", &"exit", &"7"]);
    assert_eq!(exited.status.code(), Some(7));
}

#[test]
fn a_non_empty_out_dir_is_refused_before_running() {
    let work = tempfile::tempdir().unwrap();
    put(work.path(), "out/precious.txt", b"keep me");
    let output = gridbox_output(&[&"run", &guests::PROBE.path(), &"--out", &work.path().join("out")]);
    assert_eq!(output.status.code(), Some(136));
    assert!(stderr(&output).contains("not empty"), "{}", stderr(&output));
    assert_eq!(std::fs::read(work.path().join("out/precious.txt")).unwrap(), b"keep me");
}

#[test]
fn a_malformed_receipt_is_an_error_not_a_mismatch() {
    let work = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8], &str); 3] = [
        ("garbage", b"{not json", "not a gridbox receipt"),
        ("unknown key", br#"{"format":"gridbox-receipt/2","extra":1}"#, "not a gridbox receipt"),
        ("future format", br#"{"format":"gridbox-receipt/9"}"#, "is not supported"),
    ];
    for (what, bytes, expected) in cases {
        let path = work.path().join("receipt.json");
        std::fs::write(&path, bytes).unwrap();
        let output = gridbox_output(&[&"verify", &path, &"--module", &guests::PROBE.path()]);
        assert_eq!(output.status.code(), Some(2), "{what}: {}", stderr(&output));
        assert!(stderr(&output).contains(expected), "{what}: {}", stderr(&output));
    }
}

#[test]
fn a_replay_that_outlasts_the_verifiers_time_limit_is_not_a_verdict() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let probe = guests::PROBE.path();
    let ran = gridbox_output(&[&"run", &probe, &"--limit", &"fuel=300_000_000", &"--out", &out, &"--", &"spin"]);
    assert_eq!(ran.status.code(), Some(135), "{}", stderr(&ran));
    let verified = gridbox_output(&[&"verify", &out.join("receipt.json"), &"--module", &probe, &"--time-limit", &"0"]);
    assert_eq!(verified.status.code(), Some(2), "{}", stderr(&verified));
    assert!(stderr(&verified).contains("did not end within"), "{}", stderr(&verified));
}

/// The table, without `--json`.
fn verify_table(example: &Example, extra: &[&dyn AsRef<std::ffi::OsStr>]) -> (Option<i32>, String) {
    let dir = format!("{}::/input", example.data.display());
    let receipt = example.out.join("receipt.json");
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"verify", &receipt, &"--module", &example.module, &"--dir", &dir];
    args.extend_from_slice(extra);
    let output = gridbox_output(&args);
    (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
fn the_default_table_fits_100_columns_with_short_hashes_and_wide_shows_them_whole() {
    let example = run_wordfreq();
    let receipt: serde_json::Value = serde_json::from_slice(&std::fs::read(example.out.join("receipt.json")).unwrap()).unwrap();
    let stdout_hash = receipt["stdout"]["blake3"].as_str().unwrap().to_string();
    let module_hash = receipt["module"]["blake3"].as_str().unwrap().to_string();

    let (code, table) = verify_table(&example, &[]);
    assert_eq!(code, Some(0), "{table}");
    for line in table.lines() {
        assert!(line.chars().count() <= 100, "{} columns: {line}", line.chars().count());
    }
    let header: Vec<&str> = table.lines().next().unwrap().split("  ").filter(|cell| !cell.is_empty()).map(str::trim).collect();
    assert_eq!(header, ["field", "expected", "got", "ok", "checked by"], "{table}");
    assert!(!table.contains(&stdout_hash) && !table.contains(&module_hash), "no hash in full by default:\n{table}");
    let stdout_row = table.lines().find(|line| line.starts_with("stdout ")).unwrap_or_else(|| panic!("{table}"));
    assert!(stdout_row.contains(&format!("{}…", &stdout_hash[..12])) && stdout_row.contains(" B)"), "{stdout_row}");
    assert!(stdout_row.trim_end().ends_with("yes  replay"), "{stdout_row}");
    let signer_row = table.lines().find(|line| line.starts_with("signer ")).unwrap_or_else(|| panic!("{table}"));
    assert!(signer_row.trim_end().ends_with("-    claim"), "the provider's word, checked by nothing: {signer_row}");

    let (code, wide) = verify_table(&example, &[&"--wide"]);
    assert_eq!(code, Some(0), "{wide}");
    assert!(wide.contains(&stdout_hash) && wide.contains(&module_hash), "--wide has every hash in full:\n{wide}");
    assert!(wide.lines().any(|line| line.chars().count() > 100), "{wide}");

    // A mismatch stands out: NO, and two short hashes that differ.
    flip_byte(&example.out.join("output/freq.tsv"), 12);
    let (code, table) = verify_table(&example, &[]);
    assert_eq!(code, Some(1), "{table}");
    let row = table.lines().find(|line| line.starts_with("delivered outputs[\"freq.tsv\"]")).unwrap_or_else(|| panic!("{table}"));
    assert!(row.chars().count() <= 100 && row.contains("  NO  "), "{row}");
    let hashes: Vec<&str> = row.split_whitespace().filter(|word| word.ends_with('…')).collect();
    assert_eq!(hashes.len(), 2, "{row}");
    assert_ne!(hashes[0], hashes[1], "{row}");
}

#[test]
fn replace_swaps_an_earlier_runs_results_and_nothing_else() {
    let work = tempfile::tempdir().unwrap();
    let probe = guests::PROBE.path();
    let out = work.path().join("out");
    assert!(gridbox_output(&[&"run", &probe, &"-q", &"--out", &out, &"--", &"hello"]).status.success());
    let first = std::fs::read(out.join("receipt.json")).unwrap();
    // Without --replace a non-empty folder is refused, and the message says what to do.
    let refused = gridbox_output(&[&"run", &probe, &"-q", &"--out", &out, &"--", &"exit", &"3"]);
    assert_eq!(refused.status.code(), Some(136));
    assert!(stderr(&refused).contains("--replace"), "{}", stderr(&refused));
    let replaced = gridbox_output(&[&"run", &probe, &"-q", &"--out", &out, &"--replace", &"--", &"exit", &"3"]);
    assert_eq!(replaced.status.code(), Some(3), "{}", stderr(&replaced));
    assert_ne!(std::fs::read(out.join("receipt.json")).unwrap(), first);
    let leftovers: Vec<_> = std::fs::read_dir(work.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, [std::ffi::OsString::from("out")], "the earlier results are gone, nothing else is left");
    // A folder that is not an earlier run's results is never replaced.
    let other = work.path().join("notes");
    put(&other, "mine.txt", b"keep me");
    let refused = gridbox_output(&[&"run", &probe, &"-q", &"--out", &other, &"--replace", &"--", &"hello"]);
    assert_eq!(refused.status.code(), Some(136));
    assert!(stderr(&refused).contains("holds no receipt.json"), "{}", stderr(&refused));
    assert_eq!(std::fs::read(other.join("mine.txt")).unwrap(), b"keep me");
}
