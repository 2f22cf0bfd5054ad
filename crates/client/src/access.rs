//! What a member does to let agents call APIs: store an API key (sealed on this device), create
//! agents, and issue standing grants whose capabilities the agents present.
//!
//! ```text
//! add_api_key           payload -> record key (WK or MK, current version) -> envelope -> broker
//! client.create_agent   the broker answers the agent's token once
//! add_oauth_credential  the same, for an OAuth access token and what refreshes it
//! grant_standing        grant registered at the broker, then a capability signed by this device
//!                       and sealed to the broker key, carrying the credential's record key
//! issue_single_use      a capability for one request (at most 15 minutes), nothing registered:
//!                       the broker refuses its nonce a second time
//! update_credential,    metadata only: the envelope goes back unopened (its AAD binds id,
//! set_credential_status owner and key version, none of which change)
//! ```
//!
//! The API key and every key stay in zeroizing types; the broker receives only the envelope.
//! A capability holds the record key only sealed to the broker, so the agent learns nothing from
//! it; it is still handled as a secret here (redacted `Debug`), because with the agent's token it
//! lets the holder make calls until the grant expires or is revoked.

use core::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use latchkey_core::capability::{
    Capability, CapabilityError, Claims, MAX_SINGLE_USE_LIFETIME_SECS, Method, MethodSet,
    PathPattern, Reuse,
};
use latchkey_core::envelope::{Envelope, EnvelopeError};
use latchkey_core::ids::{AgentId, CredentialId, GrantId, KeyVersion, LeaseId, Owner};
use latchkey_core::keys::{DeviceKeys, KeyError, RecordKey};
use latchkey_core::payload::{
    CredentialKind, CredentialPayload, Injection, OAuthRefresh, PayloadError,
};
use latchkey_core::secret::SecretBytes;
use url::Url;

use crate::account;
use crate::api::{
    BrokerClient, ClientError, CredentialInfo, CredentialReplacement, CredentialStatus, GrantInfo,
    NewCredential,
};
use crate::catalog::{Catalog, KeyFormatError, Provider};
use crate::keychain::{KeychainError, SharedKeyStore};
use crate::oauth::OAuthHttp;
use crate::profile::{Profile, ProfileConfig};
use crate::workspace::{WorkspaceError, on_store, signed_in};

/// Longest standing grant the broker accepts: 90 days.
pub const MAX_GRANT_SECS: u64 = 90 * 24 * 60 * 60;

/// An access operation failed. Every message says what to do next; none holds a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// The profile, key store or broker failed.
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    /// The broker refused or could not be reached.
    #[error(transparent)]
    Broker(#[from] ClientError),
    /// The credential cannot be encoded (for instance, an empty or oversized key).
    #[error("the credential cannot be stored: {0}")]
    Payload(#[from] PayloadError),
    /// Sealing or key derivation failed.
    #[error("a key operation failed: {0}")]
    Crypto(String),
    /// This device does not hold the key the operation needs.
    #[error(
        "this device holds no {what} version {version}: receive your keys from another device (or import a recovery kit) first"
    )]
    MissingKey {
        /// "workspace key" or "member key".
        what: &'static str,
        /// The version needed.
        version: KeyVersion,
    },
    /// The broker's key is at a newer version than any this device holds: another device
    /// rotated it and did not send the new version here. Nothing was generated or stored.
    #[error(
        "the {what} was rotated to version {current} elsewhere and this device holds version {held} only: ask an admin (for your member key, your other device) to send it the new key by admitting this device again (`latchkey device admit`), then run `latchkey device receive-keys --from <their fingerprint>` here"
    )]
    KeyBehind {
        /// "workspace key" or "member key".
        what: &'static str,
        /// The newest version this device holds.
        held: KeyVersion,
        /// The version the broker's credentials are sealed under.
        current: KeyVersion,
    },
    /// No credential with this name is visible to this member.
    #[error(
        "no credential named {0:?} in this workspace: list them with `latchkey credential list`"
    )]
    UnknownCredential(String),
    /// The grant's terms are not acceptable.
    #[error("invalid grant: {0}")]
    InvalidGrant(String),
    /// The key is not in the form its provider takes (e.g. Basic credentials without a colon).
    #[error(transparent)]
    KeyFormat(#[from] KeyFormatError),
    /// The provider answered `401 Unauthorized` when asked whose account the key belongs to:
    /// it does not take the key. Nothing was stored.
    #[error(
        "{provider} refused this key (401 Unauthorized) when asked whose account it is: check that it was pasted whole and is still active; nothing was stored"
    )]
    KeyRefused {
        /// The provider's display name.
        provider: String,
    },
}

