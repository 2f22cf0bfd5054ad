//! The audit journal: where a broker on SQLite commits its audit records.
//!
//! A durable commit of SQLite's `audit_log` table costs more than the rest of a proxied call
//! (docs/benchmarks.md), and every call waits for its record. So on SQLite a record is committed
//! by appending it, already chained, to a journal file beside the database with one `write`; a
//! background ingester copies the journaled records into `audit_log` in large transactions. The
//! journal line is the commit: it survives the broker's process the way the database's own WAL
//! does under `synchronous=NORMAL` (neither syncs to the disk at each commit). Records the ingester
//! had not copied when the broker stopped are copied when the next one opens the journal, before
//! it takes any new record. Reads of the log wait for the ingester first
//! (`Store::audit_caught_up`), so a read sees every record committed before it.
//!
//! Records no decision waits on (a call's `proxy_outcome`) are deferred: held in memory and
//! written ahead of the next record appended, in the same `write`, or by the ingester when it
//! wakes (at most [`super::DEFERRED_DELAY`] later), or when the journal closes. A busy proxy thus
//! makes one `write` per call rather than two. Like the database writer's deferred records, they
//! are lost if the process dies in that window.
//!
//! The journal is a directory of segments, `<n>.jsonl`, one JSON line per record
//! (`{workspace, seq, at_ms, record, prev_hash, hash}`, hashes in hex), and a `lock` file that
//! one broker holds for as long as it runs.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use latchkey_core::ids::WorkspaceId;
use serde::Deserialize;
use tokio::sync::{Notify, watch};

use super::record::{PreparedRecord, chain_hash, escape_into, from_hex, to_hex};
use super::{AuditError, AuditEvent, AuditKind};
use crate::store::audit::{ChainHead, ChainRow};
use crate::store::{Store, StoreError};

/// A segment is sealed, and a new one started, once it is this large.
const SEGMENT_LIMIT: u64 = 1 << 20;

/// Most records committed to the journal and not yet in the database: past it, appends are
/// refused (fail closed) until the database takes them, rather than growing without bound.
const MAX_BEHIND: u64 = 100_000;

/// How the ingester is doing, shared with the store's readers.
#[derive(Debug)]
pub(crate) struct IngestProgress {
    /// Records appended to the journal, or deferred to be, since it was opened.
    queued: AtomicU64,
    /// Of those, how many are in the database.
    ingested: watch::Sender<u64>,
    /// Wakes the ingester.
    pub(super) wake: Notify,
}

impl IngestProgress {
    /// Waits, at most `limit`, until every record appended or deferred before the call is in
    /// the database.
    pub(crate) async fn caught_up(&self, limit: Duration) -> bool {
        let target = self.queued.load(Ordering::Acquire);
        let mut ingested = self.ingested.subscribe();
        if *ingested.borrow_and_update() >= target {
            return true;
        }
        self.wake.notify_one();
        let reached = ingested.wait_for(|count| *count >= target);
        matches!(tokio::time::timeout(limit, reached).await, Ok(Ok(_)))
    }
}

/// Makes the journal's writes of chosen kinds of record fail as on a full disk, to test that
/// a call whose record cannot be committed is refused. Not for production use.
#[doc(hidden)]
#[derive(Debug, Clone, Default)]
pub struct JournalFaults(std::sync::Arc<Mutex<Vec<super::AuditKind>>>);

impl JournalFaults {
    /// From now on, writes of records of `kind` fail.
    pub fn fail_writes_of(&self, kind: super::AuditKind) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(kind);
    }

    fn fails(&self, kind: super::AuditKind) -> bool {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).contains(&kind)
    }
}

/// The outcome of [`Journal::append`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Appended {
    /// The records are committed at these seqs, in order.
    Committed(Vec<u64>),
    /// The journal does not know this workspace's chain head yet: read it from the database,
    /// hand it to [`Journal::learn_head`], and append again.
    NeedHead(WorkspaceId),
}

