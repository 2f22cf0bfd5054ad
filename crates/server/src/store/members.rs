//! Members, their devices, invites, and the wrapped keys devices hand to each other.
//!
//! INVARIANT: every workspace keeps at least one active admin with at least one active device.
//! Workspace creation establishes it; every operation that removes a device or a member or
//! changes a role checks it inside its own transaction, after its writes, and rolls back if the
//! write would break it. Without it nobody could invite, remove or promote anyone again.
//!
//! Write transactions hold the workspace's write lock (`Lock::Workspace`) from their first
//! statement: checks made inside them (an invite is still unused, an admin remains, a limit is
//! not reached) cannot be invalidated by a concurrent writer before the commit.

use latchkey_core::ids::{AgentId, DeviceId, InviteId, MemberId, Owner, WorkspaceId};
use latchkey_core::keys::{WrappedKey, WrappedKind};
use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::devices::Role;
use super::nonces::as_i64;
use super::{LimitReached, Lock, Store, StoreError, reaches};

/// Most active members a workspace may have: a large company's team, not a directory.
pub const MAX_MEMBERS: usize = 1000;

/// Most active devices one member may have: laptops, desktops and a few servers or CI runners
/// with a profile of their own.
pub const MAX_DEVICES_PER_MEMBER: usize = 20;

/// Most pending invites a workspace may have: unused, unexpired, and made by a device not removed
/// since (an invite dies with the device that made it). Each admits one device; a team that
/// onboards many people at once sends a few dozen.
pub const MAX_PENDING_INVITES: usize = 100;

/// The columns [`device_record`] reads, in order, of a `devices d` row.
macro_rules! device_columns {
    () => {
        "d.id, d.member_id, d.name, d.created_at, d.signing_key, d.exchange_key"
    };
}

/// What accepting an invite does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteFor {
    /// Creates a new member with this role.
    NewMember(Role),
    /// Adds another device to this existing member, who keeps their role.
    Device(MemberId),
}

/// An invite about to be stored.
#[derive(Debug)]
pub struct NewInvite {
    /// The workspace it admits to.
    pub workspace: WorkspaceId,
    /// Its id, for listing and revoking it.
    pub id: InviteId,
    /// SHA-256 of the code (the code itself is never stored).
    pub code_hash: [u8; 32],
    /// What accepting it does.
    pub invite_for: InviteFor,
    /// The device that created it; the invite is void once that device is removed.
    pub created_by: DeviceId,
    /// Creation time.
    pub now: u64,
    /// After this instant the invite is refused.
    pub expires_at: u64,
}

/// An invite could not be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InviteError {
    /// The member the invite names is not an active member of the workspace.
    #[error("no such member in this workspace")]
    UnknownMember,
    /// The workspace already has [`MAX_PENDING_INVITES`] pending invites, or the invite could
    /// not be used: the workspace has [`MAX_MEMBERS`] members (a new-member invite), or the
    /// member it names has [`MAX_DEVICES_PER_MEMBER`] devices (a device invite).
    #[error(transparent)]
    Limit(#[from] LimitReached),
}

/// A pending invite: unused, unexpired, and still usable (its creating device and member are
/// active, the creator still has the authority it spoke with, a device invite's member is active).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteRecord {
    /// The invite.
    pub id: InviteId,
    /// What accepting it does.
    pub invite_for: InviteFor,
    /// The device that created it.
    pub created_by: DeviceId,
    /// That device's member.
    pub created_by_member: MemberId,
    /// Creation time.
    pub created_at: u64,
    /// After this instant the invite is refused.
    pub expires_at: u64,
}

/// An invite could not be revoked; nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RevokeInviteError {
    /// No pending invite with this id in the workspace (never made, expired, revoked, or void
    /// because its creator's device or authority is gone).
    #[error("no pending invite with this id")]
    NotFound,
    /// The invite was already used: the device it admitted is enrolled.
    #[error("the invite was already used")]
    Used,
    /// The revoker may revoke only invites made by their own devices, and this one was not.
    #[error("the invite was made by another member")]
    NotYours,
}

/// A device joining a workspace with an invite.
#[derive(Debug)]
pub struct Join {
    /// SHA-256 of the submitted code.
    pub code_hash: [u8; 32],
    /// The member the device joins as: new for a member invite, the named one for a device invite.
    pub member: MemberId,
    /// The new member's display name; ignored when the device joins an existing member.
    pub member_name: Option<String>,
    /// The joining device.
    pub device: DeviceId,
    /// The device's display name.
    pub device_name: String,
    /// The device's Ed25519 public key.
    pub signing_key: [u8; 32],
    /// The device's X25519 public key.
    pub exchange_key: [u8; 32],
    /// The current time.
    pub now: u64,
}

