//! The agent proxy: `{broker}/p/{credential}/{upstream path}`.
//!
//! An agent sends an ordinary HTTP request with its agent token where the provider's SDK puts its
//! key, and a capability in the `Latchkey-Capability` header (or appended to the token after a
//! `.`). Every check below runs before anything is decrypted, in this order:
//!
//! 1. agent token: present, well-formed (checksum), known, not revoked; the workspace's agents
//!    are not paused;
//! 2. credential: exists in the agent's workspace under that name, active;
//! 3. upstream URL: built from the credential's base URL and the request path; its host must be
//!    in the credential's allow-list;
//! 4. capability: decodes; its issuing device is active in the workspace and its member may use
//!    the credential; claims, validity window and signature verify; its key version is current;
//!    a single-use nonce is fresh / a standing grant is live (both in the database);
//! 5. Cedar: the workspace's own policies allow the call;
//! 6. the `proxy_attempt` audit record is committed (fail closed).
//!
//! Only then does [`open`] decrypt: the capability yields the record key, the record key opens the
//! envelope. An expiring OAuth token is refreshed and re-sealed under the same record key. The
//! credential is injected, the request forwarded without following redirects, any echo of the
//! credential removed from the response, and a `proxy_outcome` audit record appended.
//!
//! This module and [`open`] are the only code in the broker that can see a plaintext credential.

mod extract;
mod forward;
mod hold;
mod open;
mod refresh;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse as _, Response};
use axum::routing::any;
use latchkey_core::capability::{
    Capability, CapabilityError, CapabilityRequest, Claims, Method, Reuse, VerifiedCapability,
};
use latchkey_core::ids::{AgentId, DeviceId, MemberId, Owner, WorkspaceId};
use latchkey_core::keys::DeviceVerifyingKey;
use sha2::{Digest as _, Sha256};
use url::Url;
use utoipa_axum::router::OpenApiRouter;

use crate::audit::{AuditEvent, AuditKind, Decision};
use crate::error::{ApiError, ErrorCode};
use crate::metrics::ProxyDecision;
use crate::policy::{GrantKind, PolicyRequest};
use crate::state::SharedState;
use crate::store::credentials::{CredentialRecord, CredentialStatus};
use crate::store::hot::OpenedStanding;
use crate::store::nonces::NonceKind;

pub(crate) use refresh::RefreshLocks;

/// Header carrying a capability.
pub(crate) const CAPABILITY_HEADER: &str = "latchkey-capability";

pub(crate) fn routes() -> OpenApiRouter<SharedState> {
    use utoipa::Path as _;
    let mut router = OpenApiRouter::new().route("/p/{*rest}", any(handle));
    // A wildcard route has no OpenAPI spelling, so the documentation is added by hand here,
    // under the path the annotation below names, with one operation id per method.
    let paths = &mut router.get_openapi_mut().paths;
    for method in __path_handle::methods() {
        let mut operation = __path_handle::operation();
        let name = serde_json::to_value(&method).ok().and_then(|v| v.as_str().map(str::to_owned));
        operation.operation_id = Some(format!("proxy_{}", name.unwrap_or_default()));
        paths.add_path_operation(__path_handle::path(), vec![method], operation);
    }
    router
}

