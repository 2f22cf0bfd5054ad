//! PostgreSQL only: tenant isolation by forced row-level security, the lookups that precede
//! knowing a workspace, the append-only audit log by privilege, and the broker's refusal of a
//! database role that could escape either.
//!
//! Runs when `LATCHKEY_TEST_BACKEND=postgres` (with `LATCHKEY_TEST_POSTGRES_URL`); on SQLite
//! every test returns at once after saying why. Each test works on two workspaces A and B filled
//! with a row in every workspace-scoped table, written as the superuser (which row-level security
//! does not bind), and then looks at them as the broker's service role and as the schema owner.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions; a panic is the failure report"
)]

use crate::common;

use common::{PgTestDatabase, TestBroker, TestDatabase, TestDevice, workspace_with_admin};
use latchkey_core::ids::{AgentId, CredentialId, WorkspaceId};
use latchkey_server::audit::{AuditEvent, AuditKind};
use latchkey_server::store::{Store, StoreError};
use sqlx::Connection as _;

/// Every table that holds workspace rows. A new one must be added here (and get a policy):
/// [`every_table_with_a_workspace_column_has_forced_row_level_security`] finds any that lacks one.
const WORKSPACE_TABLES: [&str; 13] = [
    "workspaces",
    "members",
    "devices",
    "wrapped_keys",
    "invites",
    "credentials",
    "agents",
    "grants",
    "policies",
    "audit_log",
    "approvals",
    "agent_pauses",
    "refresh_leases",
];

/// Whether to skip (saying so): these tests need PostgreSQL.
fn skip() -> bool {
    let skip = !common::postgres_backend();
    if skip {
        eprintln!("skipped: LATCHKEY_TEST_BACKEND is not postgres; these tests need PostgreSQL");
    }
    skip
}

/// The PostgreSQL database of a broker started after [`skip`] said no.
fn postgres(broker: &TestBroker) -> &PgTestDatabase {
    match &broker.db {
        TestDatabase::Postgres(pg) => pg,
        TestDatabase::Sqlite => unreachable!("skip() checked the backend"),
    }
}

async fn connect(url: &str) -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(url).await.expect("connect")
}

/// Sets `latchkey.workspace` for the rest of the session, as a store transaction does for itself.
async fn enter(conn: &mut sqlx::AnyConnection, workspace: WorkspaceId) {
    sqlx::query("SELECT set_config('latchkey.workspace', $1, false)")
        .bind(workspace.to_string())
        .execute(&mut *conn)
        .await
        .expect("set the workspace");
}

async fn count(conn: &mut sqlx::AnyConnection, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(&mut *conn)
        .await
        .expect("count")
}

fn error_text<T>(result: Result<T, sqlx::Error>, what: &str) -> String {
    match result {
        Ok(_) => panic!("the database accepted {what}"),
        Err(error) => error.to_string(),
    }
}

/// A broker with two workspaces, each with its admin and one row in every workspace table.
struct TwoWorkspaces {
    broker: TestBroker,
    a: TestDevice,
    b: TestDevice,
}

