//! Agents and standing grants.
//!
//! An agent token is generated here, returned once (with `Cache-Control: no-store`) and stored
//! only as its hash. Members see and manage their own agents; admins see and manage all of them.
//! An agent the caller may not see answers `404 not_found`, exactly like a missing one.
//!
//! A standing grant is registered by the device that issued a standing capability: the capability
//! stays with the agent, and the grant row is what lets anyone revoke it before it expires.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use latchkey_core::capability::{
    CLOCK_SKEW_SECS, MAX_PATTERN_BYTES, MAX_PATTERNS, MAX_STANDING_LIFETIME_SECS, Method,
    MethodSet, PathPattern,
};
use latchkey_core::ids::{AgentId, CredentialId, DeviceId, GrantId, MemberId};
use latchkey_core::token::AgentToken;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::credentials::{audit, may_see};
use super::limit_reached;
use super::openapi::{DeviceErrors, stand_in};
use super::workspaces::checked_name;
use crate::audit::AuditKind;
use crate::auth::{DeviceCaller, Signed};
use crate::error::{ApiError, ErrorCode};
use crate::state::SharedState;
use crate::store::agents::{AgentRecord, GrantListing, GrantRecord, GrantWriteError, NewGrant};
use crate::store::devices::Role;

pub(super) fn routes() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(revoke))
        .routes(routes!(regenerate))
        .routes(routes!(create_grant, list_grants))
        .routes(routes!(revoke_grant))
}

/// The body of `POST /v1/agents`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateAgent {
    /// 1 to 100 characters, no control characters.
    #[schema(example = "ci-bot")]
    name: String,
}

/// An agent (never its token).
#[derive(Debug, Serialize, ToSchema)]
struct AgentView {
    #[schema(value_type = stand_in::AgentId)]
    id: AgentId,
    name: String,
    /// The member who owns the agent.
    #[schema(value_type = stand_in::MemberId)]
    owner: MemberId,
    created_at: u64,
    revoked_at: Option<u64>,
    last_used_at: Option<u64>,
}

impl From<AgentRecord> for AgentView {
    fn from(a: AgentRecord) -> Self {
        Self {
            id: a.id,
            name: a.name,
            owner: a.owner,
            created_at: a.created_at,
            revoked_at: a.revoked_at,
            last_used_at: a.last_used_at,
        }
    }
}

/// An agent with its token: serialized straight from the zeroizing token, never kept.
#[derive(Serialize, ToSchema)]
struct AgentWithToken<'a> {
    #[serde(flatten)]
    agent: AgentView,
    /// The agent token (`lk_...`): shown this once (`Cache-Control: no-store`); the broker keeps
    /// only its hash.
    token: &'a str,
}

/// Agents the caller can see.
#[derive(Debug, Serialize, ToSchema)]
struct AgentList {
    agents: Vec<AgentView>,
}

/// Creates an agent owned by the caller's member, and its token.
#[utoipa::path(
    post,
    path = "/v1/agents",
    tag = "agents",
    operation_id = "create_agent",
    security(("device_signature" = [])),
    request_body = CreateAgent,
    responses(
        (status = 201, description = "The agent and its token, shown once", body = AgentWithToken<'static>),
        DeviceErrors,
        (status = 400, description = "`bad_request` or `invalid_request` (the name)", body = ApiError),
        (status = 409, description = "`limit_reached`: the workspace has 1000 active agents; revoke some first", body = ApiError),
    ),
)]
async fn create(
    State(state): State<SharedState>,
    request: Signed<CreateAgent>,
) -> Result<Response, ApiError> {
    let caller = request.caller;
    let name = checked_name("name", &request.body.name)?;
    let token = new_token()?;
    let agent = state
        .store
        .create_agent(
            caller.workspace,
            AgentId::random(),
            &name,
            caller.member,
            &token.hash(),
            state.now(),
        )
        .await?
        .map_err(|limit| limit_reached(&caller, limit))?;
    tracing::info!(workspace = %agent.workspace, agent = %agent.id, owner = %agent.owner, "agent created");
    audit(&state, &caller, AuditKind::AgentCreated, |e| e.agent = Some(agent.id)).await;
    token_response(StatusCode::CREATED, agent, &token)
}

/// The caller's agents; every agent of the workspace for admins.
#[utoipa::path(
    get,
    path = "/v1/agents",
    tag = "agents",
    operation_id = "list_agents",
    security(("device_signature" = [])),
    responses((status = 200, description = "The agents, without tokens", body = AgentList), DeviceErrors),
)]
async fn list(
    State(state): State<SharedState>,
    request: Signed<()>,
) -> Result<Json<AgentList>, ApiError> {
    let c = request.caller;
    let owner = (c.role != Role::Admin).then_some(c.member);
    let agents = state.store.agents(c.workspace, owner).await?;
    Ok(Json(AgentList { agents: agents.into_iter().map(Into::into).collect() }))
}

