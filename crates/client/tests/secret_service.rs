//! Situations only the Linux Secret Service has, each in a child process: no session bus, a
//! locked keychain, the Secret Service's own lock and unlock, a daemon that registers late, a bus
//! without a Secret Service. The child re-runs this test binary with
//! `LATCHKEY_KEYCHAIN_CHILD=<situation>`, in a D-Bus session of its own where needed, so it never
//! disturbs the shared keyring the other tests use.
//!
//! Like `keychain.rs`, these run only when `LATCHKEY_TEST_KEYRING=1` (`tests/stories/keychain.sh`).

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
    ConnectPatience, KeySlot, KeyStore as _, KeychainError, SecretServiceStore,
};
use latchkey_client::profile::ProfileName;
use latchkey_core::ids::DeviceId;
use latchkey_core::secret::Key32;

const CHILD: &str = "LATCHKEY_KEYCHAIN_CHILD";

fn open(profile: &ProfileName) -> SecretServiceStore {
    SecretServiceStore::open(profile).expect("the Secret Service of this session answers")
}

#[test]
fn no_session_bus_gives_the_no_keychain_error() {
    if std::env::var(CHILD).as_deref() == Ok("no-bus") {
        let started = Instant::now();
        let err = SecretServiceStore::open(&common::fresh_profile()).unwrap_err();
        assert!(matches!(err, KeychainError::NoKeychain), "{err:?}");
        assert_eq!(
            err.to_string(),
            "no OS keychain is available: on Linux start a Secret Service such as gnome-keyring \
             in your session, or choose the encrypted-file key store with --key-store file"
        );
        assert!(started.elapsed() < Duration::from_secs(1), "no bus is final: no retries");
        return;
    }
    if !common::os_keychain_session() {
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
        let store = open(&common::fresh_profile());
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
    if !common::os_keychain_session() {
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
        let profile = common::fresh_profile();
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
    if !common::os_keychain_session() {
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
        let store = SecretServiceStore::open(&common::fresh_profile())
            .expect("the store waits for the daemon to claim its name");
        let waited = started.elapsed();
        starter.join().unwrap();
        assert!(waited >= Duration::from_millis(250), "it had to wait ({waited:?})");
        let slot = KeySlot::DeviceExchange(DeviceId::random());
        store.save_key(&slot, &Key32::from_bytes([3; 32])).unwrap();
        assert_eq!(store.load_key(&slot).unwrap(), Key32::from_bytes([3; 32]));
        return;
    }
    if !common::os_keychain_session() {
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
        let err = SecretServiceStore::open(&common::fresh_profile()).unwrap_err();
        let waited = started.elapsed();
        assert!(matches!(err, KeychainError::NoKeychain), "{err:?}");
        let patience: Duration = ConnectPatience::default().pauses.iter().sum();
        assert!(waited >= patience, "it waited the whole schedule ({waited:?})");
        assert!(waited < patience + Duration::from_secs(3), "and not much longer ({waited:?})");

        let started = Instant::now();
        let err = SecretServiceStore::open_with_patience(
            &common::fresh_profile(),
            ConnectPatience::none(),
        )
        .unwrap_err();
        assert!(matches!(err, KeychainError::NoKeychain), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(1));
        return;
    }
    if !common::os_keychain_session() {
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
