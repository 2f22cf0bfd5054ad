//! Credentials (ciphertext only) and key rotation.
//!
//! The broker checks an envelope's framing and that its header names the key version the device
//! claims; it cannot open it. Shared credentials are managed by admins and readable (as
//! ciphertext) by every member; personal ones exist only for their owner: every other member,
//! admins included, gets `404 not_found` for them, exactly as for a credential that does not
//! exist.
//!
//! Rotation re-seals every credential of one key (the workspace key, or the caller's member key)
//! on the caller's device; the broker swaps all envelopes, bumps the version and stores the new
//! wrapped keys in one transaction, or refuses and changes nothing.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use latchkey_core::envelope::Envelope;
use latchkey_core::ids::{
    CredentialId, DeviceId, KeyVersion, LeaseId, MemberId, Owner, WorkspaceId,
};
use latchkey_core::keys::{WrappedKey, WrappedKind};
use latchkey_core::text::{MAX_ACCOUNT_CHARS, acts_on_display};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::limit_reached;
use super::openapi::{DeviceErrors, stand_in};
use super::wire::B64;
use crate::audit::{AuditEvent, AuditKind};
use crate::auth::{DeviceCaller, Signed};
use crate::error::{ApiError, ErrorCode};
use crate::state::SharedState;
use crate::store::credentials::{
    CredentialRecord, CredentialStatus, CredentialUpdate, CredentialWriteError, NewCredential,
    Rotation, RotationRefused, RotationScope,
};
use crate::store::devices::Role;
use crate::store::leases::{LeaseHolder, LeaseRefused, REFRESH_LEASE_SECS};

pub(super) fn routes() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(show, replace, remove))
        .routes(routes!(envelope))
        .routes(routes!(take_lease))
        .routes(routes!(release_lease))
        .routes(routes!(set_status))
        .routes(routes!(rotate))
}

/// Longest accepted upstream base URL.
const MAX_URL_LEN: usize = 2048;
/// Most entries in `allowed_hosts`.
const MAX_ALLOWED_HOSTS: usize = 32;
/// Most scopes per credential, and the longest scope.
const MAX_SCOPES: usize = 100;
const MAX_SCOPE_LEN: usize = 256;

/// Whose credential a new one is: `shared` (admins only; under the workspace key) or `me` (the
/// caller's personal one, under their member key).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum OwnerChoice {
    Shared,
    Me,
}

/// The body of `POST /v1/credentials`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateCredential {
    #[schema(value_type = stand_in::CredentialId)]
    id: CredentialId,
    /// The name in `/p/{name}/...`: 1 to 64 of `a-z 0-9 . _ -`, starting with a letter or digit.
    #[schema(example = "github")]
    name: String,
    /// Provider catalog id (same alphabet as names).
    #[schema(example = "github")]
    provider: String,
    /// `https://host[:port][/path]` (`http://` only for loopback hosts).
    #[schema(example = "https://api.github.com")]
    upstream_base_url: String,
    /// Hosts the proxy may call with this credential (at most 32).
    allowed_hosts: Vec<String>,
    owner: OwnerChoice,
    /// The key version the envelope is sealed under.
    key_version: u32,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    expires_hint: Option<u64>,
    /// Whose account at the provider it acts as, for display: 1 to 200 characters, no control
    /// or bidirectional-override characters, no spaces at either end.
    #[serde(default)]
    #[schema(example = "octocat")]
    account: Option<String>,
    /// The credential sealed on the device under its record key.
    envelope: B64,
}

/// The body of `PUT /v1/credentials/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReplaceCredential {
    /// The revision the device last read.
    revision: u64,
    name: String,
    provider: String,
    upstream_base_url: String,
    allowed_hosts: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    expires_hint: Option<u64>,
    /// As for creation; left out or `null`, the credential has no account name from then on.
    #[serde(default)]
    account: Option<String>,
    key_version: u32,
    envelope: B64,
    #[serde(default)]
    status: Option<CredentialStatus>,
    /// The refresh lease this device holds, when it stores a refresh: given back with the write.
    #[serde(default)]
    #[schema(value_type = Option<stand_in::LeaseId>)]
    lease: Option<LeaseId>,
}

/// The body of `PATCH /v1/credentials/{id}/status`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SetStatus {
    status: CredentialStatus,
    #[serde(default)]
    revision: Option<u64>,
}

/// A credential's metadata, never its envelope.
#[derive(Debug, Serialize, ToSchema)]
struct CredentialView {
    #[schema(value_type = stand_in::CredentialId)]
    id: CredentialId,
    name: String,
    provider: String,
    upstream_base_url: String,
    allowed_hosts: Vec<String>,
    #[schema(value_type = stand_in::Owner)]
    owner: Owner,
    #[schema(value_type = stand_in::KeyVersion)]
    key_version: KeyVersion,
    status: CredentialStatus,
    scopes: Vec<String>,
    expires_hint: Option<u64>,
    /// Whose account at the provider it acts as, as the connecting device found it; `null` when
    /// unknown.
    account: Option<String>,
    revision: u64,
    created_at: u64,
    updated_at: u64,
    /// When the proxy last forwarded an agent's call with it (unix seconds, to the second);
    /// `null` before the first. Refused calls do not count.
    last_used_at: Option<u64>,
}

