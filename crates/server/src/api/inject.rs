//! `POST /v1/agents/{id}/inject`: may a member's device release a credential into the
//! environment of a command it runs as an agent (`latchkey run --inject`)?
//!
//! The broker decides and audits; it releases nothing. The device already holds the record key
//! of every credential its member may use, and opens the envelope itself only after an allow.
//! No envelope, key or token crosses the wire: the request carries the agent token's hash (which
//! proves the device holds the token), the credential's id, the lifetime and the command's
//! program name.
//!
//! Checks, in order: the lifetime and command are acceptable; the token hash is that of the
//! agent in the path, in the caller's workspace, not revoked; the workspace's agents are not
//! paused; the credential exists in the workspace, is one the caller's member may use (shared,
//! or their own personal one), and is active; the workspace's policies allow the `inject` action
//! (only a permit that names it can; the default policies do not); then the `inject_released`
//! record is committed, and if it cannot be, the answer is `503 unavailable` (fail closed).
//! Every refusal after the signature is verified is audited as `inject_denied`.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use latchkey_core::ids::{AgentId, CredentialId, Owner};
use latchkey_core::token::TokenHash;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::agents::path_id;
use super::openapi::{DeviceErrors, stand_in};
use crate::audit::{AuditEvent, AuditKind, Decision};
use crate::auth::{DeviceCaller, Signed};
use crate::error::{ApiError, ErrorCode};
use crate::policy::{InjectRequest, MAX_INJECT_LIFETIME_SECS};
use crate::state::SharedState;
use crate::store::credentials::CredentialStatus;

/// Longest command name, in bytes.
pub(crate) const MAX_COMMAND_BYTES: usize = 128;

pub(super) fn routes() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new().routes(routes!(inject))
}

/// The body of `POST /v1/agents/{id}/inject`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct InjectBody {
    /// The agent token's hash, 64 hex characters (docs/protocol.md, "Agent tokens"); never the
    /// token itself.
    #[schema(example = "f0173ad53364a52a5399ccd97b95cdf96b85b99d2438ca578f1c01d12c85a29f")]
    token_hash: String,
    /// The credential to release.
    #[schema(value_type = stand_in::CredentialId)]
    credential: CredentialId,
    /// How long the command may keep it, in seconds: 1 to 86400 (24 hours).
    #[schema(minimum = 1, maximum = 86400, example = 3600)]
    lifetime_secs: u64,
    /// The command's program name, without directory or arguments: 1 to 128 bytes, no `/`, no
    /// control characters.
    #[schema(example = "python3")]
    command: String,
}

/// An allowed inject: the device may open the credential and set it in the command's
/// environment.
#[derive(Debug, Serialize, ToSchema)]
struct Released {
    /// Always `allow` (a refusal is an error).
    decision: &'static str,
    #[schema(value_type = stand_in::AgentId)]
    agent: AgentId,
    #[schema(value_type = stand_in::CredentialId)]
    credential: CredentialId,
    credential_name: String,
    lifetime_secs: u64,
    /// Unix seconds: the end of the lifetime, from the broker's clock.
    expires_at: u64,
    /// The permits that allowed it (each names the `inject` action).
    policies: Vec<String>,
    /// The `seq` of the `inject_released` record in the workspace's audit log.
    audit_seq: u64,
}

