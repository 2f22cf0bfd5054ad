//! The audit log is append-only and hash-chained per workspace: concurrent appends are batched
//! into few transactions and still form one contiguous chain, any edit or removal is found by
//! verification, members read (filter, page, export) only their own workspace's records, and a
//! failed commit is never reported as a success.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions; a panic is the failure report"
)]

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::{TestBroker, TestDatabase, TestDevice, workspace_with_admin};
use latchkey_core::ids::{AgentId, DeviceId, MemberId, WorkspaceId};
use latchkey_server::audit::{
    AuditError, AuditEvent, AuditKind, AuditLog, BatchConfig, BreakReason, Decision, GENESIS_HASH,
    JsonlError, canonical_record, chain_hash, from_hex, to_hex, verify_jsonl,
};
use latchkey_server::store::Store;
use latchkey_server::store::audit::AuditQuery;
use serde_json::{Value, json};
use sqlx::Connection as _;

// ---------------------------------------------------------------------------------------------
// The record format and the chain

#[tokio::test]
async fn the_worked_example_in_the_protocol_document_hashes_as_documented() {
    let (attempt, outcome) = worked_example_events();
    let record_1 = canonical_record(&attempt, 1);
    assert_eq!(record_1, EXAMPLE_RECORD_1, "record 1 is the documented canonical JSON");
    let hash_1 = chain_hash(&GENESIS_HASH, record_1.as_bytes());
    assert_eq!(to_hex(&hash_1), EXAMPLE_HASH_1, "record 1 chains from 32 zero bytes");
    let record_2 = canonical_record(&outcome, 2);
    assert_eq!(record_2, EXAMPLE_RECORD_2, "record 2 is the documented canonical JSON");
    let hash_2 = chain_hash(&hash_1, record_2.as_bytes());
    assert_eq!(to_hex(&hash_2), EXAMPLE_HASH_2, "record 2 chains from record 1");

    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/protocol.md"),
    )
    .expect("docs/protocol.md");
    for text in [EXAMPLE_RECORD_1, EXAMPLE_HASH_1, EXAMPLE_RECORD_2, EXAMPLE_HASH_2] {
        assert!(doc.contains(text), "docs/protocol.md must show exactly {text}");
    }

    // What the writer stores is exactly the documented bytes.
    let (_dir, store) = fresh_store().await;
    let log = AuditLog::start(store.clone());
    assert_eq!(log.append(attempt).await.expect("append").seq, 1);
    assert_eq!(log.append(outcome).await.expect("append").seq, 2);
    let stored = store
        .audit_records(example_workspace(), &latchkey_server::store::audit::AuditQuery::all(10))
        .await
        .expect("read");
    assert_eq!(stored.len(), 2, "both records stored");
    assert_eq!(
        (stored[0].record.as_str(), to_hex(&stored[0].hash)),
        (EXAMPLE_RECORD_1, EXAMPLE_HASH_1.to_owned()),
        "stored record 1"
    );
    assert_eq!(
        (stored[1].record.as_str(), stored[1].prev_hash, to_hex(&stored[1].hash)),
        (EXAMPLE_RECORD_2, hash_1, EXAMPLE_HASH_2.to_owned()),
        "stored record 2"
    );
    log.shutdown().await;
}

#[test]
fn every_audit_kind_keeps_its_stable_code() {
    let codes: Vec<&str> = AuditKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(
        codes,
        [
            "proxy_attempt",
            "proxy_outcome",
            "workspace_created",
            "member_joined",
            "device_removed",
            "credential_created",
            "credential_deleted",
            "keys_rotated",
            "agent_created",
            "agent_revoked",
            "grant_revoked",
            "policy_changed",
            "approval_requested",
            "approval_answered",
            "approval_expired",
            "agents_paused",
            "agents_resumed",
            "inject_released",
            "inject_denied",
            "device_joined",
            "keys_shared",
            "invite_created",
            "member_promoted",
            "member_demoted",
            "member_removed",
            "credential_updated",
            "credential_status_changed",
            "agent_token_regenerated",
            "grant_created",
            "invite_revoked",
            "request_refused",
        ],
        "codes are stable: extend, never reassign"
    );
    for kind in AuditKind::ALL {
        assert_eq!(
            serde_json::to_value(kind).unwrap(),
            json!(kind.as_str()),
            "serde and the record agree on {kind:?}"
        );
        assert_eq!(AuditKind::parse(kind.as_str()), Some(kind), "{kind:?} parses back");
    }
    assert_eq!(AuditKind::parse("ProxyAttempt"), None, "only the snake-case code parses");
}

