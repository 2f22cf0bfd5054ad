//! Members, devices, invites, and the distribution of wrapped keys.
//!
//! Enrolling a device takes two people and two steps, because the broker must not be able to
//! slip in a key of its own:
//!
//! 1. An admin (or, for another device of their own, the member themself) creates a one-time
//!    invite code and reads it out. The new device joins with it (`POST /v1/join`, signed by the
//!    new device's own key) and shows its fingerprint; the inviting side fetches the device
//!    (`GET /v1/devices/{id}`), computes the fingerprint from the keys it received, and a human
//!    compares the two.
//! 2. Only then does an existing device wrap the workspace key (and, for the member's own devices,
//!    the member key) to the new device (`PUT /v1/wrapped-keys`), which fetches them
//!    (`GET /v1/wrapped-keys`) and opens them after checking the sender's signature.
//!
//! The broker checks who may address what to whom, but it never sees a key: it stores and hands
//! out wrapped keys whose framing it checks and whose contents it cannot open.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use latchkey_core::fingerprint::Fingerprint;
use latchkey_core::ids::{DeviceId, InviteId, KeyVersion, MemberId, Owner, WorkspaceId};
use latchkey_core::keys::{WrappedKey, WrappedKind};
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest as _, Sha256};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use zeroize::Zeroizing;

use super::credentials::{audit, audit_as};
use super::limit_reached;
use super::openapi::{DeviceErrors, RegistrationErrors, stand_in};
use super::wire::B64;
use super::workspaces::{DeviceRegistration, checked_name, exchange_key, verify_registration};
use crate::audit::AuditKind;
use crate::auth::{SelfSigned, Signed};
use crate::error::{ApiError, ErrorCode};
use crate::state::SharedState;
use crate::store::devices::Role;
use crate::store::members::{
    DeviceRecord, InviteError, InviteFor, InviteRecord, Join, JoinError, MembershipError,
    NewInvite, RevokeInviteError, WrapError,
};

/// Shortest invite lifetime: long enough to read a code out over a call.
const MIN_INVITE_SECS: u64 = 60;
/// Longest invite lifetime.
const MAX_INVITE_SECS: u64 = 7 * 24 * 60 * 60;
/// Invite lifetime when the request names none.
const DEFAULT_INVITE_SECS: u64 = 24 * 60 * 60;
/// Most wrapped keys one `PUT /v1/wrapped-keys` may carry.
const MAX_WRAPPED_KEYS: usize = 1000;

pub(super) fn routes() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new()
        .routes(routes!(create_invite, list_invites))
        .routes(routes!(revoke_invite))
        .routes(routes!(join))
        .routes(routes!(list_members))
        .routes(routes!(set_role, remove_member))
        .routes(routes!(device, remove_device))
        .routes(routes!(put_wrapped_keys, wrapped_keys))
}

// ---------------------------------------------------------------------------------------------
// Invites and joining
// ---------------------------------------------------------------------------------------------

/// The body of `POST /v1/invites`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateInvite {
    /// Role of the new member; `member` by default. Not allowed together with `member`.
    role: Option<Role>,
    /// Set: the invite adds another device to this existing member instead.
    #[schema(value_type = Option<stand_in::MemberId>)]
    member: Option<MemberId>,
    /// Lifetime of the code: 60 seconds to 7 days; 1 day by default.
    #[schema(minimum = 60, maximum = 604800)]
    expires_in_secs: Option<u64>,
}

/// A new invite code.
#[derive(Serialize, ToSchema)]
struct InviteCreated {
    /// The invite's id, to list and revoke it by (`GET /v1/invites`, `DELETE /v1/invites/{id}`).
    #[schema(value_type = stand_in::InviteId)]
    id: InviteId,
    /// Shown once; the broker keeps only its hash.
    #[schema(example = "7G3K-Q9M2-XW4T-8HJ1-C5RZ-0NPB-4D6F")]
    code: String,
    /// Unix seconds.
    expires_at: u64,
    /// For a new member: their role.
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<Role>,
    /// For another device of an existing member: that member.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<stand_in::MemberId>)]
    member: Option<MemberId>,
}

