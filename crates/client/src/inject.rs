//! Inject mode: the credential itself, for one command's environment on this device
//! (`latchkey run --agent A --inject CREDENTIAL -- cmd`).
//!
//! ```text
//! release_for_inject   every credential by name (metadata)
//!                      -> one POST /v1/agents/{id}/inject for all of them, with the agent
//!                         token's hash: the broker checks agent, pause, and for each credential
//!                         entitlement and the `inject` policy; only if every one passes does it
//!                         commit an `inject_released` audit record per credential (one
//!                         transaction) before it allows; one refusal releases none
//!                      -> only then: the envelopes (ciphertext), opened with the record keys
//!                         this device holds
//!                      -> the API keys, or only the access token of an OAuth credential
//! ```
//!
//! No envelope or key crosses the wire for this: the broker decides and audits, the device
//! releases. The values come back as [`SecretBytes`] (zeroized on drop, redacted in `Debug`);
//! the caller puts it in the command's environment and drops it once the command is spawned.
//! A refresh token is never released: a command holding it could rotate the stored one away.
//! The access token is not refreshed while the command runs.

use std::time::{SystemTime, UNIX_EPOCH};

use latchkey_core::ids::AgentId;
use latchkey_core::payload::{CredentialKind, CredentialPayload};
use latchkey_core::secret::SecretBytes;
use latchkey_core::token::AgentToken;

use crate::access::{AccessError, record_key};
use crate::api::{ApiError, ClientError, CredentialInfo, InjectAllowed, InjectQuery, codes};
use crate::keychain::SharedKeyStore;
use crate::profile::Profile;
use crate::workspace::signed_in;

/// Longest lifetime the broker allows an inject: 24 hours.
pub const MAX_LIFETIME_SECS: u64 = 24 * 60 * 60;
/// Longest command name the broker accepts, in bytes.
pub const MAX_COMMAND_BYTES: usize = 128;

/// An inject could not be released. No message holds a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InjectError {
    /// The profile, key store or broker failed, or this device lacks the key.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// The lifetime is out of range.
    #[error("an inject lasts from 1 second to {MAX_LIFETIME_SECS} seconds (24 hours)")]
    Lifetime,
    /// The command name cannot be sent.
    #[error(
        "the command's program name must be 1 to {MAX_COMMAND_BYTES} bytes without `/` or control characters"
    )]
    Command,
    /// The broker allowed something other than what was asked.
    #[error(
        "the broker's answer names another agent or credential than the one asked for: nothing was released"
    )]
    Mismatch,
    /// The OAuth access token has expired, and an inject does not refresh it.
    #[error(
        "the access token of {name:?} expired at {expired_at} (unix seconds), and an inject does not refresh it: run `latchkey credential refresh {name}` and try again"
    )]
    Expired {
        /// The credential's name.
        name: String,
        /// When it expired.
        expired_at: u64,
    },
    /// The same credential was named twice.
    #[error("the credential {0:?} is named twice: name each credential once")]
    Twice(String),
    /// The value holds a NUL byte, which no environment variable can carry.
    #[error("the credential {0:?} holds a NUL byte, which an environment variable cannot carry")]
    NotEnvironmentSafe(String),
    /// Several credentials were asked for at once and the broker called the request malformed:
    /// it predates releasing several together, and takes one credential per request.
    #[error(
        "the broker does not take {count} credentials in one inject: it is older than this latchkey (it answered: {refusal}); upgrade the broker, or inject one credential at a time (one --inject per command)"
    )]
    BrokerTooOld {
        /// How many credentials were asked for.
        count: usize,
        /// The broker's refusal (`bad_request`).
        refusal: ApiError,
    },
}

impl From<ClientError> for InjectError {
    fn from(error: ClientError) -> Self {
        InjectError::Access(AccessError::Broker(error))
    }
}

/// What to ask for.
#[derive(Debug)]
pub struct InjectTerms<'a> {
    /// The agent the command runs as.
    pub agent: AgentId,
    /// Its token: only its hash is sent.
    pub token: &'a AgentToken,
    /// The credentials' names: all are released, or none is.
    pub credentials: &'a [&'a str],
    /// How long the command may keep them, in seconds (1 to [`MAX_LIFETIME_SECS`]).
    pub lifetime_secs: u64,
    /// The command's program name (no directory, no arguments).
    pub command: &'a str,
}

