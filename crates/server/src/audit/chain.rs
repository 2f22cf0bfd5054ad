//! Verification of a chain, from the database or from an exported JSONL file. Pure functions: no
//! I/O beyond the reader handed in, so a CLI can verify an export offline.

use std::borrow::Borrow;
use std::io::BufRead;

use latchkey_core::ids::WorkspaceId;
use serde_json::Value;

use super::record::{GENESIS_HASH, RECORD_VERSION, canonical_json, chain_hash, from_hex};

/// One stored record as the verifier sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRecord {
    /// Position in the chain (the database column, or the JSONL line's `seq`).
    pub seq: u64,
    /// The hash the record claims to follow.
    pub prev_hash: [u8; 32],
    /// The record's stored hash.
    pub hash: [u8; 32],
    /// The canonical record text that was hashed.
    pub record: String,
    /// The database's indexed copy of the record's time, when the source has one.
    pub at_ms: Option<u64>,
}

/// A chain that verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainSummary {
    /// Number of records.
    pub records: u64,
    /// The first record checked: 1, or where [`ChainVerifier::from_seq`] started.
    pub checked_from: u64,
    /// Hash of the last record ([`GENESIS_HASH`] for an empty chain): pin it to notice a later
    /// truncation or rewrite.
    pub head: [u8; 32],
}

/// Where and why a chain stops verifying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at record {seq}: {reason}")]
pub struct BrokenLink {
    /// The first seq that does not verify (for a missing record, the missing seq).
    pub seq: u64,
    /// Why.
    pub reason: BreakReason,
}

/// Why a chain stops verifying. Codes are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BreakReason {
    /// A record is missing: the next record has a higher seq.
    #[error("the record is missing (removed, or the chain does not start at 1)")]
    MissingRecord,
    /// A seq repeats or goes backwards.
    #[error("the seq repeats or goes backwards")]
    UnexpectedSeq,
    /// `prev_hash` is not the previous record's hash.
    #[error("prev_hash is not the previous record's hash")]
    PrevHashMismatch,
    /// `hash` does not match the record and `prev_hash` (the record or hash was edited).
    #[error("the hash does not match the record")]
    HashMismatch,
    /// The record is not a JSON object of a known version.
    #[error("the record is not a valid version 1 record")]
    MalformedRecord,
    /// The record's own `seq`, `workspace` or `at_ms` disagrees with where it is stored.
    #[error("the record's seq, workspace or time disagrees with where it is stored")]
    RecordMismatch,
    /// The record is not in canonical form (it was not written by a broker).
    #[error("the record is not in canonical form")]
    NotCanonical,
}

impl BreakReason {
    /// The stable snake-case code.
    pub fn code(self) -> &'static str {
        match self {
            BreakReason::MissingRecord => "missing_record",
            BreakReason::UnexpectedSeq => "unexpected_seq",
            BreakReason::PrevHashMismatch => "prev_hash_mismatch",
            BreakReason::HashMismatch => "hash_mismatch",
            BreakReason::MalformedRecord => "malformed_record",
            BreakReason::RecordMismatch => "record_mismatch",
            BreakReason::NotCanonical => "not_canonical",
        }
    }
}