/// Asks whether a credential may be released into a command's environment on the calling device.
///
/// The broker checks the agent (the token hash is that of the agent in the path, in the caller's
/// workspace, not revoked), the workspace's pause, the credential (in the workspace, the caller's
/// member may use it, active) and the workspace's policies for the `inject` action, then commits
/// an `inject_released` audit record and answers `200`. Only then does the device open the
/// envelope with the record key it holds. A refusal is audited as `inject_denied`. Nothing
/// secret is sent or answered.
#[utoipa::path(
    post,
    path = "/v1/agents/{id}/inject",
    tag = "agents",
    operation_id = "inject",
    security(("device_signature" = [])),
    params(("id" = String, Path, format = "uuid", description = "The agent id")),
    request_body = InjectBody,
    responses(
        (status = 200, description = "Allowed and audited: open the credential on the device", body = Released),
        DeviceErrors,
        (status = 400, description = "`bad_request` (the id is not a UUID, a malformed token hash or body) or `invalid_request` (the lifetime or the command name)", body = ApiError),
        (status = 401, description = "`unknown_token` (the token hash is not that of this agent in the caller's workspace) or `token_revoked`; and, as for every device request, `signature_invalid`, `unknown_device`, `replayed_request`", body = ApiError),
        (status = 403, description = "`agents_paused`, `forbidden` (the credential is disabled or needs reconnecting) or `policy_denied` (no permit naming the `inject` action allows it, or a forbid refuses it)", body = ApiError),
        (status = 404, description = "`not_found`: no such credential in the workspace, or another member's personal one", body = ApiError),
        (status = 503, description = "`unavailable`: the audit log could not record the release, so nothing was released", body = ApiError),
    ),
)]
async fn inject(
    State(state): State<SharedState>,
    id: Result<Path<String>, PathRejection>,
    request: Signed<InjectBody>,
) -> Result<Json<Released>, ApiError> {
    let mut attempt = Attempt::new(&request.caller, &request.body);
    match decide(&state, id, &request.caller, &request.body, &mut attempt).await {
        Ok(released) => Ok(Json(released)),
        Err(error) => {
            attempt.deny(&state, &error).await;
            Err(error)
        }
    }
}

/// What is known about a request so far, for its audit record.
#[derive(Debug)]
struct Attempt {
    caller: DeviceCaller,
    agent: Option<AgentId>,
    credential_name: Option<String>,
    lifetime_secs: u64,
    command: String,
    policy_ids: Vec<String>,
}

impl Attempt {
    fn new(caller: &DeviceCaller, body: &InjectBody) -> Self {
        Self {
            caller: *caller,
            agent: None,
            credential_name: None,
            lifetime_secs: body.lifetime_secs,
            command: body.command.clone(),
            policy_ids: Vec::new(),
        }
    }

    fn event(&self, kind: AuditKind, decision: Decision) -> AuditEvent {
        let mut event = AuditEvent::new(self.caller.workspace, now_ms(), kind);
        event.decision = Some(decision);
        event.agent = self.agent;
        event.device = Some(self.caller.device);
        event.member = Some(self.caller.member);
        event.credential_name.clone_from(&self.credential_name);
        event.policy_ids.clone_from(&self.policy_ids);
        event.lifetime_secs = Some(self.lifetime_secs);
        // The audit record cuts long strings; an unacceptable name is recorded as such (it may
        // hold anything, control characters included).
        event.command = Some(if command_ok(&self.command) {
            self.command.clone()
        } else {
            "(invalid)".to_owned()
        });
        event
    }

    /// Audits a refusal; a failure to do so is logged (the request is refused anyway).
    async fn deny(&self, state: &SharedState, error: &ApiError) {
        let mut event = self.event(AuditKind::InjectDenied, Decision::Denied);
        event.reason_code = Some(error.code.spelling());
        if let Err(e) = state.audit.append(event).await {
            tracing::error!(error = %e, "could not audit a refused inject");
        }
    }
}

