//! The agent proxy, end to end over loopback: a recording upstream, a broker, a member's device
//! issuing capabilities, and an agent holding only its placeholder token.
//!
//! Every refused call must leave an audit record and never reach the upstream; every allowed call
//! must reach the upstream with the real credential while the agent never sees it.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions; a panic is the failure report"
)]

use crate::common;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use common::{
    ApprovalStream, TestBroker, TestDevice, b64, insert_device, insert_member, workspace_with_admin,
};
use latchkey_core::capability::{Capability, Claims, Method, MethodSet, PathPattern, Reuse};
use latchkey_core::envelope::Envelope;
use latchkey_core::ids::{AgentId, CredentialId, GrantId, KeyVersion, Owner, WorkspaceId};
use latchkey_core::keys::{BrokerPublicKey, DeviceKeys};
use latchkey_core::payload::{CredentialKind, CredentialPayload, Injection, OAuthRefresh};
use latchkey_core::secret::SecretBytes;
use serde_json::{Value, json};

const CANARY: &str = "ghp_CANARYlatchkeyREALsecret0123456789";
const REFRESH_CANARY: &str = "ghr_CANARYrefreshTOKENvalue0123456789";
const REFRESHED: &str = "gho_CANARYrefreshedACCESStoken98765";

/// What the upstream received.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Vec<u8>,
}

#[derive(Clone, Default)]
struct Upstream {
    received: Arc<Mutex<Vec<Received>>>,
}

impl Upstream {
    async fn start(self) -> String {
        let app = Router::new().fallback(record).with_state(self);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await.expect("upstream serves") });
        format!("http://{addr}")
    }

    fn count(&self) -> usize {
        self.received.lock().expect("lock").len()
    }

    fn last(&self) -> Received {
        self.received.lock().expect("lock").last().cloned().expect("upstream received a request")
    }

    fn all(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }
}

async fn record(State(upstream): State<Upstream>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 * 1024 * 1024).await.expect("body").to_vec();
    let path = parts.uri.path().to_owned();
    upstream.received.lock().expect("lock").push(Received {
        method: parts.method.to_string(),
        path: path.clone(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers.clone(),
        body,
    });
    let auth =
        parts.headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    match path.as_str() {
        "/echo" => {
            ([("x-echo", auth.clone())], axum::Json(json!({"you_sent": auth}))).into_response()
        }
        "/redirect" => {
            (StatusCode::FOUND, [("location", "http://127.0.0.1:9/steal")]).into_response()
        }
        "/hop" => (
            [
                ("connection", "x-hop-private"),
                ("x-hop-private", "for the upstream's hop only"),
                ("proxy-connection", "keep-alive"),
                ("keep-alive", "timeout=5"),
                ("x-end-to-end", "kept"),
            ],
            "ok",
        )
            .into_response(),
        "/oauth/refused" => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant", "error_description": "grant revoked"})),
        )
            .into_response(),
        "/oauth/slow" => {
            tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
            axum::Json(json!({
                "access_token": REFRESHED,
                "token_type": "Bearer",
                "expires_in": 3600,
                "refresh_token": "ghr_CANARYrotatedREFRESH000000000",
            }))
            .into_response()
        }
        "/oauth/token" => axum::Json(json!({
            "access_token": REFRESHED,
            "token_type": "Bearer",
            "expires_in": 3600,
            "refresh_token": "ghr_CANARYrotatedREFRESH000000000",
        }))
        .into_response(),
        _ => axum::Json(json!({"ok": true, "path": path})).into_response(),
    }
}

/// A workspace with an admin device, an agent, and a shared credential pointing at the upstream.
struct World {
    broker: TestBroker,
    upstream: Upstream,
    upstream_base: String,
    admin: TestDevice,
    broker_key: BrokerPublicKey,
    agent: AgentId,
    token: String,
    credential: CredentialId,
}

async fn world() -> World {
    world_on(TestBroker::start().await).await
}

/// A world whose broker holds calls for approval at most `timeout`.
async fn world_holding_for(timeout: std::time::Duration) -> World {
    world_of(|broker| broker.with_approval_timeout(timeout)).await
}

/// A world whose broker serves requests on `threads` threads of their own (`None`: on the
/// test's runtime, as [`world`]'s does).
async fn world_serving_on(threads: Option<std::num::NonZeroUsize>) -> World {
    world_of(|broker| broker.with_serving_threads(threads)).await
}

/// A world whose broker, on the test clock, is set up further by `configure`.
async fn world_of(
    configure: impl FnOnce(latchkey_server::Broker) -> latchkey_server::Broker,
) -> World {
    world_on(
        TestBroker::start_with(|store, clock, _| {
            let key = latchkey_core::keys::BrokerSecretKey::generate().expect("broker key");
            configure(latchkey_server::Broker::new(store, key).with_clock(clock))
        })
        .await,
    )
    .await
}

async fn world_on(broker: TestBroker) -> World {
    let upstream = Upstream::default();
    let upstream_base = upstream.clone().start().await;
    let admin = workspace_with_admin(&broker).await;
    let broker_key = broker_public_key(&broker).await;
    let (agent, token) = create_agent(&broker, &admin, "ci-bot").await;
    let payload = api_key(CANARY);
    let credential =
        create_credential(&broker, &admin, "github", &upstream_base, &payload, Owner::Shared).await;
    World { broker, upstream, upstream_base, admin, broker_key, agent, token, credential }
}

fn api_key(secret: &str) -> CredentialPayload {
    CredentialPayload {
        kind: CredentialKind::ApiKey,
        injection: Injection::bearer(),
        secret: SecretBytes::copy_from(secret.as_bytes()),
    }
}

async fn broker_public_key(broker: &TestBroker) -> BrokerPublicKey {
    let (_, body) = TestBroker::send(broker.http.get(broker.url("/v1/broker-key"))).await;
    let bytes = base64_decode(body["public_key"].as_str().expect("public key"));
    BrokerPublicKey::from_bytes(bytes.try_into().expect("32 bytes"))
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).expect("base64url")
}

async fn create_agent(broker: &TestBroker, device: &TestDevice, name: &str) -> (AgentId, String) {
    let (status, body) =
        TestBroker::send(broker.signed(device, "POST", "/v1/agents", Some(&json!({"name": name}))))
            .await;
    assert_eq!(status, 201, "agent creation: {body}");
    (
        serde_json::from_value(body["id"].clone()).expect("agent id"),
        body["token"].as_str().expect("token").to_owned(),
    )
}

async fn create_credential(
    broker: &TestBroker,
    device: &TestDevice,
    name: &str,
    base: &str,
    payload: &CredentialPayload,
    owner: Owner,
) -> CredentialId {
    let id = CredentialId::random();
    let record_key = match owner {
        Owner::Shared => device.workspace_key.as_ref().expect("wk").record_key(id),
        Owner::Member(_) => device.member_key.as_ref().expect("mk").record_key(id),
    }
    .expect("record key");
    let envelope = Envelope::seal(&record_key, &payload.encode().expect("encode")).expect("seal");
    let host = base.trim_start_matches("http://").to_owned();
    let body = json!({
        "id": id,
        "name": name,
        "provider": "github",
        "upstream_base_url": base,
        "allowed_hosts": [host],
        "owner": if owner == Owner::Shared { "shared" } else { "me" },
        "key_version": 1,
        "scopes": ["repo"],
        "envelope": b64(envelope.as_bytes()),
    });
    let (status, response) =
        TestBroker::send(broker.signed(device, "POST", "/v1/credentials", Some(&body))).await;
    assert_eq!(status, 201, "credential creation: {response}");
    id
}

struct Grant<'a> {
    methods: &'a [Method],
    paths: &'a [&'a str],
    reuse: Reuse,
    not_before: u64,
    expires: u64,
}

impl World {
    fn now(&self) -> u64 {
        latchkey_server::clock::Clock::now(&*self.broker.clock)
    }

    fn single_use(&self) -> Grant<'static> {
        Grant {
            methods: &[Method::Get, Method::Post],
            paths: &["/**"],
            reuse: Reuse::single_use().expect("nonce"),
            not_before: self.now() - 5,
            expires: self.now() + 120,
        }
    }

    fn capability_for(
        &self,
        issuer: &TestDevice,
        agent: AgentId,
        credential: CredentialId,
        owner: Owner,
        grant: &Grant<'_>,
    ) -> String {
        self.capability_sealed_to(&self.broker_key, issuer, agent, credential, owner, grant)
    }

    /// A capability as [`World::capability_for`] issues it, its record key sealed to `broker`.
    fn capability_sealed_to(
        &self,
        broker: &BrokerPublicKey,
        issuer: &TestDevice,
        agent: AgentId,
        credential: CredentialId,
        owner: Owner,
        grant: &Grant<'_>,
    ) -> String {
        let claims = Claims {
            workspace: issuer.workspace,
            agent,
            credential,
            owner,
            key_version: KeyVersion::FIRST,
            issuer: issuer.id,
            methods: MethodSet::of(grant.methods).expect("methods"),
            paths: grant.paths.iter().map(|p| PathPattern::parse(p).expect("pattern")).collect(),
            not_before: grant.not_before,
            expires: grant.expires,
            reuse: grant.reuse,
        };
        let key = match owner {
            Owner::Shared => issuer.workspace_key.as_ref().expect("wk").record_key(credential),
            Owner::Member(_) => issuer.member_key.as_ref().expect("mk").record_key(credential),
        }
        .expect("record key");
        Capability::issue(claims, &key, &issuer.keys.signing, broker).expect("issue").encode()
    }

    /// Registers a standing grant for GET on `pattern` issued by `issuer`, for `lifetime`
    /// seconds, and returns it with its capability.
    async fn standing_get(
        &self,
        issuer: &TestDevice,
        pattern: &str,
        lifetime: u64,
    ) -> (GrantId, String) {
        let grant = GrantId::random();
        let (status, body) = TestBroker::send(self.broker.signed(
            issuer,
            "POST",
            "/v1/grants",
            Some(&json!({
                "id": grant, "agent": self.agent, "credential": self.credential,
                "methods": ["GET"], "path_patterns": [pattern],
                "expires_at": self.now() + lifetime,
            })),
        ))
        .await;
        assert_eq!(status, 201, "grant registration: {body}");
        let grant_terms = Grant {
            methods: &[Method::Get],
            paths: &[pattern],
            reuse: Reuse::Standing { grant },
            not_before: self.now() - 5,
            expires: self.now() + lifetime,
        };
        let capability =
            self.capability_for(issuer, self.agent, self.credential, Owner::Shared, &grant_terms);
        (grant, capability)
    }

    fn capability(&self, grant: &Grant<'_>) -> String {
        self.capability_for(&self.admin, self.agent, self.credential, Owner::Shared, grant)
    }

    /// The agent's call: an ordinary request with the token as its bearer key.
    fn call(&self, method: &str, path: &str, capability: Option<&str>) -> reqwest::RequestBuilder {
        let mut request = self
            .broker
            .http
            .request(method.parse().expect("method"), self.broker.url(&format!("/p/github{path}")))
            .bearer_auth(&self.token);
        if let Some(capability) = capability {
            request = request.header("latchkey-capability", capability);
        }
        request
    }

    async fn audit(&self) -> Vec<Value> {
        let (status, body) = TestBroker::send(self.broker.signed(
            &self.admin,
            "GET",
            "/v1/audit?order=oldest_first&limit=1000",
            None,
        ))
        .await;
        assert_eq!(status, 200, "audit query: {body}");
        body["records"].as_array().cloned().unwrap_or_default()
    }
}

