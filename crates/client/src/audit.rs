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
use crate::files::NewFile;
use crate::profile::{Profile, ProfileError, write_atomically};

/// The chain label, as in the broker.
const CHAIN_LABEL: &[u8] = b"latchkey audit v1\0";

/// A chain that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedChain {
    /// The chain's length: its last record's seq.
    pub records: u64,
    /// The last record's hash, hex (64 zeros for an empty chain).
    pub head: String,
    /// Records whose hashes this check recomputed: all of them, or those from the anchor on.
    pub checked: u64,
    /// The first of them (`None` when none was read).
    pub checked_from: Option<u64>,
}

/// Where and why a chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the audit chain breaks at record {seq} (line {line}): {reason}")]
pub struct BrokenChain {
    /// The first record that does not verify.
    pub seq: u64,
    /// Its line in what this check read of the export (1-based).
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
    verify_export_since(jsonl, None)
}

/// Verifies an unfiltered JSONL export as [`verify_export`] does and, given the `anchor` this
/// device kept, checks that the export still holds the anchored record with its hash: a log
/// that ends before it had records removed from its end, and one whose record there has another
/// hash had its history rewritten.
pub fn verify_export_since(
    jsonl: &str,
    anchor: Option<&Anchor>,
) -> Result<VerifiedChain, BrokenChain> {
    let mut walker = Walker::new(anchor, false, None);
    for text in jsonl.lines() {
        walker.line(text)?;
    }
    walker.finish()
}

/// The longest export line this device reads. A record is at most a few KiB (its strings are cut
/// to fixed lengths when recorded); a longer line is not the broker's export.
const MAX_LINE_BYTES: usize = 1024 * 1024;

/// Checks an export's lines as they arrive, in one pass and with one record in memory at a time.
struct Walker<'a> {
    /// The record this device verified last, whose hash the export must still give it.
    anchor: Option<&'a Anchor>,
    /// Whether the export starts at the anchored record rather than at the first one.
    from_anchor: bool,
    /// The seq whose hash to keep (the broker's head, to compare with its verdict).
    watch: Option<u64>,
    watched: Option<[u8; 32]>,
    expected: u64,
    previous: [u8; 32],
    lines: usize,
    checked: u64,
    anchor_seen: bool,
}

impl<'a> Walker<'a> {
    /// A walk from the first record, or, `from_anchor`, from the anchored one (whose own
    /// `prev_hash` is then taken on the anchor's word: the anchor's hash commits to it).
    fn new(anchor: Option<&'a Anchor>, from_anchor: bool, watch: Option<u64>) -> Self {
        let from_anchor = from_anchor && anchor.is_some_and(|a| a.seq > 0);
        let expected = if from_anchor { anchor.map_or(1, |a| a.seq) } else { 1 };
        Self {
            anchor,
            from_anchor,
            watch,
            watched: None,
            expected,
            previous: [0; 32],
            lines: 0,
            checked: 0,
            anchor_seen: false,
        }
    }

    fn broken(&self, reason: &'static str) -> BrokenChain {
        BrokenChain { seq: self.expected, line: self.lines, reason }
    }

