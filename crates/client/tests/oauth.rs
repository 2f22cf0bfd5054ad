//! The native-app OAuth flow against a strict authorization server on loopback (written here:
//! it checks S256 PKCE, single-use codes, exact redirect URIs, rotates refresh tokens and
//! revokes a whole grant when a rotated refresh token is reused), driven by a test "browser"
//! that plays the person signing in.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "the helpers in this file are test code too; a panic is the failure report"
)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use latchkey_client::catalog::ClientAuth;
use latchkey_client::oauth::{
    BrowserLauncher, Endpoints, OAuthApp, OAuthError, authorize, discover, refresh, revoke,
};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use url::Url;

#[derive(Default)]
struct AsState {
    issuer: String,
    s256: bool,
    iss_supported: bool,
    /// code -> (challenge, redirect_uri)
    codes: HashMap<String, (String, String)>,
    /// refresh token -> (grant id, still current)
    refresh: HashMap<String, (u32, bool)>,
    revoked_grants: Vec<u32>,
    next: u32,
}

type Shared = Arc<Mutex<AsState>>;

struct Server {
    base: String,
    state: Shared,
}

async fn server(s256: bool, iss_supported: bool) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state: Shared = Arc::new(Mutex::new(AsState {
        issuer: base.clone(),
        s256,
        iss_supported,
        ..AsState::default()
    }));
    let app = axum::Router::new()
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route("/token", post(token))
        .route("/revoke", post(revoke_endpoint))
        .with_state(Arc::clone(&state));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server { base, state }
}

async fn metadata(State(state): State<Shared>) -> Response {
    let s = state.lock().unwrap();
    let methods = if s.s256 { json!(["S256"]) } else { json!(["plain"]) };
    axum::Json(json!({
        "issuer": s.issuer,
        "authorization_endpoint": format!("{}/authorize", s.issuer),
        "token_endpoint": format!("{}/token", s.issuer),
        "revocation_endpoint": format!("{}/revoke", s.issuer),
        "code_challenge_methods_supported": methods,
        "authorization_response_iss_parameter_supported": s.iss_supported,
    }))
    .into_response()
}

fn refuse(error: &str) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({"error": error}))).into_response()
}

fn issue(s: &mut AsState, grant: u32) -> Response {
    s.next += 1;
    let refresh = format!("refresh-{}", s.next);
    s.refresh.insert(refresh.clone(), (grant, true));
    axum::Json(json!({
        "access_token": format!("access-{}", s.next), "token_type": "Bearer",
        "expires_in": 3600, "refresh_token": refresh, "scope": "read",
    }))
    .into_response()
}

async fn token(State(state): State<Shared>, Form(form): Form<HashMap<String, String>>) -> Response {
    let mut s = state.lock().unwrap();
    match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let Some((challenge, redirect)) = form.get("code").and_then(|c| s.codes.remove(c))
            else {
                return refuse("invalid_grant"); // unknown or replayed code
            };
            if form.get("redirect_uri") != Some(&redirect) {
                return refuse("invalid_grant");
            }
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(Sha256::digest(verifier.as_bytes()));
            if computed != challenge {
                return refuse("invalid_grant");
            }
            s.next += 1;
            let grant = s.next;
            issue(&mut s, grant)
        }
        Some("refresh_token") => {
            let presented = form.get("refresh_token").cloned().unwrap_or_default();
            let Some((grant, current)) = s.refresh.get(&presented).copied() else {
                return refuse("invalid_grant");
            };
            if s.revoked_grants.contains(&grant) {
                return refuse("invalid_grant");
            }
            if !current {
                s.revoked_grants.push(grant); // reuse of a rotated token: the grant dies
                return refuse("invalid_grant");
            }
            s.refresh.insert(presented, (grant, false));
            issue(&mut s, grant)
        }
        _ => refuse("unsupported_grant_type"),
    }
}

async fn revoke_endpoint(
    State(state): State<Shared>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut s = state.lock().unwrap();
    if let Some(token) = form.get("token")
        && let Some((grant, _)) = s.refresh.get(token).copied()
    {
        s.revoked_grants.push(grant);
    }
    StatusCode::OK.into_response()
}

