//! Approvals from the devices' side: the live stream of held calls, listing, and answering.
//!
//! Who may answer (and so who sees an approval): for a personal credential its owner's devices,
//! for a shared credential admins' devices. An approval carries a capability the answering device
//! issued for exactly the held call's agent, credential, method and path: single-use to approve
//! once, standing (with a grant registered through `POST /v1/grants`) to approve for a window.
//! It is checked here (claims, time, signature) so a device learns at once that it sent a
//! wrong one; the proxy checks it again, in full, before it opens anything.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use latchkey_core::capability::{Capability, CapabilityRequest, Method};
use latchkey_core::ids::{AgentId, ApprovalId, CredentialId, DeviceId};
use latchkey_core::keys::DeviceVerifyingKey;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::agents::path_id;
use super::credentials::audit;
use super::openapi::{DeviceErrors, stand_in};
use crate::approvals::{Signal, SignalKind};
use crate::audit::{AuditKind, Decision};
use crate::auth::{DeviceCaller, Signed};
use crate::error::{ApiError, ErrorCode};
use crate::state::SharedState;
use crate::store::approvals::{Answer, ApprovalFilter, ApprovalRecord, ApprovalStatus, Viewer};
use crate::store::devices::Role;

/// Most approvals one listing returns.
const MAX_LIST: u32 = 500;
/// How often an idle stream sends a comment, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub(crate) fn routes() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(events)).routes(routes!(answer))
}

/// A held call, as the member asked to approve it sees it. Never a credential, a key, a query
/// value or a body.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ApprovalView {
    #[schema(value_type = stand_in::ApprovalId)]
    id: ApprovalId,
    /// `pending`, `approved`, `denied` or `expired`.
    #[schema(value_type = String)]
    status: ApprovalStatus,
    #[schema(value_type = stand_in::AgentId)]
    agent: AgentId,
    #[schema(value_type = stand_in::CredentialId)]
    credential: CredentialId,
    credential_name: String,
    method: String,
    host: String,
    path: String,
    /// The query's parameter names, in order (values are never kept).
    query_keys: Vec<String>,
    /// The request body's declared size in bytes, when it declared one.
    body_size: Option<u64>,
    /// The policies that allow the call once approved.
    policy_ids: Vec<String>,
    created_at: u64,
    /// When the broker stops holding the call.
    expires_at: u64,
    decided_at: Option<u64>,
    #[schema(value_type = Option<stand_in::DeviceId>)]
    decided_by: Option<DeviceId>,
    /// Whether the caller may answer it. `false`: the call is shown because the caller's member
    /// owns the agent, so they know why it waits; an admin answers it (a shared credential).
    answerable: bool,
}

impl ApprovalView {
    /// `r` as `caller` sees it.
    fn for_caller(r: ApprovalRecord, caller: &DeviceCaller) -> Self {
        let answerable = may_answer(caller, &r);
        Self {
            id: r.id,
            status: r.status,
            agent: r.agent,
            credential: r.credential,
            credential_name: r.credential_name,
            method: r.method,
            host: r.host,
            path: r.path,
            query_keys: r.query_keys,
            body_size: r.body_size,
            policy_ids: r.policy_ids,
            created_at: r.created_at,
            expires_at: r.expires_at,
            decided_at: r.decided_at,
            decided_by: r.decided_by,
            answerable,
        }
    }
}

/// Approvals the caller may see.
#[derive(Debug, Serialize, ToSchema)]
struct ApprovalList {
    approvals: Vec<ApprovalView>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
}

