//! Signed receipts (spec/receipt.md): canonical JSON committing to everything a run used and made.

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use gridbox_compute::TraceLevel;

use crate::digest::{BlobRef, Digest};
use crate::job::{Job, JobRun, Outcome};
use crate::strict_json;

/// The receipt format this gridbox writes and reads.
pub const RECEIPT_FORMAT: &str = "gridbox-receipt/2";

/// Prefixed to the canonical body before signing, so a receipt signature can never be mistaken
/// for a signature over anything else.
const SIGNATURE_CONTEXT: &[u8] = b"gridbox receipt signature v1\n";

/// Which gridbox made the receipt.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeInfo {
    /// Always `gridbox`.
    pub name: String,
    /// The runtime crate's version.
    pub version: String,
}

/// The resolved manifest, embedded so that a verifier needs nothing else to replay.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestCommitment {
    /// BLAKE3 of `text`.
    pub blake3: Digest,
    /// The canonical TOML text of the resolved manifest.
    pub text: String,
}

/// The trace of bridge calls.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceCommitment {
    /// The chain's root (all zeros when the job made no bridge call).
    pub root: Digest,
    /// Number of calls recorded.
    pub length: u64,
    /// The Merkle root over the trace log's entries (spec/trace.md; all zeros when there are
    /// none): what `gridbox check-op` proves one entry against.
    pub log_root: Digest,
    /// What was recorded: `full` or `readback` (from the manifest's `[tensor] trace`).
    pub level: TraceLevel,
}

/// A signed receipt. Field order here is for people; the canonical encoding sorts keys.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// [`RECEIPT_FORMAT`].
    pub format: String,
    /// The runtime that ran the job.
    pub runtime: RuntimeInfo,
    /// The compute backend (`cpu` until the tensor bridge adds others).
    pub backend: String,
    /// The module.
    pub module: BlobRef,
    /// The resolved manifest.
    pub manifest: ManifestCommitment,
    /// Every input, by name.
    pub inputs: BTreeMap<String, BlobRef>,
    /// How the run ended.
    pub outcome: Outcome,
    /// Fuel consumed.
    pub fuel_used: u64,
    /// The job's stdout.
    pub stdout: BlobRef,
    /// The job's stderr.
    pub stderr: BlobRef,
    /// Every regular file the job left under `/output`, by relative path, and in the manifest's
    /// writable mounts, by absolute guest path (`/data/a.txt`).
    pub outputs: BTreeMap<String, BlobRef>,
    /// The trace of bridge calls.
    pub trace: TraceCommitment,
    /// The provider's Ed25519 public key, hex.
    pub public_key: String,
    /// Ed25519 signature over the canonical body, hex.
    pub signature: String,
}

/// A receipt that cannot be read or whose signature does not hold.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// Not a receipt: bad JSON, a key given twice, unknown or missing keys.
    #[error("not a gridbox receipt: {0}")]
    Malformed(#[source] serde_json::Error),
    /// The JSON does not re-serialise to the same bytes, so two readers could disagree on what
    /// it says or on what was signed: receipts are canonical JSON (spec/receipt.md).
    #[error(
        "receipt is not in canonical form at byte {offset}: expected `{expected}`, found `{found}` (receipts are canonical JSON: keys sorted, no whitespace, lower-case hex)"
    )]
    NotCanonical {
        /// Where the bytes first differ from the canonical encoding.
        offset: usize,
        /// The canonical bytes from there (a few).
        expected: String,
        /// The given bytes from there (a few).
        found: String,
    },
    /// The receipt has no `format` string, so its schema is unknown.
    #[error("not a gridbox receipt: it has no `format` string")]
    NoFormat,
    /// A format this gridbox does not read.
    #[error("receipt format {0:?} is not supported; this gridbox reads {RECEIPT_FORMAT:?}")]
    UnsupportedFormat(String),
    /// The public key is not a valid Ed25519 key in canonical encoding, or it is a weak
    /// (small-order) key, for which signatures prove nothing.
    #[error("receipt `public_key` is not a usable Ed25519 public key: {0}")]
    BadPublicKey(&'static str),
    /// The signature does not verify.
    #[error("receipt `signature` does not verify against its `public_key`: the receipt was altered or signed by someone else")]
    BadSignature,
}

