//! Envelopes: how a credential is stored.
//!
//! ```text
//! offset  len  field
//!      0    1  format version (1)
//!      1    4  key version, u32 big-endian (the WK/MK version the record key derives from)
//!      5   12  nonce, 96 bits from the OS random generator, fresh for every seal
//!     17    n  AES-256-GCM ciphertext of the credential
//!   17+n   16  AES-256-GCM tag
//!
//! AAD = "latchkey envelope v1\0" || format version || RecordScope::encode()
//!     = label || 0x01 || workspace (16) || credential (16) || owner (17) || key version (4)
//! ```
//!
//! The AAD binds the envelope to its workspace, credential, owner and key version, so an
//! envelope moved to another row, workspace, owner or version does not open. The nonce is random
//! rather than a counter because envelopes are sealed on many devices with no shared state; with
//! a fresh record key per credential and version, and at most a few thousand seals per record key
//! over its life (each token refresh is one), the 2^-32 collision bound for random 96-bit nonces
//! is never approached. No API accepts a nonce from a caller.
//!
//! [`Envelope::parse`] checks framing (length bounds, format version) without any cryptography, so
//! the broker can validate what it stores without being able to open it. [`Envelope::open`]
//! checks that the record key's version matches the header before the AEAD runs, and every AEAD
//! failure is the one detail-free [`EnvelopeError::Rejected`].

use crate::crypto::{self, NONCE_LEN, TAG_LEN};
use crate::ids::KeyVersion;
use crate::keys::{RecordKey, RecordScope};
use crate::random::{self, RandomError};
use crate::secret::SecretBytes;

/// Current envelope format version.
pub const FORMAT_VERSION: u8 = 1;
/// Bytes before the ciphertext.
pub const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;
/// Largest credential an envelope may hold (OAuth token sets are a few KiB at most).
pub const MAX_PLAINTEXT_LEN: usize = 64 * 1024;
/// Smallest valid envelope: header and tag around an empty ciphertext.
pub const MIN_LEN: usize = HEADER_LEN + TAG_LEN;
/// Largest valid envelope.
pub const MAX_LEN: usize = HEADER_LEN + MAX_PLAINTEXT_LEN + TAG_LEN;

const AAD_LABEL: &[u8] = b"latchkey envelope v1\0";

/// An envelope could not be made or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Fewer bytes than the smallest possible envelope.
    #[error("envelope too short: {0} bytes, at least {MIN_LEN} expected")]
    TooShort(usize),
    /// More bytes than the largest allowed envelope.
    #[error("envelope too long: {0} bytes, at most {MAX_LEN} allowed")]
    TooLong(usize),
    /// A format version this build does not know.
    #[error("unknown envelope format version {0}")]
    UnknownVersion(u8),
    /// The key version field is zero.
    #[error("envelope names key version 0, which does not exist")]
    ZeroKeyVersion,
    /// The record key is for another key version than the envelope.
    #[error("envelope is sealed under key version {envelope}, the record key is for {key}")]
    KeyVersionMismatch {
        /// The envelope's key version.
        envelope: KeyVersion,
        /// The record key's version.
        key: KeyVersion,
    },
    /// The credential is larger than an envelope may hold.
    #[error("credential too large: {0} bytes, at most {MAX_PLAINTEXT_LEN} allowed")]
    PlaintextTooLong(usize),
    /// Authentication failed: wrong key, wrong scope, or altered bytes. No detail on purpose.
    #[error("envelope could not be opened")]
    Rejected,
    /// The OS random generator failed.
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// A sealed credential with valid framing. Holding one says nothing about whether it opens.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    bytes: Vec<u8>,
    key_version: KeyVersion,
}

