//! Approvals: agent calls the broker holds while members' devices are asked.
//!
//! A row is inserted `pending` and leaves that state exactly once, through one conditional
//! `UPDATE ... WHERE status = 'pending'`: an answer (approved or denied) or the holder's timeout
//! (expired). Whichever commits first wins; every later attempt changes no row and is refused.
//! That is what keeps a late answer from doing anything and a call from being forwarded twice,
//! whichever replica the answer reaches.
//!
//! The row never holds a credential or a key: the call's shape (method, host, path, the query's
//! parameter names, the body's size) and, once approved, the answering device's capability,
//! which is sealed to the broker's key. The holder clears the capability when it takes it.
//!
//! Decided approvals are history, listed for [`APPROVAL_HISTORY_SECS`] after their decision:
//! each new one deletes its workspace's approvals decided longer ago, so the table holds what is
//! pending plus about a month of answers, however many calls a workspace's agents make. The
//! audit chain keeps every request and answer for good (`approval_requested`,
//! `approval_answered`, `approval_expired`).

use latchkey_core::ids::{AgentId, ApprovalId, CredentialId, DeviceId, MemberId, WorkspaceId};
use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::nonces::as_i64;
use super::{Lock, Store, StoreError};

/// How long a decided (approved, denied or expired) approval stays listed: 30 days.
pub const APPROVAL_HISTORY_SECS: u64 = 30 * 24 * 60 * 60;

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// Waiting for an answer.
    Pending,
    /// A device approved it with a capability.
    Approved,
    /// A device denied it.
    Denied,
    /// Nobody answered in time.
    Expired,
}

impl ApprovalStatus {
    /// The stored code.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Expired => "expired",
        }
    }

    fn parse(code: &str) -> Option<Self> {
        [Self::Pending, Self::Approved, Self::Denied, Self::Expired]
            .into_iter()
            .find(|s| s.as_str() == code)
    }
}

/// A held call, as stored.
#[derive(Debug, Clone)]
pub struct ApprovalRecord {
    /// Its workspace.
    pub workspace: WorkspaceId,
    /// The approval.
    pub id: ApprovalId,
    /// The calling agent.
    pub agent: AgentId,
    /// The credential the call would use.
    pub credential: CredentialId,
    /// The credential's owner for a personal credential (whose devices may answer); `None` for
    /// a shared one (admins' devices answer).
    pub credential_owner: Option<MemberId>,
    /// The member who owns the calling agent (whose devices see the call, to know why it
    /// waits); `None` for calls held before it was recorded.
    pub agent_owner: Option<MemberId>,
    /// The credential's name.
    pub credential_name: String,
    /// HTTP method.
    pub method: String,
    /// Upstream host.
    pub host: String,
    /// Upstream path (after the credential's base URL).
    pub path: String,
    /// Names of the query's parameters, in order (values are never stored).
    pub query_keys: Vec<String>,
    /// The request body's declared size, when it declared one.
    pub body_size: Option<u64>,
    /// The policies that would allow the call once approved.
    pub policy_ids: Vec<String>,
    /// Where it stands.
    pub status: ApprovalStatus,
    /// When the call arrived.
    pub created_at: u64,
    /// When the holder gives up.
    pub expires_at: u64,
    /// When it was answered or expired.
    pub decided_at: Option<u64>,
    /// The device that answered.
    pub decided_by: Option<DeviceId>,
}

/// A new held call.
#[derive(Debug, Clone)]
pub struct NewApproval {
    /// Its workspace.
    pub workspace: WorkspaceId,
    /// Fresh id.
    pub id: ApprovalId,
    /// The calling agent.
    pub agent: AgentId,
    /// The credential.
    pub credential: CredentialId,
    /// The personal credential's owner, `None` for a shared credential.
    pub credential_owner: Option<MemberId>,
    /// The member who owns the agent.
    pub agent_owner: MemberId,
    /// The credential's name.
    pub credential_name: String,
    /// HTTP method.
    pub method: String,
    /// Upstream host.
    pub host: String,
    /// Upstream path.
    pub path: String,
    /// The query's parameter names.
    pub query_keys: Vec<String>,
    /// Declared body size.
    pub body_size: Option<u64>,
    /// The policies that would allow the call once approved.
    pub policy_ids: Vec<String>,
    /// Arrival time.
    pub now: u64,
    /// When the holder gives up.
    pub expires_at: u64,
}

/// An answer to a pending approval.
#[derive(Debug, Clone, Copy)]
pub enum Answer<'a> {
    /// Approved with this capability (its encoded form, sealed to the broker).
    Approve {
        /// The capability.
        capability: &'a str,
    },
    /// Denied.
    Deny,
}

/// Which approvals a listing returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalFilter {
    /// Pending ones only.
    Pending,
    /// All, newest first.
    All,
}

/// Whose listing it is: a member sees the calls they may answer (personal credentials of
/// theirs; shared ones if an admin) and those of their own agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Viewer {
    /// The member.
    pub member: MemberId,
    /// Whether they are an admin.
    pub admin: bool,
}

