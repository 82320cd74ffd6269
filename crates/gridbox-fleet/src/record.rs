//! What the market's messages and records hold, and their strict reading: every field bounded,
//! unknown fields refused, ids and keys checked, because any holder of the market's credentials
//! can write them (spec/fleet.md, "What a rogue provider can do").

use gridbox_core::digest::BlobRef;
use serde::{Deserialize, Serialize};

use crate::FleetError;
use crate::market::{MAX_JOB_MESSAGE_BYTES, MAX_RECORD_BYTES};

/// Longest reason a record or verdict may carry, in bytes.
pub const MAX_REASON_BYTES: usize = 4096;

/// The message on the work queue: which job to run. The job itself is its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobMessage {
    /// The job id.
    pub id: String,
    /// Which attempt of the job this message starts (a rejected result starts the next).
    pub attempt: u32,
}

/// A job's record in [`crate::market::RECORDS_BUCKET`], under its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRecord {
    /// The job id (the key).
    pub id: String,
    /// The canonical text of the resolved manifest.
    pub manifest: String,
    /// The attempt: 0 at first; the gateway starts another when it refuses a result.
    pub attempt: u32,
    /// Where the job is.
    pub state: RecordState,
}

/// A job record's states: `queued` -> `running` (-> `running` again, by another provider after a
/// redelivery) -> `ended`; the gateway may turn an `ended` it refuses back into `queued`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case", deny_unknown_fields)]
pub enum RecordState {
    /// Published on the work queue, not yet taken.
    Queued {
        /// When the gateway queued it, in milliseconds since the Unix epoch.
        queued_at_ms: u64,
    },
    /// A provider took it.
    Running {
        /// The provider's public key, hex.
        provider: String,
        /// When it started.
        started_at_ms: u64,
    },
    /// Ended: final unless the gateway refuses it.
    Ended {
        /// The provider that ended it (public key, hex).
        provider: String,
        /// When its run started.
        started_at_ms: u64,
        /// When it ended.
        finished_at_ms: u64,
        /// How.
        end: End,
    },
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "how", rename_all = "snake_case", deny_unknown_fields)]
pub enum End {
    /// It ran: the receipt names every result, all stored in the market before this was written.
    Ran {
        /// The signed receipt (canonical JSON) in the market.
        receipt: BlobRef,
        /// The trace log (`trace.jsonl`), when the job recorded bridge calls.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trace: Option<BlobRef>,
        /// Why it failed (its outcome and the first line of its detail); absent on exit code 0.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// It could not run, for the job's reasons (not valid wasm, say).
    Refused {
        /// Why.
        reason: String,
    },
    /// The providers failed to run it, for their own reasons, too many times.
    ProvidersFailed {
        /// The last failure.
        reason: String,
    },
}

/// A checker's verdict in [`crate::market::VERDICTS_BUCKET`], under the job id.
pub type VerdictRecord = gridbox_service::remote::Verdict;

/// A provider's tally in [`crate::market::TALLY_BUCKET`], under its public key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tally {
    /// Its receipts checked by replay.
    pub checked: u64,
    /// Of those, the ones a replay contradicted.
    pub mismatches: u64,
    /// The last job found wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_mismatch: Option<String>,
}

/// Whether `id` can be a job id: 1 to 64 of `0-9 a-f` (the service makes 32).
pub fn valid_job_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `key` can be a provider's public key: 64 lower-case hex digits.
pub fn valid_key_hex(key: &str) -> bool {
    key.len() == 64 && key.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], limit: usize, what: &str) -> Result<T, FleetError> {
    if bytes.len() > limit {
        return Err(FleetError::malformed(what, format!("{} bytes, above the {limit}-byte limit", bytes.len())));
    }
    serde_json::from_slice(bytes).map_err(|e| FleetError::malformed(what, e.to_string()))
}

impl JobMessage {
    /// Reads a work-queue message strictly.
    pub fn parse(bytes: &[u8]) -> Result<Self, FleetError> {
        let message: JobMessage = parse(bytes, MAX_JOB_MESSAGE_BYTES, "job message")?;
        if !valid_job_id(&message.id) {
            return Err(FleetError::malformed("job message", format!("{:?} is not a job id (1 to 64 of 0-9 a-f)", message.id)));
        }
        Ok(message)
    }

