//! Recovery kits for a device's keys: export the workspace and member keys this device holds
//! under a passphrase, and import them into an enrolled device's key store.
//!
//! The kit format and its cryptography are [`latchkey_core::recovery`]'s; this module decides
//! what goes in and how a kit meets a key store:
//!
//! - Export takes every version of the workspace key and of this member's key that the device
//!   still holds, so credentials sealed before a rotation stay readable from the kit.
//! - Import belongs to an enrolled profile (a device that joined the workspace, or whose keys
//!   were lost): the kit must be for the profile's workspace, and member keys only for the
//!   profile's own member. Every key is checked against the store before anything is written,
//!   so a kit that conflicts with a stored key changes nothing: a stored key is never replaced.

use latchkey_core::ids::{KeyVersion, Owner, WorkspaceId};
use latchkey_core::recovery::{self, KitEntry, RecoveryError};
use latchkey_core::secret::SecretBytes;

use crate::keychain::{KeySlot, KeyStore, KeychainError, SharedKeyStore};
use crate::profile::Profile;
use crate::workspace::{WorkspaceError, check_store, on_store};

/// A recovery kit could not be exported or imported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryKitError {
    /// The profile, its configuration or its key store failed.
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    /// The kit could not be written or read (wrong passphrase, altered file, weak parameters...).
    #[error(transparent)]
    Kit(#[from] RecoveryError),
    /// This device holds no workspace or member key to export.
    #[error("this device holds no keys to export yet: receive your keys from another device first")]
    NothingToExport,
    /// The kit is for another workspace than the profile's.
    #[error(
        "this recovery kit is for workspace {kit}, but this profile is enrolled in {profile}: import it into a profile of that workspace"
    )]
    OtherWorkspace {
        /// The kit's workspace.
        kit: WorkspaceId,
        /// The profile's workspace.
        profile: WorkspaceId,
    },
    /// The kit holds a member key of another member.
    #[error(
        "this recovery kit holds another member's key: only the member who exported it can import it"
    )]
    OtherMember,
    /// A key in the kit differs from the key this device already stores for the same version.
    /// Nothing was written.
    #[error(
        "the kit's {what} version {version} differs from the one this device already holds: nothing was imported. Check that the kit is from this workspace and not altered"
    )]
    Conflict {
        /// "workspace key" or "member key".
        what: &'static str,
        /// The version in conflict.
        version: KeyVersion,
    },
}

/// What [`export_kit`] put into a kit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedKit {
    /// The kit, as text to save to a file. It holds keys only in encrypted form.
    pub text: String,
    /// The workspace key versions in it.
    pub workspace_keys: Vec<KeyVersion>,
    /// The member key versions in it.
    pub member_keys: Vec<KeyVersion>,
}

/// What [`import_kit`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportedKit {
    /// Workspace key versions written to the key store.
    pub workspace_keys: Vec<KeyVersion>,
    /// Member key versions written to the key store.
    pub member_keys: Vec<KeyVersion>,
    /// Keys in the kit the store already held, identical.
    pub already_present: usize,
}

/// Exports every workspace and member key version this device holds into a recovery kit
/// sealed with `passphrase` (at least [`recovery::MIN_PASSPHRASE_CHARS`] characters).
pub async fn export_kit(
    profile: &Profile,
    store: &SharedKeyStore,
    passphrase: SecretBytes,
) -> Result<ExportedKit, RecoveryKitError> {
    check_store(profile, store.as_ref())?;
    let config = profile.load_config().map_err(WorkspaceError::from)?;
    let (workspace, member) = (config.workspace, config.member);
    let (newest_workspace, newest_member) =
        (config.workspace_key_version, config.member_key_version);
    let exported = on_store(store, move |s| {
        let mut entries = Vec::new();
        for version in versions_up_to(newest_workspace) {
            if let Some(key) = present(s.load_workspace_key(workspace, version))? {
                entries.push(KitEntry {
                    workspace,
                    owner: Owner::Shared,
                    version,
                    key: key.expose_secret().duplicate(),
                });
            }
        }
        for version in versions_up_to(newest_member) {
            if let Some(key) = present(s.load_member_key(workspace, member, version))? {
                entries.push(KitEntry {
                    workspace,
                    owner: Owner::Member(member),
                    version,
                    key: key.expose_secret().duplicate(),
                });
            }
        }
        Ok(entries)
    })
    .await?;
    if exported.is_empty() {
        return Err(RecoveryKitError::NothingToExport);
    }
    let text = recovery::export(&passphrase, &exported)?;
    let (shared, own): (Vec<_>, Vec<_>) =
        exported.iter().partition(|entry| entry.owner == Owner::Shared);
    Ok(ExportedKit {
        text,
        workspace_keys: shared.iter().map(|entry| entry.version).collect(),
        member_keys: own.iter().map(|entry| entry.version).collect(),
    })
}

