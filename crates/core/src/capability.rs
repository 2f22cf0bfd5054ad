//! Key capabilities: a member's device lets the broker open one credential, for one agent,
//! for some methods and paths, for a while.
//!
//! A capability carries the credential's record key sealed to the broker (HPKE), its claims, and
//! the issuing device's Ed25519 signature over both. The agent that holds it learns nothing from it:
//! the key is sealed to the broker, and the claims only restate what the agent asked for.
//!
//! ```text
//! offset  len  field
//!      0    1  format version (1)
//!      1    1  use: 1 single-use, 2 standing
//!      2   16  workspace id
//!     18   16  agent id
//!     34   16  credential id
//!     50   17  owner (see Owner::encode)
//!     67    4  key version, u32 big-endian
//!     71   16  issuing device id
//!     87    2  methods, u16 big-endian bit set (see Method)
//!     89    8  not before, u64 big-endian unix seconds
//!     97    8  expires, u64 big-endian unix seconds
//!    105   16  single-use: random nonce; standing: grant id
//!    121    1  number of path patterns, 1..=16
//!    122    *  each pattern: length u8 (1..=255), then that many ASCII bytes
//!      c   80  sealed record key: HPKE enc (32) || key (32) || tag (16);
//!              info "latchkey capability v1\0", aad = bytes 0..c (the claims)
//!   c+80   64  Ed25519 signature of the issuing device over
//!              "latchkey capability v1\0" || bytes 0..c+80
//! ```
//!
//! On the wire (the `Latchkey-Capability` header, or appended to an agent token) it is the
//! unpadded base64url encoding of those bytes: 267 bytes plus the patterns, so a capability
//! with the one pattern `/repos/*/issues/**` is 285 bytes, 380 characters; the decoder refuses more than [`MAX_ENCODED_LEN`] characters and
//! [`MAX_PATTERN_BYTES`] bytes of patterns before decoding anything else.
//!
//! [`Capability::verify`] checks, in order and before anything is opened: workspace, agent,
//! credential, method, path, validity window, then the signature against the issuing device's key.
//! Only a [`VerifiedCapability`] can be opened. Replay of single-use nonces and revocation of
//! standing grants need state, so they are the broker's to check (between verify and open); the
//! [`Reuse`] type makes the distinction explicit.

use core::fmt;

use base64::Engine as _;

use crate::ids::{AgentId, CredentialId, DeviceId, GrantId, KeyVersion, Owner, WorkspaceId};
use crate::keys::{
    BrokerPublicKey, BrokerSecretKey, DeviceSigningKey, DeviceVerifyingKey, RecordKey, RecordScope,
    signed_message,
};
use crate::random::{self, RandomError};
use crate::secret::Key32;

/// Current capability format version.
pub const FORMAT_VERSION: u8 = 1;
/// Most path patterns one capability may carry.
pub const MAX_PATTERNS: usize = 16;
/// Most bytes of path patterns (excluding length prefixes) one capability may carry.
pub const MAX_PATTERN_BYTES: usize = 512;
/// Longest accepted text form, checked before decoding.
pub const MAX_ENCODED_LEN: usize = 1100;
/// Longest validity window of a single-use capability.
pub const MAX_SINGLE_USE_LIFETIME_SECS: u64 = 15 * 60;
/// Longest validity window of a standing capability.
pub const MAX_STANDING_LIFETIME_SECS: u64 = 90 * 24 * 60 * 60;
/// How far a device's clock may run ahead of the broker's for `not_before`.
pub const CLOCK_SKEW_SECS: u64 = 60;

const LABEL: &[u8] = b"latchkey capability v1\0";
const FIXED_CLAIMS_LEN: usize = 122;
const SEALED_KEY_LEN: usize = 32 + 32 + 16;
const SIGNATURE_LEN: usize = 64;

/// A capability was refused. Variants before [`CapabilityError::BadSignature`] in
/// [`Capability::verify`]'s order are cheap checks that run before any cryptography.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CapabilityError {
    /// The text is longer than any valid capability.
    #[error("capability too long: {0} characters, at most {MAX_ENCODED_LEN} allowed")]
    TooLong(usize),
    /// The text is not unpadded base64url.
    #[error("capability is not base64url")]
    NotBase64,
    /// The bytes are not a well-formed capability.
    #[error("malformed capability: {0}")]
    Malformed(&'static str),
    /// A format version this build does not know.
    #[error("unknown capability format version {0}")]
    UnknownVersion(u8),
    /// The claims are inconsistent (checked at issue and at decode).
    #[error("invalid capability claims: {0}")]
    InvalidClaims(&'static str),
    /// The record key does not belong to the credential the claims name.
    #[error("the record key is for another credential, owner or key version than the claims")]
    ScopeMismatch,
    /// Issued for another workspace.
    #[error("capability is for another workspace")]
    WrongWorkspace,
    /// Issued for another agent.
    #[error("capability is for another agent")]
    WrongAgent,
    /// Issued for another credential.
    #[error("capability is for another credential")]
    WrongCredential,
    /// The request's method is not among the capability's methods.
    #[error("capability does not allow method {0}")]
    MethodNotAllowed(Method),
    /// The request's path matches none of the capability's patterns.
    #[error("capability does not allow this path")]
    PathNotAllowed,
    /// `not_before` is still in the future.
    #[error("capability is not valid yet")]
    NotYetValid,
    /// `expires` has passed.
    #[error("capability has expired")]
    Expired,
    /// The signature does not verify under the issuing device's key. No detail on purpose.
    #[error("capability signature is invalid")]
    BadSignature,
    /// The sealed key does not open with this broker's key. No detail on purpose.
    #[error("capability key could not be opened")]
    Unsealable,
    /// The OS random generator failed.
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// An HTTP method a capability can allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
    /// OPTIONS
    Options,
}

impl Method {
    /// Every method, in bit order.
    pub const ALL: [Method; 7] = [
        Method::Get,
        Method::Head,
        Method::Post,
        Method::Put,
        Method::Patch,
        Method::Delete,
        Method::Options,
    ];

    /// The method's name as it appears in an HTTP request line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
        }
    }

    /// Parses a method name; case-sensitive, as in HTTP.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == name)
    }

    const fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A non-empty set of methods.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MethodSet(u16);

