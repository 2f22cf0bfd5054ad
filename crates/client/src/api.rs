//! The broker's device API (docs/api.md), every request signed by the device key.
//!
//! [`BrokerClient`] signs each request with `latchkey_core::httpsig::sign` (RFC 9421, 60-second
//! validity, fresh nonce) over the target URI `<broker URL><path>`, exactly what the broker
//! rebuilds from its public origin. Registration requests (`create_workspace`, `join`) are
//! signed the same way: the broker checks them against the key their body registers.
//!
//! Errors: the broker's `{"code", "message"}` becomes an [`ApiError`] whose `code` is the
//! broker's stable code (see [`codes`]), except `429 rate_limited`, which becomes
//! [`ClientError::RateLimited`] with the broker's `Retry-After`; everything else is a
//! [`ClientError`]. No error carries a request body or the raw response body. Nothing is retried
//! here: a refused request is the caller's to send again.
//!
//! Redirects are not followed (a signature covers one target URI), responses larger than
//! [`MAX_RESPONSE_BYTES`] are refused (but for the audit export, which is read as it arrives),
//! and plain `http` is accepted only for loopback brokers.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey_core::creation::CreationToken;
use latchkey_core::envelope::Envelope;
use latchkey_core::fingerprint::Fingerprint;
use latchkey_core::httpsig::{self, HttpSigError, SignedRequestParts};
use latchkey_core::ids::{
    AgentId, ApprovalId, CredentialId, DeviceId, GrantId, InviteId, KeyVersion, LeaseId, MemberId,
    Owner, WorkspaceId,
};
use latchkey_core::keys::{
    BrokerPublicKey, DevicePublicKeys, DeviceSigningKey, DeviceVerifyingKey, ExchangePublicKey,
    WrappedKey, WrappedKind,
};
use latchkey_core::tls::{TlsProblem, TrustAnchors, TrustAnchorsError, tls_problem};
use latchkey_core::token::{AgentToken, TokenHash};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use zeroize::Zeroizing;

use crate::access::CapabilityText;

/// Largest response body read, in bytes.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// How long each request signature is valid, in seconds.
pub const SIGNATURE_VALIDITY_SECS: u64 = 60;
/// How long the approval stream may stay silent before it counts as broken: the broker sends a
/// keep-alive comment every 15 seconds.
pub const APPROVAL_STREAM_READ_TIMEOUT: Duration = Duration::from_secs(45);

/// The broker's stable error codes (`crates/server/src/error.rs`) the client acts on.
pub mod codes {
    /// Malformed request.
    pub const BAD_REQUEST: &str = "bad_request";
    /// A value is not acceptable.
    pub const INVALID_REQUEST: &str = "invalid_request";
    /// No such resource (or not visible to the caller).
    pub const NOT_FOUND: &str = "not_found";
    /// Conflicts with the current state.
    pub const CONFLICT: &str = "conflict";
    /// The request signature did not verify.
    pub const SIGNATURE_INVALID: &str = "signature_invalid";
    /// The signing device is not enrolled, or was removed.
    pub const UNKNOWN_DEVICE: &str = "unknown_device";
    /// A signature nonce was used twice.
    pub const REPLAYED_REQUEST: &str = "replayed_request";
    /// Authenticated but not allowed.
    pub const FORBIDDEN: &str = "forbidden";
    /// The invite code is wrong, used, expired or revoked.
    pub const INVITE_INVALID: &str = "invite_invalid";
    /// A held call was denied by a member (the agent's answer).
    pub const APPROVAL_DENIED: &str = "approval_denied";
    /// A member paused every agent call in the workspace (the agent's answer).
    pub const AGENTS_PAUSED: &str = "agents_paused";
    /// Only an admin or the member who paused may resume the agents.
    pub const RESUME_NOT_ALLOWED: &str = "resume_not_allowed";
    /// The workspace's policies refused (a call, or an inject).
    pub const POLICY_DENIED: &str = "policy_denied";
    /// An agent token (or its hash) is unknown, or not that of the named agent.
    pub const UNKNOWN_TOKEN: &str = "unknown_token";
    /// The agent was revoked.
    pub const TOKEN_REVOKED: &str = "token_revoked";
    /// Someone else (another device or process, or the broker) holds the credential's refresh
    /// lease: it is being refreshed right now.
    pub const REFRESH_IN_PROGRESS: &str = "refresh_in_progress";
    /// The broker creates no workspaces: join one with an invite.
    pub const WORKSPACE_CREATION_CLOSED: &str = "workspace_creation_closed";
    /// The broker creates workspaces only with its operator's creation token, and none was sent.
    pub const CREATION_TOKEN_REQUIRED: &str = "creation_token_required";
    /// The creation token sent is not the broker's.
    pub const CREATION_TOKEN_INVALID: &str = "creation_token_invalid";
    /// The workspace (or the agent or member concerned) already has as many agents, grants,
    /// credentials, pending invites, members, devices or policies as the broker keeps; the
    /// message names the limit and what to remove first. Nothing was written.
    pub const LIMIT_REACHED: &str = "limit_reached";
    /// This device sent more requests than the broker accepts from one device; nothing was done.
    /// Surfaces as [`ClientError::RateLimited`](super::ClientError::RateLimited) when the answer
    /// says how long to wait.
    pub const RATE_LIMITED: &str = "rate_limited";
}

// ---------------------------------------------------------------------------------------------
// Broker URL
// ---------------------------------------------------------------------------------------------

/// A broker's base URL: `https://host[:port][/prefix]`, or `http://` for a loopback broker.
/// No user info, query or fragment; kept without a trailing slash.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BrokerUrl(String);

impl BrokerUrl {
    /// The URL as text, without a trailing slash.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The absolute URL of `path` (which starts with `/`) at this broker.
    pub fn join(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }
}

impl FromStr for BrokerUrl {
    type Err = BrokerUrlError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let url = url::Url::parse(text.trim()).map_err(|_| BrokerUrlError::NotAUrl)?;
        let loopback = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => return Err(BrokerUrlError::NotAUrl),
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => return Err(BrokerUrlError::PlainHttp),
            _ => return Err(BrokerUrlError::NotAUrl),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(BrokerUrlError::Credentials);
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(BrokerUrlError::QueryOrFragment);
        }
        Ok(Self(url.as_str().trim_end_matches('/').to_owned()))
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BrokerUrl({})", self.0)
    }
}

impl Serialize for BrokerUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for BrokerUrl {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A broker URL was not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerUrlError {
    /// Not an absolute http(s) URL with a host.
    #[error("the broker URL must be an absolute https:// URL, such as https://broker.example.com")]
    NotAUrl,
    /// `http://` to a host that is not loopback.
    #[error(
        "the broker URL must use https:// (plain http:// is accepted only for 127.0.0.1, ::1 and localhost)"
    )]
    PlainHttp,
    /// `user:password@` in the URL.
    #[error("the broker URL must not contain a user name or password")]
    Credentials,
    /// `?query` or `#fragment` in the URL.
    #[error("the broker URL must not have a query or fragment")]
    QueryOrFragment,
}

/// Where a device reaches its broker: the URL, and the certificate authorities this device
/// trusts for it besides the system's (a team server behind a private authority; kept in the
/// profile, see `ProfileConfig::broker_ca`). They are trusted together with those
/// [`BROKER_CA_VAR`] names, and never instead of the system's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerEndpoint {
    url: BrokerUrl,
    authorities: Option<TrustAnchors>,
}

impl BrokerEndpoint {
    /// `url`, trusted through the system's authorities (and [`BROKER_CA_VAR`]'s).
    pub fn new(url: BrokerUrl) -> Self {
        Self { url, authorities: None }
    }

    /// The same broker, its certificate also accepted when issued by one of `authorities`.
    #[must_use]
    pub fn trusting(mut self, authorities: Option<TrustAnchors>) -> Self {
        self.authorities = authorities;
        self
    }

    /// The broker's URL.
    pub fn url(&self) -> &BrokerUrl {
        &self.url
    }

    /// The authorities trusted for this broker besides the system's, if any.
    pub fn authorities(&self) -> Option<&TrustAnchors> {
        self.authorities.as_ref()
    }
}

impl From<BrokerUrl> for BrokerEndpoint {
    fn from(url: BrokerUrl) -> Self {
        Self::new(url)
    }
}

impl From<&BrokerUrl> for BrokerEndpoint {
    fn from(url: &BrokerUrl) -> Self {
        Self::new(url.clone())
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// The broker refused a request: its stable `code` and its message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the broker refused the request ({code}): {message}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// The stable error code, e.g. `not_found` (see [`codes`]).
    pub code: String,
    /// The broker's explanation.
    pub message: String,
    /// For a refused policy (`PUT /v1/policies/{id}`): each problem found, with its position.
    /// Empty for every other error.
    pub problems: Vec<PolicyProblem>,
}

impl ApiError {
    /// Whether the broker answered with this stable code.
    pub fn is(&self, code: &str) -> bool {
        self.code == code
    }
}

/// A broker request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The broker answered with an error.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The broker refused the request because this device sent more requests than it accepts
    /// from one device (`429 rate_limited`); nothing was done, and the same request may be sent
    /// again after `retry_after`. If nobody on this device sent that many, an admin should remove
    /// the device.
    #[error(
        "the broker refused the request (rate_limited): this device sent more requests than the broker accepts from one device; wait {} and try again (if nobody on this device sent that many requests, an admin should remove the device)",
        seconds(*retry_after)
    )]
    RateLimited {
        /// How long to wait: the broker's `Retry-After`, at least a second.
        retry_after: Duration,
    },
    /// The broker's TLS certificate was refused, or the TLS handshake with it failed: not
    /// something a retry fixes.
    #[error("{}", tls_refusal(broker, *problem))]
    Tls {
        /// The broker URL.
        broker: String,
        /// What was wrong.
        problem: TlsProblem,
    },
    /// The broker could not be reached, or the connection failed.
    #[error("cannot reach the broker at {broker}: {source}")]
    Transport {
        /// The broker URL.
        broker: String,
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },
    /// The broker answered something that is not what this client expects.
    #[error(
        "the broker answered {method} {path} with status {status} and {problem}: check the broker URL and that the broker and latchkey versions match"
    )]
    UnexpectedResponse {
        /// The request method.
        method: &'static str,
        /// The request path.
        path: String,
        /// The HTTP status.
        status: u16,
        /// What is wrong with the response (never the response itself).
        problem: String,
    },
    /// The request could not be signed.
    #[error("cannot sign the request: {0}")]
    Sign(#[from] HttpSigError),
    /// The system clock reads before 1970.
    #[error("the system clock is wrong (before 1970): set the date and time")]
    Clock,
    /// The HTTP client could not be built.
    #[error("cannot set up the HTTP client: {0}")]
    Setup(#[source] reqwest::Error),
    /// The extra certificate authorities for the broker cannot be used.
    #[error(transparent)]
    BrokerCa(#[from] BrokerCaError),
    /// A stream from the broker (the approval stream, whose keep-alives count, or an audit
    /// export) sent nothing for longer than its read timeout: the connection counts as lost
    /// (open the stream again).
    #[error(
        "the broker at {broker} sent nothing on the {what} for {silent:?}: the connection is treated as lost"
    )]
    Stalled {
        /// The broker URL.
        broker: String,
        /// What was being read: `approval stream` (silent even of its keep-alives) or `audit
        /// export`.
        what: &'static str,
        /// How long it was silent (the stream's read timeout).
        silent: Duration,
    },
}

impl ClientError {
    /// The broker's error, if it answered with one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            ClientError::Api(e) => Some(e),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------------

/// A member's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Manages members, devices and shared credentials.
    Admin,
    /// Uses shared credentials and their own.
    Member,
}

