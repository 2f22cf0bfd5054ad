//! On SQLite the broker commits audit records to a journal beside the database and indexes them
//! into it in the background: what the journal acknowledged is never lost (a broker that stops
//! without indexing leaves it to the next), a read sees every record committed before it, a
//! damaged journal stops the broker from starting rather than being skipped, and only one broker
//! uses a journal at a time.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions; a panic is the failure report"
)]

use std::path::{Path, PathBuf};

use latchkey_core::ids::{AgentId, WorkspaceId};
use latchkey_server::audit::{AuditEvent, AuditKind, AuditLog, Decision, JournalFaults};
use latchkey_server::audit_journal_dir;
use latchkey_server::store::audit::AuditQuery;
use latchkey_server::store::{Store, StoreError};

fn attempt(workspace: WorkspaceId, i: u64) -> AuditEvent {
    let mut event = AuditEvent::new(workspace, 1_800_000_000_000 + i, AuditKind::ProxyAttempt);
    event.decision = Some(Decision::Allowed);
    event.agent = Some(AgentId::random());
    event.credential_name = Some("github".into());
    event.method = Some("GET".into());
    event.host = Some("api.github.com".into());
    event.path = Some(format!("/repos/acme/app/{i}"));
    event
}

struct Db {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Db {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("latchkey.sqlite3");
        Self { _dir: dir, path }
    }

    async fn store(&self) -> Store {
        Store::open_sqlite(&self.path).await.expect("open the database")
    }

    fn journal(&self) -> PathBuf {
        audit_journal_dir(&self.path)
    }

    async fn start(&self, store: &Store) -> AuditLog {
        AuditLog::start_journaled(store.clone(), &self.journal()).await.expect("open the journal")
    }