/// Approvals the caller may answer, and those of its member's agents that others answer
/// (`answerable: false`), newest first: pending ones by default, or all of them (decided ones
/// for 30 days; the audit log keeps every one).
#[utoipa::path(
    get,
    path = "/v1/approvals",
    tag = "approvals",
    operation_id = "list_approvals",
    security(("device_signature" = [])),
    params(("status" = Option<String>, Query, description = "`pending` (default) or `all`")),
    responses(
        (status = 200, description = "The approvals", body = ApprovalList),
        DeviceErrors,
        (status = 400, description = "`bad_request`: an unknown parameter or status", body = ApiError),
    ),
)]
async fn list(
    State(state): State<SharedState>,
    query: Result<Query<ListQuery>, QueryRejection>,
    request: Signed<()>,
) -> Result<Json<ApprovalList>, ApiError> {
    let caller = request.caller;
    let filter = match query.as_ref().map(|Query(q)| q.status.as_deref()) {
        Ok(None | Some("pending")) => ApprovalFilter::Pending,
        Ok(Some("all")) => ApprovalFilter::All,
        _ => {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "the only parameter is status, `pending` or `all`",
            ));
        }
    };
    // Calls whose holder went away without expiring them (a replica stopped) end here, audited
    // like any other expiry.
    let abandoned =
        state.store.expire_abandoned_approvals(caller.workspace, state.now(), 5).await?;
    for record in abandoned {
        tracing::info!(workspace = %caller.workspace, approval = %record.id, "abandoned approval expired");
        audit(&state, &caller, AuditKind::ApprovalExpired, |e| {
            e.decision = Some(Decision::Denied);
            e.reason_code = Some("holder_gone".to_owned());
            e.approval_id = Some(record.id.to_string());
            e.agent = Some(record.agent);
            e.credential_name = Some(record.credential_name.clone());
            e.method = Some(record.method.clone());
            e.host = Some(record.host.clone());
            e.path = Some(record.path.clone());
        })
        .await;
        // Devices following the stream hear of it as of any other end.
        let resolved =
            Signal { workspace: caller.workspace, id: record.id, kind: SignalKind::Resolved };
        if let Err(error) = state.approvals.publish(&state.store, resolved).await {
            tracing::warn!(%error, "could not announce an abandoned approval's expiry");
        }
    }
    let approvals = state
        .store
        .approvals(caller.workspace, filter, Some(viewer(&caller)), state.now(), MAX_LIST)
        .await?
        .into_iter()
        .filter(|r| may_see(&caller, r))
        .map(|r| ApprovalView::for_caller(r, &caller))
        .collect();
    Ok(Json(ApprovalList { approvals }))
}

