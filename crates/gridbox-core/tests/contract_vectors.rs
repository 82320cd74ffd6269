//! The test vectors of spec/vectors/ (manifests.json, receipts.json), for implementations of the
//! manifest and receipt contracts in other languages: this test makes every case with the code
//! and requires the files to hold exactly that, then checks each case's claims (a manifest's
//! canonical text and hash; a receipt's signed bytes, signature and canonical form; the error of
//! each refused case).
//!
//! After a deliberate change of the contract: `GRIDBOX_WRITE_VECTORS=1 cargo test -p
//! gridbox-core --test contract_vectors` rewrites the files, and the diff is the change.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use ed25519_dalek::SigningKey;
use gridbox_core::receipt::{ManifestCommitment, ReceiptError, RuntimeInfo, TraceCommitment};
use gridbox_core::{BlobRef, Digest, LimitKind, Manifest, Outcome, Policy, Receipt};
use serde_json::{Value, json};

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../spec/vectors")
}

/// Compares `value`, pretty-printed, with the file, or writes it when asked to.
fn check_file(name: &str, value: &Value) {
    let path = vectors_dir().join(name);
    let text = serde_json::to_string_pretty(value).unwrap() + "\n";
    if std::env::var_os("GRIDBOX_WRITE_VECTORS").is_some() {
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(on_disk == text, "{} is not what the code makes now: rerun with GRIDBOX_WRITE_VECTORS=1 if the change is deliberate", path.display());
}

/// Manifests, as a client might write them, with what resolution against the built-in policy
/// makes of them.
fn manifest_cases() -> Vec<(&'static str, String)> {
    let module = Digest::of(b"module");
    vec![
        ("minimal", format!("format = 1\nmodule = \"{module}\"\n")),
        (
            "every_kind_of_value",
            format!(
                r#"# Comments, literal strings, a multi-line string and tables in any order are read; the
# canonical text has none of them.
format = 1
module = "{module}"
args = ["plain", 'single "quoted"', "back\\slash", """two
lines""", "tab\tand\u0001control\u007Fdel", "ünïcödé \u2028", ""]
stdin = "data/in.txt"
start_time_unix = 1800000000
seed = 9223372036854775807
capabilities = ["tensor", "wasi"]

[limits]
fuel = 123456789
wall_time_ms = 1

[tensor]
ops = ["relu", "matmul", "add"]
trace = "readback"

[env]
PLAIN_key-1 = "x"
"dotted.key" = "quote \" and backslash \\"
"spaced key" = ""
"ключ" = "значение"

[inputs]
"data/in.txt" = "{input}"
"data/sub/b.bin" = "{input}"
"z" = "{input}"

[mounts."/"]
from = "data"
writable = true

[mounts."/ro dir"]
"#,
                input = Digest::of(b"input"),
            ),
        ),
    ]
}

/// Manifests that are refused, and the key the refusal names.
fn refused_manifest_cases() -> Vec<(&'static str, String, &'static str)> {
    let module = Digest::of(b"module");
    vec![
        ("zero_wall_time", format!("format = 1\nmodule = \"{module}\"\n[limits]\nwall_time_ms = 0\n"), "limits.wall_time_ms"),
        ("input_name_with_dots", format!("format = 1\nmodule = \"{module}\"\n[inputs]\n\"a/../b\" = \"{module}\"\n"), "inputs.\"a/../b\""),
        ("mount_over_input", format!("format = 1\nmodule = \"{module}\"\n[mounts.\"/input\"]\n"), "mounts.\"/input\""),
        ("stdin_not_an_input", format!("format = 1\nmodule = \"{module}\"\nstdin = \"nothing\"\n"), "stdin"),
        ("limit_above_policy", format!("format = 1\nmodule = \"{module}\"\n[limits]\nfuel = 1000000000001\n"), "limits.fuel"),
    ]
}

#[test]
fn manifest_vectors() {
    let mut cases = Vec::new();
    for (name, text) in manifest_cases() {
        let resolved = Manifest::from_toml(&text).unwrap().resolve(&Policy::default()).unwrap();
        // The canonical text reads back to itself, through any TOML reader.
        let again = gridbox_core::ResolvedManifest::from_canonical_text(resolved.text()).unwrap();
        assert_eq!(again.text(), resolved.text());
        assert_eq!(toml::from_str::<Manifest>(resolved.text()).unwrap(), *resolved.manifest());
        assert_eq!(resolved.hash(), Digest::of(resolved.text().as_bytes()));
        cases.push(json!({"name": name, "manifest": text, "canonical": resolved.text(), "blake3": resolved.hash().to_string()}));
    }
    for (name, text, key) in refused_manifest_cases() {
        let error = Manifest::from_toml(&text).and_then(|m| m.resolve(&Policy::default())).unwrap_err().to_string();
        assert!(error.contains(&format!("`{key}`")), "{name}: {error}");
        cases.push(json!({"name": name, "manifest": text, "refused_key": key, "error": error}));
    }
    let limits: BTreeMap<&str, Value> = LimitKind::ALL.iter().map(|k| (k.as_str(), json!(Policy::default().default_value(*k)))).collect();
    check_file(
        "manifests.json",
        &json!({
            "about": "Manifests (as written by a client) resolved against gridbox's built-in policy, whose defaults are `policy_defaults`: `canonical` is the resolved manifest's canonical text (spec/manifest.md, Canonical form) and `blake3` its hash, the job's identity. Refused cases name the key at fault.",
            "policy_defaults": limits,
            "cases": cases,
        }),
    );
}

fn blob(bytes: &[u8]) -> BlobRef {
    BlobRef::of(bytes)
}

/// A receipt with every kind of field, from fixed values (no run needed), signed by the key
/// whose secret is 32 bytes of `seed`.
fn receipt(outcome: Outcome, seed: u8) -> Receipt {
    let manifest = Manifest::from_toml(&manifest_cases()[0].1).unwrap().resolve(&Policy::default()).unwrap();
    let mut receipt = Receipt {
        format: gridbox_core::receipt::RECEIPT_FORMAT.into(),
        runtime: RuntimeInfo { name: "gridbox".into(), version: "0.2.0".into() },
        backend: "cpu".into(),
        module: BlobRef { blake3: Digest::of(b"module"), size: 6 },
        manifest: ManifestCommitment { blake3: manifest.hash(), text: manifest.text().into() },
        inputs: BTreeMap::from([("in.txt".to_string(), blob(b"input"))]),
        outcome,
        fuel_used: 18_446_744_073_709_551_615,
        stdout: blob(b"hello \"world\"\n"),
        stderr: blob(b""),
        outputs: BTreeMap::from([("a/result.txt".to_string(), blob(b"42")), ("/data/mounted.txt".to_string(), blob(b"m"))]),
        trace: TraceCommitment { root: Digest([0; 32]), length: 0, log_root: Digest([0; 32]), level: Default::default() },
        public_key: String::new(),
        signature: String::new(),
    };
    receipt.sign_with(&SigningKey::from_bytes(&[seed; 32]));
    receipt
}

fn error_kind(error: &ReceiptError) -> &'static str {
    match error {
        ReceiptError::Malformed(_) => "malformed",
        ReceiptError::NotCanonical { .. } => "not_canonical",
        ReceiptError::BadPublicKey(_) => "bad_public_key",
        ReceiptError::BadSignature => "bad_signature",
        _ => "other",
    }
}