/// A GET sent byte for byte, for paths an HTTP client would normalise.
async fn raw_get(w: &World, target: &str, capability: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = w.broker.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET {target} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\nlatchkey-capability: {capability}\r\nconnection: close\r\n\r\n",
        w.token
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

async fn send(request: reqwest::RequestBuilder) -> (u16, HeaderMap, String) {
    let response = request.send().await.expect("the broker answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.expect("body"))
}

fn code(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[tokio::test]
async fn an_agent_call_with_a_capability_reaches_the_upstream_with_the_real_credential_only_there()
{
    let w = world().await;
    let cap = w.capability(&w.single_use());
    let (status, _, body) = send(w.call("GET", "/repos/acme/widgets?per_page=5", Some(&cap))).await;
    assert_eq!(status, 200, "{body}");
    let got = w.upstream.last();
    assert_eq!((got.method.as_str(), got.path.as_str()), ("GET", "/repos/acme/widgets"));
    assert_eq!(got.query.as_deref(), Some("per_page=5"), "the query is forwarded");
    assert_eq!(
        got.headers["authorization"],
        format!("Bearer {CANARY}"),
        "the upstream sees the real credential"
    );
    assert!(!got.headers.contains_key("latchkey-capability"), "the capability stays at the broker");
    assert!(
        !got.headers.contains_key("transfer-encoding") && got.body.is_empty(),
        "a GET without a body goes upstream without one: {:?}",
        got.headers
    );
    let all_headers = format!("{:?}", got.headers);
    assert!(!all_headers.contains(&w.token), "the agent token is never forwarded");
    assert!(!body.contains(CANARY), "the agent never sees the credential");

    // The outcome record is written after the response is on its way; wait for it (bounded).
    let proxy_records = |all: Vec<Value>| -> Vec<Value> {
        all.into_iter()
            .filter(|r| r["record"]["kind"].as_str().is_some_and(|k| k.starts_with("proxy_")))
            .collect()
    };
    let mut records = proxy_records(w.audit().await);
    for _ in 0..50 {
        if records.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        records = proxy_records(w.audit().await);
    }
    let kinds: Vec<_> = records
        .iter()
        .map(|r| r["record"]["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        kinds,
        ["proxy_attempt", "proxy_outcome"],
        "attempt before the call, outcome after: {records:?}"
    );
    assert_eq!(
        records[1]["record"]["upstream_status"], 200,
        "the outcome records the upstream status"
    );
    let audit_text = serde_json::to_string(&records).expect("json");
    assert!(
        !audit_text.contains(CANARY) && !audit_text.contains(&w.token),
        "no secret in the audit log"
    );
    w.broker.stop().await;
}

#[tokio::test]
async fn a_declared_body_length_reaches_the_upstream_unchanged_and_not_rechunked() {
    let w = world().await;
    let cap = w.capability(&w.single_use());
    let (status, _, body) =
        send(w.call("POST", "/repos/acme/widgets/issues", Some(&cap)).body("{\"title\":\"x\"}"))
            .await;
    assert_eq!(status, 200, "{body}");
    let posted = w.upstream.last();
    assert_eq!(
        posted.headers.get("content-length").map(|v| v.as_bytes()),
        Some(&b"13"[..]),
        "a declared length is kept"
    );
    assert!(
        posted.headers.get("transfer-encoding").is_none(),
        "not re-chunked: {:?}",
        posted.headers
    );
    assert_eq!(posted.body, b"{\"title\":\"x\"}");
    w.broker.stop().await;
}

#[tokio::test]
async fn a_single_use_capability_works_once_and_a_replay_never_reaches_the_upstream() {
    let w = world().await;
    let cap = w.capability(&w.single_use());
    assert_eq!(send(w.call("GET", "/user", Some(&cap))).await.0, 200);
    let before = w.upstream.count();
    let (status, _, body) = send(w.call("GET", "/user", Some(&cap))).await;
    assert_eq!((status, code(&body).as_str()), (403, "capability_invalid"), "{body}");
    assert!(body.contains("already used"), "says why: {body}");
    assert_eq!(w.upstream.count(), before, "a replay must not reach the upstream");
    w.broker.stop().await;
}

#[tokio::test]
async fn a_standing_grant_works_repeatedly_until_revoked() {
    let w = world().await;
    let (grant, cap) = w.standing_get(&w.admin, "/repos/**", 3600).await;
    for _ in 0..3 {
        assert_eq!(
            send(w.call("GET", "/repos/acme/a", Some(&cap))).await.0,
            200,
            "standing grants are reusable"
        );
    }
    let (status, body) =
        TestBroker::send(w.broker.signed(&w.admin, "DELETE", &format!("/v1/grants/{grant}"), None))
            .await;
    assert!(status == 200 || status == 204, "revocation: {body}");
    let before = w.upstream.count();
    let (status, _, body) = send(w.call("GET", "/repos/acme/a", Some(&cap))).await;
    assert_eq!(
        (status, code(&body).as_str()),
        (403, "capability_invalid"),
        "revocation is immediate: {body}"
    );
    assert_eq!(w.upstream.count(), before);
    w.broker.stop().await;
}

/// Registers a standing grant for the world's agent and credential issued by `issuer`, and
/// returns its capability after one successful call (so the broker has verified, opened and
/// cached it).
async fn warm_standing_capability(w: &World, issuer: &TestDevice) -> String {
    let (_, cap) = w.standing_get(issuer, "/**", 3600).await;
    for _ in 0..2 {
        assert_eq!(send(w.call("GET", "/warm", Some(&cap))).await.0, 200, "warm-up call");
    }
    cap
}

/// A change that ends an agent's use of the world's credential: (what, method, path, body,
/// the status, code and a phrase of the message the agent's next call gets).
type Change = (
    &'static str,
    &'static str,
    fn(&World) -> String,
    Option<Value>,
    u16,
    &'static str,
    &'static str,
);

fn revocations() -> [Change; 4] {
    [
        (
            "agent revoked",
            "DELETE",
            |w| format!("/v1/agents/{}", w.agent),
            None,
            401,
            "token_revoked",
            "was revoked",
        ),
        (
            "token regenerated",
            "POST",
            |w| format!("/v1/agents/{}/token", w.agent),
            None,
            401,
            "unknown_token",
            "unknown or malformed agent token",
        ),
        (
            "credential disabled",
            "PATCH",
            |w| format!("/v1/credentials/{}/status", w.credential),
            Some(json!({"status": "disabled"})),
            403,
            "forbidden",
            "is disabled; its owner",
        ),
        (
            "credential deleted",
            "DELETE",
            |w| format!("/v1/credentials/{}", w.credential),
            None,
            404,
            "not_found",
            "no credential named",
        ),
    ]
}

/// The proxy caches agents, credentials, devices, grants and opened standing capabilities;
/// every change made through the API must still be enforced at the very next call.
#[tokio::test]
async fn every_revocation_reaches_a_cached_standing_capability_at_the_next_call() {
    for (what, method, path, body, status, code_expected, says) in revocations() {
        let w = world().await;
        let cap = warm_standing_capability(&w, &w.admin).await;
        let (changed, answer) =
            TestBroker::send(w.broker.signed(&w.admin, method, &path(&w), body.as_ref())).await;
        assert!((200..300).contains(&changed), "{what}: the change itself failed: {answer}");
        let before = w.upstream.count();
        let (got, _, answer) = send(w.call("GET", "/after", Some(&cap))).await;
        assert_eq!(
            (got, code(&answer).as_str()),
            (status, code_expected),
            "{what}: must be enforced at the next call, not when a cache expires: {answer}"
        );
        assert!(answer.contains(says), "{what}: the agent is told why ({says:?}): {answer}");
        assert_eq!(w.upstream.count(), before, "{what}: the upstream must not be reached");
        w.broker.stop().await;
    }
}

#[tokio::test]
async fn removing_the_issuing_device_refuses_its_cached_standing_capability_at_once() {
    let w = world().await;
    let laptop = insert_device(&w.broker, &w.admin).await;
    let cap = warm_standing_capability(&w, &laptop).await;
    let (status, body) = TestBroker::send(w.broker.signed(
        &w.admin,
        "DELETE",
        &format!("/v1/devices/{}", laptop.id),
        None,
    ))
    .await;
    assert!((200..300).contains(&status), "device removal: {body}");
    let before = w.upstream.count();
    let (status, _, body) = send(w.call("GET", "/after", Some(&cap))).await;
    assert_eq!(
        (status, code(&body).as_str()),
        (403, "capability_invalid"),
        "a removed device's capability is refused at the next call: {body}"
    );
    assert_eq!(w.upstream.count(), before);
    w.broker.stop().await;
}

#[tokio::test]
async fn expired_wrong_agent_wrong_method_wrong_path_and_tampered_capabilities_are_refused_before_the_upstream()
 {
    let w = world().await;
    let now = w.now();
    let (other_agent, _) = create_agent(&w.broker, &w.admin, "other").await;
    let expired =
        w.capability(&Grant { not_before: now - 200, expires: now - 1, ..w.single_use() });
    let future =
        w.capability(&Grant { not_before: now + 600, expires: now + 700, ..w.single_use() });
    let for_other_agent =
        w.capability_for(&w.admin, other_agent, w.credential, Owner::Shared, &w.single_use());
    let get_only = w.capability(&Grant { methods: &[Method::Get], ..w.single_use() });
    let issues_only = w.capability(&Grant { paths: &["/repos/*/issues"], ..w.single_use() });
    let mut tampered = w.capability(&w.single_use()).into_bytes();
    let middle = tampered.len() / 2;
    tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    let stranger = TestDevice {
        workspace_key: w.admin.workspace_key.as_ref().map(|k| {
            latchkey_core::keys::WorkspaceKey::from_parts(
                k.workspace(),
                k.version(),
                k.expose_secret().duplicate(),
            )
        }),
        ..TestDevice::new(w.admin.workspace)
    };
    let forged = w.capability_for(&stranger, w.agent, w.credential, Owner::Shared, &w.single_use());

    let cases = [
        ("GET", "/user", expired, "expired"),
        ("GET", "/user", future, "not valid yet"),
        ("GET", "/user", for_other_agent, "another agent"),
        ("DELETE", "/user", get_only.clone(), "method"),
        ("POST", "/user", get_only, "method"),
        ("GET", "/repos/acme/pulls", issues_only, "path"),
        ("GET", "/user", tampered, ""),
        ("GET", "/user", forged, "issuing device"),
    ];
    let before = w.upstream.count();
    for (method, path, cap, why) in cases {
        let (status, _, body) = send(w.call(method, path, Some(&cap))).await;
        assert_eq!(
            (status, code(&body).as_str()),
            (403, "capability_invalid"),
            "{method} {path} ({why}): {body}"
        );
        assert!(body.contains(why), "the message says why ({why}): {body}");
    }
    assert_eq!(w.upstream.count(), before, "no refused call may reach the upstream");
    let denied = w.audit().await.iter().filter(|r| r["record"]["decision"] == "denied").count();
    assert!(denied >= 8, "every refusal is audited, found {denied}");
    w.broker.stop().await;
}

#[tokio::test]
async fn unknown_revoked_and_missing_tokens_are_refused_uniformly() {
    let w = world().await;
    let cap = w.capability(&w.single_use());
    let forged_token = latchkey_core::token::AgentToken::generate().expect("token");
    let (status, _, unknown) = send(
        w.broker
            .http
            .get(w.broker.url("/p/github/user"))
            .bearer_auth(forged_token.expose_secret())
            .header("latchkey-capability", &cap),
    )
    .await;
    assert_eq!((status, code(&unknown).as_str()), (401, "unknown_token"), "{unknown}");
    let (status, _, malformed) =
        send(w.broker.http.get(w.broker.url("/p/github/user")).bearer_auth("lk_garbage")).await;
    assert_eq!((status, code(&malformed).as_str()), (401, "unknown_token"), "{malformed}");
    assert_eq!(unknown, malformed, "unknown and malformed tokens get the same answer");
    let (status, _, missing) = send(w.broker.http.get(w.broker.url("/p/github/user"))).await;
    assert_eq!(status, 401, "{missing}");

    let (status, body) = TestBroker::send(w.broker.signed(
        &w.admin,
        "DELETE",
        &format!("/v1/agents/{}", w.agent),
        None,
    ))
    .await;
    assert!(status == 200 || status == 204, "agent revocation: {body}");
    let (status, _, body) = send(w.call("GET", "/user", Some(&cap))).await;
    assert_eq!(
        (status, code(&body).as_str()),
        (401, "token_revoked"),
        "revocation is immediate: {body}"
    );
    assert_eq!(w.upstream.count(), 0, "nothing reached the upstream");
    w.broker.stop().await;
}

#[tokio::test]
async fn a_call_without_a_capability_asks_for_approval() {
    let w = world().await;
    // `Prefer: wait=0`: the agent does not want its call held for an approval.
    let (status, _, body) = send(w.call("GET", "/user", None).header("prefer", "wait=0")).await;
    assert_eq!((status, code(&body).as_str()), (428, "approval_required"), "{body}");
    assert!(body.contains("approve"), "tells the agent what to do: {body}");
    assert_eq!(w.upstream.count(), 0);
    w.broker.stop().await;
}

#[tokio::test]
async fn a_workspace_forbid_policy_stops_a_call_its_capability_allows_and_names_the_policy() {
    let w = world().await;
    let policy = json!({
        "source": "@id(\"no-deletes\")\nforbid (principal, action == Latchkey::Action::\"DELETE\", resource);",
        "description": "agents never delete",
    });
    let (status, body) = TestBroker::send(w.broker.signed(
        &w.admin,
        "PUT",
        "/v1/policies/no-deletes",
        Some(&policy),
    ))
    .await;
    assert!(status == 200 || status == 201, "policy accepted: {body}");
    let cap = w.capability(&Grant { methods: &[Method::Get, Method::Delete], ..w.single_use() });
    let (status, _, body) = send(w.call("DELETE", "/repos/acme/widgets", Some(&cap))).await;
    assert_eq!((status, code(&body).as_str()), (403, "policy_denied"), "{body}");
    assert!(body.contains("no-deletes"), "the denial names the policy: {body}");
    assert_eq!(w.upstream.count(), 0, "a denied call never reaches the upstream");
    let cap = w.capability(&Grant { methods: &[Method::Get, Method::Delete], ..w.single_use() });
    assert_eq!(
        send(w.call("GET", "/repos/acme/widgets", Some(&cap))).await.0,
        200,
        "other methods still work"
    );
    w.broker.stop().await;
}

impl World {
    /// The `last_used_at` of the world's credential and of its agent, as the API shows them.
    async fn last_used(&self) -> (Value, Value) {
        let path = format!("/v1/credentials/{}", self.credential);
        let (status, credential) =
            TestBroker::send(self.broker.signed(&self.admin, "GET", &path, None)).await;
        assert_eq!(status, 200, "{credential}");
        let (status, agents) =
            TestBroker::send(self.broker.signed(&self.admin, "GET", "/v1/agents", None)).await;
        assert_eq!(status, 200, "{agents}");
        (credential["last_used_at"].clone(), agents["agents"][0]["last_used_at"].clone())
    }

    /// Waits (up to about two seconds) until the credential's and the agent's last use satisfy
    /// `done`, and returns them as last seen: the proxy records both in the background.
    async fn last_used_until(&self, done: impl Fn(&Value, &Value) -> bool) -> (Value, Value) {
        let mut seen = self.last_used().await;
        for _ in 0..100 {
            if done(&seen.0, &seen.1) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            seen = self.last_used().await;
        }
        seen
    }
}

#[tokio::test]
async fn a_forwarded_call_records_the_credentials_last_use_and_a_refused_one_does_not() {
    let w = world().await;
    assert_eq!(w.last_used().await, (Value::Null, Value::Null), "never used yet");

    // Refused by policy after every other check: the agent was seen, the credential not used.
    let policy = json!({
        "source": "@id(\"no-deletes\")\nforbid (principal, action == Latchkey::Action::\"DELETE\", resource);",
    });
    let (status, body) = TestBroker::send(w.broker.signed(
        &w.admin,
        "PUT",
        "/v1/policies/no-deletes",
        Some(&policy),
    ))
    .await;
    assert!(status == 200 || status == 201, "policy accepted: {body}");
    let cap = w.capability(&Grant { methods: &[Method::Delete], ..w.single_use() });
    let (status, _, body) = send(w.call("DELETE", "/repos/acme/widgets", Some(&cap))).await;
    assert_eq!((status, code(&body).as_str()), (403, "policy_denied"), "{body}");
    let (_, agent) = w.last_used_until(|_, agent| !agent.is_null()).await;
    assert_eq!(agent, w.now(), "the agent's use is recorded");
    // The agent's write was spawned by the refused call before it could have spawned the
    // credential's; give a stray write time to land before checking there was none.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(w.last_used().await.0, Value::Null, "a refused call does not count");

    w.broker.clock.advance(7);
    let cap = w.capability(&w.single_use());
    assert_eq!(send(w.call("GET", "/user", Some(&cap))).await.0, 200);
    let (credential, _) = w.last_used_until(|credential, _| !credential.is_null()).await;
    assert_eq!(credential, w.now(), "a forwarded call counts, to the second");
    let (status, list) =
        TestBroker::send(w.broker.signed(&w.admin, "GET", "/v1/credentials", None)).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["credentials"][0]["last_used_at"], w.now(), "listed too: {list}");
    assert_eq!(list["credentials"][0]["revision"], 1, "a use is not a change: {list}");
    w.broker.stop().await;
}

#[tokio::test]
async fn hosts_outside_the_allow_list_are_refused() {
    let w = world().await;
    let payload = api_key(CANARY);
    let id = CredentialId::random();
    let key = w.admin.workspace_key.as_ref().expect("wk").record_key(id).expect("key");
    let envelope = Envelope::seal(&key, &payload.encode().expect("encode")).expect("seal");
    let body = json!({
        "id": id, "name": "elsewhere", "provider": "custom", "upstream_base_url": w.upstream_base,
        "allowed_hosts": ["api.example.com"], "owner": "shared", "key_version": 1, "scopes": [],
        "envelope": b64(envelope.as_bytes()),
    });
    let (status, response) =
        TestBroker::send(w.broker.signed(&w.admin, "POST", "/v1/credentials", Some(&body))).await;
    assert_eq!(status, 201, "{response}");
    let cap = w.capability_for(&w.admin, w.agent, id, Owner::Shared, &w.single_use());
    let (status, _, body) = send(
        w.broker
            .http
            .get(w.broker.url("/p/elsewhere/user"))
            .bearer_auth(&w.token)
            .header("latchkey-capability", cap),
    )
    .await;
    assert_eq!((status, code(&body).as_str()), (403, "host_not_allowed"), "{body}");
    assert_eq!(w.upstream.count(), 0);
    w.broker.stop().await;
}

#[tokio::test]
async fn upstream_redirects_are_returned_not_followed() {
    let w = world().await;
    let cap = w.capability(&w.single_use());
    let (status, headers, _) = send(w.call("GET", "/redirect", Some(&cap))).await;
    assert_eq!(status, 302, "the redirect goes back to the agent");
    assert_eq!(headers["location"], "http://127.0.0.1:9/steal");
    assert_eq!(w.upstream.count(), 1, "the broker did not follow it");
    w.broker.stop().await;
}

#[tokio::test]
async fn an_upstream_echoing_the_credential_is_redacted_in_headers_and_body() {
    let w = world().await;
    let cap = w.capability(&w.single_use());
    let (status, headers, body) = send(w.call("GET", "/echo", Some(&cap))).await;
    assert_eq!(status, 200);
    assert!(!body.contains(CANARY), "body echo removed: {body}");
    assert!(body.contains("[REDACTED by Latchkey]"), "and marked: {body}");
    let echoed = headers["x-echo"].to_str().expect("text");
    assert!(!echoed.contains(CANARY), "header echo removed: {echoed}");

    w.broker.stop().await;
}

#[tokio::test]
async fn the_upstreams_connection_specific_headers_end_at_the_broker() {
    let w = world().await;
    let cap = w.capability(&w.single_use());
    let (status, headers, body) = send(w.call("GET", "/hop", Some(&cap))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-end-to-end"], "kept", "end-to-end headers reach the agent");
    for hop in ["x-hop-private", "proxy-connection", "keep-alive"] {
        assert!(
            !headers.contains_key(hop),
            "{hop} is for the upstream's hop only (named by its Connection header, or \
             connection-specific): {headers:?}"
        );
    }
    w.broker.stop().await;
}

#[tokio::test]
async fn oversized_bodies_and_ambiguous_paths_are_refused_and_the_broker_keeps_serving() {
    let w = world().await;
    let cap = w.capability(&w.single_use());
    let big = vec![b'x'; 10 * 1024 * 1024 + 1];
    let (status, _, body) = send(w.call("POST", "/upload", Some(&cap)).body(big)).await;
    assert_eq!((status, code(&body).as_str()), (413, "payload_too_large"), "{body}");
    let attempts: Vec<(Value, Value)> = w
        .audit()
        .await
        .iter()
        .filter(|r| r["record"]["kind"] == "proxy_attempt")
        .map(|r| (r["record"]["decision"].clone(), r["record"]["reason_code"].clone()))
        .collect();
    assert_eq!(
        attempts,
        [(json!("denied"), json!("payload_too_large"))],
        "a declared oversized body is refused before the attempt is allowed and anything decrypted"
    );
    // A body that does not declare its length is cut off once past the limit.
    let chunks = (0..11).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 1024 * 1024]));
    let streamed = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let cap = w.capability(&w.single_use());
    let (status, _, body) = send(w.call("POST", "/upload", Some(&cap)).body(streamed)).await;
    assert_eq!((status, code(&body).as_str()), (413, "payload_too_large"), "chunked: {body}");
    assert_eq!(w.upstream.count(), 0, "the upstream never received a complete oversized request");
    // HTTP clients normalise dot segments before sending, so these go over a raw socket.
    for path in ["/repos/../admin", "/a/%2e%2e/admin", "/a/%2E%2e/admin", "/a%2Fb"] {
        let cap = w.capability(&w.single_use());
        let before = w.upstream.count();
        let (status, body) = raw_get(&w, &format!("/p/github{path}"), &cap).await;
        assert!(status == 400 || status == 403, "{path} must be refused: {status} {body}");
        assert_eq!(w.upstream.count(), before, "{path} must not reach the upstream");
    }
    let cap = w.capability(&w.single_use());
    assert_eq!(send(w.call("GET", "/user", Some(&cap))).await.0, 200, "still serving");
    w.broker.stop().await;
}

#[tokio::test]
async fn a_deleted_credential_is_gone_at_the_next_request() {
    let w = world().await;
    let (status, body) = TestBroker::send(w.broker.signed(
        &w.admin,
        "DELETE",
        &format!("/v1/credentials/{}", w.credential),
        None,
    ))
    .await;
    assert!(status == 200 || status == 204, "{body}");
    let cap = w.capability(&w.single_use());
    let (status, _, body) = send(w.call("GET", "/user", Some(&cap))).await;
    assert_eq!((status, code(&body).as_str()), (404, "not_found"), "{body}");
    w.broker.stop().await;
}

#[tokio::test]
async fn an_expiring_oauth_token_is_refreshed_and_resealed_under_the_same_record_key() {
    let w = world().await;
    let payload = CredentialPayload {
        kind: CredentialKind::OAuth {
            expires_at: Some(w.now() + 60),
            refresh: Some(OAuthRefresh {
                refresh_token: SecretBytes::copy_from(REFRESH_CANARY.as_bytes()),
                token_endpoint: format!("{}/oauth/token", w.upstream_base),
                client_id: "latchkey-test".into(),
                client_secret: None,
            }),
        },
        injection: Injection::bearer(),
        secret: SecretBytes::copy_from(CANARY.as_bytes()),
    };
    let id = create_credential(
        &w.broker,
        &w.admin,
        "gh-oauth",
        &w.upstream_base,
        &payload,
        Owner::Shared,
    )
    .await;
    let cap = w.capability_for(&w.admin, w.agent, id, Owner::Shared, &w.single_use());
    let (status, _, body) = send(
        w.broker
            .http
            .get(w.broker.url("/p/gh-oauth/user"))
            .bearer_auth(&w.token)
            .header("latchkey-capability", cap),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let calls = w.upstream.received.lock().expect("lock").clone();
    let refresh = calls.iter().find(|r| r.path == "/oauth/token").expect("the broker refreshed");
    let form = String::from_utf8_lossy(&refresh.body).into_owned();
    assert!(
        form.contains("grant_type=refresh_token") && form.contains(REFRESH_CANARY),
        "refresh grant: {form}"
    );
    assert_eq!(
        w.upstream.last().headers["authorization"],
        format!("Bearer {REFRESHED}"),
        "the new token is used"
    );

    // The stored envelope now holds the refreshed token under the same record key.
    let (status, stored) = TestBroker::send(w.broker.signed(
        &w.admin,
        "GET",
        &format!("/v1/credentials/{id}/envelope"),
        None,
    ))
    .await;
    assert_eq!(status, 200, "{stored}");
    let envelope = Envelope::parse(&base64_decode(stored["envelope"].as_str().expect("envelope")))
        .expect("framing");
    let key = w.admin.workspace_key.as_ref().expect("wk").record_key(id).expect("key");
    let opened = CredentialPayload::decode(
        envelope.open(&key).expect("same record key opens it").expose_secret(),
    )
    .expect("payload");
    assert_eq!(opened.secret.expose_secret(), REFRESHED.as_bytes());
    w.broker.stop().await;
}

#[tokio::test]
async fn a_personal_credential_opens_only_with_its_owners_capability() {
    let w = world().await;
    let payload = api_key("sk-CANARYpersonal000000000000000");
    let id = create_credential(
        &w.broker,
        &w.admin,
        "mine",
        &w.upstream_base,
        &payload,
        Owner::Member(w.admin.member),
    )
    .await;
    let good =
        w.capability_for(&w.admin, w.agent, id, Owner::Member(w.admin.member), &w.single_use());
    let (status, _, body) = send(
        w.broker
            .http
            .get(w.broker.url("/p/mine/user"))
            .bearer_auth(&w.token)
            .header("latchkey-capability", good),
    )
    .await;
    assert_eq!(status, 200, "the owner's own capability works: {body}");

    // A capability claiming the shared owner for a personal credential does not open it.
    let wrong_scope = w.capability_for(&w.admin, w.agent, id, Owner::Shared, &w.single_use());
    let (status, _, body) = send(
        w.broker
            .http
            .get(w.broker.url("/p/mine/user"))
            .bearer_auth(&w.token)
            .header("latchkey-capability", wrong_scope),
    )
    .await;
    assert_eq!((status, code(&body).as_str()), (403, "capability_invalid"), "{body}");
    assert!(
        body.contains("another owner"),
        "refused for naming the wrong owner, before any decryption is tried: {body}"
    );
    w.broker.stop().await;
}

#[tokio::test]
async fn a_capability_from_another_workspace_is_refused() {
    let w = world().await;
    let mut other = TestDevice::new(WorkspaceId::random());
    let body = other.create_workspace_body("Other");
    assert_eq!(
        TestBroker::send(w.broker.signed(&other, "POST", "/v1/workspaces", Some(&body))).await.0,
        201
    );
    let cross = w.capability_for(&other, w.agent, w.credential, Owner::Shared, &w.single_use());
    let (status, _, body) = send(w.call("GET", "/user", Some(&cross))).await;
    assert_eq!((status, code(&body).as_str()), (403, "capability_invalid"), "{body}");
    assert_eq!(w.upstream.count(), 0);
    let _ = DeviceKeys::generate();
    w.broker.stop().await;
}

#[tokio::test]
async fn no_canary_credential_reaches_the_database_files() {
    let w = world().await;
    let cap = w.capability(&w.single_use());
    assert_eq!(send(w.call("GET", "/echo", Some(&cap))).await.0, 200);
    for (name, bytes) in w.broker.stop_and_scan().await {
        for canary in [CANARY.as_bytes(), w.token.as_bytes()] {
            assert!(
                !bytes.windows(canary.len()).any(|win| win == canary),
                "{name} contains a plaintext secret"
            );
        }
    }
}

// --- Live approvals -------------------------------------------------------------------------

/// Opens `device`'s approval stream on the world's broker.
async fn approval_stream(w: &World, device: &TestDevice) -> ApprovalStream {
    ApprovalStream::open(&w.broker, device).await
}

impl World {
    /// A single-use capability for exactly one method and path.
    fn once(&self, issuer: &TestDevice, method: Method, path: &str) -> String {
        self.capability_for(
            issuer,
            self.agent,
            self.credential,
            Owner::Shared,
            &Grant {
                methods: &[method],
                paths: &[path],
                reuse: Reuse::single_use().expect("nonce"),
                not_before: self.now() - 5,
                expires: self.now() + 120,
            },
        )
    }

    async fn answer(&self, device: &TestDevice, id: &str, body: Value) -> (u16, Value) {
        TestBroker::send(self.broker.signed(
            device,
            "POST",
            &format!("/v1/approvals/{id}"),
            Some(&body),
        ))
        .await
    }

    async fn approvals(&self, device: &TestDevice, status: &str) -> Vec<Value> {
        let (code, body) = TestBroker::send(self.broker.signed(
            device,
            "GET",
            &format!("/v1/approvals?status={status}"),
            None,
        ))
        .await;
        assert_eq!(code, 200, "approval listing: {body}");
        body["approvals"].as_array().cloned().unwrap_or_default()
    }

    /// The id of the admin's one pending approval, once the broker has recorded it.
    async fn pending_approval(&self) -> String {
        loop {
            if let Some(a) = self.approvals(&self.admin, "pending").await.first() {
                return a["id"].as_str().expect("id").to_owned();
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The agent's call, sent in the background (it is held until answered).
    fn call_in_background(
        &self,
        method: &str,
        path: &str,
    ) -> tokio::task::JoinHandle<(u16, HeaderMap, String)> {
        let request = self
            .call(method, path, None)
            .header("content-length", "0")
            .header("prefer", "return=minimal, wait=60");
        tokio::spawn(send(request))
    }
}

#[tokio::test]
async fn a_held_call_goes_on_once_a_device_approves_it_and_only_once() {
    let w = world().await;
    let mut stream = approval_stream(&w, &w.admin).await;
    let held = w.call_in_background("GET", "/repos/acme/widgets?per_page=5&q=secret-value");

    let event = stream.next().await;
    assert_eq!(event["status"], "pending", "the device hears of the held call: {event}");
    assert_eq!(
        (event["method"].as_str(), event["path"].as_str(), event["credential_name"].as_str()),
        (Some("GET"), Some("/repos/acme/widgets"), Some("github")),
        "the member sees what the agent wants to do: {event}"
    );
    assert_eq!(event["query_keys"], json!(["per_page", "q"]), "query names only: {event}");
    assert!(!event.to_string().contains("secret-value"), "no query value leaves the broker");
    assert_eq!(event["agent"], json!(w.agent));
    assert_eq!(w.upstream.count(), 0, "nothing is forwarded while the call is held");

    let id = event["id"].as_str().expect("approval id").to_owned();
    let cap = w.once(&w.admin, Method::Get, "/repos/acme/widgets");
    let (status, body) =
        w.answer(&w.admin, &id, json!({"decision": "approve", "capability": cap})).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("approved")), "{body}");

    let (status, headers, body) = held.await.expect("the agent's call ends");
    assert_eq!(status, 200, "the held call went on after the approval: {body}");
    assert!(headers.get("latchkey-capability").is_none(), "approve-once hands nothing back");
    assert_eq!(w.upstream.count(), 1, "forwarded exactly once");
    assert_eq!(
        w.upstream.last().headers.get("prefer").and_then(|v| v.to_str().ok()),
        Some("return=minimal"),
        "the agent's wait preference was for the broker's hold; its other preferences reach the upstream"
    );

    let resolved = stream.next().await;
    assert_eq!(
        (resolved["id"].as_str(), resolved["status"].as_str()),
        (Some(id.as_str()), Some("approved"))
    );

    let (status, body) = w.answer(&w.admin, &id, json!({"decision": "deny"})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("conflict")),
        "a second answer is refused: {body}"
    );
    assert_eq!(w.upstream.count(), 1, "a second answer forwards nothing");

    let audit = w.audit().await;
    let kinds: Vec<&str> = audit.iter().filter_map(|r| r["record"]["kind"].as_str()).collect();
    // (`proxy_outcome` is deferred; other tests wait for it.)
    for kind in ["approval_requested", "approval_answered", "proxy_attempt"] {
        assert!(kinds.contains(&kind), "{kind} is audited: {kinds:?}");
    }
    let attempt = audit
        .iter()
        .find(|r| r["record"]["kind"] == "proxy_attempt" && r["record"]["decision"] == "allowed")
        .expect("the allowed attempt");
    assert_eq!(
        attempt["record"]["approval_id"],
        json!(id),
        "the attempt names the approval that allowed it"
    );
    w.broker.stop().await;
}

#[tokio::test]
async fn a_denied_call_fails_and_never_reaches_the_upstream() {
    let w = world().await;
    let held = w.call_in_background("DELETE", "/repos/acme/widgets");
    let id = w.pending_approval().await;
    let (status, body) = w.answer(&w.admin, &id, json!({"decision": "deny"})).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("denied")), "{body}");
    let (status, _, body) = held.await.expect("the agent's call ends");
    assert_eq!((status, code(&body).as_str()), (403, "approval_denied"), "{body}");
    assert_eq!(w.upstream.count(), 0, "a denied call never reaches the upstream");
    let audit = w.audit().await;
    assert!(
        audit
            .iter()
            .any(|r| r["record"]["kind"] == "approval_answered"
                && r["record"]["decision"] == "denied"),
        "the denial is audited"
    );
    w.broker.stop().await;
}

