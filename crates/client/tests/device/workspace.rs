//! The enrolment flows against a real broker: each "machine" has its own profile directory and
//! key store, and every request goes over HTTP, signed, to `latchkey-server` on loopback.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "the helpers in this file are test code too; a panic is the failure report"
)]

use crate::common;

use common::{Machine, TestBroker};
use latchkey_client::api::{ClientError, InviteFor, Role, codes};
use latchkey_client::keychain::KeychainError;
use latchkey_client::profile::ProfileError;
use latchkey_client::workspace::{
    self, CreatedWorkspace, Joining, WorkspaceError, admit_device, broker_client, create_workspace,
    join_workspace, receive_keys,
};
use latchkey_core::creation::CreationToken;
use latchkey_core::fingerprint::Fingerprint;
use latchkey_core::ids::KeyVersion;
use latchkey_core::keys::{DeviceKeys, WrappedKind};
use latchkey_server::creation::WorkspaceCreation;

async fn admin_machine(broker: &TestBroker) -> (Machine, CreatedWorkspace) {
    let admin = Machine::new("ada");
    let created = create_workspace(
        &admin.profile,
        &admin.store,
        &broker.url,
        "Acme",
        "Ada",
        "Ada's laptop",
        None,
    )
    .await
    .expect("workspace creation succeeds");
    (admin, created)
}

async fn invite(machine: &Machine, invite_for: InviteFor) -> latchkey_client::api::InviteCode {
    let client = broker_client(&machine.profile, &machine.store).await.expect("client");
    client.create_invite(invite_for, None).await.expect("invite").code
}

#[tokio::test]
async fn a_new_member_joins_is_admitted_after_comparing_fingerprints_and_opens_the_workspace_key() {
    let broker = TestBroker::start().await;
    let (ada, created) = admin_machine(&broker).await;

    // The first device is enrolled, holds its keys and knows who it is.
    let ada_client = broker_client(&ada.profile, &ada.store).await.unwrap();
    let me = ada_client.me().await.expect("a signed request from the new device is accepted");
    assert_eq!(
        (me.workspace, me.member, me.device),
        (created.workspace, created.member, created.device)
    );
    assert_eq!(me.role, Role::Admin);
    assert_eq!(me.workspace_name.as_deref(), Some("Acme"), "the name given at creation");
    ada_client.broker_key().await.expect("the broker key is published");
    let ada_wk = ada.store.load_workspace_key(created.workspace, KeyVersion::FIRST).unwrap();
    let config = ada.profile.load_config().unwrap();
    assert_eq!(config.workspace_key_version, Some(KeyVersion::FIRST));

    // Grace joins on her own machine with the code Ada reads out.
    let code = invite(&ada, InviteFor::NewMember(Role::Member)).await;
    let grace = Machine::new("grace");
    let joined = join_workspace(
        &grace.profile,
        &grace.store,
        &broker.url,
        &code,
        &Joining::NewMember { name: "Grace".into() },
        "Grace's laptop",
    )
    .await
    .expect("joining with a fresh code succeeds");
    assert!(joined.new_member);
    assert_eq!(joined.workspace, created.workspace);

    // The fingerprint Grace's screen shows is the one of the keys the broker hands to Ada.
    let as_ada_sees_it = ada_client.device(joined.device).await.unwrap();
    assert_eq!(as_ada_sees_it.fingerprint(), joined.fingerprint);
    let grace_keys = grace.store.load_device_keys(joined.device).unwrap();
    assert_eq!(
        joined.fingerprint,
        Fingerprint::of(
            &grace_keys.public_keys().signing.to_bytes(),
            &grace_keys.public_keys().exchange.to_bytes()
        ),
        "the fingerprint shown is computed from the device's own keys"
    );
    let members = ada_client.members().await.unwrap();
    assert_eq!(members.len(), 2);

    // Ada types the fingerprint from Grace's screen (in lower case, as people do).
    let typed: Fingerprint = joined.fingerprint.to_string().to_lowercase().parse().unwrap();
    let admitted = admit_device(&ada.profile, &ada.store, joined.device, &typed)
        .await
        .expect("admission with the right fingerprint succeeds");
    assert_eq!(
        admitted.shared,
        vec![WrappedKind::Workspace],
        "another member gets no member key of Ada's"
    );
    assert_eq!(admitted.fingerprint, created.fingerprint, "Ada's screen shows her own fingerprint");

    // Grace confirms Ada's fingerprint and receives the workspace key.
    let received = receive_keys(&grace.profile, &grace.store, Some(&admitted.fingerprint))
        .await
        .expect("keys from the confirmed device are accepted");
    assert_eq!(received.workspace_keys, vec![KeyVersion::FIRST]);
    assert_eq!(received.ignored, 1, "Grace's own self-wrapped member key is not from Ada");
    let grace_wk = grace.store.load_workspace_key(created.workspace, KeyVersion::FIRST).unwrap();
    assert_eq!(
        grace_wk.expose_secret(),
        ada_wk.expose_secret(),
        "both hold the same workspace key"
    );
    let credential = latchkey_core::ids::CredentialId::random();
    assert_eq!(
        grace_wk.record_key(credential).unwrap().scope(),
        ada_wk.record_key(credential).unwrap().scope()
    );

    // Grace created her own member key on joining; it is hers alone.
    let grace_config = grace.profile.load_config().unwrap();
    assert_eq!(grace_config.member_key_version, Some(KeyVersion::FIRST));
    assert_eq!(grace_config.workspace_key_version, Some(KeyVersion::FIRST));
    grace.store.load_member_key(created.workspace, joined.member, KeyVersion::FIRST).unwrap();
    assert_eq!(grace_config.trusted_devices.len(), 1);

    // Receiving again later needs no fingerprint: Ada's device is remembered.
    let again = receive_keys(&grace.profile, &grace.store, None).await.unwrap();
    assert_eq!(again.workspace_keys, vec![KeyVersion::FIRST]);
    broker.stop().await;
}

