//! Refreshing an expiring OAuth access token on the call path, and re-sealing the result under
//! the same record key so the member's capability keeps working.
//!
//! Authorization servers that rotate refresh tokens treat a second use of an old refresh token
//! as theft and revoke the whole grant (RFC 9700), so no two refreshers may present one refresh
//! token: not two calls on this replica, not two replicas, not the broker and a device.
//!
//! ```text
//! refresh            per-credential lock (this replica)
//!                    -> read the credential again: refreshed meanwhile and fresh? use that
//!                    -> take the credential's refresh lease in the database (store/leases.rs)
//!                       taken:  read again if its revision moved since; ask the token endpoint;
//!                               store the new pair by compare-and-swap on the envelope and give
//!                               the lease back in the same transaction (a refused refresh token
//!                               marks the credential reconnect needed, with the lease given back)
//!                       held:   by a device, another replica or an earlier call: the token in
//!                               hand is used if it has not actually expired (the 5-minute margin
//!                               means it usually has not); otherwise wait, outside the lock, for
//!                               the holder's result (polling the envelope) or the lease to come
//!                               free, at most HOLDER_WAIT; then `503 unavailable`, retryable
//! ```
//!
//! The stored envelope is replaced only if it is still the one this refresh started from
//! (compare-and-swap), so concurrent writers cannot lose a rotation either.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::header;
use bytes::Bytes;
use http_body_util::BodyExt as _;
use latchkey_core::envelope::Envelope;
use latchkey_core::ids::{CredentialId, LeaseId};
use latchkey_core::keys::RecordKey;
use latchkey_core::payload::{CredentialKind, CredentialPayload, OAuthRefresh};
use latchkey_core::secret::SecretBytes;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::open::REFRESH_MARGIN_SECS;
use crate::error::{ApiError, ErrorCode};
use crate::state::SharedState;
use crate::store::credentials::{CredentialRecord, EnvelopeSwap};
use crate::store::leases::{LeaseHolder, LeaseRefused, REFRESH_LEASE_SECS, TakenLease};
use crate::upstream::UpstreamBody;

/// Largest token endpoint response read.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

/// How long the token endpoint may take: well inside the refresh lease.
const TOKEN_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a call whose token has expired waits for someone else's refresh.
const HOLDER_WAIT: Duration = Duration::from_secs(5);

/// How often it looks for that refresh's result meanwhile.
const HOLDER_POLL: Duration = Duration::from_millis(250);

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

/// The credential's envelope as last read, and what it holds.
struct Current {
    envelope: Envelope,
    revision: u64,
    payload: CredentialPayload,
}

/// Returns a usable payload for `credential`, refreshing at the token endpoint if nobody else
/// has or is (see the module documentation).
pub(crate) async fn refresh(
    state: &SharedState,
    credential: &CredentialRecord,
    key: &RecordKey,
    payload: CredentialPayload,
    now: u64,
) -> Result<CredentialPayload, ApiError> {
    let lock = state.refresh_locks.lock_for(credential.id);
    let mut current =
        Current { envelope: credential.envelope.clone(), revision: credential.revision, payload };
    let deadline = tokio::time::Instant::now() + HOLDER_WAIT;
    loop {
        {
            let _guard = lock.lock().await;
            // Someone may have refreshed while this request waited for the lock or the lease.
            current = match reread(state, credential, key, current).await? {
                Reread::Fresh(payload) => return Ok(payload),
                Reread::Expiring(current) => current,
            };
            if !matches!(&current.payload.kind, CredentialKind::OAuth { refresh: Some(_), .. }) {
                return Ok(current.payload);
            }
            let taken = state
                .store
                .take_refresh_lease(
                    credential.workspace,
                    credential.id,
                    LeaseHolder::Broker,
                    REFRESH_LEASE_SECS,
                    now,
                )
                .await?;
            match taken {
                Ok(taken) => {
                    return refresh_leased(state, credential, key, current, taken, now).await;
                }
                Err(LeaseRefused::NotFound) => return Err(deleted()),
                Err(LeaseRefused::Held(held)) => {
                    tracing::debug!(credential = %credential.id, holder = ?held.holder, "refresh lease held elsewhere");
                }
            }
        }
        // Someone else is refreshing. The 5-minute margin means the token in hand usually still
        // works: use it rather than wait.
        if !expired(&current.payload, now) {
            return Ok(current.payload);
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(credential = %credential.id, "expired token still being refreshed elsewhere");
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                "the credential's access token has expired and is being refreshed elsewhere right now (by a member's device or another broker); retry in a few seconds",
            )
            .retry_after(2));
        }
        tokio::time::sleep(HOLDER_POLL).await;
    }
}