impl From<KeyError> for AccessError {
    fn from(e: KeyError) -> Self {
        AccessError::Crypto(e.to_string())
    }
}

impl From<EnvelopeError> for AccessError {
    fn from(e: EnvelopeError) -> Self {
        AccessError::Crypto(e.to_string())
    }
}

impl From<CapabilityError> for AccessError {
    fn from(e: CapabilityError) -> Self {
        AccessError::InvalidGrant(e.to_string())
    }
}

/// An API key to store.
#[derive(Debug)]
pub struct NewApiKey<'a> {
    /// The name agents use in `/p/{name}/...`.
    pub name: &'a str,
    /// The provider catalog id.
    pub provider: &'a str,
    /// The provider's API base URL.
    pub base_url: &'a str,
    /// Hosts the broker may send the key to.
    pub allowed_hosts: &'a [String],
    /// Where the broker puts the key.
    pub injection: Injection,
    /// Shared with the workspace (admins only) or this member's own.
    pub shared: bool,
    /// The key itself, read from a prompt or stdin, never from a command line. For a catalog
    /// provider with a [`KeyFormat`](crate::catalog::KeyFormat) other than verbatim, the key as
    /// entered (Twilio: `<API key SID>:<secret>`), encoded before it is sealed.
    pub key: SecretBytes,
    /// Whose account the key belongs to, as the member names it. `None` asks the provider,
    /// where the catalog says how ([`Provider::account`]); a provider that does not say leaves
    /// the account unknown.
    pub account: Option<&'a str>,
}

/// Seals `new.key` on this device under the current workspace key (shared) or this member's
/// key (personal) and stores the envelope at the broker.
pub async fn add_api_key(
    profile: &Profile,
    store: &SharedKeyStore,
    new: NewApiKey<'_>,
) -> Result<CredentialInfo, AccessError> {
    // A catalog provider's key may need encoding first (Twilio's Basic credentials); custom
    // providers and unknown ids store the key as entered.
    let provider = Catalog::builtin().get(new.provider);
    let secret = match provider.and_then(Provider::api_key) {
        Some(key) => key.format.stored_secret(new.key, &key.key_label)?,
        None => new.key,
    };
    let account = match (new.account, provider.and_then(|p| p.account.as_ref())) {
        (Some(given), _) => account::display_name(&given.into()),
        (None, Some(lookup)) => match (Url::parse(new.base_url), OAuthHttp::new()) {
            (Ok(base_url), Ok(http)) => {
                account::look_up(&http, lookup, &base_url, &new.injection, &secret).await.map_err(
                    |_| AccessError::KeyRefused {
                        provider: provider
                            .map_or_else(|| new.provider.to_owned(), |p| p.name.clone()),
                    },
                )?
            }
            _ => None,
        },
        (None, None) => None,
    };
    let payload =
        CredentialPayload { kind: CredentialKind::ApiKey, injection: new.injection, secret };
    let target = Target {
        name: new.name,
        provider: new.provider,
        base_url: new.base_url,
        allowed_hosts: new.allowed_hosts,
        shared: new.shared,
        scopes: &[],
        expires_hint: None,
        account: account.as_deref(),
    };
    seal_and_store(profile, store, &target, payload).await
}

/// An OAuth connection's result to store: the tokens (secret types from the OAuth flow) and
/// what the broker needs to refresh the access token.
#[derive(Debug)]
pub struct NewOAuthCredential<'a> {
    /// The name agents use in `/p/{name}/...`.
    pub name: &'a str,
    /// The provider catalog id.
    pub provider: &'a str,
    /// The provider's API base URL.
    pub base_url: &'a str,
    /// Hosts the broker may send the token to.
    pub allowed_hosts: &'a [String],
    /// Where the broker puts the access token (usually [`Injection::bearer`]).
    pub injection: Injection,
    /// Shared with the workspace (admins only) or this member's own.
    pub shared: bool,
    /// The scopes the provider granted.
    pub scopes: &'a [String],
    /// The access token.
    pub access_token: SecretBytes,
    /// When the access token expires (unix seconds), if the provider said.
    pub expires_at: Option<u64>,
    /// The refresh token, token endpoint and client id, if the provider gave a refresh token.
    pub refresh: Option<OAuthRefresh>,
    /// Whose account at the provider the tokens act as, if the sign-in found out.
    pub account: Option<&'a str>,
}