/// A device that joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined {
    /// The workspace it joined.
    pub workspace: WorkspaceId,
    /// Its member.
    pub member: MemberId,
    /// The member's role.
    pub role: Role,
    /// Whether the join created the member (`false`: a device added to an existing member).
    pub new_member: bool,
}

/// A join was refused; nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The code is unknown, used or expired, or the device that created it, the member it names,
    /// or (for a new-member invite) its creator's admin role is gone. One variant on purpose: the
    /// caller learns nothing about which.
    #[error("the invite code is not valid")]
    InvalidInvite,
    /// A new member needs a name.
    #[error("a new member needs a name")]
    NameRequired,
    /// The invite adds a device to a member other than the one the request names.
    #[error("the invite adds a device to another member")]
    OtherMember,
    /// The workspace already has (or had) a member with this id.
    #[error("a member with this id exists")]
    MemberIdTaken,
    /// A device with this id exists (in any workspace).
    #[error("a device with this id exists")]
    DeviceIdTaken,
    /// The workspace has [`MAX_MEMBERS`] members (joining as a new member), or the member has
    /// [`MAX_DEVICES_PER_MEMBER`] devices (joining as another device). Only said to a device
    /// whose invite is valid.
    #[error(transparent)]
    Limit(#[from] LimitReached),
}

/// A device as other devices see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// The device.
    pub id: DeviceId,
    /// Its member.
    pub member: MemberId,
    /// Display name.
    pub name: String,
    /// Enrolment time.
    pub created_at: u64,
    /// Ed25519 public key.
    pub signing_key: [u8; 32],
    /// X25519 public key.
    pub exchange_key: [u8; 32],
    /// Whether the device (or its member) was removed.
    pub removed: bool,
}

/// An active member and their active devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    /// The member.
    pub id: MemberId,
    /// Display name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// When they joined.
    pub created_at: u64,
    /// Their active devices, oldest first.
    pub devices: Vec<DeviceRecord>,
}

/// A wrapped key addressed to a device, with the device that wrapped it.
#[derive(Debug, Clone)]
pub struct DeliveredKey {
    /// The wrapped key (its header names the sender).
    pub key: WrappedKey,
    /// The sending device, removed or not; `None` if no such device exists in the workspace.
    pub sender: Option<DeviceRecord>,
}

/// How many wrapped keys a batch stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrapSummary {
    /// Newly stored.
    pub stored: usize,
    /// Already stored with the same bytes.
    pub unchanged: usize,
}

/// What removing a member did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRemoval {
    /// Devices removed.
    pub devices: u64,
    /// Her agents, revoked.
    pub agents: Vec<AgentId>,
    /// The names of her personal credentials, deleted.
    pub credentials: Vec<String>,
}

/// A batch of wrapped keys was refused; nothing was stored. `index` is the position in the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WrapError {
    /// The recipient is not an active device of the workspace.
    #[error("wrapped key {index}: the recipient is not an active device of this workspace")]
    UnknownRecipient {
        /// Position in the batch.
        index: usize,
    },
    /// A member key addressed to a device of another member.
    #[error("wrapped key {index}: a member key can only be wrapped to that member's own devices")]
    NotOwnersDevice {
        /// Position in the batch.
        index: usize,
    },
    /// A key of a version after the scope's current one: new versions arrive only with the
    /// rotation that makes them current (`POST /v1/rotations`), so a version stored ahead of it
    /// could block that rotation.
    #[error("wrapped key {index}: version {version} is after the current one ({current})")]
    AheadOfCurrent {
        /// Position in the batch.
        index: usize,
        /// The key's version.
        version: u32,
        /// The scope's current version.
        current: u32,
    },
    /// Different bytes are already stored for the same recipient, key and version.
    #[error(
        "wrapped key {index}: a different wrapped key is already stored for this recipient, key and version"
    )]
    Conflict {
        /// Position in the batch.
        index: usize,
    },
}

/// A removal or role change was refused; nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MembershipError {
    /// No such active member or device in the workspace.
    #[error("not found")]
    NotFound,
    /// The change would leave no active admin with an active device.
    #[error("the workspace would be left without an admin device")]
    LastAdmin,
}

/// Active members of workspace `$1`.
const ACTIVE_MEMBERS: &str =
    "SELECT count(*) FROM members WHERE workspace_id = $1 AND removed_at IS NULL";

/// Active devices of member `$2` of workspace `$1`.
const ACTIVE_DEVICES: &str = "SELECT count(*) FROM devices
     WHERE workspace_id = $1 AND member_id = $2 AND removed_at IS NULL";

/// Whether workspace `ws` has [`MAX_MEMBERS`] active members.
async fn members_full(tx: &mut sqlx::AnyConnection, ws: &str) -> Result<bool, StoreError> {
    let members = sqlx::query_scalar::<_, i64>(ACTIVE_MEMBERS).bind(ws).fetch_one(tx).await?;
    Ok(reaches(members, MAX_MEMBERS))
}

