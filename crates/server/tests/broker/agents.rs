//! Agents are identified by a token shown once and stored only as its hash; regenerating or
//! revoking takes effect at once. Standing grants are registered by the issuing device and can be
//! revoked by the agent's owner or an admin.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "helpers outside #[test] functions: a panic is the failure report"
)]

use crate::common;

use common::{TestBroker, TestDevice, b64, insert_member, workspace_with_admin};
use latchkey_core::envelope::Envelope;
use latchkey_core::ids::{AgentId, CredentialId, GrantId, Owner, WorkspaceId};
use latchkey_core::token::AgentToken;
use latchkey_server::store::Store;
use serde_json::{Value, json};

/// 2027-01-15T08:00:00Z, the test clock's start.
const T0: u64 = common::T0;
const DAY: u64 = 24 * 60 * 60;

#[tokio::test]
async fn an_agent_token_is_shown_once_and_stored_only_as_its_hash() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let response = broker
        .signed(&admin, "POST", "/v1/agents", Some(&json!({"name": "CI bot"})))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(
        response.headers().get("cache-control").and_then(|v| v.to_str().ok()),
        Some("no-store"),
        "a response carrying a token must not be cached"
    );
    let created: Value = response.json().await.unwrap();
    let token = AgentToken::parse(created["token"].as_str().expect("the token is shown"))
        .expect("a well-formed agent token");
    assert_eq!(created["name"], "CI bot");
    assert_eq!(created["owner"], json!(admin.member), "the caller's member owns the agent");
    let id: AgentId = serde_json::from_value(created["id"].clone()).unwrap();

    let (status, list) = get(&broker, &admin, "/v1/agents").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["agents"][0]["id"], json!(id), "{list}");
    assert!(!list.to_string().contains(token.expose_secret()), "the list never shows the token");
    assert!(list["agents"][0].get("token").is_none(), "{list}");

    let store = open_store(&broker).await;
    let found = store.agent_by_token_hash(&token.hash()).await.unwrap().expect("found by hash");
    assert_eq!((found.id, found.owner, found.revoked_at), (id, admin.member, None));

    let files = database_bytes(&broker).await;
    assert!(
        contains(&files, token.hash().as_bytes()),
        "the scan reads the database: the hash is there"
    );
    assert!(
        !contains(&files, token.expose_secret().as_bytes()),
        "the token itself must not be in the database files"
    );
    assert!(
        !contains(&files, &token.expose_secret().as_bytes()[3..]),
        "not even without its prefix"
    );
    broker.stop().await;
}

#[tokio::test]
async fn regenerating_a_token_invalidates_the_old_one_at_once() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (id, old) = create_agent(&broker, &admin, "bot").await;
    let store = open_store(&broker).await;

    let (status, answer) = post(&broker, &admin, &format!("/v1/agents/{id}/token"), None).await;
    assert_eq!(status, 200, "{answer}");
    let new = AgentToken::parse(answer["token"].as_str().unwrap()).unwrap();
    assert_ne!(new, old, "a fresh token");
    assert!(
        store.agent_by_token_hash(&old.hash()).await.unwrap().is_none(),
        "the old token is unknown now"
    );
    let found = store.agent_by_token_hash(&new.hash()).await.unwrap().expect("the new token works");
    assert_eq!(found.id, id, "same agent, new token");
    let (_, log) = get(&broker, &admin, "/v1/audit?kind=agent_token_regenerated").await;
    let records = log["records"].as_array().unwrap();
    assert_eq!(records.len(), 1, "the regeneration is on the chain: {log}");
    assert_eq!(records[0]["record"]["agent"], json!(id));
    assert!(!log.to_string().contains(new.expose_secret()), "never the token itself");
    broker.stop().await;
}

