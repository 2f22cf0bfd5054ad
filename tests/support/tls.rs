//! TLS peers for tests on 127.0.0.1: a throwaway certificate authority, server certificates it
//! issues, and the server-side TLS configuration that presents one (HTTP/2 and HTTP/1.1 offered
//! by ALPN).

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate authority made for one test.
pub(crate) struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A server certificate and its key.
pub(crate) struct ServerCert {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
    /// The same chain and key in PEM.
    pem: (String, String),
}

impl TestCa {
    pub(crate) fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("CA key");
        Self { issuer: CertifiedIssuer::self_signed(params, key).expect("self-signed CA") }
    }

    /// The CA's certificate in PEM, as an operator hands it to `--upstream-ca` or a trust store.
    pub(crate) fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses), valid until `not_after`
    /// (year, month, day; by default far in the future).
    pub(crate) fn issue(&self, names: &[&str], not_after: Option<(i32, u8, u8)>) -> ServerCert {
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
            pem: (cert.pem(), key.serialize_pem()),
        }
    }
}

impl ServerCert {
    /// The chain and key in PEM, as an operator hands them to `--tls-cert` and `--tls-key`.
    pub(crate) fn pem(&self) -> (String, String) {
        self.pem.clone()
    }

    /// A TLS acceptor presenting this certificate, offering HTTP/2 and HTTP/1.1.
    pub(crate) fn acceptor(self) -> tokio_rustls::TlsAcceptor {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(self.chain, self.key)
            .expect("server certificate and key");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}