#[tokio::test]
async fn an_unanswered_call_times_out_with_a_retryable_error_and_a_late_answer_is_refused() {
    let w = world_holding_for(std::time::Duration::from_millis(400)).await;
    let (status, _, body) = send(w.call("GET", "/user", None)).await;
    assert_eq!((status, code(&body).as_str()), (504, "approval_timeout"), "{body}");
    assert!(body.contains("retry"), "the agent is told it may retry: {body}");
    let all = w.approvals(&w.admin, "all").await;
    assert_eq!(all.len(), 1, "the expired approval is still listed: {all:?}");
    assert_eq!(all[0]["status"], "expired");
    assert!(w.approvals(&w.admin, "pending").await.is_empty(), "nothing is left pending");
    let id = all[0]["id"].as_str().expect("id");
    let cap = w.once(&w.admin, Method::Get, "/user");
    let (status, body) =
        w.answer(&w.admin, id, json!({"decision": "approve", "capability": cap})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("conflict")),
        "a late answer is refused: {body}"
    );
    assert!(body["message"].as_str().is_some_and(|m| m.contains("expired")), "{body}");
    assert_eq!(w.upstream.count(), 0, "a late answer forwards nothing");
    let audit = w.audit().await;
    assert!(
        audit.iter().any(|r| r["record"]["kind"] == "approval_expired"
            && r["record"]["approval_id"] == json!(id)),
        "the expiry is audited"
    );
    w.broker.stop().await;
}

