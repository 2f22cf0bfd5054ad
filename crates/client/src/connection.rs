//! Connecting a provider's account with OAuth, and disconnecting it: the flow of
//! [`crate::oauth`] with the catalog's endpoints and scopes, the tokens sealed on this device
//! ([`crate::access::add_oauth_credential`]), and at the end the tokens revoked at the provider
//! (RFC 7009) before the credential is deleted at the broker.
//!
//! ```text
//! prepare     catalog lookup, OAuth or not, endpoints, client id, scopes, base URL and hosts:
//!             no network, so a mistake is reported before anyone signs in
//! connect     discovery (issuer only) or the catalog's endpoints -> sign-in in the browser
//!             -> callback on loopback -> code redeemed -> tokens sealed -> envelope to broker
//! disconnect  envelope fetched and opened on this device -> tokens revoked at the provider's
//!             revocation endpoint -> credential deleted at the broker; a failed revocation
//!             deletes nothing unless the caller forces it
//! ```

use latchkey_core::envelope::Envelope;
use latchkey_core::payload::{CredentialKind, CredentialPayload, OAuthRefresh};
use latchkey_core::secret::SecretBytes;
use url::Url;

use crate::access::{
    AccessError, NewOAuthCredential, Resealed, add_oauth_credential, find_credential,
};
use crate::account;
use crate::api::CredentialInfo;
use crate::catalog::{Catalog, CatalogError, ClientAuth, Provider};
use crate::keychain::SharedKeyStore;
use crate::oauth::{
    AuthorizationServer, BrowserLauncher, FlowOptions, OAuthClient, OAuthEndpoints, OAuthError,
    OAuthHttp, Revocation, TokenSet, authorize, revoke,
};
use crate::profile::Profile;
use crate::workspace::signed_in;

/// Connecting or disconnecting failed. Messages say what to do next; none holds a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// No provider with this id in the catalog.
    #[error(
        "no provider {0:?} in the catalog: see `latchkey provider list`, or use custom-oauth2 with the provider's endpoints"
    )]
    UnknownProvider(String),
    /// The provider takes an API key, not OAuth.
    #[error(
        "{name} does not connect with OAuth: it takes an API key; store one with `latchkey credential add --provider {id}`"
    )]
    NotOAuth {
        /// The provider id.
        id: String,
        /// The provider's display name.
        name: String,
    },
    /// The custom OAuth provider was given no endpoints.
    #[error(
        "custom-oauth2 needs the authorization server: give its issuer (for discovery), or both its authorization and token URLs"
    )]
    MissingEndpoints,
    /// Endpoints were given for a catalog provider, whose endpoints are fixed.
    #[error(
        "{0} has its endpoints in the catalog; the issuer and endpoint URLs are only for custom-oauth2 and providers whose endpoints live on each account (Zendesk)"
    )]
    FixedEndpoints(String),
    /// A per-account provider whose OAuth endpoints live on each account's host (Zendesk) was
    /// not given its authorization and token URLs.
    #[error(
        "{0}'s authorization and token endpoints live on your account's host: give both URLs, on the host of the base URL (docs/providers.md lists them)"
    )]
    AccountEndpoints(String),
    /// A per-account provider's endpoint is not on the account's host over https: the code and
    /// the client secret would go elsewhere.
    #[error(
        "{what} {url} is not on your account's host: {name}'s endpoints must be https URLs on {host}, the host of the base URL"
    )]
    EndpointOffAccount {
        /// Which endpoint.
        what: &'static str,
        /// What was given.
        url: String,
        /// The provider's display name.
        name: String,
        /// The base URL's host.
        host: String,
    },
    /// A given URL is not a URL.
    #[error("{what} is not a URL: {value}")]
    BadUrl {
        /// Which URL.
        what: &'static str,
        /// What was given.
        value: String,
    },
    /// No OAuth client id.
    #[error(
        "connecting {0} needs the client id of an OAuth app registered at the provider with the redirect URI http://127.0.0.1/callback (any port); give it as the client id"
    )]
    NoClientId(String),
    /// The provider's catalog entry or the given base URL breaks a rule.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The sign-in, the token exchange or discovery failed (denied, timed out, mixed-up issuer,
    /// ...).
    #[error(transparent)]
    OAuth(#[from] OAuthError),
    /// The broker, the profile or the key store failed.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// A credential with this name exists already (checked before the sign-in).
    #[error(
        "a credential named {0:?} exists already: choose another name, or disconnect or remove that one first"
    )]
    NameTaken(String),
    /// The credential is an API key: there is nothing to revoke.
    #[error(
        "{0:?} is an API key, not an OAuth connection: delete it with `latchkey credential remove`"
    )]
    NotAnOAuthCredential(String),
    /// The provider did not confirm the revocation; nothing was deleted.
    #[error(
        "the tokens of {name:?} could not be revoked at the provider ({reason}); nothing was deleted: try again, or delete it anyway with --force and revoke the app's access at the provider"
    )]
    RevocationFailed {
        /// The credential's name.
        name: String,
        /// Why, without any token.
        reason: String,
    },
}

