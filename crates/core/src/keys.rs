//! Latchkey's key hierarchy.
//!
//! ```text
//! device keys (per device, OS keychain)
//!   DeviceSigningKey  Ed25519: signs every request and every capability the device issues
//!   ExchangeSecretKey X25519:  receives wrapped workspace and member keys (HPKE)
//!
//! WorkspaceKey (WK, per workspace and version)  -- encrypts shared credentials
//! MemberKey    (MK, per member and version)     -- encrypts that member's personal credentials
//!   \-- RecordKey = HKDF-SHA256(WK or MK, info = scope)  -- opens exactly one credential version
//!
//! BrokerSecretKey X25519: capabilities are sealed to its public half
//! ```
//!
//! Workspace and member keys leave a device only as a [`WrappedKey`]: HPKE-sealed to one
//! recipient device and signed by the sending device, so the server that stores and relays it can
//! neither read it nor substitute a key of its own choosing without the recipient noticing.
//!
//! Record keys are never stored. A record key is derived from its parent key and a
//! [`RecordScope`] (workspace, credential, owner, key version), and [`RecordScope::encode`] is
//! also the associated data of the credential's envelope, so a record key opens exactly one
//! credential version and nothing else.

use core::fmt;

use zeroize::{Zeroize as _, Zeroizing};

use crate::crypto::{self, CryptoFailure, X25519_LEN};
use crate::ids::{CredentialId, DeviceId, KeyVersion, MemberId, Owner, WorkspaceId};
use crate::random::{self, RandomError};
use crate::secret::Key32;

/// A key could not be created, decoded, wrapped or unwrapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The system random generator failed.
    #[error(transparent)]
    Random(#[from] RandomError),
    /// A public key's bytes are not a usable key.
    #[error("invalid {0} public key")]
    InvalidPublicKey(&'static str),
    /// A wrapped key's framing is wrong (length, version or kind).
    #[error("malformed wrapped key: {0}")]
    MalformedWrappedKey(&'static str),
    /// The wrapped key is addressed to another device, workspace, owner or kind than expected.
    #[error("wrapped key is for {0}, not for this device and workspace")]
    WrappedKeyMismatch(&'static str),
    /// The sender's signature does not verify, or the ciphertext does not open. No detail on purpose.
    #[error("wrapped key failed verification")]
    WrappedKeyRejected,
    /// A derivation or sealing primitive refused its input.
    #[error("key operation failed")]
    Crypto,
}

impl From<CryptoFailure> for KeyError {
    fn from(_: CryptoFailure) -> Self {
        KeyError::Crypto
    }
}

// ---------------------------------------------------------------------------------------------
// Device identity: Ed25519
// ---------------------------------------------------------------------------------------------

/// A device's Ed25519 signing key. Lives in the OS keychain; zeroized on drop.
pub struct DeviceSigningKey(ed25519_dalek::SigningKey);

impl DeviceSigningKey {
    /// A fresh key from the OS random generator.
    pub fn generate() -> Result<Self, KeyError> {
        let seed = Zeroizing::new(random::array::<32>()?);
        Ok(Self(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// The key from its 32-byte seed (as stored in the keychain).
    pub fn from_secret_bytes(seed: &Key32) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(seed.expose_secret()))
    }

    /// The 32-byte seed, for storing in the keychain.
    pub fn expose_secret(&self) -> Key32 {
        Key32::from_bytes(self.0.to_bytes())
    }

    /// The public half.
    pub fn verifying_key(&self) -> DeviceVerifyingKey {
        DeviceVerifyingKey(self.0.verifying_key())
    }

    /// Signs `message`. Crate-private: every signed format prefixes its own context label, and no
    /// caller outside this crate can make the device sign arbitrary bytes.
    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        crypto::ed25519_sign(&self.0, message)
    }
}

impl fmt::Debug for DeviceSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceSigningKey([REDACTED])")
    }
}

/// A device's Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DeviceVerifyingKey(ed25519_dalek::VerifyingKey);

impl DeviceVerifyingKey {
    /// Parses a 32-byte compressed Edwards point; rejects non-points and small-order (weak) keys.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        let key = ed25519_dalek::VerifyingKey::from_bytes(bytes)
            .map_err(|_| KeyError::InvalidPublicKey("ed25519"))?;
        if key.is_weak() {
            return Err(KeyError::InvalidPublicKey("ed25519"));
        }
        Ok(Self(key))
    }

    /// The 32-byte encoding.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Verifies with `verify_strict`. Crate-private for the same reason as [`DeviceSigningKey::sign`].
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8; 64]) -> Result<(), CryptoFailure> {
        crypto::ed25519_verify(&self.0, message, signature)
    }
}

impl fmt::Debug for DeviceVerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceVerifyingKey({})", hex_prefix(&self.to_bytes()))
    }
}

// ---------------------------------------------------------------------------------------------
// Key exchange: X25519 for HPKE
// ---------------------------------------------------------------------------------------------

/// An X25519 secret key used as an HPKE recipient key (a device's exchange key, or the broker key).
pub struct ExchangeSecretKey(crypto::hpke_suite::PrivateKey);

impl ExchangeSecretKey {
    /// A fresh key from the OS random generator.
    pub fn generate() -> Result<Self, KeyError> {
        let ikm = Zeroizing::new(random::array::<32>()?);
        Ok(Self::derive(&ikm))
    }

    /// The key from its 32-byte secret (as stored in the keychain or config).
    pub fn from_secret_bytes(secret: &Key32) -> Result<Self, KeyError> {
        use hpke::Deserializable as _;
        crypto::hpke_suite::PrivateKey::from_bytes(secret.expose_secret())
            .map(Self)
            .map_err(|_| KeyError::Crypto)
    }

