//! Refreshing OAuth access tokens on the device, before they expire, while the device is online.
//!
//! The broker refreshes a token itself when an agent's call finds it expiring within five
//! minutes (`crates/server/src/proxy/refresh.rs`). A device refreshes too: so a connection
//! nobody called for a while does not lose its grant (rotating refresh tokens expire as well),
//! so the desktop app can keep its connections fresh in the background, and so a person sees
//! at once that a provider refused a connection.
//!
//! ```text
//! refresh_if_needed  kept pairs first: a refresh this profile could not store earlier is stored
//!                    per-credential lock (this device, this process)
//!                    -> metadata (revision R), then envelope -> opened on this device
//!                    -> fresh beyond the buffer (and not forced): nothing to do
//!                    -> the credential's refresh lease at the broker; held elsewhere: wait and
//!                       read again (refreshed meanwhile: done), at most a bounded time, then
//!                       "in progress elsewhere"; taken at a revision after R: read again
//!                    -> refresh at the token endpoint (client auth as at connect)
//!                    -> new access token and rotated refresh token sealed under the same record
//!                       key, kept sealed on this device, swapped at the broker only if the
//!                       revision is still R, the lease given back with the swap
//! refresh_all        the same for every OAuth credential this member can see, one outcome each
//! ```
//!
//! # One refresher at a time
//!
//! A provider that rotates refresh tokens kills the old one when it issues the new one, and
//! treats a second use of the old one as theft: it revokes the grant, for everyone (RFC 9700).
//! Two refreshers holding the same refresh token (the desktop app and the CLI on this device,
//! another device, the broker, two broker replicas) must therefore never both present it. Each
//! credential has one refresh lease at the broker (docs/api.md, "Refresh leases"); every
//! refresher takes it before it asks the provider. A lease held by someone else
//! (`409 refresh_in_progress`) means they are refreshing now: this refresh waits a little, reads
//! the credential again, and stops as soon as the refresh token changed (someone else refreshed:
//! no provider call); if the holder takes longer than the wait, it reports
//! [`RefreshAction::InProgress`], which is not a failure. A lease taken at a later revision than
//! the one read means someone wrote the credential in between: it is read again before its
//! refresh token is presented. The lease is given back on every path: with the storing write, or
//! explicitly when nothing is stored; a lease this process could not give back lapses at the
//! broker after a minute.
//!
//! # Rotation, atomically, and never lost
//!
//! The new pair is sealed into one envelope and stored with the broker's compare-and-swap on the
//! credential's revision: either the new pair is stored, or nothing changed. The metadata (with
//! its revision) is read before the envelope, so an envelope newer than the revision makes the
//! swap fail rather than overwrite.
//!
//! If the swap fails (`409 conflict`), someone else wrote the credential after it was read (a
//! rename, a status change, a reconnect). The credential is read again: if its refresh token is
//! still the one this refresh presented, the change did not touch the tokens and the new pair is
//! swapped in at the new revision; otherwise the other writer's pair is kept and this one is
//! dropped.
//!
//! Once the provider has answered, the presented refresh token is dead and the new pair is the
//! only way back to the grant. Before it is sent to the broker it is therefore kept on this device,
//! sealed as the broker would hold it (`pending`); if storing fails (the broker unreachable, this
//! process killed), the next refresh of this profile stores the kept pair before anything else,
//! and no refresh of that credential asks the provider while a pair is kept for it.
//!
//! A refresh the provider refuses (`invalid_grant`: expired, revoked, or killed by reuse
//! detection) marks the credential `reconnect_needed` at the broker, so nobody is left with a
//! connection that silently stopped working, and the error says to reconnect.

mod pending;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use latchkey_core::envelope::Envelope;
use latchkey_core::ids::{CredentialId, DeviceId, KeyVersion, LeaseId, Owner};
use latchkey_core::payload::{CredentialKind, CredentialPayload, OAuthRefresh};
use latchkey_core::secret::SecretBytes;
use serde::Serialize;
use url::Url;

use self::pending::{Pending, PendingError};
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

/// How long [`refresh_if_needed`] waits for someone else's refresh of the same credential (their
/// lease) before it reports [`RefreshAction::InProgress`].
const CONTENDED_WAIT: Duration = Duration::from_secs(20);