#[tokio::test]
async fn a_revoked_agent_stays_revoked_and_gets_no_new_token() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (id, token) = create_agent(&broker, &admin, "bot").await;
    broker.clock.advance(10);

    let (status, _) = delete(&broker, &admin, &format!("/v1/agents/{id}")).await;
    assert_eq!(status, 204);
    let store = open_store(&broker).await;
    let found = store.agent_by_token_hash(&token.hash()).await.unwrap().expect("still known");
    assert_eq!(found.revoked_at, Some(T0 + 10), "known but revoked, so the proxy can say so");

    let (status, answer) = post(&broker, &admin, &format!("/v1/agents/{id}/token"), None).await;
    assert_eq!((status, code(&answer)), (409, "conflict"), "{answer}");
    assert!(store.agent_by_token_hash(&token.hash()).await.unwrap().is_some(), "nothing replaced");

    broker.clock.advance(10);
    let (status, _) = delete(&broker, &admin, &format!("/v1/agents/{id}")).await;
    assert_eq!(status, 204, "revoking again is harmless");
    let (_, list) = get(&broker, &admin, "/v1/agents").await;
    assert_eq!(list["agents"][0]["revoked_at"], T0 + 10, "the first revocation time stays: {list}");
    broker.stop().await;
}

#[tokio::test]
async fn members_manage_their_own_agents_and_admins_manage_all() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let member = insert_member(&broker, &admin, "member").await;
    let (admins, _) = create_agent(&broker, &admin, "admin bot").await;
    let (members, _) = create_agent(&broker, &member, "member bot").await;

    let (_, list) = get(&broker, &member, "/v1/agents").await;
    assert_eq!(agent_ids(&list), [members], "a member lists only their own agents");
    let (_, list) = get(&broker, &admin, "/v1/agents").await;
    let mut both = [admins, members];
    both.sort();
    let mut listed = agent_ids(&list);
    listed.sort();
    assert_eq!(listed, both, "an admin lists every agent");

    let (_, missing) =
        post(&broker, &member, &format!("/v1/agents/{}/token", AgentId::random()), None).await;
    let (status, answer) =
        post(&broker, &member, &format!("/v1/agents/{admins}/token"), None).await;
    assert_eq!((status, &answer), (404, &missing), "another member's agent looks missing");
    let (status, answer) = delete(&broker, &member, &format!("/v1/agents/{admins}")).await;
    assert_eq!((status, &answer), (404, &missing), "and cannot be revoked");

    let (status, answer) =
        post(&broker, &admin, &format!("/v1/agents/{members}/token"), None).await;
    assert_eq!(status, 200, "an admin may regenerate any agent's token: {answer}");
    let (status, _) = delete(&broker, &admin, &format!("/v1/agents/{members}")).await;
    assert_eq!(status, 204, "and revoke any agent");
    broker.stop().await;
}

#[tokio::test]
async fn bad_agent_requests_are_refused() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    for (body, status, expected) in [
        (json!({"name": ""}), 400, "invalid_request"),
        (json!({"name": "x".repeat(101)}), 400, "invalid_request"),
        (json!({"name": "bell\u{7}"}), 400, "invalid_request"),
        (json!({}), 400, "bad_request"),
        (json!({"name": "bot", "owner": "someone"}), 400, "bad_request"),
    ] {
        let (got, answer) = post(&broker, &admin, "/v1/agents", Some(&body)).await;
        assert_eq!((got, code(&answer)), (status, expected), "{body}: {answer}");
    }
    let (_, list) = get(&broker, &admin, "/v1/agents").await;
    assert!(agent_ids(&list).is_empty(), "nothing was created: {list}");

    let (status, answer) = post(&broker, &admin, "/v1/agents/not-a-uuid/token", None).await;
    assert_eq!((status, code(&answer)), (400, "bad_request"), "{answer}");
    let (status, answer) =
        delete(&broker, &admin, &format!("/v1/agents/{}", AgentId::random())).await;
    assert_eq!((status, code(&answer)), (404, "not_found"), "{answer}");

    let (id, _) = create_agent(&broker, &admin, "bot").await;
    let mut stranger = TestDevice::new(WorkspaceId::random());
    let request = stranger.create_workspace_body("Elsewhere");
    assert_eq!(
        TestBroker::send(broker.signed(&stranger, "POST", "/v1/workspaces", Some(&request)))
            .await
            .0,
        201
    );
    let (status, answer) = delete(&broker, &stranger, &format!("/v1/agents/{id}")).await;
    assert_eq!((status, code(&answer)), (404, "not_found"), "another workspace's agent: {answer}");
    let (_, list) = get(&broker, &stranger, "/v1/agents").await;
    assert!(agent_ids(&list).is_empty(), "another workspace lists none of ours: {list}");
    broker.stop().await;
}

