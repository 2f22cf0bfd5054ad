//! Workspaces, created together with their first admin and device.

use latchkey_core::ids::{DeviceId, MemberId, WorkspaceId};
use latchkey_core::keys::{WrappedKey, WrappedKind};

use super::nonces::as_i64;
use super::{Lock, Store, StoreError};

/// Everything a new workspace starts with.
#[derive(Debug)]
pub struct NewWorkspace {
    /// Chosen by the creating device (the wrapped keys are bound to it).
    pub workspace: WorkspaceId,
    /// Display name.
    pub workspace_name: String,
    /// The first member, who becomes admin.
    pub member: MemberId,
    /// The member's display name.
    pub member_name: String,
    /// The first device.
    pub device: DeviceId,
    /// The device's display name.
    pub device_name: String,
    /// The device's Ed25519 public key.
    pub signing_key: [u8; 32],
    /// The device's X25519 public key.
    pub exchange_key: [u8; 32],
    /// Workspace key v1 and member key v1, wrapped to the device.
    pub wrapped_keys: [WrappedKey; 2],
    /// Creation time.
    pub now: u64,
}

/// A workspace could not be created because an id is taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a workspace or device with this id already exists; generate new ids")]
pub struct IdTaken;

impl Store {
    /// The name `workspace` was created with, if it exists.
    pub async fn workspace_name(
        &self,
        workspace: WorkspaceId,
    ) -> Result<Option<String>, StoreError> {
        let mut tx = self.begin(workspace, Lock::None).await?;
        let name = sqlx::query_scalar("SELECT name FROM workspaces WHERE id = $1")
            .bind(workspace.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(name)
    }

    /// Creates the workspace, its first admin, device and wrapped keys in one transaction.
    pub async fn create_workspace(
        &self,
        new: NewWorkspace,
    ) -> Result<Result<(), IdTaken>, StoreError> {
        let _invalidate = self.hot.invalidate_on_drop();
        let mut tx = self.begin(new.workspace, Lock::Workspace).await?;
        // Device ids are unique across workspaces: the lookup sees every workspace's.
        let taken = sqlx::query_scalar::<_, i64>(
            "SELECT (SELECT count(*) FROM workspaces WHERE id = $1)
                  + (SELECT count(*) FROM device_workspaces WHERE device_id = $2)",
        )
        .bind(new.workspace.to_string())
        .bind(new.device.to_string())
        .fetch_one(&mut *tx)
        .await?;
        if taken > 0 {
            return Ok(Err(IdTaken));
        }
        let now = as_i64(new.now);
        let ws = new.workspace.to_string();
        let member = new.member.to_string();
        let device = new.device.to_string();
        sqlx::query(
            "INSERT INTO workspaces (id, name, key_version, created_at) VALUES ($1, $2, 1, $3)",
        )
        .bind(&ws)
        .bind(&new.workspace_name)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO members (workspace_id, id, name, role, key_version, created_at)
             VALUES ($1, $2, $3, 'admin', 1, $4)",
        )
        .bind(&ws)
        .bind(&member)
        .bind(&new.member_name)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO devices (workspace_id, id, member_id, name, signing_key, exchange_key, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&ws)
        .bind(&device)
        .bind(&member)
        .bind(&new.device_name)
        .bind(&new.signing_key[..])
        .bind(&new.exchange_key[..])
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for wrapped in &new.wrapped_keys {
            insert_wrapped_key(&mut tx, wrapped, now).await?;
        }
        tx.commit().await?;
        Ok(Ok(()))
    }
}

/// Stores one wrapped key under its header's coordinates.
pub(crate) async fn insert_wrapped_key(
    tx: &mut super::Tx,
    wrapped: &WrappedKey,
    now: i64,
) -> Result<(), StoreError> {
    let h = wrapped.header();
    let (kind, owner) = match (h.kind, h.owner) {
        (WrappedKind::Workspace, _) => ("workspace", "shared".to_owned()),
        (WrappedKind::Member, latchkey_core::ids::Owner::Member(m)) => ("member", m.to_string()),
        (WrappedKind::Member, latchkey_core::ids::Owner::Shared) => {
            return Err(StoreError::Corrupt("member key without a member".into()));
        }
    };
    sqlx::query(
        "INSERT INTO wrapped_keys (workspace_id, recipient_device, kind, owner, key_version, bytes, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(h.workspace.to_string())
    .bind(h.recipient.to_string())
    .bind(kind)
    .bind(owner)
    .bind(i64::from(h.version.get()))
    .bind(wrapped.as_bytes())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
