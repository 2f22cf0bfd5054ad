//! What an envelope holds: the credential itself, how the broker injects it into an upstream
//! request, and (for OAuth) what it needs to refresh it.
//!
//! The payload is encoded in a small binary format rather than JSON so secret values never pass
//! through `serde` and every buffer that holds them is zeroized. Integrity comes from the envelope:
//! a server that cannot open the envelope cannot change the token endpoint or the injection rule.
//!
//! ```text
//! u8   format version (1)
//! u8   kind: 1 API key, 2 OAuth 2.0 access token
//! u8   injection: 1 header, 2 query parameter
//!        header: u8 name length, name (lowercase token chars), u8 prefix length, prefix
//!        query:  u8 name length, name
//! u16  secret length (1..=16384), secret (API key or access token)
//! kind 2 only:
//!   u64  access token expiry, unix seconds (0 = unknown)
//!   u8   1 if refresh data follows, else 0
//!     u16 refresh token length (1..=16384), refresh token
//!     u16 token endpoint length (1..=2048), token endpoint URL (https, or http on loopback)
//!     u8  client id length (1..=255), client id
//!     u16 client secret length (0..=4096; 0 = public client), client secret
//! ```
//! Decoding requires the input to end exactly after the last field.

use core::fmt;

use zeroize::Zeroizing;

use crate::secret::SecretBytes;

/// Current payload format version.
pub const FORMAT_VERSION: u8 = 1;
/// Longest secret (API key, access or refresh token).
pub const MAX_SECRET_LEN: usize = 16 * 1024;

/// A payload could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// The bytes are not a well-formed payload.
    #[error("malformed credential payload: {0}")]
    Malformed(&'static str),
    /// A format version this build does not know.
    #[error("unknown credential payload version {0}")]
    UnknownVersion(u8),
    /// A field is out of its allowed range.
    #[error("invalid credential payload: {0}")]
    Invalid(&'static str),
}

/// Where the broker puts the credential in the upstream request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Injection {
    /// A header: `name: prefix + secret` (e.g. `authorization: Bearer <token>`, `x-api-key: <key>`).
    Header {
        /// Lowercase header name.
        name: String,
        /// Text before the secret, e.g. `"Bearer "`; may be empty.
        prefix: String,
    },
    /// A query parameter: `?name=<secret>` (for the few APIs that need it).
    Query {
        /// Parameter name.
        name: String,
    },
}

impl Injection {
    /// `authorization: Bearer <secret>`.
    pub fn bearer() -> Self {
        Injection::Header { name: "authorization".into(), prefix: "Bearer ".into() }
    }