/// A one-time invite code: shown once, read out to the person joining. Zeroized on drop,
/// redacted in `Debug`.
pub struct InviteCode(Zeroizing<String>);

impl InviteCode {
    /// The code as typed or shown.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl FromStr for InviteCode {
    type Err = InviteCodeError;

    /// Accepts what a person types; the broker reads it forgivingly (case, dashes, spaces).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let symbols = trimmed.chars().filter(|c| *c != '-' && *c != ' ').count();
        if symbols != 28
            || !trimmed.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ' ')
        {
            return Err(InviteCodeError);
        }
        Ok(Self(Zeroizing::new(trimmed.to_owned())))
    }
}

impl fmt::Debug for InviteCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InviteCode([REDACTED])")
    }
}

/// A typed invite code is not 28 letters and digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "an invite code has 28 letters and digits (dashes and spaces optional): check what you typed"
)]
pub struct InviteCodeError;

/// Who an invite admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteFor {
    /// A new member with this role.
    NewMember(Role),
    /// Another device of this existing member.
    Device(MemberId),
}

/// A created invite.
#[derive(Debug)]
pub struct Invite {
    /// Its id, to list and revoke it by ([`BrokerClient::invites`],
    /// [`BrokerClient::revoke_invite`]).
    pub id: InviteId,
    /// The code to read out. Shown once: the broker keeps only its hash.
    pub code: InviteCode,
    /// When it dies (unix seconds).
    pub expires_at: u64,
    /// Who it admits.
    pub invite_for: InviteFor,
}

/// A pending invite as the broker lists it: unused, unexpired and still usable. Never its code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingInvite {
    /// The invite.
    pub id: InviteId,
    /// Who it admits.
    pub invite_for: InviteFor,
    /// The device that made it.
    pub created_by: DeviceId,
    /// That device's member.
    pub created_by_member: MemberId,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds; the code is refused from then on.
    pub expires_at: u64,
}

/// Who is joining.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinAs {
    /// A new member (with a new id chosen by the device) and their name.
    NewMember {
        /// The new member's id.
        id: MemberId,
        /// Their name, shown to others.
        name: String,
    },
    /// Another device of an existing member (the one the invite names).
    ExistingMember(MemberId),
}

/// The broker's answer to a join.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Joined {
    /// The workspace joined.
    pub workspace: WorkspaceId,
    /// The member the device belongs to.
    pub member: MemberId,
    /// The device.
    pub device: DeviceId,
    /// The member's role.
    pub role: Role,
    /// Whether the member was created by this join.
    pub new_member: bool,
    /// The fingerprint of the keys the broker registered, as the broker computed it. Compare it
    /// with the one computed locally: a difference means the broker registered other keys.
    #[serde(rename = "fingerprint")]
    pub broker_fingerprint: Fingerprint,
}

/// Who the signing device is (`GET /v1/me`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Me {
    /// The workspace.
    pub workspace: WorkspaceId,
    /// The workspace's name, as given at its creation; `None` from brokers that do not say it.
    pub workspace_name: Option<String>,
    /// The member.
    pub member: MemberId,
    /// The device.
    pub device: DeviceId,
    /// The member's role now.
    pub role: Role,
}

/// The broker's answer to a workspace creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct WorkspaceCreated {
    /// The workspace.
    pub workspace: WorkspaceId,
    /// The first member.
    pub member: MemberId,
    /// The first device.
    pub device: DeviceId,
    /// `admin`.
    pub role: Role,
}

/// What `POST /v1/workspaces` registers. The device is the client's own.
#[derive(Debug)]
pub struct NewWorkspace<'a> {
    /// The new workspace's id (chosen by the device: it is bound into wrapped keys).
    pub workspace: WorkspaceId,
    /// Its name.
    pub workspace_name: &'a str,
    /// The first member's id.
    pub member: MemberId,
    /// The first member's name.
    pub member_name: &'a str,
    /// This device's name.
    pub device_name: &'a str,
    /// This device's public keys.
    pub device_keys: DevicePublicKeys,
    /// The workspace key v1 and the member key v1, wrapped by this device to itself.
    pub wrapped_keys: [&'a WrappedKey; 2],
    /// The broker's creation token, for a broker whose operator lets workspaces be created with
    /// it alone; `None` for an open broker (the field is then left out of the request).
    pub creation_token: Option<&'a CreationToken>,
}

/// An active member and their devices (`GET /v1/members`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member.
    pub id: MemberId,
    /// Their name.
    pub name: String,
    /// Their role.
    pub role: Role,
    /// When they joined (unix seconds).
    pub created_at: u64,
    /// Their active devices.
    pub devices: Vec<DeviceSummary>,
}

/// A device as listed with its member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSummary {
    /// The device.
    pub id: DeviceId,
    /// Its name.
    pub name: String,
    /// When it was enrolled (unix seconds).
    pub created_at: u64,
    /// Its fingerprint as the broker computed it (for display; not a verification).
    #[serde(rename = "fingerprint")]
    pub broker_fingerprint: Fingerprint,
}

/// A device with its public keys (`GET /v1/devices/{id}`, and senders of wrapped keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The device.
    pub id: DeviceId,
    /// Its member.
    pub member: MemberId,
    /// Its name.
    pub name: String,
    /// When it was enrolled (unix seconds).
    pub created_at: u64,
    /// Its public keys, as the broker has them.
    pub keys: DevicePublicKeys,
    /// The fingerprint the broker claims. Never trust it: use [`Device::fingerprint`].
    pub broker_fingerprint: Fingerprint,
    /// The device has been removed (senders of wrapped keys only).
    pub removed: bool,
}

impl Device {
    /// The fingerprint of the keys as received, computed here.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.keys.signing.to_bytes(), &self.keys.exchange.to_bytes())
    }
}

/// The broker's answer to `PUT /v1/wrapped-keys`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct WrappedKeysStored {
    /// Keys newly stored.
    pub stored: usize,
    /// Keys that were already stored with the same bytes.
    pub unchanged: usize,
}

/// A wrapped key addressed to this device (`GET /v1/wrapped-keys`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveredKey {
    /// The wrapped key; its header says which key, from whom, to whom.
    pub key: WrappedKey,
    /// The device that wrapped it, as the broker knows it (`None` if the broker has no record).
    /// Trust it only after comparing its fingerprint.
    pub sender: Option<Device>,
}

// ---------------------------------------------------------------------------------------------
// Credentials, agents and grants
// ---------------------------------------------------------------------------------------------

/// A credential's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialStatus {
    /// Agents may use it.
    Active,
    /// The provider refused it; its owner must connect it again.
    ReconnectNeeded,
    /// Switched off.
    Disabled,
}

/// A credential's metadata as the broker answers it (never the envelope).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialInfo {
    /// The credential.
    pub id: CredentialId,
    /// The name agents use in `/p/{name}/...`.
    pub name: String,
    /// The provider catalog id.
    pub provider: String,
    /// Where calls go.
    pub upstream_base_url: String,
    /// Hosts the proxy may contact.
    pub allowed_hosts: Vec<String>,
    /// Shared (workspace key) or personal (member key).
    pub owner: Owner,
    /// The key version its envelope is sealed under.
    pub key_version: KeyVersion,
    /// Whether agents may use it.
    pub status: CredentialStatus,
    /// OAuth scopes, if any.
    pub scopes: Vec<String>,
    /// When the secret is expected to expire (unix seconds).
    pub expires_hint: Option<u64>,
    /// Whose account at the provider it acts as (`octocat`), as the connecting device found it
    /// or was told; `None` when unknown, and from brokers that do not keep it.
    #[serde(default)]
    pub account: Option<String>,
    /// Optimistic-concurrency token.
    pub revision: u64,
    /// Creation time (unix seconds).
    pub created_at: u64,
    /// Last change (unix seconds).
    pub updated_at: u64,
    /// When the proxy last forwarded an agent's call with it (unix seconds, to the second);
    /// `None` before the first, and from brokers that do not record it.
    pub last_used_at: Option<u64>,
}

/// A credential to store (`POST /v1/credentials`): metadata and an envelope sealed on the device.
#[derive(Debug)]
pub struct NewCredential<'a> {
    /// Chosen by the device: it is bound into the envelope.
    pub id: CredentialId,
    /// The name agents use.
    pub name: &'a str,
    /// The provider catalog id.
    pub provider: &'a str,
    /// Where calls go.
    pub upstream_base_url: &'a str,
    /// Hosts the proxy may contact.
    pub allowed_hosts: &'a [String],
    /// Shared (workspace key; admins only) or this member's own.
    pub shared: bool,
    /// The key version `envelope` is sealed under.
    pub key_version: KeyVersion,
    /// OAuth scopes, if any.
    pub scopes: &'a [String],
    /// When the secret is expected to expire.
    pub expires_hint: Option<u64>,
    /// Whose account at the provider it acts as, if known.
    pub account: Option<&'a str>,
    /// The sealed payload.
    pub envelope: &'a Envelope,
}

/// An agent as the broker lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// The agent.
    pub id: AgentId,
    /// Its name.
    pub name: String,
    /// The member who owns it.
    pub owner: MemberId,
    /// Creation time (unix seconds).
    pub created_at: u64,
    /// When it was revoked.
    pub revoked_at: Option<u64>,
    /// When the proxy last saw its token (to the second).
    pub last_used_at: Option<u64>,
}

/// A new agent and its token, shown this once.
#[derive(Debug)]
pub struct CreatedAgent {
    /// The agent.
    pub agent: AgentInfo,
    /// Its token (secret; redacted in `Debug`).
    pub token: AgentToken,
}

/// A standing grant as the broker lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantInfo {
    /// The grant (the standing capability's grant id).
    pub id: GrantId,
    /// Its agent.
    pub agent: AgentId,
    /// The credential it opens.
    pub credential: CredentialId,
    /// The device that issued it.
    pub issued_by: DeviceId,
    /// Allowed methods.
    pub methods: Vec<String>,
    /// Allowed path patterns.
    pub path_patterns: Vec<String>,
    /// Expiry (unix seconds).
    pub expires_at: u64,
    /// Registration time.
    pub created_at: u64,
    /// When it was revoked.
    pub revoked_at: Option<u64>,
}

/// Which audit records to read (`GET /v1/audit`, `GET /v1/audit/export`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only this agent's records.
    pub agent: Option<AgentId>,
    /// Only records about the credential with this name.
    pub credential: Option<String>,
    /// `allowed` or `denied`.
    pub decision: Option<String>,
    /// Only records of this kind, e.g. `proxy_attempt` (kinds in docs/protocol.md).
    pub kind: Option<String>,
    /// Only records at or after this time (unix milliseconds).
    pub since_ms: Option<u64>,
    /// Only records before this time (unix milliseconds).
    pub until_ms: Option<u64>,
    /// Only records after this seq (in the order read: oldest first for an export).
    pub after_seq: Option<u64>,
    /// At most this many (listing: 1 to 1000, default 100).
    pub limit: Option<u32>,
}

impl AuditFilter {
    fn query(&self) -> String {
        let mut pairs = url::form_urlencoded::Serializer::new(String::new());
        if let Some(agent) = self.agent {
            pairs.append_pair("agent", &agent.to_string());
        }
        if let Some(credential) = &self.credential {
            pairs.append_pair("credential", credential);
        }
        if let Some(decision) = &self.decision {
            pairs.append_pair("decision", decision);
        }
        if let Some(kind) = &self.kind {
            pairs.append_pair("kind", kind);
        }
        if let Some(since) = self.since_ms {
            pairs.append_pair("since_ms", &since.to_string());
        }
        if let Some(until) = self.until_ms {
            pairs.append_pair("until_ms", &until.to_string());
        }
        if let Some(after) = self.after_seq {
            pairs.append_pair("after_seq", &after.to_string());
        }
        if let Some(limit) = self.limit {
            pairs.append_pair("limit", &limit.to_string());
        }
        pairs.finish()
    }
}

