//! Members and devices as the authentication path sees them.

use latchkey_core::ids::{DeviceId, MemberId, WorkspaceId};
use serde::{Deserialize, Serialize};
use sqlx::Row as _;

use super::{Lock, Store, StoreError};

/// A member's role in a workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Manages members, devices, shared credentials and policies.
    Admin,
    /// Uses the workspace; manages their own agents and personal credentials.
    Member,
}

impl Role {
    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    /// Parses the database spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "admin" => Some(Role::Admin),
            "member" => Some(Role::Member),
            _ => None,
        }
    }
}

/// An enrolled, active device of an active member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveDevice {
    /// The device's workspace.
    pub workspace: WorkspaceId,
    /// The device.
    pub id: DeviceId,
    /// Its member.
    pub member: MemberId,
    /// The member's role.
    pub role: Role,
    /// Ed25519 public key.
    pub signing_key: [u8; 32],
    /// X25519 public key.
    pub exchange_key: [u8; 32],
}

impl Store {
    /// The device with this id, if it is enrolled and neither it nor its member was removed.
    pub async fn active_device(&self, id: DeviceId) -> Result<Option<ActiveDevice>, StoreError> {
        // The device id is the key id of a request signature: its workspace is not known yet.
        let workspace = sqlx::query_scalar::<_, String>(
            "SELECT workspace_id FROM device_workspaces WHERE device_id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        let Some(workspace) = workspace else { return Ok(None) };
        let workspace: WorkspaceId = workspace
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("device {id}: workspace id")))?;
        let mut tx = self.begin(workspace, Lock::None).await?;
        let row = sqlx::query(
            "SELECT d.workspace_id, d.member_id, m.role, d.signing_key, d.exchange_key
             FROM devices d JOIN members m ON m.workspace_id = d.workspace_id AND m.id = d.member_id
             WHERE d.workspace_id = $1 AND d.id = $2 AND d.removed_at IS NULL AND m.removed_at IS NULL",
        )
        .bind(workspace.to_string())
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let Some(row) = row else { return Ok(None) };
        let corrupt = |what: &str| StoreError::Corrupt(format!("device {id}: {what}"));
        Ok(Some(ActiveDevice {
            workspace: row.get::<String, _>(0).parse().map_err(|_| corrupt("workspace id"))?,
            id,
            member: row.get::<String, _>(1).parse().map_err(|_| corrupt("member id"))?,
            role: Role::parse(&row.get::<String, _>(2)).ok_or_else(|| corrupt("role"))?,
            signing_key: row.get::<Vec<u8>, _>(3).try_into().map_err(|_| corrupt("signing key"))?,
            exchange_key: row
                .get::<Vec<u8>, _>(4)
                .try_into()
                .map_err(|_| corrupt("exchange key"))?,
        }))
    }
}