// ---------------------------------------------------------------------------------------------
// The writer: batching, concurrency, failure

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_across_workspaces_form_contiguous_chains_that_verify() {
    let (_dir, store) = fresh_store().await;
    let log = AuditLog::start(store.clone());
    let workspaces = [WorkspaceId::random(), WorkspaceId::random(), WorkspaceId::random()];
    let tasks: Vec<_> = (0..200u64)
        .map(|i| {
            let log = log.clone();
            let workspace = workspaces[usize::try_from(i % 3).unwrap()];
            tokio::spawn(async move {
                let event = attempt(workspace, AgentId::random(), "github", Decision::Allowed, i);
                (workspace, log.append(event).await.expect("append commits").seq)
            })
        })
        .collect();
    let mut seqs: BTreeMap<WorkspaceId, Vec<u64>> = BTreeMap::new();
    for task in tasks {
        let (workspace, seq) = task.await.expect("task");
        seqs.entry(workspace).or_default().push(seq);
    }
    for workspace in workspaces {
        let mut got = seqs.remove(&workspace).unwrap_or_default();
        got.sort_unstable();
        let n = u64::try_from(got.len()).unwrap();
        assert_eq!(got, (1..=n).collect::<Vec<_>>(), "seqs are 1..=n without gaps or repeats");
        let summary = store
            .verify_audit_chain(workspace)
            .await
            .expect("read")
            .expect("the chain verifies after concurrent appends");
        assert_eq!(summary.records, n, "every append is in its workspace's chain");
    }
    log.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_share_few_transactions() {
    let (_dir, store) = fresh_store().await;
    let log = AuditLog::start(store);
    let workspace = WorkspaceId::random();
    let tasks: Vec<_> = (0..200u64)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move {
                log.append(attempt(workspace, AgentId::random(), "github", Decision::Allowed, i))
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("append commits");
    }
    let stats = log.stats();
    assert_eq!(stats.records, 200, "every record committed: {stats:?}");
    assert!(
        stats.transactions <= 20,
        "200 concurrent appends must be batched, not committed one by one: {stats:?}"
    );
    assert_eq!(stats.failed_transactions, 0, "{stats:?}");
    log.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_writers_on_one_database_extend_one_chain_without_forking() {
    let (dir, store_a) = fresh_store().await;
    let store_b = dir.store().await;
    let (log_a, log_b) = (AuditLog::start(store_a.clone()), AuditLog::start(store_b));
    let workspace = WorkspaceId::random();
    let tasks: Vec<_> = (0..200u64)
        .map(|i| {
            let log = if i % 2 == 0 { log_a.clone() } else { log_b.clone() };
            tokio::spawn(async move {
                log.append(attempt(workspace, AgentId::random(), "github", Decision::Allowed, i))
                    .await
                    .expect("append commits")
                    .seq
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.push(task.await.expect("task"));
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>(), "one chain, no seq handed out twice");
    let summary = store_a.verify_audit_chain(workspace).await.expect("read");
    assert_eq!(summary.map(|s| s.records), Ok(200), "the interleaved chain verifies");
    log_a.shutdown().await;
    log_b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_on_known_heads_go_as_one_statement_and_keep_every_record_byte_for_byte() {
    let (dir, store) = fresh_store().await;
    let postgres = common::postgres_backend();
    if postgres {
        // Each row inserted notes the statement the client sent, so the test sees which path
        // wrote it: `latchkey_audit_append` (one statement per batch) or one `INSERT` per row.
        let mut raw = raw_connection(&dir.db, dir.path(), None).await;
        sqlx::raw_sql(
            "CREATE TABLE audit_probe (query text);
             GRANT INSERT ON audit_probe TO PUBLIC;
             CREATE FUNCTION audit_probe() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
             BEGIN INSERT INTO audit_probe VALUES (current_query()); RETURN NEW; END $$;
             CREATE TRIGGER audit_probe BEFORE INSERT ON audit_log
             FOR EACH ROW EXECUTE FUNCTION audit_probe();",
        )
        .execute(&mut raw)
        .await
        .expect("probe trigger");
    }
    let log = AuditLog::start(store.clone());
    let (first, second) = (WorkspaceId::random(), WorkspaceId::random());
    // What JSON transport could change: quotes, backslashes, control characters, non-ASCII.
    let names = ["plain", "q\"uo\\te", "tab\tnl\n\u{1}", "caf\u{e9} \u{1f511}", "\u{7f}\\u0000"];
    for (round, name) in names.iter().enumerate() {
        let at = u64::try_from(round).unwrap();
        // Both workspaces in one batch after the first round, each chained on a known head.
        let (a, b) = tokio::join!(
            log.append(attempt(first, AgentId::random(), name, Decision::Allowed, at)),
            log.append(attempt(second, AgentId::random(), name, Decision::Denied, at)),
        );
        a.expect("append commits");
        b.expect("append commits");
    }
    let stats = log.stats();
    assert_eq!(stats.failed_transactions, 0, "{stats:?}");
    for workspace in [first, second] {
        let summary = store.verify_audit_chain(workspace).await.expect("read");
        assert_eq!(
            summary.map(|s| s.records),
            Ok(names.len() as u64),
            "every record is stored exactly as it was hashed, or the chain would break"
        );
        let records =
            store.audit_records(workspace, &AuditQuery::all(100)).await.expect("read records");
        let mut stored: Vec<String> = records
            .iter()
            .map(|r| {
                let record: Value = serde_json::from_str(&r.record).expect("JSON record");
                record["credential_name"].as_str().expect("credential name").to_owned()
            })
            .collect();
        stored.sort();
        let mut expected: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        expected.sort();
        assert_eq!(stored, expected, "the names come back as they were appended");
    }
    if postgres {
        let mut raw = raw_connection(&dir.db, dir.path(), None).await;
        let queries: Vec<String> = sqlx::query_scalar("SELECT query FROM audit_probe")
            .fetch_all(&mut raw)
            .await
            .expect("probe rows");
        let batched = queries.iter().filter(|q| q.contains("latchkey_audit_append")).count();
        assert!(
            batched >= 2 * (names.len() - 1),
            "once the writer knows a workspace's head, its batches must be appended by one \
             call of latchkey_audit_append (one round trip), not the careful transaction; \
             statements seen: {queries:?}"
        );
    }
    log.shutdown().await;
}

#[tokio::test]
async fn deferred_appends_join_the_next_commit_or_are_written_on_their_own_or_at_shutdown() {
    let (_dir, store) = fresh_store().await;
    let log = AuditLog::start(store.clone());
    let workspace = WorkspaceId::random();
    let event = |i| attempt(workspace, AgentId::random(), "github", Decision::Allowed, i);

    // Queued first, so the awaited append after it is chained after it.
    log.append_deferred(event(1)).await.expect("queued");
    let receipt = log.append(event(2)).await.expect("append commits");
    assert_eq!(receipt.seq, 2, "the deferred record took seq 1 in the same commit");

    // Alone, a deferred record is written without any further append.
    log.append_deferred(event(3)).await.expect("queued");
    let mut records = 0;
    for _ in 0..500 {
        records =
            store.verify_audit_chain(workspace).await.expect("read").map(|s| s.records).unwrap();
        if records == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(records, 3, "a lone deferred record must be committed without another append");

    // Shutdown writes what is still deferred.
    log.append_deferred(event(4)).await.expect("queued");
    log.shutdown().await;
    let summary = store.verify_audit_chain(workspace).await.expect("read");
    assert_eq!(summary.map(|s| s.records), Ok(4), "shutdown flushes deferred records");
}

#[tokio::test]
async fn a_failed_transaction_fails_every_append_in_it_and_writes_nothing() {
    let (dir, store) = fresh_store().await;
    let mut raw = raw_connection(&dir.db, dir.path(), None).await;
    let poison = if common::postgres_backend() {
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'poisoned'; END $$;
         CREATE TRIGGER poison BEFORE INSERT ON audit_log
         FOR EACH ROW WHEN (NEW.record LIKE '%poison%') EXECUTE FUNCTION poison();"
    } else {
        "CREATE TRIGGER poison BEFORE INSERT ON audit_log
         WHEN NEW.record LIKE '%poison%' BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
    };
    sqlx::raw_sql(poison).execute(&mut raw).await.expect("test trigger");
    // A wide window puts every append below into one transaction.
    let config = BatchConfig { max_wait: Duration::from_millis(300), ..BatchConfig::default() };
    let log = AuditLog::start_with(store.clone(), config);
    let workspace = WorkspaceId::random();
    let tasks: Vec<_> = (0..10u64)
        .map(|i| {
            let log = log.clone();
            let name = if i == 7 { "poison" } else { "github" };
            tokio::spawn(async move {
                log.append(attempt(workspace, AgentId::random(), name, Decision::Allowed, i)).await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(
            task.await.expect("task"),
            Err(AuditError::CommitFailed),
            "every append that shared the failed transaction is refused, not reported committed"
        );
    }
    let stored = store.verify_audit_chain(workspace).await.expect("read").expect("verifies");
    assert_eq!(stored.records, 0, "nothing of the failed transaction was written");
    assert_eq!(log.stats().failed_transactions, 1, "{:?}", log.stats());

    let receipt = log
        .append(attempt(workspace, AgentId::random(), "github", Decision::Allowed, 99))
        .await
        .expect("the writer keeps serving after a failed transaction");
    assert_eq!(receipt.seq, 1, "the chain starts where the failed batch would have");
    log.shutdown().await;
}

#[tokio::test]
async fn appends_fail_once_the_database_is_closed() {
    let (_dir, store) = fresh_store().await;
    let log = AuditLog::start(store.clone());
    let workspace = WorkspaceId::random();
    log.append(attempt(workspace, AgentId::random(), "github", Decision::Allowed, 1))
        .await
        .expect("append while open");
    store.close().await;
    let result =
        log.append(attempt(workspace, AgentId::random(), "github", Decision::Allowed, 2)).await;
    assert_eq!(result, Err(AuditError::CommitFailed), "no receipt without a commit");
    log.shutdown().await;
}

#[tokio::test]
async fn shutdown_writes_queued_appends_and_later_appends_fail() {
    let (_dir, store) = fresh_store().await;
    // A long window: the appends below are still queued when shutdown is called.
    let config = BatchConfig { max_wait: Duration::from_secs(30), ..BatchConfig::default() };
    let log = AuditLog::start_with(store.clone(), config);
    let workspace = WorkspaceId::random();
    let tasks: Vec<_> = (0..50u64)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move {
                log.append(attempt(workspace, AgentId::random(), "github", Decision::Allowed, i))
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let clone = log.clone();
    let started = std::time::Instant::now();
    log.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(10), "shutdown cuts the batching window");
    for task in tasks {
        task.await.expect("task").expect("queued appends are written before the writer stops");
    }
    let summary = store.verify_audit_chain(workspace).await.expect("read").expect("verifies");
    assert_eq!(summary.records, 50, "all queued appends are in the chain");
    let late = clone.append(attempt(workspace, AgentId::random(), "x", Decision::Allowed, 1)).await;
    assert_eq!(late, Err(AuditError::Stopped), "after shutdown, appends fail instead of vanishing");
}

// ---------------------------------------------------------------------------------------------
// Tamper evidence

#[tokio::test]
async fn the_database_refuses_updates_deletes_and_inserts_that_do_not_extend_the_chain() {
    let (dir, store) = fresh_store().await;
    let log = AuditLog::start(store.clone());
    let workspace = WorkspaceId::random();
    for i in 0..3 {
        log.append(attempt(workspace, AgentId::random(), "github", Decision::Allowed, i))
            .await
            .expect("append");
    }
    let mut raw = raw_connection(&dir.db, dir.path(), Some(workspace)).await;
    let ws = workspace.to_string();
    let update = sqlx::query("UPDATE audit_log SET at_ms = 0 WHERE workspace_id = $1 AND seq = 2")
        .bind(&ws)
        .execute(&mut raw)
        .await;
    assert!(error_text(update).contains("append-only"), "UPDATE is refused by the trigger");
    let delete = sqlx::query("DELETE FROM audit_log WHERE workspace_id = $1 AND seq = 3")
        .bind(&ws)
        .execute(&mut raw)
        .await;
    assert!(error_text(delete).contains("append-only"), "DELETE is refused by the trigger");

    let head = store.verify_audit_chain(workspace).await.expect("read").expect("verifies").head;
    let insert = |seq: i64, prev: [u8; 32]| {
        sqlx::query(
            "INSERT INTO audit_log (workspace_id, seq, at_ms, record, prev_hash, hash)
             VALUES ($1, $2, 0, '{}', $3, $4)",
        )
        .bind(ws.clone())
        .bind(seq)
        .bind(prev.to_vec())
        .bind(vec![7u8; 32])
    };
    let skip = insert(9, head).execute(&mut raw).await;
    assert!(error_text(skip).contains("extend their chain"), "a gap in seq is refused");
    let fork = insert(4, [1; 32]).execute(&mut raw).await;
    assert!(error_text(fork).contains("extend their chain"), "a wrong prev_hash is refused");
    let rewrite = insert(2, GENESIS_HASH).execute(&mut raw).await;
    assert!(rewrite.is_err(), "an existing seq cannot be written again");

    let summary = store.verify_audit_chain(workspace).await.expect("read");
    assert_eq!(summary.map(|s| s.records), Ok(3), "the refused writes left the chain intact");
    log.shutdown().await;
}

#[tokio::test]
async fn an_edited_record_is_reported_at_its_seq() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (store, log) = writer_for(&broker, &[&admin]).await;
    let mut seqs = Vec::new();
    for i in 0..8 {
        let event = attempt(admin.workspace, AgentId::random(), "github", Decision::Allowed, i);
        seqs.push(log.append(event).await.expect("append").seq);
    }
    let verified = get_json(&broker, &admin, "/v1/audit/verify").await;
    assert_eq!(verified["ok"], true, "intact before tampering: {verified}");

    // Change what record 5 says, bypassing the append-only trigger.
    let target = seqs[4];
    let mut raw = raw_connection(&broker.db, broker.dir.path(), Some(admin.workspace)).await;
    drop_trigger(&mut raw, "audit_log_no_update").await;
    sqlx::query(
        "UPDATE audit_log SET record = replace(record, '\"GET\"', '\"DELETE\"')
         WHERE workspace_id = $1 AND seq = $2",
    )
    .bind(admin.workspace.to_string())
    .bind(i64::try_from(target).unwrap())
    .execute(&mut raw)
    .await
    .expect("edit");
    let verified = get_json(&broker, &admin, "/v1/audit/verify").await;
    assert_eq!(
        (&verified["ok"], &verified["first_broken_seq"], &verified["reason"]),
        (&json!(false), &json!(target), &json!("hash_mismatch")),
        "the edited record is named: {verified}"
    );

    // Re-hashing the edited record moves the break to the next one, which still names the old
    // hash.
    let row = store
        .audit_records(admin.workspace, &latchkey_server::store::audit::AuditQuery::all(1000))
        .await
        .expect("read")
        .into_iter()
        .find(|r| r.seq == target)
        .expect("edited row");
    let rehashed = chain_hash(&row.prev_hash, row.record.as_bytes());
    sqlx::query("UPDATE audit_log SET hash = $1 WHERE workspace_id = $2 AND seq = $3")
        .bind(rehashed.to_vec())
        .bind(admin.workspace.to_string())
        .bind(i64::try_from(target).unwrap())
        .execute(&mut raw)
        .await
        .expect("rehash");
    let verified = get_json(&broker, &admin, "/v1/audit/verify").await;
    assert_eq!(
        (&verified["ok"], &verified["first_broken_seq"], &verified["reason"]),
        (&json!(false), &json!(target + 1), &json!("prev_hash_mismatch")),
        "a re-hashed edit breaks the link to the next record: {verified}"
    );

    // Moving a record's indexed time (to hide it from time filters) is found too.
    sqlx::query("UPDATE audit_log SET at_ms = 999999 WHERE workspace_id = $1 AND seq = $2")
        .bind(admin.workspace.to_string())
        .bind(i64::try_from(seqs[1]).unwrap())
        .execute(&mut raw)
        .await
        .expect("move time");
    let verified = get_json(&broker, &admin, "/v1/audit/verify").await;
    assert_eq!(
        (&verified["first_broken_seq"], &verified["reason"]),
        (&json!(seqs[1]), &json!("record_mismatch")),
        "the indexed time must agree with the record: {verified}"
    );
    log.shutdown().await;
    broker.stop().await;
}

#[tokio::test]
async fn a_check_from_a_record_reads_the_chain_from_there_and_says_so() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (_store, log) = writer_for(&broker, &[&admin]).await;
    let mut seqs = Vec::new();
    for i in 0..8 {
        let event = attempt(admin.workspace, AgentId::random(), "github", Decision::Allowed, i);
        seqs.push(log.append(event).await.expect("append").seq);
    }
    let full = get_json(&broker, &admin, "/v1/audit/verify").await;
    assert_eq!((&full["ok"], &full["checked_from"]), (&json!(true), &json!(1)), "{full}");
    let from = seqs[4];
    let quick = get_json(&broker, &admin, &format!("/v1/audit/verify?from_seq={from}")).await;
    assert_eq!(
        (&quick["records"], &quick["head"], &quick["checked_from"]),
        (&full["records"], &full["head"], &json!(from)),
        "the same head and length, checked from the record asked for: {quick}"
    );
    let past = full["records"].as_u64().unwrap() + 10;
    let beyond = get_json(&broker, &admin, &format!("/v1/audit/verify?from_seq={past}")).await;
    assert_eq!(
        (&beyond["records"], &beyond["checked_from"]),
        (&full["records"], &json!(1)),
        "a chain shorter than the record asked for is checked whole and named as it is: {beyond}"
    );

    // An edit before the starting record is not what this check reads; the full check finds it.
    let mut raw = raw_connection(&broker.db, broker.dir.path(), Some(admin.workspace)).await;
    drop_trigger(&mut raw, "audit_log_no_update").await;
    let edit = |seq: u64| {
        sqlx::query(
            "UPDATE audit_log SET record = replace(record, '\"GET\"', '\"DELETE\"')
             WHERE workspace_id = $1 AND seq = $2",
        )
        .bind(admin.workspace.to_string())
        .bind(i64::try_from(seq).unwrap())
    };
    edit(seqs[1]).execute(&mut raw).await.expect("edit");
    let quick = get_json(&broker, &admin, &format!("/v1/audit/verify?from_seq={from}")).await;
    assert_eq!(quick["ok"], true, "records before the start are not read: {quick}");
    let full = get_json(&broker, &admin, "/v1/audit/verify").await;
    assert_eq!(full["first_broken_seq"], json!(seqs[1]), "the full check finds it: {full}");
    edit(seqs[6]).execute(&mut raw).await.expect("edit");
    let quick = get_json(&broker, &admin, &format!("/v1/audit/verify?from_seq={from}")).await;
    assert_eq!(
        (&quick["ok"], &quick["first_broken_seq"], &quick["reason"]),
        (&json!(false), &json!(seqs[6]), &json!("hash_mismatch")),
        "an edit after the start is found: {quick}"
    );
    log.shutdown().await;
    broker.stop().await;
}

#[tokio::test]
async fn a_deleted_record_is_reported_as_missing() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (_store, log) = writer_for(&broker, &[&admin]).await;
    let mut seqs = Vec::new();
    for i in 0..6 {
        let event = attempt(admin.workspace, AgentId::random(), "github", Decision::Allowed, i);
        seqs.push(log.append(event).await.expect("append").seq);
    }
    let mut raw = raw_connection(&broker.db, broker.dir.path(), Some(admin.workspace)).await;
    drop_trigger(&mut raw, "audit_log_no_delete").await;
    sqlx::query("DELETE FROM audit_log WHERE workspace_id = $1 AND seq = $2")
        .bind(admin.workspace.to_string())
        .bind(i64::try_from(seqs[2]).unwrap())
        .execute(&mut raw)
        .await
        .expect("delete");
    let verified = get_json(&broker, &admin, "/v1/audit/verify").await;
    assert_eq!(
        (&verified["ok"], &verified["first_broken_seq"], &verified["reason"]),
        (&json!(false), &json!(seqs[2]), &json!("missing_record")),
        "the removed record's seq is named: {verified}"
    );
    assert!(verified["message"].as_str().unwrap().contains("missing"), "says why: {verified}");
    log.shutdown().await;
    broker.stop().await;
}

#[tokio::test]
async fn an_empty_chain_verifies_with_the_genesis_head() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (_store, log) = writer_for(&broker, &[&admin]).await;
    let before = get_json(&broker, &admin, "/v1/audit/verify").await;
    assert_eq!(before["ok"], true, "{before}");
    let existing = before["records"].as_u64().unwrap();
    if existing == 0 {
        assert_eq!(before["head"], json!(to_hex(&GENESIS_HASH)), "empty chain: zero head");
    }
    let receipt = log
        .append(attempt(admin.workspace, AgentId::random(), "github", Decision::Allowed, 1))
        .await
        .expect("append");
    let after = get_json(&broker, &admin, "/v1/audit/verify").await;
    assert_eq!(after["records"], json!(receipt.seq), "records counts the chain: {after}");
    assert_ne!(after["head"], before["head"], "the head moves with every append");
    let listed = get_json(&broker, &admin, "/v1/audit?limit=1").await;
    assert_eq!(listed["records"][0]["hash"], after["head"], "the head is the newest record's hash");
    log.shutdown().await;
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Reading: filters, cursor, export, scoping

#[tokio::test]
async fn listing_filters_by_agent_credential_decision_kind_and_time() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (_store, log) = writer_for(&broker, &[&admin]).await;
    let (a, b) = (AgentId::random(), AgentId::random());
    let ws = admin.workspace;
    let mut denied = attempt(ws, b, "slack", Decision::Denied, 2000);
    denied.reason_code = Some("policy_denied".into());
    let mut outcome = attempt(ws, a, "github", Decision::Allowed, 1001);
    outcome.kind = AuditKind::ProxyOutcome;
    let mut created = AuditEvent::new(ws, 3000, AuditKind::AgentCreated);
    created.agent = Some(b);
    for event in [
        attempt(ws, a, "github", Decision::Allowed, 1000),
        outcome,
        denied,
        created,
        attempt(ws, b, "github", Decision::Allowed, 4000),
        // Appended last with an earlier time, as a call that waited for the journal is.
        attempt(ws, AgentId::random(), "gitlab", Decision::Allowed, 1500),
    ] {
        log.append(event).await.expect("append");
    }
    let times = |listing: &Value| -> Vec<u64> {
        listing["records"]
            .as_array()
            .expect("records")
            .iter()
            .map(|r| r["record"]["at_ms"].as_u64().expect("at_ms"))
            .collect()
    };
    let cases: [(String, Vec<u64>, &str); 9] = [
        (format!("agent={a}"), vec![1001, 1000], "by agent, newest first"),
        ("credential=github".into(), vec![4000, 1001, 1000], "by credential name"),
        ("decision=denied".into(), vec![2000], "by decision"),
        ("kind=agent_created".into(), vec![3000], "by kind"),
        ("since_ms=2000&until_ms=4000".into(), vec![3000, 2000], "since inclusive, until not"),
        (
            "since_ms=1500&until_ms=2500".into(),
            vec![1500, 2000],
            "a record with an earlier time than those before it in the chain is still found",
        ),
        (format!("agent={b}&credential=github"), vec![4000], "filters combine"),
        (format!("agent={a}&order=oldest_first"), vec![1000, 1001], "oldest first"),
        ("credential=nothing".into(), vec![], "no match is an empty page"),
    ];
    for (query, expected, why) in cases {
        let listing = get_json(&broker, &admin, &format!("/v1/audit?{query}")).await;
        assert_eq!(times(&listing), expected, "{why}: {listing}");
    }
    let denied = get_json(&broker, &admin, "/v1/audit?decision=denied").await;
    let record = &denied["records"][0];
    assert_eq!(record["record"]["reason_code"], "policy_denied", "denials carry their code");
    assert_eq!(record["record"]["credential_name"], "slack", "the credential's name is recorded");
    assert!(
        record["hash"].as_str().is_some_and(|h| from_hex(h).is_some())
            && record["prev_hash"].as_str().is_some_and(|h| from_hex(h).is_some()),
        "entries carry their hashes as hex: {record}"
    );
    log.shutdown().await;
    broker.stop().await;
}

#[tokio::test]
async fn an_agent_cannot_make_a_page_too_large_for_a_device_to_read() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (_store, log) = writer_for(&broker, &[&admin]).await;
    // Paths of quotes, each escaped to two bytes: about 4 KiB a record, 4 MiB for 1000.
    let agent = AgentId::random();
    for i in 0..1000 {
        let mut event = attempt(admin.workspace, agent, "github", Decision::Denied, i);
        event.path = Some(format!("/{}", "\"".repeat(2000)));
        log.append(event).await.expect("append");
    }
    let mut seen = 0;
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let path = format!("/v1/audit?agent={agent}&limit=1000{cursor}");
        let (status, page) = TestBroker::send(broker.signed(&admin, "GET", &path, None)).await;
        assert_eq!(status, 200, "{path}");
        let bytes = serde_json::to_vec(&page).unwrap().len();
        assert!(bytes < 2 * 1024 * 1024, "a page stays far below a device's 4 MiB: {bytes}");
        seen += page["records"].as_array().unwrap().len();
        pages += 1;
        match page["next_after_seq"].as_u64() {
            Some(next) => cursor = format!("&after_seq={next}"),
            None => break,
        }
        assert!(pages < 20, "the cursor must make progress");
    }
    assert_eq!(seen, 1000, "every record is reached through the cursor");
    assert!(pages >= 4, "the records came in pages cut by size, not one of 4 MiB: {pages}");
    log.shutdown().await;
    broker.stop().await;
}

#[tokio::test]
async fn the_cursor_pages_through_every_record_in_both_orders() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (_store, log) = writer_for(&broker, &[&admin]).await;
    for i in 0..25 {
        let event = attempt(admin.workspace, AgentId::random(), "github", Decision::Allowed, i);
        log.append(event).await.expect("append");
    }
    for (order, expected) in [
        ("newest_first", (0..25).rev().collect::<Vec<u64>>()),
        ("oldest_first", (0..25).collect::<Vec<u64>>()),
    ] {
        let mut seen = Vec::new();
        let mut pages = 0;
        let mut cursor = String::new();
        loop {
            let path = format!("/v1/audit?kind=proxy_attempt&order={order}&limit=10{cursor}");
            let page = get_json(&broker, &admin, &path).await;
            pages += 1;
            let records = page["records"].as_array().expect("records");
            assert!(records.len() <= 10, "a page holds at most limit records");
            seen.extend(records.iter().map(|r| r["record"]["at_ms"].as_u64().unwrap()));
            match page["next_after_seq"].as_u64() {
                Some(next) => cursor = format!("&after_seq={next}"),
                None => break,
            }
            assert!(pages < 10, "the cursor must make progress");
        }
        assert_eq!(seen, expected, "{order}: every record exactly once, in order");
        assert_eq!(pages, 3, "{order}: 25 records in pages of 10");
    }
    let default = get_json(&broker, &admin, "/v1/audit").await;
    assert_eq!(
        default["records"].as_array().map(Vec::len),
        Some(26),
        "the default limit (100) returns all 25 and the workspace's creation: {default}"
    );
    log.shutdown().await;
    broker.stop().await;
}

#[tokio::test]
async fn listing_and_export_refuse_malformed_filters_without_echoing_them() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let cases = [
        ("/v1/audit?limit=0", "limit"),
        ("/v1/audit?limit=1001", "limit"),
        ("/v1/audit?limit=ten", "limit"),
        ("/v1/audit?after_seq=-1", "after_seq"),
        ("/v1/audit?since_ms=99999999999999999999999", "since_ms"),
        ("/v1/audit?agent=zzz-agent-canary", "agent"),
        ("/v1/audit?decision=maybe-canary", "decision"),
        ("/v1/audit?kind=kind-canary", "kind"),
        ("/v1/audit?order=sideways-canary", "order"),
        ("/v1/audit?credential=", "credential"),
        ("/v1/audit?canary-param=1", "unknown query parameter"),
        ("/v1/audit?kind=proxy_attempt&kind=proxy_outcome", "once"),
        ("/v1/audit?format=csv", "unknown query parameter"),
        ("/v1/audit/export?format=xml-canary", "format"),
        ("/v1/audit/export?limit=0", "limit"),
        ("/v1/audit/verify?from_seq=0", "from_seq"),
        ("/v1/audit/verify?from_seq=first-canary", "from_seq"),
        ("/v1/audit/verify?from_seq=1&from_seq=2", "once"),
        ("/v1/audit/verify?canary-param=1", "unknown query parameter"),
    ];
    for (path, names) in cases {
        let (status, body) = TestBroker::send(broker.signed(&admin, "GET", path, None)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_request")),
            "{path}: {body}"
        );
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(names), "{path}: the message names the problem: {message}");
        assert!(
            !message.contains("canary"),
            "{path}: the submitted value is not echoed: {message}"
        );
    }
    broker.stop().await;
}

#[tokio::test]
async fn the_csv_export_quotes_commas_quotes_and_newlines_and_defuses_formulas() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (_store, log) = writer_for(&broker, &[&admin]).await;
    let tricky_path = "/search/a,b \"quoted\"\nnext line";
    let mut tricky = attempt(admin.workspace, AgentId::random(), "github", Decision::Allowed, 10);
    tricky.path = Some(tricky_path.into());
    tricky.policy_ids = vec!["default".into(), "team,ops".into()];
    let formula =
        attempt(admin.workspace, AgentId::random(), "=HYPERLINK(1)", Decision::Denied, 11);
    log.append(tricky).await.expect("append");
    log.append(formula).await.expect("append");

    let (status, headers, text) =
        get_text(&broker, &admin, "/v1/audit/export?format=csv&kind=proxy_attempt").await;
    assert_eq!(status, 200, "{text}");
    assert!(headers.starts_with("text/csv"), "CSV content type: {headers}");
    let rows = parse_csv(&text);
    let header = &rows[0];
    assert_eq!(header[0], "seq", "a header row comes first: {header:?}");
    assert_eq!(rows.len(), 3, "header plus two records: {rows:?}");
    assert!(rows.iter().all(|r| r.len() == header.len()), "every row has every column: {rows:?}");
    let column = |name: &str| header.iter().position(|h| h == name).expect("column");
    assert_eq!(rows[1][column("path")], tricky_path, "commas, quotes and newlines survive");
    assert_eq!(rows[1][column("policy_ids")], "default;team,ops", "policy ids joined by ';'");
    assert_eq!(rows[1][column("at_ms")], "10", "numbers are plain");
    assert_eq!(
        rows[2][column("credential_name")],
        "'=HYPERLINK(1)",
        "a cell a spreadsheet would run as a formula is defused"
    );
    assert_eq!(rows[2][column("decision")], "denied", "decision column");
    assert!(text.ends_with("\r\n"), "RFC 4180 line endings");
    log.shutdown().await;
    broker.stop().await;
}

