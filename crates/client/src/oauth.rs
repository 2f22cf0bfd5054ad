//! OAuth 2.0 authorization code with PKCE for a native app (RFC 6749, 7636, 8252), with
//! authorization server metadata (RFC 8414 / OpenID Connect discovery), issuer identification
//! (RFC 9207), refresh and revocation (RFC 7009).
//!
//! ```text
//! server      AuthorizationServer::discover(issuer) reads the metadata and refuses a server
//!             that does not list S256; AuthorizationServer::from_endpoints takes the catalog's
//!             static endpoints instead
//! start       PendingAuthorization::start binds 127.0.0.1:<ephemeral> and builds the URL:
//!             response_type=code, client_id, redirect_uri=http://127.0.0.1:<port>/callback,
//!             state (32 random bytes), code_challenge (S256 only), scope, extra parameters
//! browser     a BrowserLauncher opens the URL (SystemBrowser: xdg-open / open / rundll32)
//! callback    PendingAuthorization::wait serves the loopback listener until the callback
//!             carrying this flow's state arrives, or the timeout; then the listener closes
//! exchange    AuthorizationGrant::redeem: code + verifier + redirect URI at the token endpoint
//! refresh     refresh(): a rotated refresh token replaces the old one; invalid_grant is
//!             ReconnectNeeded, never retried silently
//! revoke      revoke(): the refresh token, then the access token, where there is an endpoint
//! ```
//!
//! # The loopback callback
//!
//! The listener answers every request with a fixed page (no script, no echo of anything it was
//! sent, `Referrer-Policy: no-referrer`) and judges it:
//!
//! - not `GET /callback?...`, or a `state` that is not this flow's: an error page, and the flow
//!   keeps waiting. Any program on this machine and any web page can reach the port, so such a
//!   request must not be able to end or steer the sign-in;
//! - this flow's `state`: it is the answer to the request this process made, and it is final.
//!   An `iss` naming another server than the one asked, or no `iss` from a server that promised
//!   it, ends the flow with an error (RFC 9207: the answer is from a mixed-up server, and the
//!   genuine one cannot follow); `error=...` ends it with [`OAuthError::Denied`]; a `code` ends it
//!   with the grant to redeem.
//!
//! Connections are served concurrently, so a browser's idle speculative connection cannot hold
//! up the callback. The listener is closed as soon as the flow ends, before the token exchange.
//!
//! # HTTP
//!
//! Token, refresh, revocation and metadata requests go through [`OAuthHttp`], a client that
//! follows no redirects (a redirected token request would carry the code and verifier to
//! wherever the redirect points) and reads bounded answers. The crate talks to the token
//! endpoint with `reqwest` directly rather than through the `oauth2` crate: the flow needs RFC
//! 9207 checks, a loopback listener and secret types of its own anyway, and the token requests
//! themselves are three small form posts.
//!
//! Tokens arrive in [`TokenSet`], whose secrets are zeroized and redacted; no error message
//! carries a code, verifier, state or token.

mod browser;
mod flow;
mod loopback;
mod metadata;
pub(crate) mod token;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use latchkey_core::secret::SecretBytes;
use url::Url;

pub use self::browser::{BrowserLauncher, CommandBrowser, SystemBrowser};
pub use self::flow::{AuthorizationGrant, PendingAuthorization, authorize};
pub use self::loopback::LoopbackRedirect;
pub use self::metadata::AuthorizationServer;
pub use self::token::{
    AuthorizationCode, OAuthHttp, Revocation, TokenSet, exchange_code, refresh, revoke,
};
pub use crate::catalog::ClientAuth;

/// How long a sign-in waits for the browser by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// An OAuth step failed. Messages say what to do next; none carries a code, verifier, state,
/// token or client secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OAuthError {
    /// The authorization server's metadata does not list PKCE with S256.
    #[error(
        "the authorization server does not list PKCE with S256 in its metadata; Latchkey will not connect without it (if the provider documents S256 support, configure its endpoints instead of discovery)"
    )]
    NoS256,
    /// Metadata could not be fetched or is unusable.
    #[error("the authorization server's metadata is unusable ({0}); check the issuer URL")]
    Metadata(String),
    /// The metadata names another issuer than the one asked for (RFC 8414 section 3.3).
    #[error(
        "the metadata at {expected} names issuer {found}: refusing a mixed-up server; check the issuer URL"
    )]
    MetadataIssuerMismatch {
        /// The issuer asked for.
        expected: String,
        /// The issuer the metadata named.
        found: String,
    },
    /// An endpoint is neither https nor http on a loopback address.
    #[error("{0} must use https")]
    InsecureEndpoint(&'static str),
    /// The redirect URI would not be on a loopback address (RFC 8252 section 7.3).
    #[error("the sign-in callback must listen on a loopback address (127.0.0.1 or ::1), not {0}")]
    NotLoopback(IpAddr),
    /// The client authenticates with a secret, but none was given.
    #[error(
        "the OAuth app is configured for client authentication {0} but has no client secret; add the secret or use \"none\""
    )]
    ClientSecretMissing(&'static str),
    /// The browser could not be opened.
    #[error("could not open the browser ({0}); open the sign-in link by hand")]
    Browser(String),
    /// The loopback listener failed.
    #[error("the sign-in callback listener failed ({0}); try again")]
    Listener(#[source] std::io::Error),
    /// Nobody completed the sign-in in time.
    #[error("the sign-in was not completed within {} s; try again", .0.as_secs())]
    Timeout(Duration),
    /// The callback named another authorization server than the one asked (RFC 9207 mix-up).
    #[error(
        "the sign-in answer came from another authorization server than {expected}: refused as a possible mix-up attack; sign in again and check which site you sign in at"
    )]
    IssuerMixUp {
        /// The issuer the request was sent to.
        expected: String,
    },
    /// The server promised to name itself in the callback (RFC 9207) and did not.
    #[error(
        "the sign-in answer did not name its authorization server although {expected} always does: refused; sign in again"
    )]
    IssuerMissing {
        /// The issuer the request was sent to.
        expected: String,
    },
    /// The callback carried this flow's state but neither a code nor an error.
    #[error("the sign-in answer had neither a code nor an error; sign in again")]
    MalformedCallback,
    /// The provider answered the authorization request with an error.
    #[error(
        "the provider refused the authorization ({error}); sign in again, or check the app's settings at the provider"
    )]
    Denied {
        /// The OAuth error code, e.g. `access_denied` (printable ASCII, at most 64 characters).
        error: String,
    },
    /// The token endpoint refused the request.
    #[error("the token endpoint refused the request ({error}); connect again")]
    TokenRefused {
        /// The OAuth error code, e.g. `invalid_grant` (printable ASCII, at most 64 characters),
        /// or `HTTP <status>` when the answer had none.
        error: String,
    },
    /// A refresh was refused: the grant is gone (expired, revoked, or killed by reuse
    /// detection).
    #[error("the provider no longer accepts this connection's refresh token: reconnect it")]
    ReconnectNeeded,
    /// The token endpoint issued a token type Latchkey cannot use.
    #[error("the provider issued a {0} token; Latchkey can only use bearer tokens")]
    UnsupportedTokenType(String),
    /// A server could not be reached or answered something unreadable.
    #[error("the authorization server could not be used ({0}); check the connection and try again")]
    Transport(String),
    /// The revocation endpoint refused.
    #[error(
        "the provider did not confirm the revocation ({0}); revoke the app's access at the provider"
    )]
    RevocationFailed(String),
    /// Randomness was unavailable.
    #[error("no randomness for the sign-in state and verifier")]
    Random,
}

