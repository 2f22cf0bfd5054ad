//! The token endpoint (code exchange, refresh) and the revocation endpoint (RFC 7009).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use latchkey_core::pkce::PkceVerifier;
use latchkey_core::secret::SecretBytes;
use serde::Deserialize;
use url::Url;
use zeroize::Zeroizing;

use super::loopback::LoopbackRedirect;
use super::{ClientAuth, OAuthClient, OAuthEndpoints, OAuthError, check_secure, sanitize_code};
use crate::account::IdToken;

/// Longest token or revocation answer read.
const MAX_TOKEN_ANSWER_BYTES: usize = 64 * 1024;
/// How long one request to an authorization server may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP client for authorization servers: follows no redirects (a redirected token request
/// would take the code, verifier or refresh token wherever the redirect points) and gives up
/// after 30 seconds.
#[derive(Debug, Clone)]
pub struct OAuthHttp(reqwest::Client);

impl OAuthHttp {
    /// A client with the platform's TLS roots.
    pub fn new() -> Result<Self, OAuthError> {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("latchkey/", env!("CARGO_PKG_VERSION")))
            .build()
            .map(Self)
            .map_err(transport)
    }

    pub(crate) fn inner(&self) -> &reqwest::Client {
        &self.0
    }
}

/// An authorization code from the callback. Secret until redeemed: zeroized on drop, redacted
/// in `Debug`.
pub struct AuthorizationCode(Zeroizing<String>);

impl AuthorizationCode {
    /// Wraps a code received some other way than [`super::PendingAuthorization`].
    pub fn new(code: String) -> Self {
        Self(Zeroizing::new(code))
    }

    pub(super) fn from_zeroizing(code: Zeroizing<String>) -> Self {
        Self(code)
    }

    /// The code, for the token request.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AuthorizationCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthorizationCode([REDACTED])")
    }
}

/// Tokens from the token endpoint. Secrets are zeroized on drop; `Debug` shows none.
pub struct TokenSet {
    /// The access token.
    pub access_token: SecretBytes,
    /// The refresh token. After [`refresh`], the rotated one when the provider rotated it, else
    /// the one that was presented: store this one either way.
    pub refresh_token: Option<SecretBytes>,
    /// When the access token expires (unix seconds), if the provider said.
    pub expires_at: Option<u64>,
    /// The granted scopes, space-separated as the provider sent them, if it said.
    pub scope: Option<String>,
    /// The token type as the provider spelled it; always bearer (case-insensitively).
    pub token_type: String,
    /// The OpenID Connect ID token, when the provider sent one: read for the account's name
    /// ([`IdToken::account`]), never stored.
    pub id_token: Option<IdToken>,
}

impl TokenSet {
    /// The granted scopes as a list (empty when the provider did not say).
    pub fn scopes(&self) -> Vec<String> {
        self.scope
            .as_deref()
            .map(|s| s.split([' ', ',']).filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default()
    }
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSet")
            .field("access_token", &"[REDACTED]")
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "[REDACTED]"))
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .field("token_type", &self.token_type)
            .field("id_token", &self.id_token)
            .finish()
    }
}

/// What [`revoke`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Revocation {
    /// The provider confirmed the revocation.
    Revoked,
    /// The provider has no revocation endpoint: remove the app's access at the provider.
    NotSupported,
}

/// Redeems an authorization code (RFC 6749 section 4.1.3 with the RFC 7636 verifier).
/// [`super::AuthorizationGrant::redeem`] calls this with what the flow kept; it is public for
/// callers that receive the code another way.
pub async fn exchange_code(
    http: &OAuthHttp,
    endpoints: &OAuthEndpoints,
    client: &OAuthClient,
    code: &AuthorizationCode,
    verifier: &PkceVerifier,
    redirect_uri: &LoopbackRedirect,
) -> Result<TokenSet, OAuthError> {
    let form = vec![
        ("grant_type", Zeroizing::new("authorization_code".to_owned())),
        ("code", Zeroizing::new(code.expose_secret().to_owned())),
        ("redirect_uri", Zeroizing::new(redirect_uri.as_str().to_owned())),
        ("code_verifier", Zeroizing::new(verifier.expose_secret().to_owned())),
    ];
    token_request(http, &endpoints.token, client, form, Grant::Code).await
}

