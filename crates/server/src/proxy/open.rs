//! The one path on which the broker decrypts a credential: a verified capability yields the
//! record key, the record key opens the envelope, the credential is injected into one upstream
//! request and dropped (zeroized) when the request has been sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::Request;
use axum::response::Response;
use latchkey_core::envelope::Envelope;
use latchkey_core::keys::RecordKey;
use latchkey_core::payload::{CredentialKind, CredentialPayload};
use url::Url;
use zeroize::Zeroizing;

use super::{forward, refresh};
use crate::error::{ApiError, ErrorCode};
use crate::state::SharedState;
use crate::store::credentials::CredentialRecord;

/// Refresh an OAuth access token when it expires within this many seconds.
pub(crate) const REFRESH_MARGIN_SECS: u64 = 5 * 60;

/// Opens the credential with the record key a capability carried, refreshes it if needed, and
/// forwards. The record key comes only from a `VerifiedCapability` (now, or cached from an
/// earlier call for the same standing capability), so claims, time and signature were checked;
/// the caller has also checked replay and revocation, evaluated policy and committed the audit
/// record.
pub(crate) async fn open_and_forward(
    state: &SharedState,
    record_key: &RecordKey,
    credential: &CredentialRecord,
    mut url: Url,
    request: Request,
    now: u64,
) -> Result<Response, ApiError> {
    let mut payload = open_envelope(&credential.envelope, record_key)?;

    if needs_refresh(&payload, now) {
        payload = refresh::refresh(state, credential, record_key, payload, now).await?;
    }

    forward::inject_query(&mut url, &payload.injection, &payload.secret)?;
    let (parts, body) = request.into_parts();
    let mut headers =
        forward::upstream_headers(&parts.headers, &payload.injection, &payload.secret)?;
    // A declared length is passed on (the caller refused one over the limit before anything was
    // decrypted), so the upstream receives the body as the agent framed it rather than chunked;
    // some APIs answer 411 to chunked bodies. A body without one is counted as it streams.
    if let Some(length) = parts.headers.get(axum::http::header::CONTENT_LENGTH) {
        headers.insert(axum::http::header::CONTENT_LENGTH, length.clone());
    }
    let too_large = Arc::new(AtomicBool::new(false));
    let body = forward::request_body(body, too_large.clone());

    // Everything that could echo back: the secret as sent and, for OAuth, the refresh token.
    let mut secrets = vec![Zeroizing::new(payload.secret.expose_secret().to_vec())];
    if let CredentialKind::OAuth { refresh: Some(r), .. } = &payload.kind {
        secrets.push(Zeroizing::new(r.refresh_token.expose_secret().to_vec()));
    }
    let mut upstream = axum::http::Request::new(body);
    *upstream.method_mut() = parts.method;
    *upstream.headers_mut() = headers;
    *upstream.uri_mut() = url.as_str().parse().map_err(|_| {
        ApiError::new(ErrorCode::BadRequest, "the request path does not form a valid upstream URL")
    })?;
    let sent = state.upstream.send(upstream).await;
    // The payload (and with it the plaintext credential) is dropped and zeroized here; only the
    // redactor's copies live on, for as long as the response streams.
    drop(payload);
    match sent {
        Ok(upstream) => Ok(forward::agent_response(upstream, secrets)),
        Err(_) if too_large.load(Ordering::SeqCst) => Err(body_too_large()),
        Err(e) => {
            // The error names neither the URL (its query may hold the credential) nor headers.
            tracing::warn!(error = %e, timeout = e.is_timeout(), "upstream request failed");
            let message = e.explain("the upstream API");
            Err(ApiError::new(ErrorCode::UpstreamFailed, message))
        }
    }
}

fn open_envelope(envelope: &Envelope, key: &RecordKey) -> Result<CredentialPayload, ApiError> {
    let plaintext = envelope.open(key).map_err(|_| {
        ApiError::new(
            ErrorCode::CapabilityInvalid,
            "capability refused: its key does not open this credential; issue a new capability",
        )
    })?;
    CredentialPayload::decode(plaintext.expose_secret()).map_err(|e| {
        ApiError::new(
            ErrorCode::UpstreamFailed,
            format!("the stored credential is unusable ({e}); reconnect it"),
        )
    })
}

fn needs_refresh(payload: &CredentialPayload, now: u64) -> bool {
    matches!(
        &payload.kind,
        CredentialKind::OAuth { expires_at: Some(expires), refresh: Some(_) }
            if expires.saturating_sub(REFRESH_MARGIN_SECS) <= now
    )
}

pub(crate) fn body_too_large() -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("request body larger than {} bytes", forward::MAX_REQUEST_BODY),
    )
}