impl From<CredentialRecord> for CredentialView {
    fn from(r: CredentialRecord) -> Self {
        Self {
            id: r.id,
            name: r.name,
            provider: r.provider,
            upstream_base_url: r.upstream_base_url,
            allowed_hosts: r.allowed_hosts,
            owner: r.owner,
            key_version: r.key_version,
            status: r.status,
            scopes: r.scopes,
            expires_hint: r.expires_hint,
            account: r.account,
            revision: r.revision,
            created_at: r.created_at,
            updated_at: r.updated_at,
            last_used_at: r.last_used_at,
        }
    }
}

/// Credentials the caller can see.
#[derive(Debug, Serialize, ToSchema)]
struct CredentialList {
    credentials: Vec<CredentialView>,
}

/// A credential's envelope (ciphertext the broker cannot open).
#[derive(Debug, Serialize, ToSchema)]
struct EnvelopeView {
    #[schema(value_type = stand_in::CredentialId)]
    id: CredentialId,
    #[schema(value_type = stand_in::Owner)]
    owner: Owner,
    #[schema(value_type = stand_in::KeyVersion)]
    key_version: KeyVersion,
    revision: u64,
    envelope: B64,
}

/// A refresh lease this device now holds.
#[derive(Debug, Serialize, ToSchema)]
struct LeaseView {
    /// Name it when storing the refreshed envelope (`PUT`) or giving the lease back (`DELETE`).
    #[schema(value_type = stand_in::LeaseId)]
    lease: LeaseId,
    /// When the lease lapses (unix seconds); from then on anyone may take it over.
    expires_at: u64,
    /// The credential's revision when the lease was taken: if the device read an older one,
    /// someone may have refreshed meanwhile, and it reads the credential again before it
    /// presents a refresh token.
    revision: u64,
}

/// The `Retry-After` of a `refresh_in_progress` answer: a refresh usually takes a second or two,
/// so the caller looks again soon rather than when the holder's lease would lapse.
const REFRESH_RETRY_SECS: u64 = 2;

/// Stores a new credential (its envelope and metadata).
///
/// Shared credentials are created by admins; any member may create a personal one (`owner: me`).
#[utoipa::path(
    post,
    path = "/v1/credentials",
    tag = "credentials",
    operation_id = "create_credential",
    security(("device_signature" = [])),
    request_body = CreateCredential,
    responses(
        (status = 201, description = "Stored", body = CredentialView),
        DeviceErrors,
        (status = 400, description = "`bad_request` or `invalid_request` (name, provider, URL, hosts, scopes, account, envelope framing or key version)", body = ApiError),
        (status = 403, description = "`forbidden`: only admins create shared credentials", body = ApiError),
        (status = 409, description = "`conflict`: the id or name is taken, or the envelope is not at the owner's current key version; `limit_reached`: the workspace holds 2000 credentials, remove some first", body = ApiError),
    ),
)]
async fn create(
    State(state): State<SharedState>,
    request: Signed<CreateCredential>,
) -> Result<(StatusCode, Json<CredentialView>), ApiError> {
    let (caller, body) = (request.caller, request.body);
    let owner = match body.owner {
        OwnerChoice::Shared => {
            caller.require_admin()?;
            Owner::Shared
        }
        OwnerChoice::Me => Owner::Member(caller.member),
    };
    let new = NewCredential {
        workspace: caller.workspace,
        id: body.id,
        name: credential_name(&body.name)?,
        provider: provider_id(&body.provider)?,
        upstream_base_url: upstream_base_url(&body.upstream_base_url)?,
        allowed_hosts: allowed_hosts(&body.allowed_hosts)?,
        owner,
        scopes: scopes(&body.scopes)?,
        expires_hint: body.expires_hint,
        account: account(body.account)?,
        envelope: checked_envelope(&body.envelope, body.key_version)?,
        now: state.now(),
    };
    let record = state.store.create_credential(new).await?.map_err(|e| match e {
        CredentialWriteError::Limit(limit) => limit_reached(&caller, limit),
        e => write_error(e),
    })?;
    tracing::info!(workspace = %record.workspace, credential = %record.id, owner = ?record.owner, "credential created");
    audit(&state, &caller, AuditKind::CredentialCreated, |e| {
        e.credential_name = Some(record.name.clone());
        e.subject = account_subject(&record);
    })
    .await;
    Ok((StatusCode::CREATED, Json(record.into())))
}