/// Seals an OAuth access token (and its refresh data) on this device, like [`add_api_key`].
/// The broker refreshes the access token itself when it expires, re-sealing it under the same
/// record key; without refresh data the credential's `expires_hint` is the token's expiry.
pub async fn add_oauth_credential(
    profile: &Profile,
    store: &SharedKeyStore,
    new: NewOAuthCredential<'_>,
) -> Result<CredentialInfo, AccessError> {
    let expires_hint = if new.refresh.is_some() { None } else { new.expires_at };
    let payload = CredentialPayload {
        kind: CredentialKind::OAuth { expires_at: new.expires_at, refresh: new.refresh },
        injection: new.injection,
        secret: new.access_token,
    };
    let target = Target {
        name: new.name,
        provider: new.provider,
        base_url: new.base_url,
        allowed_hosts: new.allowed_hosts,
        shared: new.shared,
        scopes: new.scopes,
        expires_hint,
        account: new.account,
    };
    seal_and_store(profile, store, &target, payload).await
}

/// A new secret for a stored credential: what [`replace_secret`] seals and uploads.
pub(crate) struct SecretReplacement<'a> {
    /// The key version to seal under (its record key for this credential).
    pub(crate) key_version: KeyVersion,
    pub(crate) payload: &'a CredentialPayload,
    pub(crate) scopes: &'a [String],
    pub(crate) expires_hint: Option<u64>,
    /// The account the new secret acts as (`None`: unknown from now on).
    pub(crate) account: Option<&'a str>,
    /// A new status, or `None` to keep the current one.
    pub(crate) status: Option<CredentialStatus>,
    /// The refresh lease held for this write, given back with it.
    pub(crate) lease: Option<LeaseId>,
}

/// Seals `new.payload` under the record key of `current` at `new.key_version` and replaces the
/// stored envelope with the broker's compare-and-swap on `current.revision`; the metadata other
/// than scopes, expiry, account and status is kept. The credential keeps its id, grants and
/// history.
pub(crate) async fn replace_secret(
    store: &SharedKeyStore,
    (config, _, client): &SignedIn,
    current: &CredentialInfo,
    new: SecretReplacement<'_>,
) -> Result<CredentialInfo, AccessError> {
    let key = record_key(store, config, current.owner, new.key_version, current.id).await?;
    let envelope = Envelope::seal(&key, &new.payload.encode()?)?;
    Ok(client
        .replace_credential(
            current.id,
            &CredentialReplacement {
                revision: current.revision,
                name: &current.name,
                provider: &current.provider,
                upstream_base_url: &current.upstream_base_url,
                allowed_hosts: &current.allowed_hosts,
                scopes: new.scopes,
                expires_hint: new.expires_hint,
                account: new.account,
                key_version: new.key_version,
                envelope: &envelope,
                status: new.status,
                lease: new.lease,
            },
        )
        .await?)
}

/// Replaces the secret of `current` with `payload` in place (a reconnect, perhaps as another
/// account): sealed under the owner's current key and switched back to `Active`.
pub(crate) async fn reseal_in_place(
    store: &SharedKeyStore,
    device: &SignedIn,
    current: &CredentialInfo,
    payload: CredentialPayload,
    metadata: Resealed<'_>,
) -> Result<CredentialInfo, AccessError> {
    let key_version = current_version(&device.0, current.owner)?;
    let new = SecretReplacement {
        key_version,
        payload: &payload,
        scopes: metadata.scopes,
        expires_hint: metadata.expires_hint,
        account: metadata.account,
        status: Some(CredentialStatus::Active),
        lease: None,
    };
    let updated = replace_secret(store, device, current, new).await?;
    tracing::info!(credential = %updated.id, revision = updated.revision, "credential reconnected");
    Ok(updated)
}

/// The metadata a reconnect replaces along with the secret.
pub(crate) struct Resealed<'a> {
    pub(crate) scopes: &'a [String],
    pub(crate) expires_hint: Option<u64>,
    pub(crate) account: Option<&'a str>,
}

