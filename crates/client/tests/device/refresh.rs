//! Refreshing OAuth connections on the device, against a real broker and the strict
//! authorization server of `tests/oauth/` (oidc-provider: refresh tokens rotate on every use,
//! and presenting a rotated-out one revokes the whole grant). Needs `npm ci` in `tests/oauth`.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "the helpers in this file are test code too; a panic is the failure report"
)]

use crate::{browser, common, servers};

use std::time::Duration;

use browser::{Person, TestBrowser};
use common::{Machine, TestBroker};
use latchkey_client::access::{CredentialChanges, GrantTerms, grant_standing, update_credential};
use latchkey_client::access::{NewApiKey, add_api_key};
use latchkey_client::api::CredentialReplacement;
use latchkey_client::api::{CredentialInfo, CredentialStatus};
use latchkey_client::api::{InviteFor, Role};
use latchkey_client::connection::{
    ConnectError, ConnectRequest, CustomEndpoints, ReconnectOptions, connect, prepare, reconnect,
};
use latchkey_client::oauth::{
    FlowOptions, OAuthClient, OAuthEndpoints, OAuthError, OAuthHttp, refresh,
};
use latchkey_client::refresh::{
    DEFAULT_BUFFER, RefreshAction, RefreshError, RefreshOptions, RefreshReport, refresh_all,
    refresh_if_needed,
};
use latchkey_client::workspace::{
    Joining, admit_device, broker_client, create_workspace, join_workspace, receive_keys,
};
use latchkey_core::capability::Method;
use latchkey_core::envelope::Envelope;
use latchkey_core::payload::OAuthRefresh;
use latchkey_core::payload::{CredentialKind, CredentialPayload, Injection};
use latchkey_core::secret::SecretBytes;
use servers::AuthServer;
use tokio::sync::{mpsc, oneshot};

const API_KEY: &str = "sk-refresh-canary-0b5e2a7c91d4";

const FORCE: RefreshOptions = RefreshOptions { buffer: DEFAULT_BUFFER, force: true };
const IF_NEEDED: RefreshOptions = RefreshOptions { buffer: DEFAULT_BUFFER, force: false };

/// A workspace on a fresh broker whose admin connected `idp` at the strict server.
async fn connected() -> (TestBroker, AuthServer, Machine, CredentialInfo) {
    let broker = TestBroker::start().await;
    let server = servers::strict().await;
    let endpoints = CustomEndpoints { issuer: Some(server.issuer.clone()), ..Default::default() };
    let (ada, idp) = connect_at(&broker, &server, endpoints).await;
    (broker, server, ada, idp)
}

/// Creates a workspace on `broker` and connects `idp` at `server` through `endpoints`.
async fn connect_at(
    broker: &TestBroker,
    server: &AuthServer,
    endpoints: CustomEndpoints,
) -> (Machine, CredentialInfo) {
    let ada = Machine::new("ada");
    create_workspace(&ada.profile, &ada.store, &broker.url, "Acme", "Ada", "laptop", None)
        .await
        .unwrap();
    let prepared = prepare(ConnectRequest {
        provider: "custom-oauth2",
        name: Some("idp"),
        base_url: Some("http://127.0.0.1:9/api"),
        allowed_hosts: Vec::new(),
        endpoints,
        client_id: Some(server.client_id.clone()),
        client_secret: None,
        scopes: vec!["openid".into(), "offline_access".into()],
        shared: true,
    })
    .unwrap();
    let (browser, _events) = TestBrowser::new(Person::SignsIn);
    let options = FlowOptions { timeout: Duration::from_secs(60), ..FlowOptions::default() };
    let stored = connect(&ada.profile, &ada.store, prepared, &browser, &options)
        .await
        .expect("the connection is stored");
    assert_eq!(
        stored.account.as_deref(),
        Some("alice"),
        "the ID token's subject, the login the person signed in with, names the account"
    );
    (ada, stored)
}

/// A token endpoint in front of the strict server's: it forwards every request, but holds each
/// refresh request until the test answers the sender it receives, so the test can change the
/// credential at the broker between the device's read and its swap.
async fn interposed_token_endpoint(
    server: &AuthServer,
) -> (String, mpsc::UnboundedReceiver<oneshot::Sender<()>>) {
    let (arrivals, receiver) = mpsc::unbounded_channel::<oneshot::Sender<()>>();
    let upstream = format!("{}/token", server.issuer);
    let http = reqwest::Client::new();
    const NEEDLE: &[u8] = b"grant_type=refresh_token";
    let handler = move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
        let (arrivals, upstream, http) = (arrivals.clone(), upstream.clone(), http.clone());
        async move {
            if body.windows(NEEDLE.len()).any(|w| w == NEEDLE) {
                let (go, wait) = oneshot::channel();
                if arrivals.send(go).is_ok() {
                    let _ = wait.await;
                }
            }
            let mut request = http.post(&upstream).body(body.to_vec());
            for name in ["content-type", "accept", "authorization"] {
                if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
                    request = request.header(name, value);
                }
            }
            let answer = request.send().await.expect("the strict server answers");
            let status = answer.status().as_u16();
            let content_type = answer
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json")
                .to_owned();
            let bytes = answer.bytes().await.expect("its answer is read");
            axum::response::Response::builder()
                .status(status)
                .header("content-type", content_type)
                .body(axum::body::Body::from(bytes))
                .expect("a response")
        }
    };
    let app = axum::Router::new().route("/token", axum::routing::post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}/token"), receiver)
}

