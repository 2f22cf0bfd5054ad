//! Pausing all agents from a device, against a real broker: the typed state, an agent's call
//! refused while paused and working again once resumed.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "the helpers in this file are test code too; a panic is the failure report"
)]

use crate::common;

use common::{Machine, TestBroker, upstream};
use latchkey_client::access::{GrantTerms, NewApiKey, add_api_key, grant_standing};
use latchkey_client::api::{PauseState, codes};
use latchkey_client::workspace::{broker_client, create_workspace};
use latchkey_core::capability::Method;
use latchkey_core::payload::Injection;
use latchkey_core::secret::SecretBytes;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_pauses_every_agent_call_and_resumes_them() {
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
            injection: Injection::Header { name: "authorization".into(), prefix: "Bearer ".into() },
            shared: true,
            key: SecretBytes::copy_from(b"sk-canary-pause-77e1"),
            account: None,
        },
    )
    .await
    .expect("an admin stores a shared API key");
    let client = broker_client(&ada.profile, &ada.store).await.unwrap();
    let me = client.me().await.unwrap();
    let agent = client.create_agent("ci-bot").await.unwrap();
    let terms = GrantTerms {
        agent: agent.agent.id,
        credential: "openai",
        methods: &[Method::Get],
        path_patterns: &["/v1/**"],
        duration_secs: 3600,
    };
    let issued = grant_standing(&ada.profile, &ada.store, terms).await.unwrap();
    let call = || {
        reqwest::Client::new()
            .get(format!("{}/p/openai/v1/models", broker.url.as_str()))
            .bearer_auth(agent.token.expose_secret())
            .header("latchkey-capability", issued.capability.expose_secret())
            .send()
    };

    let state = client.pause_state().await.expect("any member reads the pause state");
    assert!(!state.paused, "a new workspace is not paused: {state:?}");
    assert_eq!(call().await.unwrap().status(), 200, "the agent's call works before the pause");

    let state = client.set_paused(true).await.expect("a member pauses");
    assert_eq!(
        (state.paused, state.paused_by_member, state.paused_by_device),
        (true, Some(me.member), Some(client.device_id())),
        "the typed state names who paused, from which device"
    );
    assert!(state.paused_at.is_some(), "and when");
    assert_eq!(client.pause_state().await.unwrap(), state, "GET agrees with PUT's answer");
    assert_eq!(
        client.set_paused(true).await.unwrap(),
        state,
        "pausing again keeps the first pause"
    );

    let refused = call().await.unwrap();
    assert_eq!(refused.status(), 403, "the agent's call is refused while paused");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["code"], codes::AGENTS_PAUSED, "with the code clients branch on: {body}");
    assert_eq!(seen.lock().unwrap().len(), 1, "the refused call never reached the upstream");

    let state = client.set_paused(false).await.expect("the member who paused resumes");
    assert_eq!(
        state,
        PauseState {
            paused: false,
            paused_by_member: None,
            paused_by_device: None,
            paused_at: None
        }
    );
    assert_eq!(call().await.unwrap().status(), 200, "the agent's call works again");
    broker.stop().await;
}
