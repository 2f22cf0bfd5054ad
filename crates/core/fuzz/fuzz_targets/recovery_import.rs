//! `recovery::import` with a fixed passphrase on arbitrary UTF-8. Nothing may panic.
//!
//! A kit that passes every framing check runs Argon2id at the parameters in its header (import
//! accepts up to 1 GiB and 20 passes). To keep the fuzzer fast, inputs whose header asks for more
//! than the export defaults (64 MiB, 3 passes, 1 lane) are skipped here; everything cheaper,
//! including the OWASP floor (19 MiB, 2 passes), still reaches the key derivation and the AEAD.
//! The seed corpus holds a kit exported under `PASSPHRASE` (see `src/lib.rs`).

#![no_main]

use latchkey_core::recovery;
use latchkey_core::secret::SecretBytes;
use latchkey_core_fuzz::{PASSPHRASE, kit_kdf_params};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some((m_cost, t_cost, p_cost)) = kit_kdf_params(text) {
        if m_cost > 64 * 1024 || t_cost > 3 || p_cost > 1 {
            return;
        }
    }
    let passphrase = SecretBytes::copy_from(PASSPHRASE);
    if let Ok(entries) = recovery::import(&passphrase, text) {
        assert!(!entries.is_empty() && entries.len() <= recovery::MAX_ENTRIES);
    }
});
