//! Nothing secret leaks: a whole story runs against a broker whose logs are captured as JSON at
//! TRACE level (every crate, `log` records included), and then the captured logs, every response
//! the test received (status line, headers, body), the metrics, the SQLite database with its
//! `-wal` and `-shm` files (on PostgreSQL: every table's contents), and the broker key file are
//! searched for every secret the story handled: the API key, the OAuth access and refresh
//! tokens (before and after a refresh), the agent token, every capability, every record key,
//! the workspace and member keys, and the workspace creation token (the broker's, read from its
//! token file, and a wrong one a creation was refused with) (raw, hex, base64 and base64url).
//!
//! The scan is checked against positive controls so that it cannot pass by looking in the wrong
//! place: the envelope bytes the device uploaded are found in the database files, the agent token
//! is found in the one response that hands it out, and the log capture holds TRACE lines and the
//! request log.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions; a panic is the failure report"
)]

use crate::common;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use common::{LogCapture, TestBroker, TestDevice, b64};
use latchkey_core::capability::{Capability, Claims, Method, MethodSet, PathPattern, Reuse};
use latchkey_core::envelope::Envelope;
use latchkey_core::ids::{AgentId, CredentialId, KeyVersion, Owner, WorkspaceId};
use latchkey_core::keys::{BrokerPublicKey, WorkspaceKey};
use latchkey_core::payload::{CredentialKind, CredentialPayload, Injection, OAuthRefresh};
use latchkey_core::secret::{Key32, SecretBytes};
use latchkey_server::config::{Config, Flags};
use latchkey_server::{Broker, Metrics};
use serde_json::{Value, json};

