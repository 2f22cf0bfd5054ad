//! The OS keychain on Linux and the BSDs: the freedesktop Secret Service (gnome-keyring, KWallet,
//! KeePassXC), through keyring-core and its zbus Secret Service store (the store the `keyring`
//! 4.x crate uses by default on these systems).
//!
//! Each [`SecretServiceStore`] holds its own connection instead of keyring's process-wide default
//! store, so a first attempt that fails is not remembered for the life of the process, and two
//! profiles in one process stay apart. Items are stored with the attributes
//! `service = latchkey[.<profile>]` and `username = <entry name>` in the default collection.
//!
//! # Errors
//!
//! | what happened | error |
//! |---|---|
//! | no session bus (`DBUS_SESSION_BUS_ADDRESS` unset, no `$XDG_RUNTIME_DIR/bus`) | [`KeychainError::NoKeychain`] |
//! | bus, but no Secret Service on it (after waiting, see below) | [`KeychainError::NoKeychain`] |
//! | collection locked and the unlock prompt dismissed or impossible | [`KeychainError::Locked`] |
//! | no such item | [`KeychainError::Missing`] |
//! | several items with one name, or a value that is not an entry | [`KeychainError::Corrupt`] |
//!
//! A keyring daemon started together with the app may not have claimed its bus name yet when
//! the first call arrives (`org.freedesktop.DBus.Error.ServiceUnknown` or `NameHasNoOwner`).
//! Only that error is retried, with a bounded backoff ([`ConnectPatience`], about 2.5 s in all);
//! every other error is reported at once.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use keyring_core::api::CredentialStoreApi as _;
use zeroize::{Zeroize as _, Zeroizing};

use super::{KeySlot, KeyStore, KeychainError, corrupt, missing};
use crate::profile::{KeyStoreKind, ProfileName};

/// How long to wait for a Secret Service that has not claimed its bus name yet.
#[derive(Debug, Clone)]
pub struct ConnectPatience {
    /// Pauses between attempts; one attempt more than there are pauses.
    pub pauses: Vec<Duration>,
}

impl Default for ConnectPatience {
    /// 50, 100, 200, 400, 800 and 1000 ms: seven attempts over about 2.5 s.
    fn default() -> Self {
        Self { pauses: [50, 100, 200, 400, 800, 1000].map(Duration::from_millis).to_vec() }
    }
}

impl ConnectPatience {
    /// A single attempt.
    pub fn none() -> Self {
        Self { pauses: Vec::new() }
    }
}

/// Keys of one profile in the Secret Service.
pub struct SecretServiceStore {
    profile: ProfileName,
    service: String,
    store: Arc<zbus_secret_service_keyring_store::Store>,
    patience: ConnectPatience,
}

impl SecretServiceStore {
    /// Connects to the session's Secret Service for `profile`, waiting briefly for one that is
    /// still starting.
    pub fn open(profile: &ProfileName) -> Result<Self, KeychainError> {
        Self::open_with_patience(profile, ConnectPatience::default())
    }

    /// [`SecretServiceStore::open`] with an explicit retry schedule.
    pub fn open_with_patience(
        profile: &ProfileName,
        patience: ConnectPatience,
    ) -> Result<Self, KeychainError> {
        let store = with_patience(&patience, || {
            zbus_secret_service_keyring_store::Store::new().map_err(|e| classify(e, None))
        })?;
        Ok(Self { profile: profile.clone(), service: profile.keychain_service(), store, patience })
    }

    fn entry(&self, slot: &KeySlot) -> Result<keyring_core::Entry, Failure> {
        let label = slot.label(&self.profile);
        let modifiers = HashMap::from([("label", label.as_str())]);
        self.store
            .build(&self.service, &slot.entry_name(), Some(&modifiers))
            .map_err(|e| classify(e, Some((&self.profile, slot))))
    }

    fn run<T>(
        &self,
        slot: &KeySlot,
        op: impl Fn(&keyring_core::Entry) -> keyring_core::Result<T>,
    ) -> Result<T, KeychainError> {
        with_patience(&self.patience, || {
            let entry = self.entry(slot)?;
            op(&entry).map_err(|e| classify(e, Some((&self.profile, slot))))
        })
    }
}

impl KeyStore for SecretServiceStore {
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

impl fmt::Debug for SecretServiceStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretServiceStore").field("service", &self.service).finish_non_exhaustive()
    }
}

/// A failure, sorted into what the caller should do.
enum Failure {
    /// The Secret Service has not claimed its bus name (yet): worth another try.
    NotYetAvailable,
    /// Anything else: reported as is.
    Final(KeychainError),
}