#[tokio::test]
async fn admission_with_a_wrong_fingerprint_is_refused_and_shares_nothing() {
    let broker = TestBroker::start().await;
    let (ada, created) = admin_machine(&broker).await;
    let code = invite(&ada, InviteFor::NewMember(Role::Member)).await;
    let mallory = Machine::new("mallory");
    let joined = join_workspace(
        &mallory.profile,
        &mallory.store,
        &broker.url,
        &code,
        &Joining::NewMember { name: "Mallory".into() },
        "laptop",
    )
    .await
    .unwrap();

    let wrong = created.fingerprint; // any fingerprint but the device's
    let err = admit_device(&ada.profile, &ada.store, joined.device, &wrong).await.unwrap_err();
    assert!(matches!(err, WorkspaceError::FingerprintMismatch { .. }), "{err}");
    assert!(err.to_string().contains("nothing was shared"), "{err}");

    let err = receive_keys(&mallory.profile, &mallory.store, Some(&created.fingerprint))
        .await
        .unwrap_err();
    assert!(matches!(err, WorkspaceError::NoKeysFromSender { .. }), "nothing was wrapped: {err}");
    let missing =
        mallory.store.load_workspace_key(created.workspace, KeyVersion::FIRST).unwrap_err();
    assert!(matches!(missing, KeychainError::Missing { .. }));
    broker.stop().await;
}

#[tokio::test]
async fn a_broker_that_substitutes_the_new_devices_keys_is_caught_at_the_comparison() {
    let broker = TestBroker::start().await;
    let (ada, _) = admin_machine(&broker).await;
    let code = invite(&ada, InviteFor::NewMember(Role::Member)).await;
    let grace = Machine::new("grace");
    let joined = join_workspace(
        &grace.profile,
        &grace.store,
        &broker.url,
        &code,
        &Joining::NewMember { name: "Grace".into() },
        "laptop",
    )
    .await
    .unwrap();

    // The broker swaps in keys it controls for Grace's device.
    let attacker = DeviceKeys::generate().unwrap().public_keys();
    let db = broker.database().await;
    sqlx::query("UPDATE devices SET signing_key = ?1, exchange_key = ?2 WHERE id = ?3")
        .bind(&attacker.signing.to_bytes()[..])
        .bind(&attacker.exchange.to_bytes()[..])
        .bind(joined.device.to_string())
        .execute(&db)
        .await
        .unwrap();
    db.close().await;

    // Ada types the fingerprint Grace's screen really shows: the substitution is refused.
    let err = admit_device(&ada.profile, &ada.store, joined.device, &joined.fingerprint)
        .await
        .unwrap_err();
    assert!(matches!(err, WorkspaceError::FingerprintMismatch { .. }), "{err}");
    broker.stop().await;
}