#[tokio::test]
async fn approving_for_a_window_hands_the_agent_a_standing_capability_for_its_next_calls() {
    let w = world().await;
    let held = w.call_in_background("GET", "/repos/acme/a");
    let id = w.pending_approval().await;
    let (_, standing) = w.standing_get(&w.admin, "/repos/**", 1800).await;
    let (status, body) =
        w.answer(&w.admin, &id, json!({"decision": "approve", "capability": standing})).await;
    assert_eq!(status, 200, "{body}");
    let (status, headers, body) = held.await.expect("the agent's call ends");
    assert_eq!(status, 200, "{body}");
    let handed = headers
        .get("latchkey-capability")
        .and_then(|v| v.to_str().ok())
        .expect("the agent gets the standing capability for the window");
    assert_eq!(handed, standing);
    let (status, _, body) = send(w.call("GET", "/repos/acme/b", Some(handed))).await;
    assert_eq!(status, 200, "the next call in the window needs no approval: {body}");
    assert!(w.approvals(&w.admin, "pending").await.is_empty(), "and asked nobody");
    w.broker.stop().await;
}

#[tokio::test]
async fn a_member_sees_their_agents_held_calls_however_many_others_are_held() {
    use latchkey_core::ids::ApprovalId;
    use latchkey_server::clock::Clock as _;
    use latchkey_server::store::approvals::NewApproval;
    let w = world().await;
    let member = insert_member(&w.broker, &w.admin, "member").await;
    let (mine, _) = common::agent_calls::create_agent(&w.broker, &member, "member-bot").await;
    let store = w.broker.store().await;
    let now = w.broker.clock.now();
    let hold = |agent: AgentId, agent_owner, n: u64| NewApproval {
        workspace: w.admin.workspace,
        id: ApprovalId::random(),
        agent,
        credential: w.credential,
        credential_owner: None,
        agent_owner,
        credential_name: "github".to_owned(),
        method: "GET".to_owned(),
        host: "api.example.com".to_owned(),
        path: format!("/calls/{n}"),
        query_keys: Vec::new(),
        body_size: None,
        policy_ids: Vec::new(),
        now: now + n,
        expires_at: now + 600,
    };
    // The member's agent's call is held first; then 500 of the admin's agent's, newer.
    store.create_approval(&hold(mine, member.member, 0)).await.expect("held");
    for n in 1..=500 {
        store.create_approval(&hold(w.agent, w.admin.member, n)).await.expect("held");
    }
    for status in ["pending", "all"] {
        let seen = w.approvals(&member, status).await;
        assert_eq!(
            seen.iter().map(|a| a["path"].as_str().unwrap()).collect::<Vec<_>>(),
            ["/calls/0"],
            "status={status}: the member's own agent's call is listed, though 500 newer calls \
             they may not see fill the listing's limit"
        );
    }
    let admin_sees = w.approvals(&w.admin, "pending").await;
    assert_eq!(admin_sees.len(), 500, "an admin's listing stops at its limit");
    assert_eq!(admin_sees[0]["path"], "/calls/500", "newest first");
    w.broker.stop().await;
}

