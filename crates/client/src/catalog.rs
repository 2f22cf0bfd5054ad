//! The provider catalog: where each provider's credential goes (API base URL, the hosts the
//! broker may send it to, the header or query parameter it is injected into) and, for OAuth
//! providers, how it is obtained and refreshed.
//!
//! The catalog is data (`providers/catalog.toml`), compiled into the library and checked when
//! first used; `tests/catalog.rs` holds every entry to the rules in [`Provider::validate`], so
//! a bad entry fails the test suite, not a user.

use std::sync::LazyLock;

use latchkey_core::payload::Injection;
use serde::Deserialize;
use url::Url;

/// The catalog file, compiled in.
pub const CATALOG_TOML: &str = include_str!("../providers/catalog.toml");

/// A catalog entry or the catalog as a whole breaks the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// The TOML does not parse into the catalog's shape.
    #[error("the provider catalog does not parse: {0}")]
    Parse(String),
    /// One provider breaks a rule.
    #[error("provider {id:?}: {problem}")]
    Invalid {
        /// The provider's id.
        id: String,
        /// What is wrong.
        problem: String,
    },
    /// Two providers share an id.
    #[error("provider {0:?} appears twice")]
    Duplicate(String),
}

/// How a provider's credential is obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// OAuth 2.0 authorization code with PKCE, in the system browser.
    Oauth,
    /// An API key pasted by a member.
    ApiKey,
}

/// What a provider does with refresh tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefreshBehaviour {
    /// Long-lived access tokens, no refresh token.
    None,
    /// The refresh token stays valid across refreshes.
    Reusable,
    /// Each refresh returns a new refresh token; the old one dies.
    Rotating,
}

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// A public client: PKCE only.
    None,
    /// HTTP Basic with the client id and secret.
    Basic,
    /// Client id and secret in the form body.
    Post,
}

/// OAuth 2.0 details of a provider.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthProvider {
    /// The authorization endpoint (absent only for custom and account-specific providers).
    pub authorize_url: Option<Url>,
    /// The token endpoint (absent only for custom and account-specific providers).
    pub token_url: Option<Url>,
    /// RFC 7009 revocation endpoint, where the provider has one.
    pub revocation_url: Option<Url>,
    /// The issuer, where the provider publishes RFC 8414 / OIDC metadata.
    pub issuer: Option<String>,
    /// Minimal scopes asked for by default.
    pub default_scopes: Vec<String>,
    /// How scopes are joined in the authorization request.
    #[serde(default = "space")]
    pub scope_separator: String,
    /// What the provider does with refresh tokens.
    pub refresh: RefreshBehaviour,
    /// Client authentication at the token endpoint.
    pub client_auth: ClientAuth,
    /// The provider supports PKCE (the client always sends S256 regardless).
    pub pkce: bool,
    /// Extra authorization request parameters, e.g. Google's `access_type=offline`.
    #[serde(default)]
    pub extra_authorize_params: std::collections::BTreeMap<String, String>,
}

fn space() -> String {
    " ".to_owned()
}

/// API-key details of a provider.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyProvider {
    /// What the provider calls the key, for prompts.
    pub label: String,
    /// How the provider's keys start, to catch a key pasted for the wrong provider.
    pub prefix_hint: Option<String>,
}

/// One provider.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// Stable id, `[a-z0-9-]`, what credentials record as their provider.
    pub id: String,
    /// Display name.
    pub name: String,
    /// OAuth or API key.
    pub kind: Kind,
    /// A generic entry: the user supplies the base URL, hosts and (for OAuth) the endpoints.
    #[serde(default)]
    pub custom: bool,
    /// The API lives on a per-account host: the user supplies the base URL, under
    /// `allowed_hosts`.
    #[serde(default)]
    pub account_specific: bool,
    /// The API base URL, when it is the same for everyone.
    pub api_base_url: Option<Url>,
    /// Hosts the broker may send the credential to; `*.example.com` covers hosts below it.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Where the broker puts the credential.
    #[serde(deserialize_with = "injection")]
    pub injection: Injection,
    /// The provider's API documentation.
    pub docs_url: Option<Url>,
    /// Words the search matches besides the id and name.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// OAuth details (`kind = "oauth"`).
    pub oauth: Option<OAuthProvider>,
    /// API-key details (`kind = "api_key"`).
    pub api_key: Option<ApiKeyProvider>,
}

fn injection<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Injection, D::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wire {
        header: Option<String>,
        prefix: Option<String>,
        query: Option<String>,
    }
    let wire = Wire::deserialize(deserializer)?;
    match (wire.header, wire.query) {
        (Some(name), None) => {
            Ok(Injection::Header { name, prefix: wire.prefix.unwrap_or_default() })
        }
        (None, Some(name)) if wire.prefix.is_none() => Ok(Injection::Query { name }),
        _ => Err(serde::de::Error::custom("injection is either { header, prefix } or { query }")),
    }
}

