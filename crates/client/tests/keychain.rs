//! The OS keychain for real, no mock: the Secret Service of a gnome-keyring daemon on Linux,
//! the Credential Manager on Windows, the login keychain on macOS.
//!
//! These tests write throwaway entries (profiles `test-<random>`, deleted again) into the
//! keychain of the user running them, so they run only when `LATCHKEY_TEST_KEYRING=1`; otherwise
//! each prints "skipped: no OS keychain session" and returns. On Linux
//! `tests/stories/keychain.sh` provides a private D-Bus session with a fresh gnome-keyring;
//! `scripts/lib/other-systems.sh` runs the Windows build of this file under Wine.
//!
//! Situations only the Secret Service has (no session bus, a locked collection, a daemon that
//! starts late) are in `secret_service.rs`.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "the helpers in this file are test code too; a panic is the failure report"
)]

mod common;

use latchkey_client::keychain::{KeySlot, KeyStore, KeychainError, OsKeychainStore};
use latchkey_client::profile::ProfileName;
use latchkey_core::ids::{DeviceId, KeyVersion, MemberId, WorkspaceId};
use latchkey_core::keys::{DeviceKeys, MemberKey, WorkspaceKey};
use latchkey_core::secret::Key32;

fn open(profile: &ProfileName) -> OsKeychainStore {
    OsKeychainStore::open(profile).expect("the OS keychain of this session answers")
}

#[test]
fn each_key_type_round_trips_through_the_os_keychain() {
    if !common::os_keychain_session() {
        return;
    }
    let profile = common::fresh_profile();
    let store = open(&profile);
    let device = DeviceId::random();
    let keys = DeviceKeys::generate().unwrap();
    store.save_device_keys(device, &keys).unwrap();
    let workspace = WorkspaceId::random();
    let member = MemberId::random();
    let wk1 = WorkspaceKey::generate(workspace, KeyVersion::FIRST).unwrap();
    let wk2 = WorkspaceKey::generate(workspace, KeyVersion::new(2).unwrap()).unwrap();
    let mk = MemberKey::generate(workspace, member, KeyVersion::FIRST).unwrap();
    for wk in [&wk1, &wk2] {
        store.save_workspace_key(wk).unwrap();
    }
    store.save_member_key(&mk).unwrap();

    // A second connection (as another process would have) reads them back.
    let again = open(&profile);
    let loaded = again.load_device_keys(device).unwrap();
    assert_eq!(loaded.public_keys(), keys.public_keys(), "both device keys come back intact");
    assert_eq!(
        again.load_workspace_key(workspace, KeyVersion::FIRST).unwrap().expose_secret(),
        wk1.expose_secret()
    );
    assert_eq!(
        again.load_workspace_key(workspace, KeyVersion::new(2).unwrap()).unwrap().expose_secret(),
        wk2.expose_secret(),
        "each key version has its own entry"
    );
    assert_eq!(
        again.load_member_key(workspace, member, KeyVersion::FIRST).unwrap().expose_secret(),
        mk.expose_secret()
    );

    // Saving again replaces; deleting removes; deleting twice is fine.
    let replacement = WorkspaceKey::generate(workspace, KeyVersion::FIRST).unwrap();
    store.save_workspace_key(&replacement).unwrap();
    assert_eq!(
        again.load_workspace_key(workspace, KeyVersion::FIRST).unwrap().expose_secret(),
        replacement.expose_secret()
    );
    store.delete_device_keys(device).unwrap();
    store.delete_device_keys(device).unwrap();
    assert!(matches!(again.load_device_keys(device), Err(KeychainError::Missing { .. })));
    for slot in [
        KeySlot::Workspace { workspace, version: KeyVersion::FIRST },
        KeySlot::Workspace { workspace, version: KeyVersion::new(2).unwrap() },
        KeySlot::Member { workspace, member, version: KeyVersion::FIRST },
    ] {
        store.delete_entry(&slot).unwrap();
    }
}

#[test]
fn two_profiles_never_see_each_others_keys() {
    if !common::os_keychain_session() {
        return;
    }
    let (dev, test) = (common::fresh_profile(), common::fresh_profile());
    let (dev_store, test_store) = (open(&dev), open(&test));
    let slot = KeySlot::Workspace { workspace: WorkspaceId::random(), version: KeyVersion::FIRST };
    let dev_key = Key32::from_bytes([0x11; 32]);
    dev_store.save_key(&slot, &dev_key).unwrap();

    let err = test_store.load_key(&slot).unwrap_err();
    assert!(
        matches!(err, KeychainError::Missing { .. }),
        "the same entry name, another profile: {err}"
    );

    let test_key = Key32::from_bytes([0x22; 32]);
    test_store.save_key(&slot, &test_key).unwrap();
    assert_eq!(dev_store.load_key(&slot).unwrap(), dev_key, "writing one profile leaves the other");
    assert_eq!(test_store.load_key(&slot).unwrap(), test_key);
    test_store.delete_entry(&slot).unwrap();
    assert_eq!(dev_store.load_key(&slot).unwrap(), dev_key, "deleting in one leaves the other");
    dev_store.delete_entry(&slot).unwrap();
}

