//! Writes a seed corpus for every fuzz target into `corpus/<target>/`, made with the fixed keys
//! of `src/lib.rs`: an envelope that opens, capabilities and wrapped keys whose signatures
//! verify, a signed request, and a few path patterns. Runs on stable:
//!
//! ```text
//! cargo run --manifest-path crates/core/fuzz/Cargo.toml --example seed_corpus
//! ```

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

use latchkey_core::capability::{
    Capability, CapabilityRequest, Claims, Method, MethodSet, PathPattern, Reuse,
};
use latchkey_core::envelope::Envelope;
use latchkey_core::fingerprint::Fingerprint;
use latchkey_core::httpsig::{self, ParsedSignature, SignedRequestParts};
use latchkey_core::ids::{AgentId, GrantId, KeyVersion, MemberId, Owner};
use latchkey_core::keys::{MemberKey, WrappedKey};
use latchkey_core::pkce::PkceVerifier;
use latchkey_core::recovery::{self, KitEntry};
use latchkey_core::secret::{Key32, SecretBytes};
use latchkey_core::token::AgentToken;
use latchkey_core_fuzz::{
    CREDENTIAL, DEVICE, DEVICE_VERIFYING_KEY, HttpSigInput, NOW, PASSPHRASE, RECIPIENT, WORKSPACE,
    broker_key, device_signing_key, first_method, kit_kdf_params, path_matching,
    recipient_exchange_key, record_key, workspace_key,
};

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) -> Result<(), Box<dyn Error>> {
    let dir = dir.join(target);
    fs::create_dir_all(&dir)?;
    fs::write(dir.join(name), bytes)?;
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let root: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let device = device_signing_key();

    // Envelopes: one that opens under the fixed key, one at key version 2.
    let envelope = Envelope::seal(&record_key(KeyVersion::FIRST), b"ghp_exampleToken0123456789")?;
    envelope.open(&record_key(KeyVersion::FIRST))?;
    write(&root, "envelope_parse", "seed-v1", envelope.as_bytes())?;
    let v2 = KeyVersion::new(2).ok_or("version 2")?;
    let envelope = Envelope::seal(&record_key(v2), br#"{"access_token":"x","refresh_token":"y"}"#)?;
    write(&root, "envelope_parse", "seed-v2", envelope.as_bytes())?;

    // Capabilities signed by the fixed device and sealed to the fixed broker, both forms.
    let broker_secret = broker_key();
    let broker = broker_secret.public_key();
    let key = record_key(KeyVersion::FIRST);
    for (name, reuse, paths) in [
        ("single", Reuse::SingleUse { nonce: [0x55; 16] }, vec!["/repos/*/issues/**"]),
        (
            "standing",
            Reuse::Standing { grant: GrantId::from_bytes([0x66; 16]) },
            vec!["/", "/v1/chat/completions", "/user/**"],
        ),
    ] {
        let claims = Claims {
            workspace: WORKSPACE,
            agent: AgentId::from_bytes([0x77; 16]),
            credential: CREDENTIAL,
            owner: Owner::Shared,
            key_version: KeyVersion::FIRST,
            issuer: DEVICE,
            methods: MethodSet::of(&[Method::Get, Method::Post]).ok_or("methods")?,
            paths: paths.into_iter().map(PathPattern::parse).collect::<Result<_, _>>()?,
            not_before: NOW - 10,
            expires: NOW + 300,
            reuse,
        };
        let capability = Capability::issue(claims, &key, &device, &broker)?;
        // The seed must get as far as the target can take it: verified and opened.
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
            capability.verify(&DEVICE_VERIFYING_KEY, &request)?.open(&broker_secret)?;
        }
        write(
            &root,
            "capability_decode",
            &format!("seed-{name}-text"),
            capability.encode().as_bytes(),
        )?;
        write(&root, "capability_decode", &format!("seed-{name}-bytes"), capability.as_bytes())?;
    }

    // Wrapped keys addressed to the fixed recipient, signed by the fixed device.
    let recipient = recipient_exchange_key().public_key();
    let wrapped = WrappedKey::wrap_workspace_key(
        &workspace_key(KeyVersion::FIRST),
        (RECIPIENT, &recipient),
        (DEVICE, &device),
    )?;
    wrapped.unwrap_workspace_key(
        (RECIPIENT, &recipient_exchange_key()),
        WORKSPACE,
        &DEVICE_VERIFYING_KEY,
    )?;
    write(&root, "wrapped_key_parse", "seed-workspace", wrapped.as_bytes())?;
    let member_key = MemberKey::from_parts(
        WORKSPACE,
        MemberId::from_bytes([0x88; 16]),
        KeyVersion::FIRST,
        Key32::from_bytes([0x99; 32]),
    );
    let wrapped =
        WrappedKey::wrap_member_key(&member_key, (RECIPIENT, &recipient), (DEVICE, &device))?;
    wrapped.unwrap_member_key(
        (RECIPIENT, &recipient_exchange_key()),
        WORKSPACE,
        &DEVICE_VERIFYING_KEY,
    )?;
    write(&root, "wrapped_key_parse", "seed-member", wrapped.as_bytes())?;

    // Path patterns and request paths.
    for (i, seed) in [
        "/repos/*/issues/**\n/repos/acme/issues/42",
        "/v1/chat/completions\n/v1/chat/completions",
        "/**\n/v1/%2e%2e/admin",
        "/user\n/user/",
        "/a/*/c\n/a//c",
        "/\n/",
    ]
    .iter()
    .enumerate()
    {
        write(&root, "path_pattern", &format!("seed-{i}"), seed.as_bytes())?;
    }

    // A signed request (valid at NOW with the fixed device key).
    let target_uri = "https://broker.example.com/v1/workspaces/ws/credentials?x=1";
    let body = br#"{"agent":"a","paths":["/repos/*/issues/**"]}"#;
    let unsigned_headers = [("Content-Type", "application/json")];
    let unsigned = SignedRequestParts { method: "POST", target_uri, headers: &unsigned_headers };
    let signed = httpsig::sign(&unsigned, body, &device, DEVICE, NOW, 60)?;
    let input = HttpSigInput {
        signature_input: &signed.signature_input,
        signature: &signed.signature,
        content_digest: &signed.content_digest,
        target_uri,
        body,
    };
    let joined = input.join();
    let again = HttpSigInput::split(&joined).ok_or("httpsig seed does not split")?;
    let headers = [
        ("Content-Type", "application/json"),
        ("Content-Digest", again.content_digest),
        ("Signature-Input", again.signature_input),
        ("Signature", again.signature),
    ];
    let parts =
        SignedRequestParts { method: "POST", target_uri: again.target_uri, headers: &headers };
    let parsed = ParsedSignature::parse(&parts)?;
    parsed.verify(&DEVICE_VERIFYING_KEY, parsed.created(), 300, 60, again.body)?;
    write(&root, "httpsig", "seed-post", &joined)?;

    // Agent tokens, token hashes, PKCE verifiers, fingerprints.
    let token = AgentToken::generate()?;
    write(&root, "agent_token", "seed-token", token.expose_secret().as_bytes())?;
    write(&root, "agent_token", "seed-hash", token.hash().to_hex().as_bytes())?;
    let verifier = PkceVerifier::generate()?;
    write(&root, "pkce_verifier", "seed-generated", verifier.expose_secret().as_bytes())?;
    let rfc7636 = "dBjftJeZ4CVP-mJ92K27uhbUJU1p1r_wW1gFWFOEjXk"; // RFC 7636 Appendix B
    write(&root, "pkce_verifier", "seed-rfc7636", rfc7636.as_bytes())?;
    let verifying = DEVICE_VERIFYING_KEY.to_bytes();
    let exchange = recipient_exchange_key().public_key().to_bytes();
    let fingerprint = Fingerprint::of(&verifying, &exchange).to_string();
    write(&root, "fingerprint_parse", "seed-display", fingerprint.as_bytes())?;
    let typed = fingerprint.replace('-', " ").to_lowercase().replace('1', "l").replace('0', "o");
    write(&root, "fingerprint_parse", "seed-typed", typed.as_bytes())?;

    // A recovery kit under the fixed passphrase (Argon2id at export strength: a second or so).
    let passphrase = SecretBytes::copy_from(PASSPHRASE);
    let entries = [
        KitEntry {
            workspace: WORKSPACE,
            owner: Owner::Shared,
            version: KeyVersion::FIRST,
            key: Key32::from_bytes([0x42; 32]),
        },
        KitEntry {
            workspace: WORKSPACE,
            owner: Owner::Member(MemberId::from_bytes([0x88; 16])),
            version: v2,
            key: Key32::from_bytes([0x99; 32]),
        },
    ];
    let kit = recovery::export(&passphrase, &entries)?;
    if recovery::import(&passphrase, &kit)? != entries {
        return Err("the seed kit does not import".into());
    }
    if kit_kdf_params(&kit) != Some((64 * 1024, 3, 1)) {
        return Err("kit_kdf_params misreads the kit header".into());
    }
    write(&root, "recovery_import", "seed-kit", kit.as_bytes())?;

    println!("seed corpus written under {}", root.display());
    Ok(())
}