/// The devices' live channel: a server-sent event stream of the approvals the caller may see (as
/// `GET /v1/approvals` lists them).
///
/// Opens with one `approval` event per pending approval, then sends one whenever an approval is
/// requested or resolved (its `status` says which), from any replica. The stream ends when the
/// device is removed. Each event's data is an approval as `GET /v1/approvals` lists it.
#[utoipa::path(
    get,
    path = "/v1/approvals/events",
    tag = "approvals",
    operation_id = "approval_events",
    security(("device_signature" = [])),
    responses(
        (status = 200, description = "`text/event-stream` of `approval` events", content_type = "text/event-stream", body = ApprovalView),
        DeviceErrors,
    ),
)]
async fn events(
    State(state): State<SharedState>,
    request: Signed<()>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let caller = request.caller;
    // Subscribed before the snapshot is read: nothing requested in between is missed.
    let mut signals = state.approvals.subscribe();
    let mut gaps = state.approvals.gaps();
    let pending = state
        .store
        .approvals(
            caller.workspace,
            ApprovalFilter::Pending,
            Some(viewer(&caller)),
            state.now(),
            MAX_LIST,
        )
        .await?;
    let (events, received) = tokio::sync::mpsc::channel::<Event>(64);
    let open = state.metrics.approval_stream();
    tokio::spawn(async move {
        let _open = open;
        if state.approvals.is_closing() {
            return;
        }
        for record in pending.into_iter().rev().filter(|r| may_see(&caller, r)) {
            if events.send(event(record, &caller)).await.is_err() {
                return;
            }
        }
        loop {
            let received = tokio::select! {
                received = signals.recv() => received,
                () = state.approvals.closed() => return,
                // The device went away: ends now, not at the next signal it may see (for a
                // member with no agents, never).
                () = events.closed() => return,
                // Signals may have been lost (the database's notifications broke off): the
                // device lists again.
                Ok(()) = gaps.changed() => {
                    let lagged = Event::default().event("lagged").data("unknown");
                    if events.send(lagged).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let signal = match received {
                Ok(signal) => signal,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    // The device re-lists when it sees this; the stream goes on.
                    tracing::warn!(missed, "an approval stream fell behind");
                    let lagged = Event::default().event("lagged").data(missed.to_string());
                    if events.send(lagged).await.is_err() {
                        return;
                    }
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            // A pause wakes the holders; the devices hear of the expiry that follows.
            if signal.workspace != caller.workspace || signal.kind == SignalKind::Paused {
                continue;
            }
            match forward(&state, &caller, signal).await {
                Ok(Some(event)) => {
                    if events.send(event).await.is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(Gone) => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(received, |mut received| async move {
        received.recv().await.map(|event| (Ok(event), received))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// The stream's device was removed (or the store failed): end the stream.
struct Gone;

async fn forward(
    state: &SharedState,
    caller: &DeviceCaller,
    signal: Signal,
) -> Result<Option<Event>, Gone> {
    let active = state.store.cached_active_device(caller.device).await.map_err(|_| Gone)?;
    if active.is_none_or(|d| d.workspace != caller.workspace) {
        return Err(Gone);
    }
    let record = state.store.approval(signal.workspace, signal.id).await.map_err(|_| Gone)?;
    Ok(record.filter(|r| may_see(caller, r)).map(|record| {
        debug_assert!(
            signal.kind == SignalKind::Requested || record.status != ApprovalStatus::Pending
        );
        event(record, caller)
    }))
}

fn event(record: ApprovalRecord, caller: &DeviceCaller) -> Event {
    let id = record.id.to_string();
    let data = serde_json::to_string(&ApprovalView::for_caller(record, caller))
        .unwrap_or_else(|_| String::from("{}"));
    Event::default().event("approval").id(id).data(data)
}

/// A device's answer to a held call.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AnswerBody {
    /// `approve` or `deny`.
    decision: String,
    /// With `approve`: a capability for exactly the held call, issued by the answering device
    /// and sealed to the broker. Single-use approves once; standing (its grant registered first
    /// with `POST /v1/grants`) approves for the grant's window and is handed to the agent.
    capability: Option<String>,
}

/// The capability is redacted: it opens the credential for the held call.
impl std::fmt::Debug for AnswerBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerBody")
            .field("decision", &self.decision)
            .field("capability", &self.capability.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Approves or denies a held call. The first answer wins; a late or second one is refused.
#[utoipa::path(
    post,
    path = "/v1/approvals/{id}",
    tag = "approvals",
    operation_id = "answer_approval",
    security(("device_signature" = [])),
    params(("id" = String, Path, format = "uuid", description = "The approval id")),
    request_body = AnswerBody,
    responses(
        (status = 200, description = "Answered; the held call goes on or fails", body = ApprovalView),
        DeviceErrors,
        (status = 400, description = "`bad_request` (the id is not a UUID, the decision is neither `approve` nor `deny`) or `invalid_request` (the capability is missing, malformed, not the caller's, or not for exactly this call)", body = ApiError),
        (status = 404, description = "`not_found`: no such approval the caller may answer", body = ApiError),
        (status = 409, description = "`conflict`: the approval was already answered or expired", body = ApiError),
    ),
)]
async fn answer(
    State(state): State<SharedState>,
    id: Result<Path<String>, PathRejection>,
    request: Signed<AnswerBody>,
) -> Result<Json<ApprovalView>, ApiError> {
    let (caller, body) = (request.caller, request.body);
    let id: ApprovalId = path_id(id, "approval")?;
    let now = state.now();
    let no_such = || ApiError::new(ErrorCode::NotFound, "no such approval for you to answer");
    let record = state
        .store
        .approval(caller.workspace, id)
        .await?
        .filter(|r| may_answer(&caller, r))
        .ok_or_else(no_such)?;
    if record.status != ApprovalStatus::Pending || record.expires_at < now {
        return Err(closed(&record));
    }
    let answer = match body.decision.as_str() {
        "approve" => {
            let capability = body.capability.as_deref().ok_or_else(|| {
                invalid("approving needs a capability for the held call, issued by this device")
            })?;
            check_capability(&state, &caller, &record, capability, now).await?;
            Answer::Approve { capability }
        }
        "deny" => Answer::Deny,
        _ => {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "decision must be `approve` or `deny`",
            ));
        }
    };
    if !state.store.answer_approval(caller.workspace, id, caller.device, answer, now).await? {
        let current = state.store.approval(caller.workspace, id).await?.ok_or_else(no_such)?;
        return Err(closed(&current));
    }
    let approved = matches!(answer, Answer::Approve { .. });
    tracing::info!(workspace = %caller.workspace, approval = %id, approved, "approval answered");
    audit(&state, &caller, AuditKind::ApprovalAnswered, |e| {
        e.decision = Some(if approved { Decision::Allowed } else { Decision::Denied });
        e.approval_id = Some(id.to_string());
        e.agent = Some(record.agent);
        e.credential_name = Some(record.credential_name.clone());
        e.method = Some(record.method.clone());
        e.host = Some(record.host.clone());
        e.path = Some(record.path.clone());
    })
    .await;
    let resolved = Signal { workspace: caller.workspace, id, kind: SignalKind::Resolved };
    if let Err(error) = state.approvals.publish(&state.store, resolved).await {
        // The holder re-reads its row on its own within a second.
        tracing::warn!(%error, "could not announce an answered approval");
    }
    // The update succeeded, so the row now stands exactly as written: no need to read it back.
    let mut answered = record;
    answered.status = if approved { ApprovalStatus::Approved } else { ApprovalStatus::Denied };
    answered.decided_at = Some(now);
    answered.decided_by = Some(caller.device);
    Ok(Json(ApprovalView::for_caller(answered, &caller)))
}

/// The capability is the caller's, for exactly the held call, valid now, and correctly signed.
async fn check_capability(
    state: &SharedState,
    caller: &DeviceCaller,
    record: &ApprovalRecord,
    text: &str,
    now: u64,
) -> Result<(), ApiError> {
    let capability = Capability::decode(text)
        .map_err(|e| invalid(&format!("the capability is malformed: {e}")))?;
    let claims = capability.claims();
    if claims.issuer != caller.device {
        return Err(invalid("the capability must be issued by the device that answers"));
    }
    let device = state
        .store
        .active_device(caller.device)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::UnknownDevice, "this device was removed"))?;
    let key = DeviceVerifyingKey::from_bytes(&device.signing_key)
        .map_err(|e| ApiError::internal(&format!("stored device key unusable: {e}")))?;
    let method = Method::parse(&record.method)
        .ok_or_else(|| ApiError::internal(&"a held call's method does not parse"))?;
    let request = CapabilityRequest {
        workspace: record.workspace,
        agent: record.agent,
        credential: record.credential,
        method,
        path: &record.path,
        now,
    };
    capability.verify(&key, &request).map_err(|e| {
        invalid(&format!("the capability does not allow exactly the held call: {e}"))
    })?;
    Ok(())
}

/// The caller as the store filters listings for them ([`may_see`] in SQL).
fn viewer(caller: &DeviceCaller) -> Viewer {
    Viewer { member: caller.member, admin: caller.role == Role::Admin }
}

/// Who sees a held call: whoever may answer it, and the devices of the member who owns its agent
/// (read only: to know why their agent waits).
fn may_see(caller: &DeviceCaller, record: &ApprovalRecord) -> bool {
    may_answer(caller, record) || record.agent_owner == Some(caller.member)
}

/// Personal credentials: their owner's devices. Shared ones: admins' devices.
fn may_answer(caller: &DeviceCaller, record: &ApprovalRecord) -> bool {
    match record.credential_owner {
        Some(owner) => owner == caller.member,
        None => caller.role == Role::Admin,
    }
}

fn closed(record: &ApprovalRecord) -> ApiError {
    let how = match record.status {
        ApprovalStatus::Approved => "was already approved",
        ApprovalStatus::Denied => "was already denied",
        ApprovalStatus::Expired | ApprovalStatus::Pending => "expired",
    };
    ApiError::new(
        ErrorCode::Conflict,
        format!("this approval {how}; nothing was changed, and the call was not forwarded again"),
    )
}

fn invalid(message: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, message)
}