/// Holding the lease: refreshes at the token endpoint and stores the new pair, giving the lease
/// back on every path.
async fn refresh_leased(
    state: &SharedState,
    credential: &CredentialRecord,
    key: &RecordKey,
    current: Current,
    taken: TakenLease,
    now: u64,
) -> Result<CredentialPayload, ApiError> {
    let lease = taken.lease.id;
    let result = async {
        // A refresh stored (and its lease given back) between the read and the take moved the
        // revision: its refresh token is the live one now, and perhaps its access token is fresh.
        let current = if taken.revision == current.revision {
            current
        } else {
            match reread(state, credential, key, current).await? {
                Reread::Fresh(payload) => return Ok(Leased::Untouched(payload)),
                Reread::Expiring(current) => current,
            }
        };
        refresh_at_provider(state, credential, key, current, lease, now).await
    }
    .await;
    match result {
        Ok(Leased::Stored(payload)) => Ok(payload),
        Ok(Leased::Untouched(payload)) => {
            give_back(state, credential, lease).await;
            Ok(payload)
        }
        Err(error) => {
            // Given back already if the refusal was recorded; giving back twice changes nothing.
            give_back(state, credential, lease).await;
            Err(error)
        }
    }
}

/// What a leased refresh did with the lease.
enum Leased {
    /// Stored, and the lease given back in the same transaction.
    Stored(CredentialPayload),
    /// Nothing stored; the lease is still held.
    Untouched(CredentialPayload),
}

async fn refresh_at_provider(
    state: &SharedState,
    credential: &CredentialRecord,
    key: &RecordKey,
    current: Current,
    lease: LeaseId,
    now: u64,
) -> Result<Leased, ApiError> {
    let Current { envelope: previous, payload, .. } = current;
    let CredentialKind::OAuth { refresh: Some(refresh), .. } = &payload.kind else {
        return Ok(Leased::Untouched(payload));
    };
    let tokens = match request_tokens(state, refresh).await {
        Ok(tokens) => tokens,
        Err(TokenFailure::Refused(error)) => {
            // Never silently broken: the credential says it needs reconnecting, unless someone
            // stored another envelope meanwhile (then this refusal is not about it).
            let marked = state
                .store
                .mark_refresh_refused(
                    credential.workspace,
                    credential.id,
                    &previous,
                    Some(lease),
                    now,
                )
                .await?;
            if marked {
                tracing::warn!(credential = %credential.id, "refresh refused by the provider; marked reconnect needed");
            }
            return Err(error);
        }
        Err(TokenFailure::Failed(error)) => return Err(error),
    };
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
    let change = EnvelopeSwap { previous: &previous, next: &next, expires_hint, now };
    let swapped = state
        .store
        .replace_envelope(credential.workspace, credential.id, change, Some(lease))
        .await?;
    if !swapped {
        // Someone wrote the credential without its refresh lease (a reconnect) between the read
        // and the write. The refreshed token is valid and is used for this call; the stored one
        // is theirs.
        tracing::warn!(credential = %credential.id, "credential replaced during the refresh; kept theirs");
    }
    tracing::info!(credential = %credential.id, "refreshed an OAuth access token");
    Ok(Leased::Stored(refreshed))
}

/// What reading the credential again found.
enum Reread {
    /// Someone stored a new envelope whose token is not expiring.
    Fresh(CredentialPayload),
    /// The token (the one in hand, or the one stored meanwhile) still needs refreshing.
    Expiring(Current),
}

/// Reads the credential again and opens its envelope if it is not the one in hand.
async fn reread(
    state: &SharedState,
    credential: &CredentialRecord,
    key: &RecordKey,
    known: Current,
) -> Result<Reread, ApiError> {
    let stored =
        state.store.credential(credential.workspace, credential.id).await?.ok_or_else(deleted)?;
    if stored.envelope == known.envelope {
        return Ok(Reread::Expiring(Current { revision: stored.revision, ..known }));
    }
    let reopened = stored.envelope.open(key).map_err(|_| {
        ApiError::new(
            ErrorCode::CapabilityInvalid,
            "capability refused: the credential changed; issue a new capability",
        )
    })?;
    let payload = CredentialPayload::decode(reopened.expose_secret()).map_err(|e| {
        ApiError::new(
            ErrorCode::UpstreamFailed,
            format!("the stored credential is unusable ({e}); reconnect it"),
        )
    })?;
    if !expiring(&payload, state.now()) {
        return Ok(Reread::Fresh(payload));
    }
    Ok(Reread::Expiring(Current { envelope: stored.envelope, revision: stored.revision, payload }))
}