impl MethodSet {
    /// The set of the given methods; `None` if empty.
    pub fn of(methods: &[Method]) -> Option<Self> {
        let bits = methods.iter().fold(0, |acc, m| acc | m.bit());
        (bits != 0).then_some(Self(bits))
    }

    /// Read-only methods: GET, HEAD and OPTIONS.
    pub const READ_ONLY: Self =
        Self(1 << Method::Get as u16 | 1 << Method::Head as u16 | 1 << Method::Options as u16);

    /// Whether `method` is in the set.
    pub const fn contains(self, method: Method) -> bool {
        self.0 & method.bit() != 0
    }

    /// Whether every method of this set is in `other`.
    pub const fn is_subset_of(self, other: Self) -> bool {
        self.0 & !other.0 == 0
    }

    /// The methods in the set.
    pub fn iter(self) -> impl Iterator<Item = Method> {
        Method::ALL.into_iter().filter(move |m| self.contains(*m))
    }

    fn from_bits(bits: u16) -> Option<Self> {
        let all = Method::ALL.iter().fold(0, |acc, m| acc | m.bit());
        (bits != 0 && bits & !all == 0).then_some(Self(bits))
    }
}

impl fmt::Debug for MethodSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// An upstream path pattern: `/`-separated segments where `*` matches exactly one segment and a
/// final `**` matches any number of remaining segments (including none).
///
/// Patterns and request paths are compared segment by segment on their raw (still
/// percent-encoded) form. A request path containing `.` or `..` segments, empty segments, or an
/// encoded `/`, `\` or `.` matches no pattern: such paths can be read differently by the upstream,
/// so they are refused rather than interpreted.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PathPattern(String);

impl PathPattern {
    /// Parses a pattern such as `/repos/*/issues/**`.
    pub fn parse(pattern: &str) -> Result<Self, CapabilityError> {
        let invalid = CapabilityError::InvalidClaims;
        if pattern.is_empty() || pattern.len() > 255 {
            return Err(invalid("a path pattern must be 1 to 255 characters"));
        }
        let Some(rest) = pattern.strip_prefix('/') else {
            return Err(invalid("a path pattern must start with /"));
        };
        if rest.is_empty() {
            return Ok(Self(pattern.to_owned()));
        }
        let segments: Vec<&str> = rest.split('/').collect();
        for (i, segment) in segments.iter().enumerate() {
            match *segment {
                "" => return Err(invalid("a path pattern must not contain empty segments")),
                "." | ".." => {
                    return Err(invalid("a path pattern must not contain . or .. segments"));
                }
                "**" if i + 1 != segments.len() => {
                    return Err(invalid("** may only be the last segment"));
                }
                "*" | "**" => {}
                s if s.contains('*') => return Err(invalid("* must be a whole segment")),
                s if !s.bytes().all(is_pchar) => {
                    return Err(invalid("a path pattern may only contain URL path characters"));
                }
                _ => {}
            }
        }
        Ok(Self(pattern.to_owned()))
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `path` (without query) matches. Ambiguous paths never match; see the type docs.
    pub fn matches(&self, path: &str) -> bool {
        let Some(request) = canonical_segments(path) else { return false };
        let pattern: Vec<&str> = match self.0.strip_prefix('/') {
            Some("") | None => Vec::new(),
            Some(rest) => rest.split('/').collect(),
        };
        let mut request = request.into_iter();
        for segment in pattern {
            match segment {
                "**" => return true,
                // Exactly one segment, and not an empty one: `/users/*` must not reach `/users/`,
                // which many servers read as the list `/users`.
                "*" => {
                    if request.next().is_none_or(str::is_empty) {
                        return false;
                    }
                }
                literal => {
                    if request.next() != Some(literal) {
                        return false;
                    }
                }
            }
        }
        request.next().is_none()
    }
}

impl fmt::Debug for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PathPattern({:?})", self.0)
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How often a capability may be used: the broker enforces it with its replay store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reuse {
    /// One request. The broker records the nonce until expiry and refuses it a second time.
    SingleUse {
        /// Random, chosen at issue.
        nonce: [u8; 16],
    },
    /// Any number of requests within the validity window, until the grant is revoked.
    Standing {
        /// The grant the broker checks for revocation.
        grant: GrantId,
    },
}

impl Reuse {
    /// A single use with a fresh random nonce.
    pub fn single_use() -> Result<Self, RandomError> {
        Ok(Reuse::SingleUse { nonce: random::array()? })
    }
}

/// What a capability allows. Public data: nothing here is secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The workspace.
    pub workspace: WorkspaceId,
    /// The only agent that may use it.
    pub agent: AgentId,
    /// The credential it opens.
    pub credential: CredentialId,
    /// The credential's owner (part of the record key's scope).
    pub owner: Owner,
    /// The key version the credential is sealed under.
    pub key_version: KeyVersion,
    /// The device that issued and signed it.
    pub issuer: DeviceId,
    /// Allowed methods.
    pub methods: MethodSet,
    /// Allowed upstream paths; at least one.
    pub paths: Vec<PathPattern>,
    /// Unix seconds from which it is valid.
    pub not_before: u64,
    /// Unix seconds at which it stops being valid.
    pub expires: u64,
    /// Single use or standing.
    pub reuse: Reuse,
}

