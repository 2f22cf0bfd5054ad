//! Refreshing an expiring OAuth access token on the call path, and re-sealing the result under
//! the same record key so the member's capability keeps working.
//!
//! Refreshes of one credential are serialised: authorization servers that rotate refresh tokens
//! treat a second use of an old refresh token as theft and revoke the whole grant. Inside the
//! lock the stored envelope is read again; if another request refreshed it meanwhile, that result
//! is used instead of refreshing again. The stored envelope is replaced only if it is still the
//! one this refresh started from (compare-and-swap), so concurrent writers cannot lose a rotation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use latchkey_core::envelope::Envelope;
use latchkey_core::ids::CredentialId;
use latchkey_core::keys::RecordKey;
use latchkey_core::payload::{CredentialKind, CredentialPayload, OAuthRefresh};
use latchkey_core::secret::SecretBytes;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::open::REFRESH_MARGIN_SECS;
use crate::error::{ApiError, ErrorCode};
use crate::state::SharedState;
use crate::store::credentials::CredentialRecord;

/// Largest token endpoint response read.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

/// One async lock per credential being refreshed in this process.
#[derive(Debug, Default)]
pub(crate) struct RefreshLocks(Mutex<HashMap<CredentialId, Arc<tokio::sync::Mutex<()>>>>);

impl RefreshLocks {
    fn lock_for(&self, credential: CredentialId) -> Arc<tokio::sync::Mutex<()>> {
        // A poisoned map only means another thread panicked while inserting; the map is still valid.
        let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|_, lock| Arc::strong_count(lock) > 1);
        map.entry(credential).or_default().clone()
    }
}

/// Returns a fresh payload for `credential`, refreshing at the token endpoint if nobody else has.
pub(crate) async fn refresh(
    state: &SharedState,
    credential: &CredentialRecord,
    key: &RecordKey,
    payload: CredentialPayload,
    now: u64,
) -> Result<CredentialPayload, ApiError> {
    let lock = state.refresh_locks.lock_for(credential.id);
    let _guard = lock.lock().await;

    // Someone may have refreshed while this request waited for the lock.
    let current = state
        .store
        .credential_by_name(credential.workspace, &credential.name)
        .await?
        .filter(|c| c.id == credential.id)
        .ok_or_else(|| {
            ApiError::new(ErrorCode::NotFound, "the credential was deleted during the call")
        })?;
    let (previous, payload) = if current.envelope == credential.envelope {
        (current.envelope, payload)
    } else {
        let reopened = current.envelope.open(key).map_err(|_| {
            ApiError::new(
                ErrorCode::CapabilityInvalid,
                "capability refused: the credential changed; issue a new capability",
            )
        })?;
        let reopened = CredentialPayload::decode(reopened.expose_secret()).map_err(|e| {
            ApiError::new(
                ErrorCode::UpstreamFailed,
                format!("the stored credential is unusable ({e}); reconnect it"),
            )
        })?;
        if !expiring(&reopened, now) {
            return Ok(reopened);
        }
        (current.envelope, reopened)
    };

    let CredentialKind::OAuth { refresh: Some(refresh), .. } = &payload.kind else {
        return Ok(payload);
    };
    let tokens = request_tokens(state, refresh).await?;
    let refreshed = CredentialPayload {
        kind: CredentialKind::OAuth {
            expires_at: tokens.expires_in.map(|secs| now.saturating_add(secs)),
            refresh: Some(OAuthRefresh {
                refresh_token: tokens.refresh_token.map_or_else(
                    || SecretBytes::copy_from(refresh.refresh_token.expose_secret()),
                    |t| SecretBytes::copy_from(t.as_bytes()),
                ),
                token_endpoint: refresh.token_endpoint.clone(),
                client_id: refresh.client_id.clone(),
                client_secret: refresh
                    .client_secret
                    .as_ref()
                    .map(|s| SecretBytes::copy_from(s.expose_secret())),
            }),
        },
        injection: payload.injection.clone(),
        secret: SecretBytes::copy_from(tokens.access_token.as_bytes()),
    };
    let encoded = refreshed.encode().map_err(|e| {
        ApiError::new(ErrorCode::UpstreamFailed, format!("the refreshed token is unusable ({e})"))
    })?;
    let next = Envelope::seal(key, &encoded).map_err(|e| ApiError::internal(&e))?;
    let expires_hint = match &refreshed.kind {
        CredentialKind::OAuth { expires_at, .. } => *expires_at,
        CredentialKind::ApiKey => None,
    };
    let swapped = state
        .store
        .replace_envelope(credential.workspace, credential.id, &previous, &next, expires_hint, now)
        .await?;
    if !swapped {
        // Another replica replaced the envelope between our read and our write. The refreshed
        // token is valid and is used for this call; the stored one is theirs.
        tracing::warn!(credential = %credential.id, "concurrent refresh on another replica; kept theirs");
    }
    tracing::info!(credential = %credential.id, "refreshed an OAuth access token");
    Ok(refreshed)
}