/// The longest an audit export may stay silent before it counts as lost. The export as a whole
/// has no time limit: a long log over a slow link takes as long as it takes.
pub const EXPORT_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// An audit export being received ([`BrokerClient::audit_export`]).
#[derive(Debug)]
pub struct ExportBody<'a> {
    client: &'a BrokerClient,
    response: reqwest::Response,
    read_timeout: Duration,
}

impl ExportBody<'_> {
    /// The next chunk of the export; `None` at its end. A connection that breaks off, or that
    /// stays silent for the read timeout ([`EXPORT_READ_TIMEOUT`] by default), is an error,
    /// never a short export.
    pub async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, ClientError> {
        tokio::time::timeout(self.read_timeout, self.response.chunk())
            .await
            .map_err(|_| ClientError::Stalled {
                broker: self.client.broker.url().to_string(),
                what: "audit export",
                silent: self.read_timeout,
            })?
            .map_err(|e| self.client.transport(e))
    }
}

/// One audit record as the broker lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the workspace's chain.
    pub seq: u64,
    /// The previous record's hash (hex).
    pub prev_hash: String,
    /// This record's hash (hex).
    pub hash: String,
    /// The record itself (fields in docs/protocol.md, "Audit log").
    pub record: serde_json::Value,
}

/// The broker's verdict on its chain (`GET /v1/audit/verify`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditVerdict {
    /// Whether the whole chain verified.
    pub ok: bool,
    /// Records checked (when it verified).
    pub records: Option<u64>,
    /// The last record's hash (when it verified).
    pub head: Option<String>,
    /// The first broken record (when it did not).
    pub first_broken_seq: Option<u64>,
    /// Why it broke.
    pub reason: Option<String>,
    /// The first record the broker checked (when it verified): 1, or where it was asked to start.
    #[serde(default)]
    pub checked_from: Option<u64>,
}

/// What removing a device or a member did (`DELETE /v1/devices/{id}`, `/v1/members/{id}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removal {
    /// Devices marked removed.
    pub devices_removed: u64,
    /// A removed device held the workspace key: rotate it (`latchkey rotate`), since the broker
    /// cannot.
    pub rotation_recommended: bool,
    /// A removed member's agents, revoked with her.
    #[serde(default)]
    pub agents_revoked: u64,
    /// A removed member's personal credentials, deleted with her (no one could open them).
    #[serde(default)]
    pub personal_credentials_deleted: u64,
}

/// A credential's full replacement (`PUT /v1/credentials/{id}`): every field is sent again.
#[derive(Debug)]
pub struct CredentialReplacement<'a> {
    /// The revision this device last read; a stale one is refused with `409 conflict`.
    pub revision: u64,
    /// The name agents use.
    pub name: &'a str,
    /// The provider catalog id.
    pub provider: &'a str,
    /// Where calls go.
    pub upstream_base_url: &'a str,
    /// Hosts the proxy may contact.
    pub allowed_hosts: &'a [String],
    /// OAuth scopes, if any.
    pub scopes: &'a [String],
    /// When the secret is expected to expire.
    pub expires_hint: Option<u64>,
    /// Whose account at the provider it acts as; `None` leaves the credential without one.
    pub account: Option<&'a str>,
    /// The key version `envelope` is sealed under (the owner's current one).
    pub key_version: KeyVersion,
    /// The sealed payload.
    pub envelope: &'a Envelope,
    /// A new status, or `None` to keep it.
    pub status: Option<CredentialStatus>,
    /// The refresh lease this device holds when it stores a refresh: given back with the write.
    pub lease: Option<LeaseId>,
}

/// A credential's refresh lease, held by this device (`POST /v1/credentials/{id}/refresh-lease`):
/// while it is held nobody else presents the credential's refresh token to the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct RefreshLease {
    /// Name it when storing the refresh ([`CredentialReplacement::lease`]) or giving it back.
    pub lease: LeaseId,
    /// When it lapses (unix seconds); from then on anyone may take it over.
    pub expires_at: u64,
    /// The credential's revision when the lease was taken: if this device read an older one,
    /// someone wrote the credential since (perhaps a refresh that rotated the refresh token).
    pub revision: u64,
}

// ---------------------------------------------------------------------------------------------
// Policies
// ---------------------------------------------------------------------------------------------

/// A policy's id: 1 to 64 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit; `check` is
/// reserved (it names the policy tester endpoint).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct PolicyId(String);

impl PolicyId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for PolicyId {
    type Err = PolicyIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let valid = text.len() <= 64
            && text.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            && text != "check";
        if valid { Ok(Self(text.to_owned())) } else { Err(PolicyIdError) }
    }
}

impl<'de> Deserialize<'de> for PolicyId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A text is not a policy id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "a policy id is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit (and not `check`)"
)]
pub struct PolicyIdError;

/// One problem Cedar found in a policy: a refused policy's errors, a saved one's warnings, or
/// why a stored policy no longer validates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyProblem {
    /// `syntax`, `schema`, `id` or `warning`.
    pub kind: String,
    /// What is wrong, in Cedar's words.
    pub message: String,
    /// Cedar's suggestion, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// 1-based line of the first offending character, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// 1-based column (in characters) of the first offending character, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
}

impl fmt::Display for PolicyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, "line {line}, column {column}: ")?;
        }
        write!(f, "{} ({})", self.message, self.kind)?;
        if let Some(help) = &self.help {
            write!(f, "; {help}")?;
        }
        Ok(())
    }
}

/// A stored policy (`GET /v1/policies`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Its id.
    pub id: PolicyId,
    /// What it is for.
    pub description: String,
    /// The Cedar text.
    pub source: String,
    /// Whether it is evaluated.
    pub enabled: bool,
    /// Last change (unix seconds).
    pub updated_at: u64,
    /// Moves on with every change and is never reused within the workspace: name it in
    /// [`NewPolicy::expected`] or [`BrokerClient::delete_policy`] so a change made by someone
    /// else since it was read is refused rather than overwritten.
    #[serde(default)]
    pub revision: u64,
    /// Why it no longer validates (after a schema change); while any policy has problems, every
    /// call in the workspace is denied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<PolicyProblem>,
}

/// A policy to create or replace (`PUT /v1/policies/{id}`).
#[derive(Debug, Clone, Copy)]
pub struct NewPolicy<'a> {
    /// Exactly one static Cedar policy, at most 16 KiB.
    pub source: &'a str,
    /// At most 500 characters, no control characters.
    pub description: &'a str,
    /// Whether it is evaluated.
    pub enabled: bool,
    /// What the write expects to replace; a policy found otherwise is refused with
    /// [`codes::CONFLICT`] and nothing is stored.
    pub expected: Expected,
}

/// What a policy change expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// Whatever is there: an unconditional write.
    Anything,
    /// No policy with this id: create, never replace.
    Absent,
    /// The policy at exactly this revision ([`Policy::revision`], as read).
    Revision(u64),
}

impl Expected {
    /// From a revision as people and the UI give it: none (unconditional), 0 (create only), or
    /// the revision read (revisions start at 1).
    pub fn from_revision(revision: Option<u64>) -> Self {
        match revision {
            None => Self::Anything,
            Some(0) => Self::Absent,
            Some(revision) => Self::Revision(revision),
        }
    }

    /// The `revision` the broker takes: none, 0 for absent, or the revision.
    fn wire(self) -> Option<u64> {
        match self {
            Self::Anything => None,
            Self::Absent => Some(0),
            Self::Revision(revision) => Some(revision),
        }
    }
}

/// A saved policy and the validator's warnings about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedPolicy {
    /// The policy as stored.
    pub policy: Policy,
    /// Warnings: stored anyway, but it may not say what was meant.
    pub warnings: Vec<PolicyProblem>,
    /// Whether it was new (`false`: it replaced one with the same id).
    #[serde(default)]
    pub created: bool,
}

/// What would authorise a hypothetical call (`POST /v1/policies/check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantKind {
    /// A single-use capability (what an approval gives).
    SingleUse,
    /// A standing grant's capability.
    Standing,
    /// No capability.
    None,
}

/// A hypothetical call to evaluate.
#[derive(Debug, Clone)]
pub struct PolicyQuery<'a> {
    /// The calling agent.
    pub agent: AgentId,
    /// The credential it would use.
    pub credential: CredentialId,
    /// The HTTP method.
    pub method: latchkey_core::capability::Method,
    /// The upstream host (1 to 253 bytes).
    pub host: &'a str,
    /// The upstream path, starting with `/`.
    pub path: &'a str,
    /// What would authorise it.
    pub grant: GrantKind,
    /// Evaluate as if at this time (unix seconds), for time-of-day policies; `None`: now.
    pub at: Option<u64>,
}

/// A hypothetical inject to evaluate (`POST /v1/policies/check` with `inject`).
#[derive(Debug, Clone)]
pub struct InjectPolicyQuery<'a> {
    /// The agent the command would run as.
    pub agent: AgentId,
    /// The credential it would receive.
    pub credential: CredentialId,
    /// How long, in seconds (1 to 86400).
    pub lifetime_secs: u64,
    /// The command's program name.
    pub command: &'a str,
    /// Evaluate as if at this time (unix seconds); `None`: now.
    pub at: Option<u64>,
}

/// What `POST /v1/agents/{id}/inject` asks: never the token, only its hash.
#[derive(Debug, Clone)]
pub struct InjectQuery<'a> {
    /// The agent token's hash: proves this device holds the token.
    pub token_hash: TokenHash,
    /// The credentials to release: all of them, or none.
    pub credentials: &'a [CredentialId],
    /// How long the command may keep it, in seconds (1 to 86400).
    pub lifetime_secs: u64,
    /// The command's program name, without directory or arguments.
    pub command: &'a str,
}

/// The broker's allow of an inject, committed to its audit log before it answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InjectAllowed {
    /// The agent.
    pub agent: AgentId,
    /// The credential.
    pub credential: CredentialId,
    /// Its name.
    pub credential_name: String,
    /// The lifetime allowed, in seconds.
    pub lifetime_secs: u64,
    /// The end of the lifetime (unix seconds, the broker's clock).
    pub expires_at: u64,
    /// The permits that allowed it.
    pub policies: Vec<String>,
    /// The `seq` of the `inject_released` audit record.
    pub audit_seq: u64,
}

/// The policies' decision on a hypothetical call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The call would go through.
    Allow,
    /// The call would be refused, and no approval could change that.
    Deny,
    /// The call would go through once the agent's owner approves it (single-use capability).
    ApprovalRequired,
}

/// The answer of `POST /v1/policies/check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDecision {
    /// The decision.
    pub decision: Decision,
    /// The determining policies (permits that allow, or forbids that deny).
    pub policies: Vec<String>,
    /// Evaluation errors, each naming its policy.
    pub errors: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Approvals
// ---------------------------------------------------------------------------------------------

/// Where a held call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalStatus {
    /// Held, waiting for an answer.
    Pending,
    /// A device approved it; the call went on.
    Approved,
    /// A device denied it; the agent was refused.
    Denied,
    /// Nobody answered in time, or the agent went away.
    Expired,
}

impl ApprovalStatus {
    /// `pending`, `approved`, `denied` or `expired`.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Expired => "expired",
        }
    }
}

