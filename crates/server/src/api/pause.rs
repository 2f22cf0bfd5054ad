//! The workspace's kill switch: `GET` and `PUT /v1/workspace/pause`.
//!
//! Any member may pause every agent call in their workspace; the proxy then refuses each one
//! with `403 agents_paused` right after it recognises the agent's token, before any credential
//! is read, and calls held for approval are let go with the same answer. Resuming is for admins
//! and for the member who paused (from any of their devices): a pause is meant to be pressed in a
//! hurry by anyone, and lifted deliberately. Both directions are idempotent; only a change is
//! audited (`agents_paused`, `agents_resumed`).

use axum::Json;
use axum::extract::State;
use latchkey_core::ids::{DeviceId, MemberId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::credentials::audit;
use super::openapi::{DeviceErrors, stand_in};
use crate::approvals::{Signal, SignalKind};
use crate::audit::AuditKind;
use crate::auth::Signed;
use crate::error::{ApiError, ErrorCode};
use crate::state::SharedState;
use crate::store::approvals::ApprovalFilter;
use crate::store::devices::Role;
use crate::store::pauses::{Pause, PauseState, Resumed};

/// Most held calls one pause wakes at once; any beyond find the pause on their own within a
/// second (the holders re-read it).
const MAX_WAKE: u32 = 500;

pub(super) fn routes() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new().routes(routes!(show, set))
}

/// Whether the workspace's agents are paused, and by whom.
#[derive(Debug, Serialize, ToSchema)]
struct PauseView {
    /// `true` while every agent call in the workspace is refused.
    paused: bool,
    /// The member who paused (`null` when not paused, as are the two fields below).
    #[schema(value_type = Option<stand_in::MemberId>)]
    paused_by_member: Option<MemberId>,
    /// The device they paused from.
    #[schema(value_type = Option<stand_in::DeviceId>)]
    paused_by_device: Option<DeviceId>,
    /// When (unix seconds).
    paused_at: Option<u64>,
}

impl From<Option<Pause>> for PauseView {
    fn from(pause: Option<Pause>) -> Self {
        Self {
            paused: pause.is_some(),
            paused_by_member: pause.map(|p| p.member),
            paused_by_device: pause.map(|p| p.device),
            paused_at: pause.map(|p| p.at),
        }
    }
}

/// The body of `PUT /v1/workspace/pause`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SetPause {
    /// `true` to pause every agent call in the workspace, `false` to resume.
    paused: bool,
}

/// Whether every agent call in the caller's workspace is paused, and by whom.
#[utoipa::path(
    get,
    path = "/v1/workspace/pause",
    tag = "workspaces",
    operation_id = "pause_state",
    security(("device_signature" = [])),
    responses((status = 200, description = "The pause state", body = PauseView), DeviceErrors),
)]
async fn show(
    State(state): State<SharedState>,
    request: Signed<()>,
) -> Result<Json<PauseView>, ApiError> {
    let PauseState(pause) = state.store.pause_state(request.caller.workspace).await?;
    Ok(Json(pause.into()))
}

/// Pauses or resumes every agent call in the caller's workspace (the kill switch).
///
/// Pausing is open to every member; while paused, the proxy refuses each agent call with
/// `403 agents_paused` before any credential is read, and calls held for approval end at once
/// with the same answer. Resuming is open to admins and to the member who paused. Idempotent:
/// pausing a paused workspace keeps the first pause and its author; resuming one that is not
/// paused changes nothing.
#[utoipa::path(
    put,
    path = "/v1/workspace/pause",
    tag = "workspaces",
    operation_id = "set_pause",
    security(("device_signature" = [])),
    request_body = SetPause,
    responses(
        (status = 200, description = "The pause state now", body = PauseView),
        DeviceErrors,
        (status = 400, description = "`bad_request`: the body is not `{\"paused\": true|false}`", body = ApiError),
        (status = 403, description = "`resume_not_allowed`: only an admin or the member who paused may resume", body = ApiError),
    ),
)]
async fn set(
    State(state): State<SharedState>,
    request: Signed<SetPause>,
) -> Result<Json<PauseView>, ApiError> {
    let caller = request.caller;
    if request.body.paused {
        let (pause, made) = state
            .store
            .pause_agents(caller.workspace, caller.member, caller.device, state.now())
            .await?;
        if made {
            tracing::warn!(workspace = %caller.workspace, member = %caller.member, "agents paused");
            audit(&state, &caller, AuditKind::AgentsPaused, |_| {}).await;
        }
        release_held_calls(&state, caller.workspace).await;
        return Ok(Json(Some(pause).into()));
    }
    match state
        .store
        .resume_agents(caller.workspace, caller.member, caller.role == Role::Admin)
        .await?
    {
        Resumed::Lifted(pause) => {
            tracing::warn!(
                workspace = %caller.workspace,
                member = %caller.member,
                paused_by = %pause.member,
                "agents resumed"
            );
            audit(&state, &caller, AuditKind::AgentsResumed, |_| {}).await;
        }
        Resumed::NotPaused => {}
        Resumed::NotAllowed(_) => {
            return Err(ApiError::new(
                ErrorCode::ResumeNotAllowed,
                "only an admin or the member who paused the agents can resume them; ask them to resume from the Latchkey app or with `latchkey agent resume`",
            ));
        }
    }
    Ok(Json(None.into()))
}

/// Wakes every call held for approval in `workspace`, on whichever replica holds it: each holder
/// re-reads the pause, expires its approval (`agents_paused`, audited) and answers its agent
/// `403 agents_paused`. A holder this misses (a lost notification, more than [`MAX_WAKE`]) finds
/// the pause at its next re-read, within a second.
async fn release_held_calls(state: &SharedState, workspace: latchkey_core::ids::WorkspaceId) {
    let pending = match state
        .store
        .approvals(workspace, ApprovalFilter::Pending, None, state.now(), MAX_WAKE)
        .await
    {
        Ok(pending) => pending,
        Err(error) => {
            tracing::warn!(%error, "could not list held calls to release; their holders re-read the pause within a second");
            return;
        }
    };
    for record in pending {
        let signal = Signal { workspace, id: record.id, kind: SignalKind::Paused };
        if let Err(error) = state.approvals.publish(&state.store, signal).await {
            tracing::warn!(%error, "could not wake a held call; its holder re-reads the pause within a second");
        }
    }
}