/// A credential's metadata in clear, as [`seal_and_store`] uploads it.
struct Target<'a> {
    name: &'a str,
    provider: &'a str,
    base_url: &'a str,
    allowed_hosts: &'a [String],
    shared: bool,
    scopes: &'a [String],
    expires_hint: Option<u64>,
    account: Option<&'a str>,
}

/// Seals `payload` under the current workspace key (shared) or member key (personal) and
/// uploads the envelope with the metadata. The payload is dropped (zeroized) once sealed.
async fn seal_and_store(
    profile: &Profile,
    store: &SharedKeyStore,
    target: &Target<'_>,
    payload: CredentialPayload,
) -> Result<CredentialInfo, AccessError> {
    let (config, _, client) = signed_in(profile, store).await?;
    let owner = if target.shared { Owner::Shared } else { Owner::Member(config.member) };
    let version = current_version(&config, owner)?;
    let id = CredentialId::random();
    let record_key = record_key(store, &config, owner, version, id).await?;
    let envelope = Envelope::seal(&record_key, &payload.encode()?)?;
    drop(payload);
    let stored = client
        .create_credential(&NewCredential {
            id,
            name: target.name,
            provider: target.provider,
            upstream_base_url: target.base_url,
            allowed_hosts: target.allowed_hosts,
            shared: target.shared,
            key_version: version,
            scopes: target.scopes,
            expires_hint: target.expires_hint,
            account: target.account,
            envelope: &envelope,
        })
        .await?;
    tracing::info!(credential = %stored.id, name = %stored.name, "credential stored");
    Ok(stored)
}

/// The credential named `name` among those this member can see.
pub async fn find_credential(
    client: &BrokerClient,
    name: &str,
) -> Result<CredentialInfo, AccessError> {
    client
        .credential_named(name)
        .await?
        .ok_or_else(|| AccessError::UnknownCredential(name.to_owned()))
}

/// Metadata changes to a credential; `None` keeps a field as it is.
#[derive(Debug, Clone, Default)]
pub struct CredentialChanges<'a> {
    /// A new name (agents then call `/p/{new name}/...`).
    pub name: Option<&'a str>,
    /// A new API base URL.
    pub base_url: Option<&'a str>,
    /// New allowed hosts (replacing the old ones).
    pub allowed_hosts: Option<&'a [String]>,
    /// New scopes.
    pub scopes: Option<&'a [String]>,
    /// A new expiry hint (`Some(None)` clears it).
    pub expires_hint: Option<Option<u64>>,
    /// A new account name (`Some(None)` clears it), as the member names it: control and
    /// reordering characters are dropped, spaces trimmed, and a name left empty clears it.
    pub account: Option<Option<&'a str>>,
}

/// Changes the metadata of the credential named `name` (admins for shared credentials, the
/// owner for personal ones). The secret is not touched: the envelope is sent back unopened. A
/// concurrent change makes the broker refuse with `409 conflict`: list again and retry.
pub async fn update_credential(
    client: &BrokerClient,
    name: &str,
    changes: &CredentialChanges<'_>,
) -> Result<CredentialInfo, AccessError> {
    let current = find_credential(client, name).await?;
    change_credential(client, &current, changes).await
}

/// [`update_credential`] for a credential already read (`current`): its revision guards the
/// change, so one changed since it was read is refused with `409 conflict`.
pub async fn change_credential(
    client: &BrokerClient,
    current: &CredentialInfo,
    changes: &CredentialChanges<'_>,
) -> Result<CredentialInfo, AccessError> {
    let (version, envelope) = client.credential_envelope(current.id).await?;
    let account = match changes.account {
        Some(given) => given.and_then(|name| account::display_name(&name.into())),
        None => current.account.clone(),
    };
    let updated = client
        .replace_credential(
            current.id,
            &CredentialReplacement {
                revision: current.revision,
                name: changes.name.unwrap_or(&current.name),
                provider: &current.provider,
                upstream_base_url: changes.base_url.unwrap_or(&current.upstream_base_url),
                allowed_hosts: changes.allowed_hosts.unwrap_or(&current.allowed_hosts),
                scopes: changes.scopes.unwrap_or(&current.scopes),
                expires_hint: changes.expires_hint.unwrap_or(current.expires_hint),
                account: account.as_deref(),
                key_version: version,
                envelope: &envelope,
                status: None,
                lease: None,
            },
        )
        .await?;
    tracing::info!(credential = %updated.id, revision = updated.revision, "credential updated");
    Ok(updated)
}

