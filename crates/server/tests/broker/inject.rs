//! `POST /v1/agents/{id}/inject` end to end over loopback, on SQLite or PostgreSQL: the broker
//! decides and audits whether a device may release a credential into a command's environment,
//! and releases nothing itself. Denied by default; allowed only by a permit naming the `inject`
//! action; every rejection path refused with its own code and audited as `inject_denied`; an
//! allow committed as exactly one `inject_released` record before it is answered.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions; a panic is the failure report"
)]

use crate::common;

use common::agent_calls::{create_agent, create_shared_credential};
use common::{TestBroker, TestDevice, b64, insert_member, workspace_with_admin};
use latchkey_core::envelope::Envelope;
use latchkey_core::ids::{AgentId, CredentialId, WorkspaceId};
use latchkey_core::keys::BrokerSecretKey;
use latchkey_core::payload::{CredentialKind, CredentialPayload, Injection};
use latchkey_core::secret::SecretBytes;
use latchkey_core::token::AgentToken;
use latchkey_server::Broker;
use latchkey_server::audit::{AuditKind, JournalFaults};
use serde_json::{Value, json};

const SECRET: &str = "sk-INJECTcanary0123456789abcdef";
const CREDENTIAL: &str = "openai";
const PERMIT_INJECT: &str = "permit (principal, action == Latchkey::Action::\"inject\", resource) when { context.lifetime <= 3600 };";

/// A broker with one workspace: an admin, a plain member, an agent of the admin and a shared
/// credential.
struct World {
    broker: TestBroker,
    admin: TestDevice,
    member: TestDevice,
    agent: AgentId,
    token: String,
    credential: CredentialId,
}

async fn world() -> World {
    world_on(TestBroker::start().await).await
}

async fn world_on(broker: TestBroker) -> World {
    let admin = workspace_with_admin(&broker).await;
    let member = insert_member(&broker, &admin, "member").await;
    let (agent, token) = create_agent(&broker, &admin, "runner").await;
    let credential =
        create_shared_credential(&broker, &admin, CREDENTIAL, "http://127.0.0.1:9", SECRET).await;
    World { broker, admin, member, agent, token, credential }
}

fn hash_of(token: &str) -> String {
    AgentToken::parse(token).expect("a well-formed token").hash().to_hex()
}

impl World {
    fn body(&self) -> Value {
        json!({
            "token_hash": hash_of(&self.token), "credential": self.credential,
            "lifetime_secs": 600, "command": "python3",
        })
    }

    /// `device` asks to inject `body` for `agent`.
    async fn inject_as(&self, device: &TestDevice, agent: &str, body: &Value) -> (u16, Value) {
        TestBroker::send(self.broker.signed(
            device,
            "POST",
            &format!("/v1/agents/{agent}/inject"),
            Some(body),
        ))
        .await
    }

    async fn inject(&self, body: &Value) -> (u16, Value) {
        self.inject_as(&self.admin, &self.agent.to_string(), body).await
    }

    async fn put_policy(&self, id: &str, source: &str) {
        let (status, body) = TestBroker::send(self.broker.signed(
            &self.admin,
            "PUT",
            &format!("/v1/policies/{id}"),
            Some(&json!({"source": source})),
        ))
        .await;
        assert!(status == 200 || status == 201, "policy {id} must be saved: {body}");
    }

    /// Every record of `device`'s workspace, oldest first.
    async fn audit_of(&self, device: &TestDevice) -> Vec<Value> {
        let (status, body) = TestBroker::send(self.broker.signed(
            device,
            "GET",
            "/v1/audit?order=oldest_first&limit=1000",
            None,
        ))
        .await;
        assert_eq!(status, 200, "audit query: {body}");
        body["records"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|r| r["record"].clone())
            .collect()
    }

    async fn injects(&self) -> (Vec<Value>, Vec<Value>) {
        let audit = self.audit_of(&self.admin).await;
        let of = |kind: &str| audit.iter().filter(|r| r["kind"] == kind).cloned().collect();
        (of("inject_released"), of("inject_denied"))
    }
}

fn assert_refused(status: u16, body: &Value, expected: (u16, &str), why: &str) {
    assert_eq!((status, body["code"].as_str().unwrap_or_default()), expected, "{why}: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "every refusal says what happened and what to do: {body}"
    );
    assert!(!body.to_string().contains(SECRET), "no refusal carries the credential: {body}");
}

