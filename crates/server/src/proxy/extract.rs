//! Finding the agent token and capability in an agent's request.
//!
//! Agents use unmodified provider SDKs with only the base URL and key changed, so the token can
//! arrive wherever an SDK puts its key: `Authorization: Bearer`, `Authorization: token` (older
//! GitHub clients), `x-api-key` (Anthropic), `api-key` (Azure OpenAI), `x-goog-api-key` (Google).
//! A capability may follow the token after a `.` (`lk_....<capability>`) for SDKs that offer no
//! way to add a header, or arrive in `Latchkey-Capability`.

use axum::http::HeaderMap;
use latchkey_core::token::AgentToken;

use super::CAPABILITY_HEADER;
use crate::error::ApiError;

/// Headers searched for an agent token, in order.
pub(crate) const TOKEN_HEADERS: [&str; 4] =
    ["authorization", "x-api-key", "api-key", "x-goog-api-key"];

/// The token (and an appended capability, if any) an agent presented.
pub(crate) struct Presented {
    pub(crate) token: AgentToken,
    pub(crate) capability: Option<String>,
}

/// Neither the token nor a capability: whoever holds either may call.
impl std::fmt::Debug for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presented")
            .field("token", &self.token)
            .field("capability", &self.capability.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Finds exactly one agent token in the request's key-carrying headers.
pub(crate) fn agent_token(headers: &HeaderMap) -> Result<Presented, ApiError> {
    let mut found: Option<Presented> = None;
    for name in TOKEN_HEADERS {
        for value in headers.get_all(name) {
            let Ok(value) = value.to_str() else { continue };
            let value = value.trim();
            let credential = match value.split_once(' ') {
                Some((scheme, rest)) if name == "authorization" => {
                    if !scheme.eq_ignore_ascii_case("bearer")
                        && !scheme.eq_ignore_ascii_case("token")
                    {
                        continue;
                    }
                    rest.trim()
                }
                _ => value,
            };
            if !credential.starts_with(latchkey_core::token::PREFIX) {
                continue;
            }
            let (token, capability) = match credential.split_once('.') {
                Some((token, capability)) => (token, Some(capability.to_owned())),
                None => (credential, None),
            };
            let token = AgentToken::parse(token).map_err(|_| super::unknown_token())?;
            if found.is_some() {
                return Err(ApiError::new(
                    crate::error::ErrorCode::BadRequest,
                    "more than one agent token in the request; send exactly one",
                ));
            }
            found = Some(Presented { token, capability });
        }
    }
    found.ok_or_else(super::unknown_token)
}

/// The `Latchkey-Capability` header, if present and text.
pub(crate) fn capability_header(headers: &HeaderMap) -> Option<&str> {
    headers.get(CAPABILITY_HEADER).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// The body size a request declares (`Content-Length`), if it declares one.
pub(crate) fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(axum::http::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Splits a raw (still percent-encoded) request path `/p/{credential}/{rest}` into the
/// credential name and the upstream path `/{rest}` (`/` when there is no rest).
pub(crate) fn split_proxy_path(path: &str) -> (String, String) {
    let rest = path.strip_prefix("/p/").unwrap_or_default();
    match rest.split_once('/') {
        Some((name, upstream)) => (name.to_owned(), format!("/{upstream}")),
        None => (rest.to_owned(), "/".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn the_token_is_found_wherever_an_sdk_puts_its_key() {
        let token = AgentToken::generate().unwrap();
        let t = token.expose_secret();
        for (name, value) in [
            ("authorization", format!("Bearer {t}")),
            ("authorization", format!("token {t}")),
            ("x-api-key", t.to_owned()),
            ("api-key", t.to_owned()),
            ("x-goog-api-key", t.to_owned()),
        ] {
            let found = agent_token(&headers(&[(name, &value)])).unwrap();
            assert_eq!(found.token.hash(), token.hash(), "{name}: {value}");
            assert!(found.capability.is_none());
        }
    }

    #[test]
    fn a_capability_appended_to_the_token_is_split_off() {
        let token = AgentToken::generate().unwrap();
        let value = format!("Bearer {}.AQFvHBwu", token.expose_secret());
        let found = agent_token(&headers(&[("authorization", &value)])).unwrap();
        assert_eq!(found.capability.as_deref(), Some("AQFvHBwu"));
    }

    #[test]
    fn missing_malformed_and_duplicate_tokens_are_refused() {
        assert!(agent_token(&headers(&[])).is_err(), "no token");
        assert!(
            agent_token(&headers(&[("authorization", "Bearer sk-real-openai-key")])).is_err(),
            "not ours"
        );
        assert!(
            agent_token(&headers(&[("x-api-key", "lk_notAValidToken")])).is_err(),
            "bad checksum"
        );
        let a = AgentToken::generate().unwrap();
        let b = AgentToken::generate().unwrap();
        let two = headers(&[
            ("x-api-key", a.expose_secret()),
            ("authorization", &format!("Bearer {}", b.expose_secret())),
        ]);
        assert!(agent_token(&two).is_err(), "two tokens are ambiguous");
    }

    #[test]
    fn debug_shows_neither_the_token_nor_the_capability() {
        let token = AgentToken::generate().unwrap();
        let text = format!("{}.lkc_CANARYcapability", token.expose_secret());
        let presented = agent_token(&headers(&[("x-api-key", &text)])).unwrap();
        assert_eq!(presented.capability.as_deref(), Some("lkc_CANARYcapability"));
        let shown = format!("{presented:?}");
        assert!(!shown.contains("CANARY"), "the capability is redacted: {shown}");
        assert!(!shown.contains(token.expose_secret()), "the token is redacted: {shown}");
    }

    #[test]
    fn proxy_paths_split_into_credential_and_raw_upstream_path() {
        assert_eq!(split_proxy_path("/p/github/repos/a/b"), ("github".into(), "/repos/a/b".into()));
        assert_eq!(split_proxy_path("/p/github"), ("github".into(), "/".into()));
        assert_eq!(split_proxy_path("/p/github/"), ("github".into(), "/".into()));
        assert_eq!(split_proxy_path("/p/x/a%2Fb"), ("x".into(), "/a%2Fb".into()), "stays encoded");
    }
}
