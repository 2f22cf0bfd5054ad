//! The operations a member runs day to day, against a real broker on loopback: credential
//! metadata and status, OAuth tokens sealed with their refresh data, single-use capabilities,
//! agent tokens regenerated, policies set, checked and refused with Cedar's problems, and members
//! and devices promoted and removed.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "the helpers in this file are test code too; a panic is the failure report"
)]

use crate::common;

use common::{Machine, TestBroker, upstream};
use latchkey_client::access::{
    AccessError, CredentialChanges, NewApiKey, NewOAuthCredential, SingleUseTerms, add_api_key,
    add_oauth_credential, find_credential, issue_single_use, set_credential_status,
    update_credential,
};
use latchkey_client::api::{
    BrokerClient, ClientError, CredentialStatus, Decision, Expected, GrantKind, InviteFor,
    NewPolicy, PolicyId, Role, codes,
};
use latchkey_client::policies::{CallToCheck, PolicyError, check_call, set_policy};
use latchkey_client::workspace::{
    Joining, admit_device, broker_client, create_workspace, join_workspace, receive_keys,
};
use latchkey_core::capability::Method;
use latchkey_core::ids::{KeyVersion, Owner};
use latchkey_core::payload::{CredentialKind, CredentialPayload, Injection, OAuthRefresh};
use latchkey_core::secret::SecretBytes;

const API_KEY: &str = "sk-ops-canary-5be0c7a41d93";
const ACCESS_TOKEN: &str = "ya29.ops-canary-access-8f2e";
const REFRESH_TOKEN: &str = "1//ops-canary-refresh-41ac";

/// Ada's workspace on a fresh broker, with a shared API key `models` for a loopback upstream.
async fn workspace_with_key(broker: &TestBroker, upstream_base: &str) -> (Machine, BrokerClient) {
    let ada = Machine::new("ada");
    create_workspace(&ada.profile, &ada.store, &broker.url, "Acme", "Ada", "laptop", None)
        .await
        .unwrap();
    let host = upstream_base.trim_start_matches("http://").to_owned();
    add_api_key(
        &ada.profile,
        &ada.store,
        NewApiKey {
            name: "models",
            provider: "custom-api-key",
            base_url: upstream_base,
            allowed_hosts: std::slice::from_ref(&host),
            injection: Injection::bearer(),
            shared: true,
            key: SecretBytes::copy_from(API_KEY.as_bytes()),
            account: None,
        },
    )
    .await
    .expect("an admin stores a shared API key");
    let client = broker_client(&ada.profile, &ada.store).await.unwrap();
    (ada, client)
}

fn api_code(error: &ClientError) -> &str {
    error.api().map_or("(no broker error)", |e| e.code.as_str())
}

