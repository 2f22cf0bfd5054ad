//! `AgentToken::parse` and `TokenHash::from_hex` on arbitrary UTF-8. Nothing may panic; a
//! parsed token keeps its text, passes the cheap shape check and hashes; a parsed hash prints
//! back as the lowercase form of its input.

#![no_main]

use latchkey_core::token::{AgentToken, TOKEN_LEN, TokenHash, looks_like_token};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let shape = looks_like_token(text);
    if let Ok(token) = AgentToken::parse(text) {
        assert_eq!(token.expose_secret(), text, "a token keeps its text");
        assert!(shape, "a token that parses has a token's shape");
        assert_eq!(text.len(), TOKEN_LEN);
        let hash = token.hash();
        assert!(TokenHash::from_hex(&hash.to_hex()).is_ok_and(|h| h == hash));
    }
    if let Ok(hash) = TokenHash::from_hex(text) {
        assert_eq!(hash.to_hex(), text.to_ascii_lowercase(), "hex round-trips");
    }
});
