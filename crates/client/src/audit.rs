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
//! the links, so an edited, removed, reordered or inserted record is found at its seq. A chain
//! alone cannot show records removed from its end, nor a history rewritten from its start: so
//! [`check_workspace_chain`] also keeps, in the profile, the last point of the chain this device
//! saw verified (its [`Anchor`]) and checks that every later export still holds that record
//! with that hash.

use std::path::PathBuf;

use latchkey_core::ids::WorkspaceId;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest as _, Sha256};

use crate::api::{AuditFilter, AuditVerdict, BrokerClient, ClientError};
use crate::profile::{Profile, ProfileError, write_atomically};

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
    walk(jsonl, |_, _| {})
}

/// Verifies an unfiltered JSONL export as [`verify_export`] does and, given the `anchor` this
/// device kept, checks that the export still holds the anchored record with its hash: a log
/// that ends before it had records removed from its end, and one whose record there has another
/// hash had its history rewritten.
pub fn verify_export_since(
    jsonl: &str,
    anchor: Option<&Anchor>,
) -> Result<VerifiedChain, BrokenChain> {
    walk_since(jsonl, anchor, |_, _| {})
}

/// [`verify_export_since`], calling `visit` as [`walk`] does.
fn walk_since(
    jsonl: &str,
    anchor: Option<&Anchor>,
    mut visit: impl FnMut(u64, &[u8; 32]),
) -> Result<VerifiedChain, BrokenChain> {
    let mut at_anchor = None;
    let chain = walk(jsonl, |seq, hash| {
        if anchor.is_some_and(|a| a.seq == seq) {
            at_anchor = Some(to_hex(hash));
        }
        visit(seq, hash);
    })?;
    let Some(anchor) = anchor else { return Ok(chain) };
    match at_anchor {
        None if anchor.seq > 0 => Err(BrokenChain {
            seq: anchor.seq,
            line: usize::try_from(chain.records).unwrap_or(usize::MAX).saturating_add(1),
            reason: "the log ends before a record this device saw verified: records were removed from its end",
        }),
        Some(hash) if hash != anchor.hash => Err(BrokenChain {
            seq: anchor.seq,
            line: usize::try_from(anchor.seq).unwrap_or(usize::MAX),
            reason: "this record is not the one this device saw verified: the log was rewritten",
        }),
        _ => Ok(chain),
    }
}

/// Walks the chain, calling `visit` with each record's seq and hash once it verified.
fn walk(jsonl: &str, mut visit: impl FnMut(u64, &[u8; 32])) -> Result<VerifiedChain, BrokenChain> {
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
        visit(expected, &hash);
        previous = hash;
        expected += 1;
    }
    Ok(VerifiedChain { records: expected - 1, head: to_hex(&previous) })
}

/// The last point of a workspace's chain this device saw verified: record `seq` hashed to
/// `hash`. Kept in the profile (`<stem>.audit-anchor`); not secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// The workspace whose chain it is.
    pub workspace: WorkspaceId,
    /// The record's seq (0: the empty chain).
    pub seq: u64,
    /// The record's hash, hex.
    pub hash: String,
}

/// What [`check_workspace_chain`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainCheck {
    /// The broker's own verdict on its chain.
    pub broker: AuditVerdict,
    /// This device's check of the export, against its anchor.
    pub local: Result<VerifiedChain, BrokenChain>,
    /// The anchor the export was checked against, if this device had one.
    pub anchor: Option<Anchor>,
    /// Whether the broker's head is this device's hash at the broker's seq.
    broker_head_matches: bool,
}

impl ChainCheck {
    /// Whether the log can be trusted: this device's check passed, the broker's too, and the
    /// broker's head is the record this device computed at the same seq (records appended
    /// between the two reads do not count against it).
    pub fn verified(&self) -> bool {
        self.local.is_ok() && self.broker.ok && self.broker_head_matches
    }
}