impl Claims {
    /// Checks these claims against a request and the clock: workspace, agent, credential,
    /// method, path, not-before (with [`CLOCK_SKEW_SECS`] of tolerance) and expiry. This is the
    /// claims half of [`Capability::verify`]; on its own it proves nothing about who issued the
    /// claims. A broker that has verified a standing capability's signature once may re-check
    /// the same claims with this alone on later calls.
    pub fn check_request(&self, request: &CapabilityRequest<'_>) -> Result<(), CapabilityError> {
        if self.workspace != request.workspace {
            return Err(CapabilityError::WrongWorkspace);
        }
        if self.agent != request.agent {
            return Err(CapabilityError::WrongAgent);
        }
        if self.credential != request.credential {
            return Err(CapabilityError::WrongCredential);
        }
        if !self.methods.contains(request.method) {
            return Err(CapabilityError::MethodNotAllowed(request.method));
        }
        if !self.paths.iter().any(|p| p.matches(request.path)) {
            return Err(CapabilityError::PathNotAllowed);
        }
        if request.now.saturating_add(CLOCK_SKEW_SECS) < self.not_before {
            return Err(CapabilityError::NotYetValid);
        }
        if request.now >= self.expires {
            return Err(CapabilityError::Expired);
        }
        Ok(())
    }

    /// The record scope these claims name.
    pub fn scope(&self) -> RecordScope {
        RecordScope {
            workspace: self.workspace,
            credential: self.credential,
            owner: self.owner,
            version: self.key_version,
        }
    }

    fn validate(&self) -> Result<(), CapabilityError> {
        let invalid = CapabilityError::InvalidClaims;
        if self.paths.is_empty() {
            return Err(invalid("at least one path pattern is required"));
        }
        if self.paths.len() > MAX_PATTERNS {
            return Err(invalid("too many path patterns"));
        }
        if self.paths.iter().map(|p| p.0.len()).sum::<usize>() > MAX_PATTERN_BYTES {
            return Err(invalid("path patterns are too long in total"));
        }
        if self.expires <= self.not_before {
            return Err(invalid("expires must be after not_before"));
        }
        let limit = match self.reuse {
            Reuse::SingleUse { .. } => MAX_SINGLE_USE_LIFETIME_SECS,
            Reuse::Standing { .. } => MAX_STANDING_LIFETIME_SECS,
        };
        if self.expires - self.not_before > limit {
            return Err(invalid(
                "validity window is longer than allowed for this kind of capability",
            ));
        }
        Ok(())
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED_CLAIMS_LEN + MAX_PATTERN_BYTES);
        out.push(FORMAT_VERSION);
        out.push(match self.reuse {
            Reuse::SingleUse { .. } => 1,
            Reuse::Standing { .. } => 2,
        });
        out.extend_from_slice(self.workspace.as_bytes());
        out.extend_from_slice(self.agent.as_bytes());
        out.extend_from_slice(self.credential.as_bytes());
        out.extend_from_slice(&self.owner.encode());
        out.extend_from_slice(&self.key_version.get().to_be_bytes());
        out.extend_from_slice(self.issuer.as_bytes());
        out.extend_from_slice(&self.methods.0.to_be_bytes());
        out.extend_from_slice(&self.not_before.to_be_bytes());
        out.extend_from_slice(&self.expires.to_be_bytes());
        match self.reuse {
            Reuse::SingleUse { nonce } => out.extend_from_slice(&nonce),
            Reuse::Standing { grant } => out.extend_from_slice(grant.as_bytes()),
        }
        // INVARIANT: validate() bounds the count by MAX_PATTERNS (16) and PathPattern::parse bounds
        // each length by 255, so both fit a u8.
        out.push(self.paths.len() as u8);
        for pattern in &self.paths {
            out.push(pattern.0.len() as u8);
            out.extend_from_slice(pattern.0.as_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<(Self, usize), CapabilityError> {
        let mut r = Reader { bytes, at: 0 };
        let version = r.u8()?;
        if version != FORMAT_VERSION {
            return Err(CapabilityError::UnknownVersion(version));
        }
        let use_kind = r.u8()?;
        let workspace = WorkspaceId::from_bytes(r.array()?);
        let agent = AgentId::from_bytes(r.array()?);
        let credential = CredentialId::from_bytes(r.array()?);
        let owner = Owner::decode(&r.array()?).ok_or(CapabilityError::Malformed("bad owner"))?;
        let key_version = KeyVersion::new(u32::from_be_bytes(r.array()?))
            .ok_or(CapabilityError::Malformed("key version 0"))?;
        let issuer = DeviceId::from_bytes(r.array()?);
        let methods = MethodSet::from_bits(u16::from_be_bytes(r.array()?))
            .ok_or(CapabilityError::Malformed("bad method set"))?;
        let not_before = u64::from_be_bytes(r.array()?);
        let expires = u64::from_be_bytes(r.array()?);
        let reuse_bytes: [u8; 16] = r.array()?;
        let reuse = match use_kind {
            1 => Reuse::SingleUse { nonce: reuse_bytes },
            2 => Reuse::Standing { grant: GrantId::from_bytes(reuse_bytes) },
            _ => return Err(CapabilityError::Malformed("unknown use kind")),
        };
        let count = usize::from(r.u8()?);
        if count == 0 || count > MAX_PATTERNS {
            return Err(CapabilityError::Malformed("path pattern count out of range"));
        }
        let mut paths = Vec::with_capacity(count);
        for _ in 0..count {
            let len = usize::from(r.u8()?);
            let text = core::str::from_utf8(r.take(len)?)
                .map_err(|_| CapabilityError::Malformed("path pattern is not text"))?;
            paths.push(PathPattern::parse(text)?);
        }
        let claims = Self {
            workspace,
            agent,
            credential,
            owner,
            key_version,
            issuer,
            methods,
            paths,
            not_before,
            expires,
            reuse,
        };
        claims.validate()?;
        Ok((claims, r.at))
    }
}

/// What the broker is asked to do with a capability.
#[derive(Debug, Clone, Copy)]
pub struct CapabilityRequest<'a> {
    /// The workspace the call is in.
    pub workspace: WorkspaceId,
    /// The authenticated agent making the call.
    pub agent: AgentId,
    /// The credential the call names.
    pub credential: CredentialId,
    /// The request's method.
    pub method: Method,
    /// The upstream path (without query).
    pub path: &'a str,
    /// The broker's clock, unix seconds.
    pub now: u64,
}

/// A decoded capability with well-formed claims. Not yet verified.
#[derive(Clone, PartialEq, Eq)]
pub struct Capability {
    bytes: Vec<u8>,
    claims: Claims,
    claims_len: usize,
}

impl Capability {
    /// Issues a capability: seals `key` to the broker, bound to `claims`, and signs both with the
    /// issuing device's key. `claims.issuer` must be the id of the device that owns `signer`.
    pub fn issue(
        claims: Claims,
        key: &RecordKey,
        signer: &DeviceSigningKey,
        broker: &BrokerPublicKey,
    ) -> Result<Self, CapabilityError> {
        claims.validate()?;
        if *key.scope() != claims.scope() {
            return Err(CapabilityError::ScopeMismatch);
        }
        let mut bytes = claims.encode();
        let claims_len = bytes.len();
        let sealed = broker
            .as_exchange()
            .seal(LABEL, &bytes, key.expose_secret().expose_secret())
            .map_err(|_| CapabilityError::Unsealable)?;
        bytes.extend_from_slice(&sealed);
        let signature = signer.sign(&signed_message(LABEL, &bytes));
        bytes.extend_from_slice(&signature);
        Ok(Self { bytes, claims, claims_len })
    }