impl Envelope {
    /// Encrypts `plaintext` under `key`, binding the key's scope, with a fresh random nonce.
    pub fn seal(key: &RecordKey, plaintext: &[u8]) -> Result<Self, EnvelopeError> {
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(EnvelopeError::PlaintextTooLong(plaintext.len()));
        }
        let scope = key.scope();
        let nonce = random::array::<NONCE_LEN>()?;
        let mut bytes = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
        bytes.push(FORMAT_VERSION);
        bytes.extend_from_slice(&scope.version.get().to_be_bytes());
        bytes.extend_from_slice(&nonce);
        let ciphertext =
            crypto::aes256gcm_seal(key.expose_secret(), &nonce, &aad(scope), plaintext)
                .map_err(|_| EnvelopeError::Rejected)?;
        bytes.extend_from_slice(&ciphertext);
        Ok(Self { bytes, key_version: scope.version })
    }

    /// Checks framing only: length bounds, format version and a non-zero key version.
    pub fn parse(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        if bytes.len() < MIN_LEN {
            return Err(EnvelopeError::TooShort(bytes.len()));
        }
        if bytes.len() > MAX_LEN {
            return Err(EnvelopeError::TooLong(bytes.len()));
        }
        if bytes[0] != FORMAT_VERSION {
            return Err(EnvelopeError::UnknownVersion(bytes[0]));
        }
        let version = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        let key_version = KeyVersion::new(version).ok_or(EnvelopeError::ZeroKeyVersion)?;
        Ok(Self { bytes: bytes.to_vec(), key_version })
    }

    /// The key version the envelope is sealed under.
    pub fn key_version(&self) -> KeyVersion {
        self.key_version
    }

    /// The encoded bytes, as stored.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Consumes the envelope, returning its bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Decrypts with `key`. The key's version must match the header (checked before the AEAD);
    /// any authentication failure, including a scope mismatch, is [`EnvelopeError::Rejected`].
    pub fn open(&self, key: &RecordKey) -> Result<SecretBytes, EnvelopeError> {
        let scope = key.scope();
        if scope.version != self.key_version {
            return Err(EnvelopeError::KeyVersionMismatch {
                envelope: self.key_version,
                key: scope.version,
            });
        }
        let (header, ciphertext) = self.bytes.split_at(HEADER_LEN);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&header[5..]);
        let plaintext =
            crypto::aes256gcm_open(key.expose_secret(), &nonce, &aad(scope), ciphertext)
                .map_err(|_| EnvelopeError::Rejected)?;
        Ok(SecretBytes::from_zeroizing(plaintext))
    }
}

impl core::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Envelope")
            .field("key_version", &self.key_version)
            .field("len", &self.bytes.len())
            .finish()
    }
}