#[tokio::test]
async fn only_devices_that_may_authorise_see_a_held_call_and_a_wrong_capability_changes_nothing() {
    let w = world().await;
    let member = common::insert_member(&w.broker, &w.admin, "member").await;
    let held = w.call_in_background("GET", "/user");
    let id = w.pending_approval().await;
    assert!(
        w.approvals(&member, "pending").await.is_empty(),
        "a shared credential's calls are approved by admins only"
    );
    let (status, body) = w.answer(&member, &id, json!({"decision": "deny"})).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")), "{body}");

    let wrong_path = w.once(&w.admin, Method::Get, "/user/emails");
    let (status, body) =
        w.answer(&w.admin, &id, json!({"decision": "approve", "capability": wrong_path})).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_request")), "{body}");
    let (status, body) = w.answer(&w.admin, &id, json!({"decision": "approve"})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_request")),
        "no capability: {body}"
    );
    let (status, body) = w.answer(&w.admin, &id, json!({"decision": "maybe"})).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")), "{body}");
    let (status, body) = w.answer(&w.admin, "not-a-uuid", json!({"decision": "deny"})).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")), "{body}");
    let (status, body) =
        TestBroker::send(w.broker.signed(&w.admin, "GET", "/v1/approvals?status=bogus", None))
            .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("bad_request")),
        "an unknown listing status is refused by name: {body}"
    );

    let pending = w.approvals(&w.admin, "pending").await;
    assert_eq!(pending.len(), 1, "refused answers leave the approval pending: {pending:?}");
    let (status, _) = w.answer(&w.admin, &id, json!({"decision": "deny"})).await;
    assert_eq!(status, 200, "and a right answer still works");
    assert_eq!(held.await.expect("call ends").0, 403);
    assert_eq!(w.upstream.count(), 0);
    w.broker.stop().await;
}

#[tokio::test]
async fn decided_approvals_are_listed_for_thirty_days_and_the_audit_chain_keeps_them() {
    const DAY: u64 = 24 * 60 * 60;
    let w = world().await;
    // Denies the agent's next held call; its approval's id.
    let deny_next = || async {
        let held = w.call_in_background("GET", "/user");
        let id = w.pending_approval().await;
        let (status, body) = w.answer(&w.admin, &id, json!({"decision": "deny"})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(held.await.expect("the call ends").0, 403, "denied");
        id
    };
    let oldest = deny_next().await;
    w.broker.clock.advance(29 * DAY);
    let recent = deny_next().await;
    w.broker.clock.advance(DAY + 1);
    let newest = deny_next().await;

    let listed: Vec<String> = w
        .approvals(&w.admin, "all")
        .await
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        listed,
        [newest, recent.clone()],
        "an approval decided 30 days before the next one is requested is gone; one decided 29 \
         days before is still listed"
    );
    let answered: Vec<Value> = w
        .audit()
        .await
        .into_iter()
        .filter(|r| r["record"]["kind"] == "approval_answered")
        .map(|r| r["record"]["approval_id"].clone())
        .collect();
    assert!(
        answered.contains(&json!(oldest)) && answered.contains(&json!(recent)),
        "the audit chain keeps every answer, listed or not: {answered:?}"
    );
    w.broker.stop().await;
}

#[tokio::test]
async fn while_another_program_locks_the_database_devices_hear_503_and_agents_calls_go_on() {
    if common::postgres_backend() {
        return; // SQLite's write lock: no PostgreSQL client holds one over a whole database.
    }
    use sqlx::Connection as _;
    let w = world().await;
    let (_, capability) = w.standing_get(&w.admin, "/repos/**", 3600).await;
    let (status, _, body) = send(w.call("GET", "/repos/acme/widgets", Some(&capability))).await;
    assert_eq!(status, 200, "{body}");

    // A shell or a backup tool opens the broker's database and keeps a write transaction open.
    let file = w.broker.dir.path().join("db.sqlite3");
    let mut holder = sqlx::AnyConnection::connect(&format!("sqlite://{}", file.display()))
        .await
        .expect("another program opens the database");
    sqlx::query("BEGIN IMMEDIATE").execute(&mut holder).await.expect("takes the write lock");

    let create = w.broker.signed(&w.admin, "POST", "/v1/agents", Some(&json!({"name": "late"})));
    let refused = common::Answer::of(create.send().await.expect("the broker answers")).await;
    assert_eq!(
        (refused.status, refused.body["code"].as_str(), refused.retry_after.as_deref()),
        (503, Some("unavailable"), Some("2")),
        "a locked database is a condition that passes, not a broker bug: {}",
        refused.body
    );
    let message = refused.body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("locked by another program") && message.contains("nothing was done"),
        "says why and that nothing changed: {message}"
    );
    // On SQLite an agent's call writes its audit record to the journal, not the database.
    let (status, _, body) = send(w.call("GET", "/repos/acme/gadgets", Some(&capability))).await;
    assert_eq!(status, 200, "agents' calls go on while the database is locked: {body}");

    sqlx::query("ROLLBACK").execute(&mut holder).await.expect("lets go");
    let (status, body) = TestBroker::send(w.broker.signed(
        &w.admin,
        "POST",
        "/v1/agents",
        Some(&json!({"name": "late"})),
    ))
    .await;
    assert_eq!(status, 201, "the same request, signed again, goes through: {body}");
    let (_, agents) = TestBroker::send(w.broker.signed(&w.admin, "GET", "/v1/agents", None)).await;
    let named_late = agents["agents"]
        .as_array()
        .map_or(0, |a| a.iter().filter(|agent| agent["name"] == "late").count());
    assert_eq!(named_late, 1, "the refused request wrote nothing: {agents}");
    let audit = w.audit().await;
    let forwarded = audit
        .iter()
        .filter(|r| r["record"]["kind"] == "proxy_attempt" && r["record"]["decision"] == "allowed")
        .count();
    assert_eq!(forwarded, 2, "the call made during the lock is in the audit log once indexed");
    w.broker.stop().await;
}