/// Imports a recovery kit into this enrolled profile's key store and records the newest
/// versions in its configuration. Every entry is checked first; on any refusal nothing is
/// written. Keys the store already holds, identical, are counted and left alone.
pub async fn import_kit(
    profile: &Profile,
    store: &SharedKeyStore,
    text: &str,
    passphrase: SecretBytes,
) -> Result<ImportedKit, RecoveryKitError> {
    check_store(profile, store.as_ref())?;
    let mut config = profile.load_config().map_err(WorkspaceError::from)?;
    // Argon2id at the kit's cost: off the async threads.
    let text = text.to_owned();
    let entries = tokio::task::spawn_blocking(move || recovery::import(&passphrase, &text))
        .await
        .map_err(|_| WorkspaceError::Interrupted)??;
    for entry in &entries {
        if entry.workspace != config.workspace {
            return Err(RecoveryKitError::OtherWorkspace {
                kit: entry.workspace,
                profile: config.workspace,
            });
        }
        if let Owner::Member(member) = entry.owner
            && member != config.member
        {
            return Err(RecoveryKitError::OtherMember);
        }
    }

    let imported = on_store(store, move |s| Ok(write_new_keys(s, &entries))).await??;
    let newest =
        |current: Option<KeyVersion>, got: &[KeyVersion]| got.iter().copied().chain(current).max();
    config.workspace_key_version = newest(config.workspace_key_version, &imported.workspace_keys);
    config.member_key_version = newest(config.member_key_version, &imported.member_keys);
    profile.save_config(&config).map_err(WorkspaceError::from)?;
    tracing::info!(
        workspace_keys = imported.workspace_keys.len(),
        member_keys = imported.member_keys.len(),
        already_present = imported.already_present,
        "recovery kit imported"
    );
    Ok(imported)
}

/// Checks every entry against the store, then writes the missing ones. A stored key that
/// differs from the kit's refuses the whole import before anything is written.
fn write_new_keys(
    store: &dyn KeyStore,
    entries: &[KitEntry],
) -> Result<ImportedKit, RecoveryKitError> {
    let mut missing = Vec::new();
    let mut imported = ImportedKit::default();
    for entry in entries {
        let (slot, what) = slot_of(entry);
        match present(store.load_key(&slot)).map_err(WorkspaceError::from)? {
            None => missing.push((slot, entry)),
            Some(stored) if stored.expose_secret() == entry.key.expose_secret() => {
                imported.already_present += 1;
            }
            Some(_) => return Err(RecoveryKitError::Conflict { what, version: entry.version }),
        }
    }
    for (slot, entry) in missing {
        store.save_key(&slot, &entry.key).map_err(WorkspaceError::from)?;
        match entry.owner {
            Owner::Shared => imported.workspace_keys.push(entry.version),
            Owner::Member(_) => imported.member_keys.push(entry.version),
        }
    }
    Ok(imported)
}

fn slot_of(entry: &KitEntry) -> (KeySlot, &'static str) {
    match entry.owner {
        Owner::Shared => (
            KeySlot::Workspace { workspace: entry.workspace, version: entry.version },
            "workspace key",
        ),
        Owner::Member(member) => (
            KeySlot::Member { workspace: entry.workspace, member, version: entry.version },
            "member key",
        ),
    }
}

/// Versions 1 to `newest`, none when the device holds no key of the kind.
fn versions_up_to(newest: Option<KeyVersion>) -> impl Iterator<Item = KeyVersion> {
    let last = newest.map_or(0, KeyVersion::get);
    (1..=last).filter_map(KeyVersion::new)
}

/// A key that is not in the store is `None`; every other failure stays an error.
fn present<T>(loaded: Result<T, KeychainError>) -> Result<Option<T>, KeychainError> {
    match loaded {
        Ok(value) => Ok(Some(value)),
        Err(KeychainError::Missing { .. }) => Ok(None),
        Err(error) => Err(error),
    }
}