/// What kind of value was released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InjectedKind {
    /// An API key, as stored (for a provider whose key is encoded on the device, the encoded
    /// form the broker would send).
    ApiKey,
    /// An OAuth access token, without its refresh token; not refreshed while the command runs.
    OAuthAccessToken {
        /// When it expires (unix seconds), if the provider said.
        expires_at: Option<u64>,
    },
}

/// A released credential: the value for the command's environment and what the broker allowed.
#[derive(Debug)]
pub struct InjectedCredential {
    /// The credential as listed.
    pub credential: CredentialInfo,
    /// The broker's allow (its audit record's `seq` among it).
    pub allowed: InjectAllowed,
    /// API key or OAuth access token.
    pub kind: InjectedKind,
    /// The value itself: zeroized on drop, redacted in `Debug`. Never log or print it.
    pub secret: SecretBytes,
}

/// Asks the broker, in one request, to allow releasing every credential named in
/// `terms.credentials` into a command's environment and, only if it allows them all (and has
/// audited each release), opens each envelope on this device with the record key it holds. A
/// refusal of any one is [`InjectError::Access`] wrapping the broker's error (`policy_denied`,
/// `agents_paused`, ...); nothing is released or opened then. The answer is in the order asked.
///
/// A failure on this device after the broker allowed (a missing key, an expired OAuth token)
/// returns no value either, though the broker has recorded the releases.
pub async fn release_for_inject(
    profile: &Profile,
    store: &SharedKeyStore,
    terms: &InjectTerms<'_>,
) -> Result<Vec<InjectedCredential>, InjectError> {
    if terms.lifetime_secs == 0 || terms.lifetime_secs > MAX_LIFETIME_SECS {
        return Err(InjectError::Lifetime);
    }
    if !command_ok(terms.command) {
        return Err(InjectError::Command);
    }
    let (config, _, client) = signed_in(profile, store).await.map_err(AccessError::from)?;
    let listed = client.credentials().await?;
    let mut credentials = Vec::with_capacity(terms.credentials.len());
    for name in terms.credentials {
        let credential = listed
            .iter()
            .find(|c| c.name == *name)
            .ok_or_else(|| AccessError::UnknownCredential((*name).to_owned()))?;
        if credentials.iter().any(|c: &CredentialInfo| c.id == credential.id) {
            return Err(InjectError::Twice((*name).to_owned()));
        }
        credentials.push(credential.clone());
    }
    let ids: Vec<_> = credentials.iter().map(|c| c.id).collect();
    let query = InjectQuery {
        token_hash: terms.token.hash(),
        credentials: &ids,
        lifetime_secs: terms.lifetime_secs,
        command: terms.command,
    };
    let allowed = client
        .request_inject(terms.agent, &query)
        .await
        .map_err(|error| older_broker(error, ids.len()))?;
    let matches = allowed.len() == ids.len()
        && allowed.iter().zip(&ids).all(|(a, id)| a.agent == terms.agent && a.credential == *id);
    if !matches {
        return Err(InjectError::Mismatch);
    }
    let mut released = Vec::with_capacity(credentials.len());
    for (credential, allowed) in credentials.into_iter().zip(allowed) {
        tracing::info!(
            agent = %allowed.agent,
            credential = %credential.id,
            audit_seq = allowed.audit_seq,
            "inject allowed; opening the credential on this device"
        );
        released.push(open(&client, store, &config, credential, allowed).await?);
    }
    Ok(released)
}

/// The error for a refused inject of `count` credentials. Every broker takes one credential as
/// `credential`; several go as `credentials`, a field a broker from before they could be released
/// together does not know, so it answers `bad_request`. A newer broker says `bad_request` about
/// a body only if it is malformed, which this client does not send: for several credentials the
/// refusal is taken to mean an older broker, and says what to do.
fn older_broker(error: ClientError, count: usize) -> InjectError {
    match error {
        ClientError::Api(refusal) if count > 1 && refusal.is(codes::BAD_REQUEST) => {
            InjectError::BrokerTooOld { count, refusal }
        }
        error => error.into(),
    }
}

