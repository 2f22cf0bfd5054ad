//! Device fingerprints: a short string two humans compare to be sure a device's keys are the ones
//! that device actually holds.
//!
//! # Wire format
//!
//! ```text
//! digest      = SHA-256("latchkey device fingerprint v1" || 0x00 || signing public (32) || exchange public (32))
//! fingerprint = digest[0..15]                                  (120 bits)
//! text        = Crockford base32 of the 120 bits, most significant bit first, 24 symbols,
//!               in 6 groups of 4 joined by '-':  XXXX-XXXX-XXXX-XXXX-XXXX-XXXX
//! ```
//!
//! The alphabet is Crockford's `0123456789ABCDEFGHJKMNPQRSTVWXYZ` (no I, L, O, U). Reading is
//! forgiving, because a human types it: case is ignored, dashes and spaces may be missing or
//! anywhere, `I` and `L` read as `1`, `O` reads as `0`. Anything else (including `U`) is refused,
//! as is any number of symbols other than 24.
//!
//! # Security argument
//!
//! At enrolment the new device and an existing device each show the fingerprint of the new
//! device's keys (Ed25519 signing key and X25519 exchange key) as each of them received them. A
//! server that wants to swap in keys it controls must produce a key pair whose fingerprint equals
//! the honest device's: a second preimage on SHA-256 truncated to 120 bits, about 2^120 hash
//! evaluations, where even 2^80 is far out of reach. The honest device generates its keys itself
//! after the server has committed to nothing, so the server cannot precompute; the birthday bound
//! (2^60) applies only to someone who chooses *both* colliding key sets, which gains nothing
//! because both would be their own keys. The two keys are hashed together, so neither can be
//! replaced alone, and the label keeps the digest from colliding with any other Latchkey hash.
//!
//! The argument holds only if the human compares all 24 symbols. 120 bits is the shortest length
//! that keeps a comfortable margin while staying readable; the groups of four exist so people
//! compare group by group instead of skimming.

use core::fmt;
use core::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Domain-separation label, followed by a NUL byte when hashed.
const LABEL: &[u8] = b"latchkey device fingerprint v1\0";
/// Crockford's base32 alphabet, in digit order.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A string is not a device fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FingerprintParseError {
    /// Not 24 symbols once dashes and spaces are removed.
    #[error("a device fingerprint has 24 characters besides dashes, found {found}")]
    WrongLength {
        /// Number of symbols found (dashes and spaces not counted).
        found: usize,
    },
    /// A character that is not a Crockford base32 symbol, a dash or a space.
    #[error(
        "'{character}' cannot appear in a device fingerprint (letters U and symbols are not used)"
    )]
    InvalidCharacter {
        /// The offending character (fingerprints are public, so repeating it is fine).
        character: char,
    },
}

/// A device fingerprint: 120 bits, shown as `XXXX-XXXX-XXXX-XXXX-XXXX-XXXX`. Public.
#[derive(Clone, Copy)]
pub struct Fingerprint([u8; Fingerprint::LEN]);

impl Fingerprint {
    /// Length in bytes.
    pub const LEN: usize = 15;
    /// Number of base32 symbols in the text form, not counting dashes.
    pub const SYMBOLS: usize = 24;

    /// The fingerprint of a device's Ed25519 signing public key and X25519 exchange public key.
    pub fn of(signing_public: &[u8; 32], exchange_public: &[u8; 32]) -> Self {
        let digest = Sha256::new()
            .chain_update(LABEL)
            .chain_update(signing_public)
            .chain_update(exchange_public)
            .finalize();
        let mut out = [0u8; Self::LEN];
        out.copy_from_slice(&digest[..Self::LEN]);
        Self(out)
    }

    /// Whether two fingerprints are equal, in constant time.
    pub fn matches(&self, other: &Fingerprint) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    /// The 15 raw bytes.
    pub const fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }
}

impl PartialEq for Fingerprint {
    /// Constant-time, as [`Fingerprint::matches`].
    fn eq(&self, other: &Self) -> bool {
        self.matches(other)
    }
}

