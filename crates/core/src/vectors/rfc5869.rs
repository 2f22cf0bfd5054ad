//! RFC 5869 Appendix A test cases 1–3 (the HKDF-SHA256 ones) through `hkdf_sha256`.

use super::unhex;
use crate::crypto;

struct Rfc5869Case {
    name: &'static str,
    ikm: &'static str,
    /// `None` where the RFC says "salt = (0 octets)" for "not provided".
    salt: Option<&'static str>,
    info: &'static str,
    length: usize,
    /// Only checked as a transcription guard: `hkdf_sha256` does extract and expand in one call.
    prk: &'static str,
    okm: &'static str,
}

/// RFC 5869 Appendix A.1, A.2 and A.3, transcribed from the RFC text.
const RFC5869_CASES: [Rfc5869Case; 3] = [
    Rfc5869Case {
        name: "A.1 (Test Case 1, basic)",
        ikm: "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
        salt: Some("000102030405060708090a0b0c"),
        info: "f0f1f2f3f4f5f6f7f8f9",
        length: 42,
        prk: "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
        okm: "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
    },
    Rfc5869Case {
        name: "A.2 (Test Case 2, longer inputs and outputs)",
        ikm: "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\
              202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f\
              404142434445464748494a4b4c4d4e4f",
        salt: Some(
            "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f\
             808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f\
             a0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
        ),
        info: "b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecf\
               d0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeef\
               f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
        length: 82,
        prk: "06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244",
        okm: "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c\
              59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71\
              cc30c58179ec3e87c14c01d5c1f3434f1d87",
    },
    Rfc5869Case {
        name: "A.3 (Test Case 3, zero-length salt and info)",
        ikm: "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
        salt: None,
        info: "",
        length: 42,
        prk: "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
        okm: "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
    },
];

#[test]
fn rfc5869_sha256_test_cases_1_to_3_derive_the_published_okm() {
    let mut run = 0usize;
    for case in &RFC5869_CASES {
        let name = case.name;
        let ikm = unhex(case.ikm);
        let salt = case.salt.map(unhex);
        let info = unhex(case.info);
        let okm_expected = unhex(case.okm);
        assert_eq!(okm_expected.len(), case.length, "RFC 5869 {name}: OKM is not L bytes");

        // Transcription guard for PRK, through the hkdf crate directly (not our primitive).
        let (prk, _) = hkdf::Hkdf::<sha2::Sha256>::extract(salt.as_deref(), &ikm);
        assert_eq!(hex::encode(prk), case.prk, "RFC 5869 {name}: PRK transcription");

        let mut okm = vec![0u8; case.length];
        crypto::hkdf_sha256(salt.as_deref(), &ikm, &info, &mut okm)
            .unwrap_or_else(|_| panic!("RFC 5869 {name}: hkdf_sha256 refused L = {}", case.length));
        assert_eq!(
            hex::encode(&okm),
            case.okm,
            "RFC 5869 {name}: hkdf_sha256 must give the published OKM, or record keys are not \
             HKDF-SHA256"
        );
        run += 1;
    }
    assert!(run >= 3, "ran {run} RFC 5869 SHA-256 test cases, expected at least 3");
}
