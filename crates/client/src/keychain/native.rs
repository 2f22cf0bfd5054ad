//! The OS keychain on macOS (the login keychain) and Windows (the Credential Manager), through
//! keyring-core and the native stores the `keyring` 4.x crate uses by default on these systems:
//! `apple-native-keyring-store` (its `keychain` module) and `windows-native-keyring-store`.
//!
//! The Windows build runs the key store tests (`tests/keychain.rs`) under Wine, against Wine's
//! Credential Manager API; the macOS build is type-checked but never run here
//! (docs/architecture.md, "Key stores").
//!
//! Items are generic passwords: on macOS with service `latchkey[.<profile>]` and account
//! `<entry name>`; on Windows with the target name `<entry name>@latchkey[.<profile>]`
//! (`service_no_divider`, so no two entries share a target) and local persistence (device keys
//! must not roam to another computer with the user's profile).
//!
//! # Errors
//!
//! | what happened | error |
//! |---|---|
//! | no such item | [`KeychainError::Missing`] |
//! | macOS: no access (locked, read-only or unavailable keychain) | [`KeychainError::Locked`] |
//! | Windows: no logon session (a service or a session without a loaded profile) | [`KeychainError::NoKeychain`] |
//! | a value that is not an entry | [`KeychainError::Corrupt`] |
//! | anything else | [`KeychainError::Keychain`], with the platform's message |

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use keyring_core::api::CredentialStoreApi as _;
use zeroize::{Zeroize as _, Zeroizing};

use super::{KeySlot, KeyStore, KeychainError, corrupt, missing};
use crate::profile::{KeyStoreKind, ProfileName};

#[cfg(target_os = "macos")]
type PlatformStore = apple_native_keyring_store::keychain::Store;
#[cfg(target_os = "windows")]
type PlatformStore = windows_native_keyring_store::Store;

/// Keys of one profile in the OS keychain of macOS or Windows.
pub struct NativeKeychainStore {
    profile: ProfileName,
    service: String,
    store: Arc<PlatformStore>,
}

impl NativeKeychainStore {
    /// Opens the keychain for `profile` (nothing is read until an entry is).
    pub fn open(profile: &ProfileName) -> Result<Self, KeychainError> {
        let store = platform_store().map_err(|e| classify(e, None))?;
        Ok(Self { profile: profile.clone(), service: profile.keychain_service(), store })
    }

    fn run<T>(
        &self,
        slot: &KeySlot,
        op: impl Fn(&keyring_core::Entry) -> keyring_core::Result<T>,
    ) -> Result<T, KeychainError> {
        let entry = self
            .store
            .build(&self.service, &slot.entry_name(), entry_modifiers().as_ref())
            .map_err(|e| classify(e, Some((&self.profile, slot))))?;
        op(&entry).map_err(|e| classify(e, Some((&self.profile, slot))))
    }
}

#[cfg(target_os = "macos")]
fn platform_store() -> keyring_core::Result<Arc<PlatformStore>> {
    // The user's login keychain.
    PlatformStore::new()
}

#[cfg(target_os = "windows")]
fn platform_store() -> keyring_core::Result<Arc<PlatformStore>> {
    // `<user>@<service>`: "@" is in neither an entry name nor a keychain service, and
    // `service_no_divider` makes the store refuse a service that holds it.
    let configuration = HashMap::from([("divider", "@"), ("service_no_divider", "true")]);
    PlatformStore::new_with_configuration(&configuration)
}

/// The modifiers of every entry: none on macOS (the store's keychain), local persistence on
/// Windows.
#[cfg(target_os = "macos")]
fn entry_modifiers() -> Option<HashMap<&'static str, &'static str>> {
    None
}

#[cfg(target_os = "windows")]
fn entry_modifiers() -> Option<HashMap<&'static str, &'static str>> {
    Some(HashMap::from([("persistence", "Local")]))
}

impl KeyStore for NativeKeychainStore {
    fn profile(&self) -> &ProfileName {
        &self.profile
    }

    fn kind(&self) -> KeyStoreKind {
        KeyStoreKind::OsKeychain
    }

    fn write_entry(&self, slot: &KeySlot, value: &[u8]) -> Result<(), KeychainError> {
        self.run(slot, |entry| entry.set_secret(value))
    }

    fn read_entry(&self, slot: &KeySlot) -> Result<Zeroizing<Vec<u8>>, KeychainError> {
        self.run(slot, |entry| entry.get_secret().map(Zeroizing::new))
    }

    fn delete_entry(&self, slot: &KeySlot) -> Result<(), KeychainError> {
        match self.run(slot, |entry| entry.delete_credential()) {
            Err(KeychainError::Missing { .. }) => Ok(()),
            other => other,
        }
    }
}

impl fmt::Debug for NativeKeychainStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NativeKeychainStore")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// Locking the keychain from Latchkey is offered with the Secret Service only.
pub fn lock_default_collection() -> Result<(), KeychainError> {
    Err(not_here("locking"))
}

/// Unlocking the keychain from Latchkey is offered with the Secret Service only.
pub fn unlock_default_collection() -> Result<(), KeychainError> {
    Err(not_here("unlocking"))
}

/// Whether the keychain is locked is known with the Secret Service only.
pub fn default_collection_locked() -> Result<bool, KeychainError> {
    Err(not_here("checking the lock of"))
}

fn not_here(what: &str) -> KeychainError {
    KeychainError::Keychain {
        detail: format!(
            "{what} the OS keychain from Latchkey works with the Linux Secret Service only; use the system's own keychain settings here"
        ),
    }
}

/// Sorts a keyring-core error. Takes ownership so that error variants carrying secret bytes
/// (`BadEncoding`, `BadDataFormat`) are zeroized here and never travel further. `entry` is the
/// profile and slot of an entry operation (`None` while opening).
fn classify(error: keyring_core::Error, entry: Option<(&ProfileName, &KeySlot)>) -> KeychainError {
    use keyring_core::Error as E;
    let entry_error =
        |make: &dyn Fn(&ProfileName, &KeySlot) -> KeychainError, what: &str| match entry {
            Some((profile, slot)) => make(profile, slot),
            None => KeychainError::Keychain { detail: format!("{what} while opening") },
        };
    match error {
        E::NoEntry => entry_error(&|p, s| missing(p, s), "no entry"),
        #[cfg(target_os = "macos")]
        E::NoStorageAccess(_) => KeychainError::Locked,
        #[cfg(target_os = "windows")]
        E::NoStorageAccess(_) => KeychainError::NoKeychain,
        E::NoDefaultStore => KeychainError::NoKeychain,
        E::BadEncoding(mut bytes) => {
            bytes.zeroize();
            entry_error(&|p, s| corrupt(p, s, "not binary key data"), "bad encoding")
        }
        E::BadDataFormat(mut bytes, _) => {
            bytes.zeroize();
            entry_error(&|p, s| corrupt(p, s, "the keychain could not decode it"), "bad data")
        }
        E::Ambiguous(_) => entry_error(
            &|p, s| corrupt(p, s, "several keychain items have this name"),
            "ambiguous entry",
        ),
        other => KeychainError::Keychain { detail: other.to_string() },
    }
}
