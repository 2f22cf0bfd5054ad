//! Forwarding a call upstream: URL and host checks, header hygiene, credential injection, size
//! limits, and removal of any echo of the credential from the response.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::header::GetAll;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyDataStream;
use latchkey_core::payload::Injection;
use latchkey_core::secret::SecretBytes;
use url::Url;
use zeroize::Zeroizing;

use super::CAPABILITY_HEADER;
use super::extract::TOKEN_HEADERS;
use crate::error::{ApiError, ErrorCode};
use crate::store::credentials::CredentialRecord;
use crate::upstream::UpstreamBody;

/// Largest request body forwarded upstream.
pub(crate) const MAX_REQUEST_BODY: u64 = 10 * 1024 * 1024;
/// Largest response body passed back to the agent; longer responses are cut off.
pub(crate) const MAX_RESPONSE_BODY: u64 = 64 * 1024 * 1024;
/// What replaces an echoed credential in a response.
pub(crate) const REDACTED: &[u8] = b"[REDACTED by Latchkey]";

/// Hop-by-hop headers (RFC 9110 §7.6.1) and others the proxy never forwards as is.
const DROPPED_REQUEST_HEADERS: [&str; 13] = [
    "connection",
    "keep-alive",
    // Not standard, but still sent by some clients; an HTTP/2 upstream refuses a request that
    // carries it (RFC 9113 §8.2.2), as it does every connection-specific header.
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    // Responses must arrive uncompressed so an echo of the credential can be found and removed.
    "accept-encoding",
    CAPABILITY_HEADER,
];

const DROPPED_RESPONSE_HEADERS: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    // Redaction can change the length.
    "content-length",
];

/// The request path after `/p/{name}` in the one form that policies, capabilities and the
/// upstream all see (RFC 3986 §6.2.2): a percent-encoded unreserved character (letters, digits,
/// `-`, `.`, `_`, `~`) decoded, every other escape's hex digits in upper case. Without this a
/// policy rule on `/orgs/*/members` would not see `/orgs/acme/%6Dembers`, which the upstream
/// reads as the same path. A `%` not followed by two hex digits is refused: no one reads it the
/// same way. Dot segments a decoded `.` forms are refused afterwards, as any others are.
pub(crate) fn normalize_path(path: &str) -> Result<std::borrow::Cow<'_, str>, ApiError> {
    if !path.contains('%') {
        return Ok(std::borrow::Cow::Borrowed(path));
    }
    let malformed = || {
        ApiError::new(
            ErrorCode::BadRequest,
            "the request path has a % that is not followed by two hex digits; encode a literal % as %25",
        )
    };
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut at = 0;
    while let Some(offset) = path[at..].find('%') {
        let escape = at + offset;
        out.push_str(&path[at..escape]);
        let hex = bytes.get(escape + 1..escape + 3).ok_or_else(malformed)?;
        let (Some(high), Some(low)) = (hex_value(hex[0]), hex_value(hex[1])) else {
            return Err(malformed());
        };
        let byte = high << 4 | low;
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(hex[0].to_ascii_uppercase()));
            out.push(char::from(hex[1].to_ascii_uppercase()));
        }
        at = escape + 3;
    }
    out.push_str(&path[at..]);
    Ok(std::borrow::Cow::Owned(out))
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// `{base URL}{path}?{query}` for a credential. `path` is the normalised path after `/p/{name}`
/// ([`normalize_path`]).
pub(crate) fn upstream_url(
    credential: &CredentialRecord,
    path: &str,
    query: Option<&str>,
) -> Result<Url, ApiError> {
    let base = credential.upstream_base_url.trim_end_matches('/');
    let mut text = String::with_capacity(base.len() + path.len() + query.map_or(0, str::len) + 1);
    text.push_str(base);
    text.push_str(path);
    if let Some(query) = query {
        text.push('?');
        text.push_str(query);
    }
    let url = Url::parse(&text).map_err(|_| {
        ApiError::new(ErrorCode::BadRequest, "the request path does not form a valid upstream URL")
    })?;
    // The parser normalises dot segments; a path that changes under normalisation is ambiguous.
    if !url.path().ends_with(path.trim_start_matches('/')) && path != "/" {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "the request path contains dot segments or other ambiguity; send a normalised path",
        ));
    }
    Ok(url)
}

