//! The OS keychain for real: the Secret Service of a gnome-keyring daemon, no mock.
//!
//! These tests need a D-Bus session with an unlocked gnome-keyring and run only when
//! `LATCHKEY_TEST_KEYRING=1`; otherwise each prints "skipped: no Secret Service session" and
//! returns. `tests/stories/keychain.sh` provides the session (fresh HOME and XDG_RUNTIME_DIR).
//!
//! Situations that need another environment (no session bus, a locked keychain, a bus without a
//! Secret Service, a daemon that starts late) re-run this test binary as a child process with
//! `LATCHKEY_KEYCHAIN_CHILD=<situation>`, in a D-Bus session of its own where needed, so they
//! never disturb the shared keyring the other tests use.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "the helpers in this file are test code too; a panic is the failure report"
)]
#![cfg(all(unix, not(any(target_os = "macos", target_os = "ios", target_os = "android"))))]

mod common;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use latchkey_client::keychain::{
    ConnectPatience, KeySlot, KeyStore, KeychainError, SecretServiceStore,
};
use latchkey_client::profile::ProfileName;
use latchkey_core::ids::{DeviceId, KeyVersion, MemberId, WorkspaceId};
use latchkey_core::keys::{DeviceKeys, MemberKey, WorkspaceKey};
use latchkey_core::secret::Key32;

const CHILD: &str = "LATCHKEY_KEYCHAIN_CHILD";

/// Whether a Secret Service session is available; prints why not otherwise.
fn secret_service_session() -> bool {
    if std::env::var("LATCHKEY_TEST_KEYRING").as_deref() == Ok("1") {
        return true;
    }
    // Straight to stderr, past the test harness's capture, so the skip is visible.
    let _ = writeln!(
        std::io::stderr(),
        "skipped: no Secret Service session (run tests/stories/keychain.sh, or set \
         LATCHKEY_TEST_KEYRING=1 inside a D-Bus session with an unlocked gnome-keyring)"
    );
    false
}

/// A profile no earlier or concurrent run uses.
fn fresh_profile() -> ProfileName {
    let suffix: [u8; 6] = latchkey_core::random::array().unwrap();
    let hex: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    ProfileName::named(&format!("test-{hex}")).unwrap()
}

fn open(profile: &ProfileName) -> SecretServiceStore {
    SecretServiceStore::open(profile).expect("the Secret Service of this session answers")
}

