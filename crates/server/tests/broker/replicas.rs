//! Two broker replicas on one PostgreSQL database, as behind a round-robin load balancer: same
//! database, same broker key, same public origin, two processes' worth of state (each its own
//! store, read cache and listener). They must behave as one broker: what is revoked through one
//! is refused by the other at its very next call, and a nonce spent on one is spent on both.
//!
//! Runs when `LATCHKEY_TEST_BACKEND=postgres` (with `LATCHKEY_TEST_POSTGRES_URL`); on SQLite,
//! which serves one broker per database file, every test returns at once after saying why.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions; a panic is the failure report"
)]

use std::sync::Arc;

use crate::common;

use common::agent_calls::{
    CountingUpstream, agent_get, broker_public_key, create_agent, create_shared_credential,
    register_standing_grant, shared_capability,
};
use common::{
    Answer, ApprovalStream, PgTestDatabase, TestBroker, TestDatabase, TestDevice,
    workspace_with_admin,
};
use latchkey_core::capability::Reuse;
use latchkey_core::ids::{AgentId, CredentialId, GrantId};
use latchkey_server::store::{Store, StoreError};
use serde_json::{Value, json};

/// Whether to skip (saying so): these tests need PostgreSQL.
fn skip() -> bool {
    let skip = !common::postgres_backend();
    if skip {
        eprintln!(
            "skipped: LATCHKEY_TEST_BACKEND is not postgres; broker replicas need PostgreSQL"
        );
    }
    skip
}

fn postgres(broker: &TestBroker) -> &PgTestDatabase {
    match &broker.db {
        TestDatabase::Postgres(pg) => pg,
        TestDatabase::Sqlite => unreachable!("skip() checked the backend"),
    }
}

/// Replicas A and B, an upstream, and in one workspace an admin device, an agent with a shared
/// credential and a standing grant, all set up through A.
struct Replicas {
    a: TestBroker,
    b: TestBroker,
    upstream: CountingUpstream,
    admin: TestDevice,
    agent: AgentId,
    token: String,
    credential: CredentialId,
    grant: GrantId,
    standing: String,
}

const CREDENTIAL: &str = "github";

async fn replicas() -> Replicas {
    let a = TestBroker::start().await;
    let b = a.start_replica().await;
    set_up(a, b).await
}

/// [`replicas`] on two brokers already started.
async fn set_up(a: TestBroker, b: TestBroker) -> Replicas {
    let (upstream, upstream_base) = CountingUpstream::start().await;
    let admin = workspace_with_admin(&a).await;
    let broker_key = broker_public_key(&a).await;
    assert_eq!(
        broker_public_key(&b).await.to_bytes(),
        broker_key.to_bytes(),
        "replicas read the same key file, so a capability sealed to one opens on the other"
    );
    let (agent, token) = create_agent(&a, &admin, "ci-bot").await;
    let credential =
        create_shared_credential(&a, &admin, CREDENTIAL, &upstream_base, "ghp_replicaSECRET0")
            .await;
    let grant = register_standing_grant(&a, &admin, agent, credential).await;
    let standing = shared_capability(
        &admin,
        &broker_key,
        agent,
        credential,
        Reuse::Standing { grant },
        now(&a),
    );
    Replicas { a, b, upstream, admin, agent, token, credential, grant, standing }
}

fn now(broker: &TestBroker) -> u64 {
    latchkey_server::clock::Clock::now(&*broker.clock)
}

impl Replicas {
    /// The agent's call with `capability` through `replica`: status and error code.
    async fn call(&self, replica: &TestBroker, capability: &str) -> (u16, String) {
        let (status, body) =
            TestBroker::send(agent_get(replica, &self.token, CREDENTIAL, "/user", capability))
                .await;
        (status, body["code"].as_str().unwrap_or_default().to_owned())
    }