    /// Checks the next line (blank lines are skipped).
    fn line(&mut self, text: &str) -> Result<(), BrokenChain> {
        if text.trim().is_empty() {
            return Ok(());
        }
        self.lines += 1;
        let line: Line<'_> =
            serde_json::from_str(text).map_err(|_| self.broken("not an export line"))?;
        let first_from_anchor = self.from_anchor && self.checked == 0;
        if line.seq != self.expected {
            return Err(self.broken(if first_from_anchor && line.seq > self.expected {
                "the record this device saw verified is gone: records were removed"
            } else if line.seq > self.expected {
                "a record is missing before this one"
            } else {
                "records are out of order or repeated"
            }));
        }
        let record_seq: RecordSeq = serde_json::from_str(line.record.get())
            .map_err(|_| self.broken("the record is not JSON"))?;
        if record_seq.seq != line.seq {
            return Err(self.broken("the record names another seq than its line"));
        }
        match from_hex(&line.prev_hash) {
            Some(prev) if first_from_anchor => self.previous = prev,
            Some(prev) if prev == self.previous => {}
            _ => return Err(self.broken("prev_hash is not the previous record's hash")),
        }
        let hash: [u8; 32] = Sha256::new()
            .chain_update(CHAIN_LABEL)
            .chain_update(self.previous)
            .chain_update(line.record.get().as_bytes())
            .finalize()
            .into();
        if from_hex(&line.hash) != Some(hash) {
            return Err(self.broken("the hash does not match the record: it was altered"));
        }
        if let Some(anchor) = self.anchor.filter(|a| a.seq == self.expected) {
            if to_hex(&hash) != anchor.hash {
                return Err(self.broken(
                    "this record is not the one this device saw verified: the log was rewritten",
                ));
            }
            self.anchor_seen = true;
        }
        if self.watch == Some(self.expected) {
            self.watched = Some(hash);
        }
        self.previous = hash;
        self.expected += 1;
        self.checked += 1;
        Ok(())
    }

    /// The verdict once the export ended.
    fn finish(self) -> Result<VerifiedChain, BrokenChain> {
        if self.anchor.is_some_and(|a| a.seq > 0) && !self.anchor_seen {
            return Err(BrokenChain {
                seq: self.anchor.map_or(0, |a| a.seq),
                line: self.lines.saturating_add(1),
                reason: "the log ends before a record this device saw verified: records were removed from its end",
            });
        }
        let from = if self.checked == 0 { None } else { Some(self.expected - self.checked) };
        Ok(VerifiedChain {
            records: self.expected - 1,
            head: to_hex(&self.previous),
            checked: self.checked,
            checked_from: from,
        })
    }
}

/// Cuts a byte stream into lines, whatever the chunks' boundaries.
#[derive(Default)]
struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    /// Hands every line `chunk` completes to `walker`, keeping the unfinished rest.
    fn feed(&mut self, chunk: &[u8], walker: &mut Walker<'_>) -> Result<(), BrokenChain> {
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            let (head, tail) = rest.split_at(end);
            rest = &tail[1..];
            if self.partial.is_empty() {
                Self::one(head, walker)?;
            } else {
                self.grow(head, walker)?;
                let line = std::mem::take(&mut self.partial);
                Self::one(&line, walker)?;
            }
        }
        self.grow(rest, walker)
    }

    /// The last line, if the export does not end with a newline.
    fn finish(self, walker: &mut Walker<'_>) -> Result<(), BrokenChain> {
        Self::one(&self.partial, walker)
    }

    fn grow(&mut self, bytes: &[u8], walker: &Walker<'_>) -> Result<(), BrokenChain> {
        if self.partial.len() + bytes.len() > MAX_LINE_BYTES {
            return Err(walker.broken("a line longer than 1 MiB: not an export line"));
        }
        self.partial.extend_from_slice(bytes);
        Ok(())
    }

    fn one(line: &[u8], walker: &mut Walker<'_>) -> Result<(), BrokenChain> {
        if line.len() > MAX_LINE_BYTES {
            return Err(walker.broken("a line longer than 1 MiB: not an export line"));
        }
        let text = std::str::from_utf8(line).map_err(|_| walker.broken("not an export line"))?;
        walker.line(text)
    }
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
    /// An export could not be written.
    #[error("cannot write the audit export {path}: {detail}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The anchor file could not be read or written.
    #[error("the audit anchor {path}: {detail}; move it away to check the log from scratch")]
    Anchor {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
}