#[tokio::test]
async fn an_inject_is_denied_by_default_and_the_denial_is_audited() {
    let w = world().await;
    let (status, body) = w.inject(&w.body()).await;
    assert_refused(status, &body, (403, "policy_denied"), "the default policies permit calls only");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("Latchkey::Action::\"inject\""),
        "the denial says what a permit must name: {message}"
    );
    let (released, denied) = w.injects().await;
    assert!(released.is_empty(), "nothing was released: {released:?}");
    assert_eq!(denied.len(), 1, "one denial, one record: {denied:?}");
    let record = &denied[0];
    assert_eq!(record["decision"], "denied", "{record}");
    assert_eq!(record["reason_code"], "policy_denied", "{record}");
    assert_eq!(record["agent"], json!(w.agent), "names the agent: {record}");
    assert_eq!(record["device"], json!(w.admin.id), "and the asking device: {record}");
    assert_eq!(record["member"], json!(w.admin.member), "and its member: {record}");
    assert_eq!(record["credential_name"], CREDENTIAL, "{record}");
    assert_eq!(record["lifetime_secs"], 600, "{record}");
    assert_eq!(record["command"], "python3", "{record}");
    w.broker.stop().await;
}

#[tokio::test]
async fn a_permit_naming_inject_allows_and_leaves_exactly_one_record_with_its_fields() {
    let w = world().await;
    w.put_policy("short-injects", PERMIT_INJECT).await;
    let seq_before = w.audit_of(&w.admin).await.len();
    let (status, body) = w.inject(&w.body()).await;
    assert_eq!(status, 200, "a permit naming the action allows it: {body}");
    assert_eq!(body["decision"], "allow", "{body}");
    assert_eq!(body["agent"], json!(w.agent), "{body}");
    assert_eq!(body["credential"], json!(w.credential), "{body}");
    assert_eq!(body["credential_name"], CREDENTIAL, "{body}");
    assert_eq!(body["lifetime_secs"], 600, "{body}");
    let now = latchkey_server::clock::Clock::now(&*w.broker.clock);
    assert_eq!(body["expires_at"], now + 600, "the lifetime ends by the broker's clock: {body}");
    assert_eq!(body["policies"], json!(["short-injects"]), "the permit is named: {body}");
    let keys: Vec<&String> = body.as_object().expect("an object").keys().collect();
    assert!(
        !keys.iter().any(|k| k.contains("envelope") || k.contains("key")),
        "no envelope or key crosses the wire: {keys:?}"
    );
    assert!(!body.to_string().contains(SECRET), "and never the credential: {body}");

    let audit = w.audit_of(&w.admin).await;
    let (released, denied) = w.injects().await;
    assert_eq!(released.len(), 1, "exactly one record for the release: {released:?}");
    assert!(denied.is_empty(), "{denied:?}");
    assert_eq!(audit.len(), seq_before + 1, "and nothing else was appended");
    let record = &released[0];
    assert_eq!(body["audit_seq"], record["seq"], "the answer names the committed record");
    for (field, expected) in [
        ("decision", json!("allowed")),
        ("agent", json!(w.agent)),
        ("device", json!(w.admin.id)),
        ("member", json!(w.admin.member)),
        ("credential_name", json!(CREDENTIAL)),
        ("policy_ids", json!(["short-injects"])),
        ("lifetime_secs", json!(600)),
        ("command", json!("python3")),
    ] {
        assert_eq!(record[field], expected, "the record's {field}: {record}");
    }
    assert!(record.get("reason_code").is_none(), "an allow has no reason code: {record}");

    let mut long = w.body();
    long["lifetime_secs"] = json!(7200);
    let (status, body) = w.inject(&long).await;
    assert_refused(status, &body, (403, "policy_denied"), "context.lifetime is the request's");
    w.broker.stop().await;
}

/// A second shared credential, `search`, beside `openai`.
async fn second_credential(w: &World) -> CredentialId {
    create_shared_credential(&w.broker, &w.admin, "search", "http://127.0.0.1:9", SECRET).await
}

fn body_for(w: &World, credentials: &[CredentialId]) -> Value {
    json!({
        "token_hash": hash_of(&w.token), "credentials": credentials,
        "lifetime_secs": 600, "command": "python3",
    })
}

