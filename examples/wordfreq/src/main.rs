//! Word frequencies of every text file under `/input`, written to `/output/freq.tsv`.
//!
//! Build and run it (from the repository root):
//!
//! ```sh
//! cargo build --release --manifest-path examples/Cargo.toml
//! gridbox run examples/target/wasm32-wasip1/release/wordfreq.wasm \
//!     --dir examples/wordfreq/data::/input --out out -- --top 10
//! gridbox verify out/receipt.json --module examples/target/wasm32-wasip1/release/wordfreq.wasm \
//!     --dir examples/wordfreq/data::/input
//! ```
//!
//! Words are maximal runs of alphabetic characters, lowercased. The table is sorted by count,
//! then by word, so the output is the same whatever order the files are listed in.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let top = match args.as_slice() {
        [] => 10,
        [flag, n] if flag == "--top" => match n.parse() {
            Ok(n) => n,
            Err(_) => return fail(&format!("--top takes a number, not {n:?}")),
        },
        _ => return fail("usage: wordfreq [--top N]"),
    };
    let mut files = Vec::new();
    if let Err(e) = collect_files(Path::new("/input"), &mut files) {
        return fail(&format!("cannot list /input: {e}"));
    }
    files.sort();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut total = 0u64;
    for file in &files {
        let text = match std::fs::read(file) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => return fail(&format!("cannot read {}: {e}", file.display())),
        };
        for word in text.split(|c: char| !c.is_alphabetic()).filter(|w| !w.is_empty()) {
            *counts.entry(word.to_lowercase()).or_default() += 1;
            total += 1;
        }
    }
    let mut table: Vec<(&String, &u64)> = counts.iter().collect();
    table.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));

    let mut tsv = String::from("word\tcount\n");
    for (word, count) in &table {
        tsv += &format!("{word}\t{count}\n");
    }
    if let Err(e) = std::fs::write("/output/freq.tsv", tsv) {
        return fail(&format!("cannot write /output/freq.tsv: {e}"));
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{} files, {total} words, {} distinct; top {top}:", files.len(), counts.len());
    for (word, count) in table.iter().take(top) {
        let _ = writeln!(out, "{count:>8}  {word}");
    }
    ExitCode::SUCCESS
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            collect_files(&entry.path(), files)?;
        } else {
            files.push(entry.path());
        }
    }
    Ok(())
}

fn fail(message: &str) -> ExitCode {
    eprintln!("wordfreq: {message}");
    ExitCode::from(2)
}
