//! The account a credential acts as (`octocat`, `ana@example.com`): found on the device once
//! the credential is obtained, stored with its metadata for display, so members see whose access
//! an integration holds.
//!
//! Two sources, in order: the ID token an OpenID Connect provider returns with the tokens (its
//! `email`, `preferred_username`, `name` or `sub` claim, read only when its issuer and audience
//! are this sign-in's), then the provider's [`AccountLookup`] from the catalog: one `GET` below
//! the credential's API base URL with the credential, as the broker would send it, no redirect
//! followed. Neither is needed for the credential to work, so a provider that says nothing, or
//! an answer that cannot be read, leaves the account unknown. One answer is an error: `401
//! Unauthorized` to an API key, which is the provider saying the key is not valid, so a key pasted
//! wrong is caught before it is stored rather than at an agent's first call ([`KeyRefused`]).
//!
//! The ID token is not a credential the device keeps: it is read for its claims and dropped. Its
//! signature is not checked: it comes straight from the token endpoint over a verified TLS
//! connection, which OpenID Connect Core 1.0 (section 3.1.3.7) allows in place of the signature,
//! and the name is for display only, never for a decision.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use latchkey_core::payload::Injection;
use latchkey_core::secret::SecretBytes;
use latchkey_core::text::acts_on_display;
use serde_json::Value;
use url::Url;
use zeroize::Zeroizing;

use crate::catalog::AccountLookup;
use crate::oauth::token::read_bounded;
use crate::oauth::{OAuthHttp, check_secure};

pub use latchkey_core::text::MAX_ACCOUNT_CHARS;
/// How long the lookup may take: it runs while the member waits for the connection to finish.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read.
const MAX_ANSWER_BYTES: usize = 256 * 1024;
/// ID token claims that name an account, best first.
const ID_TOKEN_CLAIMS: [&str; 4] = ["email", "preferred_username", "name", "sub"];

/// An OpenID Connect ID token from a token endpoint. Read for its claims, never stored; zeroized
/// on drop and redacted in `Debug` like the tokens it came with.
pub struct IdToken(Zeroizing<String>);

impl IdToken {
    pub(crate) fn new(token: Zeroizing<String>) -> Self {
        Self(token)
    }

    /// The account the token names, if its issuer is `issuer` (when the sign-in knows one) and
    /// its audience includes `client_id`.
    pub fn account(&self, client_id: &str, issuer: Option<&str>) -> Option<String> {
        let payload = self.0.split('.').nth(1)?;
        let json = Zeroizing::new(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload.trim_end_matches('='))
                .ok()?,
        );
        let claims: Value = serde_json::from_slice(&json).ok()?;
        let audience = match claims.get("aud")? {
            Value::String(one) => one == client_id,
            Value::Array(many) => many.iter().any(|a| a.as_str() == Some(client_id)),
            _ => false,
        };
        let issued_here = match issuer {
            Some(issuer) => claims.get("iss").and_then(Value::as_str) == Some(issuer),
            None => true,
        };
        if !(audience && issued_here) {
            tracing::debug!(
                "the ID token names another issuer or audience: its claims are not read"
            );
            return None;
        }
        ID_TOKEN_CLAIMS.iter().find_map(|claim| claims.get(*claim).and_then(display_name))
    }
}

impl fmt::Debug for IdToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdToken([REDACTED])")
    }
}

/// The provider answered the account lookup `401 Unauthorized`: it does not take the credential
/// (mistyped, cut short, revoked or expired). Only this answer means that; a `403` (a valid key
/// without the right to read the account) or any other failure leaves the account unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRefused;

/// `value` as an account name: a string or a number, without control characters or the
/// bidirectional overrides and isolates that display text in another order than it is stored,
/// trimmed, and cut to [`MAX_ACCOUNT_CHARS`] characters; `None` when nothing is left.
pub fn display_name(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        _ => return None,
    };
    let kept: String = text.chars().filter(|c| !acts_on_display(*c)).collect();
    let name: String = kept.trim().chars().take(MAX_ACCOUNT_CHARS).collect();
    let name = name.trim_end();
    (!name.is_empty()).then(|| name.to_owned())
}

/// Asks the provider whose account `secret` acts as, following `lookup` below `base_url`, with
/// the secret where `injection` puts it, through `http` (which follows no redirect). `Ok(None)` (logged at debug, never with the secret or
/// the answer) when the lookup's URL is not `https` (or `http` on loopback), the request fails or
/// times out, the answer is another failure or not JSON, or none of the fields holds a name;
/// [`KeyRefused`] when the provider answers `401`.
pub async fn look_up(
    http: &OAuthHttp,
    lookup: &AccountLookup,
    base_url: &Url,
    injection: &Injection,
    secret: &SecretBytes,
) -> Result<Option<String>, KeyRefused> {
    match ask(http, lookup, base_url, injection, secret, LOOKUP_TIMEOUT).await {
        Ok(name) => Ok(name),
        Err(Failure::Refused) => Err(KeyRefused),
        Err(Failure::Other(reason)) => {
            tracing::debug!(%reason, "the account name could not be read");
            Ok(None)
        }
    }
}

