//! An HTTPS upstream on 127.0.0.1: a throwaway certificate authority, server certificates it
//! issues (or a stranger issues), and a server speaking HTTP/2 and HTTP/1.1 over TLS (chosen by
//! ALPN) that records every request it receives.

use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate authority made for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A server certificate and its key.
pub struct ServerCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("CA key");
        Self { issuer: CertifiedIssuer::self_signed(params, key).expect("self-signed CA") }
    }

    /// The CA's certificate in PEM, as an operator would hand it to `--upstream-ca`.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses), valid until `not_after`
    /// (the default: far in the future).
    pub fn issue(&self, names: &[&str], not_after: Option<(i32, u8, u8)>) -> ServerCert {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("server params");
        if let Some((year, month, day)) = not_after {
            params.not_before = rcgen::date_time_ymd(year - 1, month, day);
            params.not_after = rcgen::date_time_ymd(year, month, day);
        }
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &self.issuer).expect("server certificate");
        ServerCert {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }
}

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub version: hyper::Version,
    pub path: String,
    pub authorization: Option<String>,
}

/// The HTTPS upstream: answers `200 {"ok":true}` to every request and records it.
#[derive(Clone, Default)]
pub struct TlsUpstream {
    seen: Arc<Mutex<Vec<Seen>>>,
    handshakes_failed: Arc<Mutex<Vec<String>>>,
}

impl TlsUpstream {
    /// Serves with `cert` on a fresh 127.0.0.1 port until the test's runtime ends; returns the
    /// upstream and its port.
    pub async fn start(cert: ServerCert) -> (Self, u16) {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(cert.chain, cert.key)
            .expect("server certificate and key");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let port = listener.local_addr().expect("addr").port();
        let upstream = Self::default();
        let server = upstream.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let acceptor = acceptor.clone();
                let server = server.clone();
                tokio::spawn(async move {
                    let tls = match acceptor.accept(tcp).await {
                        Ok(tls) => tls,
                        Err(e) => {
                            server.handshakes_failed.lock().expect("lock").push(e.to_string());
                            return;
                        }
                    };
                    let seen = Arc::clone(&server.seen);
                    let service = hyper::service::service_fn(move |request| {
                        let seen = Arc::clone(&seen);
                        async move { Ok::<_, std::convert::Infallible>(answer(&seen, &request)) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
        (upstream, port)
    }

    /// Every request that reached the upstream, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// The upstream's own account of each handshake that failed.
    pub fn handshakes_failed(&self) -> Vec<String> {
        self.handshakes_failed.lock().expect("lock").clone()
    }
}

fn answer(seen: &Mutex<Vec<Seen>>, request: &hyper::Request<Incoming>) -> hyper::Response<String> {
    seen.lock().expect("lock").push(Seen {
        version: request.version(),
        path: request.uri().path().to_owned(),
        authorization: request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    });
    let mut response = hyper::Response::new(r#"{"ok":true}"#.to_owned());
    response
        .headers_mut()
        .insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
    response
}
