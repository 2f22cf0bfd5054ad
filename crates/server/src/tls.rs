//! TLS on both sides of the broker.
//!
//! - Serving: [`ServerTls`] (`--tls-cert`, `--tls-key`) terminates TLS on the API listener itself,
//!   with HTTP/2 and HTTP/1.1 offered by ALPN, for a team server without a load balancer in
//!   front. Handshakes run beside the accept loop, each bounded in time, so a slow or silent
//!   client delays nobody else. A renewed certificate replaces the served one without a restart
//!   (`SIGHUP` to the binary).
//! - Upstream calls: extra certificate authorities an operator trusts on top of the system's (an
//!   API behind a private CA), and the agent's message when a handshake fails (what failed is
//!   read by `latchkey_core::tls`).
//!
//! Upstream certificates are verified by the platform verifier (the system's trust store on
//! Linux, the OS verifier on macOS and Windows). [`UpstreamRoots`] adds anchors to it; it never
//! replaces it and never turns verification off.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use latchkey_core::tls::{TlsProblem, tls_problem};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

use crate::metrics::Handshake;

/// Certificate authorities trusted for upstream calls in addition to the system's, read from a
/// PEM bundle (`--upstream-ca`); devices read theirs for the team server the same way.
pub use latchkey_core::tls::{
    TrustAnchors as UpstreamRoots, TrustAnchorsError as UpstreamRootsError,
};

/// The API listener's certificate chain and private key, ready to serve. Clones share one
/// current configuration: [`ServerTls::replace_with`] on any clone (a renewed certificate)
/// applies to every handshake that starts afterwards, while established connections go on.
#[derive(Clone)]
pub struct ServerTls {
    current: Arc<std::sync::RwLock<Arc<rustls::ServerConfig>>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls { .. }")
    }
}

/// A certificate chain and key that cannot serve TLS.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerTlsError {
    /// The certificate file holds no certificate, or damaged PEM.
    #[error("the certificate file holds no usable PEM certificate")]
    NoCertificate,
    /// The key file holds no private key (PKCS#8, PKCS#1 or SEC1 PEM), or damaged PEM.
    #[error("the key file holds no usable PEM private key")]
    NoKey,
    /// The key file holds more than one private key.
    #[error("the key file holds more than one private key; keep only the certificate's")]
    SeveralKeys,
    /// The key is not the certificate's, or cannot be used.
    #[error("the key does not fit the certificate: {0}")]
    Mismatch(String),
}

impl ServerTls {
    /// A TLS server configuration from a PEM certificate chain (the server's certificate first)
    /// and its PEM private key. Nothing of the key reaches an error message.
    pub fn from_pem(chain: &[u8], key: &[u8]) -> Result<Self, ServerTlsError> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain)
            .collect::<Result<_, _>>()
            .map_err(|_| ServerTlsError::NoCertificate)?;
        if certs.is_empty() {
            return Err(ServerTlsError::NoCertificate);
        }
        let mut keys = PrivateKeyDer::pem_slice_iter(key);
        let private = match keys.next() {
            Some(Ok(private)) => private,
            _ => return Err(ServerTlsError::NoKey),
        };
        if keys.next().is_some() {
            return Err(ServerTlsError::SeveralKeys);
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ServerTlsError::Mismatch(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, private)
            .map_err(|e| ServerTlsError::Mismatch(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self { current: Arc::new(std::sync::RwLock::new(Arc::new(config))) })
    }

    /// Serves `renewed`'s certificate and key from the next handshake on.
    pub fn replace_with(&self, renewed: &ServerTls) {
        let config = renewed.config();
        // A poisoned lock only means a panic elsewhere while swapping one `Arc` for another;
        // the value inside is whole either way.
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = config;
    }

    fn config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// How long a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TCP listener whose connections arrive with their TLS handshake done. Handshakes run in
/// their own tasks (each bounded by [`HANDSHAKE_TIMEOUT`]); a failed one is logged and dropped.
#[derive(Debug)]
pub(crate) struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub(crate) fn new(
        listener: TcpListener,
        tls: &ServerTls,
        metrics: crate::metrics::Metrics,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let tls = tls.clone();
        let (send, ready) = mpsc::channel(64);
        let accepting = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                crate::connections::keep_alive(&tcp);
                // The configuration current now: a certificate replaced since applies.
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
                let send = send.clone();
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            metrics.tls_handshake(Handshake::Completed);
                            let _ = send.send((stream, peer)).await;
                        }
                        Ok(Err(error)) => {
                            metrics.tls_handshake(Handshake::Failed);
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                        }
                        Err(_) => {
                            metrics.tls_handshake(Handshake::TimedOut);
                            tracing::debug!(%peer, "TLS handshake timed out");
                        }
                    }
                });
            }
        });
        Ok(Self { local, ready, accepting })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accepting task ended (it loops until aborted): accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The agent-facing message for a call to `what` ("the upstream API", "the provider's token
/// endpoint") that failed in its TLS handshake, or `None` when `error` is not a TLS failure.
pub(crate) fn failure_message(
    error: &(dyn std::error::Error + 'static),
    what: &str,
) -> Option<String> {
    let problem = tls_problem(error)?;
    let hint = match problem {
        TlsProblem::Certificate(_) => {
            "if it uses a private certificate authority, the broker's operator can trust it with --upstream-ca"
        }
        _ => "check the credential's base URL",
    };
    Some(format!("{}; {hint}", problem.explain(what, "the broker")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_without_certificates_or_with_keys_or_damage_are_refused_by_name() {
        assert_eq!(UpstreamRoots::from_pem(b"").unwrap_err(), UpstreamRootsError::Empty);
        assert_eq!(
            UpstreamRoots::from_pem(b"not pem at all\n").unwrap_err(),
            UpstreamRootsError::Empty,
            "text without PEM blocks holds no certificate"
        );
        let key =
            b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n";
        let refused = UpstreamRoots::from_pem(key).unwrap_err();
        assert_eq!(refused, UpstreamRootsError::PrivateKey);
        assert!(
            !refused.to_string().contains("MC4CAQ"),
            "the refusal must not quote the key: {refused}"
        );
        let unterminated = b"-----BEGIN CERTIFICATE-----\nMIIB\n";
        assert_eq!(
            UpstreamRoots::from_pem(unterminated).unwrap_err(),
            UpstreamRootsError::Pem { after: 0 }
        );
        let not_x509 = b"-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n";
        match UpstreamRoots::from_pem(not_x509).unwrap_err() {
            UpstreamRootsError::Certificate { number: 1, .. } => {}
            other => panic!("a block that is not X.509 must be named as certificate 1: {other:?}"),
        }
    }
}