/// Headers the broker sets itself or that control the connection: never an injection target.
const RESERVED_HEADERS: [&str; 9] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "latchkey-capability",
];

impl Provider {
    /// Checks the entry against the catalog's rules; the message names the rule.
    pub fn validate(&self) -> Result<(), CatalogError> {
        let bad = |problem: String| CatalogError::Invalid { id: self.id.clone(), problem };
        if self.id.is_empty()
            || self.id.len() > 64
            || !self.id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(bad("the id must be 1 to 64 characters of a-z, 0-9 and '-'".into()));
        }
        if self.name.trim().is_empty() {
            return Err(bad("the name is empty".into()));
        }
        let user_supplied = self.custom || self.account_specific;
        match (&self.api_base_url, user_supplied) {
            (None, false) => return Err(bad("api_base_url is required".into())),
            (Some(_), true) => {
                return Err(bad(
                    "custom and account-specific providers take the base URL from the user".into(),
                ));
            }
            _ => {}
        }
        if !self.custom && self.allowed_hosts.is_empty() {
            return Err(bad("allowed_hosts is empty".into()));
        }
        for host in &self.allowed_hosts {
            check_host_pattern(host)
                .map_err(|problem| bad(format!("allowed host {host:?}: {problem}")))?;
        }
        if let Some(base) = &self.api_base_url {
            check_https(base).map_err(|p| bad(format!("api_base_url: {p}")))?;
            let host = base.host_str().unwrap_or_default();
            if !self.allowed_hosts.iter().any(|pattern| host_matches(pattern, host)) {
                return Err(bad(format!("the API host {host} is not in allowed_hosts")));
            }
        }
        for url in [&self.docs_url].into_iter().flatten() {
            check_https(url).map_err(|p| bad(format!("docs_url: {p}")))?;
        }
        match &self.injection {
            Injection::Header { name, prefix } => {
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                {
                    return Err(bad(format!(
                        "injection header {name:?} must be a lowercase header name"
                    )));
                }
                if RESERVED_HEADERS.contains(&name.as_str()) {
                    return Err(bad(format!("injection header {name:?} is reserved")));
                }
                if prefix.chars().any(char::is_control) {
                    return Err(bad("the injection prefix has control characters".into()));
                }
            }
            Injection::Query { name } => {
                if name.is_empty()
                    || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    return Err(bad(format!(
                        "injection query parameter {name:?} is not a plain name"
                    )));
                }
            }
        }
        match (self.kind, &self.oauth, &self.api_key) {
            (Kind::Oauth, Some(oauth), None) => self.validate_oauth(oauth, user_supplied),
            (Kind::ApiKey, None, Some(key)) if !key.label.trim().is_empty() => Ok(()),
            (Kind::ApiKey, None, Some(_)) => Err(bad("the API key label is empty".into())),
            _ => Err(bad("kind \"oauth\" takes an [oauth] table, kind \"api_key\" an [api_key] table, and not the other".into())),
        }
    }

    fn validate_oauth(
        &self,
        oauth: &OAuthProvider,
        user_supplied: bool,
    ) -> Result<(), CatalogError> {
        let bad = |problem: String| CatalogError::Invalid { id: self.id.clone(), problem };
        match (&oauth.authorize_url, &oauth.token_url) {
            (Some(authorize), Some(token)) => {
                check_https(authorize).map_err(|p| bad(format!("authorize_url: {p}")))?;
                check_https(token).map_err(|p| bad(format!("token_url: {p}")))?;
            }
            (None, None) if user_supplied => {}
            _ => return Err(bad("authorize_url and token_url are required".into())),
        }
        if let Some(revocation) = &oauth.revocation_url {
            check_https(revocation).map_err(|p| bad(format!("revocation_url: {p}")))?;
        }
        if let Some(issuer) = &oauth.issuer {
            let url = Url::parse(issuer).map_err(|_| bad("issuer is not a URL".into()))?;
            check_https(&url).map_err(|p| bad(format!("issuer: {p}")))?;
        }
        if !matches!(oauth.scope_separator.as_str(), " " | ",") {
            return Err(bad("scope_separator is \" \" or \",\"".into()));
        }
        for scope in &oauth.default_scopes {
            if scope.is_empty() || scope.contains([' ', ',', '"', '\\']) {
                return Err(bad(format!("scope {scope:?} is not a single scope token")));
            }
        }
        Ok(())
    }

    /// The base URL agents' calls go to: the catalog's, or the user's for custom and
    /// account-specific providers (which must fall under the allowed hosts, if any are listed).
    pub fn base_url_for(&self, given: Option<&str>) -> Result<Url, CatalogError> {
        let bad = |problem: String| CatalogError::Invalid { id: self.id.clone(), problem };
        match (&self.api_base_url, given) {
            (Some(base), None) => Ok(base.clone()),
            (Some(base), Some(given))
                if given.trim_end_matches('/') == base.as_str().trim_end_matches('/') =>
            {
                Ok(base.clone())
            }
            (Some(_), Some(_)) => {
                Err(bad("this provider's API base URL is fixed; leave --base-url out".into()))
            }
            (None, None) => Err(bad("give the API base URL (--base-url)".into())),
            (None, Some(given)) => {
                let url = Url::parse(given).map_err(|_| bad(format!("{given:?} is not a URL")))?;
                let host = url.host_str().unwrap_or_default().to_owned();
                if !self.allowed_hosts.is_empty()
                    && !self.allowed_hosts.iter().any(|p| host_matches(p, &host))
                {
                    return Err(bad(format!(
                        "{host} is not one of this provider's hosts ({})",
                        self.allowed_hosts.join(", ")
                    )));
                }
                Ok(url)
            }
        }
    }
}