fn aad(scope: &RecordScope) -> [u8; AAD_LABEL.len() + 1 + RecordScope::ENCODED_LEN] {
    let mut out = [0u8; AAD_LABEL.len() + 1 + RecordScope::ENCODED_LEN];
    out[..AAD_LABEL.len()].copy_from_slice(AAD_LABEL);
    out[AAD_LABEL.len()] = FORMAT_VERSION;
    out[AAD_LABEL.len() + 1..].copy_from_slice(&scope.encode());
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::ids::{CredentialId, MemberId, WorkspaceId};
    use crate::keys::{MemberKey, WorkspaceKey};

    const CANARY: &[u8] = b"ghp_CANARYcanaryCANARYcanary0123456789";

    fn workspace_key() -> WorkspaceKey {
        WorkspaceKey::generate(WorkspaceId::random(), KeyVersion::FIRST).unwrap()
    }

    /// The workspace key of docs/protocol.md's examples, and its record key for the example
    /// credential.
    fn documented_keys() -> (WorkspaceKey, RecordKey) {
        let workspace: WorkspaceId = "6f1c1c2e-4c39-4a8e-9b0e-2d5f0c4a7b11".parse().unwrap();
        let credential: CredentialId = "0d7e2f4a-93b1-4c55-8a1e-6b2c9d3e4f50".parse().unwrap();
        let wk = WorkspaceKey::from_parts(
            workspace,
            KeyVersion::FIRST,
            crate::secret::Key32::from_bytes([0x42; 32]),
        );
        let key = wk.record_key(credential).unwrap();
        (wk, key)
    }

    /// docs/protocol.md, "Envelopes": `ghp_exampleToken` under the documented record key.
    fn documented_envelope() -> Vec<u8> {
        hex::decode(concat!(
            "01",
            "00000001",
            "c58ee57a21ea06aca0b7aad2",
            "830b348083422d962727e21103a8ba18",
            "4ae5c6ad7d7273184fa002d39c2e54ad"
        ))
        .unwrap()
    }

    #[test]
    fn the_documented_envelope_opens_under_the_documented_record_key_and_a_flipped_bit_does_not() {
        // docs/protocol.md, "Envelopes": a fixed vector (checked independently with Python's
        // AES-GCM), so a change made alike to sealing and opening (the AAD's layout, the header)
        // cannot pass unnoticed as round trips would let it.
        let (_, key) = documented_keys();
        let documented = documented_envelope();
        let opened = Envelope::parse(&documented).unwrap().open(&key).unwrap();
        assert_eq!(opened.expose_secret(), b"ghp_exampleToken");
        for bit in 0..documented.len() * 8 {
            let mut flipped = documented.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let refused = Envelope::parse(&flipped).and_then(|e| e.open(&key));
            assert!(refused.is_err(), "bit {bit} flipped must not open");
        }
    }

    #[test]
    fn each_region_of_the_documented_envelope_altered_gives_its_own_error() {
        let (wk, key) = documented_keys();
        let documented = documented_envelope();
        let set = |at: usize, value: u8| {
            let mut altered = documented.clone();
            altered[at] = value;
            altered
        };
        let flip = |at: usize| set(at, documented[at] ^ 0x01);
        let two = KeyVersion::new(2).unwrap();
        let end = documented.len();
        let cases: Vec<(&str, Vec<u8>, EnvelopeError)> = vec![
            ("format version", flip(0), EnvelopeError::UnknownVersion(0)),
            ("key version 0", set(4, 0), EnvelopeError::ZeroKeyVersion),
            (
                "key version 2",
                set(4, 2),
                EnvelopeError::KeyVersionMismatch { envelope: two, key: KeyVersion::FIRST },
            ),
            ("nonce", flip(5), EnvelopeError::Rejected),
            ("ciphertext", flip(HEADER_LEN), EnvelopeError::Rejected),
            ("tag", flip(end - 1), EnvelopeError::Rejected),
            ("last byte cut", documented[..end - 1].to_vec(), EnvelopeError::Rejected),
            (
                "cut below the minimum",
                documented[..MIN_LEN - 1].to_vec(),
                EnvelopeError::TooShort(32),
            ),
        ];
        for (region, bytes, expected) in cases {
            let err = Envelope::parse(&bytes).and_then(|e| e.open(&key)).unwrap_err();
            assert_eq!(err, expected, "{region} altered");
        }
        // The scope is the associated data: the same bytes under another credential's key fail.
        let other = wk.record_key(CredentialId::random()).unwrap();
        let err = Envelope::parse(&documented).unwrap().open(&other).unwrap_err();
        assert_eq!(err, EnvelopeError::Rejected, "another credential's record key");
        // A new seal writes the same header but for its fresh nonce, and the same length.
        let again = Envelope::seal(&key, b"ghp_exampleToken").unwrap();
        assert_eq!(again.as_bytes().len(), end, "a new seal has the documented length");
        assert_eq!(&again.as_bytes()[..5], &documented[..5], "version and key version");
        assert_ne!(&again.as_bytes()[5..HEADER_LEN], &documented[5..HEADER_LEN], "fresh nonce");
    }

    #[test]
    fn a_sealed_credential_opens_with_its_record_key() {
        let wk = workspace_key();
        let key = wk.record_key(CredentialId::random()).unwrap();
        let envelope = Envelope::seal(&key, CANARY).unwrap();
        assert_eq!(envelope.as_bytes().len(), HEADER_LEN + CANARY.len() + TAG_LEN);
        let parsed = Envelope::parse(envelope.as_bytes()).unwrap();
        assert_eq!(parsed.open(&key).unwrap().expose_secret(), CANARY);
    }

    #[test]
    fn two_seals_of_the_same_credential_never_share_a_nonce_or_ciphertext() {
        let key = workspace_key().record_key(CredentialId::random()).unwrap();
        let a = Envelope::seal(&key, CANARY).unwrap();
        let b = Envelope::seal(&key, CANARY).unwrap();
        assert_ne!(a.as_bytes()[5..17], b.as_bytes()[5..17], "nonces must be fresh per seal");
        assert_ne!(a.as_bytes(), b.as_bytes());
    }

    #[test]
    fn an_envelope_moved_to_another_credential_workspace_owner_or_version_does_not_open() {
        let ws = WorkspaceId::random();
        let credential = CredentialId::random();
        let wk = WorkspaceKey::generate(ws, KeyVersion::FIRST).unwrap();
        let envelope = Envelope::seal(&wk.record_key(credential).unwrap(), CANARY).unwrap();

        let other_credential = wk.record_key(CredentialId::random()).unwrap();
        assert_eq!(
            envelope.open(&other_credential).unwrap_err(),
            EnvelopeError::Rejected,
            "credential"
        );

        // Same key bytes in every case below: only the scope differs, so only the AAD catches it.
        let same_bytes = |ws, owner: Option<MemberId>| match owner {
            None => WorkspaceKey::from_parts(ws, KeyVersion::FIRST, wk.expose_secret().duplicate())
                .record_key(credential)
                .unwrap(),
            Some(m) => {
                MemberKey::from_parts(ws, m, KeyVersion::FIRST, wk.expose_secret().duplicate())
                    .record_key(credential)
                    .unwrap()
            }
        };
        let other_workspace = same_bytes(WorkspaceId::random(), None);
        assert_eq!(
            envelope.open(&other_workspace).unwrap_err(),
            EnvelopeError::Rejected,
            "workspace"
        );
        let other_owner = same_bytes(ws, Some(MemberId::random()));
        assert_eq!(envelope.open(&other_owner).unwrap_err(), EnvelopeError::Rejected, "owner");

        let v2 = WorkspaceKey::from_parts(
            ws,
            KeyVersion::new(2).unwrap(),
            wk.expose_secret().duplicate(),
        );
        assert!(matches!(
            envelope.open(&v2.record_key(credential).unwrap()),
            Err(EnvelopeError::KeyVersionMismatch { .. })
        ));
        // Rewriting the header's version to match the key still fails: the version is in the AAD.
        let mut relabelled = envelope.as_bytes().to_vec();
        relabelled[1..5].copy_from_slice(&2u32.to_be_bytes());
        let relabelled = Envelope::parse(&relabelled).unwrap();
        let key_v2_same_derivation = RecordKey::from_parts(
            v2.scope(credential),
            wk.record_key(credential).unwrap().expose_secret().duplicate(),
        );
        assert_eq!(relabelled.open(&key_v2_same_derivation).unwrap_err(), EnvelopeError::Rejected);
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let key = workspace_key().record_key(CredentialId::random()).unwrap();
        let envelope = Envelope::seal(&key, CANARY).unwrap();
        for bit in 0..envelope.as_bytes().len() * 8 {
            let mut bytes = envelope.as_bytes().to_vec();
            bytes[bit / 8] ^= 1 << (bit % 8);
            let opened = Envelope::parse(&bytes).and_then(|e| e.open(&key));
            assert!(opened.is_err(), "flipping bit {bit} must not open");
        }
    }

    #[test]
    fn framing_errors_are_specific_and_come_before_any_decryption() {
        assert_eq!(
            Envelope::parse(&[1; MIN_LEN - 1]).unwrap_err(),
            EnvelopeError::TooShort(MIN_LEN - 1)
        );
        assert_eq!(
            Envelope::parse(&vec![1; MAX_LEN + 1]).unwrap_err(),
            EnvelopeError::TooLong(MAX_LEN + 1)
        );
        let mut bytes = vec![0u8; MIN_LEN];
        bytes[0] = 9;
        assert_eq!(Envelope::parse(&bytes).unwrap_err(), EnvelopeError::UnknownVersion(9));
        bytes[0] = FORMAT_VERSION;
        assert_eq!(Envelope::parse(&bytes).unwrap_err(), EnvelopeError::ZeroKeyVersion);
    }

    #[test]
    fn oversized_credentials_are_refused_at_seal() {
        let key = workspace_key().record_key(CredentialId::random()).unwrap();
        let big = vec![0u8; MAX_PLAINTEXT_LEN + 1];
        assert_eq!(
            Envelope::seal(&key, &big).unwrap_err(),
            EnvelopeError::PlaintextTooLong(big.len())
        );
        assert!(Envelope::seal(&key, &big[1..]).is_ok(), "exactly the maximum is allowed");
    }

    #[test]
    fn errors_and_debug_output_never_contain_the_credential() {
        let key = workspace_key().record_key(CredentialId::random()).unwrap();
        let envelope = Envelope::seal(&key, CANARY).unwrap();
        let opened = envelope.open(&key).unwrap();
        let shown = format!("{envelope:?} {opened:?} {key:?} {}", EnvelopeError::Rejected);
        assert!(!shown.contains("CANARY"), "a credential leaked: {shown}");
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Envelope::parse(&bytes);
        }

        #[test]
        fn any_credential_round_trips(plaintext in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let key = workspace_key().record_key(CredentialId::random()).unwrap();
            let envelope = Envelope::seal(&key, &plaintext).unwrap();
            let opened = envelope.open(&key).unwrap();
            prop_assert_eq!(opened.expose_secret(), &plaintext[..]);
        }
    }
}
