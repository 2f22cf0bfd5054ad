//! Cedar policies: the published schema (`GET /v1/policy-schema`, public), the workspace's
//! policies (`GET /v1/policies`, any member), creating or replacing one (`PUT /v1/policies/{id}`,
//! admins), deleting one (`DELETE /v1/policies/{id}`, admins), and the "would this call be
//! allowed" tester (`POST /v1/policies/check`, any member). Every change invalidates the
//! workspace's cached policy set, so it takes effect on this broker's next call, and appends a
//! `policy_changed` audit record naming the policy, the device and its member.
//!
//! Submitted policy text is parsed and validated against the schema in strict mode before it is
//! stored; a refusal lists each problem with its line and column. Policy text is not secret (every
//! member can read it), so problems quote Cedar's messages, which may quote the policy.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use latchkey_core::ids::{AgentId, CredentialId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::credentials::audit;
use super::openapi::{DeviceErrors, stand_in};
use crate::audit::AuditKind;
use crate::auth::Signed;
use crate::error::{ApiError, ErrorCode};
use crate::policy::{
    DEFAULT_POLICIES, GrantKind, INJECT_ACTION, InjectRequest, MAX_INJECT_LIFETIME_SECS,
    MAX_POLICIES, MAX_SOURCE_BYTES, METHODS, PolicyProblem, PolicyRequest, SCHEMA,
};
use crate::state::SharedState;
use crate::store::policies::{ChangeRefused, Expected, NewPolicy, PutOutcome, StoredPolicy};

pub(super) fn routes() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new()
        .routes(routes!(schema))
        .routes(routes!(list))
        .routes(routes!(check))
        .routes(routes!(upsert, remove))
}

/// Longest description, in characters.
const MAX_DESCRIPTION_CHARS: usize = 500;
/// Longest host and path the tester accepts.
const MAX_HOST_BYTES: usize = 253;
const MAX_PATH_BYTES: usize = 4096;

/// The Cedar schema.
#[derive(Debug, Serialize, ToSchema)]
struct SchemaResponse {
    namespace: &'static str,
    /// The schema in Cedar schema syntax.
    cedarschema: &'static str,
    /// The same schema in Cedar's JSON schema format (for editors).
    #[schema(value_type = Object)]
    json: Value,
    /// The action of every call; each method's action is in it.
    action_group: &'static str,
    /// The actions, one per HTTP method.
    actions: [&'static str; 7],
    /// The action of releasing a credential into a command's environment; not in the action
    /// group.
    inject_action: &'static str,
}

/// The schema every policy is validated against. Public: it is the same on every broker.
#[utoipa::path(
    get,
    path = "/v1/policy-schema",
    tag = "policies",
    operation_id = "get_policy_schema",
    responses((status = 200, description = "The schema, in Cedar and JSON syntax", body = SchemaResponse)),
)]
async fn schema(State(state): State<SharedState>) -> Json<SchemaResponse> {
    Json(SchemaResponse {
        namespace: "Latchkey",
        cedarschema: SCHEMA,
        json: state.policies.schema_json().clone(),
        action_group: "call",
        actions: METHODS,
        inject_action: INJECT_ACTION,
    })
}

/// A stored policy.
#[derive(Debug, Serialize, ToSchema)]
struct PolicyView {
    id: String,
    description: String,
    source: String,
    enabled: bool,
    updated_at: u64,
    /// Moves on with every change; never reused within the workspace. Send it back with an edit
    /// or a deletion to make it conditional.
    revision: u64,
    /// Present when the stored text no longer validates (a schema change); such a workspace
    /// denies every call until an admin fixes or deletes the policy.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    problems: Vec<PolicyProblem>,
}

/// The workspace's policies.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = PolicyListing)]
struct Listing {
    policies: Vec<PolicyView>,
}

/// The workspace's policies (the defaults until an admin changes them).
#[utoipa::path(
    get,
    path = "/v1/policies",
    tag = "policies",
    operation_id = "list_policies",
    security(("device_signature" = [])),
    responses((status = 200, description = "The policies", body = Listing), DeviceErrors),
)]
async fn list(
    State(state): State<SharedState>,
    request: Signed<()>,
) -> Result<Json<Listing>, ApiError> {
    let rows =
        state.store.policies(request.caller.workspace, &DEFAULT_POLICIES, state.now()).await?;
    let policies = rows.into_iter().map(|row| view(&state, row)).collect();
    Ok(Json(Listing { policies }))
}

/// The body of `PUT /v1/policies/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PutPolicy {
    /// Cedar policy text (one policy), validated against the schema in strict mode.
    source: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    /// Makes the write conditional: the revision the editor read (`409 conflict` if the policy
    /// has changed or was deleted since), or 0 to create only (`409 conflict` if the id is
    /// taken). Without it the write replaces whatever is there.
    #[serde(default)]
    revision: Option<u64>,
}