/// How the test person answers the sign-in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Person {
    /// Signs in; the server redirects back with code, state (and iss if it supports it).
    SignsIn,
    /// A stray request with a wrong state arrives first, then the real one.
    WrongStateFirst,
    /// The redirect names another issuer (a mix-up).
    OtherIssuer,
    /// The redirect carries no `iss`.
    NoIssuer,
    /// Refuses at the provider.
    Refuses,
}

struct TestBrowser {
    server: Shared,
    person: Person,
    opened: Mutex<Vec<Url>>,
}

impl BrowserLauncher for TestBrowser {
    fn open(&self, url: &Url) -> Result<(), OAuthError> {
        self.opened.lock().unwrap().push(url.clone());
        let params: HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(params.get("code_challenge_method").map(String::as_str), Some("S256"));
        assert_eq!(params.get("response_type").map(String::as_str), Some("code"));
        let redirect = params["redirect_uri"].clone();
        assert!(redirect.starts_with("http://127.0.0.1:"), "loopback redirect: {redirect}");
        let (state, issuer) = {
            let mut s = self.server.lock().unwrap();
            s.codes.insert("code-1".into(), (params["code_challenge"].clone(), redirect.clone()));
            (params["state"].clone(), s.issuer.clone())
        };
        let person = self.person;
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let go = |query: String| http.get(format!("{redirect}?{query}")).send();
            let enc =
                |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
            let good = format!("code=code-1&state={}&iss={}", enc(&state), enc(&issuer));
            match person {
                Person::SignsIn => drop(go(good).await),
                Person::WrongStateFirst => {
                    let stray = format!("code=code-1&state=forged&iss={}", enc(&issuer));
                    let answer = go(stray).await.unwrap();
                    assert_eq!(answer.status(), 400, "a wrong state gets an error page");
                    let _ = http
                        .get(format!("{}/favicon.ico", redirect.trim_end_matches("/callback")))
                        .send()
                        .await;
                    drop(go(good).await);
                }
                Person::OtherIssuer => drop(
                    go(format!(
                        "code=code-1&state={}&iss={}",
                        enc(&state),
                        enc("https://evil.example")
                    ))
                    .await,
                ),
                Person::NoIssuer => drop(go(format!("code=code-1&state={}", enc(&state))).await),
                Person::Refuses => drop(
                    go(format!("error=access_denied&state={}&iss={}", enc(&state), enc(&issuer)))
                        .await,
                ),
            }
        });
        Ok(())
    }
}

fn app() -> OAuthApp {
    OAuthApp { client_id: "latchkey-test".into(), client_secret: None, auth: ClientAuth::None }
}

async fn run(
    server: &Server,
    person: Person,
    timeout: Duration,
) -> (Result<latchkey_client::oauth::TokenSet, OAuthError>, usize) {
    let http = reqwest::Client::new();
    let endpoints = discover(&http, &server.base).await.expect("discovery");
    let browser =
        TestBrowser { server: Arc::clone(&server.state), person, opened: Mutex::new(Vec::new()) };
    let result =
        authorize(&http, &endpoints, &app(), &["read".into()], &[], &browser, timeout).await;
    let opened = browser.opened.lock().unwrap().len();
    (result, opened)
}