#[tokio::test]
async fn a_second_device_of_a_member_gets_both_the_workspace_and_the_member_key() {
    let broker = TestBroker::start().await;
    let (ada, created) = admin_machine(&broker).await;
    let code = invite(&ada, InviteFor::Device(created.member)).await;
    let desktop = Machine::new("ada-desktop");
    let joined = join_workspace(
        &desktop.profile,
        &desktop.store,
        &broker.url,
        &code,
        &Joining::ExistingMember(created.member),
        "Ada's desktop",
    )
    .await
    .unwrap();
    assert!(!joined.new_member);
    assert_eq!(joined.member, created.member);

    let admitted =
        admit_device(&ada.profile, &ada.store, joined.device, &joined.fingerprint).await.unwrap();
    assert_eq!(admitted.shared, vec![WrappedKind::Workspace, WrappedKind::Member]);
    let received =
        receive_keys(&desktop.profile, &desktop.store, Some(&admitted.fingerprint)).await.unwrap();
    assert_eq!(received.workspace_keys, vec![KeyVersion::FIRST]);
    assert_eq!(received.member_keys, vec![KeyVersion::FIRST]);
    let mk_laptop =
        ada.store.load_member_key(created.workspace, created.member, KeyVersion::FIRST).unwrap();
    let mk_desktop = desktop
        .store
        .load_member_key(created.workspace, created.member, KeyVersion::FIRST)
        .unwrap();
    assert_eq!(mk_laptop.expose_secret(), mk_desktop.expose_secret());
    broker.stop().await;
}

#[tokio::test]
async fn a_plain_member_invites_and_admits_a_device_of_their_own_with_their_member_key() {
    let broker = TestBroker::start().await;
    let (ada, created) = admin_machine(&broker).await;
    // Grace joins as a plain member and is admitted by Ada.
    let grace = Machine::new("grace");
    let code = invite(&ada, InviteFor::NewMember(Role::Member)).await;
    let joined = join_workspace(
        &grace.profile,
        &grace.store,
        &broker.url,
        &code,
        &Joining::NewMember { name: "Grace".into() },
        "Grace's laptop",
    )
    .await
    .unwrap();
    let by_ada = admit_device(&ada.profile, &ada.store, joined.device, &joined.fingerprint).await;
    receive_keys(&grace.profile, &grace.store, Some(&by_ada.unwrap().fingerprint)).await.unwrap();
    let grace_member = joined.member;

    // She may not invite a device for anyone else.
    let grace_client = broker_client(&grace.profile, &grace.store).await.unwrap();
    let err =
        grace_client.create_invite(InviteFor::Device(created.member), None).await.unwrap_err();
    assert!(err.api().is_some_and(|e| e.is(codes::FORBIDDEN)), "{err}");

    // Her own: the new device must name her, not someone else.
    let code = invite(&grace, InviteFor::Device(grace_member)).await;
    let desktop = Machine::new("grace-desktop");
    let err = join_workspace(
        &desktop.profile,
        &desktop.store,
        &broker.url,
        &code,
        &Joining::ExistingMember(created.member),
        "Grace's desktop",
    )
    .await
    .unwrap_err();
    let WorkspaceError::Broker(ClientError::Api(api)) = &err else { panic!("an API error: {err}") };
    assert!(api.is(codes::INVALID_REQUEST), "{api:?}");
    assert!(api.message.contains("use the member id it was created for"), "{api:?}");
    assert!(!desktop.profile.is_set_up(), "a refused join leaves nothing behind");

    let code = invite(&grace, InviteFor::Device(grace_member)).await;
    let second = join_workspace(
        &desktop.profile,
        &desktop.store,
        &broker.url,
        &code,
        &Joining::ExistingMember(grace_member),
        "Grace's desktop",
    )
    .await
    .unwrap();
    assert!(!second.new_member);
    let admitted =
        admit_device(&grace.profile, &grace.store, second.device, &second.fingerprint).await;
    let admitted = admitted.expect("a plain member admits a device of their own");
    assert_eq!(admitted.shared, vec![WrappedKind::Workspace, WrappedKind::Member]);
    let received =
        receive_keys(&desktop.profile, &desktop.store, Some(&admitted.fingerprint)).await.unwrap();
    assert_eq!(received.workspace_keys, vec![KeyVersion::FIRST]);
    assert_eq!(received.member_keys, vec![KeyVersion::FIRST]);
    let mk =
        |m: &Machine| m.store.load_member_key(created.workspace, grace_member, KeyVersion::FIRST);
    assert_eq!(mk(&grace).unwrap().expose_secret(), mk(&desktop).unwrap().expose_secret());
    broker.stop().await;
}