/// An agent's call to an upstream API, with a placeholder token instead of the real credential.
///
/// Send the request the provider's SDK would send, to `{broker}/p/{credential}/{upstream path}`,
/// with the agent token where the SDK puts its key and a capability from a member's device in
/// `Latchkey-Capability` (or appended to the token after a `.`). The broker checks token,
/// credential, upstream host, capability and policy, audits the attempt, injects the credential
/// and forwards the request without following redirects. The upstream's answer comes back as
/// is, with any echo of the credential removed. `{path}` is the rest of the upstream path and
/// may contain `/`; the query string is forwarded.
#[utoipa::path(
    method(get, head, post, put, patch, delete, options),
    path = "/p/{credential}/{path}",
    tag = "proxy",
    operation_id = "proxy",
    security(("agent_token" = []), ("agent_token_header" = [])),
    params(
        ("credential" = String, Path, description = "The credential's name in the agent's workspace"),
        ("path" = String, Path, description = "The upstream path after the credential's base URL; may contain `/`"),
        ("Latchkey-Capability" = Option<String>, Header, description = "A capability issued by a member's device, sealed to the broker (or append it to the token after a `.`)"),
    ),
    responses(
        (status = "default", description = "The upstream's response, as the upstream sent it (redirects included), with any echo of the credential removed"),
        (status = 400, description = "`bad_request`: the path does not form a valid upstream URL, has dot segments or a `%` not followed by two hex digits, or more than one agent token was sent", body = ApiError),
        (status = 401, description = "`unknown_token` (missing, malformed or unknown agent token) or `token_revoked`", body = ApiError),
        (status = 403, description = "`agents_paused` (a member paused every agent call in the workspace; retry once resumed), `forbidden` (the credential needs reconnecting), `host_not_allowed`, `capability_invalid` (signature, claims, time, replay, revocation, rotation) or `policy_denied`", body = ApiError),
        (status = 404, description = "`not_found`: no credential with this name in the agent's workspace", body = ApiError),
        (status = 405, description = "`method_not_allowed`: a method other than GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS", body = ApiError),
        (status = 413, description = "`payload_too_large`: the request body is over the proxy's limit", body = ApiError),
        (status = 428, description = "`approval_required`: no capability; a member must approve the call (retry after approval)", body = ApiError),
        (status = 429, description = "`too_many_waiting`: the agent already has 16 calls waiting for approval on this broker", body = ApiError),
        (status = 500, description = "`internal`", body = ApiError),
        (status = 502, description = "`upstream_failed`: the upstream (or its token endpoint) could not be reached, timed out, presented a TLS certificate the broker refuses, or refused a refresh", body = ApiError),
        (status = 503, description = "`unavailable`: the audit log could not record the attempt, so the call was not made; or the access token has expired and someone else is refreshing it (retry after `Retry-After` seconds)", body = ApiError),
    ),
)]
async fn handle(
    State(state): State<SharedState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let mut call = Call::new(&request, client);
    let outcome = authorize_and_forward(&state, &mut call, request, started).await;
    let decision = if call.forwarded { ProxyDecision::Allowed } else { ProxyDecision::Denied };
    state.metrics.proxy_request(decision, outcome.as_ref().err().map(|e| e.code));
    match outcome {
        Ok(response) => response,
        Err(error) => {
            // After forwarding, the attempt is on record as allowed and its outcome record
            // carries this error's code: a denied attempt would be a second, false account.
            if !call.forwarded {
                call.deny(&state, &error).await;
            }
            error.into_response()
        }
    }
}

/// What is known about a call so far, for the audit record.
#[derive(Debug)]
struct Call {
    method: String,
    path: String,
    query: Option<String>,
    credential_name: String,
    client_ip: String,
    workspace: Option<WorkspaceId>,
    agent: Option<AgentId>,
    device: Option<DeviceId>,
    member: Option<MemberId>,
    host: Option<String>,
    policy_ids: Vec<String>,
    /// The approval that let the call go on, when it was held for one.
    approval: Option<latchkey_core::ids::ApprovalId>,
    /// Every check passed and the attempt was audited: the call went on to the upstream.
    forwarded: bool,
}

impl Call {
    fn new(request: &Request, client: SocketAddr) -> Self {
        let (credential_name, path) = extract::split_proxy_path(request.uri().path());
        Self {
            method: request.method().as_str().to_owned(),
            path,
            query: request.uri().query().map(str::to_owned),
            credential_name,
            client_ip: client.ip().to_string(),
            workspace: None,
            agent: None,
            device: None,
            member: None,
            host: None,
            policy_ids: Vec::new(),
            approval: None,
            forwarded: false,
        }
    }

    fn event(
        &self,
        workspace: WorkspaceId,
        kind: AuditKind,
        decision: Decision,
        now_ms: u64,
    ) -> AuditEvent {
        AuditEvent {
            workspace,
            at_ms: now_ms,
            kind,
            decision: Some(decision),
            reason_code: None,
            agent: self.agent,
            device: self.device,
            member: self.member,
            credential_name: Some(self.credential_name.clone()),
            method: Some(self.method.clone()),
            host: self.host.clone(),
            path: Some(self.path.clone()),
            policy_ids: self.policy_ids.clone(),
            approval_id: self.approval.map(|id| id.to_string()),
            attempt_seq: None,
            upstream_status: None,
            latency_ms: None,
            client_ip: Some(self.client_ip.clone()),
            lifetime_secs: None,
            command: None,
            subject: None,
        }
    }