const API_KEY: &str = "ghp_LEAKCANARYapiKEY0123456789abcdef";
const ACCESS_TOKEN: &str = "gho_LEAKCANARYaccessTOKEN0123456789";
const REFRESH_TOKEN: &str = "ghr_LEAKCANARYrefreshTOKEN012345678";
const REFRESHED_ACCESS: &str = "gho_LEAKCANARYrefreshedACCESS987654";
const ROTATED_REFRESH: &str = "ghr_LEAKCANARYrotatedREFRESH9876543";
const CREATION_TOKEN: &str = "lkct_LEAKCANARYcreationTOKEN0123456789abcd";
const WRONG_CREATION_TOKEN: &str = "lkct_LEAKCANARYwrongCREATIONtoken98765432";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_a_log_line_a_response_the_database_or_the_key_file() {
    let logs = LogCapture::default();
    // Global, not thread-local: the SQLite connections run on their own threads, and their logs
    // must be captured too. This binary has only this test.
    tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_current_span(true)
        .with_span_list(true)
        .with_writer(logs.clone())
        .try_init()
        .expect("this test installs the only log subscriber of its binary");

    check_record_key_derivation_against_the_protocol_example();

    let upstream = Upstream::default();
    let upstream_base = upstream.clone().start().await;
    let metrics = Metrics::new();
    let metrics_base = common::serve_metrics(metrics.clone()).await;
    // The creation token as an operator keeps it: a private file, outside the data directory
    // (whose every file is scanned below).
    let token_dir = tempfile::tempdir().expect("temp dir");
    let token_file = token_dir.path().join("creation-token");
    std::fs::write(&token_file, format!("{CREATION_TOKEN}\n")).expect("token file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let broker = TestBroker::start_with(|store, clock, dir| {
        // The broker key as the binary keeps it: a file in the data directory; the creation
        // token read from its file, as the binary reads it.
        let flags = Flags {
            data_dir: Some(dir.to_owned()),
            creation_token_file: Some(token_file),
            ..Flags::default()
        };
        let config = Config::resolve(flags, |_| None).expect("config");
        let key = latchkey_server::config::load_broker_key(&config, |_| None).expect("key file");
        let creation = config.workspace_creation().expect("creation token file");
        Broker::new(store, key)
            .with_clock(clock)
            .with_metrics(metrics)
            .with_workspace_creation(creation)
    })
    .await;
    let mut story = Story::new(broker, upstream_base.clone());

    // --- Set-up: a workspace, an agent, an API-key credential and an OAuth credential. -------
    let mut admin = TestDevice::new(WorkspaceId::random());
    let mut body = admin.create_workspace_body("Acme");
    let (status, refused) =
        story.send(story.broker.signed(&admin, "POST", "/v1/workspaces", Some(&body))).await;
    assert_eq!(refused["code"], "creation_token_required", "{status} {refused}");
    body["creation_token"] = json!(WRONG_CREATION_TOKEN);
    let (status, refused) =
        story.send(story.broker.signed(&admin, "POST", "/v1/workspaces", Some(&body))).await;
    assert_eq!(refused["code"], "creation_token_invalid", "{status} {refused}");
    body["creation_token"] = json!(CREATION_TOKEN);
    let (status, body) =
        story.send(story.broker.signed(&admin, "POST", "/v1/workspaces", Some(&body))).await;
    assert_eq!(status, 201, "workspace: {body}");
    let (status, body) =
        story.send(story.broker.http.get(story.broker.url("/v1/broker-key"))).await;
    assert_eq!(status, 200, "{body}");
    story.broker_key = Some(BrokerPublicKey::from_bytes(
        base64url(body["public_key"].as_str().unwrap()).try_into().expect("32 bytes"),
    ));

    let (status, body) = story
        .send(story.broker.signed(&admin, "POST", "/v1/agents", Some(&json!({"name": "ci-bot"}))))
        .await;
    assert_eq!(status, 201, "agent: {body}");
    let token_response = story.responses.len() - 1;
    let agent: AgentId = serde_json::from_value(body["id"].clone()).unwrap();
    let token = body["token"].as_str().unwrap().to_owned();

    let api_key = CredentialPayload {
        kind: CredentialKind::ApiKey,
        injection: Injection::bearer(),
        secret: SecretBytes::copy_from(API_KEY.as_bytes()),
    };
    let (github, github_envelope) = story.create_credential(&admin, "github", &api_key).await;
    let oauth = CredentialPayload {
        kind: CredentialKind::OAuth {
            expires_at: Some(story.now() + 60),
            refresh: Some(OAuthRefresh {
                refresh_token: SecretBytes::copy_from(REFRESH_TOKEN.as_bytes()),
                token_endpoint: format!("{upstream_base}/oauth/token"),
                client_id: "latchkey-test".into(),
                client_secret: None,
            }),
        },
        injection: Injection::bearer(),
        secret: SecretBytes::copy_from(ACCESS_TOKEN.as_bytes()),
    };
    let (gmail, _) = story.create_credential(&admin, "gmail", &oauth).await;

    // --- Calls that succeed. ------------------------------------------------------------------
    let cap = story.capability(&admin, agent, github);
    let (status, body) = story
        .send(
            story
                .agent_call("GET", "/p/github/repos/acme/widgets?per_page=5", &token)
                .header("latchkey-capability", &cap),
        )
        .await;
    assert_eq!(status, 200, "an allowed call: {body}");
    let cap = story.capability(&admin, agent, github);
    let (status, body) = story
        .send(story.agent_call("GET", "/p/github/echo", &token).header("latchkey-capability", &cap))
        .await;
    assert_eq!(status, 200, "the echoing upstream: {body}");
    assert_eq!(
        upstream.last_authorization(),
        format!("Bearer {API_KEY}"),
        "the upstream received the real credential, so its echo had something to leak"
    );
    let cap = story.capability(&admin, agent, github);
    let (status, body) = story
        .send(
            story
                .agent_call(
                    "POST",
                    "/p/github/repos/acme/widgets/issues",
                    &format!("{token}.{cap}"),
                )
                .json(&json!({"title": "capability appended to the token"})),
        )
        .await;
    assert_eq!(status, 200, "a POST with the capability after the token: {body}");
    let cap = story.capability(&admin, agent, gmail);
    let (status, body) = story
        .send(story.agent_call("GET", "/p/gmail/echo", &token).header("latchkey-capability", &cap))
        .await;
    assert_eq!(status, 200, "an OAuth call that refreshes first: {body}");
    assert_eq!(
        upstream.last_authorization(),
        format!("Bearer {REFRESHED_ACCESS}"),
        "the token was refreshed before the call"
    );

    // --- Calls that are refused. --------------------------------------------------------------
    let (status, body) = story
        .send(story.agent_call("GET", "/p/github/echo", &token).header("latchkey-capability", &cap))
        .await;
    assert_eq!((status, body["code"].as_str()), (403, Some("capability_invalid")), "{body}");
    let (status, body) = story
        .send(story.agent_call("GET", "/p/github/user", &token).header("prefer", "wait=0"))
        .await;
    assert_eq!(status, 428, "no capability, and the agent would not wait: {body}");
    let cap = story.capability(&admin, agent, github);
    let (status, body) = story
        .send(
            story
                .agent_call("DELETE", "/p/github/repos/acme", &token)
                .header("latchkey-capability", &cap),
        )
        .await;
    assert_eq!(status, 403, "a method the capability does not allow: {body}");
    // One character changed (never to itself: a token may already end in `x`).
    let last = if token.ends_with('x') { 'y' } else { 'x' };
    let forged = format!("{}{last}", &token[..token.len() - 1]);
    let (status, body) = story.send(story.agent_call("GET", "/p/github/user", &forged)).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unknown_token")), "{body}");
    let (status, body) = story
        .send(
            story
                .agent_call("GET", &format!("/p/github/search?key={API_KEY}"), &token)
                .header("latchkey-capability", "not-a-capability"),
        )
        .await;
    assert_eq!(status, 403, "a malformed capability, with the key in the query: {body}");

    // --- Device reads. ------------------------------------------------------------------------
    for path in [
        "/v1/credentials".to_owned(),
        format!("/v1/credentials/{github}/envelope"),
        "/v1/audit?limit=1000".to_owned(),
        "/v1/audit/export?format=csv".to_owned(),
        "/v1/audit/verify".to_owned(),
        "/v1/agents".to_owned(),
    ] {
        let (status, body) = story.send(story.broker.signed(&admin, "GET", &path, None)).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let scrape = reqwest::get(format!("{metrics_base}/metrics")).await.unwrap();
    let scrape = scrape.text().await.unwrap();
    assert!(
        scrape.contains("latchkey_proxy_requests_total{decision=\"allowed\",code=\"ok\"} 4"),
        "the four forwarded calls are counted: {scrape}"
    );
    assert!(scrape.contains("latchkey_proxy_upstream_seconds_count 4"), "{scrape}");
    assert!(
        scrape.contains("latchkey_proxy_checks_seconds_count 4")
            && scrape.contains("latchkey_proxy_audit_wait_seconds_count 4"),
        "the broker's own share of each forwarded call is measured: {scrape}"
    );
    story.responses.push(Recorded { what: "GET /metrics".into(), bytes: scrape.into_bytes() });

    // --- The scan. ----------------------------------------------------------------------------
    let secrets = story.secrets(&admin, &token);
    let positive = github_envelope;
    let running = story.broker.stored_bytes().await;
    let stopped = story.broker.stop_and_scan().await;
    assert!(
        common::postgres_backend()
            || running.iter().chain(&stopped).any(|(name, _)| name.ends_with("-wal")),
        "the scan saw a write-ahead log: {:?}",
        running.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    assert!(running.iter().any(|(name, _)| name == "broker.key"), "the key file is scanned");

    // Positive controls: the scan finds what is known to be there.
    assert!(
        running.iter().any(|(_, bytes)| contains(bytes, &positive)),
        "control: the uploaded envelope must be found in the running broker's database files"
    );
    assert!(
        stopped.iter().any(|(_, bytes)| contains(bytes, &positive)),
        "control: the uploaded envelope must be found in the stopped broker's database files"
    );
    assert!(
        contains(&story.responses[token_response].bytes, token.as_bytes()),
        "control: the agent token is in the one response that hands it out"
    );
    story.responses.remove(token_response);
    let log_text = logs.text();
    assert!(log_text.contains("\"level\":\"TRACE\""), "control: TRACE lines were captured");
    assert!(
        log_text.contains("latchkey_server::request") && log_text.contains("/p/{*rest}"),
        "control: the request log was captured"
    );

    let mut hits = Vec::new();
    let mut places: Vec<(String, &[u8])> = vec![("the captured logs".into(), log_text.as_bytes())];
    for response in &story.responses {
        places.push((format!("the response to {}", response.what), &response.bytes));
    }
    for (name, bytes) in running.iter() {
        places.push((format!("{name} (running)"), bytes));
    }
    for (name, bytes) in stopped.iter() {
        places.push((format!("{name} (stopped)"), bytes));
    }
    for (place, bytes) in &places {
        for (secret, forms) in &secrets {
            for form in forms {
                if contains(bytes, form) {
                    hits.push(format!("{secret} found in {place}"));
                    break;
                }
            }
        }
    }
    assert!(hits.is_empty(), "secrets leaked:\n  {}", hits.join("\n  "));
    eprintln!(
        "scanned {} places ({} log bytes, {} responses) for {} secrets",
        places.len(),
        log_text.len(),
        story.responses.len(),
        secrets.len()
    );
}

/// The record-key derivation the scan uses reproduces the worked example of docs/protocol.md, so
/// the record keys searched for are the real ones.
fn check_record_key_derivation_against_the_protocol_example() {
    let workspace: WorkspaceId = "6f1c1c2e-4c39-4a8e-9b0e-2d5f0c4a7b11".parse().unwrap();
    let credential: CredentialId = "0d7e2f4a-93b1-4c55-8a1e-6b2c9d3e4f50".parse().unwrap();
    let key = WorkspaceKey::from_parts(workspace, KeyVersion::FIRST, Key32::from_bytes([0x42; 32]));
    assert_eq!(
        hex::encode(record_key(
            key.expose_secret().expose_secret(),
            &key.scope(credential).encode()
        )),
        "c7ea9d0cbecfe37dab7c2df2556a70f9d741cbe67dd244dc0ea754f64d095aed",
        "record key derivation as in docs/protocol.md"
    );
}

/// HKDF-SHA256(no salt, parent key, "latchkey record key v1" || 0x00 || scope).
fn record_key(parent: &[u8; 32], scope: &[u8]) -> [u8; 32] {
    let mut info = b"latchkey record key v1\0".to_vec();
    info.extend_from_slice(scope);
    let mut okm = [0u8; 32];
    hkdf::Hkdf::<sha2::Sha256>::new(None, parent).expand(&info, &mut okm).expect("32 bytes");
    okm
}

/// A secret in every spelling it could be written in.
fn forms(bytes: &[u8]) -> Vec<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    vec![
        bytes.to_vec(),
        hex::encode(bytes).into_bytes(),
        hex::encode_upper(bytes).into_bytes(),
        STANDARD.encode(bytes).into_bytes(),
        STANDARD_NO_PAD.encode(bytes).into_bytes(),
        URL_SAFE_NO_PAD.encode(bytes).into_bytes(),
    ]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn base64url(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).expect("base64url")
}

