//! Per-workspace limits: a workspace holds at most so many active agents, credentials, pending
//! invites, members and policies, an agent at most so many live grants, a member at most so many
//! devices. A creation at a limit is refused with `409 limit_reached` and a message that names
//! the limit and the way back under it, and writes nothing; rows that no longer do anything
//! (revoked, expired, used, removed) do not count; concurrent creations cannot overshoot.
//!
//! Each test fills its workspace to just below a limit straight in the database (a thousand API
//! calls would make the tests slow), then takes the last steps through the API.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "the helpers at the end of this file are test code too; a panic is the failure report"
)]

use crate::common;

use common::{
    LogCapture, TestBroker, TestDevice, b64, database, insert_device, insert_member,
    workspace_with_admin,
};
use latchkey_core::envelope::Envelope;
use latchkey_core::ids::{AgentId, CredentialId, DeviceId, GrantId, InviteId, MemberId};
use latchkey_core::keys::BrokerSecretKey;
use latchkey_server::Broker;
use latchkey_server::policy::MAX_POLICIES;
use latchkey_server::store::agents::{MAX_ACTIVE_AGENTS, MAX_LIVE_GRANTS_PER_AGENT};
use latchkey_server::store::credentials::MAX_CREDENTIALS;
use latchkey_server::store::members::{MAX_DEVICES_PER_MEMBER, MAX_MEMBERS, MAX_PENDING_INVITES};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const DAY: u64 = 24 * 60 * 60;

// ---------------------------------------------------------------------------------------------
// Agents and grants
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_workspace_holds_at_most_so_many_active_agents_and_a_revoked_one_makes_room() {
    let logs = LogCapture::default();
    // This test's runtime is single-threaded, so the broker's tasks log through this capture.
    let _guard = logs.install();
    let broker = TestBroker::start_with(|store, clock, _| {
        Broker::new(store, BrokerSecretKey::generate().expect("broker key")).with_clock(clock)
    })
    .await;
    let admin = workspace_with_admin(&broker).await;
    insert_agents(&broker, &admin, 5, Revoked::Yes).await;
    let filler = insert_agents(&broker, &admin, MAX_ACTIVE_AGENTS - 1, Revoked::No).await;

    let (status, body) = create_agent(&broker, &admin, "last").await;
    assert_eq!(
        status, 201,
        "one below the limit, revoked agents not counted, one more fits: {body}"
    );
    let (status, body) = create_agent(&broker, &admin, "one too many").await;
    assert_limit(
        status,
        &body,
        &format!("at most {MAX_ACTIVE_AGENTS} active agents"),
        "agent revoke",
    );
    assert_eq!(
        count(&broker, "SELECT count(*) FROM agents WHERE workspace_id = $1", &admin).await,
        rows(MAX_ACTIVE_AGENTS + 5),
        "a refused creation writes no agent"
    );
    let member = insert_member(&broker, &admin, "member").await;
    let (status, body) = create_agent(&broker, &member, "another member's").await;
    assert_limit(status, &body, "active agents", "agent revoke");

    let (status, body) = delete(&broker, &admin, &format!("/v1/agents/{}", filler[0])).await;
    assert_eq!(status, 204, "revoking an agent at the limit works: {body}");
    let (status, body) = create_agent(&broker, &member, "in its place").await;
    assert_eq!(status, 201, "a revoked agent no longer counts, so one more fits: {body}");
    broker.stop().await;

    let text = logs.text();
    let refusals: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["fields"]["message"] == "creation refused at a limit")
        .collect();
    assert_eq!(refusals.len(), 2, "one line per refusal:\n{text}");
    let last = &refusals[1];
    assert_eq!(last["level"], "WARN", "{last}");
    assert_eq!(
        (&last["fields"]["limit"], &last["fields"]["device"], &last["fields"]["workspace"]),
        (&json!("agents"), &json!(member.id), &json!(member.workspace)),
        "the line names the limit and the device that ran into it, so a looping device is found"
    );
}