/// An agent's call held by the broker until a device answers (`GET /v1/approvals`, and each
/// `approval` event of the stream). Never a credential, a query value or a body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalInfo {
    /// The approval.
    pub id: ApprovalId,
    /// Where it stands.
    pub status: ApprovalStatus,
    /// The agent that made the call.
    pub agent: AgentId,
    /// The credential it calls with.
    pub credential: CredentialId,
    /// The credential's name when the call was held.
    pub credential_name: String,
    /// The call's method, e.g. `GET`.
    pub method: String,
    /// The upstream host.
    pub host: String,
    /// The upstream path (without the query).
    pub path: String,
    /// The query's parameter names, in order (values never leave the broker).
    pub query_keys: Vec<String>,
    /// The request body's declared size in bytes, when it declared one.
    pub body_size: Option<u64>,
    /// The policies that allow the call once approved.
    pub policy_ids: Vec<String>,
    /// When the call was held (unix seconds).
    pub created_at: u64,
    /// When the broker stops holding it (unix seconds).
    pub expires_at: u64,
    /// When it was answered or expired.
    pub decided_at: Option<u64>,
    /// The device that answered.
    pub decided_by: Option<DeviceId>,
    /// Whether this device may answer it. `false`: a call of this member's agent that an admin
    /// answers (a shared credential's), shown so the member knows why the agent waits. (A broker
    /// that does not say lists only calls the device may answer.)
    #[serde(default = "answerable_by_default")]
    pub answerable: bool,
}

fn answerable_by_default() -> bool {
    true
}

/// A device's answer to a held call (`POST /v1/approvals/{id}`).
#[derive(Debug, Clone, Copy)]
pub enum ApprovalAnswer<'a> {
    /// Let the call go on with this capability, issued by this device for exactly the held
    /// call: single-use to approve once, standing (its grant registered first) for a window.
    Approve(&'a CapabilityText),
    /// Refuse the call.
    Deny,
}

/// What the approval stream says.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "one event at a time, read and matched at once: boxing would only cost an allocation"
)]
pub enum ApprovalEvent {
    /// An approval was requested or resolved (its `status` says which).
    Approval(ApprovalInfo),
    /// The stream fell behind and events were lost: list the approvals again
    /// ([`BrokerClient::approvals`]) to catch up. The stream goes on.
    Lagged {
        /// How many events were lost, when the broker said.
        missed: Option<u64>,
    },
}

/// The broker's live stream of approvals this device may answer (`GET /v1/approvals/events`),
/// read one event at a time with [`ApprovalEvents::next`].
pub struct ApprovalEvents {
    response: reqwest::Response,
    parser: SseParser,
    broker: String,
    read_timeout: Duration,
}

impl ApprovalEvents {
    /// The next event; `None` once the broker ends the stream (it is shutting down, or this
    /// device was removed); [`ClientError::Stalled`] once nothing at all (not even a keep-alive
    /// comment) arrived for the stream's read timeout. Safe to cancel (in a `select!`): no
    /// event is lost by dropping the future.
    pub async fn next(&mut self) -> Result<Option<ApprovalEvent>, ClientError> {
        const PATH: &str = "/v1/approvals/events";
        loop {
            match self.parser.next_event() {
                Err(problem) => return Err(unexpected(Method::Get, PATH, 200, problem)),
                Ok(Some(raw)) => match raw.event.as_str() {
                    "approval" => {
                        let info = serde_json::from_str(&raw.data).map_err(|_| {
                            unexpected(
                                Method::Get,
                                PATH,
                                200,
                                "an approval event that is not an approval",
                            )
                        })?;
                        return Ok(Some(ApprovalEvent::Approval(info)));
                    }
                    "lagged" => {
                        return Ok(Some(ApprovalEvent::Lagged {
                            missed: raw.data.trim().parse().ok(),
                        }));
                    }
                    // Events this client does not know yet are skipped.
                    _ => continue,
                },
                Ok(None) => {}
            }
            let chunk = tokio::time::timeout(self.read_timeout, self.response.chunk())
                .await
                .map_err(|_| ClientError::Stalled {
                    broker: self.broker.clone(),
                    what: "approval stream",
                    silent: self.read_timeout,
                })?
                .map_err(|source| ClientError::Transport {
                    broker: self.broker.clone(),
                    source: source.without_url(),
                })?;
            match chunk {
                Some(chunk) => self.parser.push(&chunk),
                None => return Ok(None),
            }
        }
    }
}

impl fmt::Debug for ApprovalEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApprovalEvents").field("broker", &self.broker).finish_non_exhaustive()
    }
}

/// One server-sent event as received: its type (`message` unless named) and its data lines.
#[derive(Debug, PartialEq, Eq)]
struct RawEvent {
    event: String,
    data: String,
}

/// Server-sent events (the WHATWG `text/event-stream` format) from chunks split anywhere: lines
/// end in LF or CRLF, `:` lines are comments, several `data:` lines join with LF, a blank line
/// ends an event. `id` and `retry` are ignored.
#[derive(Debug, Default)]
struct SseParser {
    buffer: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
}

impl SseParser {
    fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// The next complete event in what was pushed, if there is one yet.
    fn next_event(&mut self) -> Result<Option<RawEvent>, &'static str> {
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8(line).map_err(|_| "an event stream that is not UTF-8")?;
            if line.is_empty() {
                let event = self.event.take();
                if let Some(data) = self.data.take() {
                    let event = event.unwrap_or_else(|| "message".to_owned());
                    return Ok(Some(RawEvent { event, data }));
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (line.as_str(), ""),
            };
            match field {
                "event" => self.event = Some(value.to_owned()),
                "data" => match &mut self.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => self.data = Some(value.to_owned()),
                },
                _ => {}
            }
        }
        let pending = self.buffer.len() + self.data.as_ref().map_or(0, String::len);
        if pending > MAX_RESPONSE_BYTES {
            return Err("an event larger than 4 MiB");
        }
        Ok(None)
    }
}

// ---------------------------------------------------------------------------------------------
// Pausing all agents
// ---------------------------------------------------------------------------------------------

/// Whether every agent call in the workspace is paused, and by whom (`GET` and
/// `PUT /v1/workspace/pause`). The `paused_by_*` fields and `paused_at` are set exactly when
/// `paused` is: [`BrokerClient::pause_state`] and [`BrokerClient::set_paused`] refuse an answer
/// where they disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseState {
    /// `true` while the broker refuses every agent call in the workspace (`403 agents_paused`).
    pub paused: bool,
    /// The member who paused.
    pub paused_by_member: Option<MemberId>,
    /// The device they paused from.
    pub paused_by_device: Option<DeviceId>,
    /// When (unix seconds).
    pub paused_at: Option<u64>,
}

impl PauseState {
    /// Whether the fields agree with `paused`.
    fn is_consistent(&self) -> bool {
        let known = [
            self.paused_by_member.is_some(),
            self.paused_by_device.is_some(),
            self.paused_at.is_some(),
        ];
        known.iter().all(|&k| k == self.paused)
    }
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

/// A device's signed connection to one broker.
pub struct BrokerClient {
    http: reqwest::Client,
    broker: BrokerEndpoint,
    device: DeviceId,
    signing: DeviceSigningKey,
}

impl BrokerClient {
    /// A client for `broker` (a [`BrokerUrl`], or a [`BrokerEndpoint`] with the authorities
    /// trusted for it) signing as `device` with `signing`.
    pub fn new(
        broker: impl Into<BrokerEndpoint>,
        device: DeviceId,
        signing: DeviceSigningKey,
    ) -> Result<Self, ClientError> {
        let broker = broker.into();
        let http = http_builder(broker.authorities())?
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(ClientError::Setup)?;
        Ok(Self { http, broker, device, signing })
    }

    /// The broker this client talks to.
    pub fn broker_url(&self) -> &BrokerUrl {
        self.broker.url()
    }

    /// The broker this client talks to, with the authorities it trusts for it.
    pub fn endpoint(&self) -> &BrokerEndpoint {
        &self.broker
    }

    /// The device this client signs as.
    pub fn device_id(&self) -> DeviceId {
        self.device
    }

    /// `GET /v1/broker-key`: the key capabilities are sealed to.
    pub async fn broker_key(&self) -> Result<BrokerPublicKey, ClientError> {
        #[derive(Deserialize)]
        struct Answer {
            public_key: B64,
        }
        let path = "/v1/broker-key";
        let answer: Answer = self.send(Method::Get, path, None).await?;
        let bytes = answer.public_key.array::<32>().ok_or_else(|| {
            unexpected(Method::Get, path, 200, "a broker key that is not 32 bytes")
        })?;
        Ok(BrokerPublicKey::from_bytes(bytes))
    }

    /// `GET /v1/me`: who this device is, and whether its enrolment is active.
    pub async fn me(&self) -> Result<Me, ClientError> {
        self.send(Method::Get, "/v1/me", None).await
    }

    /// `POST /v1/workspaces`: registers a new workspace with this device as its first admin,
    /// with the broker's creation token if given. The broker's refusals of the creation itself
    /// are [`codes::WORKSPACE_CREATION_CLOSED`], [`codes::CREATION_TOKEN_REQUIRED`] and
    /// [`codes::CREATION_TOKEN_INVALID`].
    pub async fn create_workspace(
        &self,
        new: &NewWorkspace<'_>,
    ) -> Result<WorkspaceCreated, ClientError> {
        let mut body = json!({
            "workspace": {"id": new.workspace, "name": new.workspace_name},
            "member": {"id": new.member, "name": new.member_name},
            "device": self.registration(new.device_name, &new.device_keys),
            "wrapped_keys": new.wrapped_keys.iter().map(|k| b64(k.as_bytes())).collect::<Vec<_>>(),
        });
        // Only when there is one: brokers older than the field refuse it as unknown.
        if let (Some(token), Some(fields)) = (new.creation_token, body.as_object_mut()) {
            fields.insert("creation_token".to_owned(), token.expose_secret().into());
        }
        self.send(Method::Post, "/v1/workspaces", Some(body)).await
    }

    /// `POST /v1/invites`: a one-time code. `expires_in_secs`: 60 to 604800, default one day.
    pub async fn create_invite(
        &self,
        invite_for: InviteFor,
        expires_in_secs: Option<u64>,
    ) -> Result<Invite, ClientError> {
        #[derive(Deserialize)]
        struct Answer {
            id: InviteId,
            code: String,
            expires_at: u64,
        }
        let mut body = match invite_for {
            InviteFor::NewMember(role) => json!({"role": role}),
            InviteFor::Device(member) => json!({"member": member}),
        };
        if let (Some(secs), Some(map)) = (expires_in_secs, body.as_object_mut()) {
            map.insert("expires_in_secs".to_owned(), secs.into());
        }
        let path = "/v1/invites";
        let answer: Answer = self.send(Method::Post, path, Some(body)).await?;
        let code = Zeroizing::new(answer.code);
        let code = code.parse().map_err(|_| {
            unexpected(Method::Post, path, 201, "an invite code that is not 28 symbols")
        })?;
        Ok(Invite { id: answer.id, code, expires_at: answer.expires_at, invite_for })
    }

    /// `GET /v1/invites`: the pending invites this device may revoke (every one for an admin, a
    /// member's own otherwise), oldest first.
    pub async fn invites(&self) -> Result<Vec<PendingInvite>, ClientError> {
        #[derive(Deserialize)]
        struct Wire {
            id: InviteId,
            role: Option<Role>,
            member: Option<MemberId>,
            created_by: DeviceId,
            created_by_member: MemberId,
            created_at: u64,
            expires_at: u64,
        }
        #[derive(Deserialize)]
        struct Answer {
            invites: Vec<Wire>,
        }
        let path = "/v1/invites";
        let answer: Answer = self.send(Method::Get, path, None).await?;
        answer
            .invites
            .into_iter()
            .map(|wire| {
                let invite_for = match (wire.role, wire.member) {
                    (Some(role), None) => InviteFor::NewMember(role),
                    (None, Some(member)) => InviteFor::Device(member),
                    _ => {
                        return Err(unexpected(
                            Method::Get,
                            path,
                            200,
                            "an invite with neither or both of role and member",
                        ));
                    }
                };
                Ok(PendingInvite {
                    id: wire.id,
                    invite_for,
                    created_by: wire.created_by,
                    created_by_member: wire.created_by_member,
                    created_at: wire.created_at,
                    expires_at: wire.expires_at,
                })
            })
            .collect()
    }

