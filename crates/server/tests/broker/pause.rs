//! The workspace's kill switch, end to end over loopback: `PUT /v1/workspace/pause` refuses
//! every agent call (`403 agents_paused`) before any credential is read and before anything
//! reaches the upstream, lets calls held for approval go with the same answer, and is lifted
//! only by an admin or the member who paused. Unknown tokens are answered exactly as before.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions; a panic is the failure report"
)]

use crate::common;

use std::time::Duration;

use common::agent_calls::{
    CountingUpstream, agent_get, broker_public_key, create_agent, create_shared_credential,
    register_standing_grant, shared_capability,
};
use common::{
    ApprovalStream, TestBroker, TestDevice, insert_device, insert_member, workspace_with_admin,
};
use latchkey_core::capability::Reuse;
use latchkey_core::ids::AgentId;
use serde_json::{Value, json};

const CREDENTIAL: &str = "github";

/// A broker, an upstream that counts its hits, and in one workspace an admin, a plain member, an
/// agent with a shared credential and a standing capability that has been used once (so the
/// agent, the credential, the grant and the pause state are all in the broker's read cache).
struct World {
    broker: TestBroker,
    upstream: CountingUpstream,
    admin: TestDevice,
    member: TestDevice,
    agent: AgentId,
    token: String,
    standing: String,
}

async fn world() -> World {
    let broker = TestBroker::start().await;
    let (upstream, base) = CountingUpstream::start().await;
    let admin = workspace_with_admin(&broker).await;
    let member = insert_member(&broker, &admin, "member").await;
    let (agent, token) = create_agent(&broker, &admin, "ci-bot").await;
    let credential =
        create_shared_credential(&broker, &admin, CREDENTIAL, &base, "ghp_pauseSECRET0").await;
    let grant = register_standing_grant(&broker, &admin, agent, credential).await;
    let key = broker_public_key(&broker).await;
    let now = latchkey_server::clock::Clock::now(&*broker.clock);
    let standing =
        shared_capability(&admin, &key, agent, credential, Reuse::Standing { grant }, now);
    let w = World { broker, upstream, admin, member, agent, token, standing };
    let (status, body) = w.call().await;
    assert_eq!(status, 200, "the agent's call works before anything is paused: {body}");
    w
}

impl World {
    /// The agent's call with its standing capability.
    async fn call(&self) -> (u16, Value) {
        TestBroker::send(agent_get(&self.broker, &self.token, CREDENTIAL, "/user", &self.standing))
            .await
    }

    /// The agent's call without a capability (held for approval unless refused first).
    fn uncapable_call(&self) -> reqwest::RequestBuilder {
        self.broker
            .http
            .get(self.broker.url(&format!("/p/{CREDENTIAL}/user")))
            .bearer_auth(&self.token)
    }

    async fn set_paused(&self, device: &TestDevice, paused: bool) -> (u16, Value) {
        TestBroker::send(self.broker.signed(
            device,
            "PUT",
            "/v1/workspace/pause",
            Some(&json!({"paused": paused})),
        ))
        .await
    }

    async fn pause_state(&self, device: &TestDevice) -> Value {
        let (status, body) =
            TestBroker::send(self.broker.signed(device, "GET", "/v1/workspace/pause", None)).await;
        assert_eq!(status, 200, "any member may read the pause state: {body}");
        body
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

    async fn approvals(&self) -> Vec<Value> {
        let (status, body) = TestBroker::send(self.broker.signed(
            &self.admin,
            "GET",
            "/v1/approvals?status=all",
            None,
        ))
        .await;
        assert_eq!(status, 200, "approval listing: {body}");
        body["approvals"].as_array().cloned().unwrap_or_default()
    }
}

fn records<'a>(audit: &'a [Value], kind: &str) -> Vec<&'a Value> {
    audit.iter().map(|r| &r["record"]).filter(|r| r["kind"] == kind).collect()
}

fn assert_paused_refusal(status: u16, body: &Value, what: &str) {
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("agents_paused")),
        "{what} must be refused while the agents are paused: {body}"
    );
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("paused") && message.contains("latchkey agent resume"),
        "the agent is told what happened and what to do next: {message}"
    );
}

