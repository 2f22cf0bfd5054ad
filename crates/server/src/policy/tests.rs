use super::*;
use crate::store::policies::Expected;

const T0: u64 = 1_800_000_000; // 2027-01-15T08:00:00Z, a Friday

fn engine() -> PolicyEngine {
    PolicyEngine::new().expect("the embedded schema and default policies are valid")
}

async fn store_with_workspaces(n: usize) -> (tempfile::TempDir, Store, Vec<WorkspaceId>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open_sqlite(&dir.path().join("db.sqlite3")).await.expect("open store");
    let mut workspaces = Vec::new();
    for _ in 0..n {
        let ws = WorkspaceId::random();
        sqlx::query("INSERT INTO workspaces (id, name, created_at) VALUES ($1, 'W', 0)")
            .bind(ws.to_string())
            .execute(&store.pool)
            .await
            .expect("insert workspace");
        workspaces.push(ws);
    }
    (dir, store, workspaces)
}

fn request(workspace: WorkspaceId, grant: GrantKind) -> (PolicyRequest<'static>, MemberId) {
    let owner = MemberId::random();
    let request = PolicyRequest {
        workspace,
        agent: AgentId::random(),
        agent_name: "deploy-bot",
        agent_owner: owner,
        credential: CredentialId::random(),
        credential_name: "github",
        provider: "github",
        credential_owner: Owner::Shared,
        method: "GET",
        host: "api.github.com",
        path: "/user",
        now: T0,
        grant,
    };
    (request, owner)
}

async fn put(store: &Store, ws: WorkspaceId, id: &str, source: &str) {
    let policy = NewPolicy { id, description: "", source, enabled: true };
    store
        .put_policy(ws, &DEFAULT_POLICIES, policy, Expected::Anything, MAX_POLICIES, T0)
        .await
        .expect("store")
        .expect("below the limit");
}

#[test]
fn the_schema_and_the_default_policies_are_valid() {
    let engine = engine();
    for default in &DEFAULT_POLICIES {
        let warnings = engine.check_policy(default.id, default.source).expect("valid");
        assert!(
            warnings.is_empty(),
            "default {} validates without warnings: {warnings:?}",
            default.id
        );
    }
}

#[test]
fn requests_as_built_for_evaluation_conform_to_the_schema() {
    // The hot path builds requests without schema validation; this proves the shape is right.
    let engine = engine();
    let (schema, _) = Schema::from_cedarschema_str(SCHEMA).expect("schema parses");
    for (owner, grant) in
        [(Owner::Shared, GrantKind::None), (Owner::Member(MemberId::random()), GrantKind::Standing)]
    {
        let (mut r, _) = request(WorkspaceId::random(), grant);
        r.credential_owner = owner;
        for method in METHODS {
            r.method = method;
            let call = engine.call(&r, T0).expect("builds");
            let built = engine.cedar_request(&call, grant).expect("builds");
            let entities = &call.entities.entities;
            let principal = built.principal().expect("principal").clone();
            let action = built.action().expect("action").clone();
            let resource = built.resource().expect("resource").clone();
            let context = built.context().expect("context").clone();
            Request::new(principal, action, resource, context, Some(&schema))
                .expect("the request validates against the schema");
            Entities::from_entities(entities.iter().cloned(), Some(&schema))
                .expect("the entities validate against the schema");
        }
    }
}

#[test]
fn an_unknown_method_is_denied_with_an_error_not_a_panic() {
    let engine = engine();
    let (mut r, _) = request(WorkspaceId::random(), GrantKind::SingleUse);
    r.method = "PROPFIND";
    let mut set = PolicySet::new();
    set.add(Policy::parse(None, "permit(principal, action, resource);").expect("parses"))
        .expect("adds");
    let set = CompiledPolicies::new(set, T0);
    let decision = engine.decide(&set, &r, T0);
    assert!(!decision.allowed, "a method outside the schema is never allowed");
    assert_eq!(decision.errors.len(), 1, "the reason is recorded: {decision:?}");
}

#[test]
fn a_remembered_decision_is_the_one_cedar_gives_for_every_input_it_reads() {
    let engine = engine();
    let source = r#"permit (principal, action == Latchkey::Action::"GET", resource) when {
  context.hour >= 8 && context.hour < 18 && context.path like "/repos/*" && context.grant != "none"
};"#;
    let mut set = PolicySet::new();
    set.add(Policy::parse(Some(PolicyId::new("office-hours")), source).expect("parses"))
        .expect("adds");
    let set = CompiledPolicies::new(set, T0);
    let (mut r, _) = request(WorkspaceId::random(), GrantKind::Standing);
    r.path = "/repos/acme/app";
    let evening = T0 + 12 * 3_600; // 20:00 the same day
    // Each input Cedar reads, changed and changed back: a lookup that ignored any of them
    // would answer with the previous decision.
    let with = |change: fn(&mut PolicyRequest<'static>)| {
        let mut changed = r.clone();
        change(&mut changed);
        changed
    };
    let steps: [(&str, PolicyRequest<'static>, u64, bool); 8] = [
        ("at 08:00", r.clone(), T0, true),
        ("at 20:00", r.clone(), evening, false),
        ("at 08:00 again", r.clone(), T0, true),
        ("another path", with(|c| c.path = "/user"), T0, false),
        ("the path again", r.clone(), T0, true),
        ("another method", with(|c| c.method = "POST"), T0, false),
        ("no grant", with(|c| c.grant = GrantKind::None), T0, false),
        ("a grant again", r.clone(), T0, true),
    ];
    for (step, request, at, allowed) in steps {
        let remembered = engine.decide(&set, &request, at);
        let fresh = engine.decide_uncached(
            &set.set,
            &engine.call(&request, at).expect("a call"),
            request.grant,
        );
        assert_eq!(remembered, fresh, "{step}: the remembered decision is Cedar's");
        assert_eq!(remembered.allowed, allowed, "{step}: {remembered:?}");
    }
    assert!(
        !set.decisions().is_empty(),
        "decisions are remembered (else this test shows nothing about the lookup)"
    );
}