#[tokio::test]
async fn last_use_is_recorded_and_shown() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (id, _) = create_agent(&broker, &admin, "bot").await;
    let (_, list) = get(&broker, &admin, "/v1/agents").await;
    assert_eq!(list["agents"][0]["last_used_at"], Value::Null, "never used yet");

    let store = open_store(&broker).await;
    store.touch_agent(admin.workspace, id, T0 + 5).await.unwrap();
    store.touch_agent(admin.workspace, id, T0 + 3).await.unwrap();
    let (_, list) = get(&broker, &admin, "/v1/agents").await;
    assert_eq!(list["agents"][0]["last_used_at"], T0 + 5, "a late, older touch does not go back");
    store.touch_agent(admin.workspace, id, T0 + 9).await.unwrap();
    let (_, list) = get(&broker, &admin, "/v1/agents").await;
    assert_eq!(list["agents"][0]["last_used_at"], T0 + 9, "{list}");
    broker.stop().await;
}

#[tokio::test]
async fn a_grant_is_registered_listed_and_revoked() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let credential = shared_credential(&broker, &admin, "github").await;
    let (agent, _) = create_agent(&broker, &admin, "bot").await;
    let id = GrantId::random();

    let (status, grant) =
        post(&broker, &admin, "/v1/grants", Some(&grant_body(id, agent, credential))).await;
    assert_eq!(status, 201, "{grant}");
    assert_eq!(grant["issued_by"], json!(admin.id), "the calling device issued it");
    assert_eq!(grant["methods"], json!(["GET", "POST"]));
    assert_eq!(grant["revoked_at"], Value::Null);

    let (_, list) = get(&broker, &admin, &format!("/v1/grants?agent={agent}")).await;
    assert_eq!(list["grants"][0]["id"], json!(id), "{list}");
    let (_, all) = get(&broker, &admin, "/v1/grants").await;
    assert_eq!(all["grants"].as_array().map(Vec::len), Some(1), "{all}");

    let store = open_store(&broker).await;
    let stored = store.grant(admin.workspace, id).await.unwrap().expect("stored");
    assert_eq!((stored.agent, stored.credential, stored.issued_by), (agent, credential, admin.id));
    assert_eq!(stored.expires_at, T0 + DAY);
    assert!(stored.revoked_at.is_none());

    broker.clock.advance(7);
    let (status, _) = delete(&broker, &admin, &format!("/v1/grants/{id}")).await;
    assert_eq!(status, 204);
    let stored = store.grant(admin.workspace, id).await.unwrap().expect("kept as history");
    assert_eq!(stored.revoked_at, Some(T0 + 7), "the proxy's next lookup sees it revoked");
    let (_, list) = get(&broker, &admin, &format!("/v1/grants?agent={agent}")).await;
    assert_eq!(list["grants"], json!([]), "a listing holds the grants in force: {list}");
    let (_, list) = get(&broker, &admin, &format!("/v1/grants?agent={agent}&status=all")).await;
    assert_eq!(list["grants"][0]["revoked_at"], T0 + 7, "and all of them on request: {list}");

    let other = TestBroker::start().await;
    let stranger = workspace_with_admin(&other).await;
    assert!(
        store.grant(stranger.workspace, id).await.unwrap().is_none(),
        "grants are per workspace"
    );
    other.stop().await;
    broker.stop().await;
}

