//! What a failed TLS handshake was, read out of an HTTP client's error chain, so the broker (for
//! upstream APIs) and devices (for the broker) can say "certificate from an untrusted authority"
//! instead of "could not connect" (pure inspection of error values); and [`TrustAnchors`], the
//! certificate authorities a client trusts besides the system's.

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::{PemObject as _, SectionKind};

/// Why a TLS connection was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsProblem {
    /// The peer's certificate was refused.
    Certificate(CertificateProblem),
    /// The handshake failed for another reason: no common protocol version or cipher suite, a
    /// peer that does not speak TLS on that port, an alert from the peer.
    Handshake,
}

impl TlsProblem {
    /// The problem as a sentence: `peer` ("the broker at https://…", "the upstream API") and
    /// `verifier`, who refused its certificate ("this computer", "the broker").
    pub fn explain(self, peer: &str, verifier: &str) -> String {
        match self {
            Self::Certificate(certificate) => format!(
                "{peer} presented a TLS certificate {verifier} refuses ({})",
                certificate.describe()
            ),
            Self::Handshake => format!(
                "the TLS handshake with {peer} failed (no common protocol, or it does not speak TLS on that port)"
            ),
        }
    }
}

/// Why a peer's certificate was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertificateProblem {
    /// Issued by an authority the verifier does not trust (a private CA, a self-signed
    /// certificate, or an interception box).
    UnknownIssuer,
    /// Not valid for the host name connected to.
    WrongName,
    /// Past its validity period.
    Expired,
    /// Before its validity period.
    NotYetValid,
    /// Revoked by its issuer.
    Revoked,
    /// Its signature does not verify, or uses an algorithm the verifier does not accept.
    BadSignature,
    /// Not issued for TLS servers.
    WrongPurpose,
    /// Refused for another reason.
    Other,
}

impl CertificateProblem {
    /// The problem in a few words, to follow "a certificate ...".
    pub fn describe(self) -> &'static str {
        match self {
            Self::UnknownIssuer => "issued by an authority that is not trusted here",
            Self::WrongName => "not valid for this host name",
            Self::Expired => "expired",
            Self::NotYetValid => "not valid yet",
            Self::Revoked => "revoked",
            Self::BadSignature => "its signature does not verify",
            Self::WrongPurpose => "not issued for TLS servers",
            Self::Other => "not acceptable",
        }
    }
}

/// Certificate authorities trusted in addition to the system's, read from a PEM bundle: the
/// broker's for upstream APIs (`--upstream-ca`), a device's for a team server behind a private
/// authority (`LATCHKEY_BROKER_CA`). They are added to the platform verifier's anchors; they
/// never replace them and never turn verification off.
#[derive(Clone, PartialEq, Eq)]
pub struct TrustAnchors {
    certs: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for TrustAnchors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustAnchors").field("certificates", &self.certs.len()).finish()
    }
}

/// A PEM bundle that cannot serve as trust anchors.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrustAnchorsError {
    /// The file could not be read.
    #[error("cannot read it: {0}")]
    Unreadable(String),
    /// The text holds no certificate.
    #[error("no certificate found; give one or more `-----BEGIN CERTIFICATE-----` blocks in PEM")]
    Empty,
    /// The text holds a private key: only the authorities' certificates are needed.
    #[error(
        "the file holds a private key; give only the certificate authorities' certificates and keep the key elsewhere"
    )]
    PrivateKey,
    /// A PEM block is malformed (its end line is missing, or its base64 is damaged).
    #[error(
        "malformed PEM after certificate {after}: a block's end line is missing or its base64 is damaged"
    )]
    Pem {
        /// How many certificates were read before the damage.
        after: usize,
    },
    /// A certificate does not parse as an X.509 trust anchor.
    #[error("certificate {number} is not a usable X.509 certificate authority: {reason}")]
    Certificate {
        /// Its position in the file, from 1.
        number: usize,
        /// The TLS library's explanation.
        reason: String,
    },
}

impl TrustAnchors {
    /// Reads the certificates of a PEM bundle, refusing one with no certificate, a private key,
    /// damaged PEM, or a certificate that cannot be a trust anchor.
    /// Lines are read without their surrounding whitespace, so a bundle pasted indented (from
    /// a YAML file, a chat message) reads as the same certificates.
    pub fn from_pem(pem: &[u8]) -> Result<Self, TrustAnchorsError> {
        let mut lines = Vec::with_capacity(pem.len());
        for line in pem.split(|&b| b == b'\n') {
            lines.extend_from_slice(line.trim_ascii());
            lines.push(b'\n');
        }
        let mut certs = Vec::new();
        for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(&lines) {
            let (kind, der) = section.map_err(|_| TrustAnchorsError::Pem { after: certs.len() })?;
            match kind {
                SectionKind::Certificate => certs.push(CertificateDer::from(der)),
                SectionKind::PrivateKey
                | SectionKind::RsaPrivateKey
                | SectionKind::EcPrivateKey => {
                    return Err(TrustAnchorsError::PrivateKey);
                }
                // Revocation lists, public keys and the like say nothing about trust here.
                _ => {}
            }
        }
        if certs.is_empty() {
            return Err(TrustAnchorsError::Empty);
        }
        // The platform verifier adds these to its root store the same way; checking each here
        // names the bad one when the file is read instead of failing the client's construction
        // later.
        let mut store = rustls::RootCertStore::empty();
        for (index, cert) in certs.iter().enumerate() {
            store.add(cert.clone()).map_err(|e| TrustAnchorsError::Certificate {
                number: index + 1,
                reason: e.to_string(),
            })?;
        }
        Ok(Self { certs })
    }

