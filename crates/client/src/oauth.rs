//! OAuth 2.0 authorization code with PKCE for a native app (RFC 6749, 7636, 8252), with
//! authorization server metadata (RFC 8414 / OpenID discovery), issuer identification (RFC
//! 9207), refresh and revocation (RFC 7009).
//!
//! ```text
//! authorize   loopback listener on 127.0.0.1:<ephemeral>, state + S256 verifier, the system
//!             browser opened on the authorization URL; the listener answers a static page to
//!             every request, keeps waiting through wrong paths, unknown state and bad `iss`,
//!             and closes after the first valid callback (or the timeout)
//! exchange    code + verifier + redirect URI at the token endpoint (no redirects followed)
//! refresh     a new token set; a rotated refresh token replaces the old; `invalid_grant` is
//!             ReconnectNeeded, never retried silently
//! revoke      refresh token, then access token, where the provider has an endpoint
//! ```
//!
//! Tokens arrive in [`TokenSet`], whose secrets are zeroized and redacted; no error message
//! carries a code, verifier, state or token.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use latchkey_core::pkce::{OAuthState, PkceChallenge, PkceVerifier};
use latchkey_core::secret::SecretBytes;
use serde::Deserialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use url::Url;
use zeroize::Zeroizing;

use crate::catalog::ClientAuth;

/// How long `authorize` waits for the browser by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Longest callback request read.
const MAX_CALLBACK_BYTES: usize = 16 * 1024;

/// An OAuth flow failed. Messages say what to do; none carries a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OAuthError {
    /// The authorization server does not offer PKCE with S256.
    #[error(
        "the authorization server does not support PKCE with S256; Latchkey will not connect without it"
    )]
    NoS256,
    /// Metadata could not be fetched or is unusable.
    #[error("the authorization server's metadata is unusable: {0}")]
    Metadata(String),
    /// The metadata's issuer is not the one asked for (RFC 8414 section 3.3).
    #[error("the metadata names issuer {found}, not {expected}: refusing a mixed-up server")]
    IssuerMismatch {
        /// The issuer asked for.
        expected: String,
        /// What the metadata said.
        found: String,
    },
    /// An endpoint is not https (or http on loopback).
    #[error("{0} must use https")]
    InsecureEndpoint(&'static str),
    /// The browser could not be opened.
    #[error("could not open the browser ({0}); open the sign-in link by hand")]
    Browser(String),
    /// The loopback listener failed.
    #[error("the sign-in callback listener failed: {0}")]
    Listener(#[from] std::io::Error),
    /// Nobody completed the sign-in in time.
    #[error("the sign-in was not completed within {0:?}; try again")]
    Timeout(Duration),
    /// The provider answered the authorization request with an error.
    #[error(
        "the provider refused the authorization ({error}); try again or check the app's settings at the provider"
    )]
    Denied {
        /// The OAuth error code, e.g. `access_denied`.
        error: String,
    },
    /// The token endpoint refused.
    #[error("the token endpoint refused ({error}); connect again")]
    TokenRefused {
        /// The OAuth error code.
        error: String,
    },
    /// A refresh was refused: the grant is gone.
    #[error("the provider no longer accepts this connection's refresh token: reconnect it")]
    ReconnectNeeded,
    /// The token endpoint could not be reached or answered nonsense.
    #[error("the token endpoint failed: {0}")]
    Transport(String),
    /// Randomness was unavailable.
    #[error("no randomness for the sign-in state")]
    Random,
}

/// Where the flow goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// The authorization endpoint.
    pub authorize: Url,
    /// The token endpoint.
    pub token: Url,
    /// The RFC 7009 revocation endpoint, if any.
    pub revocation: Option<Url>,
    /// The issuer, when known: a callback's `iss` must equal it.
    pub issuer: Option<String>,
    /// The server says it always sends `iss` (RFC 9207): a callback without it is refused.
    pub iss_required: bool,
}

/// The app registered at the provider.
#[derive(Debug)]
pub struct OAuthApp {
    /// Client id.
    pub client_id: String,
    /// Client secret, for confidential clients.
    pub client_secret: Option<SecretBytes>,
    /// How to authenticate at the token endpoint.
    pub auth: ClientAuth,
}