#[tokio::test]
async fn sign_in_refresh_rotation_reuse_detection_and_revocation() {
    let server = server(true, true).await;
    let http = reqwest::Client::new();
    let endpoints = discover(&http, &server.base).await.unwrap();
    assert!(endpoints.iss_required, "the server promises iss");
    let (tokens, _) = run(&server, Person::SignsIn, Duration::from_secs(10)).await;
    let tokens = tokens.expect("the sign-in completes");
    assert_eq!(tokens.access_token.expose_secret(), b"access-2");
    assert!(tokens.expires_at.is_some());
    assert!(!format!("{tokens:?}").contains("access-2"), "Debug shows no token");
    let first_refresh = tokens.refresh_token.unwrap();

    let refreshed = refresh(&http, &endpoints, &app(), &first_refresh).await.expect("refresh");
    let second_refresh = refreshed.refresh_token.expect("a rotated refresh token");
    assert_ne!(second_refresh.expose_secret(), first_refresh.expose_secret());

    // Reusing the rotated-out token: refused, and the provider kills the grant.
    let reused = refresh(&http, &endpoints, &app(), &first_refresh).await.unwrap_err();
    assert!(matches!(reused, OAuthError::ReconnectNeeded), "got {reused:?}");
    let after = refresh(&http, &endpoints, &app(), &second_refresh).await.unwrap_err();
    assert!(matches!(after, OAuthError::ReconnectNeeded), "reuse detection revoked the grant");

    // A fresh sign-in, then disconnect: revocation ends the grant.
    let (tokens, _) = run(&server, Person::SignsIn, Duration::from_secs(10)).await;
    let tokens = tokens.unwrap();
    assert!(revoke(&http, &endpoints, &app(), &tokens).await.unwrap(), "revoked at the provider");
    let gone = refresh(&http, &endpoints, &app(), tokens.refresh_token.as_ref().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(gone, OAuthError::ReconnectNeeded), "got {gone:?}");
}

#[tokio::test]
async fn a_wrong_state_is_answered_with_an_error_page_and_the_flow_keeps_waiting() {
    let server = server(true, true).await;
    let (tokens, _) = run(&server, Person::WrongStateFirst, Duration::from_secs(10)).await;
    tokens.expect("the real callback after a forged one still completes");
}

#[tokio::test]
async fn issuer_mix_up_and_a_missing_promised_issuer_are_refused() {
    let server = server(true, true).await;
    let (mixed, _) = run(&server, Person::OtherIssuer, Duration::from_millis(800)).await;
    assert!(
        matches!(mixed, Err(OAuthError::Timeout(_))),
        "a callback from another issuer is not accepted"
    );
    let (missing, _) = run(&server, Person::NoIssuer, Duration::from_millis(800)).await;
    assert!(
        matches!(missing, Err(OAuthError::Timeout(_))),
        "iss was promised, so its absence is refused"
    );

    // A server that does not promise iss may leave it out.
    let lenient = self::server(true, false).await;
    let (ok, _) = run(&lenient, Person::NoIssuer, Duration::from_secs(10)).await;
    ok.expect("without the promise, a callback without iss is fine");
}

#[tokio::test]
async fn a_refusal_at_the_provider_is_a_typed_error() {
    let server = server(true, true).await;
    let (refused, _) = run(&server, Person::Refuses, Duration::from_secs(10)).await;
    match refused {
        Err(OAuthError::Denied { error }) => assert_eq!(error, "access_denied"),
        other => panic!("expected Denied, got {other:?}"),
    }
}

#[tokio::test]
async fn servers_without_s256_mixed_up_metadata_or_plain_http_are_refused_before_any_browser() {
    let http = reqwest::Client::new();
    let no_s256 = server(false, true).await;
    let error = discover(&http, &no_s256.base).await.unwrap_err();
    assert!(matches!(error, OAuthError::NoS256), "got {error:?}");

    let mixed = server(true, true).await;
    mixed.state.lock().unwrap().issuer = "https://someone-else.example".into();
    let error = discover(&http, &mixed.base).await.unwrap_err();
    assert!(matches!(error, OAuthError::IssuerMismatch { .. }), "got {error:?}");

    let insecure = Endpoints {
        authorize: "http://auth.example.com/authorize".parse().unwrap(),
        token: "https://auth.example.com/token".parse().unwrap(),
        revocation: None,
        issuer: None,
        iss_required: false,
    };
    let browser = TestBrowser {
        server: Arc::clone(&mixed.state),
        person: Person::SignsIn,
        opened: Mutex::new(Vec::new()),
    };
    let error = authorize(&http, &insecure, &app(), &[], &[], &browser, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(error, OAuthError::InsecureEndpoint(_)), "got {error:?}");
    assert!(browser.opened.lock().unwrap().is_empty(), "no browser was opened");
}