    /// The 32-byte secret, for storing.
    pub fn expose_secret(&self) -> Key32 {
        use hpke::Serializable as _;
        let mut bytes = self.0.to_bytes();
        // INVARIANT: an X25519 secret key serializes to exactly 32 bytes.
        let key = Key32::from_slice(&bytes).unwrap_or_else(|| Key32::from_bytes([0; 32]));
        bytes.zeroize();
        key
    }

    /// The public half.
    pub fn public_key(&self) -> ExchangePublicKey {
        use hpke::{Kem as _, Serializable as _};
        let pk = crypto::hpke_suite::Kem::sk_to_pk(&self.0);
        let mut out = [0u8; X25519_LEN];
        out.copy_from_slice(&pk.to_bytes());
        ExchangePublicKey(out)
    }

    /// Opens an HPKE base-mode ciphertext addressed to this key.
    pub(crate) fn open(
        &self,
        info: &[u8],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoFailure> {
        crypto::hpke_open(&self.0, info, aad, sealed)
    }

    fn derive(ikm: &[u8; 32]) -> Self {
        use hpke::Kem as _;
        Self(crypto::hpke_suite::Kem::derive_keypair(ikm).0)
    }
}

impl fmt::Debug for ExchangeSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ExchangeSecretKey([REDACTED])")
    }
}

/// An X25519 public key: the recipient of HPKE-sealed keys and capabilities.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExchangePublicKey([u8; X25519_LEN]);

impl ExchangePublicKey {
    /// The key from its 32 bytes. Low-order points are refused when something is sealed to them.
    pub fn from_bytes(bytes: [u8; X25519_LEN]) -> Self {
        Self(bytes)
    }

    /// The 32-byte encoding.
    pub fn to_bytes(&self) -> [u8; X25519_LEN] {
        self.0
    }

    /// Seals `plaintext` to this key with HPKE base mode.
    pub(crate) fn seal(
        &self,
        info: &[u8],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoFailure> {
        crypto::hpke_seal(&self.0, info, aad, plaintext)
    }
}

impl fmt::Debug for ExchangePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExchangePublicKey({})", hex_prefix(&self.0))
    }
}

/// A device's two key pairs. Both halves live in the OS keychain.
#[derive(Debug)]
pub struct DeviceKeys {
    /// Identity: signs requests and capabilities.
    pub signing: DeviceSigningKey,
    /// Receives wrapped workspace and member keys.
    pub exchange: ExchangeSecretKey,
}

impl DeviceKeys {
    /// Fresh keys for a new device.
    pub fn generate() -> Result<Self, KeyError> {
        Ok(Self {
            signing: DeviceSigningKey::generate()?,
            exchange: ExchangeSecretKey::generate()?,
        })
    }

    /// The public halves, as registered with the broker.
    pub fn public_keys(&self) -> DevicePublicKeys {
        DevicePublicKeys {
            signing: self.signing.verifying_key(),
            exchange: self.exchange.public_key(),
        }
    }
}

/// A device's public keys, as the broker and other devices know them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevicePublicKeys {
    /// Verifies the device's request signatures and capabilities.
    pub signing: DeviceVerifyingKey,
    /// Receives wrapped keys.
    pub exchange: ExchangePublicKey,
}

// ---------------------------------------------------------------------------------------------
// The broker key
// ---------------------------------------------------------------------------------------------

/// The broker's HPKE secret key. Capabilities are sealed to its public half; the private half
/// lives only in the broker's configuration (environment or a 0600 file).
#[derive(Debug)]
pub struct BrokerSecretKey(ExchangeSecretKey);

impl BrokerSecretKey {
    /// Prefix of the text encoding of the secret key.
    pub const TEXT_PREFIX: &'static str = "lkbroker1_";

    /// A fresh broker key.
    pub fn generate() -> Result<Self, KeyError> {
        ExchangeSecretKey::generate().map(Self)
    }

    /// The public half, published by the broker.
    pub fn public_key(&self) -> BrokerPublicKey {
        BrokerPublicKey(self.0.public_key())
    }

    /// Text form for a config file or environment variable: `lkbroker1_` + base64url(32 bytes).
    pub fn expose_secret_text(&self) -> Zeroizing<String> {
        let secret = self.0.expose_secret();
        let mut text = Zeroizing::new(String::with_capacity(
            Self::TEXT_PREFIX.len() + crate::secret::BASE64URL_32_LEN,
        ));
        text.push_str(Self::TEXT_PREFIX);
        crate::secret::base64url_32(secret.expose_secret(), &mut text);
        text
    }

    /// Parses [`BrokerSecretKey::expose_secret_text`]'s output (surrounding whitespace allowed).
    pub fn from_secret_text(text: &str) -> Result<Self, KeyError> {
        use base64::Engine as _;
        let body = text
            .trim()
            .strip_prefix(Self::TEXT_PREFIX)
            .ok_or(KeyError::InvalidPublicKey("broker secret (expected lkbroker1_ prefix)"))?;
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(body)
                .map_err(|_| KeyError::InvalidPublicKey("broker secret (bad base64url)"))?,
        );
        let key = Key32::from_slice(&bytes)
            .ok_or(KeyError::InvalidPublicKey("broker secret (expected 32 bytes)"))?;
        ExchangeSecretKey::from_secret_bytes(&key).map(Self)
    }

    pub(crate) fn as_exchange(&self) -> &ExchangeSecretKey {
        &self.0
    }
}

/// The broker's published HPKE public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BrokerPublicKey(ExchangePublicKey);

