//! Key stores: where a device keeps its own keys and the workspace and member keys it holds.
//!
//! Two kinds of store implement [`KeyStore`]:
//!
//! - [`OsKeychainStore`]: the OS keychain. The default, and the only store used unless another
//!   is chosen. On Linux and the BSDs it is `SecretServiceStore` (the freedesktop Secret
//!   Service, e.g. gnome-keyring or KWallet); on macOS (the login keychain) and Windows (the
//!   Credential Manager) it is `NativeKeychainStore`, over keyring-core's native stores (tested
//!   under Wine for Windows, type-checked only for macOS: docs/architecture.md, "Key stores").
//! - [`EncryptedFileStore`]: a file encrypted under a passphrase (Argon2id + AES-256-GCM), for
//!   headless servers without a keychain. Used only when chosen explicitly (`--key-store file`);
//!   nothing ever falls back to it.
//!
//! # Entries
//!
//! Every store is namespaced by [`ProfileName`] (keychain service `latchkey`, `latchkey.dev`,
//! ...), so profiles never see each other's keys. Within a profile, one entry per key:
//!
//! ```text
//! device/<device id>/signing-key                           Ed25519 seed
//! device/<device id>/exchange-key                          X25519 secret
//! workspace/<workspace id>/workspace-key/v<n>              workspace key version n
//! workspace/<workspace id>/member/<member id>/member-key/v<n>
//! ```
//!
//! An entry's value is 34 bytes: format version `1`, the slot kind (1 signing, 2 exchange,
//! 3 workspace key, 4 member key), then the 32 key bytes. The kind byte catches an entry copied
//! under another name; anything else is reported as [`KeychainError::Corrupt`], never guessed at.
//!
//! # Errors
//!
//! [`KeychainError`] says what to do next: start a keychain, unlock it, set the device up, or
//! restore a key. Errors never carry key bytes, and no store falls back to another on failure.
//!
//! All store methods block (a D-Bus round trip; a file read and write). From async code run them
//! on a blocking thread, as [`crate::workspace`] does.

use core::fmt;
use std::path::PathBuf;

use latchkey_core::ids::{DeviceId, KeyVersion, MemberId, WorkspaceId};
use latchkey_core::keys::{
    DeviceKeys, DeviceSigningKey, ExchangeSecretKey, MemberKey, WorkspaceKey,
};
use latchkey_core::secret::Key32;
use zeroize::Zeroizing;

use crate::profile::{KeyStoreKind, ProfileName};

mod file;
#[cfg(any(target_os = "macos", target_os = "windows"))]
mod native;
#[cfg(all(unix, not(any(target_os = "macos", target_os = "ios", target_os = "android"))))]
mod secret_service;

pub use file::{EncryptedFileStore, MIN_PASSPHRASE_CHARS};
#[cfg(any(target_os = "macos", target_os = "windows"))]
pub use native::{
    NativeKeychainStore, default_collection_locked, lock_default_collection,
    unlock_default_collection,
};
#[cfg(all(unix, not(any(target_os = "macos", target_os = "ios", target_os = "android"))))]
pub use secret_service::{
    ConnectPatience, SecretServiceStore, default_collection_locked, lock_default_collection,
    unlock_default_collection,
};

/// The OS keychain of the system this is built for, opened with `OsKeychainStore::open(profile)`:
/// the Secret Service on Linux and the BSDs.
#[cfg(all(unix, not(any(target_os = "macos", target_os = "ios", target_os = "android"))))]
pub type OsKeychainStore = SecretServiceStore;
/// The OS keychain of the system this is built for, opened with `OsKeychainStore::open(profile)`:
/// the login keychain on macOS, the Credential Manager on Windows.
#[cfg(any(target_os = "macos", target_os = "windows"))]
pub type OsKeychainStore = NativeKeychainStore;