/// The workspace's shared credentials and the caller's personal ones.
#[utoipa::path(
    get,
    path = "/v1/credentials",
    tag = "credentials",
    operation_id = "list_credentials",
    security(("device_signature" = [])),
    params(("name" = Option<String>, Query, description = "Only the credential agents call by this name (none or one)")),
    responses(
        (status = 200, description = "Metadata only, never envelopes", body = CredentialList),
        DeviceErrors,
        (status = 400, description = "`bad_request`: a parameter other than `name`", body = ApiError),
    ),
)]
async fn list(
    State(state): State<SharedState>,
    query: Result<Query<ListQuery>, QueryRejection>,
    request: Signed<()>,
) -> Result<Json<CredentialList>, ApiError> {
    let c = request.caller;
    let Ok(Query(query)) = query else {
        return Err(ApiError::new(ErrorCode::BadRequest, "the only query parameter is name"));
    };
    let records = match query.name {
        // One row by its unique name, rather than every credential to pick one.
        Some(name) => state
            .store
            .credential_by_name(c.workspace, &name)
            .await?
            .filter(|r| may_see(&c, r.owner))
            .into_iter()
            .collect(),
        None => state.store.credentials_visible_to(c.workspace, c.member).await?,
    };
    Ok(Json(CredentialList { credentials: records.into_iter().map(Into::into).collect() }))
}

/// The query of `GET /v1/credentials`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    name: Option<String>,
}

/// One credential's metadata.
#[utoipa::path(
    get,
    path = "/v1/credentials/{id}",
    tag = "credentials",
    operation_id = "get_credential",
    security(("device_signature" = [])),
    params(("id" = String, Path, format = "uuid", description = "The credential id")),
    responses(
        (status = 200, description = "The credential's metadata", body = CredentialView),
        DeviceErrors,
        (status = 400, description = "`bad_request`: the id is not a UUID", body = ApiError),
        (status = 404, description = "`not_found`: no such credential, or another member's personal one", body = ApiError),
    ),
)]
async fn show(
    State(state): State<SharedState>,
    id: Result<Path<String>, PathRejection>,
    request: Signed<()>,
) -> Result<Json<CredentialView>, ApiError> {
    let record = visible(&state, &request.caller, credential_id(id)?).await?;
    Ok(Json(record.into()))
}

/// The envelope, for devices of members who hold the key: any member for a shared credential,
/// only the owner for a personal one.
#[utoipa::path(
    get,
    path = "/v1/credentials/{id}/envelope",
    tag = "credentials",
    operation_id = "get_credential_envelope",
    security(("device_signature" = [])),
    params(("id" = String, Path, format = "uuid", description = "The credential id")),
    responses(
        (status = 200, description = "The envelope", body = EnvelopeView),
        DeviceErrors,
        (status = 400, description = "`bad_request`: the id is not a UUID", body = ApiError),
        (status = 404, description = "`not_found`: no such credential, or another member's personal one", body = ApiError),
    ),
)]
async fn envelope(
    State(state): State<SharedState>,
    id: Result<Path<String>, PathRejection>,
    request: Signed<()>,
) -> Result<Json<EnvelopeView>, ApiError> {
    let record = visible(&state, &request.caller, credential_id(id)?).await?;
    Ok(Json(EnvelopeView {
        id: record.id,
        owner: record.owner,
        key_version: record.key_version,
        revision: record.revision,
        envelope: B64(record.envelope.into_bytes()),
    }))
}

/// Replaces a credential's metadata and envelope, if `revision` is still current.
///
/// Shared credentials by admins, personal ones by their owner.
#[utoipa::path(
    put,
    path = "/v1/credentials/{id}",
    tag = "credentials",
    operation_id = "replace_credential",
    security(("device_signature" = [])),
    params(("id" = String, Path, format = "uuid", description = "The credential id")),
    request_body = ReplaceCredential,
    responses(
        (status = 200, description = "Replaced; the revision went up by one", body = CredentialView),
        DeviceErrors,
        (status = 400, description = "`bad_request` or `invalid_request` (as for creation)", body = ApiError),
        (status = 403, description = "`forbidden`: a shared credential and the caller is not an admin, or the owner was removed", body = ApiError),
        (status = 404, description = "`not_found`: no such credential, or another member's personal one", body = ApiError),
        (status = 409, description = "`conflict`: the revision is stale, the name is taken, or the key version is not current; `refresh_in_progress`: the `lease` named was taken over and its new holder is refreshing (with `Retry-After`)", body = ApiError),
    ),
)]
async fn replace(
    State(state): State<SharedState>,
    id: Result<Path<String>, PathRejection>,
    request: Signed<ReplaceCredential>,
) -> Result<Json<CredentialView>, ApiError> {
    let (caller, body) = (request.caller, request.body);
    let record = visible(&state, &caller, credential_id(id)?).await?;
    may_manage(&caller, &record)?;
    let update = CredentialUpdate {
        expected_revision: body.revision,
        name: credential_name(&body.name)?,
        provider: provider_id(&body.provider)?,
        upstream_base_url: upstream_base_url(&body.upstream_base_url)?,
        allowed_hosts: allowed_hosts(&body.allowed_hosts)?,
        scopes: scopes(&body.scopes)?,
        expires_hint: body.expires_hint,
        account: account(body.account)?,
        envelope: checked_envelope(&body.envelope, body.key_version)?,
        status: body.status,
        lease: body.lease.map(|lease| (lease, caller.device)),
        now: state.now(),
    };
    let record = state
        .store
        .update_credential(caller.workspace, record.id, update)
        .await?
        .map_err(write_error)?;
    tracing::info!(workspace = %record.workspace, credential = %record.id, revision = record.revision, "credential replaced");
    audit(&state, &caller, AuditKind::CredentialUpdated, |e| {
        e.credential_name = Some(record.name.clone());
        e.subject = account_subject(&record);
    })
    .await;
    Ok(Json(record.into()))
}

