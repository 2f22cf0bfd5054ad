//! Agent tokens: the placeholder an agent holds instead of a credential.
//!
//! # Wire format
//!
//! ```text
//! lk_ RRRRRRRRRRRRRRRRRRRRRRRRRRRRRR CCCCCC      (39 ASCII characters, no spaces)
//!     30 base62 random characters    6 base62 characters of CRC32(R)
//! ```
//!
//! The base62 alphabet is `0-9A-Za-z` in that order (`0` = 0, `A` = 10, `a` = 36). The random
//! part is 30 characters drawn uniformly from the alphabet (rejection sampling on OS random bytes),
//! which is 30 × log2(62) ≈ 178.6 bits of entropy. The checksum is the CRC-32 (IEEE 802.3, the
//! one zlib and PNG use) of the 30 ASCII bytes of the random part, written as a 6-digit base62
//! number, most significant digit first, left-padded with `0` (62^6 > 2^32, so it always fits).
//!
//! # Why this shape
//!
//! - The `lk_` prefix and the fixed length let secret scanners (GitHub push protection, gitleaks,
//!   trufflehog) recognise a leaked token with a regular expression, `lk_[0-9A-Za-z]{36}`, and the
//!   checksum lets them confirm it offline, without asking the broker, with almost no false
//!   positives. This is the same scheme GitHub uses for its own tokens.
//! - The checksum also catches typos before a database lookup: CRC-32 detects every change of a
//!   single character, and a random string passes it with probability 2^-32.
//! - The token carries no key material and no identifiers: it is an opaque random handle.
//!
//! # Storage
//!
//! The broker stores only [`TokenHash`]: SHA-256 of `"latchkey agent token v1" || 0x00 || token`
//! (the full 39-character string, prefix and checksum included). With 178 bits of entropy in the
//! token a fast unsalted hash is enough: nobody can brute-force a preimage, and a deterministic hash
//! makes lookup a single indexed equality. The label keeps this hash from meaning anything in any
//! other Latchkey format.

use core::fmt;
use core::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::random::{self, RandomError};

/// Every agent token starts with this.
pub const PREFIX: &str = "lk_";
/// Number of base62 characters of randomness.
pub const RANDOM_LEN: usize = 30;
/// Number of base62 characters of checksum.
pub const CHECKSUM_LEN: usize = 6;
/// Total length of an agent token in characters (and bytes: it is ASCII).
pub const TOKEN_LEN: usize = PREFIX.len() + RANDOM_LEN + CHECKSUM_LEN;

/// Domain-separation label of [`TokenHash`], followed by a NUL byte when hashed.
const HASH_LABEL: &[u8] = b"latchkey agent token v1\0";

/// The base62 alphabet, in digit order.
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A string is not a well-formed agent token.
///
/// The messages never repeat the input: it may be a real token pasted in the wrong place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The string does not start with `lk_`.
    #[error("not a latchkey agent token: it must start with \"lk_\"")]
    WrongPrefix,
    /// The string is not 39 bytes long.
    #[error("agent token must be {TOKEN_LEN} characters long, found {found}")]
    WrongLength {
        /// The length that was found, in bytes.
        found: usize,
    },
    /// A character after the prefix is not in `0-9A-Za-z`.
    #[error("agent token has a character outside 0-9, A-Z, a-z at position {position}")]
    InvalidCharacter {
        /// Zero-based byte offset of the first offending character.
        position: usize,
    },
    /// The last six characters are not the checksum of the random part.
    #[error("agent token checksum does not match: the token was mistyped, truncated or altered")]
    ChecksumMismatch,
}

/// An agent token (`lk_...`). Secret: zeroized on drop, redacted in `Debug`, neither `Clone` nor
/// `Serialize`; the string is reachable only through [`AgentToken::expose_secret`].
pub struct AgentToken(Zeroizing<String>);

impl AgentToken {
    /// A fresh token from the operating system's random generator.
    pub fn generate() -> Result<Self, RandomError> {
        let mut token = Zeroizing::new(String::with_capacity(TOKEN_LEN));
        token.push_str(PREFIX);
        let mut pool = Zeroizing::new([0u8; 64]);
        while token.len() < PREFIX.len() + RANDOM_LEN {
            random::fill(pool.as_mut())?;
            for &byte in pool.iter() {
                // Rejection sampling: 248 = 4 × 62, so `byte % 62` is uniform over accepted bytes.
                if byte < 248 && token.len() < PREFIX.len() + RANDOM_LEN {
                    token.push(char::from(BASE62[usize::from(byte % 62)]));
                }
            }
        }
        let checksum = checksum_chars(&token.as_bytes()[PREFIX.len()..]);
        for digit in checksum {
            token.push(char::from(digit));
        }
        Ok(Self(token))
    }

