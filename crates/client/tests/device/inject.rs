//! Inject mode from a member's device against a real broker: nothing is opened unless the broker
//! allowed and audited the release; an allowed API key comes back as a redacted secret; an OAuth
//! credential gives its access token only, never its refresh token, and an expired one is
//! refused.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "the helpers in this file are test code too; a panic is the failure report"
)]

use crate::common;

use common::{Machine, TestBroker};
use latchkey_client::access::{
    AccessError, NewApiKey, NewOAuthCredential, add_api_key, add_oauth_credential,
};
use latchkey_client::api::{AuditFilter, BrokerClient, ClientError, Expected, NewPolicy, codes};
use latchkey_client::inject::{InjectError, InjectTerms, InjectedKind, release_for_inject};
use latchkey_client::policies::set_policy;
use latchkey_client::workspace::{broker_client, create_workspace};
use latchkey_core::ids::AgentId;
use latchkey_core::payload::{Injection, OAuthRefresh};
use latchkey_core::secret::SecretBytes;
use latchkey_core::token::AgentToken;

const API_KEY: &str = "sk-inject-canary-5c1e0f7a93d2";
const ACCESS_TOKEN: &str = "gho_INJECTaccessCANARY0123";
const REFRESH_TOKEN: &str = "ghr_INJECTrefreshCANARY4567";

struct World {
    broker: TestBroker,
    ada: Machine,
    client: BrokerClient,
    agent: AgentId,
    token: AgentToken,
}

async fn world() -> World {
    let broker = TestBroker::start().await;
    let ada = Machine::new("ada");
    create_workspace(&ada.profile, &ada.store, &broker.url, "Acme", "Ada", "laptop", None)
        .await
        .unwrap();
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
    .expect("an admin stores a shared API key");
    let client = broker_client(&ada.profile, &ada.store).await.unwrap();
    let created = client.create_agent("runner").await.expect("agent");
    World { broker, ada, client, agent: created.agent.id, token: created.token }
}

impl World {
    fn terms<'a>(&'a self, credentials: &'a [&'a str]) -> InjectTerms<'a> {
        InjectTerms {
            agent: self.agent,
            token: &self.token,
            credentials,
            lifetime_secs: 600,
            command: "python3",
        }
    }

    async fn permit_injects(&self) {
        set_policy(
            &self.client,
            &"injects".parse().unwrap(),
            &NewPolicy {
                source: "permit (principal, action == Latchkey::Action::\"inject\", resource);",
                description: "",
                enabled: true,
                expected: Expected::Anything,
            },
        )
        .await
        .expect("an admin permits injects");
    }

    async fn kinds(&self) -> Vec<String> {
        let filter = AuditFilter::default();
        let records = self.client.audit(&filter).await.expect("audit");
        records
            .iter()
            .filter_map(|r| r.record["kind"].as_str().map(str::to_owned))
            .filter(|k| k.starts_with("inject"))
            .collect()
    }
}

fn broker_code(error: &InjectError) -> Option<&str> {
    match error {
        InjectError::Access(AccessError::Broker(ClientError::Api(api))) => Some(api.code.as_str()),
        _ => None,
    }
}

#[tokio::test]
async fn nothing_is_opened_unless_the_broker_allowed_and_audited_the_release() {
    let w = world().await;
    let refused = release_for_inject(&w.ada.profile, &w.ada.store, &w.terms(&["openai"]))
        .await
        .expect_err("the default policies do not permit injects");
    assert_eq!(broker_code(&refused), Some(codes::POLICY_DENIED), "the broker's code: {refused}");
    assert!(!format!("{refused:?}").contains(API_KEY), "the refusal carries no key");
    assert_eq!(w.kinds().await, ["inject_denied"], "the refusal is audited");

    w.permit_injects().await;
    let mut released = release_for_inject(&w.ada.profile, &w.ada.store, &w.terms(&["openai"]))
        .await
        .expect("allowed once a permit names inject");
    assert_eq!(released.len(), 1, "one asked, one released");
    let released = released.remove(0);
    assert_eq!(released.secret.expose_secret(), API_KEY.as_bytes(), "the key as stored");
    assert_eq!(released.kind, InjectedKind::ApiKey);
    assert_eq!(released.credential.name, "openai");
    assert_eq!((released.allowed.agent, released.allowed.lifetime_secs), (w.agent, 600));
    assert!(!format!("{released:?}").contains(API_KEY), "Debug never shows the value");
    assert_eq!(w.kinds().await, ["inject_released", "inject_denied"], "newest first");

    let mut bad = w.terms(&["openai"]);
    bad.lifetime_secs = 25 * 3600;
    let error = release_for_inject(&w.ada.profile, &w.ada.store, &bad).await.unwrap_err();
    assert!(matches!(error, InjectError::Lifetime), "refused on the device: {error}");
    bad.lifetime_secs = 60;
    bad.command = "/bin/sh";
    let error = release_for_inject(&w.ada.profile, &w.ada.store, &bad).await.unwrap_err();
    assert!(matches!(error, InjectError::Command), "a path is not a program name: {error}");
    assert_eq!(w.kinds().await.len(), 2, "terms refused on the device never reach the broker");

    let error =
        release_for_inject(&w.ada.profile, &w.ada.store, &w.terms(&["nope"])).await.unwrap_err();
    assert!(
        matches!(error, InjectError::Access(AccessError::UnknownCredential(_))),
        "an unknown name: {error}"
    );
    w.broker.stop().await;
}

async fn add_oauth(w: &World, name: &str, expires_at: u64) {
    add_oauth_credential(
        &w.ada.profile,
        &w.ada.store,
        NewOAuthCredential {
            name,
            provider: "github",
            base_url: "https://api.github.com",
            allowed_hosts: &["api.github.com".to_owned()],
            injection: Injection::bearer(),
            shared: true,
            scopes: &[],
            access_token: SecretBytes::copy_from(ACCESS_TOKEN.as_bytes()),
            expires_at: Some(expires_at),
            refresh: Some(OAuthRefresh {
                refresh_token: SecretBytes::copy_from(REFRESH_TOKEN.as_bytes()),
                token_endpoint: "https://github.com/login/oauth/access_token".to_owned(),
                client_id: "client".to_owned(),
                client_secret: None,
            }),
            account: None,
        },
    )
    .await
    .expect("an OAuth connection stored");
}

#[tokio::test]
async fn an_oauth_credential_gives_its_access_token_only_and_never_an_expired_one() {
    let w = world().await;
    w.permit_injects().await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    add_oauth(&w, "github", now + 3600).await;
    let released = release_for_inject(&w.ada.profile, &w.ada.store, &w.terms(&["github"]))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(released.secret.expose_secret(), ACCESS_TOKEN.as_bytes(), "the access token");
    assert_eq!(released.kind, InjectedKind::OAuthAccessToken { expires_at: Some(now + 3600) });
    let shown = format!("{released:?}");
    assert!(!shown.contains(REFRESH_TOKEN) && !shown.contains(ACCESS_TOKEN), "{shown}");

    add_oauth(&w, "stale", now - 60).await;
    let error =
        release_for_inject(&w.ada.profile, &w.ada.store, &w.terms(&["stale"])).await.unwrap_err();
    assert!(
        matches!(&error, InjectError::Expired { name, .. } if name == "stale"),
        "an expired access token is not injected: {error}"
    );
    assert!(error.to_string().contains("latchkey credential refresh stale"), "{error}");
    w.broker.stop().await;
}