/// `POST /v1/invites`: a one-time code that admits one device.
///
/// Admins invite new members; a member may invite another device of their own.
#[utoipa::path(
    post,
    path = "/v1/invites",
    tag = "members",
    operation_id = "create_invite",
    security(("device_signature" = [])),
    request_body = CreateInvite,
    responses(
        (status = 201, description = "The code, shown once", body = InviteCreated),
        DeviceErrors,
        (status = 400, description = "`bad_request` or `invalid_request` (lifetime out of range, role given with member)", body = ApiError),
        (status = 403, description = "`forbidden`: only admins invite new members or other members' devices", body = ApiError),
        (status = 404, description = "`not_found`: no such member in the caller's workspace", body = ApiError),
        (status = 409, description = "`limit_reached`: the workspace has 100 pending invites, or the invite could not be used: the workspace has 1000 members (a new-member invite), or the member has 20 devices (a device invite)", body = ApiError),
    ),
)]
async fn create_invite(
    State(state): State<SharedState>,
    request: Signed<CreateInvite>,
) -> Result<(StatusCode, Json<InviteCreated>), ApiError> {
    let caller = request.caller;
    let body = request.body;
    let ttl = body.expires_in_secs.unwrap_or(DEFAULT_INVITE_SECS);
    if !(MIN_INVITE_SECS..=MAX_INVITE_SECS).contains(&ttl) {
        return Err(invalid(format!(
            "expires_in_secs must be between {MIN_INVITE_SECS} and {MAX_INVITE_SECS} (7 days)"
        )));
    }
    let invite_for = match (body.member, body.role) {
        (None, role) => {
            caller.require_admin()?;
            InviteFor::NewMember(role.unwrap_or(Role::Member))
        }
        (Some(member), None) => {
            // Members enrol their own devices; anyone else's take an admin.
            if member != caller.member {
                caller.require_admin()?;
            }
            InviteFor::Device(member)
        }
        (Some(_), Some(_)) => {
            return Err(invalid(
                "an invite for another device of an existing member keeps that member's role; \
                 leave out role",
            ));
        }
    };

    let code = InviteCode::generate()?;
    let id = InviteId::random();
    let now = state.now();
    let expires_at = now.saturating_add(ttl);
    state
        .store
        .create_invite(NewInvite {
            workspace: caller.workspace,
            id,
            code_hash: code.hash(),
            invite_for,
            created_by: caller.device,
            now,
            expires_at,
        })
        .await?
        .map_err(|e| match e {
            InviteError::UnknownMember => not_found("no such member in your workspace"),
            InviteError::Limit(limit) => limit_reached(&caller, limit),
        })?;
    tracing::info!(workspace = %caller.workspace, device = %caller.device, invite = %id, "invite created");
    let (role, member) = split_invite_for(invite_for);
    audit(&state, &caller, AuditKind::InviteCreated, |e| {
        e.subject = Some(invite_subject(id, invite_for));
    })
    .await;
    Ok((
        StatusCode::CREATED,
        Json(InviteCreated { id, code: code.text().to_owned(), expires_at, role, member }),
    ))
}

/// An invite's audit `subject`: what it admits, then its id.
fn invite_subject(id: InviteId, invite_for: InviteFor) -> String {
    match invite_for {
        InviteFor::NewMember(role) => format!("{}, invite {id}", role.as_str()),
        InviteFor::Device(member) => format!("device of {member}, invite {id}"),
    }
}

/// The wire's `role` (a new member's) and `member` (a device invite's) of an invite.
fn split_invite_for(invite_for: InviteFor) -> (Option<Role>, Option<MemberId>) {
    match invite_for {
        InviteFor::NewMember(role) => (Some(role), None),
        InviteFor::Device(member) => (None, Some(member)),
    }
}

/// A pending invite: unused, unexpired, and still usable.
#[derive(Serialize, ToSchema)]
struct InviteView {
    #[schema(value_type = stand_in::InviteId)]
    id: InviteId,
    /// For a new member: their role.
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<Role>,
    /// For another device of an existing member: that member.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<stand_in::MemberId>)]
    member: Option<MemberId>,
    /// The device that made it.
    #[schema(value_type = stand_in::DeviceId)]
    created_by: DeviceId,
    /// That device's member.
    #[schema(value_type = stand_in::MemberId)]
    created_by_member: MemberId,
    /// Unix seconds.
    created_at: u64,
    /// Unix seconds; the code is refused from then on.
    expires_at: u64,
}

impl From<InviteRecord> for InviteView {
    fn from(invite: InviteRecord) -> Self {
        let (role, member) = split_invite_for(invite.invite_for);
        Self {
            id: invite.id,
            role,
            member,
            created_by: invite.created_by,
            created_by_member: invite.created_by_member,
            created_at: invite.created_at,
            expires_at: invite.expires_at,
        }
    }
}

/// The pending invites the caller may see.
#[derive(Serialize, ToSchema)]
struct InviteList {
    invites: Vec<InviteView>,
}

