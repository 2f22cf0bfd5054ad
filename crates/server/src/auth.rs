//! Authentication of device requests: every request a device makes carries an RFC 9421
//! signature (see `latchkey_core::httpsig`), verified here before any handler runs.
//!
//! Order of checks: body size; signature headers and profile (no key needed); the key id names
//! an enrolled, active device of an active member; time window, body digest and signature; the
//! device's rate limit (`crate::rate_limit`: a refused request has written nothing); the nonce
//! has not been seen before (recorded in the database, so every replica agrees). Requests signed
//! by a device being registered ([`SelfSigned`]) have no device to limit yet.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::request::Parts;
use latchkey_core::httpsig::{ParsedSignature, SignedRequestParts};
use latchkey_core::ids::{DeviceId, MemberId, WorkspaceId};
use latchkey_core::keys::DeviceVerifyingKey;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorCode};
use crate::state::SharedState;
use crate::store::devices::Role;
use crate::store::nonces::NonceKind;

/// Largest body a device request may carry (envelopes are at most 64 KiB).
pub(crate) const MAX_DEVICE_BODY: usize = 1024 * 1024;
/// Largest body of a rotation (`POST /v1/rotations`), which carries every credential of the key
/// at once: about 700 envelopes of the largest size, thousands of usual ones. Read only once the
/// signing key is known to be an enrolled device's, so no stranger makes the broker buffer it.
pub(crate) const MAX_ROTATION_BODY: usize = 64 * 1024 * 1024;
/// The one endpoint that takes [`MAX_ROTATION_BODY`].
const ROTATIONS_PATH: &str = "/v1/rotations";
/// How far a device's clock may be off from the broker's.
pub(crate) const MAX_CLOCK_SKEW_SECS: u64 = 60;

/// The authenticated device behind a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeviceCaller {
    pub(crate) workspace: WorkspaceId,
    pub(crate) device: DeviceId,
    pub(crate) member: MemberId,
    pub(crate) role: Role,
}

impl DeviceCaller {
    /// Refuses callers that are not workspace admins.
    pub(crate) fn require_admin(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin => Ok(()),
            Role::Member => Err(ApiError::new(
                ErrorCode::Forbidden,
                "only a workspace admin can do this; ask an admin of your workspace",
            )),
        }
    }
}

/// A verified device request with its JSON body (`T = ()` for requests without a body).
#[derive(Debug)]
pub(crate) struct Signed<T> {
    pub(crate) caller: DeviceCaller,
    pub(crate) body: T,
}

impl<T: DeserializeOwned + Send> FromRequest<SharedState> for Signed<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &SharedState) -> Result<Self, Self::Rejection> {
        crate::access_log::mark_device_request(request.extensions());
        let (parts, body) = request.into_parts();
        let signature = parse_signature(state, &parts)?;
        let device = state.store.active_device(signature.key_id).await?.ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnknownDevice,
                "the signing key id is not an enrolled device of an active member; enrol this device first",
            )
        })?;
        let limit =
            if parts.uri.path() == ROTATIONS_PATH { MAX_ROTATION_BODY } else { MAX_DEVICE_BODY };
        let bytes = read_body(body, limit).await?;
        let key = DeviceVerifyingKey::from_bytes(&device.signing_key)
            .map_err(|e| ApiError::internal(&format!("stored device key unusable: {e}")))?;
        let nonce = verify_signature(state, &parts, &bytes, &signature, &key)?;
        let caller = DeviceCaller {
            workspace: device.workspace,
            device: device.id,
            member: device.member,
            role: device.role,
        };
        state.device_budgets.spend(&caller, state.now_millis())?;
        record_nonce(state, &nonce).await?;
        crate::access_log::note_caller(&parts.extensions, caller);
        Ok(Self { caller, body: parse_json(&bytes)? })
    }
}

/// A request signed by a device that is not enrolled yet: the key comes from the request itself
/// (workspace creation, joining with an invite). Handlers must check that `body` names the same
/// key that signed the request, via [`SelfSigned::verify_with`].
#[derive(Debug)]
pub(crate) struct SelfSigned<T> {
    parts: Parts,
    bytes: Bytes,
    signature: OwnedSignature,
    pub(crate) body: T,
}

impl<T: DeserializeOwned + Send> FromRequest<SharedState> for SelfSigned<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &SharedState) -> Result<Self, Self::Rejection> {
        let (parts, bytes) = read(request).await?;
        let signature = parse_signature(state, &parts)?;
        // The key is in the body, so the body is parsed before the signature can be checked; its
        // digest needs no key, so an altered body is refused before it is parsed.
        let digest = parts
            .headers
            .get(latchkey_core::httpsig::CONTENT_DIGEST_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        latchkey_core::httpsig::verify_content_digest(digest, &bytes).map_err(signature_error)?;
        let body = parse_json(&bytes)?;
        Ok(Self { parts, bytes, signature, body })
    }
}

impl<T> SelfSigned<T> {
    /// The device id the request claims to be signed by.
    pub(crate) fn key_id(&self) -> DeviceId {
        self.signature.key_id
    }

