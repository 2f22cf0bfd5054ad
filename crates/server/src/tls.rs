//! TLS for upstream calls: extra certificate authorities an operator trusts on top of the
//! system's (an API behind a private CA), and the agent's message when a handshake fails
//! (what failed is read by `latchkey_core::tls`).
//!
//! Upstream certificates are verified by the platform verifier (the system's trust store on
//! Linux, the OS verifier on macOS and Windows). [`UpstreamRoots`] adds anchors to it; it never
//! replaces it and never turns verification off.

use std::path::Path;

use latchkey_core::tls::{TlsProblem, tls_problem};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::{PemObject as _, SectionKind};

/// Certificate authorities trusted for upstream calls in addition to the system's, read from a
/// PEM bundle (`--upstream-ca`).
#[derive(Clone)]
pub struct UpstreamRoots {
    certs: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for UpstreamRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamRoots").field("certificates", &self.certs.len()).finish()
    }
}

/// A PEM bundle that cannot serve as upstream trust anchors.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpstreamRootsError {
    /// The text holds no certificate.
    #[error("no certificate found; give one or more `-----BEGIN CERTIFICATE-----` blocks in PEM")]
    Empty,
    /// The text holds a private key: the broker only needs the authorities' certificates.
    #[error(
        "the file holds a private key; give only the certificate authorities' certificates and keep the key away from the broker"
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

impl UpstreamRoots {
    /// Reads the certificates of a PEM bundle, refusing one with no certificate, a private key,
    /// damaged PEM, or a certificate that cannot be a trust anchor.
    pub fn from_pem(pem: &[u8]) -> Result<Self, UpstreamRootsError> {
        let mut certs = Vec::new();
        for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem) {
            let (kind, der) =
                section.map_err(|_| UpstreamRootsError::Pem { after: certs.len() })?;
            match kind {
                SectionKind::Certificate => certs.push(CertificateDer::from(der)),
                SectionKind::PrivateKey
                | SectionKind::RsaPrivateKey
                | SectionKind::EcPrivateKey => {
                    return Err(UpstreamRootsError::PrivateKey);
                }
                // Revocation lists, public keys and the like say nothing about trust here.
                _ => {}
            }
        }
        if certs.is_empty() {
            return Err(UpstreamRootsError::Empty);
        }
        // The platform verifier adds these to its root store the same way; checking each here
        // names the bad one at startup instead of failing the client's construction later.
        let mut store = rustls::RootCertStore::empty();
        for (index, cert) in certs.iter().enumerate() {
            store.add(cert.clone()).map_err(|e| UpstreamRootsError::Certificate {
                number: index + 1,
                reason: e.to_string(),
            })?;
        }
        Ok(Self { certs })
    }

    /// Reads [`UpstreamRoots::from_pem`] from a file.
    pub fn read(path: &Path) -> Result<Self, String> {
        let pem = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
        Self::from_pem(&pem).map_err(|e| e.to_string())
    }

    /// How many certificates the bundle holds.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// Whether the bundle is empty (never, once read).
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    pub(crate) fn certificates(&self) -> impl Iterator<Item = reqwest::Certificate> + '_ {
        // `from_der` only stores the bytes with the rustls backend; it cannot fail here, and the
        // bytes were checked as anchors in `from_pem`.
        self.certs.iter().filter_map(|der| reqwest::Certificate::from_der(der).ok())
    }
}

/// The agent-facing message for a call to `what` ("the upstream API", "the provider's token
/// endpoint") that failed in its TLS handshake, or `None` when `error` is not a TLS failure.
pub(crate) fn failure_message(
    error: &(dyn std::error::Error + 'static),
    what: &str,
) -> Option<String> {
    Some(match tls_problem(error)? {
        TlsProblem::Certificate(problem) => format!(
            "{what} presented a TLS certificate the broker refuses ({}); if it uses a private certificate authority, the broker's operator can trust it with --upstream-ca",
            problem.describe()
        ),
        _ => format!(
            "the TLS handshake with {what} failed (no common protocol, or it does not speak TLS on that port); check the credential's base URL"
        ),
    })
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