impl BrokerPublicKey {
    /// The key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; X25519_LEN]) -> Self {
        Self(ExchangePublicKey(bytes))
    }

    /// The 32-byte encoding.
    pub fn to_bytes(&self) -> [u8; X25519_LEN] {
        self.0.to_bytes()
    }

    pub(crate) fn as_exchange(&self) -> &ExchangePublicKey {
        &self.0
    }
}

// ---------------------------------------------------------------------------------------------
// Workspace and member keys, record keys
// ---------------------------------------------------------------------------------------------

/// A workspace key (WK): encrypts the workspace's shared credentials. Zeroized on drop.
#[derive(Debug)]
pub struct WorkspaceKey {
    workspace: WorkspaceId,
    version: KeyVersion,
    key: Key32,
}

impl WorkspaceKey {
    /// A fresh random key for `workspace` at `version`.
    pub fn generate(workspace: WorkspaceId, version: KeyVersion) -> Result<Self, KeyError> {
        Ok(Self { workspace, version, key: Key32::generate()? })
    }

    /// A key from stored bytes.
    pub fn from_parts(workspace: WorkspaceId, version: KeyVersion, key: Key32) -> Self {
        Self { workspace, version, key }
    }

    /// The workspace this key belongs to.
    pub fn workspace(&self) -> WorkspaceId {
        self.workspace
    }

    /// This key's version.
    pub fn version(&self) -> KeyVersion {
        self.version
    }

    /// The raw key, for the keychain or a recovery kit.
    pub fn expose_secret(&self) -> &Key32 {
        &self.key
    }

    /// The record key of one shared credential at this key's version.
    pub fn record_key(&self, credential: CredentialId) -> Result<RecordKey, KeyError> {
        RecordKey::derive(&self.key, self.scope(credential))
    }

    /// The scope a shared credential encrypted under this key has.
    pub fn scope(&self, credential: CredentialId) -> RecordScope {
        RecordScope {
            workspace: self.workspace,
            credential,
            owner: Owner::Shared,
            version: self.version,
        }
    }
}

/// A member key (MK): encrypts one member's personal credentials. Zeroized on drop.
#[derive(Debug)]
pub struct MemberKey {
    workspace: WorkspaceId,
    member: MemberId,
    version: KeyVersion,
    key: Key32,
}

impl MemberKey {
    /// A fresh random key for `member` of `workspace` at `version`.
    pub fn generate(
        workspace: WorkspaceId,
        member: MemberId,
        version: KeyVersion,
    ) -> Result<Self, KeyError> {
        Ok(Self { workspace, member, version, key: Key32::generate()? })
    }

    /// A key from stored bytes.
    pub fn from_parts(
        workspace: WorkspaceId,
        member: MemberId,
        version: KeyVersion,
        key: Key32,
    ) -> Self {
        Self { workspace, member, version, key }
    }

    /// The workspace this key belongs to.
    pub fn workspace(&self) -> WorkspaceId {
        self.workspace
    }

    /// The member this key belongs to.
    pub fn member(&self) -> MemberId {
        self.member
    }

    /// This key's version.
    pub fn version(&self) -> KeyVersion {
        self.version
    }

    /// The raw key, for the keychain or a recovery kit.
    pub fn expose_secret(&self) -> &Key32 {
        &self.key
    }

    /// The record key of one of this member's credentials at this key's version.
    pub fn record_key(&self, credential: CredentialId) -> Result<RecordKey, KeyError> {
        RecordKey::derive(&self.key, self.scope(credential))
    }

    /// The scope a personal credential encrypted under this key has.
    pub fn scope(&self, credential: CredentialId) -> RecordScope {
        RecordScope {
            workspace: self.workspace,
            credential,
            owner: Owner::Member(self.member),
            version: self.version,
        }
    }
}

/// What a record key is for: one credential, of one owner, at one key version, in one workspace.
/// Public data; its encoding is the HKDF info of the record key and the AAD of the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordScope {
    /// The workspace.
    pub workspace: WorkspaceId,
    /// The credential.
    pub credential: CredentialId,
    /// Shared (WK) or a member's (MK).
    pub owner: Owner,
    /// The WK/MK version the record key derives from.
    pub version: KeyVersion,
}

impl RecordScope {
    /// Length of [`RecordScope::encode`]'s output.
    pub const ENCODED_LEN: usize = 16 + 16 + Owner::ENCODED_LEN + 4;

    /// `workspace (16) || credential (16) || owner (17) || key version (u32 big-endian)`.
    pub fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        out[..16].copy_from_slice(self.workspace.as_bytes());
        out[16..32].copy_from_slice(self.credential.as_bytes());
        out[32..49].copy_from_slice(&self.owner.encode());
        out[49..].copy_from_slice(&self.version.get().to_be_bytes());
        out
    }

    /// Parses [`RecordScope::encode`]'s output.
    pub fn decode(bytes: &[u8; Self::ENCODED_LEN]) -> Option<Self> {
        let (workspace, rest) = bytes.split_first_chunk::<16>()?;
        let (credential, rest) = rest.split_first_chunk::<16>()?;
        let (owner, rest) = rest.split_first_chunk::<17>()?;
        let version = u32::from_be_bytes(*rest.first_chunk::<4>()?);
        Some(Self {
            workspace: WorkspaceId::from_bytes(*workspace),
            credential: CredentialId::from_bytes(*credential),
            owner: Owner::decode(owner)?,
            version: KeyVersion::new(version)?,
        })
    }
}

/// The key that opens exactly one credential version. Never stored; zeroized on drop.
pub struct RecordKey {
    scope: RecordScope,
    key: Key32,
}

/// HKDF info label of record keys.
const RECORD_KEY_LABEL: &[u8] = b"latchkey record key v1\0";