/// The same for each credential of [`refresh_all`], which runs again soon anyway (the desktop
/// app calls it every minute).
const CONTENDED_WAIT_ALL: Duration = Duration::from_secs(3);

/// The first pause before reading a credential someone else is refreshing again; each next one
/// doubles, up to [`MAX_POLL`].
const FIRST_POLL: Duration = Duration::from_millis(250);
const MAX_POLL: Duration = Duration::from_secs(2);

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
    /// Someone else (the broker, another device, another process of this one) is refreshing the
    /// credential right now and had not finished within the wait; this device did not ask the
    /// provider. Not a failure: the credential is probably fresh in a moment.
    InProgress,
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
    /// The provider issued new tokens but the broker did not store them (now, or when an earlier
    /// refresh's kept pair was tried again). They are kept sealed on this device and stored
    /// first by the next refresh; the credential is not refreshed again meanwhile.
    #[error(
        "{name:?} was refreshed, but the broker did not store the new tokens ({source}); they are kept sealed on this device and stored by the next `latchkey credential refresh`: do not reconnect"
    )]
    NotStored {
        /// The credential's name.
        name: String,
        /// Why the broker did not store them.
        #[source]
        source: AccessError,
    },
    /// A pair kept on this device could not be written, read or removed.
    #[error("the refreshed tokens of {name:?} kept on this device: could not {source}")]
    Kept {
        /// The credential's name (or id, if it is not known).
        name: String,
        /// What failed.
        #[source]
        source: KeptError,
    },
}

/// A file of refreshed tokens kept on this device could not be used.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct KeptError(PendingError);

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
    store_all_kept(profile, store, &device).await;
    let credential = find_credential(&device.2, name).await?;
    let admin = credential.owner == Owner::Shared && is_admin(&device).await?;
    let http = OAuthHttp::new()
        .map_err(|source| RefreshError::OAuth { name: credential.name.clone(), source })?;
    let target = Target { id: credential.id, name: &credential.name, admin };
    let context = Context { profile, store, device: &device, http: &http, wait: CONTENDED_WAIT };
    refresh_credential(&context, &target, options).await
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
    /// Someone else is refreshing it right now (see [`RefreshAction::InProgress`]).
    InProgress {
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
    store_all_kept(profile, store, &device).await;
    let credentials = device.2.credentials().await.map_err(AccessError::from)?;
    let admin = is_admin(&device).await?;
    let http = OAuthHttp::new()
        .map_err(|source| RefreshError::OAuth { name: "the connections".to_owned(), source })?;
    let context =
        Context { profile, store, device: &device, http: &http, wait: CONTENDED_WAIT_ALL };
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
        let result = refresh_credential(&context, &target, options).await;
        let report = match result {
            Ok(outcome) => {
                let (credential, expires_at) = (outcome.credential, outcome.expires_at);
                match outcome.action {
                    RefreshAction::Refreshed => RefreshReport::Refreshed { credential, expires_at },
                    RefreshAction::InProgress => {
                        RefreshReport::InProgress { credential, expires_at }
                    }
                    _ => RefreshReport::Fresh { credential, expires_at },
                }
            }
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

/// What every refresh of one run shares.
struct Context<'a> {
    profile: &'a Profile,
    store: &'a SharedKeyStore,
    device: &'a SignedIn,
    http: &'a OAuthHttp,
    /// How long to wait for someone else's refresh.
    wait: Duration,
}

/// One lock per credential being refreshed by this device in this process, and a count of the
/// refreshes it completed (so a refresh that waited can tell that another one finished
/// meanwhile). Other devices and processes are kept apart by the broker's refresh lease.
#[derive(Default)]
struct Slot {
    lock: tokio::sync::Mutex<()>,
    completed: AtomicU64,
}

/// The slots of this process, by device and credential.
type Slots = Mutex<HashMap<(DeviceId, CredentialId), Arc<Slot>>>;

fn slot_for(device: DeviceId, credential: CredentialId) -> Arc<Slot> {
    static SLOTS: OnceLock<Slots> = OnceLock::new();
    let slots = SLOTS.get_or_init(Mutex::default);
    // A poisoned map only means another thread panicked while inserting; the map is still valid.
    let mut map = slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    map.retain(|_, slot| Arc::strong_count(slot) > 1);
    Arc::clone(map.entry((device, credential)).or_default())
}

/// The credential as read: metadata first (its revision), then the envelope opened here.
struct Stored {
    info: CredentialInfo,
    key_version: KeyVersion,
    envelope: Envelope,
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
        refresh_token_of(&self.payload)
    }

    /// Whether `self` still holds the refresh token `other` holds (nobody refreshed between).
    fn same_refresh_token(&self, other: &SecretBytes) -> bool {
        self.refresh_token().is_some_and(|t| t.expose_secret() == other.expose_secret())
    }

    fn outcome(self, action: RefreshAction) -> RefreshOutcome {
        let expires_at = self.expires_at();
        RefreshOutcome { action, credential: self.info, expires_at }
    }
}