    /// Reads [`TrustAnchors::from_pem`] from a file.
    pub fn read(path: &std::path::Path) -> Result<Self, TrustAnchorsError> {
        let pem = std::fs::read(path).map_err(|e| TrustAnchorsError::Unreadable(e.to_string()))?;
        Self::from_pem(&pem)
    }

    /// The certificates, in the file's order.
    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    /// How many certificates the bundle holds.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// Whether the bundle is empty (never, once read).
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// The certificates alone as a PEM bundle (whatever else the text they were read from held
    /// is not kept), which [`TrustAnchors::from_pem`] reads back to the same anchors.
    pub fn to_pem(&self) -> String {
        use base64::Engine as _;

        let mut pem = String::new();
        for cert in &self.certs {
            pem.push_str("-----BEGIN CERTIFICATE-----\n");
            let encoded = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
            // Base64 is ASCII, so every 64-byte chunk is whole characters.
            for line in encoded.as_bytes().chunks(64) {
                pem.push_str(&String::from_utf8_lossy(line));
                pem.push('\n');
            }
            pem.push_str("-----END CERTIFICATE-----\n");
        }
        pem
    }

    /// Each certificate's SHA-256 fingerprint as `AB:CD:...` (the form `openssl x509
    /// -fingerprint -sha256` prints), in the bundle's order: what a person compares with the
    /// authority's published one.
    pub fn sha256_fingerprints(&self) -> Vec<String> {
        use sha2::Digest as _;

        self.certs
            .iter()
            .map(|cert| {
                let digest = sha2::Sha256::digest(cert.as_ref());
                let pairs: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
                pairs.join(":")
            })
            .collect()
    }
}

/// Finds a TLS failure in `error`'s chain of causes.
pub fn tls_problem(error: &(dyn std::error::Error + 'static)) -> Option<TlsProblem> {
    let mut next = Some(error);
    while let Some(current) = next {
        if let Some(tls) = as_rustls(current) {
            return Some(classify(tls));
        }
        next = current.source();
    }
    None
}

/// `error` as a rustls error: directly, or wrapped in `io::Error`s (how a TLS stream reports a
/// failed handshake, and a connector wraps that again; `io::Error::source` skips the wrapped
/// error, so each layer is unwrapped here).
fn as_rustls<'e>(error: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
    let mut current = error;
    loop {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        current = current.downcast_ref::<std::io::Error>()?.get_ref()?;
    }
}

fn classify(error: &rustls::Error) -> TlsProblem {
    use rustls::CertificateError as E;
    let rustls::Error::InvalidCertificate(problem) = error else {
        return TlsProblem::Handshake;
    };
    TlsProblem::Certificate(match problem {
        E::UnknownIssuer => CertificateProblem::UnknownIssuer,
        E::NotValidForName | E::NotValidForNameContext { .. } => CertificateProblem::WrongName,
        E::Expired | E::ExpiredContext { .. } => CertificateProblem::Expired,
        E::NotValidYet | E::NotValidYetContext { .. } => CertificateProblem::NotYetValid,
        E::Revoked => CertificateProblem::Revoked,
        E::BadSignature | E::UnsupportedSignatureAlgorithmContext { .. } => {
            CertificateProblem::BadSignature
        }
        E::InvalidPurpose | E::InvalidPurposeContext { .. } => CertificateProblem::WrongPurpose,
        E::Other(other) if windows_found_no_issuer(&other.to_string()) => {
            CertificateProblem::UnknownIssuer
        }
        _ => CertificateProblem::Other,
    })
}