/// Switches the credential named `name` on (`Active`) or off (`Disabled`); the proxy uses only
/// active credentials, from the next call.
pub async fn set_credential_status(
    client: &BrokerClient,
    name: &str,
    status: CredentialStatus,
) -> Result<CredentialInfo, AccessError> {
    let current = find_credential(client, name).await?;
    Ok(client.set_credential_status(current.id, status, None).await?)
}

/// The terms of a standing grant.
#[derive(Debug, Clone)]
pub struct GrantTerms<'a> {
    /// The agent it is for.
    pub agent: AgentId,
    /// The credential's name.
    pub credential: &'a str,
    /// Allowed methods.
    pub methods: &'a [Method],
    /// Allowed path patterns (1 to 16), e.g. `/repos/*/issues/**`.
    pub path_patterns: &'a [&'a str],
    /// How long it lasts, in seconds (at most [`MAX_GRANT_SECS`]).
    pub duration_secs: u64,
}

/// A standing capability, as text for the agent's `Latchkey-Capability` header (or appended to
/// its token after a `.`). Redacted in `Debug`.
pub struct CapabilityText(String);

impl CapabilityText {
    fn new(capability: &Capability) -> Self {
        Self(capability.encode())
    }

    /// The text to hand to the agent.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CapabilityText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CapabilityText(<redacted>)")
    }
}

impl Drop for CapabilityText {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// A registered grant and the capability for its agent.
#[derive(Debug)]
pub struct IssuedGrant {
    /// The grant as the broker registered it.
    pub grant: GrantInfo,
    /// The capability to give the agent.
    pub capability: CapabilityText,
}

/// Registers a standing grant at the broker and issues its capability, signed by this device,
/// sealed to the broker's key, for the credential's current key version.
pub async fn grant_standing(
    profile: &Profile,
    store: &SharedKeyStore,
    terms: GrantTerms<'_>,
) -> Result<IssuedGrant, AccessError> {
    standing_terms(&terms)?;
    let device = signed_in(profile, store).await?;
    let credential = find_credential(&device.2, terms.credential).await?;
    grant_standing_for(store, &device, &credential, &terms).await
}

/// A profile's configuration, device keys and signed client (`workspace::signed_in`).
pub(crate) type SignedIn = (ProfileConfig, DeviceKeys, BrokerClient);

/// The methods and parsed path patterns of acceptable standing terms.
fn standing_terms(terms: &GrantTerms<'_>) -> Result<(MethodSet, Vec<PathPattern>), AccessError> {
    if terms.duration_secs == 0 || terms.duration_secs > MAX_GRANT_SECS {
        return Err(AccessError::InvalidGrant(format!(
            "a standing grant lasts from 1 second to {MAX_GRANT_SECS} seconds (90 days)"
        )));
    }
    let methods = MethodSet::of(terms.methods)
        .ok_or_else(|| AccessError::InvalidGrant("name at least one method".to_owned()))?;
    let paths =
        terms.path_patterns.iter().map(|p| PathPattern::parse(p)).collect::<Result<Vec<_>, _>>()?;
    Ok((methods, paths))
}

/// [`grant_standing`] for a credential already looked up (`terms.credential` is not read).
pub(crate) async fn grant_standing_for(
    store: &SharedKeyStore,
    (config, keys, client): &SignedIn,
    credential: &CredentialInfo,
    terms: &GrantTerms<'_>,
) -> Result<IssuedGrant, AccessError> {
    let (methods, paths) = standing_terms(terms)?;
    let record_key =
        record_key(store, config, credential.owner, credential.key_version, credential.id).await?;
    let broker_key = client.broker_key().await?;
    let now = unix_now();
    let expires = now.saturating_add(terms.duration_secs);
    let id = GrantId::random();
    let claims = Claims {
        workspace: config.workspace,
        agent: terms.agent,
        credential: credential.id,
        owner: credential.owner,
        key_version: credential.key_version,
        issuer: config.device,
        methods,
        paths,
        not_before: now,
        expires,
        reuse: Reuse::Standing { grant: id },
    };
    // Issued before registering, so a refused issue registers nothing; registered before it is
    // handed out, so the broker knows every grant an agent can present.
    let capability = Capability::issue(claims, &record_key, &keys.signing, &broker_key)?;
    let method_names: Vec<&str> = terms.methods.iter().map(|m| m.as_str()).collect();
    let grant = client
        .create_grant(id, terms.agent, credential.id, &method_names, terms.path_patterns, expires)
        .await?;
    tracing::info!(grant = %grant.id, agent = %grant.agent, "standing grant issued");
    Ok(IssuedGrant { grant, capability: CapabilityText::new(&capability) })
}

/// The terms of a single-use capability: one request, soon.
#[derive(Debug, Clone)]
pub struct SingleUseTerms<'a> {
    /// The agent it is for.
    pub agent: AgentId,
    /// The credential's name.
    pub credential: &'a str,
    /// The request's method.
    pub method: Method,
    /// The request's path (a pattern such as `/v1/**` is accepted too).
    pub path: &'a str,
    /// How long it stays usable, in seconds (1 to 900).
    pub lifetime_secs: u64,
}