/// Waits until the approval `id` has left `pending`; returns its row.
async fn settled_approval(w: &World, id: &str) -> Value {
    let settled = async {
        loop {
            let all = w.approvals(&w.admin, "all").await;
            if let Some(row) = all.iter().find(|a| a["id"] == json!(id) && a["status"] != "pending")
            {
                return row.clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), settled)
        .await
        .expect("the approval left pending within 5 s")
}

#[tokio::test]
async fn a_held_call_whose_agent_hangs_up_expires_its_approval_with_an_audit_record() {
    for threads in [None, std::num::NonZeroUsize::new(2)] {
        let w = world_serving_on(threads).await;
        let held = w.call_in_background("GET", "/repos/acme/widgets");
        let id = w.pending_approval().await;
        held.abort();
        let _ = held.await;

        let row = settled_approval(&w, &id).await;
        assert_eq!(
            row["status"], "expired",
            "an approval nobody waits for any more cannot be answered ({threads:?}): {row}"
        );
        let audit = w.audit().await;
        assert!(
            audit.iter().any(|r| r["record"]["kind"] == "approval_expired"
                && r["record"]["approval_id"] == json!(id)
                && r["record"]["reason_code"] == "caller_gone"),
            "the expiry is audited with its reason, also when the call was served on a thread \
             of its own ({threads:?})"
        );
        let (status, body) = w.answer(&w.admin, &id, json!({"decision": "deny"})).await;
        assert_eq!(status, 409, "a late answer is refused ({threads:?}): {body}");
        assert_eq!(w.upstream.count(), 0, "nothing was forwarded ({threads:?})");
        w.broker.stop().await;
    }
}

#[tokio::test]
async fn shutting_down_ends_device_streams_and_lets_held_calls_go_with_a_retryable_error() {
    for threads in [None, std::num::NonZeroUsize::new(2)] {
        let w = world_serving_on(threads).await;
        let _stream = approval_stream(&w, &w.admin).await;
        let held = w.call_in_background("GET", "/user");
        w.pending_approval().await;
        // Graceful shutdown waits for open requests: an open stream or a held call must not
        // hold it up for the approval timeout (or forever), on any serving thread.
        tokio::time::timeout(std::time::Duration::from_secs(10), w.broker.stop())
            .await
            .expect("the broker stops although a device stream and a held call were open");
        let (status, _, body) = held.await.expect("the agent's call ends");
        assert_eq!(
            (status, code(&body).as_str()),
            (503, "unavailable"),
            "retryable ({threads:?}): {body}"
        );
        assert_eq!(w.upstream.count(), 0);
    }
}

/// An approvals row as a broker leaves it, written behind the broker's back.
struct ApprovalRow {
    status: &'static str,
    created_at: i64,
    expires_at: i64,
    decided_at: Option<i64>,
}

impl World {
    /// Inserts `row` (with `capability`, if any) for the world's agent and credential.
    async fn insert_approval(
        &self,
        db: &sqlx::AnyPool,
        row: ApprovalRow,
        capability: Option<&str>,
    ) -> latchkey_core::ids::ApprovalId {
        let id = latchkey_core::ids::ApprovalId::random();
        sqlx::query(
            "INSERT INTO approvals (workspace_id, id, agent_id, credential_id, credential_name,
                 method, host, path, query_keys, policy_ids, status, created_at, expires_at,
                 decided_at, capability)
             VALUES ($1, $2, $3, $4, 'github', 'GET', 'api.github.com', '/user', '[]', '[]',
                 $5, $6, $7, $8, $9)",
        )
        .bind(self.admin.workspace.to_string())
        .bind(id.to_string())
        .bind(self.agent.to_string())
        .bind(self.credential.to_string())
        .bind(row.status)
        .bind(row.created_at)
        .bind(row.expires_at)
        .bind(row.decided_at)
        .bind(capability)
        .execute(db)
        .await
        .expect("an approvals row");
        id
    }
}

#[tokio::test]
async fn decided_approvals_are_listed_for_30_days_even_when_no_call_is_held_after_them() {
    let w = world().await;
    let db = common::database(&w.broker).await;
    let now = i64::try_from(w.now()).expect("time");
    let day = 24 * 60 * 60;
    let decided = |status: &'static str, days_ago: i64| {
        let at = now - days_ago * day;
        let row =
            ApprovalRow { status, created_at: at, expires_at: at + 120, decided_at: Some(at) };
        w.insert_approval(&db, row, None)
    };
    let recent = decided("denied", 29).await;
    let old = decided("approved", 31).await;
    let older = decided("expired", 400).await;

    let listed: Vec<Value> =
        w.approvals(&w.admin, "all").await.into_iter().map(|a| a["id"].clone()).collect();
    assert!(listed.contains(&json!(recent)), "an answer from 29 days ago is history: {listed:?}");
    for gone in [old, older] {
        assert!(
            !listed.contains(&json!(gone)),
            "an answer older than 30 days is not listed, though no held call has deleted it yet: \
             {listed:?}"
        );
    }
    w.broker.stop().await;
}

#[tokio::test]
async fn an_approval_whose_broker_went_away_is_expired_and_audited_when_listed() {
    let w = world().await;
    // A held call's row as a broker that stopped mid-hold leaves it: pending, deadline passed.
    let db = common::database(&w.broker).await;
    let now = i64::try_from(w.now()).expect("time");
    // A row for a call that arrived 200 s ago and whose deadline passed 80 s ago.
    let stranded = |status: &'static str, capability: Option<&'static str>| {
        let row =
            ApprovalRow { status, created_at: now - 200, expires_at: now - 80, decided_at: None };
        w.insert_approval(&db, row, capability)
    };
    let id = stranded("pending", None).await;
    // And one approved whose holder went away before it took the capability.
    let approved = stranded("approved", Some("lkc_STRANDEDcapability")).await;
    let mut stream = ApprovalStream::open(&w.broker, &w.admin).await;
    let opening = stream.next().await;
    assert_eq!((&opening["id"], &opening["status"]), (&json!(id), &json!("pending")), "{opening}");
    assert!(
        w.approvals(&w.admin, "pending").await.is_empty(),
        "an approval nobody holds any more is not offered for an answer"
    );
    let ended = stream.next().await;
    assert_eq!(
        (&ended["id"], &ended["status"]),
        (&json!(id), &json!("expired")),
        "a device following the stream hears of the expiry, and drops the call: {ended}"
    );
    let all = w.approvals(&w.admin, "all").await;
    let stranded = all.iter().find(|a| a["id"] == json!(id));
    assert_eq!(stranded.map(|a| &a["status"]), Some(&json!("expired")), "{all:?}");
    let audit = w.audit().await;
    assert!(
        audit.iter().any(|r| r["record"]["kind"] == "approval_expired"
            && r["record"]["approval_id"] == json!(id)
            && r["record"]["reason_code"] == "holder_gone"),
        "its expiry is audited like any other"
    );
    let left: Option<String> =
        sqlx::query_scalar("SELECT capability FROM approvals WHERE workspace_id = $1 AND id = $2")
            .bind(w.admin.workspace.to_string())
            .bind(approved.to_string())
            .fetch_one(&db)
            .await
            .expect("the approved row is kept, as history");
    assert_eq!(left, None, "a capability nobody will take must not stay in the database");
    w.broker.stop().await;
}

/// How many threads of this process are broker serving threads (Linux names them in `/proc`,
/// cut to 15 bytes: `latchkey-serve-`).
#[cfg(target_os = "linux")]
fn serving_threads_running() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("latchkey-serve"))
        .count()
}