/// Where an authorization server takes requests: the provider catalog's static endpoints, or
/// what discovery found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthEndpoints {
    /// The authorization endpoint.
    pub authorize: Url,
    /// The token endpoint.
    pub token: Url,
    /// The RFC 7009 revocation endpoint, if the provider has one.
    pub revocation: Option<Url>,
    /// The issuer identifier, when known: a callback's `iss` must then equal it.
    pub issuer: Option<String>,
}

/// The OAuth app registered at the provider, and what it asks for.
#[derive(Debug)]
pub struct OAuthClient {
    /// The client id.
    pub client_id: String,
    /// The client secret of a confidential client; `None` for a public (PKCE-only) client.
    pub client_secret: Option<SecretBytes>,
    /// How the client authenticates at the token and revocation endpoints.
    pub auth: ClientAuth,
    /// Scopes to ask for; none leaves `scope` out.
    pub scopes: Vec<String>,
    /// How scopes are joined: `" "` (RFC 6749) or `","` for providers that want commas.
    pub scope_separator: String,
    /// Extra authorization request parameters, e.g. Google's `access_type=offline`. The
    /// parameters the flow sets itself (`state`, `code_challenge`, ...) cannot be overridden.
    pub extra_authorize_params: Vec<(String, String)>,
}

impl OAuthClient {
    /// A public client (no secret, PKCE only) asking for `scopes`, joined with spaces.
    pub fn public(client_id: impl Into<String>, scopes: Vec<String>) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret: None,
            auth: ClientAuth::None,
            scopes,
            scope_separator: " ".to_owned(),
            extra_authorize_params: Vec::new(),
        }
    }
}

/// How a sign-in runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowOptions {
    /// How long to wait for the callback after opening the browser.
    pub timeout: Duration,
    /// The address the callback listener binds, on an ephemeral port: a loopback address
    /// (`127.0.0.1` by default; RFC 8252 section 8.3 prefers it to `localhost`).
    pub bind: IpAddr,
}

impl Default for FlowOptions {
    fn default() -> Self {
        Self { timeout: DEFAULT_TIMEOUT, bind: IpAddr::V4(Ipv4Addr::LOCALHOST) }
    }
}

/// `https`, or `http` on a loopback host (local development and tests).
pub(crate) fn check_secure(url: &Url, what: &'static str) -> Result<(), OAuthError> {
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(OAuthError::InsecureEndpoint(what)),
    }
}

/// An error code or similar short word from a server, safe to show: printable ASCII, at most
/// 64 characters (RFC 6749 error codes are printable ASCII without `"` and `\`).
fn sanitize_code(raw: &str) -> String {
    raw.chars().filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\').take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http_endpoints_pass() {
        for ok in [
            "https://auth.example.com/authorize",
            "http://127.0.0.1:8080/token",
            "http://[::1]:8080/token",
            "http://localhost/token",
        ] {
            assert!(check_secure(&ok.parse().unwrap(), "x").is_ok(), "{ok} is acceptable");
        }
        for bad in ["http://auth.example.com/token", "ftp://127.0.0.1/", "http://10.0.0.1/"] {
            assert!(
                matches!(
                    check_secure(&bad.parse().unwrap(), "x"),
                    Err(OAuthError::InsecureEndpoint(_))
                ),
                "{bad} is refused"
            );
        }
    }

    #[test]
    fn server_words_are_cut_to_short_printable_ascii() {
        assert_eq!(sanitize_code("access_denied"), "access_denied");
        assert_eq!(sanitize_code("a\nb\"c\\d e\u{202e}"), "abcde");
        assert_eq!(sanitize_code(&"x".repeat(200)).len(), 64);
    }
}
