//! Request-signature parsing (RFC 9421 `Signature-Input` and `Signature`, RFC 9530
//! `Content-Digest`) on arbitrary header values, target URIs and bodies; input format in
//! `HttpSigInput` (src/lib.rs). Nothing may panic.
//!
//! Runs `ParsedSignature::parse`, then `verify` with the fixed device key at the signature's own
//! `created` time; `verify_content_digest` directly; and `signature_base` with the profile's
//! components, which parses and normalises the target URI whether or not the rest is valid.

#![no_main]

use latchkey_core::httpsig::{
    self, ParamValue, ParsedSignature, SignedRequestParts, verify_content_digest,
};
use latchkey_core_fuzz::{DEVICE_VERIFYING_KEY, HttpSigInput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(input) = HttpSigInput::split(data) else { return };
    let headers = [
        ("Content-Type", "application/json"),
        ("Content-Digest", input.content_digest),
        ("Signature-Input", input.signature_input),
        ("Signature", input.signature),
    ];
    let parts =
        SignedRequestParts { method: "POST", target_uri: input.target_uri, headers: &headers };

    if let Ok(parsed) = ParsedSignature::parse(&parts) {
        assert!(parsed.expires() > parsed.created(), "parse enforces a non-empty window");
        let _ = parsed.verify(&DEVICE_VERIFYING_KEY, parsed.created(), 300, 60, input.body);
    }
    let _ = verify_content_digest(input.content_digest, input.body);

    let mut covered = httpsig::REQUIRED_COMPONENTS.to_vec();
    covered.push("content-type");
    let params = [
        ("created", ParamValue::Integer(1_800_000_000)),
        ("expires", ParamValue::Integer(1_800_000_060)),
        ("nonce", ParamValue::String("AAAAAAAAAAAAAAAAAAAAAA")),
        ("keyid", ParamValue::String("33333333-3333-3333-3333-333333333333")),
        ("alg", ParamValue::String(httpsig::ALGORITHM)),
        ("tag", ParamValue::String(httpsig::TAG)),
    ];
    let _ = httpsig::signature_base(&parts, &covered, &params);
});
