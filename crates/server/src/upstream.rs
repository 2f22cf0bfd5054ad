//! The HTTP client for every call the broker makes upstream: agents' calls to APIs and its own
//! calls to token endpoints.
//!
//! hyper's pooled client (HTTP/2 or HTTP/1.1, chosen by ALPN) over rustls, with the policy a
//! credential broker needs spelled out here rather than left to a general-purpose client's
//! defaults:
//!
//! - **TLS** is always verified: the platform verifier (the system's trust store on Linux, the
//!   OS verifier on macOS and Windows) plus the operator's [`UpstreamRoots`], never instead of
//!   it. Plain `http` is sent only to a loopback host; anything else is refused before a
//!   connection is made.
//! - **Redirects** are never followed: this client has no redirect logic, so a `3xx` goes back
//!   to the agent as it came and a compromised upstream cannot bounce a credential elsewhere.
//! - **Egress proxy**: the configured [`ProxyUrl`] (or, without one, the standard variables
//!   `HTTPS_PROXY`/`ALL_PROXY`, with curl's rules) carries every `https` call through a `CONNECT`
//!   tunnel, so the proxy sees host names and ciphertext only; hosts in `NO_PROXY` go direct.
//!   Loopback `http` always goes direct: the proxy's loopback is not the broker's.
//! - **Time**: a connection (TCP, tunnel and TLS handshake together) within [`CONNECT_TIMEOUT`];
//!   the response head within [`READ_TIMEOUT`] of sending, and each later read of the body within
//!   [`READ_TIMEOUT`] of the one before. There is no total limit, so a stream may run long.
//!
//! Errors never carry the request's URL (its query may hold a credential) or headers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::uri::Scheme;
use axum::http::{HeaderValue, Request, Response, Uri, header};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tower_service::Service;

use crate::config::ProxyUrl;
use crate::tls::UpstreamRoots;

/// How long a new connection may take: TCP, the proxy's tunnel and the TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the upstream may stay silent: before its response head, and between two reads of
/// its body.
pub const READ_TIMEOUT: Duration = Duration::from_secs(120);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

type PooledClient = Client<HttpsConnector<Connector>, Body>;

/// The client for upstream calls. Cheap to clone: clones share their connection pools.
///
/// Each thread that sends gets a pool of its own, so on a single-threaded runtime per core
/// ([`crate::Broker::with_serving_threads`]) a call's upstream connection is driven on the
/// thread that handles the call, never woken on another.
#[derive(Clone)]
pub struct UpstreamClient {
    pools: Arc<thread_local::ThreadLocal<PooledClient>>,
    builder: hyper_util::client::legacy::Builder,
    connector: HttpsConnector<Connector>,
    user_agent: HeaderValue,
    read_timeout: Duration,
}

impl std::fmt::Debug for UpstreamClient {
    // The proxy's URL may carry a password; nothing of the configuration is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamClient { .. }")
    }
}

/// How long each stage may take; [`CONNECT_TIMEOUT`] and [`READ_TIMEOUT`] outside tests.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    connect: Duration,
    read: Duration,
}

