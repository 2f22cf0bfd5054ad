//! A member's device stores an API key, creates an agent and grants it standing access; the
//! agent then calls a loopback upstream through the real broker. The upstream receives the real
//! key; the agent held only its token and a capability, and the broker only ciphertext.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "the helpers in this file are test code too; a panic is the failure report"
)]

use crate::common;

use common::{Machine, TestBroker, upstream};
use latchkey_client::access::{AccessError, GrantTerms, NewApiKey, add_api_key, grant_standing};
use latchkey_client::api::{CredentialStatus, codes};
use latchkey_client::workspace::{broker_client, create_workspace};
use latchkey_core::capability::Method;
use latchkey_core::ids::Owner;
use latchkey_core::payload::Injection;
use latchkey_core::secret::SecretBytes;

const API_KEY: &str = "sk-canary-3f9a61c2d8e74b05";

#[tokio::test]
async fn an_agent_calls_through_the_broker_with_a_key_only_the_upstream_sees() {
    let broker = TestBroker::start().await;
    let ada = Machine::new("ada");
    create_workspace(&ada.profile, &ada.store, &broker.url, "Acme", "Ada", "laptop", None)
        .await
        .unwrap();
    let (base, seen) = upstream().await;
    let host = base.trim_start_matches("http://").to_owned();

    let stored = add_api_key(
        &ada.profile,
        &ada.store,
        NewApiKey {
            name: "openai",
            provider: "openai",
            base_url: &base,
            allowed_hosts: std::slice::from_ref(&host),
            injection: Injection::Header { name: "authorization".into(), prefix: "Bearer ".into() },
            shared: true,
            key: SecretBytes::copy_from(API_KEY.as_bytes()),
            account: Some(" ci-bot@acme.example\n"),
        },
    )
    .await
    .expect("an admin stores a shared API key");
    assert_eq!((stored.owner, stored.status), (Owner::Shared, CredentialStatus::Active));
    assert_eq!(
        stored.account.as_deref(),
        Some("ci-bot@acme.example"),
        "the account the member named is stored, trimmed (the catalog has no lookup for openai)"
    );

    let client = broker_client(&ada.profile, &ada.store).await.unwrap();
    let created = client.create_agent("ci-bot").await.expect("agent");
    let issued = grant_standing(
        &ada.profile,
        &ada.store,
        GrantTerms {
            agent: created.agent.id,
            credential: "openai",
            methods: &[Method::Get, Method::Post],
            path_patterns: &["/v1/**"],
            duration_secs: 3600,
        },
    )
    .await
    .expect("a standing grant");
    assert_eq!(issued.grant.methods, ["GET", "POST"]);
    assert!(!format!("{issued:?}").contains(issued.capability.expose_secret()), "Debug redacts it");

    let http = reqwest::Client::new();
    let call = |path: &str| {
        http.get(format!("{}/p/openai{path}", broker.url.as_str()))
            .bearer_auth(created.token.expose_secret())
            .header("latchkey-capability", issued.capability.expose_secret())
    };
    let answer = call("/v1/models").send().await.unwrap();
    assert_eq!(answer.status(), 200, "the granted call goes through");
    let body = answer.text().await.unwrap();
    assert!(!body.contains(API_KEY), "the agent never sees the key");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "one call reached the upstream");
        assert!(
            seen[0]
                .to_ascii_lowercase()
                .contains(&format!("authorization: bearer {API_KEY}").to_ascii_lowercase()),
            "the upstream receives the real key: {}",
            seen[0]
        );
        assert!(!seen[0].contains(created.token.expose_secret()), "and never the agent's token");
    }

    // Outside the grant's paths: refused before the upstream.
    let outside = call("/admin").send().await.unwrap();
    assert_eq!(outside.status(), 403, "a path outside the grant is refused");

    // Revoking the grant stops the capability at the next call.
    client.revoke_grant(issued.grant.id).await.expect("revoke");
    let revoked = call("/v1/models").send().await.unwrap();
    assert_eq!(revoked.status(), 403, "a revoked grant's capability is refused");
    assert_eq!(seen.lock().unwrap().len(), 1, "refused calls never reach the upstream");

    // The listings show what happened, and never a secret.
    let agents = client.agents().await.unwrap();
    assert_eq!(agents.len(), 1);
    assert!(agents[0].last_used_at.is_some(), "the agent's last use is recorded");
    let grants = client.grants(Some(created.agent.id), false).await.unwrap();
    assert!(grants.is_empty(), "a revoked grant is not in force: {grants:?}");
    let grants = client.grants(Some(created.agent.id), true).await.unwrap();
    assert!(grants[0].revoked_at.is_some(), "the grant is listed as revoked on request");
    let listing = serde_json::to_string(&client.credentials().await.unwrap()).unwrap();
    assert!(!listing.contains(API_KEY), "listings carry metadata only");

    // Deleting the credential and revoking the agent both work and are final.
    client.delete_credential(stored.id).await.expect("delete");
    assert!(client.credentials().await.unwrap().is_empty());
    client.revoke_agent(created.agent.id).await.expect("revoke agent");
    let after = call("/v1/models").send().await.unwrap();
    assert_eq!(after.status(), 401, "a revoked agent's token is refused");
    broker.stop().await;
}