/// One open journal. See the module docs.
#[derive(Debug)]
pub(super) struct Journal {
    dir: PathBuf,
    state: Mutex<State>,
    /// Records deferred: written ahead of the next append, or by the ingester. A lock of its
    /// own, so queueing one never waits for a write.
    deferred: Mutex<Vec<Prepared>>,
    /// Set by [`Journal::close`]: nothing more may be deferred.
    closing: AtomicBool,
    pub(super) progress: std::sync::Arc<IngestProgress>,
    faults: Option<JournalFaults>,
    /// Held (locked) for the journal's life.
    _lock: File,
}

#[derive(Debug)]
struct State {
    segment: File,
    segment_number: u64,
    segment_len: u64,
    /// Full segments whose records the ingester has taken, with the append count at which each
    /// was sealed: removed once that many records are in the database.
    sealed: Vec<(PathBuf, u64)>,
    /// Each workspace's head as the journal has it (ahead of the database's).
    heads: HashMap<WorkspaceId, ChainHead>,
    /// Appended, not yet taken by the ingester.
    pending: Vec<ChainRow>,
    appended: u64,
    /// No more appends: the broker is stopping.
    closed: bool,
    /// A failed write could not be undone: the segment may end in a torn line, so nothing more
    /// is appended after it.
    broken: bool,
    line: Vec<u8>,
}

/// A journal line, as recovery reads it (appends write it by hand, see [`write_line`]).
#[derive(Debug, Deserialize)]
struct Line<'a> {
    workspace: WorkspaceId,
    seq: u64,
    at_ms: u64,
    #[serde(borrow)]
    record: std::borrow::Cow<'a, str>,
    prev_hash: std::borrow::Cow<'a, str>,
    hash: std::borrow::Cow<'a, str>,
}

/// An event made ready for the journal outside its lock: everything but its place in the chain.
#[derive(Debug)]
struct Prepared {
    workspace: WorkspaceId,
    at_ms: u64,
    kind: AuditKind,
    record: PreparedRecord,
    /// The journal line but for the seq (twice: the line's and the record's) and the hashes.
    line: LineParts,
}

/// A journal line in the pieces between what only the lock knows: `{head}{seq}{middle}{seq}
/// {tail}{prev_hash}","hash":"{hash}"}`.
#[derive(Debug)]
struct LineParts {
    /// `{"workspace":"…","seq":`
    head: String,
    /// `,"at_ms":…,"record":"` and the escaped record up to its seq.
    middle: String,
    /// The escaped rest of the record, `","prev_hash":"`.
    tail: String,
}

impl Prepared {
    fn new(event: &AuditEvent) -> Self {
        let record = PreparedRecord::new(event);
        let (before, after) = record.split();
        // JSON escaping works character by character, so the two halves escape on their own.
        // Writing into a String cannot fail.
        let mut head = String::with_capacity(64);
        let _ = write!(head, "{{\"workspace\":\"{}\",\"seq\":", event.workspace);
        let mut middle = String::with_capacity(before.len() + 64);
        let _ = write!(middle, ",\"at_ms\":{},\"record\":\"", event.at_ms);
        escape_into(before, &mut middle);
        let mut tail = String::with_capacity(after.len() + 32);
        escape_into(after, &mut tail);
        tail.push_str("\",\"prev_hash\":\"");
        let line = LineParts { head, middle, tail };
        Self { workspace: event.workspace, at_ms: event.at_ms, kind: event.kind, record, line }
    }
}

/// Appends `row`'s journal line, the fields of [`Line`] in its order.
fn write_line(line: &mut Vec<u8>, row: &ChainRow, parts: &LineParts) {
    let seq = row.seq.to_string();
    for piece in [&parts.head, &seq, &parts.middle, &seq, &parts.tail] {
        line.extend_from_slice(piece.as_bytes());
    }
    line.extend_from_slice(to_hex(&row.prev_hash).as_bytes());
    line.extend_from_slice(b"\",\"hash\":\"");
    line.extend_from_slice(to_hex(&row.hash).as_bytes());
    line.extend_from_slice(b"\"}\n");
}