fn with_patience<T>(
    patience: &ConnectPatience,
    mut attempt: impl FnMut() -> Result<T, Failure>,
) -> Result<T, KeychainError> {
    let mut pauses = patience.pauses.iter();
    loop {
        match attempt() {
            Ok(value) => return Ok(value),
            Err(Failure::Final(error)) => return Err(error),
            Err(Failure::NotYetAvailable) => match pauses.next() {
                Some(pause) => {
                    tracing::debug!(?pause, "the Secret Service is not on the bus yet; waiting");
                    std::thread::sleep(*pause);
                }
                None => return Err(KeychainError::NoKeychain),
            },
        }
    }
}

/// Sorts a keyring-core error. Takes ownership so that error variants carrying secret bytes
/// (`BadEncoding`, `BadDataFormat`) are zeroized here and never travel further. `entry` is the
/// profile and slot of an entry operation (`None` while connecting).
fn classify(error: keyring_core::Error, entry: Option<(&ProfileName, &KeySlot)>) -> Failure {
    use keyring_core::Error as E;
    let entry_error =
        |make: &dyn Fn(&ProfileName, &KeySlot) -> KeychainError, what: &str| match entry {
            Some((profile, slot)) => make(profile, slot),
            None => KeychainError::Keychain { detail: format!("{what} while connecting") },
        };
    let final_error = match error {
        E::NoEntry => entry_error(&|p, s| missing(p, s), "no entry"),
        E::NoStorageAccess(_) => KeychainError::Locked,
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
        E::PlatformFailure(inner) => return classify_platform(&*inner),
        other => KeychainError::Keychain { detail: other.to_string() },
    };
    Failure::Final(final_error)
}

fn classify_platform(inner: &(dyn std::error::Error + Send + Sync + 'static)) -> Failure {
    use secret_service::Error as S;
    let Some(ss) = inner.downcast_ref::<S>() else {
        return Failure::Final(KeychainError::Keychain { detail: inner.to_string() });
    };
    match ss {
        S::Unavailable => Failure::Final(KeychainError::NoKeychain),
        S::Locked | S::Prompt | S::PromptDisconnected => Failure::Final(KeychainError::Locked),
        S::Zbus(zbus::Error::MethodError(name, _, _)) if not_on_bus(name.as_str()) => {
            Failure::NotYetAvailable
        }
        S::ZbusFdo(fdo) if fdo_not_on_bus(fdo) => Failure::NotYetAvailable,
        S::Zbus(zbus::Error::FDO(fdo)) if fdo_not_on_bus(fdo) => Failure::NotYetAvailable,
        // No usable session bus: no address, or nothing listening at it.
        S::Zbus(zbus::Error::Address(_) | zbus::Error::Connection(..)) => {
            Failure::Final(KeychainError::NoKeychain)
        }
        S::Zbus(zbus::Error::InputOutput(io))
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            ) =>
        {
            Failure::Final(KeychainError::NoKeychain)
        }
        other => Failure::Final(KeychainError::Keychain { detail: other.to_string() }),
    }
}

fn fdo_not_on_bus(error: &zbus::fdo::Error) -> bool {
    matches!(error, zbus::fdo::Error::ServiceUnknown(_) | zbus::fdo::Error::NameHasNoOwner(_))
}

/// The D-Bus errors that mean "nobody owns the Secret Service's name (yet)".
fn not_on_bus(error_name: &str) -> bool {
    matches!(
        error_name,
        "org.freedesktop.DBus.Error.ServiceUnknown" | "org.freedesktop.DBus.Error.NameHasNoOwner"
    )
}

/// Locks the Secret Service's default collection (the login keyring, where Latchkey's keys are):
/// from then on no key can be read, by Latchkey or anyone, until the person unlocks it with
/// their keychain password. The desktop app's "Lock".
pub fn lock_default_collection() -> Result<(), KeychainError> {
    let service =
        secret_service::blocking::SecretService::connect(secret_service::EncryptionType::Plain)
            .map_err(lock_error)?;
    service.get_default_collection().map_err(lock_error)?.lock().map_err(lock_error)
}

/// Unlocks the default collection: the Secret Service asks the person for their keychain
/// password in its own prompt (nothing is asked, and this returns at once, when it is unlocked
/// already). A dismissed prompt is [`KeychainError::Locked`].
pub fn unlock_default_collection() -> Result<(), KeychainError> {
    let service =
        secret_service::blocking::SecretService::connect(secret_service::EncryptionType::Plain)
            .map_err(lock_error)?;
    let collection = service.get_default_collection().map_err(lock_error)?;
    if !collection.is_locked().map_err(lock_error)? {
        return Ok(());
    }
    collection.unlock().map_err(lock_error)?;
    if collection.is_locked().map_err(lock_error)? { Err(KeychainError::Locked) } else { Ok(()) }
}

