//! The native-app OAuth flow against real authorization servers on loopback, started from
//! `tests/oauth/`: oidc-provider configured strictly (PKCE S256 required, single-use codes,
//! registered redirect URIs, refresh token rotation with reuse detection, RFC 9207 `iss`,
//! revocation) and oauth2-mock-server, which accepts nearly anything, so that only the client's
//! own checks protect it. A test "browser" plays the person signing in.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests: a panic is the failure report"
)]

use crate::{browser, servers, tls};

use std::net::IpAddr;
use std::time::Duration;

use base64::Engine as _;
use browser::{Event, Person, TestBrowser};
use latchkey_client::oauth::{
    AuthorizationCode, AuthorizationServer, ClientAuth, FlowOptions, LoopbackRedirect, OAuthClient,
    OAuthEndpoints, OAuthError, OAuthHttp, PendingAuthorization, Revocation, TokenSet, authorize,
    exchange_code, refresh, revoke,
};
use latchkey_core::pkce::PkceVerifier;
use latchkey_core::secret::SecretBytes;
use reqwest::StatusCode;
use servers::AuthServer;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc::UnboundedReceiver;
use url::Url;

/// Long enough for any sign-in that is meant to complete.
const PATIENT: Duration = Duration::from_secs(60);
/// For flows meant to time out: long enough for the test browser's requests to arrive first.
const SHORT: Duration = Duration::from_secs(3);

fn options(timeout: Duration) -> FlowOptions {
    FlowOptions { timeout, ..FlowOptions::default() }
}

/// The strict server's native client, asking for a refresh token.
fn native_client(server: &AuthServer) -> OAuthClient {
    OAuthClient::public(&server.client_id, vec!["openid".into(), "offline_access".into()])
}

async fn discover(server: &AuthServer) -> (OAuthHttp, AuthorizationServer) {
    let http = OAuthHttp::new().unwrap();
    let discovered = AuthorizationServer::discover(&http, &server.issuer)
        .await
        .expect("the server's metadata is usable");
    (http, discovered)
}

/// Runs a whole sign-in with `person` at the wheel; returns the result and the browser's
/// events.
async fn sign_in(
    http: &OAuthHttp,
    server: &AuthorizationServer,
    client: &OAuthClient,
    person: Person,
    timeout: Duration,
) -> (Result<TokenSet, OAuthError>, Vec<Event>) {
    let (browser, events) = TestBrowser::new(person);
    let result = authorize(http, server, client, &browser, &options(timeout)).await;
    drop(browser);
    (result, drain(events).await)
}

/// Every event until the browser's tasks are done.
async fn drain(mut events: UnboundedReceiver<Event>) -> Vec<Event> {
    let mut all = Vec::new();
    while let Some(event) = events.recv().await {
        if let Event::Failed(why) = &event {
            panic!("the test browser could not sign in: {why}");
        }
        all.push(event);
    }
    all
}

fn opened(events: &[Event]) -> &Url {
    events
        .iter()
        .find_map(|e| if let Event::Opened(url) = e { Some(url) } else { None })
        .expect("the browser was opened")
}

fn delivered(events: &[Event]) -> Vec<(Url, StatusCode)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Delivered { url, status } => Some((url.clone(), *status)),
            _ => None,
        })
        .collect()
}

fn param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// The callback listener of a finished flow is closed: nothing accepts on its port.
async fn assert_listener_closed(authorization_url: &Url) {
    let redirect: Url = param(authorization_url, "redirect_uri").unwrap().parse().unwrap();
    let port = redirect.port().unwrap();
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(),
        "the callback listener must be closed once the flow ends"
    );
}

fn secret(s: &SecretBytes) -> String {
    String::from_utf8(s.expose_secret().to_vec()).unwrap()
}

