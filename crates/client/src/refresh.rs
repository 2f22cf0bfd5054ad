//! Refreshing OAuth access tokens on the device, before they expire, while the device is online.
//!
//! The broker refreshes a token itself when an agent's call finds it expiring within five
//! minutes (`crates/server/src/proxy/refresh.rs`). A device refreshes too: so a connection
//! nobody called for a while does not lose its grant (rotating refresh tokens expire as well),
//! so the desktop app can keep its connections fresh in the background, and so a person sees
//! at once that a provider refused a connection.
//!
//! ```text
//! refresh_if_needed  per-credential lock (this process)
//!                    -> metadata (revision R), then envelope -> opened on this device
//!                    -> fresh beyond the buffer (and not forced): nothing to do
//!                    -> refresh at the token endpoint (client auth as at connect)
//!                    -> new access token and rotated refresh token sealed under the same record
//!                       key, swapped at the broker only if the revision is still R
//! refresh_all        the same for every OAuth credential this member can see, one outcome each
//! ```
//!
//! # Rotation, atomically
//!
//! A provider that rotates refresh tokens kills the old one when it issues the new one, and
//! treats a second use of the old one as theft (it revokes the grant). The new pair is therefore
//! sealed into one envelope and stored with the broker's compare-and-swap on the credential's
//! revision: either the new pair is stored, or nothing changed. The metadata (with its revision)
//! is read before the envelope, so an envelope newer than the revision makes the swap fail
//! rather than overwrite.
//!
//! If the swap fails (`409 conflict`), someone else wrote the credential after it was read: the
//! broker refreshing it during a call, another device, a rename. The credential is read again:
//! if its refresh token is still the one this refresh presented, the change did not touch the
//! tokens and the new pair is swapped in at the new revision; otherwise the other writer
//! refreshed, its pair is kept, and this one is dropped.
//!
//! # Concurrency
//!
//! Within one process, refreshes of one credential are serialised by an async lock keyed by the
//! credential id; a refresh that waited while another one completed uses that one's result and
//! does not ask the provider again. Across processes and devices (and the broker) the revision
//! compare-and-swap is the guard: it cannot stop two processes from presenting the same refresh
//! token at once (a rotating provider may then revoke the grant, which shows as "reconnect
//! needed"), but it never lets one overwrite a rotation another has stored.
//!
//! A refresh the provider refuses (`invalid_grant`: expired, revoked, or killed by reuse
//! detection) marks the credential `reconnect_needed` at the broker, so nobody is left with a
//! connection that silently stopped working, and the error says to reconnect.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use latchkey_core::ids::{CredentialId, Owner};
use latchkey_core::payload::{CredentialKind, CredentialPayload, OAuthRefresh};
use latchkey_core::secret::SecretBytes;
use serde::Serialize;
use url::Url;

use crate::access::{
    AccessError, SecretReplacement, SignedIn, find_credential, record_key, replace_secret,
};
use crate::api::{CredentialInfo, CredentialStatus, Role, codes};
use crate::catalog::{Catalog, ClientAuth};
use crate::keychain::SharedKeyStore;
use crate::oauth::{OAuthClient, OAuthEndpoints, OAuthError, OAuthHttp};
use crate::profile::Profile;
use crate::workspace::signed_in;

/// How long before its expiry an access token is refreshed by default: five minutes, as the
/// broker does on the call path.
pub const DEFAULT_BUFFER: Duration = Duration::from_secs(5 * 60);

/// How often a swap is tried again after a conflict that left the tokens untouched.
const MAX_SWAPS: usize = 3;

/// When to refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshOptions {
    /// Refresh if the access token expires within this time. A token whose expiry the
    /// provider did not say is refreshed only when forced.
    pub buffer: Duration,
    /// Refresh even if the access token is fresh.
    pub force: bool,
}

impl Default for RefreshOptions {
    fn default() -> Self {
        Self { buffer: DEFAULT_BUFFER, force: false }
    }
}

/// What a refresh did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RefreshAction {
    /// This device refreshed the token at the provider and stored the new pair.
    Refreshed,
    /// The token expires later than the buffer: nothing was done.
    Fresh,
    /// Another refresh (in this process, the broker, or another device) stored a new token
    /// meanwhile; it was kept, and the provider was not asked again.
    RefreshedElsewhere,
}