fn expiring(payload: &CredentialPayload, now: u64) -> bool {
    matches!(&payload.kind, CredentialKind::OAuth { expires_at: Some(e), .. } if e.saturating_sub(REFRESH_MARGIN_SECS) <= now)
}

/// A token endpoint's successful answer (RFC 6749 §5.1). Secret fields are zeroized on drop.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: Zeroizing<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    refresh_token: Option<Zeroizing<String>>,
}

/// An error answer (RFC 6749 §5.2).
#[derive(Deserialize)]
struct TokenError {
    error: String,
}

async fn request_tokens(
    state: &SharedState,
    refresh: &OAuthRefresh,
) -> Result<TokenResponse, ApiError> {
    let refresh_token =
        std::str::from_utf8(refresh.refresh_token.expose_secret()).map_err(|_| {
            ApiError::new(
                ErrorCode::UpstreamFailed,
                "the stored refresh token is not text; reconnect the credential",
            )
        })?;
    let mut form: Vec<(&str, &str)> = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", &refresh.client_id),
    ];
    let secret;
    if let Some(client_secret) = &refresh.client_secret {
        secret =
            Zeroizing::new(String::from_utf8_lossy(client_secret.expose_secret()).into_owned());
        form.push(("client_secret", secret.as_str()));
    }
    let response = state
        .upstream
        .post(&refresh.token_endpoint)
        .header("accept", "application/json")
        .form(&form)
        .send()
        .await
        .map_err(|e| {
            tracing::warn!(error = %e.without_url(), "token endpoint unreachable");
            ApiError::new(ErrorCode::UpstreamFailed, "the provider's token endpoint could not be reached to refresh the credential; retry later")
        })?;
    let status = response.status();
    let body = read_limited(response).await?;
    if !status.is_success() {
        let code = serde_json::from_slice::<TokenError>(&body).map(|e| e.error).unwrap_or_default();
        tracing::warn!(status = status.as_u16(), error = %code, "token refresh refused");
        let message = if code == "invalid_grant" {
            "the provider refused the credential's refresh token; its owner must reconnect it in the Latchkey app"
        } else {
            "the provider's token endpoint refused to refresh the credential; retry later or reconnect it"
        };
        return Err(ApiError::new(ErrorCode::UpstreamFailed, message));
    }
    serde_json::from_slice(&body).map_err(|_| {
        ApiError::new(
            ErrorCode::UpstreamFailed,
            "the provider's token endpoint answered without a usable access token",
        )
    })
}

async fn read_limited(mut response: reqwest::Response) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    let mut body = Zeroizing::new(Vec::new());
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_TOKEN_RESPONSE {
                    return Err(ApiError::new(
                        ErrorCode::UpstreamFailed,
                        "the token endpoint's answer is too large",
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(_) => {
                return Err(ApiError::new(
                    ErrorCode::UpstreamFailed,
                    "the token endpoint's answer was cut off",
                ));
            }
        }
    }
}
