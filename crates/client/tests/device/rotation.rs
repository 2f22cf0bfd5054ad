//! Key rotation against a real broker: every credential re-sealed under the next version in one
//! broker transaction, the new key delivered to the member's other device, and interrupted
//! rotations resumed without a second key or a half-rotated credential.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "the helpers in this file are test code too; a panic is the failure report"
)]

use crate::common;

use common::{Machine, TestBroker};
use latchkey_client::access::{AccessError, NewApiKey, add_api_key};
use latchkey_client::api::{BrokerClient, InviteFor};
use latchkey_client::rotation::{RotationProgress, RotationScope, rotate};
use latchkey_client::workspace::{
    CreatedWorkspace, Joining, admit_device, broker_client, create_workspace, join_workspace,
    receive_keys,
};
use latchkey_core::ids::{KeyVersion, Owner};
use latchkey_core::keys::WorkspaceKey;
use latchkey_core::payload::{CredentialPayload, Injection};
use latchkey_core::secret::SecretBytes;

const V1: KeyVersion = KeyVersion::FIRST;

fn v2() -> KeyVersion {
    V1.next().unwrap()
}

async fn admin_with_credentials(broker: &TestBroker) -> (Machine, CreatedWorkspace) {
    let ada = Machine::new("ada");
    let created =
        create_workspace(&ada.profile, &ada.store, &broker.url, "Acme", "Ada", "laptop", None)
            .await
            .unwrap();
    for (name, shared) in [("openai", true), ("github", true), ("mine", false)] {
        add_api_key(&ada.profile, &ada.store, api_key(name, shared)).await.unwrap();
    }
    (ada, created)
}

static HOSTS: std::sync::LazyLock<[String; 1]> =
    std::sync::LazyLock::new(|| ["api.example.com".to_owned()]);

/// An API key for `https://api.example.com` named `name`, whose secret is `secret-of-{name}`.
fn api_key(name: &str, shared: bool) -> NewApiKey<'_> {
    NewApiKey {
        name,
        provider: "custom-api-key",
        base_url: "https://api.example.com",
        allowed_hosts: &*HOSTS,
        injection: Injection::Header { name: "authorization".into(), prefix: "Bearer ".into() },
        shared,
        key: SecretBytes::copy_from(format!("secret-of-{name}").as_bytes()),
        account: None,
    }
}

/// Every credential opens under the version the broker says it is at, with the key this
/// machine holds for that version, and holds the secret it was given.
async fn assert_all_readable(machine: &Machine, client: &BrokerClient, created: &CreatedWorkspace) {
    for credential in client.credentials().await.unwrap() {
        let (version, envelope) = client.credential_envelope(credential.id).await.unwrap();
        assert_eq!(
            version, credential.key_version,
            "{}: listing and envelope agree",
            credential.name
        );
        let key = match credential.owner {
            Owner::Shared => machine
                .store
                .load_workspace_key(created.workspace, version)
                .unwrap()
                .record_key(credential.id),
            Owner::Member(member) => machine
                .store
                .load_member_key(created.workspace, member, version)
                .unwrap()
                .record_key(credential.id),
        }
        .unwrap();
        let plaintext = envelope
            .open(&key)
            .unwrap_or_else(|_| panic!("{} must open under version {version}", credential.name));
        let payload = CredentialPayload::decode(plaintext.expose_secret()).unwrap();
        assert_eq!(
            payload.secret.expose_secret(),
            format!("secret-of-{}", credential.name).as_bytes(),
            "{}: the secret survives rotation",
            credential.name
        );
    }
}