impl Eq for Fingerprint {}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, symbol) in symbols(&self.0).iter().enumerate() {
            if i > 0 && i % 4 == 0 {
                f.write_str("-")?;
            }
            write!(f, "{}", char::from(*symbol))?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = FingerprintParseError;

    /// Reads what a human typed: any case, dashes and spaces optional, I/L as 1, O as 0.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut values = [0u8; Self::SYMBOLS];
        let mut found = 0usize;
        for c in s.chars() {
            if c == '-' || c == ' ' {
                continue;
            }
            let value =
                symbol_value(c).ok_or(FingerprintParseError::InvalidCharacter { character: c })?;
            if let Some(slot) = values.get_mut(found) {
                *slot = value;
            }
            found += 1;
        }
        if found != Self::SYMBOLS {
            return Err(FingerprintParseError::WrongLength { found });
        }
        Ok(Self(from_symbols(&values)))
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The 24 Crockford symbols of 15 bytes, most significant bit first.
fn symbols(bytes: &[u8; Fingerprint::LEN]) -> [u8; Fingerprint::SYMBOLS] {
    let mut out = [0u8; Fingerprint::SYMBOLS];
    // 15 bytes are three 40-bit groups of 5 bytes, each giving 8 symbols.
    for (group, chunk) in bytes.chunks_exact(5).enumerate() {
        let bits = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        for i in 0..8 {
            let value = (bits >> (35 - 5 * i)) & 0x1f;
            // `value` is masked to 5 bits, so it indexes the 32-symbol alphabet.
            out[group * 8 + i] = CROCKFORD[value as usize];
        }
    }
    out
}

/// Inverse of [`symbols`] on symbol values (0..32).
fn from_symbols(values: &[u8; Fingerprint::SYMBOLS]) -> [u8; Fingerprint::LEN] {
    let mut out = [0u8; Fingerprint::LEN];
    for (chunk, group) in out.chunks_exact_mut(5).zip(values.chunks_exact(8)) {
        let bits = group.iter().fold(0u64, |acc, v| (acc << 5) | u64::from(*v));
        for (i, byte) in chunk.iter_mut().enumerate() {
            *byte = (bits >> (32 - 8 * i)) as u8;
        }
    }
    out
}

/// The value of one typed character, with Crockford's substitutions.
fn symbol_value(c: char) -> Option<u8> {
    let upper = match c.to_ascii_uppercase() {
        'I' | 'L' => '1',
        'O' => '0',
        other => other,
    };
    let byte = u8::try_from(upper).ok()?;
    CROCKFORD.iter().position(|&s| s == byte).and_then(|p| u8::try_from(p).ok())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Signing key `00 01 .. 1f`, exchange key `20 21 .. 3f`; pinned once, and reproduced
    /// independently with Python's `hashlib` and `base64.b32encode` re-mapped to Crockford.
    fn example_keys() -> ([u8; 32], [u8; 32]) {
        let signing: [u8; 32] = core::array::from_fn(|i| i as u8);
        let exchange: [u8; 32] = core::array::from_fn(|i| 0x20 + i as u8);
        (signing, exchange)
    }
    const EXAMPLE: &str = "FTDP-J7FS-JBM1-01TF-ZFCV-EHF6";

    #[test]
    fn the_fingerprint_of_known_keys_is_pinned() {
        let (signing, exchange) = example_keys();
        let fingerprint = Fingerprint::of(&signing, &exchange);
        assert_eq!(fingerprint.to_string(), EXAMPLE, "known answer, also in docs/protocol.md");
    }

    #[test]
    fn the_text_form_is_six_groups_of_four_crockford_symbols() {
        let (signing, exchange) = example_keys();
        let text = Fingerprint::of(&signing, &exchange).to_string();
        let groups: Vec<&str> = text.split('-').collect();
        assert_eq!(groups.len(), 6, "six groups: {text}");
        for group in groups {
            assert_eq!(group.len(), 4, "groups of four: {text}");
            assert!(group.bytes().all(|b| CROCKFORD.contains(&b)), "Crockford only: {text}");
        }
    }

    #[test]
    fn changing_any_bit_of_either_key_changes_the_fingerprint() {
        let (signing, exchange) = example_keys();
        let original = Fingerprint::of(&signing, &exchange);
        for byte in 0..32 {
            for bit in 0..8 {
                let mut s = signing;
                s[byte] ^= 1 << bit;
                assert_ne!(
                    Fingerprint::of(&s, &exchange),
                    original,
                    "signing byte {byte} bit {bit}"
                );
                let mut x = exchange;
                x[byte] ^= 1 << bit;
                assert_ne!(
                    Fingerprint::of(&signing, &x),
                    original,
                    "exchange byte {byte} bit {bit}"
                );
            }
        }
        assert_ne!(
            Fingerprint::of(&exchange, &signing),
            original,
            "swapping the two keys must change the fingerprint"
        );
    }

    #[test]
    fn sloppy_human_input_parses_to_the_same_fingerprint() {
        let (signing, exchange) = example_keys();
        let fingerprint = Fingerprint::of(&signing, &exchange);
        let text = fingerprint.to_string();
        let lower = text.to_lowercase();
        let no_dashes = text.replace('-', "");
        let spaced = text.replace('-', " ");
        let confusable = text.replace('1', "l").replace('0', "O");
        for input in [&text, &lower, &no_dashes, &spaced, &confusable, &format!(" {lower} ")] {
            let parsed: Fingerprint = input.parse().unwrap();
            assert!(parsed.matches(&fingerprint), "{input:?} must read as {text}");
        }
        let documented: Fingerprint = "ftdpj7fsjbmlo1tfzfcvehf6".parse().unwrap();
        assert!(documented.matches(&fingerprint), "the sloppy example in docs/protocol.md");
        let with_i: Fingerprint = "IIII-IIII-IIII-IIII-IIII-IIII".parse().unwrap();
        assert_eq!(with_i.to_string(), "1111-1111-1111-1111-1111-1111", "I reads as 1");
    }

    #[test]
    fn wrong_lengths_and_characters_are_refused() {
        let (signing, exchange) = example_keys();
        let text = Fingerprint::of(&signing, &exchange).to_string();
        assert_eq!(
            text[..text.len() - 1].parse::<Fingerprint>().unwrap_err(),
            FingerprintParseError::WrongLength { found: 23 }
        );
        assert_eq!(
            format!("{text}0").parse::<Fingerprint>().unwrap_err(),
            FingerprintParseError::WrongLength { found: 25 }
        );
        assert_eq!(
            "".parse::<Fingerprint>().unwrap_err(),
            FingerprintParseError::WrongLength { found: 0 }
        );
        for bad in ['U', 'u', '*', '_', 'é'] {
            let input = format!("{bad}{}", &text[1..]);
            assert_eq!(
                input.parse::<Fingerprint>().unwrap_err(),
                FingerprintParseError::InvalidCharacter { character: bad },
                "{bad:?} is not a Crockford symbol"
            );
        }
    }

    #[test]
    fn serde_uses_the_display_form() {
        let (signing, exchange) = example_keys();
        let fingerprint = Fingerprint::of(&signing, &exchange);
        let json = serde_json::to_string(&fingerprint).unwrap();
        assert_eq!(json, format!("\"{fingerprint}\""), "JSON is the dashed text");
        assert_eq!(serde_json::from_str::<Fingerprint>(&json).unwrap(), fingerprint);
    }

    proptest! {
        #[test]
        fn every_fingerprint_round_trips_through_text(bytes in any::<[u8; 15]>()) {
            let fingerprint = Fingerprint(bytes);
            let parsed: Fingerprint = fingerprint.to_string().parse().unwrap();
            prop_assert_eq!(parsed.as_bytes(), &bytes, "text form must be lossless");
        }

        #[test]
        fn parsing_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<Fingerprint>();
        }
    }
}