/// `GET /v1/invites`: pending invites, oldest first (those of one second by id): every one for an
/// admin, a member's own (made by any of their devices) for a member.
///
/// An invite is pending while it is unused, unexpired and still usable: the device that made it
/// and its member are active, an invite for a new member was made by a member who is still an
/// admin, and a device invite's member is active. The codes themselves are never listed: the
/// broker keeps only their hashes.
#[utoipa::path(
    get,
    path = "/v1/invites",
    tag = "members",
    operation_id = "list_invites",
    security(("device_signature" = [])),
    responses(
        (status = 200, description = "The pending invites", body = InviteList),
        DeviceErrors,
    ),
)]
async fn list_invites(
    State(state): State<SharedState>,
    request: Signed<()>,
) -> Result<Json<InviteList>, ApiError> {
    let caller = request.caller;
    let invites = state.store.pending_invites(caller.workspace, state.now()).await?;
    let invites = invites
        .into_iter()
        .filter(|invite| caller.role == Role::Admin || invite.created_by_member == caller.member)
        .map(InviteView::from)
        .collect();
    Ok(Json(InviteList { invites }))
}

/// `DELETE /v1/invites/{id}`: revokes a pending invite; its code is refused from then on.
///
/// Admins revoke any invite; a member revokes the invites their own devices made.
#[utoipa::path(
    delete,
    path = "/v1/invites/{id}",
    tag = "members",
    operation_id = "revoke_invite",
    security(("device_signature" = [])),
    params(("id" = String, Path, format = "uuid", description = "The invite id (not the code)")),
    responses(
        (status = 204, description = "Revoked: the code is refused from now on"),
        DeviceErrors,
        (status = 400, description = "`invalid_request`: the id is not a lowercase UUID", body = ApiError),
        (status = 403, description = "`forbidden`: another member's invite, and the caller is not an admin", body = ApiError),
        (status = 404, description = "`not_found`: no pending invite with this id in the caller's workspace (expired, revoked, or void since its maker's device or role changed)", body = ApiError),
        (status = 409, description = "`conflict`: the invite was already used; remove the device it admitted instead", body = ApiError),
    ),
)]
async fn revoke_invite(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    request: Signed<()>,
) -> Result<StatusCode, ApiError> {
    let caller = request.caller;
    let id = path_id::<InviteId>(&id, "invite")?;
    let by = (caller.role != Role::Admin).then_some(caller.member);
    let invite = state.store.revoke_invite(caller.workspace, id, by, state.now()).await?.map_err(
        |e| match e {
            RevokeInviteError::Used => ApiError::new(
                ErrorCode::Conflict,
                "this invite was already used; to undo it, remove the device it admitted",
            ),
            RevokeInviteError::NotYours => ApiError::new(
                ErrorCode::Forbidden,
                "this invite was made by another member; only an admin can revoke it",
            ),
            RevokeInviteError::NotFound => not_found(
                "no pending invite with this id in your workspace: it may have expired, been \
                 revoked, or been voided by a change to the device or member that made it",
            ),
        },
    )?;
    tracing::info!(workspace = %caller.workspace, invite = %id, by = %caller.device, "invite revoked");
    audit(&state, &caller, AuditKind::InviteRevoked, |e| {
        e.subject = Some(invite_subject(id, invite.invite_for));
    })
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// The body of `POST /v1/join`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct JoinRequest {
    /// The invite code as read out (case, dashes and spaces do not matter).
    #[schema(value_type = String)]
    code: SubmittedCode,
    member: JoinMember,
    device: DeviceRegistration,
}

/// The member the joining device belongs to.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct JoinMember {
    /// A fresh id for a new member; the invited member's id for a device invite.
    #[schema(value_type = stand_in::MemberId)]
    id: MemberId,
    /// Required for a new member; ignored when a device joins an existing member.
    name: Option<String>,
}

/// The enrolled device.
#[derive(Serialize, ToSchema)]
struct JoinedResponse {
    #[schema(value_type = stand_in::WorkspaceId)]
    workspace: WorkspaceId,
    #[schema(value_type = stand_in::MemberId)]
    member: MemberId,
    #[schema(value_type = stand_in::DeviceId)]
    device: DeviceId,
    role: Role,
    /// Whether the invite created a new member (rather than adding a device to one).
    new_member: bool,
    /// The fingerprint of the keys the broker registered, for the humans to compare.
    #[schema(value_type = stand_in::Fingerprint)]
    fingerprint: Fingerprint,
}