    /// The standing capability works on both replicas, repeatedly: each has the agent, the
    /// credential, the device and the grant in its read cache afterwards.
    async fn both_serve_the_standing_capability(&self) {
        for (name, replica) in [("A", &self.a), ("B", &self.b), ("A", &self.a), ("B", &self.b)] {
            let (status, code) = self.call(replica, &self.standing).await;
            assert_eq!(
                status, 200,
                "the standing capability must work on replica {name} before anything changes ({code})"
            );
        }
    }

    /// Calls with the standing capability through replica B every 100 ms, for 10 seconds at
    /// most, until one is answered `200`; the refusals before it (status and code), or `None`
    /// if none was.
    async fn until_b_serves(&self) -> Option<Vec<(u16, String)>> {
        let mut refused = Vec::new();
        for _ in 0..100 {
            let (status, code) = self.call(&self.b, &self.standing).await;
            if status == 200 {
                return Some(refused);
            }
            refused.push((status, code));
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        None
    }

    /// A device request through `broker`, expecting `expected`.
    async fn device(
        &self,
        broker: &TestBroker,
        method: &str,
        path: &str,
        body: Option<&Value>,
        expected: u16,
        what: &str,
    ) {
        let (status, response) =
            TestBroker::send(broker.signed(&self.admin, method, path, body)).await;
        assert_eq!(status, expected, "{what} must succeed: {response}");
    }

    async fn stop(self) {
        self.b.stop().await;
        self.a.stop().await;
    }
}

#[tokio::test]
async fn an_agent_revoked_through_one_replica_is_refused_by_the_other_at_its_next_call() {
    if skip() {
        return;
    }
    let r = replicas().await;
    r.both_serve_the_standing_capability().await;
    let reached = r.upstream.hits();

    let path = format!("/v1/agents/{}", r.agent);
    r.device(&r.a, "DELETE", &path, None, 204, "revoking the agent through A").await;
    let (status, code) = r.call(&r.b, &r.standing).await;
    assert_eq!(
        (status, code.as_str()),
        (401, "token_revoked"),
        "B must refuse the revoked agent at once, not serve it from its read cache"
    );
    let (status, code) = r.call(&r.a, &r.standing).await;
    assert_eq!((status, code.as_str()), (401, "token_revoked"), "A refuses it too");
    assert_eq!(r.upstream.hits(), reached, "no refused call may reach the upstream");
    r.stop().await;
}

#[tokio::test]
async fn a_credential_disabled_through_one_replica_is_refused_by_the_other_at_its_next_call() {
    if skip() {
        return;
    }
    let r = replicas().await;
    r.both_serve_the_standing_capability().await;
    let reached = r.upstream.hits();

    let path = format!("/v1/credentials/{}/status", r.credential);
    let body = json!({"status": "disabled"});
    r.device(&r.a, "PATCH", &path, Some(&body), 200, "disabling the credential through A").await;
    let (status, code) = r.call(&r.b, &r.standing).await;
    assert_eq!(
        (status, code.as_str()),
        (403, "forbidden"),
        "B must refuse a call for the disabled credential at once, not serve it from its cache"
    );
    assert_eq!(r.upstream.hits(), reached, "no refused call may reach the upstream");
    r.stop().await;
}

#[tokio::test]
async fn a_grant_revoked_through_one_replica_is_refused_by_the_other_at_its_next_call() {
    if skip() {
        return;
    }
    let r = replicas().await;
    r.both_serve_the_standing_capability().await;
    let reached = r.upstream.hits();

    let path = format!("/v1/grants/{}", r.grant);
    r.device(&r.a, "DELETE", &path, None, 204, "revoking the grant through A").await;
    let (status, code) = r.call(&r.b, &r.standing).await;
    assert_eq!(
        (status, code.as_str()),
        (403, "capability_invalid"),
        "B must refuse the revoked grant's capability at once, though it had opened it before"
    );
    assert_eq!(r.upstream.hits(), reached, "no refused call may reach the upstream");
    r.stop().await;
}

#[tokio::test]
async fn a_single_use_capability_spent_on_one_replica_is_a_replay_on_the_other() {
    if skip() {
        return;
    }
    let r = replicas().await;
    let broker_key = broker_public_key(&r.b).await;
    let once = shared_capability(
        &r.admin,
        &broker_key,
        r.agent,
        r.credential,
        Reuse::single_use().expect("nonce"),
        now(&r.a),
    );
    let (status, code) = r.call(&r.a, &once).await;
    assert_eq!(status, 200, "the single-use capability works once, on A ({code})");
    let reached = r.upstream.hits();

    let (status, code) = r.call(&r.b, &once).await;
    assert_eq!(
        (status, code.as_str()),
        (403, "capability_invalid"),
        "B must refuse a single-use capability A already accepted: the nonce is in the shared database"
    );
    assert_eq!(r.upstream.hits(), reached, "the replay must not reach the upstream");
    r.stop().await;
}

#[tokio::test]
async fn a_signed_device_request_accepted_by_one_replica_is_a_replay_on_the_other() {
    if skip() {
        return;
    }
    let r = replicas().await;
    // A write, so a replay that got through would show: a second agent.
    let body = json!({"name": "replayed-bot"});
    let mut to_a =
        r.a.signed(&r.admin, "POST", "/v1/agents", Some(&body)).build().expect("request");
    let mut to_b = to_a.try_clone().expect("a request with a buffered body clones");
    *to_b.url_mut() = r.b.url("/v1/agents").parse().expect("url");
    *to_a.url_mut() = r.a.url("/v1/agents").parse().expect("url");

    let accepted = r.a.http.execute(to_a).await.expect("A answers");
    assert_eq!(accepted.status().as_u16(), 201, "A accepts the signed request the first time");
    let replayed = r.b.http.execute(to_b).await.expect("B answers");
    let status = replayed.status().as_u16();
    let response: Value = replayed.json().await.expect("JSON error");
    assert_eq!(
        (status, response["code"].as_str()),
        (401, Some("replayed_request")),
        "B must refuse the request A accepted: request nonces are in the shared database ({response})"
    );

    let (status, listed) = TestBroker::send(r.b.signed(&r.admin, "GET", "/v1/agents", None)).await;
    assert_eq!(status, 200, "listing agents through B: {listed}");
    let named = listed["agents"]
        .as_array()
        .expect("a list of agents")
        .iter()
        .filter(|agent| agent["name"] == "replayed-bot")
        .count();
    assert_eq!(named, 1, "the replayed request must not have created a second agent: {listed}");
    r.stop().await;
}

#[tokio::test]
async fn the_shared_generation_is_written_by_the_triggers_only() {
    if skip() {
        return;
    }
    let a = TestBroker::start().await;
    let pg = postgres(&a);
    sqlx::any::install_default_drivers();
    let service = sqlx::AnyPool::connect(&pg.service_url).await.expect("connect as the service");
    let read = |pool: sqlx::AnyPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT generation FROM cache_generation")
            .fetch_one(&pool)
            .await
            .expect("the service role may read the generation")
    };
    let before = read(service.clone()).await;
    for statement in [
        "UPDATE cache_generation SET generation = 0",
        "INSERT INTO cache_generation (only_row, generation) VALUES (true, 1)",
        "DELETE FROM cache_generation",
        "SELECT latchkey_bump_cache_generation()",
    ] {
        let refused = sqlx::query(statement).execute(&service).await;
        assert!(
            refused.is_err(),
            "the service role must not move the generation itself ({statement} was accepted)"
        );
    }
    let admin = workspace_with_admin(&a).await;
    let after = read(service.clone()).await;
    assert!(
        after > before,
        "a write through the broker moves the generation ({before} -> {after})"
    );