/// Gets a new access token with `refresh_token` (RFC 6749 section 6). A provider that rotates
/// refresh tokens returns a new one, and the old one is dead from then on; one that does not
/// leaves it out, and the returned set carries the presented one again. A refused refresh
/// (`invalid_grant`: expired, revoked, or killed by reuse detection) is
/// [`OAuthError::ReconnectNeeded`].
pub async fn refresh(
    http: &OAuthHttp,
    endpoints: &OAuthEndpoints,
    client: &OAuthClient,
    refresh_token: &SecretBytes,
) -> Result<TokenSet, OAuthError> {
    let form = vec![
        ("grant_type", Zeroizing::new("refresh_token".to_owned())),
        ("refresh_token", secret_string(refresh_token)?),
    ];
    let mut tokens = token_request(http, &endpoints.token, client, form, Grant::Refresh).await?;
    if tokens.refresh_token.is_none() {
        tokens.refresh_token = Some(SecretBytes::copy_from(refresh_token.expose_secret()));
    }
    Ok(tokens)
}

/// Revokes the refresh token, then the access token (RFC 7009), where the provider has a
/// revocation endpoint. Revoking the refresh token first ends the grant even if the second
/// request fails; a server that cannot revoke access tokens (`unsupported_token_type`) is
/// not an error.
pub async fn revoke(
    http: &OAuthHttp,
    endpoints: &OAuthEndpoints,
    client: &OAuthClient,
    tokens: &TokenSet,
) -> Result<Revocation, OAuthError> {
    let Some(endpoint) = &endpoints.revocation else { return Ok(Revocation::NotSupported) };
    check_secure(endpoint, "the revocation endpoint")?;
    let pairs = tokens
        .refresh_token
        .iter()
        .map(|t| (t, "refresh_token"))
        .chain(std::iter::once((&tokens.access_token, "access_token")));
    for (token, hint) in pairs {
        let form = vec![
            ("token", secret_string(token)?),
            ("token_type_hint", Zeroizing::new(hint.to_owned())),
        ];
        let response = authenticated(http.inner().post(endpoint.clone()), client, form)?
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if status.is_success() {
            continue;
        }
        let bytes = read_bounded(response, MAX_TOKEN_ANSWER_BYTES).await?;
        let error = refusal_code(&bytes).unwrap_or_else(|| format!("HTTP {status}"));
        if !(hint == "access_token" && error == "unsupported_token_type") {
            return Err(OAuthError::RevocationFailed(error));
        }
    }
    Ok(Revocation::Revoked)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Grant {
    Code,
    Refresh,
}

/// Posts to the token endpoint and reads the token set.
async fn token_request(
    http: &OAuthHttp,
    endpoint: &Url,
    client: &OAuthClient,
    form: Vec<(&'static str, Zeroizing<String>)>,
    grant: Grant,
) -> Result<TokenSet, OAuthError> {
    /// RFC 6749 section 5.1.
    #[derive(Deserialize)]
    struct Answer {
        access_token: Zeroizing<String>,
        token_type: Option<String>,
        refresh_token: Option<Zeroizing<String>>,
        expires_in: Option<serde_json::Value>,
        scope: Option<String>,
        id_token: Option<Zeroizing<String>>,
    }
    check_secure(endpoint, "the token endpoint")?;
    let response = authenticated(http.inner().post(endpoint.clone()), client, form)?
        .send()
        .await
        .map_err(transport)?;
    let status = response.status();
    let bytes = read_bounded(response, MAX_TOKEN_ANSWER_BYTES).await?;
    // Some providers (GitHub) answer an error with 200 and an `error` member.
    if let Some(error) = refusal_code(&bytes) {
        return Err(refused(error, grant));
    }
    if !status.is_success() {
        return Err(refused(format!("HTTP {status}"), grant));
    }
    let answer: Answer = serde_json::from_slice(&bytes)
        .map_err(|_| OAuthError::Transport("the token answer is not the expected JSON".into()))?;
    // RFC 6749 requires token_type; a provider that leaves it out issues bearer tokens.
    let token_type = answer.token_type.unwrap_or_else(|| "Bearer".to_owned());
    if !token_type.eq_ignore_ascii_case("bearer") {
        return Err(OAuthError::UnsupportedTokenType(sanitize_code(&token_type)));
    }
    // Some providers send expires_in as a string.
    let expires_in = match answer.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Ok(TokenSet {
        access_token: SecretBytes::copy_from(answer.access_token.as_bytes()),
        refresh_token: answer
            .refresh_token
            .filter(|t| !t.is_empty())
            .map(|t| SecretBytes::copy_from(t.as_bytes())),
        expires_at: expires_in.map(|s| now.saturating_add(s)),
        scope: answer.scope,
        token_type,
        id_token: answer.id_token.filter(|t| !t.is_empty()).map(IdToken::new),
    })
}

fn refused(error: String, grant: Grant) -> OAuthError {
    if grant == Grant::Refresh && error == "invalid_grant" {
        OAuthError::ReconnectNeeded
    } else {
        OAuthError::TokenRefused { error }
    }
}

/// The sanitized `error` member of an OAuth error answer, if the body is one.
fn refusal_code(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Refusal {
        error: String,
    }
    serde_json::from_slice::<Refusal>(bytes).ok().map(|r| sanitize_code(&r.error))
}

/// Adds client authentication (RFC 6749 section 2.3.1) and the form.
fn authenticated(
    request: reqwest::RequestBuilder,
    client: &OAuthClient,
    mut form: Vec<(&'static str, Zeroizing<String>)>,
) -> Result<reqwest::RequestBuilder, OAuthError> {
    let secret = || {
        client
            .client_secret
            .as_ref()
            .ok_or(OAuthError::ClientSecretMissing(client.auth.as_str()))
            .and_then(secret_string)
    };
    let request = match client.auth {
        ClientAuth::Basic => {
            // Both parts are form-urlencoded before base64 (RFC 6749 section 2.3.1).
            let secret = secret()?;
            let id: String =
                url::form_urlencoded::byte_serialize(client.client_id.as_bytes()).collect();
            let encoded_secret: Zeroizing<String> =
                Zeroizing::new(url::form_urlencoded::byte_serialize(secret.as_bytes()).collect());
            let pair = Zeroizing::new(format!("{id}:{}", encoded_secret.as_str()));
            let header = Zeroizing::new(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair.as_bytes())
            ));
            let mut value = reqwest::header::HeaderValue::from_str(&header)
                .map_err(|_| OAuthError::Transport("the client secret is not usable".into()))?;
            value.set_sensitive(true);
            request.header(reqwest::header::AUTHORIZATION, value)
        }
        ClientAuth::Post => {
            form.push(("client_id", Zeroizing::new(client.client_id.clone())));
            form.push(("client_secret", secret()?));
            request
        }
        ClientAuth::None => {
            form.push(("client_id", Zeroizing::new(client.client_id.clone())));
            request
        }
    };
    let body = Zeroizing::new(
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())))
            .finish(),
    );
    // reqwest owns (and does not zeroize) the body it sends; the copies here are zeroized.
    Ok(request
        .header(reqwest::header::ACCEPT, "application/json")
        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body.as_bytes().to_vec()))
}