async fn two_workspaces() -> TwoWorkspaces {
    let broker = TestBroker::start().await;
    let a = workspace_with_admin(&broker).await;
    let b = workspace_with_admin(&broker).await;
    let store = broker.store().await;
    let su = common::database(&broker).await;
    for admin in [&a, &b] {
        let ws = admin.workspace.to_string();
        let member = admin.member.to_string();
        let device = admin.id.to_string();
        let agent = AgentId::random().to_string();
        let credential = CredentialId::random().to_string();
        let statements: [(&str, Vec<String>); 7] = [
            (
                "INSERT INTO credentials (workspace_id, id, name, provider, upstream_base_url,
                     allowed_hosts, key_version, status, envelope, created_at, updated_at)
                 VALUES ($1, $2, 'github', 'github', 'https://api.github.com',
                     '[\"api.github.com\"]', 1, 'active', decode(repeat('01', 40), 'hex'), 0, 0)",
                vec![ws.clone(), credential.clone()],
            ),
            (
                "INSERT INTO refresh_leases (workspace_id, credential_id, id, holder_device,
                     taken_at, expires_at)
                 VALUES ($1, $2, $3, $4, 0, 60)",
                vec![ws.clone(), credential.clone(), AgentId::random().to_string(), device.clone()],
            ),
            (
                "INSERT INTO agents (workspace_id, id, name, owner_member_id, token_hash, created_at)
                 VALUES ($1, $2, 'bot', $3, sha256(convert_to($2, 'UTF8')), 0)",
                vec![ws.clone(), agent.clone(), member.clone()],
            ),
            (
                "INSERT INTO grants (workspace_id, id, agent_id, credential_id, issued_by_device,
                     methods, path_patterns, expires_at, created_at)
                 VALUES ($1, $2, $3, $4, $5, '[\"GET\"]', '[\"/**\"]', 0, 0)",
                vec![
                    ws.clone(),
                    AgentId::random().to_string(),
                    agent.clone(),
                    CredentialId::random().to_string(),
                    device.clone(),
                ],
            ),
            (
                "INSERT INTO approvals (workspace_id, id, agent_id, credential_id, credential_name,
                     method, host, path, query_keys, policy_ids, status, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, 'github', 'GET', 'api.github.com', '/user', '[]', '[]',
                     'pending', 0, 0)",
                vec![
                    ws.clone(),
                    AgentId::random().to_string(),
                    agent.clone(),
                    CredentialId::random().to_string(),
                ],
            ),
            (
                "INSERT INTO agent_pauses (workspace_id, paused_by_member, paused_by_device,
                     paused_at)
                 VALUES ($1, $2, $3, 0)",
                vec![ws.clone(), member.clone(), device.clone()],
            ),
            (
                "INSERT INTO invites (workspace_id, id, code_hash, role, created_by, created_at, expires_at)
                 VALUES ($1, $2, sha256(convert_to($2, 'UTF8')), 'member', $3, 0, 0)",
                vec![ws.clone(), AgentId::random().to_string(), device.clone()],
            ),
        ];
        for (sql, binds) in statements {
            let mut query = sqlx::query(sql);
            for value in binds {
                query = query.bind(value);
            }
            query.execute(&su).await.expect("insert a row as the superuser");
        }
        store
            .policies(
                admin.workspace,
                &[latchkey_server::store::policies::NewPolicy {
                    id: "p",
                    description: "",
                    source: "permit(principal, action, resource);",
                    enabled: true,
                }],
                0,
            )
            .await
            .expect("policies");
        store
            .append_audit(&[AuditEvent::new(admin.workspace, 1, AuditKind::ProxyAttempt)])
            .await
            .expect("audit append");
    }
    for table in WORKSPACE_TABLES {
        let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(DISTINCT {}) FROM {table}",
            if table == "workspaces" { "id" } else { "workspace_id" }
        )))
        .fetch_one(&su)
        .await
        .expect("count as superuser");
        assert_eq!(rows, 2, "control: {table} holds rows of both workspaces");
    }
    su.close().await;
    store.close().await;
    TwoWorkspaces { broker, a, b }
}

#[tokio::test]
async fn without_the_workspace_setting_every_workspace_table_looks_empty() {
    if skip() {
        return;
    }
    let t = two_workspaces().await;
    let pg = postgres(&t.broker);
    for url in [&pg.service_url, &pg.owner_url] {
        let mut conn = connect(url).await;
        for table in WORKSPACE_TABLES {
            assert_eq!(
                count(&mut conn, table).await,
                0,
                "{table}: a query without latchkey.workspace must see no row"
            );
        }
        conn.close().await.unwrap();
    }
    t.broker.stop().await;
}

