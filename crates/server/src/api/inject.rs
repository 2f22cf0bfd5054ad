//! `POST /v1/agents/{id}/inject`: may a member's device release credentials into the
//! environment of a command it runs as an agent (`latchkey run --inject`)?
//!
//! The broker decides and audits; it releases nothing. The device already holds the record key
//! of every credential its member may use, and opens the envelopes itself only after an allow.
//! No envelope, key or token crosses the wire: the request carries the agent token's hash (which
//! proves the device holds the token), the credentials' ids, the lifetime and the command's
//! program name.
//!
//! Checks, in order: the body is acceptable; the token hash is that of the agent in the path, in
//! the caller's workspace, not revoked; the workspace's agents are not paused; then every
//! credential: it exists in the workspace, is one the caller's member may use (shared, or their
//! own personal one), is active, and the workspace's policies allow the `inject` action for it
//! (only a permit that names it can; the default policies do not). A command gets every
//! credential it asked for or none: only if all pass are the `inject_released` records committed,
//! one per credential in one transaction, and if they cannot be, the answer is `503 unavailable`
//! (fail closed). Every refusal after the signature is verified is audited as `inject_denied`,
//! per credential once the credentials are looked at; one that passed while another was refused
//! is recorded with the reason `another_credential_refused`.

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
    /// One credential to release. Give this or `credentials`, not both.
    #[serde(default)]
    #[schema(value_type = Option<stand_in::CredentialId>)]
    credential: Option<CredentialId>,
    /// Every credential to release for the command, 1 to 32, each once: all are released or
    /// none is. Give this or `credential`, not both.
    #[serde(default)]
    #[schema(value_type = Option<Vec<stand_in::CredentialId>>, min_items = 1, max_items = 32)]
    credentials: Option<Vec<CredentialId>>,
    /// How long the command may keep them, in seconds: 1 to 86400 (24 hours).
    #[schema(minimum = 1, maximum = 86400, example = 3600)]
    lifetime_secs: u64,
    /// The command's program name, without directory or arguments: 1 to 128 bytes, no `/`, no
    /// control characters.
    #[schema(example = "python3")]
    command: String,
}

impl InjectBody {
    /// The credentials asked for, in order.
    fn asked(&self) -> Result<Vec<CredentialId>, ApiError> {
        let asked = match (&self.credential, &self.credentials) {
            (Some(one), None) => vec![*one],
            (None, Some(several)) => several.clone(),
            _ => {
                return Err(ApiError::new(
                    ErrorCode::BadRequest,
                    "give either `credential` (one) or `credentials` (several), not both",
                ));
            }
        };
        if asked.is_empty() || asked.len() > MAX_INJECT_CREDENTIALS {
            return Err(invalid(format!(
                "credentials must name 1 to {MAX_INJECT_CREDENTIALS} credentials"
            )));
        }
        let mut seen = std::collections::HashSet::new();
        if !asked.iter().all(|id| seen.insert(*id)) {
            return Err(invalid("credentials must name each credential once"));
        }
        Ok(asked)
    }
}

/// An allowed inject: the device may open the credentials and set them in the command's
/// environment.
#[derive(Debug, Serialize, ToSchema)]
struct Released {
    /// Always `allow` (a refusal is an error).
    decision: &'static str,
    #[schema(value_type = stand_in::AgentId)]
    agent: AgentId,
    /// The first credential of `released` (with `credential_name`, `policies` and `audit_seq`,
    /// the answer of the one-credential form).
    #[schema(value_type = stand_in::CredentialId)]
    credential: CredentialId,
    credential_name: String,
    lifetime_secs: u64,
    /// Unix seconds: the end of the lifetime, from the broker's clock.
    expires_at: u64,
    /// The permits that allowed the first credential (each names the `inject` action).
    policies: Vec<String>,
    /// The `seq` of the first credential's `inject_released` record in the workspace's audit
    /// log.
    audit_seq: u64,
    /// Every credential released, in the order asked, each with its own `inject_released`
    /// record (all committed in one transaction).
    released: Vec<ReleasedCredential>,
}

/// One credential of an allowed inject.
#[derive(Debug, Clone, Serialize, ToSchema)]
struct ReleasedCredential {
    #[schema(value_type = stand_in::CredentialId)]
    credential: CredentialId,
    credential_name: String,
    /// The permits that allowed it (each names the `inject` action).
    policies: Vec<String>,
    /// The `seq` of its `inject_released` record.
    audit_seq: u64,
}