    /// Decodes the text form, refusing oversize input before decoding anything.
    pub fn decode(text: &str) -> Result<Self, CapabilityError> {
        if text.len() > MAX_ENCODED_LEN {
            return Err(CapabilityError::TooLong(text.len()));
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text.as_bytes())
            .map_err(|_| CapabilityError::NotBase64)?;
        Self::from_bytes(&bytes)
    }

    /// Decodes the binary form.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CapabilityError> {
        if bytes.len() > MAX_ENCODED_LEN {
            return Err(CapabilityError::TooLong(bytes.len()));
        }
        let (claims, claims_len) = Claims::decode(bytes)?;
        if bytes.len() != claims_len + SEALED_KEY_LEN + SIGNATURE_LEN {
            return Err(CapabilityError::Malformed("wrong length after the claims"));
        }
        Ok(Self { bytes: bytes.to_vec(), claims, claims_len })
    }

    /// The text form: unpadded base64url.
    pub fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&self.bytes)
    }

    /// The binary form.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The claims (unverified until [`Capability::verify`] succeeds).
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// Checks the claims against the request and the clock, then the signature against the
    /// issuing device's key (which the broker looks up by `claims().issuer`, and must check still
    /// belongs to a member allowed to use the credential). Nothing is opened.
    pub fn verify(
        &self,
        issuer_key: &DeviceVerifyingKey,
        request: &CapabilityRequest<'_>,
    ) -> Result<VerifiedCapability<'_>, CapabilityError> {
        self.claims.check_request(request)?;
        let (signed, signature) = self.bytes.split_at(self.claims_len + SEALED_KEY_LEN);
        let signature: &[u8; SIGNATURE_LEN] = signature
            .try_into()
            .map_err(|_| CapabilityError::Malformed("wrong signature length"))?;
        issuer_key
            .verify(&signed_message(LABEL, signed), signature)
            .map_err(|_| CapabilityError::BadSignature)?;
        Ok(VerifiedCapability { capability: self })
    }
}

impl fmt::Debug for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Capability").field("claims", &self.claims).finish_non_exhaustive()
    }
}

/// A capability whose claims, validity and signature have been checked against a request.
#[derive(Debug, Clone, Copy)]
pub struct VerifiedCapability<'a> {
    capability: &'a Capability,
}

impl VerifiedCapability<'_> {
    /// The verified claims.
    pub fn claims(&self) -> &Claims {
        &self.capability.claims
    }

    /// Opens the sealed record key with the broker's key. Call only after the broker's stateful
    /// checks (single-use nonce not seen, standing grant not revoked) have passed.
    pub fn open(&self, broker: &BrokerSecretKey) -> Result<RecordKey, CapabilityError> {
        let cap = self.capability;
        let (claims, rest) = cap.bytes.split_at(cap.claims_len);
        let sealed = &rest[..SEALED_KEY_LEN];
        let key = broker
            .as_exchange()
            .open(LABEL, claims, sealed)
            .map_err(|_| CapabilityError::Unsealable)?;
        let key = Key32::from_slice(&key).ok_or(CapabilityError::Unsealable)?;
        Ok(RecordKey::from_parts(cap.claims.scope(), key))
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CapabilityError> {
        let end = self.at.checked_add(n).filter(|end| *end <= self.bytes.len());
        let end = end.ok_or(CapabilityError::Malformed("truncated"))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, CapabilityError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CapabilityError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
}

/// RFC 3986 `pchar` minus `%`-decoding concerns: unreserved, sub-delims, `:`, `@` and `%`.
fn is_pchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()+,;=:@%".contains(&b)
}