/// The saved policy.
#[derive(Debug, Serialize, ToSchema)]
struct Saved {
    policy: PolicyView,
    /// Validator warnings: the policy was stored, but may not say what was meant.
    warnings: Vec<PolicyProblem>,
}

/// Creates or replaces a policy (admins).
#[utoipa::path(
    put,
    path = "/v1/policies/{id}",
    tag = "policies",
    operation_id = "put_policy",
    security(("device_signature" = [])),
    params(("id" = String, Path, description = "The policy id: 1 to 64 letters, digits, `.`, `_` or `-`, starting with a letter or digit")),
    request_body = PutPolicy,
    responses(
        (status = 200, description = "Replaced", body = Saved),
        (status = 201, description = "Created", body = Saved),
        DeviceErrors,
        (status = 400, description = "`invalid_request`: the policy does not parse or validate (with `errors`), or the id, description or size is wrong", body = PolicyRefused),
        (status = 403, description = "`forbidden`: the caller is not an admin", body = ApiError),
        (status = 409, description = "`conflict`: `revision` was given and the policy is not at it (changed, deleted, or, for 0, taken); `limit_reached`: a new policy, and the workspace has 100 policies", body = ApiError),
    ),
)]
async fn upsert(
    State(state): State<SharedState>,
    id: Result<Path<String>, PathRejection>,
    request: Signed<PutPolicy>,
) -> Result<(StatusCode, Json<Saved>), Rejection> {
    request.caller.require_admin()?;
    let id = policy_id(id)?;
    let body = &request.body;
    if body.source.len() > MAX_SOURCE_BYTES {
        return Err(invalid(format!("source is longer than {MAX_SOURCE_BYTES} bytes")).into());
    }
    let warnings = state.policies.check_policy(&id, &body.source).map_err(|problems| {
        Rejection::Problems(
            "the policy was refused; each entry of `errors` says what and where",
            problems,
        )
    })?;
    let description = description(body.description.as_deref())?;
    let enabled = body.enabled.unwrap_or(true);
    let policy = NewPolicy { id: &id, description: &description, source: &body.source, enabled };
    let workspace = request.caller.workspace;
    let now = state.now();
    let expected = Expected::from_wire(body.revision);
    let put = state
        .store
        .put_policy(workspace, &DEFAULT_POLICIES, policy, expected, MAX_POLICIES, now)
        .await
        .map_err(ApiError::from)?
        .map_err(|refusal| {
            if let ChangeRefused::TooMany { .. } = refusal {
                tracing::warn!(
                    %workspace, member = %request.caller.member, device = %request.caller.device,
                    limit = "policies", "creation refused at a limit"
                );
            }
            refused(refusal)
        })?;
    state.policies.invalidate(workspace);
    tracing::info!(%workspace, member = %request.caller.member, policy = %id, outcome = ?put.outcome, revision = put.revision, "policy saved");
    audit(&state, &request.caller, AuditKind::PolicyChanged, |e| e.policy_ids = vec![id.clone()])
        .await;
    let status = match put.outcome {
        PutOutcome::Created => StatusCode::CREATED,
        PutOutcome::Updated => StatusCode::OK,
    };
    let stored = StoredPolicy {
        id,
        description,
        source: body.source.clone(),
        enabled,
        updated_at: now,
        revision: put.revision,
    };
    Ok((status, Json(Saved { policy: view(&state, stored), warnings })))
}

