//! `WrappedKey::parse` on arbitrary bytes, then both unwrap paths with the fixed recipient key
//! and sender key, addressed so the header checks pass and the signature check and HPKE open run.
//! Nothing may panic; a parsed wrapped key must keep its bytes exactly.

#![no_main]

use std::sync::LazyLock;

use latchkey_core::keys::{ExchangeSecretKey, WrappedKey};
use latchkey_core_fuzz::{DEVICE_VERIFYING_KEY, recipient_exchange_key};
use libfuzzer_sys::fuzz_target;

static RECIPIENT_KEY: LazyLock<ExchangeSecretKey> = LazyLock::new(recipient_exchange_key);

fuzz_target!(|data: &[u8]| {
    let Ok(wrapped) = WrappedKey::parse(data) else { return };
    assert_eq!(wrapped.as_bytes(), data, "parse must keep the bytes as given");
    let header = *wrapped.header();
    let me = (header.recipient, &*RECIPIENT_KEY);
    let _ = wrapped.unwrap_workspace_key(me, header.workspace, &DEVICE_VERIFYING_KEY);
    let _ = wrapped.unwrap_member_key(me, header.workspace, &DEVICE_VERIFYING_KEY);
});
