//! The authorization code flow for a native app: the request, the wait for the callback, and
//! the grant it yields.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use latchkey_core::pkce::{OAuthState, PkceVerifier};
use tokio::net::TcpListener;
use url::Url;

use super::loopback::{self, Expected, LoopbackRedirect};
use super::token::{AuthorizationCode, OAuthHttp, TokenSet, exchange_code};
use super::{AuthorizationServer, BrowserLauncher, FlowOptions, OAuthClient, OAuthError};

/// Parameters the flow sets itself; [`OAuthClient::extra_authorize_params`] cannot override
/// them.
const RESERVED_PARAMS: [&str; 7] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "state",
    "code_challenge",
    "code_challenge_method",
    "scope",
];

/// Runs a whole sign-in: starts the flow, opens `browser` on the authorization URL, waits for
/// the callback and redeems the code. A caller that wants to show the URL itself (no browser
/// on this machine, or the browser failed to open) uses [`PendingAuthorization`] directly.
pub async fn authorize(
    http: &OAuthHttp,
    server: &AuthorizationServer,
    client: &OAuthClient,
    browser: &dyn BrowserLauncher,
    options: &FlowOptions,
) -> Result<TokenSet, OAuthError> {
    let pending = PendingAuthorization::start(server, client, options).await?;
    browser.open(pending.authorization_url())?;
    let grant = pending.wait().await?;
    grant.redeem(http, server, client).await
}

/// A started sign-in: the callback listener is bound and the authorization URL built. Dropping
/// it closes the listener.
pub struct PendingAuthorization {
    listener: TcpListener,
    redirect: LoopbackRedirect,
    expected: Arc<Expected>,
    verifier: PkceVerifier,
    url: Url,
    timeout: Duration,
}

impl PendingAuthorization {
    /// Binds the callback listener on `options.bind` (a loopback address, else
    /// [`OAuthError::NotLoopback`]) with an ephemeral port, and builds the authorization URL
    /// with a fresh state and S256 challenge.
    pub async fn start(
        server: &AuthorizationServer,
        client: &OAuthClient,
        options: &FlowOptions,
    ) -> Result<Self, OAuthError> {
        if !options.bind.is_loopback() {
            return Err(OAuthError::NotLoopback(options.bind));
        }
        let listener = TcpListener::bind((options.bind, 0)).await.map_err(OAuthError::Listener)?;
        let redirect = LoopbackRedirect::new(listener.local_addr().map_err(OAuthError::Listener)?)?;
        let state = OAuthState::generate().map_err(|_| OAuthError::Random)?;
        let verifier = PkceVerifier::generate().map_err(|_| OAuthError::Random)?;
        let challenge = verifier.challenge();

        let mut url = server.endpoints().authorize.clone();
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", &client.client_id)
                .append_pair("redirect_uri", redirect.as_str())
                .append_pair("state", state.as_str())
                .append_pair("code_challenge", challenge.as_str())
                .append_pair("code_challenge_method", challenge.method());
            if !client.scopes.is_empty() {
                query.append_pair("scope", &client.scopes.join(&client.scope_separator));
            }
            for (name, value) in &client.extra_authorize_params {
                if !RESERVED_PARAMS.contains(&name.as_str()) {
                    query.append_pair(name, value);
                }
            }
        }
        let expected = Arc::new(Expected {
            state,
            issuer: server.issuer().map(str::to_owned),
            iss_required: server.iss_parameter_supported(),
        });
        Ok(Self { listener, redirect, expected, verifier, url, timeout: options.timeout })
    }

    /// The URL to open in the browser. It carries the state, so it is shown to the person
    /// signing in and to nobody else (no logs).
    pub fn authorization_url(&self) -> &Url {
        &self.url
    }

    /// The redirect URI the callback comes back to.
    pub fn redirect_uri(&self) -> &LoopbackRedirect {
        &self.redirect
    }

    /// Waits for the callback (see the `oauth` module docs for what is accepted) until the
    /// timeout, then closes the listener.
    pub async fn wait(self) -> Result<AuthorizationGrant, OAuthError> {
        let Self { listener, redirect, expected, verifier, timeout, .. } = self;
        let outcome = tokio::time::timeout(timeout, loopback::serve(&listener, expected)).await;
        drop(listener);
        let code = outcome.map_err(|_| OAuthError::Timeout(timeout))??;
        Ok(AuthorizationGrant { code, verifier, redirect })
    }
}

impl fmt::Debug for PendingAuthorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingAuthorization")
            .field("redirect", &self.redirect)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// An authorization code with the verifier and redirect URI it must be redeemed with. Secret:
/// zeroized on drop, redacted in `Debug`.
pub struct AuthorizationGrant {
    code: AuthorizationCode,
    verifier: PkceVerifier,
    redirect: LoopbackRedirect,
}

impl AuthorizationGrant {
    /// Exchanges the code for tokens at the token endpoint. A code redeems once: the server
    /// refuses a second exchange ([`OAuthError::TokenRefused`]).
    pub async fn redeem(
        &self,
        http: &OAuthHttp,
        server: &AuthorizationServer,
        client: &OAuthClient,
    ) -> Result<TokenSet, OAuthError> {
        exchange_code(http, server.endpoints(), client, &self.code, &self.verifier, &self.redirect)
            .await
    }
}

impl fmt::Debug for AuthorizationGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizationGrant")
            .field("code", &self.code)
            .field("verifier", &self.verifier)
            .field("redirect", &self.redirect)
            .finish()
    }
}