/// The result of a refresh that did not fail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefreshOutcome {
    /// What was done.
    pub action: RefreshAction,
    /// The credential's metadata as the broker has it now.
    pub credential: CredentialInfo,
    /// When the stored access token expires (unix seconds), if the provider said.
    pub expires_at: Option<u64>,
}

/// A refresh failed. Messages say what to do next; none holds a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RefreshError {
    /// The profile, the key store or the broker failed.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// The credential is an API key.
    #[error("{0:?} is an API key: there is nothing to refresh")]
    NothingToRefresh(String),
    /// The OAuth credential was stored without a refresh token.
    #[error(
        "{0:?} has no refresh token (the provider gave none): it cannot be refreshed; run `latchkey reconnect {0}` when it expires"
    )]
    NoRefreshToken(String),
    /// The provider refused the refresh token; the credential is marked reconnect needed.
    #[error(
        "the provider no longer accepts the refresh token of {0:?}; it is marked \"reconnect needed\": run `latchkey reconnect {0}`"
    )]
    ReconnectNeeded(String),
    /// The token endpoint could not be used (unreachable, an error other than a refused grant).
    #[error("refreshing {name:?} failed: {source}")]
    OAuth {
        /// The credential's name.
        name: String,
        /// What failed.
        #[source]
        source: OAuthError,
    },
    /// A shared credential and this member is not an admin: the broker would refuse to store
    /// the new tokens, and the provider would already have rotated the refresh token.
    #[error(
        "only a workspace admin can refresh the shared credential {0:?}; the broker refreshes it when agents call it, or ask an admin"
    )]
    NotAllowed(String),
    /// The credential kept changing while it was being refreshed.
    #[error("{0:?} kept changing at the broker while it was refreshed; try again")]
    Contended(String),
}

/// Refreshes the OAuth credential named `name` if its access token expires within
/// `options.buffer` (or `options.force`), opened and re-sealed on this device. See the module
/// documentation for how rotation and concurrency are handled.
pub async fn refresh_if_needed(
    profile: &Profile,
    store: &SharedKeyStore,
    name: &str,
    options: RefreshOptions,
) -> Result<RefreshOutcome, RefreshError> {
    let device = signed_in(profile, store).await.map_err(AccessError::from)?;
    let credential = find_credential(&device.2, name).await?;
    let admin = credential.owner == Owner::Shared && is_admin(&device).await?;
    let http = OAuthHttp::new()
        .map_err(|source| RefreshError::OAuth { name: credential.name.clone(), source })?;
    let target = Target { id: credential.id, name: &credential.name, admin };
    refresh_credential(store, &device, &http, &target, options).await
}

/// One credential's outcome in [`refresh_all`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RefreshReport {
    /// Refreshed by this device now.
    Refreshed {
        /// The credential.
        credential: CredentialInfo,
        /// The new token's expiry (unix seconds), if the provider said.
        expires_at: Option<u64>,
    },
    /// Fresh: refreshed by nobody, or by someone else meanwhile.
    Fresh {
        /// The credential.
        credential: CredentialInfo,
        /// The stored token's expiry (unix seconds), if known.
        expires_at: Option<u64>,
    },
    /// The provider refused its refresh token (now or before): its owner must reconnect it.
    ReconnectNeeded {
        /// The credential.
        credential: CredentialInfo,
    },
    /// Stored without a refresh token: it will need a reconnect when it expires.
    NoRefreshToken {
        /// The credential.
        credential: CredentialInfo,
    },
    /// The refresh failed for another reason (provider unreachable, missing key, ...).
    Failed {
        /// The credential.
        credential: CredentialInfo,
        /// Why, without any token.
        reason: String,
    },
}