/// Takes the credential's refresh lease: this device may refresh its OAuth tokens at the
/// provider now, and nobody else (no other device or process, not the broker) until the lease
/// is given back or lapses.
///
/// Take it before presenting a refresh token; name it when storing the refreshed envelope
/// (`PUT`, which gives it back in the same transaction), or give it back (`DELETE`) on any
/// failure. A lapsed lease is taken over. Shared credentials by admins, personal ones by their
/// owner (whoever may store the result).
#[utoipa::path(
    post,
    path = "/v1/credentials/{id}/refresh-lease",
    tag = "credentials",
    operation_id = "take_refresh_lease",
    security(("device_signature" = [])),
    params(("id" = String, Path, format = "uuid", description = "The credential id")),
    responses(
        (status = 200, description = "The lease is this device's until `expires_at`", body = LeaseView),
        DeviceErrors,
        (status = 400, description = "`bad_request`: the id is not a UUID", body = ApiError),
        (status = 403, description = "`forbidden`: a shared credential and the caller is not an admin", body = ApiError),
        (status = 404, description = "`not_found`: no such credential, or another member's personal one", body = ApiError),
        (status = 409, description = "`refresh_in_progress`: someone else holds a live lease; read the credential again after `Retry-After` seconds (it is probably fresh by then)", body = ApiError),
    ),
)]
async fn take_lease(
    State(state): State<SharedState>,
    id: Result<Path<String>, PathRejection>,
    request: Signed<()>,
) -> Result<Json<LeaseView>, ApiError> {
    let caller = request.caller;
    let record = visible(&state, &caller, credential_id(id)?).await?;
    may_manage(&caller, &record)?;
    let now = state.now();
    let holder = LeaseHolder::Device(caller.device);
    let taken = state
        .store
        .take_refresh_lease(caller.workspace, record.id, holder, REFRESH_LEASE_SECS, now)
        .await?;
    match taken {
        Ok(taken) => {
            tracing::debug!(workspace = %caller.workspace, credential = %record.id, lease = %taken.lease.id, "refresh lease taken");
            Ok(Json(LeaseView {
                lease: taken.lease.id,
                expires_at: taken.lease.expires_at,
                revision: taken.revision,
            }))
        }
        Err(LeaseRefused::Held(held)) => Err(refresh_in_progress(held.expires_at, now)),
        Err(LeaseRefused::NotFound) => Err(no_such_credential()),
    }
}

/// Gives back a refresh lease this device holds (a refresh that failed or found nothing to do).
#[utoipa::path(
    delete,
    path = "/v1/credentials/{id}/refresh-lease/{lease}",
    tag = "credentials",
    operation_id = "release_refresh_lease",
    security(("device_signature" = [])),
    params(
        ("id" = String, Path, format = "uuid", description = "The credential id"),
        ("lease" = String, Path, format = "uuid", description = "The lease id `POST` answered"),
    ),
    responses(
        (status = 204, description = "Given back: anyone may take the lease now"),
        DeviceErrors,
        (status = 400, description = "`bad_request`: an id is not a UUID", body = ApiError),
        (status = 404, description = "`not_found`: no such credential, or this device holds no such lease on it (given back already, taken over after it lapsed, or another device's)", body = ApiError),
    ),
)]
async fn release_lease(
    State(state): State<SharedState>,
    ids: Result<Path<(String, String)>, PathRejection>,
    request: Signed<()>,
) -> Result<StatusCode, ApiError> {
    let caller = request.caller;
    let (id, lease) = ids
        .ok()
        .and_then(|Path((id, lease))| Some((id.parse().ok()?, lease.parse::<LeaseId>().ok()?)))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::BadRequest,
                "the credential id and the lease id in the path must be UUIDs",
            )
        })?;
    let record = visible(&state, &caller, id).await?;
    let holder = LeaseHolder::Device(caller.device);
    if !state.store.release_refresh_lease(caller.workspace, record.id, lease, holder).await? {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "this device holds no such refresh lease on the credential (given back already, or taken over after it lapsed)",
        ));
    }
    tracing::debug!(workspace = %caller.workspace, credential = %record.id, %lease, "refresh lease given back");
    Ok(StatusCode::NO_CONTENT)
}

