//! `CredentialPayload::decode` on arbitrary bytes: never panics, and whatever decodes re-encodes
//! to exactly the same bytes (the format has one encoding per value).

#![no_main]

use latchkey_core::payload::CredentialPayload;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(payload) = CredentialPayload::decode(data) else { return };
    let again = payload.encode().expect("a decoded payload satisfies every bound encode checks");
    assert_eq!(&again[..], data, "decode then encode must reproduce the input");
});