/// `POST /v1/join`: enrols the signing device with an invite code.
///
/// Self-signed by the joining device (`keyid` = `device.id`, key from `device.signing_key`).
#[utoipa::path(
    post,
    path = "/v1/join",
    tag = "members",
    operation_id = "join",
    security(("device_signature" = [])),
    request_body = JoinRequest,
    responses(
        (status = 201, description = "The device is enrolled; compare the fingerprint", body = JoinedResponse),
        RegistrationErrors,
        (status = 400, description = "`bad_request` or `invalid_request` (bad key or name, member.name missing for a new member, another member's id for a device invite)", body = ApiError),
        (status = 403, description = "`invite_invalid`: the code is mistyped, used, expired or revoked", body = ApiError),
        (status = 409, description = "`conflict`: the member or device id is taken; `limit_reached` (only for a valid code): the workspace has 1000 members (a new-member invite) or the member has 20 devices (a device invite), and the code stays usable", body = ApiError),
    ),
)]
async fn join(
    State(state): State<SharedState>,
    request: SelfSigned<JoinRequest>,
) -> Result<(StatusCode, Json<JoinedResponse>), ApiError> {
    let body = &request.body;
    let device_key = verify_registration(&state, &request, &body.device).await?;
    let exchange = exchange_key(&body.device)?;
    let device_name = checked_name("device.name", &body.device.name)?;
    let member_name =
        body.member.name.as_deref().map(|n| checked_name("member.name", n)).transpose()?;
    // A code that does not even parse gets the same answer as an unknown one.
    let code_hash = InviteCode::parse(&body.code.0).ok_or_else(invalid_invite)?.hash();

    let signing = device_key.to_bytes();
    let joined = state
        .store
        .join(Join {
            code_hash,
            member: body.member.id,
            member_name,
            device: body.device.id,
            device_name,
            signing_key: signing,
            exchange_key: exchange,
            now: state.now(),
        })
        .await?
        .map_err(|e| match e {
            JoinError::NameRequired => invalid("member.name is required to join as a new member"),
            JoinError::OtherMember => invalid(
                "this invite adds a device to another member; use the member id it was created for",
            ),
            JoinError::MemberIdTaken => ApiError::new(
                ErrorCode::Conflict,
                "a member with this id exists in the workspace; generate a new member id",
            ),
            JoinError::DeviceIdTaken => ApiError::new(
                ErrorCode::Conflict,
                "a device with this id exists; generate a new device id",
            ),
            JoinError::Limit(limit) => {
                tracing::warn!(
                    member = %body.member.id, device = %body.device.id, limit = limit.name(),
                    "creation refused at a limit"
                );
                ApiError::from(limit)
            }
            _ => invalid_invite(),
        })?;
    tracing::info!(
        workspace = %joined.workspace, member = %joined.member, device = %body.device.id,
        new_member = joined.new_member, "device joined"
    );
    let kind = if joined.new_member { AuditKind::MemberJoined } else { AuditKind::DeviceJoined };
    audit_as(&state, joined.workspace, body.device.id, joined.member, kind, |e| {
        e.subject = Some(body.device.id.to_string());
    })
    .await;
    Ok((
        StatusCode::CREATED,
        Json(JoinedResponse {
            workspace: joined.workspace,
            member: joined.member,
            device: body.device.id,
            role: joined.role,
            new_member: joined.new_member,
            fingerprint: Fingerprint::of(&signing, &exchange),
        }),
    ))
}

fn invalid_invite() -> ApiError {
    ApiError::new(
        ErrorCode::InviteInvalid,
        "this invite code is not valid: it is mistyped, already used, expired or revoked; \
         ask an admin for a new one",
    )
}

// ---------------------------------------------------------------------------------------------
// Members and devices
// ---------------------------------------------------------------------------------------------

/// The workspace's members.
#[derive(Serialize, ToSchema)]
struct MemberList {
    members: Vec<MemberView>,
}

/// An active member and their active devices.
#[derive(Serialize, ToSchema)]
struct MemberView {
    #[schema(value_type = stand_in::MemberId)]
    id: MemberId,
    name: String,
    role: Role,
    created_at: u64,
    devices: Vec<DeviceSummary>,
}

/// An active device.
#[derive(Serialize, ToSchema)]
struct DeviceSummary {
    #[schema(value_type = stand_in::DeviceId)]
    id: DeviceId,
    name: String,
    created_at: u64,
    #[schema(value_type = stand_in::Fingerprint)]
    fingerprint: Fingerprint,
}

/// `GET /v1/members`: the workspace's active members and their active devices.
#[utoipa::path(
    get,
    path = "/v1/members",
    tag = "members",
    operation_id = "list_members",
    security(("device_signature" = [])),
    responses((status = 200, description = "Members and devices", body = MemberList), DeviceErrors),
)]
async fn list_members(
    State(state): State<SharedState>,
    request: Signed<()>,
) -> Result<Json<MemberList>, ApiError> {
    let members = state.store.members(request.caller.workspace).await?;
    let members = members
        .into_iter()
        .map(|m| MemberView {
            id: m.id,
            name: m.name,
            role: m.role,
            created_at: m.created_at,
            devices: m
                .devices
                .into_iter()
                .map(|d| DeviceSummary {
                    fingerprint: Fingerprint::of(&d.signing_key, &d.exchange_key),
                    id: d.id,
                    name: d.name,
                    created_at: d.created_at,
                })
                .collect(),
        })
        .collect();
    Ok(Json(MemberList { members }))
}