#[test]
fn a_renamed_agent_or_a_changed_owner_never_reuses_cached_entities() {
    let engine = engine();
    let source = r#"forbid (principal, action, resource) when {
  principal.name == "rogue" || (resource has owner && resource.owner == principal.owner)
};"#;
    let mut set = PolicySet::new();
    for (id, text) in [("permit-all", "permit (principal, action, resource);"), ("rule", source)] {
        set.add(Policy::parse(Some(PolicyId::new(id)), text).expect("parses")).expect("adds");
    }
    let set = CompiledPolicies::new(set, T0);
    let (mut r, owner) = request(WorkspaceId::random(), GrantKind::SingleUse);
    assert!(engine.decide(&set, &r, T0).allowed, "a shared credential, a harmless name");
    r.agent_name = "rogue";
    assert!(!engine.decide(&set, &r, T0).allowed, "the new name is seen at once");
    r.agent_name = "deploy-bot";
    assert!(engine.decide(&set, &r, T0).allowed, "and the old one again");
    r.credential_owner = Owner::Member(owner);
    assert!(!engine.decide(&set, &r, T0).allowed, "a changed credential owner is seen at once");
}

#[test]
fn time_host_and_path_are_normalised_for_the_context() {
    assert_eq!(hour_and_weekday(T0), (8, 5), "2027-01-15T08:00Z is a Friday, 08h");
    assert_eq!(hour_and_weekday(0), (0, 4), "the epoch was a Thursday");
    assert_eq!(hour_and_weekday(T0 + 2 * 86_400 + 15 * 3_600), (23, 7), "Sunday 23h");
    assert_eq!(normalise_host("API.GitHub.com:443"), "api.github.com", "case and port go");
    assert_eq!(normalise_host("[::1]:8080"), "[::1]", "an IPv6 literal keeps its brackets");
    assert_eq!(normalise_host("fe80::1"), "fe80::1", "a bare IPv6 address is not a port");
    assert_eq!(strip_query("/search?q=x"), "/search", "the query string is not part of path");
}

#[test]
fn positions_are_lines_and_character_columns() {
    assert_eq!(line_and_column("ab\ncd", 4), (2, 2), "second line, second character");
    assert_eq!(line_and_column("é\nx", 3), (2, 1), "columns count characters, not bytes");
    assert_eq!(line_and_column("ab", 99), (1, 3), "an offset past the end is clamped");
}

#[test]
fn the_published_documentation_carries_the_schema_and_the_defaults_verbatim() {
    let docs = include_str!("../../../../docs/policy.md");
    assert!(docs.contains(SCHEMA.trim()), "docs/policy.md must contain the schema as served");
    for default in &DEFAULT_POLICIES {
        assert!(docs.contains(default.source.trim()), "docs/policy.md must show {}", default.id);
    }
}