#[tokio::test]
async fn a_jsonl_export_verifies_offline_and_an_altered_export_does_not() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (_store, log) = writer_for(&broker, &[&admin]).await;
    for i in 0..600 {
        // More than one export page (500).
        let event = attempt(admin.workspace, AgentId::random(), "github", Decision::Allowed, i);
        log.append(event).await.expect("append");
    }
    let verified = get_json(&broker, &admin, "/v1/audit/verify").await;
    let (status, content_type, text) = get_text(&broker, &admin, "/v1/audit/export").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(content_type, "application/x-ndjson", "JSONL is the default format");
    let summary = verify_jsonl(text.as_bytes()).expect("the export verifies offline");
    assert_eq!(summary.records, verified["records"].as_u64().unwrap(), "every record exported");
    assert_eq!(json!(to_hex(&summary.head)), verified["head"], "same head as the broker's check");
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).expect("JSON line");
    for key in ["seq", "prev_hash", "hash", "record"] {
        assert!(first.get(key).is_some(), "each line carries {key}: {first}");
    }

    let altered = text.replacen("\"method\":\"GET\"", "\"method\":\"PUT\"", 1);
    match verify_jsonl(altered.as_bytes()) {
        Err(JsonlError::Broken(broken)) => {
            assert_eq!(broken.reason, BreakReason::HashMismatch, "{broken}");
        }
        other => panic!("an altered export must not verify: {other:?}"),
    }
    let dropped: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
    match verify_jsonl(dropped.as_bytes()) {
        Err(JsonlError::Broken(broken)) => {
            assert_eq!((broken.seq, broken.reason), (1, BreakReason::MissingRecord), "{broken}");
        }
        other => panic!("an export missing its first record must not verify: {other:?}"),
    }
    match verify_jsonl("{\"not\":\"an export line\"}\n".as_bytes()) {
        Err(JsonlError::Line { line }) => assert_eq!(line, 1, "names the line"),
        other => panic!("a foreign line must be refused: {other:?}"),
    }

    let (_, _, limited) = get_text(&broker, &admin, "/v1/audit/export?limit=7").await;
    assert_eq!(limited.lines().count(), 7, "an export honours limit");
    let (_, _, newest) =
        get_text(&broker, &admin, "/v1/audit/export?order=newest_first&limit=1").await;
    let newest: Value = serde_json::from_str(newest.trim()).expect("line");
    assert_eq!(newest["hash"], verified["head"], "newest first starts at the head");
    log.shutdown().await;
    broker.stop().await;
}