/// Tokens from the token endpoint. `Debug` shows no secret.
pub struct TokenSet {
    /// The access token.
    pub access_token: SecretBytes,
    /// The refresh token, if any.
    pub refresh_token: Option<SecretBytes>,
    /// When the access token expires (unix seconds), if said.
    pub expires_at: Option<u64>,
    /// Granted scopes, if said.
    pub scope: Option<String>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "<redacted>"))
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// Opens the authorization URL for the person to sign in.
pub trait BrowserLauncher: Send + Sync {
    /// Opens `url`; returns once it is handed to the browser.
    fn open(&self, url: &Url) -> Result<(), OAuthError>;
}

/// The system browser, through the platform's opener (no shell).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemBrowser;

impl BrowserLauncher for SystemBrowser {
    fn open(&self, url: &Url) -> Result<(), OAuthError> {
        let (program, args): (&str, Vec<&str>) = if cfg!(target_os = "macos") {
            ("open", vec![url.as_str()])
        } else if cfg!(windows) {
            ("rundll32", vec!["url.dll,FileProtocolHandler", url.as_str()])
        } else {
            ("xdg-open", vec![url.as_str()])
        };
        std::process::Command::new(program)
            .args(args)
            .spawn()
            .map(drop)
            .map_err(|e| OAuthError::Browser(e.kind().to_string()))
    }
}

/// Server metadata fields the flow uses.
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

/// Discovers `issuer`'s endpoints (RFC 8414, then OpenID Connect discovery) and refuses a
/// server that does not list S256 when it lists PKCE methods at all.
pub async fn discover(http: &reqwest::Client, issuer: &str) -> Result<Endpoints, OAuthError> {
    let base =
        Url::parse(issuer).map_err(|_| OAuthError::Metadata("the issuer is not a URL".into()))?;
    check_secure(&base, "the issuer")?;
    let trimmed = issuer.trim_end_matches('/');
    let path = base.path().trim_end_matches('/');
    let origin = trimmed.strip_suffix(path).unwrap_or(trimmed);
    let candidates = [
        format!("{origin}/.well-known/oauth-authorization-server{path}"),
        format!("{trimmed}/.well-known/openid-configuration"),
    ];
    let mut last = String::new();
    for candidate in candidates {
        let answer = http.get(&candidate).send().await;
        let response = match answer {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                last = format!("{} answered {}", candidate, r.status());
                continue;
            }
            Err(e) => {
                last = e.without_url().to_string();
                continue;
            }
        };
        let metadata: Metadata =
            response.json().await.map_err(|e| OAuthError::Metadata(e.without_url().to_string()))?;
        if metadata.issuer.trim_end_matches('/') != trimmed {
            return Err(OAuthError::IssuerMismatch {
                expected: issuer.to_owned(),
                found: metadata.issuer,
            });
        }
        if let Some(methods) = &metadata.code_challenge_methods_supported
            && !methods.iter().any(|m| m == PkceChallenge::METHOD)
        {
            return Err(OAuthError::NoS256);
        }
        check_secure(&metadata.authorization_endpoint, "the authorization endpoint")?;
        check_secure(&metadata.token_endpoint, "the token endpoint")?;
        return Ok(Endpoints {
            authorize: metadata.authorization_endpoint,
            token: metadata.token_endpoint,
            revocation: metadata.revocation_endpoint,
            issuer: Some(metadata.issuer),
            iss_required: metadata.authorization_response_iss_parameter_supported,
        });
    }
    Err(OAuthError::Metadata(format!("no metadata found ({last})")))
}

/// Runs the browser sign-in and exchanges the code; see the module docs.
pub async fn authorize(
    http: &reqwest::Client,
    endpoints: &Endpoints,
    app: &OAuthApp,
    scopes: &[String],
    extra: &[(String, String)],
    browser: &dyn BrowserLauncher,
    timeout: Duration,
) -> Result<TokenSet, OAuthError> {
    check_secure(&endpoints.authorize, "the authorization endpoint")?;
    check_secure(&endpoints.token, "the token endpoint")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let redirect_uri = format!("http://127.0.0.1:{}/callback", listener.local_addr()?.port());
    let state = OAuthState::generate().map_err(|_| OAuthError::Random)?;
    let verifier = PkceVerifier::generate().map_err(|_| OAuthError::Random)?;
    let challenge = verifier.challenge();

    let mut url = endpoints.authorize.clone();
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("response_type", "code")
            .append_pair("client_id", &app.client_id)
            .append_pair("redirect_uri", &redirect_uri)
            .append_pair("state", state.as_str())
            .append_pair("code_challenge", challenge.as_str())
            .append_pair("code_challenge_method", challenge.method());
        if !scopes.is_empty() {
            query.append_pair("scope", &scopes.join(" "));
        }
        for (name, value) in extra {
            query.append_pair(name, value);
        }
    }
    browser.open(&url)?;
    let code = tokio::time::timeout(timeout, wait_for_code(&listener, &state, endpoints))
        .await
        .map_err(|_| OAuthError::Timeout(timeout))??;
    drop(listener);

    let form = vec![
        ("grant_type", "authorization_code".to_owned()),
        ("code", code.to_string()),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier.expose_secret().to_owned()),
    ];
    token_request(http, &endpoints.token, app, form, false).await
}