    // The proxy's last-use stamp is not a change the cache must see on other replicas.
    let store = a.store().await;
    let (agent, _) = create_agent(&a, &admin, "stamped").await;
    let stamped = read(service.clone()).await;
    store.touch_agent(admin.workspace, agent, now(&a) + 1).await.expect("touch");
    assert_eq!(
        read(service.clone()).await,
        stamped,
        "recording an agent's last use must not empty every replica's cache"
    );
    let credential =
        create_shared_credential(&a, &admin, "stamped", "http://127.0.0.1:9", "sk_stampSECRET0")
            .await;
    let stamped = read(service.clone()).await;
    store.touch_credential(admin.workspace, credential, now(&a) + 1).await.expect("touch");
    assert_eq!(
        read(service.clone()).await,
        stamped,
        "recording a credential's last use must not empty every replica's cache"
    );
    let path = format!("/v1/credentials/{credential}/status");
    let (status, body) =
        TestBroker::send(a.signed(&admin, "PATCH", &path, Some(&json!({"status": "disabled"}))))
            .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        read(service.clone()).await > stamped,
        "any other change to a credential still moves the generation"
    );
    store.close().await;
    service.close().await;
    a.stop().await;
}

#[tokio::test]
async fn a_service_role_that_may_write_the_generation_is_refused() {
    if skip() {
        return;
    }
    let a = TestBroker::start().await;
    let pg = postgres(&a).clone();
    let owner = sqlx::AnyPool::connect(&pg.owner_url).await.expect("connect as the owner");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "GRANT UPDATE ON cache_generation TO {}_svc",
        pg.name
    )))
    .execute(&owner)
    .await
    .expect("grant");
    let refused = Store::open_postgres(&pg.service_url, None).await;
    assert!(
        matches!(refused, Err(StoreError::UnsafeRole(why)) if why.contains("cache generation")),
        "a service role that could set the generation back could hide a revocation from a replica"
    );
    // Migrating again re-grants exactly, which takes the privilege away.
    Store::open_postgres(&pg.service_url, Some(&pg.owner_url))
        .await
        .expect("opening with the owner's URL on a migrated database converges the grants")
        .close()
        .await;
    owner.close().await;
    a.stop().await;
}

