//! The authorization server: discovered from its metadata (RFC 8414, OpenID Connect
//! discovery) or built from static endpoints.

use serde::Deserialize;
use url::Url;

use super::token::{OAuthHttp, describe, read_bounded};
use super::{OAuthEndpoints, OAuthError, check_secure};

/// Longest metadata document read.
const MAX_METADATA_BYTES: usize = 256 * 1024;

/// An authorization server the flow can use: its endpoints and what it promised. A value of
/// this type always allows PKCE with S256 as far as anyone can tell (discovery refuses a server
/// whose metadata does not list it), and every endpoint is https (or http on loopback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationServer {
    endpoints: OAuthEndpoints,
    iss_parameter_supported: bool,
}

impl AuthorizationServer {
    /// Reads `issuer`'s metadata: RFC 8414 first
    /// (`{origin}/.well-known/oauth-authorization-server{path}`), then OpenID Connect discovery
    /// (`{issuer}/.well-known/openid-configuration`). Refuses metadata that names another
    /// issuer, that does not list `S256` in `code_challenge_methods_supported` (a server that
    /// leaves the field out does not support PKCE, RFC 8414 section 2), or whose endpoints are
    /// not https.
    pub async fn discover(http: &OAuthHttp, issuer: &str) -> Result<Self, OAuthError> {
        let base = Url::parse(issuer)
            .map_err(|_| OAuthError::Metadata("the issuer is not a URL".into()))?;
        check_secure(&base, "the issuer")?;
        if base.query().is_some() || base.fragment().is_some() {
            return Err(OAuthError::Metadata("an issuer has no query or fragment".into()));
        }
        let trimmed = issuer.trim_end_matches('/');
        let path = base.path().trim_end_matches('/');
        let origin = base.origin().ascii_serialization();
        let candidates = [
            format!("{origin}/.well-known/oauth-authorization-server{path}"),
            format!("{trimmed}/.well-known/openid-configuration"),
        ];
        let mut tried = Vec::new();
        for candidate in candidates {
            let response = match http.inner().get(&candidate).send().await {
                Ok(response) if response.status().is_success() => response,
                Ok(response) => {
                    tried.push(format!("{candidate} answered {}", response.status()));
                    continue;
                }
                Err(e) => {
                    tried.push(format!("{candidate}: {}", describe(e)));
                    continue;
                }
            };
            let bytes = read_bounded(response, MAX_METADATA_BYTES).await?;
            let metadata: Metadata = serde_json::from_slice(&bytes)
                .map_err(|e| OAuthError::Metadata(format!("{candidate} is not metadata: {e}")))?;
            return Self::from_metadata(issuer, metadata);
        }
        Err(OAuthError::Metadata(format!("no metadata found: {}", tried.join("; "))))
    }

    /// Static endpoints, as the provider catalog has them. Without metadata, nothing says
    /// whether the server always sends `iss`, so a callback without one is accepted; one with
    /// `iss` must still name [`OAuthEndpoints::issuer`] when that is known.
    pub fn from_endpoints(endpoints: OAuthEndpoints) -> Result<Self, OAuthError> {
        check_secure(&endpoints.authorize, "the authorization endpoint")?;
        check_secure(&endpoints.token, "the token endpoint")?;
        if let Some(revocation) = &endpoints.revocation {
            check_secure(revocation, "the revocation endpoint")?;
        }
        Ok(Self { endpoints, iss_parameter_supported: false })
    }

    /// The endpoints.
    pub fn endpoints(&self) -> &OAuthEndpoints {
        &self.endpoints
    }

    /// The issuer identifier, when known.
    pub fn issuer(&self) -> Option<&str> {
        self.endpoints.issuer.as_deref()
    }

    /// The metadata promised `iss` in every authorization response (RFC 9207
    /// `authorization_response_iss_parameter_supported`): a callback without it is refused.
    pub fn iss_parameter_supported(&self) -> bool {
        self.iss_parameter_supported
    }

    fn from_metadata(asked: &str, metadata: Metadata) -> Result<Self, OAuthError> {
        // RFC 8414 section 3.3: the issuer in the document must be the one asked for. A
        // trailing slash is the only difference tolerated; the document's value is kept, as
        // that is what the server will put in `iss`.
        if metadata.issuer.trim_end_matches('/') != asked.trim_end_matches('/') {
            return Err(OAuthError::MetadataIssuerMismatch {
                expected: asked.to_owned(),
                found: metadata.issuer,
            });
        }
        let methods = metadata.code_challenge_methods_supported.unwrap_or_default();
        if !methods.iter().any(|m| m == latchkey_core::pkce::PkceChallenge::METHOD) {
            return Err(OAuthError::NoS256);
        }
        let server = Self::from_endpoints(OAuthEndpoints {
            authorize: metadata.authorization_endpoint,
            token: metadata.token_endpoint,
            revocation: metadata.revocation_endpoint,
            issuer: Some(metadata.issuer),
        })?;
        Ok(Self {
            iss_parameter_supported: metadata.authorization_response_iss_parameter_supported,
            ..server
        })
    }
}

/// The metadata fields the flow uses.
#[derive(Debug, Deserialize)]
struct Metadata {
    issuer: String,
    authorization_endpoint: Url,
    token_endpoint: Url,
    revocation_endpoint: Option<Url>,
    code_challenge_methods_supported: Option<Vec<String>>,
    #[serde(default)]
    authorization_response_iss_parameter_supported: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(issuer: &str, methods: Option<&[&str]>) -> Metadata {
        Metadata {
            issuer: issuer.to_owned(),
            authorization_endpoint: "https://as.example/authorize".parse().unwrap(),
            token_endpoint: "https://as.example/token".parse().unwrap(),
            revocation_endpoint: None,
            code_challenge_methods_supported: methods
                .map(|m| m.iter().map(|s| (*s).to_owned()).collect()),
            authorization_response_iss_parameter_supported: true,
        }
    }

    #[test]
    fn metadata_must_list_s256() {
        for methods in [None, Some(&[][..]), Some(&["plain"][..])] {
            let error = AuthorizationServer::from_metadata(
                "https://as.example",
                metadata("https://as.example", methods),
            )
            .unwrap_err();
            assert!(matches!(error, OAuthError::NoS256), "{methods:?} lacks S256: {error:?}");
        }
        let server = AuthorizationServer::from_metadata(
            "https://as.example/",
            metadata("https://as.example", Some(&["plain", "S256"])),
        )
        .expect("S256 listed, issuer equal but for a trailing slash");
        assert_eq!(server.issuer(), Some("https://as.example"), "the document's issuer is kept");
        assert!(server.iss_parameter_supported());
    }

    #[test]
    fn metadata_for_another_issuer_is_refused() {
        let error = AuthorizationServer::from_metadata(
            "https://as.example",
            metadata("https://as.example.evil", Some(&["S256"])),
        )
        .unwrap_err();
        assert!(matches!(error, OAuthError::MetadataIssuerMismatch { .. }), "got {error:?}");
    }

    #[test]
    fn static_endpoints_must_be_secure() {
        let endpoints = OAuthEndpoints {
            authorize: "https://as.example/authorize".parse().unwrap(),
            token: "https://as.example/token".parse().unwrap(),
            revocation: Some("http://as.example/revoke".parse().unwrap()),
            issuer: None,
        };
        let error = AuthorizationServer::from_endpoints(endpoints).unwrap_err();
        assert!(
            matches!(error, OAuthError::InsecureEndpoint("the revocation endpoint")),
            "{error:?}"
        );
    }
}