/// Whether the default collection is locked.
pub fn default_collection_locked() -> Result<bool, KeychainError> {
    let service =
        secret_service::blocking::SecretService::connect(secret_service::EncryptionType::Plain)
            .map_err(lock_error)?;
    service.get_default_collection().map_err(lock_error)?.is_locked().map_err(lock_error)
}

fn lock_error(error: secret_service::Error) -> KeychainError {
    match error {
        secret_service::Error::Unavailable => KeychainError::NoKeychain,
        secret_service::Error::Locked
        | secret_service::Error::Prompt
        | secret_service::Error::PromptDisconnected => KeychainError::Locked,
        other => KeychainError::Keychain { detail: other.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(error: secret_service::Error) -> keyring_core::Error {
        keyring_core::Error::PlatformFailure(Box::new(error))
    }

    fn is_retried(failure: &Failure) -> bool {
        matches!(failure, Failure::NotYetAvailable)
    }

    fn final_error(failure: Failure) -> KeychainError {
        match failure {
            Failure::Final(e) => e,
            Failure::NotYetAvailable => panic!("expected a final error"),
        }
    }

    #[test]
    fn only_a_secret_service_missing_from_the_bus_is_retried() {
        let unknown = zbus::fdo::Error::ServiceUnknown("org.freedesktop.secrets".into());
        assert!(is_retried(&classify(platform(secret_service::Error::ZbusFdo(unknown)), None)));
        let no_owner = zbus::fdo::Error::NameHasNoOwner("org.freedesktop.secrets".into());
        assert!(is_retried(&classify(platform(secret_service::Error::ZbusFdo(no_owner)), None)));
        assert!(not_on_bus("org.freedesktop.DBus.Error.ServiceUnknown"));
        assert!(!not_on_bus("org.freedesktop.DBus.Error.AccessDenied"));

        for error in [
            platform(secret_service::Error::Unavailable),
            platform(secret_service::Error::Locked),
            keyring_core::Error::NoStorageAccess(Box::new(secret_service::Error::Prompt)),
            keyring_core::Error::NoEntry,
        ] {
            assert!(!is_retried(&classify(error, None)));
        }
    }

    #[test]
    fn errors_map_to_the_fix_the_user_needs() {
        let no_bus = classify(platform(secret_service::Error::Unavailable), None);
        assert!(matches!(final_error(no_bus), KeychainError::NoKeychain));
        let locked = classify(
            keyring_core::Error::NoStorageAccess(Box::new(secret_service::Error::Locked)),
            None,
        );
        assert!(matches!(final_error(locked), KeychainError::Locked));
        let prompt = classify(platform(secret_service::Error::Prompt), None);
        assert!(matches!(final_error(prompt), KeychainError::Locked));
        let address: zbus::Address = "unix:path=/nonexistent/bus".parse().unwrap();
        let missing = std::sync::Arc::new(std::io::Error::from(std::io::ErrorKind::NotFound));
        let no_socket = zbus::Error::Connection(missing, address);
        let no_socket = classify(platform(secret_service::Error::Zbus(no_socket)), None);
        assert!(matches!(final_error(no_socket), KeychainError::NoKeychain));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let gone = classify(platform(secret_service::Error::Zbus(refused.into())), None);
        assert!(matches!(final_error(gone), KeychainError::NoKeychain));
    }

    #[test]
    fn waiting_is_bounded_and_ends_in_the_no_keychain_error() {
        let patience = ConnectPatience { pauses: vec![Duration::from_millis(1); 3] };
        let mut attempts = 0;
        let result: Result<(), _> = with_patience(&patience, || {
            attempts += 1;
            Err(Failure::NotYetAvailable)
        });
        assert_eq!(attempts, 4, "one attempt more than pauses");
        assert!(matches!(result, Err(KeychainError::NoKeychain)));

        let mut attempts = 0;
        let result = with_patience(&patience, || {
            attempts += 1;
            if attempts < 3 { Err(Failure::NotYetAvailable) } else { Ok(attempts) }
        });
        assert_eq!(result.unwrap(), 3, "a service that arrives in time is used");
    }

    #[test]
    fn secret_bytes_in_keyring_errors_are_dropped_not_reported() {
        let canary = b"canary-key-bytes-0123456789abcdef".to_vec();
        let profile = ProfileName::named("unit").unwrap();
        let slot = KeySlot::DeviceSigning(latchkey_core::ids::DeviceId::random());
        let error = classify(keyring_core::Error::BadEncoding(canary), Some((&profile, &slot)));
        let error = final_error(error);
        assert!(matches!(error, KeychainError::Corrupt { .. }), "{error}");
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains("canary"), "{shown}");
        assert!(!shown.contains("99, 97, 110"), "no byte list either: {shown}");
    }
}