/// Whether `member` of workspace `ws` has [`MAX_DEVICES_PER_MEMBER`] active devices.
async fn devices_full(
    tx: &mut sqlx::AnyConnection,
    ws: &str,
    member: &str,
) -> Result<bool, StoreError> {
    let devices =
        sqlx::query_scalar::<_, i64>(ACTIVE_DEVICES).bind(ws).bind(member).fetch_one(tx).await?;
    Ok(reaches(devices, MAX_DEVICES_PER_MEMBER))
}

/// Pending invites of workspace `$1` at time `$2`: unused, unexpired, and made by a device that
/// was not removed since.
const PENDING_INVITES: &str = "SELECT count(*) FROM invites i
     JOIN devices d ON d.workspace_id = i.workspace_id AND d.id = i.created_by
     WHERE i.workspace_id = $1 AND i.used_at IS NULL AND i.expires_at > $2
       AND d.removed_at IS NULL";

/// The columns [`invite_record`] reads, in order, of `invites i` joined to its creating device
/// `d`, from the pending invites of workspace `$1` at time `$2`: unused, unexpired, made by an
/// active device of an active member who still has the authority the invite speaks with (an
/// admin, or for a device invite the invited member themself), and for a device invite naming an
/// active member. Joining checks the same (see [`Store::join`]).
macro_rules! pending_invites {
    () => {
        "SELECT i.id, i.role, i.member_id, i.created_by, d.member_id, i.created_at, i.expires_at
         FROM invites i
         JOIN devices d ON d.workspace_id = i.workspace_id AND d.id = i.created_by
         JOIN members m ON m.workspace_id = d.workspace_id AND m.id = d.member_id
         WHERE i.workspace_id = $1 AND i.used_at IS NULL AND i.expires_at > $2
           AND d.removed_at IS NULL AND m.removed_at IS NULL
           AND (m.role = 'admin' OR i.member_id = m.id)
           AND (i.member_id IS NULL OR EXISTS (
                SELECT 1 FROM members t
                WHERE t.workspace_id = i.workspace_id AND t.id = i.member_id
                  AND t.removed_at IS NULL))"
    };
}

/// Active admins that still have an active device; see the module's invariant.
const ADMINS_WITH_DEVICES: &str = "SELECT count(*) FROM members m
     WHERE m.workspace_id = $1 AND m.role = 'admin' AND m.removed_at IS NULL
       AND EXISTS (SELECT 1 FROM devices d
                   WHERE d.workspace_id = m.workspace_id AND d.member_id = m.id
                     AND d.removed_at IS NULL)";