#[tokio::test]
async fn a_broker_on_serving_threads_serves_calls_streams_and_answers_and_stops_cleanly() {
    let w = world_serving_on(std::num::NonZeroUsize::new(2)).await;
    #[cfg(target_os = "linux")]
    assert!(serving_threads_running() >= 2, "the broker serves on threads of its own");

    // Many calls at once, over as many connections, spread over both threads.
    let (_, capability) = w.standing_get(&w.admin, "/repos/**", 3600).await;
    let calls =
        (0..32).map(|n| send(w.call("GET", &format!("/repos/acme/r{n}"), Some(&capability))));
    for (status, _, body) in futures_util::future::join_all(calls).await {
        assert_eq!(status, 200, "a call with a standing capability goes through: {body}");
    }
    assert_eq!(w.upstream.count(), 32, "each call reached the upstream once");
    assert!(
        w.upstream.all().iter().all(|r| r
            .headers
            .get("authorization")
            .is_some_and(|v| v.to_str().is_ok_and(|v| v == format!("Bearer {CANARY}")))),
        "each carried the real credential, whichever thread decrypted it"
    );

    // A held call, the member's stream and the answer: three connections that may each be
    // served by a different thread, meeting in the broker's shared state.
    let mut stream = approval_stream(&w, &w.admin).await;
    let held = w.call_in_background("GET", "/user");
    let event = stream.next().await;
    assert_eq!(event["status"], "pending", "the stream hears of the held call: {event}");
    let id = event["id"].as_str().expect("approval id").to_owned();
    let cap = w.once(&w.admin, Method::Get, "/user");
    let (status, body) =
        w.answer(&w.admin, &id, json!({"decision": "approve", "capability": cap})).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = held.await.expect("the held call ends");
    assert_eq!(status, 200, "the approved call went on: {body}");
    assert_eq!(w.upstream.count(), 33);

    let (status, body) =
        TestBroker::send(w.broker.signed(&w.admin, "GET", "/v1/audit/verify", None)).await;
    assert_eq!((status, &body["ok"]), (200, &json!(true)), "the chain verifies: {body}");

    w.broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Refresh leases on the call path
// ---------------------------------------------------------------------------------------------

const DEVICE_REFRESHED: &str = "gho_CANARYdeviceREFRESHEDaccess4242";

/// An OAuth credential `gh-oauth` whose access token (`CANARY`) expires at `expires_at`,
/// refreshed at `{upstream}/oauth/{endpoint}`.
async fn oauth_credential(w: &World, expires_at: u64, endpoint: &str) -> CredentialId {
    let payload = oauth_payload(w, CANARY, expires_at, endpoint);
    create_credential(&w.broker, &w.admin, "gh-oauth", &w.upstream_base, &payload, Owner::Shared)
        .await
}

fn oauth_payload(w: &World, access: &str, expires_at: u64, endpoint: &str) -> CredentialPayload {
    CredentialPayload {
        kind: CredentialKind::OAuth {
            expires_at: Some(expires_at),
            refresh: Some(OAuthRefresh {
                refresh_token: SecretBytes::copy_from(REFRESH_CANARY.as_bytes()),
                token_endpoint: format!("{}/oauth/{endpoint}", w.upstream_base),
                client_id: "latchkey-test".into(),
                client_secret: None,
            }),
        },
        injection: Injection::bearer(),
        secret: SecretBytes::copy_from(access.as_bytes()),
    }
}

/// The agent calls `GET /p/gh-oauth/user` with a fresh single-use capability.
async fn call_oauth(w: &World, id: CredentialId) -> (u16, HeaderMap, String) {
    let cap = w.capability_for(&w.admin, w.agent, id, Owner::Shared, &w.single_use());
    send(
        w.broker
            .http
            .get(w.broker.url("/p/gh-oauth/user"))
            .bearer_auth(&w.token)
            .header("latchkey-capability", cap),
    )
    .await
}

/// How many refresh requests reached the token endpoints.
fn token_requests(w: &World) -> usize {
    w.upstream
        .received
        .lock()
        .expect("lock")
        .iter()
        .filter(|r| r.path.starts_with("/oauth/"))
        .count()
}

fn authorization_of_last_call(w: &World) -> String {
    let calls = w.upstream.received.lock().expect("lock").clone();
    let call =
        calls.iter().rev().find(|r| r.path == "/user").expect("the call reached the upstream");
    call.headers["authorization"].to_str().expect("text").to_owned()
}

async fn device_takes_lease(w: &World, device: &TestDevice, id: CredentialId) -> (u16, Value) {
    TestBroker::send(w.broker.signed(
        device,
        "POST",
        &format!("/v1/credentials/{id}/refresh-lease"),
        None,
    ))
    .await
}

async fn stored(w: &World, id: CredentialId) -> (u64, String, CredentialPayload) {
    let (status, answer) = TestBroker::send(w.broker.signed(
        &w.admin,
        "GET",
        &format!("/v1/credentials/{id}/envelope"),
        None,
    ))
    .await;
    assert_eq!(status, 200, "{answer}");
    let (_, info) =
        TestBroker::send(w.broker.signed(&w.admin, "GET", &format!("/v1/credentials/{id}"), None))
            .await;
    let envelope = Envelope::parse(&base64_decode(answer["envelope"].as_str().expect("envelope")))
        .expect("framing");
    let key = w.admin.workspace_key.as_ref().expect("wk").record_key(id).expect("key");
    let payload =
        CredentialPayload::decode(envelope.open(&key).expect("opens").expose_secret()).unwrap();
    (
        answer["revision"].as_u64().expect("revision"),
        info["status"].as_str().expect("status").to_owned(),
        payload,
    )
}

/// The device stores `payload` as its refresh, naming `lease`.
async fn device_stores(
    w: &World,
    id: CredentialId,
    revision: u64,
    lease: &str,
    payload: &CredentialPayload,
) -> (u16, Value) {
    let key = w.admin.workspace_key.as_ref().expect("wk").record_key(id).expect("key");
    let envelope = Envelope::seal(&key, &payload.encode().expect("encode")).expect("seal");
    let body = json!({
        "revision": revision,
        "name": "gh-oauth",
        "provider": "github",
        "upstream_base_url": w.upstream_base,
        "allowed_hosts": [w.upstream_base.trim_start_matches("http://")],
        "scopes": ["repo"],
        "key_version": 1,
        "envelope": b64(envelope.as_bytes()),
        "lease": lease,
    });
    TestBroker::send(w.broker.signed(
        &w.admin,
        "PUT",
        &format!("/v1/credentials/{id}"),
        Some(&body),
    ))
    .await
}

#[tokio::test]
async fn while_a_device_refreshes_the_proxy_uses_the_token_in_hand_if_it_has_not_expired() {
    let w = world().await;
    // Inside the 5-minute margin, so due for a refresh, but still valid for a minute.
    let id = oauth_credential(&w, w.now() + 60, "token").await;
    let (status, lease) = device_takes_lease(&w, &w.admin, id).await;
    assert_eq!(status, 200, "{lease}");

    let (status, _, body) = call_oauth(&w, id).await;
    assert_eq!(status, 200, "the call goes through at once: {body}");
    assert_eq!(token_requests(&w), 0, "the broker did not present the refresh token as well");
    assert_eq!(
        authorization_of_last_call(&w),
        format!("Bearer {CANARY}"),
        "the still-valid token in hand was used"
    );
    let (revision, _, _) = stored(&w, id).await;
    assert_eq!(revision, 1, "nothing was stored");
    let (status, answer) = TestBroker::send(w.broker.signed(
        &w.admin,
        "DELETE",
        &format!("/v1/credentials/{id}/refresh-lease/{}", lease["lease"].as_str().unwrap()),
        None,
    ))
    .await;
    assert_eq!(status, 204, "the device's lease was left alone: {answer}");
    w.broker.stop().await;
}

#[tokio::test]
async fn an_expired_token_waits_for_the_lease_holders_refresh_and_uses_its_result() {
    let w = world().await;
    let id = oauth_credential(&w, w.now() - 10, "token").await;
    let (status, lease) = device_takes_lease(&w, &w.admin, id).await;
    assert_eq!(status, 200, "{lease}");
    let lease = lease["lease"].as_str().unwrap().to_owned();

    let call = call_oauth(&w, id);
    let device = async {
        tokio::time::sleep(std::time::Duration::from_millis(800)).await;
        let fresh = oauth_payload(&w, DEVICE_REFRESHED, w.now() + 3600, "token");
        device_stores(&w, id, 1, &lease, &fresh).await
    };
    let ((status, _, body), (stored_status, answer)) = tokio::join!(call, device);
    assert_eq!(stored_status, 200, "the device stored its refresh: {answer}");
    assert_eq!(status, 200, "the waiting call went through: {body}");
    assert_eq!(
        authorization_of_last_call(&w),
        format!("Bearer {DEVICE_REFRESHED}"),
        "the call used the device's refreshed token"
    );
    assert_eq!(token_requests(&w), 0, "exactly one refresh: the device's (not seen here)");
    w.broker.stop().await;
}

#[tokio::test]
async fn an_expired_token_whose_refresh_does_not_come_answers_a_retryable_503() {
    let w = world().await;
    let id = oauth_credential(&w, w.now() - 10, "token").await;
    let (status, lease) = device_takes_lease(&w, &w.admin, id).await;
    assert_eq!(status, 200, "{lease}");

    let started = std::time::Instant::now();
    let (status, headers, body) = call_oauth(&w, id).await;
    assert_eq!((status, code(&body).as_str()), (503, "unavailable"), "{body}");
    assert!(body.contains("being refreshed elsewhere"), "the message says why: {body}");
    assert_eq!(headers["retry-after"], "2", "and when to retry");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "the wait is bounded: {:?}",
        started.elapsed()
    );
    assert_eq!(token_requests(&w), 0, "the broker never presented the refresh token");
    assert_eq!(w.upstream.received.lock().unwrap().len(), 0, "no call with an expired token");

    // Once the device gives up (its lease given back), the next call refreshes itself.
    let (status, _) = TestBroker::send(w.broker.signed(
        &w.admin,
        "DELETE",
        &format!("/v1/credentials/{id}/refresh-lease/{}", lease["lease"].as_str().unwrap()),
        None,
    ))
    .await;
    assert_eq!(status, 204);
    let (status, _, body) = call_oauth(&w, id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(token_requests(&w), 1, "one refresh, by the broker");
    assert_eq!(authorization_of_last_call(&w), format!("Bearer {REFRESHED}"));
    let (status, again) = device_takes_lease(&w, &w.admin, id).await;
    assert_eq!(status, 200, "the broker gave its lease back with the store: {again}");
    assert_eq!(again["revision"], 2, "and the device sees the stored refresh's revision");
    w.broker.stop().await;
}

#[tokio::test]
async fn the_broker_takes_over_a_lapsed_lease_and_the_late_holder_cannot_overwrite_its_result() {
    let w = world().await;
    let id = oauth_credential(&w, w.now() + 60, "token").await;
    let (status, lease) = device_takes_lease(&w, &w.admin, id).await;
    assert_eq!(status, 200, "{lease}");
    w.broker.clock.advance(120);

    let (status, _, body) = call_oauth(&w, id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(token_requests(&w), 1, "the lapsed lease was taken over and the broker refreshed");
    let (revision, _, payload) = stored(&w, id).await;
    assert_eq!((revision, payload.secret.expose_secret()), (2, REFRESHED.as_bytes()));

    let late = oauth_payload(&w, DEVICE_REFRESHED, w.now() + 3600, "token");
    let (status, answer) = device_stores(&w, id, 1, lease["lease"].as_str().unwrap(), &late).await;
    assert_eq!(
        (status, answer["code"].as_str().unwrap()),
        (409, "conflict"),
        "the late holder's write at the old revision is refused: {answer}"
    );
    let (_, _, payload) = stored(&w, id).await;
    assert_eq!(payload.secret.expose_secret(), REFRESHED.as_bytes(), "the broker's refresh stays");
    w.broker.stop().await;
}

#[tokio::test]
async fn while_the_broker_refreshes_a_device_is_told_refresh_in_progress() {
    let w = world().await;
    let id = oauth_credential(&w, w.now() + 60, "slow").await;
    let call = call_oauth(&w, id);
    let device = async {
        // The broker's refresh takes 1.5 s at the token endpoint.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        device_takes_lease(&w, &w.admin, id).await
    };
    let ((status, _, body), (lease_status, answer)) = tokio::join!(call, device);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (lease_status, answer["code"].as_str().unwrap_or("")),
        (409, "refresh_in_progress"),
        "the broker holds the lease in the database while it refreshes: {answer}"
    );
    assert_eq!(token_requests(&w), 1, "one refresh");
    let (status, lease) = device_takes_lease(&w, &w.admin, id).await;
    assert_eq!((status, lease["revision"].as_u64()), (200, Some(2)), "given back with the store");
    w.broker.stop().await;
}

#[tokio::test]
async fn a_refresh_token_the_provider_refuses_marks_the_credential_reconnect_needed() {
    let w = world().await;
    let id = oauth_credential(&w, w.now() + 60, "refused").await;
    let (status, _, body) = call_oauth(&w, id).await;
    assert_eq!((status, code(&body).as_str()), (502, "upstream_failed"), "{body}");
    assert!(body.contains("reconnect"), "the agent is told what is wrong: {body}");
    let (revision, status, _) = stored(&w, id).await;
    assert_eq!(
        (revision, status.as_str()),
        (2, "reconnect_needed"),
        "never silently broken: the credential says it needs reconnecting"
    );
    let (status, answer) = device_takes_lease(&w, &w.admin, id).await;
    assert_eq!(status, 200, "the broker gave its lease back: {answer}");
    w.broker.stop().await;
}

#[tokio::test]
async fn a_percent_encoded_path_is_read_as_the_upstream_reads_it_so_policies_see_through_it() {
    let w = world().await;
    let policy = json!({
        "source": "@id(\"no-members\")\nforbid (principal, action, resource) when { context.path like \"/orgs/*/members*\" };",
        "description": "agents never list an organisation's members",
    });
    let (status, body) = TestBroker::send(w.broker.signed(
        &w.admin,
        "PUT",
        "/v1/policies/no-members",
        Some(&policy),
    ))
    .await;
    assert!(status == 200 || status == 201, "policy accepted: {body}");
    let (_, cap) = w.standing_get(&w.admin, "/**", 3600).await;
    for disguised in ["/orgs/acme/%6Dembers", "/orgs/acme/%6dembers", "/orgs/%61cme/members"] {
        let (status, _, body) = send(w.call("GET", disguised, Some(&cap))).await;
        assert_eq!(
            (status, code(&body).as_str()),
            (403, "policy_denied"),
            "{disguised} is /orgs/acme/members to the upstream, so the forbid rule must see it: {body}"
        );
    }
    assert_eq!(w.upstream.count(), 0, "no disguised call reached the upstream");

    let (status, _, body) = send(w.call("GET", "/repos/%61cme/caf%c3%a9", Some(&cap))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        w.upstream.last().path,
        "/repos/acme/caf%C3%A9",
        "the upstream receives the path in the form the checks read"
    );
    let (status, _, body) = send(w.call("GET", "/repos/%zz", Some(&cap))).await;
    assert_eq!((status, code(&body).as_str()), (400, "bad_request"), "{body}");
    assert!(body.contains("%25"), "the agent is told how to send a literal %: {body}");
    assert_eq!(w.upstream.count(), 1, "a malformed escape never reaches the upstream");
    w.broker.stop().await;
}

#[tokio::test]
async fn a_capability_naming_a_standing_grant_may_allow_no_more_than_the_grant_registered() {
    let w = world().await;
    let (grant, registered) = w.standing_get(&w.admin, "/repos/**", 3600).await;
    assert_eq!(send(w.call("GET", "/repos/a", Some(&registered))).await.0, 200, "as registered");
    let terms = Grant {
        methods: &[Method::Get],
        paths: &["/repos/**"],
        reuse: Reuse::Standing { grant },
        not_before: w.now() - 5,
        expires: w.now() + 3600,
    };
    let other = insert_member(&w.broker, &w.admin, "admin").await;
    let wider: [(&str, Grant<'_>, &TestDevice); 4] = [
        ("more methods", Grant { methods: &[Method::Get, Method::Delete], ..terms }, &w.admin),
        ("more paths", Grant { paths: &["/repos/**", "/orgs/**"], ..terms }, &w.admin),
        ("a later expiry", Grant { expires: w.now() + 7200, ..terms }, &w.admin),
        ("another issuer", terms, &other),
    ];
    for (what, terms, issuer) in wider {
        let cap = w.capability_for(issuer, w.agent, w.credential, Owner::Shared, &terms);
        let (status, _, body) = send(w.call("GET", "/repos/a", Some(&cap))).await;
        assert_eq!(
            (status, code(&body).as_str()),
            (403, "capability_invalid"),
            "{what}: members see and revoke the grant as registered, so a capability naming it \
             must not allow more: {body}"
        );
        assert!(body.contains("standing grant registered"), "{what}: says why: {body}");
    }
    assert_eq!(w.upstream.count(), 1, "no widened capability reached the upstream");
    w.broker.stop().await;
}

#[tokio::test]
async fn a_call_held_for_approval_is_refused_when_its_agent_or_credential_goes_meanwhile() {
    for (what, method, path, body, status, code_expected, says) in revocations() {
        let w = world().await;
        let mut stream = approval_stream(&w, &w.admin).await;
        let held = w.call_in_background("GET", "/repos/acme/widgets");
        let event = stream.next().await;
        let id = event["id"].as_str().expect("approval id").to_owned();
        let (changed, answer) =
            TestBroker::send(w.broker.signed(&w.admin, method, &path(&w), body.as_ref())).await;
        assert!((200..300).contains(&changed), "{what}: the change itself failed: {answer}");
        let cap = w.once(&w.admin, Method::Get, "/repos/acme/widgets");
        let (answered, answer) =
            w.answer(&w.admin, &id, json!({"decision": "approve", "capability": cap})).await;
        assert_eq!(answered, 200, "{what}: the approval itself is taken: {answer}");
        let (got, _, body) = held.await.expect("the agent's call ends");
        assert_eq!(
            (got, code(&body).as_str()),
            (status, code_expected),
            "{what} while the call waited: an approval given afterwards must not revive it: {body}"
        );
        assert!(body.contains(says), "{what}: the agent is told why ({says:?}): {body}");
        assert_eq!(w.upstream.count(), 0, "{what}: nothing reached the upstream");
        w.broker.stop().await;
    }
}

#[tokio::test]
async fn a_forwarded_call_that_fails_upstream_is_one_allowed_attempt_and_its_outcome() {
    let w = world().await;
    let broken = create_credential(
        &w.broker,
        &w.admin,
        "broken",
        "http://127.0.0.1:9",
        &api_key(CANARY),
        Owner::Shared,
    )
    .await;
    let cap = w.capability_for(&w.admin, w.agent, broken, Owner::Shared, &w.single_use());
    let (status, _, body) = send(
        w.broker
            .http
            .get(w.broker.url("/p/broken/user"))
            .bearer_auth(&w.token)
            .header("latchkey-capability", cap),
    )
    .await;
    assert_eq!((status, code(&body).as_str()), (502, "upstream_failed"), "{body}");
    let mut records = Vec::new();
    for _ in 0..100 {
        records = w.audit().await;
        if records.iter().any(|r| r["record"]["kind"] == "proxy_outcome") {
            break;
        }
        // The outcome record is deferred: the next write carries it.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let _ = send(w.call("GET", "/nudge", None).header("prefer", "wait=0")).await;
    }
    let about_broken: Vec<(String, String)> = records
        .iter()
        .filter(|r| r["record"]["credential_name"] == "broken")
        .filter(|r| r["record"]["kind"].as_str().is_some_and(|k| k.starts_with("proxy_")))
        .map(|r| {
            let kind = r["record"]["kind"].as_str().unwrap_or_default().to_owned();
            (kind, r["record"]["decision"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    assert_eq!(
        about_broken,
        [
            ("proxy_attempt".to_owned(), "allowed".to_owned()),
            ("proxy_outcome".to_owned(), "allowed".to_owned())
        ],
        "the call was made: one allowed attempt and its outcome (carrying the failure), never a \
         second, denied attempt that did not happen"
    );
    w.broker.stop().await;
}

#[tokio::test]
async fn an_agent_may_have_only_so_many_calls_waiting_for_approval() {
    let w = world().await;
    let max = latchkey_server::approvals::MAX_HELD_PER_AGENT;
    let mut stream = approval_stream(&w, &w.admin).await;
    let held: Vec<_> = (0..max).map(|i| w.call_in_background("GET", &format!("/n/{i}"))).collect();
    for _ in 0..max {
        assert_eq!(stream.next().await["status"], "pending", "each held call is announced");
    }
    let (status, _, body) = send(w.call("GET", "/one-more", None)).await;
    assert_eq!(
        (status, code(&body).as_str()),
        (429, "too_many_waiting"),
        "past {max} waiting calls an agent is refused at once, so it cannot bury the members' \
         queue: {body}"
    );
    assert!(body.contains("wait for their answers"), "the agent is told what to do: {body}");
    assert_eq!(w.approvals(&w.admin, "pending").await.len(), max, "the refused call asks no one");
    assert!(
        w.audit().await.iter().any(|r| r["record"]["reason_code"] == "too_many_waiting"),
        "the refusal is audited"
    );
    // Once one is answered, the agent may ask again.
    let first = w.approvals(&w.admin, "pending").await[0]["id"].as_str().expect("id").to_owned();
    let (answered, answer) = w.answer(&w.admin, &first, json!({"decision": "deny"})).await;
    assert_eq!(answered, 200, "{answer}");
    let mut again = None;
    for _ in 0..50 {
        let next = w.call_in_background("GET", "/again");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if !next.is_finished() {
            again = Some(next);
            break;
        }
    }
    assert!(again.is_some(), "after an answer, a new call is held again, not refused");
    w.broker.stop().await;
    for call in held {
        let _ = call.await;
    }
}

#[tokio::test]
async fn a_capability_sealed_to_another_broker_an_unknown_method_and_two_tokens_are_refused() {
    let w = world().await;
    let elsewhere = latchkey_core::keys::BrokerSecretKey::generate().expect("key").public_key();
    let cap = w.capability_sealed_to(
        &elsewhere,
        &w.admin,
        w.agent,
        w.credential,
        Owner::Shared,
        &w.single_use(),
    );
    let (status, _, body) = send(w.call("GET", "/user", Some(&cap))).await;
    assert_eq!((status, code(&body).as_str()), (403, "capability_invalid"), "{body}");
    assert!(body.contains("not sealed to this broker's key"), "says why and what to do: {body}");

    let cap = w.capability(&w.single_use());
    let (status, _, body) = send(w.call("TRACE", "/user", Some(&cap))).await;
    assert_eq!((status, code(&body).as_str()), (405, "method_not_allowed"), "{body}");
    assert!(body.contains("GET, HEAD, POST"), "the agent is told which methods work: {body}");

    let (_, other_token) = create_agent(&w.broker, &w.admin, "other-bot").await;
    let cap = w.capability(&w.single_use());
    let (status, _, body) =
        send(w.call("GET", "/user", Some(&cap)).header("x-api-key", &other_token)).await;
    assert_eq!(
        (status, code(&body).as_str()),
        (400, "bad_request"),
        "two agent tokens in one call are ambiguous, so neither is used: {body}"
    );
    assert_eq!(w.upstream.count(), 0, "no refused call reached the upstream");
    w.broker.stop().await;
}

#[tokio::test]
async fn a_member_sees_why_her_agent_waits_on_an_admin_but_cannot_answer_for_a_shared_credential() {
    let w = world().await;
    let mia = insert_member(&w.broker, &w.admin, "member").await;
    let (_, token) = create_agent(&w.broker, &mia, "mia-bot").await;
    let mut mias_stream = approval_stream(&w, &mia).await;
    let request = w.broker.http.get(w.broker.url("/p/github/user")).bearer_auth(&token);
    let held = tokio::spawn(send(request));

    let seen = mias_stream.next().await;
    assert_eq!(
        (seen["status"].as_str(), seen["answerable"].as_bool()),
        (Some("pending"), Some(false)),
        "Mia's devices hear that her agent waits, and that it is not hers to answer: {seen}"
    );
    let id = seen["id"].as_str().expect("id").to_owned();
    let listed = w.approvals(&mia, "pending").await;
    assert_eq!(listed.len(), 1, "listed for her too: {listed:?}");
    assert_eq!(listed[0]["answerable"], false);
    let for_admin = w.approvals(&w.admin, "pending").await;
    assert_eq!(for_admin[0]["answerable"], true, "the admin answers a shared credential's call");

    let cap = w.once(&mia, Method::Get, "/user");
    let (status, body) =
        w.answer(&mia, &id, json!({"decision": "approve", "capability": cap})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("not_found")),
        "seeing a call is not answering it: {body}"
    );
    let (status, _) = w.answer(&w.admin, &id, json!({"decision": "deny"})).await;
    assert_eq!(status, 200);
    assert_eq!(held.await.expect("call ends").0, 403, "the admin's answer decides");
    let resolved = mias_stream.next().await;
    assert_eq!(resolved["status"], "denied", "and Mia hears how it ended: {resolved}");
    w.broker.stop().await;
}
