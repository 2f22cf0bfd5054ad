//! OAuth 2.0 PKCE (RFC 7636) with the `S256` method only, and the OAuth `state` parameter.
//!
//! # Wire format
//!
//! - **Code verifier**: 43 to 128 characters from RFC 3986's unreserved set `A-Z a-z 0-9 - . _ ~`
//!   (RFC 7636 §4.1). Latchkey generates it as base64url without padding of 32 bytes from the OS
//!   random generator: exactly 43 characters, 256 bits of entropy.
//! - **Code challenge**: `BASE64URL-NOPAD(SHA256(ASCII(code_verifier)))`, always 43 characters,
//!   sent with `code_challenge_method=S256` (RFC 7636 §4.2).
//! - **State**: base64url without padding of 32 random bytes (43 characters), compared in constant
//!   time when the authorization server redirects back.
//!
//! # Why
//!
//! The desktop app and CLI are public OAuth clients: they cannot keep a client secret, so PKCE is
//! what stops an app that intercepts the redirect (a custom scheme or a loopback port) from
//! redeeming the authorization code. The `plain` method sends the verifier itself as the challenge
//! and protects nothing against an observer of the authorization request, so this module has no
//! way to produce or accept it: [`PkceChallenge::method`] is always `S256`. The state parameter
//! binds the redirect to the request this process started (cross-site request forgery defence).

use core::fmt;
use core::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::random::{self, RandomError};

/// Shortest code verifier RFC 7636 allows.
pub const VERIFIER_MIN_LEN: usize = 43;
/// Longest code verifier RFC 7636 allows.
pub const VERIFIER_MAX_LEN: usize = 128;

/// A string is not a valid PKCE code verifier. The messages never repeat the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PkceError {
    /// Fewer than 43 characters.
    #[error("pkce code verifier is too short: {found} characters, at least 43 are required")]
    TooShort {
        /// The length that was found, in bytes.
        found: usize,
    },
    /// More than 128 characters.
    #[error("pkce code verifier is too long: {found} characters, at most 128 are allowed")]
    TooLong {
        /// The length that was found, in bytes.
        found: usize,
    },
    /// A character outside `A-Z a-z 0-9 - . _ ~`.
    #[error(
        "pkce code verifier has a character outside A-Z a-z 0-9 - . _ ~ at position {position}"
    )]
    InvalidCharacter {
        /// Zero-based byte offset of the first offending character.
        position: usize,
    },
}

/// A PKCE code verifier. Secret until the token request: zeroized on drop, redacted in `Debug`,
/// neither `Clone` nor `Serialize`; the string is reachable only through
/// [`PkceVerifier::expose_secret`].
pub struct PkceVerifier(Zeroizing<String>);

impl PkceVerifier {
    /// A fresh verifier: base64url of 32 random bytes, 43 characters.
    pub fn generate() -> Result<Self, RandomError> {
        let bytes = Zeroizing::new(random::array::<32>()?);
        Ok(Self::from_random(&bytes))
    }

    /// The challenge to send in the authorization request, with `code_challenge_method=S256`.
    pub fn challenge(&self) -> PkceChallenge {
        PkceChallenge(URL_SAFE_NO_PAD.encode(Sha256::digest(self.0.as_bytes())))
    }

    /// The verifier string, for the token request. Every read of a secret goes through a method
    /// with this name.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// The verifier [`PkceVerifier::generate`] makes from these random bytes (RFC 7636 Appendix B
    /// uses this construction).
    pub(crate) fn from_random(bytes: &[u8; 32]) -> Self {
        let mut encoded = Zeroizing::new(String::with_capacity(VERIFIER_MIN_LEN));
        crate::secret::base64url_32(bytes, &mut encoded);
        Self(encoded)
    }
}

impl FromStr for PkceVerifier {
    type Err = PkceError;

    /// Accepts any verifier RFC 7636 allows (for example, one saved by a previous run).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() < VERIFIER_MIN_LEN {
            return Err(PkceError::TooShort { found: s.len() });
        }
        if s.len() > VERIFIER_MAX_LEN {
            return Err(PkceError::TooLong { found: s.len() });
        }
        if let Some(position) = s.bytes().position(|b| !is_unreserved(b)) {
            return Err(PkceError::InvalidCharacter { position });
        }
        Ok(Self(Zeroizing::new(s.to_owned())))
    }
}

impl fmt::Debug for PkceVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PkceVerifier([REDACTED])")
    }
}

/// A PKCE code challenge. Public: it travels in the authorization URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct PkceChallenge(String);

impl PkceChallenge {
    /// The only method Latchkey uses.
    pub const METHOD: &'static str = "S256";

    /// The `code_challenge` parameter.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `code_challenge_method` parameter: always `S256`.
    pub fn method(&self) -> &'static str {
        Self::METHOD
    }
}

impl fmt::Display for PkceChallenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The OAuth `state` parameter: 32 random bytes, base64url. It is visible in the authorization
/// URL, so it is not key material, but it is kept out of logs (redacted `Debug`, no `Serialize`)
/// because whoever learns it before the redirect completes can forge the callback.
pub struct OAuthState(Zeroizing<String>);

impl OAuthState {
    /// A fresh state value.
    pub fn generate() -> Result<Self, RandomError> {
        let bytes = Zeroizing::new(random::array::<32>()?);
        Ok(Self(Zeroizing::new(URL_SAFE_NO_PAD.encode(bytes.as_ref()))))
    }