/// A new token for the agent; the old one stops working with this request.
#[utoipa::path(
    post,
    path = "/v1/agents/{id}/token",
    tag = "agents",
    operation_id = "regenerate_agent_token",
    security(("device_signature" = [])),
    params(("id" = String, Path, format = "uuid", description = "The agent id")),
    responses(
        (status = 200, description = "The agent and its new token, shown once", body = AgentWithToken<'static>),
        DeviceErrors,
        (status = 400, description = "`bad_request`: the id is not a UUID", body = ApiError),
        (status = 404, description = "`not_found`: no such agent, or another member's and the caller is not an admin", body = ApiError),
        (status = 409, description = "`conflict`: the agent was revoked", body = ApiError),
    ),
)]
async fn regenerate(
    State(state): State<SharedState>,
    id: Result<Path<String>, PathRejection>,
    request: Signed<()>,
) -> Result<Response, ApiError> {
    let caller = request.caller;
    let agent = visible_agent(&state, &caller, path_id(id, "agent")?).await?;
    if agent.revoked_at.is_some() {
        return Err(revoked_agent());
    }
    let token = new_token()?;
    if !state.store.replace_agent_token(caller.workspace, agent.id, &token.hash()).await? {
        return Err(revoked_agent());
    }
    tracing::info!(workspace = %agent.workspace, agent = %agent.id, "agent token regenerated");
    audit(&state, &caller, AuditKind::AgentTokenRegenerated, |e| e.agent = Some(agent.id)).await;
    token_response(StatusCode::OK, agent, &token)
}