impl Receipt {
    /// Builds and signs the receipt for `run` of `job`.
    pub fn sign(job: &Job, run: &JobRun, backend: &str, key: &SigningKey) -> Receipt {
        let manifest = job.manifest().manifest();
        let mut receipt = Receipt {
            format: RECEIPT_FORMAT.into(),
            runtime: RuntimeInfo { name: "gridbox".into(), version: env!("CARGO_PKG_VERSION").into() },
            backend: backend.into(),
            // `Job::new` checked the module and every input against these hashes.
            module: BlobRef { blake3: manifest.module, size: job.module().len() as u64 },
            manifest: ManifestCommitment { blake3: job.manifest().hash(), text: job.manifest().text().into() },
            inputs: manifest
                .inputs
                .iter()
                .map(|(name, blake3)| {
                    let size = job.inputs().get(name).map_or(0, |bytes| bytes.len() as u64);
                    (name.clone(), BlobRef { blake3: *blake3, size })
                })
                .collect(),
            outcome: run.outcome.clone(),
            fuel_used: run.fuel_used,
            stdout: BlobRef::of(&run.stdout),
            stderr: BlobRef::of(&run.stderr),
            outputs: run.outputs.iter().map(|(name, bytes)| (name.clone(), BlobRef::of(bytes))).collect(),
            trace: TraceCommitment {
                root: Digest(run.trace.root()),
                length: run.trace.len(),
                log_root: Digest(run.trace_log.root()),
                level: manifest.tensor.as_ref().map(|t| t.trace).unwrap_or_default(),
            },
            public_key: String::new(),
            signature: String::new(),
        };
        receipt.sign_with(key);
        receipt
    }

    /// Sets `public_key` to `key`'s and `signature` to its signature over [`Receipt::signed_bytes`].
    pub fn sign_with(&mut self, key: &SigningKey) {
        self.public_key = hex::encode(key.verifying_key().as_bytes());
        self.signature = hex::encode(key.sign(&self.signed_bytes()).to_bytes());
    }

    /// Parses a receipt, which must be exactly its canonical encoding: no key twice, none
    /// unknown or missing, hex in lower case, nothing that reads two ways. The signature is not
    /// checked here: see [`Receipt::check_signature`].
    pub fn from_json(bytes: &[u8]) -> Result<Receipt, ReceiptError> {
        let value = strict_json::parse(bytes).map_err(ReceiptError::Malformed)?;
        // The format decides the schema, so it is checked first.
        match value.get("format").and_then(|f| f.as_str()) {
            Some(RECEIPT_FORMAT) => {}
            Some(other) => return Err(ReceiptError::UnsupportedFormat(other.into())),
            None => return Err(ReceiptError::NoFormat),
        }
        let receipt: Receipt = serde_json::from_value(value).map_err(ReceiptError::Malformed)?;
        for (field, text, digits) in [("public_key", &receipt.public_key, 64), ("signature", &receipt.signature, 128)] {
            if text.len() != digits || !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                let found = text.chars().take(16).collect();
                return Err(ReceiptError::NotCanonical { offset: 0, expected: format!("{field}: {digits} lower-case hex digits"), found });
            }
        }
        let canonical = receipt.to_canonical_json();
        if canonical != bytes {
            let offset = canonical.iter().zip(bytes).take_while(|(a, b)| a == b).count();
            let excerpt = |b: &[u8]| String::from_utf8_lossy(&b[offset.min(b.len())..(offset + 24).min(b.len())]).into_owned();
            return Err(ReceiptError::NotCanonical { offset, expected: excerpt(&canonical), found: excerpt(bytes) });
        }
        Ok(receipt)
    }

    /// The canonical encoding of the whole receipt, signature included: what `receipt.json` holds.
    pub fn to_canonical_json(&self) -> Vec<u8> {
        canonical_json(&serde_json::to_value(self).unwrap_or_default())
    }

    /// Checks the signature over the canonical body, strictly (RFC 8032 with the checks of
    /// `verify_strict`): the key must be a canonically encoded point of large order, and the
    /// signature's `R` canonical and of large order and its `S` below the group order. The
    /// identity key with `R` = identity and `S` = 0 "verifies" any message under the lax rules.
    pub fn check_signature(&self) -> Result<(), ReceiptError> {
        let key = public_key_from_hex(&self.public_key)?;
        let mut signature = [0u8; 64];
        hex::decode_to_slice(&self.signature, &mut signature).map_err(|_| ReceiptError::BadSignature)?;
        key.verify_strict(&self.signed_bytes(), &Signature::from_bytes(&signature)).map_err(|_| ReceiptError::BadSignature)
    }

    /// The bytes the signature covers: `gridbox receipt signature v1` and a newline, then the
    /// canonical JSON of every field except `signature` (spec/receipt.md).
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut body = serde_json::to_value(self).unwrap_or_default();
        if let serde_json::Value::Object(map) = &mut body {
            map.remove("signature");
        }
        let mut message = SIGNATURE_CONTEXT.to_vec();
        message.extend(canonical_json(&body));
        message
    }
}