/// The client could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamClientError {
    /// The platform's certificate verifier could not be set up with the extra authorities.
    #[error("TLS verifier: {0}")]
    Verifier(#[source] rustls::Error),
    /// The TLS library refused the protocol versions (an impossible build).
    #[error("TLS configuration: {0}")]
    Tls(#[source] rustls::Error),
}

/// An upstream call that produced no response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// Plain `http` to a host that is not loopback, or a URL without a host.
    #[error("plain http is sent only to a loopback host; use https")]
    NotAllowed,
    /// The upstream sent no response head within [`READ_TIMEOUT`] of the request.
    #[error("no response in time")]
    Timeout,
    /// No connection, or the exchange failed: the source says why (DNS, refused, TLS, proxy).
    #[error("{}", chain(.0))]
    Failed(#[source] hyper_util::client::legacy::Error),
}

/// A failure on the way through the egress proxy: reaching it, its TLS handshake, or its answer
/// to `CONNECT`. Marks the error so the caller can say it was the proxy, not the upstream.
#[derive(Debug, thiserror::Error)]
#[error("egress proxy")]
struct ThroughProxy(#[source] BoxError);

impl UpstreamError {
    /// Whether the upstream (or the connection to it) ran out of time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout)
            || self.causes().any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            })
    }

    /// hyper's error and everything under it (nothing for the refusals made before sending).
    fn causes(&self) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
        let failed: Option<&(dyn std::error::Error + 'static)> = match self {
            Self::Failed(e) => Some(e),
            Self::NotAllowed | Self::Timeout => None,
        };
        std::iter::successors(failed, |cause| cause.source())
    }

    /// Whether the call failed on the way through the egress proxy (its connection, its
    /// certificate, or its refusal to open a tunnel) rather than at the upstream.
    pub fn at_proxy(&self) -> bool {
        self.through_proxy().is_some()
    }

    fn through_proxy(&self) -> Option<&ThroughProxy> {
        self.causes().find_map(|cause| cause.downcast_ref::<ThroughProxy>())
    }

    /// What to tell whoever asked for the call, naming the far end as `what` ("the upstream
    /// API"): a refused certificate and what to do about it, a timeout, the egress proxy's
    /// refusal, or an unreachable host. Never the URL, never a header.
    pub fn explain(&self, what: &str) -> String {
        let proxy = "the broker's egress proxy";
        if let Some(through) = self.through_proxy() {
            if let Some(message) = crate::tls::failure_message(self, proxy) {
                return message;
            }
            if self.is_timeout() {
                return format!("{proxy} did not answer in time; retry later");
            }
            return format!(
                "{proxy} did not open a tunnel to {what} ({}); the broker's operator should check --upstream-proxy",
                chain(through.0.as_ref())
            );
        }
        if let Some(message) = crate::tls::failure_message(self, what) {
            return message;
        }
        if matches!(self, Self::NotAllowed) {
            return format!("{what} is plain http on a host that is not loopback; use https");
        }
        if self.is_timeout() {
            return format!("{what} did not answer in time; retry later");
        }
        format!("{what} could not be reached; retry later")
    }
}

/// `error` and its sources, joined by `: ` (hyper's own message alone says only "client
/// error"). `UpstreamError::Failed` shows this, so a log line says what failed.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let causes: Vec<String> = std::iter::successors(Some(error), |cause| cause.source())
        .map(ToString::to_string)
        .collect();
    causes.join(": ")
}

impl UpstreamClient {
    /// A client trusting the system's authorities plus `roots`, sending `https` calls through
    /// `proxy` when given (else through what the standard variables name).
    pub fn new(
        roots: Option<&UpstreamRoots>,
        proxy: Option<&ProxyUrl>,
    ) -> Result<Self, UpstreamClientError> {
        Self::build(roots, proxy, Timeouts { connect: CONNECT_TIMEOUT, read: READ_TIMEOUT })
    }

    fn build(
        roots: Option<&UpstreamRoots>,
        proxy: Option<&ProxyUrl>,
        timeouts: Timeouts,
    ) -> Result<Self, UpstreamClientError> {
        let tls = tls_config(roots)?;
        let matcher = match proxy {
            // Hosts in NO_PROXY (the standard variable) still go direct.
            Some(proxy) => Matcher::builder().all(proxy.expose()).no(no_proxy_from_env()).build(),
            None => Matcher::from_env(),
        };
        let mut tcp = HttpConnector::new();
        // The TLS layer above asks for `https` destinations; this layer only opens the socket.
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_keepalive(Some(Duration::from_secs(15)));
        // A proxy that itself speaks TLS is reached over it, then tunnelled through.
        let to_proxy = HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp.clone());
        let connector =
            Connector { tcp, to_proxy, matcher: Arc::new(matcher), timeout: timeouts.connect };
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(connector);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90));
        let user_agent =
            HeaderValue::from_static(concat!("latchkey-broker/", env!("CARGO_PKG_VERSION")));
        Ok(Self {
            pools: Arc::default(),
            builder,
            connector: https,
            user_agent,
            read_timeout: timeouts.read,
        })
    }

    /// This thread's pooled client, built on its first call.
    fn pooled(&self) -> &PooledClient {
        self.pools.get_or(|| self.builder.build(self.connector.clone()))
    }

    /// Sends `request` and waits for the response head. The body arrives as it streams, each
    /// read bounded by [`READ_TIMEOUT`]. A request without a `User-Agent` gets the broker's.
    pub async fn send(
        &self,
        mut request: Request<Body>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        if !plain_http_allowed(request.uri()) {
            return Err(UpstreamError::NotAllowed);
        }
        request.headers_mut().entry(header::USER_AGENT).or_insert_with(|| self.user_agent.clone());
        let response = tokio::time::timeout(self.read_timeout, self.pooled().request(request))
            .await
            .map_err(|_| UpstreamError::Timeout)?
            .map_err(UpstreamError::Failed)?;
        Ok(response.map(|body| UpstreamBody::new(body, self.read_timeout)))
    }
}