#[tokio::test]
async fn a_workspace_never_sees_another_workspaces_records() {
    let broker = TestBroker::start().await;
    let ours = workspace_with_admin(&broker).await;
    let theirs = workspace_with_admin(&broker).await;
    let (_store, log) = writer_for(&broker, &[&ours, &theirs]).await;
    let their_agent = AgentId::random();
    for i in 0..5 {
        let event =
            attempt(theirs.workspace, their_agent, "their-secret-name", Decision::Allowed, i);
        log.append(event).await.expect("append");
    }
    let ours_receipt = log
        .append(attempt(ours.workspace, AgentId::random(), "github", Decision::Allowed, 100))
        .await
        .expect("append");

    let listing = get_json(&broker, &ours, "/v1/audit?limit=1000").await;
    let records = listing["records"].as_array().expect("records");
    assert!(
        records.iter().all(|r| r["record"]["workspace"] == json!(ours.workspace)),
        "only our records: {listing}"
    );
    assert!(!listing.to_string().contains("their-secret-name"), "nothing of theirs leaks");
    let by_their_agent = get_json(&broker, &ours, &format!("/v1/audit?agent={their_agent}")).await;
    assert_eq!(by_their_agent["records"], json!([]), "their agent has no records in our view");
    let by_cursor = get_json(&broker, &ours, "/v1/audit?after_seq=0&order=oldest_first").await;
    assert!(
        by_cursor["records"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["record"]["workspace"] == json!(ours.workspace)),
        "a cursor does not escape the workspace"
    );
    let (_, _, export) = get_text(&broker, &ours, "/v1/audit/export?format=csv").await;
    assert!(!export.contains("their-secret-name"), "nor does the export: {export}");
    let verified = get_json(&broker, &ours, "/v1/audit/verify").await;
    assert_eq!(verified["records"], json!(ours_receipt.seq), "verify counts our chain only");
    let theirs_verified = get_json(&broker, &theirs, "/v1/audit/verify").await;
    assert_eq!(
        theirs_verified["records"],
        json!(6),
        "their chain is theirs (5 and their workspace's creation): {theirs_verified}"
    );
    log.shutdown().await;
    broker.stop().await;
}