#[tokio::test]
async fn bad_grants_and_unknown_credentials_are_refused_with_what_to_do() {
    let broker = TestBroker::start().await;
    let (ada, client) = common::ada_founds_acme(&broker).await;
    let agent = client.create_agent("bot").await.unwrap().agent.id;
    let terms = GrantTerms {
        agent,
        credential: "nothing-here",
        methods: &[Method::Get],
        path_patterns: &["/**"],
        duration_secs: 60,
    };

    let unknown = grant_standing(&ada.profile, &ada.store, terms.clone()).await.unwrap_err();
    assert!(matches!(unknown, AccessError::UnknownCredential(_)), "got {unknown:?}");
    assert!(unknown.to_string().contains("latchkey credential list"), "{unknown}");

    for (bad, why) in [
        (GrantTerms { duration_secs: 0, ..terms.clone() }, "zero duration"),
        (GrantTerms { duration_secs: 91 * 24 * 3600, ..terms.clone() }, "over 90 days"),
        (GrantTerms { methods: &[], ..terms.clone() }, "no method"),
        (GrantTerms { path_patterns: &["no-slash"], ..terms.clone() }, "a malformed pattern"),
    ] {
        let error = grant_standing(&ada.profile, &ada.store, bad).await.unwrap_err();
        assert!(matches!(error, AccessError::InvalidGrant(_)), "{why}: got {error:?}");
    }

    // The broker's own validation arrives as a stable code: a name that is not allowed.
    let refused = add_api_key(
        &ada.profile,
        &ada.store,
        NewApiKey {
            name: "Not A Valid Name!",
            provider: "openai",
            base_url: "https://api.openai.com",
            allowed_hosts: &["api.openai.com".to_owned()],
            injection: Injection::Header { name: "authorization".into(), prefix: "Bearer ".into() },
            shared: true,
            key: SecretBytes::copy_from(API_KEY.as_bytes()),
            account: None,
        },
    )
    .await
    .unwrap_err();
    let AccessError::Broker(error) = &refused else {
        panic!("expected a broker error: {refused:?}")
    };
    assert!(error.api().is_some_and(|e| e.is(codes::INVALID_REQUEST)), "got {error:?}");
    assert!(!refused.to_string().contains(API_KEY), "errors never carry the key");
    broker.stop().await;
}