/// What to do when no OS keychain answers, on this system.
#[cfg(target_os = "macos")]
const NO_KEYCHAIN_FIX: &str = "on macOS the login keychain could not be opened: check it in Keychain Access (Keychain First Aid), or choose the encrypted-file key store with --key-store file";
#[cfg(target_os = "windows")]
const NO_KEYCHAIN_FIX: &str = "on Windows the Credential Manager is not available in this session (a service, or a session without a loaded user profile): run in your own interactive login session, or choose the encrypted-file key store with --key-store file";
#[cfg(not(any(target_os = "macos", target_os = "windows")))]
const NO_KEYCHAIN_FIX: &str = "on Linux start a Secret Service such as gnome-keyring in your session, or choose the encrypted-file key store with --key-store file";

/// What to do when the OS keychain is locked or refuses access, on this system.
#[cfg(target_os = "macos")]
const LOCKED_FIX: &str = "unlock the login keychain (log in to your Mac, or unlock it in Keychain Access), allow Latchkey when macOS asks, and try again";
#[cfg(target_os = "windows")]
const LOCKED_FIX: &str = "run Latchkey as the Windows user who set up this device, in an interactive login session, and try again";
#[cfg(not(any(target_os = "macos", target_os = "windows")))]
const LOCKED_FIX: &str = "unlock your keychain (log in to your desktop session, or unlock the login keyring in your keyring manager) and try again";

/// Which key an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeySlot {
    /// A device's Ed25519 signing key.
    DeviceSigning(DeviceId),
    /// A device's X25519 exchange key.
    DeviceExchange(DeviceId),
    /// One version of a workspace key.
    Workspace {
        /// The workspace.
        workspace: WorkspaceId,
        /// The key version.
        version: KeyVersion,
    },
    /// One version of a member key.
    Member {
        /// The workspace.
        workspace: WorkspaceId,
        /// The member.
        member: MemberId,
        /// The key version.
        version: KeyVersion,
    },
}

impl KeySlot {
    /// The entry's name within the profile (the keychain "account").
    pub fn entry_name(&self) -> String {
        match self {
            KeySlot::DeviceSigning(device) => format!("device/{device}/signing-key"),
            KeySlot::DeviceExchange(device) => format!("device/{device}/exchange-key"),
            KeySlot::Workspace { workspace, version } => {
                format!("workspace/{workspace}/workspace-key/{version}")
            }
            KeySlot::Member { workspace, member, version } => {
                format!("workspace/{workspace}/member/{member}/member-key/{version}")
            }
        }
    }

    /// What the entry holds, for people.
    pub fn description(&self) -> &'static str {
        match self {
            KeySlot::DeviceSigning(_) => "device signing key",
            KeySlot::DeviceExchange(_) => "device exchange key",
            KeySlot::Workspace { .. } => "workspace key",
            KeySlot::Member { .. } => "member key",
        }
    }

    /// A label for keychain browsers such as Seahorse (the Secret Service store sets it; the
    /// native stores name items by service and account only).
    #[cfg(all(unix, not(any(target_os = "macos", target_os = "ios", target_os = "android"))))]
    pub(crate) fn label(&self, profile: &ProfileName) -> String {
        let service = profile.keychain_service();
        match self {
            KeySlot::DeviceSigning(d) | KeySlot::DeviceExchange(d) => {
                format!("{service}: {} of device {d}", self.description())
            }
            KeySlot::Workspace { workspace, version } => {
                format!("{service}: workspace key {version} of workspace {workspace}")
            }
            KeySlot::Member { workspace, member, version } => format!(
                "{service}: member key {version} of member {member} in workspace {workspace}"
            ),
        }
    }

    fn kind_byte(&self) -> u8 {
        match self {
            KeySlot::DeviceSigning(_) => 1,
            KeySlot::DeviceExchange(_) => 2,
            KeySlot::Workspace { .. } => 3,
            KeySlot::Member { .. } => 4,
        }
    }
}

/// A place that keeps keys for one profile.
///
/// Implementations provide the three byte-level methods; everything else is built on them. Use
/// the typed methods ([`KeyStore::save_device_keys`], [`KeyStore::load_workspace_key`], ...):
/// they encode and check entries, and take and return core key types only.
pub trait KeyStore: fmt::Debug + Send + Sync {
    /// The profile whose keys this store holds.
    fn profile(&self) -> &ProfileName;