#[tokio::test]
async fn two_agents_created_at_once_at_one_below_the_limit_give_exactly_one_agent() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let member = insert_member(&broker, &admin, "member").await;
    let mut filler = insert_agents(&broker, &admin, MAX_ACTIVE_AGENTS - 1, Revoked::No).await;
    // A few rounds, each from one below the limit: a check outside the inserting transaction
    // (or outside the write lock) lets both through in some of them.
    for round in 0..4 {
        let ((a, body_a), (b, body_b)) = tokio::join!(
            create_agent(&broker, &admin, "racer a"),
            create_agent(&broker, &member, "racer b"),
        );
        let mut statuses = [a, b];
        statuses.sort_unstable();
        assert_eq!(
            statuses,
            [201, 409],
            "round {round}: exactly one of two concurrent creations fits the last place: {body_a} {body_b}"
        );
        let refused = if a == 409 { &body_a } else { &body_b };
        assert_limit(409, refused, "active agents", "agent revoke");
        assert_eq!(
            count(&broker, ACTIVE_AGENTS, &admin).await,
            rows(MAX_ACTIVE_AGENTS),
            "round {round}: the workspace is at its limit, not past it"
        );
        let (status, body) =
            delete(&broker, &admin, &format!("/v1/agents/{}", filler.pop().unwrap())).await;
        assert_eq!(status, 204, "{body}");
    }
    broker.stop().await;
}

#[tokio::test]
async fn an_agent_holds_at_most_so_many_live_grants_and_an_expired_or_revoked_one_makes_room() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let agent = agent_id(&create_agent(&broker, &admin, "busy").await);
    let other = agent_id(&create_agent(&broker, &admin, "quiet").await);
    let credential = shared_credential(&broker, &admin, "github").await;
    let t0 = now(&broker);
    // Revoked and expired grants stay listed as history but must not count.
    insert_grants(&broker, &admin, agent, credential, 3, t0 + DAY, Some(t0)).await;
    insert_grants(&broker, &admin, agent, credential, 3, t0, None).await;
    insert_grants(&broker, &admin, agent, credential, 1, t0 + 60, None).await;
    let live = insert_grants(
        &broker,
        &admin,
        agent,
        credential,
        MAX_LIVE_GRANTS_PER_AGENT - 2,
        t0 + DAY,
        None,
    )
    .await;

    let (status, body) = create_grant(&broker, &admin, agent, credential).await;
    assert_eq!(status, 201, "one below the limit, revoked and expired not counted: {body}");
    let before =
        count(&broker, "SELECT count(*) FROM grants WHERE workspace_id = $1", &admin).await;
    let (status, body) = create_grant(&broker, &admin, agent, credential).await;
    assert_limit(
        status,
        &body,
        &format!("at most {MAX_LIVE_GRANTS_PER_AGENT} live grants"),
        "grant revoke",
    );
    assert_eq!(
        count(&broker, "SELECT count(*) FROM grants WHERE workspace_id = $1", &admin).await,
        before,
        "a refused grant writes nothing"
    );
    let (status, body) = create_grant(&broker, &admin, other, credential).await;
    assert_eq!(status, 201, "the limit is per agent: another agent still gets grants: {body}");

    broker.clock.advance(61);
    let (status, body) = create_grant(&broker, &admin, agent, credential).await;
    assert_eq!(status, 201, "a grant that expired no longer counts: {body}");
    let (status, body) = create_grant(&broker, &admin, agent, credential).await;
    assert_limit(status, &body, "live grants", "grant revoke");
    let (status, body) = delete(&broker, &admin, &format!("/v1/grants/{}", live[0])).await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = create_grant(&broker, &admin, agent, credential).await;
    assert_eq!(status, 201, "a revoked grant no longer counts: {body}");
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Credentials and policies
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_workspace_holds_at_most_so_many_credentials_shared_and_personal_together() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let member = insert_member(&broker, &admin, "member").await;
    insert_credentials(&broker, &admin, Some(member.member), 10).await;
    insert_credentials(&broker, &admin, None, MAX_CREDENTIALS - 11).await;

    let last = shared_credential(&broker, &admin, "last").await;
    let (status, body) = post_credential(&broker, &admin, "one-too-many", "shared").await;
    assert_limit(
        status,
        &body,
        &format!("at most {MAX_CREDENTIALS} credentials"),
        "credential remove",
    );
    let (status, body) = post_credential(&broker, &member, "mine", "me").await;
    assert_limit(status, &body, "credentials, shared and personal together", "credential remove");
    assert_eq!(
        count(&broker, "SELECT count(*) FROM credentials WHERE workspace_id = $1", &admin).await,
        rows(MAX_CREDENTIALS),
        "a refused credential is not stored"
    );

    let (status, body) = delete(&broker, &admin, &format!("/v1/credentials/{last}")).await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = post_credential(&broker, &member, "mine", "me").await;
    assert_eq!(status, 201, "a removed credential makes room: {body}");
    broker.stop().await;
}