/// Where a custom OAuth provider's authorization server is (`custom-oauth2` only).
#[derive(Debug, Clone, Default)]
pub struct CustomEndpoints {
    /// The issuer: its metadata is discovered (RFC 8414 / OpenID Connect), and the callback's
    /// `iss` must name it.
    pub issuer: Option<String>,
    /// The authorization endpoint (with `token`, instead of discovery).
    pub authorize: Option<String>,
    /// The token endpoint (with `authorize`, instead of discovery).
    pub token: Option<String>,
    /// The RFC 7009 revocation endpoint, if there is one and no discovery.
    pub revocation: Option<String>,
}

impl CustomEndpoints {
    fn is_empty(&self) -> bool {
        self.issuer.is_none()
            && self.authorize.is_none()
            && self.token.is_none()
            && self.revocation.is_none()
    }
}

/// What to connect.
#[derive(Debug)]
pub struct ConnectRequest<'a> {
    /// The catalog id, e.g. `google` or `custom-oauth2`.
    pub provider: &'a str,
    /// The credential's name (agents call `/p/{name}/...`); default: the provider id.
    pub name: Option<&'a str>,
    /// The API base URL: only for custom and per-account providers.
    pub base_url: Option<&'a str>,
    /// Hosts the broker may send the token to; empty: the provider's, or the base URL's host.
    pub allowed_hosts: Vec<String>,
    /// `custom-oauth2`: the authorization server.
    pub endpoints: CustomEndpoints,
    /// The OAuth app's client id at the provider.
    pub client_id: Option<String>,
    /// The client secret, for providers whose apps authenticate with one (read from a prompt
    /// or stdin, never from a command line).
    pub client_secret: Option<SecretBytes>,
    /// Scopes to ask for; empty: the catalog's minimal defaults.
    pub scopes: Vec<String>,
    /// Shared with the workspace (admins only) or this member's own.
    pub shared: bool,
}

/// A checked [`ConnectRequest`], ready to sign in.
#[derive(Debug)]
pub struct PreparedConnection {
    provider: Provider,
    name: String,
    base_url: Url,
    allowed_hosts: Vec<String>,
    issuer: Option<String>,
    endpoints: Option<OAuthEndpoints>,
    client: OAuthClient,
    shared: bool,
}

impl PreparedConnection {
    /// The provider's display name.
    pub fn provider_name(&self) -> &str {
        &self.provider.name
    }

    /// The credential's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The provider's apps authenticate with a client secret and none was given: ask for it
    /// and pass it to [`PreparedConnection::set_client_secret`].
    pub fn needs_client_secret(&self) -> bool {
        self.client.auth != ClientAuth::None && self.client.client_secret.is_none()
    }

    /// Sets the client secret.
    pub fn set_client_secret(&mut self, secret: SecretBytes) {
        self.client.client_secret = Some(secret);
    }

    /// The scopes that will be asked for.
    pub fn scopes(&self) -> &[String] {
        &self.client.scopes
    }
}

fn parse_url(what: &'static str, value: Option<&str>) -> Result<Option<Url>, ConnectError> {
    value
        .map(|v| v.parse().map_err(|_| ConnectError::BadUrl { what, value: v.to_owned() }))
        .transpose()
}

