//! The crate layout's promises, checked against Cargo's own view of the dependency graph:
//! a verifier embeds `gridbox-core` without HTTP, a database or a CLI parser, and the compute
//! crate knows nothing of wasm.

use std::collections::BTreeSet;
use std::process::Command;

use crate::guests::repo_root;

/// The packages `package` depends on for normal builds (not dev or build dependencies).
fn normal_dependencies(package: &str, features: &[&str]) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(repo_root())
        .args(["tree", "--offline", "--locked", "-e", "normal", "--prefix", "none", "--format", "{p}", "-p", package])
        .args(features.iter().flat_map(|feature| ["--features", feature]))
        .output()
        .expect("run cargo tree");
    assert!(output.status.success(), "cargo tree -p {package}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).lines().filter_map(|line| line.split_whitespace().next()).map(str::to_string).collect()
}

#[test]
fn the_core_library_has_no_http_database_cli_or_async_runtime() {
    let dependencies = normal_dependencies("gridbox-core", &["cuda"]);
    assert!(dependencies.contains("wasmtime"), "the tree was read: {dependencies:?}");
    for unwanted in ["axum", "hyper", "hyper-util", "redb", "clap", "tokio", "gridbox-service", "gridbox-fleet", "async-nats"] {
        assert!(!dependencies.contains(unwanted), "gridbox-core depends on {unwanted}");
    }
}

#[test]
fn the_single_machine_service_knows_nothing_of_the_market() {
    // The market plugs into the service through `gridbox_service::remote`; the service itself
    // builds without NATS.
    let dependencies = normal_dependencies("gridbox-service", &[]);
    assert!(dependencies.contains("redb"), "the tree was read: {dependencies:?}");
    for unwanted in ["async-nats", "gridbox-fleet", "clap"] {
        assert!(!dependencies.contains(unwanted), "gridbox-service depends on {unwanted}");
    }
}

#[test]
fn the_compute_crate_knows_nothing_of_wasm_or_the_host() {
    let dependencies = normal_dependencies("gridbox-compute", &["cuda"]);
    assert!(dependencies.contains("blake3"), "the tree was read: {dependencies:?}");
    for unwanted in ["wasmtime", "wasmtime-wasi", "gridbox-core", "tokio", "serde_json"] {
        assert!(!dependencies.contains(unwanted), "gridbox-compute depends on {unwanted}");
    }
}
