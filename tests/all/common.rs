//! Helpers shared by the integration tests.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};

use crate::guests;
use gridbox_core::{Digest, Job, JobEngine, JobRun, LimitKind, Manifest, Policy, RunOptions};

/// The `probe` test program.
pub(crate) fn probe() -> Arc<[u8]> {
    read(guests::PROBE.path())
}

fn read(path: std::path::PathBuf) -> Arc<[u8]> {
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).into()
}

/// One engine for the whole test binary, as a provider would share one.
pub(crate) fn engine() -> &'static JobEngine {
    static ENGINE: OnceLock<JobEngine> = OnceLock::new();
    ENGINE.get_or_init(|| JobEngine::new(&Policy::default()).expect("engine"))
}

/// A job for `module` with `args`, `inputs` and the given limits (others at policy defaults).
pub(crate) fn job(module: Arc<[u8]>, args: &[&str], inputs: &[(&str, &[u8])], limits: &[(LimitKind, u64)]) -> Job {
    let mut manifest = Manifest::new(Digest::of(&module));
    manifest.args = args.iter().map(|a| a.to_string()).collect();
    let inputs: BTreeMap<String, Arc<[u8]>> = inputs.iter().map(|(n, b)| (n.to_string(), Arc::from(*b))).collect();
    manifest.inputs = inputs.iter().map(|(n, b)| (n.clone(), Digest::of(b))).collect();
    for (kind, value) in limits {
        manifest.limits.set(*kind, *value);
    }
    let resolved = manifest.resolve(&Policy::default()).expect("manifest resolves");
    Job::new(module, resolved, inputs).expect("job")
}

/// Runs the probe program with `args` under `limits`.
pub(crate) fn run_probe(args: &[&str], limits: &[(LimitKind, u64)]) -> JobRun {
    engine().run(&job(probe(), args, &[], limits), RunOptions::default()).expect("job starts")
}

/// The `gridbox` binary, its compiled-module cache in the build's own folder (not the home
/// folder of whoever runs the tests), shared by every test: most runs find their module there.
pub(crate) fn gridbox() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gridbox"));
    command.env_remove("RUST_BACKTRACE").env_remove("GRIDBOX_CACHE").env("GRIDBOX_CACHE_DIR", test_cache_dir());
    command
}

/// The compiled-module cache of the `gridbox` processes the tests start.
pub(crate) fn test_cache_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("compiled-cache")
}

/// Runs `gridbox` with `args` and returns its output, checking it did not panic.
pub(crate) fn gridbox_output(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let output = gridbox().args(args.iter().map(|a| a.as_ref())).output().expect("run gridbox");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "gridbox panicked: {stderr}");
    output
}

/// The text of stderr.
pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Writes `bytes` to `dir/name`, creating folders.
pub(crate) fn put(dir: &Path, name: &str, bytes: &[u8]) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
    std::fs::write(path, bytes).expect("write");
}