/// Checks a request against the catalog without any network: the provider exists and uses
/// OAuth, its endpoints are known (the catalog's, or the given ones for `custom-oauth2`), a
/// client id is given, and the base URL and hosts are acceptable.
pub fn prepare(request: ConnectRequest<'_>) -> Result<PreparedConnection, ConnectError> {
    let provider = Catalog::builtin()
        .get(request.provider)
        .ok_or_else(|| ConnectError::UnknownProvider(request.provider.to_owned()))?
        .clone();
    let Some(oauth) = provider.oauth().cloned() else {
        return Err(ConnectError::NotOAuth {
            id: provider.id.as_str().to_owned(),
            name: provider.name.clone(),
        });
    };
    let (issuer, endpoints) = if provider.custom {
        let given = &request.endpoints;
        let authorize = parse_url("the authorization URL", given.authorize.as_deref())?;
        let token = parse_url("the token URL", given.token.as_deref())?;
        let revocation = parse_url("the revocation URL", given.revocation.as_deref())?;
        match (authorize, token) {
            (Some(authorize), Some(token)) => {
                let endpoints =
                    OAuthEndpoints { authorize, token, revocation, issuer: given.issuer.clone() };
                (given.issuer.clone(), Some(endpoints))
            }
            (None, None) if given.issuer.is_some() => (given.issuer.clone(), None),
            _ => return Err(ConnectError::MissingEndpoints),
        }
    } else if endpoints_per_account(&provider) {
        (None, Some(account_endpoints(&provider, &request)?))
    } else {
        if !request.endpoints.is_empty() {
            return Err(ConnectError::FixedEndpoints(provider.name.clone()));
        }
        match (&oauth.authorize_url, &oauth.token_url) {
            (Some(authorize), Some(token)) => {
                let endpoints = OAuthEndpoints {
                    authorize: authorize.clone(),
                    token: token.clone(),
                    revocation: oauth.revocation_url.clone(),
                    issuer: oauth.issuer.clone(),
                };
                (oauth.issuer.clone(), Some(endpoints))
            }
            _ if oauth.issuer.is_some() => (oauth.issuer.clone(), None),
            _ => return Err(ConnectError::MissingEndpoints),
        }
    };
    let client_id = request
        .client_id
        .filter(|id| !id.trim().is_empty())
        .ok_or_else(|| ConnectError::NoClientId(provider.name.clone()))?;
    let base_url = provider.base_url_for(request.base_url)?;
    let allowed_hosts = if !request.allowed_hosts.is_empty() {
        request.allowed_hosts
    } else if provider.custom || provider.account_specific {
        vec![crate::catalog::allowed_host_of(&base_url)]
    } else {
        provider.allowed_hosts.clone()
    };
    let scopes =
        if request.scopes.is_empty() { oauth.default_scopes.clone() } else { request.scopes };
    let client = OAuthClient {
        client_id,
        client_secret: request.client_secret,
        auth: oauth.client_auth,
        scopes,
        scope_separator: oauth.scope_separator.clone(),
        extra_authorize_params: oauth.extra_authorize_params.clone(),
    };
    let name = request.name.unwrap_or(provider.id.as_str()).to_owned();
    Ok(PreparedConnection {
        provider,
        name,
        base_url,
        allowed_hosts,
        issuer,
        endpoints,
        client,
        shared: request.shared,
    })
}

/// Whether `provider`'s OAuth endpoints live on each account's host (a per-account provider
/// with neither endpoints nor an issuer in the catalog: Zendesk): a connection then gives its
/// authorization and token URLs with the account's base URL.
pub fn endpoints_per_account(provider: &Provider) -> bool {
    provider.account_specific
        && provider.oauth().is_some_and(|o| o.authorize_url.is_none() && o.issuer.is_none())
}

/// The endpoints of a per-account provider that has none in the catalog (Zendesk's live on each
/// account's subdomain): given with the connection, every one an https URL on the host (and
/// port) of the account's base URL, which the catalog's wildcard already checked.
fn account_endpoints(
    provider: &Provider,
    request: &ConnectRequest<'_>,
) -> Result<OAuthEndpoints, ConnectError> {
    let given = &request.endpoints;
    let missing = || ConnectError::AccountEndpoints(provider.name.clone());
    if given.issuer.is_some() {
        return Err(missing());
    }
    let base_url = provider.base_url_for(request.base_url)?;
    let authorize =
        parse_url("the authorization URL", given.authorize.as_deref())?.ok_or_else(missing)?;
    let token = parse_url("the token URL", given.token.as_deref())?.ok_or_else(missing)?;
    let revocation = parse_url("the revocation URL", given.revocation.as_deref())?;
    let named = [("the authorization URL", &authorize), ("the token URL", &token)];
    for (what, url) in named.into_iter().chain(revocation.iter().map(|r| ("the revocation URL", r)))
    {
        let on_account = url.scheme() == "https"
            && url.host_str() == base_url.host_str()
            && url.port_or_known_default() == base_url.port_or_known_default();
        if !on_account {
            return Err(ConnectError::EndpointOffAccount {
                what,
                url: url.to_string(),
                name: provider.name.clone(),
                host: base_url.host_str().unwrap_or_default().to_owned(),
            });
        }
    }
    Ok(OAuthEndpoints { authorize, token, revocation, issuer: None })
}