#[tokio::test]
async fn signing_in_gives_tokens_whose_refresh_token_rotates_and_reuse_of_a_rotated_one_kills_the_grant()
 {
    let server = servers::strict().await;
    let (http, discovered) = discover(&server).await;
    assert!(discovered.iss_parameter_supported(), "oidc-provider promises iss (RFC 9207)");
    assert!(discovered.endpoints().revocation.is_some(), "revocation is enabled");
    let client = native_client(&server);

    let (tokens, events) = sign_in(&http, &discovered, &client, Person::SignsIn, PATIENT).await;
    let tokens = tokens.expect("the sign-in completes");
    let url = opened(&events);
    assert_eq!(param(url, "code_challenge_method").as_deref(), Some("S256"));
    assert_eq!(param(url, "response_type").as_deref(), Some("code"));
    assert!(
        param(url, "redirect_uri").unwrap().starts_with("http://127.0.0.1:"),
        "the redirect URI is on loopback"
    );
    assert_eq!(delivered(&events).len(), 1, "one callback");
    assert_eq!(delivered(&events)[0].1, StatusCode::OK, "the callback page says signed in");
    assert_listener_closed(url).await;

    assert!(tokens.token_type.eq_ignore_ascii_case("bearer"));
    assert!(tokens.expires_at.is_some(), "oidc-provider says when the access token expires");
    let shown = format!("{tokens:?}");
    assert!(!shown.contains(&secret(&tokens.access_token)), "Debug shows no access token");
    let first = tokens.refresh_token.expect("a refresh token (refresh_token grant allowed)");
    assert!(!shown.contains(&secret(&first)), "Debug shows no refresh token");

    let endpoints = discovered.endpoints();
    let second = refresh(&http, endpoints, &client, &first).await.expect("refresh works");
    let second = second.refresh_token.expect("the refresh token rotated");
    assert_ne!(secret(&second), secret(&first), "a rotated refresh token is new");
    let third = refresh(&http, endpoints, &client, &second).await.expect("the rotated one works");
    let third = third.refresh_token.expect("rotated again");

    let reused = refresh(&http, endpoints, &client, &first).await.unwrap_err();
    assert!(matches!(reused, OAuthError::ReconnectNeeded), "a rotated-out token: {reused:?}");
    let after = refresh(&http, endpoints, &client, &third).await.unwrap_err();
    assert!(
        matches!(after, OAuthError::ReconnectNeeded),
        "reuse detection revoked the whole grant, newest refresh token included: {after:?}"
    );
}

#[tokio::test]
async fn a_callback_with_another_state_gets_an_error_page_and_the_real_one_still_completes() {
    let server = servers::strict().await;
    let (http, discovered) = discover(&server).await;
    let client = native_client(&server);
    let (tokens, events) =
        sign_in(&http, &discovered, &client, Person::ForgedStateFirst, PATIENT).await;
    tokens.expect("the genuine callback after a forged one completes the flow");
    let statuses: Vec<StatusCode> = delivered(&events).iter().map(|(_, s)| *s).collect();
    assert_eq!(
        statuses,
        [StatusCode::BAD_REQUEST, StatusCode::NOT_FOUND, StatusCode::OK],
        "forged state: error page; another path: not found; genuine: signed in"
    );
}

#[tokio::test]
async fn a_flow_that_only_sees_a_forged_state_keeps_waiting_until_it_times_out() {
    let server = servers::strict().await;
    let (http, discovered) = discover(&server).await;
    let client = native_client(&server);
    let (result, events) =
        sign_in(&http, &discovered, &client, Person::OnlyForgedState, SHORT).await;
    assert!(matches!(result, Err(OAuthError::Timeout(_))), "got {result:?}");
    assert_eq!(
        delivered(&events)[0].1,
        StatusCode::BAD_REQUEST,
        "the forged callback reached the listener and was refused before the timeout"
    );
    assert_listener_closed(opened(&events)).await;
}

#[tokio::test]
async fn the_token_endpoint_refuses_a_wrong_or_missing_verifier() {
    let server = servers::strict().await;
    let (http, discovered) = discover(&server).await;
    let client = native_client(&server);
    let (browser, events) = TestBrowser::new(Person::KeepsCallback);
    let pending =
        PendingAuthorization::start(&discovered, &client, &options(PATIENT)).await.unwrap();
    let redirect = pending.redirect_uri().clone();
    latchkey_client::oauth::BrowserLauncher::open(&browser, pending.authorization_url()).unwrap();
    drop(browser);
    drop(pending);
    let events = drain(events).await;
    let callback = events
        .iter()
        .find_map(|e| if let Event::Kept(url) = e { Some(url.clone()) } else { None })
        .expect("the browser kept the callback");
    let code = param(&callback, "code").expect("a code");

    // Without the verifier at all (a raw request: the client cannot send one without it).
    let raw = reqwest::Client::new()
        .post(discovered.endpoints().token.clone())
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect.as_str()),
            ("client_id", client.client_id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST, "PKCE is required");

    // With a verifier that is not the one the challenge was made from.
    let wrong = PkceVerifier::generate().unwrap();
    let error = exchange_code(
        &http,
        discovered.endpoints(),
        &client,
        &AuthorizationCode::new(code),
        &wrong,
        &redirect,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&error, OAuthError::TokenRefused { error } if error == "invalid_grant"),
        "a wrong verifier is refused as invalid_grant: {error:?}"
    );
    assert!(!error.to_string().contains(wrong.expose_secret()), "no verifier in the message");
}