/// Gives the broker's lease back after a refresh that stored nothing (logged if it fails: the
/// lease then lapses on its own).
async fn give_back(state: &SharedState, credential: &CredentialRecord, lease: LeaseId) {
    let released = state
        .store
        .release_refresh_lease(credential.workspace, credential.id, lease, LeaseHolder::Broker)
        .await;
    if let Err(error) = released {
        tracing::warn!(credential = %credential.id, %error, "could not give a refresh lease back; it lapses on its own");
    }
}

fn deleted() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "the credential was deleted during the call")
}

fn expiring(payload: &CredentialPayload, now: u64) -> bool {
    matches!(&payload.kind, CredentialKind::OAuth { expires_at: Some(e), .. } if e.saturating_sub(REFRESH_MARGIN_SECS) <= now)
}

/// Past its expiry (not just inside the refresh margin).
fn expired(payload: &CredentialPayload, now: u64) -> bool {
    matches!(&payload.kind, CredentialKind::OAuth { expires_at: Some(e), .. } if *e <= now)
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

/// Why the token endpoint gave no tokens.
enum TokenFailure {
    /// It refused the refresh token (`invalid_grant`): the grant is gone, reconnecting is the
    /// only way back.
    Refused(ApiError),
    /// Anything else (unreachable, another error, an unusable answer): retrying may work.
    Failed(ApiError),
}

impl From<ApiError> for TokenFailure {
    fn from(error: ApiError) -> Self {
        TokenFailure::Failed(error)
    }
}

async fn request_tokens(
    state: &SharedState,
    refresh: &OAuthRefresh,
) -> Result<TokenResponse, TokenFailure> {
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
    // Sized up front so the text holding the refresh token is never reallocated (and so never
    // left behind in a freed buffer); the body owns it and zeroizes it when hyper is done.
    let capacity = form.iter().map(|(k, v)| k.len() + 3 * v.len() + 2).sum();
    let mut encoded = Zeroizing::new(String::with_capacity(capacity));
    url::form_urlencoded::Serializer::new(&mut *encoded).extend_pairs(&form).finish();
    let uri: axum::http::Uri = refresh.token_endpoint.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::UpstreamFailed,
            "the credential's token endpoint is not a valid URL; reconnect the credential",
        )
    })?;
    let request = axum::http::Request::post(uri)
        .header(header::ACCEPT, "application/json")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(Bytes::from_owner(Zeroizing::new(
            std::mem::take(&mut *encoded).into_bytes(),
        ))))
        .map_err(|e| ApiError::internal(&e))?;
    let exchange = async {
        let response = state.upstream.send(request).await.map_err(|e| {
            tracing::warn!(error = %e, "token endpoint unreachable");
            ApiError::new(ErrorCode::UpstreamFailed, e.explain("the provider's token endpoint"))
        })?;
        let status = response.status();
        Ok::<_, ApiError>((status, read_limited(response.into_body()).await?))
    };
    let (status, body) = tokio::time::timeout(TOKEN_REQUEST_TIMEOUT, exchange).await.map_err(|_| {
        tracing::warn!("token endpoint did not answer in time");
        ApiError::new(
            ErrorCode::UpstreamFailed,
            "the provider's token endpoint did not answer in time to refresh the credential; retry later",
        )
    })??;
    if !status.is_success() {
        let code = serde_json::from_slice::<TokenError>(&body).map(|e| e.error).unwrap_or_default();
        tracing::warn!(status = status.as_u16(), error = %code, "token refresh refused");
        if code == "invalid_grant" {
            return Err(TokenFailure::Refused(ApiError::new(
                ErrorCode::UpstreamFailed,
                "the provider refused the credential's refresh token; its owner must reconnect it in the Latchkey app",
            )));
        }
        return Err(TokenFailure::Failed(ApiError::new(
            ErrorCode::UpstreamFailed,
            "the provider's token endpoint refused to refresh the credential; retry later or reconnect it",
        )));
    }
    Ok(serde_json::from_slice(&body).map_err(|_| {
        ApiError::new(
            ErrorCode::UpstreamFailed,
            "the provider's token endpoint answered without a usable access token",
        )
    })?)
}

async fn read_limited(mut body: UpstreamBody) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    let mut read = Zeroizing::new(Vec::new());
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err(ApiError::new(
                ErrorCode::UpstreamFailed,
                "the token endpoint's answer was cut off",
            ));
        };
        let Some(chunk) = frame.data_ref() else { continue };
        if read.len() + chunk.len() > MAX_TOKEN_RESPONSE {
            return Err(ApiError::new(
                ErrorCode::UpstreamFailed,
                "the token endpoint's answer is too large",
            ));
        }
        read.extend_from_slice(chunk);
    }
    Ok(read)
}
