//! The Llama job (examples/llama) through the real binary, on small models with deterministic
//! random weights made by scripts/llama/make_model.py: logits and greedy tokens against the
//! independent float64 NumPy reference (scripts/llama/reference.py), for f32, f16 and bf16
//! weights; seeded sampling repeatable; receipts that verify by replay; bad model files refused
//! by name. Needs python3 with numpy and tokenizers.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use crate::guests::{self, repo_root};

const PROMPT: &str = "Once upon a time, 42 models";

/// Runs a script of scripts/llama, failing with one line that says what to install.
fn python(script: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
    let mut command = Command::new("python3");
    command.arg(repo_root().join("scripts/llama").join(script));
    for arg in args {
        command.arg(arg);
    }
    let output = command.output().unwrap_or_else(|e| panic!("cannot run python3 ({e}): install Python 3, then `python3 -m pip install numpy tokenizers`"));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        !err.contains("ModuleNotFoundError"),
        "python3 lacks a module: `python3 -m pip install numpy tokenizers` ({})",
        err.lines().last().unwrap_or_default()
    );
    assert!(output.status.success(), "{script}: {err}");
    String::from_utf8(output.stdout).unwrap()
}

fn make_model(dir: &Path, extra: &[&str]) -> PathBuf {
    let folder = dir.join("model");
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&folder];
    for arg in extra {
        args.push(arg);
    }
    python("make_model.py", &args);
    folder
}

/// Runs the job; returns the out folder.
fn generate(work: &Path, name: &str, model: &Path, flags: &[&str]) -> PathBuf {
    let out = work.join(name);
    let mount = format!("{}::/model", model.display());
    let module = guests::LLAMA.path();
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"run", &module];
    args.extend([&"--capability" as &dyn AsRef<std::ffi::OsStr>, &"tensor", &"--ro-dir", &mount, &"--out", &out, &"--", &"--prompt", &PROMPT]);
    for flag in flags {
        args.push(flag);
    }
    let run = gridbox_output(&args);
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    out
}

