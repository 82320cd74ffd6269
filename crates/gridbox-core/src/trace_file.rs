//! `trace.jsonl` (spec/trace.md): the trace log as one canonical JSON object per line.
//!
//! A line is `{"index":I,"inputs":["<64 hex>",...],"op":"NAME","output":"<64 hex>",
//! "params":"<hex>","root":"<64 hex>"}` (keys sorted, no whitespace, lower-case hex) and a
//! newline. A reader refuses a line that is not exactly that encoding of what it parses to, so
//! a log has one encoding, as a receipt does.

use gridbox_compute::{TraceEntry, TraceLink};

use crate::digest::Digest;
use crate::receipt::canonical_json;
use crate::strict_json;

/// The log's file name inside an artifact directory.
pub const TRACE_FILE: &str = "trace.jsonl";

/// A `trace.jsonl` that cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TraceFileError {
    /// A line is not a log entry: bad JSON, a key twice, unknown or missing keys, bad hex.
    #[error("trace.jsonl line {line}: not a trace entry: {reason}")]
    Malformed {
        /// 1-based.
        line: usize,
        /// Why.
        reason: String,
    },
    /// A line is not the canonical encoding of what it says.
    #[error("trace.jsonl line {line}: not in canonical form (keys sorted, no whitespace, lower-case hex)")]
    NotCanonical {
        /// 1-based.
        line: usize,
    },
    /// The file does not end with a newline (a cut-off file), or is not UTF-8.
    #[error("trace.jsonl does not end with a newline: the file is cut off")]
    Unterminated,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    index: u64,
    inputs: Vec<Digest>,
    op: String,
    output: Digest,
    params: String,
    root: Digest,
}

/// The canonical line of `entry`, with its newline.
pub fn encode_entry(entry: &TraceEntry) -> Vec<u8> {
    let line = Line {
        index: entry.index,
        inputs: entry.link.inputs.iter().map(|h| Digest(*h)).collect(),
        op: entry.link.op.clone(),
        output: Digest(entry.link.output),
        params: hex::encode(&entry.link.params),
        root: Digest(entry.root),
    };
    let mut bytes = canonical_json(&serde_json::to_value(line).unwrap_or_default());
    bytes.push(b'\n');
    bytes
}

/// `entry` as one JSON object (the line without its newline), for an API that hands out
/// single entries (`GET /v1/jobs/{id}/trace/{index}`).
pub fn entry_value(entry: &TraceEntry) -> serde_json::Value {
    serde_json::from_slice(&encode_entry(entry)).unwrap_or_default()
}

/// The entry a JSON object holds, read as strictly as a line of the file.
pub fn entry_from_value(value: &serde_json::Value) -> Result<TraceEntry, TraceFileError> {
    let mut line = canonical_json(value);
    line.push(b'\n');
    let mut entries = decode(&line)?;
    // One line in, one entry out: decode refuses anything else.
    Ok(entries.remove(0))
}

/// The whole file for `entries`.
pub fn encode(entries: &[TraceEntry]) -> Vec<u8> {
    entries.iter().flat_map(encode_entry).collect()
}

/// Reads a whole file. An empty file is an empty log.
pub fn decode(bytes: &[u8]) -> Result<Vec<TraceEntry>, TraceFileError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let body = bytes.strip_suffix(b"\n").ok_or(TraceFileError::Unterminated)?;
    body.split(|&b| b == b'\n').enumerate().map(|(at, text)| decode_line(at + 1, text)).collect()
}

fn decode_line(line: usize, text: &[u8]) -> Result<TraceEntry, TraceFileError> {
    let malformed = |reason: String| TraceFileError::Malformed { line, reason };
    let value = strict_json::parse(text).map_err(|e| malformed(e.to_string()))?;
    let parsed: Line = serde_json::from_value(value).map_err(|e| malformed(e.to_string()))?;
    let params = hex::decode(&parsed.params).map_err(|e| malformed(format!("params: {e}")))?;
    let entry = TraceEntry {
        index: parsed.index,
        link: TraceLink { op: parsed.op, params, inputs: parsed.inputs.iter().map(|d| d.0).collect(), output: parsed.output.0 },
        root: parsed.root.0,
    };
    let canonical = encode_entry(&entry);
    if canonical[..canonical.len() - 1] != *text {
        return Err(TraceFileError::NotCanonical { line });
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn entries() -> Vec<TraceEntry> {
        let create = TraceLink { op: "create".into(), params: vec![0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0], inputs: vec![], output: [0xab; 32] };
        let add = TraceLink { op: "add".into(), params: vec![], inputs: vec![[0xab; 32], [0xab; 32]], output: [0xcd; 32] };
        vec![TraceEntry { index: 0, link: create, root: [1; 32] }, TraceEntry { index: 1, link: add, root: [2; 32] }]
    }

    #[test]
    fn round_trips_in_the_documented_encoding() {
        let bytes = encode(&entries());
        let text = String::from_utf8(bytes.clone()).unwrap();
        let first = text.lines().next().unwrap();
        assert_eq!(
            first,
            format!(
                r#"{{"index":0,"inputs":[],"op":"create","output":"{}","params":"000000000200000000000000","root":"{}"}}"#,
                "ab".repeat(32),
                "01".repeat(32)
            )
        );
        assert_eq!(decode(&bytes).unwrap(), entries());
        assert_eq!(decode(b"").unwrap(), vec![]);
    }

    #[test]
    fn malformed_lines_are_refused_with_their_number() {
        let good = String::from_utf8(encode(&entries())).unwrap();
        let cases = [
            (good.trim_end().to_string(), "cut off"),
            (good.replace("\"op\":\"add\"", "\"op\":\"add\",\"x\":1"), "line 2: not a trace entry"),
            (good.replace("\"index\":1,", ""), "line 2: not a trace entry"),
            (good.replace(&"cd".repeat(32), &"CD".repeat(32)), "line 2: not in canonical form"),
            (good.replace(&"cd".repeat(32), "cd"), "line 2: not a trace entry"),
            (good.replace("\"params\":\"\"", "\"params\":\"0\""), "line 2: not a trace entry"),
            (good.replace("{\"index\":1,", "{ \"index\":1,"), "line 2: not in canonical form"),
            (format!("{good}\n"), "line 3: not a trace entry"),
            (good.replace("\"index\":0,", "\"index\":0,\"index\":0,"), "line 1: not a trace entry"),
        ];
        for (text, expected) in cases {
            let error = decode(text.as_bytes()).unwrap_err().to_string();
            assert!(error.contains(expected), "{error} (expected {expected})");
        }
    }
}