/// Revokes the agent and its grants: its next request is refused.
#[utoipa::path(
    delete,
    path = "/v1/agents/{id}",
    tag = "agents",
    operation_id = "revoke_agent",
    security(("device_signature" = [])),
    params(("id" = String, Path, format = "uuid", description = "The agent id")),
    responses(
        (status = 204, description = "Revoked"),
        DeviceErrors,
        (status = 400, description = "`bad_request`: the id is not a UUID", body = ApiError),
        (status = 404, description = "`not_found`: no such agent, or another member's and the caller is not an admin", body = ApiError),
    ),
)]
async fn revoke(
    State(state): State<SharedState>,
    id: Result<Path<String>, PathRejection>,
    request: Signed<()>,
) -> Result<StatusCode, ApiError> {
    let caller = request.caller;
    let agent = visible_agent(&state, &caller, path_id(id, "agent")?).await?;
    if !state.store.revoke_agent(caller.workspace, agent.id, state.now()).await? {
        return Err(no_such_agent());
    }
    tracing::info!(workspace = %agent.workspace, agent = %agent.id, "agent revoked");
    audit(&state, &caller, AuditKind::AgentRevoked, |e| e.agent = Some(agent.id)).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The body of `POST /v1/grants`: the claims of the standing capability the device issued.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateGrant {
    #[schema(value_type = stand_in::GrantId)]
    id: GrantId,
    #[schema(value_type = stand_in::AgentId)]
    agent: AgentId,
    #[schema(value_type = stand_in::CredentialId)]
    credential: CredentialId,
    /// HTTP methods: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS.
    methods: Vec<String>,
    /// Path patterns, as in the capability.
    path_patterns: Vec<String>,
    /// Unix seconds; in the future and at most 90 days away.
    expires_at: u64,
}

/// A standing grant.
#[derive(Debug, Serialize, ToSchema)]
struct GrantView {
    #[schema(value_type = stand_in::GrantId)]
    id: GrantId,
    #[schema(value_type = stand_in::AgentId)]
    agent: AgentId,
    #[schema(value_type = stand_in::CredentialId)]
    credential: CredentialId,
    /// The device that issued the capability.
    #[schema(value_type = stand_in::DeviceId)]
    issued_by: DeviceId,
    methods: Vec<&'static str>,
    path_patterns: Vec<String>,
    expires_at: u64,
    created_at: u64,
    revoked_at: Option<u64>,
}

impl From<GrantRecord> for GrantView {
    fn from(g: GrantRecord) -> Self {
        Self {
            id: g.id,
            agent: g.agent,
            credential: g.credential,
            issued_by: g.issued_by,
            methods: g.methods.iter().map(Method::as_str).collect(),
            path_patterns: g.path_patterns.iter().map(|p| p.as_str().to_owned()).collect(),
            expires_at: g.expires_at,
            created_at: g.created_at,
            revoked_at: g.revoked_at,
        }
    }
}

/// Grants the caller can see.
#[derive(Debug, Serialize, ToSchema)]
struct GrantList {
    grants: Vec<GrantView>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantsQuery {
    agent: Option<String>,
    status: Option<String>,
}

/// Registers a standing grant for a capability the calling device issued.
#[utoipa::path(
    post,
    path = "/v1/grants",
    tag = "agents",
    operation_id = "create_grant",
    security(("device_signature" = [])),
    request_body = CreateGrant,
    responses(
        (status = 201, description = "Registered", body = GrantView),
        DeviceErrors,
        (status = 400, description = "`bad_request` or `invalid_request` (methods, patterns, expiry)", body = ApiError),
        (status = 404, description = "`not_found`: no such agent or credential visible to the caller", body = ApiError),
        (status = 409, description = "`conflict`: the agent was revoked or the grant id is taken; `limit_reached`: the agent has 1000 live grants, revoke some or let them expire first", body = ApiError),
    ),
)]
async fn create_grant(
    State(state): State<SharedState>,
    request: Signed<CreateGrant>,
) -> Result<(StatusCode, Json<GrantView>), ApiError> {
    let (caller, body) = (request.caller, request.body);
    let now = state.now();
    let agent = visible_agent(&state, &caller, body.agent).await?;
    if agent.revoked_at.is_some() {
        return Err(revoked_agent());
    }
    let credential = state.store.credential(caller.workspace, body.credential).await?;
    if !credential.as_ref().is_some_and(|c| may_see(&caller, c.owner)) {
        return Err(ApiError::new(ErrorCode::NotFound, "no such credential in this workspace"));
    }
    let methods = methods(&body.methods)?;
    let path_patterns = path_patterns(&body.path_patterns)?;
    if body.expires_at <= now
        || body.expires_at > now + MAX_STANDING_LIFETIME_SECS + CLOCK_SKEW_SECS
    {
        return Err(invalid(
            "expires_at must be in the future and at most 90 days away (the capability's expiry)",
        ));
    }
    let grant = state
        .store
        .create_grant(NewGrant {
            workspace: caller.workspace,
            id: body.id,
            agent: agent.id,
            credential: body.credential,
            issued_by: caller.device,
            methods,
            path_patterns,
            expires_at: body.expires_at,
            now,
        })
        .await?
        .map_err(|e| {
            let code = match e {
                GrantWriteError::Limit(limit) => return limit_reached(&caller, limit),
                GrantWriteError::CredentialGone => ErrorCode::NotFound,
                _ => ErrorCode::Conflict,
            };
            ApiError::new(code, e.to_string())
        })?;
    tracing::info!(workspace = %grant.workspace, grant = %grant.id, agent = %grant.agent, credential = %grant.credential, "grant registered");
    let credential_name = credential.map(|c| c.name);
    audit(&state, &caller, AuditKind::GrantCreated, |e| {
        e.agent = Some(grant.agent);
        e.credential_name = credential_name;
        e.subject = Some(grant.id.to_string());
    })
    .await;
    Ok((StatusCode::CREATED, Json(grant.into())))
}

/// Grants of the caller's agents (all agents for admins), optionally of one agent: those in
/// force, or with `status=all` also those that ended (revoked or expired) in the last 30 days.
#[utoipa::path(
    get,
    path = "/v1/grants",
    tag = "agents",
    operation_id = "list_grants",
    security(("device_signature" = [])),
    params(
        ("agent" = Option<String>, Query, format = "uuid", description = "Only this agent's grants"),
        ("status" = Option<String>, Query, description = "`live` (default): the grants in force; `all`: also those that ended in the last 30 days"),
    ),
    responses(
        (status = 200, description = "The grants", body = GrantList),
        DeviceErrors,
        (status = 400, description = "`bad_request`: an unknown parameter, a malformed agent id or an unknown status", body = ApiError),
        (status = 404, description = "`not_found`: no such agent visible to the caller", body = ApiError),
    ),
)]
async fn list_grants(
    State(state): State<SharedState>,
    query: Result<Query<GrantsQuery>, QueryRejection>,
    request: Signed<()>,
) -> Result<Json<GrantList>, ApiError> {
    let caller = request.caller;
    let Ok(Query(query)) = query else {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "the query parameters are agent=<agent id> and status=live or all",
        ));
    };
    let now = state.now();
    let listing = match query.status.as_deref() {
        None | Some("live") => GrantListing::LiveAt(now),
        Some("all") => GrantListing::RecentAt(now),
        Some(_) => {
            return Err(ApiError::new(ErrorCode::BadRequest, "status must be live or all"));
        }
    };
    let agent = match query.agent {
        Some(text) => {
            let id = text.parse().map_err(|_| {
                ApiError::new(ErrorCode::BadRequest, "agent must be an agent id (a UUID)")
            })?;
            Some(visible_agent(&state, &caller, id).await?.id)
        }
        None => None,
    };
    let owner = (caller.role != Role::Admin).then_some(caller.member);
    let grants = state.store.grants(caller.workspace, agent, owner, listing).await?;
    Ok(Json(GrantList { grants: grants.into_iter().map(Into::into).collect() }))
}