#[test]
fn each_key_type_round_trips_through_the_secret_service() {
    if !secret_service_session() {
        return;
    }
    let profile = fresh_profile();
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
    if !secret_service_session() {
        return;
    }
    let (dev, test) = (fresh_profile(), fresh_profile());
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
    if !secret_service_session() {
        return;
    }
    let profile = fresh_profile();
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
    if !secret_service_session() {
        return;
    }
    let store = open(&fresh_profile());
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
    if !secret_service_session() {
        return;
    }
    let profile = fresh_profile();
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

    if !secret_service_session() {
        return;
    }
    let broker = common::TestBroker::start().await;
    // Two devices: two profiles (so two keychain namespaces) in two configuration directories.
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ada = Profile::new(fresh_profile(), dirs.0.path());
    let grace = Profile::new(fresh_profile(), dirs.1.path());
    let ada_store: SharedKeyStore = std::sync::Arc::new(open(ada.name()));
    let grace_store: SharedKeyStore = std::sync::Arc::new(open(grace.name()));

    let created =
        workspace::create_workspace(&ada, &ada_store, &broker.url, "Acme", "Ada", "laptop")
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

// ---------------------------------------------------------------------------------------------
// Situations in a child process
// ---------------------------------------------------------------------------------------------

#[test]
fn no_session_bus_gives_the_no_keychain_error() {
    if std::env::var(CHILD).as_deref() == Ok("no-bus") {
        let started = Instant::now();
        let err = SecretServiceStore::open(&fresh_profile()).unwrap_err();
        assert!(matches!(err, KeychainError::NoKeychain), "{err:?}");
        assert_eq!(
            err.to_string(),
            "no OS keychain is available: on Linux start a Secret Service such as gnome-keyring \
             in your session, or choose the encrypted-file key store with --key-store file"
        );
        assert!(started.elapsed() < Duration::from_secs(1), "no bus is final: no retries");
        return;
    }
    if !secret_service_session() {
        return;
    }
    let runtime = tempfile::tempdir().unwrap();
    let mut child = child_command("no_session_bus_gives_the_no_keychain_error", "no-bus");
    child.env_remove("DBUS_SESSION_BUS_ADDRESS").env("XDG_RUNTIME_DIR", runtime.path());
    run_child(child);
}

#[test]
fn a_locked_keychain_gives_the_unlock_error() {
    if std::env::var(CHILD).as_deref() == Ok("locked") {
        start_gnome_keyring();
        let store = open(&fresh_profile());
        let slot = KeySlot::DeviceSigning(DeviceId::random());
        store.save_key(&slot, &Key32::from_bytes([1; 32])).unwrap();
        lock_login_keyring();

        let err = store.load_key(&slot).unwrap_err();
        assert!(matches!(err, KeychainError::Locked), "reading a locked keychain: {err:?}");
        assert!(err.to_string().contains("unlock your keychain"), "{err}");
        let err = store.save_key(&slot, &Key32::from_bytes([2; 32])).unwrap_err();
        assert!(matches!(err, KeychainError::Locked), "writing a locked keychain: {err:?}");
        return;
    }
    if !secret_service_session() {
        return;
    }
    run_in_own_session("a_locked_keychain_gives_the_unlock_error", "locked", None);
}

#[test]
fn locking_the_default_collection_stops_every_read_until_it_is_unlocked() {
    use latchkey_client::keychain::{
        default_collection_locked, lock_default_collection, unlock_default_collection,
    };
    if std::env::var(CHILD).as_deref() == Ok("lock-api") {
        start_gnome_keyring();
        let profile = fresh_profile();
        let store = open(&profile);
        let slot = KeySlot::DeviceSigning(DeviceId::random());
        store.save_key(&slot, &Key32::from_bytes([3; 32])).unwrap();
        assert!(!default_collection_locked().unwrap(), "the keyring starts unlocked");

        lock_default_collection().unwrap();
        assert!(default_collection_locked().unwrap(), "Lock locks the collection the keys are in");
        let err = store.load_key(&slot).unwrap_err();
        assert!(matches!(err, KeychainError::Locked), "a locked keychain hides the key: {err:?}");

        // The person unlocks it with their password (here: the daemon restarted with it, as at
        // login, since a test has no one to answer the unlock prompt); unlocking an unlocked
        // collection then asks nothing and succeeds.
        restart_gnome_keyring_unlocked();
        assert!(!default_collection_locked().unwrap(), "the password unlocked it");
        unlock_default_collection().unwrap();
        // A new connection: the restarted daemon does not know the old one's session.
        let store = open(&profile);
        assert_eq!(
            store.load_key(&slot).unwrap().expose_secret(),
            &[3; 32],
            "the key is back, unchanged"
        );
        return;
    }
    if !secret_service_session() {
        return;
    }
    run_in_own_session(
        "locking_the_default_collection_stops_every_read_until_it_is_unlocked",
        "lock-api",
        None,
    );
}

#[test]
fn a_secret_service_that_registers_late_is_waited_for() {
    if std::env::var(CHILD).as_deref() == Ok("late") {
        // No D-Bus activation on this bus: nothing answers until the daemon has started.
        let starter = std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            start_gnome_keyring();
        });
        let started = Instant::now();
        let store = SecretServiceStore::open(&fresh_profile())
            .expect("the store waits for the daemon to claim its name");
        let waited = started.elapsed();
        starter.join().unwrap();
        assert!(waited >= Duration::from_millis(250), "it had to wait ({waited:?})");
        let slot = KeySlot::DeviceExchange(DeviceId::random());
        store.save_key(&slot, &Key32::from_bytes([3; 32])).unwrap();
        assert_eq!(store.load_key(&slot).unwrap(), Key32::from_bytes([3; 32]));
        return;
    }
    if !secret_service_session() {
        return;
    }
    let config = bus_without_activation();
    run_in_own_session(
        "a_secret_service_that_registers_late_is_waited_for",
        "late",
        Some(&config.1),
    );
}