#[tokio::test]
async fn keys_from_a_device_nobody_confirmed_are_not_stored() {
    let broker = TestBroker::start().await;
    let (ada, _) = admin_machine(&broker).await;
    let code = invite(&ada, InviteFor::NewMember(Role::Member)).await;
    let grace = Machine::new("grace");
    let joined = join_workspace(
        &grace.profile,
        &grace.store,
        &broker.url,
        &code,
        &Joining::NewMember { name: "Grace".into() },
        "laptop",
    )
    .await
    .unwrap();
    admit_device(&ada.profile, &ada.store, joined.device, &joined.fingerprint).await.unwrap();

    // Grace mistypes (or the broker shows her) another fingerprint than Ada's.
    let other = Fingerprint::of(&[7; 32], &[8; 32]);
    let err = receive_keys(&grace.profile, &grace.store, Some(&other)).await.unwrap_err();
    assert!(
        matches!(err, WorkspaceError::KeysFromUnconfirmedSender { waiting: 1, .. }),
        "Ada's key waits, from a fingerprint Grace did not type: not a wait for admission: {err}"
    );
    assert!(err.to_string().contains("Compare the fingerprint you typed"), "{err}");
    let received = receive_keys(&grace.profile, &grace.store, None).await.unwrap();
    assert!(received.workspace_keys.is_empty(), "no device is trusted yet");
    assert_eq!(grace.profile.load_config().unwrap().workspace_key_version, None);
    broker.stop().await;
}

#[tokio::test]
async fn broker_errors_arrive_as_stable_codes_without_the_request_body() {
    let broker = TestBroker::start().await;
    let (ada, _) = admin_machine(&broker).await;
    let code = invite(&ada, InviteFor::NewMember(Role::Member)).await;
    let secret_code = code.expose_secret().to_owned();

    let first = Machine::new("first");
    join_workspace(
        &first.profile,
        &first.store,
        &broker.url,
        &code,
        &Joining::NewMember { name: "A".into() },
        "a",
    )
    .await
    .unwrap();
    // The code is single-use: a second join is refused with the stable code.
    let second = Machine::new("second");
    let err = join_workspace(
        &second.profile,
        &second.store,
        &broker.url,
        &code,
        &Joining::NewMember { name: "B".into() },
        "b",
    )
    .await
    .unwrap_err();
    let WorkspaceError::Broker(ClientError::Api(api)) = &err else { panic!("an API error: {err}") };
    assert!(api.is(codes::INVITE_INVALID), "{api:?}");
    assert_eq!(api.status, 403);
    for shown in [err.to_string(), format!("{err:?}")] {
        assert!(
            !shown.contains(&secret_code),
            "the invite code never appears in an error: {shown}"
        );
    }
    // The refused device's keys were removed again, and no configuration was written.
    assert!(!second.profile.is_set_up());

    let client = broker_client(&ada.profile, &ada.store).await.unwrap();
    let err = client.device(latchkey_core::ids::DeviceId::random()).await.unwrap_err();
    assert!(err.api().is_some_and(|e| e.is(codes::NOT_FOUND)), "{err}");
    broker.stop().await;
}