impl Store {
    /// Stores an invite. A device invite must name an active member of the workspace. Refused
    /// when the workspace has [`MAX_PENDING_INVITES`] pending invites, and when the invite could
    /// not be used anyway: a new-member invite in a workspace of [`MAX_MEMBERS`] members, a
    /// device invite for a member with [`MAX_DEVICES_PER_MEMBER`] devices (joining checks both
    /// again).
    pub async fn create_invite(
        &self,
        new: NewInvite,
    ) -> Result<Result<(), InviteError>, StoreError> {
        let mut tx = self.begin(new.workspace, Lock::Workspace).await?;
        let ws = new.workspace.to_string();
        // Expired invites are dead weight; used ones stay as a record of who joined with what.
        sqlx::query(
            "DELETE FROM invites WHERE workspace_id = $1 AND used_at IS NULL AND expires_at <= $2",
        )
        .bind(&ws)
        .bind(as_i64(new.now))
        .execute(&mut *tx)
        .await?;
        let (role, member) = match new.invite_for {
            InviteFor::NewMember(role) => {
                if members_full(&mut tx, &ws).await? {
                    return Ok(Err(LimitReached::Members.into()));
                }
                (Some(role.as_str()), None)
            }
            InviteFor::Device(member) => {
                let active = sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM members
                     WHERE workspace_id = $1 AND id = $2 AND removed_at IS NULL",
                )
                .bind(&ws)
                .bind(member.to_string())
                .fetch_one(&mut *tx)
                .await?;
                if active == 0 {
                    return Ok(Err(InviteError::UnknownMember));
                }
                if devices_full(&mut tx, &ws, &member.to_string()).await? {
                    return Ok(Err(LimitReached::Devices.into()));
                }
                (None, Some(member.to_string()))
            }
        };
        let pending = sqlx::query_scalar::<_, i64>(PENDING_INVITES)
            .bind(&ws)
            .bind(as_i64(new.now))
            .fetch_one(&mut *tx)
            .await?;
        if reaches(pending, MAX_PENDING_INVITES) {
            return Ok(Err(LimitReached::Invites.into()));
        }
        sqlx::query(
            "INSERT INTO invites (workspace_id, id, code_hash, role, member_id, created_by, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&ws)
        .bind(new.id.to_string())
        .bind(&new.code_hash[..])
        .bind(role)
        .bind(member)
        .bind(new.created_by.to_string())
        .bind(as_i64(new.now))
        .bind(as_i64(new.expires_at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// The workspace's pending invites (see [`InviteRecord`]), oldest first (those of one second by id).
    pub async fn pending_invites(
        &self,
        workspace: WorkspaceId,
        now: u64,
    ) -> Result<Vec<InviteRecord>, StoreError> {
        let mut tx = self.begin(workspace, Lock::None).await?;
        let rows = sqlx::query(concat!(pending_invites!(), " ORDER BY i.created_at, i.id"))
            .bind(workspace.to_string())
            .bind(as_i64(now))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        rows.iter().map(invite_record).collect()
    }

    /// Revokes a pending invite: its code is refused from now on. `by`: the member revoking, who
    /// may revoke only invites their own devices made; `None` for an admin, who may revoke any.
    /// Returns the revoked invite.
    pub async fn revoke_invite(
        &self,
        workspace: WorkspaceId,
        id: InviteId,
        by: Option<MemberId>,
        now: u64,
    ) -> Result<Result<InviteRecord, RevokeInviteError>, StoreError> {
        let ws = workspace.to_string();
        let id_text = id.to_string();
        let mut tx = self.begin(workspace, Lock::Workspace).await?;
        let row = sqlx::query(concat!(pending_invites!(), " AND i.id = $3"))
            .bind(&ws)
            .bind(as_i64(now))
            .bind(&id_text)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            let used = sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM invites
                 WHERE workspace_id = $1 AND id = $2 AND used_at IS NOT NULL",
            )
            .bind(&ws)
            .bind(&id_text)
            .fetch_one(&mut *tx)
            .await?;
            return Ok(Err(if used > 0 {
                RevokeInviteError::Used
            } else {
                RevokeInviteError::NotFound
            }));
        };
        let invite = invite_record(&row)?;
        if by.is_some_and(|member| member != invite.created_by_member) {
            return Ok(Err(RevokeInviteError::NotYours));
        }
        // A revoked invite leaves no row: its code is refused exactly like one never made, and
        // the audit log keeps the revocation.
        sqlx::query("DELETE FROM invites WHERE workspace_id = $1 AND id = $2 AND used_at IS NULL")
            .bind(&ws)
            .bind(&id_text)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Ok(invite))
    }

    /// Redeems an invite: creates the member (for a new-member invite) and the device, and marks
    /// the invite used, all in one transaction.
    pub async fn join(&self, join: Join) -> Result<Result<Joined, JoinError>, StoreError> {
        let _invalidate = self.hot.invalidate_on_drop();
        // The code is all the caller has: the lookup names the workspace to lock and read.
        let workspace = sqlx::query_scalar::<_, String>(
            "SELECT workspace_id FROM invite_workspaces WHERE code_hash = $1",
        )
        .bind(&join.code_hash[..])
        .fetch_optional(&self.pool)
        .await?;
        let Some(workspace) = workspace else { return Ok(Err(JoinError::InvalidInvite)) };
        let workspace: WorkspaceId = workspace
            .parse()
            .map_err(|_| StoreError::Corrupt("invite lookup: workspace id".into()))?;
        let mut tx = self.begin(workspace, Lock::Workspace).await?;
        let Some(invite) = sqlx::query(
            "SELECT i.workspace_id, i.role, i.member_id, m.id, m.role
             FROM invites i
             JOIN devices d ON d.workspace_id = i.workspace_id AND d.id = i.created_by
             JOIN members m ON m.workspace_id = d.workspace_id AND m.id = d.member_id
             WHERE i.code_hash = $1 AND i.used_at IS NULL AND i.expires_at > $2
               AND d.removed_at IS NULL AND m.removed_at IS NULL",
        )
        .bind(&join.code_hash[..])
        .bind(as_i64(join.now))
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(Err(JoinError::InvalidInvite));
        };
        let corrupt = |what: &str| StoreError::Corrupt(format!("invite: {what}"));
        let creator: MemberId =
            invite.get::<String, _>(3).parse().map_err(|_| corrupt("creator"))?;
        let creator_role =
            Role::parse(&invite.get::<String, _>(4)).ok_or_else(|| corrupt("creator role"))?;
        let invite_for = invite_for(invite.get(1), invite.get(2))?;
        // The invite speaks with its creator's authority, which must still hold.
        let authorised = match invite_for {
            InviteFor::NewMember(_) => creator_role == Role::Admin,
            InviteFor::Device(member) => creator_role == Role::Admin || creator == member,
        };
        if !authorised {
            return Ok(Err(JoinError::InvalidInvite));
        }

