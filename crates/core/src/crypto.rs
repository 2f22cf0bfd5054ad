//! The primitives every format in this crate is built from, in one crate-private module.
//!
//! | use | primitive |
//! |---|---|
//! | envelopes, recovery kits | AES-256-GCM, 96-bit nonce, 128-bit tag |
//! | record keys | HKDF-SHA256 (RFC 5869) |
//! | key wrapping, capabilities | HPKE base mode (RFC 9180): DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305 |
//! | device identity | Ed25519, verified with `verify_strict` |
//!
//! The outside test vectors (Wycheproof, RFC 5869, RFC 9180) run against these exact functions, so
//! what is tested is what the formats use. Nonces for AES-GCM are taken as parameters only here,
//! inside the crate: every public API draws its own.

use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hpke::{Deserializable as _, Serializable as _};
use zeroize::Zeroizing;

use crate::secret::Key32;

/// AEAD tag length for both AES-256-GCM and ChaCha20-Poly1305.
pub(crate) const TAG_LEN: usize = 16;
/// AES-GCM nonce length.
pub(crate) const NONCE_LEN: usize = 12;
/// Length of an X25519 public key and of an HPKE encapsulated key for this suite.
pub(crate) const X25519_LEN: usize = 32;

/// A primitive refused its input. Deliberately carries no detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CryptoFailure;

/// AES-256-GCM encryption of `plaintext` under `key` and `nonce`, binding `aad`.
/// Returns ciphertext followed by the 16-byte tag.
pub(crate) fn aes256gcm_seal(
    key: &Key32,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoFailure> {
    let cipher = Aes256Gcm::new(key.expose_secret().into());
    cipher.encrypt(&Nonce::from(*nonce), Payload { msg: plaintext, aad }).map_err(|_| CryptoFailure)
}

/// AES-256-GCM decryption; fails without detail on any authentication failure.
pub(crate) fn aes256gcm_open(
    key: &Key32,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    ciphertext_and_tag: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoFailure> {
    let cipher = Aes256Gcm::new(key.expose_secret().into());
    cipher
        .decrypt(&Nonce::from(*nonce), Payload { msg: ciphertext_and_tag, aad })
        .map(Zeroizing::new)
        .map_err(|_| CryptoFailure)
}

/// HKDF-SHA256 extract-and-expand into `out`. Fails only if `out` is longer than 255 * 32 bytes.
pub(crate) fn hkdf_sha256(
    salt: Option<&[u8]>,
    ikm: &[u8],
    info: &[u8],
    out: &mut [u8],
) -> Result<(), CryptoFailure> {
    hkdf::Hkdf::<sha2::Sha256>::new(salt, ikm).expand(info, out).map_err(|_| CryptoFailure)
}

/// The HPKE suite: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305 (RFC 9180 A.2).
pub(crate) mod hpke_suite {
    pub(crate) type Kem = hpke::kem::X25519HkdfSha256;
    pub(crate) type Kdf = hpke::kdf::HkdfSha256;
    pub(crate) type Aead = hpke::aead::ChaCha20Poly1305;
    pub(crate) type PrivateKey = <Kem as hpke::Kem>::PrivateKey;
    pub(crate) type PublicKey = <Kem as hpke::Kem>::PublicKey;
    pub(crate) type EncappedKey = <Kem as hpke::Kem>::EncappedKey;
}

/// HPKE base-mode single-shot seal to `recipient`, its ephemeral key drawn from the OS. Returns
/// `enc || ciphertext || tag`.
pub(crate) fn hpke_seal(
    recipient: &[u8; X25519_LEN],
    info: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoFailure> {
    hpke_seal_with(recipient, aad, plaintext, |pk| {
        hpke::setup_sender::<hpke_suite::Aead, hpke_suite::Kdf, hpke_suite::Kem>(
            &hpke::OpModeS::Base,
            pk,
            info,
        )
    })
}

/// The sender's context of a base-mode seal in the suite.
pub(crate) type HpkeSender =
    hpke::aead::AeadCtxS<hpke_suite::Aead, hpke_suite::Kdf, hpke_suite::Kem>;

/// [`hpke_seal`] with the sender's setup (and its `info`) given: the OS's randomness there, a
/// published ikmE in the RFC 9180 vector test, which so checks the exact bytes `hpke_seal`
/// writes.
pub(crate) fn hpke_seal_with(
    recipient: &[u8; X25519_LEN],
    aad: &[u8],
    plaintext: &[u8],
    setup: impl FnOnce(
        &hpke_suite::PublicKey,
    ) -> Result<(hpke_suite::EncappedKey, HpkeSender), hpke::HpkeError>,
) -> Result<Vec<u8>, CryptoFailure> {
    use hpke_suite::*;
    let pk = PublicKey::from_bytes(recipient).map_err(|_| CryptoFailure)?;
    let (enc, mut ctx) = setup(&pk).map_err(|_| CryptoFailure)?;
    let ct = ctx.seal(plaintext, aad).map_err(|_| CryptoFailure)?;
    let mut out = Vec::with_capacity(X25519_LEN + ct.len());
    out.extend_from_slice(&enc.to_bytes());
    out.extend_from_slice(&ct);
    Ok(out)
}

/// HPKE base-mode single-shot open of `enc || ciphertext || tag` with the recipient's secret key.
pub(crate) fn hpke_open(
    recipient: &hpke_suite::PrivateKey,
    info: &[u8],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoFailure> {
    use hpke_suite::*;
    if sealed.len() < X25519_LEN + TAG_LEN {
        return Err(CryptoFailure);
    }
    let (enc, ct) = sealed.split_at(X25519_LEN);
    let enc = EncappedKey::from_bytes(enc).map_err(|_| CryptoFailure)?;
    let mut ctx =
        hpke::setup_receiver::<Aead, Kdf, Kem>(&hpke::OpModeR::Base, recipient, &enc, info)
            .map_err(|_| CryptoFailure)?;
    ctx.open(ct, aad).map(Zeroizing::new).map_err(|_| CryptoFailure)
}

/// Ed25519 signature with the given key. Every caller prefixes its message with a distinct
/// context label, so a signature made for one format can never be accepted by another.
pub(crate) fn ed25519_sign(key: &ed25519_dalek::SigningKey, message: &[u8]) -> [u8; 64] {
    use ed25519_dalek::Signer as _;
    key.sign(message).to_bytes()
}

/// Ed25519 verification with `verify_strict` (rejects non-canonical and small-order encodings).
pub(crate) fn ed25519_verify(
    key: &ed25519_dalek::VerifyingKey,
    message: &[u8],
    signature: &[u8; 64],
) -> Result<(), CryptoFailure> {
    let signature = ed25519_dalek::Signature::from_bytes(signature);
    key.verify_strict(message, &signature).map_err(|_| CryptoFailure)
}
