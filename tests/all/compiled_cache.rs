//! The compiled-module cache through the real binary: receipts are byte-identical whether the
//! cache is cold, warm or off, and a damaged or foreign entry is noticed, said once, compiled
//! again and repaired, with the job's receipt unchanged.

use std::path::{Path, PathBuf};
use std::process::Command;

use gridbox_core::Digest;

use crate::common::{gridbox, stderr, test_cache_dir};
use crate::guests;
use crate::serve::{ALICE, Server};

/// The header of an entry: magic (16), module hash, engine fingerprint, code checksum (32 each).
const HEADER_LEN: usize = 16 + 3 * 32;
/// What gridbox says when it does not use an entry.
const NOTE: &str = "gridbox: note: compiled-module cache:";

/// A folder with a provider key, so that receipts of the same run are byte-identical.
struct Work {
    dir: tempfile::TempDir,
    key: PathBuf,
}

impl Work {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("provider.key");
        assert!(gridbox().arg("keygen").arg(&key).output().unwrap().status.success());
        Work { dir, key }
    }

    /// A cache folder's path (not made: gridbox makes it).
    fn cache(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `module` with `flags` and job `args`, the cache in `cache` (`None`: the environment
    /// turns it off); returns the receipt's bytes and gridbox's stderr.
    fn run(&self, cache: Option<&Path>, module: &Path, flags: &[&str], args: &[&str]) -> (Vec<u8>, String) {
        let mut command = gridbox();
        match cache {
            Some(dir) => command.env("GRIDBOX_CACHE_DIR", dir),
            None => command.env("GRIDBOX_CACHE", "off"),
        };
        self.run_with(command, module, flags, args)
    }

    /// [`Work::run`] with `command`'s environment.
    fn run_with(&self, mut command: Command, module: &Path, flags: &[&str], args: &[&str]) -> (Vec<u8>, String) {
        let out = tempfile::tempdir_in(self.dir.path()).unwrap();
        let out = out.path().join("out");
        command.arg("run").arg(module).args(flags).arg("--quiet").arg("--key").arg(&self.key).arg("--out").arg(&out).arg("--").args(args);
        let output = command.output().unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        (std::fs::read(out.join("receipt.json")).unwrap(), stderr(&output))
    }
}

/// The cache's entries.
fn entries(cache: &Path) -> Vec<PathBuf> {
    let Ok(listing) = std::fs::read_dir(cache) else { return Vec::new() };
    let mut entries: Vec<PathBuf> = listing.map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "cwasm")).collect();
    entries.sort();
    entries
}

#[test]
fn receipts_are_byte_identical_with_the_cache_cold_warm_and_off() {
    let work = Work::new();
    let probe = guests::PROBE.path();
    let tensor_probe = guests::TENSOR_PROBE.path();
    let jobs: [(&Path, &[&str], &[&str]); 3] =
        [(&probe, &[], &["floats", "200"]), (&probe, &[], &["nan-bits"]), (&tensor_probe, &["--capability", "tensor"], &["chain", "20"])];
    let cache = work.cache("cache");
    let mut seen = std::collections::BTreeSet::new();
    for (module, flags, args) in jobs {
        let before = entries(&cache).len();
        // The first run of a module is cold (and stores it); the probe's second job is warm.
        let (first, first_err) = work.run(Some(&cache), module, flags, args);
        let after = entries(&cache).len();
        assert_eq!(after, before + usize::from(seen.insert(module)), "a module's first run stores it, once");
        let (warm, warm_err) = work.run(Some(&cache), module, flags, args);
        let (off, _) = work.run(None, module, flags, args);
        let mut command = gridbox();
        command.env("GRIDBOX_CACHE_DIR", work.cache("never"));
        let (no_cache, _) = work.run_with(command, module, &[flags, &["--no-cache"]].concat(), args);
        for (mode, receipt) in [("warm", &warm), ("GRIDBOX_CACHE=off", &off), ("--no-cache", &no_cache)] {
            assert!(&first == receipt, "{args:?}: the receipt with the cache {mode} differs from the first run's");
        }
        assert_eq!(entries(&cache).len(), after, "a warm run adds nothing");
        assert!(!first_err.contains(NOTE) && !warm_err.contains(NOTE), "no problem to report: {first_err} {warm_err}");
    }
    assert!(!work.cache("never").exists(), "--no-cache makes no folder");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777, 0o700, "the cache folder is private");
}