/// A device's public keys, for checking its fingerprint and wrapping keys to it.
#[derive(Serialize, ToSchema)]
struct DeviceView {
    #[schema(value_type = stand_in::DeviceId)]
    id: DeviceId,
    #[schema(value_type = stand_in::MemberId)]
    member: MemberId,
    name: String,
    created_at: u64,
    /// Ed25519 public key.
    signing_key: B64,
    /// X25519 public key.
    exchange_key: B64,
    #[schema(value_type = stand_in::Fingerprint)]
    fingerprint: Fingerprint,
    /// Present (and true) only for the sender of a wrapped key that has since been removed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    removed: bool,
}

impl From<DeviceRecord> for DeviceView {
    fn from(d: DeviceRecord) -> Self {
        Self {
            fingerprint: Fingerprint::of(&d.signing_key, &d.exchange_key),
            id: d.id,
            member: d.member,
            name: d.name,
            created_at: d.created_at,
            signing_key: B64(d.signing_key.to_vec()),
            exchange_key: B64(d.exchange_key.to_vec()),
            removed: d.removed,
        }
    }
}

/// `GET /v1/devices/{id}`: one active device of the caller's workspace.
#[utoipa::path(
    get,
    path = "/v1/devices/{id}",
    tag = "members",
    operation_id = "get_device",
    security(("device_signature" = [])),
    params(("id" = String, Path, format = "uuid", description = "The device id")),
    responses(
        (status = 200, description = "The device and its public keys", body = DeviceView),
        DeviceErrors,
        (status = 400, description = "`invalid_request`: the id is not a lowercase UUID", body = ApiError),
        (status = 404, description = "`not_found`: no such active device in the caller's workspace", body = ApiError),
    ),
)]
async fn device(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    request: Signed<()>,
) -> Result<Json<DeviceView>, ApiError> {
    let id = path_id::<DeviceId>(&id, "device")?;
    let device =
        state.store.device(request.caller.workspace, id).await?.ok_or_else(no_such_device)?;
    Ok(Json(device.into()))
}

/// What a removal did.
#[derive(Serialize, ToSchema)]
struct Removed {
    /// How many devices stopped working (1 for a device; all of a member's for a member).
    devices_removed: u64,
    /// The removed devices held the workspace key: rotate it (the client does; the broker
    /// cannot).
    rotation_recommended: bool,
    /// A removed member's agents, revoked with her (0 for a device).
    agents_revoked: usize,
    /// A removed member's personal credentials, deleted with her: sealed under a member key
    /// that only her devices held, no one could open them again (0 for a device).
    personal_credentials_deleted: usize,
}

/// `DELETE /v1/devices/{id}`: removes a device (an admin, or the device's own member).
#[utoipa::path(
    delete,
    path = "/v1/devices/{id}",
    tag = "members",
    operation_id = "remove_device",
    security(("device_signature" = [])),
    params(("id" = String, Path, format = "uuid", description = "The device id")),
    responses(
        (status = 200, description = "The device was removed; rotate the workspace key", body = Removed),
        DeviceErrors,
        (status = 400, description = "`invalid_request`: the id is not a lowercase UUID", body = ApiError),
        (status = 403, description = "`forbidden`: another member's device, and the caller is not an admin", body = ApiError),
        (status = 404, description = "`not_found`: no such active device in the caller's workspace", body = ApiError),
        (status = 409, description = "`conflict`: the last device of the last admin", body = ApiError),
    ),
)]
async fn remove_device(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    request: Signed<()>,
) -> Result<Json<Removed>, ApiError> {
    let caller = request.caller;
    let id = path_id::<DeviceId>(&id, "device")?;
    let device = state.store.device(caller.workspace, id).await?.ok_or_else(no_such_device)?;
    if device.member != caller.member {
        caller.require_admin()?;
    }
    state.store.remove_device(caller.workspace, id, state.now()).await?.map_err(|e| match e {
        MembershipError::LastAdmin => ApiError::new(
            ErrorCode::Conflict,
            "this is the last device of the last admin; enrol another device or make another \
             member admin first",
        ),
        _ => no_such_device(),
    })?;
    tracing::info!(workspace = %caller.workspace, device = %id, by = %caller.device, "device removed");
    audit(&state, &caller, AuditKind::DeviceRemoved, |e| e.subject = Some(id.to_string())).await;
    Ok(Json(Removed {
        devices_removed: 1,
        rotation_recommended: true,
        agents_revoked: 0,
        personal_credentials_deleted: 0,
    }))
}