    /// Parses a token, checking in order: prefix, length, alphabet, checksum.
    pub fn parse(s: &str) -> Result<Self, TokenError> {
        check_shape(s)?;
        let bytes = s.as_bytes();
        let random_end = PREFIX.len() + RANDOM_LEN;
        let expected = checksum_chars(&bytes[PREFIX.len()..random_end]);
        // The checksum is not secret (it is a function of a public-length string that the caller
        // already holds), so an ordinary comparison is fine here.
        if bytes[random_end..] != expected {
            return Err(TokenError::ChecksumMismatch);
        }
        Ok(Self(Zeroizing::new(s.to_owned())))
    }

    /// The token string. Every read of a secret goes through a method with this name.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// The value the broker stores and looks the agent up by.
    pub fn hash(&self) -> TokenHash {
        let digest =
            Sha256::new().chain_update(HASH_LABEL).chain_update(self.0.as_bytes()).finalize();
        TokenHash(digest.into())
    }
}

impl FromStr for AgentToken {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Debug for AgentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AgentToken([REDACTED])")
    }
}

impl PartialEq for AgentToken {
    /// Constant-time in the contents.
    fn eq(&self, other: &Self) -> bool {
        ct_eq(self.0.as_bytes(), other.0.as_bytes())
    }
}

impl Eq for AgentToken {}

/// SHA-256 of an agent token under Latchkey's label: what the broker stores. Not secret (it cannot
/// be turned back into a token), so it is `Copy` and serializes as 64 lowercase hex characters.
/// Equality is constant-time anyway, so a lookup that compares hashes leaks nothing about how
/// close a guess came.
#[derive(Clone, Copy)]
pub struct TokenHash([u8; 32]);

/// A string is not a token hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("token hash must be 64 hex characters (32 bytes)")]
pub struct TokenHashParseError;

impl TokenHash {
    /// Length in bytes.
    pub const LEN: usize = 32;

    /// The hash from its raw bytes (for example, read from a database column).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 64 hex characters (either case).
    pub fn from_hex(s: &str) -> Result<Self, TokenHashParseError> {
        let bytes = s.as_bytes();
        if bytes.len() != 2 * Self::LEN {
            return Err(TokenHashParseError);
        }
        let mut out = [0u8; 32];
        for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            let high = hex_value(pair[0]).ok_or(TokenHashParseError)?;
            let low = hex_value(pair[1]).ok_or(TokenHashParseError)?;
            *slot = (high << 4) | low;
        }
        Ok(Self(out))
    }

    /// The 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(2 * Self::LEN);
        for byte in self.0 {
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        out
    }
}

impl PartialEq for TokenHash {
    /// Constant-time.
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for TokenHash {}

impl core::hash::Hash for TokenHash {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl fmt::Debug for TokenHash {
    /// The first 8 bytes in hex: enough to tell hashes apart in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.to_hex();
        write!(f, "TokenHash({}…)", &hex[..16])
    }
}

impl fmt::Display for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl FromStr for TokenHash {
    type Err = TokenHashParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_hex(s)
    }
}

impl Serialize for TokenHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for TokenHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// Cheap shape check for pulling a token out of a header: `lk_`, 39 characters, base62 after the
/// prefix. Does not verify the checksum (use [`AgentToken::parse`] for that) and allocates nothing.
pub fn looks_like_token(s: &str) -> bool {
    check_shape(s).is_ok()
}

/// Constant-time equality of two byte strings. Lengths are treated as public: strings of
/// different lengths compare unequal immediately.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Prefix, length and alphabet, in that order.
fn check_shape(s: &str) -> Result<(), TokenError> {
    if !s.starts_with(PREFIX) {
        return Err(TokenError::WrongPrefix);
    }
    if s.len() != TOKEN_LEN {
        return Err(TokenError::WrongLength { found: s.len() });
    }
    match s.bytes().skip(PREFIX.len()).position(|b| !b.is_ascii_alphanumeric()) {
        Some(offset) => Err(TokenError::InvalidCharacter { position: PREFIX.len() + offset }),
        None => Ok(()),
    }
}

