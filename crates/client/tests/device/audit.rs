//! A device's own check of the workspace's audit chain against a real broker, a malicious
//! broker that removes records from the end of its log, which its own verdict cannot see, and a
//! log too long to hold in one answer.

use crate::common;

use common::TestBroker;
use latchkey_client::api::AuditFilter;
use latchkey_client::audit::{CheckFrom, check_workspace_chain, export_log, verify_export};
use latchkey_client::files::NewFile;
use latchkey_core::ids::WorkspaceId;
use latchkey_server::audit::{AuditEvent, AuditKind, Decision, canonical_record, chain_hash};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_catches_records_removed_from_the_end_that_the_broker_reports_as_sound() {
    let broker = TestBroker::start().await;
    let (ada, client) = common::ada_founds_acme(&broker).await;

    let first =
        check_workspace_chain(&client, &ada.profile, CheckFrom::Start).await.expect("checked");
    assert!(first.verified(), "a new workspace's chain verifies: {first:?}");
    assert_eq!(first.anchor, None, "a device's first check has nothing to hold the log to");

    for name in ["ci-bot", "deploy-bot", "review-bot"] {
        client.create_agent(name).await.expect("an agent");
    }
    let second =
        check_workspace_chain(&client, &ada.profile, CheckFrom::Start).await.expect("checked");
    assert!(second.verified(), "a grown chain verifies: {second:?}");
    let anchor = second.anchor.clone().expect("the first check's head was kept");
    let head = second.local.as_ref().expect("verified").records;
    assert!(head > anchor.seq, "the agents' records came after the first head");

    // The broker's operator removes the last records. The chain that is left is sound, and the
    // broker's own verdict says so; only a device that saw the later records can tell.
    let db = broker.database().await;
    sqlx::query("DROP TRIGGER audit_log_no_delete").execute(&db).await.unwrap();
    let cut = i64::try_from(head).unwrap() - 1;
    let removed = sqlx::query("DELETE FROM audit_log WHERE seq >= ?1").bind(cut).execute(&db);
    assert_eq!(removed.await.unwrap().rows_affected(), 2, "the last two records are gone");
    db.close().await;

    let third =
        check_workspace_chain(&client, &ada.profile, CheckFrom::Start).await.expect("checked");
    assert!(third.broker.ok, "the broker's own verdict sees nothing wrong: {third:?}");
    assert!(!third.verified(), "but the device refuses the log: {third:?}");
    let broken = third.local.as_ref().expect_err("the device's check fails");
    assert_eq!(broken.seq, head, "at the record it verified before");
    assert!(broken.reason.contains("removed from its end"), "{broken}");

    let fourth =
        check_workspace_chain(&client, &ada.profile, CheckFrom::Start).await.expect("checked");
    assert_eq!(
        fourth.anchor.as_ref().map(|a| a.seq),
        Some(head),
        "a failed check never moves the anchor back: the truncation is reported every time"
    );
    assert!(!fourth.verified());
    broker.stop().await;
}