/// `DELETE /v1/members/{id}` (admin): removes a member and all their devices.
#[utoipa::path(
    delete,
    path = "/v1/members/{id}",
    tag = "members",
    operation_id = "remove_member",
    security(("device_signature" = [])),
    params(("id" = String, Path, format = "uuid", description = "The member id")),
    responses(
        (status = 200, description = "The member and their devices were removed; rotate the workspace key", body = Removed),
        DeviceErrors,
        (status = 400, description = "`invalid_request`: the id is not a lowercase UUID", body = ApiError),
        (status = 403, description = "`forbidden`: the caller is not an admin", body = ApiError),
        (status = 404, description = "`not_found`: no such member in the caller's workspace", body = ApiError),
        (status = 409, description = "`conflict`: the last admin with a device", body = ApiError),
    ),
)]
async fn remove_member(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    request: Signed<()>,
) -> Result<Json<Removed>, ApiError> {
    let caller = request.caller;
    caller.require_admin()?;
    let id = path_id::<MemberId>(&id, "member")?;
    let removal = state.store.remove_member(caller.workspace, id, state.now()).await?.map_err(
        |e| match e {
            MembershipError::LastAdmin => ApiError::new(
                ErrorCode::Conflict,
                "this is the last admin (with a device) of the workspace; make another \
                     member admin first",
            ),
            _ => no_such_member(),
        },
    )?;
    tracing::info!(workspace = %caller.workspace, member = %id, by = %caller.device, "member removed");
    audit(&state, &caller, AuditKind::MemberRemoved, |e| e.subject = Some(id.to_string())).await;
    for agent in &removal.agents {
        audit(&state, &caller, AuditKind::AgentRevoked, |e| {
            e.agent = Some(*agent);
            e.subject = Some(id.to_string());
        })
        .await;
    }
    for name in &removal.credentials {
        audit(&state, &caller, AuditKind::CredentialDeleted, |e| {
            e.credential_name = Some(name.clone());
            e.subject = Some(id.to_string());
        })
        .await;
    }
    Ok(Json(Removed {
        devices_removed: removal.devices,
        rotation_recommended: true,
        agents_revoked: removal.agents.len(),
        personal_credentials_deleted: removal.credentials.len(),
    }))
}

/// The body of `PATCH /v1/members/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SetRole {
    role: Role,
}

/// The member's new role.
#[derive(Serialize, ToSchema)]
struct RoleSet {
    #[schema(value_type = stand_in::MemberId)]
    member: MemberId,
    role: Role,
}

/// `PATCH /v1/members/{id}` (admin): changes a member's role.
#[utoipa::path(
    patch,
    path = "/v1/members/{id}",
    tag = "members",
    operation_id = "set_member_role",
    security(("device_signature" = [])),
    params(("id" = String, Path, format = "uuid", description = "The member id")),
    request_body = SetRole,
    responses(
        (status = 200, description = "The role was set", body = RoleSet),
        DeviceErrors,
        (status = 400, description = "`bad_request` or `invalid_request` (the id is not a lowercase UUID)", body = ApiError),
        (status = 403, description = "`forbidden`: the caller is not an admin", body = ApiError),
        (status = 404, description = "`not_found`: no such member in the caller's workspace", body = ApiError),
        (status = 409, description = "`conflict`: this would leave no admin with a device", body = ApiError),
    ),
)]
async fn set_role(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    request: Signed<SetRole>,
) -> Result<Json<RoleSet>, ApiError> {
    let caller = request.caller;
    caller.require_admin()?;
    let id = path_id::<MemberId>(&id, "member")?;
    let role = request.body.role;
    state.store.set_role(caller.workspace, id, role).await?.map_err(|e| match e {
        MembershipError::LastAdmin => ApiError::new(
            ErrorCode::Conflict,
            "this is the last admin (with a device) of the workspace; make another member admin \
             first",
        ),
        _ => no_such_member(),
    })?;
    tracing::info!(workspace = %caller.workspace, member = %id, role = role.as_str(), "role changed");
    let kind = match role {
        Role::Admin => AuditKind::MemberPromoted,
        Role::Member => AuditKind::MemberDemoted,
    };
    audit(&state, &caller, kind, |e| e.subject = Some(id.to_string())).await;
    Ok(Json(RoleSet { member: id, role }))
}

// ---------------------------------------------------------------------------------------------
// Wrapped keys
// ---------------------------------------------------------------------------------------------

/// The body of `PUT /v1/wrapped-keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PutWrappedKeys {
    /// 1 to 1000 wrapped keys, each wrapped and signed by the calling device.
    wrapped_keys: Vec<B64>,
}

/// How many keys were stored.
#[derive(Serialize, ToSchema)]
struct WrappedKeysStored {
    /// New keys stored.
    stored: usize,
    /// Keys identical to ones already stored.
    unchanged: usize,
}

