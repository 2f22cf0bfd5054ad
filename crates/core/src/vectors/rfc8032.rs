//! RFC 8032 §7.1 Ed25519 test vectors through `ed25519_sign` and `ed25519_verify`.
//!
//! Wycheproof publishes only public keys, so these are the vectors that pin down signing: the
//! secret keys below also let the Wycheproof test re-sign tcId 80–83, whose public keys are
//! RFC 8032's (TEST 1024's 1023-byte message is exercised there, not transcribed here).

use super::{unhex, unhex_array};
use crate::crypto;

/// RFC 8032 §7.1: (test name, SECRET KEY, PUBLIC KEY).
pub(super) const RFC8032_KEYS: [(&str, &str, &str); 5] = [
    (
        "TEST 1",
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
    ),
    (
        "TEST 2",
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
    ),
    (
        "TEST 3",
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
    ),
    (
        "TEST 1024",
        "f5e5767cf153319517630f226876b86c8160cc583bc013744c6bf255f5cc0ee5",
        "278117fc144c72340f67d0f2316e8386ceffbf2b2428c9c51fef7c597f1d426e",
    ),
    (
        "TEST SHA(abc)",
        "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
        "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
    ),
];

/// RFC 8032 §7.1: (test name, MESSAGE, SIGNATURE). The SHA(abc) message is SHA-512("abc").
const RFC8032_SIGNATURES: [(&str, &str, &str); 4] = [
    (
        "TEST 1",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "TEST 2",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "TEST 3",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
    (
        "TEST SHA(abc)",
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704",
    ),
];

#[test]
fn rfc8032_secret_keys_sign_the_published_messages_and_verify_strict_accepts_the_signatures() {
    let mut run = 0usize;
    for (name, message, expected) in RFC8032_SIGNATURES {
        let (_, secret, public) = RFC8032_KEYS
            .iter()
            .find(|(key_name, _, _)| *key_name == name)
            .unwrap_or_else(|| panic!("RFC 8032 {name}: no key transcribed"));
        let signing_key = ed25519_dalek::SigningKey::from_bytes(&unhex_array::<32>(secret));
        let verifying_key = signing_key.verifying_key();
        assert_eq!(
            hex::encode(verifying_key.as_bytes()),
            *public,
            "RFC 8032 {name}: the secret key must derive the published public key"
        );
        let message = unhex(message);
        let signature = crypto::ed25519_sign(&signing_key, &message);
        assert_eq!(
            hex::encode(signature),
            expected,
            "RFC 8032 {name}: ed25519_sign must reproduce the published signature; device \
             signatures must verify anywhere Ed25519 does"
        );
        let published = unhex_array::<64>(expected);
        assert!(
            crypto::ed25519_verify(&verifying_key, &message, &published).is_ok(),
            "RFC 8032 {name}: ed25519_verify must accept the published signature"
        );
        let mut other_message = message.clone();
        other_message.push(0);
        assert!(
            crypto::ed25519_verify(&verifying_key, &other_message, &published).is_err(),
            "RFC 8032 {name}: ed25519_verify must reject the signature over a longer message"
        );
        run += 1;
    }
    assert!(run >= 4, "ran {run} RFC 8032 Ed25519 vectors, expected at least 4");
}