/// Whether a refusal by Windows' certificate chain engine, as the platform verifier reports
/// the codes it does not map itself (the system's description, then "(os error N)"), says
/// that no chain to a trusted root could be built: `CERT_E_CHAINING` (0x800B010A), what a
/// private authority whose root is not installed usually gets. `CERT_E_UNTRUSTEDROOT` is
/// mapped to `UnknownIssuer` by the verifier already.
fn windows_found_no_issuer(reason: &str) -> bool {
    /// `CERT_E_CHAINING` as the signed 32-bit number an OS error is printed as.
    const CERT_E_CHAINING: &str = "(os error -2146762486)";
    reason.trim_end().ends_with(CERT_E_CHAINING)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Let's Encrypt's roots as they publish them, with the SHA-256 fingerprints they publish.
    const ISRG_ROOT_X1: &str = include_str!("vectors/isrg-root-x1.pem");
    const ISRG_ROOT_X1_SHA256: &str = "96:BC:EC:06:26:49:76:F3:74:60:77:9A:CF:28:C5:A7:CF:E8:A3:C0:AA:E1:1A:8F:FC:EE:05:C0:BD:DF:08:C6";
    const ISRG_ROOT_X2: &str = include_str!("vectors/isrg-root-x2.pem");
    const ISRG_ROOT_X2_SHA256: &str = "69:72:9B:8E:15:A8:6E:FC:17:7A:57:AF:B7:17:1D:FC:64:AD:D2:8C:2F:CA:8C:F1:50:7E:34:45:3C:CB:14:70";

    #[test]
    fn anchors_are_written_back_as_the_published_pem_with_the_published_fingerprints() {
        let x1 = TrustAnchors::from_pem(ISRG_ROOT_X1.as_bytes()).expect("a published root");
        assert_eq!(
            x1.to_pem(),
            ISRG_ROOT_X1,
            "64-column base64 between the two lines, as published"
        );
        assert_eq!(x1.sha256_fingerprints(), [ISRG_ROOT_X1_SHA256]);

        let bundle = format!("# a comment a bundle may carry\n{ISRG_ROOT_X1}\n{ISRG_ROOT_X2}");
        let both = TrustAnchors::from_pem(bundle.as_bytes()).expect("a bundle of two roots");
        assert_eq!(both.to_pem(), format!("{ISRG_ROOT_X1}{ISRG_ROOT_X2}"), "certificates only");
        assert_eq!(both.sha256_fingerprints(), [ISRG_ROOT_X1_SHA256, ISRG_ROOT_X2_SHA256]);
        let reread = TrustAnchors::from_pem(both.to_pem().as_bytes()).expect("its own output");
        assert_eq!(reread, both, "to_pem reads back to the same anchors, in order");

        // As pasted from a Windows clipboard, or indented in a YAML file or a chat message.
        let crlf = ISRG_ROOT_X1.replace('\n', "\r\n");
        let pasted = TrustAnchors::from_pem(crlf.as_bytes()).expect("CRLF line ends");
        assert_eq!(pasted, x1, "the same root whatever the line ends");
        let indented: String = ISRG_ROOT_X1.lines().map(|l| format!("    {l}\n")).collect();
        let pasted = TrustAnchors::from_pem(indented.as_bytes()).expect("indented lines");
        assert_eq!(pasted, x1, "the same root, indented or not");
    }

    #[test]
    fn a_certificate_problem_is_told_from_a_failed_handshake_through_io_wrapping() {
        // As a connector reports it: the TLS stream's io::Error inside another io::Error.
        let refused = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let wrapped =
            std::io::Error::other(std::io::Error::new(std::io::ErrorKind::InvalidData, refused));
        assert_eq!(
            tls_problem(&wrapped),
            Some(TlsProblem::Certificate(CertificateProblem::UnknownIssuer))
        );
        let expired = rustls::Error::InvalidCertificate(rustls::CertificateError::Expired);
        assert_eq!(
            tls_problem(&expired),
            Some(TlsProblem::Certificate(CertificateProblem::Expired)),
            "found unwrapped too"
        );
        let other = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
        );
        assert_eq!(tls_problem(&other), Some(TlsProblem::Handshake));
        let refused_connection = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(tls_problem(&refused_connection), None, "not a TLS failure");
    }

    /// As the platform verifier reports a Windows code it does not map: a string error holding
    /// the system's description and the OS error number.
    fn windows_refusal(code: u32) -> rustls::Error {
        let code = i32::from_ne_bytes(code.to_ne_bytes());
        let reason = format!("A certificate chain could not be built. (os error {code})");
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
            std::sync::Arc::from(Box::<dyn std::error::Error + Send + Sync>::from(reason)),
        )))
    }

    #[test]
    fn windows_finding_no_chain_to_a_trusted_root_is_an_unknown_issuer() {
        assert_eq!(
            tls_problem(&windows_refusal(0x800B_010A)),
            Some(TlsProblem::Certificate(CertificateProblem::UnknownIssuer)),
            "CERT_E_CHAINING is how Windows refuses a private CA whose root is not installed: \
             the member must be told to install it"
        );
        for (code, what) in [
            (0x800B_010E, "CERT_E_REVOCATION_FAILURE: revocation could not be checked"),
            (0x800B_0101, "CERT_E_EXPIRED is mapped by the verifier, never seen here"),
        ] {
            assert_eq!(
                tls_problem(&windows_refusal(code)),
                Some(TlsProblem::Certificate(CertificateProblem::Other)),
                "{what}: not an untrusted issuer"
            );
        }
    }
}