#[tokio::test]
async fn credential_metadata_changes_and_status_leave_the_secret_sealed_and_readable() {
    let broker = TestBroker::start().await;
    let (ada, client) = workspace_with_key(&broker, "http://127.0.0.1:9").await;
    let before = find_credential(&client, "models").await.unwrap();
    let (_, sealed_before) = client.credential_envelope(before.id).await.unwrap();

    let hosts = vec!["127.0.0.1:9".to_owned(), "localhost:9".to_owned()];
    let updated = update_credential(
        &client,
        "models",
        &CredentialChanges {
            name: Some("llm"),
            allowed_hosts: Some(&hosts),
            account: Some(Some("\u{202e}ops@acme.example ")),
            ..CredentialChanges::default()
        },
    )
    .await
    .expect("an admin renames a shared credential");
    assert_eq!(
        updated.account.as_deref(),
        Some("ops@acme.example"),
        "the account name is stored without its reordering character and trailing space"
    );
    assert_eq!(
        (updated.id, updated.name.as_str()),
        (before.id, "llm"),
        "same credential, new name"
    );
    assert_eq!(updated.allowed_hosts, hosts);
    assert_eq!(updated.revision, before.revision + 1, "every change is a new revision");
    assert_eq!(updated.upstream_base_url, before.upstream_base_url, "untouched fields stay");
    assert_eq!(client.credential(before.id).await.unwrap(), updated, "show answers the same");

    // The envelope went back unopened and still opens to the same key on this device.
    let (version, sealed_after) = client.credential_envelope(before.id).await.unwrap();
    assert_eq!(sealed_after.as_bytes(), sealed_before.as_bytes(), "the secret was not re-sealed");
    let workspace = ada.profile.load_config().unwrap().workspace;
    let key = ada.store.load_workspace_key(workspace, version).unwrap();
    let opened = sealed_after.open(&key.record_key(before.id).unwrap()).unwrap();
    let payload = CredentialPayload::decode(opened.expose_secret()).unwrap();
    assert_eq!(payload.secret.expose_secret(), API_KEY.as_bytes());

    let off = set_credential_status(&client, "llm", CredentialStatus::Disabled).await.unwrap();
    assert_eq!(off.status, CredentialStatus::Disabled);
    assert_eq!(off.account.as_deref(), Some("ops@acme.example"), "a status change keeps it");
    let renamed = CredentialChanges { name: Some("llm2"), ..CredentialChanges::default() };
    let kept = update_credential(&client, "llm", &renamed).await.unwrap();
    assert_eq!(kept.account, off.account, "a change that does not name the account keeps it");
    let back = CredentialChanges { name: Some("llm"), account: Some(None), ..Default::default() };
    let cleared = update_credential(&client, "llm2", &back).await.unwrap();
    assert_eq!(cleared.account, None, "`Some(None)` forgets it");
    let on = set_credential_status(&client, "llm", CredentialStatus::Active).await.unwrap();
    assert_eq!(on.status, CredentialStatus::Active);

    // The old name is gone; names are checked by the broker.
    let unknown = update_credential(&client, "models", &CredentialChanges::default()).await;
    assert!(
        matches!(unknown, Err(AccessError::UnknownCredential(ref n)) if n == "models"),
        "the old name no longer resolves: {unknown:?}"
    );
    let bad = update_credential(
        &client,
        "llm",
        &CredentialChanges { name: Some("Not A Name"), ..CredentialChanges::default() },
    )
    .await
    .unwrap_err();
    let AccessError::Broker(bad) = bad else { panic!("the broker judges names: {bad:?}") };
    assert_eq!(api_code(&bad), codes::INVALID_REQUEST, "{bad}");
    broker.stop().await;
}

#[tokio::test]
async fn an_oauth_token_is_sealed_with_its_refresh_data_under_the_member_key() {
    let broker = TestBroker::start().await;
    let ada = Machine::new("ada");
    create_workspace(&ada.profile, &ada.store, &broker.url, "Acme", "Ada", "laptop", None)
        .await
        .unwrap();
    let scopes = vec!["repo".to_owned(), "read:org".to_owned()];
    let stored = add_oauth_credential(
        &ada.profile,
        &ada.store,
        NewOAuthCredential {
            name: "github",
            provider: "github",
            base_url: "https://api.github.com",
            allowed_hosts: &["api.github.com".to_owned()],
            injection: Injection::bearer(),
            shared: false,
            scopes: &scopes,
            access_token: SecretBytes::copy_from(ACCESS_TOKEN.as_bytes()),
            expires_at: Some(4_000_000_000),
            refresh: Some(OAuthRefresh {
                refresh_token: SecretBytes::copy_from(REFRESH_TOKEN.as_bytes()),
                token_endpoint: "https://github.com/login/oauth/access_token".to_owned(),
                client_id: "Iv1.latchkey".to_owned(),
                client_secret: None,
            }),
            account: None,
        },
    )
    .await
    .expect("a member stores a personal OAuth connection");
    let config = ada.profile.load_config().unwrap();
    assert_eq!(stored.owner, Owner::Member(config.member), "personal: under the member key");
    assert_eq!(stored.scopes, scopes);
    assert_eq!(stored.expires_hint, None, "a refreshable token does not expire for the user");

    let client = broker_client(&ada.profile, &ada.store).await.unwrap();
    let listing = serde_json::to_string(&client.credentials().await.unwrap()).unwrap();
    for secret in [ACCESS_TOKEN, REFRESH_TOKEN] {
        assert!(!listing.contains(secret), "metadata never carries a token");
    }
    let (version, envelope) = client.credential_envelope(stored.id).await.unwrap();
    assert_eq!(version, KeyVersion::FIRST);
    let member_key = ada.store.load_member_key(config.workspace, config.member, version).unwrap();
    let opened = envelope.open(&member_key.record_key(stored.id).unwrap()).unwrap();
    let payload = CredentialPayload::decode(opened.expose_secret()).unwrap();
    assert_eq!(payload.secret.expose_secret(), ACCESS_TOKEN.as_bytes());
    let CredentialKind::OAuth { expires_at, refresh: Some(refresh) } = payload.kind else {
        panic!("an OAuth payload with refresh data");
    };
    assert_eq!(expires_at, Some(4_000_000_000));
    assert_eq!(refresh.refresh_token.expose_secret(), REFRESH_TOKEN.as_bytes());
    assert_eq!(refresh.token_endpoint, "https://github.com/login/oauth/access_token");
    assert_eq!(refresh.client_id, "Iv1.latchkey");
    assert!(
        workspace_key_cannot_open(&ada, &envelope, stored.id, config.workspace),
        "a personal credential is not under the workspace key"
    );
    broker.stop().await;
}