/// The next refresh held at the interposed token endpoint; `None` if none arrives within 30 s
/// (so a refresh that never reaches the provider fails the test instead of hanging it).
async fn arrived(
    arrivals: &mut mpsc::UnboundedReceiver<oneshot::Sender<()>>,
) -> Option<oneshot::Sender<()>> {
    tokio::time::timeout(Duration::from_secs(30), arrivals.recv()).await.ok().flatten()
}

/// Connects `idp` with the authorization at the strict server and the token endpoint
/// interposed.
async fn connected_interposed()
-> (TestBroker, AuthServer, Machine, CredentialInfo, mpsc::UnboundedReceiver<oneshot::Sender<()>>) {
    let broker = TestBroker::start().await;
    let server = servers::strict().await;
    let (token, arrivals) = interposed_token_endpoint(&server).await;
    let endpoints = CustomEndpoints {
        issuer: Some(server.issuer.clone()),
        authorize: Some(format!("{}/auth", server.issuer)),
        token: Some(token),
        revocation: None,
    };
    let (ada, idp) = connect_at(&broker, &server, endpoints).await;
    (broker, server, ada, idp, arrivals)
}

/// The stored access and refresh tokens, opened with this device's workspace key.
async fn stored_tokens(machine: &Machine, credential: &CredentialInfo) -> (String, String) {
    let config = machine.profile.load_config().unwrap();
    let client = broker_client(&machine.profile, &machine.store).await.unwrap();
    let (version, envelope) = client.credential_envelope(credential.id).await.unwrap();
    let key = machine.store.load_workspace_key(config.workspace, version).unwrap();
    let plaintext = envelope.open(&key.record_key(credential.id).unwrap()).unwrap();
    let payload = CredentialPayload::decode(plaintext.expose_secret()).unwrap();
    let CredentialKind::OAuth { refresh: Some(refresh), .. } = payload.kind else {
        panic!("an OAuth credential with refresh data");
    };
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
    (text(payload.secret.expose_secret()), text(refresh.refresh_token.expose_secret()))
}

async fn current(machine: &Machine, credential: &CredentialInfo) -> CredentialInfo {
    let client = broker_client(&machine.profile, &machine.store).await.unwrap();
    client.credential(credential.id).await.unwrap()
}

/// The provider's answer to `token` at its userinfo endpoint (200: the token works).
async fn userinfo_status(server: &AuthServer, token: &str) -> u16 {
    let metadata: serde_json::Value =
        reqwest::get(format!("{}/.well-known/openid-configuration", server.issuer))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let userinfo = metadata["userinfo_endpoint"].as_str().unwrap();
    reqwest::Client::new().get(userinfo).bearer_auth(token).send().await.unwrap().status().as_u16()
}

