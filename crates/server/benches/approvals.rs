//! The approval round trip on loopback, without the human: an agent's call is held, the device
//! hears of it on its event stream, issues a single-use capability for exactly that call and
//! answers, and the held call goes on to the upstream.
//!
//! ```text
//! cargo bench -p latchkey-server --bench approvals            # 200 round trips
//! cargo bench -p latchkey-server --bench approvals -- 1000    # or as many as given
//! ```
//!
//! The peer, measured in the same run against the same broker and upstream, is the same call
//! with a single-use capability the device issued beforehand (what an approval produces). The
//! report prints p50 and p99 of both and the p50 the approval adds, against the target: at most
//! 5 ms. What the device does (reading the event, signing the capability and the answer) is in
//! the round trip; only the member's thinking is not. SQLite unless `LATCHKEY_TEST_BACKEND=postgres`
//! (with `LATCHKEY_TEST_POSTGRES_URL`, as for the tests).

#![allow(
    clippy::print_stdout,
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a benchmark's report goes to stdout; a failed setup is the report"
)]

#[path = "../tests/broker/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{ApprovalStream, TestBroker, TestDevice, b64, workspace_with_admin};
use latchkey_core::capability::{Capability, Claims, Method, MethodSet, PathPattern, Reuse};
use latchkey_core::envelope::Envelope;
use latchkey_core::ids::{AgentId, CredentialId, KeyVersion, Owner};
use latchkey_core::keys::BrokerPublicKey;
use latchkey_core::payload::{CredentialKind, CredentialPayload, Injection};
use latchkey_core::secret::SecretBytes;
use serde_json::json;

/// Target: the approval adds at most this much to a call's p50 (issue: live approvals).
const TARGET_ADDED_P50: Duration = Duration::from_millis(5);

struct Setup {
    broker: TestBroker,
    admin: TestDevice,
    broker_key: BrokerPublicKey,
    agent: AgentId,
    token: String,
    credential: CredentialId,
}

async fn upstream() -> String {
    let app = axum::Router::new().fallback(|| async { "{\"ok\":true}" });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("upstream") });
    base
}

async fn setup() -> Setup {
    // `start_with` installs no log subscriber: the report stays readable. The approving device
    // answers one approval a round on a clock that never moves, so no rate limit: any number of
    // rounds may be asked for.
    let broker = TestBroker::start_with(|store, clock, _| {
        latchkey_server::Broker::new(
            store,
            latchkey_core::keys::BrokerSecretKey::generate().expect("broker key"),
        )
        .with_clock(clock)
        .with_device_rate_limit(None)
    })
    .await;
    let base = upstream().await;
    let admin = workspace_with_admin(&broker).await;
    let (_, body) = TestBroker::send(broker.http.get(broker.url("/v1/broker-key"))).await;
    let key = base64_url(body["public_key"].as_str().expect("public key"));
    let broker_key = BrokerPublicKey::from_bytes(key.try_into().expect("32 bytes"));
    let (status, body) = TestBroker::send(broker.signed(
        &admin,
        "POST",
        "/v1/agents",
        Some(&json!({"name": "bench"})),
    ))
    .await;
    assert_eq!(status, 201, "agent: {body}");
    let agent: AgentId = serde_json::from_value(body["id"].clone()).expect("agent id");
    let token = body["token"].as_str().expect("token").to_owned();
    let credential = CredentialId::random();
    let record_key =
        admin.workspace_key.as_ref().expect("workspace key").record_key(credential).expect("key");
    let payload = CredentialPayload {
        kind: CredentialKind::ApiKey,
        injection: Injection::bearer(),
        secret: SecretBytes::copy_from(b"bench-secret-value"),
    };
    let envelope = Envelope::seal(&record_key, &payload.encode().expect("encode")).expect("seal");
    let body = json!({
        "id": credential, "name": "api", "provider": "github", "upstream_base_url": base,
        "allowed_hosts": [base.trim_start_matches("http://")], "owner": "shared",
        "key_version": 1, "scopes": [], "envelope": b64(envelope.as_bytes()),
    });
    let (status, body) =
        TestBroker::send(broker.signed(&admin, "POST", "/v1/credentials", Some(&body))).await;
    assert_eq!(status, 201, "credential: {body}");
    Setup { broker, admin, broker_key, agent, token, credential }
}