#[tokio::test]
async fn flows_refuse_a_profile_already_set_up_or_a_key_store_of_another_profile() {
    let broker = TestBroker::start().await;
    let (ada, _) = admin_machine(&broker).await;
    let err =
        create_workspace(&ada.profile, &ada.store, &broker.url, "Again", "Ada", "laptop", None)
            .await
            .unwrap_err();
    assert!(matches!(err, WorkspaceError::Profile(ProfileError::AlreadySetUp { .. })), "{err}");

    let other = Machine::new("other");
    let err = workspace::own_fingerprint(&ada.profile, &other.store).await.unwrap_err();
    assert!(matches!(err, WorkspaceError::StoreProfileMismatch { .. }), "{err}");
    broker.stop().await;
}

const CREATION_TOKEN: &str = "lkct-client-canary-7Rk2Qw9Zp4Xv8Ls3Nd6Hj1Tb";

/// Creates Ada's workspace on `broker` with `token`.
async fn create_on(
    broker: &TestBroker,
    machine: &Machine,
    token: Option<&CreationToken>,
) -> Result<CreatedWorkspace, WorkspaceError> {
    create_workspace(&machine.profile, &machine.store, &broker.url, "Acme", "Ada", "laptop", token)
        .await
}

/// Whether the machine's key file holds no entry (its header alone).
fn key_file_is_empty(machine: &Machine) -> bool {
    std::fs::read(machine.profile.key_file_path()).unwrap().len() < 120
}

#[tokio::test]
async fn a_team_server_creates_the_workspace_with_its_token_and_says_which_token_is_missing_or_wrong()
 {
    let token = CreationToken::parse(CREATION_TOKEN).unwrap();
    let broker = TestBroker::start_creating(WorkspaceCreation::with_token(&token)).await;
    let ada = Machine::new("ada");

    let err = create_on(&broker, &ada, None).await.unwrap_err();
    assert!(matches!(err, WorkspaceError::CreationTokenRequired), "no token given: {err}");
    let message = err.to_string();
    assert!(
        message.contains("operator") && message.contains("give it when you create"),
        "the message names the fix: {message}"
    );
    assert!(!ada.profile.is_set_up(), "a refused creation sets nothing up");
    assert!(key_file_is_empty(&ada), "and keeps none of the keys generated for it");

    let wrong = CreationToken::parse("lkct-client-wrong-0000000000000000000000").unwrap();
    let err = create_on(&broker, &ada, Some(&wrong)).await.unwrap_err();
    assert!(matches!(err, WorkspaceError::CreationTokenInvalid), "a wrong token: {err}");
    let message = err.to_string();
    assert!(message.contains("Check it with them"), "the message names the fix: {message}");
    assert!(
        !message.contains("lkct-client") && !format!("{err:?}").contains("lkct-client"),
        "no error repeats a token: {err:?}"
    );
    assert!(!ada.profile.is_set_up() && key_file_is_empty(&ada));

    let created = create_on(&broker, &ada, Some(&token)).await.expect("the operator's token");
    assert!(ada.profile.is_set_up(), "the same profile, tried again, is set up");
    let me = broker_client(&ada.profile, &ada.store).await.unwrap().me().await.unwrap();
    assert_eq!((me.workspace, me.role), (created.workspace, Role::Admin));
    broker.stop().await;
}

#[tokio::test]
async fn a_closed_team_server_is_refused_as_closed_and_an_open_one_ignores_a_token() {
    let closed = TestBroker::start_creating(WorkspaceCreation::Closed).await;
    let ada = Machine::new("ada");
    let token = CreationToken::parse(CREATION_TOKEN).unwrap();
    let err = create_on(&closed, &ada, Some(&token)).await.unwrap_err();
    assert!(matches!(err, WorkspaceError::CreationClosed), "{err}");
    assert!(
        err.to_string().contains("invite") && err.to_string().contains("operator"),
        "points at joining with an invite instead: {err}"
    );
    assert!(!ada.profile.is_set_up() && key_file_is_empty(&ada));
    closed.stop().await;

    let open = TestBroker::start().await;
    create_on(&open, &ada, Some(&token)).await.expect("an open broker has no token to check");
    open.stop().await;
}

