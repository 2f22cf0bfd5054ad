//! An agent calls without a capability; the real broker holds the call and tells the member's
//! device, which approves it once, approves it for a window, or denies it. Each outcome is what
//! the agent sees, and the loopback upstream receives only approved calls.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "the helpers in this file are test code too; a panic is the failure report"
)]

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Machine, TestBroker, upstream};
use latchkey_client::access::{NewApiKey, add_api_key};
use latchkey_client::api::{
    ApprovalEvent, ApprovalEvents, ApprovalInfo, ApprovalStatus, BrokerClient, ClientError, codes,
};
use latchkey_client::approvals::{ApprovalError, approve_for, approve_once, deny, list};
use latchkey_client::workspace::{broker_client, create_workspace};
use latchkey_core::payload::Injection;
use latchkey_core::secret::SecretBytes;
use latchkey_core::token::AgentToken;

const API_KEY: &str = "sk-canary-approvals-5be20c";

/// A workspace whose admin stored a shared key for a loopback upstream, and an agent without a
/// grant: every call it makes is held for approval.
struct World {
    broker: TestBroker,
    ada: Machine,
    client: BrokerClient,
    token: AgentToken,
    seen: Arc<Mutex<Vec<String>>>,
}

impl World {
    async fn new() -> Self {
        let broker = TestBroker::start().await;
        let ada = Machine::new("ada");
        create_workspace(&ada.profile, &ada.store, &broker.url, "Acme", "Ada", "laptop", None)
            .await
            .unwrap();
        let (base, seen) = upstream().await;
        let host = base.trim_start_matches("http://").to_owned();
        add_api_key(
            &ada.profile,
            &ada.store,
            NewApiKey {
                name: "openai",
                provider: "openai",
                base_url: &base,
                allowed_hosts: std::slice::from_ref(&host),
                injection: Injection::Header {
                    name: "authorization".into(),
                    prefix: "Bearer ".into(),
                },
                shared: true,
                key: SecretBytes::copy_from(API_KEY.as_bytes()),
                account: None,
            },
        )
        .await
        .expect("an admin stores a shared API key");
        let client = broker_client(&ada.profile, &ada.store).await.unwrap();
        let token = client.create_agent("ci-bot").await.expect("agent").token;
        Self { broker, ada, client, token, seen }
    }

    /// The agent's call with its token only, sent in the background: the broker holds it.
    fn held_call(&self, path: &str) -> tokio::task::JoinHandle<(u16, Option<String>, String)> {
        let request = reqwest::Client::new()
            .get(format!("{}/p/openai{path}", self.broker.url.as_str()))
            .bearer_auth(self.token.expose_secret());
        tokio::spawn(async move {
            let response = request.send().await.expect("the broker answers the agent");
            let status = response.status().as_u16();
            let capability = response
                .headers()
                .get("latchkey-capability")
                .map(|v| v.to_str().unwrap().to_owned());
            (status, capability, response.text().await.unwrap())
        })
    }