#[tokio::test]
async fn ended_grants_are_listed_on_request_for_thirty_days_then_deleted() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let credential = shared_credential(&broker, &admin, "github").await;
    let (agent, _) = create_agent(&broker, &admin, "ci-bot").await;
    let (broker_ref, admin_ref) = (&broker, &admin);
    let register = |id: GrantId, expires_at: u64| {
        let mut body = grant_body(id, agent, credential);
        body["expires_at"] = json!(expires_at);
        async move {
            let (status, grant) = post(broker_ref, admin_ref, "/v1/grants", Some(&body)).await;
            assert_eq!(status, 201, "{grant}");
        }
    };
    let ids = |list: &Value| -> Vec<String> {
        list["grants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (expired, revoked, live) = (GrantId::random(), GrantId::random(), GrantId::random());
    register(expired, T0 + 60).await;
    broker.clock.advance(120);
    register(revoked, T0 + DAY).await;
    let (status, _) = delete(&broker, &admin, &format!("/v1/grants/{revoked}")).await;
    assert_eq!(status, 204, "revoked at T0 + 120");
    broker.clock.advance(1);
    register(live, T0 + 40 * DAY).await;

    let (_, listed) = get(&broker, &admin, "/v1/grants").await;
    assert_eq!(ids(&listed), [live.to_string()], "the default listing: grants in force only");
    let (_, all) = get(&broker, &admin, "/v1/grants?status=all").await;
    assert_eq!(
        ids(&all),
        [live.to_string(), revoked.to_string(), expired.to_string()],
        "status=all adds the revoked and the expired one, newest first"
    );

    // At T0 + 30 days + 61 s: the expired grant ended 30 days and a second ago, the revoked one
    // 30 days less a minute ago. The next grant registered deletes the first.
    broker.clock.advance(30 * DAY - 60);
    let (_, all) = get(&broker, &admin, "/v1/grants?status=all").await;
    assert_eq!(
        ids(&all),
        [live.to_string(), revoked.to_string()],
        "an ended grant is listed for 30 days after it ended, not a second more"
    );
    let store = open_store(&broker).await;
    assert!(store.grant(admin.workspace, expired).await.unwrap().is_some(), "not yet deleted");
    let next = GrantId::random();
    register(next, T0 + 31 * DAY).await;
    assert!(
        store.grant(admin.workspace, expired).await.unwrap().is_none(),
        "the next registration deleted it: `latchkey run`s cannot grow the table without end"
    );
    assert!(store.grant(admin.workspace, revoked).await.unwrap().is_some(), "ended < 30 days ago");
    let (_, all) = get(&broker, &admin, "/v1/grants?status=all").await;
    assert_eq!(ids(&all), [next.to_string(), live.to_string(), revoked.to_string()]);

    for bad in ["/v1/grants?status=ended-canary", "/v1/grants?state=all"] {
        let (status, body) = get(&broker, &admin, bad).await;
        assert_eq!((status, code(&body)), (400, "bad_request"), "{bad}: {body}");
        assert!(!body["message"].as_str().unwrap().contains("canary"), "not echoed: {body}");
    }
    broker.stop().await;
}

#[tokio::test]
async fn grant_registration_checks_the_agent_the_credential_and_the_claims() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let member = insert_member(&broker, &admin, "member").await;
    let shared = shared_credential(&broker, &admin, "github").await;
    let admins_personal = personal_credential(&broker, &admin, "admins").await;
    let (admins_agent, _) = create_agent(&broker, &admin, "admin bot").await;
    let (members_agent, _) = create_agent(&broker, &member, "member bot").await;
    let (revoked, _) = create_agent(&broker, &member, "old bot").await;
    assert_eq!(delete(&broker, &member, &format!("/v1/agents/{revoked}")).await.0, 204);

    let valid = grant_body(GrantId::random(), members_agent, shared);
    let with = |field: &str, value: Value| {
        let mut body = valid.clone();
        body[field] = value;
        body
    };
    for (why, body, status, expected) in [
        (
            "another member's agent",
            grant_body(GrantId::random(), admins_agent, shared),
            404,
            "not_found",
        ),
        ("an unknown agent", with("agent", json!(AgentId::random())), 404, "not_found"),
        ("a revoked agent", with("agent", json!(revoked)), 409, "conflict"),
        (
            "another member's personal credential",
            with("credential", json!(admins_personal)),
            404,
            "not_found",
        ),
        (
            "an unknown credential",
            with("credential", json!(CredentialId::random())),
            404,
            "not_found",
        ),
        ("no methods", with("methods", json!([])), 400, "invalid_request"),
        ("an unknown method", with("methods", json!(["CONNECT"])), 400, "invalid_request"),
        ("a lowercase method", with("methods", json!(["get"])), 400, "invalid_request"),
        ("no path patterns", with("path_patterns", json!([])), 400, "invalid_request"),
        ("a relative pattern", with("path_patterns", json!(["repos/**"])), 400, "invalid_request"),
        ("a ** in the middle", with("path_patterns", json!(["/**/x"])), 400, "invalid_request"),
        ("too many patterns", with("path_patterns", json!(vec!["/a"; 17])), 400, "invalid_request"),
        ("an expiry in the past", with("expires_at", json!(T0 - 1)), 400, "invalid_request"),
        ("an expiry of now", with("expires_at", json!(T0)), 400, "invalid_request"),
        (
            "an expiry beyond 90 days",
            with("expires_at", json!(T0 + 91 * DAY)),
            400,
            "invalid_request",
        ),
        ("an unknown field", with("owner", json!("me")), 400, "bad_request"),
        ("a malformed id", with("id", json!("nope")), 400, "bad_request"),
    ] {
        let (got, answer) = post(&broker, &member, "/v1/grants", Some(&body)).await;
        assert_eq!((got, code(&answer)), (status, expected), "{why}: {answer}");
    }
    let (_, list) = get(&broker, &admin, "/v1/grants").await;
    assert_eq!(list["grants"], json!([]), "no refused grant was stored: {list}");

    let (status, answer) = post(&broker, &member, "/v1/grants", Some(&valid)).await;
    assert_eq!(status, 201, "the unaltered request is accepted: {answer}");
    let (status, answer) = post(&broker, &member, "/v1/grants", Some(&valid)).await;
    assert_eq!((status, code(&answer)), (409, "conflict"), "the same grant id twice: {answer}");

    let by_admin = grant_body(GrantId::random(), members_agent, admins_personal);
    let (status, answer) = post(&broker, &admin, "/v1/grants", Some(&by_admin)).await;
    assert_eq!(
        status, 201,
        "an admin may grant any agent a credential the admin may use: {answer}"
    );
    broker.stop().await;
}

