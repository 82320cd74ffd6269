//! Bad modules, manifests and inputs are refused before anything runs, with the problem named.

use std::sync::Arc;

use gridbox_core::{Digest, Manifest, Policy, RunError, RunOptions};

use crate::common::*;
use crate::guests;

fn refusal(module: Vec<u8>, capabilities: Option<Vec<gridbox_core::Capability>>) -> RunError {
    let module: Arc<[u8]> = module.into();
    let mut manifest = Manifest::new(Digest::of(&module));
    if let Some(capabilities) = capabilities {
        manifest.capabilities = capabilities;
    }
    let job = gridbox_core::Job::new(module, manifest.resolve(&Policy::default()).unwrap(), Default::default()).unwrap();
    match engine().run(&job, RunOptions::default()) {
        Err(error) => error,
        Ok(run) => panic!("ran instead of being refused: {:?}", run.outcome),
    }
}

#[test]
fn imports_gridbox_does_not_provide_are_named() {
    let unknown = wat::parse_str(r#"(module (import "env" "launch_missiles" (func)) (func (export "_start")))"#).unwrap();
    let message = refusal(unknown, None).to_string();
    assert!(message.contains("env::launch_missiles"), "{message}");

    let socket = wat::parse_str(
        r#"(module (import "wasi_snapshot_preview1" "sock_accept" (func (param i32 i32 i32) (result i32)))
            (memory (export "memory") 1) (func (export "_start")))"#,
    )
    .unwrap();
    let message = refusal(socket, None).to_string();
    assert!(message.contains("sock_accept") && message.contains("no sockets"), "{message}");

    let message = refusal(probe().to_vec(), Some(vec![])).to_string();
    assert!(message.contains("wasi_snapshot_preview1::") && message.contains("`wasi` capability"), "{message}");
}

#[test]
fn modules_without_start_or_invalid_are_refused() {
    let library = wat::parse_str(r#"(module (func (export "run")))"#).unwrap();
    assert!(matches!(refusal(library, None), RunError::MissingStart));
    let message = refusal(b"\0asm\x01\0\0\0garbage".to_vec(), None).to_string();
    assert!(message.contains("invalid wasm module"), "{message}");
}

#[test]
fn mismatched_inputs_and_modules_are_refused() {
    let module = probe();
    let mut manifest = Manifest::new(Digest::of(&module));
    manifest.inputs.insert("a.txt".into(), Digest::of(b"expected"));
    let resolved = manifest.resolve(&Policy::default()).unwrap();
    let given = [("a.txt".to_string(), Arc::from(&b"tampered"[..]))].into_iter().collect();
    let message = gridbox_core::Job::new(module.clone(), resolved.clone(), given).err().unwrap().to_string();
    assert!(message.contains("\"a.txt\"") && message.contains(&Digest::of(b"expected").to_hex()), "{message}");
    let message = gridbox_core::Job::new(module, resolved.clone(), Default::default()).err().unwrap().to_string();
    assert!(message.contains("\"a.txt\" is in the manifest but was not given"), "{message}");
    let message = gridbox_core::Job::new(Arc::from(&b"other"[..]), resolved, Default::default()).err().unwrap().to_string();
    assert!(message.contains("manifest's `module`"), "{message}");
}

#[test]
fn the_cli_refuses_with_exit_136_and_names_the_problem() {
    let work = tempfile::tempdir().unwrap();
    let module_hash = Digest::of(&probe()).to_hex();
    let cases: Vec<(&str, String, &str)> = vec![
        ("unknown key", format!("format = 1\nmodule = \"{module_hash}\"\ncolour = \"red\"\n"), "colour"),
        ("bad hash", "format = 1\nmodule = \"not-a-hash\"\n".into(), "64 hex digits"),
        ("limit above policy", format!("format = 1\nmodule = \"{module_hash}\"\n[limits]\nfuel = 99000000000000000\n"), "limits.fuel"),
        ("unknown limit", format!("format = 1\nmodule = \"{module_hash}\"\n[limits]\nfuel_max = 1\n"), "fuel_max"),
        ("wrong module", format!("format = 1\nmodule = \"{}\"\n", Digest::of(b"x")), "manifest's `module`"),
        ("missing input", format!("format = 1\nmodule = \"{module_hash}\"\n[inputs]\n\"a.txt\" = \"{}\"\n", Digest::of(b"a")), "\"a.txt\""),
    ];
    for (what, manifest, expected) in cases {
        let path = work.path().join("job.toml");
        std::fs::write(&path, manifest).unwrap();
        let output = gridbox_output(&[&"run", &guests::PROBE.path(), &"--manifest", &path]);
        assert_eq!(output.status.code(), Some(136), "{what}: {}", stderr(&output));
        assert!(stderr(&output).contains(expected), "{what}: expected {expected:?} in {}", stderr(&output));
    }
    let garbage = work.path().join("garbage.wasm");
    std::fs::write(&garbage, b"definitely not wasm").unwrap();
    let output = gridbox_output(&[&"run", &garbage]);
    assert_eq!(output.status.code(), Some(136));
    assert!(stderr(&output).contains("not WebAssembly: build the job for wasm32-wasip1"), "{}", stderr(&output));
}

#[test]
fn mutated_modules_never_crash_the_host() {
    // Flip bytes all over a real module: each variant must be refused or run to an outcome.
    let original = probe();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..60 {
        let mut module = original.to_vec();
        for _ in 0..4 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let index = (state % module.len() as u64) as usize;
            module[index] ^= (state >> 32) as u8 | 1;
        }
        let module: Arc<[u8]> = module.into();
        let mut manifest = Manifest::new(Digest::of(&module));
        manifest.limits.set(gridbox_core::LimitKind::Fuel, 5_000_000);
        manifest.args = vec!["hello".into()];
        let job = gridbox_core::Job::new(module, manifest.resolve(&Policy::default()).unwrap(), Default::default()).unwrap();
        let _ = engine().run(&job, RunOptions::default());
    }
}
