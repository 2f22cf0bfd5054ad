//! Device request signatures: HTTP Message Signatures (RFC 9421) with Ed25519, over a body
//! committed to by `Content-Digest` (RFC 9530).
//!
//! Every request a device makes to the broker carries three headers produced by [`sign`]:
//!
//! ```text
//! Content-Digest:  sha-256=:<base64 SHA-256 of the body, also for an empty body>:
//! Signature-Input: lk=("@method" "@target-uri" "content-digest" ["content-type"])
//!                  ;created=<unix secs>;expires=<unix secs>;nonce="<base64url, 128 bits>"
//!                  ;keyid="<device id>";alg="ed25519";tag="latchkey"
//! Signature:       lk=:<base64 of the 64-byte Ed25519 signature over the signature base>:
//! ```
//!
//! (`Signature-Input` is one line on the wire.) The broker verifies in two steps, so it can look
//! the device's key up in between: [`ParsedSignature::parse`] checks everything that needs no key
//! and exposes the key id, then [`ParsedSignature::verify`] checks time, body and signature.
//!
//! The profile the verifier *requires*: label `lk`; exactly the parameters `created`, `expires`,
//! `nonce`, `keyid`, `alg`, `tag`; `alg="ed25519"`; `tag="latchkey"`; `keyid` a device id; a
//! nonce of 16 to 64 base64url characters; `0 < expires - created <= 300`; coverage of
//! `@method`, `@target-uri` and `content-digest`, and of `content-type` whenever the request has
//! that header. Other labels in the same fields are parsed and ignored.
//!
//! **Replay is the caller's job.** A verified request proves who sent it and that it is fresh
//! and unaltered, not that it is the first copy. The broker must remember every accepted
//! `(key id, nonce)` pair until that signature's `expires` (plus the allowed clock skew) and
//! reject a repeat; signatures live at most [`MAX_WINDOW_SECS`], so the store stays small.
//!
//! `@target-uri` is the target URI with its scheme and host lowercased, a default port (80 for
//! http, 443 for https) removed and an empty path written as `/`; path and query are kept
//! byte for byte. The broker should build the URI it verifies from its own configured public
//! origin and the request's path and query, not from a client-supplied `Host`.
//!
//! The wire format is specified in `docs/protocol.md`, "Device request signatures (RFC 9421)".

mod digest;
mod sf;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::ids::DeviceId;
use crate::keys::{DeviceSigningKey, DeviceVerifyingKey};
use crate::random::{self, RandomError};

pub use digest::{MAX_CONTENT_DIGEST_LEN, content_digest, verify_content_digest};

/// The signature label Latchkey uses in `Signature-Input` and `Signature`.
pub const LABEL: &str = "lk";
/// The `tag` parameter: names the application profile, so a signature made for Latchkey is
/// never mistaken for another application's.
pub const TAG: &str = "latchkey";
/// The `alg` parameter: the only algorithm the profile accepts.
pub const ALGORITHM: &str = "ed25519";
/// Components every Latchkey request signature must cover.
pub const REQUIRED_COMPONENTS: [&str; 3] = ["@method", "@target-uri", "content-digest"];
/// Longest allowed validity: `expires - created` may not exceed this.
pub const MAX_WINDOW_SECS: u64 = 300;
/// Largest `Signature-Input` field value accepted (all field lines combined), in bytes.
pub const MAX_SIGNATURE_INPUT_LEN: usize = 1024;
/// Largest `Signature` field value accepted (all field lines combined), in bytes.
pub const MAX_SIGNATURE_LEN: usize = 2048;
/// Largest target URI accepted, in bytes.
pub const MAX_TARGET_URI_LEN: usize = 8192;
/// Shortest accepted nonce, in characters.
pub const MIN_NONCE_LEN: usize = 16;
/// Longest accepted nonce, in characters.
pub const MAX_NONCE_LEN: usize = 64;

/// Header name of the signature metadata.
pub const SIGNATURE_INPUT_HEADER: &str = "signature-input";
/// Header name of the signature value.
pub const SIGNATURE_HEADER: &str = "signature";
/// Header name of the body digest.
pub const CONTENT_DIGEST_HEADER: &str = "content-digest";