/// Presents `refresh_token` at the provider directly, as a thief or a stale copy would.
async fn present(server: &AuthServer, refresh_token: &str) -> Result<(), OAuthError> {
    let endpoints = OAuthEndpoints {
        authorize: format!("{}/auth", server.issuer).parse().unwrap(),
        token: format!("{}/token", server.issuer).parse().unwrap(),
        revocation: None,
        issuer: None,
    };
    refresh(
        &OAuthHttp::new().unwrap(),
        &endpoints,
        &OAuthClient::public(&server.client_id, Vec::new()),
        &SecretBytes::copy_from(refresh_token.as_bytes()),
    )
    .await
    .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_refresh_stores_the_rotated_pair_and_a_refused_one_marks_reconnect_needed() {
    let (broker, server, ada, idp) = connected().await;
    let (access, refresh_token) = stored_tokens(&ada, &idp).await;

    // The strict server's tokens live an hour: outside the 5-minute buffer, nothing to do.
    let fresh = refresh_if_needed(&ada.profile, &ada.store, "idp", IF_NEEDED).await.unwrap();
    assert_eq!(fresh.action, RefreshAction::Fresh, "an hour-long token is not refreshed");
    assert_eq!(fresh.credential.revision, idp.revision, "nothing was written");
    assert_eq!(stored_tokens(&ada, &idp).await, (access.clone(), refresh_token.clone()));
    // A buffer longer than the token's life makes it due.
    let due = RefreshOptions { buffer: Duration::from_secs(2 * 3600), force: false };
    let refreshed = refresh_if_needed(&ada.profile, &ada.store, "idp", due).await.unwrap();
    assert_eq!(
        refreshed.action,
        RefreshAction::Refreshed,
        "a token inside the buffer is refreshed"
    );
    let (access, refresh_token) = stored_tokens(&ada, &idp).await;

    // Forced: a new access token and the rotated refresh token, stored in one swap.
    let forced = refresh_if_needed(&ada.profile, &ada.store, "idp", FORCE).await.unwrap();
    assert_eq!(forced.action, RefreshAction::Refreshed);
    assert_eq!(forced.credential.revision, refreshed.credential.revision + 1, "one swap");
    assert_eq!(forced.credential.status, CredentialStatus::Active);
    assert!(forced.expires_at.is_some(), "the provider said when the new token expires");
    let (new_access, new_refresh) = stored_tokens(&ada, &idp).await;
    assert_ne!(new_access, access, "a new access token is stored");
    assert_ne!(new_refresh, refresh_token, "the rotated refresh token is stored");
    assert_eq!(userinfo_status(&server, &new_access).await, 200, "the stored token works");
    let shown = format!("{forced:?} {}", serde_json::to_string(&forced).unwrap());
    assert!(!shown.contains(&new_access) && !shown.contains(&new_refresh), "no token shown");

    // The old refresh token is dead at the provider: the rotation really happened, and only
    // the stored pair is current. Presenting it is reuse, so the provider revokes the grant.
    let stale = present(&server, &refresh_token).await;
    assert!(
        matches!(stale, Err(OAuthError::ReconnectNeeded)),
        "the rotated-out refresh token is refused: {stale:?}"
    );

    // The grant is gone: the next refresh is refused, and the credential says so at the broker.
    let refused = refresh_if_needed(&ada.profile, &ada.store, "idp", FORCE).await.unwrap_err();
    assert!(matches!(refused, RefreshError::ReconnectNeeded(ref n) if n == "idp"), "{refused:?}");
    let message = refused.to_string();
    assert!(message.contains("latchkey reconnect idp"), "the error says what to do: {message}");
    assert!(!message.contains(&new_refresh) && !format!("{refused:?}").contains(&new_refresh));
    let marked = current(&ada, &idp).await;
    assert_eq!(marked.status, CredentialStatus::ReconnectNeeded, "marked at the broker");
    assert_eq!(
        stored_tokens(&ada, &idp).await,
        (new_access, new_refresh),
        "a refused refresh changes no token"
    );

    // Marked: not asked again without --force, and `refresh_all` reports it.
    let again = refresh_if_needed(&ada.profile, &ada.store, "idp", IF_NEEDED).await.unwrap_err();
    assert!(matches!(again, RefreshError::ReconnectNeeded(_)), "{again:?}");
    let reports = refresh_all(&ada.profile, &ada.store, DEFAULT_BUFFER).await.unwrap();
    assert!(
        matches!(reports.as_slice(), [RefreshReport::ReconnectNeeded { credential }] if credential.id == idp.id),
        "{reports:?}"
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_of_one_credential_ask_the_provider_once() {
    let (broker, server, ada, idp) = connected().await;
    let (_, before) = stored_tokens(&ada, &idp).await;

    // Both forced at once: without the per-credential lock both would present the same refresh
    // token, and the strict server would revoke the grant as reuse.
    let (a, b) = tokio::join!(
        refresh_if_needed(&ada.profile, &ada.store, "idp", FORCE),
        refresh_if_needed(&ada.profile, &ada.store, "idp", FORCE),
    );
    let (a, b) = (a.expect("the first refresh"), b.expect("the second refresh"));
    let mut actions = [a.action, b.action];
    actions.sort_by_key(|action| *action == RefreshAction::Refreshed);
    assert_eq!(
        actions,
        [RefreshAction::RefreshedElsewhere, RefreshAction::Refreshed],
        "one asked the provider, the other used its result"
    );
    let after = current(&ada, &idp).await;
    assert_eq!(after.revision, idp.revision + 1, "the token was swapped exactly once");
    assert_eq!(after.status, CredentialStatus::Active);

    // No reuse was detected: the stored pair still works, and refreshes again.
    let (access, refresh_token) = stored_tokens(&ada, &idp).await;
    assert_ne!(refresh_token, before, "rotated once");
    assert_eq!(userinfo_status(&server, &access).await, 200, "the stored token works");
    let next = refresh_if_needed(&ada.profile, &ada.store, "idp", FORCE).await;
    assert!(
        matches!(&next, Ok(o) if o.action == RefreshAction::Refreshed),
        "the grant is alive: {next:?}"
    );

    // `refresh_all` with the default buffer: fresh, nothing written.
    let reports = refresh_all(&ada.profile, &ada.store, DEFAULT_BUFFER).await.unwrap();
    let revision = current(&ada, &idp).await.revision;
    assert!(
        matches!(reports.as_slice(), [RefreshReport::Fresh { credential, .. }] if credential.revision == revision),
        "{reports:?}"
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_has_nothing_to_refresh() {
    let (broker, _server, ada, _idp) = connected().await;
    add_api_key(
        &ada.profile,
        &ada.store,
        NewApiKey {
            name: "openai",
            provider: "openai",
            base_url: "https://api.openai.com",
            allowed_hosts: &["api.openai.com".to_owned()],
            injection: Injection::bearer(),
            shared: true,
            key: SecretBytes::copy_from(API_KEY.as_bytes()),
            account: None,
        },
    )
    .await
    .unwrap();
    let refused = refresh_if_needed(&ada.profile, &ada.store, "openai", FORCE).await.unwrap_err();
    assert!(
        matches!(refused, RefreshError::NothingToRefresh(ref n) if n == "openai"),
        "{refused:?}"
    );
    assert!(refused.to_string().contains("nothing to refresh"), "{refused}");
    assert!(!format!("{refused} {refused:?}").contains(API_KEY), "the key is never shown");
    let reports = refresh_all(&ada.profile, &ada.store, DEFAULT_BUFFER).await.unwrap();
    assert_eq!(reports.len(), 1, "API keys are left out of refresh_all: {reports:?}");
    let unknown = refresh_if_needed(&ada.profile, &ada.store, "nope", FORCE).await.unwrap_err();
    assert!(
        matches!(
            unknown,
            RefreshError::Access(latchkey_client::access::AccessError::UnknownCredential(_))
        ),
        "{unknown:?}"
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_left_the_tokens_alone_does_not_lose_the_rotation() {
    let (broker, server, ada, idp, mut arrivals) = connected_interposed().await;
    let (access, refresh_token) = stored_tokens(&ada, &idp).await;

    // While the provider is asked, the credential is renamed at the broker: the device's swap
    // at the revision it read is refused, and it swaps again because the tokens are untouched.
    let client = broker_client(&ada.profile, &ada.store).await.unwrap();
    let rename = async {
        let go = arrived(&mut arrivals).await.expect("the refresh reaches the token endpoint");
        let changes = CredentialChanges { name: Some("idp2"), ..CredentialChanges::default() };
        update_credential(&client, "idp", &changes).await.expect("renamed meanwhile");
        go.send(()).unwrap();
    };
    let (refreshed, ()) =
        tokio::join!(refresh_if_needed(&ada.profile, &ada.store, "idp", FORCE), rename);
    let refreshed = refreshed.expect("the refresh survives a rename");
    assert_eq!(refreshed.action, RefreshAction::Refreshed, "{refreshed:?}");
    assert_eq!(refreshed.credential.name, "idp2", "the rename is kept");
    assert_eq!(refreshed.credential.revision, idp.revision + 2, "rename, then the swap");
    let (new_access, new_refresh) = stored_tokens(&ada, &idp).await;
    assert_ne!(new_access, access, "the new access token is stored");
    assert_ne!(new_refresh, refresh_token, "the rotated refresh token is stored");
    assert_eq!(userinfo_status(&server, &new_access).await, 200, "the stored token works");

    // The stored refresh token is the live one: refreshing with it works.
    let answer = async {
        arrived(&mut arrivals).await.expect("the refresh arrives").send(()).unwrap();
    };
    let (again, ()) =
        tokio::join!(refresh_if_needed(&ada.profile, &ada.store, "idp2", FORCE), answer);
    assert!(
        matches!(&again, Ok(o) if o.action == RefreshAction::Refreshed),
        "the grant is alive: {again:?}"
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_stored_meanwhile_by_another_writer_is_kept_not_overwritten() {
    let (broker, _server, ada, idp, mut arrivals) = connected_interposed().await;
    let config = ada.profile.load_config().unwrap();
    let client = broker_client(&ada.profile, &ada.store).await.unwrap();

    // While the provider is asked, "another device" stores a refreshed pair of its own.
    let other_writer = async {
        let go = arrived(&mut arrivals).await.expect("the refresh reaches the token endpoint");
        let current = client.credential(idp.id).await.unwrap();
        let (version, _) = client.credential_envelope(idp.id).await.unwrap();
        let key = ada.store.load_workspace_key(config.workspace, version).unwrap();
        let payload = CredentialPayload {
            kind: CredentialKind::OAuth {
                expires_at: Some(4_000_000_000),
                refresh: Some(OAuthRefresh {
                    refresh_token: SecretBytes::copy_from(b"refresh-from-elsewhere"),
                    token_endpoint: "http://127.0.0.1:9/token".to_owned(),
                    client_id: "elsewhere".to_owned(),
                    client_secret: None,
                }),
            },
            injection: Injection::bearer(),
            secret: SecretBytes::copy_from(b"access-from-elsewhere"),
        };
        let envelope =
            Envelope::seal(&key.record_key(idp.id).unwrap(), &payload.encode().unwrap()).unwrap();
        client
            .replace_credential(
                idp.id,
                &CredentialReplacement {
                    revision: current.revision,
                    name: &current.name,
                    provider: &current.provider,
                    upstream_base_url: &current.upstream_base_url,
                    allowed_hosts: &current.allowed_hosts,
                    scopes: &current.scopes,
                    expires_hint: None,
                    key_version: version,
                    envelope: &envelope,
                    status: None,
                    lease: None,
                    account: None,
                },
            )
            .await
            .expect("the other writer stores its pair");
        go.send(()).unwrap();
    };
    let (outcome, ()) =
        tokio::join!(refresh_if_needed(&ada.profile, &ada.store, "idp", FORCE), other_writer);
    let outcome = outcome.expect("losing the race is not an error");
    assert_eq!(outcome.action, RefreshAction::RefreshedElsewhere, "{outcome:?}");
    assert_eq!(outcome.expires_at, Some(4_000_000_000), "the stored token's expiry is reported");
    assert_eq!(outcome.credential.revision, idp.revision + 1, "only the other writer swapped");
    assert_eq!(
        stored_tokens(&ada, &idp).await,
        ("access-from-elsewhere".to_owned(), "refresh-from-elsewhere".to_owned()),
        "the pair stored meanwhile is kept, not overwritten"
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_who_may_not_change_a_shared_connection_does_not_spend_its_refresh_token() {
    let (broker, _server, ada, idp) = connected().await;
    let (access, refresh_token) = stored_tokens(&ada, &idp).await;
    let client = broker_client(&ada.profile, &ada.store).await.unwrap();
    let code = client.create_invite(InviteFor::NewMember(Role::Member), None).await.unwrap().code;
    let grace = Machine::new("grace");
    let joined = join_workspace(
        &grace.profile,
        &grace.store,
        &broker.url,
        &code,
        &Joining::NewMember { name: "Grace".into() },
        "Grace's laptop",
    )
    .await
    .unwrap();
    let admitted =
        admit_device(&ada.profile, &ada.store, joined.device, &joined.fingerprint).await.unwrap();
    receive_keys(&grace.profile, &grace.store, Some(&admitted.fingerprint)).await.unwrap();

    // The broker lets only admins replace a shared credential: refused before the provider
    // could rotate the refresh token, so nothing is lost.
    let refused = refresh_if_needed(&grace.profile, &grace.store, "idp", FORCE).await.unwrap_err();
    assert!(matches!(refused, RefreshError::NotAllowed(ref n) if n == "idp"), "{refused:?}");
    assert!(refused.to_string().contains("only a workspace admin"), "{refused}");
    let reports =
        refresh_all(&grace.profile, &grace.store, Duration::from_secs(2 * 3600)).await.unwrap();
    assert!(
        reports.is_empty(),
        "a member's refresh_all leaves shared connections out: {reports:?}"
    );
    assert_eq!(stored_tokens(&ada, &idp).await, (access, refresh_token), "nothing changed");
    assert_eq!(current(&ada, &idp).await.revision, idp.revision);

    // The stored refresh token was not spent: the admin's refresh works.
    let refreshed = refresh_if_needed(&ada.profile, &ada.store, "idp", FORCE).await;
    assert!(
        matches!(&refreshed, Ok(o) if o.action == RefreshAction::Refreshed),
        "the grant is intact: {refreshed:?}"
    );
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Refresh leases: one refresher at a time across devices, processes and the broker
// ---------------------------------------------------------------------------------------------

/// A second admin, Grace, on her own machine with the workspace key: another device that may
/// refresh the shared connection.
async fn second_admin(broker: &TestBroker, ada: &Machine) -> Machine {
    let client = broker_client(&ada.profile, &ada.store).await.unwrap();
    let code = client.create_invite(InviteFor::NewMember(Role::Admin), None).await.unwrap().code;
    let grace = Machine::new("grace");
    let joined = join_workspace(
        &grace.profile,
        &grace.store,
        &broker.url,
        &code,
        &Joining::NewMember { name: "Grace".into() },
        "Grace's laptop",
    )
    .await
    .unwrap();
    let admitted =
        admit_device(&ada.profile, &ada.store, joined.device, &joined.fingerprint).await.unwrap();
    receive_keys(&grace.profile, &grace.store, Some(&admitted.fingerprint)).await.unwrap();
    grace
}

/// No further refresh reaches the token endpoint within `quiet`.
async fn no_more_refreshes(
    arrivals: &mut mpsc::UnboundedReceiver<oneshot::Sender<()>>,
    quiet: Duration,
) -> bool {
    !matches!(tokio::time::timeout(quiet, arrivals.recv()).await, Ok(Some(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_refreshing_one_connection_at_once_present_its_refresh_token_once() {
    let (broker, server, ada, idp, mut arrivals) = connected_interposed().await;
    let grace = second_admin(&broker, &ada).await;
    let (_, before) = stored_tokens(&ada, &idp).await;

    // Both forced at once, from two devices (each with its own profile, keys and lock): the
    // broker's refresh lease lets one of them present the refresh token; the other waits.
    let provider = async {
        let go = arrived(&mut arrivals).await.expect("one refresh reaches the token endpoint");
        assert!(
            no_more_refreshes(&mut arrivals, Duration::from_secs(2)).await,
            "the other device must not present the same refresh token while the first is out"
        );
        go.send(()).unwrap();
    };
    let (a, b, ()) = tokio::join!(
        refresh_if_needed(&ada.profile, &ada.store, "idp", FORCE),
        refresh_if_needed(&grace.profile, &grace.store, "idp", FORCE),
        provider,
    );
    let (a, b) = (a.expect("Ada's refresh"), b.expect("Grace's refresh"));
    let mut actions = [a.action, b.action];
    actions.sort_by_key(|action| *action == RefreshAction::Refreshed);
    assert_eq!(
        actions,
        [RefreshAction::RefreshedElsewhere, RefreshAction::Refreshed],
        "one device refreshed; the other saw its result and did not ask the provider"
    );
    assert!(
        no_more_refreshes(&mut arrivals, Duration::from_millis(200)).await,
        "exactly one refresh reached the provider"
    );
    let after = current(&ada, &idp).await;
    assert_eq!(after.revision, idp.revision + 1, "the token was swapped exactly once");
    assert_eq!(after.status, CredentialStatus::Active, "the grant was not revoked");

    // Both devices end with a working credential: the stored pair works, and refreshes again.
    let (access, refresh_token) = stored_tokens(&grace, &idp).await;
    assert_ne!(refresh_token, before, "rotated once");
    assert_eq!(userinfo_status(&server, &access).await, 200, "the stored token works");
    let answer = async {
        arrived(&mut arrivals).await.expect("the refresh arrives").send(()).unwrap();
    };
    let (next, ()) =
        tokio::join!(refresh_if_needed(&grace.profile, &grace.store, "idp", FORCE), answer);
    assert!(
        matches!(&next, Ok(o) if o.action == RefreshAction::Refreshed),
        "the grant is alive and the lease was given back: {next:?}"
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_that_finds_another_in_progress_too_long_reports_it_without_asking_the_provider()
{
    let (broker, _server, ada, idp, mut arrivals) = connected_interposed().await;
    let grace = second_admin(&broker, &ada).await;
    let (access, refresh_token) = stored_tokens(&ada, &idp).await;

    // Ada's refresh is held at the provider; Grace's desktop app runs its periodic round, which
    // waits only a few seconds for someone else's refresh.
    let (held_tx, held_rx) = oneshot::channel();
    let ada_refresh = async {
        let outcome = refresh_if_needed(&ada.profile, &ada.store, "idp", FORCE).await;
        outcome.expect("Ada's refresh completes once the provider answers")
    };
    let grace_round = async {
        let go = arrived(&mut arrivals).await.expect("Ada's refresh reaches the provider");
        let due = Duration::from_secs(2 * 3600);
        let reports = refresh_all(&grace.profile, &grace.store, due).await;
        held_tx.send(go).ok();
        reports
    };
    let answer = async {
        let go: oneshot::Sender<()> = held_rx.await.unwrap();
        go.send(()).unwrap();
    };
    let (outcome, reports, ()) = tokio::join!(ada_refresh, grace_round, answer);
    let reports = reports.expect("a contended round is not an error");
    assert!(
        matches!(reports.as_slice(), [RefreshReport::InProgress { credential, .. }] if credential.id == idp.id),
        "reported as in progress elsewhere, not as a failure: {reports:?}"
    );
    let shown = serde_json::to_string(&reports).unwrap();
    assert!(shown.contains("\"outcome\":\"in_progress\""), "{shown}");
    assert!(!shown.contains(&access) && !shown.contains(&refresh_token), "no token shown");
    assert_eq!(outcome.action, RefreshAction::Refreshed);
    assert!(
        no_more_refreshes(&mut arrivals, Duration::from_millis(200)).await,
        "Grace never presented the refresh token"
    );
    broker.stop().await;
}

/// Rewrites the stored access token's expiry to `expires_at`, keeping both tokens (as if the
/// connection had been made that long ago).
async fn set_expiry(machine: &Machine, credential: &CredentialInfo, expires_at: u64) {
    let config = machine.profile.load_config().unwrap();
    let client = broker_client(&machine.profile, &machine.store).await.unwrap();
    let now = client.credential(credential.id).await.unwrap();
    let (version, envelope) = client.credential_envelope(credential.id).await.unwrap();
    let key = machine.store.load_workspace_key(config.workspace, version).unwrap();
    let record_key = key.record_key(credential.id).unwrap();
    let mut payload =
        CredentialPayload::decode(envelope.open(&record_key).unwrap().expose_secret()).unwrap();
    let CredentialKind::OAuth { expires_at: at, .. } = &mut payload.kind else {
        panic!("an OAuth credential");
    };
    *at = Some(expires_at);
    let envelope = Envelope::seal(&record_key, &payload.encode().unwrap()).unwrap();
    client
        .replace_credential(
            credential.id,
            &CredentialReplacement {
                revision: now.revision,
                name: &now.name,
                provider: &now.provider,
                upstream_base_url: &now.upstream_base_url,
                allowed_hosts: &now.allowed_hosts,
                scopes: &now.scopes,
                expires_hint: Some(expires_at),
                key_version: version,
                envelope: &envelope,
                status: None,
                lease: None,
                account: None,
            },
        )
        .await
        .unwrap();
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_brokers_refresh_on_a_call_and_a_devices_refresh_present_the_refresh_token_once() {
    let (broker, server, ada, idp, mut arrivals) = connected_interposed().await;
    // The connection's API is a recording upstream; its token expires within the broker's
    // 5-minute margin, so the next agent call refreshes it.
    let (base, seen) = common::upstream().await;
    let host = base.trim_start_matches("http://").to_owned();
    let client = broker_client(&ada.profile, &ada.store).await.unwrap();
    let hosts = [host];
    let changes = CredentialChanges {
        base_url: Some(&base),
        allowed_hosts: Some(&hosts),
        ..CredentialChanges::default()
    };
    update_credential(&client, "idp", &changes).await.unwrap();
    set_expiry(&ada, &idp, unix_now() + 60).await;
    let (_, before) = stored_tokens(&ada, &idp).await;
    let agent = client.create_agent("ci-bot").await.unwrap();
    let issued = grant_standing(
        &ada.profile,
        &ada.store,
        GrantTerms {
            agent: agent.agent.id,
            credential: "idp",
            methods: &[Method::Get],
            path_patterns: &["/**"],
            duration_secs: 3600,
        },
    )
    .await
    .unwrap();
    let call = reqwest::Client::new()
        .get(format!("{}/p/idp/me", broker.url.as_str()))
        .bearer_auth(agent.token.expose_secret())
        .header("latchkey-capability", issued.capability.expose_secret())
        .send();

    // The agent's call makes the broker refresh (it holds the lease, its refresh is held at the
    // provider); meanwhile Ada's device refreshes too.
    let device = async {
        let go = arrived(&mut arrivals).await.expect("the broker's refresh reaches the provider");
        let (outcome, ()) =
            tokio::join!(refresh_if_needed(&ada.profile, &ada.store, "idp", FORCE), async {
                assert!(
                    no_more_refreshes(&mut arrivals, Duration::from_secs(2)).await,
                    "the device must not present the refresh token the broker is presenting"
                );
                go.send(()).unwrap();
            });
        outcome
    };
    let (answer, outcome) = tokio::join!(call, device);
    let answer = answer.expect("the broker answers");
    assert_eq!(answer.status(), 200, "the agent's call went through");
    let outcome = outcome.expect("the device's refresh is not an error");
    assert_eq!(
        outcome.action,
        RefreshAction::RefreshedElsewhere,
        "the device waited for the broker's refresh and kept it: {outcome:?}"
    );
    assert!(
        no_more_refreshes(&mut arrivals, Duration::from_millis(200)).await,
        "exactly one refresh reached the provider"
    );
    let (access, refresh_token) = stored_tokens(&ada, &idp).await;
    assert_ne!(refresh_token, before, "the broker's rotation is stored");
    let upstream_saw = seen.lock().unwrap().last().cloned().unwrap();
    assert!(upstream_saw.contains(&access), "the call used the refreshed token");
    assert_eq!(userinfo_status(&server, &access).await, 200, "the stored token works");
    assert_eq!(current(&ada, &idp).await.status, CredentialStatus::Active, "not revoked");

    // The device can refresh again: the grant is alive and nobody holds the lease.
    let answer = async {
        arrived(&mut arrivals).await.expect("the refresh arrives").send(()).unwrap();
    };
    let (next, ()) =
        tokio::join!(refresh_if_needed(&ada.profile, &ada.store, "idp", FORCE), answer);
    assert!(matches!(&next, Ok(o) if o.action == RefreshAction::Refreshed), "{next:?}");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_pair_the_broker_fails_to_store_is_kept_sealed_and_stored_first_next_time() {
    let (broker, server, ada, idp, mut arrivals) = connected_interposed().await;
    let (old_access, old_refresh) = stored_tokens(&ada, &idp).await;

    // The provider rotates the refresh token, then the broker cannot write (its database is
    // locked by another writer longer than its busy timeout): the store fails.
    let database = broker.database().await;
    let mut locker = database.acquire().await.unwrap();
    let provider = async {
        let go = arrived(&mut arrivals).await.expect("the refresh reaches the provider");
        sqlx::query("BEGIN EXCLUSIVE").execute(&mut *locker).await.unwrap();
        go.send(()).unwrap();
    };
    let (failed, ()) =
        tokio::join!(refresh_if_needed(&ada.profile, &ada.store, "idp", FORCE), provider);
    let failed = failed.expect_err("the broker could not store the new pair");
    assert!(
        matches!(failed, RefreshError::NotStored { ref name, .. } if name == "idp"),
        "{failed:?}"
    );
    let message = failed.to_string();
    assert!(
        message.contains("kept sealed on this device") && message.contains("do not reconnect"),
        "the error says the pair is safe and what not to do: {message}"
    );
    sqlx::query("COMMIT").execute(&mut *locker).await.unwrap();
    drop(locker);
    database.close().await;
    assert_eq!(
        stored_tokens(&ada, &idp).await,
        (old_access.clone(), old_refresh.clone()),
        "the broker still holds the old pair"
    );

    // The kept pair: one file, sealed (no token in it), opened only by the record key.
    let kept: Vec<_> = std::fs::read_dir(ada.profile.pending_refresh_dir())
        .expect("a directory of kept pairs")
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 1, "one pair kept: {kept:?}");
    let text = std::fs::read_to_string(&kept[0]).unwrap();
    assert!(!text.contains(&old_access) && !text.contains(&old_refresh), "only sealed bytes");
    let file: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(file["lease"].is_string(), "the lease held is kept with it: {file}");
    let envelope = Envelope::parse(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            file["refreshed"].as_str().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let config = ada.profile.load_config().unwrap();
    let key = ada.store.load_workspace_key(config.workspace, envelope.key_version()).unwrap();
    let payload = CredentialPayload::decode(
        envelope.open(&key.record_key(idp.id).unwrap()).unwrap().expose_secret(),
    )
    .unwrap();
    let new_access = String::from_utf8(payload.secret.expose_secret().to_vec()).unwrap();
    assert!(!text.contains(&new_access), "not even the new access token in plaintext");
    assert_eq!(userinfo_status(&server, &new_access).await, 200, "the kept pair is live");

    // The next refresh stores the kept pair before anything else; it is then fresh, so the
    // provider is not asked (presenting the dead stored token would have revoked the grant).
    let next = refresh_if_needed(&ada.profile, &ada.store, "idp", IF_NEEDED).await.unwrap();
    assert_eq!(next.action, RefreshAction::Fresh, "{next:?}");
    assert_eq!(next.credential.revision, idp.revision + 1, "the kept pair was swapped in");
    assert!(
        no_more_refreshes(&mut arrivals, Duration::from_millis(200)).await,
        "storing the kept pair asked nobody"
    );
    let (stored_access, stored_refresh) = stored_tokens(&ada, &idp).await;
    assert_eq!(stored_access, new_access, "the broker now holds the kept pair");
    assert_ne!(stored_refresh, old_refresh, "with the rotated refresh token");
    assert!(
        std::fs::read_dir(ada.profile.pending_refresh_dir()).unwrap().next().is_none(),
        "and the kept copy is gone"
    );

    // The grant is alive, and the failed refresh's lease was given back with the kept pair's
    // write (a lease left held would make this refresh wait and report "in progress").
    let answer = async {
        arrived(&mut arrivals).await.expect("the refresh arrives").send(()).unwrap();
    };
    let (again, ()) =
        tokio::join!(refresh_if_needed(&ada.profile, &ada.store, "idp", FORCE), answer);
    assert!(matches!(&again, Ok(o) if o.action == RefreshAction::Refreshed), "{again:?}");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_made_with_its_endpoints_given_reconnects_with_them() {
    // The token endpoint kept with the connection is on a host without metadata, as a custom
    // server that publishes none would be.
    let (broker, server, ada, idp, _arrivals) = connected_interposed().await;
    let (browser, _events) = TestBrowser::new(Person::SignsIn);
    let flow = || FlowOptions { timeout: Duration::from_secs(60), ..FlowOptions::default() };
    let discovered = reconnect(
        &ada.profile,
        &ada.store,
        "idp",
        &browser,
        ReconnectOptions { flow: flow(), ..ReconnectOptions::default() },
    )
    .await;
    assert!(
        matches!(discovered, Err(ConnectError::OAuth(_))),
        "without endpoints, reconnecting discovers metadata there is none of: {discovered:?}"
    );
    let (before, _) = stored_tokens(&ada, &idp).await;
    let again = reconnect(
        &ada.profile,
        &ada.store,
        "idp",
        &browser,
        ReconnectOptions {
            authorize: Some(format!("{}/auth", server.issuer)),
            flow: flow(),
            ..ReconnectOptions::default()
        },
    )
    .await
    .expect("the authorization endpoint given, with the token endpoint kept, signs in again");
    assert_eq!(again.id, idp.id, "the same credential: its grants and history stay");
    let (after, _) = stored_tokens(&ada, &idp).await;
    assert_ne!(before, after, "the tokens were replaced");
    assert_eq!(userinfo_status(&server, &after).await, 200, "the new access token works");
    drop(broker);
}