#[tokio::test]
async fn a_service_role_that_cannot_read_the_generation_is_refused_at_startup() {
    if skip() {
        return;
    }
    let a = TestBroker::start().await;
    let pg = postgres(&a).clone();
    let owner = sqlx::AnyPool::connect(&pg.owner_url).await.expect("connect as the owner");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "REVOKE SELECT ON cache_generation FROM {}_svc",
        pg.name
    )))
    .execute(&owner)
    .await
    .expect("revoke");
    assert!(
        Store::open_postgres(&pg.service_url, None).await.is_err(),
        "a broker that cannot read the shared generation would fail every call: it must not start"
    );
    owner.close().await;
    a.stop().await;
}

#[tokio::test]
async fn a_database_at_the_first_migration_upgrades_and_its_service_role_can_read_the_generation() {
    if skip() {
        return;
    }
    let db = TestDatabase::create().await;
    let TestDatabase::Postgres(pg) = &db else { unreachable!("skip() checked the backend") };
    sqlx::any::install_default_drivers();
    let owner = sqlx::AnyPool::connect(&pg.owner_url).await.expect("connect as the owner");
    let migrations =
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"));
    sqlx::migrate::Migrator::new(migrations)
        .await
        .expect("read the migrations")
        .run_to(1, &owner)
        .await
        .expect("migrate to the first migration only, as an older broker left it");
    sqlx::query("SELECT latchkey_grant_service($1::name)::text")
        .bind(format!("{}_svc", pg.name))
        .execute(&owner)
        .await
        .expect("the older broker's grants");
    owner.close().await;

    let refused = Store::open_postgres(&pg.service_url, None).await;
    assert!(
        matches!(refused, Err(StoreError::SchemaVersion { found: Some(1), .. })),
        "a replica without the migration URL must refuse the older schema, not run without the shared generation"
    );
    let store = Store::open_postgres(&pg.service_url, Some(&pg.owner_url))
        .await
        .expect("upgrading a database at the first migration works and passes the startup checks");
    store.close().await;
    let service = sqlx::AnyPool::connect(&pg.service_url).await.expect("connect as the service");
    let generation: i64 = sqlx::query_scalar("SELECT generation FROM cache_generation")
        .fetch_one(&service)
        .await
        .expect("the upgraded service role may read the generation");
    assert!(generation >= 0, "the generation starts at zero and only grows");
    service.close().await;
    db.drop_database().await;
}