/// Asks whether credentials may be released into a command's environment on the calling device.
///
/// The broker checks the agent (the token hash is that of the agent in the path, in the caller's
/// workspace, not revoked) and the workspace's pause, then every credential asked for (in the
/// workspace, the caller's member may use it, active, and the workspace's policies allow the
/// `inject` action for it). Only if every one passes does it commit an `inject_released` audit
/// record per credential, in one transaction, and answer `200`; only then does the device open
/// the envelopes with the record keys it holds. Otherwise nothing is released: the answer is
/// the refusal of the first credential refused (in the order asked), and each credential asked
/// for gets an `inject_denied` record, with its own reason code, or `another_credential_refused`
/// for one that passed. Nothing secret is sent or answered.
#[utoipa::path(
    post,
    path = "/v1/agents/{id}/inject",
    tag = "agents",
    operation_id = "inject",
    security(("device_signature" = [])),
    params(("id" = String, Path, format = "uuid", description = "The agent id")),
    request_body = InjectBody,
    responses(
        (status = 200, description = "Allowed and audited: open the credentials on the device", body = Released),
        DeviceErrors,
        (status = 400, description = "`bad_request` (the id is not a UUID, a malformed token hash or body, or both or neither of `credential` and `credentials`) or `invalid_request` (the lifetime, the command name, or `credentials` empty, too many or naming one twice)", body = ApiError),
        (status = 401, description = "`unknown_token` (the token hash is not that of this agent in the caller's workspace) or `token_revoked`; and, as for every device request, `signature_invalid`, `unknown_device`, `replayed_request`", body = ApiError),
        (status = 403, description = "`agents_paused`, `forbidden` (a credential is disabled or needs reconnecting) or `policy_denied` (no permit naming the `inject` action allows a credential, or a forbid refuses it); nothing is released", body = ApiError),
        (status = 404, description = "`not_found`: a credential is not in the workspace, or is another member's personal one; nothing is released", body = ApiError),
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

/// The reason code of an `inject_denied` record for a credential that passed every check but
/// was asked for together with one that did not: released with the others or not at all.
pub(crate) const ANOTHER_CREDENTIAL_REFUSED: &str = "another_credential_refused";

/// Most credentials one inject may ask for.
pub(crate) const MAX_INJECT_CREDENTIALS: usize = 32;

/// What is known about a request so far, for its audit records.
#[derive(Debug)]
struct Attempt {
    caller: DeviceCaller,
    agent: Option<AgentId>,
    lifetime_secs: u64,
    command: String,
    /// Every credential looked at, in the order asked.
    considered: Vec<Considered>,
}

/// One credential as far as it got.
#[derive(Debug)]
struct Considered {
    /// Its name, once it was found.
    name: Option<String>,
    policy_ids: Vec<String>,
    /// Why it was refused, if it was.
    refused: Option<ErrorCode>,
}

impl Attempt {
    fn new(caller: &DeviceCaller, body: &InjectBody) -> Self {
        Self {
            caller: *caller,
            agent: None,
            lifetime_secs: body.lifetime_secs,
            command: body.command.clone(),
            considered: Vec::new(),
        }
    }

    fn event(&self, kind: AuditKind, decision: Decision) -> AuditEvent {
        let mut event = AuditEvent::new(self.caller.workspace, now_ms(), kind);
        event.decision = Some(decision);
        event.agent = self.agent;
        event.device = Some(self.caller.device);
        event.member = Some(self.caller.member);
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

    fn credential_event(&self, kind: AuditKind, decision: Decision, c: &Considered) -> AuditEvent {
        let mut event = self.event(kind, decision);
        event.credential_name.clone_from(&c.name);
        event.policy_ids.clone_from(&c.policy_ids);
        event
    }

    /// Audits a refusal: one record for a request refused before its credentials were looked
    /// at, else one per credential. A failure to do so is logged (the request is refused anyway).
    async fn deny(&self, state: &SharedState, error: &ApiError) {
        let events = if self.considered.is_empty() {
            let mut event = self.event(AuditKind::InjectDenied, Decision::Denied);
            event.reason_code = Some(error.code.spelling());
            vec![event]
        } else {
            let any_refused = self.considered.iter().any(|c| c.refused.is_some());
            self.considered
                .iter()
                .map(|c| {
                    let mut event =
                        self.credential_event(AuditKind::InjectDenied, Decision::Denied, c);
                    event.reason_code = Some(match c.refused {
                        Some(code) => code.spelling(),
                        // Every credential passed, and the request failed after (the audit log).
                        None if !any_refused => error.code.spelling(),
                        None => ANOTHER_CREDENTIAL_REFUSED.to_owned(),
                    });
                    event
                })
                .collect()
        };
        if let Err(e) = state.audit.append_all(events).await {
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
    let asked = body.asked()?;
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

    // 3. Every credential, each on its own: a refusal of one is recorded and the others are
    // still looked at, so the audit log says which were refused.
    let now = state.now();
    let mut first_refusal: Option<ApiError> = None;
    let mut passed = Vec::with_capacity(asked.len());
    for credential in asked {
        let mut considered = Considered { name: None, policy_ids: Vec::new(), refused: None };
        match check_credential(state, caller, &agent, credential, body, now, &mut considered).await
        {
            Ok(released) => passed.push(released),
            // A store failure ends the request: nothing more can be decided.
            Err(Refusal::Store(error)) => {
                attempt.considered.push(considered);
                return Err(error);
            }
            Err(Refusal::Refused(error)) => {
                considered.refused = Some(error.code);
                first_refusal.get_or_insert(error);
            }
        }
        attempt.considered.push(considered);
    }
    if let Some(error) = first_refusal {
        let refused = attempt.considered.iter().filter(|c| c.refused.is_some()).count();
        if attempt.considered.len() == 1 {
            return Err(error);
        }
        return Err(ApiError {
            message: format!(
                "{} (nothing was released: {refused} of the {} credentials asked for together were refused)",
                error.message,
                attempt.considered.len()
            ),
            ..error
        });
    }

    // 4. Audit every release, in one transaction, before the device is told it may open them.
    let events = attempt
        .considered
        .iter()
        .map(|c| attempt.credential_event(AuditKind::InjectReleased, Decision::Allowed, c))
        .collect();
    let receipts = state.audit.append_all(events).await.map_err(|e| {
        tracing::error!(error = %e, "audit append failed; refusing the inject");
        ApiError::new(
            ErrorCode::Unavailable,
            "the audit log is unavailable, so nothing was released; retry shortly",
        )
    })?;
    for (released, receipt) in passed.iter_mut().zip(&receipts) {
        released.audit_seq = receipt.seq;
        tracing::info!(
            workspace = %caller.workspace,
            agent = %agent.id,
            credential = %released.credential,
            device = %caller.device,
            lifetime_secs = body.lifetime_secs,
            "credential released for an inject"
        );
    }
    let first = passed.first().cloned().ok_or_else(|| {
        // Unreachable: `asked` names at least one credential and every one passed.
        ApiError::new(ErrorCode::Internal, "nothing to release")
    })?;
    Ok(Released {
        decision: "allow",
        agent: agent.id,
        credential: first.credential,
        credential_name: first.credential_name,
        lifetime_secs: body.lifetime_secs,
        expires_at: now.saturating_add(body.lifetime_secs),
        policies: first.policies,
        audit_seq: first.audit_seq,
        released: passed,
    })
}

/// Why a credential was not passed.
enum Refusal {
    /// Refused: recorded, and the other credentials are still looked at.
    Refused(ApiError),
    /// The store failed: the request ends.
    Store(ApiError),
}

/// Checks one credential: the caller's member may use it, it is active, and the policies allow
/// the inject. Fills in `considered` as far as it gets.
async fn check_credential(
    state: &SharedState,
    caller: &DeviceCaller,
    agent: &crate::store::agents::AgentRecord,
    id: CredentialId,
    body: &InjectBody,
    now: u64,
    considered: &mut Considered,
) -> Result<ReleasedCredential, Refusal> {
    let credential = state
        .store
        .credential(caller.workspace, id)
        .await
        .map_err(|e| Refusal::Store(e.into()))?
        .filter(|c| match c.owner {
            Owner::Shared => true,
            Owner::Member(owner) => owner == caller.member,
        })
        .ok_or_else(|| {
            Refusal::Refused(ApiError::new(
                ErrorCode::NotFound,
                format!("no credential {id} in this workspace"),
            ))
        })?;
    considered.name = Some(credential.name.clone());
    if let Some(refusal) = crate::proxy::unusable(&credential) {
        return Err(Refusal::Refused(refusal));
    }
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
        .await
        .map_err(|e| Refusal::Store(e.into()))?;
    considered.policy_ids.clone_from(&decision.policy_ids);
    if !decision.errors.is_empty() {
        tracing::info!(workspace = %caller.workspace, errors = ?decision.errors, "inject evaluation notes");
    }
    if !decision.allowed {
        return Err(Refusal::Refused(policy_denied(&credential.name, &decision.policy_ids)));
    }
    Ok(ReleasedCredential {
        credential: credential.id,
        credential_name: credential.name,
        policies: decision.policy_ids,
        audit_seq: 0,
    })
}

/// A program name: 1 to [`MAX_COMMAND_BYTES`] bytes, no `/`, no control characters.
pub(crate) fn command_ok(command: &str) -> bool {
    !command.is_empty()
        && command.len() <= MAX_COMMAND_BYTES
        && !command.contains('/')
        && !command.chars().any(char::is_control)
}

fn policy_denied(name: &str, policy_ids: &[String]) -> ApiError {
    let by = if policy_ids.is_empty() {
        "no policy permits it: a permit must name Latchkey::Action::\"inject\" in its action scope (docs/policy.md, \"Inject\")".to_owned()
    } else {
        format!("policy {}", policy_ids.join(", "))
    };
    ApiError::new(
        ErrorCode::PolicyDenied,
        format!(
            "releasing the credential {name:?} into a command's environment was denied by the workspace's policies ({by}); an admin can change them in the Latchkey app"
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
