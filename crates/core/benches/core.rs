//! Each Latchkey wrapper beside the raw primitive it wraps, measured in the same run.
//!
//! ```text
//! cargo bench -p latchkey-core --bench core                 # full run (about 3 minutes)
//! cargo bench -p latchkey-core --bench core -- --quick      # smoke run (about 20 seconds)
//! LATCHKEY_BENCH_QUICK=1 cargo bench -p latchkey-core --bench core
//! cargo bench -p latchkey-core --bench core -- capability   # one pair (substring filter)
//! ```
//!
//! Two parts:
//!
//! 1. Criterion groups, one per pair (`envelope_seal`, `envelope_open`, `capability`,
//!    `httpsig_verify`), each with a `latchkey/...` function and the `raw/...` functions it is
//!    compared with. Criterion's estimates and HTML land in `target/criterion` as usual.
//! 2. A ratio report printed at the end: wrapper median / primitive median, target <= 1.2x.
//!    Criterion does not hand its estimates back to the program, so the report does its own
//!    measurement: per benchmark a warm-up and a calibration to a fixed batch duration, then many
//!    batches in which the wrapper and its references take turns (rotating order), so slow drift
//!    of the machine hits both sides alike. Each row shows the median ns/op over the batches and
//!    the interquartile range. Inputs and outputs go through `black_box`, and every output is
//!    dropped inside the timed loop (a wrapper's zeroize-on-drop is part of its cost).
//!
//! Under `cargo test --benches` (criterion's test mode) every benchmark runs once and no report
//! is printed. Only the public API of `latchkey-core` and the raw crates it depends on are used.

#![allow(clippy::print_stdout, reason = "a benchmark's report goes to stdout")]

use std::error::Error;
use std::hint::black_box;
use std::time::{Duration, Instant};

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
use base64::Engine as _;
use criterion::Criterion;
use ed25519_dalek::Signer as _;
use hpke::{Deserializable as _, Kem as _, Serializable as _};
use latchkey_core::capability::{
    Capability, CapabilityRequest, Claims, Method, MethodSet, PathPattern, Reuse,
};
use latchkey_core::envelope::Envelope;
use latchkey_core::httpsig::{self, ParamValue, ParsedSignature, SignedRequestParts};
use latchkey_core::ids::{AgentId, CredentialId, DeviceId, KeyVersion, Owner, WorkspaceId};
use latchkey_core::keys::{
    BrokerSecretKey, DeviceKeys, DeviceSigningKey, RecordScope, WorkspaceKey,
};
use latchkey_core::secret::Key32;
use zeroize::Zeroize as _;

type BoxError = Box<dyn Error>;

/// Target for every wrapper/primitive ratio.
const TARGET_RATIO: f64 = 1.2;
/// A fixed "now" so capabilities and request signatures are valid regardless of the wall clock.
const NOW: u64 = 1_800_000_000;
/// Size of the benchmarked credential.
const CREDENTIAL_LEN: usize = 256;
/// The envelope's AAD: `"latchkey envelope v1\0"` || format version || scope (see envelope.rs).
const ENVELOPE_AAD_LEN: usize = b"latchkey envelope v1\0".len() + 1 + RecordScope::ENCODED_LEN;
/// The capability's signing label and HPKE info (private in capability.rs; documented there).
const CAPABILITY_LABEL: &[u8] = b"latchkey capability v1\0";
const ED25519_SIGNATURE_LEN: usize = 64;

type HpkeKem = hpke::kem::X25519HkdfSha256;
type HpkeKdf = hpke::kdf::HkdfSha256;
type HpkeAead = hpke::aead::ChaCha20Poly1305;
type HpkeEncappedKey = <HpkeKem as hpke::Kem>::EncappedKey;