#[tokio::test]
async fn a_callback_from_another_authorization_server_is_refused_as_a_mix_up() {
    let expected = servers::strict().await;
    let other = servers::strict().await;
    let (http, discovered) = discover(&expected).await;
    let client = native_client(&expected);
    let origin: Url = other.issuer.parse().unwrap();
    let (result, events) =
        sign_in(&http, &discovered, &client, Person::SignsInAt(origin), PATIENT).await;
    match &result {
        Err(OAuthError::IssuerMixUp { expected: issuer }) => assert_eq!(issuer, &expected.issuer),
        other => panic!("expected an issuer mix-up, got {other:?}"),
    }
    let calls = delivered(&events);
    assert_eq!(
        param(&calls[0].0, "iss").as_deref(),
        Some(other.issuer.as_str()),
        "the other server named itself"
    );
    assert_eq!(calls[0].1, StatusCode::BAD_REQUEST, "the mixed-up answer gets an error page");
    assert_listener_closed(opened(&events)).await;
}

#[tokio::test]
async fn a_replayed_code_is_refused_and_the_grant_it_made_is_revoked() {
    let server = servers::strict().await;
    let (http, discovered) = discover(&server).await;
    let client = native_client(&server);
    let (browser, events) = TestBrowser::new(Person::SignsIn);
    let pending =
        PendingAuthorization::start(&discovered, &client, &options(PATIENT)).await.unwrap();
    latchkey_client::oauth::BrowserLauncher::open(&browser, pending.authorization_url()).unwrap();
    drop(browser);
    let grant = pending.wait().await.expect("the callback arrives");
    let events = drain(events).await;
    let code = param(&delivered(&events)[0].0, "code").unwrap();
    assert!(!format!("{grant:?}").contains(&code), "Debug of a grant shows no code");

    let tokens = grant.redeem(&http, &discovered, &client).await.expect("first redemption");
    let replay = grant.redeem(&http, &discovered, &client).await.unwrap_err();
    assert!(
        matches!(&replay, OAuthError::TokenRefused { error } if error == "invalid_grant"),
        "a code redeems once: {replay:?}"
    );
    let after =
        refresh(&http, discovered.endpoints(), &client, tokens.refresh_token.as_ref().unwrap())
            .await
            .unwrap_err();
    assert!(
        matches!(after, OAuthError::ReconnectNeeded),
        "the replay revoked what the code had issued: {after:?}"
    );
}

#[tokio::test]
async fn redirects_off_loopback_are_refused_by_the_client_and_by_the_server() {
    // The client cannot build one.
    for addr in ["192.0.2.10:8080", "0.0.0.0:8080", "[::]:8080"] {
        let error = LoopbackRedirect::new(addr.parse().unwrap()).unwrap_err();
        assert!(matches!(error, OAuthError::NotLoopback(_)), "{addr}: {error:?}");
    }
    let server = servers::strict().await;
    let (_http, discovered) = discover(&server).await;
    let client = native_client(&server);
    let everywhere: IpAddr = "0.0.0.0".parse().unwrap();
    let error = PendingAuthorization::start(
        &discovered,
        &client,
        &FlowOptions { bind: everywhere, ..FlowOptions::default() },
    )
    .await
    .unwrap_err();
    assert!(matches!(error, OAuthError::NotLoopback(_)), "no listener off loopback: {error:?}");

    // The server refuses a redirect URI that is not registered, without redirecting to it.
    let pending =
        PendingAuthorization::start(&discovered, &client, &options(PATIENT)).await.unwrap();
    let http =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for redirect in ["https://attacker.example/callback", "http://127.0.0.1:9/elsewhere"] {
        let mut url = pending.authorization_url().clone();
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "redirect_uri" { redirect.to_owned() } else { v.into_owned() };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        let answer = http.get(url).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{redirect} is not registered");
        assert!(answer.headers().get("location").is_none(), "no redirect to {redirect}");
    }
}