#[tokio::test]
async fn grants_are_seen_and_revoked_only_by_the_agent_owner_or_an_admin() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let member = insert_member(&broker, &admin, "member").await;
    let credential = shared_credential(&broker, &admin, "github").await;
    let (admins_agent, _) = create_agent(&broker, &admin, "admin bot").await;
    let (members_agent, _) = create_agent(&broker, &member, "member bot").await;
    let admins_grant = GrantId::random();
    let members_grant = GrantId::random();
    assert_eq!(
        post(
            &broker,
            &admin,
            "/v1/grants",
            Some(&grant_body(admins_grant, admins_agent, credential))
        )
        .await
        .0,
        201
    );
    assert_eq!(
        post(
            &broker,
            &member,
            "/v1/grants",
            Some(&grant_body(members_grant, members_agent, credential))
        )
        .await
        .0,
        201
    );

    let (_, list) = get(&broker, &member, "/v1/grants").await;
    assert_eq!(
        list["grants"].as_array().map(Vec::len),
        Some(1),
        "only the member's agent's grant: {list}"
    );
    assert_eq!(list["grants"][0]["id"], json!(members_grant));
    let (status, answer) = get(&broker, &member, &format!("/v1/grants?agent={admins_agent}")).await;
    assert_eq!((status, code(&answer)), (404, "not_found"), "{answer}");
    let (status, answer) = get(&broker, &member, "/v1/grants?agent=nope").await;
    assert_eq!((status, code(&answer)), (400, "bad_request"), "{answer}");
    let (status, answer) = get(&broker, &member, "/v1/grants?color=blue").await;
    assert_eq!((status, code(&answer)), (400, "bad_request"), "{answer}");

    let (status, answer) = delete(&broker, &member, &format!("/v1/grants/{admins_grant}")).await;
    assert_eq!((status, code(&answer)), (404, "not_found"), "{answer}");
    let store = open_store(&broker).await;
    assert!(
        store.grant(admin.workspace, admins_grant).await.unwrap().unwrap().revoked_at.is_none(),
        "not revoked"
    );
    let (status, answer) =
        delete(&broker, &member, &format!("/v1/grants/{}", GrantId::random())).await;
    assert_eq!((status, code(&answer)), (404, "not_found"), "{answer}");

    let (_, all) = get(&broker, &admin, "/v1/grants").await;
    assert_eq!(all["grants"].as_array().map(Vec::len), Some(2), "an admin sees every grant: {all}");
    let (status, _) = delete(&broker, &admin, &format!("/v1/grants/{members_grant}")).await;
    assert_eq!(status, 204, "an admin may revoke any grant");
    let (status, _) = delete(&broker, &member, &format!("/v1/grants/{members_grant}")).await;
    assert_eq!(status, 204, "the owner may too, and revoking twice is harmless");
    broker.stop().await;
}