/// A transport failure, with its causes (reqwest's own message alone is "error sending
/// request"). URLs are left out: a token endpoint URL is not secret, but a redirect target
/// could carry anything.
pub(super) fn transport(error: reqwest::Error) -> OAuthError {
    OAuthError::Transport(describe(error))
}

/// `error` and its causes, without the URL; a TLS failure in its own words.
pub(super) fn describe(error: reqwest::Error) -> String {
    if let Some(problem) = latchkey_core::tls::tls_problem(&error) {
        return problem.explain("it", "this computer");
    }
    let error = error.without_url();
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// A secret that travels as form text.
fn secret_string(secret: &SecretBytes) -> Result<Zeroizing<String>, OAuthError> {
    std::str::from_utf8(secret.expose_secret())
        .map(|s| Zeroizing::new(s.to_owned()))
        .map_err(|_| OAuthError::Transport("a stored token or secret is not text".into()))
}

/// The body, at most `limit` bytes, in a zeroizing buffer.
pub(crate) async fn read_bounded(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Zeroizing<Vec<u8>>, OAuthError> {
    let mut body = Zeroizing::new(Vec::new());
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > limit {
            return Err(OAuthError::Transport(format!("the answer is over {limit} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_secret() {
        let tokens = TokenSet {
            access_token: SecretBytes::copy_from(b"access-secret"),
            refresh_token: Some(SecretBytes::copy_from(b"refresh-secret")),
            expires_at: Some(1),
            scope: Some("read write".into()),
            token_type: "Bearer".into(),
            id_token: None,
        };
        let shown = format!("{tokens:?}");
        assert!(!shown.contains("secret"), "no token in {shown}");
        assert_eq!(tokens.scopes(), ["read", "write"]);
        let code = AuthorizationCode::new("the-code".into());
        assert!(!format!("{code:?}").contains("the-code"));
    }

    #[test]
    fn invalid_grant_on_refresh_means_reconnect() {
        assert!(matches!(
            refused("invalid_grant".into(), Grant::Refresh),
            OAuthError::ReconnectNeeded
        ));
        assert!(matches!(
            refused("invalid_grant".into(), Grant::Code),
            OAuthError::TokenRefused { error } if error == "invalid_grant"
        ));
        assert_eq!(refusal_code(br#"{"error":"bad\nthing"}"#).as_deref(), Some("badthing"));
        assert_eq!(refusal_code(br#"{"access_token":"x"}"#), None);
    }
}