#[tokio::test]
async fn metadata_without_s256_is_refused_before_any_browser_opens() {
    for flags in [&["--pkce-methods=plain"][..], &["--pkce-methods="][..]] {
        let server = servers::lenient(flags).await;
        let http = OAuthHttp::new().unwrap();
        let (browser, events) = TestBrowser::new(Person::SignsIn);
        let result = async {
            let discovered = AuthorizationServer::discover(&http, &server.issuer).await?;
            let client = OAuthClient::public("latchkey-test", Vec::new());
            authorize(&http, &discovered, &client, &browser, &options(PATIENT)).await
        }
        .await;
        assert!(matches!(result, Err(OAuthError::NoS256)), "{flags:?}: got {result:?}");
        drop(browser);
        assert!(drain(events).await.is_empty(), "{flags:?}: no browser was opened");
        assert_eq!(
            server.received().await["authorize"].as_array().unwrap().len(),
            0,
            "nothing reached the authorization endpoint"
        );
    }
}

#[tokio::test]
async fn nobody_signing_in_times_out_and_closes_the_listener() {
    let server = servers::strict().await;
    let (http, discovered) = discover(&server).await;
    let client = native_client(&server);
    let (result, events) = sign_in(&http, &discovered, &client, Person::Idles, SHORT).await;
    match result {
        Err(error @ OAuthError::Timeout(_)) => {
            assert!(error.to_string().contains("try again"), "the message says what to do")
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_listener_closed(opened(&events)).await;
}

#[tokio::test]
async fn cancelling_at_the_provider_is_access_denied() {
    let server = servers::strict().await;
    let (http, discovered) = discover(&server).await;
    let client = native_client(&server);
    let (result, events) = sign_in(&http, &discovered, &client, Person::Cancels, PATIENT).await;
    match result {
        Err(OAuthError::Denied { error }) => assert_eq!(error, "access_denied"),
        other => panic!("expected Denied, got {other:?}"),
    }
    assert_eq!(delivered(&events)[0].1, StatusCode::OK, "the refusal page is shown");
    assert_listener_closed(opened(&events)).await;
}

#[tokio::test]
async fn revoking_ends_the_grant() {
    let server = servers::strict().await;
    let (http, discovered) = discover(&server).await;
    let client = native_client(&server);
    let (tokens, _) = sign_in(&http, &discovered, &client, Person::SignsIn, PATIENT).await;
    let tokens = tokens.unwrap();
    let endpoints = discovered.endpoints();
    assert_eq!(revoke(&http, endpoints, &client, &tokens).await.unwrap(), Revocation::Revoked);
    let after = refresh(&http, endpoints, &client, tokens.refresh_token.as_ref().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(after, OAuthError::ReconnectNeeded), "revoked: {after:?}");

    let without = OAuthEndpoints { revocation: None, ..endpoints.clone() };
    assert_eq!(
        revoke(&http, &without, &client, &tokens).await.unwrap(),
        Revocation::NotSupported,
        "no endpoint: the caller is told to revoke at the provider"
    );
}

#[tokio::test]
async fn against_a_lenient_server_the_client_still_sends_s256_and_checks_state() {
    let server = servers::lenient(&[]).await;
    let (http, discovered) = discover(&server).await;
    let client = OAuthClient::public("latchkey-test", vec!["read".into()]);
    let (tokens, events) =
        sign_in(&http, &discovered, &client, Person::ForgedStateFirst, PATIENT).await;
    tokens.expect("the genuine callback completes");
    let statuses: Vec<StatusCode> = delivered(&events).iter().map(|(_, s)| *s).collect();
    assert_eq!(statuses[0], StatusCode::BAD_REQUEST, "the client refused the forged state itself");

    let received = server.received().await;
    let asked = &received["authorize"][0];
    let token = &received["token"][0];
    assert_eq!(asked["code_challenge_method"], "S256", "S256, although the server takes plain");
    let verifier = token["code_verifier"].as_str().expect("the verifier was sent");
    assert_eq!(verifier.len(), 43, "32 random bytes in base64url");
    let challenge =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier));
    assert_eq!(asked["code_challenge"], challenge.as_str(), "challenge = S256(verifier)");
    assert_eq!(token["redirect_uri"], asked["redirect_uri"], "the same redirect URI");
    assert_eq!(token["grant_type"], "authorization_code");
    assert_eq!(token["client_id"], "latchkey-test", "a public client names itself");
    assert_eq!(asked["state"].as_str().unwrap().len(), 43, "32 random bytes of state");
}