/// Revokes a grant: the next request with its capability is refused.
#[utoipa::path(
    delete,
    path = "/v1/grants/{id}",
    tag = "agents",
    operation_id = "revoke_grant",
    security(("device_signature" = [])),
    params(("id" = String, Path, format = "uuid", description = "The grant id")),
    responses(
        (status = 204, description = "Revoked"),
        DeviceErrors,
        (status = 400, description = "`bad_request`: the id is not a UUID", body = ApiError),
        (status = 404, description = "`not_found`: no such grant visible to the caller", body = ApiError),
    ),
)]
async fn revoke_grant(
    State(state): State<SharedState>,
    id: Result<Path<String>, PathRejection>,
    request: Signed<()>,
) -> Result<StatusCode, ApiError> {
    let caller = request.caller;
    let id: GrantId = path_id(id, "grant")?;
    let no_such_grant = || ApiError::new(ErrorCode::NotFound, "no such grant in this workspace");
    let grant = state.store.grant(caller.workspace, id).await?.ok_or_else(no_such_grant)?;
    if caller.role != Role::Admin {
        let owns = state
            .store
            .agent(caller.workspace, grant.agent)
            .await?
            .is_some_and(|a| a.owner == caller.member);
        if !owns {
            return Err(no_such_grant());
        }
    }
    if !state.store.revoke_grant(caller.workspace, id, state.now()).await? {
        return Err(no_such_grant());
    }
    tracing::info!(workspace = %caller.workspace, grant = %id, "grant revoked");
    audit(&state, &caller, AuditKind::GrantRevoked, |e| e.agent = Some(grant.agent)).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The agent, if the caller owns it or is an admin; otherwise the same 404 as a missing one.
async fn visible_agent(
    state: &SharedState,
    caller: &DeviceCaller,
    id: AgentId,
) -> Result<AgentRecord, ApiError> {
    match state.store.agent(caller.workspace, id).await? {
        Some(a) if caller.role == Role::Admin || a.owner == caller.member => Ok(a),
        _ => Err(no_such_agent()),
    }
}

fn new_token() -> Result<AgentToken, ApiError> {
    AgentToken::generate().map_err(|e| ApiError::internal(&e))
}

/// The agent and its new token, not cacheable anywhere on the way.
fn token_response(
    status: StatusCode,
    agent: AgentRecord,
    token: &AgentToken,
) -> Result<Response, ApiError> {
    let body =
        serde_json::to_vec(&AgentWithToken { agent: agent.into(), token: token.expose_secret() })
            .map_err(|e| ApiError::internal(&e))?;
    Ok((
        status,
        [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")],
        body,
    )
        .into_response())
}

fn methods(names: &[String]) -> Result<MethodSet, ApiError> {
    let mut methods = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        methods.push(Method::parse(name).ok_or_else(|| {
            invalid(format!(
                "methods[{i}] must be one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
            ))
        })?);
    }
    MethodSet::of(&methods).ok_or_else(|| invalid("methods must name at least one method"))
}

fn path_patterns(patterns: &[String]) -> Result<Vec<PathPattern>, ApiError> {
    let total: usize = patterns.iter().map(String::len).sum();
    if patterns.is_empty() || patterns.len() > MAX_PATTERNS || total > MAX_PATTERN_BYTES {
        return Err(invalid(format!(
            "path_patterns must hold 1 to {MAX_PATTERNS} patterns of at most {MAX_PATTERN_BYTES} bytes in all"
        )));
    }
    patterns
        .iter()
        .enumerate()
        .map(|(i, p)| {
            PathPattern::parse(p).map_err(|e| invalid(format!("path_patterns[{i}]: {e}")))
        })
        .collect()
}

pub(crate) fn path_id<T: std::str::FromStr>(
    path: Result<Path<String>, PathRejection>,
    what: &str,
) -> Result<T, ApiError> {
    path.ok().and_then(|Path(text)| text.parse().ok()).ok_or_else(|| {
        ApiError::new(ErrorCode::BadRequest, format!("the {what} id in the path must be a UUID"))
    })
}

fn no_such_agent() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such agent in this workspace")
}

fn revoked_agent() -> ApiError {
    ApiError::new(ErrorCode::Conflict, "this agent was revoked; create a new agent instead")
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, message)
}