/// `409 refresh_in_progress` for a lease held until `until`.
fn refresh_in_progress(until: u64, now: u64) -> ApiError {
    let left = until.saturating_sub(now);
    ApiError::new(
        ErrorCode::RefreshInProgress,
        format!(
            "someone else is refreshing this credential now (their lease lapses in {left} s); read it again in a few seconds, it is probably fresh by then"
        ),
    )
    .retry_after(REFRESH_RETRY_SECS.min(left.max(1)))
}

/// Sets a credential's status (`active`, `reconnect_needed`, `disabled`).
#[utoipa::path(
    patch,
    path = "/v1/credentials/{id}/status",
    tag = "credentials",
    operation_id = "set_credential_status",
    security(("device_signature" = [])),
    params(("id" = String, Path, format = "uuid", description = "The credential id")),
    request_body = SetStatus,
    responses(
        (status = 200, description = "The status was set", body = CredentialView),
        DeviceErrors,
        (status = 400, description = "`bad_request`: malformed body or id", body = ApiError),
        (status = 403, description = "`forbidden`: a shared credential and the caller is not an admin", body = ApiError),
        (status = 404, description = "`not_found`: no such credential, or another member's personal one", body = ApiError),
        (status = 409, description = "`conflict`: `revision` was given and is stale", body = ApiError),
    ),
)]
async fn set_status(
    State(state): State<SharedState>,
    id: Result<Path<String>, PathRejection>,
    request: Signed<SetStatus>,
) -> Result<Json<CredentialView>, ApiError> {
    let (caller, body) = (request.caller, request.body);
    let record = visible(&state, &caller, credential_id(id)?).await?;
    may_manage(&caller, &record)?;
    let record = state
        .store
        .set_credential_status(caller.workspace, record.id, body.status, body.revision, state.now())
        .await?
        .map_err(write_error)?;
    tracing::info!(workspace = %record.workspace, credential = %record.id, status = record.status.as_str(), "credential status set");
    audit(&state, &caller, AuditKind::CredentialStatusChanged, |e| {
        e.credential_name = Some(record.name.clone());
        e.subject = Some(record.status.as_str().to_owned());
    })
    .await;
    Ok(Json(record.into()))
}

/// Deletes the credential (and revokes its grants): the next proxied request fails.
#[utoipa::path(
    delete,
    path = "/v1/credentials/{id}",
    tag = "credentials",
    operation_id = "delete_credential",
    security(("device_signature" = [])),
    params(("id" = String, Path, format = "uuid", description = "The credential id")),
    responses(
        (status = 204, description = "Deleted"),
        DeviceErrors,
        (status = 400, description = "`bad_request`: the id is not a UUID", body = ApiError),
        (status = 403, description = "`forbidden`: a shared credential and the caller is not an admin", body = ApiError),
        (status = 404, description = "`not_found`: no such credential, or another member's personal one", body = ApiError),
    ),
)]
async fn remove(
    State(state): State<SharedState>,
    id: Result<Path<String>, PathRejection>,
    request: Signed<()>,
) -> Result<StatusCode, ApiError> {
    let caller = request.caller;
    let record = visible(&state, &caller, credential_id(id)?).await?;
    may_manage(&caller, &record)?;
    if !state.store.delete_credential(caller.workspace, record.id, state.now()).await? {
        return Err(no_such_credential());
    }
    tracing::info!(workspace = %caller.workspace, credential = %record.id, "credential deleted");
    audit(&state, &caller, AuditKind::CredentialDeleted, |e| e.credential_name = Some(record.name))
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Which key a rotation replaces: `shared` (the workspace key; admins) or `member` (the
/// caller's member key).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum ScopeChoice {
    Shared,
    Member,
}

/// The body of `POST /v1/rotations`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RotateKey {
    scope: ScopeChoice,
    from_version: u32,
    to_version: u32,
    credentials: Vec<Resealed>,
    wrapped_keys: Vec<B64>,
    /// Active devices of the scope the rotating device deliberately does not send the new key
    /// (it never confirmed their fingerprints). Every active device of the scope must be a
    /// recipient or listed here.
    #[serde(default)]
    #[schema(value_type = Vec<stand_in::DeviceId>)]
    left_out: Vec<DeviceId>,
}

/// A credential re-sealed under the new key version.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Resealed {
    #[schema(value_type = stand_in::CredentialId)]
    id: CredentialId,
    envelope: B64,
}

/// The finished rotation.
#[derive(Debug, Serialize, ToSchema)]
struct Rotated {
    scope: ScopeChoice,
    #[schema(value_type = stand_in::KeyVersion)]
    key_version: KeyVersion,
    credentials: usize,
    wrapped_keys: usize,
}

