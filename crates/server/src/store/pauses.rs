//! The workspace's kill switch: whether every agent call in a workspace is refused.
//!
//! A paused workspace has one `agent_pauses` row naming who paused it (member and device) and
//! when. Pausing again keeps that row, so the first pause and its author stand; resuming deletes
//! it. Both writes invalidate the proxy's read cache (`store/hot.rs`), which mirrors the state
//! per workspace, and on PostgreSQL bump the shared cache generation (a trigger), so every
//! replica sees a pause at its next call.

use latchkey_core::ids::{DeviceId, MemberId, WorkspaceId};
use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::nonces::as_i64;
use super::{Lock, Store, StoreError};

/// Who paused a workspace's agents, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pause {
    /// The member who paused.
    pub member: MemberId,
    /// The device they paused from.
    pub device: DeviceId,
    /// When (unix seconds).
    pub at: u64,
}

/// A workspace's pause state: `None` while its agents may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PauseState(pub Option<Pause>);

/// How a resume went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resumed {
    /// The pause was lifted; it was this one.
    Lifted(Pause),
    /// Nothing was paused.
    NotPaused,
    /// The caller may not lift this pause (neither an admin nor the member who paused).
    NotAllowed(Pause),
}

impl Store {
    /// Whether `workspace`'s agents are paused, read from the database.
    pub async fn pause_state(&self, workspace: WorkspaceId) -> Result<PauseState, StoreError> {
        let mut tx = self.begin(workspace, Lock::None).await?;
        let row = sqlx::query(
            "SELECT paused_by_member, paused_by_device, paused_at FROM agent_pauses
             WHERE workspace_id = $1",
        )
        .bind(workspace.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(PauseState(row.as_ref().map(|row| pause(workspace, row)).transpose()?))
    }

    /// Pauses `workspace`'s agents, unless they are paused already. Returns the pause in force
    /// and whether this call made it (`false`: an earlier pause stands, unchanged).
    pub async fn pause_agents(
        &self,
        workspace: WorkspaceId,
        member: MemberId,
        device: DeviceId,
        now: u64,
    ) -> Result<(Pause, bool), StoreError> {
        let _invalidate = self.hot.invalidate_on_drop();
        let mut tx = self.begin(workspace, Lock::None).await?;
        let inserted = sqlx::query(
            "INSERT INTO agent_pauses (workspace_id, paused_by_member, paused_by_device, paused_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (workspace_id) DO NOTHING",
        )
        .bind(workspace.to_string())
        .bind(member.to_string())
        .bind(device.to_string())
        .bind(as_i64(now))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let row = sqlx::query(
            "SELECT paused_by_member, paused_by_device, paused_at FROM agent_pauses
             WHERE workspace_id = $1",
        )
        .bind(workspace.to_string())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((pause(workspace, &row)?, inserted))
    }

    /// Lifts `workspace`'s pause if `admin` or if `member` made it, in one statement (a pause
    /// made meanwhile by someone else is not lifted by a member who may not).
    pub async fn resume_agents(
        &self,
        workspace: WorkspaceId,
        member: MemberId,
        admin: bool,
    ) -> Result<Resumed, StoreError> {
        let _invalidate = self.hot.invalidate_on_drop();
        let mut tx = self.begin(workspace, Lock::None).await?;
        let lifted = sqlx::query(
            "DELETE FROM agent_pauses
             WHERE workspace_id = $1 AND ($2 OR paused_by_member = $3)
             RETURNING paused_by_member, paused_by_device, paused_at",
        )
        .bind(workspace.to_string())
        .bind(admin)
        .bind(member.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let outcome = match lifted {
            Some(row) => Resumed::Lifted(pause(workspace, &row)?),
            None => {
                let standing = sqlx::query(
                    "SELECT paused_by_member, paused_by_device, paused_at FROM agent_pauses
                     WHERE workspace_id = $1",
                )
                .bind(workspace.to_string())
                .fetch_optional(&mut *tx)
                .await?;
                match standing {
                    Some(row) => Resumed::NotAllowed(pause(workspace, &row)?),
                    None => Resumed::NotPaused,
                }
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }
}

fn pause(workspace: WorkspaceId, row: &AnyRow) -> Result<Pause, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("pause of {workspace}: {what}"));
    Ok(Pause {
        member: row
            .try_get::<String, _>("paused_by_member")?
            .parse()
            .map_err(|_| corrupt("member"))?,
        device: row
            .try_get::<String, _>("paused_by_device")?
            .parse()
            .map_err(|_| corrupt("device"))?,
        at: u64::try_from(row.try_get::<i64, _>("paused_at")?).map_err(|_| corrupt("time"))?,
    })
}