/// Checking the workspace's chain failed before anything could be said about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The broker refused or could not be reached.
    #[error(transparent)]
    Broker(#[from] ClientError),
    /// The profile could not be read.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The anchor file could not be read or written.
    #[error("the audit anchor {path}: {detail}; move it away to check the log from scratch")]
    Anchor {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
}

/// Checks the workspace's audit chain without trusting the broker's verdict: asks the broker
/// for it, downloads the whole log, verifies every link here and against the anchor this device
/// kept from its last check, and moves the anchor on to the verified head when both agree.
pub async fn check_workspace_chain(
    client: &BrokerClient,
    profile: &Profile,
) -> Result<ChainCheck, AuditError> {
    let workspace = profile.load_config()?.workspace;
    let anchor = read_anchor(profile)?.filter(|a| a.workspace == workspace);
    let broker = client.audit_verify().await?;
    let export = client.audit_export(false, &AuditFilter::default()).await?;
    // The broker's verdict came first: compare its head with this device's hash at its seq.
    let broker_seq = broker.records.filter(|_| broker.ok);
    let mut at_broker_seq = None;
    let local = walk_since(&export, anchor.as_ref(), |seq, hash| {
        if Some(seq) == broker_seq {
            at_broker_seq = Some(to_hex(hash));
        }
    });
    let broker_head_matches = match (broker_seq, &local) {
        (Some(0), Ok(_)) => broker.head.as_deref() == Some(EMPTY_HEAD),
        (Some(_), Ok(_)) => at_broker_seq.is_some() && at_broker_seq == broker.head,
        _ => false,
    };
    let check = ChainCheck { broker, local, anchor, broker_head_matches };
    if let (true, Ok(chain)) = (check.verified(), &check.local) {
        let moved = Anchor { workspace, seq: chain.records, hash: chain.head.clone() };
        if check.anchor.as_ref() != Some(&moved) {
            write_anchor(profile, &moved)?;
        }
    }
    Ok(check)
}

/// The head of an empty chain.
const EMPTY_HEAD: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn anchor_path(profile: &Profile) -> PathBuf {
    profile.config_dir().join(format!("{}.audit-anchor", profile.name().file_stem()))
}

fn read_anchor(profile: &Profile) -> Result<Option<Anchor>, AuditError> {
    let path = anchor_path(profile);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AuditError::Anchor { path, detail: e.to_string() }),
    };
    let anchor: Anchor = serde_json::from_str(&text).map_err(|_| AuditError::Anchor {
        path: path.clone(),
        detail: "not an anchor this version wrote".to_owned(),
    })?;
    if from_hex(&anchor.hash).is_none() {
        return Err(AuditError::Anchor {
            path,
            detail: "its hash is not 64 hex digits".to_owned(),
        });
    }
    Ok(Some(anchor))
}

fn write_anchor(profile: &Profile, anchor: &Anchor) -> Result<(), AuditError> {
    let path = anchor_path(profile);
    let text = serde_json::to_string(anchor)
        .map_err(|e| AuditError::Anchor { path: path.clone(), detail: e.to_string() })?;
    write_atomically(&path, text.as_bytes())
        .map_err(|e| AuditError::Anchor { path, detail: e.to_string() })
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

    fn anchor_at(lines: &[String], seq: u64) -> Anchor {
        let upto = lines[..usize::try_from(seq).unwrap()].join("\n");
        let head = verify_export(&upto).expect("a sound prefix").head;
        Anchor { workspace: WorkspaceId::random(), seq, hash: head }
    }

    #[test]
    fn a_chain_cut_short_of_its_anchor_or_rewritten_before_it_is_refused() {
        let lines = chain(5);
        let anchor = anchor_at(&lines, 3);
        let grown = verify_export_since(&lines.join("\n"), Some(&anchor));
        assert_eq!(grown.expect("records appended after the anchor are fine").records, 5);
        let exact = verify_export_since(&lines[..3].join("\n"), Some(&anchor));
        assert_eq!(exact.expect("the anchored head itself").records, 3);

        // Removing records from the end leaves a sound chain that only the anchor can fault.
        let cut = lines[..2].join("\n");
        assert!(verify_export(&cut).is_ok(), "a truncated chain verifies on its own");
        let error = verify_export_since(&cut, Some(&anchor)).unwrap_err();
        assert_eq!(error.seq, 3, "the anchored record is the one missing");
        assert!(error.reason.contains("removed from its end"), "{error}");
        let emptied = verify_export_since("", Some(&anchor)).unwrap_err();
        assert!(emptied.reason.contains("removed from its end"), "an emptied log: {emptied}");

        // A history rebuilt from scratch chains soundly but differs at the anchor.
        let mut prev = [0_u8; 32];
        let forged: Vec<String> = (1..=4)
            .map(|seq| {
                let record = format!(r#"{{"kind":"proxy_outcome","seq":{seq},"v":1}}"#);
                let (text, hash) = line(seq, &prev, &record);
                prev = hash;
                text
            })
            .collect();
        assert!(verify_export(&forged.join("\n")).is_ok(), "a forged chain is internally sound");
        let error = verify_export_since(&forged.join("\n"), Some(&anchor)).unwrap_err();
        assert_eq!(error.seq, 3);
        assert!(error.reason.contains("rewritten"), "{error}");

        let empty = Anchor { seq: 0, hash: "0".repeat(64), ..anchor };
        assert!(verify_export_since("", Some(&empty)).is_ok(), "an empty chain's anchor holds");
    }
}