fn check_https(url: &Url) -> Result<(), String> {
    if url.scheme() != "https" {
        return Err(format!("{url} is not https"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{url} carries user info"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{url} has no host"));
    }
    Ok(())
}

/// A DNS name, or `*.` followed by a DNS name of at least two labels.
fn check_host_pattern(pattern: &str) -> Result<(), String> {
    let name = pattern.strip_prefix("*.").unwrap_or(pattern);
    if pattern.starts_with("*.") && name.split('.').count() < 2 {
        return Err("a wildcard needs at least two labels after `*.`".into());
    }
    if name.contains('*') {
        return Err("only a leading `*.` is allowed".into());
    }
    let labels_ok = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !labels_ok || !name.contains('.') {
        return Err("must be a lowercase DNS name without scheme, port or path".into());
    }
    Ok(())
}

fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(domain) => {
            host.strip_suffix(domain).is_some_and(|rest| rest.len() > 1 && rest.ends_with('.'))
        }
        None => pattern == host,
    }
}

/// The whole catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    providers: Vec<Provider>,
}

impl Catalog {
    /// Parses and checks a catalog file.
    pub fn parse(text: &str) -> Result<Self, CatalogError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            provider: Vec<Provider>,
        }
        let file: File = toml::from_str(text).map_err(|e| CatalogError::Parse(e.to_string()))?;
        let mut seen = std::collections::BTreeSet::new();
        for provider in &file.provider {
            provider.validate()?;
            if !seen.insert(provider.id.as_str()) {
                return Err(CatalogError::Duplicate(provider.id.clone()));
            }
        }
        Ok(Self { providers: file.provider })
    }

    /// The catalog compiled into this build.
    ///
    /// # Panics
    ///
    /// Never in a tested build: `tests/catalog.rs` parses the same file, so a broken catalog
    /// fails the test suite before it can ship.
    #[allow(clippy::expect_used, reason = "the compiled-in catalog is checked by the test suite")]
    pub fn builtin() -> &'static Catalog {
        static BUILTIN: LazyLock<Catalog> =
            LazyLock::new(|| Catalog::parse(CATALOG_TOML).expect("the built-in catalog is valid"));
        &BUILTIN
    }

    /// The provider with this id.
    pub fn get(&self, id: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.id == id)
    }

    /// Every provider, in catalog order.
    pub fn iter(&self) -> impl Iterator<Item = &Provider> {
        self.providers.iter()
    }

    /// Providers matching `query` (case-insensitive), best first: id or name starting with it,
    /// then containing it, then a keyword containing it. An empty query matches everything.
    pub fn search(&self, query: &str) -> Vec<&Provider> {
        let query = query.trim().to_lowercase();
        let mut ranked: Vec<(u8, &Provider)> = self
            .providers
            .iter()
            .filter_map(|p| {
                let (id, name) = (p.id.as_str(), p.name.to_lowercase());
                let rank = if query.is_empty() || id.starts_with(&query) || name.starts_with(&query)
                {
                    0
                } else if id.contains(&query) || name.contains(&query) {
                    1
                } else if p.keywords.iter().any(|k| k.to_lowercase().contains(&query)) {
                    2
                } else {
                    return None;
                };
                Some((rank, p))
            })
            .collect();
        ranked.sort_by_key(|(rank, _)| *rank);
        ranked.into_iter().map(|(_, p)| p).collect()
    }
}
