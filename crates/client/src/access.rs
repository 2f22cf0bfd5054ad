//! What a member does to let agents call APIs: store an API key (sealed on this device), create
//! agents, and issue standing grants whose capabilities the agents present.
//!
//! ```text
//! add_api_key           payload -> record key (WK or MK, current version) -> envelope -> broker
//! client.create_agent   the broker answers the agent's token once
//! grant_standing        grant registered at the broker, then a capability signed by this device
//!                       and sealed to the broker key, carrying the credential's record key
//! ```
//!
//! The API key and every key stay in zeroizing types; the broker receives only the envelope.
//! A capability holds the record key only sealed to the broker, so the agent learns nothing from
//! it; it is still handled as a secret here (redacted `Debug`), because with the agent's token it
//! lets the holder make calls until the grant expires or is revoked.

use core::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use latchkey_core::capability::{
    Capability, CapabilityError, Claims, Method, MethodSet, PathPattern, Reuse,
};
use latchkey_core::envelope::{Envelope, EnvelopeError};
use latchkey_core::ids::{AgentId, CredentialId, GrantId, KeyVersion, Owner};
use latchkey_core::keys::{KeyError, RecordKey};
use latchkey_core::payload::{CredentialKind, CredentialPayload, Injection, PayloadError};
use latchkey_core::secret::SecretBytes;

use crate::api::{ClientError, CredentialInfo, GrantInfo, NewCredential};
use crate::keychain::SharedKeyStore;
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
    /// No credential with this name is visible to this member.
    #[error(
        "no credential named {0:?} in this workspace: list them with `latchkey credential list`"
    )]
    UnknownCredential(String),
    /// The grant's terms are not acceptable.
    #[error("invalid grant: {0}")]
    InvalidGrant(String),
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
    /// The key itself, read from a prompt or stdin, never from a command line.
    pub key: SecretBytes,
}

/// Seals `new.key` on this device under the current workspace key (shared) or this member's
/// key (personal) and stores the envelope at the broker.
pub async fn add_api_key(
    profile: &Profile,
    store: &SharedKeyStore,
    new: NewApiKey<'_>,
) -> Result<CredentialInfo, AccessError> {
    let (config, _, client) = signed_in(profile, store).await?;
    let owner = if new.shared { Owner::Shared } else { Owner::Member(config.member) };
    let version = current_version(&config, owner)?;
    let id = CredentialId::random();
    let record_key = record_key(store, &config, owner, version, id).await?;
    let payload = CredentialPayload {
        kind: CredentialKind::ApiKey,
        injection: new.injection,
        secret: new.key,
    };
    let envelope = Envelope::seal(&record_key, &payload.encode()?)?;
    drop(payload);
    let stored = client
        .create_credential(&NewCredential {
            id,
            name: new.name,
            provider: new.provider,
            upstream_base_url: new.base_url,
            allowed_hosts: new.allowed_hosts,
            shared: new.shared,
            key_version: version,
            scopes: &[],
            expires_hint: None,
            envelope: &envelope,
        })
        .await?;
    tracing::info!(credential = %stored.id, name = %stored.name, "credential stored");
    Ok(stored)
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
    if terms.duration_secs == 0 || terms.duration_secs > MAX_GRANT_SECS {
        return Err(AccessError::InvalidGrant(format!(
            "a standing grant lasts from 1 second to {MAX_GRANT_SECS} seconds (90 days)"
        )));
    }
    let methods = MethodSet::of(terms.methods)
        .ok_or_else(|| AccessError::InvalidGrant("name at least one method".to_owned()))?;
    let paths =
        terms.path_patterns.iter().map(|p| PathPattern::parse(p)).collect::<Result<Vec<_>, _>>()?;
    let (config, keys, client) = signed_in(profile, store).await?;
    let credential = client
        .credentials()
        .await?
        .into_iter()
        .find(|c| c.name == terms.credential)
        .ok_or_else(|| AccessError::UnknownCredential(terms.credential.to_owned()))?;
    let record_key =
        record_key(store, &config, credential.owner, credential.key_version, credential.id).await?;
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
    Ok(IssuedGrant { grant, capability: CapabilityText(capability.encode()) })
}

fn current_version(config: &ProfileConfig, owner: Owner) -> Result<KeyVersion, AccessError> {
    let (what, version) = match owner {
        Owner::Shared => ("workspace key", config.workspace_key_version),
        Owner::Member(_) => ("member key", config.member_key_version),
    };
    version.ok_or(AccessError::MissingKey { what, version: KeyVersion::FIRST })
}

/// The record key of `credential` under `owner`'s key at `version`, from this device's store.
async fn record_key(
    store: &SharedKeyStore,
    config: &ProfileConfig,
    owner: Owner,
    version: KeyVersion,
    credential: CredentialId,
) -> Result<RecordKey, AccessError> {
    let workspace = config.workspace;
    let missing = |what| AccessError::MissingKey { what, version };
    match owner {
        Owner::Shared => {
            let key = on_store(store, move |s| s.load_workspace_key(workspace, version))
                .await
                .map_err(|_| missing("workspace key"))?;
            Ok(key.record_key(credential)?)
        }
        Owner::Member(member) => {
            let key = on_store(store, move |s| s.load_member_key(workspace, member, version))
                .await
                .map_err(|_| missing("member key"))?;
            Ok(key.record_key(credential)?)
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
