//! Workspaces and the caller's identity.
//!
//! `POST /v1/workspaces` creates a workspace from its first device, which becomes the first
//! admin. The device is not enrolled yet, so the request is self-signed: its RFC 9421 signature
//! must verify under the signing key the body registers, with the body's device id as key id.
//! The body also carries the workspace key and the member key, each wrapped to that same device
//! (the server stores them and cannot open them).
//!
//! Who may create a workspace is the operator's choice (`crate::creation`): anyone, only with
//! the creation token, or nobody. That check comes first, before the signature's nonce is
//! recorded, so a refused creation writes nothing.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use latchkey_core::ids::{DeviceId, KeyVersion, MemberId, Owner, WorkspaceId};
use latchkey_core::keys::{DeviceVerifyingKey, WrappedKey, WrappedKind};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use zeroize::Zeroizing;

use super::openapi::{DeviceErrors, RegistrationErrors, stand_in};
use super::wire::B64;
use crate::audit::AuditKind;
use crate::auth::{SelfSigned, Signed};
use crate::error::{ApiError, ErrorCode};
use crate::state::SharedState;
use crate::store::devices::Role;
use crate::store::workspaces::NewWorkspace;

pub(super) fn routes() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new().routes(routes!(create)).routes(routes!(me))
}

/// A device being registered.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeviceRegistration {
    #[schema(value_type = stand_in::DeviceId)]
    pub(crate) id: DeviceId,
    pub(crate) name: String,
    /// Ed25519 public key (32 bytes).
    pub(crate) signing_key: B64,
    /// X25519 public key (32 bytes).
    pub(crate) exchange_key: B64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedId<T> {
    id: T,
    name: String,
}

/// The body of `POST /v1/workspaces`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateWorkspace {
    #[schema(value_type = stand_in::NamedId)]
    workspace: NamedId<WorkspaceId>,
    #[schema(value_type = stand_in::NamedId)]
    member: NamedId<MemberId>,
    device: DeviceRegistration,
    /// The workspace key v1 and the member key v1, wrapped to this device by this device.
    wrapped_keys: Vec<B64>,
    /// The broker's creation token, when its operator lets workspaces be created with it alone
    /// (ignored by a broker open to everyone).
    #[schema(value_type = Option<String>)]
    creation_token: Option<SubmittedToken>,
}

/// A creation token as submitted: redacted in `Debug`, zeroized on drop, never stored.
struct SubmittedToken(Zeroizing<String>);

impl std::fmt::Debug for SubmittedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubmittedToken([REDACTED])")
    }
}

impl<'de> Deserialize<'de> for SubmittedToken {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|s| Self(Zeroizing::new(s)))
    }
}

/// The new workspace, its first member (an admin) and device.
#[derive(Debug, Serialize, ToSchema)]
struct Created {
    #[schema(value_type = stand_in::WorkspaceId)]
    workspace: WorkspaceId,
    #[schema(value_type = stand_in::MemberId)]
    member: MemberId,
    #[schema(value_type = stand_in::DeviceId)]
    device: DeviceId,
    role: Role,
}

/// Creates a workspace from its first device, which becomes the first admin.
///
/// Self-signed: the device is not enrolled yet, so the signature must verify under the
/// `device.signing_key` in the body, with `keyid` = `device.id`. The body carries the workspace
/// key and the member key (version 1), each wrapped to this device by this device.
///
/// Whether the broker creates the workspace at all is its operator's choice: for anyone who
/// reaches it, only with its creation token (`creation_token`), or not at all (join an existing
/// workspace with an invite instead).
#[utoipa::path(
    post,
    path = "/v1/workspaces",
    tag = "workspaces",
    operation_id = "create_workspace",
    security(("device_signature" = [])),
    request_body = CreateWorkspace,
    responses(
        (status = 201, description = "The workspace exists; the caller is its admin", body = Created),
        RegistrationErrors,
        (status = 400, description = "`bad_request` (malformed JSON) or `invalid_request` (a bad key, name or wrapped key)", body = ApiError),
        (status = 403, description = "`workspace_creation_closed`: this broker creates no workspaces (join one with an invite); `creation_token_required`: it creates them only with its creation token, and none was sent; `creation_token_invalid`: the token sent is not the broker's", body = ApiError),
        (status = 409, description = "`conflict`: a workspace, member or device with one of these ids exists", body = ApiError),
    ),
)]
async fn create(
    State(state): State<SharedState>,
    request: SelfSigned<CreateWorkspace>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let body = &request.body;
    let presented = body.creation_token.as_ref().map(|t| t.0.as_str());
    if let Err(refusal) = state.workspace_creation.admit(presented) {
        tracing::info!(code = %refusal.code.spelling(), "workspace creation refused");
        return Err(refusal);
    }
    let device_key = verify_registration(&state, &request, &body.device).await?;

    let workspace = body.workspace.id;
    let member = body.member.id;
    let device = body.device.id;
    let (mut workspace_key, mut member_key) = (None, None);
    for bytes in &body.wrapped_keys {
        let wrapped =
            WrappedKey::parse(&bytes.0).map_err(|e| invalid(format!("wrapped key: {e}")))?;
        let h = wrapped.header();
        if h.workspace != workspace || h.recipient != device || h.sender != device {
            return Err(invalid(
                "wrapped keys must be for this workspace, wrapped by and to this device",
            ));
        }
        if h.version != KeyVersion::FIRST {
            return Err(invalid("a new workspace starts at key version 1"));
        }
        let slot = match (h.kind, h.owner) {
            (WrappedKind::Workspace, Owner::Shared) => &mut workspace_key,
            (WrappedKind::Member, Owner::Member(m)) if m == member => &mut member_key,
            _ => return Err(invalid("the member key must belong to the registering member")),
        };
        if slot.replace(wrapped).is_some() {
            return Err(invalid("one wrapped workspace key and one wrapped member key expected"));
        }
    }
    let (Some(workspace_key), Some(member_key)) = (workspace_key, member_key) else {
        return Err(invalid(
            "both the wrapped workspace key and the wrapped member key are required",
        ));
    };

    state
        .store
        .create_workspace(NewWorkspace {
            workspace,
            workspace_name: checked_name("workspace.name", &body.workspace.name)?,
            member,
            member_name: checked_name("member.name", &body.member.name)?,
            device,
            device_name: checked_name("device.name", &body.device.name)?,
            signing_key: device_key.to_bytes(),
            exchange_key: exchange_key(&body.device)?,
            wrapped_keys: [workspace_key, member_key],
            now: state.now(),
        })
        .await?
        .map_err(|conflict| ApiError::new(ErrorCode::Conflict, conflict.to_string()))?;
    tracing::info!(%workspace, %member, %device, "workspace created");
    super::credentials::audit_as(
        &state,
        workspace,
        device,
        member,
        AuditKind::WorkspaceCreated,
        |_| {},
    )
    .await;
    Ok((StatusCode::CREATED, Json(Created { workspace, member, device, role: Role::Admin })))
}