#[tokio::test]
async fn an_unreachable_broker_leaves_no_keys_and_no_configuration_behind() {
    // Bind and drop a listener: the port is closed when the flow runs.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap()).parse().unwrap();
    drop(listener);
    let machine = Machine::new("offline");
    let err =
        create_workspace(&machine.profile, &machine.store, &url, "Acme", "Ada", "laptop", None)
            .await
            .unwrap_err();
    assert!(matches!(err, WorkspaceError::Broker(ClientError::Transport { .. })), "{err}");
    assert!(err.to_string().contains("cannot reach the broker"), "{err}");
    assert!(!machine.profile.is_set_up());
    let bytes = std::fs::read(machine.profile.key_file_path()).unwrap();
    assert!(
        bytes.len() < 120,
        "the key file holds no entries after the rollback ({} bytes)",
        bytes.len()
    );
}

#[tokio::test]
async fn no_key_bytes_reach_any_output_error_or_the_configuration_file() {
    let broker = TestBroker::start().await;
    let (ada, created) = admin_machine(&broker).await;
    let invite_code = invite(&ada, InviteFor::NewMember(Role::Member)).await;
    let code_text = invite_code.expose_secret().to_owned();
    let grace = Machine::new("grace");
    let joined = join_workspace(
        &grace.profile,
        &grace.store,
        &broker.url,
        &invite_code,
        &Joining::NewMember { name: "Grace".into() },
        "laptop",
    )
    .await
    .unwrap();
    let admitted =
        admit_device(&ada.profile, &ada.store, joined.device, &joined.fingerprint).await.unwrap();
    let received =
        receive_keys(&grace.profile, &grace.store, Some(&admitted.fingerprint)).await.unwrap();

    // Every outcome, error and description the flows produce, in Display and Debug form.
    let wrong = Fingerprint::of(&[1; 32], &[2; 32]);
    let mismatch = admit_device(&ada.profile, &ada.store, joined.device, &wrong).await.unwrap_err();
    let no_keys = receive_keys(&grace.profile, &grace.store, Some(&wrong)).await.unwrap_err();
    let client = broker_client(&ada.profile, &ada.store).await.unwrap();
    let api = client.device(latchkey_core::ids::DeviceId::random()).await.unwrap_err();
    let wrong_passphrase = latchkey_client::keychain::EncryptedFileStore::open(
        ada.profile.key_file_path(),
        ada.profile.name(),
        latchkey_core::secret::SecretBytes::copy_from(b"a wrong passphrase"),
    )
    .unwrap_err();
    let ada_config = ada.profile.load_config().unwrap();
    let mut shown = vec![
        format!("{created:?} {joined:?} {admitted:?} {received:?}"),
        format!("{client:?} {:?} {:?} {invite_code:?}", ada.store, grace.store),
        format!("{mismatch} {mismatch:?} {no_keys} {no_keys:?} {api} {api:?}"),
        format!("{wrong_passphrase} {wrong_passphrase:?} {ada_config:?}"),
        std::fs::read_to_string(ada.profile.config_path()).unwrap(),
        std::fs::read_to_string(grace.profile.config_path()).unwrap(),
    ];
    shown
        .push(String::from_utf8_lossy(&std::fs::read(ada.profile.key_file_path()).unwrap()).into());

    let ada_keys = ada.store.load_device_keys(created.device).unwrap();
    let wk = ada.store.load_workspace_key(created.workspace, KeyVersion::FIRST).unwrap();
    let mk =
        ada.store.load_member_key(created.workspace, created.member, KeyVersion::FIRST).unwrap();
    let grace_keys = grace.store.load_device_keys(joined.device).unwrap();
    let secrets = [
        *ada_keys.signing.expose_secret().expose_secret(),
        *ada_keys.exchange.expose_secret().expose_secret(),
        *grace_keys.signing.expose_secret().expose_secret(),
        *grace_keys.exchange.expose_secret().expose_secret(),
        *wk.expose_secret().expose_secret(),
        *mk.expose_secret().expose_secret(),
    ];
    for text in &shown {
        for secret in &secrets {
            common::assert_no_key_material(text, secret);
        }
        assert!(!text.contains(&code_text), "the invite code appears in: {text}");
    }
    broker.stop().await;
}