    fn validate(&self) -> Result<(), PayloadError> {
        let token_chars = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_".contains(&b))
        };
        match self {
            Injection::Header { name, prefix } => {
                if !token_chars(name) {
                    return Err(PayloadError::Invalid(
                        "header name must be 1-64 lowercase token characters",
                    ));
                }
                // Framing and hop-by-hop headers (RFC 9110 §7.6.1), which the broker drops or
                // sets itself: a credential there would not reach the upstream as sent.
                if matches!(
                    name.as_str(),
                    "host"
                        | "content-length"
                        | "transfer-encoding"
                        | "connection"
                        | "keep-alive"
                        | "proxy-connection"
                        | "proxy-authorization"
                        | "te"
                        | "trailer"
                        | "upgrade"
                        | "expect"
                ) {
                    return Err(PayloadError::Invalid(
                        "the credential cannot be injected into that header",
                    ));
                }
                if prefix.len() > 32 || !prefix.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                    return Err(PayloadError::Invalid(
                        "header prefix must be at most 32 printable characters",
                    ));
                }
            }
            Injection::Query { name } => {
                if !token_chars(&name.to_ascii_lowercase()) {
                    return Err(PayloadError::Invalid(
                        "query parameter name must be 1-64 token characters",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What the broker needs to refresh an OAuth access token.
pub struct OAuthRefresh {
    /// The refresh token.
    pub refresh_token: SecretBytes,
    /// The authorization server's token endpoint.
    pub token_endpoint: String,
    /// The OAuth client id.
    pub client_id: String,
    /// The client secret of a confidential client; `None` for a public (PKCE) client.
    pub client_secret: Option<SecretBytes>,
}

impl fmt::Debug for OAuthRefresh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthRefresh")
            .field("refresh_token", &"[REDACTED]")
            .field("token_endpoint", &self.token_endpoint)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

/// The kind of credential.
#[derive(Debug)]
pub enum CredentialKind {
    /// A static API key.
    ApiKey,
    /// An OAuth 2.0 access token, possibly refreshable.
    OAuth {
        /// Expiry of the access token, unix seconds, if known.
        expires_at: Option<u64>,
        /// Refresh data, if the grant included a refresh token.
        refresh: Option<OAuthRefresh>,
    },
}

/// A decrypted credential. Zeroized on drop; `Debug` is redacted.
#[derive(Debug)]
pub struct CredentialPayload {
    /// API key or OAuth.
    pub kind: CredentialKind,
    /// Where the broker injects the secret.
    pub injection: Injection,
    /// The API key or access token.
    pub secret: SecretBytes,
}

impl CredentialPayload {
    /// The length of [`CredentialPayload::encode`]'s output (for a payload within its bounds).
    fn encoded_len(&self) -> usize {
        let injection = match &self.injection {
            Injection::Header { name, prefix } => 1 + 1 + name.len() + 1 + prefix.len(),
            Injection::Query { name } => 1 + 1 + name.len(),
        };
        let oauth = match &self.kind {
            CredentialKind::ApiKey => 0,
            CredentialKind::OAuth { refresh: None, .. } => 8 + 1,
            CredentialKind::OAuth { refresh: Some(r), .. } => {
                8 + 1
                    + (2 + r.refresh_token.len())
                    + (2 + r.token_endpoint.len())
                    + (1 + r.client_id.len())
                    + (2 + r.client_secret.as_ref().map_or(0, SecretBytes::len))
            }
        };
        2 + injection + 2 + self.secret.len() + oauth
    }

    /// Encodes into a zeroizing buffer, checking every bound. The buffer is sized once: a
    /// reallocation would free a copy of the secret without zeroizing it.
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>, PayloadError> {
        self.injection.validate()?;
        let mut out = Zeroizing::new(Vec::with_capacity(self.encoded_len()));
        out.push(FORMAT_VERSION);
        out.push(match self.kind {
            CredentialKind::ApiKey => 1,
            CredentialKind::OAuth { .. } => 2,
        });
        match &self.injection {
            Injection::Header { name, prefix } => {
                out.push(1);
                put_u8_str(&mut out, name)?;
                put_u8_str(&mut out, prefix)?;
            }
            Injection::Query { name } => {
                out.push(2);
                put_u8_str(&mut out, name)?;
            }
        }
        put_u16_bytes(&mut out, self.secret.expose_secret(), 1, MAX_SECRET_LEN, "secret")?;
        if let CredentialKind::OAuth { expires_at, refresh } = &self.kind {
            out.extend_from_slice(&expires_at.unwrap_or(0).to_be_bytes());
            match refresh {
                None => out.push(0),
                Some(r) => {
                    out.push(1);
                    put_u16_bytes(
                        &mut out,
                        r.refresh_token.expose_secret(),
                        1,
                        MAX_SECRET_LEN,
                        "refresh token",
                    )?;
                    check_endpoint(&r.token_endpoint)?;
                    put_u16_bytes(
                        &mut out,
                        r.token_endpoint.as_bytes(),
                        1,
                        2048,
                        "token endpoint",
                    )?;
                    if r.client_id.is_empty() {
                        return Err(PayloadError::Invalid("client id must not be empty"));
                    }
                    put_u8_str(&mut out, &r.client_id)?;
                    let secret = r.client_secret.as_ref().map_or(&[][..], |s| s.expose_secret());
                    put_u16_bytes(&mut out, secret, 0, 4096, "client secret")?;
                }
            }
        }
        Ok(out)
    }

    /// Decodes a payload, refusing anything malformed, out of range or followed by extra bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, PayloadError> {
        let mut r = Reader { bytes, at: 0 };
        let version = r.u8()?;
        if version != FORMAT_VERSION {
            return Err(PayloadError::UnknownVersion(version));
        }
        let kind = r.u8()?;
        let injection = match r.u8()? {
            1 => Injection::Header { name: r.u8_str()?, prefix: r.u8_str()? },
            2 => Injection::Query { name: r.u8_str()? },
            _ => return Err(PayloadError::Malformed("unknown injection")),
        };
        injection.validate()?;
        let secret = r.u16_secret(1, MAX_SECRET_LEN)?;
        let kind = match kind {
            1 => CredentialKind::ApiKey,
            2 => {
                let expires = u64::from_be_bytes(r.array()?);
                let refresh = match r.u8()? {
                    0 => None,
                    1 => {
                        let refresh_token = r.u16_secret(1, MAX_SECRET_LEN)?;
                        let endpoint = r.u16_bytes(1, 2048)?;
                        let token_endpoint = String::from_utf8(endpoint.to_vec())
                            .map_err(|_| PayloadError::Malformed("token endpoint is not text"))?;
                        check_endpoint(&token_endpoint)?;
                        let client_id = r.u8_str()?;
                        if client_id.is_empty() {
                            return Err(PayloadError::Invalid("client id must not be empty"));
                        }
                        let client_secret = r.u16_secret(0, 4096)?;
                        let client_secret = (!client_secret.is_empty()).then_some(client_secret);
                        Some(OAuthRefresh {
                            refresh_token,
                            token_endpoint,
                            client_id,
                            client_secret,
                        })
                    }
                    _ => return Err(PayloadError::Malformed("bad refresh flag")),
                };
                CredentialKind::OAuth { expires_at: (expires != 0).then_some(expires), refresh }
            }
            _ => return Err(PayloadError::Malformed("unknown credential kind")),
        };
        if r.at != bytes.len() {
            return Err(PayloadError::Malformed("trailing bytes"));
        }
        Ok(Self { kind, injection, secret })
    }
}

/// Token endpoints must be https, or http on a loopback host (local authorization servers, tests).
fn check_endpoint(url: &str) -> Result<(), PayloadError> {
    let ok = url.starts_with("https://")
        || [
            "http://127.0.0.1:",
            "http://127.0.0.1/",
            "http://localhost:",
            "http://localhost/",
            "http://[::1]:",
        ]
        .iter()
        .any(|prefix| url.starts_with(prefix));
    if !ok || url.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
        return Err(PayloadError::Invalid(
            "token endpoint must be an https URL (or http on loopback)",
        ));
    }
    Ok(())
}

fn put_u8_str(out: &mut Vec<u8>, s: &str) -> Result<(), PayloadError> {
    let len = u8::try_from(s.len())
        .map_err(|_| PayloadError::Invalid("text field longer than 255 bytes"))?;
    out.push(len);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_u16_bytes(
    out: &mut Vec<u8>,
    bytes: &[u8],
    min: usize,
    max: usize,
    what: &'static str,
) -> Result<(), PayloadError> {
    if bytes.len() < min || bytes.len() > max {
        return Err(PayloadError::Invalid(match what {
            "secret" => "secret length out of range",
            "refresh token" => "refresh token length out of range",
            "token endpoint" => "token endpoint length out of range",
            _ => "client secret length out of range",
        }));
    }
    // INVARIANT: every caller's `max` is at most 16384 < u16::MAX.
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PayloadError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len());
        let end = end.ok_or(PayloadError::Malformed("truncated"))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, PayloadError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], PayloadError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8_str(&mut self) -> Result<String, PayloadError> {
        let len = usize::from(self.u8()?);
        String::from_utf8(self.take(len)?.to_vec())
            .map_err(|_| PayloadError::Malformed("text field is not UTF-8"))
    }

    fn u16_bytes(&mut self, min: usize, max: usize) -> Result<&'a [u8], PayloadError> {
        let len = usize::from(u16::from_be_bytes(self.array()?));
        if len < min || len > max {
            return Err(PayloadError::Malformed("field length out of range"));
        }
        self.take(len)
    }

    fn u16_secret(&mut self, min: usize, max: usize) -> Result<SecretBytes, PayloadError> {
        self.u16_bytes(min, max).map(SecretBytes::copy_from)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const CANARY: &str = "gho_CANARYaccessTOKEN0123456789";
    const REFRESH_CANARY: &str = "ghr_CANARYrefreshTOKEN0123456789";

    fn oauth() -> CredentialPayload {
        CredentialPayload {
            kind: CredentialKind::OAuth {
                expires_at: Some(1_800_000_000),
                refresh: Some(OAuthRefresh {
                    refresh_token: SecretBytes::copy_from(REFRESH_CANARY.as_bytes()),
                    token_endpoint: "https://github.com/login/oauth/access_token".into(),
                    client_id: "Iv1.0123456789abcdef".into(),
                    client_secret: None,
                }),
            },
            injection: Injection::bearer(),
            secret: SecretBytes::copy_from(CANARY.as_bytes()),
        }
    }

    #[test]
    fn an_oauth_payload_round_trips_with_its_refresh_data() {
        let encoded = oauth().encode().unwrap();
        let decoded = CredentialPayload::decode(&encoded).unwrap();
        assert_eq!(decoded.secret.expose_secret(), CANARY.as_bytes());
        assert_eq!(decoded.injection, Injection::bearer());
        let CredentialKind::OAuth { expires_at, refresh: Some(refresh) } = decoded.kind else {
            panic!("kind must survive the round trip");
        };
        assert_eq!(expires_at, Some(1_800_000_000));
        assert_eq!(refresh.refresh_token.expose_secret(), REFRESH_CANARY.as_bytes());
        assert!(refresh.client_secret.is_none(), "a public client has no secret");
    }

    #[test]
    fn an_api_key_payload_round_trips_with_a_custom_header() {
        let payload = CredentialPayload {
            kind: CredentialKind::ApiKey,
            injection: Injection::Header { name: "x-api-key".into(), prefix: String::new() },
            secret: SecretBytes::copy_from(b"sk-ant-canary"),
        };
        let decoded = CredentialPayload::decode(&payload.encode().unwrap()).unwrap();
        assert!(matches!(decoded.kind, CredentialKind::ApiKey));
        assert_eq!(decoded.injection, payload.injection);
    }

    #[test]
    fn invalid_fields_are_refused_at_encode_and_decode() {
        let mut p = oauth();
        p.injection = Injection::Header { name: "Host".into(), prefix: String::new() };
        assert!(p.encode().is_err(), "uppercase or forbidden header names are refused");
        for hop in ["te", "upgrade", "keep-alive", "proxy-authorization", "trailer", "expect"] {
            let mut p = oauth();
            p.injection = Injection::Header { name: hop.into(), prefix: String::new() };
            assert!(p.encode().is_err(), "{hop} is hop-by-hop: the credential would not arrive");
        }
        let mut p = oauth();
        p.injection = Injection::Header { name: "host".into(), prefix: String::new() };
        assert!(p.encode().is_err(), "the credential cannot replace the Host header");
        let mut p = oauth();
        if let CredentialKind::OAuth { refresh: Some(r), .. } = &mut p.kind {
            r.token_endpoint = "http://evil.example/token".into();
        }
        assert!(p.encode().is_err(), "plain http token endpoints off loopback are refused");
        let mut p = oauth();
        p.secret = SecretBytes::new(Vec::new());
        assert!(p.encode().is_err(), "an empty secret is refused");

        let mut bytes = oauth().encode().unwrap().to_vec();
        bytes.push(0);
        assert_eq!(
            CredentialPayload::decode(&bytes).unwrap_err(),
            PayloadError::Malformed("trailing bytes")
        );
        assert_eq!(CredentialPayload::decode(&[2]).unwrap_err(), PayloadError::UnknownVersion(2));
        assert_eq!(
            CredentialPayload::decode(&bytes[..10]).unwrap_err(),
            PayloadError::Malformed("truncated")
        );
    }

    #[test]
    fn debug_output_is_redacted() {
        let shown = format!("{:?}", oauth());
        assert!(!shown.contains("CANARY"), "a secret leaked through Debug: {shown}");
        assert!(shown.contains("token_endpoint"), "non-secret fields stay visible for diagnosis");
    }

    proptest! {
        #[test]
        fn the_encoding_buffer_is_sized_once_so_no_copy_of_a_secret_is_freed_unzeroized(
            secret in proptest::collection::vec(any::<u8>(), 1..600),
            refresh in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..600)),
            client_secret in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
            endpoint in "https://[a-z]{1,40}\\.example/[a-z/]{0,200}",
            client_id in "[A-Za-z0-9.]{1,100}",
            query in any::<bool>(),
        ) {
            let payload = CredentialPayload {
                kind: CredentialKind::OAuth {
                    expires_at: Some(1),
                    refresh: refresh.map(|r| OAuthRefresh {
                        refresh_token: SecretBytes::copy_from(&r),
                        token_endpoint: endpoint,
                        client_id,
                        client_secret: client_secret.map(|c| SecretBytes::copy_from(&c)),
                    }),
                },
                injection: if query {
                    Injection::Query { name: "access_token".into() }
                } else {
                    Injection::bearer()
                },
                secret: SecretBytes::copy_from(&secret),
            };
            let encoded = payload.encode().unwrap();
            prop_assert_eq!(
                encoded.len(),
                payload.encoded_len(),
                "the buffer was sized for exactly what is written, so it never grew"
            );
            let key = CredentialPayload { kind: CredentialKind::ApiKey, ..payload };
            prop_assert_eq!(key.encode().unwrap().len(), key.encoded_len());
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = CredentialPayload::decode(&bytes);
        }
    }
}