/// Issues a capability for one request, signed by this device and sealed to the broker's key.
/// Nothing is registered at the broker: it records the capability's nonce at first use and
/// refuses it after that, or once it expires.
pub async fn issue_single_use(
    profile: &Profile,
    store: &SharedKeyStore,
    terms: SingleUseTerms<'_>,
) -> Result<CapabilityText, AccessError> {
    single_use_terms(&terms)?;
    let device = signed_in(profile, store).await?;
    let credential = find_credential(&device.2, terms.credential).await?;
    issue_single_use_for(store, &device, &credential, &terms).await
}

/// The method set and parsed path of acceptable single-use terms.
fn single_use_terms(terms: &SingleUseTerms<'_>) -> Result<(MethodSet, PathPattern), AccessError> {
    if terms.lifetime_secs == 0 || terms.lifetime_secs > MAX_SINGLE_USE_LIFETIME_SECS {
        return Err(AccessError::InvalidGrant(format!(
            "a single-use capability lasts from 1 second to {MAX_SINGLE_USE_LIFETIME_SECS} seconds (15 minutes); use a standing grant for longer"
        )));
    }
    let methods = MethodSet::of(&[terms.method])
        .ok_or_else(|| AccessError::InvalidGrant("name a method".to_owned()))?;
    Ok((methods, PathPattern::parse(terms.path)?))
}

/// [`issue_single_use`] for a credential already looked up (`terms.credential` is not read).
pub(crate) async fn issue_single_use_for(
    store: &SharedKeyStore,
    (config, keys, client): &SignedIn,
    credential: &CredentialInfo,
    terms: &SingleUseTerms<'_>,
) -> Result<CapabilityText, AccessError> {
    let (methods, path) = single_use_terms(terms)?;
    let record_key =
        record_key(store, config, credential.owner, credential.key_version, credential.id).await?;
    let broker_key = client.broker_key().await?;
    let now = unix_now();
    let claims = Claims {
        workspace: config.workspace,
        agent: terms.agent,
        credential: credential.id,
        owner: credential.owner,
        key_version: credential.key_version,
        issuer: config.device,
        methods,
        paths: vec![path],
        not_before: now,
        expires: now.saturating_add(terms.lifetime_secs),
        reuse: Reuse::single_use().map_err(|e| AccessError::Crypto(e.to_string()))?,
    };
    let capability = Capability::issue(claims, &record_key, &keys.signing, &broker_key)?;
    tracing::info!(agent = %terms.agent, credential = %credential.id, "single-use capability issued");
    Ok(CapabilityText::new(&capability))
}

fn current_version(config: &ProfileConfig, owner: Owner) -> Result<KeyVersion, AccessError> {
    let (what, version) = match owner {
        Owner::Shared => ("workspace key", config.workspace_key_version),
        Owner::Member(_) => ("member key", config.member_key_version),
    };
    version.ok_or(AccessError::MissingKey { what, version: KeyVersion::FIRST })
}