/// Rotates the workspace key (admins) or the caller's member key, all or nothing.
///
/// The body re-seals every credential of that key under `to_version` = `from_version + 1` and
/// carries the new key wrapped to each device that should hold it; every other active device of
/// the scope must be named in `left_out` (the rotating device does not trust it), so none is
/// left out by accident.
#[utoipa::path(
    post,
    path = "/v1/rotations",
    tag = "credentials",
    operation_id = "rotate_key",
    security(("device_signature" = [])),
    request_body = RotateKey,
    responses(
        (status = 200, description = "Every envelope and wrapped key was swapped in one transaction", body = Rotated),
        DeviceErrors,
        (status = 400, description = "`bad_request` or `invalid_request` (versions, envelope framing or version, wrapped key scope, version, sender or repeats)", body = ApiError),
        (status = 403, description = "`forbidden`: a workspace-key rotation by a non-admin, or the member was removed", body = ApiError),
        (status = 409, description = "`conflict`: someone rotated first, or the credentials are not exactly the key's credentials; nothing changed", body = ApiError),
    ),
)]
async fn rotate(
    State(state): State<SharedState>,
    request: Signed<RotateKey>,
) -> Result<Json<Rotated>, ApiError> {
    let (caller, body) = (request.caller, request.body);
    let (scope, kind, owner) = match body.scope {
        ScopeChoice::Shared => {
            caller.require_admin()?;
            (RotationScope::Shared, WrappedKind::Workspace, Owner::Shared)
        }
        ScopeChoice::Member => (
            RotationScope::Member(caller.member),
            WrappedKind::Member,
            Owner::Member(caller.member),
        ),
    };
    let from = KeyVersion::new(body.from_version)
        .ok_or_else(|| invalid("from_version must be at least 1"))?;
    let to = match (from.next(), KeyVersion::new(body.to_version)) {
        (Some(next), Some(to)) if next == to => to,
        _ => return Err(invalid("to_version must be from_version + 1")),
    };

    let mut envelopes = Vec::with_capacity(body.credentials.len());
    let mut seen = std::collections::HashSet::new();
    for (i, resealed) in body.credentials.iter().enumerate() {
        if !seen.insert(resealed.id) {
            return Err(invalid(format!("credentials[{i}] repeats a credential id")));
        }
        let envelope = Envelope::parse(&resealed.envelope.0)
            .map_err(|e| invalid(format!("credentials[{i}].envelope: {e}")))?;
        if envelope.key_version() != to {
            return Err(invalid(format!(
                "credentials[{i}].envelope is sealed under key version {}, not to_version",
                envelope.key_version()
            )));
        }
        envelopes.push((resealed.id, envelope));
    }

    let mut wrapped_keys = Vec::with_capacity(body.wrapped_keys.len());
    let mut recipients = std::collections::HashSet::new();
    for (i, bytes) in body.wrapped_keys.iter().enumerate() {
        let wrapped =
            WrappedKey::parse(&bytes.0).map_err(|e| invalid(format!("wrapped_keys[{i}]: {e}")))?;
        let h = wrapped.header();
        if h.workspace != caller.workspace || h.kind != kind || h.owner != owner {
            return Err(invalid(format!(
                "wrapped_keys[{i}] must carry the key being rotated (this workspace, this scope)"
            )));
        }
        if h.version != to {
            return Err(invalid(format!("wrapped_keys[{i}] must be for to_version")));
        }
        if h.sender != caller.device {
            return Err(invalid(format!(
                "wrapped_keys[{i}] must be wrapped and signed by the device sending the rotation"
            )));
        }
        if !recipients.insert(h.recipient) {
            return Err(invalid(format!("wrapped_keys[{i}] repeats a recipient device")));
        }
        wrapped_keys.push(wrapped);
    }
    for (i, device) in body.left_out.iter().enumerate() {
        if recipients.contains(device) {
            return Err(invalid(format!("left_out[{i}] is also a recipient of the new key")));
        }
    }

    let (credentials, wrapped) = (envelopes.len(), wrapped_keys.len());
    let rotation = Rotation {
        workspace: caller.workspace,
        scope,
        from,
        to,
        envelopes,
        wrapped_keys,
        left_out: body.left_out,
        now: state.now(),
    };
    state.store.rotate(rotation).await?.map_err(|refused| match refused {
        RotationRefused::MemberGone => ApiError::new(ErrorCode::Forbidden, refused.to_string()),
        _ => ApiError::new(ErrorCode::Conflict, refused.to_string()),
    })?;
    tracing::info!(workspace = %caller.workspace, scope = ?scope, version = %to, credentials, "key rotated");
    audit(&state, &caller, AuditKind::KeysRotated, |_| {}).await;
    Ok(Json(Rotated { scope: body.scope, key_version: to, credentials, wrapped_keys: wrapped }))
}

