//! `Fingerprint::from_str` (the forgiving reader for what a human typed) on arbitrary UTF-8.
//! Nothing may panic; a parsed fingerprint prints as 24 symbols in six dash-separated groups,
//! and that text parses back to the same fingerprint.

#![no_main]

use latchkey_core::fingerprint::Fingerprint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(fingerprint) = text.parse::<Fingerprint>() else { return };
    let shown = fingerprint.to_string();
    assert_eq!(shown.len(), 29, "XXXX-XXXX-XXXX-XXXX-XXXX-XXXX");
    let again: Fingerprint = shown.parse().expect("a displayed fingerprint parses");
    assert!(again.matches(&fingerprint), "display and parse round-trip");
    let lower: Fingerprint = shown.to_lowercase().parse().expect("case is ignored");
    assert!(lower.matches(&fingerprint));
});