/// A response as the test received it: status line, headers and body.
struct Recorded {
    what: String,
    bytes: Vec<u8>,
}

struct Story {
    broker: TestBroker,
    upstream_base: String,
    broker_key: Option<BrokerPublicKey>,
    responses: Vec<Recorded>,
    capabilities: Vec<String>,
    credentials: Vec<CredentialId>,
}

impl Story {
    fn new(broker: TestBroker, upstream_base: String) -> Self {
        Self {
            broker,
            upstream_base,
            broker_key: None,
            responses: Vec::new(),
            capabilities: Vec::new(),
            credentials: Vec::new(),
        }
    }

    fn now(&self) -> u64 {
        latchkey_server::clock::Clock::now(&*self.broker.clock)
    }

    /// Sends a request, records everything about the response, returns status and JSON body.
    async fn send(&mut self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let built = request.build().expect("request");
        let what = format!("{} {}", built.method(), built.url().path());
        let response = self.broker.http.execute(built).await.expect("the broker answers");
        let status = response.status().as_u16();
        let mut bytes = format!("{status}\n").into_bytes();
        for (name, value) in response.headers() {
            bytes.extend_from_slice(name.as_str().as_bytes());
            bytes.extend_from_slice(b": ");
            bytes.extend_from_slice(value.as_bytes());
            bytes.push(b'\n');
        }
        let body = response.bytes().await.expect("body");
        bytes.extend_from_slice(&body);
        self.responses.push(Recorded { what, bytes });
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    fn agent_call(&self, method: &str, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.broker.http.request(method.parse().unwrap(), self.broker.url(path)).bearer_auth(token)
    }

    /// A shared credential at the upstream; returns its id and the envelope bytes uploaded.
    async fn create_credential(
        &mut self,
        admin: &TestDevice,
        name: &str,
        payload: &CredentialPayload,
    ) -> (CredentialId, Vec<u8>) {
        let id = CredentialId::random();
        let key = admin.workspace_key.as_ref().unwrap().record_key(id).unwrap();
        let envelope = Envelope::seal(&key, &payload.encode().unwrap()).unwrap();
        let host = self.upstream_base.trim_start_matches("http://").to_owned();
        let body = json!({
            "id": id,
            "name": name,
            "provider": "github",
            "upstream_base_url": self.upstream_base,
            "allowed_hosts": [host],
            "owner": "shared",
            "key_version": 1,
            "envelope": b64(envelope.as_bytes()),
        });
        let (status, response) =
            self.send(self.broker.signed(admin, "POST", "/v1/credentials", Some(&body))).await;
        assert_eq!(status, 201, "credential: {response}");
        self.credentials.push(id);
        (id, envelope.as_bytes().to_vec())
    }

    /// A single-use capability for GET and POST on every path.
    fn capability(
        &mut self,
        issuer: &TestDevice,
        agent: AgentId,
        credential: CredentialId,
    ) -> String {
        let claims = Claims {
            workspace: issuer.workspace,
            agent,
            credential,
            owner: Owner::Shared,
            key_version: KeyVersion::FIRST,
            issuer: issuer.id,
            methods: MethodSet::of(&[Method::Get, Method::Post]).unwrap(),
            paths: vec![PathPattern::parse("/**").unwrap()],
            not_before: self.now() - 5,
            expires: self.now() + 120,
            reuse: Reuse::single_use().unwrap(),
        };
        let key = issuer.workspace_key.as_ref().unwrap().record_key(credential).unwrap();
        let text = Capability::issue(
            claims,
            &key,
            &issuer.keys.signing,
            self.broker_key.as_ref().expect("broker key fetched"),
        )
        .unwrap()
        .encode();
        self.capabilities.push(text.clone());
        text
    }

    /// Every secret of the story, named, in all its spellings.
    fn secrets(&self, admin: &TestDevice, token: &str) -> Vec<(String, Vec<Vec<u8>>)> {
        let mut secrets = Vec::new();
        for (name, value) in [
            ("the API key", API_KEY),
            ("the OAuth access token", ACCESS_TOKEN),
            ("the OAuth refresh token", REFRESH_TOKEN),
            ("the refreshed access token", REFRESHED_ACCESS),
            ("the rotated refresh token", ROTATED_REFRESH),
            ("the workspace creation token", CREATION_TOKEN),
            ("the wrong creation token", WRONG_CREATION_TOKEN),
            ("the agent token", token),
        ] {
            secrets.push((name.to_owned(), forms(value.as_bytes())));
        }
        // What the broker keeps of the creation token: its digest (docs/protocol.md).
        let digest: [u8; 32] = {
            use sha2::Digest as _;
            sha2::Sha256::new()
                .chain_update(b"latchkey creation token v1\0")
                .chain_update(CREATION_TOKEN.as_bytes())
                .finalize()
                .into()
        };
        secrets.push(("the creation token's digest".to_owned(), forms(&digest)));
        // The token's random part alone, in case something logs it without its prefix.
        let random = token.trim_start_matches("lk_");
        secrets.push(("the agent token's body".to_owned(), vec![random.as_bytes().to_vec()]));
        for (i, capability) in self.capabilities.iter().enumerate() {
            secrets.push((format!("capability #{i}"), vec![capability.as_bytes().to_vec()]));
        }
        let wk = admin.workspace_key.as_ref().unwrap();
        let mk = admin.member_key.as_ref().unwrap();
        secrets.push(("the workspace key".to_owned(), forms(wk.expose_secret().expose_secret())));
        secrets.push(("the member key".to_owned(), forms(mk.expose_secret().expose_secret())));
        for id in &self.credentials {
            let key = record_key(wk.expose_secret().expose_secret(), &wk.scope(*id).encode());
            secrets.push((format!("the record key of credential {id}"), forms(&key)));
        }
        secrets
    }
}

/// An upstream that echoes the credential it receives and answers token refreshes.
#[derive(Clone, Default)]
struct Upstream {
    authorizations: Arc<Mutex<Vec<String>>>,
}

impl Upstream {
    async fn start(self) -> String {
        let app = Router::new().fallback(answer).with_state(self);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await.expect("upstream serves") });
        format!("http://{addr}")
    }

    fn last_authorization(&self) -> String {
        self.authorizations.lock().unwrap().last().cloned().unwrap_or_default()
    }
}

async fn answer(State(upstream): State<Upstream>, request: Request) -> Response {
    let auth = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let path = request.uri().path().to_owned();
    if path == "/oauth/token" {
        return axum::Json(json!({
            "access_token": REFRESHED_ACCESS,
            "token_type": "Bearer",
            "expires_in": 3600,
            "refresh_token": ROTATED_REFRESH,
        }))
        .into_response();
    }
    upstream.authorizations.lock().unwrap().push(auth.clone());
    if path == "/echo" {
        // The credential comes back in a header, in the body, and split across the body.
        return (
            [("x-echo", auth.clone())],
            axum::Json(json!({"you_sent": auth, "again": format!("{auth}{auth}")})),
        )
            .into_response();
    }
    axum::Json(json!({"ok": true})).into_response()
}