#[tokio::test]
async fn a_shared_rotation_reseals_every_shared_credential_and_reaches_the_other_device() {
    let broker = TestBroker::start().await;
    let (ada, created) = admin_with_credentials(&broker).await;
    let client = broker_client(&ada.profile, &ada.store).await.unwrap();

    // A second device of Ada's, admitted after comparing fingerprints.
    let code = client.create_invite(InviteFor::Device(created.member), None).await.unwrap().code;
    let desktop = Machine::new("ada-desktop");
    let joined = join_workspace(
        &desktop.profile,
        &desktop.store,
        &broker.url,
        &code,
        &Joining::ExistingMember(created.member),
        "desktop",
    )
    .await
    .unwrap();
    let admitted =
        admit_device(&ada.profile, &ada.store, joined.device, &joined.fingerprint).await.unwrap();
    receive_keys(&desktop.profile, &desktop.store, Some(&admitted.fingerprint)).await.unwrap();

    let seen = std::sync::Mutex::new(Vec::new());
    let summary = rotate(&ada.profile, &ada.store, RotationScope::Shared, &|p| {
        seen.lock().unwrap().push(p);
    })
    .await
    .expect("an admin rotates the workspace key");
    assert_eq!((summary.from, summary.to, summary.credentials, summary.devices), (V1, v2(), 2, 2));
    assert!(!summary.resumed);
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.first(), Some(&RotationProgress::Resealed { done: 1, total: 2 }));
    assert_eq!(seen.last(), Some(&RotationProgress::Committed), "progress ends committed");
    assert_eq!(ada.profile.load_config().unwrap().workspace_key_version, Some(v2()));

    for credential in client.credentials().await.unwrap() {
        let expected = if credential.owner == Owner::Shared { v2() } else { V1 };
        assert_eq!(credential.key_version, expected, "{} is at the right version", credential.name);
    }
    assert_all_readable(&ada, &client, &created).await;

    // The other device receives the new key from Ada's device (already trusted).
    let received = receive_keys(&desktop.profile, &desktop.store, None).await.unwrap();
    assert!(received.workspace_keys.contains(&v2()), "the new key reaches the other device");
    let desktop_client = broker_client(&desktop.profile, &desktop.store).await.unwrap();
    assert_all_readable(&desktop, &desktop_client, &created).await;
    broker.stop().await;
}

#[tokio::test]
async fn a_member_rotation_touches_only_personal_credentials() {
    let broker = TestBroker::start().await;
    let (ada, created) = admin_with_credentials(&broker).await;
    let summary = rotate(&ada.profile, &ada.store, RotationScope::Member, &|_| {}).await.unwrap();
    assert_eq!((summary.credentials, summary.devices), (1, 1));
    let client = broker_client(&ada.profile, &ada.store).await.unwrap();
    for credential in client.credentials().await.unwrap() {
        let expected = if credential.owner == Owner::Shared { V1 } else { v2() };
        assert_eq!(credential.key_version, expected, "{}", credential.name);
    }
    assert_all_readable(&ada, &client, &created).await;
    broker.stop().await;
}

#[tokio::test]
async fn an_interrupted_rotation_resumes_with_the_key_it_stored_first() {
    let broker = TestBroker::start().await;
    let (ada, created) = admin_with_credentials(&broker).await;
    let client = broker_client(&ada.profile, &ada.store).await.unwrap();

    // Interrupted after step 1: the next key is in the key store, the broker knows nothing.
    let pending = WorkspaceKey::generate(created.workspace, v2()).unwrap();
    ada.store.save_workspace_key(&pending).unwrap();
    assert_all_readable(&ada, &client, &created).await;
    rotate(&ada.profile, &ada.store, RotationScope::Shared, &|_| {}).await.unwrap();
    let used = ada.store.load_workspace_key(created.workspace, v2()).unwrap();
    assert_eq!(used.expose_secret(), pending.expose_secret(), "the stored key was reused");
    assert_all_readable(&ada, &client, &created).await;

    // Interrupted after the broker committed, before the profile recorded it.
    let mut config = ada.profile.load_config().unwrap();
    config.workspace_key_version = Some(V1);
    ada.profile.save_config(&config).unwrap();
    let resumed = rotate(&ada.profile, &ada.store, RotationScope::Shared, &|_| {}).await.unwrap();
    assert!(resumed.resumed, "the committed rotation is finished, not repeated");
    assert_eq!(resumed.to, v2());
    assert_eq!(ada.profile.load_config().unwrap().workspace_key_version, Some(v2()));
    for credential in client.credentials().await.unwrap() {
        assert!(credential.key_version <= v2(), "no second rotation happened");
    }
    assert_all_readable(&ada, &client, &created).await;
    broker.stop().await;
}