/// The six base62 checksum characters of `random_part`.
fn checksum_chars(random_part: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut value = crc32fast::hash(random_part);
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        // `value % 62` is below 62, so the index is always in bounds.
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    out
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Worked example of `docs/protocol.md`, checked independently with Python's `zlib` and
    /// `hashlib`.
    const EXAMPLE_TOKEN: &str = "lk_7mMjcrowrCkwvAR7f65Ji4agIPWIUo20CsUe";
    const EXAMPLE_HASH: &str = "f0173ad53364a52a5399ccd97b95cdf96b85b99d2438ca578f1c01d12c85a29f";

    #[test]
    fn a_generated_token_round_trips_through_parse() {
        let token = AgentToken::generate().unwrap();
        let parsed = AgentToken::parse(token.expose_secret()).unwrap();
        assert_eq!(parsed, token, "parsing a generated token must give the same token");
        assert_eq!(parsed.hash(), token.hash(), "equal tokens must have equal hashes");
        assert_eq!(token.expose_secret().len(), TOKEN_LEN, "tokens have a fixed length");
        assert!(looks_like_token(token.expose_secret()), "a real token must pass the shape check");
    }

    #[test]
    fn two_generated_tokens_differ() {
        let a = AgentToken::generate().unwrap();
        let b = AgentToken::generate().unwrap();
        assert_ne!(a, b, "178 bits of randomness must not collide");
    }

    #[test]
    fn the_documented_example_token_parses_and_hashes_to_the_documented_value() {
        let token = AgentToken::parse(EXAMPLE_TOKEN).unwrap();
        assert_eq!(token.hash().to_hex(), EXAMPLE_HASH, "docs/protocol.md example must hold");
    }

    #[test]
    fn wrong_prefix_is_rejected_as_such() {
        let token = AgentToken::generate().unwrap();
        let swapped = format!("gh_{}", &token.expose_secret()[3..]);
        assert_eq!(AgentToken::parse(&swapped).unwrap_err(), TokenError::WrongPrefix);
        assert_eq!(AgentToken::parse("").unwrap_err(), TokenError::WrongPrefix);
        assert_eq!(AgentToken::parse("LK_abc").unwrap_err(), TokenError::WrongPrefix);
    }

    #[test]
    fn wrong_length_is_rejected_with_the_length_found() {
        let token = AgentToken::generate().unwrap();
        let short = &token.expose_secret()[..TOKEN_LEN - 1];
        let long = format!("{}0", token.expose_secret());
        assert_eq!(
            AgentToken::parse(short).unwrap_err(),
            TokenError::WrongLength { found: TOKEN_LEN - 1 },
            "a truncated token must be reported as too short, not as a checksum failure"
        );
        assert_eq!(
            AgentToken::parse(&long).unwrap_err(),
            TokenError::WrongLength { found: TOKEN_LEN + 1 }
        );
    }

    #[test]
    fn a_character_outside_base62_is_rejected_with_its_position() {
        let token = AgentToken::generate().unwrap();
        for (position, bad) in [(3, '-'), (20, '_'), (38, '=')] {
            let mut s = token.expose_secret().to_owned();
            s.replace_range(position..position + 1, &bad.to_string());
            assert_eq!(
                AgentToken::parse(&s).unwrap_err(),
                TokenError::InvalidCharacter { position },
                "'{bad}' at {position} is not base62"
            );
        }
        // A multi-byte character keeps the byte length wrong or the alphabet wrong, never panics.
        let mut s = token.expose_secret()[..TOKEN_LEN - 2].to_owned();
        s.push('é');
        assert_eq!(
            AgentToken::parse(&s).unwrap_err(),
            TokenError::InvalidCharacter { position: 37 }
        );
    }

    #[test]
    fn error_messages_never_repeat_the_token() {
        let token = AgentToken::generate().unwrap();
        let mut s = token.expose_secret().to_owned();
        s.replace_range(10..11, if &s[10..11] == "a" { "b" } else { "a" });
        let err = AgentToken::parse(&s).unwrap_err();
        assert_eq!(err, TokenError::ChecksumMismatch);
        assert!(!err.to_string().contains(&s[3..20]), "the message must not echo the input");
    }

    #[test]
    fn debug_output_is_redacted() {
        let token = AgentToken::generate().unwrap();
        let shown = format!("{token:?}");
        assert!(!shown.contains(&token.expose_secret()[3..]), "Debug leaked the token: {shown}");
        assert!(shown.contains("REDACTED"), "Debug must say the value is redacted: {shown}");
    }

    #[test]
    fn token_hash_round_trips_through_hex_and_json() {
        let hash = AgentToken::generate().unwrap().hash();
        assert_eq!(TokenHash::from_hex(&hash.to_hex()).unwrap(), hash, "hex must round trip");
        assert_eq!(
            TokenHash::from_hex(&hash.to_hex().to_uppercase()).unwrap(),
            hash,
            "uppercase hex is accepted"
        );
        let json = serde_json::to_string(&hash).unwrap();
        assert_eq!(json, format!("\"{}\"", hash.to_hex()), "JSON form is the hex string");
        assert_eq!(serde_json::from_str::<TokenHash>(&json).unwrap(), hash);
        for bad in ["", "00", &"g".repeat(64), &"0".repeat(66)] {
            assert!(TokenHash::from_hex(bad).is_err(), "{bad:?} is not a token hash");
        }
        assert!(serde_json::from_str::<TokenHash>("\"zz\"").is_err(), "bad JSON must not parse");
    }

    #[test]
    fn token_hash_debug_shows_only_a_prefix() {
        let hash = TokenHash::from_bytes([0xab; 32]);
        assert_eq!(format!("{hash:?}"), "TokenHash(abababababababab…)");
    }

    #[test]
    fn the_hash_is_domain_separated_from_plain_sha256() {
        let token = AgentToken::generate().unwrap();
        let plain: [u8; 32] = Sha256::digest(token.expose_secret().as_bytes()).into();
        assert_ne!(token.hash().as_bytes(), &plain, "the label must be part of the hash input");
    }

    #[test]
    fn looks_like_token_checks_shape_but_not_checksum() {
        let token = AgentToken::generate().unwrap();
        let mut s = token.expose_secret().to_owned();
        let last = if s.ends_with('0') { "1" } else { "0" };
        s.replace_range(TOKEN_LEN - 1.., last);
        assert!(looks_like_token(&s), "the shape check is cheap and ignores the checksum");
        assert!(AgentToken::parse(&s).is_err(), "parse checks the checksum");
        for bad in ["", "lk_", "Bearer lk_", &s[..TOKEN_LEN - 1], &format!("{s} ")] {
            assert!(!looks_like_token(bad), "{bad:?} does not look like a token");
        }
    }

    #[test]
    fn ct_eq_compares_contents_and_lengths() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"), "different contents");
        assert!(!ct_eq(b"abc", b"abcd"), "different lengths");
        assert!(ct_eq(b"", b""));
    }

    fn base62_char() -> impl Strategy<Value = char> {
        (0usize..62).prop_map(|i| char::from(BASE62[i]))
    }

    proptest! {
        #[test]
        fn every_single_character_change_after_the_prefix_fails_the_checksum(
            random in proptest::collection::vec(base62_char(), RANDOM_LEN),
        ) {
            let random: String = random.into_iter().collect();
            let checksum = checksum_chars(random.as_bytes());
            let token = format!("{PREFIX}{random}{}", String::from_utf8_lossy(&checksum));
            prop_assert!(AgentToken::parse(&token).is_ok(), "the unaltered token must parse");
            for position in PREFIX.len()..TOKEN_LEN {
                for &replacement in BASE62.iter() {
                    if token.as_bytes()[position] == replacement {
                        continue;
                    }
                    let mut altered = token.clone().into_bytes();
                    altered[position] = replacement;
                    let altered = String::from_utf8(altered).unwrap();
                    prop_assert_eq!(
                        AgentToken::parse(&altered).unwrap_err(),
                        TokenError::ChecksumMismatch,
                        "changing position {} must be caught by the checksum", position
                    );
                }
            }
        }

        #[test]
        fn parse_never_panics_on_arbitrary_strings(s in "\\PC{0,64}") {
            let _ = AgentToken::parse(&s);
            let _ = looks_like_token(&s);
        }

        #[test]
        fn parse_never_panics_on_near_tokens(s in "lk_[0-9A-Za-z\\-_é]{30,40}") {
            let _ = AgentToken::parse(&s);
        }
    }
}