#[tokio::test]
async fn a_workspace_holds_at_most_so_many_policies_and_replacing_one_still_works() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (status, body) = get(&broker, &admin, "/v1/policies").await;
    assert_eq!(status, 200, "{body}");
    let defaults = body["policies"].as_array().expect("the default policies").len();
    for i in defaults..MAX_POLICIES {
        let (status, body) = put_policy(&broker, &admin, &format!("p{i}")).await;
        assert_eq!(status, 201, "policy {i} of {MAX_POLICIES}: {body}");
    }

    let (status, body) = put_policy(&broker, &admin, "one-too-many").await;
    assert_limit(status, &body, &format!("at most {MAX_POLICIES} policies"), "policy remove");
    let (status, body) = get(&broker, &admin, "/v1/policies").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["policies"].as_array().map(Vec::len),
        Some(MAX_POLICIES),
        "a refused policy is not stored: {body}"
    );
    let (status, body) = put_policy(&broker, &admin, &format!("p{defaults}")).await;
    assert_eq!(status, 200, "replacing a policy at the limit adds none, so it works: {body}");

    let path = format!("/v1/policies/p{defaults}");
    let (status, body) = delete(&broker, &admin, &path).await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = put_policy(&broker, &admin, "one-too-many").await;
    assert_eq!(status, 201, "a deleted policy makes room: {body}");
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Invites, members and devices
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_workspace_holds_at_most_so_many_pending_invites_and_used_or_expired_ones_make_room() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let member = insert_member(&broker, &admin, "member").await;
    let t0 = now(&broker);
    // Used invites, expired ones and those of a removed device no longer admit anyone.
    insert_invites(&broker, &admin, 3, t0 + DAY, Some(t0)).await;
    insert_invites(&broker, &admin, 3, t0, None).await;
    let gone = insert_device(&broker, &admin).await;
    insert_invites(&broker, &gone, 3, t0 + DAY, None).await;
    let (status, body) = delete(&broker, &admin, &format!("/v1/devices/{}", gone.id)).await;
    assert_eq!(status, 200, "{body}");
    insert_invites(&broker, &admin, 1, t0 + 60, None).await;
    insert_invites(&broker, &admin, MAX_PENDING_INVITES - 2, t0 + DAY, None).await;

    let (status, last) = create_invite(&broker, &admin, json!({})).await;
    assert_eq!(status, 201, "one below the limit, dead invites not counted: {last}");
    let before =
        count(&broker, "SELECT count(*) FROM invites WHERE workspace_id = $1", &admin).await;
    let (status, body) = create_invite(&broker, &admin, json!({})).await;
    assert_limit(
        status,
        &body,
        &format!("at most {MAX_PENDING_INVITES} pending invites"),
        "latchkey invite revoke ID",
    );
    let (status, body) = create_invite(&broker, &member, json!({"member": member.member})).await;
    assert_limit(status, &body, "pending invites", "revoke unused ones (latchkey invite list");
    assert_eq!(
        count(&broker, "SELECT count(*) FROM invites WHERE workspace_id = $1", &admin).await,
        before,
        "a refused invite is not stored"
    );

    broker.clock.advance(61);
    let (status, body) = create_invite(&broker, &admin, json!({})).await;
    assert_eq!(status, 201, "an invite that expired no longer counts: {body}");
    let (status, body) = create_invite(&broker, &admin, json!({})).await;
    assert_limit(status, &body, "pending invites", "latchkey invite revoke ID");
    let joining = TestDevice::new(admin.workspace);
    let (status, body) = join(&broker, &joining, last["code"].as_str().unwrap(), Some("Lin")).await;
    assert_eq!(status, 201, "a pending invite at the limit is still usable: {body}");
    let (status, made) = create_invite(&broker, &admin, json!({})).await;
    assert_eq!(status, 201, "a used invite no longer counts: {made}");
    let (status, body) = create_invite(&broker, &admin, json!({})).await;
    assert_limit(status, &body, "pending invites", "latchkey invite revoke ID");
    let (status, body) =
        delete(&broker, &admin, &format!("/v1/invites/{}", made["id"].as_str().unwrap())).await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = create_invite(&broker, &admin, json!({})).await;
    assert_eq!(status, 201, "a revoked invite no longer counts: {body}");
    broker.stop().await;
}