impl RecordKey {
    /// HKDF-SHA256 with no salt, IKM = the parent key, info = label || scope encoding.
    fn derive(parent: &Key32, scope: RecordScope) -> Result<Self, KeyError> {
        let mut info = [0u8; RECORD_KEY_LABEL.len() + RecordScope::ENCODED_LEN];
        info[..RECORD_KEY_LABEL.len()].copy_from_slice(RECORD_KEY_LABEL);
        info[RECORD_KEY_LABEL.len()..].copy_from_slice(&scope.encode());
        let mut okm = Zeroizing::new([0u8; 32]);
        crypto::hkdf_sha256(None, parent.expose_secret(), &info, okm.as_mut())?;
        Ok(Self { scope, key: Key32::from_bytes(*okm) })
    }

    /// A record key received inside a capability, with the scope its claims name.
    pub(crate) fn from_parts(scope: RecordScope, key: Key32) -> Self {
        Self { scope, key }
    }

    /// What this key opens.
    pub fn scope(&self) -> &RecordScope {
        &self.scope
    }

    /// The raw key. Crate-private: only envelopes and capabilities handle it.
    pub(crate) fn expose_secret(&self) -> &Key32 {
        &self.key
    }
}

impl fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordKey").field("scope", &self.scope).field("key", &"[REDACTED]").finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Wrapped keys
// ---------------------------------------------------------------------------------------------

/// Which parent key a [`WrappedKey`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WrappedKind {
    /// A workspace key.
    Workspace,
    /// A member key.
    Member,
}

/// The public header of a wrapped key: who it is for, from whom, and which key it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrappedKeyHeader {
    /// Workspace or member key.
    pub kind: WrappedKind,
    /// The workspace.
    pub workspace: WorkspaceId,
    /// `Shared` for a workspace key, the member for a member key.
    pub owner: Owner,
    /// The wrapped key's version.
    pub version: KeyVersion,
    /// The device that can open it.
    pub recipient: DeviceId,
    /// The device that wrapped and signed it.
    pub sender: DeviceId,
}

/// A workspace or member key sealed to one device (HPKE) and signed by the device that sealed it.
///
/// ```text
/// offset  len  field
///      0    1  format version (1)
///      1    1  kind: 1 workspace key, 2 member key
///      2   16  workspace id
///     18   17  owner (see Owner::encode)
///     35    4  key version, u32 big-endian
///     39   16  recipient device id
///     55   16  sender device id
///     71   80  HPKE enc (32) || sealed key (32) || tag (16); info "latchkey wrapped key v1",
///              aad = bytes 0..71
///    151   64  Ed25519 signature by the sender over "latchkey wrapped key v1\0" || bytes 0..151
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey {
    bytes: Vec<u8>,
    header: WrappedKeyHeader,
}

const WRAP_LABEL: &[u8] = b"latchkey wrapped key v1\0";
const WRAP_VERSION: u8 = 1;
const WRAP_HEADER_LEN: usize = 71;
const WRAP_SEALED_LEN: usize = X25519_LEN + 32 + crypto::TAG_LEN;
const WRAP_SIGNED_LEN: usize = WRAP_HEADER_LEN + WRAP_SEALED_LEN;

impl WrappedKey {
    /// Total length of a wrapped key in bytes.
    pub const LEN: usize = WRAP_SIGNED_LEN + 64;

    /// Wraps a workspace key to `recipient`'s exchange key, signed by the sending device.
    pub fn wrap_workspace_key(
        key: &WorkspaceKey,
        recipient: (DeviceId, &ExchangePublicKey),
        sender: (DeviceId, &DeviceSigningKey),
    ) -> Result<Self, KeyError> {
        let header = WrappedKeyHeader {
            kind: WrappedKind::Workspace,
            workspace: key.workspace,
            owner: Owner::Shared,
            version: key.version,
            recipient: recipient.0,
            sender: sender.0,
        };
        Self::wrap(header, &key.key, recipient.1, sender.1)
    }

    /// Wraps a member key to `recipient`'s exchange key, signed by the sending device.
    pub fn wrap_member_key(
        key: &MemberKey,
        recipient: (DeviceId, &ExchangePublicKey),
        sender: (DeviceId, &DeviceSigningKey),
    ) -> Result<Self, KeyError> {
        let header = WrappedKeyHeader {
            kind: WrappedKind::Member,
            workspace: key.workspace,
            owner: Owner::Member(key.member),
            version: key.version,
            recipient: recipient.0,
            sender: sender.0,
        };
        Self::wrap(header, &key.key, recipient.1, sender.1)
    }

    /// Checks framing only (length, version, kind, owner consistency). Opens nothing.
    pub fn parse(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() != Self::LEN {
            return Err(KeyError::MalformedWrappedKey("wrong length"));
        }
        if bytes[0] != WRAP_VERSION {
            return Err(KeyError::MalformedWrappedKey("unknown format version"));
        }
        let kind = match bytes[1] {
            1 => WrappedKind::Workspace,
            2 => WrappedKind::Member,
            _ => return Err(KeyError::MalformedWrappedKey("unknown key kind")),
        };
        let id = |at: usize| -> [u8; 16] {
            let mut out = [0u8; 16];
            out.copy_from_slice(&bytes[at..at + 16]);
            out
        };
        let mut owner = [0u8; Owner::ENCODED_LEN];
        owner.copy_from_slice(&bytes[18..35]);
        let owner = Owner::decode(&owner).ok_or(KeyError::MalformedWrappedKey("bad owner"))?;
        let consistent = matches!(
            (kind, owner),
            (WrappedKind::Workspace, Owner::Shared) | (WrappedKind::Member, Owner::Member(_))
        );
        if !consistent {
            return Err(KeyError::MalformedWrappedKey("owner does not match key kind"));
        }
        let mut version = [0u8; 4];
        version.copy_from_slice(&bytes[35..39]);
        let version = KeyVersion::new(u32::from_be_bytes(version))
            .ok_or(KeyError::MalformedWrappedKey("key version 0"))?;
        let header = WrappedKeyHeader {
            kind,
            workspace: WorkspaceId::from_bytes(id(2)),
            owner,
            version,
            recipient: DeviceId::from_bytes(id(39)),
            sender: DeviceId::from_bytes(id(55)),
        };
        Ok(Self { bytes: bytes.to_vec(), header })
    }

