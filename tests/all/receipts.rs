//! Receipts as a contract: one reading for every reader (no duplicate keys, nothing that does not
//! re-serialise to the same bytes), strict signatures, pinned signers, and the client's own
//! manifest compared with what ran.

use ed25519_dalek::SigningKey;
use gridbox_core::receipt::ReceiptError;
use gridbox_core::verify::{self, Basis, Evidence, VerifyOptions};
use gridbox_core::{Manifest, Receipt, RunOptions};

use crate::common::{engine, gridbox_output, job, probe, stderr};
use crate::guests;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// A real receipt of the probe saying hello, signed by `key(1)`, and its job.
fn signed() -> (Receipt, Vec<u8>, gridbox_core::Job) {
    let job = job(probe(), &["hello"], &[("note.txt", b"a note")], &[]);
    let run = engine().run(&job, RunOptions::default()).unwrap();
    let receipt = Receipt::sign(&job, &run, "cpu", &key(1));
    let bytes = receipt.to_canonical_json();
    (receipt, bytes, job)
}

fn replace_once(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(text.contains(from), "{from} is in the receipt");
    text.replacen(from, to, 1).into_bytes()
}

#[test]
fn a_receipt_reads_one_way_or_not_at_all() {
    let (receipt, bytes, _) = signed();
    assert_eq!(Receipt::from_json(&bytes).unwrap(), receipt);
    receipt.check_signature().unwrap();
    let stdout_hash = receipt.stdout.blake3.to_string();
    let fuel = format!("\"fuel_used\":{}", receipt.fuel_used);

    let malformed = [
        ("a key twice at the top", replace_once(&bytes, &fuel, &format!("{fuel},\"fuel_used\":1"))),
        (
            "a key twice inside a hash entry",
            replace_once(&bytes, &format!("\"blake3\":\"{stdout_hash}\""), &format!("\"blake3\":\"{stdout_hash}\",\"blake3\":\"{stdout_hash}\"")),
        ),
        ("an unknown field", replace_once(&bytes, &fuel, &format!("{fuel},\"fuel_used_extra\":1"))),
        ("a missing field", replace_once(&bytes, &format!("{fuel},"), "")),
    ];
    for (what, tampered) in malformed {
        let error = Receipt::from_json(&tampered).unwrap_err();
        assert!(matches!(error, ReceiptError::Malformed(_)), "{what}: {error}");
    }
    let not_canonical = [
        ("upper-case hex in a hash", replace_once(&bytes, &stdout_hash, &stdout_hash.to_uppercase())),
        ("upper-case public key", replace_once(&bytes, &receipt.public_key, &receipt.public_key.to_uppercase())),
        ("upper-case signature", replace_once(&bytes, &receipt.signature, &receipt.signature.to_uppercase())),
        ("whitespace", replace_once(&bytes, ",", ", ")),
        ("a trailing newline", [&bytes[..], b"\n"].concat()),
        ("an escaped letter", replace_once(&bytes, "\"gridbox\"", "\"gridbo\\u0078\"")),
        ("keys out of order", reorder(&bytes)),
    ];
    for (what, tampered) in not_canonical {
        let error = Receipt::from_json(&tampered).unwrap_err();
        assert!(matches!(error, ReceiptError::NotCanonical { .. }), "{what}: {error}");
        assert!(error.to_string().contains("not in canonical form"), "{what}: {error}");
    }
}

/// The receipt with its first two top-level keys swapped (still valid JSON, same meaning).
fn reorder(bytes: &[u8]) -> Vec<u8> {
    let value: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    let map = value.as_object().unwrap();
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    keys.swap(0, 1);
    let body: Vec<String> = keys.iter().map(|k| format!("{}:{}", serde_json::to_string(k).unwrap(), serde_json::to_string(&map[*k]).unwrap())).collect();
    format!("{{{}}}", body.join(",")).into_bytes()
}