#[tokio::test]
async fn under_workspace_a_an_unscoped_query_never_sees_or_touches_workspace_b() {
    if skip() {
        return;
    }
    let t = two_workspaces().await;
    let pg = postgres(&t.broker);
    let (a, b) = (t.a.workspace.to_string(), t.b.workspace.to_string());
    let mut conn = connect(&pg.service_url).await;
    enter(&mut conn, t.a.workspace).await;

    // A handler bug: the workspace condition is missing altogether.
    let seen: Vec<String> = sqlx::query_scalar("SELECT workspace_id FROM credentials")
        .fetch_all(&mut conn)
        .await
        .expect("unscoped select");
    assert_eq!(seen, vec![a.clone()], "only A's credential is visible under A");
    for table in WORKSPACE_TABLES {
        let column = if table == "workspaces" { "id" } else { "workspace_id" };
        let others: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {table} WHERE {column} <> $1"
        )))
        .bind(&a)
        .fetch_one(&mut conn)
        .await
        .expect("count others");
        assert_eq!(others, 0, "{table}: nothing of another workspace is visible under A");
    }

    // Unscoped writes reach A's rows only.
    let renamed = sqlx::query("UPDATE credentials SET name = 'renamed'")
        .execute(&mut conn)
        .await
        .expect("unscoped update")
        .rows_affected();
    assert_eq!(renamed, 1, "an unscoped UPDATE changes A's row only");
    let deleted = sqlx::query("DELETE FROM grants").execute(&mut conn).await.unwrap();
    assert_eq!(deleted.rows_affected(), 1, "an unscoped DELETE removes A's row only");
    let smuggled = sqlx::query(
        "INSERT INTO policies (workspace_id, id, source, updated_at) VALUES ($1, 'x', 'x', 0)",
    )
    .bind(&b)
    .execute(&mut conn)
    .await;
    assert!(
        error_text(smuggled, "a row for B written under A").contains("row-level security"),
        "a row for another workspace is refused by the policy"
    );
    conn.close().await.unwrap();

    let su = common::database(&t.broker).await;
    let b_name: String = sqlx::query_scalar("SELECT name FROM credentials WHERE workspace_id = $1")
        .bind(&b)
        .fetch_one(&su)
        .await
        .unwrap();
    assert_eq!(b_name, "github", "B's credential is untouched");
    let b_grants: i64 = sqlx::query_scalar("SELECT count(*) FROM grants WHERE workspace_id = $1")
        .bind(&b)
        .fetch_one(&su)
        .await
        .unwrap();
    assert_eq!(b_grants, 1, "B's grant is untouched");
    su.close().await;
    t.broker.stop().await;
}

#[tokio::test]
async fn the_service_role_cannot_update_delete_or_truncate_audit_records() {
    if skip() {
        return;
    }
    let t = two_workspaces().await;
    let pg = postgres(&t.broker);
    let mut conn = connect(&pg.service_url).await;
    enter(&mut conn, t.a.workspace).await;
    // A's creation and its credential's.
    assert_eq!(count(&mut conn, "audit_log").await, 2, "control: the service role reads A's log");
    for (statement, what) in [
        ("UPDATE audit_log SET at_ms = 0", "UPDATE"),
        ("DELETE FROM audit_log", "DELETE"),
        ("TRUNCATE audit_log", "TRUNCATE"),
    ] {
        let refused = sqlx::query(statement).execute(&mut conn).await;
        let message = error_text(refused, what);
        assert!(
            message.contains("permission denied"),
            "{what} must be refused by privilege, not only by trigger: {message}"
        );
    }
    assert_eq!(count(&mut conn, "audit_log").await, 2, "the records are still there");
    conn.close().await.unwrap();
    t.broker.stop().await;
}

#[tokio::test]
async fn forced_row_level_security_binds_the_table_owner_too() {
    if skip() {
        return;
    }
    let t = two_workspaces().await;
    let pg = postgres(&t.broker);
    let mut owner = connect(&pg.owner_url).await;
    let owns: bool = sqlx::query_scalar(
        "SELECT tableowner = current_user FROM pg_tables WHERE tablename = 'credentials'",
    )
    .fetch_one(&mut owner)
    .await
    .unwrap();
    assert!(owns, "control: this connection is the tables' owner");
    assert_eq!(count(&mut owner, "credentials").await, 0, "the owner sees nothing unscoped");
    enter(&mut owner, t.b.workspace).await;
    let seen: Vec<String> = sqlx::query_scalar("SELECT workspace_id FROM credentials")
        .fetch_all(&mut owner)
        .await
        .unwrap();
    assert_eq!(seen, vec![t.b.workspace.to_string()], "the owner sees only the named workspace");
    owner.close().await.unwrap();
    t.broker.stop().await;
}

