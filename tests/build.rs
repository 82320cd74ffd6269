//! Builds the guest programs (tests/programs) and the examples workspace for wasm32-wasip1, so
//! that integration tests run real jobs compiled from the sources in this repository.
//!
//! A nested cargo gets its own target directory (so it never waits on the outer build's lock)
//! and a clean environment (so the outer build's flags and jobserver do not leak into it).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("tests/ sits in the workspace root").to_path_buf();
    let target_dir = root.join("target").join("wasm-guests");
    // The guests link the SDK and the ABI: rebuild them when those change.
    for shared in ["guest-sdk/src", "guest-sdk/Cargo.toml", "abi/src", "abi/Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", root.join(shared).display());
    }
    let mut lines = Vec::new();
    for (workspace, consts) in [
        (manifest_dir.join("programs"), &[("PROBE_WASM", "probe"), ("TENSOR_PROBE_WASM", "tensor-probe")][..]),
        (root.join("examples"), &[("WORDFREQ_WASM", "wordfreq"), ("MLP_WASM", "mlp"), ("TRANSFORMER_WASM", "transformer")][..]),
    ] {
        build_workspace(&workspace, &target_dir);
        for (name, bin) in consts {
            let path = target_dir.join("wasm32-wasip1").join("release").join(format!("{bin}.wasm"));
            assert!(path.exists(), "{} was not built", path.display());
            lines.push(format!("/// The `{bin}` guest program, built for wasm32-wasip1.\npub const {name}: &str = {:?};\n", path.display().to_string()));
        }
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("guests.rs");
    std::fs::write(out, lines.concat()).expect("write guests.rs");
}

fn build_workspace(workspace: &Path, target_dir: &Path) {
    for entry in ["Cargo.toml", "Cargo.lock", "src"] {
        println!("cargo:rerun-if-changed={}", workspace.join(entry).display());
    }
    if let Ok(members) = std::fs::read_dir(workspace) {
        for member in members.flatten() {
            if member.path().join("Cargo.toml").exists() {
                println!("cargo:rerun-if-changed={}", member.path().display());
            }
        }
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args(["build", "--release", "--locked", "--target", "wasm32-wasip1", "--target-dir"])
        .arg(target_dir);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let keep = matches!(key.as_str(), "CARGO_HOME" | "CARGO_NET_OFFLINE") || key.starts_with("CARGO_REGISTRIES");
        if (key.starts_with("CARGO_") && !keep) || key.starts_with("RUSTFLAGS") || key == "RUSTC_WORKSPACE_WRAPPER" {
            command.env_remove(&key);
        }
    }
    let status = command.status().expect("run cargo for the guest programs");
    assert!(
        status.success(),
        "building {} for wasm32-wasip1 failed; is the target installed? (rustup target add wasm32-wasip1)",
        workspace.display()
    );
}
