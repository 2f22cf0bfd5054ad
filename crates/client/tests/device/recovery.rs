//! Recovery kits between real devices of a real broker: a member exports the keys of one device
//! and restores them on another without any device wrapping keys to it.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "the helpers in this file are test code too; a panic is the failure report"
)]

use crate::common;

use common::{Machine, TestBroker, assert_no_key_material};
use latchkey_client::api::{InviteFor, Role};
use latchkey_client::keychain::{KeySlot, KeychainError};
use latchkey_client::profile::ProfileError;
use latchkey_client::recovery::{ExportedKit, RecoveryKitError, export_kit, import_kit};
use latchkey_client::workspace::{
    CreatedWorkspace, JoinedWorkspace, Joining, WorkspaceError, broker_client, create_workspace,
    join_workspace,
};
use latchkey_core::ids::KeyVersion;
use latchkey_core::recovery::RecoveryError;
use latchkey_core::secret::{Key32, SecretBytes};

const PASSPHRASE: &[u8] = b"correct horse battery staple";

fn passphrase() -> SecretBytes {
    SecretBytes::copy_from(PASSPHRASE)
}

async fn admin(broker: &TestBroker, name: &str) -> (Machine, CreatedWorkspace) {
    let machine = Machine::new(name);
    let created = create_workspace(
        &machine.profile,
        &machine.store,
        &broker.url,
        "Acme",
        name,
        "laptop",
        None,
    )
    .await
    .expect("workspace creation succeeds");
    (machine, created)
}

/// Another device of `created`'s member, enrolled but given no keys by any device.
async fn second_device(
    broker: &TestBroker,
    owner: &Machine,
    created: &CreatedWorkspace,
) -> (Machine, JoinedWorkspace) {
    let client = broker_client(&owner.profile, &owner.store).await.unwrap();
    let code = client.create_invite(InviteFor::Device(created.member), None).await.unwrap().code;
    let machine = Machine::new("replacement");
    let joined = join_workspace(
        &machine.profile,
        &machine.store,
        &broker.url,
        &code,
        &Joining::ExistingMember(created.member),
        "replacement laptop",
    )
    .await
    .expect("the replacement device enrols");
    (machine, joined)
}

async fn export(machine: &Machine) -> ExportedKit {
    export_kit(&machine.profile, &machine.store, passphrase()).await.expect("export succeeds")
}

#[tokio::test]
async fn a_kit_restores_a_members_keys_on_a_new_device_and_holds_them_only_encrypted() {
    let broker = TestBroker::start().await;
    let (ada, created) = admin(&broker, "ada").await;
    let kit = export(&ada).await;
    assert_eq!(kit.workspace_keys, vec![KeyVersion::FIRST], "the workspace key is in the kit");
    assert_eq!(kit.member_keys, vec![KeyVersion::FIRST], "the member key is in the kit");
    let wk = ada.store.load_workspace_key(created.workspace, KeyVersion::FIRST).unwrap();
    let mk =
        ada.store.load_member_key(created.workspace, created.member, KeyVersion::FIRST).unwrap();
    assert_no_key_material(&kit.text, wk.expose_secret().expose_secret());
    assert_no_key_material(&kit.text, mk.expose_secret().expose_secret());

    let (replacement, joined) = second_device(&broker, &ada, &created).await;
    assert_eq!(replacement.profile.load_config().unwrap().workspace_key_version, None);
    let imported = import_kit(&replacement.profile, &replacement.store, &kit.text, passphrase())
        .await
        .expect("the member's own kit imports into their enrolled device");
    assert_eq!(imported.workspace_keys, vec![KeyVersion::FIRST]);
    assert_eq!(imported.member_keys, vec![KeyVersion::FIRST]);
    assert_eq!(imported.already_present, 0);

    let restored_wk =
        replacement.store.load_workspace_key(joined.workspace, KeyVersion::FIRST).unwrap();
    let restored_mk = replacement
        .store
        .load_member_key(joined.workspace, joined.member, KeyVersion::FIRST)
        .unwrap();
    assert_eq!(restored_wk.expose_secret(), wk.expose_secret(), "the same workspace key");
    assert_eq!(restored_mk.expose_secret(), mk.expose_secret(), "the same member key");
    let config = replacement.profile.load_config().unwrap();
    assert_eq!(config.workspace_key_version, Some(KeyVersion::FIRST), "config records the keys");
    assert_eq!(config.member_key_version, Some(KeyVersion::FIRST));

    // Importing again writes nothing and says so.
    let again = import_kit(&replacement.profile, &replacement.store, &kit.text, passphrase())
        .await
        .unwrap();
    assert_eq!(
        (again.workspace_keys.len(), again.member_keys.len(), again.already_present),
        (0, 0, 2)
    );
    broker.stop().await;
}