/// An Ed25519 public key from 64 lower-case hex digits, refused unless its encoding is canonical
/// and the point is not of small order.
pub fn public_key_from_hex(text: &str) -> Result<VerifyingKey, ReceiptError> {
    let mut bytes = [0u8; 32];
    if text.len() != 64 || text.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(ReceiptError::BadPublicKey("it is not 64 lower-case hex digits"));
    }
    hex::decode_to_slice(text, &mut bytes).map_err(|_| ReceiptError::BadPublicKey("it is not 64 lower-case hex digits"))?;
    let key = VerifyingKey::from_bytes(&bytes).map_err(|_| ReceiptError::BadPublicKey("it is not a point on the curve"))?;
    if key.to_edwards().compress().to_bytes() != bytes {
        return Err(ReceiptError::BadPublicKey("its encoding is not canonical"));
    }
    if key.is_weak() {
        return Err(ReceiptError::BadPublicKey("it is a small-order (weak) key, which any signature can match"));
    }
    Ok(key)
}

/// Canonical JSON: object keys sorted by their UTF-8 bytes, no whitespace, strings escaped as
/// serde_json does, integers only. Written here rather than trusting serde_json's map order,
/// which a feature flag elsewhere in the build could change.
pub fn canonical_json(value: &serde_json::Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (index, (key, value)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                write_canonical(value, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::String(text) => write_string(text, out),
        Value::Number(number) => out.extend(number.to_string().as_bytes()),
        Value::Bool(flag) => out.extend(if *flag { b"true" as &[u8] } else { b"false" }),
        Value::Null => out.extend(b"null"),
    }
}

fn write_string(text: &str, out: &mut Vec<u8>) {
    out.extend(serde_json::to_string(text).unwrap_or_default().as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let value = serde_json::json!({"b": {"z": 1, "a": [true, null, "x\ny"]}, "a": 2});
        assert_eq!(canonical_json(&value), br#"{"a":2,"b":{"a":[true,null,"x\ny"],"z":1}}"#);
    }

    #[test]
    fn strings_are_escaped_as_the_spec_says() {
        let value = serde_json::json!("\"\\/\u{8}\t\n\u{c}\r\u{1}\u{1f}\u{7f}é\u{2028}");
        assert_eq!(String::from_utf8(canonical_json(&value)).unwrap(), "\"\\\"\\\\/\\b\\t\\n\\f\\r\\u0001\\u001f\u{7f}é\u{2028}\"");
    }
}