#[tokio::test]
async fn audit_endpoints_refuse_unsigned_requests_and_unknown_devices() {
    let broker = TestBroker::start().await;
    let _admin = workspace_with_admin(&broker).await;
    let stranger = TestDevice::new(WorkspaceId::random());
    for path in ["/v1/audit", "/v1/audit/export", "/v1/audit/verify"] {
        let (status, body) = TestBroker::send(broker.http.get(broker.url(path))).await;
        assert_eq!((status, body["code"].as_str()), (401, Some("signature_invalid")), "{path}");
        let (status, body) = TestBroker::send(broker.signed(&stranger, "GET", path, None)).await;
        assert_eq!((status, body["code"].as_str()), (401, Some("unknown_device")), "{path}");
    }
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Secrets

#[tokio::test]
async fn secrets_in_a_query_string_or_userinfo_never_reach_the_database() {
    const PASSED: &str = "CANARY-9f2c-passed-in-the-query";
    const USERINFO: &str = "CANARY-3b1d-userinfo";
    const NEVER: &str = "CANARY-77aa-never-passed";
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (_store, log) = writer_for(&broker, &[&admin]).await;
    let mut event = attempt(admin.workspace, AgentId::random(), "github", Decision::Allowed, 1);
    event.path = Some(format!("/repos/acme/app?access_token={PASSED}#{PASSED}"));
    event.host = Some(format!("user:{USERINFO}@api.github.com"));
    log.append(event).await.expect("append");
    log.shutdown().await;

    let listing = get_json(&broker, &admin, "/v1/audit?kind=proxy_attempt").await;
    let record = &listing["records"][0]["record"];
    assert_eq!(record["path"], "/repos/acme/app", "the query string and fragment are dropped");
    assert_eq!(record["host"], "api.github.com", "userinfo is dropped");

    // The database file, its WAL and shared memory (or every PostgreSQL table): nothing of the
    // secrets anywhere.
    let mut scanned = 0;
    for (_, bytes) in broker.stored_bytes().await {
        scanned += bytes.len();
        for canary in [PASSED, USERINFO, NEVER] {
            assert!(
                !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
                "{canary} must not be stored"
            );
        }
        assert!(
            !bytes.windows(14).any(|w| w == b"/repos/acme/a?"),
            "the path is stored without its query"
        );
    }
    assert!(scanned > 0, "the scan read the database");
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Helpers

// The worked example of docs/protocol.md ("Audit log"); the hashes were computed independently
// (Python hashlib over the documented bytes).
const EXAMPLE_RECORD_1: &str = r#"{"agent":"6f2d9c4e-1a3b-4c5d-8e7f-0a1b2c3d4e5f","at_ms":1800000000123,"client_ip":"127.0.0.1","credential_name":"github","decision":"allowed","device":"a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d","host":"api.github.com","kind":"proxy_attempt","member":"5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a","method":"GET","path":"/repos/acme/app/issues","policy_ids":["default-allow"],"seq":1,"v":1,"workspace":"0b5e0a3c-4c1e-4d8e-9a47-3f1f6a2b9c10"}"#;
const EXAMPLE_HASH_1: &str = "45d1f9cbb7566e9cd93a7c46851e532c1558bf0123ba5bf8da86d9d600e84f04";
const EXAMPLE_RECORD_2: &str = r#"{"agent":"6f2d9c4e-1a3b-4c5d-8e7f-0a1b2c3d4e5f","at_ms":1800000000207,"attempt_seq":1,"client_ip":"127.0.0.1","credential_name":"github","decision":"allowed","device":"a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d","host":"api.github.com","kind":"proxy_outcome","latency_ms":84,"member":"5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a","method":"GET","path":"/repos/acme/app/issues","policy_ids":["default-allow"],"seq":2,"upstream_status":200,"v":1,"workspace":"0b5e0a3c-4c1e-4d8e-9a47-3f1f6a2b9c10"}"#;
const EXAMPLE_HASH_2: &str = "030ebbfc431b3a9aebe7faa2b5288f1dbadd1c44b66b64f6bc5a011a16f9530e";

fn example_workspace() -> WorkspaceId {
    "0b5e0a3c-4c1e-4d8e-9a47-3f1f6a2b9c10".parse().unwrap()
}

/// The two records of the protocol document's worked example.
fn worked_example_events() -> (AuditEvent, AuditEvent) {
    let agent: AgentId = "6f2d9c4e-1a3b-4c5d-8e7f-0a1b2c3d4e5f".parse().unwrap();
    let device: DeviceId = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d".parse().unwrap();
    let member: MemberId = "5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a".parse().unwrap();
    let mut attempt =
        AuditEvent::new(example_workspace(), 1_800_000_000_123, AuditKind::ProxyAttempt);
    attempt.decision = Some(Decision::Allowed);
    attempt.agent = Some(agent);
    attempt.device = Some(device);
    attempt.member = Some(member);
    attempt.credential_name = Some("github".into());
    attempt.method = Some("GET".into());
    attempt.host = Some("api.github.com".into());
    attempt.path = Some("/repos/acme/app/issues".into());
    attempt.policy_ids = vec!["default-allow".into()];
    attempt.client_ip = Some("127.0.0.1".into());
    let mut outcome = attempt.clone();
    outcome.kind = AuditKind::ProxyOutcome;
    outcome.at_ms = 1_800_000_000_207;
    outcome.attempt_seq = Some(1);
    outcome.upstream_status = Some(200);
    outcome.latency_ms = Some(84);
    (attempt, outcome)
}

/// A proxy attempt; `at_ms` doubles as a marker tests find records by.
fn attempt(
    workspace: WorkspaceId,
    agent: AgentId,
    credential: &str,
    decision: Decision,
    at_ms: u64,
) -> AuditEvent {
    let mut event = AuditEvent::new(workspace, at_ms, AuditKind::ProxyAttempt);
    event.decision = Some(decision);
    event.agent = Some(agent);
    event.credential_name = Some(credential.into());
    event.method = Some("GET".into());
    event.host = Some("api.github.com".into());
    event.path = Some("/repos/acme/app".into());
    event.client_ip = Some("127.0.0.1".into());
    event
}

/// A store on a fresh database without a broker in front of it.
struct Fresh {
    dir: tempfile::TempDir,
    db: TestDatabase,
}

impl Fresh {
    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A second store on the same database, as a second replica would open it.
    async fn store(&self) -> Store {
        self.db.open(self.dir.path()).await
    }
}

async fn fresh_store() -> (Fresh, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = TestDatabase::create().await;
    let store = db.open_and_migrate(dir.path()).await;
    (Fresh { dir, db }, store)
}

/// A second writer on the running broker's database, as a second replica would be.
async fn writer_for(broker: &TestBroker, devices: &[&TestDevice]) -> (Store, AuditLog) {
    // The broker's own records (each workspace's `workspace_created`) reach the database before
    // a second writer starts on the same chains: a read through the broker waits for them.
    for device in devices {
        let (status, body) =
            TestBroker::send(broker.signed(device, "GET", "/v1/audit?limit=1", None)).await;
        assert_eq!(status, 200, "the broker's records are indexed: {body}");
    }
    let store = broker.store().await;
    let log = AuditLog::start(store.clone());
    (store, log)
}

/// A plain connection that is not the broker's: what someone with the database file can do, or
/// on PostgreSQL the schema owner (row-level security binds it too, so it names the workspace it
/// tampers with, as such a person would).
async fn raw_connection(
    db: &TestDatabase,
    dir: &Path,
    workspace: Option<WorkspaceId>,
) -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    let url = match db {
        TestDatabase::Sqlite => format!("sqlite://{}", dir.join("db.sqlite3").display()),
        TestDatabase::Postgres(pg) => pg.owner_url.clone(),
    };
    let mut raw = sqlx::AnyConnection::connect(&url).await.expect("raw connection");
    if let (TestDatabase::Postgres(_), Some(workspace)) = (db, workspace) {
        sqlx::query("SELECT set_config('latchkey.workspace', $1, false)")
            .bind(workspace.to_string())
            .execute(&mut raw)
            .await
            .expect("name the workspace");
    }
    raw
}

/// Removes one of the audit log's protective triggers, as someone with the file (or the owner
/// role) can.
async fn drop_trigger(raw: &mut sqlx::AnyConnection, trigger: &'static str) {
    let statement = if common::postgres_backend() {
        format!("ALTER TABLE audit_log DISABLE TRIGGER {trigger}")
    } else {
        format!("DROP TRIGGER {trigger}")
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(raw).await.expect("drop trigger");
}

fn error_text<T>(result: Result<T, sqlx::Error>) -> String {
    match result {
        Ok(_) => panic!("the database accepted a write it must refuse"),
        Err(error) => error.to_string(),
    }
}

async fn get_json(broker: &TestBroker, device: &TestDevice, path: &str) -> Value {
    let (status, body) = TestBroker::send(broker.signed(device, "GET", path, None)).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// Status, content type and body text.
async fn get_text(broker: &TestBroker, device: &TestDevice, path: &str) -> (u16, String, String) {
    let response = broker.signed(device, "GET", path, None).send().await.expect("request");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, content_type, response.text().await.expect("body"))
}

/// A strict RFC 4180 reader: quoted cells with doubled quotes, CRLF row ends.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut cell = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cell.push(c),
            (false, '"') if cell.is_empty() => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut cell)),
            (false, '\r') if chars.peek() == Some(&'\n') => {
                chars.next();
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => {
                assert!(c != '"' && c != '\n' && c != '\r', "unquoted special character in CSV");
                cell.push(c);
            }
        }
    }
    assert!(!quoted && cell.is_empty() && row.is_empty(), "the CSV ends with a complete row");
    rows
}