/// Records a device's action in the audit log once it has committed. The action stands either
/// way: a failed append is logged as an error (the chain itself stays intact, with a gap in what
/// it tells).
pub(crate) async fn audit(
    state: &SharedState,
    caller: &DeviceCaller,
    kind: AuditKind,
    fill: impl FnOnce(&mut AuditEvent),
) {
    audit_as(state, caller.workspace, caller.device, caller.member, kind, fill).await;
}

/// [`audit`] for a device that is not a [`DeviceCaller`] yet (it created the workspace, or
/// joined it, with this very request).
pub(crate) async fn audit_as(
    state: &SharedState,
    workspace: WorkspaceId,
    device: DeviceId,
    member: MemberId,
    kind: AuditKind,
    fill: impl FnOnce(&mut AuditEvent),
) {
    let at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut event = AuditEvent::new(workspace, at_ms, kind);
    event.device = Some(device);
    event.member = Some(member);
    fill(&mut event);
    if let Err(error) = state.audit.append(event).await {
        tracing::error!(%error, kind = kind.as_str(), "could not audit a device action that was carried out");
    }
}

/// The credential, if the caller may see it; otherwise the same 404 as for a missing one.
async fn visible(
    state: &SharedState,
    caller: &DeviceCaller,
    id: CredentialId,
) -> Result<CredentialRecord, ApiError> {
    let record = state.store.credential(caller.workspace, id).await?;
    match record {
        Some(r) if may_see(caller, r.owner) => Ok(r),
        _ => Err(no_such_credential()),
    }
}

/// Shared credentials are every member's; personal ones only their owner's.
pub(crate) fn may_see(caller: &DeviceCaller, owner: Owner) -> bool {
    match owner {
        Owner::Shared => true,
        Owner::Member(member) => member == caller.member,
    }
}

/// Shared credentials are managed by admins, personal ones by their owner.
fn may_manage(caller: &DeviceCaller, record: &CredentialRecord) -> Result<(), ApiError> {
    match record.owner {
        Owner::Shared if caller.role == Role::Admin => Ok(()),
        Owner::Shared => Err(ApiError::new(
            ErrorCode::Forbidden,
            "only a workspace admin can change a shared credential; ask an admin of your workspace",
        )),
        Owner::Member(member) if member == caller.member => Ok(()),
        Owner::Member(_) => Err(no_such_credential()),
    }
}

fn no_such_credential() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such credential in this workspace")
}

fn credential_id(path: Result<Path<String>, PathRejection>) -> Result<CredentialId, ApiError> {
    path.ok().and_then(|Path(text)| text.parse().ok()).ok_or_else(|| {
        ApiError::new(ErrorCode::BadRequest, "the credential id in the path must be a UUID")
    })
}

fn write_error(error: CredentialWriteError) -> ApiError {
    let code = match error {
        CredentialWriteError::NotFound => ErrorCode::NotFound,
        CredentialWriteError::OwnerGone => ErrorCode::Forbidden,
        CredentialWriteError::Limit(_) => ErrorCode::LimitReached,
        CredentialWriteError::RefreshInProgress { .. } => {
            return ApiError::new(ErrorCode::RefreshInProgress, error.to_string())
                .retry_after(REFRESH_RETRY_SECS);
        }
        _ => ErrorCode::Conflict,
    };
    ApiError::new(code, error.to_string())
}

/// The envelope's framing, and that its header names `key_version`.
fn checked_envelope(bytes: &B64, key_version: u32) -> Result<Envelope, ApiError> {
    let envelope = Envelope::parse(&bytes.0).map_err(|e| invalid(format!("envelope: {e}")))?;
    if envelope.key_version().get() != key_version {
        return Err(invalid(format!(
            "envelope is sealed under key version {}, but key_version says {key_version}; seal it with the key you name",
            envelope.key_version().get()
        )));
    }
    Ok(envelope)
}

/// `[a-z0-9][a-z0-9._-]{0,63}`: the name in `/p/{name}/...`.
fn credential_name(name: &str) -> Result<String, ApiError> {
    if is_slug(name) {
        Ok(name.to_owned())
    } else {
        Err(invalid(
            "name must be 1 to 64 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit",
        ))
    }
}

/// A provider catalog id: same alphabet as names.
fn provider_id(provider: &str) -> Result<String, ApiError> {
    if is_slug(provider) {
        Ok(provider.to_owned())
    } else {
        Err(invalid(
            "provider must be a catalog id: 1 to 64 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit",
        ))
    }
}