        let ws = workspace.to_string();
        let member = join.member.to_string();
        let now = as_i64(join.now);
        let (role, new_member) = match invite_for {
            InviteFor::NewMember(role) => {
                let Some(name) = &join.member_name else {
                    return Ok(Err(JoinError::NameRequired));
                };
                let taken = sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM members WHERE workspace_id = $1 AND id = $2",
                )
                .bind(&ws)
                .bind(&member)
                .fetch_one(&mut *tx)
                .await?;
                if taken > 0 {
                    return Ok(Err(JoinError::MemberIdTaken));
                }
                if members_full(&mut tx, &ws).await? {
                    return Ok(Err(LimitReached::Members.into()));
                }
                sqlx::query(
                    "INSERT INTO members (workspace_id, id, name, role, key_version, created_at)
                     VALUES ($1, $2, $3, $4, 1, $5)",
                )
                .bind(&ws)
                .bind(&member)
                .bind(name)
                .bind(role.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?;
                (role, true)
            }
            InviteFor::Device(invited) => {
                if invited != join.member {
                    return Ok(Err(JoinError::OtherMember));
                }
                let role = sqlx::query_scalar::<_, String>(
                    "SELECT role FROM members WHERE workspace_id = $1 AND id = $2 AND removed_at IS NULL",
                )
                .bind(&ws)
                .bind(&member)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(role) = role else {
                    // The member was removed after the invite was created: the invite died too.
                    return Ok(Err(JoinError::InvalidInvite));
                };
                if devices_full(&mut tx, &ws, &member).await? {
                    return Ok(Err(LimitReached::Devices.into()));
                }
                (Role::parse(&role).ok_or_else(|| corrupt("member role"))?, false)
            }
        };