#[tokio::test]
async fn a_workspace_holds_at_most_so_many_members_and_a_refused_join_keeps_its_code() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (status, first) = create_invite(&broker, &admin, json!({})).await;
    assert_eq!(status, 201, "{first}");
    let (status, second) = create_invite(&broker, &admin, json!({})).await;
    assert_eq!(status, 201, "{second}");
    insert_members(&broker, &admin, 2, Removed::Yes).await;
    let filler = insert_members(&broker, &admin, MAX_MEMBERS - 2, Removed::No).await;

    let grace = TestDevice::new(admin.workspace);
    let (status, body) =
        join(&broker, &grace, first["code"].as_str().unwrap(), Some("Grace")).await;
    assert_eq!(status, 201, "one below the limit, removed members not counted: {body}");
    let lin = TestDevice::new(admin.workspace);
    let code = second["code"].as_str().unwrap();
    let (status, body) = join(&broker, &lin, code, Some("Lin")).await;
    assert_limit(status, &body, &format!("at most {MAX_MEMBERS} members"), "member remove");
    assert_eq!(
        count(&broker, "SELECT count(*) FROM members WHERE workspace_id = $1", &admin).await,
        rows(MAX_MEMBERS + 2),
        "a refused join creates no member"
    );
    assert_eq!(
        count(&broker, "SELECT count(*) FROM devices WHERE workspace_id = $1", &admin).await,
        2,
        "nor a device"
    );
    let (status, body) = create_invite(&broker, &admin, json!({"role": "admin"})).await;
    assert_limit(status, &body, "members", "member remove");
    let (status, body) = create_invite(&broker, &admin, json!({"member": admin.member})).await;
    assert_eq!(status, 201, "a device invite adds no member, so it is not refused: {body}");

    let path = format!("/v1/members/{}", filler[0]);
    let (status, body) = delete(&broker, &admin, &path).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = join(&broker, &lin, code, Some("Lin")).await;
    assert_eq!(status, 201, "the refused code stays usable and a removal made room: {body}");
    broker.stop().await;
}

#[tokio::test]
async fn a_member_holds_at_most_so_many_devices_and_a_removed_one_makes_room() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let own = json!({"member": admin.member});
    let (status, first) = create_invite(&broker, &admin, own.clone()).await;
    assert_eq!(status, 201, "{first}");
    let (status, second) = create_invite(&broker, &admin, own.clone()).await;
    assert_eq!(status, 201, "{second}");
    let removed = insert_device(&broker, &admin).await;
    let (status, body) = delete(&broker, &admin, &format!("/v1/devices/{}", removed.id)).await;
    assert_eq!(status, 200, "{body}");
    let mut filler = Vec::new();
    for _ in 0..MAX_DEVICES_PER_MEMBER - 2 {
        filler.push(insert_device(&broker, &admin).await.id);
    }

    let laptop = TestDevice { member: admin.member, ..TestDevice::new(admin.workspace) };
    let (status, body) = join(&broker, &laptop, first["code"].as_str().unwrap(), None).await;
    assert_eq!(status, 201, "one below the limit, removed devices not counted: {body}");
    let phone = TestDevice { member: admin.member, ..TestDevice::new(admin.workspace) };
    let code = second["code"].as_str().unwrap();
    let (status, body) = join(&broker, &phone, code, None).await;
    assert_limit(
        status,
        &body,
        &format!("at most {MAX_DEVICES_PER_MEMBER} devices"),
        "device remove",
    );
    assert_eq!(
        count(&broker, ACTIVE_DEVICES, &admin).await,
        rows(MAX_DEVICES_PER_MEMBER),
        "a refused join enrols no device"
    );
    let (status, body) = create_invite(&broker, &admin, own).await;
    assert_limit(status, &body, "devices", "device remove");
    let (status, body) = create_invite(&broker, &admin, json!({})).await;
    assert_eq!(status, 201, "the limit is per member: a new member may still be invited: {body}");

    let (status, body) = delete(&broker, &admin, &format!("/v1/devices/{}", filler[0])).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = join(&broker, &phone, code, None).await;
    assert_eq!(status, 201, "the refused code stays usable and a removal made room: {body}");
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Documentation
// ---------------------------------------------------------------------------------------------