fn base64_url(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).expect("base64url")
}

impl Setup {
    /// What the device does to approve once: a single-use capability for exactly this call.
    fn single_use(&self, path: &str) -> String {
        let now = latchkey_server::clock::Clock::now(&*self.broker.clock);
        let claims = Claims {
            workspace: self.admin.workspace,
            agent: self.agent,
            credential: self.credential,
            owner: Owner::Shared,
            key_version: KeyVersion::FIRST,
            issuer: self.admin.id,
            methods: MethodSet::of(&[Method::Get]).expect("methods"),
            paths: vec![PathPattern::parse(path).expect("pattern")],
            not_before: now - 5,
            expires: now + 120,
            reuse: Reuse::single_use().expect("nonce"),
        };
        let key = self
            .admin
            .workspace_key
            .as_ref()
            .expect("workspace key")
            .record_key(self.credential)
            .expect("record key");
        Capability::issue(claims, &key, &self.admin.keys.signing, &self.broker_key)
            .expect("issue")
            .encode()
    }

    fn call(&self, path: &str) -> reqwest::RequestBuilder {
        self.broker.http.get(self.broker.url(&format!("/p/api{path}"))).bearer_auth(&self.token)
    }
}

/// Answers every approval on `device`'s stream at once, as a device whose member always says
/// yes would.
async fn auto_approver(setup: &Setup) {
    let mut stream = ApprovalStream::open(&setup.broker, &setup.admin).await;
    loop {
        let approval = stream.next().await;
        if approval["status"] != "pending" {
            continue;
        }
        let id = approval["id"].as_str().expect("id");
        let capability = setup.single_use(approval["path"].as_str().expect("path"));
        let answer = json!({"decision": "approve", "capability": capability});
        let (status, body) = TestBroker::send(setup.broker.signed(
            &setup.admin,
            "POST",
            &format!("/v1/approvals/{id}"),
            Some(&answer),
        ))
        .await;
        assert_eq!(status, 200, "answer: {body}");
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn main() {
    // `cargo test --benches` runs every bench target with `--bench`-less arguments: one quick pass.
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if std::env::args().any(|a| a == "--bench") { 200 } else { 5 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let setup = std::sync::Arc::new(setup().await);
        let approver = {
            let setup = std::sync::Arc::clone(&setup);
            tokio::spawn(async move { auto_approver(&setup).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;

        let mut direct = Vec::with_capacity(rounds);
        let mut approved = Vec::with_capacity(rounds);
        for round in 0..rounds + 10 {
            let path = format!("/items/{round}");
            let capability = setup.single_use(&path);
            let started = Instant::now();
            let response = setup
                .call(&path)
                .header("latchkey-capability", capability)
                .send()
                .await
                .expect("direct call");
            assert_eq!(response.status().as_u16(), 200, "a call with a capability goes through");
            let direct_time = started.elapsed();

            let path = format!("/held/{round}");
            let started = Instant::now();
            let response = setup.call(&path).send().await.expect("held call");
            assert_eq!(response.status().as_u16(), 200, "the held call was approved");
            let approved_time = started.elapsed();
            if round >= 10 {
                direct.push(direct_time);
                approved.push(approved_time);
            }
        }
        approver.abort();
        direct.sort_unstable();
        approved.sort_unstable();
        let (d50, a50) = (percentile(&direct, 0.5), percentile(&approved, 0.5));
        let added = a50.saturating_sub(d50);
        println!("approval round trip, {rounds} rounds after 10 warm-up rounds, loopback");
        println!(
            "  call with a capability   p50 {:>8.3} ms   p99 {:>8.3} ms",
            d50.as_secs_f64() * 1e3,
            percentile(&direct, 0.99).as_secs_f64() * 1e3
        );
        println!(
            "  call held and approved   p50 {:>8.3} ms   p99 {:>8.3} ms",
            a50.as_secs_f64() * 1e3,
            percentile(&approved, 0.99).as_secs_f64() * 1e3
        );
        println!(
            "  added by the approval    p50 {:>8.3} ms   target <= {} ms: {}",
            added.as_secs_f64() * 1e3,
            TARGET_ADDED_P50.as_millis(),
            if added <= TARGET_ADDED_P50 { "met" } else { "MISSED" }
        );
    });
}
