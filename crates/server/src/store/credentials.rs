//! Credentials as the broker holds them: metadata and an envelope it cannot open.
//!
//! INVARIANT: every credential of a scope (the workspace's shared credentials, or one member's
//! personal credentials) is sealed under that scope's current key version
//! (`workspaces.key_version`, `members.key_version`). Every write checks the version in the same
//! statement or transaction that writes the envelope, and a rotation swaps every envelope of the
//! scope and bumps the version in one transaction, so a crash at any point leaves each credential
//! readable under exactly one version.
//!
//! Transactions that check before or while they write hold the workspace's write lock
//! (`Lock::Workspace`), so what they read cannot change under them, and diagnose a refusal
//! afterwards.

use latchkey_core::envelope::Envelope;
use latchkey_core::ids::{
    CredentialId, DeviceId, KeyVersion, LeaseId, MemberId, Owner, WorkspaceId,
};
use latchkey_core::keys::WrappedKey;
use serde::{Deserialize, Serialize};
use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::leases::{LeaseHolder, lease_in, release_in};
use super::nonces::as_i64;
use super::workspaces::insert_wrapped_key;
use super::{LimitReached, Lock, Store, StoreError, reaches};

/// Most credentials a workspace may hold, shared and personal together, in any status. A team
/// connects a few per member and service; each costs up to 64 KiB of envelope, and every
/// member's `GET /v1/credentials` reads the shared ones.
pub const MAX_CREDENTIALS: usize = 2000;

/// Whether agents can use a credential right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CredentialStatus {
    /// Usable.
    Active,
    /// The provider refused it (for example, a refresh token was revoked); its owner must connect
    /// it again.
    ReconnectNeeded,
    /// Switched off by its owner or an admin.
    Disabled,
}

impl CredentialStatus {
    /// The database and JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialStatus::Active => "active",
            CredentialStatus::ReconnectNeeded => "reconnect_needed",
            CredentialStatus::Disabled => "disabled",
        }
    }

    /// Parses the database spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(CredentialStatus::Active),
            "reconnect_needed" => Some(CredentialStatus::ReconnectNeeded),
            "disabled" => Some(CredentialStatus::Disabled),
            _ => None,
        }
    }
}

/// A stored credential: metadata in the clear, the secret only as an envelope.
#[derive(Debug, Clone)]
pub struct CredentialRecord {
    /// Its workspace.
    pub workspace: WorkspaceId,
    /// Chosen by the creating device; bound into the envelope's AAD.
    pub id: CredentialId,
    /// The name agents use in `/p/{name}/...`; unique in the workspace.
    pub name: String,
    /// Provider catalog id, e.g. `github`.
    pub provider: String,
    /// Scheme, host, optional port and optional base path, without a trailing `/`, e.g.
    /// `https://api.github.com`.
    pub upstream_base_url: String,
    /// Lowercase `host` or `host:port` entries the proxy may contact; `*.example.com` matches
    /// any host below `example.com` (not `example.com` itself).
    pub allowed_hosts: Vec<String>,
    /// Shared (workspace key) or personal (that member's key).
    pub owner: Owner,
    /// The key version the envelope is sealed under: always the owner's current version.
    pub key_version: KeyVersion,
    /// Whether agents can use it.
    pub status: CredentialStatus,
    /// OAuth scopes or similar labels, for display and policy.
    pub scopes: Vec<String>,
    /// When the secret is expected to expire (unix seconds), if known.
    pub expires_hint: Option<u64>,
    /// Whose account at the provider the credential acts as (`octocat`, `ana@example.com`), as
    /// the connecting device found or was told; for display only.
    pub account: Option<String>,
    /// The sealed credential (framing checked).
    pub envelope: Envelope,
    /// Creation time.
    pub created_at: u64,
    /// Last change of envelope, metadata or status.
    pub updated_at: u64,
    /// Starts at 1 and grows by one with every change: the optimistic-concurrency token of
    /// `PUT` and `PATCH` (timestamps have one-second resolution, so they cannot serve).
    pub revision: u64,
    /// When the proxy last forwarded an agent's call with it (unix seconds), to the second; not a
    /// change, so neither `updated_at` nor `revision` moves with it.
    pub last_used_at: Option<u64>,
}

