//! Checking an audit log export on this device, without trusting the broker's own verdict.
//!
//! An unfiltered JSONL export (`GET /v1/audit/export?format=jsonl`) holds one line per record,
//! `{"hash", "prev_hash", "record", "seq"}`, with the record exactly as the broker stored and
//! hashed it. The chain (docs/protocol.md, "Audit log"):
//!
//! ```text
//! hash(1) = SHA-256("latchkey audit v1" || 0x00 || 32 zero bytes || record(1))
//! hash(n) = SHA-256("latchkey audit v1" || 0x00 || hash(n-1)     || record(n))
//! ```
//!
//! [`verify_export`] recomputes every hash from the record bytes and checks the numbering and
//! the links, so an edited, removed, reordered or inserted record is found at its seq. It
//! cannot see records removed from the end: compare the head with one kept from earlier.

use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest as _, Sha256};

/// The chain label, as in the broker.
const CHAIN_LABEL: &[u8] = b"latchkey audit v1\0";

/// A chain that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedChain {
    /// Records checked.
    pub records: u64,
    /// The last record's hash, hex (64 zeros for an empty chain).
    pub head: String,
}

/// Where and why a chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the audit chain breaks at record {seq} (line {line}): {reason}")]
pub struct BrokenChain {
    /// The first record that does not verify.
    pub seq: u64,
    /// Its line in the export (1-based).
    pub line: usize,
    /// What is wrong.
    pub reason: &'static str,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line<'a> {
    seq: u64,
    prev_hash: String,
    hash: String,
    #[serde(borrow)]
    record: &'a RawValue,
}

#[derive(Deserialize)]
struct RecordSeq {
    seq: u64,
}

/// Verifies an unfiltered JSONL export from its first record; see the module docs.
pub fn verify_export(jsonl: &str) -> Result<VerifiedChain, BrokenChain> {
    let mut previous = [0_u8; 32];
    let mut expected = 1_u64;
    for (index, text) in jsonl.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let broken = |reason| BrokenChain { seq: expected, line: index + 1, reason };
        let line: Line<'_> =
            serde_json::from_str(text).map_err(|_| broken("not an export line"))?;
        if line.seq != expected {
            return Err(broken(if line.seq > expected {
                "a record is missing before this one"
            } else {
                "records are out of order or repeated"
            }));
        }
        let record_seq: RecordSeq = serde_json::from_str(line.record.get())
            .map_err(|_| broken("the record is not JSON"))?;
        if record_seq.seq != line.seq {
            return Err(broken("the record names another seq than its line"));
        }
        if from_hex(&line.prev_hash) != Some(previous) {
            return Err(broken("prev_hash is not the previous record's hash"));
        }
        let hash: [u8; 32] = Sha256::new()
            .chain_update(CHAIN_LABEL)
            .chain_update(previous)
            .chain_update(line.record.get().as_bytes())
            .finalize()
            .into();
        if from_hex(&line.hash) != Some(hash) {
            return Err(broken("the hash does not match the record: it was altered"));
        }
        previous = hash;
        expected += 1;
    }
    Ok(VerifiedChain { records: expected - 1, head: to_hex(&previous) })
}

fn from_hex(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0_u8; 32];
    for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let digit = |c: u8| (c as char).to_digit(16);
        let (high, low) = (digit(pair[0])?, digit(pair[1])?);
        *slot = u8::try_from(high * 16 + low).ok()?;
    }
    Some(out)
}

fn to_hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, prev: &[u8; 32], record: &str) -> (String, [u8; 32]) {
        let hash: [u8; 32] = Sha256::new()
            .chain_update(CHAIN_LABEL)
            .chain_update(prev)
            .chain_update(record.as_bytes())
            .finalize()
            .into();
        let text = format!(
            r#"{{"hash":"{}","prev_hash":"{}","record":{record},"seq":{seq}}}"#,
            to_hex(&hash),
            to_hex(prev)
        );
        (text, hash)
    }

    fn chain(n: u64) -> Vec<String> {
        let mut prev = [0_u8; 32];
        (1..=n)
            .map(|seq| {
                let (text, hash) =
                    line(seq, &prev, &format!(r#"{{"kind":"proxy_attempt","seq":{seq},"v":1}}"#));
                prev = hash;
                text
            })
            .collect()
    }

    #[test]
    fn a_sound_chain_verifies_and_reports_its_head() {
        let lines = chain(3);
        let verified = verify_export(&lines.join("\n")).expect("verifies");
        assert_eq!(verified.records, 3);
        assert_eq!(verify_export("").unwrap().head, "0".repeat(64), "an empty chain's head");
    }

    #[test]
    fn every_kind_of_tampering_is_found_at_its_record() {
        let lines = chain(4);
        let edited = lines.clone().join("\n").replacen("proxy_attempt", "proxy_outcome", 2);
        assert_eq!(verify_export(&edited).unwrap_err().seq, 1, "an edit breaks its own hash");

        let mut removed = lines.clone();
        removed.remove(1);
        let error = verify_export(&removed.join("\n")).unwrap_err();
        assert_eq!((error.seq, error.reason), (2, "a record is missing before this one"));

        let mut swapped = lines.clone();
        swapped.swap(1, 2);
        assert_eq!(verify_export(&swapped.join("\n")).unwrap_err().seq, 2, "a reorder is found");

        let mut relinked = lines.clone();
        relinked[2] = relinked[2].replacen("\"prev_hash\":\"", "\"prev_hash\":\"0", 1);
        assert!(verify_export(&relinked.join("\n")).is_err(), "a bad prev_hash is found");

        let garbage = format!("{}\nnot json", lines[0]);
        assert_eq!(verify_export(&garbage).unwrap_err().reason, "not an export line");
    }
}