/// The authorization server of a prepared connection: its static endpoints, or discovery.
async fn server(
    http: &OAuthHttp,
    prepared: &PreparedConnection,
) -> Result<AuthorizationServer, OAuthError> {
    match (&prepared.endpoints, &prepared.issuer) {
        (Some(endpoints), _) => AuthorizationServer::from_endpoints(endpoints.clone()),
        (None, Some(issuer)) => AuthorizationServer::discover(http, issuer).await,
        (None, None) => Err(OAuthError::Metadata("no issuer and no endpoints".into())),
    }
}

/// Runs the sign-in (`browser` opens the authorization URL), redeems the code and stores the
/// tokens sealed on this device: only the envelope reaches the broker. The profile and key store
/// are checked before the browser opens.
pub async fn connect(
    profile: &Profile,
    store: &SharedKeyStore,
    prepared: PreparedConnection,
    browser: &dyn BrowserLauncher,
    options: &FlowOptions,
) -> Result<CredentialInfo, ConnectError> {
    // Signed in first: nobody signs in at the provider for a profile that cannot store it, or
    // under a name that is taken.
    let (_, _, broker) = signed_in(profile, store).await.map_err(AccessError::from)?;
    match find_credential(&broker, &prepared.name).await {
        Ok(_) => return Err(ConnectError::NameTaken(prepared.name)),
        Err(AccessError::UnknownCredential(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let http = OAuthHttp::new()?;
    let server = server(&http, &prepared).await?;
    let tokens = authorize(&http, &server, &prepared.client, browser, options).await?;
    let account = account_of(&http, &prepared, &server, &tokens).await;
    let Obtained { scopes, access_token, expires_at, refresh } =
        Obtained::from_sign_in(tokens, &server, &prepared.client);
    let stored = add_oauth_credential(
        profile,
        store,
        NewOAuthCredential {
            name: &prepared.name,
            provider: prepared.provider.id.as_str(),
            base_url: prepared.base_url.as_str().trim_end_matches('/'),
            allowed_hosts: &prepared.allowed_hosts,
            injection: prepared.provider.injection.clone(),
            shared: prepared.shared,
            scopes: &scopes,
            access_token,
            expires_at,
            refresh,
            account: account.as_deref(),
        },
    )
    .await?;
    Ok(stored)
}

/// Whose account a sign-in's tokens act as: the one its ID token names, else the one the
/// provider's account lookup answers for the access token; `None` when neither says.
async fn account_of(
    http: &OAuthHttp,
    prepared: &PreparedConnection,
    server: &AuthorizationServer,
    tokens: &TokenSet,
) -> Option<String> {
    let named = tokens
        .id_token
        .as_ref()
        .and_then(|token| token.account(&prepared.client.client_id, server.issuer()));
    if named.is_some() {
        return named;
    }
    let lookup = prepared.provider.account.as_ref()?;
    // A token the provider just issued and refuses to its own account endpoint lacks the scope
    // for it: the connection stands, its account unknown.
    let (base_url, injection) = (&prepared.base_url, &prepared.provider.injection);
    account::look_up(http, lookup, base_url, injection, &tokens.access_token).await.unwrap_or(None)
}

/// How to reconnect.
#[derive(Debug, Default)]
pub struct ReconnectOptions {
    /// The client id, for a connection stored without refresh data (which holds it).
    pub client_id: Option<String>,
    /// The client secret, for such a connection whose provider requires one.
    pub client_secret: Option<SecretBytes>,
    /// `custom-oauth2`: the issuer (default: the origin of the stored token endpoint).
    pub issuer: Option<String>,
    /// The authorization URL (the token URL is the one kept with the connection): for a
    /// provider whose endpoints live on each account (Zendesk), on the account's host; for
    /// `custom-oauth2` connected with its endpoints given, instead of metadata discovery.
    pub authorize: Option<String>,
    /// How the sign-in runs.
    pub flow: FlowOptions,
}

/// Signs in again at the provider for the OAuth credential named `name` and replaces its tokens
/// in place: same id, name, grants and audit history, status back to active (the way out of
/// "reconnect needed"). The client id and secret come from the stored refresh data unless
/// given; the old tokens are replaced, not revoked (the provider usually ends the old grant
/// when it issues the new one).
pub async fn reconnect(
    profile: &Profile,
    store: &SharedKeyStore,
    name: &str,
    browser: &dyn BrowserLauncher,
    options: ReconnectOptions,
) -> Result<CredentialInfo, ConnectError> {
    let device = signed_in(profile, store).await.map_err(AccessError::from)?;
    let (config, _, client) = &device;
    let current = find_credential(client, name).await?;
    let (version, envelope) =
        client.credential_envelope(current.id).await.map_err(AccessError::from)?;
    let payload = open_payload(store, config, &current, version, &envelope).await?;
    let CredentialKind::OAuth { refresh, .. } = payload.kind else {
        return Err(ConnectError::NotAnOAuthCredential(name.to_owned()));
    };
    let injection = payload.injection.clone();
    drop(payload.secret);
    let (client_id, client_secret, token_endpoint) = match refresh {
        Some(r) => (Some(r.client_id.clone()), r.client_secret, Some(r.token_endpoint.clone())),
        None => (None, None, None),
    };
    let provider = Catalog::builtin()
        .get(&current.provider)
        .ok_or_else(|| ConnectError::UnknownProvider(current.provider.clone()))?;
    let explicit_issuer = options.issuer.clone();
    let issuer = options.issuer.or_else(|| {
        provider.custom.then(|| token_endpoint.as_deref().and_then(origin_of)).flatten()
    });
    let prepared = prepare(ConnectRequest {
        provider: &current.provider,
        name: Some(&current.name),
        base_url: Some(&current.upstream_base_url),
        allowed_hosts: current.allowed_hosts.clone(),
        endpoints: if provider.custom && options.authorize.is_some() {
            // Connected with its endpoints given (a server without metadata): the same again,
            // with the token endpoint kept with the connection.
            CustomEndpoints {
                issuer: explicit_issuer,
                authorize: options.authorize,
                token: token_endpoint,
                revocation: None,
            }
        } else if provider.custom {
            CustomEndpoints { issuer, ..CustomEndpoints::default() }
        } else if endpoints_per_account(provider) {
            CustomEndpoints {
                authorize: options.authorize,
                token: token_endpoint,
                ..CustomEndpoints::default()
            }
        } else {
            CustomEndpoints::default()
        },
        client_id: options.client_id.or(client_id),
        client_secret: options.client_secret.or(client_secret),
        scopes: current.scopes.clone(),
        shared: current.owner == latchkey_core::ids::Owner::Shared,
    })?;
    let http = OAuthHttp::new()?;
    let server = server(&http, &prepared).await?;
    let tokens = authorize(&http, &server, &prepared.client, browser, &options.flow).await?;
    // Signing in again may be as another account: what the listing shows follows.
    let account = account_of(&http, &prepared, &server, &tokens).await;
    let Obtained { scopes, access_token, expires_at, refresh } =
        Obtained::from_sign_in(tokens, &server, &prepared.client);
    let expires_hint = if refresh.is_some() { None } else { expires_at };
    let payload = CredentialPayload {
        kind: CredentialKind::OAuth { expires_at, refresh },
        injection,
        secret: access_token,
    };
    let metadata = Resealed { scopes: &scopes, expires_hint, account: account.as_deref() };
    Ok(crate::access::reseal_in_place(store, &device, &current, payload, metadata).await?)
}

/// What a sign-in gives to store.
struct Obtained {
    /// The scopes granted, or those asked for when the provider does not say.
    scopes: Vec<String>,
    access_token: SecretBytes,
    expires_at: Option<u64>,
    /// The refresh token with what refreshing it needs: the token endpoint and the client.
    refresh: Option<OAuthRefresh>,
}

impl Obtained {
    fn from_sign_in(tokens: TokenSet, server: &AuthorizationServer, client: &OAuthClient) -> Self {
        let granted = tokens.scopes();
        let scopes = if granted.is_empty() { client.scopes.clone() } else { granted };
        let TokenSet { access_token, refresh_token, expires_at, .. } = tokens;
        let refresh = refresh_token.map(|refresh_token| OAuthRefresh {
            refresh_token,
            token_endpoint: server.endpoints().token.as_str().to_owned(),
            client_id: client.client_id.clone(),
            client_secret: client
                .client_secret
                .as_ref()
                .map(|s| SecretBytes::copy_from(s.expose_secret())),
        });
        Self { scopes, access_token, expires_at, refresh }
    }
}

/// `https://host:port` of a URL.
fn origin_of(url: &str) -> Option<String> {
    let url = Url::parse(url).ok()?;
    Some(url.origin().ascii_serialization()).filter(|o| o != "null")
}

/// How to disconnect.
#[derive(Debug, Clone, Default)]
pub struct DisconnectOptions {
    /// Delete the credential even if the provider did not confirm the revocation.
    pub force: bool,
    /// `custom-oauth2`: the issuer whose metadata names the revocation endpoint (default: the
    /// origin of the stored token endpoint).
    pub issuer: Option<String>,
    /// `custom-oauth2`: the revocation endpoint itself.
    pub revocation_url: Option<String>,
    /// The client id, for a connection stored without refresh data (which holds it).
    pub client_id: Option<String>,
}

/// What happened to the tokens at the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RevocationOutcome {
    /// The provider confirmed the revocation.
    Revoked,
    /// The provider has no revocation endpoint that is known: the app's access is to be removed
    /// at the provider.
    NotSupported,
    /// The revocation failed and the credential was deleted anyway (forced).
    Failed(String),
}

/// Revokes the tokens of the OAuth credential named `name` at the provider (opened on this
/// device), then deletes it at the broker. If the revocation fails, nothing is deleted unless
/// `options.force`.
pub async fn disconnect(
    profile: &Profile,
    store: &SharedKeyStore,
    name: &str,
    options: &DisconnectOptions,
) -> Result<(CredentialInfo, RevocationOutcome), ConnectError> {
    let device = signed_in(profile, store).await.map_err(AccessError::from)?;
    let (config, _, client) = &device;
    let credential = find_credential(client, name).await?;
    let (version, envelope) =
        client.credential_envelope(credential.id).await.map_err(AccessError::from)?;
    let payload = open_payload(store, config, &credential, version, &envelope).await?;
    let CredentialKind::OAuth { refresh, .. } = payload.kind else {
        return Err(ConnectError::NotAnOAuthCredential(name.to_owned()));
    };
    let outcome = match revoke_tokens(&credential, options, payload.secret, refresh).await {
        Ok(Revocation::Revoked) => RevocationOutcome::Revoked,
        Ok(_) => RevocationOutcome::NotSupported,
        Err(reason) if options.force => RevocationOutcome::Failed(reason),
        Err(reason) => {
            return Err(ConnectError::RevocationFailed { name: name.to_owned(), reason });
        }
    };
    client.delete_credential(credential.id).await.map_err(AccessError::from)?;
    tracing::info!(credential = %credential.id, "credential disconnected");
    Ok((credential, outcome))
}

async fn open_payload(
    store: &SharedKeyStore,
    config: &crate::profile::ProfileConfig,
    credential: &CredentialInfo,
    version: latchkey_core::ids::KeyVersion,
    envelope: &Envelope,
) -> Result<CredentialPayload, ConnectError> {
    let key =
        crate::access::record_key(store, config, credential.owner, version, credential.id).await?;
    let plaintext = envelope.open(&key).map_err(AccessError::from)?;
    Ok(CredentialPayload::decode(plaintext.expose_secret()).map_err(AccessError::from)?)
}

/// Revokes at the provider; the error is a reason to show.
async fn revoke_tokens(
    credential: &CredentialInfo,
    options: &DisconnectOptions,
    access_token: SecretBytes,
    refresh: Option<OAuthRefresh>,
) -> Result<Revocation, String> {
    let catalog = Catalog::builtin().get(&credential.provider).filter(|p| !p.custom);
    let oauth = catalog.and_then(Provider::oauth);
    let token_endpoint = refresh.as_ref().and_then(|r| Url::parse(&r.token_endpoint).ok());
    let http = OAuthHttp::new().map_err(|e| e.to_string())?;

    // The revocation endpoint: the catalog's, the given one, or the metadata's.
    let given = parse_url("the revocation URL", options.revocation_url.as_deref())
        .map_err(|e| e.to_string())?;
    let revocation = match (oauth, given) {
        (Some(oauth), _) if oauth.revocation_url.is_some() => oauth.revocation_url.clone(),
        (Some(oauth), None) => match &oauth.issuer {
            Some(issuer) => discovered_revocation(&http, issuer).await?,
            None => None,
        },
        // A catalog provider that names no revocation endpoint (one on each account's host)
        // revokes at the one given.
        (Some(_), Some(given)) => Some(given),
        (None, Some(given)) => Some(given),
        (None, None) => {
            let issuer = options
                .issuer
                .clone()
                .or_else(|| token_endpoint.as_ref().map(|t| t.origin().ascii_serialization()));
            match issuer {
                Some(issuer) => discovered_revocation(&http, &issuer).await?,
                None => None,
            }
        }
    };
    let Some(revocation) = revocation else { return Ok(Revocation::NotSupported) };

    let client_id = refresh
        .as_ref()
        .map(|r| r.client_id.clone())
        .or_else(|| options.client_id.clone())
        .ok_or_else(|| "the connection kept no client id: give it with --client-id".to_owned())?;
    let client_secret = refresh
        .as_ref()
        .and_then(|r| r.client_secret.as_ref())
        .map(|s| SecretBytes::copy_from(s.expose_secret()));
    let auth = match (oauth, &client_secret) {
        (_, None) => ClientAuth::None,
        (Some(oauth), Some(_)) if oauth.client_auth != ClientAuth::None => oauth.client_auth,
        _ => ClientAuth::Basic,
    };
    let client = OAuthClient {
        client_id,
        client_secret,
        auth,
        scopes: Vec::new(),
        scope_separator: " ".to_owned(),
        extra_authorize_params: Vec::new(),
    };
    let endpoints = OAuthEndpoints {
        // Only the revocation endpoint is used.
        authorize: revocation.clone(),
        token: token_endpoint.unwrap_or_else(|| revocation.clone()),
        revocation: Some(revocation),
        issuer: None,
    };
    let tokens = TokenSet {
        access_token,
        refresh_token: refresh.map(|r| r.refresh_token),
        expires_at: None,
        scope: None,
        token_type: "Bearer".to_owned(),
        id_token: None,
    };
    revoke(&http, &endpoints, &client, &tokens).await.map_err(|e| e.to_string())
}

async fn discovered_revocation(http: &OAuthHttp, issuer: &str) -> Result<Option<Url>, String> {
    let server = AuthorizationServer::discover(http, issuer).await.map_err(|e| e.to_string())?;
    Ok(server.endpoints().revocation.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(provider: &str) -> ConnectRequest<'_> {
        ConnectRequest {
            provider,
            name: None,
            base_url: None,
            allowed_hosts: Vec::new(),
            endpoints: CustomEndpoints::default(),
            client_id: Some("app".to_owned()),
            client_secret: None,
            scopes: Vec::new(),
            shared: true,
        }
    }

    #[test]
    fn a_catalog_provider_gets_its_endpoints_hosts_and_minimal_scopes() {
        let github = prepare(request("github")).unwrap();
        assert_eq!(github.name(), "github", "the name defaults to the provider id");
        assert_eq!(github.scopes(), ["read:user"]);
        assert!(github.needs_client_secret(), "GitHub apps authenticate with a secret");
        assert_eq!(github.allowed_hosts, ["api.github.com", "uploads.github.com"]);
        let endpoints = github.endpoints.as_ref().unwrap();
        assert_eq!(endpoints.token.as_str(), "https://github.com/login/oauth/access_token");

        let mut asked = request("github");
        asked.scopes = vec!["repo".to_owned()];
        asked.name = Some("gh");
        let asked = prepare(asked).unwrap();
        assert_eq!(asked.scopes(), ["repo"], "given scopes replace the defaults");
        assert_eq!(asked.name(), "gh");
    }

    #[test]
    fn what_cannot_be_connected_is_refused_before_any_network() {
        assert!(matches!(
            prepare(request("openai")),
            Err(ConnectError::NotOAuth { ref id, .. }) if id == "openai"
        ));
        assert!(matches!(prepare(request("nope")), Err(ConnectError::UnknownProvider(_))));
        let mut anonymous = request("github");
        anonymous.client_id = Some("  ".to_owned());
        assert!(matches!(prepare(anonymous), Err(ConnectError::NoClientId(_))));
        let mut moved = request("github");
        moved.endpoints.issuer = Some("https://evil.example".to_owned());
        assert!(matches!(prepare(moved), Err(ConnectError::FixedEndpoints(_))));

        let mut custom = request("custom-oauth2");
        custom.base_url = Some("https://api.example.com");
        assert!(matches!(prepare(custom), Err(ConnectError::MissingEndpoints)));
        let mut half = request("custom-oauth2");
        half.base_url = Some("https://api.example.com");
        half.endpoints.authorize = Some("https://id.example.com/authorize".to_owned());
        assert!(matches!(prepare(half), Err(ConnectError::MissingEndpoints)));
        let mut bad = request("custom-oauth2");
        bad.base_url = Some("https://api.example.com");
        bad.endpoints.authorize = Some("not a url".to_owned());
        bad.endpoints.token = Some("https://id.example.com/token".to_owned());
        assert!(matches!(prepare(bad), Err(ConnectError::BadUrl { .. })));
    }

    #[test]
    fn a_custom_provider_takes_an_issuer_or_both_endpoints_and_its_base_urls_host() {
        let mut discovered = request("custom-oauth2");
        discovered.base_url = Some("https://api.example.com/v1");
        discovered.endpoints.issuer = Some("https://id.example.com".to_owned());
        let discovered = prepare(discovered).unwrap();
        assert!(discovered.endpoints.is_none(), "endpoints come from discovery");
        assert_eq!(discovered.allowed_hosts, ["api.example.com"]);
        assert!(!discovered.needs_client_secret(), "a public client");

        let mut explicit = request("custom-oauth2");
        explicit.base_url = Some("https://api.example.com");
        explicit.endpoints.authorize = Some("https://id.example.com/authorize".to_owned());
        explicit.endpoints.token = Some("https://id.example.com/token".to_owned());
        let explicit = prepare(explicit).unwrap();
        assert_eq!(
            explicit.endpoints.as_ref().unwrap().authorize.as_str(),
            "https://id.example.com/authorize"
        );

        let mut no_base = request("custom-oauth2");
        no_base.endpoints.issuer = Some("https://id.example.com".to_owned());
        assert!(matches!(prepare(no_base), Err(ConnectError::Catalog(_))));
    }

    /// Zendesk's endpoints live on each account's subdomain: they are given with the base URL,
    /// and only ones on that same host are taken (the code and client secret go there).
    #[test]
    fn a_per_account_provider_takes_its_endpoints_on_the_accounts_host_only() {
        let zendesk = |authorize: Option<&str>, token: Option<&str>| {
            let mut asked = request("zendesk");
            asked.base_url = Some("https://acme.zendesk.com/api/v2");
            asked.endpoints.authorize = authorize.map(str::to_owned);
            asked.endpoints.token = token.map(str::to_owned);
            prepare(asked)
        };
        let connected = zendesk(
            Some("https://acme.zendesk.com/oauth/authorizations/new"),
            Some("https://acme.zendesk.com/oauth/tokens"),
        )
        .expect("endpoints on the account's host are taken");
        let endpoints = connected.endpoints.as_ref().unwrap();
        assert_eq!(endpoints.token.as_str(), "https://acme.zendesk.com/oauth/tokens");
        assert!(connected.issuer.is_none(), "no discovery: the endpoints are used as given");
        assert_eq!(connected.allowed_hosts, ["acme.zendesk.com"], "the token goes to the account");

        let missing = zendesk(None, None).unwrap_err();
        assert!(
            matches!(missing, ConnectError::AccountEndpoints(_)),
            "without them it says where they live: {missing}"
        );
        for (authorize, token) in [
            (
                "https://evil.example/oauth/authorizations/new",
                "https://acme.zendesk.com/oauth/tokens",
            ),
            (
                "https://acme.zendesk.com/oauth/authorizations/new",
                "https://other.zendesk.com/oauth/tokens",
            ),
            (
                "http://acme.zendesk.com/oauth/authorizations/new",
                "https://acme.zendesk.com/oauth/tokens",
            ),
            (
                "https://acme.zendesk.com:8443/oauth/authorizations/new",
                "https://acme.zendesk.com/oauth/tokens",
            ),
        ] {
            let refused = zendesk(Some(authorize), Some(token)).unwrap_err();
            assert!(
                matches!(refused, ConnectError::EndpointOffAccount { .. }),
                "{authorize} + {token}: only https on the account's own host: {refused}"
            );
        }
        let mut discovered = request("zendesk");
        discovered.base_url = Some("https://acme.zendesk.com/api/v2");
        discovered.endpoints.issuer = Some("https://acme.zendesk.com".to_owned());
        assert!(
            matches!(prepare(discovered), Err(ConnectError::AccountEndpoints(_))),
            "Zendesk has no discovery: an issuer alone is not enough"
        );
        let mut elsewhere = request("zendesk");
        elsewhere.base_url = Some("https://acme.example.com/api/v2");
        elsewhere.endpoints.authorize = Some("https://acme.example.com/a".to_owned());
        elsewhere.endpoints.token = Some("https://acme.example.com/t".to_owned());
        assert!(
            matches!(prepare(elsewhere), Err(ConnectError::Catalog(_))),
            "the base URL itself must be under *.zendesk.com"
        );
    }
}