#[tokio::test]
async fn revoking_an_agent_or_deleting_a_credential_revokes_their_grants() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let github = shared_credential(&broker, &admin, "github").await;
    let slack = shared_credential(&broker, &admin, "slack").await;
    let (first, _) = create_agent(&broker, &admin, "first").await;
    let (second, _) = create_agent(&broker, &admin, "second").await;
    let (by_agent, by_credential, untouched) =
        (GrantId::random(), GrantId::random(), GrantId::random());
    for (id, agent, credential) in
        [(by_agent, first, slack), (by_credential, second, github), (untouched, second, slack)]
    {
        assert_eq!(
            post(&broker, &admin, "/v1/grants", Some(&grant_body(id, agent, credential))).await.0,
            201
        );
    }
    broker.clock.advance(3);
    assert_eq!(delete(&broker, &admin, &format!("/v1/agents/{first}")).await.0, 204);
    assert_eq!(delete(&broker, &admin, &format!("/v1/credentials/{github}")).await.0, 204);

    let store = open_store(&broker).await;
    let revoked_at = |id| {
        let store = store.clone();
        let workspace = admin.workspace;
        async move { store.grant(workspace, id).await.unwrap().expect("kept").revoked_at }
    };
    assert_eq!(revoked_at(by_agent).await, Some(T0 + 3), "the revoked agent's grant");
    assert_eq!(revoked_at(by_credential).await, Some(T0 + 3), "the deleted credential's grant");
    assert_eq!(revoked_at(untouched).await, None, "other grants stay");
    broker.stop().await;
}

#[tokio::test]
async fn agent_credential_and_grant_changes_are_recorded_in_the_audit_log() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let credential = shared_credential(&broker, &admin, "github").await;
    let (agent, token) = create_agent(&broker, &admin, "bot").await;
    let grant = GrantId::random();
    assert_eq!(
        post(&broker, &admin, "/v1/grants", Some(&grant_body(grant, agent, credential))).await.0,
        201
    );
    assert_eq!(delete(&broker, &admin, &format!("/v1/grants/{grant}")).await.0, 204);
    assert_eq!(delete(&broker, &admin, &format!("/v1/agents/{agent}")).await.0, 204);
    assert_eq!(delete(&broker, &admin, &format!("/v1/credentials/{credential}")).await.0, 204);

    let (status, log) = get(&broker, &admin, "/v1/audit?order=oldest_first").await;
    assert_eq!(status, 200, "{log}");
    let records: Vec<&Value> = log["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["record"])
        .filter(|r| r["kind"] != "workspace_created")
        .collect();
    let kinds: Vec<&str> = records.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "credential_created",
            "agent_created",
            "grant_created",
            "grant_revoked",
            "agent_revoked",
            "credential_deleted"
        ],
        "each action leaves one record, in order: {log}"
    );
    for record in &records {
        assert_eq!(record["device"], json!(admin.id), "the acting device is recorded: {record}");
        assert_eq!(record["member"], json!(admin.member), "and its member: {record}");
    }
    assert_eq!(records[0]["credential_name"], "github", "credentials by name, never by value");
    assert_eq!(records[1]["agent"], json!(agent));
    assert!(!log.to_string().contains(token.expose_secret()), "no token in the audit log");
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

async fn create_agent(
    broker: &TestBroker,
    device: &TestDevice,
    name: &str,
) -> (AgentId, AgentToken) {
    let (status, body) = post(broker, device, "/v1/agents", Some(&json!({"name": name}))).await;
    assert_eq!(status, 201, "agent creation: {body}");
    let id = serde_json::from_value(body["id"].clone()).expect("agent id");
    (id, AgentToken::parse(body["token"].as_str().expect("token")).expect("token"))
}

async fn shared_credential(broker: &TestBroker, admin: &TestDevice, name: &str) -> CredentialId {
    let id = CredentialId::random();
    let key = admin.workspace_key.as_ref().unwrap().record_key(id).unwrap();
    credential(broker, admin, id, name, "shared", &Envelope::seal(&key, b"secret").unwrap()).await
}

async fn personal_credential(broker: &TestBroker, device: &TestDevice, name: &str) -> CredentialId {
    let id = CredentialId::random();
    let key = device.member_key.as_ref().unwrap().record_key(id).unwrap();
    let envelope = Envelope::seal(&key, b"secret").unwrap();
    assert_eq!(key.scope().owner, Owner::Member(device.member));
    credential(broker, device, id, name, "me", &envelope).await
}

