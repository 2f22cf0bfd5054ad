//! What a failed TLS handshake was, read out of an HTTP client's error chain, so the broker (for
//! upstream APIs) and devices (for the broker) can say "certificate from an untrusted authority"
//! instead of "could not connect". Pure inspection of error values; no I/O.

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
        _ => CertificateProblem::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