/// The record key of `credential` under `owner`'s key at `version`, from this device's store.
pub(crate) async fn record_key(
    store: &SharedKeyStore,
    config: &ProfileConfig,
    owner: Owner,
    version: KeyVersion,
    credential: CredentialId,
) -> Result<RecordKey, AccessError> {
    let workspace = config.workspace;
    // Only an absent key means "receive your keys"; a locked, corrupt or unreadable key store
    // is reported as what it is.
    let missing = |what| {
        move |error| match error {
            WorkspaceError::Keychain(KeychainError::Missing { .. }) => {
                AccessError::MissingKey { what, version }
            }
            other => AccessError::Workspace(other),
        }
    };
    match owner {
        Owner::Shared => {
            let key = on_store(store, move |s| s.load_workspace_key(workspace, version))
                .await
                .map_err(missing("workspace key"))?;
            Ok(key.record_key(credential)?)
        }
        Owner::Member(member) => {
            let key = on_store(store, move |s| s.load_member_key(workspace, member, version))
                .await
                .map_err(missing("member key"))?;
            Ok(key.record_key(credential)?)
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use latchkey_core::ids::{CredentialId, DeviceId, KeyVersion, MemberId, Owner, WorkspaceId};
    use zeroize::Zeroizing;

    use super::{AccessError, record_key};
    use crate::keychain::{KeySlot, KeyStore, KeychainError, SharedKeyStore};
    use crate::profile::{KeyStoreKind, ProfileConfig, ProfileName};
    use crate::workspace::WorkspaceError;

    /// A key store whose every read fails with the error `fail` makes.
    #[derive(Debug)]
    struct Failing {
        profile: ProfileName,
        fail: fn() -> KeychainError,
    }

    impl KeyStore for Failing {
        fn profile(&self) -> &ProfileName {
            &self.profile
        }

        fn kind(&self) -> KeyStoreKind {
            KeyStoreKind::EncryptedFile
        }

        fn write_entry(&self, _slot: &KeySlot, _value: &[u8]) -> Result<(), KeychainError> {
            Err((self.fail)())
        }

        fn read_entry(&self, _slot: &KeySlot) -> Result<Zeroizing<Vec<u8>>, KeychainError> {
            Err((self.fail)())
        }

        fn delete_entry(&self, _slot: &KeySlot) -> Result<(), KeychainError> {
            Ok(())
        }
    }

    fn config() -> ProfileConfig {
        ProfileConfig {
            broker_url: "http://127.0.0.1:8740".parse().unwrap(),
            broker_ca: None,
            workspace: WorkspaceId::random(),
            member: MemberId::random(),
            device: DeviceId::random(),
            key_store: KeyStoreKind::EncryptedFile,
            workspace_key_version: Some(KeyVersion::FIRST),
            member_key_version: Some(KeyVersion::FIRST),
            trusted_devices: Vec::new(),
        }
    }

    async fn record_key_failing_with(
        fail: fn() -> KeychainError,
        owner: Owner,
    ) -> Result<(), AccessError> {
        let store: SharedKeyStore =
            Arc::new(Failing { profile: ProfileName::named("test").unwrap(), fail });
        record_key(&store, &config(), owner, KeyVersion::FIRST, CredentialId::random())
            .await
            .map(drop)
    }

    #[tokio::test]
    async fn only_an_absent_key_is_reported_as_missing_and_other_key_store_failures_stay_typed() {
        for owner in [Owner::Shared, Owner::Member(MemberId::random())] {
            let missing = || KeychainError::Missing {
                profile: "test".into(),
                what: "workspace key",
                entry: "workspace/x/key-v1".into(),
            };
            let error = record_key_failing_with(missing, owner).await;
            assert!(
                matches!(
                    error,
                    Err(AccessError::MissingKey { version, .. }) if version == KeyVersion::FIRST
                ),
                "an absent key means this device must receive its keys: {error:?}"
            );

            let locked = record_key_failing_with(|| KeychainError::Locked, owner).await;
            assert!(
                matches!(
                    locked,
                    Err(AccessError::Workspace(WorkspaceError::Keychain(KeychainError::Locked)))
                ),
                "a locked key store is not a missing key (it has its own fix and exit code): {locked:?}"
            );
            let corrupt = || KeychainError::Corrupt {
                profile: "test".into(),
                entry: "workspace/x/key-v1".into(),
                reason: "not 32 bytes",
            };
            let corrupt = record_key_failing_with(corrupt, owner).await;
            assert!(
                matches!(
                    corrupt,
                    Err(AccessError::Workspace(WorkspaceError::Keychain(
                        KeychainError::Corrupt { .. }
                    )))
                ),
                "a corrupt entry is reported as corrupt, not as missing: {corrupt:?}"
            );
        }
    }
}