fn is_slug(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes.iter().all(|&b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

/// Normalises `https://host[:port][/base/path]`: lowercase host, no default port, no trailing
/// `/`. `http://` only for the loopback hosts `127.0.0.1`, `localhost` and `[::1]` (local
/// upstreams and tests). No user info, query or fragment; path segments are RFC 3986 path
/// characters, none empty, `.` or `..`.
fn upstream_base_url(url: &str) -> Result<String, ApiError> {
    let bad = || {
        invalid(
            "upstream_base_url must be https://host[:port][/path] (http:// only for 127.0.0.1, localhost or [::1]), without user info, query or fragment",
        )
    };
    if url.len() > MAX_URL_LEN {
        return Err(bad());
    }
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
        ("https", rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        ("http", rest)
    } else {
        return Err(bad());
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let (host, port) = host_and_port(authority).ok_or_else(bad)?;
    if host.starts_with("*.") {
        return Err(bad());
    }
    let loopback = matches!(host.as_str(), "127.0.0.1" | "localhost" | "[::1]");
    if scheme == "http" && !loopback {
        return Err(bad());
    }
    let default_port = if scheme == "https" { 443 } else { 80 };
    let path = path.trim_end_matches('/');
    if !path.is_empty() {
        let segments_ok = path[1..]
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != ".." && s.bytes().all(is_pchar));
        if !segments_ok {
            return Err(bad());
        }
    }
    Ok(match port {
        Some(p) if p != default_port => format!("{scheme}://{host}:{p}{path}"),
        _ => format!("{scheme}://{host}{path}"),
    })
}

/// Lowercase `host` or `host:port` entries, or `*.domain` wildcards (at least two labels after
/// the `*.`, no port). Duplicates are dropped, order kept.
fn allowed_hosts(entries: &[String]) -> Result<Vec<String>, ApiError> {
    if entries.is_empty() || entries.len() > MAX_ALLOWED_HOSTS {
        return Err(invalid(format!(
            "allowed_hosts must list 1 to {MAX_ALLOWED_HOSTS} hosts the proxy may contact"
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let bad = || {
            invalid(format!(
                "allowed_hosts[{i}] must be a host name or address with an optional :port (no scheme or path), or *.domain.tld"
            ))
        };
        let normalised = match entry.strip_prefix("*.") {
            Some(domain) => {
                let domain = domain.to_ascii_lowercase();
                if !is_dns_name(&domain) || !domain.contains('.') || is_ipv4(&domain) {
                    return Err(bad());
                }
                format!("*.{domain}")
            }
            None => {
                let (host, port) = host_and_port(entry).ok_or_else(bad)?;
                match port {
                    Some(p) => format!("{host}:{p}"),
                    None => host,
                }
            }
        };
        if !out.contains(&normalised) {
            out.push(normalised);
        }
    }
    Ok(out)
}

/// Scopes as OAuth spells them (RFC 6749 scope-token characters), at most 100 of 1 to 256
/// characters each.
fn scopes(scopes: &[String]) -> Result<Vec<String>, ApiError> {
    let nqchar = |b: u8| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b);
    let ok = scopes.len() <= MAX_SCOPES
        && scopes
            .iter()
            .all(|s| !s.is_empty() && s.len() <= MAX_SCOPE_LEN && s.bytes().all(nqchar));
    if ok {
        Ok(scopes.to_vec())
    } else {
        Err(invalid(format!(
            "scopes must be at most {MAX_SCOPES} OAuth scope tokens of 1 to {MAX_SCOPE_LEN} printable characters without spaces, quotes or backslashes"
        )))
    }
}

/// The audit `subject` of a stored or replaced credential: the account it acts as, when known,
/// so the log shows whose access was connected and when a reconnect switched to someone else.
fn account_subject(record: &CredentialRecord) -> Option<String> {
    record.account.as_ref().map(|account| format!("account {account}"))
}

/// An account name as shown to people: 1 to [`MAX_ACCOUNT_CHARS`] characters, without control
/// characters (which would break a terminal's or a log's lines) or the bidirectional overrides and
/// isolates that make text display in another order than it is stored (so a name cannot pose as
/// another), and without spaces at either end.
fn account(account: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(account) = account else { return Ok(None) };
    let ok = (1..=MAX_ACCOUNT_CHARS).contains(&account.chars().count())
        && account.trim() == account
        && !account.chars().any(acts_on_display);
    if ok {
        Ok(Some(account))
    } else {
        Err(invalid(format!(
            "account must be 1 to {MAX_ACCOUNT_CHARS} characters without control or bidirectional-override characters and without spaces at either end"
        )))
    }
}

/// Splits `host[:port]` and lowercases the host: a DNS name, an IPv4 address or `[::1]`.
fn host_and_port(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, rest) = authority.split_at(end + 1);
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let host = host.to_ascii_lowercase();
    if host != "[::1]" && !is_dns_name(&host) {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().ok().filter(|&n| n != 0)?)
        }
        Some(_) => return None,
    };
    Some((host, port))
}

/// Lowercase LDH labels of 1 to 63 characters, at most 253 characters in all (IPv4 addresses
/// fit this shape too). International names must be given in their `xn--` form.
fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

fn is_ipv4(host: &str) -> bool {
    host.split('.').all(|label| label.bytes().all(|b| b.is_ascii_digit()))
}

/// RFC 3986 `pchar` bytes: unreserved, sub-delims, `:`, `@` and `%` (percent-encodings are
/// kept as sent, not decoded).
fn is_pchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@%".contains(&b)
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, message)
}
