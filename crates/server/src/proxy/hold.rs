//! Holding a call that has no capability while a member's device is asked (step 4a).
//!
//! The call becomes a `pending` approval row, audited (`approval_requested`, fail closed) and
//! announced to the devices that may answer. The holder then waits for news or re-reads its row
//! every [`POLL`]. An approval hands over the device's capability, which the proxy checks like any
//! other before anything is decrypted; a denial or the deadline ends the call. If the agent goes
//! away first, the row is expired so nobody approves a call that no longer exists. If the
//! workspace's agents are paused meanwhile (the pause wakes the holder; it also re-reads the pause
//! before each read of its row), the row is expired with reason `agents_paused` and the agent
//! answered `403 agents_paused`.

use std::time::Duration;

use latchkey_core::ids::{ApprovalId, WorkspaceId};
use tokio::time::Instant;

use super::{Call, now_ms};
use crate::approvals::{POLL, Signal, SignalKind};
use crate::audit::{AuditEvent, AuditKind, Decision};
use crate::error::{ApiError, ErrorCode};
use crate::state::SharedState;
use crate::store::StoreError;
use crate::store::agents::AgentRecord;
use crate::store::approvals::{ApprovalStatus, NewApproval};
use crate::store::credentials::CredentialRecord;

/// A held call's approval: the capability to go on with.
pub(super) struct Approved {
    pub(super) id: ApprovalId,
    pub(super) capability: String,
}

/// What the call looks like to the member asked to approve it.
pub(super) struct Held<'a> {
    pub(super) agent: &'a AgentRecord,
    pub(super) credential: &'a CredentialRecord,
    pub(super) policy_ids: &'a [String],
    pub(super) body_size: Option<u64>,
    pub(super) wait: Duration,
    pub(super) now: u64,
}

/// Holds `call` until a device answers or `held.wait` passes.
pub(super) async fn hold(
    state: &SharedState,
    call: &Call,
    held: Held<'_>,
) -> Result<Approved, ApiError> {
    let workspace = held.agent.workspace;
    let id = ApprovalId::random();
    let deadline = Instant::now() + held.wait;
    let waiter = state.approvals.wait_for(id, held.agent.id).ok_or_else(|| {
        ApiError::new(
            ErrorCode::TooManyWaiting,
            format!(
                "this agent already has {} calls waiting for a member's approval; wait for their answers before asking again",
                crate::approvals::MAX_HELD_PER_AGENT
            ),
        )
    })?;
    let new = NewApproval {
        workspace,
        id,
        agent: held.agent.id,
        credential: held.credential.id,
        credential_owner: match held.credential.owner {
            latchkey_core::ids::Owner::Member(member) => Some(member),
            latchkey_core::ids::Owner::Shared => None,
        },
        agent_owner: held.agent.owner,
        credential_name: held.credential.name.clone(),
        method: call.method.clone(),
        host: call.host.clone().unwrap_or_default(),
        path: call.path.clone(),
        query_keys: crate::approvals::query_keys(call.query.as_deref()),
        body_size: held.body_size,
        policy_ids: held.policy_ids.to_vec(),
        now: held.now,
        expires_at: held.now.saturating_add(held.wait.as_secs_f64().ceil() as u64),
    };
    // Armed before the row is written: an agent that hangs up while the insert is under way
    // (its row committed, this future dropped before it resumed) must still leave the approval
    // expired, not pending until its deadline. A drop before the insert commits finds no row.
    let mut pending = Pending { state: state.clone(), workspace, id, armed: true };
    if let Err(e) = state.store.create_approval(&new).await {
        pending.armed = false;
        return Err(e.into());
    }

    let mut event =
        call.event(workspace, AuditKind::ApprovalRequested, Decision::Allowed, now_ms());
    event.decision = None;
    event.approval_id = Some(id.to_string());
    if let Err(e) = state.audit.append(event).await {
        tracing::error!(error = %e, "audit append failed; not holding the call");
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "the audit log is unavailable, so nobody was asked to approve the call; retry shortly",
        ));
    }
    let requested = Signal { workspace, id, kind: SignalKind::Requested };
    if let Err(e) = state.approvals.publish(&state.store, requested).await {
        // The devices' streams miss the news; a listing still shows the approval.
        tracing::warn!(error = %e, "could not announce an approval request");
    }

    loop {
        // Paused meanwhile (on any replica): the call ends as every call does while paused. Read
        // from the database, not the read cache: this runs at most once per POLL per held call.
        if state.store.pause_state(workspace).await?.0.is_some() {
            pending.armed = false;
            if !expire(state, expired(call, workspace), id, "agents_paused").await? {
                // Answered just before: an approval's capability must not wait in its row for
                // a holder that will never take it.
                let _ = state.store.take_approved_capability(workspace, id).await?;
            }
            return Err(super::agents_paused());
        }
        let record = state
            .store
            .approval(workspace, id)
            .await?
            .ok_or_else(|| ApiError::internal(&"a held call's approval row disappeared"))?;
        match record.status {
            ApprovalStatus::Approved => {
                pending.armed = false;
                let capability =
                    state.store.take_approved_capability(workspace, id).await?.ok_or_else(
                        || ApiError::internal(&"an approved call's capability was already taken"),
                    )?;
                return Ok(Approved { id, capability });
            }
            ApprovalStatus::Denied => {
                pending.armed = false;
                return Err(ApiError::new(
                    ErrorCode::ApprovalDenied,
                    "a member denied this call; ask the agent's owner before trying it again",
                ));
            }
            ApprovalStatus::Expired => {
                pending.armed = false;
                return Err(timed_out(held.wait));
            }
            ApprovalStatus::Pending => {}
        }
        if state.approvals.is_closing() {
            pending.armed = false;
            expire(state, expired(call, workspace), id, "broker_shutdown").await?;
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                "the broker is shutting down, so the call was not held any longer; retry",
            ));
        }
        let now = Instant::now();
        if now >= deadline {
            pending.armed = false;
            if expire(state, expired(call, workspace), id, "approval_timeout").await? {
                return Err(timed_out(held.wait));
            }
            // Answered in the meantime: the next read takes the answer.
            continue;
        }
        waiter.next(POLL.min(deadline - now)).await;
    }
}