fn workspace_key_cannot_open(
    machine: &Machine,
    envelope: &latchkey_core::envelope::Envelope,
    id: latchkey_core::ids::CredentialId,
    workspace: latchkey_core::ids::WorkspaceId,
) -> bool {
    let wk = machine.store.load_workspace_key(workspace, KeyVersion::FIRST).unwrap();
    envelope.open(&wk.record_key(id).unwrap()).is_err()
}

#[tokio::test]
async fn a_single_use_capability_carries_one_call_and_a_regenerated_token_replaces_the_old() {
    let broker = TestBroker::start().await;
    let (base, seen) = upstream().await;
    let (ada, client) = workspace_with_key(&broker, &base).await;
    let agent = client.create_agent("one-shot").await.unwrap();
    let issue = |method: Method, path: &'static str, lifetime_secs: u64| {
        issue_single_use(
            &ada.profile,
            &ada.store,
            SingleUseTerms {
                agent: agent.agent.id,
                credential: "models",
                method,
                path,
                lifetime_secs,
            },
        )
    };
    let capability = issue(Method::Get, "/v1/models", 300).await.expect("a single-use capability");
    assert!(
        !format!("{capability:?}").contains(capability.expose_secret()),
        "Debug redacts the capability"
    );
    let http = reqwest::Client::new();
    let call = |token: &str, capability: &str, path: &str| {
        http.get(format!("{}/p/models{path}", broker.url.as_str()))
            .bearer_auth(token)
            .header("latchkey-capability", capability)
            .send()
    };
    let token = agent.token.expose_secret();
    let first = call(token, capability.expose_secret(), "/v1/models").await.unwrap();
    assert_eq!(first.status(), 200, "the one call goes through");
    let second = call(token, capability.expose_secret(), "/v1/models").await.unwrap();
    assert_eq!(second.status(), 403, "the same capability is refused a second time");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "only the first call reached the upstream");
        assert!(seen[0].contains(API_KEY), "the upstream received the real key");
        assert!(!seen[0].contains(token), "and never the agent token");
    }
    let other_path = issue(Method::Get, "/v1/models", 300).await.unwrap();
    let refused = call(token, other_path.expose_secret(), "/v1/files").await.unwrap();
    assert_eq!(refused.status(), 403, "a capability opens only its own path");

    for lifetime in [0, 901] {
        let err = issue(Method::Get, "/v1/models", lifetime).await.unwrap_err();
        assert!(
            matches!(err, AccessError::InvalidGrant(ref m) if m.contains("15 minutes")),
            "{lifetime}s is refused on the device: {err}"
        );
    }
    let err = issue(Method::Get, "no-slash", 60).await.unwrap_err();
    assert!(matches!(err, AccessError::InvalidGrant(_)), "a bad path is refused: {err}");

    // Regenerating the token: the old one stops at once, the new one works.
    let renewed = client.regenerate_agent_token(agent.agent.id).await.unwrap();
    assert_eq!(renewed.agent.id, agent.agent.id);
    let fresh = issue(Method::Get, "/v1/models", 300).await.unwrap();
    let old = call(token, fresh.expose_secret(), "/v1/models").await.unwrap();
    assert_eq!(old.status(), 401, "the old token is refused");
    let new = call(renewed.token.expose_secret(), fresh.expose_secret(), "/v1/models").await;
    assert_eq!(new.unwrap().status(), 200, "the new token works with a fresh capability");
    client.revoke_agent(agent.agent.id).await.unwrap();
    let err = client.regenerate_agent_token(agent.agent.id).await.unwrap_err();
    assert_eq!(api_code(&err), codes::CONFLICT, "a revoked agent gets no new token: {err}");
    broker.stop().await;
}