    /// Audits a refused call. Calls whose agent is unknown belong to no workspace and so to no
    /// audit chain; they are logged (without the token) instead.
    async fn deny(&self, state: &SharedState, error: &ApiError) {
        let Some(workspace) = self.workspace else {
            tracing::info!(
                code = ?error.code,
                client_ip = %self.client_ip,
                credential = %self.credential_name,
                "proxy call refused before an agent was identified"
            );
            return;
        };
        let mut event = self.event(workspace, AuditKind::ProxyAttempt, Decision::Denied, now_ms());
        event.reason_code = Some(error.code.spelling());
        if let Err(e) = state.audit.append(event).await {
            tracing::error!(error = %e, "could not audit a refused proxy call");
        }
    }
}

async fn authorize_and_forward(
    state: &SharedState,
    call: &mut Call,
    request: Request,
    started: Instant,
) -> Result<Response, ApiError> {
    let mut now = state.now();
    // Writes committed through other replicas on the same database drop the cache first (on
    // PostgreSQL; see `Store::sync_hot_cache`), so a revocation anywhere is enforced here now.
    // Before the generation below: an invalidation it causes must not be mistaken for a write
    // that raced this call's loads. A failure refuses the call, as any store error does.
    state.store.sync_hot_cache().await?;
    // Taken before anything is read: a standing capability opened below is cached only if no
    // write invalidated the cache meanwhile.
    let generation = state.store.hot.generation();

    // 1. The agent.
    let presented = extract::agent_token(request.headers())?;
    let token_hash = presented.token.hash();
    let mut agent = active_agent(state, call, &token_hash).await?;
    state.store.note_agent_used(&agent, &token_hash, now);
    let method = Method::parse(&call.method).ok_or_else(|| {
        ApiError::new(
            ErrorCode::MethodNotAllowed,
            "the proxy forwards GET, HEAD, POST, PUT, PATCH, DELETE and OPTIONS",
        )
    })?;

    // 2. The credential.
    let mut credential = active_credential(state, agent.workspace, &call.credential_name).await?;

    // 3. The upstream URL and its host, from the path in the form every later check reads.
    if let std::borrow::Cow::Owned(normal) = forward::normalize_path(&call.path)? {
        call.path = normal;
    }
    let mut upstream = upstream_for(call, &credential)?;
    // A body declared over the limit is refused here, before the call is held, audited as
    // allowed or anything is decrypted; one that does not declare its length is counted as it
    // streams, and cut off (the upstream never receives a complete request) past the limit.
    if extract::declared_length(request.headers()).is_some_and(|n| n > forward::MAX_REQUEST_BODY) {
        return Err(open::body_too_large());
    }

    // 4a. No capability: if the policies would allow the call once a member approves it, hold
    // it while the devices that may approve are asked (see `hold`). The answer is a capability,
    // checked below like any other, and the policies are evaluated again with it.
    let mut text =
        presented.capability.as_deref().or_else(|| extract::capability_header(request.headers()));
    let approved = match text {
        Some(_) => None,
        None => {
            let wait = crate::approvals::preferred_wait(request.headers())
                .map_or(state.approvals.timeout, |w| w.min(state.approvals.timeout));
            let decision = state
                .policies
                .evaluate(
                    &state.store,
                    &policy_request(call, &agent, &credential, now, GrantKind::None),
                )
                .await?;
            call.policy_ids = decision.policy_ids.clone();
            if !decision.approval_required && !decision.allowed {
                return Err(policy_denied(&decision.policy_ids));
            }
            if wait.is_zero() {
                return Err(approval_required());
            }
            let held = hold::Held {
                agent: &agent,
                credential: &credential,
                policy_ids: &decision.policy_ids,
                body_size: extract::declared_length(request.headers()),
                wait,
                now,
            };
            let approved = hold::hold(state, call, held).await?;
            call.approval = Some(approved.id);
            // The answer took a member's time: what was read before the hold is read again, so
            // an agent revoked, a credential removed, disabled or given other hosts, or a pause
            // meanwhile holds for this call as for any call that arrived after it.
            state.store.sync_hot_cache().await?;
            now = state.now();
            agent = active_agent(state, call, &token_hash).await?;
            credential = active_credential(state, agent.workspace, &call.credential_name).await?;
            upstream = upstream_for(call, &credential)?;
            Some(approved.capability)
        }
    };
    if let Some(capability) = &approved {
        text = Some(capability.as_str());
    }

    // 4. The capability: a standing one verified and opened before is found by its digest and
    // re-checked against this request; any other is decoded and verified in full.
    let digest = text.map(|text| <[u8; 32]>::from(Sha256::digest(text.as_bytes())));
    let opened: Option<Arc<OpenedStanding>> = digest.and_then(|d| state.store.hot.get(&d));
    let decoded = match (text, &opened) {
        (Some(text), None) => {
            Some(Capability::decode(text).map_err(|e| capability_invalid(&e.to_string()))?)
        }
        _ => None,
    };
    // `call` records who issued the capability as the checks learn it, so the request borrows
    // its own copy of the path.
    let path = call.path.clone();
    let request_claims = CapabilityRequest {
        workspace: credential.workspace,
        agent: agent.id,
        credential: credential.id,
        method,
        path: &path,
        now,
    };
    let checked = match (&opened, &decoded) {
        (Some(hit), _) => {
            check_state(state, call, &hit.claims, &credential, now, |_| {
                hit.claims.check_request(&request_claims).map_err(refused)
            })
            .await?;
            Some(Checked::Opened(hit))
        }
        (None, Some(capability)) => {
            let verified = check_state(state, call, capability.claims(), &credential, now, |key| {
                // Decompressing the point costs a square root: only for capabilities not seen
                // before, whose signature is checked.
                let key = DeviceVerifyingKey::from_bytes(key)
                    .map_err(|e| ApiError::internal(&format!("stored device key unusable: {e}")))?;
                capability.verify(&key, &request_claims).map_err(refused)
            })
            .await?;
            Some(Checked::Verified(verified))
        }
        _ => None,
    };
    let grant = match checked.as_ref().map(|c| c.claims().reuse) {
        Some(Reuse::SingleUse { .. }) => GrantKind::SingleUse,
        Some(Reuse::Standing { .. }) => GrantKind::Standing,
        None => GrantKind::None,
    };

    // 5. Policy.
    let decision = state
        .policies
        .evaluate(&state.store, &policy_request(call, &agent, &credential, now, grant))
        .await?;
    call.policy_ids = decision.policy_ids.clone();
    let Some(checked) = checked else {
        // Unreachable in practice: a call without a capability was held (4a) or refused.
        return Err(approval_required());
    };
    if !decision.allowed {
        return Err(policy_denied(&decision.policy_ids));
    }

    // A held call's time is mostly the member's: only calls decided at once are measured.
    if call.approval.is_none() {
        state.metrics.checks_time(started.elapsed());
    }

    // 6. Audit before anything is decrypted or sent.
    let audit_started = Instant::now();
    let attempt = state
        .audit
        .append(call.event(agent.workspace, AuditKind::ProxyAttempt, Decision::Allowed, now_ms()))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "audit append failed; refusing the call");
            ApiError::new(
                ErrorCode::Unavailable,
                "the audit log is unavailable, so the call was not made; retry shortly",
            )
        })?;
    state.metrics.audit_wait(audit_started.elapsed());

    // Open the capability (or take the key it was opened to before), decrypt, forward, redact.
    let opened = match checked {
        Checked::Opened(hit) => Arc::clone(hit),
        Checked::Verified(verified) => {
            let record_key = verified.open(&state.broker_key).map_err(|_| {
                ApiError::new(
                    ErrorCode::CapabilityInvalid,
                    "capability refused: it is not sealed to this broker's key; fetch /v1/broker-key and issue a new one",
                )
            })?;
            let opened = Arc::new(OpenedStanding { claims: verified.claims().clone(), record_key });
            if let (Reuse::Standing { .. }, Some(digest)) = (verified.claims().reuse, digest) {
                state.store.hot.insert(generation, digest, Arc::clone(&opened));
            }
            opened
        }
    };
    call.forwarded = true;
    state.store.note_credential_used(&credential, now);
    let started_upstream = Instant::now();
    let outcome =
        open::open_and_forward(state, &opened.record_key, &credential, upstream, request, now)
            .await;
    // An approval for a window hands its standing capability to the agent, for its next calls.
    let hand_back = match opened.claims.reuse {
        Reuse::Standing { .. } => approved.as_deref().and_then(|c| c.parse().ok()),
        Reuse::SingleUse { .. } => None,
    };
    drop(opened);
    state.metrics.upstream_time(started_upstream.elapsed());
    let (status, response) = match outcome {
        Ok(mut response) => {
            if let Some(capability) = hand_back {
                response.headers_mut().insert(CAPABILITY_HEADER, capability);
            }
            (Some(response.status().as_u16()), Ok(response))
        }
        Err(error) => (None, Err(error)),
    };
    let mut event =
        call.event(agent.workspace, AuditKind::ProxyOutcome, Decision::Allowed, now_ms());
    event.attempt_seq = Some(attempt.seq);
    event.upstream_status = status;
    event.latency_ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
    if let Err(error) = &response {
        event.reason_code = Some(error.code.spelling());
    }
    if let Err(e) = state.audit.append_deferred(event).await {
        tracing::error!(error = %e, "could not audit a proxy call's outcome");
    }
    response
}

