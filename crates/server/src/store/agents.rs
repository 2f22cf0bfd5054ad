//! Agents (identified by the hash of their token) and standing grants (the revocable reuse
//! windows of standing capabilities).
//!
//! The agent token itself never reaches this module: only its [`TokenHash`]. A grant row holds
//! no key either: the capability it belongs to stays with the agent; the row only lets the
//! broker refuse that capability once the grant is revoked.
//!
//! Ended grants (revoked or expired) are history, kept for [`GRANT_HISTORY_SECS`]: each new grant
//! deletes its workspace's grants that ended longer ago, so the table holds the live grants plus
//! about a month of ended ones however many `latchkey run`s register theirs. A capability whose
//! grant row is gone is refused like a revoked one; the audit chain keeps every grant's story.

use latchkey_core::capability::{Method, MethodSet, PathPattern};
use latchkey_core::ids::{AgentId, CredentialId, DeviceId, GrantId, MemberId, WorkspaceId};
use latchkey_core::token::TokenHash;
use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::credentials::is_unique_violation;
use super::nonces::as_i64;
use super::{LimitReached, Lock, Store, StoreError, reaches};

/// Most active (unrevoked) agents a workspace may have. Teams run a few agents per member;
/// revoked agents stay listed as history and do not count.
pub const MAX_ACTIVE_AGENTS: usize = 1000;

/// Most live (unrevoked, unexpired) standing grants one agent may have. `latchkey run` and
/// `latchkey proxy` register one per credential per run and revoke them at exit; even runs that
/// are killed leave theirs for hours (8 by default), not for good.
pub const MAX_LIVE_GRANTS_PER_AGENT: usize = 1000;

/// How long an ended (revoked or expired) grant stays listed before it is deleted: 30 days.
pub const GRANT_HISTORY_SECS: u64 = 30 * 24 * 60 * 60;

/// Which grants a listing holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantListing {
    /// Those still in force at this time (unix seconds): not revoked, not expired.
    LiveAt(u64),
    /// Those live at this time and those that ended within [`GRANT_HISTORY_SECS`] before it.
    RecentAt(u64),
}

/// An agent of a workspace.
#[derive(Debug, Clone)]
pub struct AgentRecord {
    /// Its workspace.
    pub workspace: WorkspaceId,
    /// The agent.
    pub id: AgentId,
    /// Display name.
    pub name: String,
    /// The member who created it and answers for it.
    pub owner: MemberId,
    /// When it was revoked; a revoked agent's token is refused.
    pub revoked_at: Option<u64>,
    /// Creation time.
    pub created_at: u64,
    /// When its token was last presented to the proxy (to the second).
    pub last_used_at: Option<u64>,
}

/// A standing grant: the row behind a standing capability's grant id.
#[derive(Debug, Clone)]
pub struct GrantRecord {
    /// Its workspace.
    pub workspace: WorkspaceId,
    /// Chosen by the issuing device; the capability's grant id.
    pub id: GrantId,
    /// The agent the capability is for.
    pub agent: AgentId,
    /// The credential it opens.
    pub credential: CredentialId,
    /// The device that issued (signed) the capability.
    pub issued_by: DeviceId,
    /// The capability's expiry (unix seconds).
    pub expires_at: u64,
    /// When it was revoked.
    pub revoked_at: Option<u64>,
    /// The methods the capability allows (as registered; the capability's own claims rule).
    pub methods: MethodSet,
    /// The path patterns the capability allows (as registered).
    pub path_patterns: Vec<PathPattern>,
    /// Registration time.
    pub created_at: u64,
}

/// A grant to register.
#[derive(Debug)]
pub struct NewGrant {
    /// Its workspace.
    pub workspace: WorkspaceId,
    /// The capability's grant id.
    pub id: GrantId,
    /// The agent.
    pub agent: AgentId,
    /// The credential.
    pub credential: CredentialId,
    /// The issuing device (the caller).
    pub issued_by: DeviceId,
    /// Allowed methods.
    pub methods: MethodSet,
    /// Allowed path patterns (1 to 16).
    pub path_patterns: Vec<PathPattern>,
    /// Expiry.
    pub expires_at: u64,
    /// Registration time.
    pub now: u64,
}