/// Refuses upstream URLs whose scheme or host the credential does not allow.
pub(crate) fn check_allowed_host(credential: &CredentialRecord, url: &Url) -> Result<(), ApiError> {
    let not_allowed = || {
        ApiError::new(
            ErrorCode::HostNotAllowed,
            "the upstream host is not in this credential's allow-list; an admin can add it in the Latchkey app",
        )
    };
    let host = url.host_str().ok_or_else(not_allowed)?.to_ascii_lowercase();
    match url.scheme() {
        "https" => {}
        "http" if crate::upstream::is_loopback_host(&host) => {}
        _ => return Err(not_allowed()),
    }
    let with_port = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.clone(),
    };
    let allowed = credential.allowed_hosts.iter().any(|pattern| {
        let pattern = pattern.to_ascii_lowercase();
        match pattern.strip_prefix("*.") {
            // A wildcard names hosts on the scheme's default port only.
            Some(suffix) => url.port().is_none() && host.ends_with(&format!(".{suffix}")),
            None => pattern == with_port || (url.port().is_none() && pattern == host),
        }
    });
    if allowed { Ok(()) } else { Err(not_allowed()) }
}

/// The headers sent upstream: the agent's, minus hop-by-hop headers, the agent token, the
/// capability and the broker's own `wait` preference, plus the injected credential.
pub(crate) fn upstream_headers(
    incoming: &HeaderMap,
    injection: &Injection,
    secret: &SecretBytes,
) -> Result<HeaderMap, ApiError> {
    let mut headers = HeaderMap::with_capacity(incoming.len() + 1);
    let connection = incoming.get_all(axum::http::header::CONNECTION);
    for (name, value) in incoming {
        let name_str = name.as_str();
        if DROPPED_REQUEST_HEADERS.contains(&name_str)
            || TOKEN_HEADERS.contains(&name_str)
            || named_by(&connection, name_str)
        {
            continue;
        }
        if name == HeaderName::from_static("prefer") {
            if let Some(value) = without_wait_preference(value) {
                headers.append(name.clone(), value);
            }
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    if let Injection::Header { name, prefix } = injection {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ApiError::internal(&"credential injection header is not a valid name"))?;
        let mut value = Zeroizing::new(Vec::with_capacity(prefix.len() + secret.len()));
        value.extend_from_slice(prefix.as_bytes());
        value.extend_from_slice(secret.expose_secret());
        let mut value = HeaderValue::from_bytes(&value).map_err(|_| {
            ApiError::new(
                ErrorCode::UpstreamFailed,
                "the stored credential cannot be sent in a header; reconnect it",
            )
        })?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    Ok(headers)
}

/// Whether `name` is one of the headers the sender's `Connection` header lists: those are for
/// this hop only (RFC 9110 §7.6.1) and a proxy removes them.
fn named_by(connection: &GetAll<'_, HeaderValue>, name: &str) -> bool {
    connection.iter().any(|value| {
        value.to_str().is_ok_and(|text| {
            text.split(',').any(|option| option.trim().eq_ignore_ascii_case(name))
        })
    })
}

/// A `Prefer` header value (RFC 7240) without its `wait` preferences, which ask the broker how
/// long to hold a call for approval and are not the upstream's to act on; `None` when nothing
/// else is left. Other preferences (`return=minimal`, `respond-async`, ...) pass unchanged, and
/// a value that is not text passes as it came.
fn without_wait_preference(value: &HeaderValue) -> Option<HeaderValue> {
    let Ok(text) = value.to_str() else { return Some(value.clone()) };
    let is_wait = |preference: &str| {
        let token = preference.split(';').next().unwrap_or_default();
        let name = token.split('=').next().unwrap_or_default();
        name.trim().eq_ignore_ascii_case("wait")
    };
    if !text.split(',').any(is_wait) {
        return Some(value.clone());
    }
    let kept: Vec<&str> =
        text.split(',').filter(|p| !is_wait(p)).map(str::trim).filter(|p| !p.is_empty()).collect();
    if kept.is_empty() {
        return None;
    }
    // Every part came from a valid header value and the separator is plain ASCII.
    HeaderValue::from_str(&kept.join(", ")).ok()
}

/// Adds a query-parameter credential to the URL.
pub(crate) fn inject_query(
    url: &mut Url,
    injection: &Injection,
    secret: &SecretBytes,
) -> Result<(), ApiError> {
    if let Injection::Query { name } = injection {
        let value = std::str::from_utf8(secret.expose_secret()).map_err(|_| {
            ApiError::new(
                ErrorCode::UpstreamFailed,
                "the stored credential cannot be sent in a URL; reconnect it",
            )
        })?;
        url.query_pairs_mut().append_pair(name, value);
    }
    Ok(())
}

/// The agent's request body for the upstream: none for a request without one (a `GET` goes out
/// without `Transfer-Encoding` or a length), otherwise the body capped at [`MAX_REQUEST_BODY`]:
/// past the cap it fails and sets `too_large`, so the caller can answer 413 instead of a generic
/// upstream failure.
pub(crate) fn request_body(body: Body, too_large: Arc<AtomicBool>) -> Body {
    if body.size_hint().exact() == Some(0) {
        return Body::empty();
    }
    Body::new(Capped { inner: body, seen: 0, too_large })
}

/// A request body that fails once more than [`MAX_REQUEST_BODY`] bytes have passed.
struct Capped {
    inner: Body,
    seen: u64,
    too_large: Arc<AtomicBool>,
}

impl HttpBody for Capped {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(std::io::Error::other(e)))),
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        if let Some(data) = frame.data_ref() {
            this.seen = this.seen.saturating_add(data.len() as u64);
            if this.seen > MAX_REQUEST_BODY {
                this.too_large.store(true, Ordering::SeqCst);
                return Poll::Ready(Some(Err(std::io::Error::other("request body too large"))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Turns the upstream response into the agent's: hop-by-hop headers dropped, any header or body
/// bytes equal to one of `secrets` replaced by [`REDACTED`], body capped at [`MAX_RESPONSE_BODY`].
pub(crate) fn agent_response(
    upstream: axum::http::Response<UpstreamBody>,
    secrets: Vec<Zeroizing<Vec<u8>>>,
) -> Response {
    let (parts, body) = upstream.into_parts();
    let mut headers = HeaderMap::with_capacity(parts.headers.len());
    let connection = parts.headers.get_all(axum::http::header::CONNECTION);
    for (name, value) in &parts.headers {
        if DROPPED_RESPONSE_HEADERS.contains(&name.as_str()) || named_by(&connection, name.as_str())
        {
            continue;
        }
        let bytes = value.as_bytes();
        if secrets.iter().any(|s| !s.is_empty() && contains(bytes, s)) {
            headers.append(name.clone(), HeaderValue::from_static("[REDACTED by Latchkey]"));
        } else {
            headers.append(name.clone(), value.clone());
        }
    }
    let body = Redactor::new(BodyDataStream::new(body), secrets);
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = parts.status;
    *response.headers_mut() = headers;
    response
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A stream adapter that replaces every occurrence of any secret with [`REDACTED`], including
/// occurrences split across chunks: it holds back the last `longest secret - 1` bytes of each
/// chunk until the next one arrives.
pub(crate) struct Redactor<S> {
    inner: S,
    secrets: Vec<Zeroizing<Vec<u8>>>,
    carry: Zeroizing<Vec<u8>>,
    hold: usize,
    sent: u64,
    done: bool,
}

impl<S> Redactor<S> {
    pub(crate) fn new(inner: S, secrets: Vec<Zeroizing<Vec<u8>>>) -> Self {
        let secrets: Vec<_> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        let hold = secrets.iter().map(|s| s.len()).max().unwrap_or(1).saturating_sub(1);
        Self { inner, secrets, carry: Zeroizing::new(Vec::new()), hold, sent: 0, done: false }
    }

    /// Replaces every secret in `buf`, returning the bytes safe to emit now and keeping the tail.
    fn process(&mut self, chunk: &[u8], last: bool) -> Bytes {
        self.carry.extend_from_slice(chunk);
        let mut out = BytesMut::with_capacity(self.carry.len());
        let buf = std::mem::take(&mut *self.carry);
        let buf = Zeroizing::new(buf);
        let mut i = 0;
        while i < buf.len() {
            // Copy the run up to the next byte that starts some secret in one go.
            let next = buf[i..]
                .iter()
                .position(|b| self.secrets.iter().any(|s| s.first() == Some(b)))
                .map_or(buf.len(), |offset| i + offset);
            out.extend_from_slice(&buf[i..next]);
            i = next;
            if i == buf.len() {
                break;
            }
            if let Some(len) =
                self.secrets.iter().find(|s| buf[i..].starts_with(s)).map(|s| s.len())
            {
                out.extend_from_slice(REDACTED);
                i += len;
                continue;
            }
            // A possible partial match at the end: keep it for the next chunk.
            let remaining = buf.len() - i;
            if !last
                && remaining <= self.hold
                && self.secrets.iter().any(|s| s.starts_with(&buf[i..]))
            {
                self.carry.extend_from_slice(&buf[i..]);
                break;
            }
            out.extend_from_slice(&buf[i..=i]);
            i += 1;
        }
        out.freeze()
    }
}

impl<S, E> Stream for Redactor<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                let out = this.process(&chunk, false);
                this.sent = this.sent.saturating_add(out.len() as u64);
                if this.sent > MAX_RESPONSE_BODY {
                    this.done = true;
                    tracing::warn!("upstream response longer than the proxy's limit; cut off");
                    return Poll::Ready(Some(Err(std::io::Error::other("response too large"))));
                }
                Poll::Ready(Some(Ok(out)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                tracing::warn!(error = %e, "upstream response body failed");
                Poll::Ready(Some(Err(std::io::Error::other("upstream body failed"))))
            }
            Poll::Ready(None) => {
                this.done = true;
                let rest = this.process(&[], true);
                if rest.is_empty() { Poll::Ready(None) } else { Poll::Ready(Some(Ok(rest))) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn paths_are_normalised_as_rfc_3986_says_before_anything_reads_them() {
        use super::normalize_path;
        let cases = [
            ("/orgs/acme/members", "/orgs/acme/members"),
            ("/orgs/acme/%6Dembers", "/orgs/acme/members"),
            ("/orgs/acme/%6dembers", "/orgs/acme/members"),
            ("/%7Euser/a%2Db%5Fc", "/~user/a-b_c"),
            ("/search/caf%c3%a9", "/search/caf%C3%A9"),
            ("/a%20b/%2fc", "/a%20b/%2Fc"),
            ("/a/%2e%2E/b", "/a/../b"),
            ("/", "/"),
        ];
        for (raw, normal) in cases {
            assert_eq!(normalize_path(raw).expect(raw), normal, "{raw} reads as {normal} upstream");
        }
        for malformed in ["/a%", "/a%4", "/a%G1", "/a%%41", "/%zz/b"] {
            let error = normalize_path(malformed).expect_err(malformed);
            assert_eq!(error.code, crate::error::ErrorCode::BadRequest, "{malformed}");
            assert!(error.message.contains("%25"), "the message says how to send a %: {error:?}");
        }
    }

    use futures_util::StreamExt as _;

    use super::*;

    fn hosts_allowed(patterns: &[&str], url: &str) -> bool {
        let credential = CredentialRecord {
            allowed_hosts: patterns.iter().map(|p| (*p).to_owned()).collect(),
            ..crate::store::credentials::CredentialRecord::example()
        };
        check_allowed_host(&credential, &Url::parse(url).unwrap()).is_ok()
    }

    #[test]
    fn the_wait_preference_is_the_brokers_and_others_pass_upstream() {
        let sent = |prefer: &[&str]| {
            let mut incoming = HeaderMap::new();
            for value in prefer {
                incoming.append("prefer", HeaderValue::from_str(value).unwrap());
            }
            let secret = SecretBytes::new(b"canary-secret".to_vec());
            let injection =
                Injection::Header { name: "x-api-key".to_owned(), prefix: String::new() };
            let headers = upstream_headers(&incoming, &injection, &secret).unwrap();
            headers
                .get_all("prefer")
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert!(sent(&["wait=30"]).is_empty(), "a lone wait preference is not forwarded at all");
        assert_eq!(
            sent(&["return=minimal, wait=5", "respond-async"]),
            ["return=minimal", "respond-async"],
            "other preferences reach the upstream unchanged, in order"
        );
        assert_eq!(
            sent(&["respond-async; foo=bar, WAIT=10; x=y, handling=strict"]),
            ["respond-async; foo=bar, handling=strict"],
            "wait is matched case-insensitively and removed with its parameters"
        );
        assert_eq!(
            sent(&["waiting=1"]),
            ["waiting=1"],
            "only the preference named wait is the broker's"
        );
    }

    #[test]
    fn connection_specific_headers_the_token_and_the_capability_stay_with_the_broker() {
        let mut incoming = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("host", "broker.internal"),
            ("content-length", "2"),
            ("accept-encoding", "gzip"),
            ("proxy-authorization", "Basic c2VjcmV0"),
            ("authorization", "Bearer lk_agent_token"),
            (CAPABILITY_HEADER, "capability"),
            ("content-type", "application/json"),
            ("x-request-id", "r-1"),
            ("x-private", "for the broker's hop only"),
        ] {
            incoming.append(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        let secret = SecretBytes::new(b"canary-secret".to_vec());
        let injection = Injection::Header { name: "x-api-key".to_owned(), prefix: String::new() };
        let sent = upstream_headers(&incoming, &injection, &secret).unwrap();
        let mut names: Vec<&str> = sent.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["content-type", "x-api-key", "x-request-id"],
            "only end-to-end headers and the injected credential go upstream: not the ones \
             `Connection` names, and none an HTTP/2 upstream would refuse"
        );
    }

    #[test]
    fn the_host_allow_list_matches_exact_hosts_ports_and_default_port_wildcards() {
        assert!(hosts_allowed(&["api.github.com"], "https://api.github.com/user"));
        assert!(
            !hosts_allowed(&["api.github.com"], "https://api.github.com:8443/user"),
            "another port"
        );
        assert!(!hosts_allowed(&["api.github.com"], "https://evil.com/user"));
        assert!(
            !hosts_allowed(&["api.github.com"], "https://api.github.com.evil.com/"),
            "suffix trick"
        );
        assert!(hosts_allowed(&["*.googleapis.com"], "https://www.googleapis.com/x"));
        assert!(
            !hosts_allowed(&["*.googleapis.com"], "https://googleapis.com/x"),
            "wildcard needs a label"
        );
        assert!(
            !hosts_allowed(&["*.googleapis.com"], "https://www.googleapis.com:444/x"),
            "wildcard: default port only"
        );
        assert!(!hosts_allowed(&["*.example.com"], "https://evilexample.com/"));
        assert!(hosts_allowed(&["127.0.0.1:8080"], "http://127.0.0.1:8080/x"));
        assert!(
            !hosts_allowed(&["example.com"], "http://example.com/x"),
            "plain http only on loopback"
        );
    }

    async fn redact(chunks: &[&[u8]], secret: &[u8]) -> Vec<u8> {
        let owned: Vec<Result<Bytes, std::io::Error>> =
            chunks.iter().map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        let stream = futures_util::stream::iter(owned);
        let mut redactor = Redactor::new(stream, vec![Zeroizing::new(secret.to_vec())]);
        let mut out = Vec::new();
        while let Some(chunk) = redactor.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn an_echoed_secret_is_removed_even_when_split_across_chunks() {
        let secret = b"ghp_SECRET123";
        for split in 0..=secret.len() {
            let mut first = b"{\"echo\":\"".to_vec();
            first.extend_from_slice(&secret[..split]);
            let mut second = secret[split..].to_vec();
            second.extend_from_slice(b"\"}");
            let out = redact(&[&first, &second], secret).await;
            assert_eq!(out, b"{\"echo\":\"[REDACTED by Latchkey]\"}", "split at {split}");
        }
    }

    #[tokio::test]
    async fn text_without_the_secret_passes_unchanged_including_partial_prefixes() {
        let out = redact(&[b"ghp_SEC", b"RE", b"T12 and ghp_"], b"ghp_SECRET123").await;
        assert_eq!(out, b"ghp_SECRET12 and ghp_", "a prefix that never completes is not redacted");
        let many: Vec<&[u8]> = vec![b"a"; 100];
        assert_eq!(redact(&many, b"ghp_SECRET123").await, vec![b'a'; 100]);
    }

    #[tokio::test]
    async fn repeated_and_adjacent_echoes_are_all_removed() {
        let out = redact(&[b"xghp_Aghp_Ay", b"ghp_A"], b"ghp_A").await;
        assert_eq!(out, [b"x".as_slice(), REDACTED, REDACTED, b"y", REDACTED].concat());
    }
}