#[tokio::test]
async fn a_wrong_passphrase_or_an_altered_kit_imports_nothing() {
    let broker = TestBroker::start().await;
    let (ada, created) = admin(&broker, "ada").await;
    let kit = export(&ada).await;
    let (replacement, _) = second_device(&broker, &ada, &created).await;

    let wrong = import_kit(
        &replacement.profile,
        &replacement.store,
        &kit.text,
        SecretBytes::copy_from(b"not the passphrase at all"),
    )
    .await
    .expect_err("a wrong passphrase must not open the kit");
    assert!(
        matches!(wrong, RecoveryKitError::Kit(RecoveryError::WrongPassphraseOrAltered)),
        "got {wrong:?}"
    );

    let newer = kit.text.replace("LATCHKEY RECOVERY KIT v1", "LATCHKEY RECOVERY KIT v9");
    let error = import_kit(&replacement.profile, &replacement.store, &newer, passphrase())
        .await
        .expect_err("a kit of an unknown format version is refused");
    assert!(matches!(error, RecoveryKitError::Kit(RecoveryError::UnsupportedVersion)), "{error:?}");

    // One base64 character of the ciphertext changed (the last line ends in the tag).
    let mut lines: Vec<String> = kit.text.lines().map(str::to_owned).collect();
    let last = lines.iter().rposition(|l| l.len() > 8 && !l.starts_with('#')).unwrap();
    let mut chars: Vec<char> = lines[last].chars().collect();
    chars[4] = if chars[4] == 'A' { 'B' } else { 'A' };
    lines[last] = chars.into_iter().collect();
    let altered = lines.join("\n");
    let error = import_kit(&replacement.profile, &replacement.store, &altered, passphrase())
        .await
        .expect_err("an altered kit must not open");
    assert!(
        matches!(error, RecoveryKitError::Kit(RecoveryError::WrongPassphraseOrAltered)),
        "got {error:?}"
    );

    let missing = replacement.store.load_workspace_key(created.workspace, KeyVersion::FIRST);
    assert!(
        matches!(missing, Err(KeychainError::Missing { .. })),
        "refused imports leave the store as it was"
    );
    assert_eq!(replacement.profile.load_config().unwrap().workspace_key_version, None);
    broker.stop().await;
}

#[tokio::test]
async fn a_kit_of_another_workspace_or_member_is_refused() {
    let broker = TestBroker::start().await;
    let (ada, created) = admin(&broker, "ada").await;
    let (bob, _) = admin(&broker, "bob").await;
    let (replacement, _) = second_device(&broker, &ada, &created).await;

    let bobs_kit = export(&bob).await;
    let error = import_kit(&replacement.profile, &replacement.store, &bobs_kit.text, passphrase())
        .await
        .expect_err("another workspace's kit must be refused");
    assert!(matches!(error, RecoveryKitError::OtherWorkspace { .. }), "got {error:?}");
    assert!(error.to_string().contains("import it into a profile of that workspace"), "{error}");

    // Grace, another member of Ada's workspace, holds her own member key only.
    let client = broker_client(&ada.profile, &ada.store).await.unwrap();
    let code = client.create_invite(InviteFor::NewMember(Role::Member), None).await.unwrap().code;
    let grace = Machine::new("grace");
    join_workspace(
        &grace.profile,
        &grace.store,
        &broker.url,
        &code,
        &Joining::NewMember { name: "Grace".into() },
        "Grace's laptop",
    )
    .await
    .unwrap();
    let graces_kit = export(&grace).await;
    assert!(graces_kit.workspace_keys.is_empty(), "Grace was not given the workspace key yet");
    let error =
        import_kit(&replacement.profile, &replacement.store, &graces_kit.text, passphrase())
            .await
            .expect_err("another member's key must be refused");
    assert!(matches!(error, RecoveryKitError::OtherMember), "got {error:?}");
    broker.stop().await;
}

#[tokio::test]
async fn a_kit_that_conflicts_with_a_stored_key_changes_nothing() {
    let broker = TestBroker::start().await;
    let (ada, created) = admin(&broker, "ada").await;
    let kit = export(&ada).await;
    let (replacement, joined) = second_device(&broker, &ada, &created).await;

    // The replacement already holds some other member key v1 (a tampered or mixed-up store).
    let member_slot = KeySlot::Member {
        workspace: joined.workspace,
        member: joined.member,
        version: KeyVersion::FIRST,
    };
    let other = Key32::generate().unwrap();
    replacement.store.save_key(&member_slot, &other).unwrap();

    let error = import_kit(&replacement.profile, &replacement.store, &kit.text, passphrase())
        .await
        .expect_err("a differing stored key must refuse the import");
    assert!(
        matches!(error, RecoveryKitError::Conflict { what: "member key", version } if version == KeyVersion::FIRST),
        "got {error:?}"
    );
    let kept = replacement.store.load_key(&member_slot).unwrap();
    assert_eq!(kept.expose_secret(), other.expose_secret(), "the stored key is never replaced");
    assert!(
        matches!(
            replacement.store.load_workspace_key(joined.workspace, KeyVersion::FIRST),
            Err(KeychainError::Missing { .. })
        ),
        "the workspace key, which did not conflict, was not written either"
    );
    broker.stop().await;
}

#[tokio::test]
async fn export_needs_a_long_passphrase_keys_and_an_enrolled_profile() {
    let broker = TestBroker::start().await;
    let (ada, created) = admin(&broker, "ada").await;
    let short = export_kit(&ada.profile, &ada.store, SecretBytes::copy_from(b"too short"))
        .await
        .expect_err("a short passphrase must be refused");
    assert!(matches!(short, RecoveryKitError::Kit(RecoveryError::PassphraseTooShort)), "{short:?}");

    let (replacement, _) = second_device(&broker, &ada, &created).await;
    let empty = export_kit(&replacement.profile, &replacement.store, passphrase())
        .await
        .expect_err("a device without keys has nothing to export");
    assert!(matches!(empty, RecoveryKitError::NothingToExport), "got {empty:?}");

    let fresh = Machine::new("fresh");
    let kit = export(&ada).await;
    let error = import_kit(&fresh.profile, &fresh.store, &kit.text, passphrase())
        .await
        .expect_err("a profile that never enrolled cannot take a kit");
    assert!(
        matches!(
            error,
            RecoveryKitError::Workspace(WorkspaceError::Profile(ProfileError::NotSetUp { .. }))
        ),
        "got {error:?}"
    );
    broker.stop().await;
}
