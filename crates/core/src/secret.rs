//! Containers for secret bytes.
//!
//! [`SecretBytes`] holds a variable-length secret such as a decrypted credential; [`Key32`] holds a
//! 256-bit symmetric key. Both are zeroized on drop, print `[REDACTED]` in `Debug`, and implement
//! neither `Clone` nor `Serialize`. Their contents are reachable only through `expose_secret`.

use core::fmt;

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::random::{self, RandomError};

/// Length of the unpadded base64url text of 32 bytes.
pub(crate) const BASE64URL_32_LEN: usize = 43;

/// The unpadded base64url text of 32 secret bytes, written straight into a zeroizing buffer:
/// the `base64` crate's `encode_string` passes the text through a stack buffer it never clears,
/// and a `String` that grows frees its old buffer uncleared.
pub(crate) fn base64url_32(bytes: &[u8; 32], into: &mut Zeroizing<String>) {
    use base64::Engine as _;
    let mut text = Zeroizing::new([0u8; BASE64URL_32_LEN]);
    // 32 bytes are exactly 43 characters unpadded: the slice always fits, and what is written
    // is the base64url alphabet, ASCII.
    let written = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode_slice(bytes, text.as_mut())
        .unwrap_or(0);
    into.reserve_exact(written);
    into.extend(text[..written].iter().map(|b| char::from(*b)));
}

/// A variable-length secret, such as a decrypted credential. Zeroized on drop.
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Takes ownership of `bytes`; the buffer is zeroized when the value is dropped.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Takes over an already-zeroizing buffer without copying it.
    pub fn from_zeroizing(bytes: Zeroizing<Vec<u8>>) -> Self {
        Self(bytes)
    }

    /// Copies `bytes` into a new secret. The caller remains responsible for its own copy.
    pub fn copy_from(bytes: &[u8]) -> Self {
        Self::new(bytes.to_vec())
    }

    /// The secret bytes. Every read of a secret goes through a method with this name.
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBytes([REDACTED])")
    }
}

impl PartialEq for SecretBytes {
    /// Constant-time in the contents (the length is not secret).
    fn eq(&self, other: &Self) -> bool {
        self.0.as_slice().ct_eq(other.0.as_slice()).into()
    }
}

impl Eq for SecretBytes {}

/// A 256-bit symmetric key. Zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Key32([u8; 32]);

impl Key32 {
    /// Size of the key in bytes.
    pub const LEN: usize = 32;

    /// A fresh key from the operating system's generator.
    pub fn generate() -> Result<Self, RandomError> {
        random::array().map(Self)
    }

    /// Wraps existing key bytes (for example, read from the OS keychain or unwrapped from HPKE).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Copies a 32-byte slice into a key; `None` when the length is wrong.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }

    /// The key bytes.
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }

    /// An explicit copy. Deliberately not `Clone`, so copies of key material are visible in review.
    pub fn duplicate(&self) -> Self {
        Self(self.0)
    }
}

impl fmt::Debug for Key32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key32([REDACTED])")
    }
}

impl PartialEq for Key32 {
    /// Constant-time comparison.
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for Key32 {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_of_32_bytes_is_the_standard_text_written_without_growing_its_string() {
        use base64::Engine as _;
        for bytes in [[0u8; 32], [0xff; 32], core::array::from_fn(|i| i as u8)] {
            let mut text = Zeroizing::new(String::with_capacity(3 + BASE64URL_32_LEN));
            text.push_str("lk_");
            let capacity = text.capacity();
            base64url_32(&bytes, &mut text);
            let standard = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
            assert_eq!(text.as_str(), format!("lk_{standard}"), "the same text as base64's");
            assert_eq!(text.capacity(), capacity, "sized once: no uncleared copy was freed");
        }
    }

    #[test]
    fn debug_output_never_shows_secret_bytes() {
        let canary = b"sk-canary-5ecret-value".to_vec();
        let secret = SecretBytes::new(canary);
        let shown = format!("{secret:?} {:?}", Key32::from_bytes([0x41; 32]));
        assert!(!shown.contains("canary"), "Debug leaked a secret: {shown}");
        assert!(!shown.contains("65, 65"), "Debug leaked key bytes: {shown}");
        assert!(shown.contains("REDACTED"));
    }

    #[test]
    fn key_from_slice_rejects_wrong_lengths() {
        assert!(Key32::from_slice(&[0; 31]).is_none());
        assert!(Key32::from_slice(&[0; 33]).is_none());
        assert!(Key32::from_slice(&[0; 32]).is_some());
    }
}