/// A request signature could not be made or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpSigError {
    /// A header the profile needs is absent.
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// A signature header is longer than the profile allows.
    #[error("{0} header is too large")]
    HeaderTooLarge(&'static str),
    /// `Signature-Input` is not a valid structured field, or its `lk` member is malformed.
    #[error("malformed signature-input: {0}")]
    MalformedSignatureInput(&'static str),
    /// `Signature` is not a valid structured field, or its `lk` member is malformed.
    #[error("malformed signature: {0}")]
    MalformedSignature(&'static str),
    /// `Content-Digest` is not a valid structured field.
    #[error("malformed content-digest: {0}")]
    MalformedContentDigest(&'static str),
    /// `Signature-Input` or `Signature` has no member labelled `lk`.
    #[error("no signature labelled lk")]
    MissingLabel,
    /// A required signature parameter is absent.
    #[error("missing signature parameter: {0}")]
    MissingParameter(&'static str),
    /// `alg` is not `ed25519`.
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm,
    /// `tag` is not `latchkey`.
    #[error("signature tag is not latchkey")]
    WrongTag,
    /// `keyid` is not a device id.
    #[error("unknown key id format: expected a device id (UUID)")]
    InvalidKeyId,
    /// `nonce` has the wrong length or alphabet.
    #[error("invalid nonce: expected {MIN_NONCE_LEN} to {MAX_NONCE_LEN} base64url characters")]
    InvalidNonce,
    /// A component the profile requires is not in the covered list.
    #[error("component not covered: {0}")]
    ComponentNotCovered(&'static str),
    /// A covered component is unknown, has parameters, or is not a valid name.
    #[error("unsupported component: {0}")]
    UnsupportedComponent(String),
    /// The covered list names a component twice.
    #[error("component covered twice: {0}")]
    DuplicateComponent(String),
    /// A covered header field is absent from the request.
    #[error("covered header missing from request: {0}")]
    MissingComponentValue(String),
    /// The request view itself is invalid (target URI, method, header value).
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    /// `expires` is not after `created`.
    #[error("signature expires before it is created")]
    InvalidWindow,
    /// `expires - created` exceeds [`MAX_WINDOW_SECS`].
    #[error("signature window too long: at most {MAX_WINDOW_SECS} seconds")]
    WindowTooLong,
    /// `created` is later than now plus the allowed clock skew.
    #[error("created in the future")]
    CreatedInFuture,
    /// `created` is older than the allowed maximum age (plus clock skew).
    #[error("signature too old")]
    SignatureTooOld,
    /// `expires` has passed (beyond the allowed clock skew).
    #[error("signature expired")]
    SignatureExpired,
    /// `Content-Digest` has no `sha-256` member.
    #[error("content digest has no sha-256 member")]
    UnsupportedDigestAlgorithm,
    /// `Content-Digest` does not match the body.
    #[error("content digest mismatch")]
    ContentDigestMismatch,
    /// The Ed25519 signature does not verify. No detail on purpose.
    #[error("bad signature")]
    BadSignature,
    /// The OS random generator failed while drawing a nonce.
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// A framework-free view of the request being signed or verified.
///
/// Adapters fill it in a few lines: the method as sent, the absolute target URI
/// (`https://broker.example/v1/credentials?x=1`), and every header field line in order, one
/// `(name, value)` pair per line (names in any case; repeated names allowed).
#[derive(Debug, Clone, Copy)]
pub struct SignedRequestParts<'a> {
    /// The request method, e.g. `POST`. Case-sensitive, as HTTP defines it.
    pub method: &'a str,
    /// The absolute target URI: `http` or `https`, no userinfo, no fragment.
    pub target_uri: &'a str,
    /// Header field lines in the order they appear.
    pub headers: &'a [(&'a str, &'a str)],
}

/// The three header values [`sign`] produces. The caller adds them to the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeaders {
    /// Value of the `Signature-Input` header.
    pub signature_input: String,
    /// Value of the `Signature` header.
    pub signature: String,
    /// Value of the `Content-Digest` header.
    pub content_digest: String,
}

/// Signs a request in Latchkey's profile.
///
/// Covers `@method`, `@target-uri`, `content-digest` (computed here from `body`; the empty body
/// for a GET) and `content-type` when `parts` has one. The signature is valid from `now` for
/// `validity_secs` (1 to [`MAX_WINDOW_SECS`]) and carries a fresh 128-bit random nonce. `parts`
/// must not already contain `Content-Digest`: the signer owns that header.
pub fn sign(
    parts: &SignedRequestParts<'_>,
    body: &[u8],
    key: &DeviceSigningKey,
    key_id: DeviceId,
    now: u64,
    validity_secs: u64,
) -> Result<SignatureHeaders, HttpSigError> {
    if validity_secs == 0 {
        return Err(HttpSigError::InvalidWindow);
    }
    if validity_secs > MAX_WINDOW_SECS {
        return Err(HttpSigError::WindowTooLong);
    }
    if field_lines(parts.headers, CONTENT_DIGEST_HEADER).next().is_some() {
        return Err(HttpSigError::InvalidRequest("content-digest is added by the signer"));
    }
    let created = sf_time(now)?;
    let expires = sf_time(now.saturating_add(validity_secs))?;

    let content_digest = content_digest(body);
    let mut headers = parts.headers.to_vec();
    headers.push((CONTENT_DIGEST_HEADER, content_digest.as_str()));
    let parts = SignedRequestParts { headers: &headers, ..*parts };

    let mut covered = REQUIRED_COMPONENTS.to_vec();
    if field_lines(parts.headers, "content-type").next().is_some() {
        covered.push("content-type");
    }
    let nonce = URL_SAFE_NO_PAD.encode(random::array::<16>()?);
    let key_id = key_id.to_string();
    let params = [
        ("created", ParamValue::Integer(created)),
        ("expires", ParamValue::Integer(expires)),
        ("nonce", ParamValue::String(&nonce)),
        ("keyid", ParamValue::String(&key_id)),
        ("alg", ParamValue::String(ALGORITHM)),
        ("tag", ParamValue::String(TAG)),
    ];
    let base = signature_base(&parts, &covered, &params)?;
    let signature = sign_base(&base, key);

    let mut signature_field = format!("{LABEL}=");
    sf::write_bytes(&mut signature_field, &signature);
    Ok(SignatureHeaders {
        signature_input: format!("{LABEL}={}", base.signature_params()),
        signature: signature_field,
        content_digest,
    })
}

/// A request's `lk` signature, parsed and checked against the profile, not yet verified.
///
/// [`parse`](Self::parse) needs no key; the broker reads [`key_id`](Self::key_id), looks the
/// device's key up, and calls [`verify`](Self::verify).
#[derive(Debug, Clone)]
pub struct ParsedSignature<'a> {
    parts: SignedRequestParts<'a>,
    key_id: DeviceId,
    nonce: String,
    created: u64,
    expires: u64,
    covered: Vec<String>,
    params: sf::Parameters,
    signature: [u8; 64],
}

impl<'a> ParsedSignature<'a> {
    /// Parses `Signature-Input` and `Signature` from `parts` and checks, in this order: both
    /// headers present and within size bounds; both valid structured fields; label `lk` present in
    /// both; parameters well-formed and complete; `alg`; `tag`; required coverage; `keyid`;
    /// `nonce`; validity window. No cryptography runs here.
    pub fn parse(parts: &SignedRequestParts<'a>) -> Result<Self, HttpSigError> {
        let input = combined_field(parts.headers, SIGNATURE_INPUT_HEADER, MAX_SIGNATURE_INPUT_LEN)?
            .ok_or(HttpSigError::MissingHeader(SIGNATURE_INPUT_HEADER))?;
        let signature = combined_field(parts.headers, SIGNATURE_HEADER, MAX_SIGNATURE_LEN)?
            .ok_or(HttpSigError::MissingHeader(SIGNATURE_HEADER))?;
        let input = sf::parse_dictionary(&input).map_err(HttpSigError::MalformedSignatureInput)?;
        let signature =
            sf::parse_dictionary(&signature).map_err(HttpSigError::MalformedSignature)?;

        let input = take_member(input, LABEL).ok_or(HttpSigError::MissingLabel)?;
        let signature = take_member(signature, LABEL).ok_or(HttpSigError::MissingLabel)?;
        let sf::Member::InnerList { items, params } = input else {
            return Err(HttpSigError::MalformedSignatureInput("lk is not an inner list"));
        };
        let signature = match signature {
            sf::Member::Item(sf::Item { value: sf::BareItem::Bytes(bytes), params })
                if params.is_empty() =>
            {
                <[u8; 64]>::try_from(bytes.as_slice())
                    .map_err(|_| HttpSigError::MalformedSignature("lk is not 64 bytes"))?
            }
            _ => return Err(HttpSigError::MalformedSignature("lk is not a byte sequence")),
        };

        let mut covered = Vec::with_capacity(items.len());
        for item in items {
            match item.value {
                sf::BareItem::String(name) if item.params.is_empty() => covered.push(name),
                sf::BareItem::String(name) => return Err(HttpSigError::UnsupportedComponent(name)),
                _ => {
                    return Err(HttpSigError::MalformedSignatureInput(
                        "covered component is not a string",
                    ));
                }
            }
        }

        let p = ProfileParams::from_params(&params)?;
        if p.alg != ALGORITHM {
            return Err(HttpSigError::UnsupportedAlgorithm);
        }
        if p.tag != TAG {
            return Err(HttpSigError::WrongTag);
        }
        for required in REQUIRED_COMPONENTS {
            if !covered.iter().any(|c| c == required) {
                return Err(HttpSigError::ComponentNotCovered(required));
            }
        }
        if field_lines(parts.headers, "content-type").next().is_some()
            && !covered.iter().any(|c| c == "content-type")
        {
            return Err(HttpSigError::ComponentNotCovered("content-type"));
        }
        // Only the canonical hyphenated form parses, so one device has one key id spelling.
        let key_id: DeviceId = p.keyid.parse().map_err(|_| HttpSigError::InvalidKeyId)?;
        if !(MIN_NONCE_LEN..=MAX_NONCE_LEN).contains(&p.nonce.len())
            || !p.nonce.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(HttpSigError::InvalidNonce);
        }
        if p.expires <= p.created {
            return Err(HttpSigError::InvalidWindow);
        }
        if p.expires - p.created > MAX_WINDOW_SECS {
            return Err(HttpSigError::WindowTooLong);
        }

        Ok(Self {
            parts: *parts,
            key_id,
            nonce: p.nonce.to_owned(),
            created: p.created,
            expires: p.expires,
            covered,
            params,
            signature,
        })
    }

    /// The signing device, from `keyid`. Not authenticated until [`verify`](Self::verify).
    pub fn key_id(&self) -> DeviceId {
        self.key_id
    }

    /// The signature's nonce. Not authenticated until [`verify`](Self::verify).
    pub fn nonce(&self) -> &str {
        &self.nonce
    }

    /// `created`, in Unix seconds.
    pub fn created(&self) -> u64 {
        self.created
    }

    /// `expires`, in Unix seconds.
    pub fn expires(&self) -> u64 {
        self.expires
    }

    /// Verifies the signature with the device's key, at time `now` (Unix seconds).
    ///
    /// Checks, in this order: `created` is at most `now + max_skew_secs`; `created` is at least
    /// `now - max_age_secs - max_skew_secs`; `expires` is at least `now - max_skew_secs`;
    /// `Content-Digest` matches `body`; the Ed25519 signature over the signature base verifies
    /// (`verify_strict`). Replay is not checked here: the caller must reject a `(key id, nonce)`
    /// pair it has already accepted, remembering each until `expires + max_skew_secs`.
    pub fn verify(
        &self,
        key: &DeviceVerifyingKey,
        now: u64,
        max_age_secs: u64,
        max_skew_secs: u64,
        body: &[u8],
    ) -> Result<VerifiedRequest, HttpSigError> {
        if self.created > now.saturating_add(max_skew_secs) {
            return Err(HttpSigError::CreatedInFuture);
        }
        if self.created.saturating_add(max_age_secs).saturating_add(max_skew_secs) < now {
            return Err(HttpSigError::SignatureTooOld);
        }
        if self.expires.saturating_add(max_skew_secs) < now {
            return Err(HttpSigError::SignatureExpired);
        }
        let digest =
            combined_field(self.parts.headers, CONTENT_DIGEST_HEADER, MAX_CONTENT_DIGEST_LEN)?
                .ok_or(HttpSigError::MissingHeader(CONTENT_DIGEST_HEADER))?;
        verify_content_digest(&digest, body)?;

        let base = build_base(&self.parts, &self.covered, &self.params)?;
        key.verify(base.as_str().as_bytes(), &self.signature)
            .map_err(|_| HttpSigError::BadSignature)?;

        Ok(VerifiedRequest {
            key_id: self.key_id,
            nonce: self.nonce.clone(),
            created: self.created,
            expires: self.expires,
            covered: self.covered.clone(),
        })
    }
}

/// What a verified signature proved. Only [`ParsedSignature::verify`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRequest {
    key_id: DeviceId,
    nonce: String,
    created: u64,
    expires: u64,
    covered: Vec<String>,
}

impl VerifiedRequest {
    /// The device whose key made the signature.
    pub fn key_id(&self) -> DeviceId {
        self.key_id
    }

    /// The nonce. The caller must reject it if already seen for this key id before `expires`.
    pub fn nonce(&self) -> &str {
        &self.nonce
    }

    /// `created`, in Unix seconds.
    pub fn created(&self) -> u64 {
        self.created
    }

    /// `expires`, in Unix seconds. Keep the nonce in the replay store at least until then.
    pub fn expires(&self) -> u64 {
        self.expires
    }

    /// The covered components, in signed order.
    pub fn covered_components(&self) -> &[String] {
        &self.covered
    }
}

// ---------------------------------------------------------------------------------------------
// The generic RFC 9421 layer: signature base (§2.5) over derived components and header fields
// ---------------------------------------------------------------------------------------------

/// A signature parameter value (RFC 9421 §2.3): an integer or a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamValue<'a> {
    /// `created`, `expires`.
    Integer(i64),
    /// `nonce`, `keyid`, `alg`, `tag`.
    String(&'a str),
}

/// A signature base (RFC 9421 §2.5): one `"name": value` line per covered component, then the
/// `"@signature-params"` line, joined by `\n`, no trailing newline.
///
/// Only [`signature_base`] makes one, so every value that is ever signed starts with a quoted
/// component identifier and ends with the `@signature-params` line: it cannot collide with the
/// context-labelled messages of Latchkey's other signed formats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureBase {
    text: String,
    params_start: usize,
}

