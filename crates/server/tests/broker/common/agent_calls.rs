//! Agents calling through a broker's proxy: a loopback upstream that counts what reaches it, and
//! the device-side steps that set a call up (an agent, a shared credential, a standing grant, a
//! capability sealed to the broker).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use latchkey_core::capability::{Capability, Claims, Method, MethodSet, PathPattern, Reuse};
use latchkey_core::envelope::Envelope;
use latchkey_core::ids::{AgentId, CredentialId, GrantId, KeyVersion, Owner};
use latchkey_core::keys::BrokerPublicKey;
use latchkey_core::payload::{CredentialKind, CredentialPayload, Injection};
use latchkey_core::secret::SecretBytes;
use serde_json::json;

use super::{TestBroker, TestDevice, b64};

/// An upstream API on 127.0.0.1 that answers every request `200 {"ok": true}` and counts them.
#[derive(Clone, Default)]
pub struct CountingUpstream {
    hits: Arc<AtomicUsize>,
}

impl CountingUpstream {
    /// Starts serving until the test's runtime ends; returns the upstream and its base URL.
    pub async fn start() -> (Self, String) {
        let upstream = Self::default();
        let hits = Arc::clone(&upstream.hits);
        let app = axum::Router::new().fallback(move || {
            let hits = Arc::clone(&hits);
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                axum::Json(json!({"ok": true}))
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("upstream serves") });
        (upstream, base)
    }

    /// How many requests reached it.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// The broker's public key, as a device fetches it to seal capabilities.
pub async fn broker_public_key(broker: &TestBroker) -> BrokerPublicKey {
    use base64::Engine as _;
    let (status, body) = TestBroker::send(broker.http.get(broker.url("/v1/broker-key"))).await;
    assert_eq!(status, 200, "the broker publishes its key: {body}");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body["public_key"].as_str().expect("public key"))
        .expect("base64url");
    BrokerPublicKey::from_bytes(bytes.try_into().expect("32 bytes"))
}

/// Creates an agent through `broker`; returns its id and token.
pub async fn create_agent(
    broker: &TestBroker,
    device: &TestDevice,
    name: &str,
) -> (AgentId, String) {
    let (status, body) =
        TestBroker::send(broker.signed(device, "POST", "/v1/agents", Some(&json!({"name": name}))))
            .await;
    assert_eq!(status, 201, "agent creation must succeed: {body}");
    (
        serde_json::from_value(body["id"].clone()).expect("agent id"),
        body["token"].as_str().expect("token").to_owned(),
    )
}

/// Creates a shared API-key credential named `name` for the upstream at `base`, sealed under
/// `admin`'s workspace key, through `broker`.
pub async fn create_shared_credential(
    broker: &TestBroker,
    admin: &TestDevice,
    name: &str,
    base: &str,
    secret: &str,
) -> CredentialId {
    let id = CredentialId::random();
    let payload = CredentialPayload {
        kind: CredentialKind::ApiKey,
        injection: Injection::bearer(),
        secret: SecretBytes::copy_from(secret.as_bytes()),
    };
    let record_key = admin.workspace_key.as_ref().expect("wk").record_key(id).expect("record key");
    let envelope = Envelope::seal(&record_key, &payload.encode().expect("encode")).expect("seal");
    let body = json!({
        "id": id,
        "name": name,
        "provider": "github",
        "upstream_base_url": base,
        "allowed_hosts": [base.split_once("://").map_or(base, |(_, authority)| authority)],
        "owner": "shared",
        "key_version": 1,
        "scopes": ["repo"],
        "envelope": b64(envelope.as_bytes()),
    });
    let (status, response) =
        TestBroker::send(broker.signed(admin, "POST", "/v1/credentials", Some(&body))).await;
    assert_eq!(status, 201, "credential creation must succeed: {response}");
    id
}

/// Registers a standing grant for GET on every path, valid for an hour, through `broker`.
pub async fn register_standing_grant(
    broker: &TestBroker,
    admin: &TestDevice,
    agent: AgentId,
    credential: CredentialId,
) -> GrantId {
    let grant = GrantId::random();
    let now = latchkey_server::clock::Clock::now(&*broker.clock);
    let (status, body) = TestBroker::send(broker.signed(
        admin,
        "POST",
        "/v1/grants",
        Some(&json!({
            "id": grant, "agent": agent, "credential": credential, "methods": ["GET"],
            "path_patterns": ["/**"], "expires_at": now + 3600,
        })),
    ))
    .await;
    assert_eq!(status, 201, "grant registration must succeed: {body}");
    grant
}

/// A capability for GET on every path of a shared credential, issued by `issuer` and sealed to
/// `broker_key`, valid from a little before `now`: for two minutes if single-use, for an hour if
/// standing.
pub fn shared_capability(
    issuer: &TestDevice,
    broker_key: &BrokerPublicKey,
    agent: AgentId,
    credential: CredentialId,
    reuse: Reuse,
    now: u64,
) -> String {
    let claims = Claims {
        workspace: issuer.workspace,
        agent,
        credential,
        owner: Owner::Shared,
        key_version: KeyVersion::FIRST,
        issuer: issuer.id,
        methods: MethodSet::of(&[Method::Get]).expect("methods"),
        paths: vec![PathPattern::parse("/**").expect("pattern")],
        not_before: now - 5,
        expires: now + if matches!(reuse, Reuse::Standing { .. }) { 3600 } else { 120 },
        reuse,
    };
    let key = issuer.workspace_key.as_ref().expect("wk").record_key(credential).expect("key");
    Capability::issue(claims, &key, &issuer.keys.signing, broker_key).expect("issue").encode()
}

/// An agent's GET of `path` through `broker`'s proxy, for the credential named `credential`.
pub fn agent_get(
    broker: &TestBroker,
    token: &str,
    credential: &str,
    path: &str,
    capability: &str,
) -> reqwest::RequestBuilder {
    broker
        .http
        .get(broker.url(&format!("/p/{credential}{path}")))
        .bearer_auth(token)
        .header("latchkey-capability", capability)
}
