//! PKCE code verifier parsing (`PkceVerifier::from_str`) on arbitrary UTF-8, and the OAuth state
//! comparison. Nothing may panic; a parsed verifier keeps its text and its S256 challenge is 43
//! base64url characters.

#![no_main]

use std::sync::LazyLock;

use latchkey_core::pkce::{OAuthState, PkceVerifier, VERIFIER_MAX_LEN, VERIFIER_MIN_LEN};
use libfuzzer_sys::fuzz_target;

static STATE: LazyLock<OAuthState> =
    LazyLock::new(|| OAuthState::generate().expect("the OS random generator works"));

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(verifier) = text.parse::<PkceVerifier>() {
        assert_eq!(verifier.expose_secret(), text, "a verifier keeps its text");
        assert!((VERIFIER_MIN_LEN..=VERIFIER_MAX_LEN).contains(&text.len()));
        let challenge = verifier.challenge();
        assert_eq!(challenge.method(), "S256");
        assert_eq!(challenge.as_str().len(), 43);
        assert!(
            challenge.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }
    assert_eq!(STATE.matches(text), STATE.as_str() == text);
});