#[cfg(test)]
impl CredentialRecord {
    /// A shared credential at `https://api.example.com` with a placeholder envelope (unit tests).
    pub(crate) fn example() -> Self {
        let mut envelope = vec![1, 0, 0, 0, 1];
        envelope.resize(latchkey_core::envelope::MIN_LEN, 0);
        Self {
            workspace: WorkspaceId::random(),
            id: CredentialId::random(),
            name: "example".into(),
            provider: "custom".into(),
            upstream_base_url: "https://api.example.com".into(),
            allowed_hosts: vec!["api.example.com".into()],
            owner: Owner::Shared,
            key_version: KeyVersion::FIRST,
            status: CredentialStatus::Active,
            scopes: Vec::new(),
            expires_hint: None,
            account: None,
            #[allow(clippy::unwrap_used, reason = "a fixed, valid envelope frame")]
            envelope: Envelope::parse(&envelope).unwrap(),
            created_at: 0,
            updated_at: 0,
            revision: 1,
            last_used_at: None,
        }
    }
}

/// A credential to create. The key version is the envelope's.
#[derive(Debug)]
pub struct NewCredential {
    /// Its workspace.
    pub workspace: WorkspaceId,
    /// Chosen by the device.
    pub id: CredentialId,
    /// Validated name.
    pub name: String,
    /// Validated provider id.
    pub provider: String,
    /// Validated, normalised base URL.
    pub upstream_base_url: String,
    /// Validated, lowercase host entries.
    pub allowed_hosts: Vec<String>,
    /// Shared or the creating member.
    pub owner: Owner,
    /// Validated scopes.
    pub scopes: Vec<String>,
    /// Expected expiry, if known.
    pub expires_hint: Option<u64>,
    /// Validated account name, if known.
    pub account: Option<String>,
    /// The sealed credential.
    pub envelope: Envelope,
    /// Creation time.
    pub now: u64,
}

/// A full replacement of a credential's metadata and envelope (`PUT`).
#[derive(Debug)]
pub struct CredentialUpdate {
    /// The revision the device last read; the update applies only if it is still current.
    pub expected_revision: u64,
    /// Validated name.
    pub name: String,
    /// Validated provider id.
    pub provider: String,
    /// Validated, normalised base URL.
    pub upstream_base_url: String,
    /// Validated, lowercase host entries.
    pub allowed_hosts: Vec<String>,
    /// Validated scopes.
    pub scopes: Vec<String>,
    /// Expected expiry, if known.
    pub expires_hint: Option<u64>,
    /// Validated account name, if known (`None` clears it: the update is a full replacement).
    pub account: Option<String>,
    /// The sealed credential; must be at the owner's current key version.
    pub envelope: Envelope,
    /// A new status, or `None` to keep the current one.
    pub status: Option<CredentialStatus>,
    /// The refresh lease the writer holds, if it stores a refresh: given back in the same
    /// transaction when the write succeeds.
    pub lease: Option<(LeaseId, DeviceId)>,
    /// Time of the change.
    pub now: u64,
}

/// Why a credential write was refused. Messages say what to do next and carry no secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialWriteError {
    /// The id is taken in this workspace.
    #[error("a credential with this id already exists; generate a new id")]
    IdTaken,
    /// The name is taken in this workspace (by any credential, shared or personal).
    #[error("a credential with this name already exists in the workspace; choose another name")]
    NameTaken,
    /// The envelope is not sealed under the owner's current key version.
    #[error(
        "the envelope is sealed under key version {given}, but the current key version is {current}; fetch the current key and seal again"
    )]
    StaleKeyVersion {
        /// The envelope's version.
        given: KeyVersion,
        /// The owner's current version.
        current: KeyVersion,
    },
    /// The personal credential's member was removed.
    #[error("the member this credential belongs to was removed")]
    OwnerGone,
    /// The credential changed since the device read it.
    #[error(
        "the credential was changed since you read it (revision {current} now); fetch it again and retry"
    )]
    RevisionMismatch {
        /// The current revision.
        current: u64,
    },
    /// No such credential in the workspace.
    #[error("no such credential")]
    NotFound,
    /// The writer named a refresh lease it no longer holds, and someone else holds a live one:
    /// they are refreshing the credential now.
    #[error(
        "the refresh lease named lapsed and was taken over: someone else is refreshing this credential now (until {until} at the latest); read it again in a few seconds"
    )]
    RefreshInProgress {
        /// When the other holder's lease lapses (unix seconds).
        until: u64,
    },
    /// A new credential, and the workspace already holds [`MAX_CREDENTIALS`].
    #[error(transparent)]
    Limit(#[from] LimitReached),
}