#[tokio::test]
async fn the_new_key_goes_only_to_devices_whose_fingerprint_was_confirmed_here() {
    let broker = TestBroker::start().await;
    let (ada, created) = admin_with_credentials(&broker).await;
    let client = broker_client(&ada.profile, &ada.store).await.unwrap();
    let join = |name: &'static str| {
        let (broker, client) = (&broker, &client);
        async move {
            let code =
                client.create_invite(InviteFor::Device(created.member), None).await.unwrap().code;
            let machine = Machine::new(name);
            let joined = join_workspace(
                &machine.profile,
                &machine.store,
                &broker.url,
                &code,
                &Joining::ExistingMember(created.member),
                name,
            )
            .await
            .unwrap();
            (machine, joined)
        }
    };
    // One device admitted after comparing fingerprints, one that joined and was never admitted,
    // and one admitted whose public keys the broker later swaps for others.
    let (admitted, admitted_join) = join("admitted").await;
    let ada_fingerprint =
        admit_device(&ada.profile, &ada.store, admitted_join.device, &admitted_join.fingerprint)
            .await
            .unwrap()
            .fingerprint;
    receive_keys(&admitted.profile, &admitted.store, Some(&ada_fingerprint)).await.unwrap();
    let (pending, pending_join) = join("pending").await;
    let (swapped, swapped_join) = join("swapped").await;
    admit_device(&ada.profile, &ada.store, swapped_join.device, &swapped_join.fingerprint)
        .await
        .unwrap();
    receive_keys(&swapped.profile, &swapped.store, Some(&ada_fingerprint)).await.unwrap();
    let impostor = latchkey_core::keys::DeviceKeys::generate().unwrap().public_keys();
    sqlx::query("UPDATE devices SET exchange_key = ? WHERE id = ?")
        .bind(impostor.exchange.to_bytes().to_vec())
        .bind(swapped_join.device.to_string())
        .execute(&broker.database().await)
        .await
        .unwrap();
    // The broker's read cache follows a write made outside it within 2 seconds.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;

    let summary = rotate(&ada.profile, &ada.store, RotationScope::Shared, &|_| {}).await.unwrap();
    let mut not_sent = summary.not_sent.clone();
    not_sent.sort();
    let mut expected = vec![pending_join.device, swapped_join.device];
    expected.sort();
    assert_eq!(
        not_sent, expected,
        "a device nobody here admitted, or whose keys changed since, is not sent the new key"
    );
    assert_eq!(summary.devices, 2, "this device and the admitted one");

    let received = receive_keys(&admitted.profile, &admitted.store, None).await.unwrap();
    assert!(received.workspace_keys.contains(&v2()), "the admitted device gets the new key");
    let pending_got = receive_keys(&pending.profile, &pending.store, Some(&ada_fingerprint)).await;
    assert!(
        pending_got.is_err(),
        "nothing was wrapped to the device that was never admitted: {pending_got:?}"
    );
    assert!(
        pending.store.load_workspace_key(created.workspace, v2()).is_err(),
        "the unadmitted device holds no new key"
    );
    broker.stop().await;
}