#[test]
fn receipt_vectors() {
    let valid = [
        ("exited", receipt(Outcome::Exited { code: 0 }, 7)),
        ("trapped", receipt(Outcome::Trapped { trap: "host".into(), message: "a \"quoted\" message\nwith a newline".into() }, 7)),
        ("limit_exceeded", receipt(Outcome::LimitExceeded { limit: LimitKind::Fuel, value: 1_000_000 }, 8)),
    ];
    let mut cases = Vec::new();
    for (name, receipt) in &valid {
        let bytes = receipt.to_canonical_json();
        let parsed = Receipt::from_json(&bytes).unwrap();
        parsed.check_signature().unwrap();
        let signed = String::from_utf8(parsed.signed_bytes()).unwrap();
        assert!(signed.starts_with("gridbox receipt signature v1\n{"), "{signed}");
        cases.push(json!({
            "name": name,
            "secret_key": hex::encode([if *name == "limit_exceeded" { 8u8 } else { 7 }; 32]),
            "receipt": String::from_utf8(bytes).unwrap(),
            "signed_bytes": signed,
            "signature": parsed.signature,
        }));
    }

    let good = valid[0].1.to_canonical_json();
    let text = String::from_utf8(good.clone()).unwrap();
    let stdout = valid[0].1.stdout.blake3.to_string();
    let mut forged = valid[0].1.clone();
    forged.public_key = format!("01{}", "00".repeat(31));
    forged.signature = format!("01{}", "00".repeat(63));
    let mut other_fuel = valid[0].1.clone();
    other_fuel.fuel_used = 1;
    let refused = [
        ("duplicate_key", text.replacen("\"fuel_used\":", "\"fuel_used\":1,\"fuel_used\":", 1)),
        ("duplicate_key_in_a_blob", text.replacen(&format!("\"blake3\":\"{stdout}\""), &format!("\"blake3\":\"{stdout}\",\"blake3\":\"{stdout}\""), 1)),
        ("unknown_field", text.replacen("\"fuel_used\":", "\"extra\":0,\"fuel_used\":", 1)),
        ("upper_case_hash", text.replacen(&stdout, &stdout.to_uppercase(), 1)),
        ("whitespace", text.replacen(",", ", ", 1)),
        ("identity_key_forgery", String::from_utf8(forged.to_canonical_json()).unwrap()),
        ("altered_after_signing", String::from_utf8(other_fuel.to_canonical_json()).unwrap()),
    ];
    for (name, tampered) in refused {
        let error = match Receipt::from_json(tampered.as_bytes()) {
            Err(error) => error,
            Ok(receipt) => receipt.check_signature().unwrap_err(),
        };
        cases.push(json!({"name": name, "receipt": tampered, "refused": error_kind(&error), "error": error.to_string()}));
    }
    check_file(
        "receipts.json",
        &json!({
            "about": "Receipts (spec/receipt.md). Valid cases: `receipt` is the exact file, `signed_bytes` what the Ed25519 key whose 32-byte secret is `secret_key` signs, `signature` the result. Refused cases: `refused` is why (malformed: not the schema or a key twice; not_canonical: bytes differ from the canonical encoding; bad_public_key: not a usable strict Ed25519 key; bad_signature).",
            "cases": cases,
        }),
    );
}