/// `PUT /v1/wrapped-keys`: stores keys the calling device wrapped for other devices.
#[utoipa::path(
    put,
    path = "/v1/wrapped-keys",
    tag = "members",
    operation_id = "put_wrapped_keys",
    security(("device_signature" = [])),
    request_body = PutWrappedKeys,
    responses(
        (status = 200, description = "All keys were stored, or none", body = WrappedKeysStored),
        DeviceErrors,
        (status = 400, description = "`bad_request` or `invalid_request` (count out of range, bad framing, another workspace)", body = ApiError),
        (status = 403, description = "`forbidden`: a key names another sender, is another member's member key, or goes to another member's device", body = ApiError),
        (status = 404, description = "`not_found`: a recipient is not an active device of the workspace", body = ApiError),
        (status = 409, description = "`conflict`: a different key is stored for that recipient, key and version, or a key's version is after the current one", body = ApiError),
    ),
)]
async fn put_wrapped_keys(
    State(state): State<SharedState>,
    request: Signed<PutWrappedKeys>,
) -> Result<Json<WrappedKeysStored>, ApiError> {
    let caller = request.caller;
    let submitted = request.body.wrapped_keys;
    if submitted.is_empty() || submitted.len() > MAX_WRAPPED_KEYS {
        return Err(invalid(format!(
            "wrapped_keys must hold 1 to {MAX_WRAPPED_KEYS} keys; send more in several requests"
        )));
    }
    let mut keys = Vec::with_capacity(submitted.len());
    for (index, bytes) in submitted.iter().enumerate() {
        let wrapped = WrappedKey::parse(&bytes.0)
            .map_err(|e| invalid(format!("wrapped_keys[{index}]: {e}")))?;
        let h = wrapped.header();
        if h.workspace != caller.workspace {
            return Err(invalid(format!(
                "wrapped_keys[{index}] is for another workspace; wrap keys of your own workspace"
            )));
        }
        if h.sender != caller.device {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "wrapped_keys[{index}] names another sender; a device uploads only keys it \
                     wrapped and signed itself"
                ),
            ));
        }
        if let Owner::Member(owner) = h.owner
            && owner != caller.member
        {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "wrapped_keys[{index}] is another member's member key; only that member's \
                     own devices can wrap it"
                ),
            ));
        }
        keys.push(wrapped);
    }
    let summary =
        state.store.put_wrapped_keys(caller.workspace, &keys, state.now()).await?.map_err(|e| {
            match e {
                WrapError::UnknownRecipient { index } => not_found(format!(
                    "wrapped_keys[{index}]: the recipient is not an active device of your workspace"
                )),
                WrapError::NotOwnersDevice { index } => ApiError::new(
                    ErrorCode::Forbidden,
                    format!(
                        "wrapped_keys[{index}]: a member key can only be wrapped to that member's \
                     own devices"
                    ),
                ),
                WrapError::AheadOfCurrent { index, version, current } => ApiError::new(
                    ErrorCode::Conflict,
                    format!(
                        "wrapped_keys[{index}] is for key version {version}, after the current \
                     {current}: a new version is sent with the rotation that makes it current; \
                     nothing was stored"
                    ),
                ),
                WrapError::Conflict { index } => ApiError::new(
                    ErrorCode::Conflict,
                    format!(
                        "wrapped_keys[{index}]: a different wrapped key is already stored for this \
                     recipient, key and version; nothing was stored"
                    ),
                ),
            }
        })?;
    tracing::info!(
        workspace = %caller.workspace, device = %caller.device,
        stored = summary.stored, unchanged = summary.unchanged, "wrapped keys stored"
    );
    // Sharing a key with another device (an admission) is audited once per recipient; a
    // device's own copy (a new member's member key) shares nothing.
    if summary.stored > 0 {
        let mut recipients: Vec<DeviceId> =
            keys.iter().map(|k| k.header().recipient).filter(|r| *r != caller.device).collect();
        recipients.sort_unstable_by_key(ToString::to_string);
        recipients.dedup();
        for recipient in recipients {
            audit(&state, &caller, AuditKind::KeysShared, |e| {
                e.subject = Some(recipient.to_string());
            })
            .await;
        }
    }
    Ok(Json(WrappedKeysStored { stored: summary.stored, unchanged: summary.unchanged }))
}

/// The wrapped keys addressed to the caller.
#[derive(Serialize, ToSchema)]
struct DeliveredKeys {
    wrapped_keys: Vec<DeliveredView>,
}

/// One wrapped key and the device that wrapped it.
#[derive(Serialize, ToSchema)]
struct DeliveredView {
    /// `workspace` or `member`.
    #[schema(example = "workspace")]
    kind: &'static str,
    #[schema(value_type = stand_in::Owner)]
    owner: Owner,
    #[schema(value_type = stand_in::KeyVersion)]
    version: KeyVersion,
    /// The device that wrapped and signed the key; `null` if the broker has no record of it.
    sender: Option<DeviceView>,
    bytes: B64,
}