/// On SQLite the writer never checkpoints the WAL on the call path (a checkpoint syncs the
/// database file); a passive checkpoint beside it lets the WAL start over instead of growing with
/// every record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_wal_is_checkpointed_beside_the_writer_and_does_not_keep_growing() {
    if common::postgres_backend() {
        return; // PostgreSQL manages its own WAL.
    }
    let (fresh, store) = fresh_store().await;
    let wal = fresh.dir.path().join("db.sqlite3-wal");
    let log = AuditLog::start(store.clone());
    let workspace = WorkspaceId::random();
    let (agent, mut at) = (AgentId::random(), 1_000);
    let mut write_commits = async |count: usize| {
        for _ in 0..count {
            at += 1;
            log.append(attempt(workspace, agent, "github", Decision::Allowed, at))
                .await
                .expect("append");
        }
    };
    write_commits(1500).await;
    let first = std::fs::metadata(&wal).expect("the WAL exists").len();
    // A checkpoint runs at least once a second; the next commit then starts the WAL over.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    write_commits(1500).await;
    let second = std::fs::metadata(&wal).expect("the WAL exists").len();
    assert!(
        second < first + first / 2,
        "the WAL grew from {first} to {second} bytes over as many records again: nothing checkpointed it"
    );
    log.shutdown().await;
    assert!(
        store.verify_audit_chain(workspace).await.expect("read").is_ok(),
        "every record is in one intact chain"
    );
}