#[tokio::test]
async fn policies_are_set_checked_and_removed_and_a_bad_one_comes_back_with_cedars_problems() {
    let broker = TestBroker::start().await;
    let (_ada, client) = workspace_with_key(&broker, "http://127.0.0.1:9").await;
    let agent = client.create_agent("checker").await.unwrap().agent.id;
    let defaults = client.policies().await.unwrap();
    let ids: Vec<&str> = defaults.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["forbid-foreign-personal-credentials", "permit-granted-calls"]);

    let check = |method: Method, grant: GrantKind| {
        let client = &client;
        async move {
            check_call(
                client,
                &CallToCheck {
                    agent,
                    credential: "models",
                    method,
                    path: "/v1/models",
                    host: None,
                    grant,
                    at: None,
                },
            )
            .await
            .expect("a check")
        }
    };
    assert_eq!(check(Method::Delete, GrantKind::Standing).await.decision, Decision::Allow);
    assert_eq!(
        check(Method::Get, GrantKind::None).await.decision,
        Decision::ApprovalRequired,
        "without a capability the default policies ask the owner"
    );

    let id: PolicyId = "no-deletes".parse().unwrap();
    let source = "forbid (principal, action == Latchkey::Action::\"DELETE\", resource);";
    let saved = set_policy(
        &client,
        &id,
        &NewPolicy {
            source,
            description: "Nothing is ever deleted.",
            enabled: true,
            expected: Expected::Absent,
        },
    )
    .await
    .expect("an admin sets a valid policy");
    assert!(saved.created, "a new policy");
    let read = Expected::Revision(saved.policy.revision);
    let edit = NewPolicy { source, description: "", enabled: true, expected: read };
    let again = set_policy(&client, &id, &edit).await.expect("the revision read is current");
    assert!(!again.created, "the same id replaces it");
    let stale = set_policy(&client, &id, &edit).await.unwrap_err();
    assert!(
        matches!(&stale, PolicyError::Broker(ClientError::Api(e)) if e.is(codes::CONFLICT)),
        "an edit of a revision already replaced is refused as a conflict: {stale:?}"
    );
    let stale_delete = client.delete_policy(&id, Some(saved.policy.revision)).await.unwrap_err();
    assert!(
        matches!(&stale_delete, ClientError::Api(e) if e.is(codes::CONFLICT)),
        "a deletion of a revision already replaced is refused: {stale_delete:?}"
    );
    let denied = check(Method::Delete, GrantKind::Standing).await;
    assert_eq!(denied.decision, Decision::Deny);
    assert_eq!(denied.policies, ["no-deletes"], "the forbid that decided is named");

    let refused = set_policy(
        &client,
        &"broken".parse().unwrap(),
        &NewPolicy {
            source: "permit (principal, action, resource)\nwhen { resource.nope };",
            description: "",
            enabled: true,
            expected: Expected::Anything,
        },
    )
    .await
    .unwrap_err();
    let PolicyError::Refused { problems } = &refused else {
        panic!("an invalid policy is refused with its problems: {refused:?}");
    };
    assert!(!problems.is_empty());
    assert!(
        problems.iter().any(|p| p.line.is_some() && p.column.is_some()),
        "problems point at a line and column: {problems:?}"
    );
    assert!(refused.to_string().contains("fix the source"), "{refused}");
    assert_eq!(client.policies().await.unwrap().len(), 3, "nothing was stored for it");

    client.delete_policy(&id, Some(again.policy.revision)).await.expect("the current revision");
    let err = client.delete_policy(&id, None).await.unwrap_err();
    assert_eq!(api_code(&err), codes::NOT_FOUND, "{err}");
    assert_eq!(check(Method::Delete, GrantKind::Standing).await.decision, Decision::Allow);
    assert!("check".parse::<PolicyId>().is_err(), "`check` is the tester's path");
    assert!("-x".parse::<PolicyId>().is_err() && "a b".parse::<PolicyId>().is_err());

    let unknown = check_call(
        &client,
        &CallToCheck {
            agent,
            credential: "nothing",
            method: Method::Get,
            path: "/",
            host: None,
            grant: GrantKind::None,
            at: None,
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(unknown, PolicyError::Access(AccessError::UnknownCredential(_))),
        "{unknown:?}"
    );
    broker.stop().await;
}

