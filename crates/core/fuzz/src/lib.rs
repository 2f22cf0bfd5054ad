//! Fixed keys and input formats shared by the fuzz targets and the seed-corpus generator
//! (`examples/seed_corpus.rs`).
//!
//! Fuzzing wants determinism, so every key here comes from constant bytes. The seed corpus
//! holds inputs made with these same keys (an envelope that opens, a capability and wrapped keys
//! whose signatures verify), so mutations start from inputs that reach the cryptography instead
//! of stopping at the first framing check.

use std::sync::LazyLock;

use latchkey_core::capability::{Claims, Method, PathPattern};
use latchkey_core::ids::{CredentialId, DeviceId, KeyVersion, WorkspaceId};
use latchkey_core::keys::{
    BrokerSecretKey, DeviceSigningKey, DeviceVerifyingKey, ExchangeSecretKey, RecordKey,
    WorkspaceKey,
};
use latchkey_core::secret::Key32;

/// The clock the targets verify at (signatures and capabilities in the seeds are valid then).
pub const NOW: u64 = 1_800_000_000;

/// The workspace of every fixed key.
pub const WORKSPACE: WorkspaceId = WorkspaceId::from_bytes([0x11; 16]);
/// The credential the fixed record key opens.
pub const CREDENTIAL: CredentialId = CredentialId::from_bytes([0x22; 16]);
/// The device that signs capabilities, wrapped keys and requests.
pub const DEVICE: DeviceId = DeviceId::from_bytes([0x33; 16]);
/// The device wrapped keys are addressed to.
pub const RECIPIENT: DeviceId = DeviceId::from_bytes([0x44; 16]);

/// The broker key capabilities are sealed to: `lkbroker1_` + base64url of 32 bytes of 0x77.
pub const BROKER_SECRET_TEXT: &str = "lkbroker1_d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3c";

/// The workspace key (32 bytes of 0x42) at `version`.
pub fn workspace_key(version: KeyVersion) -> WorkspaceKey {
    WorkspaceKey::from_parts(WORKSPACE, version, Key32::from_bytes([0x42; 32]))
}

/// The record key of [`CREDENTIAL`] under [`workspace_key`] at `version`.
pub fn record_key(version: KeyVersion) -> RecordKey {
    workspace_key(version).record_key(CREDENTIAL).expect("HKDF of 32 bytes cannot fail")
}

/// The signing key of [`DEVICE`].
pub fn device_signing_key() -> DeviceSigningKey {
    DeviceSigningKey::from_secret_bytes(&Key32::from_bytes([0x5a; 32]))
}

/// The public half of [`device_signing_key`], computed once.
pub static DEVICE_VERIFYING_KEY: LazyLock<DeviceVerifyingKey> =
    LazyLock::new(|| device_signing_key().verifying_key());

/// The exchange key of [`RECIPIENT`].
pub fn recipient_exchange_key() -> ExchangeSecretKey {
    ExchangeSecretKey::from_secret_bytes(&Key32::from_bytes([0x3c; 32]))
        .expect("any 32 bytes are an X25519 secret key")
}

/// The broker's secret key.
pub fn broker_key() -> BrokerSecretKey {
    BrokerSecretKey::from_secret_text(BROKER_SECRET_TEXT).expect("a valid broker key text")
}

/// A request path that `pattern` matches: `*` becomes `x`, a final `**` is dropped.
pub fn path_matching(pattern: &PathPattern) -> String {
    let mut path = String::new();
    for segment in pattern.as_str().split('/').skip(1) {
        match segment {
            "" | "**" => break,
            "*" => path.push_str("/x"),
            literal => {
                path.push('/');
                path.push_str(literal);
            }
        }
    }
    if path.is_empty() { "/".to_owned() } else { path }
}

/// The first method the claims allow.
pub fn first_method(claims: &Claims) -> Method {
    claims.methods.iter().next().unwrap_or(Method::Get)
}

/// Input format of the `httpsig` target: four lines, then the body.
///
/// ```text
/// <Signature-Input value>\n<Signature value>\n<Content-Digest value>\n<target URI>\n<body...>
/// ```
#[derive(Debug, Clone, Copy)]
pub struct HttpSigInput<'a> {
    /// `Signature-Input` field value.
    pub signature_input: &'a str,
    /// `Signature` field value.
    pub signature: &'a str,
    /// `Content-Digest` field value.
    pub content_digest: &'a str,
    /// The absolute target URI.
    pub target_uri: &'a str,
    /// The request body (may be any bytes).
    pub body: &'a [u8],
}

impl<'a> HttpSigInput<'a> {
    /// Splits fuzz input into its fields; `None` unless the four header lines are UTF-8.
    pub fn split(data: &'a [u8]) -> Option<Self> {
        let mut rest = data;
        let mut line = || -> Option<&'a str> {
            let end = rest.iter().position(|b| *b == b'\n')?;
            let (head, tail) = rest.split_at(end);
            rest = &tail[1..];
            std::str::from_utf8(head).ok()
        };
        let (signature_input, signature, content_digest, target_uri) =
            (line()?, line()?, line()?, line()?);
        Some(Self { signature_input, signature, content_digest, target_uri, body: rest })
    }

    /// The inverse of [`HttpSigInput::split`], for the seed corpus.
    pub fn join(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for field in [self.signature_input, self.signature, self.content_digest, self.target_uri] {
            out.extend_from_slice(field.as_bytes());
            out.push(b'\n');
        }
        out.extend_from_slice(self.body);
        out
    }
}

/// The passphrase the `recovery_import` target imports with (and the seed kit is exported under).
pub const PASSPHRASE: &[u8] = b"correct horse battery staple";

/// The Argon2id parameters `(m_cost KiB, t_cost, p_cost)` in a recovery kit's header, read the
/// way `recovery::import` reads the text (trimmed non-empty lines; the first names the format,
/// `#` lines are notes, the rest is one standard base64 block; m and t big-endian at offsets 6
/// and 10, p at 14). `None` if the text does not get that far.
pub fn kit_kdf_params(text: &str) -> Option<(u32, u32, u8)> {
    use base64::Engine as _;
    let block: String = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .skip(1)
        .filter(|line| !line.starts_with('#'))
        .collect();
    let binary = base64::engine::general_purpose::STANDARD.decode(block).ok()?;
    let m = u32::from_be_bytes(binary.get(6..10)?.try_into().ok()?);
    let t = u32::from_be_bytes(binary.get(10..14)?.try_into().ok()?);
    Some((m, t, *binary.get(14)?))
}

/// Input format of the `path_pattern` target: `<pattern>\n<request path>`.
pub fn split_pattern_and_path(data: &[u8]) -> Option<(&str, &str)> {
    let text = std::str::from_utf8(data).ok()?;
    Some(text.split_once('\n').unwrap_or((text, "/")))
}