impl SignatureBase {
    /// The base as text (ASCII).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The serialized signature parameters: the value of `@signature-params`, which is also the
    /// `Signature-Input` member value.
    pub fn signature_params(&self) -> &str {
        self.text.get(self.params_start..).unwrap_or_default()
    }
}

/// Builds the signature base for `covered` components and `params`, in the given orders.
///
/// Supported components: `@method`, `@target-uri`, `@authority`, `@scheme`, `@request-target`,
/// `@path`, `@query`, and header fields by lowercase name (values trimmed; repeated lines joined
/// with `", "`). Component parameters (`;sf`, `;key`, `;bs`, `;req`, `;tr`) and `@query-param` /
/// `@status` are not supported.
pub fn signature_base(
    parts: &SignedRequestParts<'_>,
    covered: &[&str],
    params: &[(&str, ParamValue<'_>)],
) -> Result<SignatureBase, HttpSigError> {
    let mut sf_params = sf::Parameters::with_capacity(params.len());
    for (key, value) in params {
        if !sf::is_key(key) {
            return Err(HttpSigError::MalformedSignatureInput("parameter name is not a valid key"));
        }
        let value = match *value {
            ParamValue::Integer(i) if i.unsigned_abs() <= sf::MAX_INTEGER.unsigned_abs() => {
                sf::BareItem::Integer(i)
            }
            ParamValue::Integer(_) => {
                return Err(HttpSigError::MalformedSignatureInput("integer out of range"));
            }
            ParamValue::String(s) if sf::is_string(s) => sf::BareItem::String(s.to_owned()),
            ParamValue::String(_) => {
                return Err(HttpSigError::MalformedSignatureInput(
                    "parameter string is not printable ascii",
                ));
            }
        };
        sf_params.push(((*key).to_owned(), value));
    }
    build_base(parts, covered, &sf_params)
}

/// Signs a signature base with a device key.
pub(crate) fn sign_base(base: &SignatureBase, key: &DeviceSigningKey) -> [u8; 64] {
    key.sign(base.as_str().as_bytes())
}

/// The one place a signature base is assembled, for signing and for verifying.
fn build_base<S: AsRef<str>>(
    parts: &SignedRequestParts<'_>,
    covered: &[S],
    params: &[(String, sf::BareItem)],
) -> Result<SignatureBase, HttpSigError> {
    if parts.method.is_empty() || !parts.method.bytes().all(is_tchar) {
        return Err(HttpSigError::InvalidRequest("method is not an http token"));
    }
    let uri = TargetUri::parse(parts.target_uri)?;

    let mut text = String::new();
    for (i, name) in covered.iter().enumerate() {
        let name = name.as_ref();
        if covered[..i].iter().any(|earlier| earlier.as_ref() == name) {
            return Err(HttpSigError::DuplicateComponent(name.to_owned()));
        }
        let value = component_value(parts, &uri, name)?;
        sf::write_string(&mut text, name);
        text.push_str(": ");
        text.push_str(&value);
        text.push('\n');
    }
    text.push_str("\"@signature-params\": ");
    let params_start = text.len();
    text.push('(');
    for (i, name) in covered.iter().enumerate() {
        if i > 0 {
            text.push(' ');
        }
        sf::write_string(&mut text, name.as_ref());
    }
    text.push(')');
    sf::write_parameters(&mut text, params);
    Ok(SignatureBase { text, params_start })
}

/// The value of one covered component (RFC 9421 §2.1, §2.2).
fn component_value(
    parts: &SignedRequestParts<'_>,
    uri: &TargetUri<'_>,
    name: &str,
) -> Result<String, HttpSigError> {
    let value = match name {
        "@method" => parts.method.to_owned(),
        "@target-uri" => uri.normalized(),
        "@authority" => uri.authority(),
        "@scheme" => uri.scheme.to_owned(),
        "@request-target" => format!("{}{}", uri.path_or_slash(), uri.query_suffix()),
        "@path" => uri.path_or_slash().to_owned(),
        "@query" => format!("?{}", uri.query.unwrap_or_default()),
        _ if name.starts_with('@') => return Err(HttpSigError::UnsupportedComponent(name.into())),
        _ => {
            if name.is_empty() || !name.bytes().all(|b| is_tchar(b) && !b.is_ascii_uppercase()) {
                return Err(HttpSigError::UnsupportedComponent(name.to_owned()));
            }
            let mut value = String::new();
            let mut any = false;
            for line in field_lines(parts.headers, name) {
                let line = line.trim_matches([' ', '\t']);
                if !line.bytes().all(|b| b == b'\t' || (0x20..=0x7e).contains(&b)) {
                    return Err(HttpSigError::InvalidRequest(
                        "covered header value has control or non-ascii characters",
                    ));
                }
                if any {
                    value.push_str(", ");
                }
                value.push_str(line);
                any = true;
            }
            if !any {
                return Err(HttpSigError::MissingComponentValue(name.to_owned()));
            }
            value
        }
    };
    Ok(value)
}

/// The values of every field line named `name` (ASCII case-insensitive), in order.
fn field_lines<'h>(
    headers: &'h [(&'h str, &'h str)],
    name: &'h str,
) -> impl Iterator<Item = &'h str> + 'h {
    headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
}

/// All lines of field `name`, trimmed and joined with `", "` (RFC 9110 §5.3), or `None` if absent.
/// Fails before allocating if the combined value would exceed `max_len`.
fn combined_field(
    headers: &[(&str, &str)],
    name: &'static str,
    max_len: usize,
) -> Result<Option<String>, HttpSigError> {
    let mut total = 0usize;
    let mut count = 0usize;
    for line in field_lines(headers, name) {
        total = total.saturating_add(line.trim_matches([' ', '\t']).len());
        count += 1;
    }
    if count == 0 {
        return Ok(None);
    }
    if total.saturating_add(2 * (count - 1)) > max_len {
        return Err(HttpSigError::HeaderTooLarge(name));
    }
    let lines: Vec<&str> =
        field_lines(headers, name).map(|l| l.trim_matches([' ', '\t'])).collect();
    Ok(Some(lines.join(", ")))
}

/// Removes and returns the member labelled `label`.
fn take_member(dict: sf::Dictionary, label: &str) -> Option<sf::Member> {
    dict.into_iter().find(|(k, _)| k == label).map(|(_, m)| m)
}

/// A Unix time as an sf-integer.
fn sf_time(secs: u64) -> Result<i64, HttpSigError> {
    i64::try_from(secs)
        .ok()
        .filter(|t| *t <= sf::MAX_INTEGER)
        .ok_or(HttpSigError::InvalidRequest("time out of range"))
}

/// The six parameters of the profile, typed.
struct ProfileParams<'p> {
    created: u64,
    expires: u64,
    nonce: &'p str,
    keyid: &'p str,
    alg: &'p str,
    tag: &'p str,
}