/// Verifies records one at a time, in seq order, starting at seq 1 (or at a record whose place in
/// the chain is known from an earlier check); for chains too long to hold.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    workspace: Option<String>,
    first_seq: u64,
    next_seq: u64,
    prev_hash: [u8; 32],
    /// Whether the next record's `prev_hash` is taken as given: the first one of a verifier
    /// started past seq 1.
    trust_prev: bool,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl ChainVerifier {
    /// A verifier that takes the workspace from the first record and holds every other to it.
    pub fn new() -> Self {
        Self {
            workspace: None,
            first_seq: 1,
            next_seq: 1,
            prev_hash: GENESIS_HASH,
            trust_prev: false,
        }
    }

    /// A verifier for the chain of `workspace`.
    pub fn for_workspace(workspace: WorkspaceId) -> Self {
        Self { workspace: Some(workspace.to_string()), ..Self::new() }
    }

    /// A verifier for the chain of `workspace` from record `seq` on: that record's `prev_hash`
    /// is taken as given, every later one must link to the record before it. It shows the
    /// records from `seq` intact and linked, not those before: a caller that verified up to
    /// `seq` earlier compares the hash it kept with the one this verifier reaches there.
    pub fn from_seq(workspace: WorkspaceId, seq: u64) -> Self {
        let seq = seq.max(1);
        Self {
            first_seq: seq,
            next_seq: seq,
            trust_prev: seq > 1,
            ..Self::for_workspace(workspace)
        }
    }

    /// Checks the next record. After an error the verifier is unchanged (it stops being useful:
    /// report the first break).
    pub fn push(&mut self, record: &ChainRecord) -> Result<(), BrokenLink> {
        let seq = record.seq;
        let broken = |reason| BrokenLink { seq, reason };
        if seq > self.next_seq {
            return Err(BrokenLink { seq: self.next_seq, reason: BreakReason::MissingRecord });
        }
        if seq < self.next_seq {
            return Err(broken(BreakReason::UnexpectedSeq));
        }
        if !self.trust_prev && record.prev_hash != self.prev_hash {
            return Err(broken(BreakReason::PrevHashMismatch));
        }
        if chain_hash(&record.prev_hash, record.record.as_bytes()) != record.hash {
            return Err(broken(BreakReason::HashMismatch));
        }
        let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(&record.record) else {
            return Err(broken(BreakReason::MalformedRecord));
        };
        if fields.get("v").and_then(Value::as_u64) != Some(RECORD_VERSION) {
            return Err(broken(BreakReason::MalformedRecord));
        }
        let workspace = fields.get("workspace").and_then(Value::as_str);
        let at_ms = fields.get("at_ms").and_then(Value::as_u64);
        let Some((workspace, at_ms)) = workspace.zip(at_ms) else {
            return Err(broken(BreakReason::MalformedRecord));
        };
        if fields.get("seq").and_then(Value::as_u64) != Some(seq)
            || self.workspace.as_deref().is_some_and(|w| w != workspace)
            || record.at_ms.is_some_and(|t| t != at_ms)
        {
            return Err(broken(BreakReason::RecordMismatch));
        }
        if canonical_json(&Value::Object(fields.clone())) != record.record {
            return Err(broken(BreakReason::NotCanonical));
        }
        if self.workspace.is_none() {
            self.workspace = Some(workspace.to_owned());
        }
        self.prev_hash = record.hash;
        self.next_seq = seq.saturating_add(1);
        self.trust_prev = false;
        Ok(())
    }

    /// The summary of everything pushed so far.
    pub fn finish(&self) -> ChainSummary {
        ChainSummary {
            records: self.next_seq - 1,
            checked_from: self.first_seq,
            head: self.prev_hash,
        }
    }
}

/// Verifies a whole chain, given in seq order from seq 1.
pub fn verify_chain<I>(records: I) -> Result<ChainSummary, BrokenLink>
where
    I: IntoIterator,
    I::Item: Borrow<ChainRecord>,
{
    let mut verifier = ChainVerifier::new();
    for record in records {
        verifier.push(record.borrow())?;
    }
    Ok(verifier.finish())
}

/// An exported JSONL file did not verify.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JsonlError {
    /// Reading failed.
    #[error("could not read the export: {0}")]
    Io(#[from] std::io::Error),
    /// A line is not an export line (`{"hash", "prev_hash", "record", "seq"}`).
    #[error("line {line} is not an audit export line")]
    Line {
        /// 1-based line number.
        line: usize,
    },
    /// The lines do not form an intact chain.
    #[error(transparent)]
    Broken(#[from] BrokenLink),
}

/// Verifies an unfiltered JSONL export (`GET /v1/audit/export?format=jsonl`, oldest first): every
/// line's record is re-canonicalised and hashed. Blank lines are ignored.
pub fn verify_jsonl(reader: impl BufRead) -> Result<ChainSummary, JsonlError> {
    let mut verifier = ChainVerifier::new();
    for (index, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let record = parse_line(&line).ok_or(JsonlError::Line { line: index + 1 })?;
        verifier.push(&record)?;
    }
    Ok(verifier.finish())
}

fn parse_line(line: &str) -> Option<ChainRecord> {
    let Value::Object(fields) = serde_json::from_str::<Value>(line).ok()? else { return None };
    let hash = |key: &str| fields.get(key).and_then(Value::as_str).and_then(from_hex);
    let record = fields.get("record").filter(|r| r.is_object())?;
    Some(ChainRecord {
        seq: fields.get("seq")?.as_u64()?,
        prev_hash: hash("prev_hash")?,
        hash: hash("hash")?,
        record: canonical_json(record),
        at_ms: None,
    })
}