#[test]
fn a_missing_entry_says_what_is_missing_and_what_to_do() {
    if !common::os_keychain_session() {
        return;
    }
    let profile = common::fresh_profile();
    let store = open(&profile);
    let device = DeviceId::random();
    let err = store.load_device_keys(device).unwrap_err();
    let KeychainError::Missing { what, entry, .. } = &err else { panic!("missing: {err}") };
    assert_eq!(*what, "device signing key");
    assert_eq!(*entry, format!("device/{device}/signing-key"));
    let message = err.to_string();
    assert!(message.contains(&profile.to_string()), "{message}");
    assert!(message.contains("create or join a workspace"), "{message}");
}

#[test]
fn a_corrupt_entry_is_reported_and_never_used() {
    if !common::os_keychain_session() {
        return;
    }
    let store = open(&common::fresh_profile());
    let slot = KeySlot::DeviceSigning(DeviceId::random());
    store.write_entry(&slot, b"not a key").unwrap();
    let err = store.load_key(&slot).unwrap_err();
    assert!(matches!(err, KeychainError::Corrupt { reason: "wrong length", .. }), "{err}");
    assert!(err.to_string().contains("delete it and set this device up again"), "{err}");

    // A valid entry of another kind copied under this name is corrupt too.
    let exchange = KeySlot::DeviceExchange(DeviceId::random());
    store.save_key(&exchange, &Key32::from_bytes([5; 32])).unwrap();
    let copied = store.read_entry(&exchange).unwrap();
    store.write_entry(&slot, &copied).unwrap();
    let err = store.load_key(&slot).unwrap_err();
    assert!(matches!(err, KeychainError::Corrupt { .. }), "{err}");
    store.delete_entry(&slot).unwrap();
    store.delete_entry(&exchange).unwrap();
}

#[test]
fn key_bytes_never_appear_in_errors_or_debug_output() {
    if !common::os_keychain_session() {
        return;
    }
    let profile = common::fresh_profile();
    let store = open(&profile);
    let canary: [u8; 32] = *b"CANARY-key-bytes-never-shown-123";
    let key = Key32::from_bytes(canary);
    let slot = KeySlot::Workspace { workspace: WorkspaceId::random(), version: KeyVersion::FIRST };
    store.save_key(&slot, &key).unwrap();
    let loaded = store.load_key(&slot).unwrap();

    // A corrupt entry made of the canary bytes: its error must not repeat them.
    let corrupt_slot = KeySlot::DeviceSigning(DeviceId::random());
    store.write_entry(&corrupt_slot, &canary[..31]).unwrap();
    let corrupt = store.load_key(&corrupt_slot).unwrap_err();
    let missing = store.load_key(&KeySlot::DeviceExchange(DeviceId::random())).unwrap_err();
    let wk = WorkspaceKey::from_parts(WorkspaceId::random(), KeyVersion::FIRST, key.duplicate());

    let shown = [
        format!("{store:?}"),
        format!("{loaded:?}"),
        format!("{wk:?}"),
        format!("{corrupt} {corrupt:?}"),
        format!("{missing} {missing:?}"),
    ];
    for text in &shown {
        common::assert_no_key_material(text, &canary);
    }
    store.delete_entry(&slot).unwrap();
    store.delete_entry(&corrupt_slot).unwrap();
}

#[tokio::test]
async fn the_workspace_flows_keep_their_keys_in_the_os_keychain() {
    use latchkey_client::api::{InviteFor, Role};
    use latchkey_client::keychain::SharedKeyStore;
    use latchkey_client::profile::{KeyStoreKind, Profile};
    use latchkey_client::workspace::{self, Joining};

    if !common::os_keychain_session() {
        return;
    }
    let broker = common::TestBroker::start().await;
    // Two devices: two profiles (so two keychain namespaces) in two configuration directories.
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ada = Profile::new(common::fresh_profile(), dirs.0.path());
    let grace = Profile::new(common::fresh_profile(), dirs.1.path());
    let ada_store: SharedKeyStore = std::sync::Arc::new(open(ada.name()));
    let grace_store: SharedKeyStore = std::sync::Arc::new(open(grace.name()));

    let created =
        workspace::create_workspace(&ada, &ada_store, &broker.url, "Acme", "Ada", "laptop", None)
            .await
            .unwrap();
    assert_eq!(ada.load_config().unwrap().key_store, KeyStoreKind::OsKeychain);
    let client = workspace::broker_client(&ada, &ada_store).await.unwrap();
    let code = client.create_invite(InviteFor::NewMember(Role::Member), None).await.unwrap().code;
    let joined = workspace::join_workspace(
        &grace,
        &grace_store,
        &broker.url,
        &code,
        &Joining::NewMember { name: "Grace".into() },
        "laptop",
    )
    .await
    .unwrap();
    let admitted = workspace::admit_device(&ada, &ada_store, joined.device, &joined.fingerprint)
        .await
        .unwrap();
    workspace::receive_keys(&grace, &grace_store, Some(&admitted.fingerprint)).await.unwrap();

    // A fresh connection to the keychain, as the app would have after a restart, opens the key.
    let wk = open(grace.name()).load_workspace_key(created.workspace, KeyVersion::FIRST).unwrap();
    let original =
        open(ada.name()).load_workspace_key(created.workspace, KeyVersion::FIRST).unwrap();
    assert_eq!(wk.expose_secret(), original.expose_secret());
    broker.stop().await;
}
