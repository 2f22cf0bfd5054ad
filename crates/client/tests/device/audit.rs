//! A device's own check of the workspace's audit chain against a real broker, and a malicious
//! broker that removes records from the end of its log, which its own verdict cannot see.

use crate::common;

use common::{Machine, TestBroker};
use latchkey_client::audit::check_workspace_chain;
use latchkey_client::workspace::{broker_client, create_workspace};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_catches_records_removed_from_the_end_that_the_broker_reports_as_sound() {
    let broker = TestBroker::start().await;
    let ada = Machine::new("ada");
    create_workspace(&ada.profile, &ada.store, &broker.url, "Acme", "Ada", "laptop", None)
        .await
        .unwrap();
    let client = broker_client(&ada.profile, &ada.store).await.unwrap();

    let first = check_workspace_chain(&client, &ada.profile).await.expect("checked");
    assert!(first.verified(), "a new workspace's chain verifies: {first:?}");
    assert_eq!(first.anchor, None, "a device's first check has nothing to hold the log to");

    for name in ["ci-bot", "deploy-bot", "review-bot"] {
        client.create_agent(name).await.expect("an agent");
    }
    let second = check_workspace_chain(&client, &ada.profile).await.expect("checked");
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

    let third = check_workspace_chain(&client, &ada.profile).await.expect("checked");
    assert!(third.broker.ok, "the broker's own verdict sees nothing wrong: {third:?}");
    assert!(!third.verified(), "but the device refuses the log: {third:?}");
    let broken = third.local.as_ref().expect_err("the device's check fails");
    assert_eq!(broken.seq, head, "at the record it verified before");
    assert!(broken.reason.contains("removed from its end"), "{broken}");

    let fourth = check_workspace_chain(&client, &ada.profile).await.expect("checked");
    assert_eq!(
        fourth.anchor.as_ref().map(|a| a.seq),
        Some(head),
        "a failed check never moves the anchor back: the truncation is reported every time"
    );
    assert!(!fourth.verified());
    broker.stop().await;
}