#[tokio::test]
async fn several_credentials_are_released_together_each_with_its_own_record() {
    let w = world().await;
    let search = second_credential(&w).await;
    w.put_policy("short-injects", PERMIT_INJECT).await;
    let before = w.audit_of(&w.admin).await.len();
    let (status, body) = w.inject(&body_for(&w, &[w.credential, search])).await;
    assert_eq!(status, 200, "every credential is permitted: {body}");
    let released = body["released"].as_array().expect("one entry per credential");
    let names: Vec<&str> =
        released.iter().map(|r| r["credential_name"].as_str().unwrap()).collect();
    assert_eq!(names, [CREDENTIAL, "search"], "in the order asked: {body}");
    assert_eq!(body["credential"], json!(w.credential), "the first, as the one-credential form");
    assert_eq!(body["audit_seq"], released[0]["audit_seq"], "{body}");

    let audit = w.audit_of(&w.admin).await;
    assert_eq!(audit.len(), before + 2, "one record per credential, nothing else: {audit:?}");
    let (records, denied) = w.injects().await;
    assert!(denied.is_empty(), "{denied:?}");
    for (entry, record) in released.iter().zip(&records) {
        assert_eq!(entry["audit_seq"], record["seq"], "each answer names its record: {record}");
        assert_eq!(entry["credential_name"], record["credential_name"], "{record}");
        assert_eq!(record["policy_ids"], json!(["short-injects"]), "{record}");
    }
    w.broker.stop().await;
}