    /// Which kind of store this is (recorded in the profile configuration).
    fn kind(&self) -> KeyStoreKind;

    /// Stores an encoded entry, replacing any previous value. Low level: prefer the typed methods.
    fn write_entry(&self, slot: &KeySlot, value: &[u8]) -> Result<(), KeychainError>;

    /// Reads an encoded entry: [`KeychainError::Missing`] if there is none. Low level.
    fn read_entry(&self, slot: &KeySlot) -> Result<Zeroizing<Vec<u8>>, KeychainError>;

    /// Deletes an entry. Deleting an entry that does not exist succeeds.
    fn delete_entry(&self, slot: &KeySlot) -> Result<(), KeychainError>;

    /// Stores one 32-byte key in `slot`.
    fn save_key(&self, slot: &KeySlot, key: &Key32) -> Result<(), KeychainError> {
        self.write_entry(slot, &encode_entry(slot, key))
    }

    /// Reads the 32-byte key in `slot`, checking the entry's format.
    fn load_key(&self, slot: &KeySlot) -> Result<Key32, KeychainError> {
        let value = self.read_entry(slot)?;
        decode_entry(self.profile(), slot, &value)
    }

    /// Stores both keys of a device.
    fn save_device_keys(&self, device: DeviceId, keys: &DeviceKeys) -> Result<(), KeychainError> {
        self.save_key(&KeySlot::DeviceSigning(device), &keys.signing.expose_secret())?;
        self.save_key(&KeySlot::DeviceExchange(device), &keys.exchange.expose_secret())
    }

    /// Reads both keys of a device.
    fn load_device_keys(&self, device: DeviceId) -> Result<DeviceKeys, KeychainError> {
        let signing = self.load_key(&KeySlot::DeviceSigning(device))?;
        let exchange_slot = KeySlot::DeviceExchange(device);
        let exchange = self.load_key(&exchange_slot)?;
        let exchange = ExchangeSecretKey::from_secret_bytes(&exchange).map_err(|_| {
            corrupt(self.profile(), &exchange_slot, "not a usable X25519 secret key")
        })?;
        Ok(DeviceKeys { signing: DeviceSigningKey::from_secret_bytes(&signing), exchange })
    }

    /// Deletes both keys of a device.
    fn delete_device_keys(&self, device: DeviceId) -> Result<(), KeychainError> {
        self.delete_entry(&KeySlot::DeviceSigning(device))?;
        self.delete_entry(&KeySlot::DeviceExchange(device))
    }

    /// Stores a workspace key under its workspace and version.
    fn save_workspace_key(&self, key: &WorkspaceKey) -> Result<(), KeychainError> {
        let slot = KeySlot::Workspace { workspace: key.workspace(), version: key.version() };
        self.save_key(&slot, key.expose_secret())
    }

    /// Reads one version of a workspace key.
    fn load_workspace_key(
        &self,
        workspace: WorkspaceId,
        version: KeyVersion,
    ) -> Result<WorkspaceKey, KeychainError> {
        let key = self.load_key(&KeySlot::Workspace { workspace, version })?;
        Ok(WorkspaceKey::from_parts(workspace, version, key))
    }

    /// Stores a member key under its workspace, member and version.
    fn save_member_key(&self, key: &MemberKey) -> Result<(), KeychainError> {
        let slot = KeySlot::Member {
            workspace: key.workspace(),
            member: key.member(),
            version: key.version(),
        };
        self.save_key(&slot, key.expose_secret())
    }

    /// Reads one version of a member key.
    fn load_member_key(
        &self,
        workspace: WorkspaceId,
        member: MemberId,
        version: KeyVersion,
    ) -> Result<MemberKey, KeychainError> {
        let key = self.load_key(&KeySlot::Member { workspace, member, version })?;
        Ok(MemberKey::from_parts(workspace, member, version, key))
    }
}

/// A key store shared with blocking tasks, as the [`crate::workspace`] flows take it.
pub type SharedKeyStore = std::sync::Arc<dyn KeyStore>;