async fn decide(
    state: &SharedState,
    id: Result<Path<String>, PathRejection>,
    caller: &DeviceCaller,
    body: &InjectBody,
    attempt: &mut Attempt,
) -> Result<Released, ApiError> {
    let agent_id: AgentId = path_id(id, "agent")?;
    if body.lifetime_secs == 0 || body.lifetime_secs > MAX_INJECT_LIFETIME_SECS {
        return Err(invalid(format!(
            "lifetime_secs must be 1 to {MAX_INJECT_LIFETIME_SECS} (24 hours)"
        )));
    }
    if !command_ok(&body.command) {
        return Err(invalid(format!(
            "command must be the program's name only: 1 to {MAX_COMMAND_BYTES} bytes, without `/` or control characters"
        )));
    }
    let hash = TokenHash::from_hex(&body.token_hash).map_err(|_| {
        ApiError::new(ErrorCode::BadRequest, "token_hash must be 64 hex characters (32 bytes)")
    })?;

    // 1. The agent: this token's, in the caller's workspace, live.
    let agent = state
        .store
        .agent_with_token_hash(caller.workspace, agent_id, &hash)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnknownToken,
                "the token hash is not that of this agent in your workspace; hash the token the agent was given (docs/protocol.md, \"Agent tokens\")",
            )
        })?;
    attempt.agent = Some(agent.id);
    if agent.revoked_at.is_some() {
        return Err(ApiError::new(
            ErrorCode::TokenRevoked,
            "this agent was revoked; create a new agent for the command",
        ));
    }

    // 2. The workspace's kill switch.
    if state.store.pause_state(caller.workspace).await?.0.is_some() {
        return Err(ApiError::new(
            ErrorCode::AgentsPaused,
            "a member paused all agents in this workspace, so no credential is released; ask them to resume from the Latchkey app or `latchkey agent resume`",
        ));
    }

    // 3. The credential: the caller's member may use it, and it is active.
    let credential = state
        .store
        .credential(caller.workspace, body.credential)
        .await?
        .filter(|c| match c.owner {
            Owner::Shared => true,
            Owner::Member(owner) => owner == caller.member,
        })
        .ok_or_else(|| {
            ApiError::new(ErrorCode::NotFound, "no such credential in this workspace")
        })?;
    attempt.credential_name = Some(credential.name.clone());
    match credential.status {
        CredentialStatus::Active => {}
        CredentialStatus::Disabled => {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "this credential is disabled; its owner (or an admin, for a shared one) can enable it",
            ));
        }
        CredentialStatus::ReconnectNeeded => {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "this credential needs to be reconnected by its owner before it can be used",
            ));
        }
    }

    // 4. Policy.
    let now = state.now();
    let decision = state
        .policies
        .evaluate_inject(
            &state.store,
            &InjectRequest {
                workspace: caller.workspace,
                agent: agent.id,
                agent_name: &agent.name,
                agent_owner: agent.owner,
                credential: credential.id,
                credential_name: &credential.name,
                provider: &credential.provider,
                credential_owner: credential.owner,
                lifetime_secs: body.lifetime_secs,
                command: &body.command,
                now,
            },
        )
        .await?;
    attempt.policy_ids.clone_from(&decision.policy_ids);
    if !decision.errors.is_empty() {
        tracing::info!(workspace = %caller.workspace, errors = ?decision.errors, "inject evaluation notes");
    }
    if !decision.allowed {
        return Err(policy_denied(&decision.policy_ids));
    }

    // 5. Audit before the device is told it may open the credential.
    let receipt = state
        .audit
        .append(attempt.event(AuditKind::InjectReleased, Decision::Allowed))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "audit append failed; refusing the inject");
            ApiError::new(
                ErrorCode::Unavailable,
                "the audit log is unavailable, so nothing was released; retry shortly",
            )
        })?;
    tracing::info!(
        workspace = %caller.workspace,
        agent = %agent.id,
        credential = %credential.id,
        device = %caller.device,
        lifetime_secs = body.lifetime_secs,
        "credential released for an inject"
    );
    Ok(Released {
        decision: "allow",
        agent: agent.id,
        credential: credential.id,
        credential_name: credential.name,
        lifetime_secs: body.lifetime_secs,
        expires_at: now.saturating_add(body.lifetime_secs),
        policies: decision.policy_ids,
        audit_seq: receipt.seq,
    })
}

/// A program name: 1 to [`MAX_COMMAND_BYTES`] bytes, no `/`, no control characters.
pub(crate) fn command_ok(command: &str) -> bool {
    !command.is_empty()
        && command.len() <= MAX_COMMAND_BYTES
        && !command.contains('/')
        && !command.chars().any(char::is_control)
}

fn policy_denied(policy_ids: &[String]) -> ApiError {
    let by = if policy_ids.is_empty() {
        "no policy permits it: a permit must name Latchkey::Action::\"inject\" in its action scope (docs/policy.md, \"Inject\")".to_owned()
    } else {
        format!("policy {}", policy_ids.join(", "))
    };
    ApiError::new(
        ErrorCode::PolicyDenied,
        format!(
            "releasing this credential into a command's environment was denied by the workspace's policies ({by}); an admin can change them in the Latchkey app"
        ),
    )
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, message)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