/// `GET /v1/wrapped-keys`: the wrapped keys addressed to the calling device.
#[utoipa::path(
    get,
    path = "/v1/wrapped-keys",
    tag = "members",
    operation_id = "get_wrapped_keys",
    security(("device_signature" = [])),
    responses((status = 200, description = "The caller's wrapped keys", body = DeliveredKeys), DeviceErrors),
)]
async fn wrapped_keys(
    State(state): State<SharedState>,
    request: Signed<()>,
) -> Result<Json<DeliveredKeys>, ApiError> {
    let caller = request.caller;
    let delivered = state.store.wrapped_keys_for(caller.workspace, caller.device).await?;
    let wrapped_keys = delivered
        .into_iter()
        .map(|d| {
            let h = *d.key.header();
            DeliveredView {
                kind: match h.kind {
                    WrappedKind::Workspace => "workspace",
                    WrappedKind::Member => "member",
                },
                owner: h.owner,
                version: h.version,
                sender: d.sender.map(DeviceView::from),
                bytes: B64(d.key.as_bytes().to_vec()),
            }
        })
        .collect();
    Ok(Json(DeliveredKeys { wrapped_keys }))
}

// ---------------------------------------------------------------------------------------------
// Invite codes
// ---------------------------------------------------------------------------------------------

/// A one-time invite code.
///
/// ```text
/// code = 28 Crockford base32 symbols (140 bits from the OS generator),
///        shown as XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XXXX
/// hash = SHA-256("latchkey invite code v1" || 0x00 || the 28 symbols, upper-case ASCII)
/// ```
///
/// Reading is forgiving like fingerprints: any case, dashes and spaces optional, `I`/`L` read as
/// `1`, `O` as `0`. 140 random bits make guessing hopeless, so a fast unsalted hash is enough and
/// lookup is one indexed equality.
struct InviteCode {
    /// The canonical 28 symbols.
    symbols: Zeroizing<[u8; INVITE_SYMBOLS]>,
    /// The dashed display form.
    text: Zeroizing<String>,
}

const INVITE_SYMBOLS: usize = 28;
const INVITE_LABEL: &[u8] = b"latchkey invite code v1\0";
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

impl InviteCode {
    fn generate() -> Result<Self, ApiError> {
        let mut random = Zeroizing::new([0u8; INVITE_SYMBOLS]);
        latchkey_core::random::fill(random.as_mut())
            .map_err(|e| ApiError::internal(&format!("invite code: {e}")))?;
        let mut symbols = Zeroizing::new([0u8; INVITE_SYMBOLS]);
        for (symbol, byte) in symbols.iter_mut().zip(random.iter()) {
            // 32 divides 256, so the low five bits of a uniform byte are uniform.
            *symbol = CROCKFORD[usize::from(byte & 0x1f)];
        }
        Ok(Self::from_symbols(symbols))
    }

    /// Reads a typed code; `None` if it is not 28 Crockford symbols.
    fn parse(text: &str) -> Option<Self> {
        let mut symbols = Zeroizing::new([0u8; INVITE_SYMBOLS]);
        let mut found = 0usize;
        for c in text.chars() {
            if c == '-' || c == ' ' {
                continue;
            }
            let upper = match c.to_ascii_uppercase() {
                'I' | 'L' => '1',
                'O' => '0',
                other => other,
            };
            let byte = u8::try_from(upper).ok().filter(|b| CROCKFORD.contains(b))?;
            *symbols.get_mut(found)? = byte;
            found += 1;
        }
        (found == INVITE_SYMBOLS).then(|| Self::from_symbols(symbols))
    }

    fn from_symbols(symbols: Zeroizing<[u8; INVITE_SYMBOLS]>) -> Self {
        let mut text = Zeroizing::new(String::with_capacity(INVITE_SYMBOLS + INVITE_SYMBOLS / 4));
        for (i, symbol) in symbols.iter().enumerate() {
            if i > 0 && i % 4 == 0 {
                text.push('-');
            }
            text.push(char::from(*symbol));
        }
        Self { symbols, text }
    }

    fn text(&self) -> &str {
        &self.text
    }

    fn hash(&self) -> [u8; 32] {
        Sha256::new()
            .chain_update(INVITE_LABEL)
            .chain_update(self.symbols.as_ref())
            .finalize()
            .into()
    }
}

/// An invite code as submitted: redacted in `Debug`, zeroized on drop.
struct SubmittedCode(Zeroizing<String>);

impl std::fmt::Debug for SubmittedCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubmittedCode([REDACTED])")
    }
}

impl<'de> Deserialize<'de> for SubmittedCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|s| Self(Zeroizing::new(s)))
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// An id from the path; malformed ids are refused without repeating them.
fn path_id<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, ApiError> {
    text.parse().map_err(|_| invalid(format!("the {what} id in the path must be a lowercase UUID")))
}

fn no_such_device() -> ApiError {
    not_found("no such device in your workspace")
}

fn no_such_member() -> ApiError {
    not_found("no such member in your workspace")
}

fn not_found(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::NotFound, message)
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, message)
}