#[test]
fn a_bus_without_a_secret_service_gives_the_no_keychain_error_after_a_bounded_wait() {
    if std::env::var(CHILD).as_deref() == Ok("absent") {
        let started = Instant::now();
        let err = SecretServiceStore::open(&fresh_profile()).unwrap_err();
        let waited = started.elapsed();
        assert!(matches!(err, KeychainError::NoKeychain), "{err:?}");
        let patience: Duration = ConnectPatience::default().pauses.iter().sum();
        assert!(waited >= patience, "it waited the whole schedule ({waited:?})");
        assert!(waited < patience + Duration::from_secs(3), "and not much longer ({waited:?})");

        let started = Instant::now();
        let err = SecretServiceStore::open_with_patience(&fresh_profile(), ConnectPatience::none())
            .unwrap_err();
        assert!(matches!(err, KeychainError::NoKeychain), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(1));
        return;
    }
    if !secret_service_session() {
        return;
    }
    let config = bus_without_activation();
    run_in_own_session(
        "a_bus_without_a_secret_service_gives_the_no_keychain_error_after_a_bounded_wait",
        "absent",
        Some(&config.1),
    );
}

/// This test binary, running only `test` in situation `mode`.
fn child_command(test: &str, mode: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args([test, "--exact", "--nocapture", "--test-threads=1"]).env(CHILD, mode);
    command
}

/// Runs `test` as a child in a new D-Bus session (own HOME and XDG_RUNTIME_DIR, so its keyring
/// is new too), optionally with a bus configuration of its own.
fn run_in_own_session(test: &str, mode: &str, bus_config: Option<&Path>) {
    let home = tempfile::tempdir().unwrap();
    let runtime = tempfile::tempdir().unwrap();
    let inner = child_command(test, mode);
    let mut command = Command::new("dbus-run-session");
    if let Some(config) = bus_config {
        command.arg(format!("--config-file={}", config.display()));
    }
    command
        .arg("--")
        .arg(inner.get_program())
        .args(inner.get_args())
        .env(CHILD, mode)
        .env("HOME", home.path())
        .env("XDG_RUNTIME_DIR", runtime.path());
    run_child(command);
}

/// Runs a child to completion (at most two minutes) and fails with its output if it failed.
fn run_child(mut command: Command) {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the child failed ({}):\n{stdout}\n{stderr}", output.status);
    assert!(stdout.contains("1 passed"), "the child ran its test:\n{stdout}\n{stderr}");
}

/// Starts gnome-keyring's secrets component in the current session with a throwaway password,
/// as tests/stories/keychain.sh does (the login keyring is created and unlocked).
fn start_gnome_keyring() {
    let mut daemon = Command::new("gnome-keyring-daemon")
        .args(["--unlock", "--components=secrets"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("gnome-keyring-daemon is installed");
    daemon.stdin.take().unwrap().write_all(b"throwaway").unwrap();
    assert!(daemon.wait().unwrap().success(), "gnome-keyring-daemon started");
}

/// Replaces the running gnome-keyring with one that unlocks the login keyring with its password.
fn restart_gnome_keyring_unlocked() {
    let mut daemon = Command::new("gnome-keyring-daemon")
        .args(["--replace", "--unlock", "--components=secrets"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("gnome-keyring-daemon is installed");
    daemon.stdin.take().unwrap().write_all(b"throwaway").unwrap();
    assert!(daemon.wait().unwrap().success(), "gnome-keyring-daemon restarted");
    std::thread::sleep(std::time::Duration::from_millis(300));
}

/// Locks the login keyring through the Secret Service's own `Lock` method.
fn lock_login_keyring() {
    let status = Command::new("dbus-send")
        .args([
            "--session",
            "--print-reply",
            "--dest=org.freedesktop.secrets",
            "/org/freedesktop/secrets",
            "org.freedesktop.Secret.Service.Lock",
            "array:objpath:/org/freedesktop/secrets/collection/login",
        ])
        .stdout(Stdio::null())
        .status()
        .expect("dbus-send is installed");
    assert!(status.success(), "the login keyring was locked");
}

/// A session bus configuration without service directories: no D-Bus activation, so a Secret
/// Service exists only once a daemon claims the name. Returns the directory and the file.
fn bus_without_activation() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("session.conf");
    std::fs::write(
        &path,
        format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:dir={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
            dir.path().display()
        ),
    )
    .unwrap();
    (dir, path)
}