/// Refreshes with `refresh_token`. A provider that rotates refresh tokens returns a new one in
/// the set; one that does not leaves it out, and the old one stays valid (the caller keeps it).
pub async fn refresh(
    http: &reqwest::Client,
    endpoints: &Endpoints,
    app: &OAuthApp,
    refresh_token: &SecretBytes,
) -> Result<TokenSet, OAuthError> {
    let token = String::from_utf8_lossy(refresh_token.expose_secret()).into_owned();
    let form = vec![("grant_type", "refresh_token".to_owned()), ("refresh_token", token)];
    token_request(http, &endpoints.token, app, form, true).await
}

/// Revokes the refresh token, then the access token (RFC 7009), where the provider has a
/// revocation endpoint. Returns whether anything was revoked.
pub async fn revoke(
    http: &reqwest::Client,
    endpoints: &Endpoints,
    app: &OAuthApp,
    tokens: &TokenSet,
) -> Result<bool, OAuthError> {
    let Some(endpoint) = &endpoints.revocation else { return Ok(false) };
    check_secure(endpoint, "the revocation endpoint")?;
    let pairs = tokens
        .refresh_token
        .iter()
        .map(|t| (t, "refresh_token"))
        .chain(std::iter::once((&tokens.access_token, "access_token")));
    for (token, hint) in pairs {
        let form = vec![
            ("token", String::from_utf8_lossy(token.expose_secret()).into_owned()),
            ("token_type_hint", hint.to_owned()),
        ];
        let response = authenticated(http.post(endpoint.clone()), app, form)
            .send()
            .await
            .map_err(|e| OAuthError::Transport(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(OAuthError::Transport(format!(
                "revocation answered {}",
                response.status()
            )));
        }
    }
    Ok(true)
}

/// Serves the loopback listener until a callback with the right state (and issuer) arrives.
async fn wait_for_code(
    listener: &tokio::net::TcpListener,
    state: &OAuthState,
    endpoints: &Endpoints,
) -> Result<Zeroizing<String>, OAuthError> {
    loop {
        let (mut socket, _) = listener.accept().await?;
        let mut request = Zeroizing::new(Vec::new());
        let mut buf = [0_u8; 2048];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < MAX_CALLBACK_BYTES {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let verdict = judge(&request, state, endpoints);
        let (status, page) = match &verdict {
            Callback::Code(_) => {
                ("200 OK", "Signed in. You can close this tab and return to Latchkey.")
            }
            Callback::Denied(_) => {
                ("200 OK", "The sign-in was refused. Return to Latchkey to try again.")
            }
            Callback::Ignore => {
                ("400 Bad Request", "This is not the sign-in Latchkey is waiting for.")
            }
        };
        let body =
            format!("<!doctype html><meta charset=utf-8><title>Latchkey</title><p>{page}</p>\n");
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\nreferrer-policy: no-referrer\r\ncache-control: no-store\r\ncontent-security-policy: default-src 'none'\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        let _ = socket.write_all(head.as_bytes()).await;
        let _ = socket.write_all(body.as_bytes()).await;
        let _ = socket.shutdown().await;
        match verdict {
            Callback::Code(code) => return Ok(code),
            Callback::Denied(error) => return Err(OAuthError::Denied { error }),
            Callback::Ignore => {}
        }
    }
}

enum Callback {
    Code(Zeroizing<String>),
    Denied(String),
    Ignore,
}

/// What a request to the listener is: the awaited callback, a refusal from the provider with
/// the right state, or anything else (ignored; the flow keeps waiting).
fn judge(request: &[u8], state: &OAuthState, endpoints: &Endpoints) -> Callback {
    let Some(line) = request.split(|b| *b == b'\r').next() else { return Callback::Ignore };
    let Ok(line) = std::str::from_utf8(line) else { return Callback::Ignore };
    let mut words = line.split(' ');
    let (Some("GET"), Some(target)) = (words.next(), words.next()) else { return Callback::Ignore };
    let Some(query) = target.strip_prefix("/callback?") else { return Callback::Ignore };
    let mut code = None;
    let mut received_state = None;
    let mut iss = None;
    let mut error = None;
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "code" => code = Some(Zeroizing::new(value.into_owned())),
            "state" => received_state = Some(value.into_owned()),
            "iss" => iss = Some(value.into_owned()),
            "error" => error = Some(value.into_owned()),
            _ => {}
        }
    }
    if !received_state.is_some_and(|s| state.matches(&s)) {
        return Callback::Ignore;
    }
    // RFC 9207: a callback naming another issuer is a mix-up; one naming none is refused when
    // the server promised to always name itself.
    match (&endpoints.issuer, &iss) {
        (Some(expected), Some(found)) if expected != found => return Callback::Ignore,
        (None, Some(_)) => return Callback::Ignore,
        (_, None) if endpoints.iss_required => return Callback::Ignore,
        _ => {}
    }
    match (code, error) {
        (_, Some(error)) => {
            Callback::Denied(error.chars().filter(|c| c.is_ascii_graphic()).take(64).collect())
        }
        (Some(code), None) => Callback::Code(code),
        (None, None) => Callback::Ignore,
    }
}