/// The agent's call is held on replica A; the admin's device is connected to replica B, hears of
/// it there (NOTIFY from A) and answers there; A hears the answer (NOTIFY from B) and lets the
/// call go on, once.
#[tokio::test]
async fn a_call_held_on_one_replica_is_approved_through_the_other() {
    if skip() {
        return;
    }
    let r = replicas().await;
    // The device's stream is on replica B.
    let mut stream = ApprovalStream::open(&r.b, &r.admin).await;
    let held = {
        let request = r.a.http.get(r.a.url(&format!("/p/{CREDENTIAL}/user"))).bearer_auth(&r.token);
        tokio::spawn(async move { TestBroker::send(request).await })
    };
    // Replica B tells its device about a call held on replica A.
    let approval = stream.next().await;
    assert_eq!(approval["status"], "pending", "{approval}");
    assert_eq!(r.upstream.hits(), 0, "nothing forwarded while held");

    let broker_key = broker_public_key(&r.b).await;
    let once = shared_capability(
        &r.admin,
        &broker_key,
        r.agent,
        r.credential,
        Reuse::single_use().expect("nonce"),
        now(&r.b),
    );
    let id = approval["id"].as_str().expect("approval id");
    r.device(
        &r.b,
        "POST",
        &format!("/v1/approvals/{id}"),
        Some(&json!({"decision": "approve", "capability": once})),
        200,
        "approving through replica B",
    )
    .await;
    let (status, body) = tokio::time::timeout(std::time::Duration::from_secs(10), held)
        .await
        .expect("replica A lets the held call go on after an answer on replica B")
        .expect("the call's task");
    assert_eq!(status, 200, "the call held on A went on after the approval on B: {body}");
    assert_eq!(r.upstream.hits(), 1, "forwarded exactly once");
    r.device(
        &r.a,
        "POST",
        &format!("/v1/approvals/{id}"),
        Some(&json!({"decision": "deny"})),
        409,
        "a second answer through the other replica being refused",
    )
    .await;
    assert_eq!(r.upstream.hits(), 1, "a second answer forwards nothing");
    r.stop().await;
}

/// The kill switch pressed through replica A is enforced by a warm replica B at its very next
/// call (the pause bumps the shared cache generation), and a resume through B by A.
#[tokio::test]
async fn agents_paused_through_one_replica_are_refused_by_the_other_at_its_next_call() {
    if skip() {
        return;
    }
    let r = replicas().await;
    r.both_serve_the_standing_capability().await;
    let reached = r.upstream.hits();

    let paused = json!({"paused": true});
    r.device(&r.a, "PUT", "/v1/workspace/pause", Some(&paused), 200, "pausing through A").await;
    let (status, code) = r.call(&r.b, &r.standing).await;
    assert_eq!(
        (status, code.as_str()),
        (403, "agents_paused"),
        "B must refuse at once, not serve its read cache's `not paused`"
    );
    let (status, code) = r.call(&r.a, &r.standing).await;
    assert_eq!((status, code.as_str()), (403, "agents_paused"), "A refuses too");
    assert_eq!(r.upstream.hits(), reached, "no call reaches the upstream while paused");

    let resumed = json!({"paused": false});
    r.device(&r.b, "PUT", "/v1/workspace/pause", Some(&resumed), 200, "resuming through B").await;
    let (status, code) = r.call(&r.a, &r.standing).await;
    assert_eq!(status, 200, "A serves again at its next call after the resume on B ({code})");
    r.stop().await;
}