    /// Its JSON.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl JobRecord {
    /// Reads the record stored under `key` strictly: its id must be the key, every key hex,
    /// every reason bounded.
    pub fn parse(key: &str, bytes: &[u8]) -> Result<Self, FleetError> {
        let what = format!("job record {}", key.escape_default());
        let record: JobRecord = parse(bytes, MAX_RECORD_BYTES, &what)?;
        let bad = |reason: String| Err(FleetError::malformed(what.clone(), reason));
        if !valid_job_id(key) {
            return bad("its key is not a job id (1 to 64 of 0-9 a-f)".into());
        }
        if record.id != key {
            return bad(format!("it names job {:?}, not its key", record.id));
        }
        match &record.state {
            RecordState::Queued { .. } => {}
            RecordState::Running { provider, .. } | RecordState::Ended { provider, .. } if !valid_key_hex(provider) => {
                return bad(format!("provider {provider:?} is not a public key (64 hex digits)"));
            }
            RecordState::Running { .. } => {}
            RecordState::Ended { end, started_at_ms, finished_at_ms, .. } => {
                if finished_at_ms < started_at_ms {
                    return bad("it ended before it started".into());
                }
                let reason = match end {
                    End::Ran { reason, .. } => reason.as_deref(),
                    End::Refused { reason } | End::ProvidersFailed { reason } => Some(reason.as_str()),
                };
                if reason.is_some_and(|r| r.len() > MAX_REASON_BYTES) {
                    return bad(format!("its reason is above {MAX_REASON_BYTES} bytes"));
                }
            }
        }
        Ok(record)
    }

    /// Its JSON.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Whether it has ended.
    pub fn ended(&self) -> bool {
        matches!(self.state, RecordState::Ended { .. })
    }
}

/// Reads a verdict strictly.
pub fn parse_verdict(key: &str, bytes: &[u8]) -> Result<VerdictRecord, FleetError> {
    let what = format!("verdict on job {key}");
    let verdict: VerdictRecord = parse(bytes, crate::market::MAX_VERDICT_BYTES, &what)?;
    if !["match", "mismatch", "unverifiable"].contains(&verdict.verdict.as_str()) || !valid_key_hex(&verdict.provider) {
        return Err(FleetError::malformed(what, "unknown verdict or provider key".to_string()));
    }
    Ok(verdict)
}

/// Reads a tally strictly.
pub fn parse_tally(key: &str, bytes: &[u8]) -> Result<Tally, FleetError> {
    parse(bytes, 1024, &format!("tally of provider {key}"))
}

/// Truncates `text` to at most [`MAX_REASON_BYTES`], on a character boundary.
pub fn bounded_reason(text: &str) -> String {
    let mut end = text.len().min(MAX_REASON_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(provider: &str) -> JobRecord {
        JobRecord {
            id: "ab12".into(),
            manifest: "m".into(),
            attempt: 0,
            state: RecordState::Ended { provider: provider.into(), started_at_ms: 1, finished_at_ms: 2, end: End::Refused { reason: "no".into() } },
        }
    }

    #[test]
    fn records_round_trip_and_hostile_ones_are_refused() {
        let good = ended(&"a".repeat(64));
        assert_eq!(JobRecord::parse("ab12", &good.to_bytes()).ok(), Some(good.clone()));
        // Stored under another job's key.
        assert!(JobRecord::parse("ab13", &good.to_bytes()).unwrap_err().to_string().contains("not its key"));
        // A provider that is not a key.
        let text = JobRecord::parse("ab12", &ended("nobody").to_bytes()).unwrap_err().to_string();
        assert!(text.contains("not a public key"), "{text}");
        // Unknown fields, wrong types, garbage, too large.
        for bytes in [
            br#"{"id":"ab12","manifest":"m","attempt":0,"state":{"phase":"queued","queued_at_ms":1},"extra":1}"#.to_vec(),
            br#"{"id":"ab12","manifest":"m","attempt":0,"state":{"phase":"queued","queued_at_ms":1,"extra":1}}"#.to_vec(),
            br#"{"id":"ab12","manifest":"m","attempt":-1,"state":{"phase":"queued","queued_at_ms":1}}"#.to_vec(),
            br#"{"id":"ab12","manifest":"m","attempt":0,"state":{"phase":"exploded"}}"#.to_vec(),
            b"\xff\x00".to_vec(),
            vec![b' '; MAX_RECORD_BYTES + 1],
        ] {
            assert!(JobRecord::parse("ab12", &bytes).is_err());
        }
        let mut long = ended(&"a".repeat(64));
        long.state = RecordState::Ended { provider: "a".repeat(64), started_at_ms: 1, finished_at_ms: 2, end: End::Refused { reason: "x".repeat(5000) } };
        assert!(JobRecord::parse("ab12", &long.to_bytes()).is_err());
    }

    #[test]
    fn job_messages_are_checked() {
        assert_eq!(JobMessage::parse(br#"{"id":"00ff","attempt":2}"#).ok(), Some(JobMessage { id: "00ff".into(), attempt: 2 }));
        for bytes in [&br#"{"id":"../x","attempt":0}"#[..], br#"{"id":"","attempt":0}"#, br#"{"id":"AB","attempt":0}"#, b"hello", b""] {
            assert!(JobMessage::parse(bytes).is_err(), "{}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn reasons_are_cut_on_a_character_boundary() {
        let text = "é".repeat(MAX_REASON_BYTES);
        let cut = bounded_reason(&text);
        assert!(cut.len() <= MAX_REASON_BYTES && text.starts_with(&cut));
    }
}