    /// Who the key is for and from, and which key it is.
    pub fn header(&self) -> &WrappedKeyHeader {
        &self.header
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Verifies the sender's signature, then opens a wrapped workspace key with this device's key.
    /// `sender_key` must be a key the caller trusts (compared by fingerprint at enrolment), not one
    /// taken from the server unverified.
    pub fn unwrap_workspace_key(
        &self,
        me: (DeviceId, &ExchangeSecretKey),
        workspace: WorkspaceId,
        sender_key: &DeviceVerifyingKey,
    ) -> Result<WorkspaceKey, KeyError> {
        self.expect(WrappedKind::Workspace, me.0, workspace)?;
        let key = self.open(me.1, sender_key)?;
        Ok(WorkspaceKey { workspace, version: self.header.version, key })
    }

    /// Verifies the sender's signature, then opens a wrapped member key with this device's key.
    pub fn unwrap_member_key(
        &self,
        me: (DeviceId, &ExchangeSecretKey),
        workspace: WorkspaceId,
        sender_key: &DeviceVerifyingKey,
    ) -> Result<MemberKey, KeyError> {
        self.expect(WrappedKind::Member, me.0, workspace)?;
        let Owner::Member(member) = self.header.owner else {
            return Err(KeyError::MalformedWrappedKey("owner does not match key kind"));
        };
        let key = self.open(me.1, sender_key)?;
        Ok(MemberKey { workspace, member, version: self.header.version, key })
    }

    fn wrap(
        header: WrappedKeyHeader,
        key: &Key32,
        recipient: &ExchangePublicKey,
        sender: &DeviceSigningKey,
    ) -> Result<Self, KeyError> {
        let mut bytes = Vec::with_capacity(Self::LEN);
        bytes.push(WRAP_VERSION);
        bytes.push(match header.kind {
            WrappedKind::Workspace => 1,
            WrappedKind::Member => 2,
        });
        bytes.extend_from_slice(header.workspace.as_bytes());
        bytes.extend_from_slice(&header.owner.encode());
        bytes.extend_from_slice(&header.version.get().to_be_bytes());
        bytes.extend_from_slice(header.recipient.as_bytes());
        bytes.extend_from_slice(header.sender.as_bytes());
        let sealed = recipient.seal(WRAP_LABEL, &bytes, key.expose_secret())?;
        bytes.extend_from_slice(&sealed);
        let signature = sender.sign(&signed_message(WRAP_LABEL, &bytes));
        bytes.extend_from_slice(&signature);
        debug_assert_eq!(bytes.len(), Self::LEN);
        Ok(Self { bytes, header })
    }

    fn expect(
        &self,
        kind: WrappedKind,
        me: DeviceId,
        workspace: WorkspaceId,
    ) -> Result<(), KeyError> {
        if self.header.kind != kind {
            return Err(KeyError::WrappedKeyMismatch("another key kind"));
        }
        if self.header.recipient != me {
            return Err(KeyError::WrappedKeyMismatch("another device"));
        }
        if self.header.workspace != workspace {
            return Err(KeyError::WrappedKeyMismatch("another workspace"));
        }
        Ok(())
    }

    fn open(
        &self,
        me: &ExchangeSecretKey,
        sender_key: &DeviceVerifyingKey,
    ) -> Result<Key32, KeyError> {
        let (signed, signature) = self.bytes.split_at(WRAP_SIGNED_LEN);
        let signature: &[u8; 64] =
            signature.try_into().map_err(|_| KeyError::MalformedWrappedKey("wrong length"))?;
        sender_key
            .verify(&signed_message(WRAP_LABEL, signed), signature)
            .map_err(|_| KeyError::WrappedKeyRejected)?;
        let (header, sealed) = signed.split_at(WRAP_HEADER_LEN);
        let key = me.open(WRAP_LABEL, header, sealed).map_err(|_| KeyError::WrappedKeyRejected)?;
        Key32::from_slice(&key).ok_or(KeyError::WrappedKeyRejected)
    }
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedKey").field("header", &self.header).finish_non_exhaustive()
    }
}