/// Why a grant was not registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GrantWriteError {
    /// The grant id is taken in this workspace.
    #[error("a grant with this id already exists; generate a new grant id")]
    IdTaken,
    /// The agent was revoked or deleted meanwhile.
    #[error("the agent was revoked; create a new agent")]
    AgentRevoked,
    /// The credential was deleted meanwhile.
    #[error("no such credential")]
    CredentialGone,
    /// The agent already has [`MAX_LIVE_GRANTS_PER_AGENT`] live grants.
    #[error(transparent)]
    Limit(#[from] LimitReached),
}

/// The columns every query of this table selects, in [`agent_record`]'s order.
macro_rules! agent_columns {
    () => {
        "workspace_id, id, name, owner_member_id, revoked_at, created_at, last_used_at"
    };
}
/// The columns every query of this table selects, in [`grant_record`]'s order.
macro_rules! grant_columns {
    () => {
        "workspace_id, id, agent_id, credential_id, issued_by_device, methods, path_patterns, expires_at, created_at, revoked_at"
    };
}

impl Store {
    /// Creates an agent owned by `owner`, identified by the hash of its token, unless the
    /// workspace already has [`MAX_ACTIVE_AGENTS`] active agents.
    pub async fn create_agent(
        &self,
        workspace: WorkspaceId,
        id: AgentId,
        name: &str,
        owner: MemberId,
        token_hash: &TokenHash,
        now: u64,
    ) -> Result<Result<AgentRecord, LimitReached>, StoreError> {
        let ws = workspace.to_string();
        let mut tx = self.begin(workspace, Lock::Workspace).await?;
        let active = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM agents WHERE workspace_id = $1 AND revoked_at IS NULL",
        )
        .bind(&ws)
        .fetch_one(&mut *tx)
        .await?;
        if reaches(active, MAX_ACTIVE_AGENTS) {
            return Ok(Err(LimitReached::Agents));
        }
        // Only now: a refusal writes nothing, so it leaves the proxy's read cache warm.
        let _invalidate = self.hot.invalidate_on_drop();
        sqlx::query(
            "INSERT INTO agents (workspace_id, id, name, owner_member_id, token_hash, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&ws)
        .bind(id.to_string())
        .bind(name)
        .bind(owner.to_string())
        .bind(&token_hash.as_bytes()[..])
        .bind(as_i64(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok(AgentRecord {
            workspace,
            id,
            name: name.to_owned(),
            owner,
            revoked_at: None,
            created_at: now,
            last_used_at: None,
        }))
    }

    /// The agent whose token hashes to `hash`, revoked or not (the caller tells the two apart).
    pub async fn agent_by_token_hash(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<AgentRecord>, StoreError> {
        // The token is all the caller has: the lookup names its workspace, and the row itself is
        // read scoped to that workspace.
        let workspace = sqlx::query_scalar::<_, String>(
            "SELECT workspace_id FROM agent_token_workspaces WHERE token_hash = $1",
        )
        .bind(&hash.as_bytes()[..])
        .fetch_optional(&self.pool)
        .await?;
        let Some(workspace) = workspace else { return Ok(None) };
        let workspace: WorkspaceId = workspace
            .parse()
            .map_err(|_| StoreError::Corrupt("agent token lookup: workspace id".into()))?;
        let mut tx = self.begin(workspace, Lock::None).await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            agent_columns!(),
            " FROM agents WHERE workspace_id = $1 AND token_hash = $2"
        ))
        .bind(workspace.to_string())
        .bind(&hash.as_bytes()[..])
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(agent_record).transpose()
    }