/// `https`, or `http` to a loopback host.
fn plain_http_allowed(uri: &Uri) -> bool {
    match uri.scheme() {
        Some(scheme) if *scheme == Scheme::HTTPS => uri.host().is_some(),
        Some(scheme) if *scheme == Scheme::HTTP => uri.host().is_some_and(is_loopback_host),
        _ => false,
    }
}

/// Whether `host` (as a URL spells it) names this machine: the only hosts plain `http` may
/// reach, agents' upstreams and token endpoints alike.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    ["127.0.0.1", "localhost", "[::1]"].iter().any(|loopback| host.eq_ignore_ascii_case(loopback))
}

/// `NO_PROXY` (or `no_proxy`), as curl reads it.
fn no_proxy_from_env() -> String {
    ["NO_PROXY", "no_proxy"].iter().find_map(|name| std::env::var(name).ok()).unwrap_or_default()
}

/// rustls with the platform verifier plus `roots`, TLS 1.2 and 1.3.
fn tls_config(roots: Option<&UpstreamRoots>) -> Result<rustls::ClientConfig, UpstreamClientError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = match roots {
        Some(roots) => rustls_platform_verifier::Verifier::new_with_extra_roots(
            roots.certificates().iter().cloned(),
            Arc::clone(&provider),
        ),
        None => rustls_platform_verifier::Verifier::new(Arc::clone(&provider)),
    }
    .map_err(UpstreamClientError::Verifier)?;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(UpstreamClientError::Tls)?
        .dangerous()
        // Not a weakening: the platform verifier is the full verifier, with the system's roots.
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// Opens the TCP connection for a call: to the upstream itself, or to the egress proxy and
/// through a `CONNECT` tunnel. The TLS layer above then speaks to the upstream over it, so TLS
/// is end to end either way. The whole of it is bounded by [`CONNECT_TIMEOUT`].
#[derive(Clone)]
struct Connector {
    tcp: HttpConnector,
    to_proxy: HttpsConnector<HttpConnector>,
    matcher: Arc<Matcher>,
    timeout: Duration,
}

type Stream = MaybeHttpsStream<TokioIo<TcpStream>>;

impl Service<Uri> for Connector {
    type Response = Stream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Both connectors are always ready: each call opens its own socket.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, destination: Uri) -> Self::Future {
        let through = match destination.scheme() {
            Some(scheme) if *scheme == Scheme::HTTPS => self.matcher.intercept(&destination),
            _ => None,
        };
        let connecting: Self::Future = match through {
            None => {
                let mut tcp = self.tcp.clone();
                Box::pin(async move { Ok(MaybeHttpsStream::Http(tcp.call(destination).await?)) })
            }
            Some(proxy) => {
                let scheme = proxy.uri().scheme_str();
                if !matches!(scheme, Some("http" | "https")) {
                    return Box::pin(async {
                        Err("the egress proxy must be an http:// or https:// proxy".into())
                    });
                }
                let mut tunnel = Tunnel::new(proxy.uri().clone(), self.to_proxy.clone());
                if let Some(auth) = proxy.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                Box::pin(async move {
                    tunnel.call(destination).await.map_err(|e| ThroughProxy(Box::new(e)).into())
                })
            }
        };
        let timeout = self.timeout;
        Box::pin(async move {
            tokio::time::timeout(timeout, connecting).await.map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connection timed out")
            })?
        })
    }
}

