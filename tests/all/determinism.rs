//! Same module, manifest and inputs give the same bytes, whatever the host.

use std::time::{Duration, SystemTime};

use gridbox_core::{Outcome, RunOptions};

use crate::common::*;
use crate::guests;

/// Stages the same inputs in `dir` in the given order, with file times `age` in the past.
fn stage(dir: &std::path::Path, order: &[usize], age: Duration) {
    let files: [(&str, &[u8]); 4] = [("a.txt", b"alpha"), ("zeta.txt", b"zeta zeta"), ("sub/b.txt", b"bravo"), ("sub/deeper/c.bin", &[0, 1, 2, 255])];
    for &index in order {
        let (name, bytes) = files[index];
        put(dir, name, bytes);
        let file = std::fs::File::options().write(true).open(dir.join(name)).expect("open");
        file.set_modified(SystemTime::now() - age).expect("set mtime");
    }
}

#[test]
fn receipts_are_byte_identical_across_staging_dirs_order_mtimes_env_and_clock() {
    let work = tempfile::tempdir().unwrap();
    let key = work.path().join("provider.key");
    assert!(gridbox_output(&[&"keygen", &key]).status.success());
    let (first, second) = (work.path().join("stage-one"), work.path().join("elsewhere/stage-two"));
    stage(&first, &[0, 1, 2, 3], Duration::from_secs(10));
    stage(&second, &[3, 2, 1, 0], Duration::from_secs(86_400 * 400));

    let run = |stage: &std::path::Path, out: &str, env: &[(&str, &str)]| {
        let out = work.path().join(out);
        let mut command = gridbox();
        command.envs(env.iter().copied()).arg("run").arg(guests::PROBE.path());
        command.arg("--dir").arg(format!("{}::/input", stage.display()));
        command.args(["--env", "GREETING=hi", "--quiet", "--key"]).arg(&key).arg("--out").arg(&out).args(["--", "report"]);
        let output = command.output().expect("run gridbox");
        assert!(output.status.success(), "{}", stderr(&output));
        out
    };
    let one = run(&first, "out-one", &[("TZ", "UTC"), ("HOME", "/nonexistent")]);
    // Host time moves on between the runs: a leak of the host clock would show.
    std::thread::sleep(Duration::from_millis(1100));
    let two = run(&second, "out-two", &[("TZ", "Asia/Kolkata"), ("GRIDBOX_UNRELATED", "1")]);

    let receipt_one = std::fs::read(one.join("receipt.json")).unwrap();
    let receipt_two = std::fs::read(two.join("receipt.json")).unwrap();
    assert_eq!(String::from_utf8_lossy(&receipt_one), String::from_utf8_lossy(&receipt_two));

    let report = std::fs::read_to_string(one.join("output/report.txt")).unwrap();
    let listing: Vec<&str> = report.lines().filter(|l| l.starts_with("/input")).collect();
    let names: Vec<&str> = listing.iter().map(|l| l.split(':').next().unwrap()).collect();
    assert_eq!(
        names,
        ["/input/a.txt", "/input/sub", "/input/zeta.txt", "/input/sub/b.txt", "/input/sub/deeper", "/input/sub/deeper/c.bin"],
        "listing is sorted by name at every level:\n{report}"
    );
    // Every file time is the manifest's virtual start time (2026-01-01), not the host's.
    assert!(listing.iter().all(|l| l.contains("mtime=1767225600000000000")), "{report}");
    assert!(report.contains("args: [\"job.wasm\", \"report\"]"), "{report}");
    assert!(report.contains("(\"GREETING\", \"hi\")"), "{report}");
}

#[test]
fn clock_and_random_come_from_the_manifest() {
    let base = engine().run(&job(probe(), &["report"], &[], &[]), RunOptions::default()).unwrap();
    let again = engine().run(&job(probe(), &["report"], &[], &[]), RunOptions::default()).unwrap();
    assert_eq!(base.stdout, again.stdout);
    assert_eq!(base.fuel_used, again.fuel_used);
    let text = String::from_utf8_lossy(&base.stdout).into_owned();
    let line = |prefix: &str| text.lines().find(|l| l.starts_with(prefix)).unwrap_or_default().to_string();
    // The virtual clock starts at the manifest's start time and moves with the work done.
    let now: u128 = line("now: ").trim_start_matches("now: ").parse().unwrap();
    assert!((1_767_225_600_000_000_000..1_767_225_700_000_000_000).contains(&now), "{text}");
    // A sleep advances virtual time without waiting on the host.
    let slept: u128 = line("slept: ").trim_start_matches("slept: ").trim_end_matches(" ns").parse().unwrap();
    assert!(slept >= 1_500_000_000, "{text}");

    // A different seed gives different random bytes; nothing else changes.
    let mut seeded = job(probe(), &["report"], &[], &[]).manifest().manifest().clone();
    seeded.seed = 7;
    let seeded = gridbox_core::Job::new(probe(), seeded.resolve(&gridbox_core::Policy::default()).unwrap(), Default::default()).unwrap();
    let other = engine().run(&seeded, RunOptions::default()).unwrap();
    let other_text = String::from_utf8_lossy(&other.stdout).into_owned();
    assert_ne!(line("random: "), other_text.lines().find(|l| l.starts_with("random: ")).unwrap());
    assert_eq!(line("now: "), other_text.lines().find(|l| l.starts_with("now: ")).unwrap());
}

#[test]
fn file_operations_work_and_inputs_are_read_only() {
    let run = run_probe(&["fs-ops"], &[]);
    assert_eq!(run.outcome, Outcome::Exited { code: 0 }, "{}", String::from_utf8_lossy(&run.stderr));
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(text.contains("write to /input: refused"), "{text}");
    assert!(text.contains("escape: refused"), "{text}");
    assert_eq!(run.outputs.keys().collect::<Vec<_>>(), ["a/moved.txt"]);
    assert_eq!(run.outputs["a/moved.txt"], b"one+two");
}

#[test]
fn stdin_comes_from_an_input() {
    let mut job = job(probe(), &["stdin"], &[("in.txt", b"fed to stdin")], &[]).manifest().manifest().clone();
    job.stdin = Some("in.txt".into());
    let resolved = job.resolve(&gridbox_core::Policy::default()).unwrap();
    let inputs = [("in.txt".to_string(), std::sync::Arc::from(&b"fed to stdin"[..]))].into_iter().collect();
    let run = engine().run(&gridbox_core::Job::new(probe(), resolved, inputs).unwrap(), RunOptions::default()).unwrap();
    assert_eq!(String::from_utf8_lossy(&run.stdout), "stdin: 12 bytes: fed to stdin\n");
}

#[test]
fn exit_codes_and_traps_are_outcomes() {
    assert_eq!(run_probe(&["exit", "7"], &[]).outcome, Outcome::Exited { code: 7 });
    let trapped = run_probe(&["trap"], &[]);
    assert_eq!(trapped.outcome, Outcome::Trapped { trap: "unreachable".into(), message: String::new() });
}