impl<'p> ProfileParams<'p> {
    fn from_params(params: &'p [(String, sf::BareItem)]) -> Result<Self, HttpSigError> {
        let (mut created, mut expires) = (None, None);
        let (mut nonce, mut keyid, mut alg, mut tag) = (None, None, None, None);
        for (key, value) in params {
            match (key.as_str(), value) {
                ("created", sf::BareItem::Integer(t)) => created = Some(non_negative(*t)?),
                ("expires", sf::BareItem::Integer(t)) => expires = Some(non_negative(*t)?),
                ("nonce", sf::BareItem::String(s)) => nonce = Some(s.as_str()),
                ("keyid", sf::BareItem::String(s)) => keyid = Some(s.as_str()),
                ("alg", sf::BareItem::String(s)) => alg = Some(s.as_str()),
                ("tag", sf::BareItem::String(s)) => tag = Some(s.as_str()),
                ("created" | "expires", _) => {
                    return Err(HttpSigError::MalformedSignatureInput(
                        "created and expires must be integers",
                    ));
                }
                ("nonce" | "keyid" | "alg" | "tag", _) => {
                    return Err(HttpSigError::MalformedSignatureInput(
                        "nonce, keyid, alg and tag must be strings",
                    ));
                }
                _ => return Err(HttpSigError::MalformedSignatureInput("unknown parameter")),
            }
        }
        Ok(Self {
            created: created.ok_or(HttpSigError::MissingParameter("created"))?,
            expires: expires.ok_or(HttpSigError::MissingParameter("expires"))?,
            nonce: nonce.ok_or(HttpSigError::MissingParameter("nonce"))?,
            keyid: keyid.ok_or(HttpSigError::MissingParameter("keyid"))?,
            alg: alg.ok_or(HttpSigError::MissingParameter("alg"))?,
            tag: tag.ok_or(HttpSigError::MissingParameter("tag"))?,
        })
    }
}

fn non_negative(t: i64) -> Result<u64, HttpSigError> {
    u64::try_from(t).map_err(|_| {
        HttpSigError::MalformedSignatureInput("created and expires must not be negative")
    })
}

/// The parts of an absolute `http`/`https` URI the derived components need (RFC 3986 syntax).
#[derive(Debug)]
struct TargetUri<'a> {
    /// `http` or `https`, lowercase.
    scheme: &'static str,
    /// Host, lowercase; an IP literal keeps its brackets.
    host: String,
    /// Port, if given and not the scheme's default.
    port: Option<u16>,
    /// Path as given (may be empty).
    path: &'a str,
    /// Query without its `?`, as given; `Some("")` for a bare `?`.
    query: Option<&'a str>,
}

impl<'a> TargetUri<'a> {
    fn parse(uri: &'a str) -> Result<Self, HttpSigError> {
        use HttpSigError::InvalidRequest as Invalid;
        if uri.len() > MAX_TARGET_URI_LEN {
            return Err(Invalid("target uri too long"));
        }
        if uri.contains('#') {
            return Err(Invalid("target uri has a fragment"));
        }
        let (scheme, rest) = uri.split_once("://").ok_or(Invalid("target uri is not absolute"))?;
        let (scheme, default_port) = if scheme.eq_ignore_ascii_case("https") {
            ("https", 443)
        } else if scheme.eq_ignore_ascii_case("http") {
            ("http", 80)
        } else {
            return Err(Invalid("target uri scheme is not http or https"));
        };
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, rest) = rest.split_at(authority_end);
        if authority.contains('@') {
            return Err(Invalid("target uri has userinfo"));
        }
        let (host, port) = if let Some(literal) = authority.strip_prefix('[') {
            let (inner, after) =
                literal.split_once(']').ok_or(Invalid("unterminated ip literal in target uri"))?;
            if inner.is_empty()
                || !inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            {
                return Err(Invalid("invalid ip literal in target uri"));
            }
            let port = match after {
                "" => None,
                _ => Some(
                    after.strip_prefix(':').ok_or(Invalid("invalid authority in target uri"))?,
                ),
            };
            (&authority[..inner.len() + 2], port)
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(Invalid("target uri has no host"));
        }
        if !host.starts_with('[') && !valid_uri_chars(host, |b| is_unreserved(b) || is_sub_delim(b))
        {
            return Err(Invalid("invalid host in target uri"));
        }
        let port = match port {
            None => None,
            Some(p) => {
                if p.is_empty()
                    || p.len() > 5
                    || p.starts_with('0')
                    || !p.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(Invalid("invalid port in target uri"));
                }
                let p: u16 = p.parse().map_err(|_| Invalid("invalid port in target uri"))?;
                (p != default_port).then_some(p)
            }
        };
        let (path, query) = match rest.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (rest, None),
        };
        if !valid_uri_chars(path, |b| is_pchar(b) || b == b'/') {
            return Err(Invalid("invalid path in target uri"));
        }
        if let Some(q) = query
            && !valid_uri_chars(q, |b| is_pchar(b) || b == b'/' || b == b'?')
        {
            return Err(Invalid("invalid query in target uri"));
        }
        Ok(Self { scheme, host: host.to_ascii_lowercase(), port, path, query })
    }

    fn authority(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.host),
            None => self.host.clone(),
        }
    }

    fn path_or_slash(&self) -> &str {
        if self.path.is_empty() { "/" } else { self.path }
    }

    fn query_suffix(&self) -> String {
        self.query.map(|q| format!("?{q}")).unwrap_or_default()
    }

    fn normalized(&self) -> String {
        format!(
            "{}://{}{}{}",
            self.scheme,
            self.authority(),
            self.path_or_slash(),
            self.query_suffix()
        )
    }
}