/// Refreshes every OAuth credential this member may change (shared ones for admins, their own
/// personal ones) whose access token expires within `buffer`, one after the other, and reports
/// each (API keys are left out). Credentials already
/// marked reconnect needed are reported without asking the provider again. For the desktop app
/// to call periodically while online; only the profile, key store or broker failing as a whole
/// is an error.
pub async fn refresh_all(
    profile: &Profile,
    store: &SharedKeyStore,
    buffer: Duration,
) -> Result<Vec<RefreshReport>, RefreshError> {
    let device = signed_in(profile, store).await.map_err(AccessError::from)?;
    let credentials = device.2.credentials().await.map_err(AccessError::from)?;
    let admin = is_admin(&device).await?;
    let http = OAuthHttp::new()
        .map_err(|source| RefreshError::OAuth { name: "the connections".to_owned(), source })?;
    let options = RefreshOptions { buffer, force: false };
    let mut reports = Vec::new();
    for credential in credentials {
        if credential.owner == Owner::Shared && !admin {
            continue;
        }
        if credential.status == CredentialStatus::ReconnectNeeded {
            reports.push(RefreshReport::ReconnectNeeded { credential });
            continue;
        }
        let target = Target { id: credential.id, name: &credential.name, admin };
        let result = refresh_credential(store, &device, &http, &target, options).await;
        let report = match result {
            Ok(outcome) if outcome.action == RefreshAction::Refreshed => RefreshReport::Refreshed {
                credential: outcome.credential,
                expires_at: outcome.expires_at,
            },
            Ok(outcome) => RefreshReport::Fresh {
                credential: outcome.credential,
                expires_at: outcome.expires_at,
            },
            Err(RefreshError::NothingToRefresh(_)) => continue,
            Err(RefreshError::NoRefreshToken(_)) => RefreshReport::NoRefreshToken { credential },
            Err(RefreshError::ReconnectNeeded(_)) => {
                let credential = device.2.credential(credential.id).await.unwrap_or(credential);
                RefreshReport::ReconnectNeeded { credential }
            }
            Err(e) => RefreshReport::Failed { credential, reason: e.to_string() },
        };
        reports.push(report);
    }
    Ok(reports)
}

/// One lock per credential being refreshed in this process, and a count of the refreshes it
/// completed (so a refresh that waited can tell that another one finished meanwhile).
#[derive(Default)]
struct Slot {
    lock: tokio::sync::Mutex<()>,
    completed: AtomicU64,
}

fn slot_for(credential: CredentialId) -> Arc<Slot> {
    static SLOTS: OnceLock<Mutex<HashMap<CredentialId, Arc<Slot>>>> = OnceLock::new();
    let slots = SLOTS.get_or_init(Mutex::default);
    // A poisoned map only means another thread panicked while inserting; the map is still valid.
    let mut map = slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    map.retain(|_, slot| Arc::strong_count(slot) > 1);
    Arc::clone(map.entry(credential).or_default())
}

/// The credential as read: metadata first (its revision), then the envelope opened here.
struct Stored {
    info: CredentialInfo,
    key_version: latchkey_core::ids::KeyVersion,
    payload: CredentialPayload,
}

impl Stored {
    fn expires_at(&self) -> Option<u64> {
        match &self.payload.kind {
            CredentialKind::OAuth { expires_at, .. } => *expires_at,
            CredentialKind::ApiKey => None,
        }
    }

    fn refresh_token(&self) -> Option<&SecretBytes> {
        match &self.payload.kind {
            CredentialKind::OAuth { refresh: Some(r), .. } => Some(&r.refresh_token),
            _ => None,
        }
    }
}

async fn read(
    store: &SharedKeyStore,
    (config, _, client): &SignedIn,
    id: CredentialId,
) -> Result<Stored, RefreshError> {
    // The metadata before the envelope: an envelope written after this read makes the swap at
    // this revision fail instead of overwriting it.
    let info = client.credential(id).await.map_err(AccessError::from)?;
    let (key_version, envelope) =
        client.credential_envelope(id).await.map_err(AccessError::from)?;
    let key = record_key(store, config, info.owner, key_version, id).await?;
    let plaintext = envelope.open(&key).map_err(AccessError::from)?;
    let payload =
        CredentialPayload::decode(plaintext.expose_secret()).map_err(AccessError::from)?;
    Ok(Stored { info, key_version, payload })
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn expiring(expires_at: Option<u64>, buffer: Duration) -> bool {
    expires_at.is_some_and(|e| e.saturating_sub(buffer.as_secs()) <= unix_now())
}

/// Whether this member is an admin now (only admins may change shared credentials).
async fn is_admin(device: &SignedIn) -> Result<bool, RefreshError> {
    let me = device.2.me().await.map_err(AccessError::from)?;
    Ok(me.role == Role::Admin)
}

/// Which credential to refresh, and whether this member is an admin.
struct Target<'a> {
    id: CredentialId,
    name: &'a str,
    admin: bool,
}