        let device = join.device.to_string();
        // Device ids are unique across workspaces: the lookup sees every workspace's.
        let taken = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM device_workspaces WHERE device_id = $1",
        )
        .bind(&device)
        .fetch_one(&mut *tx)
        .await?;
        if taken > 0 {
            return Ok(Err(JoinError::DeviceIdTaken));
        }
        sqlx::query(
            "INSERT INTO devices (workspace_id, id, member_id, name, signing_key, exchange_key, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&ws)
        .bind(&device)
        .bind(&member)
        .bind(&join.device_name)
        .bind(&join.signing_key[..])
        .bind(&join.exchange_key[..])
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let used = sqlx::query(
            "UPDATE invites SET used_at = $2, used_by_device = $3
             WHERE code_hash = $1 AND used_at IS NULL",
        )
        .bind(&join.code_hash[..])
        .bind(now)
        .bind(&device)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if used != 1 {
            // Unreachable while this transaction holds the write lock; refuse rather than admit
            // twice if that ever changes.
            return Ok(Err(JoinError::InvalidInvite));
        }
        tx.commit().await?;
        Ok(Ok(Joined { workspace, member: join.member, role, new_member }))
    }

    /// The workspace's active members with their active devices, in the order they joined.
    pub async fn members(&self, workspace: WorkspaceId) -> Result<Vec<MemberRecord>, StoreError> {
        let ws = workspace.to_string();
        let mut tx = self.begin(workspace, Lock::None).await?;
        let rows = sqlx::query(
            "SELECT id, name, role, created_at FROM members
             WHERE workspace_id = $1 AND removed_at IS NULL ORDER BY created_at, rowid",
        )
        .bind(&ws)
        .fetch_all(&mut *tx)
        .await?;
        let mut members = Vec::with_capacity(rows.len());
        for row in rows {
            let corrupt = |what: &str| StoreError::Corrupt(format!("member row: {what}"));
            members.push(MemberRecord {
                id: row.get::<String, _>(0).parse().map_err(|_| corrupt("id"))?,
                name: row.get(1),
                role: Role::parse(&row.get::<String, _>(2)).ok_or_else(|| corrupt("role"))?,
                created_at: time(row.get(3)).ok_or_else(|| corrupt("created_at"))?,
                devices: Vec::new(),
            });
        }
        let devices = sqlx::query(concat!(
            "SELECT ",
            device_columns!(),
            " FROM devices d
             WHERE d.workspace_id = $1 AND d.removed_at IS NULL ORDER BY d.created_at, d.rowid"
        ))
        .bind(&ws)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        for row in &devices {
            let device = device_record(row, false)?;
            // Devices of removed members are removed with them, so every active device has an
            // active member; a stray one is skipped rather than shown without its member.
            if let Some(member) = members.iter_mut().find(|m| m.id == device.member) {
                member.devices.push(device);
            }
        }
        Ok(members)
    }

    /// An active device of an active member of `workspace`.
    pub async fn device(
        &self,
        workspace: WorkspaceId,
        id: DeviceId,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        let mut tx = self.begin(workspace, Lock::None).await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            device_columns!(),
            " FROM devices d
             JOIN members m ON m.workspace_id = d.workspace_id AND m.id = d.member_id
             WHERE d.workspace_id = $1 AND d.id = $2
               AND d.removed_at IS NULL AND m.removed_at IS NULL"
        ))
        .bind(workspace.to_string())
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.map(|row| device_record(&row, false)).transpose()
    }

    /// Stores wrapped keys addressed to active devices of `workspace`, all or none.
    ///
    /// The caller has checked what the request alone decides (framing, sender, workspace, member
    /// key owner); this checks what the database decides: each recipient is an active device of
    /// the workspace, a member key goes only to its owner's devices, and a key already stored under
    /// the same coordinates has the same bytes (then it counts as unchanged).
    pub async fn put_wrapped_keys(
        &self,
        workspace: WorkspaceId,
        keys: &[WrappedKey],
        now: u64,
    ) -> Result<Result<WrapSummary, WrapError>, StoreError> {
        let mut tx = self.begin(workspace, Lock::Workspace).await?;
        let ws = workspace.to_string();
        let mut summary = WrapSummary { stored: 0, unchanged: 0 };
        // Each scope's current key version, read once per batch (the workspace lock holds it).
        let mut current_versions: std::collections::HashMap<String, i64> =
            std::collections::HashMap::new();
        for (index, wrapped) in keys.iter().enumerate() {
            let h = wrapped.header();
            let recipient = h.recipient.to_string();
            let recipient_member = sqlx::query_scalar::<_, String>(
                "SELECT d.member_id FROM devices d
                 JOIN members m ON m.workspace_id = d.workspace_id AND m.id = d.member_id
                 WHERE d.workspace_id = $1 AND d.id = $2
                   AND d.removed_at IS NULL AND m.removed_at IS NULL",
            )
            .bind(&ws)
            .bind(&recipient)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(recipient_member) = recipient_member else {
                return Ok(Err(WrapError::UnknownRecipient { index }));
            };
            let (kind, owner) = coordinates(h.owner);
            if h.kind == WrappedKind::Member && owner != recipient_member {
                return Ok(Err(WrapError::NotOwnersDevice { index }));
            }
            let current = match current_versions.get(&owner) {
                Some(current) => *current,
                None => {
                    let current = current_version(&mut tx, &ws, h.kind, &owner).await?;
                    current_versions.insert(owner.clone(), current);
                    current
                }
            };
            if i64::from(h.version.get()) > current {
                return Ok(Err(WrapError::AheadOfCurrent {
                    index,
                    version: h.version.get(),
                    current: u32::try_from(current).unwrap_or(u32::MAX),
                }));
            }
            let inserted = sqlx::query(
                "INSERT INTO wrapped_keys (workspace_id, recipient_device, kind, owner, key_version, bytes, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (workspace_id, recipient_device, kind, owner, key_version) DO NOTHING",
            )
            .bind(&ws)
            .bind(&recipient)
            .bind(kind)
            .bind(&owner)
            .bind(i64::from(h.version.get()))
            .bind(wrapped.as_bytes())
            .bind(as_i64(now))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 1 {
                summary.stored += 1;
                continue;
            }
            let existing = sqlx::query_scalar::<_, Vec<u8>>(
                "SELECT bytes FROM wrapped_keys
                 WHERE workspace_id = $1 AND recipient_device = $2 AND kind = $3 AND owner = $4
                   AND key_version = $5",
            )
            .bind(&ws)
            .bind(&recipient)
            .bind(kind)
            .bind(&owner)
            .bind(i64::from(h.version.get()))
            .fetch_one(&mut *tx)
            .await?;
            if existing != wrapped.as_bytes() {
                return Ok(Err(WrapError::Conflict { index }));
            }
            summary.unchanged += 1;
        }
        tx.commit().await?;
        Ok(Ok(summary))
    }

    /// The wrapped keys addressed to `device`, with the devices that wrapped them; workspace keys
    /// first, then member keys, each by version.
    pub async fn wrapped_keys_for(
        &self,
        workspace: WorkspaceId,
        device: DeviceId,
    ) -> Result<Vec<DeliveredKey>, StoreError> {
        let mut tx = self.begin(workspace, Lock::None).await?;
        let rows = sqlx::query(
            "SELECT bytes FROM wrapped_keys WHERE workspace_id = $1 AND recipient_device = $2
             ORDER BY kind DESC, owner, key_version",
        )
        .bind(workspace.to_string())
        .bind(device.to_string())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut delivered = Vec::with_capacity(rows.len());
        for row in rows {
            let key = WrappedKey::parse(&row.get::<Vec<u8>, _>(0))
                .map_err(|e| StoreError::Corrupt(format!("wrapped key of device {device}: {e}")))?;
            let sender = self.any_device(workspace, key.header().sender).await?;
            delivered.push(DeliveredKey { key, sender });
        }
        Ok(delivered)
    }

    /// Removes an active device and deletes the wrapped keys addressed to it.
    pub async fn remove_device(
        &self,
        workspace: WorkspaceId,
        device: DeviceId,
        now: u64,
    ) -> Result<Result<(), MembershipError>, StoreError> {
        let _invalidate = self.hot.invalidate_on_drop();
        let mut tx = self.begin(workspace, Lock::Workspace).await?;
        let ws = workspace.to_string();
        let id = device.to_string();
        let removed = sqlx::query(
            "UPDATE devices SET removed_at = $3
             WHERE workspace_id = $1 AND id = $2 AND removed_at IS NULL
               AND member_id IN (SELECT id FROM members WHERE workspace_id = $1 AND removed_at IS NULL)",
        )
        .bind(&ws)
        .bind(&id)
        .bind(as_i64(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if removed == 0 {
            return Ok(Err(MembershipError::NotFound));
        }
        if !admin_remains(&mut tx, &ws).await? {
            return Ok(Err(MembershipError::LastAdmin));
        }
        sqlx::query("DELETE FROM wrapped_keys WHERE workspace_id = $1 AND recipient_device = $2")
            .bind(&ws)
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Removes an active member and all their devices, and deletes the wrapped keys addressed to
    /// those devices. Returns how many devices were removed.
    pub async fn remove_member(
        &self,
        workspace: WorkspaceId,
        member: MemberId,
        now: u64,
    ) -> Result<Result<MemberRemoval, MembershipError>, StoreError> {
        let _invalidate = self.hot.invalidate_on_drop();
        let mut tx = self.begin(workspace, Lock::Workspace).await?;
        let ws = workspace.to_string();
        let id = member.to_string();
        let removed = sqlx::query(
            "UPDATE members SET removed_at = $3
             WHERE workspace_id = $1 AND id = $2 AND removed_at IS NULL",
        )
        .bind(&ws)
        .bind(&id)
        .bind(as_i64(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if removed == 0 {
            return Ok(Err(MembershipError::NotFound));
        }
        let devices = sqlx::query(
            "UPDATE devices SET removed_at = $3
             WHERE workspace_id = $1 AND member_id = $2 AND removed_at IS NULL",
        )
        .bind(&ws)
        .bind(&id)
        .bind(as_i64(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if !admin_remains(&mut tx, &ws).await? {
            return Ok(Err(MembershipError::LastAdmin));
        }
        sqlx::query(
            "DELETE FROM wrapped_keys WHERE workspace_id = $1 AND recipient_device IN
               (SELECT id FROM devices WHERE workspace_id = $1 AND member_id = $2)",
        )
        .bind(&ws)
        .bind(&id)
        .execute(&mut *tx)
        .await?;
        // What only this member could use goes with her: her agents are revoked, and her
        // personal credentials (sealed under a member key that only her devices held, so no one
        // can open them now) are deleted with their grants, which frees their names.
        let agents: Vec<String> = sqlx::query_scalar(
            "UPDATE agents SET revoked_at = $3
             WHERE workspace_id = $1 AND owner_member_id = $2 AND revoked_at IS NULL
             RETURNING id",
        )
        .bind(&ws)
        .bind(&id)
        .bind(as_i64(now))
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE grants SET revoked_at = $3
             WHERE workspace_id = $1 AND revoked_at IS NULL AND credential_id IN
               (SELECT id FROM credentials WHERE workspace_id = $1 AND owner_member_id = $2)",
        )
        .bind(&ws)
        .bind(&id)
        .bind(as_i64(now))
        .execute(&mut *tx)
        .await?;
        let credentials: Vec<String> = sqlx::query_scalar(
            "DELETE FROM credentials WHERE workspace_id = $1 AND owner_member_id = $2
             RETURNING name",
        )
        .bind(&ws)
        .bind(&id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let agents = agents
            .iter()
            .map(|a| a.parse().map_err(|_| StoreError::Corrupt(format!("agent id {a:?}"))))
            .collect::<Result<_, _>>()?;
        Ok(Ok(MemberRemoval { devices, agents, credentials }))
    }

    /// Changes an active member's role.
    pub async fn set_role(
        &self,
        workspace: WorkspaceId,
        member: MemberId,
        role: Role,
    ) -> Result<Result<(), MembershipError>, StoreError> {
        let _invalidate = self.hot.invalidate_on_drop();
        let mut tx = self.begin(workspace, Lock::Workspace).await?;
        let ws = workspace.to_string();
        let changed = sqlx::query(
            "UPDATE members SET role = $3 WHERE workspace_id = $1 AND id = $2 AND removed_at IS NULL",
        )
        .bind(&ws)
        .bind(member.to_string())
        .bind(role.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Ok(Err(MembershipError::NotFound));
        }
        if !admin_remains(&mut tx, &ws).await? {
            return Ok(Err(MembershipError::LastAdmin));
        }
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// A device of `workspace`, removed or not.
    async fn any_device(
        &self,
        workspace: WorkspaceId,
        id: DeviceId,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        let mut tx = self.begin(workspace, Lock::None).await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            device_columns!(),
            ", CASE WHEN d.removed_at IS NULL AND m.removed_at IS NULL THEN 0 ELSE 1 END
             FROM devices d
             JOIN members m ON m.workspace_id = d.workspace_id AND m.id = d.member_id
             WHERE d.workspace_id = $1 AND d.id = $2"
        ))
        .bind(workspace.to_string())
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.map(|row| device_record(&row, row.get::<i64, _>(6) != 0)).transpose()
    }
}

fn device_record(row: &AnyRow, removed: bool) -> Result<DeviceRecord, StoreError> {
    let id = row.get::<String, _>(0);
    let corrupt = |what: &str| StoreError::Corrupt(format!("device {id}: {what}"));
    Ok(DeviceRecord {
        id: id.parse().map_err(|_| corrupt("id"))?,
        member: row.get::<String, _>(1).parse().map_err(|_| corrupt("member id"))?,
        name: row.get(2),
        created_at: time(row.get(3)).ok_or_else(|| corrupt("created_at"))?,
        signing_key: row.get::<Vec<u8>, _>(4).try_into().map_err(|_| corrupt("signing key"))?,
        exchange_key: row.get::<Vec<u8>, _>(5).try_into().map_err(|_| corrupt("exchange key"))?,
        removed,
    })
}

/// The `kind` and `owner` columns of a wrapped key. `WrappedKey::parse` admits only a workspace
/// key owned by `Shared` and a member key owned by a member, so the owner decides both.
/// The current key version of a wrapped key's scope: the workspace's, or its owner's.
async fn current_version(
    tx: &mut super::Tx,
    workspace: &str,
    kind: WrappedKind,
    owner: &str,
) -> Result<i64, StoreError> {
    let version = match kind {
        WrappedKind::Workspace => {
            sqlx::query_scalar::<_, i64>("SELECT key_version FROM workspaces WHERE id = $1")
                .bind(workspace)
                .fetch_one(&mut **tx)
                .await?
        }
        WrappedKind::Member => {
            sqlx::query_scalar::<_, i64>(
                "SELECT key_version FROM members WHERE workspace_id = $1 AND id = $2",
            )
            .bind(workspace)
            .bind(owner)
            .fetch_one(&mut **tx)
            .await?
        }
    };
    Ok(version)
}

fn coordinates(owner: Owner) -> (&'static str, String) {
    match owner {
        Owner::Shared => ("workspace", "shared".to_owned()),
        Owner::Member(member) => ("member", member.to_string()),
    }
}

async fn admin_remains(tx: &mut super::Tx, workspace: &str) -> Result<bool, StoreError> {
    let admins = sqlx::query_scalar::<_, i64>(ADMINS_WITH_DEVICES)
        .bind(workspace)
        .fetch_one(&mut **tx)
        .await?;
    Ok(admins > 0)
}

/// What an invite row's `role` and `member_id` say accepting it does.
fn invite_for(role: Option<String>, member: Option<String>) -> Result<InviteFor, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("invite: {what}"));
    match (role, member) {
        (Some(role), None) => {
            Ok(InviteFor::NewMember(Role::parse(&role).ok_or_else(|| corrupt("role"))?))
        }
        (None, Some(member)) => {
            Ok(InviteFor::Device(member.parse().map_err(|_| corrupt("member id"))?))
        }
        _ => Err(corrupt("role and member")),
    }
}

/// An invite read with the columns of `pending_invites!`.
fn invite_record(row: &AnyRow) -> Result<InviteRecord, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("invite: {what}"));
    Ok(InviteRecord {
        id: row.get::<String, _>(0).parse().map_err(|_| corrupt("id"))?,
        invite_for: invite_for(row.get(1), row.get(2))?,
        created_by: row.get::<String, _>(3).parse().map_err(|_| corrupt("creator device"))?,
        created_by_member: row.get::<String, _>(4).parse().map_err(|_| corrupt("creator"))?,
        created_at: time(row.get(5)).ok_or_else(|| corrupt("created_at"))?,
        expires_at: time(row.get(6)).ok_or_else(|| corrupt("expires_at"))?,
    })
}

fn time(secs: i64) -> Option<u64> {
    u64::try_from(secs).ok()
}
