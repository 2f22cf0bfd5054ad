//! `Content-Digest` (RFC 9530) with SHA-256: how a signed request commits to its body.
//!
//! ```text
//! Content-Digest: sha-256=:<base64 of SHA-256(body)>:
//! ```
//!
//! The value is a structured-field dictionary of algorithm to byte sequence. Latchkey always sends
//! exactly `sha-256`. When verifying, a `sha-256` member is required and must match; a `sha-512`
//! member, if also present, must match too; members with other algorithm names are ignored (they
//! cannot weaken the check, because `sha-256` is always checked). All comparisons are constant
//! time.

use sha2::Digest as _;
use subtle::ConstantTimeEq as _;

use super::HttpSigError;
use super::sf::{self, BareItem, Member};

/// Largest `Content-Digest` field value accepted, in bytes.
pub const MAX_CONTENT_DIGEST_LEN: usize = 1024;

/// The `Content-Digest` field value for `body`: `sha-256=:<base64>:`.
pub fn content_digest(body: &[u8]) -> String {
    let digest: [u8; 32] = sha2::Sha256::digest(body).into();
    let mut out = String::from("sha-256=");
    sf::write_bytes(&mut out, &digest);
    out
}

/// Checks a `Content-Digest` field value against `body`.
///
/// Requires a `sha-256` member; checks `sha-512` as well when present; ignores other algorithms.
pub fn verify_content_digest(field_value: &str, body: &[u8]) -> Result<(), HttpSigError> {
    if field_value.len() > MAX_CONTENT_DIGEST_LEN {
        return Err(HttpSigError::HeaderTooLarge("content-digest"));
    }
    let dict = sf::parse_dictionary(field_value).map_err(HttpSigError::MalformedContentDigest)?;
    let mut saw_sha256 = false;
    for (algorithm, member) in &dict {
        let expected = match algorithm.as_str() {
            "sha-256" => {
                saw_sha256 = true;
                sha2::Sha256::digest(body).to_vec()
            }
            "sha-512" => sha2::Sha512::digest(body).to_vec(),
            _ => continue,
        };
        let Member::Item(sf::Item { value: BareItem::Bytes(given), .. }) = member else {
            return Err(HttpSigError::MalformedContentDigest("digest is not a byte sequence"));
        };
        // Lengths are public (fixed by the algorithm); only the digest bytes are compared in
        // constant time.
        if given.len() != expected.len() || !bool::from(given.as_slice().ct_eq(&expected)) {
            return Err(HttpSigError::ContentDigestMismatch);
        }
    }
    if saw_sha256 { Ok(()) } else { Err(HttpSigError::UnsupportedDigestAlgorithm) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9530 Appendix B.1 and RFC 9421 Appendix B.2 use this body.
    const HELLO: &[u8] = br#"{"hello": "world"}"#;

    #[test]
    fn the_sha_256_digest_of_the_rfc_9530_example_body_matches_the_rfc() {
        assert_eq!(
            content_digest(HELLO),
            "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:",
            "RFC 9530 B.1 gives this exact value for {{\"hello\": \"world\"}}"
        );
    }

    #[test]
    fn the_digest_of_an_empty_body_is_the_sha_256_of_nothing() {
        assert_eq!(
            content_digest(b""),
            "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:",
            "a GET carries the digest of the empty body"
        );
    }

    #[test]
    fn a_digest_verifies_against_its_body_and_not_against_another() {
        let field = content_digest(HELLO);
        assert_eq!(verify_content_digest(&field, HELLO), Ok(()));
        assert_eq!(
            verify_content_digest(&field, br#"{"hello": "World"}"#),
            Err(HttpSigError::ContentDigestMismatch),
            "one changed byte must fail"
        );
    }

    #[test]
    fn the_rfc_sha_512_example_is_checked_next_to_sha_256() {
        let sha512 = "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:";
        let both = format!("{}, {sha512}", content_digest(HELLO));
        assert_eq!(verify_content_digest(&both, HELLO), Ok(()), "both digests are correct");
        let wrong_512 = format!("{}, sha-512=:{}:", content_digest(HELLO), "A".repeat(86) + "==");
        assert_eq!(
            verify_content_digest(&wrong_512, HELLO),
            Err(HttpSigError::ContentDigestMismatch),
            "a wrong sha-512 next to a right sha-256 is still a mismatch"
        );
        assert_eq!(
            verify_content_digest(sha512, HELLO),
            Err(HttpSigError::UnsupportedDigestAlgorithm),
            "sha-256 is required even when sha-512 is present and correct"
        );
    }

    #[test]
    fn unknown_algorithms_are_ignored_only_next_to_sha_256() {
        let with_unknown = format!("md5=:AAAA:, {}", content_digest(HELLO));
        assert_eq!(verify_content_digest(&with_unknown, HELLO), Ok(()));
        assert_eq!(
            verify_content_digest("md5=:AAAA:", HELLO),
            Err(HttpSigError::UnsupportedDigestAlgorithm),
            "no sha-256 member means nothing was checked"
        );
    }

    #[test]
    fn malformed_or_oversized_digest_fields_are_rejected() {
        assert_eq!(
            verify_content_digest("sha-256=\"not bytes\"", HELLO),
            Err(HttpSigError::MalformedContentDigest("digest is not a byte sequence"))
        );
        assert_eq!(
            verify_content_digest("sha-256=:AAAA:", HELLO),
            Err(HttpSigError::ContentDigestMismatch),
            "a digest of the wrong length never matches"
        );
        assert!(matches!(
            verify_content_digest("sha-256", HELLO),
            Err(HttpSigError::MalformedContentDigest(_))
        ));
        assert_eq!(
            verify_content_digest(&"a".repeat(MAX_CONTENT_DIGEST_LEN + 1), HELLO),
            Err(HttpSigError::HeaderTooLarge("content-digest"))
        );
    }
}