#[tokio::test]
async fn against_a_lenient_server_the_client_still_checks_iss() {
    let cases: [(&[&str], &str); 5] = [
        (&["--promise-iss", "--iss=none"], "missing"),
        (&["--promise-iss", "--iss=other"], "mix-up"),
        (&["--iss=other"], "mix-up"),
        (&["--promise-iss", "--iss=self"], "ok"),
        (&["--iss=none"], "ok"),
    ];
    for (flags, outcome) in cases {
        let server = servers::lenient(flags).await;
        let (http, discovered) = discover(&server).await;
        let client = OAuthClient::public("latchkey-test", Vec::new());
        let (result, _) = sign_in(&http, &discovered, &client, Person::SignsIn, PATIENT).await;
        match (outcome, &result) {
            ("missing", Err(OAuthError::IssuerMissing { .. }))
            | ("mix-up", Err(OAuthError::IssuerMixUp { .. }))
            | ("ok", Ok(_)) => {}
            _ => panic!("{flags:?} should be {outcome}, got {result:?}"),
        }
        let redeemed = server.received().await["token"].as_array().unwrap().len();
        assert_eq!(redeemed, usize::from(outcome == "ok"), "{flags:?}: redeemed only when ok");
    }
}

#[tokio::test]
async fn confidential_clients_authenticate_with_basic_or_post_at_static_endpoints() {
    let server = servers::lenient(&["--no-refresh-rotation"]).await;
    let http = OAuthHttp::new().unwrap();
    let base: Url = server.issuer.parse().unwrap();
    let endpoints = OAuthEndpoints {
        authorize: base.join("/authorize").unwrap(),
        token: base.join("/token").unwrap(),
        revocation: None,
        issuer: None,
    };
    let configured = AuthorizationServer::from_endpoints(endpoints.clone()).unwrap();
    let confidential = |auth| OAuthClient {
        client_id: "app id".into(),
        client_secret: Some(SecretBytes::copy_from(b"s3cret:+/")),
        auth,
        scopes: vec!["read".into(), "write".into()],
        scope_separator: ",".into(),
        extra_authorize_params: vec![
            ("access_type".into(), "offline".into()),
            ("state".into(), "attacker-chosen".into()),
        ],
    };

    let basic = confidential(ClientAuth::Basic);
    let (tokens, events) = sign_in(&http, &configured, &basic, Person::SignsIn, PATIENT).await;
    let tokens = tokens.expect("basic auth sign-in");
    let url = opened(&events);
    assert_eq!(param(url, "scope").as_deref(), Some("read,write"), "the provider's separator");
    assert_eq!(param(url, "access_type").as_deref(), Some("offline"), "extra parameters pass");
    assert_eq!(
        url.query_pairs().filter(|(k, _)| k == "state").count(),
        1,
        "an extra parameter cannot replace the state"
    );
    let received = server.received().await;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("app+id:s3cret%3A%2B%2F")
    );
    assert_eq!(received["token"][0]["authorization"], expected.as_str(), "RFC 6749 2.3.1");
    assert!(received["token"][0].get("client_secret").is_none(), "no secret in the body");

    // A provider that does not rotate: the old refresh token comes back to be kept.
    let old = tokens.refresh_token.unwrap();
    let refreshed = refresh(&http, &endpoints, &basic, &old).await.unwrap();
    assert_eq!(secret(refreshed.refresh_token.as_ref().unwrap()), secret(&old));

    let post = confidential(ClientAuth::Post);
    let (tokens, _) = sign_in(&http, &configured, &post, Person::SignsIn, PATIENT).await;
    tokens.expect("post auth sign-in");
    let received = server.received().await;
    let last = received["token"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["client_secret"], "s3cret:+/", "the secret in the body");
    assert_eq!(last["client_id"], "app id");
    assert!(last["authorization"].is_null(), "no Authorization header");

    let no_secret = OAuthClient { client_secret: None, ..confidential(ClientAuth::Basic) };
    let error = refresh(&http, &endpoints, &no_secret, &old).await.unwrap_err();
    assert!(matches!(error, OAuthError::ClientSecretMissing("basic")), "got {error:?}");
}

#[tokio::test]
async fn an_authorization_server_with_a_refused_certificate_is_named_as_such() {
    // A self-hosted provider behind a private CA this computer does not trust.
    let acceptor = tls::TestCa::new("Private CA").issue(&["localhost"], None).acceptor();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("https://localhost:{}", listener.local_addr().unwrap().port());
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let _ = acceptor.accept(socket).await;
        }
    });
    let http = OAuthHttp::new().unwrap();
    let error = AuthorizationServer::discover(&http, &issuer).await.unwrap_err().to_string();
    assert!(
        error.contains("TLS certificate this computer refuses")
            && error.contains("not trusted here")
            && !error.contains("error sending request"),
        "each metadata URL tried names the certificate, not a generic send failure: {error}"
    );
}