    /// Verifies the signature against `key` (taken from the body) and records the nonce.
    pub(crate) async fn verify_with(
        &self,
        state: &SharedState,
        key: &DeviceVerifyingKey,
    ) -> Result<(), ApiError> {
        let nonce = verify_signature(state, &self.parts, &self.bytes, &self.signature, key)?;
        record_nonce(state, &nonce).await
    }
}

/// The parts of a parsed signature a handler needs after the request is consumed.
#[derive(Debug)]
struct OwnedSignature {
    key_id: DeviceId,
}

async fn read(request: Request) -> Result<(Parts, Bytes), ApiError> {
    crate::access_log::mark_device_request(request.extensions());
    let (parts, body) = request.into_parts();
    Ok((parts, read_body(body, MAX_DEVICE_BODY).await?))
}

async fn read_body(body: axum::body::Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(ErrorCode::PayloadTooLarge, format!("request body larger than {limit} bytes"))
    })
}

fn parse_signature(state: &SharedState, parts: &Parts) -> Result<OwnedSignature, ApiError> {
    with_signed_parts(state, parts, |signed| {
        let parsed = ParsedSignature::parse(signed).map_err(signature_error)?;
        Ok(OwnedSignature { key_id: parsed.key_id() })
    })
}

/// The nonce of a request whose signature verified, not recorded yet.
#[derive(Debug)]
struct VerifiedNonce {
    /// The device id followed by the nonce: nonces are unique per device.
    bytes: Vec<u8>,
    /// Until when (Unix seconds) the request could still be accepted, and so must be remembered.
    keep_until: u64,
}

/// Checks the time window, the body digest and the signature against `key`.
fn verify_signature(
    state: &SharedState,
    parts: &Parts,
    body: &[u8],
    signature: &OwnedSignature,
    key: &DeviceVerifyingKey,
) -> Result<VerifiedNonce, ApiError> {
    let now = state.now();
    let verified = with_signed_parts(state, parts, |signed| {
        let parsed = ParsedSignature::parse(signed).map_err(signature_error)?;
        parsed
            .verify(key, now, latchkey_core::httpsig::MAX_WINDOW_SECS, MAX_CLOCK_SKEW_SECS, body)
            .map_err(signature_error)
    })?;
    debug_assert_eq!(verified.key_id(), signature.key_id);
    let mut bytes = Vec::with_capacity(16 + verified.nonce().len());
    bytes.extend_from_slice(verified.key_id().as_bytes());
    bytes.extend_from_slice(verified.nonce().as_bytes());
    Ok(VerifiedNonce { bytes, keep_until: verified.expires() + MAX_CLOCK_SKEW_SECS })
}

/// Records the nonce of a verified request; a nonce seen before is a replay.
async fn record_nonce(state: &SharedState, nonce: &VerifiedNonce) -> Result<(), ApiError> {
    let fresh = state
        .store
        .remember_nonce(NonceKind::Request, &nonce.bytes, nonce.keep_until, state.now())
        .await?;
    if !fresh {
        return Err(ApiError::new(
            ErrorCode::ReplayedRequest,
            "this signed request was already received; sign every request with a fresh nonce",
        ));
    }
    Ok(())
}

/// Builds the framework-free request view the core verifies: the target URI is this broker's
/// configured public origin plus the request's path and query, never the client's `Host`.
fn with_signed_parts<R>(
    state: &SharedState,
    parts: &Parts,
    f: impl FnOnce(&SignedRequestParts<'_>) -> Result<R, ApiError>,
) -> Result<R, ApiError> {
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let target_uri = format!("{}{}", state.public_origin, path_and_query);
    // Header values that are not UTF-8 cannot be part of a valid Latchkey signature; leaving
    // them out makes any signature that covers them fail.
    let owned: Vec<(&str, &str)> = parts
        .headers
        .iter()
        .filter_map(|(name, value)| value.to_str().ok().map(|v| (name.as_str(), v)))
        .collect();
    let signed = SignedRequestParts {
        method: parts.method.as_str(),
        target_uri: &target_uri,
        headers: &owned,
    };
    f(&signed)
}

fn signature_error(error: latchkey_core::httpsig::HttpSigError) -> ApiError {
    ApiError::new(ErrorCode::SignatureInvalid, format!("request signature rejected: {error}"))
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let json: &[u8] = if bytes.is_empty() { b"null" } else { bytes };
    serde_json::from_slice(json).map_err(|e| json_error(&e))
}

/// A JSON error for the client. serde_json quotes offending string values in some messages
/// ("invalid type: string \"...\"", "unknown variant `...`"); those are replaced by their
/// position so no submitted value is ever echoed into a response or log.
pub(crate) fn json_error(error: &serde_json::Error) -> ApiError {
    let text = error.to_string();
    let message = if text.contains('"') || text.contains("unknown variant") {
        format!(
            "invalid JSON body: wrong type or value at line {}, column {}",
            error.line(),
            error.column()
        )
    } else {
        format!("invalid JSON body: {text}")
    };
    ApiError::new(ErrorCode::BadRequest, message)
}