fn authenticated(
    request: reqwest::RequestBuilder,
    app: &OAuthApp,
    mut form: Vec<(&'static str, String)>,
) -> reqwest::RequestBuilder {
    let secret =
        app.client_secret.as_ref().map(|s| String::from_utf8_lossy(s.expose_secret()).into_owned());
    let request = match (app.auth, secret) {
        (ClientAuth::Basic, Some(secret)) => {
            let pair = format!(
                "{}:{}",
                url::form_urlencoded::byte_serialize(app.client_id.as_bytes()).collect::<String>(),
                url::form_urlencoded::byte_serialize(secret.as_bytes()).collect::<String>()
            );
            request.header(
                "authorization",
                format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair)),
            )
        }
        (ClientAuth::Post, Some(secret)) => {
            form.push(("client_id", app.client_id.clone()));
            form.push(("client_secret", secret));
            request
        }
        _ => {
            form.push(("client_id", app.client_id.clone()));
            request
        }
    };
    request.header("accept", "application/json").form(&form)
}

async fn token_request(
    http: &reqwest::Client,
    endpoint: &Url,
    app: &OAuthApp,
    form: Vec<(&'static str, String)>,
    refreshing: bool,
) -> Result<TokenSet, OAuthError> {
    #[derive(Deserialize)]
    struct Answer {
        access_token: Zeroizing<String>,
        refresh_token: Option<Zeroizing<String>>,
        expires_in: Option<u64>,
        scope: Option<String>,
    }
    #[derive(Deserialize)]
    struct Refusal {
        error: String,
    }
    let response = authenticated(http.post(endpoint.clone()), app, form)
        .send()
        .await
        .map_err(|e| OAuthError::Transport(e.without_url().to_string()))?;
    let status = response.status();
    let bytes = Zeroizing::new(
        response
            .bytes()
            .await
            .map_err(|e| OAuthError::Transport(e.without_url().to_string()))?
            .to_vec(),
    );
    if !status.is_success() {
        let error = serde_json::from_slice::<Refusal>(&bytes)
            .map(|r| r.error.chars().filter(|c| c.is_ascii_graphic()).take(64).collect::<String>())
            .unwrap_or_else(|_| format!("HTTP {status}"));
        return Err(if refreshing && error == "invalid_grant" {
            OAuthError::ReconnectNeeded
        } else {
            OAuthError::TokenRefused { error }
        });
    }
    let answer: Answer = serde_json::from_slice(&bytes)
        .map_err(|_| OAuthError::Transport("the token answer is not the expected JSON".into()))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Ok(TokenSet {
        access_token: SecretBytes::copy_from(answer.access_token.as_bytes()),
        refresh_token: answer.refresh_token.map(|t| SecretBytes::copy_from(t.as_bytes())),
        expires_at: answer.expires_in.map(|s| now.saturating_add(s)),
        scope: answer.scope,
    })
}

/// https, or http on a loopback host (local development and tests).
fn check_secure(url: &Url, what: &'static str) -> Result<(), OAuthError> {
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(OAuthError::InsecureEndpoint(what)),
    }
}