/// Splits a request path into segments, or `None` if it is ambiguous (see [`PathPattern`]).
fn canonical_segments(path: &str) -> Option<Vec<&str>> {
    let rest = path.strip_prefix('/')?;
    if rest.is_empty() {
        return Some(Vec::new());
    }
    let lower = rest.to_ascii_lowercase();
    // Encoded separators and dots, also encoded twice (an upstream that decodes twice reads
    // `%252e` as `.`).
    if ["%2f", "%5c", "%2e", "%252f", "%255c", "%252e", "\\"].iter().any(|bad| lower.contains(bad))
    {
        return None;
    }
    let segments: Vec<&str> = rest.split('/').collect();
    // A single trailing slash is a distinct resource on many APIs; keep it as an empty last
    // segment only there, and refuse empty segments anywhere else.
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        // A dot segment, also behind a path parameter (`..;x`), which Java servers read as `..`.
        let dots = segment.split(';').next().unwrap_or_default();
        if (segment.is_empty() && i != last) || dots == "." || dots == ".." {
            return None;
        }
        if !segment.bytes().all(is_pchar) {
            return None;
        }
    }
    Some(segments)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::ids::MemberId;
    use crate::keys::{DeviceKeys, MemberKey, WorkspaceKey};

    const NOW: u64 = 1_800_000_000;

    struct World {
        workspace: WorkspaceId,
        wk: WorkspaceKey,
        device: DeviceId,
        keys: DeviceKeys,
        broker: BrokerSecretKey,
        agent: AgentId,
        credential: CredentialId,
    }

    fn world() -> World {
        let workspace = WorkspaceId::random();
        World {
            workspace,
            wk: WorkspaceKey::generate(workspace, KeyVersion::FIRST).unwrap(),
            device: DeviceId::random(),
            keys: DeviceKeys::generate().unwrap(),
            broker: BrokerSecretKey::generate().unwrap(),
            agent: AgentId::random(),
            credential: CredentialId::random(),
        }
    }

    impl World {
        fn claims(&self, reuse: Reuse) -> Claims {
            Claims {
                workspace: self.workspace,
                agent: self.agent,
                credential: self.credential,
                owner: Owner::Shared,
                key_version: KeyVersion::FIRST,
                issuer: self.device,
                methods: MethodSet::of(&[Method::Get, Method::Post]).unwrap(),
                paths: vec![PathPattern::parse("/repos/*/issues/**").unwrap()],
                not_before: NOW - 10,
                expires: NOW + 300,
                reuse,
            }
        }

        fn issue(&self, claims: Claims) -> Capability {
            let key = self.wk.record_key(self.credential).unwrap();
            Capability::issue(claims, &key, &self.keys.signing, &self.broker.public_key()).unwrap()
        }

        fn request<'a>(&self, method: Method, path: &'a str) -> CapabilityRequest<'a> {
            CapabilityRequest {
                workspace: self.workspace,
                agent: self.agent,
                credential: self.credential,
                method,
                path,
                now: NOW,
            }
        }
    }

    #[test]
    fn a_capability_round_trips_through_text_and_opens_the_credentials_record_key() {
        let w = world();
        let cap = w.issue(w.claims(Reuse::single_use().unwrap()));
        let text = cap.encode();
        assert_eq!(text.len(), 380, "documented size of a capability with one 18-byte pattern");
        let decoded = Capability::decode(&text).unwrap();
        assert_eq!(decoded, cap);
        let verified = decoded
            .verify(
                &w.keys.signing.verifying_key(),
                &w.request(Method::Post, "/repos/acme/issues/7/comments"),
            )
            .unwrap();
        let key = verified.open(&w.broker).unwrap();
        assert_eq!(key.expose_secret(), w.wk.record_key(w.credential).unwrap().expose_secret());
        assert_eq!(key.scope(), &w.wk.scope(w.credential));
    }

    #[test]
    fn a_personal_credentials_capability_carries_the_member_scope() {
        let w = world();
        let member = MemberId::random();
        let mk = MemberKey::generate(w.workspace, member, KeyVersion::FIRST).unwrap();
        let mut claims = w.claims(Reuse::Standing { grant: GrantId::random() });
        claims.owner = Owner::Member(member);
        let key = mk.record_key(w.credential).unwrap();
        let cap = Capability::issue(claims, &key, &w.keys.signing, &w.broker.public_key()).unwrap();
        let opened = cap
            .verify(&w.keys.signing.verifying_key(), &w.request(Method::Get, "/repos/a/issues"))
            .unwrap()
            .open(&w.broker)
            .unwrap();
        assert_eq!(opened.scope().owner, Owner::Member(member));
    }

    #[test]
    fn issuing_with_a_record_key_of_another_scope_is_refused() {
        let w = world();
        let mut claims = w.claims(Reuse::single_use().unwrap());
        claims.credential = CredentialId::random();
        let key = w.wk.record_key(w.credential).unwrap();
        let err =
            Capability::issue(claims, &key, &w.keys.signing, &w.broker.public_key()).unwrap_err();
        assert_eq!(err, CapabilityError::ScopeMismatch);
    }

    #[test]
    fn wrong_workspace_agent_credential_method_or_path_is_refused_specifically() {
        let w = world();
        let cap = w.issue(w.claims(Reuse::single_use().unwrap()));
        let vk = w.keys.signing.verifying_key();
        let ok = w.request(Method::Get, "/repos/acme/issues");
        let cases: [(CapabilityRequest<'_>, CapabilityError); 6] = [
            (
                CapabilityRequest { workspace: WorkspaceId::random(), ..ok },
                CapabilityError::WrongWorkspace,
            ),
            (CapabilityRequest { agent: AgentId::random(), ..ok }, CapabilityError::WrongAgent),
            (
                CapabilityRequest { credential: CredentialId::random(), ..ok },
                CapabilityError::WrongCredential,
            ),
            (
                CapabilityRequest { method: Method::Delete, ..ok },
                CapabilityError::MethodNotAllowed(Method::Delete),
            ),
            (
                CapabilityRequest { path: "/repos/acme/pulls", ..ok },
                CapabilityError::PathNotAllowed,
            ),
            (
                CapabilityRequest { path: "/repos/acme/issues/../../admin", ..ok },
                CapabilityError::PathNotAllowed,
            ),
        ];
        for (request, expected) in cases {
            assert_eq!(cap.verify(&vk, &request).unwrap_err(), expected, "request {request:?}");
        }
        assert!(cap.verify(&vk, &ok).is_ok());
    }

    #[test]
    fn expired_and_not_yet_valid_capabilities_are_refused() {
        let w = world();
        let cap = w.issue(w.claims(Reuse::single_use().unwrap()));
        let vk = w.keys.signing.verifying_key();
        let at = |now| CapabilityRequest { now, ..w.request(Method::Get, "/repos/a/issues") };
        assert_eq!(cap.verify(&vk, &at(NOW + 300)).unwrap_err(), CapabilityError::Expired);
        assert_eq!(
            cap.verify(&vk, &at(NOW - 10 - CLOCK_SKEW_SECS - 1)).unwrap_err(),
            CapabilityError::NotYetValid
        );
        assert!(
            cap.verify(&vk, &at(NOW - 10 - CLOCK_SKEW_SECS)).is_ok(),
            "within the allowed skew"
        );
        assert!(cap.verify(&vk, &at(NOW + 299)).is_ok(), "last valid second");
    }

    #[test]
    fn a_capability_signed_by_another_device_is_refused() {
        let w = world();
        let cap = w.issue(w.claims(Reuse::single_use().unwrap()));
        let other = DeviceKeys::generate().unwrap();
        let err = cap
            .verify(&other.signing.verifying_key(), &w.request(Method::Get, "/repos/a/issues"))
            .unwrap_err();
        assert_eq!(err, CapabilityError::BadSignature);
    }

    #[test]
    fn another_brokers_key_cannot_open_a_verified_capability() {
        let w = world();
        let cap = w.issue(w.claims(Reuse::single_use().unwrap()));
        let verified = cap
            .verify(&w.keys.signing.verifying_key(), &w.request(Method::Get, "/repos/a/issues"))
            .unwrap();
        let other = BrokerSecretKey::generate().unwrap();
        assert_eq!(verified.open(&other).unwrap_err(), CapabilityError::Unsealable);
    }

    #[test]
    fn every_single_bit_flip_is_refused_before_or_at_verification_or_opening() {
        let w = world();
        let cap = w.issue(w.claims(Reuse::single_use().unwrap()));
        let vk = w.keys.signing.verifying_key();
        for bit in 0..cap.as_bytes().len() * 8 {
            let mut bytes = cap.as_bytes().to_vec();
            bytes[bit / 8] ^= 1 << (bit % 8);
            let Ok(tampered) = Capability::from_bytes(&bytes) else { continue };
            let request = w.request(Method::Get, "/repos/a/issues");
            let outcome =
                tampered.verify(&vk, &request).and_then(|v| v.open(&w.broker).map(|_| ()));
            assert!(outcome.is_err(), "flipping bit {bit} must not yield a usable capability");
        }
    }

    #[test]
    fn a_sealed_key_moved_into_other_claims_does_not_open() {
        // Even a broker that skipped signature checks could not reuse a sealed key for other
        // claims: the claims are the HPKE associated data.
        let w = world();
        let a = w.issue(w.claims(Reuse::single_use().unwrap()));
        let mut claims_b = w.claims(Reuse::single_use().unwrap());
        claims_b.paths = vec![PathPattern::parse("/**").unwrap()];
        let b = w.issue(claims_b);
        let mut spliced = b.as_bytes()[..b.claims_len].to_vec();
        spliced.extend_from_slice(&a.as_bytes()[a.claims_len..]);
        let spliced = Capability::from_bytes(&spliced).unwrap();
        let forged = VerifiedCapability { capability: &spliced };
        assert_eq!(forged.open(&w.broker).unwrap_err(), CapabilityError::Unsealable);
    }

    /// The documented capability, made once and checked independently (see the file's notes).
    const COMMITTED: &str = include_str!("../testdata/capability.hex");
    /// Its text form, as docs/protocol.md shows it.
    const COMMITTED_TEXT: &str = concat!(
        "AQFvHBwuTDlKjpsOLV8MSnsRO59qfB0uT1CKa3yNng8aKw1-L0qTsUxVih5rLJ0-T1AAAAAAAAAAAAAAAAAAAAAAAA",
        "AAAAGai3xtXk9KO4wtHg-ai3xtAAUAAAAAa0nSAAAAAABrSdMslRObz0VVcZ99pNLiG5JM2AESL3JlcG9zLyovaXNz",
        "dWVzLyoqUqoZxISv0CQtjrs8DcBoRiey_uIvx7KTkLZrUh0N9S2axMu6KijijJskmzVMf9D0ar-HY8BMk3M6wg51S-",
        "Gc6izAVp5hnDC99Hf8TW54_GDE4ScR-Pcpw5P46UwnPRZylAeqCEr8qr7ip9iXzowTa5RFMahRxSQDVLN_t1WKgCeQ",
        "o5UZp5C1UqTVcDd065cE",
    );
    /// Where the claims end in the committed capability.
    const COMMITTED_CLAIMS_LEN: usize = 141;

    /// The fixed inputs the committed capability was made from.
    struct Fixed {
        claims: Claims,
        wk: WorkspaceKey,
        signing: DeviceSigningKey,
        broker: BrokerSecretKey,
    }

    fn fixed() -> Fixed {
        let workspace: WorkspaceId = "6f1c1c2e-4c39-4a8e-9b0e-2d5f0c4a7b11".parse().unwrap();
        let fixed = Fixed {
            claims: Claims {
                workspace,
                agent: "3b9f6a7c-1d2e-4f50-8a6b-7c8d9e0f1a2b".parse().unwrap(),
                credential: "0d7e2f4a-93b1-4c55-8a1e-6b2c9d3e4f50".parse().unwrap(),
                owner: Owner::Shared,
                key_version: KeyVersion::FIRST,
                issuer: "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d".parse().unwrap(),
                methods: MethodSet::of(&[Method::Get, Method::Post]).unwrap(),
                paths: vec![PathPattern::parse("/repos/*/issues/**").unwrap()],
                not_before: NOW,
                expires: NOW + 300,
                reuse: Reuse::SingleUse {
                    nonce: crate::vectors::unhex_array("95139bcf4555719f7da4d2e21b924cd8"),
                },
            },
            wk: WorkspaceKey::from_parts(
                workspace,
                KeyVersion::FIRST,
                Key32::from_bytes([0x42; 32]),
            ),
            signing: DeviceSigningKey::from_secret_bytes(&Key32::from_bytes([0xa1; 32])),
            broker: BrokerSecretKey::from_secret_text(
                "lkbroker1_wMXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxUU",
            )
            .unwrap(),
        };
        // The public keys the fixture's notes name, as Python's cryptography computed them.
        assert_eq!(
            hex::encode(fixed.signing.verifying_key().to_bytes()),
            "bc7cbcb5636375fa1d82434d466724d92377f53b980695dd49d26d0ce12205a5",
            "the issuer's Ed25519 public key from seed a1 x 32"
        );
        assert_eq!(
            hex::encode(fixed.broker.public_key().to_bytes()),
            "45c6abd80800a051c5a0f3183911f9c059242ace8d1d34304df63dd2fccdd965",
            "the broker's X25519 public key"
        );
        fixed
    }

    impl Fixed {
        fn request(&self) -> CapabilityRequest<'static> {
            CapabilityRequest {
                workspace: self.claims.workspace,
                agent: self.claims.agent,
                credential: self.claims.credential,
                method: Method::Post,
                path: "/repos/acme/issues/7/comments",
                now: NOW,
            }
        }

        /// Decode, verify against the fixed request, open: what the broker does.
        fn open(&self, bytes: &[u8]) -> Result<RecordKey, CapabilityError> {
            let cap = Capability::from_bytes(bytes)?;
            let verified = cap.verify(&self.signing.verifying_key(), &self.request())?;
            verified.open(&self.broker)
        }
    }

    #[test]
    fn the_committed_capability_opens_to_its_record_key_and_a_new_issue_has_the_same_claims() {
        // Opening pins the broker's side: the layout, the labels, the HPKE suite, what is signed.
        // The claims of a new issue pin the device's side; its HPKE part is fresh.
        let f = fixed();
        let committed = crate::vectors::unhex_fixture(COMMITTED);
        let cap = Capability::decode(COMMITTED_TEXT).unwrap();
        assert_eq!(cap.as_bytes(), committed, "the documented text form is the committed bytes");
        assert_eq!(cap.encode(), COMMITTED_TEXT, "and encodes back to it");
        assert_eq!(cap.claims(), &f.claims, "the documented claims");
        let key = f.open(&committed).unwrap();
        assert_eq!(
            hex::encode(key.expose_secret().expose_secret()),
            "c7ea9d0cbecfe37dab7c2df2556a70f9d741cbe67dd244dc0ea754f64d095aed",
            "the documented record key"
        );
        assert_eq!(key.scope(), &f.wk.scope(f.claims.credential));

        let record_key = f.wk.record_key(f.claims.credential).unwrap();
        let again =
            Capability::issue(f.claims.clone(), &record_key, &f.signing, &f.broker.public_key())
                .unwrap();
        let claims_len = COMMITTED_CLAIMS_LEN;
        assert_eq!(again.as_bytes().len(), committed.len(), "a new issue has the same length");
        assert_eq!(
            &again.as_bytes()[..claims_len],
            &committed[..claims_len],
            "a new issue writes the same claims"
        );
        assert_ne!(
            &again.as_bytes()[claims_len..claims_len + 32],
            &committed[claims_len..claims_len + 32],
            "with a fresh HPKE enc"
        );
        let reopened = f.open(again.as_bytes()).unwrap();
        assert_eq!(reopened.expose_secret(), record_key.expose_secret(), "and opens alike");
    }

    #[test]
    fn each_region_of_the_committed_capability_altered_gives_its_own_error() {
        let f = fixed();
        let committed = crate::vectors::unhex_fixture(COMMITTED);
        let c = COMMITTED_CLAIMS_LEN;
        let set = |at: usize, value: u8| {
            let mut altered = committed.clone();
            altered[at] = value;
            altered
        };
        let flip = |at: usize| set(at, committed[at] ^ 0x01);
        let malformed = CapabilityError::Malformed;
        let bad_signature = CapabilityError::BadSignature;
        let cases: Vec<(&str, Vec<u8>, CapabilityError)> = vec![
            ("format version", flip(0), CapabilityError::UnknownVersion(0)),
            ("use: unknown", set(1, 3), malformed("unknown use kind")),
            ("use: standing", set(1, 2), bad_signature.clone()),
            ("workspace", flip(2), CapabilityError::WrongWorkspace),
            ("agent", flip(18), CapabilityError::WrongAgent),
            ("credential", flip(34), CapabilityError::WrongCredential),
            ("owner tag", set(50, 2), malformed("bad owner")),
            ("key version 0", flip(70), malformed("key version 0")),
            ("key version", set(70, 2), bad_signature.clone()),
            ("issuing device", flip(71), bad_signature.clone()),
            ("methods: unknown bit", set(88, 0x80), malformed("bad method set")),
            ("methods: GET only", set(88, 0x01), CapabilityError::MethodNotAllowed(Method::Post)),
            ("not before: later", flip(95), CapabilityError::NotYetValid),
            ("expires", flip(104), bad_signature.clone()),
            ("nonce", flip(105), bad_signature.clone()),
            ("pattern count", set(121, 0), malformed("path pattern count out of range")),
            ("pattern length", set(122, 17), malformed("wrong length after the claims")),
            ("pattern", flip(132), CapabilityError::PathNotAllowed),
            ("HPKE enc", flip(c), bad_signature.clone()),
            ("sealed key", flip(c + 32), bad_signature.clone()),
            ("tag", flip(c + 64), bad_signature.clone()),
            ("signature", flip(c + 80), bad_signature.clone()),
            ("signature's last byte", flip(committed.len() - 1), bad_signature.clone()),
            (
                "last byte cut",
                committed[..committed.len() - 1].to_vec(),
                malformed("wrong length after the claims"),
            ),
        ];
        for (region, bytes, expected) in cases {
            let err = f.open(&bytes).unwrap_err();
            assert_eq!(err, expected, "{region} altered");
        }

        // The issuer can sign whatever it alters; the seal still refuses other claims (its
        // associated data) or a changed sealed key. Re-signing the committed bytes reproduces the
        // committed signature (Ed25519 is deterministic), so the signing below is the real one.
        let resigned = |mut bytes: Vec<u8>| {
            let signed = signed_message(b"latchkey capability v1\0", &bytes[..c + 80]);
            bytes[c + 80..].copy_from_slice(&f.signing.sign(&signed));
            bytes
        };
        assert_eq!(resigned(committed.clone()), committed, "re-signing changes nothing");
        for (region, at) in [("nonce", 105), ("expires", 104), ("sealed key", c + 32)] {
            let err = f.open(&resigned(flip(at))).unwrap_err();
            assert_eq!(
                err,
                CapabilityError::Unsealable,
                "{region} altered and signed again: the seal must refuse it"
            );
        }
        assert!(f.open(&committed).is_ok(), "the unaltered capability still opens");
    }

    #[test]
    fn claims_that_are_inconsistent_are_refused_at_issue() {
        let w = world();
        let key = w.wk.record_key(w.credential).unwrap();
        let issue =
            |claims| Capability::issue(claims, &key, &w.keys.signing, &w.broker.public_key());
        let mut c = w.claims(Reuse::single_use().unwrap());
        c.paths.clear();
        assert!(matches!(issue(c), Err(CapabilityError::InvalidClaims(_))), "no paths");
        let mut c = w.claims(Reuse::single_use().unwrap());
        c.expires = c.not_before;
        assert!(matches!(issue(c), Err(CapabilityError::InvalidClaims(_))), "empty window");
        let mut c = w.claims(Reuse::single_use().unwrap());
        c.expires = c.not_before + MAX_SINGLE_USE_LIFETIME_SECS + 1;
        assert!(matches!(issue(c), Err(CapabilityError::InvalidClaims(_))), "single use too long");
        let mut c = w.claims(Reuse::Standing { grant: GrantId::random() });
        c.expires = c.not_before + MAX_SINGLE_USE_LIFETIME_SECS + 1;
        assert!(issue(c).is_ok(), "a standing grant may last longer");
        let mut c = w.claims(Reuse::single_use().unwrap());
        c.paths = vec![PathPattern::parse("/a").unwrap(); MAX_PATTERNS + 1];
        assert!(matches!(issue(c), Err(CapabilityError::InvalidClaims(_))), "too many patterns");
    }

    #[test]
    fn oversize_and_non_base64_text_is_refused_before_decoding() {
        assert_eq!(
            Capability::decode(&"A".repeat(MAX_ENCODED_LEN + 1)).unwrap_err(),
            CapabilityError::TooLong(MAX_ENCODED_LEN + 1)
        );
        assert_eq!(Capability::decode("not base64!").unwrap_err(), CapabilityError::NotBase64);
        assert!(matches!(
            Capability::decode("AQE").unwrap_err(),
            CapabilityError::Malformed("truncated")
        ));
        assert_eq!(Capability::decode("Ag").unwrap_err(), CapabilityError::UnknownVersion(2));
    }

    #[test]
    fn path_patterns_match_segments_and_refuse_ambiguous_paths() {
        let p = |s| PathPattern::parse(s).unwrap();
        assert!(p("/user").matches("/user"));
        assert!(!p("/user").matches("/user/repos"));
        assert!(!p("/user").matches("/users"));
        assert!(p("/repos/*/issues").matches("/repos/acme/issues"));
        assert!(!p("/repos/*/issues").matches("/repos/issues"));
        assert!(p("/users/*").matches("/users/ada"));
        assert!(!p("/users/*").matches("/users/"), "* is one segment, never an empty one");
        assert!(!p("/repos/*/*").matches("/repos/acme/"), "{}", "the list, not an item");
        assert!(p("/users/**").matches("/users/"), "** takes any rest, the empty one too");
        assert!(p("/v1/**").matches("/v1"), "** matches zero segments");
        assert!(p("/v1/**").matches("/v1/chat/completions"));
        assert!(p("/**").matches("/"));
        assert!(p("/").matches("/"));
        assert!(!p("/").matches("/x"));
        for ambiguous in [
            "/v1/../admin",
            "/v1/./x",
            "/v1//x",
            "/v1/%2e%2e/admin",
            "/v1/a%2Fb",
            "/v1/a%5cb",
            "/v1/%252e%252e/admin",
            "/v1/a%252Fb",
            "/rest/api/..;/admin",
            "/rest/api/..;x/admin",
            "/rest/api/.;/admin",
            "/v1\\x",
            "v1/x",
            "",
        ] {
            assert!(!p("/**").matches(ambiguous), "{ambiguous:?} must match nothing");
        }
        for bad in ["", "v1", "/v1//x", "/v1/../x", "/v1/**/x", "/v1/a*", "/v1/ x", "/v1/é"] {
            assert!(PathPattern::parse(bad).is_err(), "{bad:?} is not a valid pattern");
        }
    }

    #[test]
    fn debug_output_shows_claims_but_no_key_material() {
        let w = world();
        let cap = w.issue(w.claims(Reuse::single_use().unwrap()));
        let shown = format!("{cap:?}");
        let key = w.wk.record_key(w.credential).unwrap();
        let hex: String =
            key.expose_secret().expose_secret().iter().map(|b| format!("{b:02x}")).collect();
        assert!(!shown.contains(&hex));
        assert!(!shown.contains(&cap.encode()[150..200]), "Debug must not dump the sealed bytes");
        assert!(shown.contains("paths"));
    }

    proptest! {
        #[test]
        fn decoding_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Capability::from_bytes(&bytes);
        }

        #[test]
        fn decoding_never_panics_on_arbitrary_text(text in "\\PC{0,1200}") {
            let _ = Capability::decode(&text);
        }

        #[test]
        fn pattern_matching_never_panics(pattern in "/[a-z*/]{0,20}", path in "[a-z/%.]{0,30}") {
            if let Ok(p) = PathPattern::parse(&pattern) {
                let _ = p.matches(&path);
            }
        }
    }
}