#[test]
fn no_single_bit_flip_of_a_receipt_is_accepted() {
    let (_, bytes, _) = signed();
    let mut refused_as_text = 0;
    // Every byte, one bit each (a different bit from byte to byte): a debug build checks a
    // signature in about a millisecond.
    for index in 0..bytes.len() {
        let bit = (index * 3) % 8;
        let mut tampered = bytes.clone();
        tampered[index] ^= 1 << bit;
        match Receipt::from_json(&tampered) {
            Err(_) => refused_as_text += 1,
            Ok(receipt) => assert!(receipt.check_signature().is_err(), "flipping bit {bit} of byte {index} gave a receipt that verifies"),
        }
    }
    assert!(refused_as_text > bytes.len() / 2, "most flips break the JSON or its canonical form: {refused_as_text} of {}", bytes.len());
}

#[test]
fn signatures_are_checked_strictly() {
    let (receipt, _, _) = signed();
    // The identity key with R = identity and S = 0 satisfies the lax equation for any message.
    let mut forged = receipt.clone();
    forged.public_key = format!("01{}", "00".repeat(31));
    forged.signature = format!("01{}", "00".repeat(63));
    let forged = Receipt::from_json(&forged.to_canonical_json()).unwrap();
    let error = forged.check_signature().unwrap_err();
    assert!(matches!(error, ReceiptError::BadPublicKey(_)), "{error}");
    assert!(error.to_string().contains("small-order"), "{error}");
    // Every small-order point as the key: the eight torsion points' encodings.
    for encoded in small_order_encodings() {
        let mut weak = receipt.clone();
        weak.public_key = hex::encode(encoded);
        assert!(weak.check_signature().is_err(), "small-order key {} is refused", weak.public_key);
    }
    // S + L: the same signature in a non-canonical encoding.
    let mut signature = hex::decode(&receipt.signature).unwrap();
    add_group_order(&mut signature[32..]);
    let mut malleated = receipt.clone();
    malleated.signature = hex::encode(&signature);
    assert!(matches!(malleated.check_signature(), Err(ReceiptError::BadSignature)));
}

/// The group order L, little-endian.
const L: [u8; 32] =
    [0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];

fn add_group_order(scalar: &mut [u8]) {
    let mut carry = 0u16;
    for (byte, l) in scalar.iter_mut().zip(L) {
        let sum = u16::from(*byte) + u16::from(l) + carry;
        *byte = sum as u8;
        carry = sum >> 8;
    }
}