/// Why a lookup found no name.
#[derive(Debug)]
enum Failure {
    /// `401 Unauthorized`.
    Refused,
    /// Anything else, said for the debug log.
    Other(String),
}

impl From<String> for Failure {
    fn from(reason: String) -> Self {
        Failure::Other(reason)
    }
}

async fn ask(
    http: &OAuthHttp,
    lookup: &AccountLookup,
    base_url: &Url,
    injection: &Injection,
    secret: &SecretBytes,
    timeout: Duration,
) -> Result<Option<String>, Failure> {
    let mut url = lookup.url(base_url).map_err(|e| format!("the lookup URL: {e}"))?;
    check_secure(&url, "the account lookup").map_err(|e| e.to_string())?;
    if url.host_str() != base_url.host_str() || url.port() != base_url.port() {
        return Err("the lookup URL leaves the base URL's host".to_owned().into());
    }
    let text = Zeroizing::new(
        std::str::from_utf8(secret.expose_secret())
            .map_err(|_| "the credential is not text".to_owned())?
            .to_owned(),
    );
    let client = http.inner();
    let request = match injection {
        Injection::Header { name, prefix } => {
            let value = Zeroizing::new(format!("{prefix}{}", text.as_str()));
            let mut value = reqwest::header::HeaderValue::from_str(&value)
                .map_err(|_| "the credential cannot be sent in a header".to_owned())?;
            value.set_sensitive(true);
            client.get(url).header(name.as_str(), value)
        }
        Injection::Query { name } => {
            url.query_pairs_mut().append_pair(name, &text);
            client.get(url)
        }
    };
    let response = request
        .timeout(timeout)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("the request failed: {}", e.without_url()))?;
    if response.status() == reqwest::StatusCode::UNAUTHORIZED {
        return Err(Failure::Refused);
    }
    if !response.status().is_success() {
        return Err(format!("the provider answered {}", response.status()).into());
    }
    let body = read_bounded(response, MAX_ANSWER_BYTES).await.map_err(|e| e.to_string())?;
    let answer: Value =
        serde_json::from_slice(&body).map_err(|_| "the answer is not JSON".to_owned())?;
    Ok(lookup.fields.iter().find_map(|field| answer.pointer(field).and_then(display_name)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn id_token(claims: &Value) -> IdToken {
        let encode = |v: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        let token = format!("{}.{}.c2lnbmF0dXJl", encode(&json!({"alg": "RS256"})), encode(claims));
        IdToken::new(Zeroizing::new(token))
    }

    #[test]
    fn the_id_token_names_the_account_by_its_best_claim_when_it_was_issued_for_this_sign_in() {
        let issuer = Some("https://id.example.com");
        let token = id_token(&json!({
            "iss": "https://id.example.com", "aud": "client-1", "sub": "248289761001",
            "name": "Ana", "email": "ana@example.com",
        }));
        assert_eq!(token.account("client-1", issuer).as_deref(), Some("ana@example.com"));
        let token = id_token(&json!({
            "iss": "https://id.example.com", "aud": ["other", "client-1"], "sub": "248289761001",
        }));
        assert_eq!(
            token.account("client-1", issuer).as_deref(),
            Some("248289761001"),
            "an audience list including the client counts; `sub` is the last resort"
        );
        assert_eq!(token.account("client-1", None).as_deref(), Some("248289761001"));
    }

    #[test]
    fn an_id_token_for_another_client_or_from_another_issuer_names_nobody() {
        let issuer = Some("https://id.example.com");
        let other_audience = id_token(
            &json!({"iss": "https://id.example.com", "aud": "client-2", "email": "a@b.c"}),
        );
        assert_eq!(other_audience.account("client-1", issuer), None, "audience checked");
        let other_issuer =
            id_token(&json!({"iss": "https://evil.example", "aud": "client-1", "email": "a@b.c"}));
        assert_eq!(other_issuer.account("client-1", issuer), None, "issuer checked when known");
        let no_audience = id_token(&json!({"iss": "https://id.example.com", "email": "a@b.c"}));
        assert_eq!(no_audience.account("client-1", issuer), None, "an audience is required");
        for garbage in ["", "a", "a.b.c", "a.!!!.c", "a.bnVsbA.c"] {
            let token = IdToken::new(Zeroizing::new(garbage.to_owned()));
            assert_eq!(token.account("client-1", None), None, "{garbage:?} is not a token");
        }
    }

    #[test]
    fn display_names_drop_control_and_reordering_characters_and_are_cut_to_the_limit() {
        assert_eq!(display_name(&json!("  octocat \n")).as_deref(), Some("octocat"));
        assert_eq!(display_name(&json!("oct\u{202e}o\u{7}cat")).as_deref(), Some("octocat"));
        assert_eq!(display_name(&json!(12345)).as_deref(), Some("12345"));
        assert_eq!(display_name(&json!(" \u{2066} ")), None);
        assert_eq!(display_name(&json!(null)), None);
        assert_eq!(display_name(&json!({"login": "x"})), None);
        let long = "é".repeat(MAX_ACCOUNT_CHARS + 5);
        let cut = display_name(&json!(long)).unwrap();
        assert_eq!(cut.chars().count(), MAX_ACCOUNT_CHARS, "cut by characters, not bytes");
    }

    /// A provider's API on loopback: `/api/user` names the account for the right key in the
    /// header, `/api/query` for it in the query; the others fail each in their own way.
    async fn provider_api() -> Url {
        use axum::http::{HeaderMap, StatusCode, header};
        use axum::response::IntoResponse;
        use axum::routing::get;

        async fn user(headers: HeaderMap) -> axum::response::Response {
            match headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
                Some("Bearer key-canary-1") => {
                    axum::Json(json!({"data": {"login": "oct\u{202e}ocat", "id": 1}}))
                        .into_response()
                }
                Some("Bearer nameless") => {
                    axum::Json(json!({"data": {"id": 583231}})).into_response()
                }
                _ => StatusCode::UNAUTHORIZED.into_response(),
            }
        }
        async fn query(
            axum::extract::Query(q): axum::extract::Query<
                std::collections::HashMap<String, String>,
            >,
        ) -> axum::response::Response {
            if q.get("key").map(String::as_str) == Some("key-canary-1") {
                axum::Json(json!({"data": {"login": "by-query"}})).into_response()
            } else {
                StatusCode::FORBIDDEN.into_response()
            }
        }
        let app = axum::Router::new()
            .route("/api/user", get(user))
            .route("/api/query", get(query))
            .route("/api/moved", get(|| async { axum::response::Redirect::temporary("/api/user") }))
            .route("/api/page", get(|| async { "<html>not json</html>" }))
            .route(
                "/api/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/api", listener.local_addr().unwrap())).unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    fn http() -> OAuthHttp {
        OAuthHttp::new().unwrap()
    }

    fn lookup(path: &str) -> AccountLookup {
        AccountLookup {
            path: path.to_owned(),
            fields: vec!["/data/email".into(), "/data/login".into()],
        }
    }

    #[tokio::test]
    async fn the_lookup_sends_the_credential_as_the_provider_takes_it_and_reads_the_first_field_present()
     {
        let base = provider_api().await;
        let key = SecretBytes::copy_from(b"key-canary-1");
        let bearer = Injection::bearer();
        assert_eq!(
            look_up(&http(), &lookup("/user"), &base, &bearer, &key).await,
            Ok(Some("octocat".to_owned())),
            "`/data/email` is absent, `/data/login` is read, its override character dropped"
        );
        let query = Injection::Query { name: "key".into() };
        assert_eq!(
            look_up(&http(), &lookup("/query"), &base, &query, &key).await,
            Ok(Some("by-query".to_owned()))
        );
        let nameless = SecretBytes::copy_from(b"nameless");
        assert_eq!(
            look_up(&http(), &lookup("/user"), &base, &bearer, &nameless).await,
            Ok(None),
            "an answer without any of the fields names nobody"
        );
    }

    #[tokio::test]
    async fn a_key_the_provider_answers_401_to_is_refused() {
        let base = provider_api().await;
        let wrong = SecretBytes::copy_from(b"key-canary-2");
        assert_eq!(
            look_up(&http(), &lookup("/user"), &base, &Injection::bearer(), &wrong).await,
            Err(KeyRefused),
            "401 is the provider saying the key is not valid"
        );
    }

    #[tokio::test]
    async fn a_forbidden_moved_foreign_or_slow_lookup_leaves_the_account_unknown() {
        let base = provider_api().await;
        let key = SecretBytes::copy_from(b"key-canary-1");
        let bearer = Injection::bearer();
        let wrong = SecretBytes::copy_from(b"key-canary-2");
        let query = Injection::Query { name: "key".into() };
        assert_eq!(
            look_up(&http(), &lookup("/query"), &base, &query, &wrong).await,
            Ok(None),
            "403: perhaps a valid key without the right to read the account"
        );
        assert_eq!(
            look_up(&http(), &lookup("/moved"), &base, &bearer, &key).await,
            Ok(None),
            "a redirect is not followed: it could take the credential anywhere"
        );
        assert_eq!(
            look_up(&http(), &lookup("/page"), &base, &bearer, &key).await,
            Ok(None),
            "not JSON"
        );
        let plain_remote = Url::parse("http://api.example.com").unwrap();
        assert_eq!(
            look_up(&http(), &lookup("/user"), &plain_remote, &bearer, &key).await,
            Ok(None),
            "plain http is refused off loopback, before any connection"
        );
        let slow =
            ask(&http(), &lookup("/slow"), &base, &bearer, &key, Duration::from_millis(200)).await;
        assert!(
            matches!(&slow, Err(Failure::Other(reason)) if reason.contains("the request failed")),
            "the lookup gives up after its timeout: {slow:?}"
        );
    }

    #[test]
    fn debug_shows_no_id_token() {
        let token = id_token(&json!({"email": "canary-id-token@example.com"}));
        assert_eq!(format!("{token:?}"), "IdToken([REDACTED])");
    }
}