fn is_conflict(error: &AccessError) -> bool {
    matches!(error, AccessError::Broker(e) if e.api().is_some_and(|e| e.is(codes::CONFLICT)))
}

async fn refresh_credential(
    store: &SharedKeyStore,
    device: &SignedIn,
    http: &OAuthHttp,
    target: &Target<'_>,
    options: RefreshOptions,
) -> Result<RefreshOutcome, RefreshError> {
    let (id, name) = (target.id, target.name);
    let slot = slot_for(id);
    let seen = slot.completed.load(Ordering::Acquire);
    let _guard = slot.lock.lock().await;
    let mut stored = read(store, device, id).await?;
    check_refreshable(&stored, name)?;
    // Checked before the provider is asked: a refresh token rotated there and then refused
    // here would be lost.
    if stored.info.owner == Owner::Shared && !target.admin {
        return Err(RefreshError::NotAllowed(name.to_owned()));
    }
    if slot.completed.load(Ordering::Acquire) != seen {
        // Another refresh in this process completed while this one waited: its token is as
        // new as this one's would be.
        let expires_at = stored.expires_at();
        return Ok(RefreshOutcome {
            action: RefreshAction::RefreshedElsewhere,
            credential: stored.info,
            expires_at,
        });
    }
    let mut force = options.force;
    if stored.info.status == CredentialStatus::ReconnectNeeded && !force {
        return Err(RefreshError::ReconnectNeeded(name.to_owned()));
    }
    for _ in 0..MAX_SWAPS {
        if !force && !expiring(stored.expires_at(), options.buffer) {
            let expires_at = stored.expires_at();
            return Ok(RefreshOutcome {
                action: RefreshAction::Fresh,
                credential: stored.info,
                expires_at,
            });
        }
        let CredentialKind::OAuth { refresh: Some(refresh), .. } = &stored.payload.kind else {
            return Err(RefreshError::NoRefreshToken(name.to_owned()));
        };
        let tokens = match request(http, &stored.info, refresh).await {
            Ok(tokens) => tokens,
            Err(OAuthError::ReconnectNeeded) => {
                let marked = device
                    .2
                    .set_credential_status(
                        id,
                        CredentialStatus::ReconnectNeeded,
                        Some(stored.info.revision),
                    )
                    .await
                    .map_err(AccessError::from);
                match marked {
                    Ok(_) => {
                        tracing::warn!(credential = %id, "refresh refused by the provider; marked reconnect needed");
                        return Err(RefreshError::ReconnectNeeded(name.to_owned()));
                    }
                    Err(e) if is_conflict(&e) => {
                        // Someone wrote the credential after it was read (perhaps a refresh
                        // that rotated the token this one presented): judge what is stored now.
                        stored = read(store, device, id).await?;
                        check_refreshable(&stored, name)?;
                        force = false;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Err(source) => return Err(RefreshError::OAuth { name: name.to_owned(), source }),
        };
        let presented = SecretBytes::copy_from(refresh.refresh_token.expose_secret());
        let expires_at = tokens.expires_at;
        let payload = CredentialPayload {
            kind: CredentialKind::OAuth {
                expires_at,
                refresh: Some(OAuthRefresh {
                    // `oauth::refresh` returns the presented token again when the provider did
                    // not rotate it.
                    refresh_token: tokens
                        .refresh_token
                        .unwrap_or_else(|| SecretBytes::copy_from(presented.expose_secret())),
                    token_endpoint: refresh.token_endpoint.clone(),
                    client_id: refresh.client_id.clone(),
                    client_secret: refresh
                        .client_secret
                        .as_ref()
                        .map(|s| SecretBytes::copy_from(s.expose_secret())),
                }),
            },
            injection: stored.payload.injection.clone(),
            secret: tokens.access_token,
        };
        // Swapped in at the revision read; on a conflict that left the tokens as they were
        // (a rename, a status change), again at the new revision.
        let mut base = stored;
        for _ in 0..MAX_SWAPS {
            match swap(store, device, &base, &payload, expires_at).await {
                Ok(updated) => {
                    slot.completed.fetch_add(1, Ordering::AcqRel);
                    tracing::info!(credential = %id, revision = updated.revision, "refreshed an OAuth access token on this device");
                    return Ok(RefreshOutcome {
                        action: RefreshAction::Refreshed,
                        credential: updated,
                        expires_at,
                    });
                }
                Err(e) if is_conflict(&e) => {
                    base = read(store, device, id).await?;
                    check_refreshable(&base, name)?;
                    let untouched = base
                        .refresh_token()
                        .is_some_and(|t| t.expose_secret() == presented.expose_secret());
                    if !untouched {
                        // Someone else refreshed: theirs is stored, this pair is dropped.
                        tracing::info!(credential = %id, "refreshed concurrently elsewhere; kept the stored token");
                        let expires_at = base.expires_at();
                        return Ok(RefreshOutcome {
                            action: RefreshAction::RefreshedElsewhere,
                            credential: base.info,
                            expires_at,
                        });
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        return Err(RefreshError::Contended(name.to_owned()));
    }
    Err(RefreshError::Contended(name.to_owned()))
}

fn check_refreshable(stored: &Stored, name: &str) -> Result<(), RefreshError> {
    match &stored.payload.kind {
        CredentialKind::ApiKey => Err(RefreshError::NothingToRefresh(name.to_owned())),
        CredentialKind::OAuth { refresh: None, .. } => {
            Err(RefreshError::NoRefreshToken(name.to_owned()))
        }
        CredentialKind::OAuth { refresh: Some(_), .. } => Ok(()),
    }
}

/// Seals `payload` under the record key of `base`'s key version and replaces the stored
/// envelope if the revision is still `base`'s. A credential marked reconnect needed that could
/// be refreshed after all is active again; any other status is kept.
async fn swap(
    store: &SharedKeyStore,
    device: &SignedIn,
    base: &Stored,
    payload: &CredentialPayload,
    expires_at: Option<u64>,
) -> Result<CredentialInfo, AccessError> {
    let current = &base.info;
    let new = SecretReplacement {
        key_version: base.key_version,
        payload,
        scopes: &current.scopes,
        // As the broker's own refresh does: the new token's expiry.
        expires_hint: expires_at,
        status: (current.status == CredentialStatus::ReconnectNeeded)
            .then_some(CredentialStatus::Active),
    };
    replace_secret(store, device, current, new).await
}

/// The token request, authenticated as at connect: the catalog's client authentication when
/// the connection kept a client secret, none otherwise.
async fn request(
    http: &OAuthHttp,
    credential: &CredentialInfo,
    refresh: &OAuthRefresh,
) -> Result<crate::oauth::TokenSet, OAuthError> {
    let token = Url::parse(&refresh.token_endpoint)
        .map_err(|_| OAuthError::Metadata("the stored token endpoint is not a URL".into()))?;
    let auth = match &refresh.client_secret {
        None => ClientAuth::None,
        Some(_) => Catalog::builtin()
            .get(&credential.provider)
            .and_then(|p| p.oauth())
            .map(|o| o.client_auth)
            .filter(|a| *a != ClientAuth::None)
            .unwrap_or(ClientAuth::Post),
    };
    let client = OAuthClient {
        client_id: refresh.client_id.clone(),
        client_secret: refresh
            .client_secret
            .as_ref()
            .map(|s| SecretBytes::copy_from(s.expose_secret())),
        auth,
        scopes: Vec::new(),
        scope_separator: " ".to_owned(),
        extra_authorize_params: Vec::new(),
    };
    // Only the token endpoint is used.
    let endpoints =
        OAuthEndpoints { authorize: token.clone(), token, revocation: None, issuer: None };
    crate::oauth::refresh(http, &endpoints, &client, &refresh.refresh_token).await
}