#[tokio::test]
async fn one_refused_credential_releases_none_of_those_asked_for_together() {
    let w = world().await;
    let search = second_credential(&w).await;
    w.put_policy(
        "openai-only",
        "permit (principal, action == Latchkey::Action::\"inject\", resource) when { resource.name == \"openai\" };",
    )
    .await;
    let (status, body) = w.inject(&body_for(&w, &[w.credential, search])).await;
    assert_refused(status, &body, (403, "policy_denied"), "search is not permitted");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("\"search\"") && message.contains("nothing was released"),
        "names the refused credential and says the others were not released either: {message}"
    );

    let (released, denied) = w.injects().await;
    assert!(
        released.is_empty(),
        "a command runs with every credential it asked for or not at all, so a permitted one \
         must not be recorded as released when another was refused: {released:?}"
    );
    let reasons: Vec<(&str, &str)> = denied
        .iter()
        .map(|r| (r["credential_name"].as_str().unwrap(), r["reason_code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        reasons,
        [(CREDENTIAL, "another_credential_refused"), ("search", "policy_denied")],
        "each credential asked for is recorded with why it was not released: {denied:?}"
    );
    assert_eq!(denied[0]["policy_ids"], json!(["openai-only"]), "the permit it had: {denied:?}");

    let unknown = CredentialId::random();
    let (status, body) = w.inject(&body_for(&w, &[w.credential, unknown])).await;
    assert_refused(status, &body, (404, "not_found"), "an unknown credential among others");
    let (released, _) = w.injects().await;
    assert!(released.is_empty(), "still nothing released: {released:?}");
    w.broker.stop().await;
}

#[tokio::test]
async fn a_body_names_its_credentials_one_way_and_each_once() {
    let w = world().await;
    w.put_policy("short-injects", PERMIT_INJECT).await;
    let mut both = body_for(&w, &[w.credential]);
    both["credential"] = json!(w.credential);
    let mut neither = w.body();
    neither.as_object_mut().unwrap().remove("credential");
    let too_many: Vec<CredentialId> = (0..33).map(|_| CredentialId::random()).collect();
    for (why, body, expected) in [
        ("both forms", both, (400, "bad_request")),
        ("neither form", neither, (400, "bad_request")),
        ("an empty list", body_for(&w, &[]), (400, "invalid_request")),
        (
            "one credential twice",
            body_for(&w, &[w.credential, w.credential]),
            (400, "invalid_request"),
        ),
        ("over 32", body_for(&w, &too_many), (400, "invalid_request")),
    ] {
        let (status, answer) = w.inject(&body).await;
        assert_refused(status, &answer, expected, why);
    }
    let (status, body) = w.inject(&body_for(&w, &[w.credential])).await;
    assert_eq!(status, 200, "a list of one is the one-credential form: {body}");
    let (released, _) = w.injects().await;
    assert_eq!(released.len(), 1, "{released:?}");
    w.broker.stop().await;
}

#[tokio::test]
async fn call_policies_and_permits_for_any_action_do_not_allow_an_inject() {
    let w = world().await;
    w.put_policy(
        "every-call",
        "permit (principal, action in Latchkey::Action::\"call\", resource);",
    )
    .await;
    let (status, body) = w.inject(&w.body()).await;
    assert_refused(status, &body, (403, "policy_denied"), "a permit of every call is not inject");
    w.put_policy("anything", "permit (principal, action, resource);").await;
    let (status, body) = w.inject(&w.body()).await;
    assert_refused(status, &body, (403, "policy_denied"), "an unscoped permit hands out nothing");
    let (released, denied) = w.injects().await;
    assert!(released.is_empty(), "{released:?}");
    assert_eq!(denied.len(), 2, "both denials audited: {denied:?}");

    // A forbid still wins over the naming permit.
    w.put_policy("short-injects", PERMIT_INJECT).await;
    w.put_policy(
        "no-python",
        "forbid (principal, action == Latchkey::Action::\"inject\", resource) when { context.command == \"python3\" };",
    )
    .await;
    let (status, body) = w.inject(&w.body()).await;
    assert_refused(status, &body, (403, "policy_denied"), "a forbid wins");
    assert!(body["message"].as_str().unwrap_or_default().contains("no-python"), "named: {body}");
    w.broker.stop().await;
}

#[tokio::test]
async fn unknown_mismatched_and_revoked_agents_are_refused_and_audited() {
    let w = world().await;
    w.put_policy("short-injects", PERMIT_INJECT).await;
    let mut unknown = w.body();
    unknown["token_hash"] = json!(hash_of(AgentToken::generate().unwrap().expose_secret()));
    let (status, body) = w.inject(&unknown).await;
    assert_refused(status, &body, (401, "unknown_token"), "a token no agent has");

    let (other, other_token) = create_agent(&w.broker, &w.admin, "other").await;
    let (status, body) = w.inject_as(&w.admin, &other.to_string(), &w.body()).await;
    assert_refused(status, &body, (401, "unknown_token"), "the hash of another agent's token");
    let mut swapped = w.body();
    swapped["token_hash"] = json!(hash_of(&other_token));
    let (status, body) = w.inject(&swapped).await;
    assert_refused(status, &body, (401, "unknown_token"), "this agent with another's token");

    let (status, _) = TestBroker::send(w.broker.signed(
        &w.admin,
        "DELETE",
        &format!("/v1/agents/{}", w.agent),
        None,
    ))
    .await;
    assert_eq!(status, 204, "the agent is revoked");
    let (status, body) = w.inject(&w.body()).await;
    assert_refused(status, &body, (401, "token_revoked"), "a revoked agent");

    let (released, denied) = w.injects().await;
    assert!(released.is_empty(), "{released:?}");
    let reasons: Vec<&str> = denied.iter().map(|r| r["reason_code"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["unknown_token", "unknown_token", "unknown_token", "token_revoked"]);
    assert!(
        denied[..3].iter().all(|r| r.get("agent").is_none()),
        "no unverified agent is recorded"
    );
    assert_eq!(denied[3]["agent"], json!(w.agent), "the revoked agent is named: {denied:?}");
    w.broker.stop().await;
}

#[tokio::test]
async fn an_agent_of_another_workspace_is_unknown() {
    let w = world().await;
    let stranger = workspace_with_admin(&w.broker).await;
    let (their_agent, their_token) = create_agent(&w.broker, &stranger, "theirs").await;
    let mut body = w.body();
    body["token_hash"] = json!(hash_of(&their_token));
    let (status, answer) = w.inject_as(&w.admin, &their_agent.to_string(), &body).await;
    assert_refused(
        status,
        &answer,
        (401, "unknown_token"),
        "another workspace's agent is answered like an unknown one",
    );
    let theirs = w.audit_of(&stranger).await;
    assert!(
        theirs.iter().all(|r| !r["kind"].as_str().unwrap().starts_with("inject")),
        "nothing reaches the other workspace's log: {theirs:?}"
    );
    let (_, denied) = w.injects().await;
    assert_eq!(denied.len(), 1, "the refusal is in the asking workspace's log: {denied:?}");
    w.broker.stop().await;
}

#[tokio::test]
async fn a_paused_workspace_releases_nothing_until_resumed() {
    let w = world().await;
    w.put_policy("short-injects", PERMIT_INJECT).await;
    let pause = |paused: bool| {
        w.broker.signed(&w.member, "PUT", "/v1/workspace/pause", Some(&json!({"paused": paused})))
    };
    assert_eq!(TestBroker::send(pause(true)).await.0, 200, "any member may pause");
    let (status, body) = w.inject(&w.body()).await;
    assert_refused(status, &body, (403, "agents_paused"), "a pause stops releases too");
    assert_eq!(TestBroker::send(pause(false)).await.0, 200, "who paused may resume");
    let (status, body) = w.inject(&w.body()).await;
    assert_eq!(status, 200, "released again once resumed: {body}");
    let (released, denied) = w.injects().await;
    assert_eq!(released.len(), 1, "{released:?}");
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0]["reason_code"], "agents_paused", "{denied:?}");
    w.broker.stop().await;
}