    /// `DELETE /v1/invites/{id}`: revokes a pending invite (an admin's any, a member's own); its
    /// code is refused from then on.
    pub async fn revoke_invite(&self, id: InviteId) -> Result<(), ClientError> {
        self.send_empty(Method::Delete, &format!("/v1/invites/{id}")).await
    }

    /// `POST /v1/join`: enrols this device with an invite code. The broker's fingerprint in the
    /// answer must be compared with the local one (the workspace flow does).
    pub async fn join(
        &self,
        code: &InviteCode,
        join_as: &JoinAs,
        device_name: &str,
        device_keys: &DevicePublicKeys,
    ) -> Result<Joined, ClientError> {
        let member = match join_as {
            JoinAs::NewMember { id, name } => json!({"id": id, "name": name}),
            JoinAs::ExistingMember(id) => json!({"id": id}),
        };
        let body = json!({
            "code": code.expose_secret(),
            "member": member,
            "device": self.registration(device_name, device_keys),
        });
        self.send(Method::Post, "/v1/join", Some(body)).await
    }

    /// `GET /v1/members`: the active members and their active devices.
    pub async fn members(&self) -> Result<Vec<Member>, ClientError> {
        #[derive(Deserialize)]
        struct Answer {
            members: Vec<Member>,
        }
        let answer: Answer = self.send(Method::Get, "/v1/members", None).await?;
        Ok(answer.members)
    }

    /// `GET /v1/devices/{id}`: one active device of the workspace with its public keys.
    pub async fn device(&self, id: DeviceId) -> Result<Device, ClientError> {
        let path = format!("/v1/devices/{id}");
        let wire: WireDevice = self.send(Method::Get, &path, None).await?;
        wire.into_device().map_err(|problem| unexpected(Method::Get, &path, 200, problem))
    }

    /// `PUT /v1/wrapped-keys`: stores keys this device wrapped for other devices (1 to 1000).
    pub async fn put_wrapped_keys(
        &self,
        keys: &[WrappedKey],
    ) -> Result<WrappedKeysStored, ClientError> {
        let body =
            json!({"wrapped_keys": keys.iter().map(|k| b64(k.as_bytes())).collect::<Vec<_>>()});
        self.send(Method::Put, "/v1/wrapped-keys", Some(body)).await
    }

    /// `GET /v1/wrapped-keys`: the wrapped keys addressed to this device, with their senders.
    pub async fn wrapped_keys(&self) -> Result<Vec<DeliveredKey>, ClientError> {
        #[derive(Deserialize)]
        struct Answer {
            wrapped_keys: Vec<WireDelivered>,
        }
        #[derive(Deserialize)]
        struct WireDelivered {
            kind: String,
            owner: Owner,
            version: KeyVersion,
            sender: Option<WireDevice>,
            bytes: B64,
        }
        let path = "/v1/wrapped-keys";
        let answer: Answer = self.send(Method::Get, path, None).await?;
        let bad = |problem: &str| unexpected(Method::Get, path, 200, problem);
        answer
            .wrapped_keys
            .into_iter()
            .map(|d| {
                let key =
                    WrappedKey::parse(&d.bytes.0).map_err(|_| bad("a malformed wrapped key"))?;
                let h = key.header();
                let kind = match h.kind {
                    WrappedKind::Workspace => "workspace",
                    WrappedKind::Member => "member",
                };
                if kind != d.kind || h.owner != d.owner || h.version != d.version {
                    return Err(bad("a wrapped key whose description does not match its header"));
                }
                if h.recipient != self.device {
                    return Err(bad("a wrapped key addressed to another device"));
                }
                let sender = d.sender.map(WireDevice::into_device).transpose().map_err(bad)?;
                Ok(DeliveredKey { key, sender })
            })
            .collect()
    }

    /// `POST /v1/credentials`: stores a credential sealed on this device.
    pub async fn create_credential(
        &self,
        new: &NewCredential<'_>,
    ) -> Result<CredentialInfo, ClientError> {
        let body = json!({
            "id": new.id,
            "name": new.name,
            "provider": new.provider,
            "upstream_base_url": new.upstream_base_url,
            "allowed_hosts": new.allowed_hosts,
            "owner": if new.shared { "shared" } else { "me" },
            "key_version": new.key_version,
            "scopes": new.scopes,
            "expires_hint": new.expires_hint,
            "account": new.account,
            "envelope": b64(new.envelope.as_bytes()),
        });
        self.send(Method::Post, "/v1/credentials", Some(body)).await
    }

    /// `GET /v1/credentials`: the shared credentials and this member's own.
    pub async fn credentials(&self) -> Result<Vec<CredentialInfo>, ClientError> {
        #[derive(Deserialize)]
        struct Answer {
            credentials: Vec<CredentialInfo>,
        }
        let answer: Answer = self.send(Method::Get, "/v1/credentials", None).await?;
        Ok(answer.credentials)
    }

    /// `GET /v1/credentials?name=`: the credential agents call `name`, if this member may see it.
    pub async fn credential_named(
        &self,
        name: &str,
    ) -> Result<Option<CredentialInfo>, ClientError> {
        #[derive(Deserialize)]
        struct Answer {
            credentials: Vec<CredentialInfo>,
        }
        let query =
            url::form_urlencoded::Serializer::new(String::new()).append_pair("name", name).finish();
        let answer: Answer =
            self.send(Method::Get, &format!("/v1/credentials?{query}"), None).await?;
        Ok(answer.credentials.into_iter().find(|c| c.name == name))
    }

    /// `DELETE /v1/credentials/{id}`: deletes it and revokes its grants.
    pub async fn delete_credential(&self, id: CredentialId) -> Result<(), ClientError> {
        self.send_empty(Method::Delete, &format!("/v1/credentials/{id}")).await
    }

    /// `GET /v1/credentials/{id}/envelope`: the sealed payload and the key version it is under.
    pub async fn credential_envelope(
        &self,
        id: CredentialId,
    ) -> Result<(KeyVersion, Envelope), ClientError> {
        #[derive(Deserialize)]
        struct Answer {
            key_version: KeyVersion,
            envelope: B64,
        }
        let path = format!("/v1/credentials/{id}/envelope");
        let answer: Answer = self.send(Method::Get, &path, None).await?;
        let envelope = Envelope::parse(&answer.envelope.0)
            .map_err(|_| unexpected(Method::Get, &path, 200, "a malformed envelope"))?;
        Ok((answer.key_version, envelope))
    }

    /// `POST /v1/rotations`: swaps every envelope of a key to its next version and stores the
    /// new key wrapped to the devices this device trusts, naming the scope's other active devices
    /// as `left_out`, all in one transaction.
    pub async fn rotate(
        &self,
        shared: bool,
        from: KeyVersion,
        to: KeyVersion,
        credentials: &[(CredentialId, Envelope)],
        wrapped_keys: &[WrappedKey],
        left_out: &[DeviceId],
    ) -> Result<(), ClientError> {
        #[derive(Deserialize)]
        struct Answer {}
        let body = json!({
            "scope": if shared { "shared" } else { "member" },
            "from_version": from,
            "to_version": to,
            "credentials": credentials
                .iter()
                .map(|(id, envelope)| json!({"id": id, "envelope": b64(envelope.as_bytes())}))
                .collect::<Vec<_>>(),
            "wrapped_keys": wrapped_keys.iter().map(|k| b64(k.as_bytes())).collect::<Vec<_>>(),
            "left_out": left_out,
        });
        let _: Answer = self.send(Method::Post, "/v1/rotations", Some(body)).await?;
        Ok(())
    }

    /// `GET /v1/audit`: one page of the workspace's audit records, newest first.
    pub async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, ClientError> {
        #[derive(Deserialize)]
        struct Answer {
            records: Vec<AuditEntry>,
        }
        let query = filter.query();
        let path =
            if query.is_empty() { "/v1/audit".to_owned() } else { format!("/v1/audit?{query}") };
        let answer: Answer = self.send(Method::Get, &path, None).await?;
        Ok(answer.records)
    }

    /// `GET /v1/audit/verify`: the broker checks the whole chain, or only from record
    /// `from_seq` on (that record's `prev_hash` taken as given).
    pub async fn audit_verify(&self, from_seq: Option<u64>) -> Result<AuditVerdict, ClientError> {
        match from_seq {
            Some(seq) => {
                self.send(Method::Get, &format!("/v1/audit/verify?from_seq={seq}"), None).await
            }
            None => self.send(Method::Get, "/v1/audit/verify", None).await,
        }
    }

    /// `GET /v1/audit/export`: every matching record, oldest first, as JSONL or CSV. The body is
    /// read a chunk at a time, with no size limit: an audit log outgrows any buffer.
    pub async fn audit_export(
        &self,
        csv: bool,
        filter: &AuditFilter,
    ) -> Result<ExportBody<'_>, ClientError> {
        self.audit_export_with_read_timeout(csv, filter, EXPORT_READ_TIMEOUT).await
    }

