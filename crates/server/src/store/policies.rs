//! Cedar policies: one row per policy, always scoped by workspace.
//!
//! A workspace that has no policy rows gets the default policies the caller passes (in practice
//! [`crate::policy::DEFAULT_POLICIES`]) the first time its policies are read or changed, in the
//! same transaction as that change. So a new workspace starts with sensible defaults, and
//! deleting every policy brings them back; denying everything takes an explicit `forbid` or
//! disabling every policy.
//!
//! The store does not parse Cedar: the policy module validates every source before it reaches
//! [`Store::put_policy`], and compiles what [`Store::policies`] returns.

use latchkey_core::ids::{AgentId, CredentialId, MemberId, Owner, WorkspaceId};
use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::nonces::as_i64;
use super::{Lock, Store, StoreError};

/// A policy as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPolicy {
    /// The policy id, unique per workspace; also its Cedar policy id.
    pub id: String,
    /// What the policy is for, in the admin's words.
    pub description: String,
    /// Cedar source text of exactly one static policy.
    pub source: String,
    /// Disabled policies are kept but not evaluated.
    pub enabled: bool,
    /// Last change, unix seconds.
    pub updated_at: u64,
    /// The workspace's policy revision at the last change: never reused within a workspace, so
    /// an edit conditional on it cannot land on a policy deleted and created again meanwhile.
    pub revision: u64,
}

/// A policy to store (already validated by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewPolicy<'a> {
    /// The policy id.
    pub id: &'a str,
    /// What the policy is for.
    pub description: &'a str,
    /// Cedar source text of exactly one static policy.
    pub source: &'a str,
    /// Whether the policy is evaluated.
    pub enabled: bool,
}

/// What a change expects to find: the condition of a conditional edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// Whatever is there (an unconditional write).
    Anything,
    /// No policy with this id: create it, never replace one.
    Absent,
    /// The policy at exactly this revision, as the editor read it.
    Revision(u64),
}

impl Expected {
    /// `None` → [`Expected::Anything`]; `Some(0)` → [`Expected::Absent`]; `Some(n)` →
    /// [`Expected::Revision`] (revisions start at 1, so 0 names no revision).
    pub fn from_wire(revision: Option<u64>) -> Self {
        match revision {
            None => Self::Anything,
            Some(0) => Self::Absent,
            Some(n) => Self::Revision(n),
        }
    }
}

/// What [`Store::put_policy`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Put {
    /// Created (there was no policy with this id) or replaced.
    pub outcome: PutOutcome,
    /// The policy's new revision.
    pub revision: u64,
}

/// Whether [`Store::put_policy`] created or replaced the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// There was no policy with this id.
    Created,
    /// A policy with this id was replaced.
    Updated,
}

/// Why [`Store::put_policy`] or [`Store::delete_policy`] changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChangeRefused {
    /// A new policy, and the workspace already has the most it may have.
    #[error(
        "a workspace has at most {limit} policies; delete or merge policies no longer needed first (latchkey policy remove)"
    )]
    TooMany {
        /// The limit.
        limit: usize,
    },
    /// The policy is not at the revision the change expected.
    #[error("{0}")]
    Conflict(PolicyConflict),
    /// A deletion, and there is no policy with this id.
    #[error("no policy with this id")]
    NotFound,
}

/// A conditional change found the policy other than its editor read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PolicyConflict {
    /// Expected absent; a policy with this id exists.
    #[error(
        "a policy with this id already exists (revision {current}); read it and edit that one, or choose another id"
    )]
    Exists {
        /// Its revision.
        current: u64,
    },
    /// Expected a revision; the policy has another.
    #[error(
        "the policy was changed since you read revision {expected} (revision {current} now); read it again and reapply your change"
    )]
    Changed {
        /// The revision the change expected.
        expected: u64,
        /// The policy's revision.
        current: u64,
    },
    /// Expected a revision; the policy was deleted.
    #[error(
        "the policy was deleted since you read revision {expected}; create it again if it is still wanted"
    )]
    Deleted {
        /// The revision the change expected.
        expected: u64,
    },
}

impl PolicyConflict {
    /// The conflict between `expected` and a policy whose revision is `current` (`None`:
    /// absent), if the condition is not met.
    fn between(expected: Expected, current: Option<u64>) -> Option<Self> {
        match (expected, current) {
            (Expected::Anything, _) | (Expected::Absent, None) => None,
            (Expected::Absent, Some(current)) => Some(Self::Exists { current }),
            (Expected::Revision(expected), Some(current)) if expected == current => None,
            (Expected::Revision(expected), Some(current)) => {
                Some(Self::Changed { expected, current })
            }
            (Expected::Revision(expected), None) => Some(Self::Deleted { expected }),
        }
    }
}

/// What a policy sees of an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyAgent {
    /// Display name.
    pub name: String,
    /// The member who owns the agent.
    pub owner: MemberId,
}

