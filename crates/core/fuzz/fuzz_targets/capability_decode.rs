//! `Capability::decode` on arbitrary UTF-8 and `Capability::from_bytes` on arbitrary bytes, then
//! `verify` with the fixed device key against a request the decoded claims allow (so the cheap
//! checks pass and the signature check runs), and `open` with the fixed broker key if it
//! verifies. Nothing may panic, and whatever decodes must round-trip through its encodings.

#![no_main]

use std::sync::LazyLock;

use latchkey_core::capability::{Capability, CapabilityRequest};
use latchkey_core::keys::BrokerSecretKey;
use latchkey_core_fuzz::{DEVICE_VERIFYING_KEY, broker_key, first_method, path_matching};
use libfuzzer_sys::fuzz_target;

static BROKER: LazyLock<BrokerSecretKey> = LazyLock::new(broker_key);

fn exercise(capability: &Capability) {
    let again =
        Capability::from_bytes(capability.as_bytes()).expect("a decoded capability re-decodes");
    assert!(again == *capability, "from_bytes must round-trip");
    let text = capability.encode();
    let again = Capability::decode(&text).expect("the text form of a decoded capability decodes");
    assert!(again == *capability, "decode must round-trip");

    let claims = capability.claims();
    for pattern in &claims.paths {
        let path = path_matching(pattern);
        let request = CapabilityRequest {
            workspace: claims.workspace,
            agent: claims.agent,
            credential: claims.credential,
            method: first_method(claims),
            path: &path,
            now: claims.not_before,
        };
        if let Ok(verified) = capability.verify(&DEVICE_VERIFYING_KEY, &request) {
            if let Ok(key) = verified.open(&BROKER) {
                assert_eq!(*key.scope(), claims.scope(), "an opened key carries the claims' scope");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(capability) = Capability::from_bytes(data) {
        exercise(&capability);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(capability) = Capability::decode(text) {
            assert_eq!(capability.encode(), text, "only the canonical text form decodes");
            exercise(&capability);
        }
    }
});