/// A key store could not be opened, read or written. Every message says what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeychainError {
    /// No OS keychain answers: no session bus, or no Secret Service on it (Linux); no logon
    /// session (Windows). The message names this system's fix.
    #[error("no OS keychain is available: {fix}", fix = NO_KEYCHAIN_FIX)]
    NoKeychain,
    /// The keychain is locked and could not be unlocked (no prompt could be shown, or it was
    /// dismissed), or it refused access. The message names this system's fix.
    #[error("the OS keychain is locked: {fix}", fix = LOCKED_FIX)]
    Locked,
    /// The entry does not exist.
    #[error(
        "no {what} in the key store of profile `{profile}` (entry {entry}): this device was not set up in this profile, or the key was never received; create or join a workspace, or ask a member to admit this device"
    )]
    Missing {
        /// The profile.
        profile: String,
        /// What was looked for.
        what: &'static str,
        /// The entry name.
        entry: String,
    },
    /// The entry exists but is not a valid key of the expected kind.
    #[error(
        "the key store entry {entry} of profile `{profile}` is corrupt ({reason}): delete it and set this device up again, or restore the key from a recovery kit"
    )]
    Corrupt {
        /// The profile.
        profile: String,
        /// The entry name.
        entry: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The OS keychain reported another failure.
    #[error("the OS keychain failed: {detail}")]
    Keychain {
        /// The keychain's own message (never key material).
        detail: String,
    },
    /// The key file's passphrase is wrong, or the file was altered.
    #[error(
        "wrong passphrase for the key file {path}, or the file was altered: try the passphrase again"
    )]
    WrongPassphrase {
        /// The key file.
        path: PathBuf,
    },
    /// A new key file needs a longer passphrase.
    #[error("the key file passphrase is too short: choose one of at least {min_chars} characters")]
    PassphraseTooShort {
        /// The minimum, in characters.
        min_chars: usize,
    },
    /// The key file is damaged or not a Latchkey key file.
    #[error(
        "the key file {path} is not a usable latchkey key file ({reason}): restore it from a backup, or move it away and set this device up again"
    )]
    FileCorrupt {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// The key file belongs to another profile.
    #[error(
        "the key file {path} belongs to keychain service `{found}`, not `{expected}`: use that profile, or another key file"
    )]
    FileProfileMismatch {
        /// The key file.
        path: PathBuf,
        /// The service this store was opened for.
        expected: String,
        /// The service recorded in the file.
        found: String,
    },
    /// The key file does not exist (opening, not creating).
    #[error(
        "there is no key file {path}: set this device up with --key-store file first, or check the profile"
    )]
    NoKeyFile {
        /// The key file looked for.
        path: PathBuf,
    },
    /// The key file exists already (creating).
    #[error("the key file {path} already exists: open it with its passphrase instead")]
    KeyFileExists {
        /// The existing file.
        path: PathBuf,
    },
    /// Reading or writing the key file failed.
    #[error("cannot {action} the key file {path}: {source}")]
    FileIo {
        /// What was being done.
        action: &'static str,
        /// The key file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Argon2id could not derive the file key (for example, out of memory).
    #[error("cannot derive the key file's key from the passphrase: {reason}")]
    Kdf {
        /// What went wrong.
        reason: &'static str,
    },
    /// The operating system's random generator failed.
    #[error("the system random generator failed")]
    Random,
}

/// Size of an encoded entry: format version, kind, key.
pub(crate) const ENTRY_LEN: usize = 2 + Key32::LEN;
const ENTRY_FORMAT: u8 = 1;

/// `format version || kind || key`.
pub(crate) fn encode_entry(slot: &KeySlot, key: &Key32) -> Zeroizing<Vec<u8>> {
    let mut value = Zeroizing::new(Vec::with_capacity(ENTRY_LEN));
    value.push(ENTRY_FORMAT);
    value.push(slot.kind_byte());
    value.extend_from_slice(key.expose_secret());
    value
}