/// What a policy sees of a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyCredential {
    /// The name used in `/p/{name}/...`.
    pub name: String,
    /// Provider catalog id.
    pub provider: String,
    /// Shared, or the member a personal credential belongs to.
    pub owner: Owner,
}

impl Store {
    /// The workspace's policies (enabled or not) ordered by id, installing `defaults` first if
    /// the workspace has none. An unknown workspace has none and gets none.
    pub async fn policies(
        &self,
        workspace: WorkspaceId,
        defaults: &[NewPolicy<'_>],
        now: u64,
    ) -> Result<Vec<StoredPolicy>, StoreError> {
        let rows = self.policy_rows(workspace).await?;
        if !rows.is_empty() {
            return Ok(rows);
        }
        let mut tx = self.begin(workspace, Lock::Workspace).await?;
        install_defaults(&mut tx, workspace, defaults, now).await?;
        tx.commit().await?;
        self.policy_rows(workspace).await
    }

    /// Creates or replaces the policy `policy.id` of `workspace`, if it is as `expected`. A new
    /// policy is refused when the workspace already has `limit` policies.
    pub async fn put_policy(
        &self,
        workspace: WorkspaceId,
        defaults: &[NewPolicy<'_>],
        policy: NewPolicy<'_>,
        expected: Expected,
        limit: usize,
        now: u64,
    ) -> Result<Result<Put, ChangeRefused>, StoreError> {
        let ws = workspace.to_string();
        let mut tx = self.begin(workspace, Lock::Workspace).await?;
        // A write first, so the transaction holds the write lock before it reads.
        install_defaults(&mut tx, workspace, defaults, now).await?;
        let (others, current) = policy_census(&mut tx, &ws, policy.id).await?;
        if let Some(conflict) = PolicyConflict::between(expected, current) {
            return Ok(Err(ChangeRefused::Conflict(conflict)));
        }
        if current.is_none() && usize::try_from(others).unwrap_or(usize::MAX) >= limit {
            return Ok(Err(ChangeRefused::TooMany { limit }));
        }
        let Some(revision) = next_revision(&mut tx, &ws).await? else {
            return Err(StoreError::Corrupt(format!("workspace {workspace}: no policy revision")));
        };
        sqlx::query(
            "INSERT INTO policies
               (workspace_id, id, description, source, enabled, updated_at, revision)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (workspace_id, id) DO UPDATE SET description = excluded.description,
               source = excluded.source, enabled = excluded.enabled,
               updated_at = excluded.updated_at, revision = excluded.revision",
        )
        .bind(&ws)
        .bind(policy.id)
        .bind(policy.description)
        .bind(policy.source)
        .bind(i64::from(policy.enabled))
        .bind(as_i64(now))
        .bind(as_i64(revision))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let outcome = if current.is_none() { PutOutcome::Created } else { PutOutcome::Updated };
        Ok(Ok(Put { outcome, revision }))
    }

    /// Deletes the policy `id` of `workspace`, if it is as `expected`
    /// ([`Expected::Absent`] is never met by a policy to delete).
    pub async fn delete_policy(
        &self,
        workspace: WorkspaceId,
        defaults: &[NewPolicy<'_>],
        id: &str,
        expected: Expected,
        now: u64,
    ) -> Result<Result<(), ChangeRefused>, StoreError> {
        let ws = workspace.to_string();
        let mut tx = self.begin(workspace, Lock::Workspace).await?;
        // The defaults count as present even before the workspace first read its policies.
        install_defaults(&mut tx, workspace, defaults, now).await?;
        let (_, current) = policy_census(&mut tx, &ws, id).await?;
        if current.is_none() {
            return Ok(Err(ChangeRefused::NotFound));
        }
        if let Some(conflict) = PolicyConflict::between(expected, current) {
            return Ok(Err(ChangeRefused::Conflict(conflict)));
        }
        // The counter moves on a deletion too: defaults installed after the last policy is
        // deleted take a revision no earlier policy had.
        next_revision(&mut tx, &ws).await?;
        sqlx::query("DELETE FROM policies WHERE workspace_id = $1 AND id = $2")
            .bind(&ws)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// The agent `agent` of `workspace` as policies see it, if it exists and is not revoked.
    pub async fn policy_agent(
        &self,
        workspace: WorkspaceId,
        agent: AgentId,
    ) -> Result<Option<PolicyAgent>, StoreError> {
        let mut tx = self.begin(workspace, Lock::None).await?;
        let row = sqlx::query(
            "SELECT name, owner_member_id FROM agents
             WHERE workspace_id = $1 AND id = $2 AND revoked_at IS NULL",
        )
        .bind(workspace.to_string())
        .bind(agent.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let Some(row) = row else { return Ok(None) };
        let owner = row
            .get::<String, _>(1)
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("agent {agent}: owner id")))?;
        Ok(Some(PolicyAgent { name: row.get(0), owner }))
    }

    /// The credential `credential` of `workspace` as policies see it, if it exists.
    pub async fn policy_credential(
        &self,
        workspace: WorkspaceId,
        credential: CredentialId,
    ) -> Result<Option<PolicyCredential>, StoreError> {
        let mut tx = self.begin(workspace, Lock::None).await?;
        let row = sqlx::query(
            "SELECT name, provider, owner_member_id FROM credentials
             WHERE workspace_id = $1 AND id = $2",
        )
        .bind(workspace.to_string())
        .bind(credential.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let Some(row) = row else { return Ok(None) };
        let owner =
            match row.get::<Option<String>, _>(2) {
                None => Owner::Shared,
                Some(member) => Owner::Member(member.parse().map_err(|_| {
                    StoreError::Corrupt(format!("credential {credential}: owner id"))
                })?),
            };
        Ok(Some(PolicyCredential { name: row.get(0), provider: row.get(1), owner }))
    }

    async fn policy_rows(&self, workspace: WorkspaceId) -> Result<Vec<StoredPolicy>, StoreError> {
        let mut tx = self.begin(workspace, Lock::None).await?;
        let rows = sqlx::query(
            "SELECT id, description, source, enabled, updated_at, revision FROM policies
             WHERE workspace_id = $1 ORDER BY id",
        )
        .bind(workspace.to_string())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(|row| policy_from_row(workspace, row)).collect()
    }
}

/// How many policies of workspace `ws` other than `id` there are, and `id`'s revision if it
/// exists.
async fn policy_census(
    tx: &mut sqlx::AnyConnection,
    ws: &str,
    id: &str,
) -> Result<(i64, Option<u64>), StoreError> {
    let (others, current) = sqlx::query_as::<_, (i64, Option<i64>)>(
        "SELECT count(*) FILTER (WHERE id <> $2), max(revision) FILTER (WHERE id = $2)
         FROM policies WHERE workspace_id = $1",
    )
    .bind(ws)
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    let current = current
        .map(|r| {
            u64::try_from(r).map_err(|_| StoreError::Corrupt(format!("policy {id}: revision")))
        })
        .transpose()?;
    Ok((others, current))
}

/// Moves workspace `ws`'s policy revision on by one and returns it; `None` if there is no such
/// workspace.
async fn next_revision(tx: &mut sqlx::AnyConnection, ws: &str) -> Result<Option<u64>, StoreError> {
    let revision: Option<i64> = sqlx::query_scalar(
        "UPDATE workspaces SET policy_revision = policy_revision + 1 WHERE id = $1
         RETURNING policy_revision",
    )
    .bind(ws)
    .fetch_optional(&mut *tx)
    .await?;
    revision
        .map(|r| {
            u64::try_from(r)
                .map_err(|_| StoreError::Corrupt(format!("workspace {ws}: policy revision")))
        })
        .transpose()
}

/// Inserts `defaults` if `workspace` exists and has no policy at all. The caller's transaction
/// holds the workspace's write lock ([`Lock::Workspace`]), so no concurrent transaction can slip a
/// policy in between the check and the inserts.
async fn install_defaults(
    tx: &mut sqlx::AnyConnection,
    workspace: WorkspaceId,
    defaults: &[NewPolicy<'_>],
    now: u64,
) -> Result<(), StoreError> {
    let ws = workspace.to_string();
    let mut first = true;
    for policy in defaults {
        // SQLite needs a WHERE before ON CONFLICT in INSERT ... SELECT (a parsing ambiguity).
        let statement = if first {
            "INSERT INTO policies
               (workspace_id, id, description, source, enabled, updated_at, revision)
             SELECT $1, $2, $3, $4, $5, $6, policy_revision FROM workspaces
             WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM policies WHERE workspace_id = $1)
             ON CONFLICT (workspace_id, id) DO NOTHING"
        } else {
            "INSERT INTO policies
               (workspace_id, id, description, source, enabled, updated_at, revision)
             SELECT $1, $2, $3, $4, $5, $6, policy_revision FROM workspaces WHERE id = $1
             ON CONFLICT (workspace_id, id) DO NOTHING"
        };
        let inserted = sqlx::query(statement)
            .bind(&ws)
            .bind(policy.id)
            .bind(policy.description)
            .bind(policy.source)
            .bind(i64::from(policy.enabled))
            .bind(as_i64(now))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if first && inserted == 0 {
            return Ok(());
        }
        first = false;
    }
    Ok(())
}

fn policy_from_row(workspace: WorkspaceId, row: &AnyRow) -> Result<StoredPolicy, StoreError> {
    let id: String = row.get(0);
    let corrupt =
        |field| StoreError::Corrupt(format!("policy {id} of workspace {workspace}: {field}"));
    let updated_at = u64::try_from(row.get::<i64, _>(4)).map_err(|_| corrupt("updated_at"))?;
    let revision = u64::try_from(row.get::<i64, _>(5)).map_err(|_| corrupt("revision"))?;
    Ok(StoredPolicy {
        description: row.get(1),
        source: row.get(2),
        enabled: row.get::<i64, _>(3) != 0,
        updated_at,
        revision,
        id,
    })
}
