//! The BPE reader against Hugging Face `tokenizers` itself: a tokenizer trained by it
//! (scripts/llama/make_model.py), texts encoded by both, ids compared token for token.
//! Needs python3 with numpy and tokenizers.
#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use gridbox_models::Bpe;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python(script: &str, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new("python3")
        .arg(repo().join(script))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}): install Python 3 with `python3 -m pip install numpy tokenizers`"));
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("ModuleNotFoundError") {
        panic!("python3 lacks a module: install them with `python3 -m pip install numpy tokenizers` ({})", stderr.lines().last().unwrap_or_default());
    }
    assert!(output.status.success(), "{script} failed: {stderr}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn encodes_as_hugging_face_tokenizers_does() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().to_str().unwrap();
    python("scripts/llama/make_model.py", &[folder, "--layers", "1", "--vocab", "600"], None);
    let tokenizer_path = dir.path().join("tokenizer.json");
    let bpe = Bpe::from_json(&std::fs::read(&tokenizer_path).unwrap()).unwrap();
    let texts = [
        "The quick brown fox jumps over the lazy dog.",
        "  leading spaces, trailing spaces   ",
        "tabs\tand\nnewlines\n\n  indented\r\n",
        "Numbers 1234567 and 3.14159, 2026-12-01!",
        "It's they'll we've I'm you'd don't CAN'T 's",
        "Unicode: café naïve Zürich São Paulo Ελληνικά русский 日本語 🙂🙂",
        "<|endoftext|>special<|im_start|>user\nhi<|im_end|>",
        "punctuation!!! ... ??? --- ((brackets)) [x] {y} 'quoted' \"double\"",
        "def main():\n    print('hello, world')\n    return 0\n",
        "a",
        " ",
        "",
        "x y  z   w    ",
        "unseen words: zyzzyva quixotic xylophone",
    ];
    let request = serde_json::json!({"tokenizer": tokenizer_path, "texts": texts});
    let reply: serde_json::Value = serde_json::from_str(&python("scripts/llama/hf_encode.py", &[], Some(&request.to_string()))).unwrap();
    for (i, text) in texts.iter().enumerate() {
        let expected: Vec<u32> = serde_json::from_value(reply["ids"][i].clone()).unwrap();
        let ours = bpe.encode(text).unwrap();
        assert_eq!(ours, expected, "encoding {text:?}");
        let decoded = reply["decoded"][i].as_str().unwrap();
        assert_eq!(bpe.decode(&ours).unwrap(), decoded, "decoding {text:?}");
    }
}