    /// Every segment's lines.
    fn journal_lines(&self) -> Vec<String> {
        segments(&self.journal())
            .iter()
            .flat_map(|path| {
                std::fs::read_to_string(path)
                    .expect("segment")
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("journal dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    paths.sort();
    paths
}

async fn records(store: &Store, workspace: WorkspaceId) -> Vec<u64> {
    store
        .audit_records(workspace, &AuditQuery::all(1000))
        .await
        .expect("read the log")
        .into_iter()
        .map(|r| r.seq)
        .collect()
}

/// Appends `count` records on a runtime of its own that is then dropped, as a killed broker
/// stops: no shutdown, the ingester never runs again.
fn append_then_crash(db: &Db, workspace: WorkspaceId, count: u64) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let store = db.store().await;
        let log = db.start(&store).await;
        for i in 0..count {
            log.append(attempt(workspace, i)).await.expect("committed to the journal");
        }
    });
    // On a current-thread runtime the ingester has not run since the appends (it only runs
    // when the test's task yields to it, and it lingers before indexing), so the records are in
    // the journal only.
    drop(runtime);
}

#[tokio::test]
async fn records_committed_to_the_journal_survive_a_broker_that_stops_without_indexing_them() {
    let db = Db::new();
    let workspace = WorkspaceId::random();
    std::thread::scope(|scope| {
        scope.spawn(|| append_then_crash(&db, workspace, 50));
    });
    assert_eq!(
        db.journal_lines().len(),
        50,
        "the killed broker's records are in its journal (else this test proves nothing)"
    );
    let store = db.store().await;
    let log = db.start(&store).await;
    assert_eq!(
        records(&store, workspace).await,
        (1..=50).collect::<Vec<_>>(),
        "opening the journal indexes every record it acknowledged"
    );
    assert!(db.journal_lines().is_empty(), "indexed records leave the journal");
    let receipt = log.append(attempt(workspace, 50)).await.expect("append");
    assert_eq!(receipt.seq, 51, "the chain goes on after the recovered records");
    let summary = store.verify_audit_chain(workspace).await.expect("read").expect("verifies");
    assert_eq!(summary.records, 51);
    log.shutdown().await;
}

#[tokio::test]
async fn a_read_sees_every_record_committed_before_it() {
    let db = Db::new();
    let store = db.store().await;
    let log = db.start(&store).await;
    let workspace = WorkspaceId::random();
    for round in 1..=20u64 {
        let receipt = log.append(attempt(workspace, round)).await.expect("append");
        // The ingester lingers before indexing: without the read's wait, the record just
        // committed would be missing here.
        let seqs = records(&store, workspace).await;
        assert_eq!(seqs.last(), Some(&receipt.seq), "round {round}: the read saw the new record");
    }
    log.shutdown().await;
}

fn outcome(workspace: WorkspaceId, i: u64) -> AuditEvent {
    let mut event = attempt(workspace, i);
    event.kind = AuditKind::ProxyOutcome;
    event.upstream_status = Some(200);
    event
}

#[tokio::test]
async fn deferred_records_ride_the_next_write_or_are_written_on_their_own_and_at_shutdown() {
    let db = Db::new();
    let store = db.store().await;
    let faults = JournalFaults::default();
    let log = AuditLog::start_journaled_with(store.clone(), &db.journal(), Some(faults.clone()))
        .await
        .expect("open the journal");
    let workspace = WorkspaceId::random();
    log.append(attempt(workspace, 1)).await.expect("append");

    // Queued first, so the append after it writes it ahead of its own record. (The test's
    // runtime has one thread: the ingester cannot run before the test yields to it.)
    let lines = db.journal_lines().len();
    log.append_deferred(outcome(workspace, 2)).await.expect("queued");
    assert_eq!(db.journal_lines().len(), lines, "a deferred record waits to share a write");
    let receipt = log.append(attempt(workspace, 3)).await.expect("append");
    assert_eq!(receipt.seq, 3, "the deferred record took seq 2 in the same write");
    assert_eq!(db.journal_lines().len(), lines + 2, "one append wrote both records");

    // A write that fails leaves the deferred record queued for the next one.
    faults.fail_writes_of(AuditKind::ApprovalRequested);
    log.append_deferred(outcome(workspace, 4)).await.expect("queued");
    let mut refused = attempt(workspace, 5);
    refused.kind = AuditKind::ApprovalRequested;
    assert!(log.append(refused).await.is_err(), "the injected fault refuses the write");
    let receipt = log.append(attempt(workspace, 6)).await.expect("append");
    assert_eq!(receipt.seq, 5, "the deferred record survived the failed write and took seq 4");

    // Alone, a deferred record is written by the ingester, and a read waits for it.
    log.append_deferred(outcome(workspace, 7)).await.expect("queued");
    assert_eq!(
        records(&store, workspace).await,
        (1..=6).collect::<Vec<_>>(),
        "a read sees the deferred record without any further append"
    );

    // Shutdown writes what is still deferred.
    log.append_deferred(outcome(workspace, 8)).await.expect("queued");
    log.shutdown().await;
    let summary = store.verify_audit_chain(workspace).await.expect("read").expect("verifies");
    assert_eq!(summary.records, 7, "shutdown wrote the last deferred record");
    let kinds: Vec<String> = store
        .audit_records(workspace, &AuditQuery::all(100))
        .await
        .expect("read the log")
        .into_iter()
        .map(|r| {
            let record: serde_json::Value = serde_json::from_str(&r.record).expect("JSON record");
            record["kind"].as_str().expect("a kind").to_owned()
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "proxy_attempt",
            "proxy_outcome",
            "proxy_attempt",
            "proxy_outcome",
            "proxy_attempt",
            "proxy_outcome",
            "proxy_outcome"
        ],
        "every deferred record is in the chain, in the order it was queued"
    );
}

#[tokio::test]
async fn a_torn_last_line_is_dropped_and_the_chain_goes_on() {
    let db = Db::new();
    let workspace = WorkspaceId::random();
    std::thread::scope(|scope| {
        scope.spawn(|| append_then_crash(&db, workspace, 3));
    });
    let last = segments(&db.journal()).pop().expect("a segment");
    let mut text = std::fs::read(&last).expect("segment");
    // The broker died in the middle of writing a fourth record: never acknowledged.
    text.extend_from_slice(br#"{"workspace":"#);
    std::fs::write(&last, text).expect("tear the last line");

    let store = db.store().await;
    let log = db.start(&store).await;
    assert_eq!(records(&store, workspace).await, vec![1, 2, 3], "whole lines are indexed");
    let receipt = log.append(attempt(workspace, 3)).await.expect("append");
    assert_eq!(receipt.seq, 4, "the torn record's seq is taken by the next one");
    assert!(store.verify_audit_chain(workspace).await.expect("read").is_ok(), "chain verifies");
    log.shutdown().await;
}

#[tokio::test]
async fn an_edited_journal_stops_the_broker_from_starting_and_names_the_line() {
    type Edit = fn(String) -> String;
    let cases: [(&str, Edit); 3] = [
        ("does not match its hash", |line| line.replace("/repos/acme/app/1", "/repos/acme/app/9")),
        ("does not extend", |line| line.replace("\"seq\":2", "\"seq\":7")),
        ("does not parse", |_| "not json".to_owned()),
    ];
    for (expected, edit) in cases {
        let db = Db::new();
        let workspace = WorkspaceId::random();
        std::thread::scope(|scope| {
            scope.spawn(|| append_then_crash(&db, workspace, 3));
        });
        let path = segments(&db.journal()).pop().expect("a segment");
        let text = std::fs::read_to_string(&path).expect("segment");
        let edited: Vec<String> = text
            .lines()
            .enumerate()
            .map(|(i, line)| if i == 1 { edit(line.to_owned()) } else { line.to_owned() })
            .collect();
        std::fs::write(&path, edited.join("\n") + "\n").expect("edit");

        let store = db.store().await;
        let error = AuditLog::start_journaled(store.clone(), &db.journal())
            .await
            .expect_err("a damaged journal is refused, not skipped");
        let message = error.to_string();
        assert!(
            matches!(error, StoreError::AuditJournal(_))
                && message.contains("line 2")
                && message.contains(expected),
            "the error names the line and what is wrong with it ({expected}): {message}"
        );
        assert!(records(&store, workspace).await.is_empty(), "nothing after the damage is indexed");
        assert_eq!(db.journal_lines().len(), 3, "the damaged journal is left for inspection");
    }
}

#[tokio::test]
async fn a_second_broker_on_the_same_journal_is_refused() {
    let db = Db::new();
    let store = db.store().await;
    let log = db.start(&store).await;
    let error = AuditLog::start_journaled(db.store().await, &db.journal())
        .await
        .expect_err("two writers would fork the chain");
    assert!(
        error.to_string().contains("another broker is using"),
        "the error says why and what to do: {error}"
    );
    log.shutdown().await;
    let again = db.start(&store).await;
    again.shutdown().await;
}

#[tokio::test]
async fn full_segments_are_removed_once_indexed() {
    let db = Db::new();
    let store = db.store().await;
    let log = db.start(&store).await;
    let workspace = WorkspaceId::random();
    // About 500 bytes a line: several 1 MiB segments' worth.
    let count = 6_000u64;
    for i in 0..count {
        log.append(attempt(workspace, i)).await.expect("append");
    }
    assert_eq!(
        store.verify_audit_chain(workspace).await.expect("read").expect("verifies").records,
        count
    );
    let lines = db.journal_lines().len() as u64;
    assert!(lines < count, "sealed segments go once indexed: {lines} of {count} lines remain");
    log.shutdown().await;
    assert!(db.journal_lines().is_empty(), "a clean stop leaves an empty journal");
}

/// Makes the database refuse every audit record from now on, as a full or broken database would.
async fn refuse_audit_inserts(db: &Db) {
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&db.path);
    let pool = sqlx::SqlitePool::connect_with(options).await.expect("open the database");
    sqlx::raw_sql(
        "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log
         BEGIN SELECT RAISE(ABORT, 'disk full'); END",
    )
    .execute(&pool)
    .await
    .expect("install the refusal");
    pool.close().await;
}

#[tokio::test]
async fn a_read_the_database_cannot_bring_up_to_date_is_refused_not_answered_stale() {
    let db = Db::new();
    let store = db.store().await;
    let log = db.start(&store).await;
    let workspace = WorkspaceId::random();
    log.append(attempt(workspace, 0)).await.expect("append");
    assert_eq!(records(&store, workspace).await, vec![1]);
    refuse_audit_inserts(&db).await;
    log.append(attempt(workspace, 1)).await.expect("committed to the journal all the same");
    let read = store.audit_records(workspace, &AuditQuery::all(1000)).await;
    assert!(
        matches!(read, Err(StoreError::AuditBehind)),
        "a page without the committed record 2 would hide it: {read:?}"
    );
    assert_eq!(db.journal_lines().len(), 2, "the refused record waits in the journal");
    log.shutdown().await;
}

#[tokio::test]
async fn appends_are_refused_once_the_database_has_left_too_many_behind() {
    let db = Db::new();
    let store = db.store().await;
    let log = db.start(&store).await;
    let workspace = WorkspaceId::random();
    log.append(attempt(workspace, 0)).await.expect("append");
    refuse_audit_inserts(&db).await;
    let mut committed = 0u64;
    let refused = loop {
        match log.append(attempt(workspace, committed + 1)).await {
            Ok(_) => committed += 1,
            Err(error) => break error,
        }
        assert!(committed <= 200_000, "the journal must stop taking records at some point");
    };
    assert!(
        matches!(refused, latchkey_server::audit::AuditError::CommitFailed),
        "fail closed: {refused:?}"
    );
    assert!(
        (99_000..=100_000).contains(&committed),
        "refused at the documented bound of 100,000 waiting records, not before: {committed}"
    );
    log.shutdown().await;
}