    /// [`Self::audit_export`], counting the export lost once it stays silent for `read_timeout`
    /// (the answer's head included).
    pub async fn audit_export_with_read_timeout(
        &self,
        csv: bool,
        filter: &AuditFilter,
        read_timeout: Duration,
    ) -> Result<ExportBody<'_>, ClientError> {
        let mut query = filter.query();
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(if csv { "format=csv" } else { "format=jsonl" });
        let path = format!("/v1/audit/export?{query}");
        let accept = if csv { "text/csv" } else { "application/x-ndjson" };
        // No overall timeout, which would cut a long export off midway: each read is bounded
        // by `read_timeout` instead.
        let http = http_builder(self.broker.authorities())?.build().map_err(ClientError::Setup)?;
        let request = self.signed(&http, Method::Get, &path, &[], accept)?;
        let stalled = || ClientError::Stalled {
            broker: self.broker.url().to_string(),
            what: "audit export",
            silent: read_timeout,
        };
        let mut response = tokio::time::timeout(read_timeout, request.send())
            .await
            .map_err(|_| stalled())?
            .map_err(|e| self.transport(e))?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let retry_after = retry_after(&response);
            let received = self.read_body(&mut response, Method::Get, &path, status).await?;
            return Err(refusal(Method::Get, &path, (status, retry_after), &received));
        }
        Ok(ExportBody { client: self, response, read_timeout })
    }

    /// `GET /v1/credentials/{id}`: one credential's metadata.
    pub async fn credential(&self, id: CredentialId) -> Result<CredentialInfo, ClientError> {
        self.send(Method::Get, &format!("/v1/credentials/{id}"), None).await
    }

    /// `PUT /v1/credentials/{id}`: replaces metadata and envelope if `revision` is current.
    pub async fn replace_credential(
        &self,
        id: CredentialId,
        new: &CredentialReplacement<'_>,
    ) -> Result<CredentialInfo, ClientError> {
        let mut body = json!({
            "revision": new.revision,
            "name": new.name,
            "provider": new.provider,
            "upstream_base_url": new.upstream_base_url,
            "allowed_hosts": new.allowed_hosts,
            "scopes": new.scopes,
            "expires_hint": new.expires_hint,
            "account": new.account,
            "key_version": new.key_version,
            "envelope": b64(new.envelope.as_bytes()),
        });
        if let (Some(status), Some(map)) = (new.status, body.as_object_mut()) {
            map.insert("status".to_owned(), json!(status));
        }
        if let (Some(lease), Some(map)) = (new.lease, body.as_object_mut()) {
            map.insert("lease".to_owned(), json!(lease));
        }
        self.send(Method::Put, &format!("/v1/credentials/{id}"), Some(body)).await
    }

    /// `POST /v1/credentials/{id}/refresh-lease`: this device's turn to refresh the credential's
    /// OAuth tokens. Someone else's live lease is refused with `409 refresh_in_progress`
    /// ([`codes::REFRESH_IN_PROGRESS`]).
    pub async fn take_refresh_lease(&self, id: CredentialId) -> Result<RefreshLease, ClientError> {
        self.send(Method::Post, &format!("/v1/credentials/{id}/refresh-lease"), None).await
    }

    /// `DELETE /v1/credentials/{id}/refresh-lease/{lease}`: gives the lease back after a refresh
    /// that stored nothing. `404 not_found` if this device no longer holds it.
    pub async fn release_refresh_lease(
        &self,
        id: CredentialId,
        lease: LeaseId,
    ) -> Result<(), ClientError> {
        self.send_empty(Method::Delete, &format!("/v1/credentials/{id}/refresh-lease/{lease}"))
            .await
    }

    /// `PATCH /v1/credentials/{id}/status`: switches a credential on or off. Without
    /// `revision` the change applies whatever happened meanwhile.
    pub async fn set_credential_status(
        &self,
        id: CredentialId,
        status: CredentialStatus,
        revision: Option<u64>,
    ) -> Result<CredentialInfo, ClientError> {
        let mut body = json!({"status": status});
        if let (Some(revision), Some(map)) = (revision, body.as_object_mut()) {
            map.insert("revision".to_owned(), revision.into());
        }
        self.send(Method::Patch, &format!("/v1/credentials/{id}/status"), Some(body)).await
    }

    /// `DELETE /v1/devices/{id}`: removes a device (an admin, or any device of its own member).
    pub async fn remove_device(&self, id: DeviceId) -> Result<Removal, ClientError> {
        self.send(Method::Delete, &format!("/v1/devices/{id}"), None).await
    }

    /// `DELETE /v1/members/{id}`: removes a member and all their devices (admins).
    pub async fn remove_member(&self, id: MemberId) -> Result<Removal, ClientError> {
        self.send(Method::Delete, &format!("/v1/members/{id}"), None).await
    }

    /// `PATCH /v1/members/{id}`: changes a member's role (admins); the last admin cannot be
    /// demoted.
    pub async fn set_member_role(&self, id: MemberId, role: Role) -> Result<(), ClientError> {
        #[derive(Deserialize)]
        struct Answer {}
        let path = format!("/v1/members/{id}");
        let _: Answer = self.send(Method::Patch, &path, Some(json!({"role": role}))).await?;
        Ok(())
    }

    /// `GET /v1/policies`: the workspace's policies by id (the defaults until changed).
    pub async fn policies(&self) -> Result<Vec<Policy>, ClientError> {
        #[derive(Deserialize)]
        struct Answer {
            policies: Vec<Policy>,
        }
        let answer: Answer = self.send(Method::Get, "/v1/policies", None).await?;
        Ok(answer.policies)
    }

    /// `PUT /v1/policies/{id}`: creates or replaces a policy (admins). A policy that does not
    /// parse or validate is refused with `invalid_request` and [`ApiError::problems`].
    pub async fn put_policy(
        &self,
        id: &PolicyId,
        new: &NewPolicy<'_>,
    ) -> Result<SavedPolicy, ClientError> {
        let mut body = json!({
            "source": new.source, "description": new.description, "enabled": new.enabled,
        });
        if let (Some(revision), Some(map)) = (new.expected.wire(), body.as_object_mut()) {
            map.insert("revision".to_owned(), revision.into());
        }
        let path = format!("/v1/policies/{id}");
        let (status, received) = self.exchange(Method::Put, &path, Some(body)).await?;
        let mut saved: SavedPolicy = serde_json::from_slice(&received).map_err(|_| {
            unexpected(Method::Put, &path, status, "a body that is not the saved policy")
        })?;
        saved.created = status == 201;
        Ok(saved)
    }

    /// `DELETE /v1/policies/{id}`: deletes a policy (admins); deleting the last one brings the
    /// defaults back. With `revision`, only if the policy is still at it (else
    /// [`codes::CONFLICT`]).
    pub async fn delete_policy(
        &self,
        id: &PolicyId,
        revision: Option<u64>,
    ) -> Result<(), ClientError> {
        let path = match revision {
            Some(revision) => format!("/v1/policies/{id}?revision={revision}"),
            None => format!("/v1/policies/{id}"),
        };
        self.send_empty(Method::Delete, &path).await
    }

    /// `POST /v1/policies/check`: what the policies would decide for a call, without making it.
    pub async fn check_policy(
        &self,
        query: &PolicyQuery<'_>,
    ) -> Result<PolicyDecision, ClientError> {
        let mut body = json!({
            "agent": query.agent, "credential": query.credential,
            "method": query.method.as_str(), "host": query.host, "path": query.path,
            "grant": query.grant,
        });
        if let (Some(at), Some(map)) = (query.at, body.as_object_mut()) {
            map.insert("at".to_owned(), at.into());
        }
        self.send(Method::Post, "/v1/policies/check", Some(body)).await
    }

    /// `POST /v1/policies/check` with `inject`: what the policies would decide for an inject,
    /// without releasing or auditing anything.
    pub async fn check_inject_policy(
        &self,
        query: &InjectPolicyQuery<'_>,
    ) -> Result<PolicyDecision, ClientError> {
        let mut body = json!({
            "agent": query.agent, "credential": query.credential,
            "inject": {"lifetime_secs": query.lifetime_secs, "command": query.command},
        });
        if let (Some(at), Some(map)) = (query.at, body.as_object_mut()) {
            map.insert("at".to_owned(), at.into());
        }
        self.send(Method::Post, "/v1/policies/check", Some(body)).await
    }

    /// `POST /v1/agents/{id}/inject`: asks whether this device may release the credential into
    /// a command's environment. The broker audits its answer; an allow is committed before it
    /// is answered. A refusal is [`ClientError::Api`] with the broker's code
    /// ([`codes::POLICY_DENIED`], [`codes::AGENTS_PAUSED`], ...).
    pub async fn request_inject(
        &self,
        agent: AgentId,
        query: &InjectQuery<'_>,
    ) -> Result<Vec<InjectAllowed>, ClientError> {
        #[derive(Deserialize)]
        struct Answer {
            decision: String,
            #[serde(flatten)]
            allowed: InjectAllowed,
            /// Every credential released (absent from brokers that release one at a time).
            #[serde(default)]
            released: Option<Vec<Released>>,
        }
        #[derive(Deserialize)]
        struct Released {
            credential: CredentialId,
            credential_name: String,
            policies: Vec<String>,
            audit_seq: u64,
        }
        let path = format!("/v1/agents/{agent}/inject");
        let mut body = json!({
            "token_hash": query.token_hash.to_hex(),
            "lifetime_secs": query.lifetime_secs, "command": query.command,
        });
        // One credential is asked for in the form every broker version takes.
        match query.credentials {
            [one] => body["credential"] = json!(one),
            several => body["credentials"] = json!(several),
        }
        let answer: Answer = self.send(Method::Post, &path, Some(body)).await?;
        if answer.decision != "allow" {
            return Err(unexpected(Method::Post, &path, 200, "a success that is not an allow"));
        }
        let Some(released) = answer.released else { return Ok(vec![answer.allowed]) };
        Ok(released
            .into_iter()
            .map(|r| InjectAllowed {
                credential: r.credential,
                credential_name: r.credential_name,
                policies: r.policies,
                audit_seq: r.audit_seq,
                ..answer.allowed.clone()
            })
            .collect())
    }

    /// `POST /v1/agents`: a new agent owned by this member; its token is answered this once.
    pub async fn create_agent(&self, name: &str) -> Result<CreatedAgent, ClientError> {
        self.agent_with_token(Method::Post, "/v1/agents", Some(json!({"name": name}))).await
    }

    /// `POST /v1/agents/{id}/token`: replaces the agent's token; the old one stops working.
    pub async fn regenerate_agent_token(&self, id: AgentId) -> Result<CreatedAgent, ClientError> {
        self.agent_with_token(Method::Post, &format!("/v1/agents/{id}/token"), None).await
    }

    /// `GET /v1/agents`: this member's agents (every agent for admins).
    pub async fn agents(&self) -> Result<Vec<AgentInfo>, ClientError> {
        #[derive(Deserialize)]
        struct Answer {
            agents: Vec<AgentInfo>,
        }
        let answer: Answer = self.send(Method::Get, "/v1/agents", None).await?;
        Ok(answer.agents)
    }

    /// `DELETE /v1/agents/{id}`: revokes the agent and its grants.
    pub async fn revoke_agent(&self, id: AgentId) -> Result<(), ClientError> {
        self.send_empty(Method::Delete, &format!("/v1/agents/{id}")).await
    }

    /// `POST /v1/grants`: registers the grant behind a standing capability this device issued.
    pub async fn create_grant(
        &self,
        id: GrantId,
        agent: AgentId,
        credential: CredentialId,
        methods: &[&str],
        path_patterns: &[&str],
        expires_at: u64,
    ) -> Result<GrantInfo, ClientError> {
        let body = json!({
            "id": id, "agent": agent, "credential": credential, "methods": methods,
            "path_patterns": path_patterns, "expires_at": expires_at,
        });
        self.send(Method::Post, "/v1/grants", Some(body)).await
    }

    /// `GET /v1/grants[?agent=][&status=all]`: grants of this member's agents (every agent's
    /// for admins) in force, and with `ended` also those revoked or expired in the last 30 days.
    pub async fn grants(
        &self,
        agent: Option<AgentId>,
        ended: bool,
    ) -> Result<Vec<GrantInfo>, ClientError> {
        #[derive(Deserialize)]
        struct Answer {
            grants: Vec<GrantInfo>,
        }
        let query = {
            let mut pairs = url::form_urlencoded::Serializer::new(String::new());
            if let Some(agent) = agent {
                pairs.append_pair("agent", &agent.to_string());
            }
            if ended {
                pairs.append_pair("status", "all");
            }
            pairs.finish()
        };
        let path =
            if query.is_empty() { "/v1/grants".to_owned() } else { format!("/v1/grants?{query}") };
        let answer: Answer = self.send(Method::Get, &path, None).await?;
        Ok(answer.grants)
    }

    /// `DELETE /v1/grants/{id}`: revokes the grant; its capability is refused from the next call.
    pub async fn revoke_grant(&self, id: GrantId) -> Result<(), ClientError> {
        self.send_empty(Method::Delete, &format!("/v1/grants/{id}")).await
    }

    /// `GET /v1/approvals[?status=all]`: the held calls this device may answer, newest first:
    /// pending ones, or (`all`) every one the broker still lists.
    pub async fn approvals(&self, all: bool) -> Result<Vec<ApprovalInfo>, ClientError> {
        #[derive(Deserialize)]
        struct Answer {
            approvals: Vec<ApprovalInfo>,
        }
        let path = if all { "/v1/approvals?status=all" } else { "/v1/approvals?status=pending" };
        let answer: Answer = self.send(Method::Get, path, None).await?;
        Ok(answer.approvals)
    }

    /// `POST /v1/approvals/{id}`: approves (with a capability for exactly the held call) or
    /// denies it. The first answer wins: a second one, or one after the call expired, is refused
    /// with `409 conflict`. The capability is serialized straight into a zeroized body.
    pub async fn answer_approval(
        &self,
        id: ApprovalId,
        answer: ApprovalAnswer<'_>,
    ) -> Result<ApprovalInfo, ClientError> {
        #[derive(Serialize)]
        struct Body<'a> {
            decision: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            capability: Option<&'a str>,
        }
        let body = match answer {
            ApprovalAnswer::Approve(capability) => {
                Body { decision: "approve", capability: Some(capability.expose_secret()) }
            }
            ApprovalAnswer::Deny => Body { decision: "deny", capability: None },
        };
        let capacity = body.capability.map_or(0, str::len) + 64;
        let mut bytes = Zeroizing::new(Vec::with_capacity(capacity));
        // INVARIANT: two strings always serialize.
        serde_json::to_writer(&mut *bytes, &body).unwrap_or_default();
        let path = format!("/v1/approvals/{id}");
        let (status, received) = self.exchange_bytes(Method::Post, &path, &bytes).await?;
        parse(Method::Post, &path, status, &received)
    }

    /// `GET /v1/approvals/events`: the live stream of approvals this device may answer. It
    /// opens with every pending approval, then tells of each one requested or resolved. The
    /// stream has no overall timeout; it fails with [`ClientError::Stalled`] if the broker stays
    /// silent for [`APPROVAL_STREAM_READ_TIMEOUT`].
    pub async fn approval_events(&self) -> Result<ApprovalEvents, ClientError> {
        self.approval_events_with_read_timeout(APPROVAL_STREAM_READ_TIMEOUT).await
    }

    /// [`BrokerClient::approval_events`] with another read timeout: how long the stream may
    /// stay silent (no event, no keep-alive) before [`ApprovalEvents::next`] fails with
    /// [`ClientError::Stalled`]. Opening the stream is bounded by it too. The broker sends a
    /// keep-alive every 15 seconds, so anything shorter only suits tests.
    pub async fn approval_events_with_read_timeout(
        &self,
        read_timeout: Duration,
    ) -> Result<ApprovalEvents, ClientError> {
        let path = "/v1/approvals/events";
        // No read timeout in the HTTP client: each wait below is bounded by `read_timeout`
        // itself, so a silent broker always reads as `Stalled`.
        let http = http_builder(self.broker.authorities())?.build().map_err(ClientError::Setup)?;
        let request = self.signed(&http, Method::Get, path, &[], "text/event-stream")?;
        let mut response = tokio::time::timeout(read_timeout, request.send())
            .await
            .map_err(|_| ClientError::Stalled {
                broker: self.broker.url().to_string(),
                what: "approval stream",
                silent: read_timeout,
            })?
            .map_err(|e| self.transport(e))?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let retry_after = retry_after(&response);
            let received = self.read_body(&mut response, Method::Get, path, status).await?;
            return Err(refusal(Method::Get, path, (status, retry_after), &received));
        }
        let event_stream = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !event_stream {
            return Err(unexpected(
                Method::Get,
                path,
                status,
                "a body that is not an event stream",
            ));
        }
        Ok(ApprovalEvents {
            response,
            parser: SseParser::default(),
            broker: self.broker.url().to_string(),
            read_timeout,
        })
    }

    /// `GET /v1/workspace/pause`: whether every agent call in the workspace is paused, by whom
    /// and since when.
    pub async fn pause_state(&self) -> Result<PauseState, ClientError> {
        self.pause_request(Method::Get, None).await
    }

    /// `PUT /v1/workspace/pause`: pauses (`true`, any member) or resumes (`false`, an admin or
    /// the member who paused; others are refused with `403 resume_not_allowed`) every agent call
    /// in the workspace. Idempotent: pausing again keeps the first pause and its author. Returns
    /// the state now.
    pub async fn set_paused(&self, paused: bool) -> Result<PauseState, ClientError> {
        self.pause_request(Method::Put, Some(json!({"paused": paused}))).await
    }

    async fn pause_request(
        &self,
        method: Method,
        body: Option<serde_json::Value>,
    ) -> Result<PauseState, ClientError> {
        let path = "/v1/workspace/pause";
        let state: PauseState = self.send(method, path, body).await?;
        if !state.is_consistent() {
            return Err(unexpected(method, path, 200, "a pause state whose fields disagree"));
        }
        Ok(state)
    }

    async fn agent_with_token(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<CreatedAgent, ClientError> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(flatten)]
            agent: AgentInfo,
            token: Zeroizing<String>,
        }
        let answer: Answer = self.send(method, path, body).await?;
        let token = AgentToken::parse(&answer.token)
            .map_err(|_| unexpected(method, path, 200, "an agent token that is not well formed"))?;
        Ok(CreatedAgent { agent: answer.agent, token })
    }

    fn registration(&self, name: &str, keys: &DevicePublicKeys) -> serde_json::Value {
        json!({
            "id": self.device,
            "name": name,
            "signing_key": b64(&keys.signing.to_bytes()),
            "exchange_key": b64(&keys.exchange.to_bytes()),
        })
    }

    /// Signs and sends one request and reads the JSON answer.
    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, ClientError> {
        let (status, received) = self.exchange(method, path, body).await?;
        parse(method, path, status, &received)
    }

    /// Signs and sends one request whose success has no body (`204 No Content`).
    async fn send_empty(&self, method: Method, path: &str) -> Result<(), ClientError> {
        self.exchange(method, path, None).await.map(drop)
    }

    /// Signs and sends one request; a success answers its status and body, anything else
    /// becomes an error.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, Zeroizing<Vec<u8>>), ClientError> {
        // Request bodies can hold invite codes: zeroized after sending, never in an error.
        // INVARIANT: a `serde_json::Value` always serializes (its map keys are strings).
        let bytes = Zeroizing::new(match &body {
            Some(value) => serde_json::to_vec(value).unwrap_or_default(),
            None => Vec::new(),
        });
        drop(body);
        self.exchange_bytes(method, path, &bytes).await
    }

    /// [`Self::exchange`] with the JSON body already serialized (empty: no body).
    async fn exchange_bytes(
        &self,
        method: Method,
        path: &str,
        bytes: &[u8],
    ) -> Result<(u16, Zeroizing<Vec<u8>>), ClientError> {
        let request = self.signed(&self.http, method, path, bytes, "application/json")?;
        let mut response = request.send().await.map_err(|e| self.transport(e))?;
        let status = response.status().as_u16();
        let retry_after = retry_after(&response);
        let received = self.read_body(&mut response, method, path, status).await?;
        if (200..300).contains(&status) {
            Ok((status, received))
        } else {
            Err(refusal(method, path, (status, retry_after), &received))
        }
    }

    /// A request to `path` with `bytes` as its JSON body (empty: none), signed by this device
    /// over its method, target URI and content digest.
    fn signed(
        &self,
        http: &reqwest::Client,
        method: Method,
        path: &str,
        bytes: &[u8],
        accept: &str,
    ) -> Result<reqwest::RequestBuilder, ClientError> {
        let target = self.broker.url().join(path);
        let headers: Vec<(&str, &str)> =
            if bytes.is_empty() { Vec::new() } else { vec![("content-type", "application/json")] };
        let parts =
            SignedRequestParts { method: method.as_str(), target_uri: &target, headers: &headers };
        let signature = httpsig::sign(
            &parts,
            bytes,
            &self.signing,
            self.device,
            unix_now()?,
            SIGNATURE_VALIDITY_SECS,
        )?;
        let mut request = http
            .request(method.into(), &target)
            .header(httpsig::CONTENT_DIGEST_HEADER, signature.content_digest)
            .header(httpsig::SIGNATURE_INPUT_HEADER, signature.signature_input)
            .header(httpsig::SIGNATURE_HEADER, signature.signature)
            .header("accept", accept);
        if !bytes.is_empty() {
            request = request.header("content-type", "application/json").body(bytes.to_vec());
        }
        Ok(request)
    }

    /// The whole response body, at most [`MAX_RESPONSE_BYTES`].
    async fn read_body(
        &self,
        response: &mut reqwest::Response,
        method: Method,
        path: &str,
        status: u16,
    ) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        let mut received = Zeroizing::new(Vec::new());
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(e))? {
            if received.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(unexpected(method, path, status, "a body larger than 4 MiB"));
            }
            received.extend_from_slice(&chunk);
        }
        Ok(received)
    }

    fn transport(&self, source: reqwest::Error) -> ClientError {
        let broker = self.broker.url().to_string();
        match tls_problem(&source) {
            Some(problem) => ClientError::Tls { broker, problem },
            None => ClientError::Transport { broker, source: source.without_url() },
        }
    }
}