fn refresh_token_of(payload: &CredentialPayload) -> Option<&SecretBytes> {
    match &payload.kind {
        CredentialKind::OAuth { refresh: Some(r), .. } => Some(&r.refresh_token),
        _ => None,
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
    let payload = open(store, config, &info, key_version, &envelope).await?;
    Ok(Stored { info, key_version, envelope, payload })
}

async fn open(
    store: &SharedKeyStore,
    config: &crate::profile::ProfileConfig,
    info: &CredentialInfo,
    key_version: KeyVersion,
    envelope: &Envelope,
) -> Result<CredentialPayload, AccessError> {
    let key = record_key(store, config, info.owner, key_version, info.id).await?;
    let plaintext = envelope.open(&key)?;
    Ok(CredentialPayload::decode(plaintext.expose_secret())?)
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

fn is_code(error: &AccessError, code: &str) -> bool {
    matches!(error, AccessError::Broker(e) if e.api().is_some_and(|e| e.is(code)))
}

fn is_conflict(error: &AccessError) -> bool {
    is_code(error, codes::CONFLICT)
}

fn kept_error(name: &str, source: PendingError) -> RefreshError {
    RefreshError::Kept { name: name.to_owned(), source: KeptError(source) }
}

async fn refresh_credential(
    context: &Context<'_>,
    target: &Target<'_>,
    options: RefreshOptions,
) -> Result<RefreshOutcome, RefreshError> {
    let (store, device) = (context.store, context.device);
    let (id, name) = (target.id, target.name);
    let slot = slot_for(device.0.device, id);
    let seen = slot.completed.load(Ordering::Acquire);
    let _guard = slot.lock.lock().await;
    // A pair refreshed earlier but not stored comes first: while one is kept, the stored refresh
    // token is dead, and presenting it would revoke the grant.
    if let Some(kept) = pending::load(context.profile, id).map_err(|e| kept_error(name, e))? {
        store_kept(context, name, kept).await?;
    }
    let stored = read(store, device, id).await?;
    check_refreshable(&stored, name)?;
    // Checked before the provider is asked: a refresh token rotated there and then refused
    // here would be lost.
    if stored.info.owner == Owner::Shared && !target.admin {
        return Err(RefreshError::NotAllowed(name.to_owned()));
    }
    if slot.completed.load(Ordering::Acquire) != seen {
        // Another refresh in this process completed while this one waited: its token is as
        // new as this one's would be.
        return Ok(stored.outcome(RefreshAction::RefreshedElsewhere));
    }
    if stored.info.status == CredentialStatus::ReconnectNeeded && !options.force {
        return Err(RefreshError::ReconnectNeeded(name.to_owned()));
    }
    if !options.force && !expiring(stored.expires_at(), options.buffer) {
        return Ok(stored.outcome(RefreshAction::Fresh));
    }
    let (lease, stored) = match take_lease(context, name, stored).await? {
        Turn::Ours(lease, stored) => (lease, stored),
        Turn::Done(outcome) => return Ok(*outcome),
    };
    let result = refresh_leased(context, target, lease, *stored).await;
    let (outcome, given_back) = match result {
        Ok(done) => done,
        Err(error) => {
            // A failure that kept a pair keeps the lease named in it too (the kept pair's write
            // gives it back); any other gives it back now.
            if !matches!(error, RefreshError::NotStored { .. }) {
                give_back(device, id, lease).await;
            }
            return Err(error);
        }
    };
    if !given_back {
        give_back(device, id, lease).await;
    }
    if outcome.action == RefreshAction::Refreshed {
        slot.completed.fetch_add(1, Ordering::AcqRel);
    }
    Ok(outcome)
}

/// Whose turn it is to refresh.
enum Turn {
    /// This device holds the lease; the credential as it is now.
    Ours(LeaseId, Box<Stored>),
    /// Nothing to do: someone else refreshed meanwhile, or still is.
    Done(Box<RefreshOutcome>),
}

/// Takes the credential's refresh lease, waiting (at most `context.wait`) while someone else
/// holds it. Whenever the credential may have changed, reads it again: a refresh token that
/// changed means someone else refreshed, and this refresh stops.
async fn take_lease(
    context: &Context<'_>,
    name: &str,
    mut stored: Stored,
) -> Result<Turn, RefreshError> {
    let (store, device) = (context.store, context.device);
    let id = stored.info.id;
    let presented = match stored.refresh_token() {
        Some(token) => SecretBytes::copy_from(token.expose_secret()),
        None => return Err(RefreshError::NoRefreshToken(name.to_owned())),
    };
    let deadline = tokio::time::Instant::now() + context.wait;
    let mut pause = FIRST_POLL;
    loop {
        match device.2.take_refresh_lease(id).await.map_err(AccessError::from) {
            Ok(lease) => {
                if lease.revision == stored.info.revision {
                    return Ok(Turn::Ours(lease.lease, Box::new(stored)));
                }
                // Written since it was read: perhaps a refresh that rotated the token.
                let current = match read(store, device, id).await {
                    Ok(current) => current,
                    Err(error) => {
                        give_back(device, id, lease.lease).await;
                        return Err(error);
                    }
                };
                if !current.same_refresh_token(&presented) {
                    give_back(device, id, lease.lease).await;
                    tracing::info!(credential = %id, "refreshed elsewhere meanwhile; the provider was not asked");
                    return Ok(Turn::Done(Box::new(
                        current.outcome(RefreshAction::RefreshedElsewhere),
                    )));
                }
                return Ok(Turn::Ours(lease.lease, Box::new(current)));
            }
            Err(error) if is_code(&error, codes::REFRESH_IN_PROGRESS) => {
                if tokio::time::Instant::now() + pause > deadline {
                    tracing::info!(credential = %id, "still being refreshed elsewhere; not asking the provider");
                    return Ok(Turn::Done(Box::new(stored.outcome(RefreshAction::InProgress))));
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_POLL);
                stored = read(store, device, id).await?;
                check_refreshable(&stored, name)?;
                if !stored.same_refresh_token(&presented) {
                    tracing::info!(credential = %id, "refreshed elsewhere meanwhile; the provider was not asked");
                    return Ok(Turn::Done(Box::new(
                        stored.outcome(RefreshAction::RefreshedElsewhere),
                    )));
                }
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Holding the lease: asks the provider and stores the new pair. Returns the outcome and whether
/// the lease was given back (with the storing write).
async fn refresh_leased(
    context: &Context<'_>,
    target: &Target<'_>,
    lease: LeaseId,
    stored: Stored,
) -> Result<(RefreshOutcome, bool), RefreshError> {
    let (store, device) = (context.store, context.device);
    let (id, name) = (target.id, target.name);
    let CredentialKind::OAuth { refresh: Some(refresh), .. } = &stored.payload.kind else {
        return Err(RefreshError::NoRefreshToken(name.to_owned()));
    };
    let tokens = match request(context.http, &stored.info, refresh).await {
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
            return match marked {
                Ok(_) => {
                    tracing::warn!(credential = %id, "refresh refused by the provider; marked reconnect needed");
                    Err(RefreshError::ReconnectNeeded(name.to_owned()))
                }
                Err(e) if is_conflict(&e) => {
                    // Someone wrote the credential after it was read (not a refresh: the lease
                    // was held). Judge what is stored now; it is not refreshed again here.
                    let current = read(store, device, id).await?;
                    if current.same_refresh_token(&refresh.refresh_token) {
                        Err(RefreshError::ReconnectNeeded(name.to_owned()))
                    } else {
                        Ok((current.outcome(RefreshAction::RefreshedElsewhere), false))
                    }
                }
                Err(e) => Err(e.into()),
            };
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
    // The presented refresh token is dead now: keep the new pair before anything can fail. If
    // it cannot be kept, storing it at once is still its best chance.
    if let Err(error) = keep(context, name, &stored, &payload, lease).await {
        tracing::warn!(credential = %id, %error, "could not keep the refreshed pair on this device; storing it at once");
    }
    store_refreshed(context, name, stored, &payload, Some(lease)).await
}

/// Seals `payload` as the broker would hold it and keeps it on this device with the envelope it
/// replaces and the lease held.
async fn keep(
    context: &Context<'_>,
    name: &str,
    base: &Stored,
    payload: &CredentialPayload,
    lease: LeaseId,
) -> Result<(), RefreshError> {
    let key = record_key(
        context.store,
        &context.device.0,
        base.info.owner,
        base.key_version,
        base.info.id,
    )
    .await?;
    let refreshed = Envelope::seal(&key, &payload.encode().map_err(AccessError::from)?)
        .map_err(AccessError::from)?;
    let kept = Pending {
        credential: base.info.id,
        key_version: base.key_version,
        refreshed,
        presented: base.envelope.clone(),
        lease: Some(lease),
    };
    pending::save(context.profile, &kept).map_err(|e| kept_error(name, e))
}

/// Stores the refreshed `payload` over `base` with the broker's compare-and-swap, naming
/// `lease`; on a conflict that left the tokens as they were (a rename, a status change), again
/// at the new revision. Forgets the kept copy once the broker holds this pair or another
/// writer's newer one. Returns the outcome and whether the lease was given back.
async fn store_refreshed(
    context: &Context<'_>,
    name: &str,
    mut base: Stored,
    payload: &CredentialPayload,
    lease: Option<LeaseId>,
) -> Result<(RefreshOutcome, bool), RefreshError> {
    let (store, device) = (context.store, context.device);
    let id = base.info.id;
    let presented = match base.refresh_token() {
        Some(token) => SecretBytes::copy_from(token.expose_secret()),
        None => return Err(RefreshError::NoRefreshToken(name.to_owned())),
    };
    let expires_at = match &payload.kind {
        CredentialKind::OAuth { expires_at, .. } => *expires_at,
        CredentialKind::ApiKey => None,
    };
    let not_stored = |source| RefreshError::NotStored { name: name.to_owned(), source };
    for _ in 0..MAX_SWAPS {
        match swap(store, device, &base, payload, expires_at, lease).await {
            Ok(updated) => {
                forget(context, name, id)?;
                tracing::info!(credential = %id, revision = updated.revision, "refreshed an OAuth access token on this device");
                let outcome = RefreshOutcome {
                    action: RefreshAction::Refreshed,
                    credential: updated,
                    expires_at,
                };
                return Ok((outcome, lease.is_some()));
            }
            Err(e) if is_conflict(&e) => {
                base = match read(store, device, id).await {
                    Ok(current) => current,
                    Err(RefreshError::Access(e)) => return Err(not_stored(e)),
                    Err(e) => return Err(e),
                };
                check_refreshable(&base, name)?;
                if base
                    .refresh_token()
                    .zip(refresh_token_of(payload))
                    .is_some_and(|(s, p)| s.expose_secret() == p.expose_secret())
                {
                    // This very pair is stored already (an earlier attempt that did store).
                    forget(context, name, id)?;
                    return Ok((base.outcome(RefreshAction::Refreshed), false));
                }
                if !base.same_refresh_token(&presented) {
                    // Someone else stored another pair: theirs is kept, this one dropped.
                    forget(context, name, id)?;
                    tracing::info!(credential = %id, "the credential was replaced meanwhile; kept the stored token");
                    return Ok((base.outcome(RefreshAction::RefreshedElsewhere), false));
                }
            }
            Err(e) => return Err(not_stored(e)),
        }
    }
    Err(RefreshError::Contended(name.to_owned()))
}

fn forget(context: &Context<'_>, name: &str, id: CredentialId) -> Result<(), RefreshError> {
    pending::remove(context.profile, id).map_err(|e| kept_error(name, e))
}

/// Stores a pair kept by an earlier refresh that the broker did not store, over the credential as
/// it is now: unless someone else stored another pair since (then the kept one is dropped).
async fn store_kept(context: &Context<'_>, name: &str, kept: Pending) -> Result<(), RefreshError> {
    let (store, device) = (context.store, context.device);
    let id = kept.credential;
    let not_stored = |source| RefreshError::NotStored { name: name.to_owned(), source };
    let base = match read(store, device, id).await {
        Ok(base) => base,
        Err(RefreshError::Access(e)) if is_code(&e, codes::NOT_FOUND) => {
            // Deleted (or no longer this member's): nothing to store it into.
            return forget(context, name, id);
        }
        Err(RefreshError::Access(e)) => return Err(not_stored(e)),
        Err(e) => return Err(e),
    };
    let open_kept = |envelope| open(store, &device.0, &base.info, kept.key_version, envelope);
    let payload = open_kept(&kept.refreshed).await?;
    let presented = open_kept(&kept.presented).await?;
    let Some(presented_token) = refresh_token_of(&presented) else {
        return forget(context, name, id);
    };
    if !base.same_refresh_token(presented_token) {
        // Stored already (by an attempt that did store before failing), or someone else stored
        // another pair: either way the kept one is not needed.
        tracing::info!(credential = %id, "a kept refreshed pair is no longer needed");
        return forget(context, name, id);
    }
    let (outcome, _) = store_refreshed(context, name, base, &payload, kept.lease).await?;
    tracing::info!(credential = %id, revision = outcome.credential.revision, "stored a refreshed pair kept on this device");
    Ok(())
}

/// Stores every pair kept on this device for this profile (a refresh that ran before this one
/// could not). Failures are left for the refresh of that credential to report.
async fn store_all_kept(profile: &Profile, store: &SharedKeyStore, device: &SignedIn) {
    let kept = match pending::list(profile) {
        Ok(kept) => kept,
        Err(error) => {
            tracing::warn!(%error, "could not list refreshed pairs kept on this device");
            return;
        }
    };
    if kept.is_empty() {
        return;
    }
    let Ok(http) = OAuthHttp::new() else { return };
    let context = Context { profile, store, device, http: &http, wait: Duration::ZERO };
    for id in kept {
        let slot = slot_for(device.0.device, id);
        let _guard = slot.lock.lock().await;
        let name = id.to_string();
        let stored = match pending::load(profile, id) {
            Ok(Some(kept)) => store_kept(&context, &name, kept).await,
            Ok(None) => Ok(()),
            Err(e) => Err(kept_error(&name, e)),
        };
        if let Err(error) = stored {
            tracing::warn!(credential = %id, %error, "a refreshed pair kept on this device is not stored yet");
        }
    }
}

/// Gives a lease back after a refresh that stored nothing; a lease the broker no longer knows
/// (lapsed and taken over) is fine, and a failure only means it lapses on its own.
async fn give_back(device: &SignedIn, id: CredentialId, lease: LeaseId) {
    match device.2.release_refresh_lease(id, lease).await {
        Ok(()) => {}
        Err(e) if e.api().is_some_and(|e| e.is(codes::NOT_FOUND)) => {}
        Err(error) => {
            tracing::warn!(credential = %id, %error, "could not give the refresh lease back; it lapses on its own");
        }
    }
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
/// envelope if the revision is still `base`'s, naming `lease` (given back with the write). A
/// credential marked reconnect needed that could be refreshed after all is active again; any
/// other status is kept.
async fn swap(
    store: &SharedKeyStore,
    device: &SignedIn,
    base: &Stored,
    payload: &CredentialPayload,
    expires_at: Option<u64>,
    lease: Option<LeaseId>,
) -> Result<CredentialInfo, AccessError> {
    let current = &base.info;
    let new = SecretReplacement {
        key_version: base.key_version,
        payload,
        scopes: &current.scopes,
        // As the broker's own refresh does: the new token's expiry.
        expires_hint: expires_at,
        account: current.account.as_deref(),
        status: (current.status == CredentialStatus::ReconnectNeeded)
            .then_some(CredentialStatus::Active),
        lease,
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
