//! docs/first-job.md, run as written: the commands of its ```` ```sh first-job ```` blocks, in
//! order, by bash in a fresh temporary folder, with the `gridbox` these tests built first on
//! `PATH`. `gridbox new` writes a project whose build needs nothing but the crates it copies in,
//! so the test runs offline; then the guide's run, manifest, signed run and verify must succeed
//! and leave what the guide says they leave.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use gridbox_core::Digest;

use crate::guests::repo_root;

/// The info string that marks the guide's command blocks the test runs.
const MARK: &str = "```sh first-job";

/// The lines of every marked block of `guide`, in order, and how many blocks there were.
fn marked_commands(guide: &str) -> (String, usize) {
    let (mut script, mut blocks, mut inside) = (String::new(), 0, false);
    for line in guide.lines() {
        let fence = line.trim();
        if inside && fence == "```" {
            inside = false;
        } else if inside {
            script.push_str(line);
            script.push('\n');
        } else if fence == MARK {
            inside = true;
            blocks += 1;
        }
    }
    assert!(!inside, "a ```sh first-job block is not closed");
    (script, blocks)
}

#[test]
fn marked_blocks_are_extracted_exactly() {
    let guide = "text\n```sh first-job\na \\\n  b\n```\n```sh\nnot this\n```\n  ```sh first-job\n  c\n  ```\n```text\nnor this\n```\n";
    assert_eq!(marked_commands(guide), ("a \\\n  b\n  c\n".to_string(), 2));
}

#[test]
fn the_first_job_guide_runs_as_written() {
    let guide = std::fs::read_to_string(repo_root().join("docs/first-job.md")).unwrap();
    let (commands, blocks) = marked_commands(&guide);
    for step in ["gridbox new ", "cargo build --release", "gridbox run ", "gridbox manifest ", "gridbox keygen ", "gridbox verify "] {
        assert!(commands.contains(step), "the guide's tested commands lack `{step}`:\n{commands}");
    }
    // The project's name, as the guide gives it to `gridbox new`.
    let name = commands.split("gridbox new ").nth(1).and_then(|rest| rest.split_whitespace().next()).unwrap().to_string();

    let work = tempfile::tempdir().unwrap();
    let started = Instant::now();
    // -x: on failure, the output shows which of the guide's commands failed.
    let output = guide_shell(work.path()).arg("-c").arg(format!("set -euxo pipefail\n{commands}")).output().expect("run bash");
    let elapsed = started.elapsed();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the guide's commands failed ({}):\n{text}", output.status);
    assert!(!text.contains("panicked"), "{text}");
    eprintln!("docs/first-job.md: {blocks} blocks ran in {:.1} s", elapsed.as_secs_f64());

    // What the guide says each step leaves.
    let project = work.path().join(&name);
    let module = project.join(format!("target/wasm32-wasip1/release/{name}.wasm"));
    let summary = std::fs::read_to_string(project.join("first-run/output/summary.csv")).unwrap();
    assert!(summary.starts_with("column,mean,std,corr_"), "{summary}");
    assert_eq!(summary.lines().count(), 5, "a header and one line per column of data/data.csv: {summary}");
    let manifest = std::fs::read_to_string(project.join("job.toml")).unwrap();
    assert!(manifest.contains(&format!("module = \"{}\"", Digest::of(&std::fs::read(&module).unwrap()))), "job.toml names the built module:\n{manifest}");
    assert_eq!(std::fs::read(project.join("out/output/summary.csv")).unwrap(), summary.as_bytes(), "the signed run gives the same bytes");
    assert!(project.join("provider.key.pub").is_file());
    assert!(text.contains("gridbox: receipt verified: every field matches"), "{text}");
}

/// bash in `dir`, with the `gridbox` under test and then the `cargo` running the tests first on
/// `PATH`, and without the outer cargo's environment (its target folder, flags, jobserver and
/// package variables would change the guide's `cargo build`), offline: the project must build
/// from what `gridbox new` copied into it.
fn guide_shell(dir: &Path) -> Command {
    let gridbox = PathBuf::from(env!("CARGO_BIN_EXE_gridbox"));
    let cargo = std::env::var_os("CARGO").map(PathBuf::from);
    let mut path = vec![gridbox.parent().unwrap().to_path_buf()];
    path.extend(cargo.as_deref().and_then(Path::parent).map(Path::to_path_buf));
    path.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    let mut command = Command::new("bash");
    command.current_dir(dir).env("PATH", std::env::join_paths(path).unwrap());
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if (key.starts_with("CARGO_") && key != "CARGO_HOME") || key == "CARGO" || key.starts_with("RUSTFLAGS") || key == "RUSTC_WORKSPACE_WRAPPER" {
            command.env_remove(&key);
        }
    }
    command.env("CARGO_NET_OFFLINE", "true").env_remove("RUST_BACKTRACE");
    command
}