#[test]
fn the_limits_docs_api_md_states_are_the_ones_enforced() {
    let api = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md"))
        .expect("docs/api.md");
    for row in [
        format!("| active agents | {MAX_ACTIVE_AGENTS} per workspace |"),
        format!("| live grants | {MAX_LIVE_GRANTS_PER_AGENT} per agent |"),
        format!("| credentials | {MAX_CREDENTIALS} per workspace |"),
        format!("| pending invites | {MAX_PENDING_INVITES} per workspace |"),
        format!("| members | {MAX_MEMBERS} per workspace |"),
        format!("| devices | {MAX_DEVICES_PER_MEMBER} per member |"),
        format!("| policies | {MAX_POLICIES} per workspace |"),
    ] {
        assert!(api.contains(&row), "docs/api.md, \"Limits\", must say `{row}` as the broker does");
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Active agents of workspace `$1`.
const ACTIVE_AGENTS: &str =
    "SELECT count(*) FROM agents WHERE workspace_id = $1 AND revoked_at IS NULL";

/// Active devices of member `$2` of workspace `$1`.
const ACTIVE_DEVICES: &str = "SELECT count(*) FROM devices
     WHERE workspace_id = $1 AND member_id = $2 AND removed_at IS NULL";

/// A refusal at a limit: `409 limit_reached`, its message naming the limit (`limit`) and the way
/// back under it (`fix`, part of the CLI command it names).
#[track_caller]
fn assert_limit(status: u16, body: &Value, limit: &str, fix: &str) {
    assert_eq!(
        status, 409,
        "a creation at a limit is refused as a conflict with the state: {body}"
    );
    assert_eq!(body["code"], "limit_reached", "one stable code for every limit: {body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(limit), "the message names the limit ({limit}): {message}");
    assert!(message.contains(fix), "the message says how to get under it ({fix}): {message}");
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Revoked {
    Yes,
    No,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Removed {
    Yes,
    No,
}

fn now(broker: &TestBroker) -> u64 {
    latchkey_server::clock::Clock::now(&*broker.clock)
}

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap()
}

/// 32 bytes unlike any other, as a token or code hash is.
fn unique_hash() -> Vec<u8> {
    Sha256::digest(DeviceId::random().to_string()).to_vec()
}

/// What `sql` counts for `of`'s workspace (`$1`) and member (`$2`, if the statement names it).
async fn count(broker: &TestBroker, sql: &'static str, of: &TestDevice) -> i64 {
    let db = database(broker).await;
    let mut query = sqlx::query_scalar(sql).bind(of.workspace.to_string());
    if sql.contains("$2") {
        query = query.bind(of.member.to_string());
    }
    let n: i64 = query.fetch_one(&db).await.expect("count");
    db.close().await;
    n
}

/// `n` as a database count.
fn rows(n: usize) -> i64 {
    i64::try_from(n).unwrap()
}

/// `n` agents of `owner`'s member, revoked or not, written straight into the database.
async fn insert_agents(
    broker: &TestBroker,
    owner: &TestDevice,
    n: usize,
    revoked: Revoked,
) -> Vec<AgentId> {
    let db = database(broker).await;
    let mut tx = db.begin().await.unwrap();
    let t = as_i64(now(broker));
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let id = AgentId::random();
        sqlx::query(
            "INSERT INTO agents (workspace_id, id, name, owner_member_id, token_hash, created_at, revoked_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(owner.workspace.to_string())
        .bind(id.to_string())
        .bind(format!("filler {i}"))
        .bind(owner.member.to_string())
        .bind(unique_hash())
        .bind(t)
        .bind((revoked == Revoked::Yes).then_some(t))
        .execute(&mut *tx)
        .await
        .expect("insert agent");
        ids.push(id);
    }
    tx.commit().await.unwrap();
    db.close().await;
    ids
}

/// `n` grants of `agent` for `credential` issued by `by`, expiring at `expires_at`, revoked at
/// `revoked_at`, written straight into the database.
async fn insert_grants(
    broker: &TestBroker,
    by: &TestDevice,
    agent: AgentId,
    credential: CredentialId,
    n: usize,
    expires_at: u64,
    revoked_at: Option<u64>,
) -> Vec<GrantId> {
    let db = database(broker).await;
    let mut tx = db.begin().await.unwrap();
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let id = GrantId::random();
        sqlx::query(
            "INSERT INTO grants (workspace_id, id, agent_id, credential_id, issued_by_device, methods,
                 path_patterns, expires_at, created_at, revoked_at)
             VALUES ($1, $2, $3, $4, $5, '[\"GET\"]', '[\"/**\"]', $6, $7, $8)",
        )
        .bind(by.workspace.to_string())
        .bind(id.to_string())
        .bind(agent.to_string())
        .bind(credential.to_string())
        .bind(by.id.to_string())
        .bind(as_i64(expires_at))
        .bind(as_i64(now(broker)))
        .bind(revoked_at.map(as_i64))
        .execute(&mut *tx)
        .await
        .expect("insert grant");
        ids.push(id);
    }
    tx.commit().await.unwrap();
    db.close().await;
    ids
}

/// `n` credentials (shared, or `personal`'s), written straight into the database with an
/// envelope nobody can open.
async fn insert_credentials(
    broker: &TestBroker,
    of: &TestDevice,
    personal: Option<MemberId>,
    n: usize,
) {
    let db = database(broker).await;
    let mut tx = db.begin().await.unwrap();
    let t = as_i64(now(broker));
    for i in 0..n {
        sqlx::query(
            "INSERT INTO credentials (workspace_id, id, name, provider, upstream_base_url,
                 allowed_hosts, owner_member_id, key_version, status, envelope, created_at, updated_at)
             VALUES ($1, $2, $3, 'github', 'https://api.github.com', '[\"api.github.com\"]', $4, 1,
                 'active', $5, $6, $6)",
        )
        .bind(of.workspace.to_string())
        .bind(CredentialId::random().to_string())
        .bind(format!("filler-{}-{i}", personal.map_or("shared", |_| "personal")))
        .bind(personal.map(|m| m.to_string()))
        .bind(vec![0u8; 64])
        .bind(t)
        .execute(&mut *tx)
        .await
        .expect("insert credential");
    }
    tx.commit().await.unwrap();
    db.close().await;
}

/// `n` new-member invites made by `by`, expiring at `expires_at`, used at `used_at`, written
/// straight into the database.
async fn insert_invites(
    broker: &TestBroker,
    by: &TestDevice,
    n: usize,
    expires_at: u64,
    used_at: Option<u64>,
) {
    let db = database(broker).await;
    let mut tx = db.begin().await.unwrap();
    for _ in 0..n {
        sqlx::query(
            "INSERT INTO invites (workspace_id, code_hash, role, created_by, created_at, expires_at,
                 used_at, used_by_device, id)
             VALUES ($1, $2, 'member', $3, $4, $5, $6, $7, $8)",
        )
        .bind(by.workspace.to_string())
        .bind(unique_hash())
        .bind(by.id.to_string())
        .bind(as_i64(now(broker)))
        .bind(as_i64(expires_at))
        .bind(used_at.map(as_i64))
        .bind(used_at.map(|_| DeviceId::random().to_string()))
        .bind(InviteId::random().to_string())
        .execute(&mut *tx)
        .await
        .expect("insert invite");
    }
    tx.commit().await.unwrap();
    db.close().await;
}