/// Step 1: the agent behind a token hash, refused when unknown, revoked or paused. The
/// workspace's kill switch is checked as soon as the agent is known (so the refusal is audited in
/// its workspace, and unknown tokens are answered as before) and before anything about the
/// credential is read.
async fn active_agent(
    state: &SharedState,
    call: &mut Call,
    token_hash: &latchkey_core::token::TokenHash,
) -> Result<Arc<crate::store::agents::AgentRecord>, ApiError> {
    let agent = state.store.cached_agent(token_hash).await?.ok_or_else(unknown_token)?;
    call.workspace = Some(agent.workspace);
    call.agent = Some(agent.id);
    if agent.revoked_at.is_some() {
        return Err(ApiError::new(
            ErrorCode::TokenRevoked,
            "this agent token was revoked; ask the agent's owner for a new one",
        ));
    }
    if state.store.cached_pause_state(agent.workspace).await?.0.is_some() {
        return Err(agents_paused());
    }
    Ok(agent)
}

/// Step 2: the credential an agent names, refused when unknown or not usable.
async fn active_credential(
    state: &SharedState,
    workspace: WorkspaceId,
    name: &str,
) -> Result<Arc<CredentialRecord>, ApiError> {
    let credential = state.store.cached_credential(workspace, name).await?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotFound,
            format!(
                "no credential named {name:?} in this workspace; check the name in the Latchkey app"
            ),
        )
    })?;
    match unusable(&credential) {
        Some(refusal) => Err(refusal),
        None => Ok(credential),
    }
}