fn logits(out: &Path) -> Vec<f32> {
    std::fs::read(out.join("output/logits.bin")).unwrap().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn token_ids(out: &Path) -> Vec<u32> {
    std::fs::read_to_string(out.join("output/tokens.txt")).unwrap().split_whitespace().map(|t| t.parse().unwrap()).collect()
}

/// The job's logits and greedy tokens against the float64 reference, for one weight dtype.
fn matches_the_reference(dtype: &str, tie: bool) {
    let work = tempfile::tempdir().unwrap();
    let mut extra = vec!["--dtype", dtype, "--layers", "3", "--seed", "11"];
    if tie {
        extra.push("--tie");
    }
    let model = make_model(work.path(), &extra);
    let steps = 6;
    let out = generate(work.path(), "out", &model, &["--tokens", &steps.to_string()]);
    let reference: serde_json::Value = serde_json::from_str(&python("reference.py", &[&model, &"--prompt", &PROMPT, &"--tokens", &steps.to_string()])).unwrap();
    let prompt: Vec<u32> = serde_json::from_value(reference["prompt_ids"].clone()).unwrap();
    let expected: Vec<u32> = serde_json::from_value(reference["tokens"].clone()).unwrap();
    let ids = token_ids(&out);
    assert_eq!(ids[..prompt.len()], prompt[..], "{dtype}: the prompt's tokens");
    assert_eq!(ids[prompt.len()..], expected[..], "{dtype}: greedy tokens against the float64 reference");
    let ours = logits(&out);
    let rows = reference["logits"].as_array().unwrap();
    let vocab = rows[0].as_array().unwrap().len();
    assert_eq!(ours.len(), steps * vocab);
    let mut worst = 0.0f64;
    for (step, row) in rows.iter().enumerate() {
        let row: Vec<f64> = serde_json::from_value(row.clone()).unwrap();
        let scale = row.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (i, expected) in row.iter().enumerate() {
            let error = (f64::from(ours[step * vocab + i]) - expected).abs() / scale;
            worst = worst.max(error);
        }
    }
    // f32 arithmetic against float64 over a few layers: errors of a few 1e-6 of the logits'
    // scale; 1e-4 leaves room and still catches any wrong op (those are off by O(1)).
    assert!(worst < 1e-4, "{dtype}: logits differ from the reference by {worst:e} of their scale");

    let verify =
        gridbox_output(&[&"verify", &out.join("receipt.json"), &"--module", &guests::LLAMA.path(), &"--ro-dir", &format!("{}::/model", model.display())]);
    assert_eq!(verify.status.code(), Some(0), "{}{}", String::from_utf8_lossy(&verify.stdout), stderr(&verify));
}

#[test]
fn f32_weights_match_the_float64_reference_and_the_receipt_verifies() {
    matches_the_reference("f32", false);
}

#[test]
fn f16_weights_with_a_tied_head_match_the_reference() {
    matches_the_reference("f16", true);
}

#[test]
fn bf16_weights_match_the_reference() {
    matches_the_reference("bf16", false);
}

/// Seeded sampling gives the same tokens and the same receipt twice, and other tokens than
/// another seed (over 12 tokens at temperature 1, the chance of an equal run is negligible).
#[test]
fn seeded_sampling_is_repeatable() {
    let work = tempfile::tempdir().unwrap();
    let model = make_model(work.path(), &["--layers", "1", "--no-tokenizer", "--vocab", "256"]);
    let flags = ["--tokens", "12", "--temperature", "1.0", "--top-k", "40", "--top-p", "0.95", "--seed"];
    let run = |name: &str, seed: &str| {
        let mut all = flags.to_vec();
        all.push(seed);
        generate(work.path(), name, &model, &all)
    };
    let (a, b, c) = (run("a", "5"), run("b", "5"), run("c", "6"));
    assert_eq!(token_ids(&a), token_ids(&b));
    assert_eq!(std::fs::read(a.join("receipt.json")).unwrap().len(), std::fs::read(b.join("receipt.json")).unwrap().len());
    let receipt = |dir: &Path| -> serde_json::Value { serde_json::from_slice(&std::fs::read(dir.join("receipt.json")).unwrap()).unwrap() };
    assert_eq!(receipt(&a)["outputs"], receipt(&b)["outputs"]);
    assert_ne!(token_ids(&a), token_ids(&c), "another seed, other tokens");
    // Without tokenizer.json, one token per byte: the prompt is its UTF-8.
    assert_eq!(token_ids(&a)[..PROMPT.len()], PROMPT.bytes().map(u32::from).collect::<Vec<_>>()[..]);
}

/// Damaged model files: the job fails, naming the file and what is wrong.
#[test]
fn bad_model_files_are_refused_by_name() {
    let work = tempfile::tempdir().unwrap();
    let model = make_model(work.path(), &["--layers", "1", "--no-tokenizer", "--vocab", "256"]);
    let weights = model.join("model.safetensors");
    let good = std::fs::read(&weights).unwrap();
    let config = std::fs::read_to_string(model.join("config.json")).unwrap();
    let mount = format!("{}::/model", model.display());
    let module = guests::LLAMA.path();
    let fails_with = |expected: &str| {
        let run = gridbox_output(&[&"run", &module, &"--capability", &"tensor", &"--ro-dir", &mount, &"--", &"--prompt", &"hi"]);
        assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
        assert!(stderr(&run).contains(expected), "expected {expected:?} in: {}", stderr(&run));
    };
    std::fs::write(&weights, &good[..good.len() - 3]).unwrap();
    fails_with("not a valid safetensors file");
    std::fs::write(&weights, &good[..5]).unwrap();
    fails_with("shorter than the 8-byte header length");
    let mut huge = good.clone();
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&weights, &huge).unwrap();
    fails_with("the header claims");
    std::fs::write(&weights, &good).unwrap();
    std::fs::write(model.join("config.json"), config.replace("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3")).unwrap();
    fails_with("not a multiple of num_key_value_heads");
    std::fs::write(model.join("config.json"), config.replace("\"hidden_size\": 64", "\"hidden_size\": 32")).unwrap();
    fails_with("the config implies");
}