/// Checks an entry's framing and returns its key.
pub(crate) fn decode_entry(
    profile: &ProfileName,
    slot: &KeySlot,
    value: &[u8],
) -> Result<Key32, KeychainError> {
    if value.len() != ENTRY_LEN {
        return Err(corrupt(profile, slot, "wrong length"));
    }
    if value[0] != ENTRY_FORMAT {
        return Err(corrupt(profile, slot, "unknown entry format"));
    }
    if value[1] != slot.kind_byte() {
        return Err(corrupt(profile, slot, "it holds another kind of key"));
    }
    Key32::from_slice(&value[2..]).ok_or_else(|| corrupt(profile, slot, "wrong length"))
}

pub(crate) fn missing(profile: &ProfileName, slot: &KeySlot) -> KeychainError {
    KeychainError::Missing {
        profile: profile.to_string(),
        what: slot.description(),
        entry: slot.entry_name(),
    }
}

pub(crate) fn corrupt(
    profile: &ProfileName,
    slot: &KeySlot,
    reason: &'static str,
) -> KeychainError {
    KeychainError::Corrupt { profile: profile.to_string(), entry: slot.entry_name(), reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> ProfileName {
        ProfileName::named("unit").unwrap()
    }

    #[test]
    fn entry_names_separate_devices_workspaces_members_and_versions() {
        let device = DeviceId::random();
        let workspace = WorkspaceId::random();
        let member = MemberId::random();
        let v2 = KeyVersion::new(2).unwrap();
        let names = [
            KeySlot::DeviceSigning(device).entry_name(),
            KeySlot::DeviceExchange(device).entry_name(),
            KeySlot::Workspace { workspace, version: KeyVersion::FIRST }.entry_name(),
            KeySlot::Workspace { workspace, version: v2 }.entry_name(),
            KeySlot::Member { workspace, member, version: KeyVersion::FIRST }.entry_name(),
        ];
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "every key has its own entry: {names:?}");
        assert_eq!(names[3], format!("workspace/{workspace}/workspace-key/v2"));
    }

    #[test]
    fn an_entry_round_trips_and_is_tied_to_its_kind() {
        let slot =
            KeySlot::Workspace { workspace: WorkspaceId::random(), version: KeyVersion::FIRST };
        let key = Key32::from_bytes([7; 32]);
        let value = encode_entry(&slot, &key);
        assert_eq!(value.len(), ENTRY_LEN);
        assert_eq!(decode_entry(&profile(), &slot, &value).unwrap(), key);

        let other = KeySlot::DeviceSigning(DeviceId::random());
        let err = decode_entry(&profile(), &other, &value).unwrap_err();
        assert!(matches!(
            err,
            KeychainError::Corrupt { reason: "it holds another kind of key", .. }
        ));
    }

    #[test]
    fn malformed_entries_are_corrupt_not_guessed_at() {
        let slot = KeySlot::DeviceExchange(DeviceId::random());
        let good = encode_entry(&slot, &Key32::from_bytes([9; 32]));
        let mut wrong_format = good.to_vec();
        wrong_format[0] = 2;
        for value in [&[][..], &good[..33], &wrong_format[..], &[0u8; 32][..]] {
            let err = decode_entry(&profile(), &slot, value).unwrap_err();
            assert!(matches!(err, KeychainError::Corrupt { .. }), "{err}");
        }
    }

    #[test]
    fn the_no_keychain_message_names_both_fixes() {
        let message = KeychainError::NoKeychain.to_string();
        assert!(message.starts_with("no OS keychain is available"));
        assert!(message.contains("--key-store file"), "the fallback is named: {message}");
        let locked = KeychainError::Locked.to_string();
        // This system's own fix, not another system's.
        let (no_keychain_fix, locked_fix) = if cfg!(target_os = "macos") {
            ("Keychain Access", "unlock the login keychain")
        } else if cfg!(target_os = "windows") {
            ("Credential Manager", "run Latchkey as the Windows user")
        } else {
            ("gnome-keyring", "unlock your keychain")
        };
        assert!(message.contains(no_keychain_fix), "{message}");
        assert!(locked.contains(locked_fix), "{locked}");
    }
}