#[tokio::test]
async fn a_broker_that_substitutes_the_senders_key_or_alters_a_wrapped_key_is_caught_on_receipt() {
    let broker = TestBroker::start().await;
    let (ada, created) = admin_machine(&broker).await;
    let code = invite(&ada, InviteFor::NewMember(Role::Member)).await;
    let grace = Machine::new("grace");
    let joined = join_workspace(
        &grace.profile,
        &grace.store,
        &broker.url,
        &code,
        &Joining::NewMember { name: "Grace".into() },
        "laptop",
    )
    .await
    .unwrap();
    admit_device(&ada.profile, &ada.store, joined.device, &joined.fingerprint).await.unwrap();
    let db = broker.database().await;

    // The broker alters the wrapped workspace key on its way to Grace: its signature fails.
    let (original,): (Vec<u8>,) = sqlx::query_as(
        "SELECT bytes FROM wrapped_keys WHERE recipient_device = ?1 AND kind = 'workspace'",
    )
    .bind(joined.device.to_string())
    .fetch_one(&db)
    .await
    .unwrap();
    let mut altered = original.clone();
    altered[100] ^= 1;
    let set_bytes = |bytes: Vec<u8>| {
        sqlx::query(
            "UPDATE wrapped_keys SET bytes = ?1 WHERE recipient_device = ?2 AND kind = 'workspace'",
        )
        .bind(bytes)
        .bind(joined.device.to_string())
    };
    set_bytes(altered).execute(&db).await.unwrap();
    let err =
        receive_keys(&grace.profile, &grace.store, Some(&created.fingerprint)).await.unwrap_err();
    assert!(matches!(err, WorkspaceError::KeyRejected { .. }), "{err}");
    set_bytes(original).execute(&db).await.unwrap();

    // The broker presents keys of its own as Ada's device: they do not have the fingerprint
    // Grace confirmed, so nothing is accepted.
    let attacker = DeviceKeys::generate().unwrap().public_keys();
    sqlx::query("UPDATE devices SET signing_key = ?1, exchange_key = ?2 WHERE id = ?3")
        .bind(&attacker.signing.to_bytes()[..])
        .bind(&attacker.exchange.to_bytes()[..])
        .bind(created.device.to_string())
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
    let err =
        receive_keys(&grace.profile, &grace.store, Some(&created.fingerprint)).await.unwrap_err();
    assert!(
        matches!(err, WorkspaceError::KeysFromUnconfirmedSender { waiting: 1.., .. }),
        "the substituted sender's fingerprint is not the one confirmed: {err}"
    );
    let missing = grace.store.load_workspace_key(created.workspace, KeyVersion::FIRST).unwrap_err();
    assert!(matches!(missing, KeychainError::Missing { .. }), "nothing was stored");
    broker.stop().await;
}

#[tokio::test]
async fn a_join_whose_member_key_upload_was_lost_finishes_it_on_the_next_receipt() {
    let broker = TestBroker::start().await;
    let (ada, created) = admin_machine(&broker).await;
    let code = invite(&ada, InviteFor::NewMember(Role::Member)).await;
    let grace = Machine::new("grace");
    let joined = join_workspace(
        &grace.profile,
        &grace.store,
        &broker.url,
        &code,
        &Joining::NewMember { name: "Grace".into() },
        "laptop",
    )
    .await
    .unwrap();
    // As a join leaves things when the upload after its profile was saved did not arrive: the
    // key store holds member key 1, the profile names none, the broker has no copy.
    let db = broker.database().await;
    sqlx::query("DELETE FROM wrapped_keys WHERE recipient_device = ?1 AND kind = 'member'")
        .bind(joined.device.to_string())
        .execute(&db)
        .await
        .unwrap();
    let mut config = grace.profile.load_config().unwrap();
    config.member_key_version = None;
    grace.profile.save_config(&config).unwrap();

    admit_device(&ada.profile, &ada.store, joined.device, &joined.fingerprint).await.unwrap();
    receive_keys(&grace.profile, &grace.store, Some(&created.fingerprint)).await.unwrap();
    assert_eq!(
        grace.profile.load_config().unwrap().member_key_version,
        Some(KeyVersion::FIRST),
        "the member key the join made is recorded, so personal credentials work"
    );
    let (copies,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM wrapped_keys WHERE recipient_device = ?1 AND kind = 'member'",
    )
    .bind(joined.device.to_string())
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(copies, 1, "the broker holds the device's wrapped copy again, for her next devices");
    broker.stop().await;
}
