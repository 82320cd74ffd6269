//! The wasm32-wasip1 programs the tests run, built from the sources in this repository the
//! first time a test asks for one: the test programs in `tests/programs` and the jobs in
//! `examples/`.
//!
//! A nested cargo builds each workspace with its own target directory (`target/wasm-guests`,
//! so it never waits on the outer build's lock) and a clean environment (so the outer build's
//! flags and jobserver do not leak into it). Cargo itself decides what is stale, so a second
//! test run costs a no-op build. The benchmarks include this file too.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A guest program: the workspace it lives in and its binary's name.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Guest {
    workspace: &'static str,
    bin: &'static str,
}

/// Prints what it is asked to: a line, an exit code, a trap, a limit. See tests/programs.
pub(crate) const PROBE: Guest = Guest { workspace: "tests/programs", bin: "probe" };
/// A float-heavy pair loop (`pairs N ROUNDS`). See tests/programs.
pub(crate) const PAIRS: Guest = Guest { workspace: "tests/programs", bin: "pairs" };
/// Calls every bridge op of the first release through the SDK. See tests/programs.
pub(crate) const TENSOR_PROBE: Guest = Guest { workspace: "tests/programs", bin: "tensor-probe" };
/// Calls the ops language models need (silu, argmax, cast, rope), which a manifest must name.
pub(crate) const MODEL_PROBE: Guest = Guest { workspace: "tests/programs", bin: "model-probe" };
/// Word frequencies over /input (examples/wordfreq).
pub(crate) const WORDFREQ: Guest = Guest { workspace: "examples", bin: "wordfreq" };
/// An MLP classifier on the tensor bridge (examples/mlp).
pub(crate) const MLP: Guest = Guest { workspace: "examples", bin: "mlp" };
/// One transformer block on the tensor bridge (examples/transformer).
pub(crate) const TRANSFORMER: Guest = Guest { workspace: "examples", bin: "transformer" };
/// Column statistics of a CSV table, configured by JSON, arguments and environment (examples/csvstats).
pub(crate) const CSVSTATS: Guest = Guest { workspace: "examples", bin: "csvstats" };

/// Llama-architecture text generation from a model folder (examples/llama).
pub(crate) const LLAMA: Guest = Guest { workspace: "examples", bin: "llama" };

/// The repository's root.
pub(crate) fn repo_root() -> PathBuf {
    // This file is tests/all/guests.rs, and both the tests and the benches are compiled by a
    // package two levels below the root (crates/NAME).
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the repository root exists")
}

impl Guest {
    /// The built module's path, building its workspace first if this process has not yet.
    pub(crate) fn path(self) -> PathBuf {
        static PROGRAMS: OnceLock<Result<PathBuf, String>> = OnceLock::new();
        static EXAMPLES: OnceLock<Result<PathBuf, String>> = OnceLock::new();
        let cell = if self.workspace == "examples" { &EXAMPLES } else { &PROGRAMS };
        let target = cell.get_or_init(|| build_workspace(&repo_root().join(self.workspace)));
        match target {
            Ok(target) => target.join(format!("{}.wasm", self.bin)),
            Err(message) => panic!("{message}"),
        }
    }

    /// The built module's bytes (the benchmarks read them).
    #[allow(dead_code)]
    pub(crate) fn bytes(self) -> Vec<u8> {
        let path = self.path();
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }
}

/// Builds `workspace` for wasm32-wasip1 and returns the folder its modules are in.
fn build_workspace(workspace: &Path) -> Result<PathBuf, String> {
    let target_dir = repo_root().join("target").join("wasm-guests");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(workspace).args(["build", "--release", "--locked", "--quiet", "--target", "wasm32-wasip1", "--target-dir"]).arg(&target_dir);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let keep = matches!(key.as_str(), "CARGO_HOME" | "CARGO_NET_OFFLINE") || key.starts_with("CARGO_REGISTRIES");
        if (key.starts_with("CARGO_") && !keep) || key.starts_with("RUSTFLAGS") || key == "RUSTC_WORKSPACE_WRAPPER" {
            command.env_remove(&key);
        }
    }
    let status = command.status().map_err(|e| format!("cannot run cargo to build {}: {e}", workspace.display()))?;
    if !status.success() {
        return Err(format!(
            "building {} for wasm32-wasip1 failed (cargo says why above; a missing target is fixed by `rustup target add wasm32-wasip1`)",
            workspace.display()
        ));
    }
    Ok(target_dir.join("wasm32-wasip1").join("release"))
}