/// A call held for approval on replica B is let go when the agents are paused through replica A.
#[tokio::test]
async fn a_call_held_on_one_replica_is_released_by_a_pause_through_the_other() {
    if skip() {
        return;
    }
    let r = replicas().await;
    let mut stream = ApprovalStream::open(&r.a, &r.admin).await;
    let held = {
        let request = r.b.http.get(r.b.url(&format!("/p/{CREDENTIAL}/user"))).bearer_auth(&r.token);
        tokio::spawn(async move { TestBroker::send(request).await })
    };
    let approval = stream.next().await;
    assert_eq!(approval["status"], "pending", "the call is held on B: {approval}");
    // B announced the call (NOTIFY, heard here through A) just before its holder began waiting up
    // to a second for news; the pause on A must wake it through NOTIFY, not its next re-read.
    let announced = std::time::Instant::now();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    let paused = json!({"paused": true});
    r.device(&r.a, "PUT", "/v1/workspace/pause", Some(&paused), 200, "pausing through A").await;
    let (status, body) = tokio::time::timeout(std::time::Duration::from_secs(5), held)
        .await
        .expect("B lets the held call go soon after the pause on A, not at the approval timeout")
        .expect("the call's task");
    let released = announced.elapsed();
    assert!(
        released < std::time::Duration::from_millis(800),
        "the pause on A wakes the call held on B rather than leaving it to B's periodic re-read ({released:?})"
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("agents_paused")),
        "the held call gets the pause's answer: {body}"
    );
    let expired = stream.next().await;
    assert_eq!(
        (expired["id"].as_str(), expired["status"].as_str()),
        (approval["id"].as_str(), Some("expired")),
        "devices on A hear that the approval ended: {expired}"
    );
    assert_eq!(r.upstream.hits(), 0, "nothing reached the upstream");
    r.stop().await;
}

/// Two replicas whose calls both find the same OAuth token expired present its refresh token
/// once: the refresh lease lives in the shared database. The replica that lost the lease waits
/// for the other's result and uses it.
#[tokio::test]
async fn two_replicas_refresh_an_expired_token_once_and_both_calls_use_the_result() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use latchkey_core::envelope::Envelope;
    use latchkey_core::payload::{CredentialKind, CredentialPayload, Injection, OAuthRefresh};
    use latchkey_core::secret::SecretBytes;

    if skip() {
        return;
    }
    let a = TestBroker::start().await;
    let b = a.start_replica().await;
    // One server for the API and its token endpoint: the token endpoint takes a second, as a
    // real one may, so both calls arrive while the first refresh is under way.
    let refreshes = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let app = {
        let (refreshes, seen) = (Arc::clone(&refreshes), Arc::clone(&seen));
        axum::Router::new()
            .route(
                "/token",
                axum::routing::post(move || {
                    let refreshes = Arc::clone(&refreshes);
                    async move {
                        refreshes.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        axum::Json(json!({
                            "access_token": "gho_replicaREFRESHED",
                            "token_type": "Bearer",
                            "expires_in": 3600,
                            "refresh_token": "ghr_replicaROTATED",
                        }))
                    }
                }),
            )
            .fallback(move |headers: axum::http::HeaderMap| {
                let seen = Arc::clone(&seen);
                async move {
                    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
                    seen.lock().unwrap().push(auth.unwrap_or_default().to_owned());
                    axum::Json(json!({"ok": true}))
                }
            })
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let admin = workspace_with_admin(&a).await;
    let broker_key = broker_public_key(&a).await;
    let (agent, token) = create_agent(&a, &admin, "ci-bot").await;
    let id = CredentialId::random();
    let payload = CredentialPayload {
        kind: CredentialKind::OAuth {
            expires_at: Some(now(&a) - 10),
            refresh: Some(OAuthRefresh {
                refresh_token: SecretBytes::copy_from(b"ghr_replicaORIGINAL"),
                token_endpoint: format!("{base}/token"),
                client_id: "latchkey-test".into(),
                client_secret: None,
            }),
        },
        injection: Injection::bearer(),
        secret: SecretBytes::copy_from(b"gho_replicaEXPIRED"),
    };
    let key = admin.workspace_key.as_ref().unwrap().record_key(id).unwrap();
    let envelope = Envelope::seal(&key, &payload.encode().unwrap()).unwrap();
    let body = json!({
        "id": id, "name": "idp", "provider": "github", "upstream_base_url": base,
        "allowed_hosts": [base.trim_start_matches("http://")], "owner": "shared",
        "key_version": 1, "envelope": common::b64(envelope.as_bytes()),
    });
    let (status, created) =
        TestBroker::send(a.signed(&admin, "POST", "/v1/credentials", Some(&body))).await;
    assert_eq!(status, 201, "{created}");

    let capability =
        || shared_capability(&admin, &broker_key, agent, id, Reuse::single_use().unwrap(), now(&a));
    let (through_a, through_b) = tokio::join!(
        TestBroker::send(agent_get(&a, &token, "idp", "/user", &capability())),
        TestBroker::send(agent_get(&b, &token, "idp", "/user", &capability())),
    );
    assert_eq!(through_a.0, 200, "the call through A: {}", through_a.1);
    assert_eq!(through_b.0, 200, "the call through B: {}", through_b.1);
    assert_eq!(
        refreshes.load(Ordering::SeqCst),
        1,
        "one refresh token presented once, although both replicas found the token expired"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        ["Bearer gho_replicaREFRESHED", "Bearer gho_replicaREFRESHED"],
        "both calls used the refreshed token, none the expired one"
    );
    b.stop().await;
    a.stop().await;
}