fn tls_refusal(broker: &str, problem: TlsProblem) -> String {
    problem.explain(&format!("the broker at {broker}"), "this computer")
}

/// The HTTP client settings every broker connection shares: no redirects (a signature covers
/// one target URI), a connect timeout, this library's user agent, and the broker's own
/// `authorities` and those named by [`BROKER_CA_VAR`] trusted besides the system's.
fn http_builder(authorities: Option<&TrustAnchors>) -> Result<reqwest::ClientBuilder, ClientError> {
    let builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("latchkey-client/", env!("CARGO_PKG_VERSION")));
    Ok(trusting_broker_anchors(builder, authorities)?)
}

/// The environment variable naming a PEM file of certificate authorities this device trusts
/// for the broker besides the system's (a team server behind a private authority, where
/// installing it in the system's trust store is not wanted or not possible), in addition to
/// those a profile keeps (`ProfileConfig::broker_ca`). Empty or unset: none.
pub const BROKER_CA_VAR: &str = "LATCHKEY_BROKER_CA";

/// [`BROKER_CA_VAR`] names a file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{BROKER_CA_VAR} names {}, which cannot be used: {problem}", path.display())]
pub struct BrokerCaError {
    /// The file named.
    pub path: std::path::PathBuf,
    /// What is wrong with it.
    pub problem: TrustAnchorsError,
}

/// `builder` trusting, besides the system's authorities, `authorities` (the profile's) and
/// those of the file [`BROKER_CA_VAR`] names. The file is read at each client's construction,
/// so a fixed file is picked up by the next one.
pub(crate) fn trusting_broker_anchors(
    builder: reqwest::ClientBuilder,
    authorities: Option<&TrustAnchors>,
) -> Result<reqwest::ClientBuilder, BrokerCaError> {
    let from_environment = broker_anchors(std::env::var_os(BROKER_CA_VAR))?;
    // `from_der` only stores the bytes with the rustls backend; it cannot fail here, and the
    // bytes were checked as anchors when they were read.
    let certificates = authorities
        .into_iter()
        .chain(from_environment.as_ref())
        .flat_map(TrustAnchors::certificates)
        .filter_map(|der| reqwest::Certificate::from_der(der).ok())
        .collect::<Vec<_>>();
    Ok(if certificates.is_empty() { builder } else { builder.tls_certs_merge(certificates) })
}

fn broker_anchors(
    value: Option<std::ffi::OsString>,
) -> Result<Option<TrustAnchors>, BrokerCaError> {
    let Some(path) = value.filter(|value| !value.is_empty()) else {
        return Ok(None);
    };
    let path = std::path::PathBuf::from(path);
    TrustAnchors::read(&path).map(Some).map_err(|problem| BrokerCaError { path, problem })
}