#[tokio::test]
async fn a_device_left_out_of_a_rotation_stores_no_key_of_its_own_and_is_told_to_receive_it() {
    let broker = TestBroker::start().await;
    let (ada, created) = admin_with_credentials(&broker).await;
    let client = broker_client(&ada.profile, &ada.store).await.unwrap();
    let code = client.create_invite(InviteFor::Device(created.member), None).await.unwrap().code;
    let desktop = Machine::new("ada-desktop");
    let joined = join_workspace(
        &desktop.profile,
        &desktop.store,
        &broker.url,
        &code,
        &Joining::ExistingMember(created.member),
        "desktop",
    )
    .await
    .unwrap();
    let admitted =
        admit_device(&ada.profile, &ada.store, joined.device, &joined.fingerprint).await.unwrap();
    receive_keys(&desktop.profile, &desktop.store, Some(&admitted.fingerprint)).await.unwrap();

    // The laptop no longer trusts the desktop, so its rotation does not send it the new key.
    let mut config = ada.profile.load_config().unwrap();
    config.trusted_devices.retain(|t| t.id != joined.device);
    ada.profile.save_config(&config).unwrap();
    let summary = rotate(&ada.profile, &ada.store, RotationScope::Shared, &|_| {}).await.unwrap();
    assert_eq!(summary.not_sent, vec![joined.device], "the desktop was left out");

    for attempt in 1..=2 {
        let refused =
            rotate(&desktop.profile, &desktop.store, RotationScope::Shared, &|_| {}).await;
        assert!(
            matches!(
                refused,
                Err(AccessError::KeyBehind { held, current, .. }) if held == V1 && current == v2()
            ),
            "attempt {attempt}: a device behind the broker is told to receive the new key, not \
             that someone rotated meanwhile: {refused:?}"
        );
        let message = refused.unwrap_err().to_string();
        assert!(
            message.contains("receive-keys") && message.contains("device admit"),
            "the message names the fix: {message}"
        );
        assert!(
            desktop.store.load_workspace_key(created.workspace, v2()).is_err(),
            "attempt {attempt}: no key of its own for version 2 was stored on the desktop"
        );
        assert_eq!(desktop.profile.load_config().unwrap().workspace_key_version, Some(V1));
    }
    for credential in client.credentials().await.unwrap() {
        if credential.owner == Owner::Shared {
            assert_eq!(
                credential.key_version,
                v2(),
                "{} stays at the laptop's version",
                credential.name
            );
        }
    }
    assert_all_readable(&ada, &client, &created).await;
    broker.stop().await;
}

#[tokio::test]
async fn a_rotation_that_outruns_the_devices_request_budget_waits_for_the_broker_and_finishes() {
    use latchkey_client::api::ClientError;
    let broker = TestBroker::start_rate_limited(20, 12).await;
    let ada = Machine::new("ada");
    create_workspace(&ada.profile, &ada.store, &broker.url, "Acme", "Ada", "laptop", None)
        .await
        .unwrap();
    // Two dozen shared credentials, added at the pace the broker allows.
    for n in 0..24 {
        let name = format!("api-{n}");
        loop {
            let added = add_api_key(&ada.profile, &ada.store, api_key(&name, true)).await;
            match added {
                Ok(_) => break,
                Err(AccessError::Broker(ClientError::RateLimited { retry_after })) => {
                    tokio::time::sleep(retry_after).await;
                }
                Err(error) => panic!("adding {name}: {error}"),
            }
        }
    }
    // The device's budget spent: the rotation's ~27 requests need more than a second of refill.
    let client = broker_client(&ada.profile, &ada.store).await.unwrap();
    while client.me().await.is_ok() {}
    let started = std::time::Instant::now();
    let summary = rotate(&ada.profile, &ada.store, RotationScope::Shared, &|_| {})
        .await
        .expect("a rotation told to slow down waits and goes on, rather than stopping midway");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(500),
        "it had to wait for the budget to refill: {:?}",
        started.elapsed()
    );
    assert_eq!((summary.credentials, summary.to), (24, v2()), "{summary:?}");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let listed = client.credentials().await.unwrap();
    assert!(listed.iter().all(|c| c.key_version == v2()), "every credential moved: {listed:?}");
    broker.stop().await;
}