/// A TCP forwarder between a broker and PostgreSQL that the test can cut, as a network
/// partition or a database restart does: cutting closes every connection through it and refuses
/// new ones until it is restored. Stalling closes them too, then accepts new ones and never
/// answers, as a database host that stopped responding does.
struct Link {
    addr: std::net::SocketAddr,
    state: Arc<std::sync::atomic::AtomicU8>,
    changes: tokio::sync::watch::Sender<u64>,
}

const LINK_UP: u8 = 0;
const LINK_CUT: u8 = 1;
const LINK_STALLED: u8 = 2;

impl Link {
    /// A forwarder to the host and port of `url`.
    async fn to(url: &str) -> Self {
        let target = url::Url::parse(url).expect("database URL");
        let target =
            format!("{}:{}", target.host_str().expect("a host"), target.port().unwrap_or(5432));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(std::sync::atomic::AtomicU8::new(LINK_UP));
        let (changes, _) = tokio::sync::watch::channel(0_u64);
        let (current, notify) = (Arc::clone(&state), changes.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut changed = notify.subscribe();
                let state = current.load(std::sync::atomic::Ordering::SeqCst);
                let target = target.clone();
                tokio::spawn(async move {
                    match state {
                        LINK_CUT => {} // Dropped: closed at once.
                        LINK_STALLED => {
                            let _ = changed.changed().await; // Held, silent, until the next change.
                        }
                        _ => {
                            let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await
                            else {
                                return;
                            };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                                _ = changed.changed() => {}
                            }
                        }
                    }
                });
            }
        });
        Self { addr, state, changes }
    }

    /// `url` with its host and port replaced by the forwarder's.
    fn url(&self, url: &str) -> String {
        let mut url = url::Url::parse(url).expect("database URL");
        url.set_host(Some(&self.addr.ip().to_string())).expect("host");
        url.set_port(Some(self.addr.port())).expect("port");
        url.to_string()
    }

    /// Closes every connection through the forwarder, then treats new ones as `state` says.
    fn set(&self, state: u8) {
        self.state.store(state, std::sync::atomic::Ordering::SeqCst);
        self.changes.send_modify(|n| *n += 1);
    }
}