const COLUMNS: &str =
    "workspace_id, id, agent_id, credential_id, credential_owner, agent_owner, credential_name,
     method, host, path, query_keys, body_size, policy_ids, status, created_at, expires_at,
     decided_at, decided_by_device";

impl Store {
    /// Records a held call as pending, and deletes the workspace's approvals decided more than
    /// [`APPROVAL_HISTORY_SECS`] ago.
    pub async fn create_approval(&self, new: &NewApproval) -> Result<(), StoreError> {
        let encode = |v: &[String]| {
            serde_json::to_string(v).map_err(|e| StoreError::Corrupt(format!("unencodable: {e}")))
        };
        let mut tx = self.begin(new.workspace, Lock::None).await?;
        sqlx::query(
            "DELETE FROM approvals
             WHERE workspace_id = $1 AND status <> 'pending' AND decided_at < $2",
        )
        .bind(new.workspace.to_string())
        .bind(as_i64(new.now.saturating_sub(APPROVAL_HISTORY_SECS)))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO approvals (workspace_id, id, agent_id, credential_id, credential_owner,
                 credential_name, method, host, path, query_keys, body_size, policy_ids, status,
                 created_at, expires_at, agent_owner)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'pending', $13, $14,
                 $15)",
        )
        .bind(new.workspace.to_string())
        .bind(new.id.to_string())
        .bind(new.agent.to_string())
        .bind(new.credential.to_string())
        .bind(new.credential_owner.map(|m| m.to_string()))
        .bind(&new.credential_name)
        .bind(&new.method)
        .bind(&new.host)
        .bind(&new.path)
        .bind(encode(&new.query_keys)?)
        .bind(new.body_size.map(as_i64))
        .bind(encode(&new.policy_ids)?)
        .bind(as_i64(new.now))
        .bind(as_i64(new.expires_at))
        .bind(new.agent_owner.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// One approval of `workspace`.
    pub async fn approval(
        &self,
        workspace: WorkspaceId,
        id: ApprovalId,
    ) -> Result<Option<ApprovalRecord>, StoreError> {
        let mut tx = self.begin(workspace, Lock::None).await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM approvals WHERE workspace_id = $1 AND id = $2"
        )))
        .bind(workspace.to_string())
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(approval_record).transpose()
    }

    /// Up to `limit` approvals of `workspace`, newest first: those pending, and those decided
    /// within [`APPROVAL_HISTORY_SECS`] of `now` (seconds).
    pub async fn approvals(
        &self,
        workspace: WorkspaceId,
        filter: ApprovalFilter,
        viewer: Option<Viewer>,
        now: u64,
        limit: u32,
    ) -> Result<Vec<ApprovalRecord>, StoreError> {
        // Rows decided before the history window are left to the next held call to delete; they
        // are not listed meanwhile, however long no call is held. Which rows the viewer may see
        // is part of the query, so the limit counts theirs, not the workspace's.
        // Pending ones by the `approvals_pending` index; `$5`, the history window, only for all.
        let which = match filter {
            ApprovalFilter::Pending => "status = 'pending'",
            ApprovalFilter::All => "(status = 'pending' OR decided_at >= $5)",
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM approvals
             WHERE workspace_id = $1 AND {which}
               AND ($3 IS NULL OR credential_owner = $3 OR agent_owner = $3
                    OR ($4 = 1 AND credential_owner IS NULL))
             ORDER BY created_at DESC, id LIMIT $2"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(workspace.to_string())
            .bind(i64::from(limit))
            .bind(viewer.map(|v| v.member.to_string()))
            .bind(i64::from(viewer.is_some_and(|v| v.admin)));
        if filter == ApprovalFilter::All {
            query = query.bind(as_i64(now.saturating_sub(APPROVAL_HISTORY_SECS)));
        }
        let mut tx = self.begin(workspace, Lock::None).await?;
        let rows = query.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        rows.iter().map(approval_record).collect()
    }

    /// Answers a pending approval that has not expired. `false`: it is no longer pending (or
    /// expired, or unknown), and nothing changed.
    pub async fn answer_approval(
        &self,
        workspace: WorkspaceId,
        id: ApprovalId,
        device: DeviceId,
        answer: Answer<'_>,
        now: u64,
    ) -> Result<bool, StoreError> {
        let (status, capability) = match answer {
            Answer::Approve { capability } => (ApprovalStatus::Approved, Some(capability)),
            Answer::Deny => (ApprovalStatus::Denied, None),
        };
        let mut tx = self.begin(workspace, Lock::None).await?;
        let changed = sqlx::query(
            "UPDATE approvals SET status = $3, decided_at = $4, decided_by_device = $5,
                 capability = $6
             WHERE workspace_id = $1 AND id = $2 AND status = 'pending' AND expires_at >= $4",
        )
        .bind(workspace.to_string())
        .bind(id.to_string())
        .bind(status.as_str())
        .bind(as_i64(now))
        .bind(device.to_string())
        .bind(capability)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(changed == 1)
    }

    /// Marks a pending approval expired. `false`: it had already been answered.
    pub async fn expire_approval(
        &self,
        workspace: WorkspaceId,
        id: ApprovalId,
        now: u64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin(workspace, Lock::None).await?;
        let changed = sqlx::query(
            "UPDATE approvals SET status = 'expired', decided_at = $3
             WHERE workspace_id = $1 AND id = $2 AND status = 'pending'",
        )
        .bind(workspace.to_string())
        .bind(id.to_string())
        .bind(as_i64(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // Approved, but its holder gave up before taking the capability: no one will take it,
        // and a capability must not outlive its call in the database.
        sqlx::query(
            "UPDATE approvals SET capability = NULL
             WHERE workspace_id = $1 AND id = $2 AND status = 'approved' AND capability IS NOT NULL",
        )
        .bind(workspace.to_string())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(changed == 1)
    }

    /// Takes the capability of an approved approval, clearing it: only the first taker gets it.
    pub async fn take_approved_capability(
        &self,
        workspace: WorkspaceId,
        id: ApprovalId,
    ) -> Result<Option<String>, StoreError> {
        let mut tx = self.begin(workspace, Lock::Workspace).await?;
        let capability: Option<Option<String>> = sqlx::query_scalar(
            "SELECT capability FROM approvals
             WHERE workspace_id = $1 AND id = $2 AND status = 'approved'",
        )
        .bind(workspace.to_string())
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let capability = capability.flatten();
        if capability.is_some() {
            sqlx::query(
                "UPDATE approvals SET capability = NULL WHERE workspace_id = $1 AND id = $2",
            )
            .bind(workspace.to_string())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(capability)
    }

    /// Marks every pending approval of `workspace` whose deadline passed more than `grace`
    /// seconds ago expired: calls whose holder went away (a replica stopped) must not stay
    /// pending; approved ones whose holder went away before taking the capability lose it.
    /// Returns the approvals it expired, as they now stand.
    pub async fn expire_abandoned_approvals(
        &self,
        workspace: WorkspaceId,
        now: u64,
        grace: u64,
    ) -> Result<Vec<ApprovalRecord>, StoreError> {
        let mut tx = self.begin(workspace, Lock::None).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE approvals SET status = 'expired', decided_at = $2
             WHERE workspace_id = $1 AND status = 'pending' AND expires_at + $3 < $2
             RETURNING {COLUMNS}"
        )))
        .bind(workspace.to_string())
        .bind(as_i64(now))
        .bind(as_i64(grace))
        .fetch_all(&mut *tx)
        .await?;
        // Approved calls whose holder went away before taking the capability: dropped with them.
        sqlx::query(
            "UPDATE approvals SET capability = NULL
             WHERE workspace_id = $1 AND status = 'approved' AND capability IS NOT NULL
               AND expires_at + $3 < $2",
        )
        .bind(workspace.to_string())
        .bind(as_i64(now))
        .bind(as_i64(grace))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(approval_record).collect()
    }
}