/// A success's JSON body as `T`.
fn parse<T: DeserializeOwned>(
    method: Method,
    path: &str,
    status: u16,
    received: &[u8],
) -> Result<T, ClientError> {
    serde_json::from_slice(received).map_err(|e| {
        unexpected(
            method,
            path,
            status,
            &format!(
                "a body that is not the expected JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })
}

/// A failure's body as the broker's `{"code", "message"}` error.
/// The broker's error answer (`status` and its `Retry-After` in seconds, if any) as an error:
/// [`ClientError::RateLimited`] for `429 rate_limited` with a `Retry-After`, else an [`ApiError`].
fn refusal(
    method: Method,
    path: &str,
    (status, retry_after): (u16, Option<u64>),
    received: &[u8],
) -> ClientError {
    #[derive(Deserialize)]
    struct WireError {
        code: String,
        message: String,
        #[serde(default)]
        errors: Vec<PolicyProblem>,
    }
    match serde_json::from_slice::<WireError>(received) {
        Ok(e) => match retry_after {
            Some(secs) if status == 429 && e.code == codes::RATE_LIMITED => {
                ClientError::RateLimited { retry_after: Duration::from_secs(secs.max(1)) }
            }
            _ => ApiError { status, code: e.code, message: e.message, problems: e.errors }.into(),
        },
        Err(_) => unexpected(method, path, status, "an error body without a code"),
    }
}

/// The response's `Retry-After` in whole seconds, when it is given as such (the broker never
/// sends a date).
fn retry_after(response: &reqwest::Response) -> Option<u64> {
    let value = response.headers().get(reqwest::header::RETRY_AFTER)?;
    value.to_str().ok()?.trim().parse().ok()
}

/// `1 second`, `7 seconds`: a wait in whole seconds, rounded up.
fn seconds(wait: Duration) -> String {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    if secs == 1 { "1 second".to_owned() } else { format!("{secs} seconds") }
}

impl fmt::Debug for BrokerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerClient")
            .field("broker", self.broker.url())
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------------
// Wire helpers
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

impl From<Method> for reqwest::Method {
    fn from(method: Method) -> Self {
        match method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
        }
    }
}

fn unexpected(method: Method, path: &str, status: u16, problem: &str) -> ClientError {
    ClientError::UnexpectedResponse {
        method: method.as_str(),
        path: path.to_owned(),
        status,
        problem: problem.to_owned(),
    }
}

fn unix_now() -> Result<u64, ClientError> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| ClientError::Clock)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Unpadded base64url bytes in JSON.
struct B64(Vec<u8>);

impl B64 {
    fn array<const N: usize>(&self) -> Option<[u8; N]> {
        self.0.as_slice().try_into().ok()
    }
}

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        URL_SAFE_NO_PAD
            .decode(text.as_bytes())
            .map(B64)
            .map_err(|_| serde::de::Error::custom("not unpadded base64url"))
    }
}

#[derive(Deserialize)]
struct WireDevice {
    id: DeviceId,
    member: MemberId,
    name: String,
    created_at: u64,
    signing_key: B64,
    exchange_key: B64,
    fingerprint: Fingerprint,
    #[serde(default)]
    removed: bool,
}

impl WireDevice {
    fn into_device(self) -> Result<Device, &'static str> {
        let signing = self.signing_key.array::<32>().ok_or("a signing key that is not 32 bytes")?;
        let signing =
            DeviceVerifyingKey::from_bytes(&signing).map_err(|_| "an unusable signing key")?;
        let exchange =
            self.exchange_key.array::<32>().ok_or("an exchange key that is not 32 bytes")?;
        Ok(Device {
            id: self.id,
            member: self.member,
            name: self.name,
            created_at: self.created_at,
            keys: DevicePublicKeys { signing, exchange: ExchangePublicKey::from_bytes(exchange) },
            broker_fingerprint: self.fingerprint,
            removed: self.removed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_ca_variable_adds_a_bundle_and_a_bad_one_is_named_with_its_problem() {
        assert!(broker_anchors(None).unwrap().is_none(), "unset: the system's authorities alone");
        assert!(broker_anchors(Some("".into())).unwrap().is_none(), "empty counts as unset");

        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let pem = params.self_signed(&ca).unwrap().pem();
        let good = dir.path().join("team-ca.pem");
        std::fs::write(&good, &pem).unwrap();
        let anchors = broker_anchors(Some(good.clone().into_os_string())).unwrap().unwrap();
        assert_eq!(anchors.len(), 1, "the bundle's one certificate is trusted");
        assert!(trusting_broker_anchors(reqwest::Client::builder(), Some(&anchors)).is_ok());

        let key = dir.path().join("with-key.pem");
        std::fs::write(&key, format!("{pem}{}", ca.serialize_pem())).unwrap();
        for (path, problem) in [
            (dir.path().join("missing.pem"), "cannot read it"),
            (key, "holds a private key"),
            (dir.path().to_path_buf(), "cannot read it"),
        ] {
            let error = broker_anchors(Some(path.clone().into_os_string())).unwrap_err();
            let message = error.to_string();
            assert!(
                message.starts_with("LATCHKEY_BROKER_CA names ")
                    && message.contains(&path.display().to_string())
                    && message.contains(problem),
                "the message names the variable, the file and what is wrong ({problem}): {message}"
            );
            assert!(
                !message.contains("PRIVATE KEY"),
                "a key in the file is never repeated: {message}"
            );
        }
    }

    #[test]
    fn broker_urls_are_normalised_and_plain_http_is_only_for_loopback() {
        let url: BrokerUrl = "https://Broker.Example:443/base/".parse().unwrap();
        assert_eq!(url.as_str(), "https://broker.example/base");
        assert_eq!(url.join("/v1/me"), "https://broker.example/base/v1/me");
        assert_eq!(
            "http://127.0.0.1:8080".parse::<BrokerUrl>().unwrap().as_str(),
            "http://127.0.0.1:8080"
        );
        assert!("http://[::1]:1/".parse::<BrokerUrl>().is_ok());
        assert!("http://localhost:1".parse::<BrokerUrl>().is_ok());
        assert_eq!("http://broker.example".parse::<BrokerUrl>(), Err(BrokerUrlError::PlainHttp));
        assert_eq!("https://u:p@b.example".parse::<BrokerUrl>(), Err(BrokerUrlError::Credentials));
        assert_eq!(
            "https://b.example/?x=1".parse::<BrokerUrl>(),
            Err(BrokerUrlError::QueryOrFragment)
        );
        assert_eq!("ftp://b.example".parse::<BrokerUrl>(), Err(BrokerUrlError::NotAUrl));
        assert_eq!("b.example".parse::<BrokerUrl>(), Err(BrokerUrlError::NotAUrl));
    }

    #[test]
    fn a_pause_state_is_consistent_only_when_its_author_fields_match_paused() {
        let paused = PauseState {
            paused: true,
            paused_by_member: Some(MemberId::random()),
            paused_by_device: Some(DeviceId::random()),
            paused_at: Some(1_800_000_000),
        };
        let running = PauseState {
            paused: false,
            paused_by_member: None,
            paused_by_device: None,
            paused_at: None,
        };
        assert!(paused.is_consistent() && running.is_consistent());
        for odd in [
            PauseState { paused: false, ..paused },
            PauseState { paused_at: None, ..paused },
            PauseState { paused_by_device: None, ..paused },
            PauseState { paused: true, ..running },
        ] {
            assert!(!odd.is_consistent(), "{odd:?} must be refused as an unexpected answer");
        }
    }

    #[test]
    fn invite_codes_are_checked_loosely_and_never_printed() {
        let code: InviteCode = " 7k2m-qx4t-0bnd-r8we-zc3h-v9pa-1gjs ".parse().unwrap();
        assert_eq!(code.expose_secret(), "7k2m-qx4t-0bnd-r8we-zc3h-v9pa-1gjs");
        assert_eq!(format!("{code:?}"), "InviteCode([REDACTED])");
        assert!("7K2M-QX4T".parse::<InviteCode>().is_err());
        assert!("7K2M-QX4T-0BND-R8WE-ZC3H-V9PA-1GJ!".parse::<InviteCode>().is_err());
    }

    #[test]
    fn a_device_from_the_wire_gets_its_fingerprint_computed_locally() {
        let keys = latchkey_core::keys::DeviceKeys::generate().unwrap().public_keys();
        let claimed = Fingerprint::of(&[0; 32], &[0; 32]);
        let wire = serde_json::json!({
            "id": DeviceId::random(), "member": MemberId::random(), "name": "laptop",
            "created_at": 1, "signing_key": b64(&keys.signing.to_bytes()),
            "exchange_key": b64(&keys.exchange.to_bytes()), "fingerprint": claimed.to_string(),
        });
        let device = serde_json::from_value::<WireDevice>(wire).unwrap().into_device().unwrap();
        assert_eq!(device.broker_fingerprint, claimed);
        assert_eq!(
            device.fingerprint(),
            Fingerprint::of(&keys.signing.to_bytes(), &keys.exchange.to_bytes())
        );
        assert_ne!(device.fingerprint(), claimed, "the claim is kept apart, never used");
    }

    #[test]
    fn api_errors_show_the_code_and_message() {
        let e = ApiError {
            status: 404,
            code: "not_found".into(),
            message: "no such device".into(),
            problems: Vec::new(),
        };
        assert!(e.is(codes::NOT_FOUND));
        assert_eq!(e.to_string(), "the broker refused the request (not_found): no such device");
    }

    #[test]
    fn a_rate_limited_refusal_carries_the_wait_and_says_it() {
        let body = br#"{"code": "rate_limited", "message": "wait 3 seconds and retry"}"#;
        let error = refusal(Method::Post, "/v1/agents", (429, Some(3)), body);
        let ClientError::RateLimited { retry_after } = error else {
            panic!("429 rate_limited with a Retry-After is its own error: {error:?}")
        };
        assert_eq!(retry_after, Duration::from_secs(3));
        let shown = error.to_string();
        assert!(
            shown.contains("(rate_limited)")
                && shown.contains("wait 3 seconds and try again")
                && shown.contains("an admin should remove the device"),
            "says how long to wait, and what to do if nobody sent them: {shown}"
        );
        let error = refusal(Method::Get, "/v1/me", (429, Some(0)), body);
        assert!(
            error.to_string().contains("wait 1 second and"),
            "never less than a second: {error}"
        );

        let without_wait = refusal(Method::Get, "/v1/me", (429, None), body);
        assert!(
            without_wait.api().is_some_and(|e| e.is(codes::RATE_LIMITED)),
            "without a Retry-After it stays the broker's error, with its message: {without_wait:?}"
        );
        let other = br#"{"code": "too_many_waiting", "message": "16 calls wait"}"#;
        let other = refusal(Method::Get, "/v1/me", (429, Some(2)), other);
        assert!(other.api().is_some_and(|e| e.is("too_many_waiting")), "{other:?}");
    }

    /// Every event the parser finds in `stream`, fed in chunks of `size` bytes.
    fn events_of(stream: &[u8], size: usize) -> Vec<RawEvent> {
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        for chunk in stream.chunks(size) {
            parser.push(chunk);
            while let Some(event) = parser.next_event().expect("a well-formed stream") {
                events.push(event);
            }
        }
        events
    }

    #[test]
    fn server_sent_events_parse_from_chunks_split_anywhere() {
        let stream = b": keep-alive\n\nevent: approval\nid: 1\ndata: {\"a\":\r\ndata:1}\r\n\r\n\
event: lagged\ndata: 3\n\ndata: plain\n\nevent: no-data\n\n";
        let expected = vec![
            RawEvent { event: "approval".into(), data: "{\"a\":\n1}".into() },
            RawEvent { event: "lagged".into(), data: "3".into() },
            RawEvent { event: "message".into(), data: "plain".into() },
        ];
        for size in 1..=stream.len() {
            assert_eq!(
                events_of(stream, size),
                expected,
                "chunks of {size} bytes: comments skipped, data lines joined, CRLF and LF alike"
            );
        }
    }

    #[test]
    fn an_unfinished_event_waits_and_a_huge_one_is_refused() {
        let mut parser = SseParser::default();
        parser.push(b"event: approval\ndata: {\"id\"");
        assert_eq!(parser.next_event(), Ok(None), "no blank line yet: nothing to hand out");
        parser.push(&vec![b'x'; MAX_RESPONSE_BYTES + 1]);
        assert!(parser.next_event().is_err(), "an event without end cannot grow without bound");
    }
}