#[tokio::test]
async fn members_are_promoted_and_removed_and_the_last_admin_is_kept() {
    let broker = TestBroker::start().await;
    let ada = Machine::new("ada");
    let created =
        create_workspace(&ada.profile, &ada.store, &broker.url, "Acme", "Ada", "laptop", None)
            .await
            .unwrap();
    let client = broker_client(&ada.profile, &ada.store).await.unwrap();
    let code = client.create_invite(InviteFor::NewMember(Role::Member), None).await.unwrap().code;
    let grace = Machine::new("grace");
    let joined = join_workspace(
        &grace.profile,
        &grace.store,
        &broker.url,
        &code,
        &Joining::NewMember { name: "Grace".into() },
        "Grace's laptop",
    )
    .await
    .unwrap();
    let admitted =
        admit_device(&ada.profile, &ada.store, joined.device, &joined.fingerprint).await.unwrap();
    receive_keys(&grace.profile, &grace.store, Some(&admitted.fingerprint)).await.unwrap();

    let err = client.set_member_role(created.member, Role::Member).await.unwrap_err();
    assert_eq!(api_code(&err), codes::CONFLICT, "the last admin cannot be demoted: {err}");
    client.set_member_role(joined.member, Role::Admin).await.expect("promote Grace");
    let members = client.members().await.unwrap();
    let grace_row = members.iter().find(|m| m.id == joined.member).unwrap();
    assert_eq!(grace_row.role, Role::Admin);
    client.set_member_role(joined.member, Role::Member).await.expect("and back");

    let grace_client = broker_client(&grace.profile, &grace.store).await.unwrap();
    let err = grace_client.remove_member(created.member).await.unwrap_err();
    assert_eq!(api_code(&err), codes::FORBIDDEN, "members do not remove members: {err}");

    let removal = client.remove_device(joined.device).await.expect("an admin removes a device");
    assert_eq!(removal.devices_removed, 1);
    assert!(removal.rotation_recommended, "it held the workspace key");
    let err = grace_client.me().await.unwrap_err();
    assert_eq!(api_code(&err), codes::UNKNOWN_DEVICE, "a removed device is refused: {err}");
    let removal = client.remove_member(joined.member).await.expect("remove Grace");
    assert_eq!(removal.devices_removed, 0, "her only device was already removed");
    assert_eq!(client.members().await.unwrap().len(), 1);
    let err = client.remove_member(joined.member).await.unwrap_err();
    assert_eq!(api_code(&err), codes::NOT_FOUND, "{err}");
    broker.stop().await;
}

#[tokio::test]
async fn a_device_over_the_brokers_rate_limit_is_told_how_long_to_wait() {
    let broker = TestBroker::start_rate_limited(1, 3).await;
    let ada = Machine::new("ada");
    create_workspace(&ada.profile, &ada.store, &broker.url, "Acme", "Ada", "laptop", None)
        .await
        .expect("creating the workspace spends nothing of the device's budget");
    let client = broker_client(&ada.profile, &ada.store).await.unwrap();
    // Three at once fit the burst; a fourth at once does not (one comes back each second).
    let mut answered = 0;
    let error = loop {
        match client.me().await {
            Ok(_) => answered += 1,
            Err(error) => break error,
        }
        assert!(answered <= 6, "the broker keeps answering past its burst of 3");
    };
    assert!(answered >= 3, "the burst is answered in full: {answered}");
    let ClientError::RateLimited { retry_after } = error else {
        panic!("429 rate_limited is its own error, with the wait: {error:?}")
    };
    assert_eq!(retry_after, std::time::Duration::from_secs(1), "the broker's Retry-After");
    let shown = error.to_string();
    assert!(shown.contains("wait 1 second and try again"), "{shown}");
    assert!(error.api().is_none(), "not a generic refusal to branch on by code");
    broker.stop().await;
}