#[tokio::test]
async fn disabled_and_reconnect_needed_credentials_are_refused() {
    let w = world().await;
    w.put_policy("short-injects", PERMIT_INJECT).await;
    for status_name in ["disabled", "reconnect_needed"] {
        let (status, body) = TestBroker::send(w.broker.signed(
            &w.admin,
            "PATCH",
            &format!("/v1/credentials/{}/status", w.credential),
            Some(&json!({"status": status_name})),
        ))
        .await;
        assert_eq!(status, 200, "the admin sets {status_name}: {body}");
        let (status, body) = w.inject(&w.body()).await;
        assert_refused(status, &body, (403, "forbidden"), status_name);
    }
    let (released, denied) = w.injects().await;
    assert!(released.is_empty(), "{released:?}");
    assert_eq!(denied.len(), 2, "{denied:?}");
    assert!(denied.iter().all(|r| r["credential_name"] == CREDENTIAL), "{denied:?}");
    w.broker.stop().await;
}

/// A personal API-key credential of `device`'s member.
async fn personal_credential(broker: &TestBroker, device: &TestDevice, name: &str) -> CredentialId {
    let id = CredentialId::random();
    let payload = CredentialPayload {
        kind: CredentialKind::ApiKey,
        injection: Injection::bearer(),
        secret: SecretBytes::copy_from(SECRET.as_bytes()),
    };
    let key = device.member_key.as_ref().expect("mk").record_key(id).expect("record key");
    let envelope = Envelope::seal(&key, &payload.encode().expect("encode")).expect("seal");
    let body = json!({
        "id": id, "name": name, "provider": "openai", "upstream_base_url": "https://api.openai.com",
        "allowed_hosts": ["api.openai.com"], "owner": "me", "key_version": 1,
        "envelope": b64(envelope.as_bytes()),
    });
    let (status, answer) =
        TestBroker::send(broker.signed(device, "POST", "/v1/credentials", Some(&body))).await;
    assert_eq!(status, 201, "personal credential: {answer}");
    id
}

#[tokio::test]
async fn another_members_personal_credential_is_not_found_and_ones_own_is_released() {
    let w = world().await;
    w.put_policy("short-injects", PERMIT_INJECT).await;
    let admins = personal_credential(&w.broker, &w.admin, "admins-own").await;
    let (members_agent, members_token) = create_agent(&w.broker, &w.member, "members").await;
    let body = json!({
        "token_hash": hash_of(&members_token), "credential": admins,
        "lifetime_secs": 60, "command": "node",
    });
    let (status, answer) = w.inject_as(&w.member, &members_agent.to_string(), &body).await;
    assert_refused(
        status,
        &answer,
        (404, "not_found"),
        "another member's personal credential is answered like a missing one",
    );
    let mut missing = body.clone();
    missing["credential"] = json!(CredentialId::random());
    let (status, answer) = w.inject_as(&w.member, &members_agent.to_string(), &missing).await;
    assert_refused(status, &answer, (404, "not_found"), "a credential that does not exist");

    let own = personal_credential(&w.broker, &w.member, "members-own").await;
    let mut mine = body.clone();
    mine["credential"] = json!(own);
    let (status, answer) = w.inject_as(&w.member, &members_agent.to_string(), &mine).await;
    assert_eq!(status, 200, "one's own personal credential, with a permit: {answer}");

    let (released, denied) = w.injects().await;
    assert_eq!(released.len(), 1, "{released:?}");
    assert_eq!(released[0]["member"], json!(w.member.member), "{released:?}");
    assert_eq!(denied.len(), 2, "{denied:?}");
    assert!(
        denied
            .iter()
            .all(|r| r["reason_code"] == "not_found" && r.get("credential_name").is_none()),
        "a refused lookup records no credential name the caller may not see: {denied:?}"
    );
    w.broker.stop().await;
}