/// Why a credential cannot be used now, if it cannot: said differently for one switched off and
/// one the provider refused, since different people act on each.
pub(crate) fn unusable(credential: &CredentialRecord) -> Option<ApiError> {
    let why = match credential.status {
        CredentialStatus::Active => return None,
        CredentialStatus::Disabled => format!(
            "the credential {:?} is disabled; its owner (or an admin, for a shared one) can enable it in the Latchkey app",
            credential.name
        ),
        CredentialStatus::ReconnectNeeded => format!(
            "the credential {:?} needs to be reconnected by its owner before it can be used",
            credential.name
        ),
    };
    Some(ApiError::new(ErrorCode::Forbidden, why))
}

/// Step 3: the upstream URL for a call's (normalised) path, refused when its host is not in the
/// credential's allow-list.
fn upstream_for(call: &mut Call, credential: &CredentialRecord) -> Result<Url, ApiError> {
    let upstream = forward::upstream_url(credential, &call.path, call.query.as_deref())?;
    call.host = upstream.host_str().map(str::to_owned);
    forward::check_allowed_host(credential, &upstream)?;
    Ok(upstream)
}

/// A capability that passed step 4.
enum Checked<'c> {
    /// A standing capability verified and opened by an earlier call, re-checked for this one.
    Opened(&'c Arc<OpenedStanding>),
    /// Verified by this call; opened once the attempt is audited.
    Verified(VerifiedCapability<'c>),
}

impl Checked<'_> {
    fn claims(&self) -> &Claims {
        match self {
            Checked::Opened(hit) => &hit.claims,
            Checked::Verified(verified) => verified.claims(),
        }
    }
}