    /// The `state` parameter for the authorization URL.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the `state` the redirect carried is this one. Constant-time in the contents.
    pub fn matches(&self, received: &str) -> bool {
        self.0.as_bytes().ct_eq(received.as_bytes()).into()
    }
}

impl fmt::Debug for OAuthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OAuthState([REDACTED])")
    }
}

/// RFC 3986 §2.3 unreserved characters.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// RFC 7636 Appendix B.
    const RFC_OCTETS: [u8; 32] = [
        116, 24, 223, 180, 151, 153, 224, 37, 79, 250, 96, 125, 216, 173, 187, 186, 22, 212, 37,
        77, 105, 214, 191, 240, 91, 88, 5, 88, 83, 132, 141, 121,
    ];
    const RFC_VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const RFC_DIGEST: [u8; 32] = [
        19, 211, 30, 150, 26, 26, 216, 236, 47, 22, 177, 12, 76, 152, 46, 8, 118, 168, 120, 173,
        109, 241, 68, 86, 110, 225, 137, 74, 203, 112, 249, 195,
    ];
    const RFC_CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn rfc_7636_appendix_b_octets_give_the_rfc_verifier() {
        let verifier = PkceVerifier::from_random(&RFC_OCTETS);
        assert_eq!(verifier.expose_secret(), RFC_VERIFIER, "generate() encodes as RFC 7636 does");
    }

    #[test]
    fn rfc_7636_appendix_b_verifier_gives_the_rfc_challenge() {
        let verifier: PkceVerifier = RFC_VERIFIER.parse().unwrap();
        let digest: [u8; 32] = Sha256::digest(verifier.expose_secret().as_bytes()).into();
        assert_eq!(digest, RFC_DIGEST, "the SHA-256 octets of the appendix");
        let challenge = verifier.challenge();
        assert_eq!(challenge.as_str(), RFC_CHALLENGE, "the challenge of the appendix");
        assert_eq!(challenge.method(), "S256", "S256 is the only method");
    }

    #[test]
    fn a_generated_verifier_is_43_unreserved_characters_and_parses_back() {
        let verifier = PkceVerifier::generate().unwrap();
        let s = verifier.expose_secret();
        assert_eq!(s.len(), 43, "32 bytes in base64url without padding are 43 characters");
        let parsed: PkceVerifier = s.parse().unwrap();
        assert_eq!(parsed.challenge(), verifier.challenge(), "same verifier, same challenge");
        assert_eq!(verifier.challenge().as_str().len(), 43, "challenges are 43 characters");
        assert_ne!(
            PkceVerifier::generate().unwrap().challenge(),
            verifier.challenge(),
            "two verifiers must differ"
        );
    }

    #[test]
    fn verifiers_of_the_wrong_length_are_rejected() {
        assert_eq!(
            "a".repeat(42).parse::<PkceVerifier>().unwrap_err(),
            PkceError::TooShort { found: 42 }
        );
        assert_eq!("".parse::<PkceVerifier>().unwrap_err(), PkceError::TooShort { found: 0 });
        assert_eq!(
            "a".repeat(129).parse::<PkceVerifier>().unwrap_err(),
            PkceError::TooLong { found: 129 }
        );
        assert!("a".repeat(43).parse::<PkceVerifier>().is_ok(), "43 is the minimum");
        assert!("a".repeat(128).parse::<PkceVerifier>().is_ok(), "128 is the maximum");
    }

    #[test]
    fn verifiers_with_characters_outside_the_unreserved_set_are_rejected() {
        for (position, bad) in [(0, "+"), (10, "/"), (42, "="), (5, " "), (7, "%"), (3, "é")] {
            let mut s = "a".repeat(43);
            s.replace_range(position..position + 1, bad);
            assert_eq!(
                s.parse::<PkceVerifier>().unwrap_err(),
                PkceError::InvalidCharacter { position },
                "{bad:?} is not unreserved"
            );
        }
        assert!("aA0-._~".repeat(7).parse::<PkceVerifier>().is_ok(), "all unreserved kinds pass");
    }

    #[test]
    fn state_matches_itself_only() {
        let state = OAuthState::generate().unwrap();
        assert_eq!(state.as_str().len(), 43, "32 bytes in base64url are 43 characters");
        assert!(state.matches(state.as_str()), "the state must match itself");
        let other = OAuthState::generate().unwrap();
        assert!(!state.matches(other.as_str()), "another state must not match");
        assert!(!state.matches(&state.as_str()[..42]), "a prefix must not match");
        assert!(!state.matches(""), "empty must not match");
    }

    #[test]
    fn debug_output_of_verifier_and_state_is_redacted() {
        let verifier: PkceVerifier = RFC_VERIFIER.parse().unwrap();
        let state = OAuthState::generate().unwrap();
        let shown = format!("{verifier:?} {state:?}");
        assert!(!shown.contains(RFC_VERIFIER), "Debug leaked the verifier: {shown}");
        assert!(!shown.contains(state.as_str()), "Debug leaked the state: {shown}");
        assert!(shown.contains("REDACTED"), "Debug must say it is redacted: {shown}");
    }

    proptest! {
        #[test]
        fn every_verifier_rfc_7636_allows_parses(s in "[A-Za-z0-9._~-]{43,128}") {
            let verifier = s.parse::<PkceVerifier>();
            prop_assert!(verifier.is_ok(), "a valid verifier was refused");
        }

        #[test]
        fn verifier_parsing_never_panics(s in "\\PC{0,140}") {
            let _ = s.parse::<PkceVerifier>();
        }
    }
}