/// Deletes a policy (admins).
#[utoipa::path(
    delete,
    path = "/v1/policies/{id}",
    tag = "policies",
    operation_id = "delete_policy",
    security(("device_signature" = [])),
    params(
        ("id" = String, Path, description = "The policy id"),
        ("revision" = Option<u64>, Query, description = "Delete only if the policy is still at this revision"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        DeviceErrors,
        (status = 400, description = "`invalid_request`: a malformed id; `bad_request`: a query other than revision=<number>", body = ApiError),
        (status = 403, description = "`forbidden`: the caller is not an admin", body = ApiError),
        (status = 404, description = "`not_found`: no policy with this id", body = ApiError),
        (status = 409, description = "`conflict`: `revision` was given and the policy has changed since", body = ApiError),
    ),
)]
async fn remove(
    State(state): State<SharedState>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<DeleteQuery>, QueryRejection>,
    request: Signed<()>,
) -> Result<StatusCode, ApiError> {
    request.caller.require_admin()?;
    let id = policy_id(id)?;
    let Ok(Query(DeleteQuery { revision })) = query else {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "the only query parameter is revision=<the revision you read>, a positive number",
        ));
    };
    let expected = match revision {
        None => Expected::Anything,
        Some(0) => {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "revision=0 names no policy: pass the revision you read (1 or more)",
            ));
        }
        Some(n) => Expected::Revision(n),
    };
    let workspace = request.caller.workspace;
    state
        .store
        .delete_policy(workspace, &DEFAULT_POLICIES, &id, expected, state.now())
        .await?
        .map_err(refused)?;
    state.policies.invalidate(workspace);
    tracing::info!(%workspace, member = %request.caller.member, policy = %id, "policy deleted");
    audit(&state, &request.caller, AuditKind::PolicyChanged, |e| e.policy_ids = vec![id]).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The query of `DELETE /v1/policies/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    #[serde(default)]
    revision: Option<u64>,
}

/// The body of `POST /v1/policies/check`: a hypothetical call (`method`, `host`, `path` and
/// `grant`), or a hypothetical inject (`inject`, without those four).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CheckRequest {
    #[schema(value_type = stand_in::AgentId)]
    agent: AgentId,
    #[schema(value_type = stand_in::CredentialId)]
    credential: CredentialId,
    /// For a call: one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS.
    #[serde(default)]
    method: Option<String>,
    /// For a call: the upstream host.
    #[serde(default)]
    host: Option<String>,
    /// For a call: the upstream path.
    #[serde(default)]
    path: Option<String>,
    /// For a call: what would authorise it.
    #[serde(default)]
    grant: Option<GrantKind>,
    /// For an inject (the `inject` action): its lifetime and command.
    #[serde(default)]
    inject: Option<InjectCheck>,
    /// Evaluate as if at this time (unix seconds), for time-of-day policies; default now.
    #[serde(default)]
    at: Option<u64>,
}

/// A hypothetical release of the credential into a command's environment.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct InjectCheck {
    /// 1 to 86400 seconds.
    lifetime_secs: u64,
    /// The command's program name.
    command: String,
}

/// What `POST /v1/policies/check` evaluates.
#[derive(Debug, Clone, Copy)]
enum Checked<'a> {
    /// A call: method, host, path, grant.
    Call(&'a str, &'a str, &'a str, GrantKind),
    /// An inject.
    Inject(&'a InjectCheck),
}

/// What the policies decide.
#[derive(Debug, Serialize, ToSchema)]
struct CheckResponse {
    /// `allow`, `deny` or `approval_required`.
    decision: &'static str,
    /// The determining policies.
    policies: Vec<String>,
    /// Evaluation errors, each naming its policy.
    errors: Vec<String>,
}

/// Evaluates a hypothetical call of a real agent through a real credential of the caller's
/// workspace exactly as the proxy would, without making it; or a hypothetical inject exactly as
/// `POST /v1/agents/{id}/inject` would decide it, without releasing or auditing anything.
#[utoipa::path(
    post,
    path = "/v1/policies/check",
    tag = "policies",
    operation_id = "check_policies",
    security(("device_signature" = [])),
    request_body = CheckRequest,
    responses(
        (status = 200, description = "The decision", body = CheckResponse),
        DeviceErrors,
        (status = 400, description = "`bad_request` or `invalid_request` (method, host or path; the inject's lifetime or command; both or neither of a call and an inject)", body = ApiError),
        (status = 404, description = "`not_found`: no such active agent or credential in the workspace", body = ApiError),
    ),
)]
async fn check(
    State(state): State<SharedState>,
    request: Signed<CheckRequest>,
) -> Result<Json<CheckResponse>, ApiError> {
    let workspace = request.caller.workspace;
    let body = &request.body;
    let checked = match (&body.inject, &body.method, &body.host, &body.path, body.grant) {
        (Some(inject), None, None, None, None) => {
            if inject.lifetime_secs == 0 || inject.lifetime_secs > MAX_INJECT_LIFETIME_SECS {
                return Err(invalid(format!(
                    "inject.lifetime_secs must be 1 to {MAX_INJECT_LIFETIME_SECS} (24 hours)"
                )));
            }
            if !super::inject::command_ok(&inject.command) {
                return Err(invalid(format!(
                    "inject.command must be the program's name only: 1 to {} bytes, without `/` or control characters",
                    super::inject::MAX_COMMAND_BYTES
                )));
            }
            Checked::Inject(inject)
        }
        (None, Some(method), Some(host), Some(path), Some(grant)) => {
            Checked::Call(method.as_str(), host.as_str(), path.as_str(), grant)
        }
        _ => {
            return Err(invalid(
                "check a call with method, host, path and grant, or an inject with inject alone",
            ));
        }
    };
    if let Checked::Call(method, host, path, _) = checked {
        if !METHODS.contains(&method) {
            return Err(invalid(format!("method must be one of {}", METHODS.join(", "))));
        }
        if host.is_empty() || host.len() > MAX_HOST_BYTES {
            return Err(invalid(format!("host must be 1 to {MAX_HOST_BYTES} bytes")));
        }
        if !path.starts_with('/') || path.len() > MAX_PATH_BYTES {
            return Err(invalid(format!(
                "path must start with / and be at most {MAX_PATH_BYTES} bytes"
            )));
        }
    }
    let agent = state.store.policy_agent(workspace, body.agent).await?.ok_or_else(|| {
        ApiError::new(ErrorCode::NotFound, "no active agent with this id in your workspace")
    })?;
    // Another member's personal credential is answered as a missing one, as everywhere else:
    // a check must not tell that it exists.
    let credential = state
        .store
        .policy_credential(workspace, body.credential)
        .await?
        .filter(|c| super::credentials::may_see(&request.caller, c.owner))
        .ok_or_else(|| {
            ApiError::new(ErrorCode::NotFound, "no credential with this id in your workspace")
        })?;
    let now = state.now();
    let at = body.at.unwrap_or(now);
    let decision = match checked {
        Checked::Call(method, host, path, grant) => {
            let policy_request = PolicyRequest {
                workspace,
                agent: body.agent,
                agent_name: &agent.name,
                agent_owner: agent.owner,
                credential: body.credential,
                credential_name: &credential.name,
                provider: &credential.provider,
                credential_owner: credential.owner,
                method,
                host,
                path,
                now,
                grant,
            };
            state.policies.evaluate_at(&state.store, &policy_request, at).await?
        }
        Checked::Inject(inject) => {
            let inject_request = InjectRequest {
                workspace,
                agent: body.agent,
                agent_name: &agent.name,
                agent_owner: agent.owner,
                credential: body.credential,
                credential_name: &credential.name,
                provider: &credential.provider,
                credential_owner: credential.owner,
                lifetime_secs: inject.lifetime_secs,
                command: &inject.command,
                now,
            };
            state.policies.evaluate_inject_at(&state.store, &inject_request, at).await?
        }
    };
    let verdict = match (decision.allowed, decision.approval_required) {
        (true, _) => "allow",
        (false, true) => "approval_required",
        (false, false) => "deny",
    };
    Ok(Json(CheckResponse {
        decision: verdict,
        policies: decision.policy_ids,
        errors: decision.errors,
    }))
}

/// An error response: the usual `{code, message}`, or `invalid_request` with the list of
/// problems found in a submitted policy.
#[derive(Debug)]
enum Rejection {
    Api(ApiError),
    Problems(&'static str, Vec<PolicyProblem>),
}

impl From<ApiError> for Rejection {
    fn from(error: ApiError) -> Self {
        Rejection::Api(error)
    }
}

/// A refused policy: `invalid_request` with every problem found.
#[derive(Debug, Serialize, ToSchema)]
struct PolicyRefused {
    code: ErrorCode,
    message: &'static str,
    /// Each problem with its line and column (absent for the other `invalid_request` causes).
    errors: Vec<PolicyProblem>,
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        match self {
            Rejection::Api(error) => error.into_response(),
            Rejection::Problems(message, errors) => {
                let code = ErrorCode::InvalidRequest;
                let mut response =
                    (code.status(), Json(PolicyRefused { code, message, errors })).into_response();
                response.extensions_mut().insert(code);
                response
            }
        }
    }
}

fn view(state: &SharedState, row: StoredPolicy) -> PolicyView {
    let problems = state.policies.check_policy(&row.id, &row.source).err().unwrap_or_default();
    PolicyView {
        id: row.id,
        description: row.description,
        source: row.source,
        enabled: row.enabled,
        updated_at: row.updated_at,
        revision: row.revision,
        problems,
    }
}

/// A policy id: 1 to 64 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit.
fn policy_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let rule =
        "a policy id is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit";
    let Ok(Path(id)) = path else { return Err(invalid(rule)) };
    let valid = id.len() <= 64
        && id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid { Ok(id) } else { Err(invalid(rule)) }
}

fn description(text: Option<&str>) -> Result<String, ApiError> {
    let trimmed = text.unwrap_or_default().trim();
    if trimmed.chars().count() > MAX_DESCRIPTION_CHARS || trimmed.chars().any(char::is_control) {
        return Err(invalid(format!(
            "description must be at most {MAX_DESCRIPTION_CHARS} characters without control characters"
        )));
    }
    Ok(trimmed.to_owned())
}

/// The answer to a change the store refused.
fn refused(refusal: ChangeRefused) -> ApiError {
    match refusal {
        ChangeRefused::TooMany { .. } => {
            ApiError::new(ErrorCode::LimitReached, refusal.to_string())
        }
        ChangeRefused::Conflict(conflict) => {
            ApiError::new(ErrorCode::Conflict, conflict.to_string())
        }
        ChangeRefused::NotFound => ApiError::new(
            ErrorCode::NotFound,
            "no policy with this id in your workspace; list them with GET /v1/policies",
        ),
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, message)
}