    fn upstream_calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

/// The next approval on the stream, within 10 seconds.
async fn next_approval(events: &mut ApprovalEvents) -> ApprovalInfo {
    let next = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an approval event arrives within 10 seconds")
        .expect("the stream reads")
        .expect("the stream stays open");
    match next {
        ApprovalEvent::Approval(approval) => approval,
        ApprovalEvent::Lagged { .. } => panic!("a quiet test broker never lags"),
    }
}

/// Waits up to 10 seconds for the broker to list `n` pending approvals.
async fn pending(w: &World, n: usize) -> Vec<ApprovalInfo> {
    for _ in 0..100 {
        let listed = list(&w.ada.profile, &w.ada.store, false).await.expect("listing");
        if listed.len() == n {
            return listed;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the broker never listed {n} pending approvals");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_call_is_seen_on_the_stream_and_goes_on_once_approved_once() {
    let w = World::new().await;
    let mut events = w.client.approval_events().await.expect("the approval stream opens");
    let held = w.held_call("/v1/models?limit=5&after=secret-cursor");

    let approval = next_approval(&mut events).await;
    assert_eq!(approval.status, ApprovalStatus::Pending, "the device hears of the held call");
    assert_eq!(
        (approval.method.as_str(), approval.path.as_str(), approval.credential_name.as_str()),
        ("GET", "/v1/models", "openai"),
        "the member sees what the agent wants to do"
    );
    assert_eq!(approval.query_keys, ["limit", "after"], "query names, never values");
    assert_eq!(w.upstream_calls(), 0, "nothing reaches the upstream while the call is held");

    let answered = approve_once(&w.ada.profile, &w.ada.store, &approval)
        .await
        .expect("the device approves the call once");
    assert_eq!(answered.status, ApprovalStatus::Approved);
    assert_eq!(answered.decided_by, Some(w.client.device_id()), "the answer names this device");

    let (status, capability, body) = held.await.unwrap();
    assert_eq!(status, 200, "the held call went on after the approval: {body}");
    assert_eq!(capability, None, "approving once hands the agent nothing for later");
    assert_eq!(w.upstream_calls(), 1, "forwarded exactly once");
    assert!(!body.contains(API_KEY), "the agent never sees the key");

    let resolved = next_approval(&mut events).await;
    assert_eq!(
        (resolved.id, resolved.status),
        (approval.id, ApprovalStatus::Approved),
        "the stream tells of the answer too"
    );

    // The first answer wins: a second is refused with a message that says so, and nothing moves.
    let again = approve_once(&w.ada.profile, &w.ada.store, &approval).await.unwrap_err();
    assert!(
        matches!(&again, ApprovalError::Closed { id, .. } if *id == approval.id),
        "approving twice is a closed approval: {again:?}"
    );
    assert!(again.to_string().contains("was already approved"), "says how it ended: {again}");
    let denied_late = deny(&w.ada.profile, &w.ada.store, approval.id).await.unwrap_err();
    assert!(
        denied_late.to_string().contains("was already approved"),
        "a late denial is refused the same way: {denied_late}"
    );
    assert_eq!(w.upstream_calls(), 1, "a second answer forwards nothing");
    w.broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approving_for_a_window_hands_the_agent_a_capability_for_its_next_calls() {
    let w = World::new().await;
    let held = w.held_call("/v1/models");
    let approval = pending(&w, 1).await.remove(0);

    let refused = approve_for(&w.ada.profile, &w.ada.store, &approval, 3600, Some("/admin/**"))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ApprovalError::Unapprovable { .. }),
        "a pattern that misses the held call's path is refused before anything is granted: {refused:?}"
    );
    assert!(w.client.grants(None, true).await.unwrap().is_empty(), "no grant was registered");

    let approved = approve_for(&w.ada.profile, &w.ada.store, &approval, 3600, None)
        .await
        .expect("the device approves the call for an hour");
    assert_eq!(approved.approval.status, ApprovalStatus::Approved);
    assert_eq!(
        (approved.grant.methods.as_slice(), approved.grant.path_patterns.as_slice()),
        (&["GET".to_owned()][..], &["/v1/models".to_owned()][..]),
        "the grant covers exactly the held call's method and path"
    );

    let (status, capability, body) = held.await.unwrap();
    assert_eq!(status, 200, "the held call went on: {body}");
    let capability = capability.expect("the agent receives the standing capability");

    // The next call goes straight through with the capability; `Prefer: wait=0` makes a
    // refused capability answer at once instead of being held again.
    let next = |path: &str| {
        reqwest::Client::new()
            .get(format!("{}/p/openai{path}", w.broker.url.as_str()))
            .bearer_auth(w.token.expose_secret())
            .header("latchkey-capability", &capability)
            .header("prefer", "wait=0")
            .send()
    };
    assert_eq!(next("/v1/models").await.unwrap().status(), 200, "the window covers the next call");
    assert_eq!(
        next("/v1/files").await.unwrap().status(),
        403,
        "a path outside the approved one is refused"
    );
    assert_eq!(w.upstream_calls(), 2, "the held call and the next one reached the upstream");
    assert!(pending(&w, 0).await.is_empty(), "nothing is left pending");
    w.broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_call_is_refused_and_listed_as_denied() {
    let w = World::new().await;
    let held = w.held_call("/v1/models");
    let approval = pending(&w, 1).await.remove(0);

    let answered = deny(&w.ada.profile, &w.ada.store, approval.id).await.expect("deny");
    assert_eq!(answered.status, ApprovalStatus::Denied);
    let (status, capability, body) = held.await.unwrap();
    assert_eq!(status, 403, "the agent is refused: {body}");
    assert!(body.contains(codes::APPROVAL_DENIED), "with the stable code: {body}");
    assert_eq!(capability, None);
    assert_eq!(w.upstream_calls(), 0, "a denied call never reaches the upstream");

    let all = list(&w.ada.profile, &w.ada.store, true).await.unwrap();
    assert_eq!(
        all.iter().map(|a| (a.id, a.status)).collect::<Vec<_>>(),
        [(approval.id, ApprovalStatus::Denied)],
        "the full listing keeps the denied approval"
    );
    let twice = deny(&w.ada.profile, &w.ada.store, approval.id).await.unwrap_err();
    assert!(twice.to_string().contains("was already denied"), "{twice}");
    let unknown = latchkey_core::ids::ApprovalId::random();
    let missing = deny(&w.ada.profile, &w.ada.store, unknown).await.unwrap_err();
    assert!(
        matches!(missing, ApprovalError::NotFound(id) if id == unknown),
        "an unknown approval is not found: {missing:?}"
    );
    w.broker.stop().await;
}

/// A pending approval as a fake broker would announce it.
fn announced() -> ApprovalInfo {
    use latchkey_core::ids::{AgentId, ApprovalId, CredentialId};
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    ApprovalInfo {
        id: ApprovalId::random(),
        status: ApprovalStatus::Pending,
        agent: AgentId::random(),
        credential: CredentialId::random(),
        credential_name: "openai".into(),
        method: "GET".into(),
        host: "api.openai.com".into(),
        path: "/v1/models".into(),
        query_keys: Vec::new(),
        body_size: None,
        policy_ids: vec!["permit-granted-calls".into()],
        created_at: now,
        expires_at: now + 120,
        decided_at: None,
        decided_by: None,
        answerable: true,
    }
}

fn approval_event(approval: &ApprovalInfo) -> String {
    format!("event: approval\ndata: {}\n\n", serde_json::to_string(approval).unwrap())
}

/// A broker that sends the snapshot and then nothing, not even a keep-alive, is treated as
/// gone once the read timeout passes: `next` fails with `Stalled`, rather than hanging or
/// reporting a clean end of the stream (which means the broker closed it on purpose).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_silent_past_its_read_timeout_fails_as_stalled() {
    let snapshot = announced();
    let client = common::scripted_broker(vec![(Duration::ZERO, approval_event(&snapshot))]).await;
    let read_timeout = Duration::from_millis(300);
    let mut events = client.approval_events_with_read_timeout(read_timeout).await.unwrap();
    assert_eq!(next_approval(&mut events).await, snapshot, "the snapshot arrives first");

    let started = std::time::Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("a silent stream fails within its read timeout instead of hanging");
    let waited = started.elapsed();
    let error = match outcome {
        Err(error) => error,
        Ok(None) => panic!("silence is not the broker ending the stream"),
        Ok(Some(event)) => panic!("the fake broker sent nothing more, yet: {event:?}"),
    };
    assert!(
        matches!(error, ClientError::Stalled { silent, .. } if silent == read_timeout),
        "the error is the specific one a caller reconnects on: {error:?}"
    );
    let text = error.to_string();
    assert!(
        text.contains(
            "sent nothing on the approval stream for 300ms: the connection is treated as lost"
        ),
        "and says what happened: {text}"
    );
    assert!(
        waited >= read_timeout && waited < Duration::from_secs(5),
        "it fails once the read timeout passes, not before nor much later: {waited:?}"
    );
}

/// Keep-alive comments, each within the read timeout, keep a stream alive for far longer than
/// the timeout: the next event still arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alives_within_the_read_timeout_keep_the_stream_alive() {
    let later = announced();
    let tick = Duration::from_millis(100);
    let mut script = vec![(Duration::ZERO, ": connected\n\n".to_owned())];
    script.extend((0..12).map(|_| (tick, ":\n\n".to_owned())));
    script.push((tick, approval_event(&later)));
    let client = common::scripted_broker(script).await;
    let read_timeout = Duration::from_millis(400);
    let mut events = client.approval_events_with_read_timeout(read_timeout).await.unwrap();

    let started = std::time::Instant::now();
    let next = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("the event arrives within 10 seconds");
    let waited = started.elapsed();
    match next {
        Ok(Some(ApprovalEvent::Approval(approval))) => {
            assert_eq!(approval, later, "the event after the keep-alives is read whole");
        }
        other => {
            panic!("keep-alives every 100 ms keep a 400 ms read timeout from firing: {other:?}")
        }
    }
    assert!(
        waited > read_timeout * 2,
        "the stream outlived its read timeout several times over thanks to them: {waited:?}"
    );
}