/// `n` members without devices, removed or not, written straight into the database.
async fn insert_members(
    broker: &TestBroker,
    admin: &TestDevice,
    n: usize,
    removed: Removed,
) -> Vec<MemberId> {
    let db = database(broker).await;
    let mut tx = db.begin().await.unwrap();
    let t = as_i64(now(broker));
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let id = MemberId::random();
        sqlx::query(
            "INSERT INTO members (workspace_id, id, name, role, key_version, created_at, removed_at)
             VALUES ($1, $2, $3, 'member', 1, $4, $5)",
        )
        .bind(admin.workspace.to_string())
        .bind(id.to_string())
        .bind(format!("Filler {i}"))
        .bind(t)
        .bind((removed == Removed::Yes).then_some(t))
        .execute(&mut *tx)
        .await
        .expect("insert member");
        ids.push(id);
    }
    tx.commit().await.unwrap();
    db.close().await;
    ids
}

async fn create_agent(broker: &TestBroker, by: &TestDevice, name: &str) -> (u16, Value) {
    post(broker, by, "/v1/agents", &json!({"name": name})).await
}

fn agent_id(created: &(u16, Value)) -> AgentId {
    assert_eq!(created.0, 201, "agent creation: {}", created.1);
    serde_json::from_value(created.1["id"].clone()).expect("agent id")
}

