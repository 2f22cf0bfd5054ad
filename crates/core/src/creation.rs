//! Workspace creation tokens: the secret a broker's operator hands to the people who may create a
//! workspace on a team server (`latchkey-server --workspace-creation token`).
//!
//! # Format
//!
//! Whatever the operator chose, e.g. the output of `openssl rand -base64 32`: 1 to
//! [`MAX_LEN`] visible ASCII characters (`!` to `~`, no spaces). Whitespace around it (the
//! newline at the end of a token file, a space pasted with it) is not part of it.
//!
//! # Comparison
//!
//! A broker keeps only [`CreationTokenDigest`]:
//!
//! ```text
//! digest = SHA-256("latchkey creation token v1" || 0x00 || token)
//! ```
//!
//! and compares the digest of a presented token with it in constant time. Digests have a fixed
//! length, so neither the time a comparison takes nor its result says how long the token is or
//! how close a guess came. The label keeps the digest from meaning anything in another format.
//! The digest is no substitute for a strong token: a short one could be guessed from it offline,
//! so its `Debug` output is redacted too and brokers refuse tokens shorter than they accept.

use core::fmt;
use core::str::FromStr;

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use zeroize::{Zeroize as _, Zeroizing};

/// The longest token, in characters (and bytes: it is ASCII).
pub const MAX_LEN: usize = 1024;

/// Domain-separation label of [`CreationTokenDigest`], followed by a NUL byte when hashed.
const DIGEST_LABEL: &[u8] = b"latchkey creation token v1\0";

/// A string is not a well-formed creation token.
///
/// The messages never repeat the input: it may be the real token, slightly mistyped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CreationTokenError {
    /// Nothing but whitespace.
    #[error("the creation token is empty")]
    Empty,
    /// Longer than [`MAX_LEN`].
    #[error("a creation token has at most {MAX_LEN} characters")]
    TooLong,
    /// A space, control or non-ASCII character inside the token.
    #[error(
        "the creation token has a character other than the visible ASCII ones (! to ~) at position {position}"
    )]
    InvalidCharacter {
        /// Zero-based character offset of the first offending character, after trimming.
        position: usize,
    },
}

/// A workspace creation token. Secret: zeroized on drop, redacted in `Debug`, neither `Clone` nor
/// `Serialize`; the text is reachable only through [`CreationToken::expose_secret`].
pub struct CreationToken(Zeroizing<String>);

impl CreationToken {
    /// Reads a token as typed or as a file holds it: surrounding whitespace is dropped, then the
    /// rest must be 1 to [`MAX_LEN`] visible ASCII characters.
    pub fn parse(text: &str) -> Result<Self, CreationTokenError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(CreationTokenError::Empty);
        }
        if let Some(position) = trimmed.chars().position(|c| !c.is_ascii_graphic()) {
            return Err(CreationTokenError::InvalidCharacter { position });
        }
        if trimmed.len() > MAX_LEN {
            return Err(CreationTokenError::TooLong);
        }
        Ok(Self(Zeroizing::new(trimmed.to_owned())))
    }

    /// The token's text. Every read of a secret goes through a method with this name.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// Its length in characters. Not secret enough to hide: brokers check it against their
    /// minimum, and every request that carries a token shows its length on the wire anyway.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always `false`: a parsed token has at least one character.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// What a broker keeps of the token.
    pub fn digest(&self) -> CreationTokenDigest {
        let digest =
            Sha256::new().chain_update(DIGEST_LABEL).chain_update(self.0.as_bytes()).finalize();
        CreationTokenDigest(digest.into())
    }
}

impl FromStr for CreationToken {
    type Err = CreationTokenError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Debug for CreationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CreationToken([REDACTED])")
    }
}

/// SHA-256 of a creation token under Latchkey's label: what a broker keeps. Compared in constant
/// time; redacted in `Debug` (a weak token could be guessed from it) and zeroized on drop.
pub struct CreationTokenDigest([u8; 32]);

impl CreationTokenDigest {
    /// Whether `token` is the token this is the digest of. Constant-time.
    pub fn matches(&self, token: &CreationToken) -> bool {
        self.0.ct_eq(&token.digest().0).into()
    }
}

impl PartialEq for CreationTokenDigest {
    /// Constant-time.
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for CreationTokenDigest {}

impl fmt::Debug for CreationTokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CreationTokenDigest([REDACTED])")
    }
}

impl Drop for CreationTokenDigest {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "k7Q2+vX9/mN4pL8rT1wZ6yB3cF5hJ0dS=";

    #[test]
    fn a_token_is_read_without_the_whitespace_around_it() {
        let token = CreationToken::parse(&format!("  {TOKEN}\n")).unwrap();
        assert_eq!(token.expose_secret(), TOKEN, "a token file's final newline is not the token");
        assert_eq!(token.len(), TOKEN.len());
        assert_eq!("x".parse::<CreationToken>().unwrap().expose_secret(), "x");
    }

    #[test]
    fn empty_long_and_non_ascii_tokens_are_refused_without_being_echoed() {
        assert_eq!(CreationToken::parse(" \n").unwrap_err(), CreationTokenError::Empty);
        let long = "a".repeat(MAX_LEN + 1);
        assert_eq!(CreationToken::parse(&long).unwrap_err(), CreationTokenError::TooLong);
        assert!(CreationToken::parse(&long[1..]).is_ok(), "exactly {MAX_LEN} is allowed");
        for (text, position) in [("secret token", 6), ("tab\there", 3), ("caf\u{e9}-x", 3)] {
            let error = CreationToken::parse(text).unwrap_err();
            assert_eq!(error, CreationTokenError::InvalidCharacter { position }, "{text:?}");
            let message = error.to_string();
            assert!(!message.contains("secret") && !message.contains("here"), "{message}");
        }
    }

    #[test]
    fn the_digest_matches_its_own_token_only() {
        let token = CreationToken::parse(TOKEN).unwrap();
        let digest = token.digest();
        assert!(digest.matches(&CreationToken::parse(&format!("{TOKEN}\n")).unwrap()));
        for other in [&TOKEN[1..], &format!("{TOKEN}x"), &TOKEN.to_lowercase()] {
            let other = CreationToken::parse(other).unwrap();
            assert!(!digest.matches(&other), "a shorter, longer or re-cased token is another one");
        }
        assert_eq!(digest, token.digest(), "the digest is deterministic");
    }

    #[test]
    fn the_digest_is_the_worked_example_of_the_protocol() {
        let token = CreationToken::parse("q0Jm5cV3Xh8t2ZbLr7WkYp4NfA9sGd6uE1oTiR3MvnQ=").unwrap();
        let hex: String = token.digest().0.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex, "3ac119b6a95e1f43ddaebf1cb3a91df791c1046a1f40e9cdf446e3a260ad9e83",
            "docs/protocol.md, \"Workspace creation tokens\" (checked with Python's hashlib)"
        );
    }

    #[test]
    fn debug_output_never_shows_the_token_or_its_digest() {
        let token = CreationToken::parse(TOKEN).unwrap();
        let digest = token.digest();
        let shown = format!("{token:?} {digest:?}");
        assert_eq!(shown, "CreationToken([REDACTED]) CreationTokenDigest([REDACTED])");
        let hex: String = digest.0.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!shown.contains(&hex[..16]), "{shown}");
    }
}