/// Extends the workspace's chain in the broker's database by `count` proxied-call records of
/// about 400 bytes each, as a busy workspace's agents would: the records a real broker writes,
/// hashed as it hashes them.
async fn grow_chain(broker: &TestBroker, workspace: WorkspaceId, count: u64) {
    let db = broker.database().await;
    let (head, hash): (i64, Vec<u8>) = sqlx::query_as(
        "SELECT seq, hash FROM audit_log WHERE workspace_id = ?1 ORDER BY seq DESC LIMIT 1",
    )
    .bind(workspace.to_string())
    .fetch_one(&db)
    .await
    .expect("the workspace's chain has records");
    let mut prev: [u8; 32] = hash.try_into().expect("a 32-byte hash");
    let mut tx = db.begin().await.unwrap();
    for n in 1..=count {
        let seq = u64::try_from(head).unwrap() + n;
        let mut event = AuditEvent::new(workspace, 1_800_000_000_000 + n, AuditKind::ProxyAttempt);
        event.decision = Some(Decision::Allowed);
        event.credential_name = Some("github-main".to_owned());
        event.method = Some("GET".to_owned());
        event.host = Some("api.github.com".to_owned());
        event.path = Some(format!("/repos/acme/widgets/pulls/{n}/comments/and/reviews/and/files"));
        event.policy_ids = vec!["default-allow-granted".to_owned()];
        event.client_ip = Some("127.0.0.1".to_owned());
        let record = canonical_record(&event, seq);
        let hash = chain_hash(&prev, record.as_bytes());
        sqlx::query(
            "INSERT INTO audit_log (workspace_id, seq, at_ms, record, prev_hash, hash) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(workspace.to_string())
        .bind(i64::try_from(seq).unwrap())
        .bind(i64::try_from(event.at_ms).unwrap())
        .bind(&record)
        .bind(prev.as_slice())
        .bind(hash.as_slice())
        .execute(&mut *tx)
        .await
        .expect("the record extends the chain");
        prev = hash;
    }
    tx.commit().await.unwrap();
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_larger_than_any_answer_buffer_is_checked_and_exported_whole() {
    let broker = TestBroker::start().await;
    let (ada, client) = common::ada_founds_acme(&broker).await;
    let workspace = ada.profile.load_config().unwrap().workspace;
    client.create_agent("ci-bot").await.expect("an agent");
    let first = check_workspace_chain(&client, &ada.profile, CheckFrom::Start).await.unwrap();
    assert!(first.verified(), "{first:?}");
    let before = first.local.as_ref().unwrap().records;

    grow_chain(&broker, workspace, 12_000).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut file = NewFile::create(&path).unwrap();
    let bytes = export_log(&client, false, &AuditFilter::default(), &mut file).await.unwrap();
    file.finish().unwrap();
    assert!(
        bytes > 4 * 1024 * 1024,
        "the log ({bytes} bytes) must outgrow the 4 MiB an ordinary answer may have, or this test \
         shows nothing"
    );
    let exported = std::fs::read_to_string(&path).unwrap();
    assert_eq!(exported.len() as u64, bytes, "every byte received is in the file");
    let offline = verify_export(&exported).expect("the export verifies offline");
    assert_eq!(offline.records, before + 12_000, "the export holds every record");

    // From this device's anchor: the new records only, from the one it verified before.
    let quick = check_workspace_chain(&client, &ada.profile, CheckFrom::Anchor).await.unwrap();
    assert!(quick.verified(), "{quick:?}");
    let chain = quick.local.as_ref().unwrap();
    assert_eq!(chain.records, before + 12_000);
    assert_eq!(
        (chain.checked, chain.checked_from),
        (12_001, Some(before)),
        "the anchored record and the 12,000 after it were read, nothing before"
    );
    assert_eq!(quick.broker.checked_from, Some(before), "the broker checked the same records");
    let full = check_workspace_chain(&client, &ada.profile, CheckFrom::Start).await.unwrap();
    assert!(full.verified(), "{full:?}");
    let chain = full.local.as_ref().unwrap();
    assert_eq!((chain.checked, chain.checked_from), (before + 12_000, Some(1)), "every record");
    assert_eq!(full.broker.checked_from, Some(1), "and so did the broker");
    assert_eq!(full.anchor.as_ref().map(|a| a.seq), Some(before + 12_000), "anchored at the head");

    // Nothing new: the quick check reads the anchored record alone.
    let idle = check_workspace_chain(&client, &ada.profile, CheckFrom::Anchor).await.unwrap();
    let chain = idle.local.as_ref().unwrap();
    assert!(idle.verified(), "{idle:?}");
    assert_eq!((chain.checked, chain.checked_from), (1, Some(before + 12_000)));
    broker.stop().await;
}

/// An export whose broker goes silent midway fails once its read timeout passes, however long
/// the export as a whole may take: it neither hangs nor ends as if whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_whose_broker_goes_silent_midway_fails_as_stalled() {
    use latchkey_client::api::ClientError;
    use std::time::Duration;
    let first = "{\"hash\":\"00\",\"prev_hash\":\"00\",\"record\":{},\"seq\":1}\n";
    let client = common::scripted_broker(vec![(Duration::ZERO, first.to_owned())]).await;
    let read_timeout = Duration::from_millis(300);
    let mut export = client
        .audit_export_with_read_timeout(false, &AuditFilter::default(), read_timeout)
        .await
        .expect("the answer's head arrives");
    let received = export.chunk().await.expect("a first chunk").expect("not the end");
    assert_eq!(received.as_ref(), first.as_bytes());
    let started = std::time::Instant::now();
    let error = tokio::time::timeout(Duration::from_secs(10), export.chunk())
        .await
        .expect("a silent export fails within its read timeout instead of hanging")
        .expect_err("silence is not the end of the export");
    assert!(
        matches!(error, ClientError::Stalled { what: "audit export", silent, .. } if silent == read_timeout),
        "{error:?}"
    );
    assert!(error.to_string().contains("sent nothing on the audit export for 300ms"), "{error}");
    assert!(started.elapsed() >= read_timeout, "not before the read timeout");
}