#[tokio::test]
async fn every_table_with_a_workspace_column_has_forced_row_level_security() {
    if skip() {
        return;
    }
    let broker = TestBroker::start().await;
    let pg = postgres(&broker);
    let mut su = connect(&pg.superuser_url).await;
    let tables: Vec<(String, bool, bool, i64)> = sqlx::query_as(
        "SELECT c.relname::text, c.relrowsecurity, c.relforcerowsecurity,
                (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid)
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind = 'r'
           AND EXISTS (SELECT 1 FROM information_schema.columns col
                       WHERE col.table_schema = 'public' AND col.table_name = c.relname
                         AND col.column_name IN ('workspace_id', 'id'))
         ORDER BY 1",
    )
    .fetch_all(&mut su)
    .await
    .unwrap();
    let lookups = ["agent_token_workspaces", "device_workspaces", "invite_workspaces"];
    let mut protected = Vec::new();
    for (table, enabled, forced, policies) in tables {
        if lookups.contains(&table.as_str()) {
            assert!(!enabled, "{table} is a lookup read before the workspace is known");
            continue;
        }
        assert!(enabled && forced, "{table}: ROW LEVEL SECURITY must be enabled and forced");
        assert_eq!(policies, 1, "{table}: exactly the workspace policy");
        protected.push(table);
    }
    let mut expected: Vec<String> = WORKSPACE_TABLES.iter().map(|t| (*t).to_owned()).collect();
    expected.sort();
    assert_eq!(protected, expected, "every workspace table is protected, and only those");
    su.close().await.unwrap();
    broker.stop().await;
}

#[tokio::test]
async fn the_lookup_tables_are_read_only_for_the_service_role_and_hold_only_a_workspace_id() {
    if skip() {
        return;
    }
    let t = two_workspaces().await;
    let pg = postgres(&t.broker);
    let mut conn = connect(&pg.service_url).await;
    for (table, columns) in [
        ("agent_token_workspaces", "token_hash, workspace_id"),
        ("device_workspaces", "device_id, workspace_id"),
        ("invite_workspaces", "code_hash, workspace_id"),
    ] {
        assert_eq!(count(&mut conn, table).await, 2, "{table} maps both workspaces' keys");
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT string_agg(column_name::text, ', ' ORDER BY ordinal_position)
             FROM information_schema.columns WHERE table_name = $1",
        )
        .bind(table)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        assert_eq!(names, vec![columns.to_owned()], "{table} holds nothing but the mapping");
        let write = sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
            .execute(&mut conn)
            .await;
        assert!(
            error_text(write, "a write to a lookup table").contains("permission denied"),
            "{table} is read-only for the service role"
        );
    }
    conn.close().await.unwrap();
    t.broker.stop().await;
}

#[tokio::test]
async fn the_broker_refuses_to_run_as_the_owner_or_a_superuser() {
    if skip() {
        return;
    }
    let broker = TestBroker::start().await;
    let pg = postgres(&broker);
    for (url, role, expected) in [
        (&pg.owner_url, "the owner", "owns the tables"),
        (&pg.superuser_url, "a superuser", "superuser"),
    ] {
        let refused = Store::open_postgres(url, None).await;
        match refused {
            Err(StoreError::UnsafeRole(problem)) => {
                assert!(problem.contains(expected), "{role}: {problem}");
            }
            other => panic!("{role} must be refused as the service role: {other:?}"),
        }
    }
    broker.stop().await;
}

/// The read cache mirrors whole rows of `agents` and `credentials`, so their statement triggers
/// must move the shared generation on a change of any column but the last-use times the proxy
/// writes on every call: a column added later and left out of the trigger's list would let
/// replicas serve a stale copy of it.
#[tokio::test]
async fn the_cache_generation_follows_every_cached_column_but_the_last_use() {
    if skip() {
        return;
    }
    let broker = TestBroker::start().await;
    let pg = postgres(&broker);
    let mut conn = connect(&pg.owner_url).await;
    for (table, trigger) in
        [("agents", "agents_cache_generation"), ("credentials", "credentials_cache_generation")]
    {
        let watched: Vec<String> = sqlx::query_scalar(
            "SELECT a.attname::text FROM pg_trigger t
             JOIN pg_attribute a ON a.attrelid = t.tgrelid AND a.attnum = ANY (t.tgattr::int2[])
             WHERE t.tgrelid = $1::regclass AND t.tgname = $2 ORDER BY 1",
        )
        .bind(table)
        .bind(trigger)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let columns: Vec<String> = sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_name = $1 AND column_name <> 'last_used_at' ORDER BY 1",
        )
        .bind(table)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        assert!(!columns.is_empty(), "test setup: {table} has columns");
        assert_eq!(watched, columns, "{trigger} names every column of {table} but last_used_at");
    }
    conn.close().await.unwrap();
    broker.stop().await;
}