/// A refreshed envelope for [`Store::replace_envelope`]: stored only while `previous` is.
#[derive(Debug, Clone, Copy)]
pub struct EnvelopeSwap<'a> {
    /// The envelope the refresh started from.
    pub previous: &'a Envelope,
    /// The refreshed envelope, sealed under the same record key.
    pub next: &'a Envelope,
    /// The new access token's expiry, if the provider said.
    pub expires_hint: Option<u64>,
    /// Time of the change.
    pub now: u64,
}

/// Whose key a rotation replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationScope {
    /// The workspace key and every shared credential.
    Shared,
    /// One member's key and that member's personal credentials.
    Member(MemberId),
}

impl RotationScope {
    fn owner_column(self) -> Option<String> {
        match self {
            RotationScope::Shared => None,
            RotationScope::Member(m) => Some(m.to_string()),
        }
    }
}

/// A key rotation, checked for self-consistency by the caller (envelopes at `to`, wrapped keys
/// for `to`, of the right kind and owner, from the sending device, one per recipient).
#[derive(Debug)]
pub struct Rotation {
    /// The workspace.
    pub workspace: WorkspaceId,
    /// Whose key.
    pub scope: RotationScope,
    /// The current version.
    pub from: KeyVersion,
    /// `from + 1`.
    pub to: KeyVersion,
    /// Every credential of the scope, re-sealed under `to`.
    pub envelopes: Vec<(CredentialId, Envelope)>,
    /// The new key, wrapped to active devices of the scope.
    pub wrapped_keys: Vec<WrappedKey>,
    /// The scope's other active devices, which the rotating device chose not to send the new key.
    pub left_out: Vec<DeviceId>,
    /// Time of the rotation.
    pub now: u64,
}

/// Why a rotation was refused; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RotationRefused {
    /// `from` is not the current version (someone rotated first).
    #[error(
        "the key is at version {current}, not {from}; fetch the current key and credentials and rotate again"
    )]
    StaleVersion {
        /// The version the request started from.
        from: KeyVersion,
        /// The current version.
        current: KeyVersion,
    },
    /// The member whose key is rotated was removed.
    #[error("the member whose key this is was removed")]
    MemberGone,
    /// The credentials are not exactly the scope's credentials.
    #[error(
        "the rotation must re-seal exactly every credential of this key; missing: [{}]; not of this key: [{}]; list the credentials again and retry",
        join(missing),
        join(unexpected)
    )]
    CredentialSet {
        /// Credentials of the scope the request left out.
        missing: Vec<CredentialId>,
        /// Ids in the request that are not credentials of the scope.
        unexpected: Vec<CredentialId>,
    },
    /// The wrapped keys and the devices left out are not exactly the scope's active devices.
    #[error(
        "every active device of this key must be sent the new key or named as left out; missing: [{}]; not such a device: [{}]; list the devices again and retry",
        join(missing),
        join(unexpected)
    )]
    DeviceSet {
        /// Active devices without a wrapped key.
        missing: Vec<DeviceId>,
        /// Recipients that are not active devices of the scope.
        unexpected: Vec<DeviceId>,
    },
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// The columns every query of this table selects, in [`record`]'s order.
macro_rules! credential_columns {
    () => {
        "workspace_id, id, name, provider, upstream_base_url, allowed_hosts, owner_member_id, key_version, status, scopes, expires_hint, account, envelope, created_at, updated_at, revision, last_used_at"
    };
}