/// The signing device's identity.
#[derive(Debug, Serialize, ToSchema)]
struct Me {
    #[schema(value_type = stand_in::WorkspaceId)]
    workspace: WorkspaceId,
    /// The name the workspace was given when it was created.
    workspace_name: String,
    #[schema(value_type = stand_in::MemberId)]
    member: MemberId,
    #[schema(value_type = stand_in::DeviceId)]
    device: DeviceId,
    role: Role,
}

/// Who the signing device is: lets a client check that its enrolment is still active, and name
/// its workspace.
#[utoipa::path(
    get,
    path = "/v1/me",
    tag = "workspaces",
    operation_id = "me",
    security(("device_signature" = [])),
    responses((status = 200, description = "The caller's workspace (id and name), member, device and role", body = Me), DeviceErrors),
)]
async fn me(State(state): State<SharedState>, request: Signed<()>) -> Result<Json<Me>, ApiError> {
    let c = request.caller;
    // The caller's device was just found active in this workspace, so the row exists; a missing
    // one is a broken database, answered as such.
    let workspace_name = state
        .store
        .workspace_name(c.workspace)
        .await?
        .ok_or_else(|| ApiError::internal(&"the caller's workspace has no row"))?;
    Ok(Json(Me {
        workspace: c.workspace,
        workspace_name,
        member: c.member,
        device: c.device,
        role: c.role,
    }))
}

/// Verifies a self-signed registration: the request must be signed (`keyid` = `device.id`) by
/// the Ed25519 key the registration names. Returns that key.
pub(crate) async fn verify_registration<T>(
    state: &SharedState,
    request: &SelfSigned<T>,
    device: &DeviceRegistration,
) -> Result<DeviceVerifyingKey, ApiError> {
    let key = registration_key(device)?;
    if request.key_id() != device.id {
        return Err(ApiError::new(
            ErrorCode::SignatureInvalid,
            "the request must be signed by the device it registers (keyid = device.id)",
        ));
    }
    request.verify_with(state, &key).await?;
    Ok(key)
}

/// The Ed25519 key a registration names, refusing invalid and weak keys.
pub(crate) fn registration_key(
    device: &DeviceRegistration,
) -> Result<DeviceVerifyingKey, ApiError> {
    let bytes = device
        .signing_key
        .array::<32>()
        .ok_or_else(|| invalid("device.signing_key must be 32 bytes"))?;
    DeviceVerifyingKey::from_bytes(&bytes)
        .map_err(|_| invalid("device.signing_key is not a usable Ed25519 key"))
}

/// The X25519 key a registration names.
pub(crate) fn exchange_key(device: &DeviceRegistration) -> Result<[u8; 32], ApiError> {
    device.exchange_key.array::<32>().ok_or_else(|| invalid("device.exchange_key must be 32 bytes"))
}

/// A display name: 1 to 100 characters, no control characters.
pub(crate) fn checked_name(field: &str, name: &str) -> Result<String, ApiError> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed.chars().count() > 100 || trimmed.chars().any(char::is_control)
    {
        return Err(invalid(format!(
            "{field} must be 1 to 100 characters without control characters"
        )));
    }
    Ok(trimmed.to_owned())
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, message)
}