#[tokio::test]
async fn a_broker_cut_off_from_its_database_answers_a_retryable_503_fails_closed_and_recovers() {
    if skip() {
        return;
    }
    let a = TestBroker::start().await;
    let service_url = postgres(&a).service_url.clone();
    let link = Link::to(&service_url).await;
    let b = a.start_replica_via(&link.url(&service_url)).await;
    let r = set_up(a, b).await;
    r.both_serve_the_standing_capability().await;
    let reached = r.upstream.hits();

    link.set(LINK_CUT);
    let started = std::time::Instant::now();
    let sent = agent_get(&r.b, &r.token, CREDENTIAL, "/user", &r.standing).send().await;
    let Answer { status, retry_after, body } = Answer::of(sent.expect("the broker answers")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("unavailable")),
        "an agent's call while the database is out of reach is a retryable refusal: {body}"
    );
    assert!(retry_after.is_some(), "with a Retry-After for the agent's SDK to honour: {body}");
    assert_eq!(r.upstream.hits(), reached, "fail closed: nothing reaches the upstream unaudited");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "the caller hears it in seconds, not after waiting out every timeout: {:?}",
        started.elapsed()
    );
    let sent = r.b.signed(&r.admin, "GET", "/v1/agents", None).send().await;
    let Answer { status, retry_after: retry, body } =
        Answer::of(sent.expect("the broker answers")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("unavailable")),
        "a device request too is told to retry, not that the broker failed: {body}"
    );
    assert!(
        body["message"].as_str().is_some_and(|m| m.contains("database is not reachable")),
        "the message says why: {body}"
    );
    assert_eq!(retry.as_deref(), Some("2"), "and when to retry");
    let (status, body) = TestBroker::send(r.b.http.get(r.b.url("/readyz"))).await;
    assert_eq!(status, 503, "a load balancer takes the replica out: {body}");
    let (status, body) = TestBroker::send(r.a.signed(&r.admin, "GET", "/v1/agents", None)).await;
    assert_eq!(status, 200, "the other replica, still connected, serves meanwhile: {body}");

    link.set(LINK_UP);
    let refused = r.until_b_serves().await;
    let refused = refused.expect("the replica serves again once its database is back");
    for (status, code) in refused {
        assert_eq!((status, code.as_str()), (503, "unavailable"), "only retryable refusals");
    }
    assert_eq!(r.upstream.hits(), reached + 1, "exactly the recovered call went upstream");
    r.device(&r.b, "GET", "/v1/agents", None, 200, "a device request after recovery").await;
    let (status, _) = TestBroker::send(r.b.http.get(r.b.url("/readyz"))).await;
    assert_eq!(status, 200, "ready again");

    // A database that accepts connections and never answers: the wait for a connection is
    // bounded (5 seconds), where sqlx's default would hold every caller for 30.
    link.set(LINK_STALLED);
    let started = std::time::Instant::now();
    let (status, code) = r.call(&r.b, &r.standing).await;
    assert_eq!((status, code.as_str()), (503, "unavailable"), "a stalled database is out of reach");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "the caller hears it within the connection wait, not sqlx's 30 seconds: {:?}",
        started.elapsed()
    );
    assert_eq!(r.upstream.hits(), reached + 1, "fail closed again");
    link.set(LINK_UP);
    assert!(r.until_b_serves().await.is_some(), "and serves again once the database answers");
    let (status, verified) =
        TestBroker::send(r.a.signed(&r.admin, "GET", "/v1/audit/verify", None)).await;
    assert_eq!(
        (status, &verified["ok"]),
        (200, &json!(true)),
        "the audit chain is whole after the outage: {verified}"
    );
    r.stop().await;
}

#[tokio::test]
async fn a_device_stream_is_told_to_list_again_when_the_databases_notifications_break_off() {
    if skip() {
        return;
    }
    let a = TestBroker::start().await;
    let admin = workspace_with_admin(&a).await;
    let mut stream = ApprovalStream::open(&a, &admin).await;
    sqlx::any::install_default_drivers();
    let superuser = sqlx::AnyPool::connect(&postgres(&a).superuser_url).await.expect("connect");
    // The broker's listening connection goes away, as a database restart or a network blip
    // takes it: what replicas announce meanwhile is lost.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let ended: i64 = sqlx::query_scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
        )
        .fetch_one(&superuser)
        .await
        .expect("the listener's connection is ended");
        if ended > 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the broker listens for notifications");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (event, data) = stream.next_event().await;
    assert_eq!(
        (event.as_str(), data.as_str()),
        ("lagged", "unknown"),
        "once listening again, the broker tells each device stream to list again"
    );
    a.stop().await;
}