fn main() {
    if let Err(error) = run() {
        eprintln!("benchmark setup failed: {error}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), BoxError> {
    let options = Options::from_env_and_args();
    let mut criterion = Criterion::default();
    if options.quick {
        criterion = criterion
            .warm_up_time(Duration::from_millis(100))
            .measurement_time(Duration::from_millis(400))
            .sample_size(10);
    }
    // Flags given on the command line (including --quick) still override the settings above.
    let mut criterion = criterion.configure_from_args();
    let mut report = Report::default();

    envelope_seal(&mut criterion, &options, &mut report)?;
    envelope_open(&mut criterion, &options, &mut report)?;
    capability(&mut criterion, &options, &mut report)?;
    httpsig_verify(&mut criterion, &options, &mut report)?;

    criterion.final_summary();
    if options.mode == Mode::Bench {
        report.print(&options);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// a. Envelope::seal vs AES-256-GCM encrypt
// ---------------------------------------------------------------------------------------------

fn envelope_seal(c: &mut Criterion, o: &Options, report: &mut Report) -> Result<(), BoxError> {
    let wk = WorkspaceKey::generate(WorkspaceId::random(), KeyVersion::FIRST)?;
    let record_key = wk.record_key(CredentialId::random())?;
    let plaintext = random_bytes(CREDENTIAL_LEN)?;
    let raw_key = Key32::generate()?;
    let aad = random_bytes(ENVELOPE_AAD_LEN)?;
    let nonce: [u8; 12] = latchkey_core::random::array()?;
    let pre_keyed = Aes256Gcm::new(raw_key.expose_secret().into());

    let mut wrapper = || Envelope::seal(black_box(&record_key), black_box(&plaintext));
    let mut raw = || {
        let cipher = Aes256Gcm::new(black_box(raw_key.expose_secret()).into());
        cipher.encrypt(&black_box(nonce).into(), Payload { msg: black_box(&plaintext), aad: &aad })
    };
    let mut raw_with_nonce = || {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map(|()| {
            let cipher = Aes256Gcm::new(black_box(raw_key.expose_secret()).into());
            cipher.encrypt(&nonce.into(), Payload { msg: black_box(&plaintext), aad: &aad })
        })
    };
    let mut raw_pre_keyed = || {
        black_box(&pre_keyed)
            .encrypt(&black_box(nonce).into(), Payload { msg: black_box(&plaintext), aad: &aad })
    };
    let mut getrandom_only = || {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map(|()| nonce)
    };
    check("Envelope::seal", wrapper().map(|e| e.as_bytes().len()))?;
    check("raw AES-256-GCM encrypt", raw().map(|ct| ct.len()).map_err(|_| "aead error"))?;

    let mut group = c.benchmark_group("envelope_seal");
    group.bench_function("latchkey/Envelope::seal", |b| b.iter(&mut wrapper));
    group.bench_function("raw/aes256gcm_new+encrypt", |b| b.iter(&mut raw));
    group.bench_function("raw/aes256gcm_new+encrypt+getrandom_nonce", |b| {
        b.iter(&mut raw_with_nonce)
    });
    group.bench_function("raw/aes256gcm_encrypt_prekeyed", |b| b.iter(&mut raw_pre_keyed));
    group.bench_function("raw/getrandom_12_bytes", |b| b.iter(&mut getrandom_only));
    group.finish();

    report.pair(
        o,
        "a",
        "envelope_seal",
        "Envelope::seal of a 256-byte credential",
        vec![
            Bench::new(
                Role::Wrapper,
                "Envelope::seal (OS nonce, key setup, encrypt, framing)",
                wrapper,
            ),
            Bench::new(
                Role::Primitive,
                "Aes256Gcm::new + encrypt 256 B, 12 B nonce, 75 B AAD",
                raw,
            ),
            Bench::new(
                Role::Reference,
                "the primitive + getrandom 12-byte nonce draw",
                raw_with_nonce,
            ),
            Bench::new(
                Role::Reference,
                "encrypt only, Aes256Gcm keyed outside the loop",
                raw_pre_keyed,
            ),
            Bench::new(Role::Info, "getrandom 12 bytes alone (one syscall)", getrandom_only),
        ],
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// b. Envelope::open vs AES-256-GCM decrypt
// ---------------------------------------------------------------------------------------------

fn envelope_open(c: &mut Criterion, o: &Options, report: &mut Report) -> Result<(), BoxError> {
    let wk = WorkspaceKey::generate(WorkspaceId::random(), KeyVersion::FIRST)?;
    let record_key = wk.record_key(CredentialId::random())?;
    let plaintext = random_bytes(CREDENTIAL_LEN)?;
    let envelope = Envelope::seal(&record_key, &plaintext)?;
    let stored = envelope.as_bytes().to_vec();

    let raw_key = Key32::generate()?;
    let aad = random_bytes(ENVELOPE_AAD_LEN)?;
    let nonce: [u8; 12] = latchkey_core::random::array()?;
    let ciphertext = Aes256Gcm::new(raw_key.expose_secret().into())
        .encrypt(&nonce.into(), Payload { msg: &plaintext, aad: &aad })
        .map_err(|_| "raw AES-256-GCM encrypt failed")?;

    let mut wrapper = || black_box(&envelope).open(black_box(&record_key));
    let mut wrapper_from_bytes = || Envelope::parse(black_box(&stored))?.open(&record_key);
    let mut raw = || {
        let cipher = Aes256Gcm::new(black_box(raw_key.expose_secret()).into());
        cipher.decrypt(&black_box(nonce).into(), Payload { msg: black_box(&ciphertext), aad: &aad })
    };
    let mut raw_zeroized = || {
        let cipher = Aes256Gcm::new(black_box(raw_key.expose_secret()).into());
        cipher
            .decrypt(&black_box(nonce).into(), Payload { msg: black_box(&ciphertext), aad: &aad })
            .map(|mut plaintext| {
                black_box(&plaintext);
                plaintext.zeroize();
                plaintext
            })
    };
    check("Envelope::open", wrapper().map(|p| p.len() == CREDENTIAL_LEN))?;
    check("Envelope::parse+open", wrapper_from_bytes().map(|p| p.len() == CREDENTIAL_LEN))?;
    check("raw AES-256-GCM decrypt", raw().map(|p| p == plaintext).map_err(|_| "aead error"))?;

    let mut group = c.benchmark_group("envelope_open");
    group.bench_function("latchkey/Envelope::open", |b| b.iter(&mut wrapper));
    group.bench_function("latchkey/Envelope::parse+open", |b| b.iter(&mut wrapper_from_bytes));
    group.bench_function("raw/aes256gcm_new+decrypt", |b| b.iter(&mut raw));
    group.bench_function("raw/aes256gcm_new+decrypt+zeroize", |b| b.iter(&mut raw_zeroized));
    group.finish();

    report.pair(
        o,
        "b",
        "envelope_open",
        "Envelope::open of a 256-byte credential",
        vec![
            Bench::new(
                Role::Wrapper,
                "Envelope::open (parsed envelope; output zeroized on drop)",
                wrapper,
            ),
            Bench::new(Role::Primitive, "Aes256Gcm::new + decrypt 256 B, 75 B AAD", raw),
            Bench::new(Role::Reference, "the primitive + zeroize of the plaintext", raw_zeroized),
            Bench::new(
                Role::Info,
                "Envelope::parse + open, from the stored bytes",
                wrapper_from_bytes,
            ),
        ],
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// c. Capability decode + verify + open vs Ed25519 verify_strict + HPKE open
// ---------------------------------------------------------------------------------------------

fn capability(c: &mut Criterion, o: &Options, report: &mut Report) -> Result<(), BoxError> {
    let workspace = WorkspaceId::random();
    let credential = CredentialId::random();
    let agent = AgentId::random();
    let wk = WorkspaceKey::generate(workspace, KeyVersion::FIRST)?;
    let device = DeviceKeys::generate()?;
    let broker = BrokerSecretKey::generate()?;
    let claims = Claims {
        workspace,
        agent,
        credential,
        owner: Owner::Shared,
        key_version: KeyVersion::FIRST,
        issuer: DeviceId::random(),
        methods: MethodSet::of(&[Method::Get, Method::Post]).ok_or("empty method set")?,
        paths: vec![PathPattern::parse("/repos/*/issues/**")?],
        not_before: NOW - 10,
        expires: NOW + 300,
        reuse: Reuse::single_use()?,
    };
    let capability = Capability::issue(
        claims,
        &wk.record_key(credential)?,
        &device.signing,
        &broker.public_key(),
    )?;
    let text = capability.encode();
    let issuer_key = device.signing.verifying_key();
    let request = CapabilityRequest {
        workspace,
        agent,
        credential,
        method: Method::Post,
        path: "/repos/acme/issues/42/comments",
        now: NOW,
    };

    // Raw inputs of the same sizes: the signed message is label || claims || sealed key, the
    // HPKE ciphertext is enc (32) || key (32) || tag (16) with the claims as AAD.
    let signed_len = CAPABILITY_LABEL.len() + capability.as_bytes().len() - ED25519_SIGNATURE_LEN;
    let claims_len = capability.as_bytes().len() - ED25519_SIGNATURE_LEN - 80;
    let message = random_bytes(signed_len)?;
    let signing_key = ed25519_dalek::SigningKey::from_bytes(&latchkey_core::random::array()?);
    let verifying_key = signing_key.verifying_key();
    let signature = signing_key.sign(&message);
    let (hpke_sk, hpke_pk) = HpkeKem::derive_keypair(&latchkey_core::random::array::<32>()?);
    let hpke_aad = random_bytes(claims_len)?;
    let record_key = Key32::generate()?;
    let (enc, ct) = hpke::single_shot_seal::<HpkeAead, HpkeKdf, HpkeKem>(
        &hpke::OpModeS::Base,
        &hpke_pk,
        CAPABILITY_LABEL,
        record_key.expose_secret(),
        &hpke_aad,
    )
    .map_err(|e| format!("raw HPKE seal failed: {e:?}"))?;
    let mut sealed = enc.to_bytes().to_vec();
    sealed.extend_from_slice(&ct);
    if sealed.len() != 80 {
        return Err(format!("raw HPKE ciphertext is {} bytes, expected 80", sealed.len()).into());
    }

    let mut wrapper = || {
        let capability = Capability::decode(black_box(&text))?;
        let verified = capability.verify(black_box(&issuer_key), black_box(&request))?;
        verified.open(black_box(&broker))
    };
    let mut wrapper_decode = || Capability::decode(black_box(&text));
    let mut raw = || {
        let verified = black_box(&verifying_key).verify_strict(black_box(&message), &signature);
        let (enc, ct) = black_box(&sealed).split_at(32);
        let opened = HpkeEncappedKey::from_bytes(enc).and_then(|enc| {
            hpke::single_shot_open::<HpkeAead, HpkeKdf, HpkeKem>(
                &hpke::OpModeR::Base,
                black_box(&hpke_sk),
                &enc,
                CAPABILITY_LABEL,
                ct,
                &hpke_aad,
            )
        });
        (verified, opened)
    };
    let mut raw_verify =
        || black_box(&verifying_key).verify_strict(black_box(&message), &signature);
    check("Capability decode+verify+open", wrapper().map(|_| ()))?;
    match raw() {
        (Ok(()), Ok(key)) if key.as_slice() == record_key.expose_secret() => {}
        _ => return Err("raw Ed25519 verify + HPKE open failed".into()),
    }

    let mut group = c.benchmark_group("capability");
    group.bench_function("latchkey/decode+verify+open", |b| b.iter(&mut wrapper));
    group.bench_function("latchkey/decode_only", |b| b.iter(&mut wrapper_decode));
    group.bench_function("raw/ed25519_verify_strict+hpke_open", |b| b.iter(&mut raw));
    group.bench_function("raw/ed25519_verify_strict", |b| b.iter(&mut raw_verify));
    group.finish();

    let what = format!("Capability decode+verify+open ({} base64 chars)", text.len());
    report.pair(
        o,
        "c",
        "capability",
        &what,
        vec![
            Bench::new(Role::Wrapper, "Capability::decode(text) + verify + open", wrapper),
            Bench::new(
                Role::Primitive,
                &format!("verify_strict {signed_len} B + HPKE single_shot_open 80 B"),
                raw,
            ),
            Bench::new(Role::Info, "Capability::decode alone (base64 + claims)", wrapper_decode),
            Bench::new(Role::Info, "Ed25519 verify_strict alone", raw_verify),
        ],
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// d. Request-signature verification (RFC 9421) vs Ed25519 verify_strict of the signature base
// ---------------------------------------------------------------------------------------------

fn httpsig_verify(c: &mut Criterion, o: &Options, report: &mut Report) -> Result<(), BoxError> {
    // A typical device request: POST JSON to the broker.
    let seed = Key32::generate()?;
    let device_key = DeviceSigningKey::from_secret_bytes(&seed);
    let device_id = DeviceId::random();
    let verifying_key = device_key.verifying_key();
    let target_uri = format!(
        "https://broker.example.com/v1/workspaces/{}/credentials/{}/capabilities",
        WorkspaceId::random(),
        CredentialId::random()
    );
    let body = format!(
        r#"{{"agent":"{}","methods":["GET","POST"],"paths":["/repos/*/issues/**"],"ttl":300,"reuse":"single"}}"#,
        AgentId::random()
    );
    let mut headers: Vec<(&str, &str)> = vec![
        ("Host", "broker.example.com"),
        ("User-Agent", "latchkey-desktop/0.1.0"),
        ("Accept", "application/json"),
        ("Content-Type", "application/json"),
    ];
    let unsigned =
        SignedRequestParts { method: "POST", target_uri: &target_uri, headers: &headers };
    let signed = httpsig::sign(&unsigned, body.as_bytes(), &device_key, device_id, NOW, 60)?;
    let content_length = body.len().to_string();
    headers.push(("Content-Length", &content_length));
    headers.push(("Content-Digest", &signed.content_digest));
    headers.push(("Signature-Input", &signed.signature_input));
    headers.push(("Signature", &signed.signature));
    let parts = SignedRequestParts { method: "POST", target_uri: &target_uri, headers: &headers };

    // The same signature base the verifier rebuilds, verified with raw ed25519-dalek. The raw key
    // comes from the same seed, so its (deterministic) signature must equal the header's.
    let parsed = ParsedSignature::parse(&parts)?;
    let key_id = device_id.to_string();
    let created = i64::try_from(NOW)?;
    let params = [
        ("created", ParamValue::Integer(created)),
        ("expires", ParamValue::Integer(created + 60)),
        ("nonce", ParamValue::String(parsed.nonce())),
        ("keyid", ParamValue::String(&key_id)),
        ("alg", ParamValue::String(httpsig::ALGORITHM)),
        ("tag", ParamValue::String(httpsig::TAG)),
    ];
    let mut covered = httpsig::REQUIRED_COMPONENTS.to_vec();
    covered.push("content-type");
    let base = httpsig::signature_base(&parts, &covered, &params)?;
    let base = base.as_str().as_bytes().to_vec();
    let raw_key = ed25519_dalek::SigningKey::from_bytes(seed.expose_secret());
    let raw_verifying_key = raw_key.verifying_key();
    let raw_signature = raw_key.sign(&base);
    let header_signature = signed
        .signature
        .strip_prefix("lk=:")
        .and_then(|s| s.strip_suffix(':'))
        .map(|s| base64::engine::general_purpose::STANDARD.decode(s))
        .ok_or("unexpected Signature header shape")??;
    if header_signature != raw_signature.to_bytes() {
        return Err("the rebuilt signature base differs from the one the device signed".into());
    }

    let mut wrapper = || {
        let parsed = ParsedSignature::parse(black_box(&parts))?;
        parsed.verify(black_box(&verifying_key), NOW + 1, 300, 60, black_box(body.as_bytes()))
    };
    let mut wrapper_parse = || ParsedSignature::parse(black_box(&parts)).map(|p| p.key_id());
    let mut raw = || black_box(&raw_verifying_key).verify_strict(black_box(&base), &raw_signature);
    check("httpsig parse+verify", wrapper().map(|v| v.key_id() == device_id))?;
    raw().map_err(|e| format!("raw Ed25519 verify failed: {e}"))?;

    let mut group = c.benchmark_group("httpsig_verify");
    group.bench_function("latchkey/ParsedSignature::parse+verify", |b| b.iter(&mut wrapper));
    group.bench_function("latchkey/ParsedSignature::parse", |b| b.iter(&mut wrapper_parse));
    group.bench_function("raw/ed25519_verify_strict_of_base", |b| b.iter(&mut raw));
    group.finish();

    let what = format!(
        "request signature verify (POST, {} B body, {} B signature base)",
        body.len(),
        base.len()
    );
    report.pair(
        o,
        "d",
        "httpsig_verify",
        &what,
        vec![
            Bench::new(
                Role::Wrapper,
                "ParsedSignature::parse + verify (incl. Content-Digest)",
                wrapper,
            ),
            Bench::new(Role::Primitive, "Ed25519 verify_strict of the signature base", raw),
            Bench::new(Role::Info, "ParsedSignature::parse alone", wrapper_parse),
        ],
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn random_bytes(len: usize) -> Result<Vec<u8>, BoxError> {
    let mut out = vec![0u8; len];
    latchkey_core::random::fill(&mut out)?;
    Ok(out)
}

/// Setup sanity: every benchmarked call must succeed before it is timed.
fn check<T, E: std::fmt::Display>(what: &str, outcome: Result<T, E>) -> Result<(), BoxError> {
    outcome.map(|_| ()).map_err(|e| format!("{what} failed during setup: {e}").into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `cargo bench`: criterion measures, then the ratio report.
    Bench,
    /// `cargo test --benches` or `-- --test`: each benchmark once, no report.
    Test,
    /// `-- --list`, `--profile-time`: no report.
    Other,
}

#[derive(Debug)]
struct Options {
    mode: Mode,
    quick: bool,
    /// Criterion's positional filter; the report runs the pairs whose id contains it.
    filter: Option<String>,
}

impl Options {
    fn from_env_and_args() -> Self {
        // Criterion's flags that take a value, so their values are not taken for the filter.
        const WITH_VALUE: &[&str] = &[
            "--color",
            "-c",
            "--save-baseline",
            "-s",
            "--baseline",
            "-b",
            "--baseline-lenient",
            "--load-baseline",
            "--sample-size",
            "--warm-up-time",
            "--measurement-time",
            "--nresamples",
            "--noise-threshold",
            "--confidence-level",
            "--significance-level",
            "--profile-time",
            "--plotting-backend",
            "--output-format",
            "--format",
        ];
        let args: Vec<String> = std::env::args().skip(1).collect();
        let has = |flag: &str| args.iter().any(|a| a == flag);
        let mut filter = None;
        let mut skip_next = false;
        for arg in &args {
            if skip_next {
                skip_next = false;
            } else if WITH_VALUE.contains(&arg.as_str()) {
                skip_next = true;
            } else if !arg.starts_with('-') && filter.is_none() {
                filter = Some(arg.clone());
            }
        }
        let env_quick = std::env::var("LATCHKEY_BENCH_QUICK")
            .is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
        let mode = if has("--list") || args.iter().any(|a| a.starts_with("--profile-time")) {
            Mode::Other
        } else if has("--test") || !has("--bench") {
            Mode::Test
        } else {
            Mode::Bench
        };
        Self { mode, quick: env_quick || has("--quick"), filter }
    }

    fn selects(&self, id: &str) -> bool {
        self.filter.as_deref().is_none_or(|f| id.contains(f))
    }

    /// (warm-up per benchmark, duration of one batch, number of batches)
    fn ratio_settings(&self) -> (Duration, Duration, usize) {
        if self.quick {
            (Duration::from_millis(50), Duration::from_millis(1), 15)
        } else {
            (Duration::from_millis(300), Duration::from_millis(4), 101)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The Latchkey API being judged.
    Wrapper,
    /// The raw primitive it wraps: the ratio against it is the one held to the target.
    Primitive,
    /// Another raw baseline, shown with its ratio for context.
    Reference,
    /// A breakdown row, shown without a ratio.
    Info,
}

type Batch<'a> = Box<dyn FnMut(u64) -> Duration + 'a>;

struct Bench<'a> {
    role: Role,
    label: String,
    /// Runs the operation `n` times (monomorphised loop) and returns the elapsed time.
    batch: Batch<'a>,
}

impl<'a> Bench<'a> {
    fn new<T>(role: Role, label: &str, mut op: impl FnMut() -> T + 'a) -> Self {
        let batch = Box::new(move |n: u64| {
            let start = Instant::now();
            for _ in 0..n {
                black_box(op());
            }
            start.elapsed()
        });
        Self { role, label: label.to_owned(), batch }
    }
}

#[derive(Debug)]
struct Row {
    role: Role,
    label: String,
    median: f64,
    p25: f64,
    p75: f64,
    /// Median over rounds of wrapper time / this row's time.
    paired: Option<f64>,
}

#[derive(Debug)]
struct Pair {
    key: &'static str,
    what: String,
    rows: Vec<Row>,
}

#[derive(Debug, Default)]
struct Report {
    pairs: Vec<Pair>,
}

impl Report {
    fn pair(
        &mut self,
        o: &Options,
        key: &'static str,
        id: &str,
        what: &str,
        mut benches: Vec<Bench<'_>>,
    ) {
        match o.mode {
            Mode::Bench if o.selects(id) => {}
            Mode::Test => {
                for bench in &mut benches {
                    (bench.batch)(1);
                }
                return;
            }
            _ => return,
        }
        let (warm_up, batch, rounds) = o.ratio_settings();
        let mut iterations = Vec::with_capacity(benches.len());
        for bench in &mut benches {
            // Calibrate: double the count until one batch lasts at least `batch`, then keep
            // running batches until the warm-up time is used up.
            let start = Instant::now();
            let mut n = 1u64;
            while (bench.batch)(n) < batch {
                n *= 2;
            }
            while start.elapsed() < warm_up {
                (bench.batch)(n);
            }
            iterations.push(n);
        }
        let mut samples = vec![Vec::with_capacity(rounds); benches.len()];
        for round in 0..rounds {
            for k in 0..benches.len() {
                let i = (round + k) % benches.len();
                let elapsed = (benches[i].batch)(iterations[i]);
                samples[i].push(elapsed.as_nanos() as f64 / iterations[i] as f64);
            }
        }
        // Paired ratio: per round, wrapper time / this row's time (measured moments apart), then
        // the median over rounds. Less sensitive to load that comes and goes than the ratio of
        // medians, so a large gap between the two flags a noisy run.
        let wrapper = benches.iter().position(|b| b.role == Role::Wrapper);
        let paired: Vec<Option<f64>> = samples
            .iter()
            .map(|row| {
                let wrapper = &samples[wrapper?];
                let mut ratios: Vec<f64> = wrapper.iter().zip(row).map(|(w, r)| w / r).collect();
                ratios.sort_by(f64::total_cmp);
                Some(quantile(&ratios, 0.5))
            })
            .collect();
        let rows = benches
            .into_iter()
            .zip(samples)
            .zip(paired)
            .map(|((bench, mut s), paired)| {
                s.sort_by(f64::total_cmp);
                Row {
                    role: bench.role,
                    label: bench.label,
                    median: quantile(&s, 0.5),
                    p25: quantile(&s, 0.25),
                    p75: quantile(&s, 0.75),
                    paired,
                }
            })
            .collect();
        self.pairs.push(Pair { key, what: what.to_owned(), rows });
    }

    fn print(&self, o: &Options) {
        if self.pairs.is_empty() {
            return;
        }
        let (_, batch, rounds) = o.ratio_settings();
        println!();
        println!(
            "Latchkey wrapper vs raw primitive: median ns/op of {rounds} interleaved batches of \
             ~{} ms each [interquartile range]{}",
            batch.as_millis(),
            if o.quick { " (quick run: indicative only)" } else { "" }
        );
        println!(
            "ratio = wrapper median / row median (paired: median of per-batch ratios); target for \
             wrapper/primitive <= {TARGET_RATIO:.1}x"
        );
        let mut summary = Vec::new();
        for pair in &self.pairs {
            println!();
            println!("{}. {}", pair.key, pair.what);
            let wrapper = pair.rows.iter().find(|r| r.role == Role::Wrapper).map(|r| r.median);
            for row in &pair.rows {
                let role = match row.role {
                    Role::Wrapper => "wrapper",
                    Role::Primitive => "primitive",
                    Role::Reference => "reference",
                    Role::Info => "breakdown",
                };
                let ratio = match (row.role, wrapper) {
                    (Role::Primitive | Role::Reference, Some(w)) => {
                        let ratio = w / row.median;
                        let verdict = if ratio <= TARGET_RATIO { "ok" } else { "ABOVE 1.2x" };
                        if row.role == Role::Primitive {
                            summary.push((pair.key, ratio, verdict));
                        }
                        let paired =
                            row.paired.map_or(String::new(), |p| format!(" (paired {p:.2}x)"));
                        format!("{ratio:>5.2}x {verdict}{paired}")
                    }
                    _ => String::new(),
                };
                println!(
                    "   {role:<9} {:<58} {:>10} [{} - {}]  {ratio}",
                    row.label,
                    ns(row.median),
                    ns(row.p25),
                    ns(row.p75)
                );
            }
        }
        println!();
        let line: Vec<String> =
            summary.iter().map(|(k, r, v)| format!("{k} {r:.2}x {v}")).collect();
        println!("summary (wrapper/primitive): {}", line.join(" | "));
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (at - lo as f64)
}

fn ns(value: f64) -> String {
    if value >= 10_000.0 { format!("{:.2} us", value / 1000.0) } else { format!("{value:.1} ns") }
}