#[tokio::test]
async fn bad_lifetimes_commands_hashes_and_ids_are_refused_with_clear_errors() {
    let w = world().await;
    w.put_policy("short-injects", PERMIT_INJECT).await;
    let with = |field: &str, value: Value| {
        let mut body = w.body();
        body[field] = value;
        body
    };
    for (why, body, expected, words) in [
        (
            "a zero lifetime",
            with("lifetime_secs", json!(0)),
            (400, "invalid_request"),
            "lifetime_secs",
        ),
        (
            "over 24 hours",
            with("lifetime_secs", json!(86_401)),
            (400, "invalid_request"),
            "24 hours",
        ),
        ("an empty command", with("command", json!("")), (400, "invalid_request"), "command"),
        (
            "a path for a command",
            with("command", json!("/usr/bin/python3")),
            (400, "invalid_request"),
            "/",
        ),
        (
            "a control character",
            with("command", json!("py\nthon")),
            (400, "invalid_request"),
            "control",
        ),
        (
            "a long command",
            with("command", json!("x".repeat(129))),
            (400, "invalid_request"),
            "128",
        ),
        ("a malformed hash", with("token_hash", json!("not-hex")), (400, "bad_request"), "64 hex"),
        ("a negative lifetime", with("lifetime_secs", json!(-1)), (400, "bad_request"), "JSON"),
        ("the token itself", with("token", json!(w.token)), (400, "bad_request"), "JSON"),
    ] {
        let (status, answer) = w.inject(&body).await;
        assert_refused(status, &answer, expected, why);
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains(words), "{why}: the message says what is wrong: {message}");
        assert!(!message.contains(&w.token), "{why}: never echoes the token");
    }
    let (status, answer) = w.inject_as(&w.admin, "not-a-uuid", &w.body()).await;
    assert_refused(status, &answer, (400, "bad_request"), "the path's agent id");
    let exactly_a_day = with("lifetime_secs", json!(86_400));
    w.put_policy(
        "day-injects",
        "permit (principal, action == Latchkey::Action::\"inject\", resource);",
    )
    .await;
    assert_eq!(w.inject(&exactly_a_day).await.0, 200, "24 hours exactly is accepted");

    let (_, denied) = w.injects().await;
    let reasons: Vec<&str> = denied.iter().map(|r| r["reason_code"].as_str().unwrap()).collect();
    assert_eq!(
        reasons,
        ["invalid_request"; 6]
            .into_iter()
            .chain(["bad_request", "bad_request"])
            .collect::<Vec<_>>(),
        "every refusal of a signed, well-formed body is audited (malformed JSON is not a request)"
    );
    let invalid = denied.iter().filter(|r| r["command"] == "(invalid)").count();
    assert_eq!(invalid, 4, "an unacceptable command name is not recorded as given: {denied:?}");
    w.broker.stop().await;
}

#[tokio::test]
async fn unsigned_badly_signed_unknown_and_replayed_requests_are_refused() {
    let w = world().await;
    w.put_policy("short-injects", PERMIT_INJECT).await;
    let path = format!("/v1/agents/{}/inject", w.agent);
    let (status, body) =
        TestBroker::send(w.broker.http.post(w.broker.url(&path)).json(&w.body())).await;
    assert_refused(status, &body, (401, "signature_invalid"), "unsigned");

    let mut other = w.body();
    other["lifetime_secs"] = json!(60);
    let tampered = w
        .broker
        .signed(&w.admin, "POST", &path, Some(&w.body()))
        .body(serde_json::to_vec(&other).unwrap());
    let (status, body) = TestBroker::send(tampered).await;
    assert_refused(status, &body, (401, "signature_invalid"), "a body that is not the signed one");

    let stranger = TestDevice::new(WorkspaceId::random());
    let (status, body) =
        TestBroker::send(w.broker.signed(&stranger, "POST", &path, Some(&w.body()))).await;
    assert_refused(status, &body, (401, "unknown_device"), "a device that is not enrolled");

    let request = w.broker.signed(&w.admin, "POST", &path, Some(&w.body()));
    let again = request.try_clone().expect("a clonable request");
    assert_eq!(TestBroker::send(request).await.0, 200, "the first is allowed");
    let (status, body) = TestBroker::send(again).await;
    assert_refused(status, &body, (401, "replayed_request"), "the same signed request again");

    let (released, denied) = w.injects().await;
    assert_eq!(released.len(), 1, "only the one signed request released: {released:?}");
    assert!(denied.is_empty(), "unauthenticated requests belong to no decision: {denied:?}");
    w.broker.stop().await;
}

