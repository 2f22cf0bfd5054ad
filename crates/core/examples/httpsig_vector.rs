//! Latchkey device request signatures as JSON, for checking against independent implementations
//! (`tests/interop/test_httpsig_interop.py` runs this with Python's `http-message-signatures`).
//!
//! ```text
//! cargo run -q -p latchkey-core --example httpsig_vector            # = sign
//! cargo run -q -p latchkey-core --example httpsig_vector -- sign
//!     prints {"method", "url", "headers": [[name, value], ...], "body", "public_key_hex",
//!             "key_id", "created"}: a request signed now by a fixed test device key
//! cargo run -q -p latchkey-core --example httpsig_vector -- verify < request.json
//!     reads {"method", "url", "headers", "body", "public_key_hex"}, verifies it now
//!     (max age 300 s, skew 30 s) and prints {"ok": true, "key_id", "nonce", "created",
//!     "expires", "covered"} or {"ok": false, "error"}; exits 0 when ok, 1 when rejected
//! ```
//!
//! The key is a fixed, public test key: never use it for anything else.

use std::error::Error;
use std::io::{Read as _, Write as _};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use latchkey_core::httpsig::{self, ParsedSignature, SignedRequestParts};
use latchkey_core::ids::DeviceId;
use latchkey_core::keys::{DeviceSigningKey, DeviceVerifyingKey};
use latchkey_core::secret::Key32;
use serde_json::{Value, json};

/// Seed of the fixed test device key (SHA-256 of "latchkey httpsig interop test key").
const TEST_SEED_HEX: &str = "d854b9b7d07d68dad054368fec58e95dace0814f996590e4520b545e61fb234b";
const TEST_DEVICE: &str = "0b5e0a3c-4c1e-4d8e-9a47-3f1f6a2b9c10";
const METHOD: &str = "POST";
const URL: &str = "https://broker.example/v1/credentials?workspace=demo";
const BODY: &str = r#"{"hello": "world"}"#;
const MAX_AGE_SECS: u64 = 300;
const MAX_SKEW_SECS: u64 = 30;
const VALIDITY_SECS: u64 = 60;

fn main() -> Result<ExitCode, Box<dyn Error>> {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "sign".to_owned());
    let (output, code) = match mode.as_str() {
        "sign" => (sign()?, ExitCode::SUCCESS),
        "verify" => {
            let mut input = String::new();
            std::io::stdin().read_to_string(&mut input)?;
            verify(&serde_json::from_str(&input)?)?
        }
        other => return Err(format!("unknown mode {other:?}: expected sign or verify").into()),
    };
    writeln!(std::io::stdout(), "{output}")?;
    Ok(code)
}

fn sign() -> Result<Value, Box<dyn Error>> {
    let seed: [u8; 32] =
        hex::decode(TEST_SEED_HEX)?.try_into().map_err(|_| "the test seed is not 32 bytes")?;
    let key = DeviceSigningKey::from_secret_bytes(&Key32::from_bytes(seed));
    let device: DeviceId = TEST_DEVICE.parse()?;
    let now = unix_now()?;

    let mut headers = vec![
        ("Content-Type".to_owned(), "application/json".to_owned()),
        ("Content-Length".to_owned(), BODY.len().to_string()),
    ];
    let refs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let parts = SignedRequestParts { method: METHOD, target_uri: URL, headers: &refs };
    let signed = httpsig::sign(&parts, BODY.as_bytes(), &key, device, now, VALIDITY_SECS)?;
    headers.push(("Content-Digest".to_owned(), signed.content_digest));
    headers.push(("Signature-Input".to_owned(), signed.signature_input));
    headers.push(("Signature".to_owned(), signed.signature));

    Ok(json!({
        "method": METHOD,
        "url": URL,
        "headers": headers,
        "body": BODY,
        "public_key_hex": hex::encode(key.verifying_key().to_bytes()),
        "key_id": device.to_string(),
        "created": now,
    }))
}

fn verify(request: &Value) -> Result<(Value, ExitCode), Box<dyn Error>> {
    let field = |name: &str| request[name].as_str().ok_or(format!("missing string field {name:?}"));
    let method = field("method")?;
    let url = field("url")?;
    let body = field("body")?;
    let public_key: [u8; 32] = hex::decode(field("public_key_hex")?)?
        .try_into()
        .map_err(|_| "public_key_hex is not 32 bytes")?;
    let mut headers = Vec::new();
    for pair in request["headers"].as_array().ok_or("headers is not an array")? {
        match pair.as_array().map(Vec::as_slice) {
            Some([Value::String(name), Value::String(value)]) => {
                headers.push((name.as_str(), value.as_str()));
            }
            _ => return Err("each header is a [name, value] pair of strings".into()),
        }
    }
    let key = DeviceVerifyingKey::from_bytes(&public_key)?;
    let parts = SignedRequestParts { method, target_uri: url, headers: &headers };
    let result = ParsedSignature::parse(&parts).and_then(|parsed| {
        parsed.verify(&key, unix_now().unwrap_or(0), MAX_AGE_SECS, MAX_SKEW_SECS, body.as_bytes())
    });
    Ok(match result {
        Ok(verified) => (
            json!({
                "ok": true,
                "key_id": verified.key_id().to_string(),
                "nonce": verified.nonce(),
                "created": verified.created(),
                "expires": verified.expires(),
                "covered": verified.covered_components(),
            }),
            ExitCode::SUCCESS,
        ),
        Err(error) => (json!({ "ok": false, "error": error.to_string() }), ExitCode::FAILURE),
    })
}

fn unix_now() -> Result<u64, Box<dyn Error>> {
    Ok(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())
}