async fn credential(
    broker: &TestBroker,
    device: &TestDevice,
    id: CredentialId,
    name: &str,
    owner: &str,
    envelope: &Envelope,
) -> CredentialId {
    let body = json!({
        "id": id, "name": name, "provider": "github", "upstream_base_url": "https://api.github.com",
        "allowed_hosts": ["api.github.com"], "owner": owner, "key_version": 1,
        "envelope": b64(envelope.as_bytes()),
    });
    let (status, answer) = post(broker, device, "/v1/credentials", Some(&body)).await;
    assert_eq!(status, 201, "credential creation: {answer}");
    id
}

fn grant_body(id: GrantId, agent: AgentId, credential: CredentialId) -> Value {
    json!({
        "id": id, "agent": agent, "credential": credential,
        "methods": ["POST", "GET"], "path_patterns": ["/repos/*/issues/**"],
        "expires_at": T0 + DAY,
    })
}

async fn get(broker: &TestBroker, device: &TestDevice, path: &str) -> (u16, Value) {
    TestBroker::send(broker.signed(device, "GET", path, None)).await
}

async fn post(
    broker: &TestBroker,
    device: &TestDevice,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    TestBroker::send(broker.signed(device, "POST", path, body)).await
}

async fn delete(broker: &TestBroker, device: &TestDevice, path: &str) -> (u16, Value) {
    TestBroker::send(broker.signed(device, "DELETE", path, None)).await
}

fn code(answer: &Value) -> &str {
    answer["code"].as_str().unwrap_or("")
}

fn agent_ids(list: &Value) -> Vec<AgentId> {
    list["agents"]
        .as_array()
        .expect("an agent list")
        .iter()
        .map(|a| serde_json::from_value(a["id"].clone()).unwrap())
        .collect()
}

async fn open_store(broker: &TestBroker) -> Store {
    broker.store().await
}

/// Everything the database holds at rest: the SQLite file with its WAL and shared-memory files,
/// or every PostgreSQL table's contents.
async fn database_bytes(broker: &TestBroker) -> Vec<u8> {
    let all: Vec<u8> =
        broker.stored_bytes().await.into_iter().flat_map(|(_, bytes)| bytes).collect();
    assert!(!all.is_empty(), "the database has contents");
    all
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn removing_a_member_revokes_her_agents_and_deletes_the_personal_credentials_no_one_can_open()
{
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let grace = insert_member(&broker, &admin, "member").await;
    let (_, token) = create_agent(&broker, &grace, "grace-bot").await;
    personal_credential(&broker, &grace, "github").await;
    let path = format!("/v1/members/{}", grace.member);
    let (status, removed) = delete(&broker, &admin, &path).await;
    assert_eq!(status, 200, "{removed}");
    assert_eq!(
        (removed["agents_revoked"].as_u64(), removed["personal_credentials_deleted"].as_u64()),
        (Some(1), Some(1)),
        "the removal says what went with her: {removed}"
    );

    let store = open_store(&broker).await;
    let found = store.agent_by_token_hash(&token.hash()).await.unwrap().expect("kept, revoked");
    assert!(found.revoked_at.is_some(), "her agent's token no longer works");
    assert!(
        store.credential_by_name(admin.workspace, "github").await.unwrap().is_none(),
        "her personal credential is gone: sealed under her member key, no one could open it"
    );
    shared_credential(&broker, &admin, "github").await;

    let (_, log) = get(&broker, &admin, "/v1/audit?order=oldest_first").await;
    let tail: Vec<(String, String)> = log["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let field = |k: &str| r["record"][k].as_str().unwrap_or("-").to_owned();
            (field("kind"), field("subject"))
        })
        .skip_while(|(kind, _)| kind != "member_removed")
        .take(3)
        .collect();
    let who = grace.member.to_string();
    assert_eq!(
        tail,
        [
            ("member_removed".to_owned(), who.clone()),
            ("agent_revoked".to_owned(), who.clone()),
            ("credential_deleted".to_owned(), who),
        ],
        "each thing that went with her is on the chain: {log}"
    );
    broker.stop().await;
}