    /// The agent `id` of `workspace`.
    pub async fn agent(
        &self,
        workspace: WorkspaceId,
        id: AgentId,
    ) -> Result<Option<AgentRecord>, StoreError> {
        let mut tx = self.begin(workspace, Lock::None).await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            agent_columns!(),
            " FROM agents WHERE workspace_id = $1 AND id = $2"
        ))
        .bind(workspace.to_string())
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(agent_record).transpose()
    }

    /// The agent `id` of `workspace` if its token hashes to `hash` (revoked or not): a device
    /// proving it holds an agent's token without sending it. Another workspace's agent, or a hash
    /// of another agent's token, is `None`.
    pub async fn agent_with_token_hash(
        &self,
        workspace: WorkspaceId,
        id: AgentId,
        hash: &TokenHash,
    ) -> Result<Option<AgentRecord>, StoreError> {
        let mut tx = self.begin(workspace, Lock::None).await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            agent_columns!(),
            " FROM agents WHERE workspace_id = $1 AND id = $2 AND token_hash = $3"
        ))
        .bind(workspace.to_string())
        .bind(id.to_string())
        .bind(&hash.as_bytes()[..])
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(agent_record).transpose()
    }

    /// The workspace's agents, or only `owner`'s, oldest first.
    pub async fn agents(
        &self,
        workspace: WorkspaceId,
        owner: Option<MemberId>,
    ) -> Result<Vec<AgentRecord>, StoreError> {
        let mut tx = self.begin(workspace, Lock::None).await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            agent_columns!(),
            " FROM agents
             WHERE workspace_id = $1 AND ($2 IS NULL OR owner_member_id = $2)
             ORDER BY created_at, id"
        ))
        .bind(workspace.to_string())
        .bind(owner.map(|m| m.to_string()))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(agent_record).collect()
    }

    /// Records that the agent's token was just used. At most one write per agent per second.
    pub async fn touch_agent(
        &self,
        workspace: WorkspaceId,
        agent: AgentId,
        now: u64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin(workspace, Lock::None).await?;
        sqlx::query(
            "UPDATE agents SET last_used_at = $3
             WHERE workspace_id = $1 AND id = $2 AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(workspace.to_string())
        .bind(agent.to_string())
        .bind(as_i64(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces an unrevoked agent's token hash; the old token stops working with this write.
    /// Returns `false` if the agent does not exist or was revoked.
    pub async fn replace_agent_token(
        &self,
        workspace: WorkspaceId,
        agent: AgentId,
        token_hash: &TokenHash,
    ) -> Result<bool, StoreError> {
        let _invalidate = self.hot.invalidate_on_drop();
        let mut tx = self.begin(workspace, Lock::None).await?;
        let replaced = sqlx::query(
            "UPDATE agents SET token_hash = $3
             WHERE workspace_id = $1 AND id = $2 AND revoked_at IS NULL",
        )
        .bind(workspace.to_string())
        .bind(agent.to_string())
        .bind(&token_hash.as_bytes()[..])
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(replaced == 1)
    }

    /// Revokes an agent and all its grants (a revoked agent stays revoked; revoking again keeps
    /// the first time). Returns whether the agent exists.
    pub async fn revoke_agent(
        &self,
        workspace: WorkspaceId,
        agent: AgentId,
        now: u64,
    ) -> Result<bool, StoreError> {
        let _invalidate = self.hot.invalidate_on_drop();
        let mut tx = self.begin(workspace, Lock::None).await?;
        let found = sqlx::query(
            "UPDATE agents SET revoked_at = COALESCE(revoked_at, $3) WHERE workspace_id = $1 AND id = $2",
        )
        .bind(workspace.to_string())
        .bind(agent.to_string())
        .bind(as_i64(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "UPDATE grants SET revoked_at = $3
             WHERE workspace_id = $1 AND agent_id = $2 AND revoked_at IS NULL",
        )
        .bind(workspace.to_string())
        .bind(agent.to_string())
        .bind(as_i64(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(found == 1)
    }

    /// Registers a standing grant, if the agent is still unrevoked and the credential still
    /// exists (both checked by the inserting statement), unless the agent already has
    /// [`MAX_LIVE_GRANTS_PER_AGENT`] live grants.
    pub async fn create_grant(
        &self,
        new: NewGrant,
    ) -> Result<Result<GrantRecord, GrantWriteError>, StoreError> {
        let methods: Vec<&str> = new.methods.iter().map(Method::as_str).collect();
        let patterns: Vec<&str> = new.path_patterns.iter().map(PathPattern::as_str).collect();
        let encode = |v: &[&str]| {
            serde_json::to_string(v).map_err(|e| StoreError::Corrupt(format!("unencodable: {e}")))
        };
        let mut tx = self.begin(new.workspace, Lock::Workspace).await?;
        let live = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM grants
             WHERE workspace_id = $1 AND agent_id = $2 AND revoked_at IS NULL AND expires_at > $3",
        )
        .bind(new.workspace.to_string())
        .bind(new.agent.to_string())
        .bind(as_i64(new.now))
        .fetch_one(&mut *tx)
        .await?;
        if reaches(live, MAX_LIVE_GRANTS_PER_AGENT) {
            return Ok(Err(LimitReached::Grants.into()));
        }
        // Only now: a refusal writes nothing, so it leaves the proxy's read cache warm.
        let _invalidate = self.hot.invalidate_on_drop();
        sqlx::query(
            "DELETE FROM grants WHERE workspace_id = $1 AND (revoked_at < $2 OR expires_at < $2)",
        )
        .bind(new.workspace.to_string())
        .bind(as_i64(new.now.saturating_sub(GRANT_HISTORY_SECS)))
        .execute(&mut *tx)
        .await?;
        let inserted = sqlx::query(
            "INSERT INTO grants (workspace_id, id, agent_id, credential_id, issued_by_device, methods,
                 path_patterns, expires_at, created_at)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9
             WHERE EXISTS (SELECT 1 FROM agents WHERE workspace_id = $1 AND id = $3 AND revoked_at IS NULL)
               AND EXISTS (SELECT 1 FROM credentials WHERE workspace_id = $1 AND id = $4)",
        )
        .bind(new.workspace.to_string())
        .bind(new.id.to_string())
        .bind(new.agent.to_string())
        .bind(new.credential.to_string())
        .bind(new.issued_by.to_string())
        .bind(encode(&methods)?)
        .bind(encode(&patterns)?)
        .bind(as_i64(new.expires_at))
        .bind(as_i64(new.now))
        .execute(&mut *tx)
        .await;
        if inserted.is_ok() {
            tx.commit().await?;
        }
        match inserted {
            Ok(done) if done.rows_affected() == 1 => {}
            Ok(_) => {
                let agent_live = self
                    .agent(new.workspace, new.agent)
                    .await?
                    .is_some_and(|a| a.revoked_at.is_none());
                return Ok(Err(if agent_live {
                    GrantWriteError::CredentialGone
                } else {
                    GrantWriteError::AgentRevoked
                }));
            }
            Err(e) if is_unique_violation(&e) => return Ok(Err(GrantWriteError::IdTaken)),
            Err(e) => return Err(e.into()),
        }
        Ok(Ok(GrantRecord {
            workspace: new.workspace,
            id: new.id,
            agent: new.agent,
            credential: new.credential,
            issued_by: new.issued_by,
            expires_at: new.expires_at,
            revoked_at: None,
            methods: new.methods,
            path_patterns: new.path_patterns,
            created_at: new.now,
        }))
    }

    /// The grant `grant` of `workspace`, revoked or not.
    pub async fn grant(
        &self,
        workspace: WorkspaceId,
        grant: GrantId,
    ) -> Result<Option<GrantRecord>, StoreError> {
        let mut tx = self.begin(workspace, Lock::None).await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            grant_columns!(),
            " FROM grants WHERE workspace_id = $1 AND id = $2"
        ))
        .bind(workspace.to_string())
        .bind(grant.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(grant_record).transpose()
    }

    /// Grants of the workspace, as `listing` says, narrowed to one agent and/or to the agents
    /// `owner` owns, newest first.
    pub async fn grants(
        &self,
        workspace: WorkspaceId,
        agent: Option<AgentId>,
        owner: Option<MemberId>,
        listing: GrantListing,
    ) -> Result<Vec<GrantRecord>, StoreError> {
        // $4: live (unrevoked, expiring after it); recent: live then, or ended at or after it.
        let (sql, at) = match listing {
            GrantListing::LiveAt(now) => (
                concat!("SELECT ", grant_columns!(), " FROM grants g
                 WHERE g.workspace_id = $1 AND ($2 IS NULL OR g.agent_id = $2)
                   AND ($3 IS NULL OR EXISTS (SELECT 1 FROM agents a WHERE a.workspace_id = g.workspace_id
                                              AND a.id = g.agent_id AND a.owner_member_id = $3))
                   AND g.revoked_at IS NULL AND g.expires_at > $4
                 ORDER BY g.created_at DESC, g.id"),
                now,
            ),
            GrantListing::RecentAt(now) => (
                concat!("SELECT ", grant_columns!(), " FROM grants g
                 WHERE g.workspace_id = $1 AND ($2 IS NULL OR g.agent_id = $2)
                   AND ($3 IS NULL OR EXISTS (SELECT 1 FROM agents a WHERE a.workspace_id = g.workspace_id
                                              AND a.id = g.agent_id AND a.owner_member_id = $3))
                   AND (g.revoked_at IS NULL OR g.revoked_at >= $4) AND g.expires_at >= $4
                 ORDER BY g.created_at DESC, g.id"),
                now.saturating_sub(GRANT_HISTORY_SECS),
            ),
        };
        let mut tx = self.begin(workspace, Lock::None).await?;
        let rows = sqlx::query(sql)
            .bind(workspace.to_string())
            .bind(agent.map(|a| a.to_string()))
            .bind(owner.map(|m| m.to_string()))
            .bind(as_i64(at))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        rows.iter().map(grant_record).collect()
    }

    /// Revokes a grant (revoking again keeps the first time); returns whether it exists. The
    /// next request with its capability is refused.
    pub async fn revoke_grant(
        &self,
        workspace: WorkspaceId,
        grant: GrantId,
        now: u64,
    ) -> Result<bool, StoreError> {
        let _invalidate = self.hot.invalidate_on_drop();
        let mut tx = self.begin(workspace, Lock::None).await?;
        let found = sqlx::query(
            "UPDATE grants SET revoked_at = COALESCE(revoked_at, $3) WHERE workspace_id = $1 AND id = $2",
        )
        .bind(workspace.to_string())
        .bind(grant.to_string())
        .bind(as_i64(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(found == 1)
    }
}

fn agent_record(row: &AnyRow) -> Result<AgentRecord, StoreError> {
    let id: String = row.try_get("id")?;
    let corrupt = |what: &str| StoreError::Corrupt(format!("agent {id}: {what}"));
    let time = |v: i64, what: &str| u64::try_from(v).map_err(|_| corrupt(what));
    Ok(AgentRecord {
        workspace: row
            .try_get::<String, _>("workspace_id")?
            .parse()
            .map_err(|_| corrupt("workspace"))?,
        id: id.parse().map_err(|_| corrupt("id"))?,
        name: row.try_get("name")?,
        owner: row
            .try_get::<String, _>("owner_member_id")?
            .parse()
            .map_err(|_| corrupt("owner"))?,
        revoked_at: row
            .try_get::<Option<i64>, _>("revoked_at")?
            .map(|v| time(v, "revoked_at"))
            .transpose()?,
        created_at: time(row.try_get("created_at")?, "created_at")?,
        last_used_at: row
            .try_get::<Option<i64>, _>("last_used_at")?
            .map(|v| time(v, "last_used_at"))
            .transpose()?,
    })
}

fn grant_record(row: &AnyRow) -> Result<GrantRecord, StoreError> {
    let id: String = row.try_get("id")?;
    let corrupt = |what: &str| StoreError::Corrupt(format!("grant {id}: {what}"));
    let time = |v: i64, what: &str| u64::try_from(v).map_err(|_| corrupt(what));
    let list = |column: &str| -> Result<Vec<String>, StoreError> {
        serde_json::from_str(&row.try_get::<String, _>(column)?).map_err(|_| corrupt(column))
    };
    let methods: Vec<Method> = list("methods")?
        .iter()
        .map(|m| Method::parse(m).ok_or_else(|| corrupt("method")))
        .collect::<Result<_, _>>()?;
    let path_patterns = list("path_patterns")?
        .iter()
        .map(|p| PathPattern::parse(p).map_err(|_| corrupt("path pattern")))
        .collect::<Result<_, _>>()?;
    Ok(GrantRecord {
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
        issued_by: row
            .try_get::<String, _>("issued_by_device")?
            .parse()
            .map_err(|_| corrupt("issuing device"))?,
        expires_at: time(row.try_get("expires_at")?, "expires_at")?,
        revoked_at: row
            .try_get::<Option<i64>, _>("revoked_at")?
            .map(|v| time(v, "revoked_at"))
            .transpose()?,
        methods: MethodSet::of(&methods).ok_or_else(|| corrupt("no methods"))?,
        path_patterns,
        created_at: time(row.try_get("created_at")?, "created_at")?,
    })
}