async fn create_grant(
    broker: &TestBroker,
    by: &TestDevice,
    agent: AgentId,
    credential: CredentialId,
) -> (u16, Value) {
    let body = json!({
        "id": GrantId::random(), "agent": agent, "credential": credential,
        "methods": ["GET"], "path_patterns": ["/**"], "expires_at": now(broker) + DAY,
    });
    post(broker, by, "/v1/grants", &body).await
}

/// A shared credential created through the API, sealed under the workspace key.
async fn shared_credential(broker: &TestBroker, admin: &TestDevice, name: &str) -> CredentialId {
    let (status, body) = post_credential(broker, admin, name, "shared").await;
    assert_eq!(status, 201, "credential creation: {body}");
    serde_json::from_value(body["id"].clone()).expect("credential id")
}

/// `POST /v1/credentials` for a credential of `owner` (`shared` or `me`), sealed as a device
/// would seal it.
async fn post_credential(
    broker: &TestBroker,
    by: &TestDevice,
    name: &str,
    owner: &str,
) -> (u16, Value) {
    let id = CredentialId::random();
    let key = if owner == "shared" {
        by.workspace_key.as_ref().expect("workspace key").record_key(id).unwrap()
    } else {
        by.member_key.as_ref().expect("member key").record_key(id).unwrap()
    };
    let envelope = Envelope::seal(&key, b"secret").unwrap();
    let body = json!({
        "id": id, "name": name, "provider": "github", "upstream_base_url": "https://api.github.com",
        "allowed_hosts": ["api.github.com"], "owner": owner, "key_version": 1,
        "envelope": b64(envelope.as_bytes()),
    });
    post(broker, by, "/v1/credentials", &body).await
}

async fn put_policy(broker: &TestBroker, admin: &TestDevice, id: &str) -> (u16, Value) {
    let body = json!({
        "source": "forbid (principal, action == Latchkey::Action::\"DELETE\", resource);",
        "description": "filler",
    });
    let path = format!("/v1/policies/{id}");
    TestBroker::send(broker.signed(admin, "PUT", &path, Some(&body))).await
}

async fn create_invite(broker: &TestBroker, by: &TestDevice, body: Value) -> (u16, Value) {
    post(broker, by, "/v1/invites", &body).await
}

/// Joins with `code` as `device` (a new member named `name`, or with `None` another device of
/// `device.member`).
async fn join(
    broker: &TestBroker,
    device: &TestDevice,
    code: &str,
    name: Option<&str>,
) -> (u16, Value) {
    let mut member = json!({"id": device.member});
    if let Some(name) = name {
        member["name"] = json!(name);
    }
    let body = json!({"code": code, "member": member, "device": device.registration("laptop")});
    post(broker, device, "/v1/join", &body).await
}

async fn get(broker: &TestBroker, by: &TestDevice, path: &str) -> (u16, Value) {
    TestBroker::send(broker.signed(by, "GET", path, None)).await
}

async fn post(broker: &TestBroker, by: &TestDevice, path: &str, body: &Value) -> (u16, Value) {
    TestBroker::send(broker.signed(by, "POST", path, Some(body))).await
}

async fn delete(broker: &TestBroker, by: &TestDevice, path: &str) -> (u16, Value) {
    TestBroker::send(broker.signed(by, "DELETE", path, None)).await
}