/// `label || message`, the exact bytes a device signs for a given format.
pub(crate) fn signed_message(label: &[u8], message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(label.len() + message.len());
    out.extend_from_slice(label);
    out.extend_from_slice(message);
    out
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes.iter().take(6).map(|b| format!("{b:02x}")).collect::<String>() + ".."
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vectors::unhex_fixture;

    struct Device {
        id: DeviceId,
        keys: DeviceKeys,
    }

    fn device() -> Device {
        Device { id: DeviceId::random(), keys: DeviceKeys::generate().unwrap() }
    }

    #[test]
    fn record_keys_differ_per_credential_owner_and_version() {
        let ws = WorkspaceId::random();
        let wk1 = WorkspaceKey::generate(ws, KeyVersion::FIRST).unwrap();
        let (a, b) = (CredentialId::random(), CredentialId::random());
        let ka = wk1.record_key(a).unwrap();
        assert_ne!(
            ka.expose_secret(),
            wk1.record_key(b).unwrap().expose_secret(),
            "per credential"
        );
        let same_bytes_other_owner = MemberKey::from_parts(
            ws,
            MemberId::random(),
            KeyVersion::FIRST,
            wk1.expose_secret().duplicate(),
        );
        assert_ne!(
            ka.expose_secret(),
            same_bytes_other_owner.record_key(a).unwrap().expose_secret(),
            "the owner is part of the derivation even when parent bytes are equal"
        );
        let wk1_as_v2 = WorkspaceKey::from_parts(
            ws,
            KeyVersion::new(2).unwrap(),
            wk1.expose_secret().duplicate(),
        );
        assert_ne!(
            ka.expose_secret(),
            wk1_as_v2.record_key(a).unwrap().expose_secret(),
            "per version"
        );
        assert_eq!(ka.expose_secret(), wk1.record_key(a).unwrap().expose_secret(), "deterministic");
    }

    #[test]
    fn record_key_derivation_matches_the_documented_example() {
        // docs/protocol.md "Record keys"; the expected value was computed independently with
        // Python's hmac module (RFC 5869 with an empty salt).
        let workspace: WorkspaceId = "6f1c1c2e-4c39-4a8e-9b0e-2d5f0c4a7b11".parse().unwrap();
        let credential: CredentialId = "0d7e2f4a-93b1-4c55-8a1e-6b2c9d3e4f50".parse().unwrap();
        let wk =
            WorkspaceKey::from_parts(workspace, KeyVersion::FIRST, Key32::from_bytes([0x42; 32]));
        let record = wk.record_key(credential).unwrap();
        let hex: String =
            record.expose_secret().expose_secret().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "c7ea9d0cbecfe37dab7c2df2556a70f9d741cbe67dd244dc0ea754f64d095aed");
    }

    #[test]
    fn record_scope_encoding_round_trips() {
        let scope = RecordScope {
            workspace: WorkspaceId::random(),
            credential: CredentialId::random(),
            owner: Owner::Member(MemberId::random()),
            version: KeyVersion::new(7).unwrap(),
        };
        assert_eq!(RecordScope::decode(&scope.encode()), Some(scope));
    }

    #[test]
    fn a_wrapped_workspace_key_opens_only_on_its_recipient_with_the_senders_key() {
        let (admin, newcomer, stranger) = (device(), device(), device());
        let ws = WorkspaceId::random();
        let wk = WorkspaceKey::generate(ws, KeyVersion::FIRST).unwrap();
        let wrapped = WrappedKey::wrap_workspace_key(
            &wk,
            (newcomer.id, &newcomer.keys.exchange.public_key()),
            (admin.id, &admin.keys.signing),
        )
        .unwrap();
        let parsed = WrappedKey::parse(wrapped.as_bytes()).unwrap();
        let opened = parsed
            .unwrap_workspace_key(
                (newcomer.id, &newcomer.keys.exchange),
                ws,
                &admin.keys.signing.verifying_key(),
            )
            .unwrap();
        assert_eq!(opened.expose_secret(), wk.expose_secret());

        let wrong_sender = parsed.unwrap_workspace_key(
            (newcomer.id, &newcomer.keys.exchange),
            ws,
            &stranger.keys.signing.verifying_key(),
        );
        assert_eq!(
            wrong_sender.unwrap_err(),
            KeyError::WrappedKeyRejected,
            "a substituted sender must fail"
        );
        let wrong_device = parsed.unwrap_workspace_key(
            (stranger.id, &stranger.keys.exchange),
            ws,
            &admin.keys.signing.verifying_key(),
        );
        assert!(matches!(wrong_device, Err(KeyError::WrappedKeyMismatch(_))));
        let wrong_workspace = parsed.unwrap_workspace_key(
            (newcomer.id, &newcomer.keys.exchange),
            WorkspaceId::random(),
            &admin.keys.signing.verifying_key(),
        );
        assert!(matches!(wrong_workspace, Err(KeyError::WrappedKeyMismatch(_))));
        assert!(matches!(
            parsed.unwrap_member_key(
                (newcomer.id, &newcomer.keys.exchange),
                ws,
                &admin.keys.signing.verifying_key()
            ),
            Err(KeyError::WrappedKeyMismatch(_))
        ));
    }

    #[test]
    fn every_single_bit_flip_in_a_wrapped_key_is_rejected() {
        let (admin, newcomer) = (device(), device());
        let ws = WorkspaceId::random();
        let member = MemberId::random();
        let mk = MemberKey::generate(ws, member, KeyVersion::FIRST).unwrap();
        let wrapped = WrappedKey::wrap_member_key(
            &mk,
            (newcomer.id, &newcomer.keys.exchange.public_key()),
            (admin.id, &admin.keys.signing),
        )
        .unwrap();
        let sender = admin.keys.signing.verifying_key();
        for bit in 0..WrappedKey::LEN * 8 {
            let mut bytes = wrapped.as_bytes().to_vec();
            bytes[bit / 8] ^= 1 << (bit % 8);
            let outcome = WrappedKey::parse(&bytes).and_then(|w| {
                w.unwrap_member_key((newcomer.id, &newcomer.keys.exchange), ws, &sender)
            });
            assert!(outcome.is_err(), "flipping bit {bit} must not yield a key");
        }
    }

    /// Committed wrapped keys, made once and checked independently (see each file's notes).
    const WRAPPED_WORKSPACE_KEY: &str = include_str!("../testdata/wrapped-workspace-key.hex");
    const WRAPPED_MEMBER_KEY: &str = include_str!("../testdata/wrapped-member-key.hex");

    /// The fixed inputs the committed wrapped keys were made from.
    struct Fixed {
        workspace: WorkspaceId,
        member: MemberId,
        sender: DeviceId,
        signing: DeviceSigningKey,
        recipient: DeviceId,
        exchange: ExchangeSecretKey,
    }

    fn fixed() -> Fixed {
        let fixed = Fixed {
            workspace: "6f1c1c2e-4c39-4a8e-9b0e-2d5f0c4a7b11".parse().unwrap(),
            member: "5a1d3c7e-2b4f-4e6a-8c9d-0e1f2a3b4c5d".parse().unwrap(),
            sender: "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d".parse().unwrap(),
            signing: DeviceSigningKey::from_secret_bytes(&Key32::from_bytes([0xa1; 32])),
            recipient: "c3d4e5f6-a7b8-4c9d-8e0f-1a2b3c4d5e6f".parse().unwrap(),
            exchange: ExchangeSecretKey::from_secret_bytes(&Key32::from_bytes([0xb2; 32])).unwrap(),
        };
        // The public keys the fixtures' notes name, as Python's cryptography computed them.
        assert_eq!(
            hex::encode(fixed.signing.verifying_key().to_bytes()),
            "bc7cbcb5636375fa1d82434d466724d92377f53b980695dd49d26d0ce12205a5",
            "the sender's Ed25519 public key from seed a1 x 32"
        );
        assert_eq!(
            hex::encode(fixed.exchange.public_key().to_bytes()),
            "db48257e1237976a74ad8cfedca00213408fe89ac6251f1b930245f242b5c31a",
            "the recipient's X25519 public key from secret b2 x 32"
        );
        fixed
    }

    impl Fixed {
        fn me(&self) -> (DeviceId, &ExchangeSecretKey) {
            (self.recipient, &self.exchange)
        }

        fn workspace_key(&self) -> WorkspaceKey {
            WorkspaceKey::from_parts(
                self.workspace,
                KeyVersion::FIRST,
                Key32::from_bytes([0x42; 32]),
            )
        }

        fn member_key(&self) -> MemberKey {
            MemberKey::from_parts(
                self.workspace,
                self.member,
                KeyVersion::new(2).unwrap(),
                Key32::from_bytes([0x17; 32]),
            )
        }

        fn open_member_key(&self, bytes: &[u8]) -> Result<MemberKey, KeyError> {
            WrappedKey::parse(bytes)?.unwrap_member_key(
                self.me(),
                self.workspace,
                &self.signing.verifying_key(),
            )
        }
    }

    #[test]
    fn the_committed_wrapped_keys_open_to_their_keys_and_a_new_wrap_has_the_same_header() {
        // Opening pins the reader: the layout, the labels, the HPKE suite, what is signed. The
        // header of a new wrap of the same key pins the writer; its HPKE part is fresh.
        let f = fixed();
        let sender_key = f.signing.verifying_key();
        let recipient_key = f.exchange.public_key();

        let committed = unhex_fixture(WRAPPED_WORKSPACE_KEY);
        let wrapped = WrappedKey::parse(&committed).unwrap();
        assert_eq!(
            *wrapped.header(),
            WrappedKeyHeader {
                kind: WrappedKind::Workspace,
                workspace: f.workspace,
                owner: Owner::Shared,
                version: KeyVersion::FIRST,
                recipient: f.recipient,
                sender: f.sender,
            },
            "the committed workspace key's header"
        );
        let wk = wrapped.unwrap_workspace_key(f.me(), f.workspace, &sender_key).unwrap();
        assert_eq!(wk.expose_secret(), f.workspace_key().expose_secret(), "42 x 32 inside");
        assert_eq!(wk.version(), KeyVersion::FIRST);
        let again = WrappedKey::wrap_workspace_key(
            &f.workspace_key(),
            (f.recipient, &recipient_key),
            (f.sender, &f.signing),
        )
        .unwrap();
        assert_eq!(&again.as_bytes()[..71], &committed[..71], "a new wrap writes the same header");
        assert_ne!(&again.as_bytes()[71..103], &committed[71..103], "with a fresh HPKE enc");

        let committed = unhex_fixture(WRAPPED_MEMBER_KEY);
        let wrapped = WrappedKey::parse(&committed).unwrap();
        assert_eq!(
            *wrapped.header(),
            WrappedKeyHeader {
                kind: WrappedKind::Member,
                workspace: f.workspace,
                owner: Owner::Member(f.member),
                version: KeyVersion::new(2).unwrap(),
                recipient: f.recipient,
                sender: f.sender,
            },
            "the committed member key's header"
        );
        let mk = f.open_member_key(&committed).unwrap();
        assert_eq!(mk.expose_secret(), f.member_key().expose_secret(), "17 x 32 inside");
        assert_eq!((mk.member(), mk.version()), (f.member, KeyVersion::new(2).unwrap()));
        let again = WrappedKey::wrap_member_key(
            &f.member_key(),
            (f.recipient, &recipient_key),
            (f.sender, &f.signing),
        )
        .unwrap();
        assert_eq!(&again.as_bytes()[..71], &committed[..71], "a new wrap writes the same header");
        let reopened = f.open_member_key(again.as_bytes()).unwrap();
        assert_eq!(reopened.expose_secret(), f.member_key().expose_secret(), "and opens alike");
    }

    #[test]
    fn each_region_of_the_committed_wrapped_key_altered_gives_its_own_error() {
        let f = fixed();
        let committed = unhex_fixture(WRAPPED_MEMBER_KEY);
        let set = |at: usize, value: u8| {
            let mut altered = committed.clone();
            altered[at] = value;
            altered
        };
        let flip = |at: usize| set(at, committed[at] ^ 0x01);
        let malformed = KeyError::MalformedWrappedKey;
        let rejected = KeyError::WrappedKeyRejected;
        let cases: Vec<(&str, Vec<u8>, KeyError)> = vec![
            ("format version", flip(0), malformed("unknown format version")),
            ("kind: unknown", set(1, 3), malformed("unknown key kind")),
            ("kind: workspace key", set(1, 1), malformed("owner does not match key kind")),
            ("workspace", flip(2), KeyError::WrappedKeyMismatch("another workspace")),
            ("owner tag", set(18, 0), malformed("bad owner")),
            ("owner's member id", flip(19), rejected.clone()),
            ("key version 0", set(38, 0), malformed("key version 0")),
            ("key version", flip(38), rejected.clone()),
            ("recipient", flip(39), KeyError::WrappedKeyMismatch("another device")),
            ("sender", flip(55), rejected.clone()),
            ("HPKE enc", flip(71), rejected.clone()),
            ("sealed key", flip(103), rejected.clone()),
            ("tag", flip(135), rejected.clone()),
            ("signature", flip(151), rejected.clone()),
            ("signature's last byte", flip(214), rejected.clone()),
            ("last byte cut", committed[..214].to_vec(), malformed("wrong length")),
        ];
        for (region, bytes, expected) in cases {
            let err = f.open_member_key(&bytes).unwrap_err();
            assert_eq!(err, expected, "{region} altered");
        }

        // The sender can re-sign whatever it alters; the HPKE seal still refuses a changed header
        // (its associated data) or sealed key. Re-signing the committed bytes reproduces the
        // committed signature (Ed25519 is deterministic), so the signing below is the real one.
        let resigned = |mut bytes: Vec<u8>| {
            let signature =
                f.signing.sign(&signed_message(b"latchkey wrapped key v1\0", &bytes[..151]));
            bytes[151..].copy_from_slice(&signature);
            bytes
        };
        assert_eq!(resigned(committed.clone()), committed, "re-signing changes nothing");
        for (region, at) in [("sender", 55), ("owner's member id", 19), ("sealed key", 103)] {
            let err = f.open_member_key(&resigned(flip(at))).unwrap_err();
            assert_eq!(err, rejected, "{region} altered and re-signed: the seal must refuse it");
        }
        assert!(f.open_member_key(&committed).is_ok(), "the unaltered key still opens");
    }

    #[test]
    fn wrapped_key_parsing_rejects_bad_framing_specifically() {
        assert_eq!(
            WrappedKey::parse(&[]).unwrap_err(),
            KeyError::MalformedWrappedKey("wrong length")
        );
        let mut bytes = vec![0u8; WrappedKey::LEN];
        assert_eq!(
            WrappedKey::parse(&bytes).unwrap_err(),
            KeyError::MalformedWrappedKey("unknown format version")
        );
        bytes[0] = 1;
        assert_eq!(
            WrappedKey::parse(&bytes).unwrap_err(),
            KeyError::MalformedWrappedKey("unknown key kind")
        );
    }

    #[test]
    fn broker_secret_text_round_trips_and_rejects_junk() {
        let key = BrokerSecretKey::generate().unwrap();
        let text = key.expose_secret_text();
        let again = BrokerSecretKey::from_secret_text(&format!("  {}\n", text.as_str())).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        for bad in
            ["", "lkbroker1_", "lkbroker1_AAAA", "nope_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]
        {
            assert!(BrokerSecretKey::from_secret_text(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn weak_and_invalid_ed25519_public_keys_are_refused() {
        let identity_point = {
            let mut b = [0u8; 32];
            b[0] = 1;
            b
        };
        assert!(
            DeviceVerifyingKey::from_bytes(&identity_point).is_err(),
            "small-order key must be refused"
        );
    }

    #[test]
    fn sealing_to_a_low_order_exchange_key_fails() {
        let zero = ExchangePublicKey::from_bytes([0u8; 32]);
        assert!(
            zero.seal(b"info", b"aad", b"secret").is_err(),
            "all-zero DH output must be refused"
        );
    }

    #[test]
    fn debug_output_of_every_key_type_is_redacted() {
        let keys = DeviceKeys::generate().unwrap();
        let seed = keys.signing.expose_secret();
        let x = keys.exchange.expose_secret();
        let ws = WorkspaceId::random();
        let wk = WorkspaceKey::generate(ws, KeyVersion::FIRST).unwrap();
        let mk = MemberKey::generate(ws, MemberId::random(), KeyVersion::FIRST).unwrap();
        let rk = wk.record_key(CredentialId::random()).unwrap();
        let broker = BrokerSecretKey::generate().unwrap();
        let broker_text = broker.expose_secret_text();
        let shown = format!("{keys:?} {wk:?} {mk:?} {rk:?} {broker:?}");
        let as_hex =
            |k: &Key32| k.expose_secret().iter().map(|b| format!("{b:02x}")).collect::<String>();
        for (name, secret) in [
            ("signing seed", &seed),
            ("exchange secret", &x),
            ("workspace key", wk.expose_secret()),
            ("member key", mk.expose_secret()),
            ("record key", rk.expose_secret()),
        ] {
            let decimal = format!("{:?}", secret.expose_secret());
            assert!(
                !shown.contains(&decimal[1..decimal.len() - 1]),
                "{name} leaked in Debug as bytes"
            );
            assert!(!shown.contains(&as_hex(secret)), "{name} leaked in Debug as hex");
        }
        assert!(
            !shown.contains(&broker_text[BrokerSecretKey::TEXT_PREFIX.len()..]),
            "broker key leaked"
        );
    }
}