/// Encodings of the points of order 1, 2, 4 and 8 (RFC 8032 / "Taming the many EdDSAs").
fn small_order_encodings() -> Vec<[u8; 32]> {
    let hexes = [
        "0100000000000000000000000000000000000000000000000000000000000000",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000080",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    ];
    hexes.iter().map(|h| hex::decode(h).unwrap().try_into().unwrap()).collect()
}

#[test]
fn a_receipt_re_signed_by_someone_else_fails_when_the_signer_is_pinned() {
    let (receipt, _, job) = signed();
    let evidence = Evidence { module: job.module().into(), inputs: job.inputs().clone(), artifacts: None, requested: None, trace: None };
    // Anyone can sign a receipt for the same run with a key of their own: the signature alone
    // is then valid.
    let run = engine().run(&job, RunOptions::default()).unwrap();
    let resigned_properly = Receipt::sign(&job, &run, "cpu", &key(2));

    let unpinned = verify::verify(engine(), &resigned_properly, &evidence, VerifyOptions::default()).unwrap();
    assert!(unpinned.ok() && !unpinned.signer_pinned);
    assert!(unpinned.checks.iter().any(|c| c.field == "signer" && c.basis == Basis::Claim));

    let options = VerifyOptions { trusted_keys: vec![key(1).verifying_key()], ..VerifyOptions::default() };
    let pinned = verify::verify(engine(), &resigned_properly, &evidence, options.clone()).unwrap();
    assert_eq!(pinned.first_mismatch().map(|c| c.field.as_str()), Some("signer"));
    let genuine = verify::verify(engine(), &receipt, &evidence, options).unwrap();
    assert!(genuine.ok() && genuine.signer_pinned, "{:?}", genuine.first_mismatch());
    // Backend and runtime are the provider's word, and say so.
    for field in ["backend", "runtime"] {
        assert!(genuine.checks.iter().any(|c| c.field == field && c.basis == Basis::Claim), "{field}");
    }
}

#[test]
fn the_manifest_the_client_sent_is_compared_field_by_field() {
    let (receipt, _, job) = signed();
    let requested: Manifest = job.manifest().manifest().clone();
    let evidence =
        |requested: Manifest| Evidence { module: job.module().into(), inputs: job.inputs().clone(), artifacts: None, requested: Some(requested), trace: None };
    let mut asked = requested.clone();
    asked.limits = Default::default();
    let same = verify::verify(engine(), &receipt, &evidence(asked), VerifyOptions::default()).unwrap();
    assert!(same.ok(), "{:?}", same.first_mismatch());
    assert!(same.checks.iter().any(|c| c.field == "request.limits.fuel" && c.basis == Basis::Claim), "unset limits are the policy's choice");

    // A receipt for a job run with other arguments (as a proxy that rewrote them would get) is
    // consistent with itself, but not with what the client asked for.
    let mut other = requested.clone();
    other.args = vec!["hello".into(), "--extra".into()];
    let report = verify::verify(engine(), &receipt, &evidence(other), VerifyOptions::default()).unwrap();
    assert_eq!(report.first_mismatch().map(|c| c.field.as_str()), Some("request.args"));
    for (field, change) in [
        ("request.env", Box::new(|m: &mut Manifest| _ = m.env.insert("K".into(), "V".into())) as Box<dyn Fn(&mut Manifest)>),
        ("request.seed", Box::new(|m: &mut Manifest| m.seed = 7)),
        ("request.start_time_unix", Box::new(|m: &mut Manifest| m.start_time_unix += 1)),
        ("request.stdin", Box::new(|m: &mut Manifest| m.stdin = Some("note.txt".into()))),
        ("request.limits.fuel", Box::new(|m: &mut Manifest| m.limits.set(gridbox_core::LimitKind::Fuel, 5))),
    ] {
        let mut asked = requested.clone();
        change(&mut asked);
        let report = verify::verify(engine(), &receipt, &evidence(asked), VerifyOptions::default()).unwrap();
        assert_eq!(report.first_mismatch().map(|c| c.field.as_str()), Some(field));
    }
}

#[test]
fn verify_takes_the_clients_manifest_and_trusted_keys_on_the_command_line() {
    let work = tempfile::tempdir().unwrap();
    let key_path = work.path().join("provider.key");
    let keygen = gridbox_output(&[&"keygen", &key_path]);
    assert!(keygen.status.success(), "{}", stderr(&keygen));
    let manifest_path = work.path().join("job.toml");
    let mut manifest = Manifest::new(gridbox_core::Digest::of(&probe()));
    manifest.args = vec!["hello".into()];
    std::fs::write(&manifest_path, toml::to_string(&manifest).unwrap()).unwrap();
    let out = work.path().join("out");
    let probe_path = guests::PROBE.path();
    let run = gridbox_output(&[&"run", &probe_path, &"--manifest", &manifest_path, &"--key", &key_path, &"--out", &out]);
    assert!(run.status.success(), "{}", stderr(&run));

    let receipt = out.join("receipt.json");
    let public = format!("{}.pub", key_path.display());
    let verify = |extra: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"verify", &receipt, &"--module", &probe_path, &"--json"];
        args.extend_from_slice(extra);
        let output = gridbox_output(&args);
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&output)));
        (output.status.code(), report, stderr(&output))
    };
    let (code, report, text) = verify(&[&"--manifest", &manifest_path, &"--trust", &public]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!((report["signer_pinned"].as_bool(), report["request_checked"].as_bool()), (Some(true), Some(true)));
    assert!(!text.contains("not pinned"), "{text}");

    let (code, report, text) = verify(&[]);
    assert_eq!(code, Some(0));
    assert_eq!(report["signer_pinned"], false);
    assert!(text.contains("the signer is not pinned") && text.contains("no --manifest given"), "{text}");

    let other = work.path().join("other.key");
    assert!(gridbox_output(&[&"keygen", &other]).status.success());
    let (code, report, _) = verify(&[&"--trust", &format!("{}.pub", other.display())]);
    assert_eq!((code, report["first_mismatch"].as_str()), (Some(1), Some("signer")));

    manifest.args = vec!["exit".into(), "0".into()];
    std::fs::write(&manifest_path, toml::to_string(&manifest).unwrap()).unwrap();
    let (code, report, _) = verify(&[&"--manifest", &manifest_path]);
    assert_eq!((code, report["first_mismatch"].as_str()), (Some(1), Some("request.args")));
}