/// Where a check of the workspace's chain starts reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckFrom {
    /// Every record from the first: shows that none, old or new, was changed or removed since
    /// this device last saw it. Reads the whole log, a chunk at a time.
    #[default]
    Start,
    /// The record this device verified last (its anchor) and those after it: shows that the log
    /// still holds that record unchanged and grew from it by sound links. Records before it are
    /// vouched for by the anchor's hash, which commits to all of them, but are not read again:
    /// a broker that rewrote its stored copy of them is found by the next check from the start.
    /// Without an anchor, the same as [`CheckFrom::Start`].
    Anchor,
}

/// Checks the workspace's audit chain without trusting the broker's verdict: asks the broker
/// for it, downloads the log (from the first record, or from this device's anchor), verifies
/// every link read here and against the anchor this device kept from its last check, and moves
/// the anchor on to the verified head when both agree. The log is read as it arrives, one line
/// in memory at a time, so its size is never a limit.
pub async fn check_workspace_chain(
    client: &BrokerClient,
    profile: &Profile,
    from: CheckFrom,
) -> Result<ChainCheck, AuditError> {
    let workspace = profile.load_config()?.workspace;
    let anchor = read_anchor(profile)?.filter(|a| a.workspace == workspace);
    let from_anchor = from == CheckFrom::Anchor && anchor.as_ref().is_some_and(|a| a.seq > 0);
    // The broker checks what this device reads: from the anchored record, or all of it.
    let broker =
        client.audit_verify(anchor.as_ref().filter(|_| from_anchor).map(|a| a.seq)).await?;
    // The broker's verdict came first: compare its head with this device's hash at its seq.
    let broker_seq = broker.records.filter(|_| broker.ok);
    let mut walker = Walker::new(anchor.as_ref(), from_anchor, broker_seq);
    let filter = AuditFilter {
        after_seq: anchor.as_ref().filter(|_| from_anchor).map(|a| a.seq - 1),
        ..AuditFilter::default()
    };
    let mut export = client.audit_export(false, &filter).await?;
    let mut lines = Lines::default();
    let mut read = Ok(());
    while let Some(chunk) = export.chunk().await? {
        read = lines.feed(&chunk, &mut walker);
        if read.is_err() {
            // The first break is the verdict: the rest of the log is not read.
            break;
        }
    }
    drop(export);
    let watched = walker.watched.map(|h| to_hex(&h));
    let local = read.and_then(|()| lines.finish(&mut walker)).and_then(|()| walker.finish());
    let broker_head_matches = match (broker_seq, &local) {
        (Some(0), Ok(_)) => broker.head.as_deref() == Some(EMPTY_HEAD),
        (Some(_), Ok(_)) => watched.is_some() && watched == broker.head,
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

/// Downloads the workspace's audit log records that `filter` selects, as JSONL or CSV, into
/// `file` a chunk at a time; returns the bytes written. The caller finishes the file: on an
/// error it is dropped, and with it the half-written export.
pub async fn export_log(
    client: &BrokerClient,
    csv: bool,
    filter: &AuditFilter,
    file: &mut NewFile,
) -> Result<u64, AuditError> {
    let mut export = client.audit_export(csv, filter).await?;
    while let Some(chunk) = export.chunk().await? {
        file.write_all(&chunk).map_err(|e| AuditError::Write {
            path: file.path().to_owned(),
            detail: e.to_string(),
        })?;
    }
    Ok(file.written())
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

    /// Feeds `text` to a walker in chunks of `size` bytes, as a download arrives.
    fn walk_chunks(
        text: &str,
        anchor: Option<&Anchor>,
        from_anchor: bool,
        size: usize,
    ) -> Result<VerifiedChain, BrokenChain> {
        let mut walker = Walker::new(anchor, from_anchor, None);
        let mut lines = Lines::default();
        for chunk in text.as_bytes().chunks(size) {
            lines.feed(chunk, &mut walker)?;
        }
        lines.finish(&mut walker)?;
        walker.finish()
    }

    #[test]
    fn an_export_read_in_chunks_of_any_size_gets_the_verdict_of_the_whole() {
        let lines = chain(4);
        let sound = lines.join("\n") + "\n";
        let mut tampered = lines.clone();
        tampered[2] = tampered[2].replacen("proxy_attempt", "proxy_outcome", 1);
        let tampered = tampered.join("\n");
        for size in (1..=40).chain([sound.len()]) {
            let verified = walk_chunks(&sound, None, false, size)
                .unwrap_or_else(|e| panic!("chunks of {size} bytes: {e}"));
            assert_eq!(verified, verify_export(&sound).unwrap(), "chunks of {size} bytes");
            assert_eq!((verified.checked, verified.checked_from), (4, Some(1)));
            assert_eq!(
                walk_chunks(&tampered, None, false, size).unwrap_err(),
                verify_export(&tampered).unwrap_err(),
                "a record split across chunks is still found altered (chunks of {size} bytes)"
            );
        }
    }

    #[test]
    fn a_check_from_the_anchor_reads_only_the_anchored_record_and_those_after_it() {
        let lines = chain(6);
        let anchor = anchor_at(&lines, 4);
        let since = lines[3..].join("\n");
        let verified = walk_chunks(&since, Some(&anchor), true, 7).expect("the tail verifies");
        assert_eq!(verified.records, 6, "the chain's length, not the records read");
        assert_eq!((verified.checked, verified.checked_from), (3, Some(4)));
        assert_eq!(verified.head, verify_export(&lines.join("\n")).unwrap().head);

        let unchanged = walk_chunks(&lines[3], Some(&anchor), true, 64).expect("no new records");
        assert_eq!((unchanged.records, unchanged.checked), (4, 1));

        // The anchored record's own prev_hash is taken on trust only because its hash must be
        // the anchored one: any other record there is refused.
        let mut rewritten = lines[3..].to_vec();
        rewritten[0] = rewritten[0].replacen("proxy_attempt", "proxy_outcome", 1);
        let relinked = line(4, &[7; 32], r#"{"kind":"proxy_attempt","seq":4,"v":1}"#).0;
        let edited = walk_chunks(&rewritten.join("\n"), Some(&anchor), true, 64).unwrap_err();
        assert_eq!(edited.seq, 4, "the anchored record edited: {edited}");
        let error = walk_chunks(&relinked, Some(&anchor), true, 64).unwrap_err();
        assert_eq!(error.seq, 4, "{error}");
        assert!(error.reason.contains("rewritten"), "another history under the anchor: {error}");

        let gone = walk_chunks(&lines[4..].join("\n"), Some(&anchor), true, 64).unwrap_err();
        assert_eq!(gone.seq, 4);
        assert!(gone.reason.contains("is gone"), "the anchored record removed: {gone}");
        let emptied = walk_chunks("", Some(&anchor), true, 64).unwrap_err();
        assert!(emptied.reason.contains("removed from its end"), "{emptied}");
        let broken = format!("{}\n{}", lines[3], lines[5]);
        let error = walk_chunks(&broken, Some(&anchor), true, 64).unwrap_err();
        assert_eq!((error.seq, error.line), (5, 2), "a gap after the anchor: {error}");
    }

    #[test]
    fn a_line_longer_than_a_record_can_be_is_refused_without_being_kept() {
        let endless = "x".repeat(MAX_LINE_BYTES + 1);
        for size in [4096, MAX_LINE_BYTES + 1] {
            let error = walk_chunks(&endless, None, false, size).unwrap_err();
            assert!(error.reason.contains("longer than 1 MiB"), "chunks of {size}: {error}");
        }
        let mut walker = Walker::new(None, false, None);
        let mut lines = Lines::default();
        let error = lines.feed(b"{\"seq\":1\xff}\n", &mut walker).unwrap_err();
        assert_eq!(error.reason, "not an export line", "a line that is not UTF-8");
    }
}