/// Opens one allowed credential with the record key this device holds.
async fn open(
    client: &crate::api::BrokerClient,
    store: &SharedKeyStore,
    config: &crate::profile::ProfileConfig,
    credential: CredentialInfo,
    allowed: InjectAllowed,
) -> Result<InjectedCredential, InjectError> {
    let (version, envelope) = client.credential_envelope(credential.id).await?;
    let key = record_key(store, config, credential.owner, version, credential.id).await?;
    let plaintext = envelope.open(&key).map_err(AccessError::from)?;
    drop(key);
    let payload =
        CredentialPayload::decode(plaintext.expose_secret()).map_err(AccessError::from)?;
    drop(plaintext);
    let CredentialPayload { kind, secret, .. } = payload;
    let kind = match kind {
        CredentialKind::ApiKey => InjectedKind::ApiKey,
        CredentialKind::OAuth { expires_at, refresh } => {
            // Never released: dropped (zeroized) here.
            drop(refresh);
            if let Some(expired_at) = expires_at.filter(|at| *at <= unix_now()) {
                return Err(InjectError::Expired { name: credential.name, expired_at });
            }
            InjectedKind::OAuthAccessToken { expires_at }
        }
    };
    if secret.expose_secret().contains(&0) {
        return Err(InjectError::NotEnvironmentSafe(credential.name));
    }
    Ok(InjectedCredential { credential, allowed, kind, secret })
}

/// Whether the broker accepts `command` as a program name.
pub fn command_ok(command: &str) -> bool {
    !command.is_empty()
        && command.len() <= MAX_COMMAND_BYTES
        && !command.contains('/')
        && !command.chars().any(char::is_control)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_names_are_program_names_only() {
        assert!(command_ok("python3"), "a plain name");
        assert!(!command_ok(""), "empty");
        assert!(!command_ok("/usr/bin/python3"), "a path says more than the name");
        assert!(!command_ok("a\nb"), "control characters");
        assert!(!command_ok(&"x".repeat(MAX_COMMAND_BYTES + 1)), "too long");
    }

    fn refusal(status: u16, code: &str, message: &str) -> ClientError {
        ClientError::Api(ApiError {
            status,
            code: code.to_owned(),
            message: message.to_owned(),
            problems: Vec::new(),
        })
    }

    #[test]
    fn a_broker_that_calls_several_credentials_malformed_is_named_older() {
        // What a broker from before several credentials answers to `credentials`.
        let old = || refusal(400, codes::BAD_REQUEST, "unknown field `credentials`");
        let error = older_broker(old(), 2);
        assert!(
            matches!(error, InjectError::BrokerTooOld { count: 2, .. }),
            "several credentials refused as malformed: the broker is older: {error:?}"
        );
        let text = error.to_string();
        for needed in ["older than this latchkey", "upgrade the broker", "one credential at a time"]
        {
            assert!(text.contains(needed), "the message says {needed:?}: {text}");
        }
        assert!(text.contains("unknown field `credentials`"), "and what the broker said: {text}");

        // One credential goes in the form every broker takes: its bad_request means something
        // else, and so do other refusals of several.
        assert!(matches!(
            older_broker(old(), 1),
            InjectError::Access(AccessError::Broker(ClientError::Api(_)))
        ));
        for other in [
            refusal(403, codes::POLICY_DENIED, "no permit"),
            refusal(400, codes::INVALID_REQUEST, "credentials name one twice"),
        ] {
            assert!(matches!(
                older_broker(other, 2),
                InjectError::Access(AccessError::Broker(ClientError::Api(_)))
            ));
        }
    }

    #[test]
    fn an_injected_credential_never_prints_its_value() {
        let id = latchkey_core::ids::CredentialId::random();
        let credential: CredentialInfo = serde_json::from_value(serde_json::json!({
            "id": id, "name": "openai", "provider": "openai",
            "upstream_base_url": "https://api.openai.com", "allowed_hosts": ["api.openai.com"],
            "owner": {"kind": "shared"}, "key_version": 1, "status": "active", "scopes": [],
            "expires_hint": null, "revision": 1, "created_at": 0, "updated_at": 0,
        }))
        .expect("credential metadata as the broker answers it");
        let injected = InjectedCredential {
            allowed: InjectAllowed {
                agent: AgentId::random(),
                credential: id,
                credential_name: credential.name.clone(),
                lifetime_secs: 60,
                expires_at: 60,
                policies: Vec::new(),
                audit_seq: 1,
            },
            credential,
            kind: InjectedKind::ApiKey,
            secret: SecretBytes::copy_from(b"sk-DEBUGcanary0123"),
        };
        let text = format!("{injected:?}");
        assert!(text.contains("openai"), "Debug shows the metadata: {text}");
        assert!(!text.contains("DEBUGcanary"), "and never the value: {text}");
    }
}