#[test]
fn every_policy_example_in_the_documentation_validates() {
    let engine = engine();
    let docs = include_str!("../../../../docs/policy.md");
    let mut examples = 0;
    for block in docs.split("```cedar\n").skip(1) {
        let source = block.split("```").next().expect("closed code block");
        let id = source
            .split("@id(\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("every example carries an @id");
        let warnings = engine
            .check_policy(id, source)
            .unwrap_or_else(|problems| panic!("example {id} must validate: {problems:?}"));
        assert!(warnings.is_empty(), "example {id} validates without warnings: {warnings:?}");
        examples += 1;
    }
    assert!(examples >= DEFAULT_POLICIES.len() + 5, "the examples were found: {examples}");
}

#[tokio::test]
async fn evaluation_loads_and_caches_only_the_requesting_workspace() {
    let engine = engine();
    let (_dir, store, ws) = store_with_workspaces(2).await;
    let (a, b) = (ws[0], ws[1]);
    put(&store, a, "forbid-all", "forbid(principal, action, resource);").await;

    let (r, _) = request(b, GrantKind::SingleUse);
    let decision = engine.evaluate(&store, &r).await.expect("evaluates");
    assert!(decision.allowed, "B's defaults allow; A's forbid-all is not B's: {decision:?}");
    assert_eq!(decision.policy_ids, ["permit-granted-calls"], "B's own permit decided");
    let cache = engine.cache.read().expect("lock");
    assert_eq!(cache.keys().collect::<Vec<_>>(), [&b], "only B's set was loaded");
    let ids: Vec<_> = cache[&b].set.policies().map(|p| p.id().to_string()).collect();
    assert!(!ids.contains(&"forbid-all".to_owned()), "B's set holds no policy of A: {ids:?}");
}

#[tokio::test]
async fn a_change_is_seen_after_invalidation_or_after_the_cache_lifetime() {
    let engine = engine();
    let (_dir, store, ws) = store_with_workspaces(1).await;
    let (mut r, _) = request(ws[0], GrantKind::Standing);
    assert!(engine.evaluate(&store, &r).await.expect("evaluates").allowed, "defaults allow");

    // Another replica adds a forbid: this engine's cached set still decides, until it expires.
    put(
        &store,
        ws[0],
        "forbid-get",
        "forbid(principal, action == Latchkey::Action::\"GET\", resource);",
    )
    .await;
    assert!(engine.evaluate(&store, &r).await.expect("evaluates").allowed, "still cached");
    r.now = T0 + CACHE_TTL_SECS;
    let decision = engine.evaluate(&store, &r).await.expect("evaluates");
    assert_eq!(
        (decision.allowed, decision.policy_ids),
        (false, vec!["forbid-get".to_owned()]),
        "an expired entry is read again"
    );

    // A change through this broker invalidates at once.
    store
        .delete_policy(ws[0], &DEFAULT_POLICIES, "forbid-get", Expected::Anything, T0)
        .await
        .expect("store")
        .expect("deleted");
    engine.invalidate(ws[0]);
    assert!(engine.evaluate(&store, &r).await.expect("evaluates").allowed, "reloaded at once");
}

#[tokio::test]
async fn a_broken_stored_policy_fails_the_evaluation_and_is_not_cached() {
    let engine = engine();
    let (_dir, store, ws) = store_with_workspaces(1).await;
    put(&store, ws[0], "broken", "permit(principal, action, resource);").await;
    sqlx::query("UPDATE policies SET source = 'permit(' WHERE id = 'broken'")
        .execute(&store.pool)
        .await
        .expect("hand-edit");
    let (r, _) = request(ws[0], GrantKind::SingleUse);
    let error = engine.evaluate(&store, &r).await.expect_err("a broken set cannot be evaluated");
    assert!(matches!(error, StoreError::Corrupt(_)), "reported as corrupt: {error}");
    assert!(engine.cache.read().expect("lock").is_empty(), "nothing broken is cached");
}

#[tokio::test]
async fn defaults_are_installed_once_and_come_back_when_everything_is_deleted() {
    let (_dir, store, ws) = store_with_workspaces(1).await;
    let first = store.policies(ws[0], &DEFAULT_POLICIES, T0).await.expect("reads");
    assert_eq!(first.len(), DEFAULT_POLICIES.len(), "a new workspace gets the defaults");
    let again = store.policies(ws[0], &DEFAULT_POLICIES, T0 + 1).await.expect("reads");
    assert_eq!(first, again, "reading again installs nothing more");
    for p in &DEFAULT_POLICIES {
        let deleted = store.delete_policy(ws[0], &DEFAULT_POLICIES, p.id, Expected::Anything, T0);
        deleted.await.expect("store").expect("a default policy is there to delete");
    }
    let back = store.policies(ws[0], &DEFAULT_POLICIES, T0 + 2).await.expect("reads");
    assert_eq!(back.len(), DEFAULT_POLICIES.len(), "an empty workspace gets the defaults back");
    let unknown = store.policies(WorkspaceId::random(), &DEFAULT_POLICIES, T0).await;
    assert!(unknown.expect("reads").is_empty(), "no defaults for a workspace that does not exist");
}

#[test]
fn by_default_another_members_personal_credential_is_denied_and_no_one_is_asked() {
    let engine = engine();
    let mut set = PolicySet::new();
    for default in &DEFAULT_POLICIES {
        set.add(Policy::parse(Some(PolicyId::new(default.id)), default.source).expect("parses"))
            .expect("adds");
    }
    let set = CompiledPolicies::new(set, T0);
    let (mut r, owner) = request(WorkspaceId::random(), GrantKind::SingleUse);
    r.credential_owner = Owner::Member(owner);
    let own = engine.decide(&set, &r, T0);
    assert!(own.allowed, "the agent owner's own personal credential, with a capability: {own:?}");
    let forbid = vec!["forbid-foreign-personal-credentials".to_owned()];
    r.credential_owner = Owner::Member(MemberId::random());
    for grant in [GrantKind::SingleUse, GrantKind::Standing, GrantKind::None] {
        r.grant = grant;
        let decision = engine.decide(&set, &r, T0);
        assert!(
            !decision.allowed && !decision.approval_required,
            "{grant:?}: another member's personal credential is refused, and no one is asked to \
             approve what no approval could allow: {decision:?}"
        );
        assert_eq!(decision.policy_ids, forbid, "{grant:?}: the forbid is named");
    }
}
