//! Refreshed tokens the provider issued but the broker has not stored yet.
//!
//! Once the provider answers a refresh, the refresh token this device presented is dead (the
//! provider rotated it), and the new pair exists only in this process. If storing it at the broker
//! then fails (the broker unreachable, a crash between the answer and the store), losing the pair
//! would lose the grant. So before the new pair is sent to the broker it is written here, sealed
//! under the credential's record key exactly as the broker would hold it (never in plaintext),
//! with the envelope the refresh started from and the refresh lease held; the file is removed once
//! the broker has the pair or someone else's newer pair. The next refresh of this profile stores a
//! file it finds before it does anything else, and never presents the credential's refresh token
//! while one is kept.
//!
//! One file per credential, `<profile>.pending/<credential id>.json`, 0600 in a 0700 directory,
//! written atomically.

use std::path::PathBuf;

use base64::Engine as _;
use latchkey_core::envelope::Envelope;
use latchkey_core::ids::{CredentialId, KeyVersion, LeaseId};
use serde::{Deserialize, Serialize};

use crate::profile::{Profile, write_atomically};

/// The file format's version.
const FORMAT: u32 = 1;

/// A refreshed pair kept until the broker stores it. Only envelopes: nothing here opens without
/// the credential's record key.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    /// The credential refreshed.
    pub(super) credential: CredentialId,
    /// The key version both envelopes are sealed under.
    pub(super) key_version: KeyVersion,
    /// The new access and refresh token, sealed.
    pub(super) refreshed: Envelope,
    /// The envelope the refresh started from: its refresh token is the one presented.
    pub(super) presented: Envelope,
    /// The refresh lease held while the provider was asked: named when storing, so the broker
    /// gives it back with the write.
    pub(super) lease: Option<LeaseId>,
}

/// The file's JSON.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PendingFile {
    format: u32,
    credential: CredentialId,
    key_version: KeyVersion,
    /// Base64url envelopes.
    refreshed: String,
    presented: String,
    lease: Option<LeaseId>,
}

/// A pending file could not be read, written or understood.
#[derive(Debug, thiserror::Error)]
pub(super) enum PendingError {
    /// Reading, writing or listing failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// "read", "write", "remove" or "list".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The file is not one this version wrote.
    #[error("{} is not a pending refresh this version of Latchkey can read", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
    },
}

fn path(profile: &Profile, credential: CredentialId) -> PathBuf {
    profile.pending_refresh_dir().join(format!("{credential}.json"))
}

/// Keeps `pending`, replacing what was kept for its credential.
pub(super) fn save(profile: &Profile, pending: &Pending) -> Result<(), PendingError> {
    let b64 = |e: &Envelope| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(e.as_bytes());
    let file = PendingFile {
        format: FORMAT,
        credential: pending.credential,
        key_version: pending.key_version,
        refreshed: b64(&pending.refreshed),
        presented: b64(&pending.presented),
        lease: pending.lease,
    };
    let path = path(profile, pending.credential);
    // INVARIANT: a struct of strings, numbers and ids always serializes.
    let bytes = serde_json::to_vec_pretty(&file).unwrap_or_default();
    write_atomically(&path, &bytes).map_err(|source| PendingError::Io {
        action: "write",
        path,
        source,
    })
}

/// What is kept for `credential`, if anything.
pub(super) fn load(
    profile: &Profile,
    credential: CredentialId,
) -> Result<Option<Pending>, PendingError> {
    let path = path(profile, credential);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(PendingError::Io { action: "read", path, source }),
    };
    let malformed = || PendingError::Malformed { path: path.clone() };
    let file: PendingFile = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
    let envelope = |text: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()
            .and_then(|bytes| Envelope::parse(&bytes).ok())
            .filter(|e| e.key_version() == file.key_version)
            .ok_or_else(malformed)
    };
    if file.format != FORMAT || file.credential != credential {
        return Err(malformed());
    }
    Ok(Some(Pending {
        credential,
        key_version: file.key_version,
        refreshed: envelope(&file.refreshed)?,
        presented: envelope(&file.presented)?,
        lease: file.lease,
    }))
}

/// Forgets what was kept for `credential` (nothing kept is fine).
pub(super) fn remove(profile: &Profile, credential: CredentialId) -> Result<(), PendingError> {
    let path = path(profile, credential);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(PendingError::Io { action: "remove", path, source }),
    }
}

/// The credentials something is kept for, in no particular order.
pub(super) fn list(profile: &Profile) -> Result<Vec<CredentialId>, PendingError> {
    let dir = profile.pending_refresh_dir();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(PendingError::Io { action: "list", path: dir, source }),
    };
    let mut credentials = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| PendingError::Io {
            action: "list",
            path: dir.clone(),
            source,
        })?;
        // Temporary files of an interrupted write start with a dot and are not ids.
        let name = entry.file_name();
        if let Some(id) =
            name.to_str().and_then(|n| n.strip_suffix(".json")).and_then(|n| n.parse().ok())
        {
            credentials.push(id);
        }
    }
    Ok(credentials)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

    use latchkey_core::keys::WorkspaceKey;

    use super::*;
    use crate::profile::ProfileName;

    #[test]
    fn a_kept_refresh_round_trips_and_holds_only_sealed_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let profile = Profile::new(ProfileName::named("work").unwrap(), dir.path());
        let id = CredentialId::random();
        let key =
            WorkspaceKey::generate(latchkey_core::ids::WorkspaceId::random(), KeyVersion::FIRST)
                .unwrap()
                .record_key(id)
                .unwrap();
        let secret = b"gho_PENDINGcanaryACCESS0123456789";
        let pending = Pending {
            credential: id,
            key_version: KeyVersion::FIRST,
            refreshed: Envelope::seal(&key, secret).unwrap(),
            presented: Envelope::seal(&key, b"the old pair").unwrap(),
            lease: Some(LeaseId::random()),
        };
        assert!(load(&profile, id).unwrap().is_none(), "nothing kept yet");
        assert!(list(&profile).unwrap().is_empty());
        save(&profile, &pending).unwrap();

        let written = std::fs::read(path(&profile, id)).unwrap();
        assert!(
            !written.windows(secret.len()).any(|w| w == secret),
            "the kept file holds no plaintext token"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(path(&profile, id)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "only its owner may read the file");
        }
        let loaded = load(&profile, id).unwrap().expect("kept");
        assert_eq!(loaded.refreshed, pending.refreshed);
        assert_eq!(loaded.presented, pending.presented);
        assert_eq!(loaded.lease, pending.lease);
        assert_eq!(
            loaded.refreshed.open(&key).unwrap().expose_secret(),
            secret,
            "the record key opens it"
        );
        assert_eq!(list(&profile).unwrap(), [id]);

        remove(&profile, id).unwrap();
        remove(&profile, id).unwrap();
        assert!(load(&profile, id).unwrap().is_none(), "forgotten");
        assert!(list(&profile).unwrap().is_empty());
    }

    #[test]
    fn a_file_that_is_not_a_kept_refresh_is_refused_not_guessed_at() {
        let dir = tempfile::tempdir().unwrap();
        let profile = Profile::new(ProfileName::named("work").unwrap(), dir.path());
        let id = CredentialId::random();
        std::fs::create_dir_all(profile.pending_refresh_dir()).unwrap();
        std::fs::write(path(&profile, id), b"{\"format\": 2}").unwrap();
        assert!(
            matches!(load(&profile, id), Err(PendingError::Malformed { .. })),
            "an unknown format is an error, so a kept pair is never silently dropped"
        );
    }
}