/// Runs the probe cold, damages its one entry with `damage`, and requires: the next run says so
/// once and gives the same receipt; the run after that finds the entry repaired.
fn recompiled_after(damage: impl FnOnce(&Path), what: &str) {
    let work = Work::new();
    let cache = work.cache("cache");
    let probe = guests::PROBE.path();
    let (baseline, _) = work.run(Some(&cache), &probe, &[], &["floats", "50"]);
    let [entry] = &entries(&cache)[..] else { panic!("one entry: {:?}", entries(&cache)) };
    damage(entry);
    let (receipt, err) = work.run(Some(&cache), &probe, &[], &["floats", "50"]);
    assert!(receipt == baseline, "{what}: the receipt changed");
    assert_eq!(err.matches(NOTE).count(), 1, "{what}: said once: {err}");
    assert!(err.contains("compiled the module again"), "{what}: {err}");
    let (receipt, err) = work.run(Some(&cache), &probe, &[], &["floats", "50"]);
    assert!(receipt == baseline && !err.contains(NOTE), "{what}: repaired: {err}");
}

#[test]
fn a_flipped_byte_is_noticed_and_compiled_again() {
    recompiled_after(
        |entry| {
            let mut bytes = std::fs::read(entry).unwrap();
            let middle = HEADER_LEN + (bytes.len() - HEADER_LEN) / 2;
            bytes[middle] ^= 0x01;
            std::fs::write(entry, bytes).unwrap();
        },
        "a flipped byte",
    );
}

#[test]
fn a_truncated_entry_is_noticed_and_compiled_again() {
    recompiled_after(
        |entry| {
            let bytes = std::fs::read(entry).unwrap();
            std::fs::write(entry, &bytes[..bytes.len() / 3]).unwrap();
        },
        "a truncated entry",
    );
}

#[test]
fn an_entry_from_another_engine_is_noticed_and_compiled_again() {
    // Code compiled by another engine (the wasmtime CLI: another version, another
    // configuration) under this entry's header with a correct checksum: gridbox's own checks
    // pass, and wasmtime's must refuse it.
    recompiled_after(
        |entry| {
            let foreign = entry.with_extension("foreign");
            let output = Command::new(crate::mounts::wasmtime_cli()).arg("compile").arg(guests::PROBE.path()).arg("-o").arg(&foreign).output().unwrap();
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
            let code = std::fs::read(&foreign).unwrap();
            std::fs::remove_file(&foreign).unwrap();
            let mut bytes = std::fs::read(entry).unwrap();
            bytes.truncate(HEADER_LEN - 32);
            bytes.extend_from_slice(&Digest::of(&code).0);
            bytes.extend_from_slice(&code);
            std::fs::write(entry, bytes).unwrap();
        },
        "another engine's code",
    );
}

#[test]
fn an_unusable_cache_folder_is_said_once_and_the_job_runs() {
    let work = Work::new();
    let folder = work.cache("shared");
    std::fs::create_dir(&folder).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (receipt, err) = work.run(Some(&folder), &guests::PROBE.path(), &[], &["hello"]);
    let (off, _) = work.run(None, &guests::PROBE.path(), &[], &["hello"]);
    assert!(receipt == off);
    assert_eq!(err.matches("gridbox: note:").count(), 1, "{err}");
    assert!(err.contains("may be written by other users"), "{err}");
    assert!(entries(&folder).is_empty(), "nothing is stored where others could write");
}

#[test]
fn a_job_without_tensors_says_nothing_about_devices() {
    let work = Work::new();
    let (_, err) = work.run(Some(&work.cache("cache")), &guests::PROBE.path(), &[], &["hello"]);
    assert!(!err.contains("tensor ops") && !err.to_lowercase().contains("cuda"), "{err}");
    let (_, err) = work.run(Some(&work.cache("cache")), &guests::TENSOR_PROBE.path(), &["--capability", "tensor"], &["chain", "2"]);
    assert!(err.contains("gridbox: tensor ops on"), "a tensor job still says where its ops run: {err}");
}

#[test]
fn serve_keeps_the_modules_it_compiles_on_disk() {
    // A module no other test runs: its entry can only come from this server.
    let nonce = format!("{}-{:?}", std::process::id(), std::time::SystemTime::now());
    let module = wat::parse_str(format!(r#"(module (memory (export "memory") 1) (data (i32.const 0) "{nonce}") (func (export "_start")))"#)).unwrap();
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("unique.wasm");
    std::fs::write(&path, &module).unwrap();
    let server = Server::start(&work.path().join("data"), "workers = 1\n");
    let output = gridbox().arg("submit").arg(&path).args(["--quiet", "--server", &server.url, "--token", ALICE]).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let hash = Digest::of(&module);
    let stored = entries(&test_cache_dir()).into_iter().any(|entry| std::fs::read(entry).is_ok_and(|bytes| bytes.get(16..48) == Some(&hash.0[..])));
    assert!(stored, "the served job's module is in the cache");
}