impl Journal {
    /// Opens the journal in `dir` (creating it), takes its lock, and copies every record a
    /// previous broker left in it into `store` before returning.
    pub(super) async fn open(
        store: &Store,
        dir: &Path,
        faults: Option<JournalFaults>,
    ) -> Result<Self, StoreError> {
        let failed = |what: &str, error: std::io::Error| {
            StoreError::AuditJournal(format!("{what} {}: {error}", dir.display()))
        };
        create_private_dir(dir).map_err(|e| failed("cannot create", e))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .map_err(|e| failed("cannot open the lock of", e))?;
        lock_exclusive(&lock).map_err(|error| {
            StoreError::AuditJournal(format!(
                "another broker is using {} ({error}); stop it, or give this one its own data directory",
                dir.display()
            ))
        })?;

        let segments = list_segments(dir).map_err(|e| failed("cannot list", e))?;
        // The database's heads, and the journal's where it is ahead.
        let mut stored_heads = HashMap::new();
        let mut heads = HashMap::new();
        let mut rows = Vec::new();
        for (index, (number, path)) in segments.iter().enumerate() {
            let last = index + 1 == segments.len();
            let text = fs::read(path).map_err(|e| failed("cannot read", e))?;
            recover_segment(store, path, &text, last, &mut stored_heads, &mut heads, &mut rows)
                .await?;
            tracing::debug!(segment = number, "audit journal segment read");
        }
        if !rows.is_empty() {
            let mut connection = store.pool.acquire().await?;
            store.insert_chained(&mut connection, &rows).await?;
            tracing::info!(records = rows.len(), "audit records left in the journal were indexed");
        }
        for (_, path) in &segments {
            fs::remove_file(path).map_err(|e| failed("cannot remove a segment of", e))?;
        }
        stored_heads.extend(heads);
        let heads = stored_heads;
        let segment_number = segments.last().map_or(1, |(number, _)| number + 1);
        let segment = open_segment(dir, segment_number).map_err(|e| failed("cannot write", e))?;
        Ok(Self {
            dir: dir.to_owned(),
            state: Mutex::new(State {
                segment,
                segment_number,
                segment_len: 0,
                sealed: Vec::new(),
                heads,
                pending: Vec::new(),
                appended: 0,
                closed: false,
                broken: false,
                line: Vec::with_capacity(1024),
            }),
            deferred: Mutex::new(Vec::new()),
            closing: AtomicBool::new(false),
            progress: std::sync::Arc::new(IngestProgress {
                queued: AtomicU64::new(0),
                ingested: watch::Sender::new(0),
                wake: Notify::new(),
            }),
            faults,
            _lock: lock,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update of the state is completed before anything that can panic, so a poisoned
        // lock still guards a consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Chains `events`, after any deferred records, onto their workspaces' heads and writes them
    /// to the journal in one `write`: all committed when this returns [`Appended::Committed`]
    /// (with the seqs of `events`), none otherwise; deferred records that were not written wait
    /// for the next write. Never waits for anything but that `write`. (A crash in the middle of
    /// it can leave the lines before the torn one, which were never acknowledged.) With no
    /// `events`, writes the deferred records, if any.
    pub(super) fn append(&self, events: &[AuditEvent]) -> Result<Appended, AuditError> {
        let events: Vec<Prepared> = events.iter().map(Prepared::new).collect();
        let mut guard = self.state();
        let before = guard.appended;
        let appended = self.write(&mut guard, &events);
        let wrote = guard.appended > before;
        drop(guard);
        if wrote {
            self.progress.wake.notify_one();
        }
        appended
    }

    /// Queues `event` to be written ahead of the next append, or by the ingester within
    /// [`super::DEFERRED_DELAY`].
    pub(super) fn defer(&self, event: &AuditEvent) -> Result<(), AuditError> {
        let prepared = Prepared::new(event);
        let mut deferred = self.deferred();
        // Read under the deferred lock: `close` sets it before taking what is deferred.
        if self.closing.load(Ordering::Acquire) {
            return Err(AuditError::Stopped);
        }
        deferred.push(prepared);
        let first = deferred.len() == 1;
        self.progress.queued.fetch_add(1, Ordering::AcqRel);
        drop(deferred);
        if first {
            self.progress.wake.notify_one();
        }
        Ok(())
    }

    fn deferred(&self) -> MutexGuard<'_, Vec<Prepared>> {
        // Pushes and takes cannot leave the queue half-changed.
        self.deferred.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self, state: &mut State, events: &[Prepared]) -> Result<Appended, AuditError> {
        let deferred = std::mem::take(&mut *self.deferred());
        if deferred.is_empty() && events.is_empty() {
            return Ok(Appended::Committed(Vec::new()));
        }
        let written =
            self.writable(state).and_then(|()| self.write_lines(state, &deferred, events));
        if !matches!(written, Ok(Appended::Committed(_))) {
            // Back at the front of the queue, ahead of anything deferred meanwhile.
            let mut queue = self.deferred();
            let later = std::mem::replace(&mut *queue, deferred);
            queue.extend(later);
        }
        written
    }

    /// Whether records may be written now.
    fn writable(&self, state: &State) -> Result<(), AuditError> {
        if state.closed {
            return Err(AuditError::Stopped);
        }
        if state.broken {
            return Err(AuditError::CommitFailed);
        }
        if state.appended.saturating_sub(*self.progress.ingested.borrow()) >= MAX_BEHIND {
            tracing::error!(
                behind = MAX_BEHIND,
                "the database has not taken the journal's audit records; refusing new ones"
            );
            return Err(AuditError::CommitFailed);
        }
        Ok(())
    }

    fn write_lines(
        &self,
        state: &mut State,
        deferred: &[Prepared],
        events: &[Prepared],
    ) -> Result<Appended, AuditError> {
        let all = || deferred.iter().chain(events);
        let mut next: HashMap<WorkspaceId, ChainHead> = HashMap::new();
        let mut rows = Vec::with_capacity(deferred.len() + events.len());
        state.line.clear();
        for prepared in all() {
            let Some(known) = state.heads.get(&prepared.workspace).copied() else {
                return Ok(Appended::NeedHead(prepared.workspace));
            };
            let head = next.entry(prepared.workspace).or_insert(known);
            let row = ChainRow::chain_prepared(&prepared.record, prepared.at_ms, head);
            write_line(&mut state.line, &row, &prepared.line);
            rows.push(row);
        }
        let written = match &self.faults {
            Some(faults) if all().any(|e| faults.fails(e.kind)) => {
                Err(std::io::Error::from(std::io::ErrorKind::StorageFull))
            }
            _ => state.segment.write_all(&state.line),
        };
        if let Err(error) = written {
            tracing::error!(%error, "could not write the audit journal; the records are refused");
            // Cut off whatever part of the lines reached the file, so the next record starts on
            // a line of its own.
            if let Err(error) = state.segment.set_len(state.segment_len) {
                tracing::error!(%error, "could not undo a failed audit journal write; refusing every record until restart");
                state.broken = true;
            }
            return Err(AuditError::CommitFailed);
        }
        state.segment_len += state.line.len() as u64;
        for row in &rows {
            state.heads.insert(row.workspace, row.head());
        }
        let seqs = rows[deferred.len()..].iter().map(|row| row.seq).collect();
        state.appended += rows.len() as u64;
        state.pending.extend(rows);
        // Deferred records were counted as queued when they were deferred.
        self.progress.queued.fetch_add(events.len() as u64, Ordering::AcqRel);
        Ok(Appended::Committed(seqs))
    }

    /// Records `head` (read from the database) as the workspace's head, unless the journal
    /// learned one meanwhile.
    pub(super) fn learn_head(&self, head: ChainHead) {
        self.state().heads.entry(head.workspace).or_insert(head);
    }

    /// Takes the records appended since the last take, with the append count they reach, and
    /// seals the segment if it is full.
    pub(super) fn take(&self) -> Result<(Vec<ChainRow>, u64), StoreError> {
        let mut state = self.state();
        if state.segment_len >= SEGMENT_LIMIT {
            let number = state.segment_number + 1;
            let segment = open_segment(&self.dir, number).map_err(|error| {
                StoreError::AuditJournal(format!(
                    "cannot start a segment in {}: {error}",
                    self.dir.display()
                ))
            })?;
            let sealed = segment_path(&self.dir, state.segment_number);
            let appended = state.appended;
            state.sealed.push((sealed, appended));
            state.segment = segment;
            state.segment_number = number;
            state.segment_len = 0;
        }
        Ok((std::mem::take(&mut state.pending), state.appended))
    }

    /// Records that the first `count` appended records are in the database, and removes the
    /// sealed segments that holds entirely.
    pub(super) fn ingested(&self, count: u64) {
        let done: Vec<PathBuf> = {
            let mut state = self.state();
            let (done, kept) = std::mem::take(&mut state.sealed)
                .into_iter()
                .partition(|(_, sealed_at)| *sealed_at <= count);
            state.sealed = kept;
            done.into_iter().map(|(path, _)| path).collect()
        };
        for path in done {
            if let Err(error) = fs::remove_file(&path) {
                tracing::warn!(%error, "could not remove an indexed audit journal segment");
            }
        }
        self.progress.ingested.send_replace(count);
    }

    /// Writes what is still deferred, then refuses further appends; returns how many records
    /// were appended in all.
    pub(super) fn close(&self) -> u64 {
        let mut state = self.state();
        // Nothing is deferred after this: `defer` checks it under the deferred lock, which the
        // write below takes.
        self.closing.store(true, Ordering::Release);
        if !matches!(self.write(&mut state, &[]), Ok(Appended::Committed(_))) {
            // Only if the write fails, or for a workspace whose head the journal never learned
            // (a deferred record always follows an append in its workspace).
            tracing::error!(
                records = self.deferred().len(),
                "deferred audit records could not be written at shutdown"
            );
        }
        state.closed = true;
        state.appended
    }

    /// Whether appends are refused.
    pub(super) fn is_closed(&self) -> bool {
        self.state().closed
    }

    /// After the last record is in the database: removes the segments, leaving an empty journal.
    pub(super) fn finish(&self) {
        let state = self.state();
        let mut paths: Vec<PathBuf> = state.sealed.iter().map(|(path, _)| path.clone()).collect();
        paths.push(segment_path(&self.dir, state.segment_number));
        for path in paths {
            if let Err(error) = fs::remove_file(&path) {
                tracing::warn!(%error, "could not remove an indexed audit journal segment");
            }
        }
    }
}

/// Reads one segment's lines into `rows`, skipping records the database already has and
/// checking that the others extend each chain. A last line cut short (a write the broker stopped
/// in the middle of, never acknowledged) is dropped if it ends the last segment; anything else
/// that does not parse or link is refused.
async fn recover_segment(
    store: &Store,
    path: &Path,
    text: &[u8],
    last_segment: bool,
    stored_heads: &mut HashMap<WorkspaceId, ChainHead>,
    heads: &mut HashMap<WorkspaceId, ChainHead>,
    rows: &mut Vec<ChainRow>,
) -> Result<(), StoreError> {
    let corrupt = |line: usize, what: &str| {
        StoreError::AuditJournal(format!(
            "{} line {line} {what}; the journal was edited or damaged, so the broker will not start over it (docs/operations.md, \"Audit journal\")",
            path.display()
        ))
    };
    let mut lines = text.split(|byte| *byte == b'\n').enumerate().peekable();
    while let Some((index, line)) = lines.next() {
        let number = index + 1;
        if lines.peek().is_none() {
            // Text after the final newline: a torn write, or nothing.
            if !line.is_empty() {
                if !last_segment {
                    return Err(corrupt(number, "is cut short"));
                }
                tracing::warn!(segment = %path.display(), "dropped a torn audit journal line (a record that was never acknowledged)");
            }
            break;
        }
        let parsed: Line<'_> =
            serde_json::from_slice(line).map_err(|_| corrupt(number, "does not parse"))?;
        let (Some(prev_hash), Some(hash)) = (from_hex(&parsed.prev_hash), from_hex(&parsed.hash))
        else {
            return Err(corrupt(number, "has a malformed hash"));
        };
        let stored = match stored_heads.get(&parsed.workspace) {
            Some(head) => *head,
            None => {
                let head = store.audit_head(parsed.workspace).await?;
                stored_heads.insert(parsed.workspace, head);
                head
            }
        };
        if parsed.seq <= stored.seq {
            // Indexed before the broker stopped.
            continue;
        }
        let head = heads.get(&parsed.workspace).copied().unwrap_or(stored);
        if parsed.seq != head.seq + 1 || prev_hash != head.hash {
            return Err(corrupt(number, "does not extend its workspace's audit chain"));
        }
        if chain_hash(&prev_hash, parsed.record.as_bytes()) != hash {
            return Err(corrupt(number, "does not match its hash"));
        }
        let row = ChainRow {
            workspace: parsed.workspace,
            seq: parsed.seq,
            at_ms: parsed.at_ms,
            record: parsed.record.into_owned(),
            prev_hash,
            hash,
        };
        heads.insert(row.workspace, row.head());
        rows.push(row);
    }
    Ok(())
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:020}.jsonl"))
}

fn open_segment(dir: &Path, number: u64) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(segment_path(dir, number))
}