/// Whether every byte of `s` is allowed by `allowed` or starts a valid `%HH` escape.
fn valid_uri_chars(s: &str, allowed: impl Fn(u8) -> bool) -> bool {
    let bytes = s.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
            i += 3;
        } else if allowed(b) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_sub_delim(b: u8) -> bool {
    matches!(b, b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=')
}

fn is_pchar(b: u8) -> bool {
    is_unreserved(b) || is_sub_delim(b) || b == b':' || b == b'@'
}

/// RFC 9110 `tchar`: the characters of a method or a field name.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::STANDARD as STANDARD_B64;
    use proptest::prelude::*;

    use super::*;
    use crate::secret::Key32;

    /// RFC 9421 Appendix B.1.4 `test-key-ed25519`: the 32-byte seed is the last 32 bytes of the
    /// PKCS#8 DER `MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF`
    /// (`302e020100300506032b657004220420 || seed`), equal to the JWK's `d`.
    const RFC_SEED_HEX: &str = "9f8362f87a484a954e6e740c5b4c0e84229139a20aa8ab56ff66586f6a7d29c5";
    /// The same key's public half: the last 32 bytes of the SPKI
    /// `MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=`.
    const RFC_PUBLIC_HEX: &str = "26b40b8f93fff3d897112f7ebc582b232dbd72517d082fe83cfb30ddce43d1bb";

    /// RFC 9421 B.2.6, the signature base exactly as published (RFC 8792 line wrapping undone).
    const RFC_B26_BASE: &str = concat!(
        "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n",
        "\"@method\": POST\n",
        "\"@path\": /foo\n",
        "\"@authority\": example.com\n",
        "\"content-type\": application/json\n",
        "\"content-length\": 18\n",
        "\"@signature-params\": (\"date\" \"@method\" \"@path\" \"@authority\" \"content-type\" ",
        "\"content-length\");created=1618884473;keyid=\"test-key-ed25519\"",
    );
    const RFC_B26_SIGNATURE: &str =
        "wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==";

    const NOW: u64 = 1_700_000_000;
    const MAX_AGE: u64 = 300;
    const SKEW: u64 = 30;
    const BODY: &[u8] = br#"{"name":"github"}"#;
    const URI: &str = "https://broker.example/v1/credentials?x=1";

    fn rfc_key() -> DeviceSigningKey {
        let seed: [u8; 32] = hex::decode(RFC_SEED_HEX).unwrap().try_into().unwrap();
        DeviceSigningKey::from_secret_bytes(&Key32::from_bytes(seed))
    }

    /// A request as an owning test fixture; `parts()` borrows it.
    #[derive(Clone)]
    struct Request {
        method: String,
        uri: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Request {
        fn post() -> Self {
            Self {
                method: "POST".into(),
                uri: URI.into(),
                headers: vec![("Content-Type".into(), "application/json".into())],
                body: BODY.to_vec(),
            }
        }

        fn get() -> Self {
            Self { method: "GET".into(), uri: URI.into(), headers: vec![], body: vec![] }
        }

        fn header_refs(&self) -> Vec<(&str, &str)> {
            self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect()
        }

        fn add(&mut self, headers: SignatureHeaders) {
            self.headers.push(("Content-Digest".into(), headers.content_digest));
            self.headers.push(("Signature-Input".into(), headers.signature_input));
            self.headers.push(("Signature".into(), headers.signature));
        }

        fn signed(mut self, key: &DeviceSigningKey, device: DeviceId, now: u64) -> Self {
            let refs = self.header_refs();
            let parts =
                SignedRequestParts { method: &self.method, target_uri: &self.uri, headers: &refs };
            let headers = sign(&parts, &self.body, key, device, now, 60).unwrap();
            self.add(headers);
            self
        }

        /// Signs with a hand-chosen coverage and parameters, through the generic layer.
        fn signed_custom(
            mut self,
            key: &DeviceSigningKey,
            covered: &[&str],
            params: &[(&str, ParamValue<'_>)],
        ) -> Self {
            self.headers.push(("Content-Digest".into(), content_digest(&self.body)));
            let refs = self.header_refs();
            let parts =
                SignedRequestParts { method: &self.method, target_uri: &self.uri, headers: &refs };
            let base = signature_base(&parts, covered, params).unwrap();
            let mut signature = String::from("lk=");
            sf::write_bytes(&mut signature, &sign_base(&base, key));
            let input = format!("lk={}", base.signature_params());
            self.headers.push(("Signature-Input".into(), input));
            self.headers.push(("Signature".into(), signature));
            self
        }

        fn header(&self, name: &str) -> &str {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
                .unwrap()
        }

        fn replace_header(&mut self, name: &str, value: String) {
            for (n, v) in &mut self.headers {
                if n.eq_ignore_ascii_case(name) {
                    *v = value.clone();
                }
            }
        }

        fn parse(&self) -> Result<ParsedSignature<'_>, HttpSigError> {
            // Leak the borrowed header view so the parsed signature can outlive this call in a
            // test; a few bytes per test.
            let refs: &[(&str, &str)] = Box::leak(self.header_refs().into_boxed_slice());
            let parts =
                SignedRequestParts { method: &self.method, target_uri: &self.uri, headers: refs };
            ParsedSignature::parse(&parts)
        }

        fn verify_at(
            &self,
            key: &DeviceVerifyingKey,
            now: u64,
        ) -> Result<VerifiedRequest, HttpSigError> {
            self.parse()?.verify(key, now, MAX_AGE, SKEW, &self.body)
        }
    }

    fn params<'a>(
        created: i64,
        expires: i64,
        nonce: &'a str,
        keyid: &'a str,
    ) -> Vec<(&'a str, ParamValue<'a>)> {
        vec![
            ("created", ParamValue::Integer(created)),
            ("expires", ParamValue::Integer(expires)),
            ("nonce", ParamValue::String(nonce)),
            ("keyid", ParamValue::String(keyid)),
            ("alg", ParamValue::String(ALGORITHM)),
            ("tag", ParamValue::String(TAG)),
        ]
    }

    const NONCE: &str = "AAAAAAAAAAAAAAAAAAAAAA";

    // --- RFC 9421 Appendix B.2.6 ---------------------------------------------------------

    #[test]
    fn the_rfc_test_key_seed_derives_the_rfc_public_key() {
        assert_eq!(
            hex::encode(rfc_key().verifying_key().to_bytes()),
            RFC_PUBLIC_HEX,
            "the hand-derived seed must be the RFC's test-key-ed25519"
        );
    }

    #[test]
    fn rfc_9421_b_2_6_signature_base_and_ed25519_signature_match_the_rfc_byte_for_byte() {
        // RFC 9421 Appendix B.2, the test request.
        let headers = [
            ("Host", "example.com"),
            ("Date", "Tue, 20 Apr 2021 02:07:55 GMT"),
            ("Content-Type", "application/json"),
            (
                "Content-Digest",
                "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:",
            ),
            ("Content-Length", "18"),
        ];
        let parts = SignedRequestParts {
            method: "POST",
            target_uri: "https://example.com/foo?param=Value&Pet=dog",
            headers: &headers,
        };
        let covered = ["date", "@method", "@path", "@authority", "content-type", "content-length"];
        let params = [
            ("created", ParamValue::Integer(1_618_884_473)),
            ("keyid", ParamValue::String("test-key-ed25519")),
        ];
        let base = signature_base(&parts, &covered, &params).unwrap();
        assert_eq!(
            base.as_str(),
            RFC_B26_BASE,
            "the signature base must be the RFC's, byte for byte"
        );
        assert_eq!(
            format!("sig-b26={}", base.signature_params()),
            "sig-b26=(\"date\" \"@method\" \"@path\" \"@authority\" \"content-type\" \
             \"content-length\");created=1618884473;keyid=\"test-key-ed25519\"",
            "the Signature-Input member must be the RFC's"
        );
        let signature = sign_base(&base, &rfc_key());
        assert_eq!(
            STANDARD_B64.encode(signature),
            RFC_B26_SIGNATURE,
            "Ed25519 is deterministic, so the signature must be the RFC's exactly"
        );
        assert_eq!(
            rfc_key().verifying_key().verify(base.as_str().as_bytes(), &signature),
            Ok(()),
            "the RFC signature verifies under the RFC public key with verify_strict"
        );
        // The RFC 9530 digest in the test request is the SHA-512 of the body.
        assert_eq!(
            verify_content_digest(
                &format!("{}, {}", content_digest(br#"{"hello": "world"}"#), headers[3].1),
                br#"{"hello": "world"}"#
            ),
            Ok(()),
            "the test request's sha-512 Content-Digest matches its body"
        );
    }

    /// The worked example in `docs/protocol.md`, "Device request signatures (RFC 9421)".
    const DOC_SIGNATURE_INPUT: &str = concat!(
        "lk=(\"@method\" \"@target-uri\" \"content-digest\" \"content-type\");created=1700000000;",
        "expires=1700000060;nonce=\"q2Lq0o5hQ8W8mJ3sP1yZ9A\";",
        "keyid=\"0b5e0a3c-4c1e-4d8e-9a47-3f1f6a2b9c10\";alg=\"ed25519\";tag=\"latchkey\"",
    );
    const DOC_BASE: &str = concat!(
        "\"@method\": POST\n",
        "\"@target-uri\": https://broker.example/v1/credentials?workspace=demo\n",
        "\"content-digest\": sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:\n",
        "\"content-type\": application/json\n",
        "\"@signature-params\": (\"@method\" \"@target-uri\" \"content-digest\" \"content-type\");",
        "created=1700000000;expires=1700000060;nonce=\"q2Lq0o5hQ8W8mJ3sP1yZ9A\";",
        "keyid=\"0b5e0a3c-4c1e-4d8e-9a47-3f1f6a2b9c10\";alg=\"ed25519\";tag=\"latchkey\"",
    );
    /// Checked independently with Python `cryptography`'s Ed25519 over `DOC_BASE`.
    const DOC_SIGNATURE: &str = "lk=:l97kzRUIjU7PdGBFEhR/XL9dZnY83NxktyKCvF6PWNvodqHwyEFNzL1GqBoIZ0bLu2LP8uC4IMvBDHWu9b2pBg==:";

    #[test]
    fn the_worked_example_in_the_protocol_document_is_reproduced_exactly() {
        let headers = [
            ("Content-Type", "application/json"),
            ("Content-Digest", "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"),
        ];
        let parts = SignedRequestParts {
            method: "POST",
            target_uri: "https://broker.example/v1/credentials?workspace=demo",
            headers: &headers,
        };
        let covered = ["@method", "@target-uri", "content-digest", "content-type"];
        let device = "0b5e0a3c-4c1e-4d8e-9a47-3f1f6a2b9c10";
        let p = params(1_700_000_000, 1_700_000_060, "q2Lq0o5hQ8W8mJ3sP1yZ9A", device);
        let base = signature_base(&parts, &covered, &p).unwrap();
        let mut signature = String::from("lk=");
        sf::write_bytes(&mut signature, &sign_base(&base, &rfc_key()));
        let input = format!("lk={}", base.signature_params());
        assert_eq!(input, DOC_SIGNATURE_INPUT, "Signature-Input as documented");
        assert_eq!(base.as_str(), DOC_BASE, "signature base as documented");
        assert_eq!(signature, DOC_SIGNATURE, "Signature as documented (Ed25519 is deterministic)");

        let mut all = headers.to_vec();
        all.push(("Signature-Input", &input));
        all.push(("Signature", &signature));
        let parts = SignedRequestParts { headers: &all, ..parts };
        let verified = ParsedSignature::parse(&parts)
            .unwrap()
            .verify(&rfc_key().verifying_key(), 1_700_000_030, 300, 30, br#"{"hello": "world"}"#)
            .unwrap();
        assert_eq!(verified.key_id().to_string(), device, "the documented request verifies");
    }

    // --- derived components and fields -----------------------------------------------------

    fn value(uri: &str, name: &str) -> Result<String, HttpSigError> {
        let headers = [("X-Multi", " a "), ("x-multi", "b\t"), ("X-Empty", "")];
        let parts = SignedRequestParts { method: "PATCH", target_uri: uri, headers: &headers };
        let uri = TargetUri::parse(parts.target_uri)?;
        component_value(&parts, &uri, name)
    }

    #[test]
    fn derived_components_follow_rfc_9421_section_2_2() {
        let uri = "HTTPS://Broker.Example:443/v1/a%2Fb?x=1&y=Z";
        assert_eq!(value(uri, "@method").unwrap(), "PATCH", "method is taken as sent");
        assert_eq!(value(uri, "@target-uri").unwrap(), "https://broker.example/v1/a%2Fb?x=1&y=Z");
        assert_eq!(
            value(uri, "@authority").unwrap(),
            "broker.example",
            "default port dropped, host lowercased"
        );
        assert_eq!(value(uri, "@scheme").unwrap(), "https");
        assert_eq!(value(uri, "@path").unwrap(), "/v1/a%2Fb", "path is not decoded");
        assert_eq!(value(uri, "@query").unwrap(), "?x=1&y=Z");
        assert_eq!(value(uri, "@request-target").unwrap(), "/v1/a%2Fb?x=1&y=Z");
        assert_eq!(value("http://h:8080", "@authority").unwrap(), "h:8080", "other ports stay");
        assert_eq!(value("http://h:8080", "@path").unwrap(), "/", "an empty path is /");
        assert_eq!(value("http://h:8080", "@query").unwrap(), "?", "an absent query is a lone ?");
        assert_eq!(value("http://h:8080", "@target-uri").unwrap(), "http://h:8080/");
        assert_eq!(
            value("http://h/?", "@target-uri").unwrap(),
            "http://h/?",
            "an empty query is kept"
        );
        assert_eq!(
            value("http://[::1]:80/p", "@authority").unwrap(),
            "[::1]",
            "IP literals keep brackets"
        );
    }

    #[test]
    fn header_fields_are_matched_case_insensitively_trimmed_and_combined() {
        assert_eq!(
            value(URI, "x-multi").unwrap(),
            "a, b",
            "RFC 9421 §2.1: trim, join with comma-space"
        );
        assert_eq!(value(URI, "x-empty").unwrap(), "", "an empty field has an empty value");
        assert_eq!(
            value(URI, "x-absent"),
            Err(HttpSigError::MissingComponentValue("x-absent".into()))
        );
        assert_eq!(
            value(URI, "X-Multi"),
            Err(HttpSigError::UnsupportedComponent("X-Multi".into())),
            "component names must be lowercase"
        );
        assert_eq!(
            value(URI, "@status"),
            Err(HttpSigError::UnsupportedComponent("@status".into()))
        );
    }

    #[test]
    fn malformed_target_uris_are_rejected_with_a_reason() {
        let cases = [
            ("/relative", "target uri is not absolute"),
            ("ftp://h/", "target uri scheme is not http or https"),
            ("https://u:p@h/", "target uri has userinfo"),
            ("https://h/#frag", "target uri has a fragment"),
            ("https:///path", "target uri has no host"),
            ("https://h:0443/", "invalid port in target uri"),
            ("https://h:99999/", "invalid port in target uri"),
            ("https://h:/", "invalid port in target uri"),
            ("https://h/a b", "invalid path in target uri"),
            ("https://h/%zz", "invalid path in target uri"),
            ("https://h/?q=\"", "invalid query in target uri"),
            ("https://h\u{e9}/", "invalid host in target uri"),
            ("https://[::1/", "unterminated ip literal in target uri"),
            ("https://[g::1]/", "invalid ip literal in target uri"),
        ];
        for (uri, reason) in cases {
            assert_eq!(
                TargetUri::parse(uri).map(|_| ()),
                Err(HttpSigError::InvalidRequest(reason)),
                "uri {uri:?}"
            );
        }
    }

    #[test]
    fn a_component_covered_twice_is_rejected() {
        let parts = SignedRequestParts { method: "GET", target_uri: URI, headers: &[] };
        assert_eq!(
            signature_base(&parts, &["@method", "@method"], &[]),
            Err(HttpSigError::DuplicateComponent("@method".into())),
            "RFC 9421 §2.5: each component appears at most once"
        );
    }

    // --- the profile: round trip -----------------------------------------------------------

    #[test]
    fn a_signed_post_verifies_and_reports_what_was_covered() {
        let key = DeviceSigningKey::generate().unwrap();
        let device = DeviceId::random();
        let request = Request::post().signed(&key, device, NOW);
        let verified = request.verify_at(&key.verifying_key(), NOW + 5).unwrap();
        assert_eq!(verified.key_id(), device, "the key id is the signing device");
        assert_eq!(verified.created(), NOW);
        assert_eq!(verified.expires(), NOW + 60);
        assert_eq!(verified.nonce().len(), 22, "16 random bytes in base64url");
        assert_eq!(
            verified.covered_components(),
            ["@method", "@target-uri", "content-digest", "content-type"],
            "content-type is covered because the request has one"
        );
    }

    #[test]
    fn a_signed_get_carries_the_digest_of_the_empty_body() {
        let key = DeviceSigningKey::generate().unwrap();
        let request = Request::get().signed(&key, DeviceId::random(), NOW);
        assert_eq!(request.header("content-digest"), content_digest(b""));
        let verified = request.verify_at(&key.verifying_key(), NOW).unwrap();
        assert_eq!(
            verified.covered_components(),
            REQUIRED_COMPONENTS,
            "no content-type, not covered"
        );
    }

    #[test]
    fn the_signature_headers_have_the_profile_shape() {
        let key = DeviceSigningKey::generate().unwrap();
        let device = DeviceId::random();
        let request = Request::post().signed(&key, device, NOW);
        let parsed = request.parse().unwrap();
        let expected = format!(
            "lk=(\"@method\" \"@target-uri\" \"content-digest\" \"content-type\");created={NOW};\
             expires={};nonce=\"{}\";keyid=\"{device}\";alg=\"ed25519\";tag=\"latchkey\"",
            NOW + 60,
            parsed.nonce()
        );
        assert_eq!(
            request.header("signature-input"),
            expected,
            "parameters in the documented order"
        );
        let signature = request.header("signature");
        assert!(
            signature.starts_with("lk=:")
                && signature.ends_with(':')
                && signature.len() == 4 + 88 + 1,
            "a 64-byte signature as a structured-field byte sequence: {signature}"
        );
        assert_eq!(parsed.key_id(), device, "the key id is readable before verification");
    }

    #[test]
    fn every_signature_draws_a_fresh_nonce() {
        let key = DeviceSigningKey::generate().unwrap();
        let a = Request::get().signed(&key, DeviceId::random(), NOW);
        let b = Request::get().signed(&key, DeviceId::random(), NOW);
        assert_ne!(
            a.parse().unwrap().nonce(),
            b.parse().unwrap().nonce(),
            "128-bit nonces never repeat"
        );
    }

    #[test]
    fn header_names_and_surrounding_whitespace_do_not_matter_to_the_verifier() {
        let key = DeviceSigningKey::generate().unwrap();
        let mut request = Request::post().signed(&key, DeviceId::random(), NOW);
        for (name, value) in &mut request.headers {
            *name = name.to_ascii_uppercase();
            *value = format!("  {value}\t");
        }
        assert!(
            request.verify_at(&key.verifying_key(), NOW).is_ok(),
            "RFC 9421 §2.1 trims field values"
        );
    }

    #[test]
    fn other_signature_labels_are_ignored() {
        let key = DeviceSigningKey::generate().unwrap();
        let mut request = Request::post().signed(&key, DeviceId::random(), NOW);
        let input = format!("proxy=(\"@method\");created=1, {}", request.header("signature-input"));
        let signature = format!("{}, proxy=:AAAA:", request.header("signature"));
        request.replace_header("signature-input", input);
        request.replace_header("signature", signature);
        assert!(request.verify_at(&key.verifying_key(), NOW).is_ok(), "only lk is Latchkey's");
    }

    // --- the profile: coverage and parameters ----------------------------------------------

    #[test]
    fn each_required_component_left_uncovered_is_named_in_the_error() {
        let key = DeviceSigningKey::generate().unwrap();
        let device = DeviceId::random().to_string();
        let all = ["@method", "@target-uri", "content-digest", "content-type"];
        for missing in all {
            let covered: Vec<&str> = all.iter().copied().filter(|c| *c != missing).collect();
            let request = Request::post().signed_custom(
                &key,
                &covered,
                &params(NOW as i64, NOW as i64 + 60, NONCE, &device),
            );
            assert_eq!(
                request.parse().unwrap_err(),
                HttpSigError::ComponentNotCovered(match missing {
                    "@method" => "@method",
                    "@target-uri" => "@target-uri",
                    "content-digest" => "content-digest",
                    _ => "content-type",
                }),
                "leaving {missing} out must be refused by name"
            );
        }
    }

    #[test]
    fn extra_covered_components_are_allowed_and_reported() {
        let key = DeviceSigningKey::generate().unwrap();
        let device = DeviceId::random().to_string();
        let mut request = Request::post();
        request.headers.push(("Authorization".into(), "Bearer x".into()));
        let covered = [
            "@method",
            "@target-uri",
            "content-digest",
            "content-type",
            "authorization",
            "@authority",
        ];
        let request = request.signed_custom(
            &key,
            &covered,
            &params(NOW as i64, NOW as i64 + 60, NONCE, &device),
        );
        let verified = request.verify_at(&key.verifying_key(), NOW).unwrap();
        assert_eq!(
            verified.covered_components(),
            covered,
            "the caller sees exactly what was signed"
        );
    }

    #[test]
    fn parameters_outside_the_profile_are_refused_with_specific_errors() {
        let key = DeviceSigningKey::generate().unwrap();
        let device = DeviceId::random().to_string();
        let covered = ["@method", "@target-uri", "content-digest", "content-type"];
        let base = params(NOW as i64, NOW as i64 + 60, NONCE, &device);
        let with = |name: &'static str, value: ParamValue<'static>| {
            let mut p = base.clone();
            match p.iter_mut().find(|(n, _)| *n == name) {
                Some(slot) => slot.1 = value,
                None => p.push((name, value)),
            }
            Request::post().signed_custom(&key, &covered, &p).parse().unwrap_err()
        };
        let without = |name: &str| {
            let p: Vec<_> = base.iter().copied().filter(|(n, _)| *n != name).collect();
            Request::post().signed_custom(&key, &covered, &p).parse().unwrap_err()
        };
        assert_eq!(
            with("alg", ParamValue::String("rsa-pss-sha512")),
            HttpSigError::UnsupportedAlgorithm
        );
        assert_eq!(with("tag", ParamValue::String("other-app")), HttpSigError::WrongTag);
        assert_eq!(
            with("keyid", ParamValue::String("test-key-ed25519")),
            HttpSigError::InvalidKeyId
        );
        assert_eq!(with("nonce", ParamValue::String("short")), HttpSigError::InvalidNonce);
        assert_eq!(
            with("nonce", ParamValue::String("AAAAAAAAAAAAAAAAAAAAA+")),
            HttpSigError::InvalidNonce,
            "the nonce alphabet is base64url"
        );
        assert_eq!(
            with("nonce", ParamValue::String(&*"A".repeat(65).leak())),
            HttpSigError::InvalidNonce
        );
        assert_eq!(
            with("created", ParamValue::String("now")),
            HttpSigError::MalformedSignatureInput("created and expires must be integers")
        );
        assert_eq!(
            with("created", ParamValue::Integer(-1)),
            HttpSigError::MalformedSignatureInput("created and expires must not be negative")
        );
        assert_eq!(
            with("alg", ParamValue::Integer(1)),
            HttpSigError::MalformedSignatureInput("nonce, keyid, alg and tag must be strings")
        );
        assert_eq!(
            with("extra", ParamValue::Integer(1)),
            HttpSigError::MalformedSignatureInput("unknown parameter")
        );
        for name in ["created", "expires", "nonce", "keyid", "alg", "tag"] {
            let err = without(name);
            assert!(
                matches!(err, HttpSigError::MissingParameter(n) if n == name),
                "omitting {name} must be named, got {err:?}"
            );
        }
    }

    #[test]
    fn a_window_longer_than_five_minutes_or_not_positive_is_refused() {
        let key = DeviceSigningKey::generate().unwrap();
        let device = DeviceId::random().to_string();
        let covered = ["@method", "@target-uri", "content-digest", "content-type"];
        let sign_window = |created: i64, expires: i64| {
            Request::post()
                .signed_custom(&key, &covered, &params(created, expires, NONCE, &device))
                .parse()
                .map(|_| ())
        };
        assert!(sign_window(NOW as i64, NOW as i64 + 300).is_ok(), "exactly 300 s is allowed");
        assert_eq!(
            sign_window(NOW as i64, NOW as i64 + 301).unwrap_err(),
            HttpSigError::WindowTooLong
        );
        assert_eq!(sign_window(NOW as i64, NOW as i64).unwrap_err(), HttpSigError::InvalidWindow);
        assert_eq!(
            sign_window(NOW as i64, NOW as i64 - 1).unwrap_err(),
            HttpSigError::InvalidWindow
        );

        let parts = SignedRequestParts { method: "GET", target_uri: URI, headers: &[] };
        assert_eq!(
            sign(&parts, b"", &key, DeviceId::random(), NOW, 301).unwrap_err(),
            HttpSigError::WindowTooLong,
            "the signer refuses what the verifier would refuse"
        );
        assert_eq!(
            sign(&parts, b"", &key, DeviceId::random(), NOW, 0).unwrap_err(),
            HttpSigError::InvalidWindow
        );
    }

    #[test]
    fn the_signer_refuses_a_request_that_already_has_a_content_digest() {
        let key = DeviceSigningKey::generate().unwrap();
        let headers = [("content-digest", "sha-256=:AAAA:")];
        let parts = SignedRequestParts { method: "GET", target_uri: URI, headers: &headers };
        assert_eq!(
            sign(&parts, b"", &key, DeviceId::random(), NOW, 60).unwrap_err(),
            HttpSigError::InvalidRequest("content-digest is added by the signer"),
            "two digests would leave the verifier to pick one"
        );
    }

    // --- the profile: time ------------------------------------------------------------------

    #[test]
    fn expired_future_and_too_old_signatures_fail() {
        let key = DeviceSigningKey::generate().unwrap();
        let vk = key.verifying_key();
        let request = Request::post().signed(&key, DeviceId::random(), NOW); // expires NOW + 60
        assert!(
            request.verify_at(&vk, NOW - SKEW).is_ok(),
            "a clock behind by the skew is tolerated"
        );
        assert_eq!(
            request.verify_at(&vk, NOW - SKEW - 1).unwrap_err(),
            HttpSigError::CreatedInFuture
        );
        assert!(
            request.verify_at(&vk, NOW + 60 + SKEW).is_ok(),
            "expiry is tolerated up to the skew"
        );
        assert_eq!(
            request.verify_at(&vk, NOW + 60 + SKEW + 1).unwrap_err(),
            HttpSigError::SignatureExpired
        );
        let parsed = request.parse().unwrap();
        assert_eq!(
            parsed.verify(&vk, NOW + 11, 10, 0, &request.body).unwrap_err(),
            HttpSigError::SignatureTooOld,
            "a max age shorter than the window is enforced"
        );
    }

    // --- the profile: tampering -------------------------------------------------------------

    #[test]
    fn tampering_with_any_covered_part_of_the_request_fails() {
        let key = DeviceSigningKey::generate().unwrap();
        let vk = key.verifying_key();
        let signed = Request::post().signed(&key, DeviceId::random(), NOW);
        assert!(signed.verify_at(&vk, NOW).is_ok());

        let tampered = |f: &dyn Fn(&mut Request)| {
            let mut r = signed.clone();
            f(&mut r);
            r.verify_at(&vk, NOW).unwrap_err()
        };
        assert_eq!(tampered(&|r| r.method = "PUT".into()), HttpSigError::BadSignature, "method");
        assert_eq!(
            tampered(&|r| r.uri = "https://broker.example/v1/agents?x=1".into()),
            HttpSigError::BadSignature,
            "path"
        );
        assert_eq!(
            tampered(&|r| r.uri = "https://broker.example/v1/credentials?x=2".into()),
            HttpSigError::BadSignature,
            "query"
        );
        assert_eq!(
            tampered(&|r| r.uri = "https://evil.example/v1/credentials?x=1".into()),
            HttpSigError::BadSignature,
            "host"
        );
        assert_eq!(
            tampered(&|r| r.body = br#"{"name":"gitlab"}"#.to_vec()),
            HttpSigError::ContentDigestMismatch,
            "body"
        );
        assert_eq!(
            tampered(&|r| {
                r.body = br#"{"name":"gitlab"}"#.to_vec();
                r.replace_header("content-digest", content_digest(&r.body));
            }),
            HttpSigError::BadSignature,
            "body with a recomputed digest"
        );
        assert_eq!(
            tampered(&|r| r.replace_header("content-type", "text/plain".into())),
            HttpSigError::BadSignature,
            "content-type"
        );
        let edit_input = |from: String, to: String| {
            move |r: &mut Request| {
                let input = r.header("signature-input").replace(&from, &to);
                r.replace_header("signature-input", input);
            }
        };
        let parsed = signed.parse().unwrap();
        assert_eq!(
            tampered(&edit_input(format!("created={NOW}"), format!("created={}", NOW - 1))),
            HttpSigError::BadSignature,
            "created"
        );
        assert_eq!(
            tampered(&edit_input(format!("expires={}", NOW + 60), format!("expires={}", NOW + 61))),
            HttpSigError::BadSignature,
            "expires"
        );
        assert_eq!(
            tampered(&edit_input(parsed.nonce().to_owned(), "B".repeat(22))),
            HttpSigError::BadSignature,
            "nonce"
        );
        assert_eq!(
            tampered(&edit_input(parsed.key_id().to_string(), DeviceId::random().to_string())),
            HttpSigError::BadSignature,
            "keyid"
        );
        assert_eq!(
            tampered(&edit_input(
                "\"content-type\")".into(),
                "\"content-type\" \"@authority\")".into()
            )),
            HttpSigError::BadSignature,
            "covered list"
        );
    }

    #[test]
    fn a_signature_from_another_device_key_fails() {
        let key = DeviceSigningKey::generate().unwrap();
        let other = DeviceSigningKey::generate().unwrap();
        let request = Request::post().signed(&key, DeviceId::random(), NOW);
        assert_eq!(
            request.verify_at(&other.verifying_key(), NOW).unwrap_err(),
            HttpSigError::BadSignature
        );
    }

    // --- the parser: hostile input ----------------------------------------------------------

    #[test]
    fn missing_or_malformed_signature_headers_have_specific_errors() {
        let key = DeviceSigningKey::generate().unwrap();
        let signed = Request::post().signed(&key, DeviceId::random(), NOW);
        let with = |name: &str, value: Option<&str>| {
            let mut r = signed.clone();
            r.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            if let Some(v) = value {
                r.headers.push((name.into(), v.into()));
            }
            r.verify_at(&key.verifying_key(), NOW).unwrap_err()
        };
        assert_eq!(with("signature-input", None), HttpSigError::MissingHeader("signature-input"));
        assert_eq!(with("signature", None), HttpSigError::MissingHeader("signature"));
        assert_eq!(with("content-digest", None), HttpSigError::MissingHeader("content-digest"));
        assert_eq!(with("signature", Some("other=:AAAA:")), HttpSigError::MissingLabel);
        assert_eq!(with("signature-input", Some("other=()")), HttpSigError::MissingLabel);
        assert_eq!(
            with("signature", Some("lk=:AAAA:")),
            HttpSigError::MalformedSignature("lk is not 64 bytes")
        );
        assert_eq!(
            with("signature", Some("lk=\"x\"")),
            HttpSigError::MalformedSignature("lk is not a byte sequence")
        );
        assert_eq!(
            with("signature", Some("lk=")),
            HttpSigError::MalformedSignature("expected a value")
        );
        assert_eq!(
            with("signature-input", Some("lk=:AAAA:")),
            HttpSigError::MalformedSignatureInput("lk is not an inner list")
        );
        assert_eq!(
            with("signature-input", Some("lk=(1)")),
            HttpSigError::MalformedSignatureInput("covered component is not a string")
        );
        assert_eq!(
            with("signature-input", Some("lk=(\"content-digest\";sf)")),
            HttpSigError::UnsupportedComponent("content-digest".into())
        );
        assert_eq!(
            with("signature-input", Some("lk=(), lk=()")),
            HttpSigError::MalformedSignatureInput("duplicate dictionary key")
        );
        assert_eq!(
            with(
                "signature-input",
                Some(&format!("lk=(\"{}\")", "a".repeat(MAX_SIGNATURE_INPUT_LEN)))
            ),
            HttpSigError::HeaderTooLarge("signature-input")
        );
        assert_eq!(
            with("signature", Some(&"a".repeat(MAX_SIGNATURE_LEN + 1))),
            HttpSigError::HeaderTooLarge("signature")
        );
    }

    #[test]
    fn a_signature_input_split_over_many_lines_counts_toward_the_size_bound() {
        let mut request = Request::get();
        for _ in 0..100 {
            request.headers.push(("signature-input".into(), "a=1".repeat(3)));
        }
        request.headers.push(("signature".into(), "lk=:AAAA:".into()));
        assert_eq!(request.parse().unwrap_err(), HttpSigError::HeaderTooLarge("signature-input"));
    }

    #[test]
    fn error_messages_are_lowercase_without_a_trailing_period() {
        let samples = [
            HttpSigError::MissingHeader("signature"),
            HttpSigError::MalformedSignatureInput("trailing comma"),
            HttpSigError::UnsupportedAlgorithm,
            HttpSigError::ComponentNotCovered("@method"),
            HttpSigError::SignatureExpired,
            HttpSigError::CreatedInFuture,
            HttpSigError::WindowTooLong,
            HttpSigError::ContentDigestMismatch,
            HttpSigError::BadSignature,
            HttpSigError::InvalidKeyId,
        ];
        for e in samples {
            let m = e.to_string();
            assert!(
                m.chars().next().is_some_and(|c| c.is_lowercase()) && !m.ends_with('.'),
                "{m:?}"
            );
        }
        assert_eq!(
            HttpSigError::ComponentNotCovered("@target-uri").to_string(),
            "component not covered: @target-uri"
        );
    }

    fn parse_headers(input: &str, signature: &str) -> Result<(), HttpSigError> {
        let headers =
            [("signature-input", input), ("signature", signature), ("content-type", "a/b")];
        let parts = SignedRequestParts { method: "GET", target_uri: URI, headers: &headers };
        ParsedSignature::parse(&parts).map(|_| ())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn the_parser_never_panics_on_arbitrary_header_strings(input in any::<String>(), signature in any::<String>()) {
            let _ = parse_headers(&input, &signature);
        }

        #[test]
        fn the_parser_never_panics_on_structured_field_shaped_noise(
            input in "lk=\\(((\"[@a-z-]{0,12}\"|[0-9:?*a-z\"()=;, -]{0,6}) ?){0,6}\\)(;[a-z]{1,7}=(\"[ -~]{0,30}\"|-?[0-9]{1,17}|:[A-Za-z0-9+/=]{0,12}:|\\?[01]|[a-z]{1,4})){0,8}",
            signature in "lk=:[A-Za-z0-9+/=]{0,100}:?",
        ) {
            let _ = parse_headers(&input, &signature);
        }

        #[test]
        fn the_target_uri_parser_never_panics(uri in "(https?://)?[ -~\u{80}-\u{10ffff}]{0,40}") {
            let _ = TargetUri::parse(&uri);
        }

        #[test]
        fn a_content_digest_of_arbitrary_text_never_panics(field in any::<String>(), body in any::<Vec<u8>>()) {
            let _ = verify_content_digest(&field, &body);
        }
    }
}
