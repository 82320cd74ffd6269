//! Writing manifests by hand: `gridbox hash` and `gridbox manifest` print what `run` would use.

use gridbox_core::{Digest, Manifest, Receipt};

use crate::common::*;
use crate::guests;

#[test]
fn gridbox_manifest_prints_what_run_embeds_and_hash_prints_blake3() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    put(&data, "a.txt", b"alpha");
    put(&data, "sub/b.txt", b"bravo");
    let probe = guests::PROBE.path();
    let dir = format!("{}::/input", data.display());

    let hashes = gridbox_output(&[&"hash", &probe, &data]);
    assert!(hashes.status.success(), "{}", stderr(&hashes));
    let text = String::from_utf8(hashes.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with(&format!("{}  ", Digest::of(&std::fs::read(&probe).unwrap()))), "{text}");
    assert!(lines[1].starts_with(&format!("{}  ", Digest::of(b"alpha"))) && lines[1].ends_with("a.txt"), "{text}");

    // The resolved manifest is exactly what a run of the same flags embeds in its receipt.
    let flags: [&dyn AsRef<std::ffi::OsStr>; 6] = [&"--dir", &dir, &"--env", &"K=V", &"--", &"report"];
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"manifest", &probe];
    args.extend_from_slice(&flags);
    let printed = gridbox_output(&args);
    assert!(printed.status.success(), "{}", stderr(&printed));
    let out = work.path().join("out");
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"run", &probe, &"-q", &"--out", &out];
    args.extend_from_slice(&flags);
    assert!(gridbox_output(&args).status.success());
    let receipt = Receipt::from_json(&std::fs::read(out.join("receipt.json")).unwrap()).unwrap();
    assert_eq!(String::from_utf8(printed.stdout).unwrap(), receipt.manifest.text);

    // --request prints only what the flags set; it runs as a manifest and verifies against it.
    let request = gridbox_output(&[&"manifest", &probe, &"--request", &"--limit", &"fuel=50000000", &"--", &"hello"]);
    let text = String::from_utf8(request.stdout).unwrap();
    let manifest = Manifest::from_toml(&text).unwrap();
    assert_eq!(manifest.limits.get(gridbox_core::LimitKind::Fuel), Some(50_000_000));
    assert_eq!(manifest.limits.get(gridbox_core::LimitKind::MemoryBytes), None);
    let job = work.path().join("job.toml");
    std::fs::write(&job, &text).unwrap();
    let out = work.path().join("out2");
    assert!(gridbox_output(&[&"run", &probe, &"--manifest", &job, &"-q", &"--out", &out]).status.success());
    let verify = gridbox_output(&[&"verify", &out.join("receipt.json"), &"--module", &probe, &"--manifest", &job]);
    assert!(verify.status.success(), "{}", stderr(&verify));
}