/// The segments in `dir`, oldest first.
fn list_segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let number = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_suffix(".jsonl"))
            .and_then(|stem| stem.parse::<u64>().ok());
        if let Some(number) = number {
            segments.push((number, path));
        }
    }
    segments.sort_unstable();
    Ok(segments)
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Takes an exclusive advisory lock on `file` without waiting; released when the file closes.
#[cfg(unix)]
fn lock_exclusive(file: &File) -> std::io::Result<()> {
    rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(std::io::Error::from)
}

/// Other systems: no lock (the data directory must not be shared between brokers).
#[cfg(not(unix))]
fn lock_exclusive(_file: &File) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::GENESIS_HASH;

    #[test]
    fn a_line_written_by_hand_reads_back_as_the_row_it_was_written_from() {
        let workspace = WorkspaceId::random();
        let mut event = AuditEvent::new(workspace, 1_800_000_000_123, AuditKind::ProxyAttempt);
        // Everything JSON escapes, twice over: once in the record, once in the line.
        event.path = Some("/a\"b\\c/\u{1}\t\u{7f}é😀/seq".into());
        event.reason_code = Some("\"seq\":0,\\".into());
        let mut head = ChainHead { workspace, seq: 41, hash: GENESIS_HASH };
        let prepared = Prepared::new(&event);
        let row = ChainRow::chain_prepared(&prepared.record, prepared.at_ms, &mut head);
        let mut line = Vec::new();
        write_line(&mut line, &row, &prepared.line);
        assert_eq!(line.last(), Some(&b'\n'), "one line, ended");
        let read: Line<'_> = serde_json::from_slice(&line).expect("the line is JSON");
        assert_eq!(read.workspace, workspace);
        assert_eq!((read.seq, read.at_ms), (42, 1_800_000_000_123));
        assert_eq!(read.record, row.record, "the record reads back byte for byte");
        assert_eq!(from_hex(&read.prev_hash), Some(GENESIS_HASH));
        assert_eq!(from_hex(&read.hash), Some(row.hash));
        assert_eq!(
            chain_hash(&GENESIS_HASH, read.record.as_bytes()),
            row.hash,
            "what recovery reads hashes to what was chained"
        );
    }
}