/// A Twilio key entered as `<API key SID>:<secret>` reaches the upstream as the HTTP Basic
/// credential; one entered in a single part is refused before anything is stored.
#[tokio::test]
async fn a_twilio_key_entered_in_two_parts_reaches_the_upstream_as_basic_credentials() {
    let broker = TestBroker::start().await;
    let ada = Machine::new("ada");
    create_workspace(&ada.profile, &ada.store, &broker.url, "Acme", "Ada", "laptop", None)
        .await
        .unwrap();
    let (base, seen) = upstream().await;
    let host = base.trim_start_matches("http://").to_owned();
    let twilio = |key: &str| NewApiKey {
        name: "twilio",
        provider: "twilio",
        base_url: &base,
        allowed_hosts: std::slice::from_ref(&host),
        injection: Injection::Header { name: "authorization".into(), prefix: "Basic ".into() },
        shared: true,
        key: SecretBytes::copy_from(key.as_bytes()),
        account: None,
    };

    let error = add_api_key(&ada.profile, &ada.store, twilio("only-the-secret")).await.unwrap_err();
    assert!(matches!(error, AccessError::KeyFormat(_)), "one part is refused: {error}");
    let client = broker_client(&ada.profile, &ada.store).await.unwrap();
    assert!(client.credentials().await.unwrap().is_empty(), "and nothing was stored");

    add_api_key(&ada.profile, &ada.store, twilio("SK0123456789abcdef:s3cr3t"))
        .await
        .expect("two parts are stored");
    let created = client.create_agent("notifier").await.expect("agent");
    let issued = grant_standing(
        &ada.profile,
        &ada.store,
        GrantTerms {
            agent: created.agent.id,
            credential: "twilio",
            methods: &[Method::Get],
            path_patterns: &["/2010-04-01/**"],
            duration_secs: 600,
        },
    )
    .await
    .expect("a standing grant");
    let answer = reqwest::Client::new()
        .get(format!("{}/p/twilio/2010-04-01/Accounts.json", broker.url.as_str()))
        .bearer_auth(created.token.expose_secret())
        .header("latchkey-capability", issued.capability.expose_secret())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "the granted call goes through");
    let head = seen.lock().unwrap()[0].clone();
    assert!(
        head.to_ascii_lowercase()
            .contains("authorization: basic u0swmtizndu2nzg5ywjjzgvmonmzy3izda=="),
        "the upstream receives base64(\"<SID>:<secret>\") after `Basic `: {}",
        head
    );
    broker.stop().await;
}

/// Stripe's API on loopback: `/v1/account` names the account for the one key it takes and
/// answers any other `401`, as Stripe does for a key it does not know.
async fn stripe_like() -> String {
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;

    async fn account(headers: HeaderMap) -> axum::response::Response {
        let bearer = headers.get("authorization").and_then(|v| v.to_str().ok());
        if bearer == Some(&format!("Bearer {API_KEY}")) {
            axum::Json(serde_json::json!({
                "id": "acct_1Nv0FGQ9RKHgCVdK",
                "email": "billing@acme.example",
                "settings": {"dashboard": {"display_name": "Acme Inc."}},
            }))
            .into_response()
        } else {
            StatusCode::UNAUTHORIZED.into_response()
        }
    }
    let app = axum::Router::new().route("/v1/account", axum::routing::get(account));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

#[tokio::test]
async fn a_key_its_provider_refuses_is_not_stored_and_one_it_takes_names_its_account() {
    let broker = TestBroker::start().await;
    let ada = Machine::new("ada");
    create_workspace(&ada.profile, &ada.store, &broker.url, "Acme", "Ada", "laptop", None)
        .await
        .unwrap();
    let base = stripe_like().await;
    let host = base.trim_start_matches("http://").to_owned();
    let stripe = |key: &str| NewApiKey {
        name: "stripe",
        provider: "stripe",
        base_url: &base,
        allowed_hosts: std::slice::from_ref(&host),
        injection: Injection::bearer(),
        shared: true,
        key: SecretBytes::copy_from(key.as_bytes()),
        account: None,
    };

    let refused = add_api_key(&ada.profile, &ada.store, stripe("sk_live_cut_sho")).await;
    let Err(error) = refused else { panic!("a key Stripe answers 401 to is refused: {refused:?}") };
    assert!(matches!(error, AccessError::KeyRefused { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "Stripe refused this key (401 Unauthorized) when asked whose account it is: check that it was pasted whole and is still active; nothing was stored"
    );
    let client = broker_client(&ada.profile, &ada.store).await.unwrap();
    assert!(client.credentials().await.unwrap().is_empty(), "nothing was stored");

    let stored = add_api_key(&ada.profile, &ada.store, stripe(API_KEY)).await.unwrap();
    assert_eq!(
        stored.account.as_deref(),
        Some("Acme Inc."),
        "the catalog's first field present, the dashboard's display name, names the account"
    );
    broker.stop().await;
}