/// Step 4: everything about a capability that needs the broker's state, in order: the issuing
/// device is active in the workspace and its member may use the credential; then `verify` (the
/// claims against the request and the clock, and for a capability not seen before the
/// signature); the key version is current; a single-use nonce is fresh or a standing grant live.
async fn check_state<T>(
    state: &SharedState,
    call: &mut Call,
    claims: &Claims,
    credential: &CredentialRecord,
    now: u64,
    verify: impl FnOnce(&[u8; 32]) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let issuer = state
        .store
        .cached_active_device(claims.issuer)
        .await?
        .filter(|d| d.workspace == credential.workspace)
        .ok_or_else(|| capability_invalid("its issuing device is unknown or was removed"))?;
    call.device = Some(issuer.id);
    call.member = Some(issuer.member);
    if let Owner::Member(owner) = credential.owner
        && issuer.member != owner
    {
        return Err(capability_invalid(
            "it was issued by a member who cannot use this personal credential",
        ));
    }
    if claims.owner != credential.owner {
        return Err(capability_invalid(
            "it names another owner than the credential's (shared or personal); issue a new capability for this credential",
        ));
    }
    let verified = verify(&issuer.signing_key)?;
    if claims.key_version != credential.key_version {
        return Err(capability_invalid(&format!(
            "it is for key version {}, but the credential was rotated to {}; issue a new capability",
            claims.key_version, credential.key_version
        )));
    }
    match claims.reuse {
        Reuse::SingleUse { nonce } => {
            let expires = claims.expires.saturating_add(latchkey_core::capability::CLOCK_SKEW_SECS);
            let fresh =
                state.store.remember_nonce(NonceKind::Capability, &nonce, expires, now).await?;
            if !fresh {
                return Err(capability_invalid("this single-use capability was already used"));
            }
        }
        Reuse::Standing { grant } => {
            let grant = state
                .store
                .cached_grant(credential.workspace, grant)
                .await?
                .filter(|g| {
                    g.revoked_at.is_none()
                        && g.agent == claims.agent
                        && g.credential == credential.id
                        && g.expires_at > now
                })
                .ok_or_else(|| {
                    capability_invalid("its standing grant was revoked, has expired or is unknown")
                })?;
            // The grant is what members see and revoke: a capability naming it may allow no
            // more than it registered, and only its own issuer's capability may name it.
            if grant.issued_by != claims.issuer
                || !claims.methods.is_subset_of(grant.methods)
                || !claims.paths.iter().all(|p| grant.path_patterns.contains(p))
                || claims.expires > grant.expires_at
            {
                return Err(capability_invalid(
                    "it allows more than its standing grant registered (another issuer, methods, paths or a later expiry); issue it again from the grant",
                ));
            }
        }
    }
    Ok(verified)
}

/// What the policies see of a call.
fn policy_request<'a>(
    call: &'a Call,
    agent: &'a crate::store::agents::AgentRecord,
    credential: &'a CredentialRecord,
    now: u64,
    grant: GrantKind,
) -> PolicyRequest<'a> {
    PolicyRequest {
        workspace: agent.workspace,
        agent: agent.id,
        agent_name: &agent.name,
        agent_owner: agent.owner,
        credential: credential.id,
        credential_name: &credential.name,
        provider: &credential.provider,
        credential_owner: credential.owner,
        method: &call.method,
        host: call.host.as_deref().unwrap_or_default(),
        path: &call.path,
        now,
        grant,
    }
}

fn approval_required() -> ApiError {
    ApiError::new(
        ErrorCode::ApprovalRequired,
        "this call needs a member's approval: ask the agent's owner to approve it in the Latchkey app or with `latchkey approvals`, then retry",
    )
}

/// The answer to every agent call while the workspace's agents are paused.
pub(crate) fn agents_paused() -> ApiError {
    ApiError::new(
        ErrorCode::AgentsPaused,
        "a member paused all agents in this workspace; ask them to resume from the Latchkey app or `latchkey agent resume`, then retry",
    )
}

fn unknown_token() -> ApiError {
    ApiError::new(
        ErrorCode::UnknownToken,
        "unknown or malformed agent token; send the token shown when the agent was created, where the provider's SDK sends its API key",
    )
}

fn refused(error: CapabilityError) -> ApiError {
    capability_invalid(&error.to_string())
}

fn capability_invalid(reason: &str) -> ApiError {
    ApiError::new(ErrorCode::CapabilityInvalid, format!("capability refused: {reason}"))
}

fn policy_denied(policy_ids: &[String]) -> ApiError {
    let by = if policy_ids.is_empty() {
        "no policy permits it".to_owned()
    } else {
        format!("policy {}", policy_ids.join(", "))
    };
    ApiError::new(
        ErrorCode::PolicyDenied,
        format!(
            "denied by the workspace's policies ({by}); an admin can change them in the Latchkey app"
        ),
    )
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