#[tokio::test]
async fn a_pause_refuses_every_agent_call_before_the_upstream_until_it_is_lifted() {
    let w = world().await;
    let reached = w.upstream.hits();

    let (status, state) = w.set_paused(&w.member, true).await;
    assert_eq!(status, 200, "any member may pause: {state}");
    assert_eq!(state["paused"], true, "{state}");
    assert_eq!(state["paused_by_member"], json!(w.member.member), "who paused is kept: {state}");
    assert_eq!(state["paused_by_device"], json!(w.member.id), "and from which device: {state}");
    assert_eq!(state["paused_at"], json!(latchkey_server::clock::Clock::now(&*w.broker.clock)));
    assert_eq!(w.pause_state(&w.admin).await, state, "GET shows the same state to every member");

    // The cached standing capability, and a call without one (which would otherwise be held).
    let (status, body) = w.call().await;
    assert_paused_refusal(status, &body, "a call the read cache would have allowed");
    let (status, body) = TestBroker::send(w.uncapable_call()).await;
    assert_paused_refusal(status, &body, "a call without a capability");
    assert!(w.approvals().await.is_empty(), "a call while paused asks nobody for approval");
    assert_eq!(w.upstream.hits(), reached, "no call reaches the upstream while paused");

    // Pausing again changes nothing: the first pause and its author stand.
    let (status, again) = w.set_paused(&w.admin, true).await;
    assert_eq!((status, &again), (200, &state), "pausing is idempotent and keeps the first pause");

    let audit = w.audit().await;
    let paused = records(&audit, "agents_paused");
    assert_eq!(paused.len(), 1, "one pause, one record (the repeat changed nothing): {paused:?}");
    assert_eq!(paused[0]["member"], json!(w.member.member), "the record names the member");
    assert_eq!(paused[0]["device"], json!(w.member.id), "and the device");
    let refused: Vec<_> = records(&audit, "proxy_attempt")
        .into_iter()
        .filter(|r| r["decision"] == "denied" && r["reason_code"] == "agents_paused")
        .collect();
    assert_eq!(refused.len(), 2, "each refused call is audited as a denied attempt: {refused:?}");
    assert!(
        refused.iter().all(|r| r["agent"] == json!(w.agent)),
        "in the agent's workspace, naming the agent: {refused:?}"
    );

    let (status, state) = w.set_paused(&w.member, false).await;
    assert_eq!(status, 200, "the member who paused may resume: {state}");
    assert_eq!(
        state,
        json!({"paused": false, "paused_by_member": null, "paused_by_device": null, "paused_at": null}),
        "the state says nothing is paused"
    );
    let (status, body) = w.call().await;
    assert_eq!(status, 200, "calls work again at once after the resume: {body}");
    assert_eq!(w.upstream.hits(), reached + 1, "and reach the upstream");
    let (status, again) = w.set_paused(&w.member, false).await;
    assert_eq!((status, &again), (200, &state), "resuming is idempotent");

    let audit = w.audit().await;
    let resumed = records(&audit, "agents_resumed");
    assert_eq!(resumed.len(), 1, "one resume, one record: {resumed:?}");
    assert_eq!(resumed[0]["member"], json!(w.member.member));
    assert_eq!(resumed[0]["device"], json!(w.member.id));
    w.broker.stop().await;
}

#[tokio::test]
async fn only_an_admin_or_the_member_who_paused_may_resume() {
    let w = world().await;
    let other = insert_member(&w.broker, &w.admin, "member").await;
    let (status, _) = w.set_paused(&w.member, true).await;
    assert_eq!(status, 200);

    let (status, body) = w.set_paused(&other, false).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("resume_not_allowed")),
        "a member who did not pause may not lift someone else's pause: {body}"
    );
    assert!(
        body["message"].as_str().is_some_and(|m| m.contains("admin") && m.contains("paused")),
        "the refusal says who may resume: {body}"
    );
    assert_eq!(w.pause_state(&w.admin).await["paused"], true, "the refused resume changed nothing");
    let (status, body) = w.call().await;
    assert_paused_refusal(status, &body, "a call after a refused resume");

    let (status, state) = w.set_paused(&w.admin, false).await;
    assert_eq!((status, state["paused"].as_bool()), (200, Some(false)), "an admin may: {state}");

    // The member who paused may resume from any of their devices.
    let (status, _) = w.set_paused(&w.member, true).await;
    assert_eq!(status, 200);
    let second_device = insert_device(&w.broker, &w.member).await;
    let (status, state) = w.set_paused(&second_device, false).await;
    assert_eq!(
        (status, state["paused"].as_bool()),
        (200, Some(false)),
        "a pause is the member's, not only the device's: {state}"
    );

    let audit = w.audit().await;
    assert_eq!(records(&audit, "agents_paused").len(), 2, "both pauses are audited");
    assert_eq!(records(&audit, "agents_resumed").len(), 2, "both resumes, not the refused one");

    for bad in [json!({}), json!({"paused": "yes"}), json!({"paused": true, "extra": 1})] {
        let (status, body) =
            TestBroker::send(w.broker.signed(&w.member, "PUT", "/v1/workspace/pause", Some(&bad)))
                .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("bad_request")),
            "{bad} is refused: {body}"
        );
    }
    let (status, body) = TestBroker::send(
        w.broker.http.put(w.broker.url("/v1/workspace/pause")).json(&json!({"paused": true})),
    )
    .await;
    assert_eq!(status, 401, "an unsigned pause is refused: {body}");
    assert_eq!(w.pause_state(&w.admin).await["paused"], false, "no refused request paused");
    w.broker.stop().await;
}