impl Store {
    /// The credential agents call `name` in `workspace`, whatever its status.
    pub async fn credential_by_name(
        &self,
        workspace: WorkspaceId,
        name: &str,
    ) -> Result<Option<CredentialRecord>, StoreError> {
        let mut tx = self.begin(workspace, Lock::None).await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            credential_columns!(),
            " FROM credentials WHERE workspace_id = $1 AND name = $2"
        ))
        .bind(workspace.to_string())
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(record).transpose()
    }

    /// The credential `id` of `workspace`.
    pub async fn credential(
        &self,
        workspace: WorkspaceId,
        id: CredentialId,
    ) -> Result<Option<CredentialRecord>, StoreError> {
        let mut tx = self.begin(workspace, Lock::None).await?;
        let record = fetch(&mut tx, workspace, id).await?;
        tx.commit().await?;
        Ok(record)
    }

    /// The workspace's shared credentials and `member`'s personal ones, by name.
    pub async fn credentials_visible_to(
        &self,
        workspace: WorkspaceId,
        member: MemberId,
    ) -> Result<Vec<CredentialRecord>, StoreError> {
        let mut tx = self.begin(workspace, Lock::None).await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            credential_columns!(),
            " FROM credentials
             WHERE workspace_id = $1 AND (owner_member_id IS NULL OR owner_member_id = $2)
             ORDER BY name"
        ))
        .bind(workspace.to_string())
        .bind(member.to_string())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(record).collect()
    }

    /// Creates a credential, active, at revision 1, if its envelope is sealed under the owner's
    /// current key version (checked in the inserting statement itself), unless the workspace
    /// already holds [`MAX_CREDENTIALS`].
    pub async fn create_credential(
        &self,
        new: NewCredential,
    ) -> Result<Result<CredentialRecord, CredentialWriteError>, StoreError> {
        let ws = new.workspace.to_string();
        let owner = owner_column(new.owner);
        let version = new.envelope.key_version();
        let mut tx = self.begin(new.workspace, Lock::Workspace).await?;
        let held = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM credentials WHERE workspace_id = $1",
        )
        .bind(&ws)
        .fetch_one(&mut *tx)
        .await?;
        if reaches(held, MAX_CREDENTIALS) {
            return Ok(Err(LimitReached::Credentials.into()));
        }
        // Only now: a refusal writes nothing, so it leaves the proxy's read cache warm.
        let _invalidate = self.hot.invalidate_on_drop();
        let inserted = sqlx::query(
            "INSERT INTO credentials (workspace_id, id, name, provider, upstream_base_url, allowed_hosts,
                 owner_member_id, key_version, status, scopes, expires_hint, account, envelope, created_at,
                 updated_at, revision)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, 'active', $9, $10, $13, $11, $12, $12, 1
             WHERE $8 = CASE WHEN $7 IS NULL
                 THEN (SELECT key_version FROM workspaces WHERE id = $1)
                 ELSE (SELECT key_version FROM members WHERE workspace_id = $1 AND id = $7 AND removed_at IS NULL)
             END",
        )
        .bind(&ws)
        .bind(new.id.to_string())
        .bind(&new.name)
        .bind(&new.provider)
        .bind(&new.upstream_base_url)
        .bind(json(&new.allowed_hosts)?)
        .bind(&owner)
        .bind(i64::from(version.get()))
        .bind(json(&new.scopes)?)
        .bind(new.expires_hint.map(as_i64))
        .bind(new.envelope.as_bytes())
        .bind(as_i64(new.now))
        .bind(&new.account)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(done) if done.rows_affected() == 1 => {}
            Ok(_) => {
                return Ok(Err(match current_version(&mut tx, new.workspace, new.owner).await? {
                    Some(current) => {
                        CredentialWriteError::StaleKeyVersion { given: version, current }
                    }
                    None => CredentialWriteError::OwnerGone,
                }));
            }
            Err(e) if is_unique_violation(&e) => {
                // The failed statement ended the transaction on PostgreSQL: ask in a new one.
                drop(tx);
                let mut tx = self.begin(new.workspace, Lock::None).await?;
                let id_taken = sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM credentials WHERE workspace_id = $1 AND id = $2",
                )
                .bind(&ws)
                .bind(new.id.to_string())
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                return Ok(Err(if id_taken > 0 {
                    CredentialWriteError::IdTaken
                } else {
                    CredentialWriteError::NameTaken
                }));
            }
            Err(e) => return Err(e.into()),
        }
        let record = fetch(&mut tx, new.workspace, new.id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("credential {} vanished", new.id)))?;
        tx.commit().await?;
        Ok(Ok(record))
    }

    /// Replaces a credential's metadata and envelope if its revision is still
    /// `update.expected_revision` and the envelope is at the owner's current key version.
    pub async fn update_credential(
        &self,
        workspace: WorkspaceId,
        id: CredentialId,
        update: CredentialUpdate,
    ) -> Result<Result<CredentialRecord, CredentialWriteError>, StoreError> {
        let _invalidate = self.hot.invalidate_on_drop();
        let mut tx = self.begin(workspace, Lock::Workspace).await?;
        // A write that names its refresh lease gives it back with the write. A lease it no
        // longer holds (lapsed and taken over) refuses the write while the new holder's is live:
        // the new holder is refreshing; otherwise the revision alone decides.
        let mut release = None;
        if let Some((lease, device)) = update.lease {
            match lease_in(&mut tx, workspace, id).await? {
                Some(held) if held.id == lease && held.holder == LeaseHolder::Device(device) => {
                    release = Some((lease, held.holder));
                }
                Some(other) if other.is_live(update.now) => {
                    return Ok(Err(CredentialWriteError::RefreshInProgress {
                        until: other.expires_at,
                    }));
                }
                _ => {}
            }
        }
        let version = update.envelope.key_version();
        let updated = sqlx::query(
            "UPDATE credentials SET name = $4, provider = $5, upstream_base_url = $6, allowed_hosts = $7,
                 scopes = $8, expires_hint = $9, envelope = $10, key_version = $11,
                 status = COALESCE($12, status), updated_at = $13, account = $14, revision = revision + 1
             WHERE workspace_id = $1 AND id = $2 AND revision = $3
               AND $11 = CASE WHEN owner_member_id IS NULL
                   THEN (SELECT key_version FROM workspaces w WHERE w.id = credentials.workspace_id)
                   ELSE (SELECT key_version FROM members m WHERE m.workspace_id = credentials.workspace_id
                         AND m.id = credentials.owner_member_id AND m.removed_at IS NULL)
               END",
        )
        .bind(workspace.to_string())
        .bind(id.to_string())
        .bind(as_i64(update.expected_revision))
        .bind(&update.name)
        .bind(&update.provider)
        .bind(&update.upstream_base_url)
        .bind(json(&update.allowed_hosts)?)
        .bind(json(&update.scopes)?)
        .bind(update.expires_hint.map(as_i64))
        .bind(update.envelope.as_bytes())
        .bind(i64::from(version.get()))
        .bind(update.status.map(CredentialStatus::as_str))
        .bind(as_i64(update.now))
        .bind(&update.account)
        .execute(&mut *tx)
        .await;
        match updated {
            Ok(done) if done.rows_affected() == 1 => {}
            Ok(_) => {
                // The UPDATE took the write lock, so this reads the state that refused it.
                let Some(current) = fetch(&mut tx, workspace, id).await? else {
                    return Ok(Err(CredentialWriteError::NotFound));
                };
                if current.revision != update.expected_revision {
                    return Ok(Err(CredentialWriteError::RevisionMismatch {
                        current: current.revision,
                    }));
                }
                return Ok(Err(match current_version(&mut tx, workspace, current.owner).await? {
                    Some(now_at) => {
                        CredentialWriteError::StaleKeyVersion { given: version, current: now_at }
                    }
                    None => CredentialWriteError::OwnerGone,
                }));
            }
            Err(e) if is_unique_violation(&e) => return Ok(Err(CredentialWriteError::NameTaken)),
            Err(e) => return Err(e.into()),
        }
        if let Some((lease, holder)) = release {
            release_in(&mut tx, workspace, id, lease, holder).await?;
        }
        let record = fetch(&mut tx, workspace, id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("credential {id} vanished")))?;
        tx.commit().await?;
        Ok(Ok(record))
    }

    /// Sets a credential's status, if its revision is still `expected_revision` (when given).
    pub async fn set_credential_status(
        &self,
        workspace: WorkspaceId,
        id: CredentialId,
        status: CredentialStatus,
        expected_revision: Option<u64>,
        now: u64,
    ) -> Result<Result<CredentialRecord, CredentialWriteError>, StoreError> {
        let _invalidate = self.hot.invalidate_on_drop();
        let mut tx = self.begin(workspace, Lock::None).await?;
        let done = sqlx::query(
            "UPDATE credentials SET status = $3, updated_at = $4, revision = revision + 1
             WHERE workspace_id = $1 AND id = $2 AND ($5 IS NULL OR revision = $5)",
        )
        .bind(workspace.to_string())
        .bind(id.to_string())
        .bind(status.as_str())
        .bind(as_i64(now))
        .bind(expected_revision.map(as_i64))
        .execute(&mut *tx)
        .await?;
        let current = fetch(&mut tx, workspace, id).await?;
        let Some(current) = current else { return Ok(Err(CredentialWriteError::NotFound)) };
        if done.rows_affected() == 0 {
            return Ok(Err(CredentialWriteError::RevisionMismatch { current: current.revision }));
        }
        tx.commit().await?;
        Ok(Ok(current))
    }

    /// Deletes a credential and revokes its standing grants; returns whether it existed. The
    /// next proxied request no longer finds it.
    pub async fn delete_credential(
        &self,
        workspace: WorkspaceId,
        id: CredentialId,
        now: u64,
    ) -> Result<bool, StoreError> {
        let _invalidate = self.hot.invalidate_on_drop();
        let mut tx = self.begin(workspace, Lock::None).await?;
        let deleted = sqlx::query("DELETE FROM credentials WHERE workspace_id = $1 AND id = $2")
            .bind(workspace.to_string())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(
            "UPDATE grants SET revoked_at = $3
             WHERE workspace_id = $1 AND credential_id = $2 AND revoked_at IS NULL",
        )
        .bind(workspace.to_string())
        .bind(id.to_string())
        .bind(as_i64(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(deleted == 1)
    }

    /// Records that the proxy just forwarded a call with the credential. Only moves forward, and
    /// changes neither `updated_at` nor `revision` (nor, on PostgreSQL, the read cache's shared
    /// generation: migrations/postgres/0006_credential_last_used.sql), so it leaves the read cache
    /// alone; the proxy calls it at most once per credential per second (see the read cache's
    /// `mark_credential_used`).
    pub async fn touch_credential(
        &self,
        workspace: WorkspaceId,
        credential: CredentialId,
        now: u64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin(workspace, Lock::None).await?;
        sqlx::query(
            "UPDATE credentials SET last_used_at = $3
             WHERE workspace_id = $1 AND id = $2 AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(workspace.to_string())
        .bind(credential.to_string())
        .bind(as_i64(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// After the broker refreshed an OAuth token under the same record key: replace the envelope
    /// only if the stored one is still `previous` (compare-and-swap); returns whether it swapped.
    /// The broker's refresh lease `lease`, if given, is given back in the same transaction
    /// whether or not the envelope swapped.
    ///
    /// Refuses (returns `false`) when `next` is not at `previous`'s key version: a refresh
    /// re-seals under the same record key, and only a rotation changes versions.
    pub async fn replace_envelope(
        &self,
        workspace: WorkspaceId,
        credential: CredentialId,
        change: EnvelopeSwap<'_>,
        lease: Option<LeaseId>,
    ) -> Result<bool, StoreError> {
        let _invalidate = self.hot.invalidate_on_drop();
        let EnvelopeSwap { previous, next, expires_hint, now } = change;
        let mut tx = self.begin(workspace, Lock::None).await?;
        if previous.key_version() != next.key_version() {
            if let Some(lease) = lease {
                release_in(&mut tx, workspace, credential, lease, LeaseHolder::Broker).await?;
            }
            tx.commit().await?;
            return Ok(false);
        }
        let swapped = sqlx::query(
            "UPDATE credentials SET envelope = $4, expires_hint = $5, updated_at = $6, revision = revision + 1
             WHERE workspace_id = $1 AND id = $2 AND envelope = $3 AND key_version = $7",
        )
        .bind(workspace.to_string())
        .bind(credential.to_string())
        .bind(previous.as_bytes())
        .bind(next.as_bytes())
        .bind(expires_hint.map(as_i64))
        .bind(as_i64(now))
        .bind(i64::from(next.key_version().get()))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if let Some(lease) = lease {
            release_in(&mut tx, workspace, credential, lease, LeaseHolder::Broker).await?;
        }
        tx.commit().await?;
        Ok(swapped == 1)
    }

    /// After the provider refused the broker's refresh (`invalid_grant`): marks the credential
    /// `reconnect_needed` if its envelope is still `presented` (so a refresh someone else stored
    /// meanwhile is not marked broken), and gives back the broker's lease `lease` in the same
    /// transaction. Returns whether it marked the credential.
    pub async fn mark_refresh_refused(
        &self,
        workspace: WorkspaceId,
        credential: CredentialId,
        presented: &Envelope,
        lease: Option<LeaseId>,
        now: u64,
    ) -> Result<bool, StoreError> {
        let _invalidate = self.hot.invalidate_on_drop();
        let mut tx = self.begin(workspace, Lock::None).await?;
        let marked = sqlx::query(
            "UPDATE credentials SET status = 'reconnect_needed', updated_at = $4, revision = revision + 1
             WHERE workspace_id = $1 AND id = $2 AND envelope = $3 AND status = 'active'",
        )
        .bind(workspace.to_string())
        .bind(credential.to_string())
        .bind(presented.as_bytes())
        .bind(as_i64(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if let Some(lease) = lease {
            release_in(&mut tx, workspace, credential, lease, LeaseHolder::Broker).await?;
        }
        tx.commit().await?;
        Ok(marked == 1)
    }

    /// The owner's current key version: the workspace's for shared credentials, the member's
    /// for personal ones (`None` if the member was removed).
    pub async fn key_version(
        &self,
        workspace: WorkspaceId,
        owner: Owner,
    ) -> Result<Option<KeyVersion>, StoreError> {
        let mut tx = self.begin(workspace, Lock::None).await?;
        let version = current_version(&mut tx, workspace, owner).await?;
        tx.commit().await?;
        Ok(version)
    }

    /// Rotates a workspace or member key in one transaction: bumps the version, swaps every
    /// envelope of the scope and stores the new wrapped keys, or refuses and changes nothing.
    pub async fn rotate(
        &self,
        rotation: Rotation,
    ) -> Result<Result<(), RotationRefused>, StoreError> {
        let _invalidate = self.hot.invalidate_on_drop();
        let ws = rotation.workspace.to_string();
        let owner = rotation.scope.owner_column();
        let (from, to) = (i64::from(rotation.from.get()), i64::from(rotation.to.get()));
        let mut tx = self.begin(rotation.workspace, Lock::Workspace).await?;
        // The write comes first: it is the compare-and-swap on the version.
        let bumped = match rotation.scope {
            RotationScope::Shared => sqlx::query(
                "UPDATE workspaces SET key_version = $3 WHERE id = $1 AND key_version = $2",
            )
            .bind(&ws)
            .bind(from)
            .bind(to)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
            RotationScope::Member(member) => sqlx::query(
                "UPDATE members SET key_version = $4
                 WHERE workspace_id = $1 AND id = $2 AND key_version = $3 AND removed_at IS NULL",
            )
            .bind(&ws)
            .bind(member.to_string())
            .bind(from)
            .bind(to)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
        };
        if bumped != 1 {
            let owner = match rotation.scope {
                RotationScope::Shared => Owner::Shared,
                RotationScope::Member(m) => Owner::Member(m),
            };
            return Ok(Err(match current_version(&mut tx, rotation.workspace, owner).await? {
                Some(current) => RotationRefused::StaleVersion { from: rotation.from, current },
                None => RotationRefused::MemberGone,
            }));
        }

        let stored: Vec<CredentialId> = sqlx::query_scalar::<_, String>(
            "SELECT id FROM credentials WHERE workspace_id = $1 AND owner_member_id IS NOT DISTINCT FROM $2",
        )
        .bind(&ws)
        .bind(&owner)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|id| id.parse().map_err(|_| StoreError::Corrupt(format!("credential id {id:?}"))))
        .collect::<Result<_, _>>()?;
        let given: Vec<CredentialId> = rotation.envelopes.iter().map(|(id, _)| *id).collect();
        let (missing, unexpected) = difference(&stored, &given);
        if !missing.is_empty() || !unexpected.is_empty() {
            return Ok(Err(RotationRefused::CredentialSet { missing, unexpected }));
        }

        let devices: Vec<DeviceId> = sqlx::query_scalar::<_, String>(
            "SELECT d.id FROM devices d
             JOIN members m ON m.workspace_id = d.workspace_id AND m.id = d.member_id
             WHERE d.workspace_id = $1 AND d.removed_at IS NULL AND m.removed_at IS NULL
               AND ($2 IS NULL OR d.member_id = $2)",
        )
        .bind(&ws)
        .bind(&owner)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|id| id.parse().map_err(|_| StoreError::Corrupt(format!("device id {id:?}"))))
        .collect::<Result<_, _>>()?;
        let recipients: Vec<DeviceId> = rotation
            .wrapped_keys
            .iter()
            .map(|w| w.header().recipient)
            .chain(rotation.left_out.iter().copied())
            .collect();
        let (missing, unexpected) = difference(&devices, &recipients);
        if !missing.is_empty() || !unexpected.is_empty() {
            return Ok(Err(RotationRefused::DeviceSet { missing, unexpected }));
        }

        let now = as_i64(rotation.now);
        for (id, envelope) in &rotation.envelopes {
            sqlx::query(
                "UPDATE credentials SET envelope = $3, key_version = $4, updated_at = $5, revision = revision + 1
                 WHERE workspace_id = $1 AND id = $2",
            )
            .bind(&ws)
            .bind(id.to_string())
            .bind(envelope.as_bytes())
            .bind(to)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        for wrapped in &rotation.wrapped_keys {
            insert_wrapped_key(&mut tx, wrapped, now).await?;
        }
        tx.commit().await?;
        Ok(Ok(()))
    }
}

/// Elements of `stored` not in `given`, and of `given` not in `stored`, each sorted.
fn difference<T: Ord + Copy>(stored: &[T], given: &[T]) -> (Vec<T>, Vec<T>) {
    let stored: std::collections::BTreeSet<T> = stored.iter().copied().collect();
    let given: std::collections::BTreeSet<T> = given.iter().copied().collect();
    (stored.difference(&given).copied().collect(), given.difference(&stored).copied().collect())
}

async fn fetch(
    conn: &mut sqlx::AnyConnection,
    workspace: WorkspaceId,
    id: CredentialId,
) -> Result<Option<CredentialRecord>, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        credential_columns!(),
        " FROM credentials WHERE workspace_id = $1 AND id = $2"
    ))
    .bind(workspace.to_string())
    .bind(id.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(record).transpose()
}

async fn current_version(
    conn: &mut sqlx::AnyConnection,
    workspace: WorkspaceId,
    owner: Owner,
) -> Result<Option<KeyVersion>, StoreError> {
    let version = match owner {
        Owner::Shared => {
            sqlx::query_scalar::<_, i64>("SELECT key_version FROM workspaces WHERE id = $1")
                .bind(workspace.to_string())
                .fetch_optional(&mut *conn)
                .await?
        }
        Owner::Member(member) => {
            sqlx::query_scalar::<_, i64>(
                "SELECT key_version FROM members WHERE workspace_id = $1 AND id = $2 AND removed_at IS NULL",
            )
            .bind(workspace.to_string())
            .bind(member.to_string())
            .fetch_optional(&mut *conn)
            .await?
        }
    };
    version.map(|v| key_version_of(v, "key version")).transpose()
}

fn owner_column(owner: Owner) -> Option<String> {
    match owner {
        Owner::Shared => None,
        Owner::Member(member) => Some(member.to_string()),
    }
}

fn json(values: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(values).map_err(|e| StoreError::Corrupt(format!("unencodable list: {e}")))
}

fn key_version_of(value: i64, what: &str) -> Result<KeyVersion, StoreError> {
    u32::try_from(value)
        .ok()
        .and_then(KeyVersion::new)
        .ok_or_else(|| StoreError::Corrupt(format!("{what} {value}")))
}

pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_unique_violation())
}

fn record(row: &AnyRow) -> Result<CredentialRecord, StoreError> {
    let id: String = row.try_get("id")?;
    let corrupt = |what: &str| StoreError::Corrupt(format!("credential {id}: {what}"));
    let owner = match row.try_get::<Option<String>, _>("owner_member_id")? {
        None => Owner::Shared,
        Some(member) => Owner::Member(member.parse().map_err(|_| corrupt("owner"))?),
    };
    let list = |column: &str| -> Result<Vec<String>, StoreError> {
        let text: String = row.try_get(column)?;
        serde_json::from_str(&text).map_err(|_| corrupt(column))
    };
    let time = |column: &str| -> Result<u64, StoreError> {
        u64::try_from(row.try_get::<i64, _>(column)?).map_err(|_| corrupt(column))
    };
    let envelope = Envelope::parse(&row.try_get::<Vec<u8>, _>("envelope")?)
        .map_err(|_| corrupt("envelope framing"))?;
    let key_version = key_version_of(row.try_get("key_version")?, "key version")?;
    if envelope.key_version() != key_version {
        return Err(corrupt("envelope key version differs from the row's"));
    }
    Ok(CredentialRecord {
        workspace: row
            .try_get::<String, _>("workspace_id")?
            .parse()
            .map_err(|_| corrupt("workspace"))?,
        id: id.parse().map_err(|_| corrupt("id"))?,
        name: row.try_get("name")?,
        provider: row.try_get("provider")?,
        upstream_base_url: row.try_get("upstream_base_url")?,
        allowed_hosts: list("allowed_hosts")?,
        owner,
        key_version,
        status: CredentialStatus::parse(&row.try_get::<String, _>("status")?)
            .ok_or_else(|| corrupt("status"))?,
        scopes: list("scopes")?,
        expires_hint: row
            .try_get::<Option<i64>, _>("expires_hint")?
            .map(|v| u64::try_from(v).map_err(|_| corrupt("expires_hint")))
            .transpose()?,
        account: row.try_get("account")?,
        envelope,
        created_at: time("created_at")?,
        updated_at: time("updated_at")?,
        revision: time("revision")?,
        last_used_at: row
            .try_get::<Option<i64>, _>("last_used_at")?
            .map(|v| u64::try_from(v).map_err(|_| corrupt("last_used_at")))
            .transpose()?,
    })
}
