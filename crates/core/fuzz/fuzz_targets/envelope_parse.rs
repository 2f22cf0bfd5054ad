//! `Envelope::parse` on arbitrary bytes, then `open` with fixed keys: neither may panic.
//!
//! `open` runs twice: with the fixed record key at key version 1 (so an envelope naming another
//! version takes the mismatch path), and with the record key at the envelope's own version (so
//! the AEAD always runs). A parsed envelope must keep its bytes exactly.

#![no_main]

use latchkey_core::envelope::{Envelope, EnvelopeError};
use latchkey_core::ids::KeyVersion;
use latchkey_core_fuzz::record_key;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = Envelope::parse(data) else { return };
    assert_eq!(envelope.as_bytes(), data, "parse must keep the bytes as given");

    let fixed = envelope.open(&record_key(KeyVersion::FIRST));
    if envelope.key_version() != KeyVersion::FIRST {
        assert!(
            matches!(fixed, Err(EnvelopeError::KeyVersionMismatch { .. })),
            "a version mismatch must be refused before the AEAD runs"
        );
    }
    let _ = envelope.open(&record_key(envelope.key_version()));
});