#[tokio::test]
async fn unknown_and_revoked_tokens_are_answered_while_paused_exactly_as_before() {
    let w = world().await;
    let forged = latchkey_core::token::AgentToken::generate().expect("token");
    let unknown = || async {
        let response = agent_get(&w.broker, forged.expose_secret(), CREDENTIAL, "/user", "x")
            .send()
            .await
            .expect("the broker answers");
        (response.status().as_u16(), response.text().await.expect("body"))
    };
    let malformed = || async {
        let response = agent_get(&w.broker, "lk_garbage", CREDENTIAL, "/user", "x")
            .send()
            .await
            .expect("the broker answers");
        (response.status().as_u16(), response.text().await.expect("body"))
    };
    let before = (unknown().await, malformed().await);
    assert_eq!(before.0.0, 401, "an unknown token is refused: {}", before.0.1);

    let (status, _) = w.set_paused(&w.admin, true).await;
    assert_eq!(status, 200);
    let after = (unknown().await, malformed().await);
    assert_eq!(
        after, before,
        "a pause must not change how unknown tokens are answered: it would tell a token guesser something"
    );

    let (status, _) = TestBroker::send(w.broker.signed(
        &w.admin,
        "DELETE",
        &format!("/v1/agents/{}", w.agent),
        None,
    ))
    .await;
    assert_eq!(status, 204, "agent revocation");
    let (status, body) = w.call().await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("token_revoked")),
        "a revoked token is told so, paused or not (resuming would not help it): {body}"
    );
    w.broker.stop().await;
}

#[tokio::test]
async fn a_call_held_for_approval_is_released_at_once_when_the_agents_are_paused() {
    let w = world().await;
    let reached = w.upstream.hits();
    let mut stream = ApprovalStream::open(&w.broker, &w.admin).await;
    let held = tokio::spawn(TestBroker::send(w.uncapable_call()));
    let event = stream.next().await;
    assert_eq!(event["status"], "pending", "the call is held: {event}");
    let id = event["id"].as_str().expect("approval id").to_owned();
    // The holder announces the call just before its first read of the pause and its row, then
    // waits up to a second (its periodic re-read). The pause must wake it at once instead: a
    // release well under a second after the announcement proves the wake, once the holder is
    // surely waiting.
    let announced = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, _) = w.set_paused(&w.member, true).await;
    assert_eq!(status, 200);
    let (status, body) = tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .expect("the held call ends as soon as the agents are paused, not at the approval timeout")
        .expect("the call's task");
    let released = announced.elapsed();
    assert!(
        released < Duration::from_millis(800),
        "the pause wakes the held call rather than leaving it to its next periodic re-read ({released:?})"
    );
    assert_paused_refusal(status, &body, "a call held when the pause came");
    assert_eq!(w.upstream.hits(), reached, "the released call never reaches the upstream");

    let approvals = w.approvals().await;
    assert_eq!(
        (approvals.len(), approvals[0]["status"].as_str()),
        (1, Some("expired")),
        "its approval is expired, so nobody approves a call that no longer waits: {approvals:?}"
    );
    let (status, body) = TestBroker::send(w.broker.signed(
        &w.admin,
        "POST",
        &format!("/v1/approvals/{id}"),
        Some(&json!({"decision": "deny"})),
    ))
    .await;
    assert_eq!(status, 409, "a late answer is refused: {body}");

    let audit = w.audit().await;
    assert!(
        records(&audit, "approval_expired")
            .iter()
            .any(|r| r["approval_id"] == json!(id) && r["reason_code"] == "agents_paused"),
        "the expiry is audited with the pause as its reason: {audit:?}"
    );
    assert!(
        records(&audit, "proxy_attempt").iter().any(|r| r["decision"] == "denied"
            && r["reason_code"] == "agents_paused"
            && r["path"] == "/user"),
        "and the refused call as a denied attempt"
    );
    w.broker.stop().await;
}