#[tokio::test]
async fn an_audit_log_that_cannot_record_the_release_releases_nothing() {
    // On SQLite records are committed to the audit journal, whose writes are made to fail; on
    // PostgreSQL to the database, where a trigger refuses them.
    let faults = JournalFaults::default();
    let broker = if common::postgres_backend() {
        TestBroker::start().await
    } else {
        let key = BrokerSecretKey::generate().expect("broker key");
        let faults = faults.clone();
        TestBroker::start_with(move |store, clock, _| {
            Broker::new(store, key).with_clock(clock).with_journal_faults(faults)
        })
        .await
    };
    let w = world_on(broker).await;
    w.put_policy("short-injects", PERMIT_INJECT).await;
    faults.fail_writes_of(AuditKind::InjectReleased);
    let db = common::database(&w.broker).await;
    let statements: &[&str] = if common::postgres_backend() {
        &[
            "CREATE FUNCTION refuse_inject_released() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF NEW.record LIKE '%inject_released%' THEN RAISE EXCEPTION 'audit disk full'; END IF;
               RETURN NEW;
             END $$",
            "CREATE TRIGGER refuse_inject_released BEFORE INSERT ON audit_log
             FOR EACH ROW EXECUTE FUNCTION refuse_inject_released()",
        ]
    } else {
        &[]
    };
    for statement in statements {
        sqlx::raw_sql(sqlx::AssertSqlSafe(*statement)).execute(&db).await.expect("a failing audit");
    }
    db.close().await;
    let (status, body) = w.inject(&w.body()).await;
    assert_refused(status, &body, (503, "unavailable"), "fail closed: no record, no release");
    let (released, denied) = w.injects().await;
    assert!(released.is_empty(), "{released:?}");
    assert_eq!(denied.len(), 1, "the refusal itself is recorded: {denied:?}");
    assert_eq!(denied[0]["reason_code"], "unavailable", "{denied:?}");
    w.broker.stop().await;
}

#[tokio::test]
async fn the_policy_tester_decides_an_inject_as_the_endpoint_does_and_releases_nothing() {
    let world = world().await;
    let w = &world;
    let check = |body: Value| async move {
        TestBroker::send(w.broker.signed(&w.admin, "POST", "/v1/policies/check", Some(&body))).await
    };
    let inject = json!({
        "agent": w.agent, "credential": w.credential,
        "inject": {"lifetime_secs": 600, "command": "python3"},
    });
    let (status, body) = check(inject.clone()).await;
    assert_eq!(
        (status, body["decision"].as_str()),
        (200, Some("deny")),
        "denied by default: {body}"
    );
    w.put_policy("short-injects", PERMIT_INJECT).await;
    let (status, body) = check(inject.clone()).await;
    assert_eq!(
        (status, body["decision"].as_str(), body["policies"].clone()),
        (200, Some("allow"), json!(["short-injects"])),
        "allowed by the naming permit: {body}"
    );
    let mut both = inject.clone();
    both["method"] = json!("GET");
    let (status, body) = check(both).await;
    assert_refused(status, &body, (400, "invalid_request"), "a call and an inject at once");
    let mut long = inject.clone();
    long["inject"]["lifetime_secs"] = json!(90_000);
    let (status, body) = check(long).await;
    assert_refused(status, &body, (400, "invalid_request"), "the tester bounds the lifetime too");
    let (released, denied) = w.injects().await;
    assert!(released.is_empty() && denied.is_empty(), "a check is not an inject");

    let (status, schema) =
        TestBroker::send(w.broker.http.get(w.broker.url("/v1/policy-schema"))).await;
    assert_eq!(status, 200);
    assert_eq!(schema["inject_action"], "inject", "the schema names the action: {schema}");
    assert!(
        schema["cedarschema"].as_str().unwrap_or_default().contains("version 2"),
        "the schema's version moved: {schema}"
    );
    world.broker.stop().await;
}