fn approval_record(row: &AnyRow) -> Result<ApprovalRecord, StoreError> {
    let id: String = row.try_get("id")?;
    let corrupt = |what: &str| StoreError::Corrupt(format!("approval {id}: {what}"));
    let time = |v: i64, what: &str| u64::try_from(v).map_err(|_| corrupt(what));
    let list = |column: &str| -> Result<Vec<String>, StoreError> {
        serde_json::from_str(&row.try_get::<String, _>(column)?).map_err(|_| corrupt(column))
    };
    Ok(ApprovalRecord {
        workspace: row
            .try_get::<String, _>("workspace_id")?
            .parse()
            .map_err(|_| corrupt("workspace"))?,
        id: id.parse().map_err(|_| corrupt("id"))?,
        agent: row.try_get::<String, _>("agent_id")?.parse().map_err(|_| corrupt("agent"))?,
        credential: row
            .try_get::<String, _>("credential_id")?
            .parse()
            .map_err(|_| corrupt("credential"))?,
        credential_owner: row
            .try_get::<Option<String>, _>("credential_owner")?
            .map(|m| m.parse().map_err(|_| corrupt("credential owner")))
            .transpose()?,
        agent_owner: row
            .try_get::<Option<String>, _>("agent_owner")?
            .map(|m| m.parse().map_err(|_| corrupt("agent owner")))
            .transpose()?,
        credential_name: row.try_get("credential_name")?,
        method: row.try_get("method")?,
        host: row.try_get("host")?,
        path: row.try_get("path")?,
        query_keys: list("query_keys")?,
        body_size: row
            .try_get::<Option<i64>, _>("body_size")?
            .map(|v| time(v, "body_size"))
            .transpose()?,
        policy_ids: list("policy_ids")?,
        status: ApprovalStatus::parse(&row.try_get::<String, _>("status")?)
            .ok_or_else(|| corrupt("status"))?,
        created_at: time(row.try_get("created_at")?, "created_at")?,
        expires_at: time(row.try_get("expires_at")?, "expires_at")?,
        decided_at: row
            .try_get::<Option<i64>, _>("decided_at")?
            .map(|v| time(v, "decided_at"))
            .transpose()?,
        decided_by: row
            .try_get::<Option<String>, _>("decided_by_device")?
            .map(|d| d.parse().map_err(|_| corrupt("deciding device")))
            .transpose()?,
    })
}