/// Expires a pending approval, audits it (`event`, an `approval_expired` record of the call so
/// far) and announces it. `false`: it was answered first, and nothing is audited.
async fn expire(
    state: &SharedState,
    mut event: AuditEvent,
    id: ApprovalId,
    reason: &str,
) -> Result<bool, StoreError> {
    let workspace = event.workspace;
    if !state.store.expire_approval(workspace, id, state.now()).await? {
        return Ok(false);
    }
    event.approval_id = Some(id.to_string());
    event.reason_code = Some(reason.to_owned());
    if let Err(e) = state.audit.append(event).await {
        tracing::error!(error = %e, "could not audit an expired approval");
    }
    let resolved = Signal { workspace, id, kind: SignalKind::Resolved };
    if let Err(e) = state.approvals.publish(&state.store, resolved).await {
        tracing::warn!(error = %e, "could not announce an expired approval");
    }
    Ok(true)
}

/// The `approval_expired` record of `call` so far.
fn expired(call: &Call, workspace: WorkspaceId) -> AuditEvent {
    call.event(workspace, AuditKind::ApprovalExpired, Decision::Denied, now_ms())
}

fn timed_out(wait: Duration) -> ApiError {
    ApiError::new(
        ErrorCode::ApprovalTimeout,
        format!(
            "nobody approved this call within {} seconds; retry to ask again",
            wait.as_secs().max(1)
        ),
    )
}

/// Expires the approval if the holder goes away (the agent disconnected) before an outcome.
struct Pending {
    state: SharedState,
    workspace: WorkspaceId,
    id: ApprovalId,
    armed: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (state, workspace, id) = (self.state.clone(), self.workspace, self.id);
        self.state.background.spawn(async move {
            let mut event = AuditEvent::new(workspace, now_ms(), AuditKind::ApprovalExpired);
            event.decision = Some(Decision::Denied);
            if let Err(e) = expire(&state, event, id, "caller_gone").await {
                tracing::warn!(error = %e, "could not expire an abandoned approval");
            }
        });
    }
}