/// An upstream response body whose every read must come within [`READ_TIMEOUT`] of the last.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Incoming,
    timeout: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl UpstreamBody {
    fn new(inner: Incoming, timeout: Duration) -> Self {
        Self { inner, timeout, deadline: Box::pin(tokio::time::sleep(timeout)) }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if frame.is_some() {
                    let next = tokio::time::Instant::now() + this.timeout;
                    this.deadline.as_mut().reset(next);
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the upstream stopped sending its answer",
                ))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use http_body_util::BodyExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;

    /// For the tests of timeouts: short, yet long against a loopback answer on a loaded machine.
    const SHORT: Timeouts =
        Timeouts { connect: Duration::from_millis(300), read: Duration::from_millis(1000) };

    fn client() -> UpstreamClient {
        UpstreamClient::new(None, None).unwrap()
    }

    fn impatient() -> UpstreamClient {
        UpstreamClient::build(None, None, SHORT).unwrap()
    }

    fn get(url: &str) -> Request<Body> {
        Request::get(url).body(Body::empty()).unwrap()
    }

    /// A loopback server that reads one request head, hands it to the test, and then runs
    /// `answer` on the connection.
    async fn serve<F, Fut>(answer: F) -> (String, tokio::sync::oneshot::Receiver<String>)
    where
        F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (head_tx, head_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut byte = [0_u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                    return;
                }
                head.push(byte[0]);
            }
            let _ = head_tx.send(String::from_utf8_lossy(&head).into_owned());
            answer(stream).await;
        });
        (url, head_rx)
    }

    #[test]
    fn plain_http_goes_only_to_loopback_and_https_anywhere() {
        let allowed = |uri: &str| plain_http_allowed(&uri.parse().unwrap());
        assert!(allowed("https://api.github.com/user"));
        assert!(allowed("http://127.0.0.1:8080/x"));
        assert!(allowed("http://localhost/x"));
        assert!(allowed("http://[::1]:9/x"));
        assert!(
            !allowed("http://example.com/token"),
            "a credential never crosses a network in clear"
        );
        assert!(
            !allowed("http://127.0.0.1.example.com/"),
            "a loopback-looking name is not loopback"
        );
        assert!(!allowed("ftp://127.0.0.1/"), "only http and https");
        assert!(!allowed("/relative"), "a URL without a scheme and host");
    }

    #[tokio::test]
    async fn plain_http_to_another_host_is_refused_before_any_connection() {
        let refused = client().send(get("http://example.invalid/token")).await.unwrap_err();
        assert!(matches!(refused, UpstreamError::NotAllowed), "refused up front: {refused}");
        assert!(!refused.is_timeout());
    }

    #[tokio::test]
    async fn the_brokers_user_agent_is_added_only_when_the_agent_sent_none() {
        for (sent, expected) in
            [(None, "latchkey-broker/"), (Some("openai-python/1.0"), "openai-python/1.0")]
        {
            let (url, head) = serve(|mut stream| async move {
                let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await;
            })
            .await;
            let mut request = get(&format!("{url}/v1"));
            if let Some(agent) = sent {
                request.headers_mut().insert(header::USER_AGENT, HeaderValue::from_static(agent));
            }
            let answer = client().send(request).await.unwrap();
            assert_eq!(answer.status(), 204);
            let head = head.await.unwrap().to_ascii_lowercase();
            let agents: Vec<&str> = head.lines().filter(|l| l.starts_with("user-agent:")).collect();
            assert_eq!(agents.len(), 1, "exactly one user-agent goes upstream: {head}");
            assert!(
                agents[0].contains(&expected.to_ascii_lowercase()),
                "sent {sent:?}, upstream saw {agents:?}"
            );
        }
    }

    #[tokio::test]
    async fn an_upstream_that_never_answers_times_out_with_a_timeout_error() {
        let (url, _head) = serve(|stream| async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(stream);
        })
        .await;
        let started = Instant::now();
        let failed = impatient().send(get(&url)).await.unwrap_err();
        assert!(matches!(failed, UpstreamError::Timeout), "{failed}");
        assert!(failed.is_timeout(), "reported as a timeout, so the agent is told to retry");
        assert!(started.elapsed() < Duration::from_secs(10), "bounded by the read timeout");
    }

    #[tokio::test]
    async fn a_body_that_stops_arriving_fails_but_a_slow_steady_one_completes() {
        // Head and three of ten bytes, then silence.
        let (url, _head) = serve(|mut stream| async move {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc").await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        })
        .await;
        let answer = impatient().send(get(&url)).await.unwrap();
        let failed = answer.into_body().collect().await.unwrap_err();
        let io = failed.downcast_ref::<std::io::Error>().expect("an I/O error");
        assert_eq!(io.kind(), std::io::ErrorKind::TimedOut, "{failed}");

        // One byte every quarter read-timeout: six in all, one and a half read timeouts in
        // total. The limit is on silence, not on the length of a stream.
        let (url, _head) = serve(|mut stream| async move {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\n").await;
            for byte in b"steady" {
                tokio::time::sleep(SHORT.read / 4).await;
                let _ = stream.write_all(&[*byte]).await;
            }
        })
        .await;
        let answer = impatient().send(get(&url)).await.unwrap();
        let body = answer.into_body().collect().await.expect("a steady stream is never cut off");
        assert_eq!(body.to_bytes(), "steady");
    }

    #[tokio::test]
    async fn a_proxy_that_never_opens_the_tunnel_is_a_connect_timeout() {
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy: ProxyUrl = format!("http://{}", silent.local_addr().unwrap()).parse().unwrap();
        let held = tokio::spawn(async move {
            let (stream, _) = silent.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(stream);
        });
        // A read timeout far longer than the connect timeout, so only the latter can fire.
        let timeouts = Timeouts { connect: SHORT.connect, read: Duration::from_secs(20) };
        let client = UpstreamClient::build(None, Some(&proxy), timeouts).unwrap();
        let started = Instant::now();
        let failed = client.send(get("https://api.example.com/v1")).await.unwrap_err();
        assert!(matches!(failed, UpstreamError::Failed(_)), "{failed}");
        assert!(
            failed.is_timeout(),
            "the tunnel's setup counts against the connect timeout: {failed}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        held.abort();
    }

    #[tokio::test]
    async fn a_proxy_that_refuses_the_tunnel_is_named_with_its_reason() {
        let (proxy, head) = serve(|mut stream| async move {
            let _ = stream.write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n").await;
        })
        .await;
        let proxy: ProxyUrl = proxy.parse().unwrap();
        let client = UpstreamClient::new(None, Some(&proxy)).unwrap();
        let failed = client.send(get("https://api.example.com/v1")).await.unwrap_err();
        assert!(
            head.await.unwrap().starts_with("CONNECT api.example.com:443 "),
            "a tunnel was asked for"
        );
        assert!(failed.at_proxy(), "{failed}");
        assert!(!failed.is_timeout(), "{failed}");
        let message = failed.explain("the upstream API");
        assert!(
            message
                .starts_with("the broker's egress proxy did not open a tunnel to the upstream API")
                && message.contains("proxy authorization required")
                && message.contains("--upstream-proxy"),
            "the proxy is named, with its reason and the setting to check: {message}"
        );

        // The same client's call to a loopback http upstream goes direct, not to the proxy.
        let (url, _head) = serve(|mut stream| async move {
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        })
        .await;
        let direct = client.send(get(&url)).await.unwrap();
        assert_eq!(direct.status(), 204, "loopback http bypasses the egress proxy");
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_not_blamed_on_a_proxy() {
        // A port nothing listens on: bind one, note it, close it.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let failed = client().send(get(&format!("http://{closed}/v1"))).await.unwrap_err();
        assert!(!failed.at_proxy() && !failed.is_timeout(), "{failed}");
        assert_eq!(
            failed.explain("the upstream API"),
            "the upstream API could not be reached; retry later"
        );
    }
}
